//! Reads on a cluster: FETCH from the other replicas, answer from the DVV sync of the first R
//! answers (a replica without the key answers too; one that errs or times out does not), and
//! repair, in the background, every replica that answered with less.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::{key_hash, peer, Value};
use smallvec::SmallVec;

use super::coordinator::{
    conflicts, encode, error, local_copy, quorum_error, run_on, QuorumKind, Reply, ReplyTo, Req,
};
use super::link::{Call, CallError, Link};
use super::{serve, LocalLoop, LoopCluster};
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::quorum::{Progress, ReadAnswer, ReadQuorum};
use crate::ring::NodeId;
use crate::store::{sync_entries, Conflicts, Entry, Live, Placement, Store, VersionPolicy};
use crate::util::now_ms;

type Fetched = (NodeId, Result<Option<Entry>, CallError>);

/// One replica's answer to a FETCH, decoded.
pub(super) struct Fetch {
    from: NodeId,
    link: Rc<Link>,
    call: Call,
}

impl Future for Fetch {
    type Output = Fetched;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Fetched> {
        let this = self.get_mut();
        let r = match Pin::new(&mut this.call).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r,
        };
        let peer = || this.link.addr.clone();
        let r = match r {
            Ok(Value::Nil) => Ok(None),
            Ok(Value::Bulk(b)) => Entry::from_bytes(&b).map(Some).ok_or(CallError::Protocol {
                peer: peer(),
                msg: "malformed entry".into(),
            }),
            Ok(v) => Err(CallError::Protocol {
                peer: peer(),
                msg: format!("unexpected FETCH reply {v:?}"),
            }),
            Err(e) => Err(e),
        };
        Poll::Ready((this.from, r))
    }
}

type Fetches = FuturesUnordered<Fetch>;

/// FETCH from every other reachable replica (queued on the links at once).
fn fetch_all(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    prefs: &[NodeId],
    key: &[u8],
) -> Fetches {
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
        let call = link.call(timeout, |id, out| peer::encode_fetch(id, key, out));
        futs.push(Fetch {
            from: t,
            link,
            call,
        });
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

/// Collects answers until the quorum is reached or can't be. Every FETCH ends by its
/// deadline (--peer-timeout-ms, kept by its link), so this needs no timer of its own.
async fn until_quorum(
    lp: &dyn LocalLoop,
    answers: &mut Answers,
    futs: &mut Fetches,
) -> Result<(), String> {
    loop {
        match answers.quorum.progress() {
            Progress::Reached => return Ok(()),
            Progress::Impossible => break,
            Progress::Pending => {}
        }
        match futs.next().await {
            Some((from, r)) => {
                answers.add(from, r);
            }
            None => break,
        }
    }
    Err(quorum_error(
        lp,
        QuorumKind::Read,
        answers.quorum.answers(),
        answers.need,
    ))
}

/// The key's copy reconciled from R replicas, from any node (a replica or not; this node's
/// copy counts if it is one), without touching this node's store: for commands that read
/// keys and write others (RENAME, and BITOP, COPY ... in [`super::scratch`]). Also the WAL
/// positions of this node's copy, for the reply to wait on. The replicas that answered with
/// less are repaired in the background, as after any read.
pub(super) async fn read_merged(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    key: &[u8],
    r: usize,
) -> Result<(Option<Entry>, Marks), String> {
    let me = lp.node().node_id;
    let p = view.ring.partition_of(key_hash(key));
    let prefs: SmallVec<[NodeId; 4]> = view.ring.preference(p).iter().copied().collect();
    if prefs.is_empty() {
        return Err("CLUSTERDOWN no active node owns this key's partition".into());
    }
    let mut answers = Answers {
        quorum: ReadQuorum::new(r, &prefs),
        need: r,
        copies: Vec::new(),
        merged: None,
        lww: conflicts(&**lp),
    };
    let mut marks = Marks::new();
    if prefs.contains(&me) {
        let (local, m, _) = local_copy(&**lp, key);
        marks = m;
        answers.add(me, Ok(local));
    }
    let mut futs = fetch_all(lp, cl, view, &prefs, key);
    until_quorum(&**lp, &mut answers, &mut futs).await?;
    let merged = answers.merged.clone();
    if let Some(repair) = Repair::new(lp.clone(), cl.clone(), answers, futs) {
        tokio::task::spawn_local(repair.run());
    }
    Ok((merged, marks))
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
    if let Some(repair) = Repair::new(lp.clone(), cl.clone(), answers, futs) {
        tokio::task::spawn_local(repair.run());
    }
    Ok(())
}

/// A read: the reply once R replicas answered, and the repair of the others (to run after
/// the reply went out, in the same task).
#[allow(clippy::too_many_arguments)]
pub(super) async fn read(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    key: Vec<u8>,
    prefs: SmallVec<[NodeId; 4]>,
    req: Req,
    get: bool,
    local: Option<Entry>,
    marks: Marks,
) -> (Reply, Option<Repair>) {
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
        return (error(req.reply_to, &e), None);
    }
    let out = if get {
        // GET (the common read) answers from the merged copy directly.
        get_reply(req.reply_to, answers.merged.as_ref(), now_ms())
    } else if answers.merged == local_now(&*lp, &key) {
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
    ((out, marks), Repair::new(lp, cl, answers, futs))
}

/// GET's reply from the key's reconciled copy, as `cmd::strings` encodes it.
fn get_reply(reply_to: ReplyTo, merged: Option<&Entry>, now_ms: u64) -> BytesMut {
    encode(reply_to, |out| {
        if out.wants_context() {
            return crate::cmd::versioned::reply(merged, now_ms, out);
        }
        match merged.and_then(|e| Live::of(e, now_ms)) {
            Some(e) => out.bulk(e.value()),
            None => out.nil(),
        }
    })
}

/// This replica's copy of `key` now.
fn local_now(lp: &dyn LocalLoop, key: &[u8]) -> Option<Entry> {
    local_copy(lp, key).0
}

/// Read repair: once every replica asked has answered (or its call ended), the merged copy
/// goes to each that answered with less (or nothing), this one included.
pub struct Repair {
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    answers: Answers,
    futs: Fetches,
}

impl Repair {
    /// None when there is nothing left to do: every answer is in and none is stale.
    fn new(
        lp: Rc<dyn LocalLoop>,
        cl: Rc<LoopCluster>,
        answers: Answers,
        futs: Fetches,
    ) -> Option<Repair> {
        let r = Repair {
            lp,
            cl,
            answers,
            futs,
        };
        (!r.futs.is_empty() || r.stale().next().is_some()).then_some(r)
    }

    pub async fn run(mut self) {
        while let Some((from, r)) = self.futs.next().await {
            self.answers.add(from, r);
        }
        self.finish().await;
    }

    /// The replicas whose answer differs from the merged copy (none with --read-repair off:
    /// stale replicas are then left to anti-entropy).
    fn stale(&self) -> impl Iterator<Item = NodeId> + '_ {
        let merged = self.answers.merged.as_ref();
        let on = self.lp.node().config.cluster.read_repair && merged.is_some();
        let copies = if on { &self.answers.copies[..] } else { &[] };
        copies
            .iter()
            .filter(move |(_, copy)| copy.as_ref() != merged)
            .map(|(node, _)| *node)
    }

    async fn finish(self) {
        let stale: SmallVec<[NodeId; 4]> = self.stale().collect();
        let Repair {
            lp, cl, answers, ..
        } = self;
        let Some(merged) = answers.merged else { return };
        if stale.is_empty() {
            return;
        }
        let me = lp.node().node_id;
        // Counted when decided, before the wait below (tests/dot_actor.rs relies on it).
        cl.shared
            .membership
            .stats
            .read_repairs
            .fetch_add(stale.len() as u64, Relaxed);
        if stale.contains(&me) {
            serve::apply(&*lp, &merged);
        }
        // The merged copy holds this replica's versions: they leave only once durable here.
        if stale.iter().any(|&n| n != me)
            && super::wait_durable(&*lp, &super::shard_mark(&*lp, merged.key()))
                .await
                .is_err()
        {
            return;
        }
        let view = cl.view();
        let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
        for node in stale.into_iter().filter(|&n| n != me) {
            let Some(addr) = view.addr(node) else {
                continue;
            };
            // Its answer is not needed (the link counts it, or its failure).
            cl.link(&lp, addr)
                .call(timeout, |id, out| {
                    peer::encode_replicate(id, 0, merged.as_bytes(), out)
                })
                .detach();
        }
    }
}
