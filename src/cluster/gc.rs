//! Tombstone collection without resurrection (docs/cluster.md, "Deletes and tombstones").
//!
//! A cluster node's shards do not purge a dead key by themselves once its grace has passed:
//! they hand it over as a candidate (`VersionPolicy::purge_needs_approval`). Each loop
//! collects the candidates of its shards, groups them by partition and, for each batch:
//!
//! 1. needs every replica of the partition (its whole preference list in the current layout)
//!    reachable, and no member joining or leaving (partitions may be moving); else the batch
//!    is refused and retried later;
//! 2. offers the tombstones to every other replica (TOMB_OFFER): each merges them (so a
//!    replica that missed the delete gets it now) and answers, once durable, which keys it
//!    now holds exactly as offered;
//! 3. purges here the keys every replica holds, if still unchanged, and asks the others to
//!    purge theirs (TOMB_PURGE: each purges only if it still holds that very tombstone).
//!
//! Garage's table GC (src/table/gc.rs) is the model. Nothing can bring a purged key back
//! from a replica: each held the tombstone, which covers every older version, when the key
//! was purged. A purge that reaches only some replicas (a crash, a lost call), or a purge
//! undone by a WAL replay (purges are not logged), leaves a tombstone that is simply offered
//! and purged again. Hints older than the grace are dropped (`hints`), so that a hint can't
//! deliver a value the tombstone covered after the tombstone is gone.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::key_hash;
use ringkv_proto::peer::{self, TOMB_HELD, TOMB_NEWER};
use ringkv_proto::{FrameWriter, ReplySink, Value};
use smallvec::SmallVec;
use tracing::debug;

use super::link::Link;
use super::{LocalLoop, LoopCluster};
use crate::durability::{add_mark, Marks};
use crate::ring::layout::{Layout, MemberState};
use crate::ring::membership::View;
use crate::ring::NodeId;
use crate::store::Entry;
use crate::util::now_ms;

/// How often each loop collects its shards' candidates.
pub const GC_INTERVAL_MS: u64 = 500;
/// Bounds of the delay before a refused candidate is tried again: an eighth of the grace,
/// so a node that is back is noticed well within it, and no more often than this.
const RETRY_MIN_MS: u64 = 500;
const RETRY_MAX_MS: u64 = 60_000;
/// How long the first replica of a key's preference list has to collect it before the others
/// do, in retry delays.
const PRIMARY_HEAD_START_RETRIES: u64 = 2;

/// The delay before a refused candidate is offered again.
pub fn retry_ms(grace_ms: u64) -> u64 {
    (grace_ms / 8).clamp(RETRY_MIN_MS, RETRY_MAX_MS)
}

/// The collector of one loop: runs until the node shuts down.
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let mut shutdown = lp.node().shutdown_signal();
    let mut tick = super::sys::interval(Duration::from_millis(GC_INTERVAL_MS));
    tick.set_missed_tick_behavior(super::sys::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        round(&lp, &cl).await;
    }
}

/// Whether partitions may be moving (a member joining or leaving): then the preference lists
/// are not the whole set of copies, and nothing is collected until the move is over.
fn moving(layout: &Layout) -> bool {
    layout.members().any(|m| match m.state {
        MemberState::Joining | MemberState::Leaving => true,
        MemberState::Active | MemberState::Removed => false,
    })
}

/// One collection round over this loop's shards.
async fn round(lp: &Rc<dyn LocalLoop>, cl: &Rc<LoopCluster>) {
    let view = cl.view();
    if moving(&view.layout) {
        return; // The candidates wait in their shards (bounded).
    }
    let node = lp.node().clone();
    let store = &node.store;
    let now = now_ms();
    let grace_ms = node.config.tombstone_grace_secs.saturating_mul(1000);
    let retry_at = now.saturating_add(retry_ms(grace_ms));
    // Tombstones grouped by the other replicas they need (one call per group and batch, not
    // per partition: with few nodes most partitions share their replicas).
    let mut by_replicas: BTreeMap<Replicas, Vec<Entry>> = BTreeMap::new();
    // What the offered tombstones need durable here before they leave (a key deleted again
    // since it was queued carries a newer record: `super::wait_durable`).
    let mut marks = Marks::new();
    for shard in (lp.loop_id()..store.len()).step_by(node.config.threads.max(1)) {
        let mut s = store.lock(shard);
        let keys = s.take_purge_candidates();
        if let Some(seq) = s.logged().filter(|_| !keys.is_empty()) {
            add_mark(&mut marks, shard as u32, seq);
        }
        for key in keys {
            // Written again since it was queued: no longer a candidate.
            let Some(e) = s.purge_candidate(&key, now) else {
                continue;
            };
            let prefs = view.ring.preference(view.ring.partition_of(key_hash(&key)));
            // Every replica has the same tombstone due at the same time: the first of the
            // preference list collects it, so that the others' offers don't merge it back
            // where it was just purged. The others step in if it has not, a while later (it
            // may lack the tombstone: their offer gives it).
            let due = e.dead_since(now).unwrap_or(0).saturating_add(grace_ms);
            let fallback_at = due.saturating_add(PRIMARY_HEAD_START_RETRIES * retry_ms(grace_ms));
            if prefs.first().is_some_and(|&f| f != view.me) && now < fallback_at {
                s.retry_purge(&key, fallback_at);
                continue;
            }
            let mut others: Replicas = prefs.iter().copied().filter(|&n| n != view.me).collect();
            others.sort_unstable();
            by_replicas.entry(others).or_default().push(e);
        }
    }
    if by_replicas.is_empty() {
        return;
    }
    if super::wait_durable(&**lp, &marks).await.is_err() {
        // A disk error: the candidates are tried again later, as a refused batch is.
        for e in by_replicas.values().flatten() {
            store
                .lock(store.shard_of(key_hash(e.key())))
                .retry_purge(e.key(), retry_at);
        }
        return;
    }
    let stats = &cl.shared.membership.stats;
    let timeout = Duration::from_millis(node.config.cluster.peer_timeout_ms);
    // A replica holds something newer: the key lives on there, and this copy is stale until
    // read repair or anti-entropy brings the newer version; no point asking again soon.
    let newer_at = now.saturating_add(RETRY_MAX_MS);
    for (others, entries) in by_replicas {
        stats.gc_candidates.fetch_add(entries.len() as u64, Relaxed);
        for batch in entries.chunks(peer::MAX_TOMB_BATCH as usize) {
            let held = confirm(lp, cl, &view, &others, batch, timeout).await;
            let mut purged = 0u64;
            let mut refused = 0u64;
            let mut confirmed: Vec<&[u8]> = Vec::new();
            for (e, v) in batch.iter().zip(&held) {
                let mut s = store.lock(store.shard_of(key_hash(e.key())));
                match v {
                    Verdict::Held if s.purge_if_held(e, now_ms()) => {
                        purged += 1;
                        confirmed.push(e.as_bytes());
                    }
                    // Changed here since: a new candidate if it is dead again.
                    Verdict::Held => s.retry_purge(e.key(), retry_at),
                    Verdict::Newer => {
                        refused += 1;
                        s.retry_purge(e.key(), newer_at);
                    }
                    Verdict::Unconfirmed => {
                        refused += 1;
                        s.retry_purge(e.key(), retry_at);
                    }
                }
            }
            stats
                .gc_confirmed
                .fetch_add(confirmed.len() as u64, Relaxed);
            stats.gc_purged.fetch_add(purged, Relaxed);
            stats.gc_refused.fetch_add(refused, Relaxed);
            if !confirmed.is_empty() {
                purge_others(lp, cl, &view, &others, &confirmed, timeout).await;
            }
        }
    }
}

/// The replicas of a key other than this node (which may or may not be one), sorted.
type Replicas = SmallVec<[NodeId; 4]>;

/// What the other replicas said of one offered tombstone, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    /// Every one holds it.
    Held,
    /// One holds something newer.
    Newer,
    /// One is down, unreachable or failed the call.
    Unconfirmed,
}

/// Offers `batch` to every replica in `others`; per entry, what they said.
async fn confirm(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    others: &[NodeId],
    batch: &[Entry],
    timeout: Duration,
) -> Vec<Verdict> {
    // A replica that is down can't confirm: don't even ask the others.
    if let Some(down) = others.iter().find(|&&n| !view.reachable(n)) {
        debug!(replica = %format!("{down:016x}"), keys = batch.len(),
            "tombstones kept: a replica is down");
        return vec![Verdict::Unconfirmed; batch.len()];
    }
    let raw: Vec<&[u8]> = batch.iter().map(Entry::as_bytes).collect();
    let calls = others.iter().map(|&n| {
        let raw = &raw;
        async move {
            let link = cl.link_to(lp, view, n)?;
            let v = link
                .call(timeout, |rid, out| peer::encode_tomb_offer(rid, raw, out))
                .await
                .map_err(|e| e.to_string())?;
            match v {
                Value::Bulk(b) => peer::decode_states(&b).map_err(|e| e.to_string()),
                other => Err(format!("unexpected TOMB_OFFER reply {other:?}")),
            }
        }
    });
    let mut verdicts = vec![Verdict::Held; batch.len()];
    for (n, r) in others.iter().zip(futures::future::join_all(calls).await) {
        match r {
            Ok(states) if states.len() == batch.len() => {
                for (v, s) in verdicts.iter_mut().zip(states) {
                    if s != TOMB_HELD {
                        *v = (*v).max(Verdict::Newer);
                    }
                }
            }
            Ok(states) => {
                debug!(replica = %format!("{n:016x}"), got = states.len(), "TOMB_OFFER answered the wrong count");
                verdicts.fill(Verdict::Unconfirmed);
            }
            Err(e) => {
                debug!(replica = %format!("{n:016x}"), error = %e, "TOMB_OFFER failed; tombstones kept");
                verdicts.fill(Verdict::Unconfirmed);
            }
        }
    }
    verdicts
}

/// Asks every replica in `others` to purge the confirmed tombstones (best effort: one that
/// misses it keeps the tombstone and offers it again itself).
async fn purge_others(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    others: &[NodeId],
    confirmed: &[&[u8]],
    timeout: Duration,
) {
    let calls = others.iter().map(|&n| async move {
        let link = cl.link_to(lp, view, n)?;
        link.call(timeout, |rid, out| {
            peer::encode_tomb_purge(rid, confirmed, out)
        })
        .await
        .map_err(|e| e.to_string())
    });
    for r in futures::future::join_all(calls).await {
        if let Err(e) = r {
            debug!(error = %e, "TOMB_PURGE failed; that replica will offer them again");
        }
    }
}

fn decode(entries: &[&[u8]]) -> Option<Vec<Entry>> {
    entries.iter().map(|b| Entry::from_bytes(b)).collect()
}

/// The replica side of TOMB_OFFER: merge each tombstone, answer (once durable) which are now
/// held exactly as offered.
pub fn serve_offer(lp: &Rc<dyn LocalLoop>, link: &Rc<Link>, id: u64, op: u8, entries: &[&[u8]]) {
    let Some(entries) = decode(entries) else {
        return super::serve::reply(link, id, op, |s| {
            s.error("ERR malformed entry in TOMB_OFFER")
        });
    };
    let store = &lp.node().store;
    let now = now_ms();
    let mut marks = Marks::new();
    let mut states = Vec::with_capacity(entries.len());
    for e in &entries {
        let hash = key_hash(e.key());
        let shard = store.shard_of(hash);
        let mut s = store.lock(shard);
        s.merge(hash, e);
        states.push(if s.holds_tombstone(e, now) {
            TOMB_HELD
        } else {
            TOMB_NEWER
        });
        if s.wal.enabled {
            add_mark(&mut marks, shard as u32, s.wal.seq);
        }
    }
    let mut body = BytesMut::new();
    peer::encode_states(&states, &mut body);
    super::serve::answer_when_durable(lp, link, id, op, marks, |s| s.bulk(&body));
}

/// The replica side of TOMB_PURGE: purge each key still holding that tombstone.
pub fn serve_purge(lp: &Rc<dyn LocalLoop>, link: &Rc<Link>, id: u64, op: u8, entries: &[&[u8]]) {
    let Some(entries) = decode(entries) else {
        return super::serve::reply(link, id, op, |s| {
            s.error("ERR malformed entry in TOMB_PURGE")
        });
    };
    let store = &lp.node().store;
    let now = now_ms();
    let purged = entries
        .iter()
        .filter(|e| {
            let mut s = store.lock(store.shard_of(key_hash(e.key())));
            s.purge_if_held(e, now)
        })
        .count() as u64;
    if let Some(c) = lp.cluster() {
        c.shared
            .membership
            .stats
            .gc_purged
            .fetch_add(purged, Relaxed);
    }
    link.send_reply(|out| {
        let mut w = FrameWriter::new(out, id, op);
        w.int(purged as i64);
        w.finish();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_collected_while_a_member_joins_or_leaves() {
        let mut l = Layout::new();
        l.set(1, "a:1", "", MemberState::Active);
        l.set(2, "b:1", "", MemberState::Removed);
        assert!(!moving(&l));
        for s in [MemberState::Joining, MemberState::Leaving] {
            let mut m = l.clone();
            m.set(3, "c:1", "", s);
            assert!(moving(&m), "{s:?}");
        }
    }

    #[test]
    fn retries_come_at_an_eighth_of_the_grace_within_bounds() {
        assert_eq!(retry_ms(0), RETRY_MIN_MS);
        assert_eq!(retry_ms(16_000), 2_000);
        assert_eq!(retry_ms(864_000_000), RETRY_MAX_MS);
    }
}
