//! The coordinator: a client's keyed command on a cluster.
//!
//! - Not a replica of the key: FORWARD to one that is (one hop), relay its reply.
//! - Reads: this replica's copy is taken at once; FETCH asks the other replicas; the reply is
//!   computed from the DVV sync of the first R answers (a replica with nothing answers too;
//!   one that errs or times out does not). The rest are awaited in the background, and every
//!   replica whose copy is older than the sync gets it (read repair).
//! - Blind writes (SET without conditions, binary PUT and DELETE with a context): run on this
//!   replica at once (new version, this node's dot), then, once that is durable here
//!   (`super::wait_durable`), REPLICATE the key's entry to the others; the reply goes out
//!   once W replicas durably hold it. A replica that is down (or fails) is replaced by a
//!   stand-in that stores a durable hint.
//! - Other writes (DEL, INCR, APPEND, EXPIRE, SET NX ...) first read at R and merge what the
//!   others hold into this replica, so they act on the key's latest state, then write as
//!   above. A connection waits for such a command before running its next one.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::future::LocalBoxFuture;
use ringkv_proto::peer::{self, ForwardHead};
use ringkv_proto::{key_hash, FrameWriter, Protocol, ReplySink, RespWriter, Value};
use smallvec::SmallVec;

use super::link::CallError;
pub use super::read::Repair;
use super::read::{gather, read};
use super::replicate::replicate;
use super::{LocalLoop, LoopCluster};
use crate::cmd::{self, strings::Cond, strings::SetReply, Command, Ctx, Route};
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::NodeId;
use crate::store::{Conflicts, Entry, Store};
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

    pub(super) fn add(&self) {
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
        let _ = super::sys::timeout(timeout, async {
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

/// A reply, encoded for the client, and the WAL positions of this node it must wait for
/// (what it wrote or showed): the connection holds it until they are durable, as it holds any
/// reply (so a coordinator never waits for its own fsync in a task of its own).
pub type Reply = (BytesMut, Marks);

/// A coordinated command's reply: ready now, later, or later and the connection must wait for
/// it before running its next command.
pub enum Coordinated {
    Ready(Reply),
    Pending(LocalBoxFuture<'static, Reply>),
    /// A read: its reply later, then the read repair to run (in the same task, after the
    /// reply went out).
    Read(LocalBoxFuture<'static, (Reply, Option<Repair>)>),
    Inline(LocalBoxFuture<'static, Reply>),
}

impl Coordinated {
    /// The reply, whichever way it comes (a read's repair goes on in a task of its own).
    pub async fn reply(self) -> Reply {
        match self {
            Coordinated::Ready(r) => r,
            Coordinated::Pending(f) | Coordinated::Inline(f) => f.await,
            Coordinated::Read(f) => {
                let (r, repair) = f.await;
                if let Some(repair) = repair {
                    tokio::task::spawn_local(repair.run());
                }
                r
            }
        }
    }
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

pub(super) fn error(reply_to: ReplyTo, msg: &str) -> Reply {
    (encode(reply_to, |s| s.error(msg)), Marks::new())
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
pub(super) struct Req {
    pub(super) args: Vec<Vec<u8>>,
    pub(super) internal: bool,
    pub(super) reply_to: ReplyTo,
    pub(super) q: Quorum,
    /// Counts the replicas that hold this write (for WAIT).
    pub(super) watch: Option<Rc<AckWatch>>,
}

impl Req {
    pub(super) fn argv(&self) -> SmallVec<[&[u8]; 6]> {
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
pub(super) fn run_on(lp: &dyn LocalLoop, store: &Store, req: &Req) -> Reply {
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
pub(super) fn local_copy(lp: &dyn LocalLoop, key: &[u8]) -> (Option<Entry>, Marks, u64) {
    let store = &lp.node().store;
    let hash = key_hash(key);
    let shard = store.shard_of(hash);
    // One lock: the mark covers exactly what the copy shows, even with other loops writing.
    let s = store.lock(shard);
    let marks = s.logged().map(|q| (shard as u32, q)).into_iter().collect();
    (s.entry(hash, key).cloned(), marks, s.dot_floor())
}

pub(super) fn conflicts(lp: &dyn LocalLoop) -> Conflicts {
    match lp.node().config.conflicts {
        crate::config::ConflictMode::Siblings => Conflicts::Siblings,
        crate::config::ConflictMode::Lww => Conflicts::Lww,
    }
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
    let (key, k, get) = {
        let argv = req.argv();
        let command = match cmd::parse_slot(&argv, internal).1 {
            Ok(c) => c,
            Err(e) => return Coordinated::Ready(error(reply_to, &e.0)),
        };
        let Route::Key(key) = command.route() else {
            return Coordinated::Ready(error(reply_to, "ERR internal: not a single-key command"));
        };
        (
            key.to_vec(),
            kind(&command),
            matches!(command, Command::Get(_)),
        )
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
    // Fewer nodes own the key than the quorum needs (a cluster still smaller than N): say so
    // rather than time out.
    let need = match k {
        Kind::Read => req.q.r,
        Kind::Blind | Kind::Rmw => req.q.w.max(req.q.r),
    };
    if prefs.len() < need {
        return Coordinated::Ready(error(
            reply_to,
            &format!(
                "NOQUORUM this key has {} replica(s) in the cluster now (N={}, fewer nodes than \
                 N), and the request needs {need}; add nodes, or lower --w/--r (CLUSTER QUORUM)",
                prefs.len(),
                view.ring.n()
            ),
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
            Coordinated::Read(Box::pin(read(
                lp.clone(),
                cl,
                view,
                key,
                prefs,
                req,
                get,
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
                write_now(&lp, cl, view, p, req, &key).reply().await
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
    let before = {
        let store = &lp.node().store;
        store.lock(store.shard_of(key_hash(key))).dot_floor()
    };
    let (out, marks) = run_on(&**lp, &lp.node().store, &req);
    // The copy sent may hold more than this write (another loop's write to the key in
    // between): it leaves only once all of it is durable, hence its own mark.
    let (entry, shown, after) = local_copy(&**lp, key);
    let lp = lp.clone();
    let reply_to = req.reply_to;
    let w = req.q.w;
    let watch = req.watch.clone();
    // The shard minted a version (this write; another loop's write to the same shard in
    // between only makes this replicate the key once more, which is harmless).
    match entry.filter(|_| after > before) {
        // Nothing written (a failed command): the reply waits only for what it showed.
        None => Coordinated::Ready((out, marks)),
        // This replica counts toward W: its ack is the durability of `marks`. The other
        // replicas get the write only once it is durable here (see `super::wait_durable`:
        // sent earlier, a crash here before the WAL write would leave them a version whose
        // dot this node's next write of the key would cover).
        Some(entry) => Coordinated::Pending(Box::pin(async move {
            if let Err(e) = super::wait_durable(&*lp, &shown).await {
                return error(reply_to, &e);
            }
            match replicate(lp, cl, view, p, entry, w, watch).await {
                Ok(()) => (out, marks),
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
) -> Reply {
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
    // One deadline for the whole request, whichever replicas it tries.
    let deadline =
        super::sys::Instant::now() + Duration::from_millis(lp.node().config.request_timeout_ms);
    let argv = req.argv();
    let mut last = String::from("no replica is reachable");
    // Replicas whose link is up first: a link being redialed costs a wait.
    let mut targets: SmallVec<[(bool, NodeId, &str); 4]> = prefs
        .iter()
        .filter(|&&t| view.reachable(t))
        .filter_map(|&t| view.addr(t).map(|a| (!cl.link(&lp, a).is_up(), t, a)))
        .collect();
    targets.sort_by_key(|t| t.0);
    for (_, target, addr) in targets {
        let link = cl.link(&lp, addr);
        if link.peer.get().is_some_and(|p| p != target) {
            continue; // the address now belongs to another node
        }
        let timeout = deadline.saturating_duration_since(super::sys::Instant::now());
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
                return (BytesMut::from(&b[..]), Marks::new());
            }
            // Delivered, so possibly applied: not retried elsewhere.
            Ok(v) => {
                return error(
                    req.reply_to,
                    &format!("ERR unexpected FORWARD reply {v:?}; the outcome is unknown"),
                )
            }
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

/// Which quorum a request missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QuorumKind {
    Read,
    Write,
}

/// The NOQUORUM error, counted in the cluster statistics.
pub(super) fn quorum_error(
    lp: &dyn LocalLoop,
    kind: QuorumKind,
    got: usize,
    need: usize,
) -> String {
    if let Some(c) = lp.cluster() {
        let s = &c.shared.membership.stats;
        match kind {
            QuorumKind::Read => s.read_quorum_failures.fetch_add(1, Relaxed),
            QuorumKind::Write => s.write_quorum_failures.fetch_add(1, Relaxed),
        };
    }
    match kind {
        QuorumKind::Read => format!(
            "NOQUORUM read answered by {got} of the {need} replicas required (R) before the \
             deadline; other replicas are down or slow"
        ),
        QuorumKind::Write => format!(
            "NOQUORUM write acknowledged by {got} of the {need} replicas required (W) before \
             the deadline; it may have been applied on some replicas"
        ),
    }
}

/// Runs a command a peer forwarded (this node is, for the peer, a replica of its key).
pub async fn run_forwarded(lp: &Rc<dyn LocalLoop>, head: ForwardHead, args: Vec<Vec<u8>>) -> Reply {
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
    coordinate(lp, args, internal, reply_to, q, false, None)
        .reply()
        .await
}
