//! Merkle anti-entropy (protocol.md §6.4, docs/cluster.md "Anti-entropy"): replicas that
//! missed writes (down with hinted handoff off, a hint lost, a WAL segment dropped by
//! --repair) converge without any read of the keys.
//!
//! A round, on loop 0 every --aae-interval-ms (or at once on CLUSTER AAE): for each other
//! reachable replica, one AAE_ROOTS for every partition both hold; for each root that
//! differs, AAE_BRANCHES, then AAE_LEAVES of the differing branches, then AAE_KEYS of the
//! differing segments; each key whose entry hash differs is fetched (FETCH) and merged here,
//! and this node's merged entry is pushed back (REPLICATE) when it still differs from theirs.
//! Both are the DVV merge every replica write goes through, so the exchange is commutative
//! and a round never loses a version either side has. Traffic is throttled by --aae-rate.

pub mod replica;

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use ringkv_proto::peer::{self, AaeRequest, TreeShape, MAX_AAE_LIST};
use ringkv_proto::{key_hash, Value};
use tracing::{debug, info, warn};

use super::link::Link;
use super::{serve, sys, wait_durable, LocalLoop, LoopCluster};
use crate::durability::Marks;
use crate::ring::aae::AaeStats;
use crate::ring::membership::View;
use crate::ring::NodeId;
use crate::store::merkle::entry_hash;
use crate::store::{add_mark, Entry};
use crate::util::now_ms;

/// Segments named by one AAE_KEYS (a segment holds a few keys: ~5 at 5M keys).
const SEGMENTS_PER_KEYS_CALL: usize = 256;
/// Leaf hashes asked for by one AAE_LEAVES (32 KiB of reply).
const LEAVES_PER_CALL: usize = 4096;
/// FETCH and REPLICATE calls of one exchange in flight at once.
const ENTRY_CALLS_IN_FLIGHT: usize = 64;
/// A throttled exchange sleeps once it has spent this much of a second's budget.
const THROTTLE_SLICE_MS: u64 = 50;

/// Runs anti-entropy rounds on this loop until shutdown (loop 0 only).
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let cfg = lp.node().config.cluster.clone();
    let mut shutdown = lp.node().shutdown_signal();
    let mut tick = sys::interval(Duration::from_millis(cfg.aae_interval_ms));
    tick.set_missed_tick_behavior(sys::MissedTickBehavior::Delay);
    // The first tick is immediate: peers are not known up yet, so wait one interval.
    tick.tick().await;
    loop {
        let stats = &cl.shared.membership.stats.aae;
        tokio::select! {
            _ = tick.tick(), if cfg.aae => {}
            _ = stats.trigger.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        round(&lp, &cl).await;
    }
}

/// One round: every partition this node replicates, compared with each of its other
/// reachable replicas.
pub async fn round(lp: &Rc<dyn LocalLoop>, cl: &Rc<LoopCluster>) {
    let started = sys::Instant::now();
    let view = cl.view();
    let mut by_peer: Vec<(NodeId, Vec<u32>)> = Vec::new();
    for p in 0..view.ring.partitions() {
        let prefs = view.ring.preference(p);
        if !prefs.contains(&view.me) {
            continue;
        }
        for &n in prefs.iter().filter(|&&n| n != view.me && view.reachable(n)) {
            add_partition(&mut by_peer, n, p);
        }
    }
    let stats = &cl.shared.membership.stats.aae;
    let mut x = Exchange::new(lp, view.ring.partition_bits(), stats);
    for (node, parts) in &by_peer {
        let Some(link) = link_to(lp, cl, &view, *node) else {
            continue;
        };
        if let Err(e) = x.with_peer(&link, parts).await {
            AaeStats::add(&stats.errors, 1);
            warn!(peer = %crate::ring::membership::format_id(*node), error = %e,
                "anti-entropy exchange failed; retried next round");
        }
    }
    let ms = started.elapsed().as_millis() as u64;
    stats.last_round_ms.store(ms, Relaxed);
    AaeStats::add(&stats.rounds, 1);
    if x.repaired > 0 {
        info!(
            keys = x.repaired,
            peers = by_peer.len(),
            ms,
            "anti-entropy repaired keys"
        );
    } else {
        debug!(
            peers = by_peer.len(),
            ms, "anti-entropy round: replicas in sync"
        );
    }
}

/// Before this node drops its copies of `parts` (partitions it no longer replicates), makes
/// every current replica of each hold what this node has of it, by the exchange a round runs
/// (Riak hands a vnode's data off before deleting it). A copy here may hold versions no
/// replica has: a write this node coordinated on an older layout, after a restart and before
/// gossip reached it. Err (nothing may be dropped yet): a replica is unreachable or an
/// exchange failed.
pub async fn hand_over(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    parts: &[u32],
) -> Result<(), String> {
    let bits = view.ring.partition_bits();
    let store = &lp.node().store;
    let mut by_peer: Vec<(NodeId, Vec<u32>)> = Vec::new();
    for &p in parts {
        // Nothing of it here (every segment hash zero): nothing to hand over.
        if replica::leaves(store, bits, p).iter().all(|&h| h == 0) {
            continue;
        }
        for &n in view.ring.preference(p).iter().filter(|&&n| n != view.me) {
            if !view.reachable(n) {
                return Err(format!(
                    "replica {} of partition {p} is unreachable",
                    crate::ring::membership::format_id(n)
                ));
            }
            add_partition(&mut by_peer, n, p);
        }
    }
    let mut x = Exchange::new(lp, bits, &cl.shared.membership.stats.aae);
    for (node, ps) in &by_peer {
        let link = link_to(lp, cl, view, *node).ok_or("a replica's address changed")?;
        x.with_peer(&link, ps).await?;
    }
    if x.repaired > 0 {
        info!(
            keys = x.repaired,
            "handed over versions the replicas lacked before dropping this node's copies"
        );
    }
    Ok(())
}

fn link_to(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    node: NodeId,
) -> Option<Rc<Link>> {
    let link = cl.link(lp, view.addr(node)?);
    // The address now belongs to another node: not this partition's replica.
    link.peer.get().is_none_or(|p| p == node).then_some(link)
}

/// Spends --aae-rate: sleeps off the bytes an exchange moved, a slice at a time.
struct Throttle {
    rate: u64,
    debt: u64,
}

impl Throttle {
    fn new(rate: u64) -> Throttle {
        Throttle { rate, debt: 0 }
    }

    async fn spend(&mut self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        self.debt += bytes;
        if self.debt * 1000 >= self.rate * THROTTLE_SLICE_MS {
            let ms = self.debt * 1000 / self.rate;
            self.debt = 0;
            sys::sleep(Duration::from_millis(ms)).await;
        }
    }
}

struct Exchange<'a> {
    lp: Rc<dyn LocalLoop>,
    throttle: Throttle,
    timeout: Duration,
    bits: u32,
    stats: &'a AaeStats,
    repaired: u64,
}

/// Adds partition `p` to the list of those exchanged with peer `n`.
fn add_partition(by_peer: &mut Vec<(NodeId, Vec<u32>)>, n: NodeId, p: u32) {
    match by_peer.iter_mut().find(|(m, _)| *m == n) {
        Some((_, ps)) => ps.push(p),
        None => by_peer.push((n, vec![p])),
    }
}

impl<'a> Exchange<'a> {
    fn new(lp: &Rc<dyn LocalLoop>, bits: u32, stats: &'a AaeStats) -> Exchange<'a> {
        let cfg = &lp.node().config.cluster;
        Exchange {
            lp: lp.clone(),
            throttle: Throttle::new(cfg.aae_rate),
            timeout: Duration::from_millis(cfg.peer_timeout_ms),
            bits,
            stats,
            repaired: 0,
        }
    }
}

impl Exchange<'_> {
    /// One anti-entropy call; its reply body (a Bulk).
    async fn call(&mut self, link: &Rc<Link>, req: &AaeRequest) -> Result<Bytes, String> {
        let sent = 24
            + match req {
                AaeRequest::Roots { partitions: l }
                | AaeRequest::Leaves { branches: l, .. }
                | AaeRequest::Keys { segments: l, .. } => 4 * l.len() as u64,
                AaeRequest::Branches { .. } => 4,
            };
        let v = link
            .call(self.timeout, |rid, out| peer::encode_aae(rid, req, out))
            .await
            .map_err(|e| e.to_string())?;
        match v {
            Value::Bulk(b) => {
                let n = sent + 16 + b.len() as u64;
                AaeStats::add(&self.stats.bytes_exchanged, n);
                self.throttle.spend(n).await;
                Ok(b)
            }
            other => Err(format!(
                "unexpected {} reply {other:?}",
                req.opcode().name()
            )),
        }
    }

    async fn hashes(
        &mut self,
        link: &Rc<Link>,
        req: &AaeRequest,
        n: usize,
    ) -> Result<Vec<u64>, String> {
        let b = self.call(link, req).await?;
        let h = peer::decode_hashes(&b).map_err(|e| e.to_string())?;
        if h.len() != n {
            return Err(format!(
                "{} answered {} hashes, {n} expected",
                req.opcode().name(),
                h.len()
            ));
        }
        Ok(h)
    }

    /// Compares every partition of `parts` with the peer's copy, and repairs those that differ.
    async fn with_peer(&mut self, link: &Rc<Link>, parts: &[u32]) -> Result<(), String> {
        let req = AaeRequest::Roots {
            partitions: parts.to_vec(),
        };
        let theirs = self.hashes(link, &req, parts.len()).await?;
        let partitions = 1u32 << self.bits;
        for (&p, &their_root) in parts.iter().zip(&theirs) {
            AaeStats::add(&self.stats.trees_compared, 1);
            let ours = replica::leaves(&self.lp.node().store, self.bits, p);
            if replica::root(&ours) != their_root {
                self.partition(link, p, &ours).await?;
            }
            self.stats.exchanged(p, partitions, now_ms());
        }
        Ok(())
    }

    /// Narrows a differing partition down to its differing segments, then repairs their keys.
    async fn partition(&mut self, link: &Rc<Link>, p: u32, ours: &[u64]) -> Result<(), String> {
        let shape = TreeShape::new(self.bits);
        let w = shape.leaves as usize;
        let req = AaeRequest::Branches { partition: p };
        let theirs = self.hashes(link, &req, shape.branches as usize).await?;
        let branches: Vec<u32> = replica::fold(ours, w)
            .iter()
            .zip(&theirs)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i as u32)
            .collect();
        let mut segments: Vec<u32> = Vec::new();
        for chunk in branches.chunks((LEAVES_PER_CALL / w).clamp(1, MAX_AAE_LIST as usize)) {
            let req = AaeRequest::Leaves {
                partition: p,
                branches: chunk.to_vec(),
            };
            let theirs = self.hashes(link, &req, chunk.len() * w).await?;
            for (i, &b) in chunk.iter().enumerate() {
                for j in 0..w {
                    let seg = b as usize * w + j;
                    if ours.get(seg) != theirs.get(i * w + j) {
                        segments.push(seg as u32);
                    }
                }
            }
        }
        AaeStats::add(&self.stats.segments_differing, segments.len() as u64);
        for chunk in segments.chunks(SEGMENTS_PER_KEYS_CALL) {
            self.segments(link, p, chunk).await?;
        }
        Ok(())
    }

    /// Lists the keys of some segments on both sides and exchanges those that differ.
    async fn segments(&mut self, link: &Rc<Link>, p: u32, segs: &[u32]) -> Result<(), String> {
        let req = AaeRequest::Keys {
            partition: p,
            segments: segs.to_vec(),
        };
        let body = self.call(link, &req).await?;
        let theirs = peer::decode_key_hashes(&body).map_err(|e| e.to_string())?;
        let first = replica::first_segment(p, self.bits);
        let global: Vec<u32> = segs.iter().map(|s| first + s).collect();
        let node = self.lp.node().clone();
        let store = &node.store;
        let ours = store.segment_keys(&global, now_ms());
        let mine: HashMap<&[u8], u64> = ours.iter().map(|(k, h)| (k.as_slice(), *h)).collect();
        let mut remote: HashMap<&[u8], u64> = HashMap::with_capacity(theirs.len());
        for (k, h) in &theirs {
            if crate::ring::partition::partition_of(key_hash(k), self.bits) != p {
                return Err(format!("AAE_KEYS answered a key outside partition {p}"));
            }
            remote.insert(k.as_slice(), *h);
        }
        let fetch: Vec<&[u8]> = remote
            .iter()
            .filter(|(k, h)| mine.get(*k) != Some(*h))
            .map(|(k, _)| *k)
            .collect();
        let only_mine: Vec<&[u8]> = mine
            .keys()
            .filter(|k| !remote.contains_key(*k))
            .copied()
            .collect();
        self.repaired += (fetch.len() + only_mine.len()) as u64;
        AaeStats::add(
            &self.stats.keys_repaired,
            (fetch.len() + only_mine.len()) as u64,
        );
        for chunk in fetch.chunks(ENTRY_CALLS_IN_FLIGHT) {
            self.fetch_merge(link, chunk).await?;
        }
        // What to push: every key whose (merged) entry here still differs from theirs.
        let mut push: Vec<Entry> = Vec::new();
        let mut marks = Marks::new();
        for k in fetch.iter().chain(&only_mine) {
            let h = key_hash(k);
            let shard = store.shard_of(h);
            let s = store.lock(shard);
            if let Some(e) = s.entry(h, k) {
                if remote.get(k) != Some(&entry_hash(e)) {
                    push.push(e.clone());
                    if let Some(seq) = s.logged() {
                        add_mark(&mut marks, shard as u32, seq);
                    }
                }
            }
        }
        // What leaves this node must be durable here first (see `wait_durable`).
        wait_durable(&*self.lp, &marks).await?;
        for chunk in push.chunks(ENTRY_CALLS_IN_FLIGHT) {
            self.push(link, chunk).await?;
        }
        Ok(())
    }

    /// FETCHes the peer's entries of `keys` and merges them here.
    async fn fetch_merge(&mut self, link: &Rc<Link>, keys: &[&[u8]]) -> Result<(), String> {
        let calls = keys
            .iter()
            .map(|k| link.call(self.timeout, |rid, out| peer::encode_fetch(rid, k, out)));
        let results = futures::future::join_all(calls).await;
        let mut bytes = 0u64;
        for (k, r) in keys.iter().zip(results) {
            bytes += 40 + k.len() as u64;
            match r.map_err(|e| e.to_string())? {
                Value::Nil => {}
                Value::Bulk(b) => {
                    bytes += b.len() as u64;
                    let e = Entry::from_bytes(&b).ok_or("FETCH answered a malformed entry")?;
                    if e.key() != *k {
                        return Err("FETCH answered another key's entry".into());
                    }
                    let marks = serve::apply(&*self.lp, &e);
                    self.lp.wake_writers(&marks);
                }
                other => return Err(format!("unexpected FETCH reply {other:?}")),
            }
        }
        AaeStats::add(&self.stats.bytes_exchanged, bytes);
        self.throttle.spend(bytes).await;
        Ok(())
    }

    /// REPLICATEs these entries to the peer (a plain replica merge there).
    async fn push(&mut self, link: &Rc<Link>, entries: &[Entry]) -> Result<(), String> {
        let calls = entries.iter().map(|e| {
            link.call(self.timeout, |rid, out| {
                peer::encode_replicate(rid, 0, e.as_bytes(), out)
            })
        });
        let results = futures::future::join_all(calls).await;
        let mut bytes = 0u64;
        for (e, r) in entries.iter().zip(results) {
            r.map_err(|e| e.to_string())?;
            bytes += 48 + e.as_bytes().len() as u64;
        }
        AaeStats::add(&self.stats.bytes_exchanged, bytes);
        self.throttle.spend(bytes).await;
        Ok(())
    }
}
