//! The background work of the cluster, on loop 0: every heartbeat interval each peer gets a
//! GOSSIP (the layout digest, and the layout itself when the peer's last digest differed),
//! whose answer is that peer's heartbeat for the failure detector; seeds (--peers, CLUSTER
//! JOIN) are contacted until they are members; hints are replayed to owners that are back.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::peer::{self, GossipBody};
use ringkv_proto::Value;
use tracing::{info, warn};

use super::link::Link;
use super::LocalLoop;
use crate::ring::layout::MemberState;
use crate::ring::membership::HEARTBEAT_INTERVAL_MS;
use crate::ring::NodeId;
use crate::util::now_ms;

/// Hints in flight to one owner during a replay (throttle).
const HINT_REPLAY_INFLIGHT: usize = 64;

/// Runs until shutdown.
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let m = cl.shared.membership.clone();
    let mut tick = super::sys::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(super::sys::MissedTickBehavior::Delay);
    // The digest each peer last sent: the layout goes along only when it differs.
    let heard: Rc<std::cell::RefCell<HashMap<String, u64>>> = Default::default();
    let mut shutdown = lp.node().shutdown_signal();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        reassert_self(&*lp);
        let view = cl.view();
        let mut addrs: Vec<String> = view
            .layout
            .members()
            .filter(|x| x.id != m.me && x.state != MemberState::Removed && !x.addr.is_empty())
            .map(|x| x.addr.clone())
            .collect();
        addrs.extend(m.seeds());
        for addr in addrs {
            let link = cl.link(&lp, &addr);
            if !link.is_up() {
                continue;
            }
            tokio::task::spawn_local(exchange(lp.clone(), link, heard.clone()));
        }
        m.check_liveness(now_ms());
        publish_hints(&cl);
        for target in cl.shared.hints.waiting() {
            if view.reachable(target) {
                if let Some(addr) = view.addr(target) {
                    let link = cl.link(&lp, addr);
                    if link.is_up() && link.peer.get() == Some(target) {
                        tokio::task::spawn_local(replay(lp.clone(), link, target));
                    }
                }
            }
        }
    }
}

/// Copies the hint counts where INFO and the metrics read them.
fn publish_hints(cl: &super::LoopCluster) {
    let pending = cl.shared.hints.pending();
    cl.shared.membership.set_hints_pending(
        pending
            .into_iter()
            .map(|p| (p.target, p.count, p.oldest_age_ms))
            .collect(),
    );
}

/// This node's own entry must carry its current address and zone (after a restart with new
/// ones, the cluster may remember old ones with a higher version).
fn reassert_self(lp: &dyn LocalLoop) {
    let Some(cl) = lp.cluster() else { return };
    // Not bound yet (no --advertise): the address is unknown, not empty.
    if cl.shared.advertise().is_empty() {
        return;
    }
    let m = &cl.shared.membership;
    let layout = m.layout();
    if let Some(me) = layout.get(m.me) {
        if me.addr != cl.shared.advertise() || me.zone != cl.shared.zone {
            m.set_self(cl.shared.advertise(), &cl.shared.zone, me.state);
        }
    }
}

/// One GOSSIP round trip with a peer.
async fn exchange(
    lp: Rc<dyn LocalLoop>,
    link: Rc<Link>,
    heard: Rc<std::cell::RefCell<HashMap<String, u64>>>,
) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let m = &cl.shared.membership;
    let view = m.view();
    let digest = view.digest;
    let send_all = heard.borrow().get(&link.addr) != Some(&digest);
    let body = GossipBody {
        digest,
        members: if send_all {
            view.layout.members().cloned().collect()
        } else {
            Vec::new()
        },
    };
    drop(view);
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let r = link
        .call(timeout, |id, out: &mut BytesMut| {
            peer::encode_gossip(id, &body, out)
        })
        .await;
    match r {
        Ok(Value::Bulk(b)) => match GossipBody::decode(&b) {
            Ok(theirs) => {
                if let Some(peer) = link.peer.get() {
                    m.heartbeat(peer, now_ms());
                    m.heard_digest(peer, theirs.digest);
                }
                heard.borrow_mut().insert(link.addr.clone(), theirs.digest);
                m.merge(theirs.members);
            }
            Err(e) => warn!(peer = %link.addr, error = %e, "malformed gossip reply"),
        },
        Ok(other) => warn!(peer = %link.addr, reply = ?other, "unexpected gossip reply"),
        Err(_) => {} // the detector notices the missing heartbeat
    }
}

/// Sends `target` every hint held for it; deletes them once all were acknowledged.
async fn replay(lp: Rc<dyn LocalLoop>, link: Rc<Link>, target: NodeId) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let hints = &cl.shared.hints;
    // Reading and syncing the log is file I/O: off the event loop.
    let shared = cl.shared.clone();
    let taken = super::sys::blocking(move || shared.hints.begin_replay(target)).await;
    let entries = match taken.and_then(|r| r) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "can't read hints");
            hints.end_replay(target, None);
            return;
        }
    };
    let total = entries.len() as u64;
    info!(node = %crate::ring::membership::format_id(target), hints = total, "replaying hints to a node that is back");
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let mut ok = true;
    for chunk in entries.chunks(HINT_REPLAY_INFLIGHT) {
        let calls = chunk.iter().map(|e| {
            let link = link.clone();
            async move {
                link.call(timeout, |id, out: &mut BytesMut| {
                    peer::encode_replicate(id, 0, e.as_bytes(), out)
                })
                .await
            }
        });
        let results = futures::future::join_all(calls).await;
        if results.iter().any(|r| r.is_err()) {
            ok = false;
            break;
        }
    }
    if ok {
        hints.end_replay(target, Some(total));
        publish_hints(&cl);
        cl.shared
            .membership
            .stats
            .hints_delivered
            .fetch_add(total, Relaxed);
        info!(node = %crate::ring::membership::format_id(target), hints = total, "hints delivered");
    } else {
        hints.end_replay(target, None);
        warn!(node = %crate::ring::membership::format_id(target), "hint replay failed; retrying later");
    }
}
