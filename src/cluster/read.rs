//! Reads on a cluster: FETCH from the other replicas, answer from the DVV sync of the first R
//! answers (a replica without the key answers too; one that errs or times out does not), and
//! repair, in the background, every replica that answered with less.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::{key_hash, peer, Value};
use smallvec::SmallVec;

use super::coordinator::{
    conflicts, error, local_copy, quorum_error, run_on, QuorumKind, Reply, Req,
};
use super::link::CallError;
use super::{serve, LocalLoop, LoopCluster};
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::quorum::{Progress, ReadAnswer, ReadQuorum};
use crate::ring::NodeId;
use crate::store::{sync_entries, Conflicts, Entry, Placement, Store, VersionPolicy};

type Fetched = (NodeId, Result<Option<Entry>, CallError>);

/// FETCH from every other reachable replica.
fn fetch_all(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    prefs: &[NodeId],
    key: &[u8],
) -> FuturesUnordered<LocalBoxFuture<'static, Fetched>> {
    let me = lp.node().node_id;
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let futs = FuturesUnordered::new();
    for &t in prefs.iter().filter(|&&t| t != me) {
        let Some(addr) = view.addr(t) else { continue };
        if !view.reachable(t) {
            continue;
        }
        let link = cl.link(lp, addr);
        if link.peer.get().is_some_and(|p| p != t) {
            continue; // the address now belongs to another node
        }
        let key = key.to_vec();
        let lp = lp.clone();
        futs.push(Box::pin(async move {
            let t0 = super::sys::Instant::now();
            let r = link
                .call(timeout, |id, out| peer::encode_fetch(id, &key, out))
                .await;
            super::link::count_call(&*lp, &link, t0, r.is_ok());
            let r = match r {
                Ok(Value::Nil) => Ok(None),
                Ok(Value::Bulk(b)) => Entry::from_bytes(&b).map(Some).ok_or(CallError::Protocol {
                    peer: link.addr.clone(),
                    msg: "malformed entry".into(),
                }),
                Ok(v) => Err(CallError::Protocol {
                    peer: link.addr.clone(),
                    msg: format!("unexpected FETCH reply {v:?}"),
                }),
                Err(e) => Err(e),
            };
            (t, r)
        }) as LocalBoxFuture<'static, Fetched>);
    }
    futs
}

fn read_answer(r: &Result<Option<Entry>, CallError>) -> ReadAnswer {
    match r {
        Ok(Some(_)) => ReadAnswer::Found,
        Ok(None) => ReadAnswer::Missing,
        Err(_) => ReadAnswer::Failed,
    }
}

/// What the replicas answered to a read.
pub(super) struct Answers {
    quorum: ReadQuorum,
    need: usize,
    /// Each answering replica's copy (None: it has nothing).
    copies: Vec<(NodeId, Option<Entry>)>,
    merged: Option<Entry>,
    lww: Conflicts,
}

impl Answers {
    fn add(&mut self, from: NodeId, r: Result<Option<Entry>, CallError>) -> Progress {
        let p = self.quorum.answer(from, read_answer(&r));
        if let Ok(copy) = r {
            if let Some(e) = &copy {
                self.merged = match self.merged.take() {
                    None => Some(e.clone()),
                    Some(m) => Some(sync_entries(&m, e, self.lww).unwrap_or(m)),
                };
            }
            self.copies.push((from, copy));
        }
        p
    }
}

/// Collects answers until the quorum is reached or can't be, or the deadline passes.
async fn until_quorum(
    lp: &dyn LocalLoop,
    answers: &mut Answers,
    futs: &mut FuturesUnordered<LocalBoxFuture<'static, Fetched>>,
) -> Result<(), String> {
    let deadline = Duration::from_millis(lp.node().config.request_timeout_ms);
    let need = answers.need;
    let wait = async {
        loop {
            match answers.quorum.progress() {
                Progress::Reached => return Ok(()),
                Progress::Impossible => return Err(()),
                Progress::Pending => {}
            }
            match futs.next().await {
                Some((from, r)) => {
                    answers.add(from, r);
                }
                None => return Err(()),
            }
        }
    };
    match super::sys::timeout(deadline, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) | Err(_) => Err(quorum_error(
            lp,
            QuorumKind::Read,
            answers.quorum.answers(),
            need,
        )),
    }
}

/// Reads at R before a read-modify-write: what the others hold is merged into this replica.
pub(super) async fn gather(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    prefs: &[NodeId],
    key: &[u8],
    r: usize,
) -> Result<(), String> {
    let me = lp.node().node_id;
    let (local, _, _) = local_copy(&**lp, key);
    let mut answers = Answers {
        quorum: ReadQuorum::new(r, prefs),
        need: r,
        copies: Vec::new(),
        merged: None,
        lww: conflicts(&**lp),
    };
    answers.add(me, Ok(local));
    let mut futs = fetch_all(lp, cl, view, prefs, key);
    until_quorum(&**lp, &mut answers, &mut futs).await?;
    // What this merge logs is covered by the write that follows (a later record of the same
    // shard), whose reply waits for it.
    if let Some(m) = &answers.merged {
        serve::apply(&**lp, m);
    }
    spawn_repair(lp.clone(), cl.clone(), answers, futs);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn read(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    key: Vec<u8>,
    prefs: SmallVec<[NodeId; 4]>,
    req: Req,
    local: Option<Entry>,
    marks: Marks,
) -> Reply {
    let me = lp.node().node_id;
    let mut answers = Answers {
        quorum: ReadQuorum::new(req.q.r, &prefs),
        need: req.q.r,
        copies: Vec::new(),
        merged: None,
        lww: conflicts(&*lp),
    };
    answers.add(me, Ok(local));
    let mut futs = fetch_all(&lp, &cl, &view, &prefs, &key);
    if let Err(e) = until_quorum(&*lp, &mut answers, &mut futs).await {
        return error(req.reply_to, &e);
    }
    let out = if answers.merged == local_now(&*lp, &key) {
        // The replicas agree with this one as it is now (the common case): run the command on
        // it. (Nothing of this connection ran in between: a later command of a pipeline can't
        // be seen.)
        run_on(&*lp, &lp.node().store, &req).0
    } else {
        // The reply is computed from the merged copy alone, in a one-key scratch store.
        let scratch = Store::with_policy(1, Placement::Legacy, VersionPolicy::default());
        if let Some(m) = &answers.merged {
            scratch.lock(0).put(key_hash(&key), m.clone());
        }
        run_on(&*lp, &scratch, &req).0
    };
    spawn_repair(lp, cl, answers, futs);
    (out, marks)
}

/// This replica's copy of `key` now.
fn local_now(lp: &dyn LocalLoop, key: &[u8]) -> Option<Entry> {
    local_copy(lp, key).0
}

/// In the background: waits for the remaining answers, then sends the merged copy to every
/// replica that answered with less (or nothing), this one included.
fn spawn_repair(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    mut answers: Answers,
    mut futs: FuturesUnordered<LocalBoxFuture<'static, Fetched>>,
) {
    tokio::task::spawn_local(async move {
        while let Some((from, r)) = futs.next().await {
            answers.add(from, r);
        }
        let Some(merged) = answers.merged else { return };
        let me = lp.node().node_id;
        let view = cl.view();
        let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
        for (node, copy) in answers.copies {
            if copy.as_ref() == Some(&merged) {
                continue;
            }
            cl.shared
                .membership
                .stats
                .read_repairs
                .fetch_add(1, Relaxed);
            if node == me {
                serve::apply(&*lp, &merged);
                continue;
            }
            let Some(addr) = view.addr(node) else {
                continue;
            };
            let link = cl.link(&lp, addr);
            let bytes = merged.as_bytes().to_vec();
            tokio::task::spawn_local(async move {
                let _ = link
                    .call(timeout, |id, out| {
                        peer::encode_replicate(id, 0, &bytes, out)
                    })
                    .await;
            });
        }
    });
}
