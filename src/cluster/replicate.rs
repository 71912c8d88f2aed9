//! Writes on a cluster: the coordinating replica sends the key's new entry to the other
//! replicas in parallel and counts durable acknowledgements; a replica that is down, or fails,
//! gets a stand-in past the preference list that stores a durable hint (it counts toward W),
//! or, when there is none, this node keeps the hint (it does not count).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::{peer, Value};
use tokio::sync::oneshot;

use super::coordinator::{quorum_error, AckWatch, QuorumKind};
use super::{LocalLoop, LoopCluster};
use crate::ring::membership::View;
use crate::ring::quorum::{Progress, WriteAnswer, WriteQuorum};
use crate::ring::NodeId;
use crate::store::Entry;

type Acked = (NodeId, Option<NodeId>, Result<(), String>);

/// REPLICATE to one node (`hint_for`: the owner it stands in for).
fn send_replica(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    to: NodeId,
    hint_for: Option<NodeId>,
    entry: Rc<Entry>,
) -> Option<LocalBoxFuture<'static, Acked>> {
    let addr = view.addr(to)?;
    if !view.reachable(to) {
        return None;
    }
    // A reachable node whose link on this loop is still being dialed gets a bounded wait in
    // the call (Link::call), not a stand-in at once.
    let link = cl.link(lp, addr);
    if link.peer.get().is_some_and(|p| p != to) {
        return None; // the address now belongs to another node: its ack would not be `to`'s
    }
    if let Some(c) = lp.cluster() {
        if hint_for.is_some() {
            c.shared.membership.stats.hints_stored.fetch_add(1, Relaxed);
        }
    }
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let call = link.call(timeout, |id, out| {
        peer::encode_replicate(id, hint_for.unwrap_or(0), entry.as_bytes(), out)
    });
    Some(Box::pin(async move {
        let r = call.await;
        let r = match r {
            Ok(Value::Simple(_)) => Ok(()),
            Ok(v) => Err(format!("unexpected REPLICATE reply {v:?}")),
            Err(e) => Err(e.to_string()),
        };
        (to, hint_for, r)
    }))
}

/// Sends the entry to the other replicas (stand-ins for those down), counts durable acks;
/// Ok once W have it. Keeps going in the background after that, so every replica (or a
/// stand-in's hint) gets the write.
pub(super) async fn replicate(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    p: u32,
    entry: Entry,
    w: usize,
    watch: Option<Rc<AckWatch>>,
) -> Result<(), String> {
    let (tx, rx) = oneshot::channel::<Result<(), String>>();
    let me = lp.node().node_id;
    let prefs: Vec<NodeId> = view.ring.preference(p).to_vec();
    // While the partition moves: its future owners, which must hold W copies too.
    let future: Option<Vec<NodeId>> = view.moving(p).map(|t| t.to_vec());
    let hinted = lp.node().config.cluster.hinted_handoff;
    let timeout_ms = lp.node().config.request_timeout_ms;
    let entry = Rc::new(entry);
    tokio::task::spawn_local(async move {
        let mut q = Quorums {
            now: WriteQuorum::new(w, &prefs),
            future: future.as_deref().map(|t| WriteQuorum::new(w, t)),
        };
        let mut futs: FuturesUnordered<LocalBoxFuture<'static, Acked>> = FuturesUnordered::new();
        // This replica's ack: its copy is applied, and the reply waits for it to be durable
        // (the connection holds every reply until its WAL positions are).
        q.answer(me, None, WriteAnswer::Applied);
        if let Some(watch) = &watch {
            watch.add();
        }
        // Future owners are never stand-ins: a hint they stored would count as their copy.
        let mut all = prefs.clone();
        all.extend(future.iter().flatten().filter(|t| !prefs.contains(t)));
        let used = RefCell::new(all);
        // A stand-in for `owner`: the next reachable node past the preference list.
        let stand_in = |owner: NodeId, q: &mut Quorums| {
            if !hinted {
                return None;
            }
            let pick = view
                .ring
                .fallbacks(p)
                .find(|f| !used.borrow().contains(f) && view.reachable(*f))?;
            used.borrow_mut().push(pick);
            q.now.add_target(pick);
            send_replica(&lp, &cl, &view, pick, Some(owner), entry.clone())
        };
        // No stand-in past the preference list (a cluster of N nodes, or all down): this
        // node keeps the hint itself, as Cassandra's coordinators do. It catches the owner
        // up but never counts toward W: this node already counts once, as a replica.
        let keep_hint = |owner: NodeId| {
            if !hinted {
                return;
            }
            let (cl, entry) = (cl.clone(), Entry::clone(&entry));
            tokio::task::spawn_local(async move {
                cl.shared
                    .membership
                    .stats
                    .hints_stored
                    .fetch_add(1, Relaxed);
                if let Err(e) = cl.shared.hints.store(owner, entry).await {
                    tracing::warn!(error = %e, "can't store a hint for a replica that is down");
                }
            });
        };
        for &t in prefs.iter().filter(|&&t| t != me) {
            match send_replica(&lp, &cl, &view, t, None, entry.clone()) {
                Some(f) => futs.push(f),
                None => match stand_in(t, &mut q) {
                    Some(f) => futs.push(f),
                    None => keep_hint(t),
                },
            }
        }
        // A future owner that is down gets nothing here: the move copies what it missed.
        for &t in future.iter().flatten().filter(|t| !prefs.contains(t)) {
            if let Some(f) = send_replica(&lp, &cl, &view, t, None, entry.clone()) {
                futs.push(f);
            }
        }
        let mut tx = Some(tx);
        let report = |q: &Quorums, tx: &mut Option<oneshot::Sender<_>>| {
            let out = match q.progress() {
                Progress::Reached => Ok(()),
                Progress::Impossible => Err(quorum_error(&*lp, QuorumKind::Write, q.acks(), w)),
                Progress::Pending => return,
            };
            if let Some(tx) = tx.take() {
                let _ = tx.send(out);
            }
        };
        report(&q, &mut tx);
        while let Some((from, hint_for, r)) = futs.next().await {
            let ok = r.is_ok();
            // WAIT counts replicas that hold the write itself, not stand-ins' hints.
            if let (true, None, Some(watch)) = (ok, hint_for, &watch) {
                watch.add();
            }
            q.answer(
                from,
                hint_for,
                if ok {
                    WriteAnswer::Applied
                } else {
                    WriteAnswer::Failed
                },
            );
            // A replica that failed (not a stand-in) gets a stand-in now.
            if !ok && from != me {
                // The owner: `from` itself, or the one a failed stand-in stood in for.
                let owner = hint_for.unwrap_or(from);
                match stand_in(owner, &mut q) {
                    Some(f) => futs.push(f),
                    None => keep_hint(owner),
                }
            }
            report(&q, &mut tx);
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(Err(quorum_error(&*lp, QuorumKind::Write, q.acks(), w)));
        }
    });
    let deadline = Duration::from_millis(timeout_ms);
    match super::sys::timeout(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("NOQUORUM the write's replication ended without an answer".into()),
        Err(_) => Err(format!(
            "NOQUORUM fewer than {w} replicas acknowledged the write within the deadline; it may \
             have been applied on some replicas"
        )),
    }
}

/// The acks a write needs: W among today's owners (stand-ins included), and while the
/// partition moves, W among its future owners too (their own copies only).
struct Quorums {
    now: WriteQuorum,
    future: Option<WriteQuorum>,
}

impl Quorums {
    fn answer(&mut self, from: NodeId, hint_for: Option<NodeId>, ans: WriteAnswer) {
        self.now.answer(from, ans);
        if let (Some(f), None) = (&mut self.future, hint_for) {
            f.answer(from, ans);
        }
    }

    fn progress(&self) -> Progress {
        let now = self.now.progress();
        match (now, self.future.as_ref().map(|f| f.progress())) {
            (p, None) => p,
            (Progress::Impossible, _) | (_, Some(Progress::Impossible)) => Progress::Impossible,
            (Progress::Reached, Some(Progress::Reached)) => Progress::Reached,
            (
                Progress::Pending | Progress::Reached,
                Some(Progress::Pending | Progress::Reached),
            ) => Progress::Pending,
        }
    }

    /// The acks to report: the fewer of the two, which is what fell short.
    fn acks(&self) -> usize {
        let now = self.now.acks();
        self.future.as_ref().map_or(now, |f| now.min(f.acks()))
    }
}
