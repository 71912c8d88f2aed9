//! Committing a move, and cleaning up after it.
//!
//! The node whose join or leave it is commits it (`joining` → `active`, `leaving` →
//! `removed`) once every node that copies partitions for the new layout says it is done; a
//! leaving node that is down (CLUSTER FORGET) is committed by the live active member with the
//! lowest id. A node that starts joining a cluster with no owners yet (every node new) is
//! admitted at once: there is nothing to copy. Once nothing moves and every member agrees on
//! the layout, a node drops its copies of the partitions it no longer replicates.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::peer::{self, StreamPhase, StreamStatus};
use ringkv_proto::Value;
use tracing::{debug, info, warn};

use super::{moving_state, receivers};
use crate::cluster::{sys, LocalLoop, LoopCluster};
use crate::ring::layout::MemberState;
use crate::ring::membership::View;
use crate::ring::NodeId;
use crate::util::now_ms;

/// How often the commit task looks at the moves.
pub const COMMIT_TICK_MS: u64 = 250;
/// Slots looked at per shard lock when dropping the partitions this node no longer replicates.
const CLEANUP_BATCH_SLOTS: usize = 4096;

/// Runs on loop 0 until shutdown.
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let mut shutdown = lp.node().shutdown_signal();
    let mut tick = sys::interval(Duration::from_millis(COMMIT_TICK_MS));
    tick.set_missed_tick_behavior(sys::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => {
                // A change of the last tick is not lost to a clean stop.
                remember_layout(&cl, &cl.view()).await;
                return;
            }
        }
        let view = cl.view();
        remember_layout(&cl, &view).await;
        remember_membership(&cl, &view).await;
        if bootstrap(&cl, &view) {
            continue;
        }
        let mine: Vec<NodeId> = view
            .layout
            .members()
            .filter(|m| moving_state(m.state) && committer(&view, m.id) == view.me)
            .map(|m| m.id)
            .collect();
        if mine.is_empty() || !cl.shared.membership.converged() {
            continue;
        }
        if all_copied(&lp, &cl, &view).await {
            commit(&cl, &view, &mine);
        }
    }
}

/// Who commits `id`'s move: itself while reachable, else the live active member with the
/// lowest id.
fn committer(view: &View, id: NodeId) -> NodeId {
    if view.reachable(id) {
        return id;
    }
    view.layout
        .members()
        .filter(|m| m.state == MemberState::Active && view.reachable(m.id))
        .map(|m| m.id)
        .min()
        .unwrap_or(view.me)
}

/// A joining node in a cluster with no owner yet is admitted at once, once every seed is
/// known. Whether it acted.
fn bootstrap(cl: &LoopCluster, view: &View) -> bool {
    let me = view.layout.get(view.me).map(|m| m.state);
    if me != Some(MemberState::Joining) {
        return false;
    }
    if view.layout.owners().next().is_some() {
        return false;
    }
    let m = &cl.shared.membership;
    // Only once every seed answered: a seed not heard from may be an owner, and a node that
    // admits itself beside owners would own partitions it holds nothing of. A node that
    // began copying before (a restarted join) never admits itself.
    // A restored layout names its members (so no seed is left unknown), but names them as
    // this node last knew them: they must have answered since this start too.
    if m.seeds().is_empty() && m.restored_unheard() == 0 && !cl.shared.streams.has_history() {
        // Every joining member is new and empty: admit them all at once, so that nodes started
        // together form the cluster together instead of copying empty partitions in turn.
        let joining: Vec<NodeId> = view
            .layout
            .members()
            .filter(|x| x.state == MemberState::Joining && view.reachable(x.id))
            .map(|x| x.id)
            .collect();
        info!(nodes = joining.len(), "no member owns partitions yet: the joining nodes start owning their share (nothing to copy)");
        for id in joining {
            if id == view.me {
                m.set_self(cl.shared.advertise(), &cl.shared.zone, MemberState::Active);
            } else {
                m.set_state(id, MemberState::Active);
            }
        }
    }
    true
}

/// Saves the layout when it changed (`cluster::layout_file`), so a restart comes back to it.
async fn remember_layout(cl: &Rc<LoopCluster>, view: &View) {
    let shared = cl.shared.clone();
    if !shared.layout_file.stale(view.digest) {
        return;
    }
    let (layout, digest) = (view.layout.clone(), view.digest);
    let r = sys::blocking(move || shared.layout_file.save(&layout, digest)).await;
    let failed = r.and_then(|r| r).err();
    // Said once per failing spell, not every tick.
    if cl.shared.layout_file.note_failure(failed.is_some()) {
        if let Some(e) = failed {
            warn!(error = %e, "can't save the cluster layout; a restart would start alone in \
                its layout until gossip reaches it (retried every tick)");
        }
    }
}

/// Persists, once, that this node is an owner: a restart then starts it active.
async fn remember_membership(cl: &Rc<LoopCluster>, view: &View) {
    let active = view.layout.get(view.me).map(|m| m.state) == Some(MemberState::Active);
    if !active || cl.shared.streams.was_member() {
        return;
    }
    let file = cl.shared.streams.file.clone();
    let r = sys::blocking(move || file.lock().unwrap_or_else(|e| e.into_inner()).member()).await;
    match r.and_then(|r| r) {
        Ok(()) => cl.shared.streams.state().member = true,
        Err(e) => warn!(error = %e, "can't record that this node is a member"),
    }
}

/// Whether every node that copies partitions for `view`'s layout reports it done.
/// Also records the sum of their progress (INFO `cluster_moves_*`, kvsh's progress bar).
async fn all_copied(lp: &Rc<dyn LocalLoop>, cl: &Rc<LoopCluster>, view: &View) -> bool {
    let digest = view.layout.digest();
    let mut done = true;
    let mut sum = super::Progress::default();
    for r in receivers(view) {
        let st = if r == view.me {
            Some(cl.shared.streams.report(now_ms()).status)
        } else {
            status_of(lp, cl, view, r).await
        };
        match st {
            Some(s) if s.digest == digest => {
                sum.partitions += s.partitions;
                sum.partitions_done += s.partitions_done;
                sum.bytes += s.bytes;
                sum.rate_bps += s.rate_bps;
                done &= s.phase == StreamPhase::Done;
            }
            _ => done = false,
        }
    }
    *cl.shared.streams.cluster_progress() = sum;
    done
}

async fn status_of(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    id: NodeId,
) -> Option<StreamStatus> {
    if !view.reachable(id) {
        return None;
    }
    let link = cl.link(lp, view.addr(id)?);
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let digest = view.layout.digest();
    match link
        .call(timeout, |rid, out: &mut BytesMut| {
            peer::encode_stream_status(rid, digest, out)
        })
        .await
    {
        Ok(Value::Bulk(b)) => StreamStatus::decode(&b).ok(),
        _ => None,
    }
}

fn commit(cl: &LoopCluster, view: &View, ids: &[NodeId]) {
    for &id in ids {
        if let Some(m) = view.layout.get(id) {
            // Only if nothing changed it since the copies were checked (a CANCEL wins).
            cl.shared.membership.commit_move(id, m.version);
        }
    }
}

/// Drops this node's copies of partitions it does not replicate, once nothing moves and the
/// members agree on the layout for a settle time (a coordinator with the older layout may
/// still read them until then), and once their replicas hold every version of them this node
/// has (`aae::hand_over`).
pub async fn cleanup(lp: &Rc<dyn LocalLoop>, cl: &Rc<LoopCluster>, view: &View) {
    let digest = view.layout.digest();
    let me = view.layout.get(view.me).map(|m| m.state);
    if me == Some(MemberState::Joining) || view.layout.owners().next().is_none() {
        return;
    }
    // After a restart, drop nothing before every member the saved layout names (and that is
    // still in the cluster) has answered: the saved layout may be older than the cluster's.
    if cl.shared.membership.restored_unheard() > 0 {
        return;
    }
    let now = now_ms();
    {
        let mut s = cl.shared.streams.state();
        if s.cleaned_digest == digest {
            return;
        }
        if !cl.shared.membership.converged() {
            s.clean_since = None;
            return;
        }
        let since = *s.clean_since.get_or_insert((digest, now));
        if since.0 != digest {
            s.clean_since = Some((digest, now));
            return;
        }
        if now.saturating_sub(since.1) < lp.node().config.request_timeout_ms {
            return;
        }
    }
    let store = &lp.node().store;
    let owned: Vec<bool> = (0..view.ring.partitions())
        .map(|p| view.ring.preference(p).contains(&view.me))
        .collect();
    let drop = |p: u32| !owned.get(p as usize).copied().unwrap_or(true);
    // What only this node holds reaches the replicas before anything is dropped.
    let doomed: Vec<u32> = (0..view.ring.partitions()).filter(|&p| drop(p)).collect();
    if let Err(e) = crate::cluster::aae::hand_over(lp, cl, view, &doomed).await {
        debug!(error = %e, "copies of partitions this node no longer replicates kept until \
            their replicas hold them");
        // Tried again after another settle time, not at every tick.
        cl.shared.streams.state().clean_since = Some((digest, now_ms()));
        return;
    }
    if cl.view().layout.digest() != digest {
        return; // changed meanwhile: start over
    }
    let mut dropped = 0u64;
    for shard in 0..store.len() {
        let mut from = Some(0);
        while let Some(at) = from {
            let (n, next) = store.drop_partitions(shard, &drop, at, CLEANUP_BATCH_SLOTS);
            dropped += n as u64;
            from = next;
            // Let requests run between batches.
            tokio::task::yield_now().await;
            if cl.view().layout.digest() != digest {
                return; // changed meanwhile: start over
            }
        }
    }
    if dropped > 0 {
        info!(
            keys = dropped,
            "dropped copies of partitions this node no longer replicates"
        );
        super::copy::count_dropped(&cl.shared.streams, dropped);
    }
    cl.shared.streams.state().cleaned_digest = digest;
}
