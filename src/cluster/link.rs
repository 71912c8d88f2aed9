//! A peer link: one long-lived TCP connection to another node, multiplexed. Many calls are in
//! flight at once, matched by request id; requests may arrive on it too (either side serves
//! the other's requests). A link dialed by this node reconnects with capped exponential
//! backoff and jitter; calls made while it is down fail at once (the coordinator then picks a
//! stand-in) rather than queue.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::sys::TcpStream;
use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::{decode_frame, Status};
use ringkv_proto::Value;
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{oneshot, Notify};
use tracing::{debug, info, warn};

use super::sys::Instant;
use super::{handshake, serve, LocalLoop};
use crate::durability::Marks;
use crate::ring::membership::{Membership, PeerCounters};
use crate::ring::NodeId;

/// Calls in flight on one link; past it a call fails at once with [`CallError::Busy`].
pub const MAX_INFLIGHT_CALLS: usize = 8192;
/// Bytes of frames queued for writing past which calls fail with Busy (a stalled peer).
pub const MAX_QUEUED_BYTES: usize = 64 << 20;
/// Reconnection backoff: first wait, cap.
const BACKOFF_MIN_MS: u64 = 100;
const BACKOFF_MAX_MS: u64 = 5_000;
const READ_CHUNK: usize = 64 * 1024;
/// How often a link fails the calls past their deadline: a call's deadline is kept to within
/// this (one sweep per link instead of a timer per call).
const DEADLINE_SWEEP_MS: u64 = 20;
/// A link on which calls kept going past their deadline for this many peer timeouts
/// (--peer-timeout-ms) after the first one did, with not one byte read meanwhile, is dead,
/// and is closed (and redialed): a connection whose packets are black-holed (a partition,
/// lost middlebox state) never fails by itself, and calls on it would time out forever after
/// the network healed. Silence counts only while this end reads and its own loop runs on
/// time (see `run`), and from the first expiry, not the first send, so a call with a long
/// deadline (a stream batch) is not cut short by the rule.
const SILENT_LINK_TIMEOUTS: u32 = 3;

/// Why a call to a peer got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("peer {0} is not connected")]
    Unreachable(String),
    #[error("peer {0} did not answer within the deadline (--peer-timeout-ms)")]
    Timeout(String),
    #[error("the link to peer {0} closed before it answered")]
    Disconnected(String),
    #[error("too many calls in flight to peer {0}")]
    Busy(String),
    #[error("peer {peer} refused: {msg}")]
    Remote { peer: String, msg: String },
    #[error("peer {peer} sent a malformed reply: {msg}")]
    Protocol { peer: String, msg: String },
}

type CallResult = Result<Value, CallError>;

/// A call waiting for its reply.
struct Pending {
    tx: oneshot::Sender<CallResult>,
    sent: Instant,
    deadline: Instant,
}

pub struct Link {
    pub addr: String,
    /// The peer's node id, known once a handshake succeeded.
    pub peer: Cell<Option<NodeId>>,
    up: Cell<bool>,
    out: RefCell<BytesMut>,
    wake: Notify,
    /// By request id (hashbrown's default hasher: ids are this node's own, not a peer's).
    pending: RefCell<hashbrown::HashMap<u64, Pending>>,
    next_id: Cell<u64>,
    /// The peer's call counters (INFO cluster, metrics), found once the peer is known.
    counters: RefCell<Option<Arc<PeerCounters>>>,
    membership: Arc<Membership>,
    /// Woken when the link comes up.
    up_changed: Notify,
    /// Cuts a reconnection backoff short (the peer was heard from: it is back).
    redial: Notify,
    /// Replies to the peer that show or acknowledge writes of this node not yet durable; the
    /// link's task releases them as the WAL catches up (one wait for all, not a task each).
    held: RefCell<Vec<Held>>,
    /// When the first call expired with nothing read since (see [`SILENT_LINK_TIMEOUTS`]);
    /// None once anything was read.
    silent_since: Cell<Option<Instant>>,
}

/// A reply frame waiting for WAL positions.
struct Held {
    marks: Marks,
    id: u64,
    op: u8,
    frame: BytesMut,
}

impl Link {
    pub fn new(addr: String, membership: Arc<Membership>) -> Link {
        Link {
            addr,
            peer: Cell::new(None),
            up: Cell::new(false),
            out: RefCell::new(BytesMut::new()),
            wake: Notify::new(),
            pending: RefCell::new(hashbrown::HashMap::new()),
            next_id: Cell::new(1),
            counters: RefCell::new(None),
            membership,
            up_changed: Notify::new(),
            redial: Notify::new(),
            held: RefCell::new(Vec::new()),
            silent_since: Cell::new(None),
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.get()
    }

    /// An accepted link is up from the start (it is never redialed).
    pub fn mark_up(&self) {
        self.set_up(true);
    }

    /// The peer is known to be up (it reached this node): retry now if waiting to redial.
    pub fn redial_now(&self) {
        if !self.up.get() {
            self.redial.notify_one();
        }
    }

    fn set_up(&self, up: bool) {
        self.up.set(up);
        if up {
            self.up_changed.notify_waiters();
        }
    }

    /// Waits (at most `timeout`) for the link to be up: a link being dialed (just created, or
    /// reconnecting) is worth a short wait rather than failing a call at once.
    async fn wait_up(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let changed = self.up_changed.notified();
                if self.up.get() {
                    return;
                }
                changed.await;
            }
        };
        super::sys::timeout(timeout, wait).await.is_ok()
    }

    /// Sends one request (encoded by `encode` with the id it is given) and waits for its reply
    /// until `timeout`. On a link that is up the request is queued at once (so `encode` may
    /// borrow) and the deadline is kept by the link's sweep, not by a timer of its own; on a
    /// link being dialed the call first waits (within `timeout`) for it to come up.
    pub fn call(
        self: &Rc<Self>,
        timeout: Duration,
        encode: impl FnOnce(u64, &mut BytesMut),
    ) -> Call {
        if self.up.get() {
            return self.send(Instant::now(), timeout, encode);
        }
        // Rare (a link just created or reconnecting): encode now into a frame of its own, so
        // that the wait needs nothing borrowed.
        let mut frame = BytesMut::new();
        encode(0, &mut frame);
        let link = self.clone();
        Call::Dialing(Box::pin(async move {
            let started = Instant::now();
            if !link.wait_up(timeout).await {
                link.count(None, false);
                return Err(CallError::Unreachable(link.addr.clone()));
            }
            let rest = timeout.saturating_sub(started.elapsed());
            link.send(started, rest, |id, out| {
                ringkv_proto::frame::set_request_id(&mut frame, id);
                out.extend_from_slice(&frame);
            })
            .await
        }))
    }

    fn send(
        self: &Rc<Self>,
        sent: Instant,
        timeout: Duration,
        encode: impl FnOnce(u64, &mut BytesMut),
    ) -> Call {
        if self.pending.borrow().len() >= MAX_INFLIGHT_CALLS
            || self.out.borrow().len() >= MAX_QUEUED_BYTES
        {
            self.count(None, false);
            return Call::Done(Some(Err(CallError::Busy(self.addr.clone()))));
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        encode(id, &mut self.out.borrow_mut());
        let (tx, rx) = oneshot::channel();
        let deadline = sent + timeout;
        self.pending
            .borrow_mut()
            .insert(id, Pending { tx, sent, deadline });
        self.wake.notify_one();
        Call::Sent(rx, self.clone())
    }

    /// Fails the calls past their deadline; whether any was.
    fn sweep(&self, now: Instant) -> bool {
        let mut expired: SmallVec<[Pending; 4]> = SmallVec::new();
        self.pending
            .borrow_mut()
            .extract_if(|_, p| p.deadline <= now)
            .for_each(|(_, p)| expired.push(p));
        let any = !expired.is_empty();
        if any && self.silent_since.get().is_none() {
            self.silent_since.set(Some(now));
        }
        for p in expired {
            self.count(Some(now.saturating_duration_since(p.sent)), false);
            let _ = p.tx.send(Err(CallError::Timeout(self.addr.clone())));
        }
        any
    }

    /// Whether the link is dead (see [`SILENT_LINK_TIMEOUTS`]): calls just went past their
    /// deadline, and nothing was read since the first call expired, `limit` ago or more.
    fn dead(&self, expired: bool, now: Instant, limit: Duration) -> bool {
        expired
            && self
                .silent_since
                .get()
                .is_some_and(|t| now.saturating_duration_since(t) >= limit)
    }

    /// Counts one finished call (with its round trip if it got an answer).
    fn count(&self, rtt: Option<Duration>, ok: bool) {
        let stats = &self.membership.stats;
        let us = rtt.map_or(0, |d| d.as_micros() as u64);
        stats.record_call(us, ok);
        let Some(peer) = self.peer.get() else { return };
        let mut c = self.counters.borrow_mut();
        if c.as_ref().is_none_or(|c| c.id != peer) {
            *c = Some(stats.peer(peer));
        }
        if let Some(c) = c.as_ref() {
            c.record(us, ok);
        }
    }

    /// Queues a reply frame (built by `f`) to a request the peer sent.
    pub fn send_reply(&self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.out.borrow_mut());
        self.wake.notify_one();
    }

    /// Queues a reply to request `id` (opcode `op`): a Bulk of `r`'s bytes, or its error.
    pub fn send_result(&self, id: u64, op: u8, r: Result<&[u8], &str>) {
        self.send_reply(|out| {
            let mut w = ringkv_proto::FrameWriter::new(out, id, op);
            match r {
                Ok(b) => ringkv_proto::ReplySink::bulk(&mut w, b),
                Err(e) => ringkv_proto::ReplySink::error(&mut w, e),
            }
            w.finish();
        });
    }

    /// Queues a reply frame (to request `id`, opcode `op`) to go out once `marks` are durable;
    /// if the disk fails them, an error goes out instead.
    pub fn reply_when_durable(
        &self,
        lp: &dyn LocalLoop,
        marks: Marks,
        id: u64,
        op: u8,
        frame: BytesMut,
    ) {
        match lp.durable_now(&marks) {
            Some(Ok(())) => self.send_reply(|out| out.extend_from_slice(&frame)),
            Some(Err(e)) => self.send_reply(|out| disk_failed(out, id, op, &e)),
            None => {
                lp.wake_writers(&marks);
                self.held.borrow_mut().push(Held {
                    marks,
                    id,
                    op,
                    frame,
                });
                // The link's task may be parked without watching the durable state (it had
                // nothing held): a reply queued from another task (a forwarded command, a
                // hint) must make it look, or it waits for the next unrelated wake-up.
                self.wake.notify_one();
            }
        }
    }

    /// Sends the held replies whose WAL positions are durable now.
    fn release_held(&self, lp: &dyn LocalLoop) {
        let mut held = self.held.borrow_mut();
        if held.is_empty() {
            return;
        }
        let mut out = self.out.borrow_mut();
        held.retain(|h| match lp.durable_now(&h.marks) {
            Some(Ok(())) => {
                out.extend_from_slice(&h.frame);
                false
            }
            Some(Err(e)) => {
                disk_failed(&mut out, h.id, h.op, &e);
                false
            }
            None => true,
        });
    }

    fn fail_pending(&self) {
        self.held.borrow_mut().clear();
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for (_, p) in pending {
            self.count(None, false);
            let _ = p.tx.send(Err(CallError::Disconnected(self.addr.clone())));
        }
        self.out.borrow_mut().clear();
    }

    /// A reply frame arrived (at `now`, the time its read completed).
    fn on_reply(&self, id: u64, status: u8, payload: Bytes, now: Instant) {
        let Some(p) = self.pending.borrow_mut().remove(&id) else {
            return; // past its deadline meanwhile
        };
        let r = match Value::decode(&payload) {
            Err(e) => Err(CallError::Protocol {
                peer: self.addr.clone(),
                msg: e.to_string(),
            }),
            Ok(v) => match (Status::from_u8(status), v) {
                (Some(Status::Ok), v) => Ok(v),
                (_, Value::Error(m)) => Err(CallError::Remote {
                    peer: self.addr.clone(),
                    msg: String::from_utf8_lossy(&m).into_owned(),
                }),
                (_, v) => Err(CallError::Protocol {
                    peer: self.addr.clone(),
                    msg: format!("error status with a non-error value {v:?}"),
                }),
            },
        };
        self.count(Some(now.saturating_duration_since(p.sent)), r.is_ok());
        let _ = p.tx.send(r);
    }
}

/// A call in progress (see [`Link::call`]).
pub enum Call {
    /// Queued on the link; the link completes it (reply, deadline, or disconnection).
    Sent(oneshot::Receiver<CallResult>, Rc<Link>),
    /// Waiting for the link to come up first.
    Dialing(futures::future::LocalBoxFuture<'static, CallResult>),
    /// Failed at once (taken when polled).
    Done(Option<CallResult>),
}

impl Call {
    /// Lets the call go on without waiting for its answer (the link counts it): a call still
    /// waiting for its link is spawned so that it is sent once the link is up.
    pub fn detach(self) {
        match self {
            Call::Sent(..) | Call::Done(_) => {}
            Call::Dialing(f) => {
                tokio::task::spawn_local(async move {
                    let _ = f.await;
                });
            }
        }
    }
}

impl Future for Call {
    type Output = CallResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CallResult> {
        match self.get_mut() {
            Call::Sent(rx, link) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(r),
                // The link dropped it without an answer (only when the link itself is gone).
                Poll::Ready(Err(_)) => Poll::Ready(Err(CallError::Disconnected(link.addr.clone()))),
                Poll::Pending => Poll::Pending,
            },
            Call::Dialing(f) => f.as_mut().poll(cx),
            Call::Done(r) => Poll::Ready(r.take().unwrap_or_else(|| {
                Err(CallError::Protocol {
                    peer: String::new(),
                    msg: "call polled after it completed".into(),
                })
            })),
        }
    }
}

/// Keeps a dialed link connected until the node shuts down.
pub async fn dial_forever(lp: Rc<dyn LocalLoop>, link: Rc<Link>) {
    let node = lp.node().clone();
    let mut shutdown = node.shutdown_signal();
    let mut backoff = BACKOFF_MIN_MS;
    let mut last_err = String::new();
    loop {
        if node.is_shutting_down() {
            return;
        }
        match handshake::dial(&*lp, &link.addr).await {
            Ok((stream, rest, peer)) => {
                link.peer.set(Some(peer));
                info!(peer = %link.addr, loop_id = lp.loop_id(), "peer link up");
                last_err.clear();
                backoff = BACKOFF_MIN_MS;
                link.set_up(true);
                let r = run(lp.clone(), link.clone(), stream, rest).await;
                link.set_up(false);
                link.fail_pending();
                debug!(peer = %link.addr, result = ?r, "peer link down");
            }
            Err(e) => {
                let msg = e.to_string();
                if msg != last_err {
                    warn!(peer = %link.addr, error = %msg, "can't link to peer; retrying with backoff");
                    last_err = msg;
                }
            }
        }
        // Capped exponential backoff with jitter, so restarting nodes don't redial in step.
        let jitter = crate::util::now_ms() % (backoff / 2 + 1);
        let wait = Duration::from_millis(backoff / 2 + jitter);
        backoff = (backoff * 2).min(BACKOFF_MAX_MS);
        tokio::select! {
            _ = super::sys::sleep(wait) => {}
            _ = link.redial.notified() => backoff = BACKOFF_MIN_MS,
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Serves one established link: writes queued frames, reads replies (completing calls) and
/// requests (served by [`serve::handle`]), until the connection or the node ends.
///
/// Reading goes on while a write is in progress: both ends of a link write large frames at
/// once (REPLICATE one way, FETCH replies the other), and an end that only read after it had
/// written everything would wait forever on a peer doing the same, with both socket buffers
/// full. Reading pauses only while this end's own queue is past [`MAX_QUEUED_BYTES`] (a peer
/// sending requests faster than it takes their replies), which keeps that queue bounded.
pub async fn run(
    lp: Rc<dyn LocalLoop>,
    link: Rc<Link>,
    mut stream: TcpStream,
    mut rbuf: BytesMut,
) -> std::io::Result<()> {
    let node = lp.node().clone();
    let max_frame = node.config.max_frame_bytes;
    let mut shutdown = node.shutdown_signal();
    let silent_limit =
        Duration::from_millis(node.config.cluster.peer_timeout_ms) * SILENT_LINK_TIMEOUTS;
    link.silent_since.set(None);
    let (mut rd, mut wr) = crate::sockets::split(&mut stream);
    // Frames taken from `link.out`, being written; new frames queue in `link.out` meanwhile.
    let mut wbuf = BytesMut::new();
    let mut sweep = super::sys::interval(Duration::from_millis(DEADLINE_SWEEP_MS));
    sweep.set_missed_tick_behavior(super::sys::MissedTickBehavior::Delay);
    loop {
        // Before looking at the durable state, so that no change after the look is missed.
        let changed = lp.durable_changed();
        tokio::pin!(changed);
        link.release_held(&*lp);
        // Complete frames first: they may queue replies. One clock read for all the replies
        // of one read.
        let mut now = None;
        loop {
            match decode_frame(&rbuf, max_frame) {
                Ok(Some((hdr, payload, used))) => {
                    if hdr.is_reply() {
                        let at = payload.as_ptr() as usize - rbuf.as_ptr() as usize;
                        let (id, status, len) = (hdr.request_id, hdr.status, payload.len());
                        // The reply's bytes are shared, not copied (values point into them).
                        let frame = rbuf.split_to(used).freeze();
                        let now = *now.get_or_insert_with(Instant::now);
                        link.on_reply(id, status, frame.slice(at..at + len), now);
                        continue;
                    }
                    serve::handle(&lp, &link, hdr.request_id, hdr.opcode, payload);
                    bytes::Buf::advance(&mut rbuf, used);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(std::io::Error::other(format!("peer sent a bad frame: {e}")));
                }
            }
        }
        if wbuf.is_empty() && !link.out.borrow().is_empty() {
            // Let every other task ready in this tick add its frames first: one write for all
            // (a write per frame cost more CPU in send() than everything else together).
            tokio::task::yield_now().await;
            std::mem::swap(&mut wbuf, &mut *link.out.borrow_mut());
        }
        let may_read = link.out.borrow().len() < MAX_QUEUED_BYTES;
        if !may_read {
            // Not reading: the peer's silence is not heard, so it must not count.
            link.silent_since.set(None);
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        let wake = link.wake.notified();
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if may_read => {
                if r? == 0 {
                    return Ok(());
                }
                link.silent_since.set(None);
            }
            r = wr.write(&wbuf), if !wbuf.is_empty() => {
                match r? {
                    0 => return Err(std::io::ErrorKind::WriteZero.into()),
                    n => bytes::Buf::advance(&mut wbuf, n),
                }
            }
            _ = wake, if wbuf.is_empty() => {}
            _ = &mut changed, if !link.held.borrow().is_empty() => {}
            // Also while a write is in progress: `wake` is off then, and a call queued meanwhile
            // must still meet its deadline.
            now = sweep.tick(), if !link.pending.borrow().is_empty() || !wbuf.is_empty() => {
                let expired = link.sweep(now);
                // A tick this late means this loop was not running (a stall, SIGSTOP, or the
                // sweep was off while nothing was pending): replies may wait unread in the
                // socket, so the silence is not the peer's; it starts again from now.
                if Instant::now().saturating_duration_since(now) > silent_limit / SILENT_LINK_TIMEOUTS {
                    link.silent_since.set(None);
                } else if link.dead(expired, now, silent_limit) {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("nothing read for {} ms with calls waiting: reconnecting", silent_limit.as_millis()),
                    ));
                }
            }
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
        }
    }
}

/// An error reply frame: the disk failed the write a reply depended on.
fn disk_failed(out: &mut BytesMut, id: u64, op: u8, e: &str) {
    let mut w = ringkv_proto::FrameWriter::new(out, id, op);
    ringkv_proto::ReplySink::error(
        &mut w,
        &format!("ERR the replica's disk failed the write: {e}"),
    );
    w.finish();
}
