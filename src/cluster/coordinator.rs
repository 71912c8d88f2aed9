//! The coordinator: a client's keyed command on a cluster.
//!
//! - Not a replica of the key: FORWARD to one that is (one hop), relay its reply.
//! - Reads: this replica's copy is taken at once; FETCH asks the other replicas; the reply is
//!   computed from the DVV sync of the first R answers (a replica with nothing answers too;
//!   one that errs or times out does not). The rest are awaited in the background, and every
//!   replica whose copy is older than the sync gets it (read repair).
//! - Blind writes (SET without conditions, binary PUT and DELETE with a context): run on this
//!   replica at once (new version, this node's dot), then REPLICATE the key's entry to the
//!   others; the reply goes out once W replicas durably hold it. A replica that is down (or
//!   fails) is replaced by a stand-in that stores a durable hint.
//! - Other writes (DEL, INCR, APPEND, EXPIRE, SET NX ...) first read at R and merge what the
//!   others hold into this replica, so they act on the key's latest state, then write as
//!   above. A connection waits for such a command before running its next one.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_proto::peer::{self, ForwardHead};
use ringkv_proto::{key_hash, FrameWriter, Protocol, ReplySink, RespWriter, Value};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::link::CallError;
use super::{serve, wait_durable, LocalLoop, LoopCluster};
use crate::cmd::{self, strings::Cond, strings::SetReply, Command, Ctx, Route};
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::quorum::{Progress, ReadAnswer, ReadQuorum, WriteAnswer, WriteQuorum};
use crate::ring::NodeId;
use crate::store::{sync_entries, Conflicts, Entry, Placement, Store, VersionPolicy};
use crate::util::now_ms;

/// How a reply is encoded: RESP, or a binary frame answering (request id, opcode).
pub type ReplyTo = Option<(u64, u8)>;

/// Read and write quorums of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub r: usize,
    pub w: usize,
}

/// How many replicas durably hold one write (WAIT): counted as their acknowledgements come in,
/// also after the reply went out.
#[derive(Default)]
pub struct AckWatch {
    count: std::cell::Cell<usize>,
    changed: tokio::sync::Notify,
}

impl AckWatch {
    pub fn count(&self) -> usize {
        self.count.get()
    }

    fn add(&self) {
        self.count.set(self.count.get() + 1);
        self.changed.notify_waiters();
    }

    fn at_least(&self, n: usize) {
        if self.count.get() < n {
            self.count.set(n);
            self.changed.notify_waiters();
        }
    }

    /// Waits until at least `n` replicas hold the write, or `timeout` passes.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let changed = self.changed.notified();
                if self.count.get() >= n {
                    return;
                }
                changed.await;
            }
        })
        .await;
    }
}

/// A coordinated command's reply: ready now, later, or later and the connection must wait for
/// it before running its next command.
pub enum Coordinated {
    Ready(BytesMut),
    Pending(LocalBoxFuture<'static, BytesMut>),
    Inline(LocalBoxFuture<'static, BytesMut>),
}

/// Encodes one reply in the client's protocol.
pub fn encode(reply_to: ReplyTo, f: impl FnOnce(&mut dyn ReplySink)) -> BytesMut {
    let mut out = BytesMut::new();
    match reply_to {
        None => f(&mut RespWriter::new(&mut out)),
        Some((id, op)) => {
            let mut w = FrameWriter::new(&mut out, id, op);
            f(&mut w);
            w.finish();
        }
    }
    out
}

fn error(reply_to: ReplyTo, msg: &str) -> BytesMut {
    encode(reply_to, |s| s.error(msg))
}

enum Kind {
    Read,
    Blind,
    Rmw,
}

fn kind(c: &Command<'_>) -> Kind {
    match c {
        Command::Set(s) if s.cond == Cond::Always && s.reply == SetReply::Ok && !s.keep_ttl => {
            Kind::Blind
        }
        Command::VPut { .. } => Kind::Blind,
        Command::VDel(_, ctx) if !ctx.is_empty() => Kind::Blind,
        c if c.is_write() => Kind::Rmw,
        _ => Kind::Read,
    }
}

/// What a keyed command needs, owned (it outlives the request buffer).
struct Req {
    args: Vec<Vec<u8>>,
    internal: bool,
    reply_to: ReplyTo,
    q: Quorum,
    /// Counts the replicas that hold this write (for WAIT).
    watch: Option<Rc<AckWatch>>,
}

impl Req {
    fn argv(&self) -> SmallVec<[&[u8]; 6]> {
        self.args.iter().map(|a| a.as_slice()).collect()
    }
}

fn ctx_of(lp: &dyn LocalLoop) -> Ctx {
    let cfg = &lp.node().config;
    Ctx {
        node_id: lp.node().node_id,
        now_ms: now_ms(),
        max_value: cfg.max_value(),
        max_reply: cfg.max_output_buffer_bytes,
    }
}

/// Runs the command on `store`; its reply and the WAL positions it depends on.
fn run_on(lp: &dyn LocalLoop, store: &Store, req: &Req) -> (BytesMut, Marks) {
    let argv = req.argv();
    let c = ctx_of(lp);
    let mut marks = Marks::new();
    let out = encode(req.reply_to, |sink| {
        match cmd::parse_slot(&argv, req.internal).1 {
            Ok(command) => marks = cmd::run_keyed(&command, store, &c, sink),
            Err(e) => sink.error(&e.0),
        }
    });
    (out, marks)
}

/// The local shard's copy of `key`, the WAL position it shows, and the shard's dot counter
/// floor (it rises with every version the shard mints, WAL or not: how a write is noticed).
fn local_copy(lp: &dyn LocalLoop, key: &[u8]) -> (Option<Entry>, Marks, u64) {
    let store = &lp.node().store;
    let hash = key_hash(key);
    let shard = store.shard_of(hash);
    let s = store.lock(shard);
    let e = s.entry(hash, key).cloned();
    let marks = if s.wal.enabled {
        [(shard as u32, s.wal.seq)].into_iter().collect()
    } else {
        Marks::new()
    };
    (e, marks, s.dot_floor())
}

fn conflicts(lp: &dyn LocalLoop) -> Conflicts {
    lp.node().store.lock(0).policy.conflicts
}

/// Coordinates one keyed command (see the module doc).
pub fn coordinate(
    lp: &Rc<dyn LocalLoop>,
    args: Vec<Vec<u8>>,
    internal: bool,
    reply_to: ReplyTo,
    q: Quorum,
    may_forward: bool,
    watch: Option<Rc<AckWatch>>,
) -> Coordinated {
    let Some(cl) = lp.cluster().cloned() else {
        return Coordinated::Ready(error(reply_to, "ERR this node is not in cluster mode"));
    };
    let req = Req {
        args,
        internal,
        reply_to,
        q,
        watch,
    };
    let (key, k) = {
        let argv = req.argv();
        let command = match cmd::parse_slot(&argv, internal).1 {
            Ok(c) => c,
            Err(e) => return Coordinated::Ready(error(reply_to, &e.0)),
        };
        let Route::Key(key) = command.route() else {
            return Coordinated::Ready(error(reply_to, "ERR internal: not a single-key command"));
        };
        (key.to_vec(), kind(&command))
    };
    let view = cl.view();
    let p = view.ring.partition_of(key_hash(&key));
    let prefs: SmallVec<[NodeId; 4]> = view.ring.preference(p).iter().copied().collect();
    if prefs.is_empty() {
        return Coordinated::Ready(error(
            reply_to,
            "CLUSTERDOWN no active node owns this key's partition",
        ));
    }
    let me = lp.node().node_id;
    if !prefs.contains(&me) {
        if !may_forward {
            return Coordinated::Ready(error(
                reply_to,
                "TRYAGAIN this node is not a replica of the key (the layout is changing); retry",
            ));
        }
        let fut = forward(lp.clone(), cl, view, prefs, req);
        return match k {
            Kind::Rmw => Coordinated::Inline(Box::pin(fut)),
            Kind::Read | Kind::Blind => Coordinated::Pending(Box::pin(fut)),
        };
    }
    match k {
        Kind::Read => {
            let (local, marks, _) = local_copy(&**lp, &key);
            Coordinated::Pending(Box::pin(read(
                lp.clone(),
                cl,
                view,
                key,
                prefs,
                req,
                local,
                marks,
            )))
        }
        Kind::Blind => write_now(lp, cl, view, p, req, &key),
        Kind::Rmw => {
            let lp = lp.clone();
            Coordinated::Inline(Box::pin(async move {
                let reply_to = req.reply_to;
                if let Err(e) = gather(&lp, &cl, &view, &prefs, &key, req.q.r).await {
                    return error(reply_to, &e);
                }
                match write_now(&lp, cl, view, p, req, &key) {
                    Coordinated::Ready(b) => b,
                    Coordinated::Pending(f) | Coordinated::Inline(f) => f.await,
                }
            }))
        }
    }
}

/// Runs a blind write here and replicates what it left.
fn write_now(
    lp: &Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    p: u32,
    req: Req,
    key: &[u8],
) -> Coordinated {
    let (_, _, before) = local_copy(&**lp, key);
    let (out, marks) = run_on(&**lp, &lp.node().store, &req);
    let (entry, _, after) = local_copy(&**lp, key);
    let lp = lp.clone();
    let reply_to = req.reply_to;
    let w = req.q.w;
    let watch = req.watch.clone();
    // The shard minted a version (this write; another loop's write to the same shard in
    // between only makes this replicate the key once more, which is harmless).
    match entry.filter(|_| after > before) {
        // Nothing written (a failed command): the reply waits only for what it showed.
        None => Coordinated::Pending(Box::pin(async move {
            match wait_durable(&*lp, &marks).await {
                Ok(()) => out,
                Err(e) => error(reply_to, &format!("ERR the disk failed: {e}")),
            }
        })),
        Some(entry) => Coordinated::Pending(Box::pin(async move {
            match replicate(lp, cl, view, p, entry, w, marks, watch).await {
                Ok(()) => out,
                Err(msg) => error(reply_to, &msg),
            }
        })),
    }
}

/// FORWARD to the first reachable replica.
async fn forward(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    prefs: SmallVec<[NodeId; 4]>,
    req: Req,
) -> BytesMut {
    let (proto, id, op) = match req.reply_to {
        None => (Protocol::Resp, 0, 0),
        Some((id, op)) => (Protocol::Binary, id, op),
    };
    let head = ForwardHead {
        proto,
        client_request_id: id,
        client_opcode: op,
        r: req.q.r as u8,
        w: req.q.w as u8,
    };
    let timeout = Duration::from_millis(lp.node().config.request_timeout_ms);
    let argv = req.argv();
    let mut last = String::from("no replica is reachable");
    for target in prefs.iter().filter(|&&t| view.reachable(t)) {
        let Some(addr) = view.addr(*target) else {
            continue;
        };
        let link = cl.link(&lp, addr);
        let r = link
            .call(timeout, |rid, out| {
                peer::encode_forward(rid, &head, &argv, out)
            })
            .await;
        match r {
            Ok(Value::Bulk(b)) => {
                // The coordinator answered after W acks; later ones are not visible here.
                if let Some(watch) = &req.watch {
                    watch.at_least(req.q.w);
                }
                return BytesMut::from(&b[..]);
            }
            Ok(v) => last = format!("unexpected FORWARD reply {v:?}"),
            Err(e @ (CallError::Unreachable(_) | CallError::Busy(_))) => {
                last = e.to_string();
                continue;
            }
            // Sent, outcome unknown: a retry elsewhere could apply a write twice.
            Err(e) => {
                return error(
                    req.reply_to,
                    &format!("ERR forwarding to a replica failed: {e}; the outcome is unknown"),
                )
            }
        }
    }
    error(
        req.reply_to,
        &format!("CLUSTERDOWN no replica of this key can be reached: {last}"),
    )
}

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
        let key = key.to_vec();
        let lp = lp.clone();
        futs.push(Box::pin(async move {
            let t0 = tokio::time::Instant::now();
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
struct Answers {
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

fn quorum_error(lp: &dyn LocalLoop, what: &str, got: usize, need: usize) -> String {
    if let Some(c) = lp.cluster() {
        let s = &c.shared.membership.stats;
        match what {
            "read" => s.read_quorum_failures.fetch_add(1, Relaxed),
            _ => s.write_quorum_failures.fetch_add(1, Relaxed),
        };
    }
    match what {
        "read" => format!(
            "NOQUORUM read answered by {got} of the {need} replicas required (R) before the \
             deadline; other replicas are down or slow"
        ),
        _ => format!(
            "NOQUORUM write acknowledged by {got} of the {need} replicas required (W) before \
             the deadline; it may have been applied on some replicas"
        ),
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
    match tokio::time::timeout(deadline, wait).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(())) | Err(_) => Err(quorum_error(lp, "read", answers.quorum.answers(), need)),
    }
}

/// Reads at R before a read-modify-write: what the others hold is merged into this replica.
async fn gather(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    view: &View,
    prefs: &[NodeId],
    key: &[u8],
    r: usize,
) -> Result<(), String> {
    let me = lp.node().node_id;
    let (local, marks, _) = local_copy(&**lp, key);
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
    if let Some(m) = &answers.merged {
        serve::apply(&**lp, m);
    }
    wait_durable(&**lp, &marks)
        .await
        .map_err(|e| format!("ERR the disk failed: {e}"))?;
    spawn_repair(lp.clone(), cl.clone(), answers, futs);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn read(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    key: Vec<u8>,
    prefs: SmallVec<[NodeId; 4]>,
    req: Req,
    local: Option<Entry>,
    marks: Marks,
) -> BytesMut {
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
    // The reply is computed from the merged copy alone, in a one-key scratch store.
    let scratch = Store::with_policy(1, Placement::Legacy, VersionPolicy::default());
    if let Some(m) = &answers.merged {
        scratch.lock(0).put(key_hash(&key), m.clone());
    }
    let (out, _) = run_on(&*lp, &scratch, &req);
    if let Err(e) = wait_durable(&*lp, &marks).await {
        return error(req.reply_to, &format!("ERR the disk failed: {e}"));
    }
    spawn_repair(lp, cl, answers, futs);
    out
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
    if let Some(c) = lp.cluster() {
        if hint_for.is_some() {
            c.shared.membership.stats.hints_stored.fetch_add(1, Relaxed);
        }
    }
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let lp = lp.clone();
    Some(Box::pin(async move {
        let t0 = tokio::time::Instant::now();
        let r = link
            .call(timeout, |id, out| {
                peer::encode_replicate(id, hint_for.unwrap_or(0), entry.as_bytes(), out)
            })
            .await;
        super::link::count_call(&*lp, &link, t0, r.is_ok());
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
#[allow(clippy::too_many_arguments)]
async fn replicate(
    lp: Rc<dyn LocalLoop>,
    cl: Rc<LoopCluster>,
    view: Arc<View>,
    p: u32,
    entry: Entry,
    w: usize,
    local_marks: Marks,
    watch: Option<Rc<AckWatch>>,
) -> Result<(), String> {
    let (tx, rx) = oneshot::channel::<Result<(), String>>();
    let me = lp.node().node_id;
    let prefs: Vec<NodeId> = view.ring.preference(p).to_vec();
    let hinted = lp.node().config.cluster.hinted_handoff;
    let timeout_ms = lp.node().config.request_timeout_ms;
    let entry = Rc::new(entry);
    tokio::task::spawn_local(async move {
        let mut q = WriteQuorum::new(w, &prefs);
        let mut futs: FuturesUnordered<LocalBoxFuture<'static, Acked>> = FuturesUnordered::new();
        {
            let lp = lp.clone();
            futs.push(Box::pin(async move {
                let r = wait_durable(&*lp, &local_marks)
                    .await
                    .map_err(|e| e.to_string());
                (me, None, r)
            }));
        }
        let used = RefCell::new(prefs.clone());
        // A stand-in for `owner`: the next reachable node past the preference list.
        let stand_in = |owner: NodeId, q: &mut WriteQuorum| {
            if !hinted {
                return None;
            }
            let pick = view
                .ring
                .fallbacks(p)
                .find(|f| !used.borrow().contains(f) && view.reachable(*f))?;
            used.borrow_mut().push(pick);
            q.add_target(pick);
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
        let mut tx = Some(tx);
        let report = |q: &WriteQuorum, tx: &mut Option<oneshot::Sender<_>>| {
            let out = match q.progress() {
                Progress::Reached => Ok(()),
                Progress::Impossible => Err(quorum_error(&*lp, "write", q.acks(), w)),
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
            let _ = tx.send(Err(quorum_error(&*lp, "write", q.acks(), w)));
        }
    });
    let deadline = Duration::from_millis(timeout_ms);
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err("NOQUORUM the write's replication ended without an answer".into()),
        Err(_) => Err(format!(
            "NOQUORUM fewer than {w} replicas acknowledged the write within the deadline; it may \
             have been applied on some replicas"
        )),
    }
}

/// Runs a command a peer forwarded (this node is, for the peer, a replica of its key).
pub async fn run_forwarded(
    lp: &Rc<dyn LocalLoop>,
    head: ForwardHead,
    args: Vec<Vec<u8>>,
) -> BytesMut {
    let reply_to = match head.proto {
        Protocol::Resp => None,
        Protocol::Binary => Some((head.client_request_id, head.client_opcode)),
    };
    let cfg = &lp.node().config;
    let q = Quorum {
        r: if head.r == 0 {
            cfg.cluster.r as usize
        } else {
            head.r as usize
        },
        w: if head.w == 0 {
            cfg.cluster.w as usize
        } else {
            head.w as usize
        },
    };
    let internal = matches!(
        args.first().map(|a| a.as_slice()),
        Some(b"VGET" | b"VPUT" | b"VDEL")
    );
    match coordinate(lp, args, internal, reply_to, q, false, None) {
        Coordinated::Ready(b) => b,
        Coordinated::Pending(f) | Coordinated::Inline(f) => f.await,
    }
}
