//! The replies of one connection: an ordered queue of slots, one per request that could not be
//! answered at once.
//!
//! A request's reply is either finished bytes, written straight into `wbuf` (the common case:
//! no slot, no allocation), or a pending completion in a slot: another loop is running it
//! ([`State::Remote`]), or its reply is computed but shows or makes WAL records that are not
//! durable yet ([`State::Durable`]). Each slot has its own deadline (`--request-timeout-ms`);
//! past it the client gets a TIMEOUT error in its place and whatever completes later for it is
//! dropped. Binary connections write each reply as soon as it is ready (protocol.md §2.1:
//! replies match requests by id); RESP holds a ready reply behind every earlier slot, so
//! replies leave in request order, as Redis's do. The connection stops reading while
//! `--max-inflight` slots are live (back-pressure, not memory growth).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::ReplySink;
use smallvec::SmallVec;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::event_loop::{LoopCtx, LoopMsg};
use super::forward::{reply_into, BatchBuilder, RemoteReply, ReplyTo};
use crate::durability::Marks;
use crate::node::{ClientInfo, LoopStats};

/// Reply bytes a slot keeps without allocating (a write's acknowledgement, a small value).
const INLINE_REPLY_BYTES: usize = 64;
/// Replies held in slots past this stop the connection reading, as `wbuf` past it does.
pub const HELD_SOFT_LIMIT_BYTES: usize = 1 << 20;
/// Finished slots (binary, behind a pending one) tolerated before the queue is compacted.
const COMPACT_SLACK: usize = 64;

enum State {
    /// Another event loop is running the request.
    Remote,
    /// The reply is computed; it waits for these WAL positions to be durable.
    Durable(Marks),
    /// The reply is ready; RESP holds it behind an earlier slot that is not.
    Ready,
    /// Written (binary, out of order): removed once the slots before it are.
    Done,
}

struct Slot {
    seq: u64,
    reply_to: ReplyTo,
    /// A write: when it times out, its outcome is unknown.
    write: bool,
    deadline: Instant,
    state: State,
    bytes: SmallVec<[u8; INLINE_REPLY_BYTES]>,
}

type Channel = (
    mpsc::UnboundedSender<RemoteReply>,
    mpsc::UnboundedReceiver<RemoteReply>,
);

/// Whether a reply that depends on `marks` may go out: Some(Ok) once they are durable; for a
/// write, Some(Err) if the disk failed them (its connection closes unacknowledged). A read is
/// answered from memory then, so reads keep working while the disk refuses writes
/// (docs/storage.md).
fn released(ctx: &LoopCtx, marks: &Marks, write: bool) -> Option<Result<(), Arc<str>>> {
    match ctx.durable_now(marks) {
        Some(Err(_)) if !write => Some(Ok(())),
        r => r,
    }
}

/// Completes one slot made by [`Replies::later`].
pub struct Later {
    seq: u64,
    tx: mpsc::UnboundedSender<RemoteReply>,
}

impl Later {
    /// The slot's reply, already encoded for the connection's protocol, and the WAL positions
    /// it must wait for.
    pub fn complete(self, (out, marks): (BytesMut, Marks)) {
        let end = out.len() as u32;
        let _ = self.tx.send(RemoteReply {
            out,
            done: vec![super::forward::Done {
                slot: self.seq,
                end,
                marks,
            }],
            overflow: false,
        });
    }
}

pub struct Replies {
    /// Replies ready to be written, in write order.
    pub wbuf: BytesMut,
    /// Slots in request order (ascending `seq`); empty in the common case.
    slots: VecDeque<Slot>,
    next_seq: u64,
    /// Slots not `Done`: what --max-inflight bounds.
    live: usize,
    /// Slots in `State::Durable`.
    durable_waiting: usize,
    /// Reply bytes kept in slots.
    held_bytes: usize,
    /// RESP: replies leave in request order.
    ordered: bool,
    timeout: Duration,
    /// Commands for other loops collected from the current read, one builder per loop.
    batches: Vec<BatchBuilder>,
    /// Batches sent whose replies have not come back.
    batches_out: usize,
    /// Where other loops send completed batches (made at the first one).
    channel: Option<Channel>,
    /// The client, named in SLOWLOG entries of commands other loops run.
    client: Arc<ClientInfo>,
    /// --max-output-buffer-bytes.
    pub limit: usize,
    /// Replies passed `limit`: the connection is closed without them.
    pub overflow: bool,
    /// The frame that ends the stream (binary Fatal), written once nothing is pending.
    last: BytesMut,
    /// The disk failed to make a reply's WAL records durable: the connection is closed and
    /// nothing pending is acknowledged.
    pub failed: Option<Arc<str>>,
}

impl Replies {
    pub fn new(client: Arc<ClientInfo>, threads: usize, limit: usize, timeout: Duration) -> Self {
        Replies {
            wbuf: BytesMut::with_capacity(16 * 1024),
            slots: VecDeque::new(),
            next_seq: 0,
            live: 0,
            durable_waiting: 0,
            held_bytes: 0,
            ordered: true,
            timeout,
            batches: (0..threads).map(|_| BatchBuilder::default()).collect(),
            batches_out: 0,
            channel: None,
            client,
            limit,
            overflow: false,
            last: BytesMut::new(),
            failed: None,
        }
    }

    /// Binary connections release replies as they are ready, RESP ones in request order.
    pub fn set_ordered(&mut self, ordered: bool) {
        self.ordered = ordered;
    }

    /// Reply bytes computed and not yet written.
    pub fn buffered(&self) -> usize {
        self.wbuf.len() + self.held_bytes
    }

    /// Whether another request may take a slot (--max-inflight, and the bytes held).
    pub fn has_room(&self, max_inflight: usize) -> bool {
        self.live < max_inflight && self.held_bytes < HELD_SOFT_LIMIT_BYTES
    }

    /// No request pending anywhere.
    pub fn idle(&self) -> bool {
        self.slots.is_empty() && !self.remote_outstanding()
    }

    /// Some slot waits for its WAL positions to become durable.
    pub fn durable_waiting(&self) -> bool {
        self.durable_waiting > 0
    }

    /// Batches sent to other loops whose replies have not come back.
    pub fn batches_out(&self) -> bool {
        self.batches_out > 0
    }

    /// Commands handed to other loops that have not run yet (collected or sent): a command
    /// that needs the keyspace as they leave it waits for them.
    pub fn remote_outstanding(&self) -> bool {
        self.batches_out > 0 || self.batches.iter().any(|b| !b.is_empty())
    }

    /// RESP with a slot open: a ready reply must wait behind it.
    #[inline]
    fn must_hold(&self) -> bool {
        self.ordered && !self.slots.is_empty()
    }

    /// Encodes a reply that is complete now.
    #[inline]
    pub fn reply(&mut self, reply_to: ReplyTo, f: impl FnOnce(&mut dyn ReplySink)) {
        let start = self.wbuf.len();
        reply_into(&mut self.wbuf, reply_to, f);
        if self.must_hold() {
            self.hold(start, reply_to, false, State::Ready);
        }
    }

    /// Encodes a reply that exposes or makes WAL records (`f` returns their positions): it is
    /// released once they are durable, at once when they already are (a check, no waiter).
    #[inline]
    pub fn reply_marked(
        &mut self,
        ctx: &LoopCtx,
        reply_to: ReplyTo,
        write: bool,
        f: impl FnOnce(&mut dyn ReplySink) -> Marks,
    ) {
        let start = self.wbuf.len();
        let mut marks = Marks::new();
        reply_into(&mut self.wbuf, reply_to, |s| marks = f(s));
        match released(ctx, &marks, write) {
            Some(Ok(())) => {
                if self.must_hold() {
                    self.hold(start, reply_to, write, State::Ready);
                }
            }
            Some(Err(e)) => {
                self.wbuf.truncate(start);
                self.failed = Some(e);
            }
            None => {
                ctx.wake_writers(&marks);
                self.durable_waiting += 1;
                self.hold(start, reply_to, write, State::Durable(marks));
            }
        }
    }

    /// Encodes the frame that ends the stream, to be written after every pending reply.
    pub fn last(&mut self, f: impl FnOnce(&mut BytesMut)) {
        f(&mut self.last);
    }

    /// Nothing is pending any more: the final frame joins the output.
    pub fn finish_stream(&mut self) {
        if self.idle() && !self.last.is_empty() {
            self.wbuf.extend_from_slice(&self.last);
            self.last.clear();
        }
    }

    /// Moves the reply at `wbuf[start..]` into a new slot.
    fn hold(&mut self, start: usize, reply_to: ReplyTo, write: bool, state: State) {
        let bytes = SmallVec::from_slice(&self.wbuf[start..]);
        self.wbuf.truncate(start);
        self.held_bytes += bytes.len();
        self.push_slot(reply_to, write, state, bytes);
    }

    fn push_slot(
        &mut self,
        reply_to: ReplyTo,
        write: bool,
        state: State,
        bytes: SmallVec<[u8; INLINE_REPLY_BYTES]>,
    ) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live += 1;
        self.slots.push_back(Slot {
            seq,
            reply_to,
            write,
            deadline: Instant::now() + self.timeout,
            state,
            bytes,
        });
        seq
    }

    /// Hands a command to loop `owner`; its slot completes when the reply comes back.
    pub fn forward(&mut self, owner: usize, args: &[&[u8]], reply_to: ReplyTo, write: bool) {
        let seq = self.push_slot(reply_to, write, State::Remote, SmallVec::new());
        self.batches[owner].push(args, reply_to, seq);
    }

    /// A slot completed later by a task of this loop (the cluster coordinator), through the
    /// same channel as other loops' batches.
    pub fn later(&mut self, reply_to: ReplyTo, write: bool) -> Later {
        let seq = self.push_slot(reply_to, write, State::Remote, SmallVec::new());
        self.batches_out += 1;
        let tx = self
            .channel
            .get_or_insert_with(mpsc::unbounded_channel)
            .0
            .clone();
        Later { seq, tx }
    }

    /// Sends the collected batches to their loops (without waiting for the replies).
    pub async fn send_batches(&mut self, ctx: &LoopCtx) {
        for owner in 0..self.batches.len() {
            if self.batches[owner].is_empty() {
                continue;
            }
            let budget = self.limit.saturating_sub(self.buffered());
            let tx = self
                .channel
                .get_or_insert_with(mpsc::unbounded_channel)
                .0
                .clone();
            let batch =
                std::mem::take(&mut self.batches[owner]).build(self.client.clone(), budget, tx);
            LoopStats::add(&ctx.stats().forwarded, 1);
            match ctx.loops.inbox[owner].send(LoopMsg::Batch(batch)).await {
                Ok(()) => self.batches_out += 1,
                Err(mpsc::error::SendError(LoopMsg::Batch(b))) => {
                    for seq in b.slots() {
                        self.complete_error(
                            seq,
                            "ERR shard owner unavailable (server shutting down?)",
                        );
                    }
                }
                Err(mpsc::error::SendError(LoopMsg::Conn(_))) => {}
            }
        }
    }

    /// The next completed batch from another loop; pending forever when none is out.
    pub async fn recv_remote(&mut self) -> RemoteReply {
        match &mut self.channel {
            Some((_, rx)) if self.batches_out > 0 => match rx.recv().await {
                Some(r) => r,
                // Never: the connection holds a sender itself.
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        }
    }

    /// Completes every slot whose reply already came back, without waiting: replies that
    /// completed in the same tick go out in one write.
    pub fn take_ready(&mut self, ctx: &LoopCtx) {
        while self.batches_out > 0 {
            let Some((_, rx)) = &mut self.channel else {
                return;
            };
            match rx.try_recv() {
                Ok(r) => self.on_remote(ctx, r),
                Err(_) => return,
            }
        }
    }

    /// Sends what was collected and waits until every command handed to another loop has run
    /// (a multi-key command runs here and must see their effects, in request order).
    pub async fn drain_remote(&mut self, ctx: &LoopCtx) {
        self.send_batches(ctx).await;
        while self.batches_out > 0 {
            let r = self.recv_remote().await;
            self.on_remote(ctx, r);
        }
    }

    /// Completes the slots of a batch another loop ran.
    pub fn on_remote(&mut self, ctx: &LoopCtx, r: RemoteReply) {
        self.batches_out = self.batches_out.saturating_sub(1);
        self.overflow |= r.overflow;
        let mut start = 0;
        for d in r.done {
            let end = (d.end as usize).min(r.out.len());
            self.complete(ctx, d.slot, &r.out[start.min(end)..end], d.marks);
            start = end;
        }
        self.release();
    }

    fn find(&self, seq: u64) -> Option<usize> {
        self.slots.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    /// Slot `seq`'s reply came back from another loop (dropped if the slot timed out).
    fn complete(&mut self, ctx: &LoopCtx, seq: u64, bytes: &[u8], marks: Marks) {
        let Some(i) = self.find(seq) else { return };
        match self.slots[i].state {
            State::Remote => {}
            State::Durable(_) | State::Ready | State::Done => return,
        }
        match released(ctx, &marks, self.slots[i].write) {
            Some(Ok(())) if !self.ordered || i == 0 => {
                // Nothing to wait for, nothing before it: straight out.
                self.wbuf.extend_from_slice(bytes);
                self.slots[i].state = State::Done;
                self.live -= 1;
                if i == 0 {
                    self.release();
                }
            }
            Some(Ok(())) => {
                self.set_bytes(i, bytes);
                self.slots[i].state = State::Ready;
            }
            Some(Err(e)) => self.failed = Some(e),
            None => {
                ctx.wake_writers(&marks);
                self.set_bytes(i, bytes);
                self.durable_waiting += 1;
                self.slots[i].state = State::Durable(marks);
            }
        }
    }

    fn set_bytes(&mut self, i: usize, bytes: &[u8]) {
        let s = &mut self.slots[i];
        self.held_bytes = self.held_bytes - s.bytes.len() + bytes.len();
        s.bytes = SmallVec::from_slice(bytes);
    }

    /// A slot that never reached its loop gets an error reply.
    fn complete_error(&mut self, seq: u64, msg: &str) {
        let Some(i) = self.find(seq) else { return };
        self.error_into(i, msg);
        self.release();
    }

    /// Replaces slot `i`'s reply with an error and finishes it.
    fn error_into(&mut self, i: usize, msg: &str) {
        let start = self.wbuf.len();
        reply_into(&mut self.wbuf, self.slots[i].reply_to, |s| s.error(msg));
        let bytes = SmallVec::<[u8; INLINE_REPLY_BYTES]>::from_slice(&self.wbuf[start..]);
        self.wbuf.truncate(start);
        self.set_bytes(i, &bytes);
        self.finish(i);
    }

    /// Slot `i`'s reply (in its bytes) is ready: binary writes it now, RESP marks it for
    /// [`Replies::release`].
    fn finish(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if let State::Durable(_) = s.state {
            self.durable_waiting -= 1;
        }
        if self.ordered {
            s.state = State::Ready;
            return;
        }
        self.wbuf.extend_from_slice(&s.bytes);
        self.held_bytes -= s.bytes.len();
        s.bytes = SmallVec::new();
        s.state = State::Done;
        self.live -= 1;
    }

    /// Completes the slots whose WAL positions became durable.
    pub fn poll_durable(&mut self, ctx: &LoopCtx) {
        if self.durable_waiting == 0 {
            return;
        }
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            let State::Durable(marks) = &s.state else {
                continue;
            };
            match released(ctx, marks, s.write) {
                Some(Ok(())) => self.finish(i),
                Some(Err(e)) => {
                    self.failed = Some(e);
                    return;
                }
                None => {}
            }
        }
        self.release();
    }

    /// When the oldest pending slot's deadline passes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .find(|s| matches!(s.state, State::Remote | State::Durable(_)))
            .map(|s| s.deadline)
    }

    /// Slots past their deadline get the timeout error in place of their reply. Returns how
    /// many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        let ms = self.timeout.as_millis();
        let mut expired = 0;
        for i in 0..self.slots.len() {
            let s = &self.slots[i];
            // Deadlines ascend with the request order.
            if s.deadline > now {
                break;
            }
            match s.state {
                State::Remote | State::Durable(_) => {}
                State::Ready | State::Done => continue,
            }
            let msg = if s.write {
                format!(
                    "TIMEOUT the write was not acknowledged within {ms} ms \
                     (--request-timeout-ms); its outcome is unknown: it may or may not have \
                     been applied"
                )
            } else {
                format!("TIMEOUT no reply within {ms} ms (--request-timeout-ms)")
            };
            self.error_into(i, &msg);
            expired += 1;
        }
        self.release();
        expired
    }

    /// Writes the ready slots at the front (RESP order) and drops finished ones.
    fn release(&mut self) {
        while let Some(front) = self.slots.front() {
            match front.state {
                State::Done => {}
                State::Ready => {
                    self.wbuf.extend_from_slice(&front.bytes);
                    self.held_bytes -= front.bytes.len();
                    self.live -= 1;
                }
                State::Remote | State::Durable(_) => break,
            }
            self.slots.pop_front();
        }
        // Binary: slots written out of order stay behind a pending one; drop them in bulk.
        if self.slots.len() > 2 * self.live + COMPACT_SLACK {
            self.slots.retain(|s| !matches!(s.state, State::Done));
        }
    }
}
