//! One client connection: read, decode (binary frames or RESP, chosen by the first byte),
//! route each command to the loop owning its shard, write the replies in request order.
//!
//! Per read, the connection parses every complete request in its buffer (up to a bound),
//! runs local ones at once and sends one batch to each other loop involved; a multi-key
//! command waits for earlier forwarded ones first, so one client's commands take effect in
//! the order it sent them.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ringkv_proto::frame::{decode_frame, Opcode};
use ringkv_proto::resp::{parse_request_hinted, Parsed, RespLimits, MAX_INLINE};
use ringkv_proto::{
    key_hash, FrameWriter, ProtoError, Protocol, Request, RespRequest, PROTOCOL_VERSION,
};
use smallvec::SmallVec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::event_loop::{LoopCtx, LoopMsg};
use super::forward::{reply_into, BatchBuilder, RemoteReply, ReplyTo};
use crate::cmd::{
    self, connection as conncmd, server as servercmd, Command, Ctx, Family, Route, Session,
};
use crate::durability::{add_mark, Marks};
use crate::node::{ClientInfo, LoopStats};
use crate::stats::Track;
use crate::util::{lock, now_ms};

/// Most requests handled per read before replies are written (bounds latency and memory).
const MAX_BATCH: usize = 1024;
/// Replies buffered before they are written out, even mid-batch.
const OUT_SOFT_LIMIT: usize = 1 << 20;
/// Buffers larger than this are released once empty, so one big value doesn't pin memory.
const KEEP_BUF: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;
/// Most arguments in one command: as Redis (a signed 32-bit count), so what really bounds a
/// request is --max-query-buffer-bytes.
const MAX_ARGS: usize = i32::MAX as usize;
/// Largest RESP bulk argument whatever --max-frame-bytes says (protocol.md §3.2: the limit
/// is min(512 MiB, --max-frame-bytes), as Redis's proto-max-bulk-len default).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Before AUTH, Redis allows at most 10 arguments of 16 KiB (CVE-2021-32675).
const PREAUTH_ARGS: usize = 10;
const PREAUTH_BULK: usize = 16 * 1024;
/// Before authentication a binary frame is as tight: a HELLO with a password and a client name
/// of at most [`PREAUTH_BULK`] each, plus its fixed fields.
const PREAUTH_FRAME_BYTES: usize = 2 * PREAUTH_BULK + 64;

enum Seg {
    /// Bytes `start..end` of the scratch buffer.
    Local(usize, usize),
    /// Reply `idx` of the batch sent to loop `owner`.
    Remote(usize, usize, ReplyTo),
}

/// Replies of the current batch. Until the first forwarded command they go straight into
/// `wbuf`; after it, into `scratch`, stitched in order once the other loops answer.
struct Output {
    wbuf: BytesMut,
    scratch: BytesMut,
    segs: Vec<Seg>,
    batches: Vec<BatchBuilder>,
    pending: bool,
    /// WAL records behind the replies in `wbuf`: they are written out only once these are
    /// durable (as `--fsync` defines it).
    marks: Marks,
    /// The client, named in SLOWLOG entries of commands other loops run.
    client: Arc<ClientInfo>,
    /// --max-output-buffer-bytes.
    limit: usize,
    /// Replies of this batch passed `limit`: the connection is closed without them.
    overflow: bool,
}

impl Output {
    fn mark(&mut self, marks: Marks) {
        for (s, q) in marks {
            add_mark(&mut self.marks, s, q);
        }
    }

    fn reply(&mut self, reply_to: ReplyTo, f: impl FnOnce(&mut dyn ringkv_proto::ReplySink)) {
        if !self.pending {
            return reply_into(&mut self.wbuf, reply_to, f);
        }
        let start = self.scratch.len();
        reply_into(&mut self.scratch, reply_to, f);
        let end = self.scratch.len();
        match self.segs.last_mut() {
            Some(Seg::Local(_, e)) if *e == start => *e = end,
            _ => self.segs.push(Seg::Local(start, end)),
        }
    }

    fn forward(&mut self, owner: usize, args: &[&[u8]], reply_to: ReplyTo) {
        let idx = self.batches[owner].push(args, reply_to);
        self.segs.push(Seg::Remote(owner, idx, reply_to));
        self.pending = true;
    }

    /// Sends the batches, waits for the replies and appends everything in request order.
    async fn flush(&mut self, ctx: &LoopCtx) {
        if !self.pending {
            return;
        }
        let mut waiting: SmallVec<[(usize, tokio::sync::oneshot::Receiver<RemoteReply>); 4]> =
            SmallVec::new();
        for (owner, b) in self.batches.iter_mut().enumerate() {
            if b.is_empty() {
                continue;
            }
            // What other loops may add to this batch's output before the limit.
            let budget = self
                .limit
                .saturating_sub(self.wbuf.len() + self.scratch.len());
            let (batch, rx) = std::mem::take(b).build(self.client.clone(), budget);
            LoopStats::add(&ctx.stats().forwarded, 1);
            if ctx.loops.inbox[owner]
                .send(LoopMsg::Batch(batch))
                .await
                .is_ok()
            {
                waiting.push((owner, rx));
            }
        }
        let mut replies: SmallVec<[Option<RemoteReply>; 4]> = SmallVec::new();
        replies.resize_with(self.batches.len(), || None);
        for (owner, rx) in waiting {
            replies[owner] = rx.await.ok();
        }
        for r in replies.iter_mut().flatten() {
            let marks = std::mem::take(&mut r.marks);
            self.mark(marks);
            self.overflow |= r.overflow;
        }
        for seg in self.segs.drain(..) {
            match seg {
                Seg::Local(s, e) => self.wbuf.extend_from_slice(&self.scratch[s..e]),
                Seg::Remote(owner, idx, reply_to) => match &replies[owner] {
                    Some(r) if idx < r.ends.len() => {
                        let start = if idx == 0 {
                            0
                        } else {
                            r.ends[idx - 1] as usize
                        };
                        self.wbuf
                            .extend_from_slice(&r.out[start..r.ends[idx] as usize]);
                    }
                    _ => reply_into(&mut self.wbuf, reply_to, |s| {
                        s.error("ERR shard owner unavailable (server shutting down?)")
                    }),
                },
            }
        }
        self.scratch.clear();
        self.pending = false;
    }
}

struct State {
    ctx: Rc<LoopCtx>,
    session: Session,
    out: Output,
    hello_done: bool,
    commands: u64,
    /// Bytes the request at the front of the read buffer needs at least before parsing it
    /// again is worth it (RESP; see `ringkv_proto::Parsed::Incomplete`).
    need: usize,
}

enum Handled {
    Done,
    /// The command needs the keyspace in the state earlier commands leave it: flush first.
    Barrier,
    /// KEYS or SCAN: flush, then walk the keyspace slice by slice ([`walk`]).
    Walk,
}

pub async fn serve(ctx: Rc<LoopCtx>, mut stream: TcpStream) {
    let node = ctx.node.clone();
    if !node.admit() {
        LoopStats::add(&ctx.stats().rejected_connections, 1);
        let _ = stream
            .write_all(b"-ERR max number of clients reached\r\n")
            .await;
        return;
    }
    let _ = stream.set_nodelay(true);
    let (Ok(addr), Ok(laddr)) = (stream.peer_addr(), stream.local_addr()) else {
        node.release();
        return;
    };
    let info = Arc::new(ClientInfo {
        addr,
        laddr,
        created: std::time::Instant::now(),
        name: Default::default(),
        last_active_ms: now_ms().into(),
        binary: false.into(),
    });
    let session = Session::new(&node, info.clone());
    let id = session.id;
    let threads = node.config.threads;
    let mut st = State {
        ctx,
        session,
        out: Output {
            wbuf: BytesMut::with_capacity(READ_CHUNK),
            scratch: BytesMut::new(),
            segs: Vec::new(),
            batches: (0..threads).map(|_| BatchBuilder::default()).collect(),
            pending: false,
            marks: Marks::new(),
            client: info,
            limit: node.config.max_output_buffer_bytes,
            overflow: false,
        },
        hello_done: false,
        commands: 0,
        need: 0,
    };
    if let Err(e) = run(&mut st, &mut stream).await {
        debug!(client = id, error = %e, "connection ended");
    }
    node.unregister(id);
}

/// Why the connection's timer closed it.
#[derive(Debug, thiserror::Error)]
enum Expired {
    #[error("idle for {0} s (--timeout)")]
    Idle(u64),
    #[error("a request took more than {0} ms to arrive (--request-read-timeout-ms)")]
    SlowRequest(u64),
}

/// The connection's deadlines: idle (--timeout) and a request that arrives too slowly
/// (--request-read-timeout-ms). The timer is armed lazily and re-armed only when it fires
/// early, so serving a request costs no timer operation, only a clock read.
struct Deadlines {
    idle: Option<Duration>,
    request: Option<Duration>,
    /// Last time bytes were read or written.
    last_io: tokio::time::Instant,
    /// When the incomplete request at the front of the buffer started arriving.
    partial_since: Option<tokio::time::Instant>,
    armed: bool,
    /// Writing replies: the request deadline is paused (the connection isn't reading).
    writing: bool,
}

impl Deadlines {
    fn new(node: &crate::node::Node) -> Deadlines {
        let c = &node.config;
        Deadlines {
            idle: (c.timeout_secs > 0).then(|| Duration::from_secs(c.timeout_secs)),
            request: (c.request_read_timeout_ms > 0)
                .then(|| Duration::from_millis(c.request_read_timeout_ms)),
            last_io: tokio::time::Instant::now(),
            partial_since: None,
            armed: false,
            writing: false,
        }
    }

    /// The earliest deadline now in force.
    fn next(&self) -> Option<tokio::time::Instant> {
        let idle = self.idle.map(|d| self.last_io + d);
        let req = self
            .request
            .zip(self.partial_since)
            .filter(|_| !self.writing)
            .map(|(d, t)| t + d);
        match (idle, req) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Arms `timer` if a deadline is in force and it isn't armed yet.
    fn arm(&mut self, timer: std::pin::Pin<&mut tokio::time::Sleep>) {
        if !self.armed {
            if let Some(at) = self.next() {
                timer.reset(at);
                self.armed = true;
            }
        }
    }

    /// The timer fired: an error if a deadline really passed, else re-armed for the next.
    fn fired(&mut self, timer: std::pin::Pin<&mut tokio::time::Sleep>) -> Result<(), Expired> {
        self.armed = false;
        let now = tokio::time::Instant::now();
        if let Some(d) = self.idle.filter(|d| now >= self.last_io + *d) {
            return Err(Expired::Idle(d.as_secs()));
        }
        if let Some(d) = self.request.filter(|_| !self.writing) {
            if self.partial_since.is_some_and(|t| now >= t + d) {
                return Err(Expired::SlowRequest(d.as_millis() as u64));
            }
        }
        self.arm(timer);
        Ok(())
    }

    /// After parsing: `used` bytes were consumed and `left` remain (an incomplete request).
    fn parsed(&mut self, used: usize, left: usize) {
        if left == 0 {
            self.partial_since = None;
        } else if used > 0 || self.partial_since.is_none() {
            // A request completed (or this is the first byte of one): the clock starts for
            // the next.
            self.partial_since = Some(tokio::time::Instant::now());
        }
    }
}

async fn run(st: &mut State, stream: &mut TcpStream) -> std::io::Result<()> {
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // One shutdown future per connection, polled by every read: creating it per read costs
    // a registration with the watch channel each time (seen in profiles).
    let mut shutdown = st.ctx.node.shutdown_signal();
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    let mut dl = Deadlines::new(&st.ctx.node);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    let mut proto = None;
    loop {
        let mut need_input = true;
        if !rbuf.is_empty() {
            let p = *proto.get_or_insert_with(|| {
                let p = Protocol::detect(rbuf[0]);
                st.session.info.binary.store(p == Protocol::Binary, Relaxed);
                p
            });
            let (used, more) = process(st, &rbuf, p).await;
            rbuf.advance(used);
            need_input = !more;
            if need_input {
                dl.parsed(used, rbuf.len());
            }
        }
        if st.out.overflow {
            LoopStats::add(&st.ctx.stats().output_limit_disconnections, 1);
            warn!(
                client = %st.session.info.addr,
                limit = st.out.limit,
                "closing connection: its replies passed --max-output-buffer-bytes"
            );
            return Ok(());
        }
        if !st.out.marks.is_empty() {
            // Hold the replies until the writes behind them are durable. If the disk failed,
            // nothing of this batch is acknowledged: the connection closes instead.
            let marks = std::mem::take(&mut st.out.marks);
            st.ctx.wake_writers(&marks);
            if let Err(e) = st.ctx.wait_durable(&marks).await {
                return Err(std::io::Error::other(format!(
                    "closing connection: its writes could not be made durable: {e}"
                )));
            }
        }
        if !st.out.wbuf.is_empty() {
            write_out(stream, &st.out.wbuf, &mut dl, timer.as_mut()).await?;
            LoopStats::add(&st.ctx.stats().net_output_bytes, st.out.wbuf.len() as u64);
            st.out.wbuf.clear();
            if st.out.wbuf.capacity() > KEEP_BUF {
                st.out.wbuf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        if st.session.close {
            return Ok(());
        }
        if !need_input {
            continue;
        }
        if rbuf.is_empty() && rbuf.capacity() > KEEP_BUF {
            rbuf = BytesMut::with_capacity(READ_CHUNK);
        }
        if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
            rbuf.reserve(READ_CHUNK);
        }
        dl.arm(timer.as_mut());
        let n = tokio::select! {
            r = stream.read_buf(&mut rbuf) => r?,
            _ = &mut stop => return Ok(()),
            _ = &mut timer, if dl.armed => {
                dl.fired(timer.as_mut()).map_err(expired)?;
                continue;
            }
        };
        if n == 0 {
            return Ok(());
        }
        dl.last_io = tokio::time::Instant::now();
        LoopStats::add(&st.ctx.stats().net_input_bytes, n as u64);
    }
}

fn expired(e: Expired) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, e)
}

/// Writes all of `buf`, counting each write's progress as activity for --timeout, so a
/// client that never reads its replies is closed once idle that long.
async fn write_out(
    stream: &mut TcpStream,
    mut buf: &[u8],
    dl: &mut Deadlines,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> std::io::Result<()> {
    dl.writing = true;
    let r = write_all_timed(stream, &mut buf, dl, timer.as_mut()).await;
    dl.writing = false;
    if dl.partial_since.is_some() {
        // The request clock restarts: the connection read nothing while it wrote. (A timer
        // armed for the earlier deadline fires early and re-arms for this one.)
        dl.partial_since = Some(tokio::time::Instant::now());
    }
    r
}

async fn write_all_timed(
    stream: &mut TcpStream,
    buf: &mut &[u8],
    dl: &mut Deadlines,
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> std::io::Result<()> {
    while !buf.is_empty() {
        dl.arm(timer.as_mut());
        let n = tokio::select! {
            biased;
            r = stream.write(buf) => r?,
            _ = &mut timer, if dl.armed => {
                dl.fired(timer.as_mut()).map_err(expired)?;
                continue;
            }
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        *buf = &buf[n..];
        dl.last_io = tokio::time::Instant::now();
    }
    Ok(())
}

/// Handles every complete request in `buf` (up to the batch bounds). Returns the bytes
/// consumed and whether complete requests may remain (so the caller skips the read).
async fn process(st: &mut State, buf: &[u8], proto: Protocol) -> (usize, bool) {
    let node = st.ctx.node.clone();
    let cfg = &node.config;
    let mut c = Ctx {
        node_id: node.node_id,
        now_ms: now_ms(),
        max_value: cfg.max_value(),
        max_reply: cfg.max_output_buffer_bytes,
    };
    st.session.info.last_active_ms.store(c.now_ms, Relaxed);
    let mut pos = 0;
    let mut count = 0;
    let mut more = false;
    loop {
        if count >= MAX_BATCH || st.out.wbuf.len() + st.out.scratch.len() >= OUT_SOFT_LIMIT {
            more = true;
            break;
        }
        let rest = &buf[pos..];
        if rest.is_empty() {
            break;
        }
        let parsed = match proto {
            Protocol::Resp => next_resp(st, rest, cfg.max_frame_bytes),
            Protocol::Binary => next_binary(st, rest, cfg.max_frame_bytes),
        };
        let Some((req, used)) = parsed else { break };
        pos += used;
        count += 1;
        match req {
            Next::Args(args, internal, reply_to) => {
                handle_all(st, &args, internal, reply_to, &mut c).await;
            }
            Next::Owned(args) => {
                let args: SmallVec<[&[u8]; 6]> = args.iter().map(|a| a.as_slice()).collect();
                handle_all(st, &args, false, None, &mut c).await;
            }
            Next::Skip => {}
            Next::Hello(h, reply_to) => hello(st, h, reply_to),
        }
        if st.session.close {
            break;
        }
    }
    st.out.flush(&st.ctx).await;
    LoopStats::add(&st.ctx.stats().commands, std::mem::take(&mut st.commands));
    (pos, more)
}

/// Runs one command, flushing forwarded ones first when it needs the keyspace as they leave
/// it, and driving KEYS / SCAN slice by slice.
async fn handle_all(
    st: &mut State,
    args: &[&[u8]],
    internal: bool,
    reply_to: ReplyTo,
    c: &mut Ctx,
) {
    match handle(st, args, internal, reply_to, c) {
        Handled::Done => {}
        Handled::Barrier => {
            st.out.flush(&st.ctx).await;
            c.now_ms = now_ms();
            handle(st, args, internal, reply_to, c);
        }
        Handled::Walk => {
            st.out.flush(&st.ctx).await;
            walk(st, args, internal, reply_to).await;
            c.now_ms = now_ms();
        }
    }
}

/// KEYS and SCAN: examine the keyspace one bounded slice at a time, yielding to the loop's
/// other connections between slices, so no pattern or keyspace size stalls the node.
async fn walk(st: &mut State, args: &[&[u8]], internal: bool, reply_to: ReplyTo) {
    let t0 = Instant::now();
    let (slot, parsed) = cmd::parse_slot(args, internal);
    let ctx = st.ctx.clone();
    let store = &ctx.node.store;
    let max_reply = ctx.node.config.max_output_buffer_bytes;
    let Some(mut w) = parsed
        .ok()
        .and_then(|command| cmd::keys::KeyWalk::new(&command, store.len(), max_reply))
    else {
        return st
            .out
            .reply(reply_to, |s| s.error("ERR internal: not a key walk"));
    };
    st.commands += 1;
    while !w.step(store, now_ms()) {
        tokio::task::yield_now().await;
    }
    let mut failed = false;
    st.out.reply(reply_to, |s| {
        let mut s = Track::new(s);
        w.reply(&mut s);
        failed = s.failed;
    });
    record(st, slot.unwrap_or_default(), args, t0, failed, false);
}

/// Counts a finished command in the statistics and the slow log.
fn record(st: &State, slot: usize, args: &[&[u8]], t0: Instant, failed: bool, secret: bool) {
    let us = t0.elapsed().as_micros() as u64;
    st.ctx.stats().cmds.record(slot, us, failed);
    // AUTH and HELLO carry passwords: never logged (Redis skips them too).
    let node = &st.ctx.node;
    if node.slowlog.is_slow(us) && !secret {
        let info = &st.session.info;
        node.slowlog
            .push(args, us, info.addr, lock(&info.name).clone());
    }
}

enum Next<'a> {
    Args(SmallVec<[&'a [u8]; 6]>, bool, ReplyTo),
    Owned(Vec<Vec<u8>>),
    Hello(HelloReq<'a>, ReplyTo),
    Skip,
}

struct HelloReq<'a> {
    min: u16,
    max: u16,
    password: &'a [u8],
    name: &'a [u8],
}

/// Replies to a framing error and marks the connection for closing.
fn fatal(st: &mut State, reply_to: ReplyTo, msg: &str) {
    LoopStats::add(&st.ctx.stats().protocol_errors, 1);
    match reply_to {
        None => st.out.reply(None, |s| s.error(msg)),
        Some((id, op)) => {
            // A fatal frame ends the stream: write it after everything pending. It starts
            // where scratch ends now: earlier bytes there belong to other segments.
            let s = st.out.scratch.len();
            let w = FrameWriter::new(&mut st.out.scratch, id, op);
            w.fatal(msg);
            let e = st.out.scratch.len();
            if st.out.pending {
                st.out.segs.push(Seg::Local(s, e));
            } else {
                let bytes = st.out.scratch.split();
                st.out.wbuf.extend_from_slice(&bytes);
            }
        }
    }
    st.session.close = true;
}

fn next_resp<'a>(st: &mut State, buf: &'a [u8], max_frame: usize) -> Option<(Next<'a>, usize)> {
    let limits = if st.session.authenticated {
        RespLimits {
            max_args: MAX_ARGS,
            max_bulk: max_frame.min(MAX_BULK),
            max_inline: MAX_INLINE,
            unauthenticated: false,
        }
    } else {
        RespLimits {
            max_args: PREAUTH_ARGS,
            max_bulk: PREAUTH_BULK,
            max_inline: MAX_INLINE,
            unauthenticated: true,
        }
    };
    if buf.len() < st.need {
        return None;
    }
    let parsed = parse_request_hinted(buf, &limits);
    st.need = 0;
    match parsed {
        Ok(Parsed::Incomplete { need }) => {
            let max = st.ctx.node.config.max_query_buffer_bytes;
            if need > max {
                LoopStats::add(&st.ctx.stats().query_limit_disconnections, 1);
                fatal(
                    st,
                    None,
                    &format!(
                        "ERR Protocol error: this request needs at least {need} bytes, over \
                         the query buffer limit of {max} (--max-query-buffer-bytes)"
                    ),
                );
                return Some((Next::Skip, buf.len()));
            }
            st.need = need;
            None
        }
        Ok(Parsed::Done(RespRequest::Args(a), n)) => Some((Next::Args(a, false, None), n)),
        Ok(Parsed::Done(RespRequest::Owned(a), n)) => Some((Next::Owned(a), n)),
        Ok(Parsed::Done(RespRequest::Empty, n)) => Some((Next::Skip, n)),
        Err(e) => {
            fatal(st, None, &format!("ERR {e}"));
            Some((Next::Skip, buf.len()))
        }
    }
}

fn next_binary<'a>(st: &mut State, buf: &'a [u8], max_frame: usize) -> Option<(Next<'a>, usize)> {
    let max_frame = if st.session.authenticated {
        max_frame
    } else {
        PREAUTH_FRAME_BYTES
    };
    let (hdr, payload, used) = match decode_frame(buf, max_frame) {
        Ok(Some(f)) => f,
        Ok(None) => return None,
        Err(e) => {
            let msg = match e {
                ProtoError::FrameTooLarge { len, max } if !st.session.authenticated => format!(
                    "ERR frame of {len} bytes exceeds the limit of {max} bytes before \
                     authentication (send HELLO with the password first)"
                ),
                e => format!("ERR {e}"),
            };
            fatal(st, Some((0, 0)), &msg);
            return Some((Next::Skip, buf.len()));
        }
    };
    let reply_to = Some((hdr.request_id, hdr.opcode));
    if hdr.is_reply() {
        st.out.reply(reply_to, |s| {
            s.error("ERR unexpected reply frame from a client")
        });
        return Some((Next::Skip, used));
    }
    if !st.hello_done && hdr.opcode != Opcode::Hello as u8 {
        fatal(
            st,
            reply_to,
            "ERR protocol error: the first frame must be HELLO",
        );
        return Some((Next::Skip, buf.len()));
    }
    let max_args = if st.session.authenticated {
        MAX_ARGS
    } else {
        PREAUTH_ARGS
    };
    let req = match Request::parse(hdr.opcode, payload, max_args) {
        Ok(r) => r,
        Err(ProtoError::UnknownOpcode(op)) => {
            st.out.reply(reply_to, |s| {
                s.error(&format!("ERR unknown opcode 0x{op:02x}"))
            });
            return Some((Next::Skip, used));
        }
        Err(e) => {
            st.out.reply(reply_to, |s| s.error(&format!("ERR {e}")));
            return Some((Next::Skip, used));
        }
    };
    let mut args: SmallVec<[&[u8]; 6]> = SmallVec::new();
    match req {
        Request::Hello {
            min_version,
            max_version,
            password,
            client_name,
        } => {
            let h = HelloReq {
                min: min_version,
                max: max_version,
                password,
                name: client_name,
            };
            return Some((Next::Hello(h, reply_to), used));
        }
        Request::Ping => args.push(b"PING"),
        Request::Get { key } => args.extend([&b"VGET"[..], key]),
        Request::Put {
            key,
            value,
            context,
            ttl_ms,
        } => {
            // The TTL travels as its 8 wire bytes (the payload's last field), so the
            // internal VPUT needs no formatting and forwards like any argument vector.
            let ttl = &payload[payload.len() - 8..];
            debug_assert_eq!(ttl, ttl_ms.to_be_bytes());
            args.extend([&b"VPUT"[..], key, value, context, ttl]);
        }
        Request::Delete { key, context } => args.extend([&b"VDEL"[..], key, context]),
        Request::Command { args: a } => return Some((Next::Args(a, false, reply_to), used)),
    }
    Some((Next::Args(args, true, reply_to), used))
}

fn hello(st: &mut State, h: HelloReq<'_>, reply_to: ReplyTo) {
    let node = st.ctx.node.clone();
    if h.max < PROTOCOL_VERSION || h.min > PROTOCOL_VERSION {
        let e = ProtoError::Version {
            min: h.min,
            max: h.max,
            server: PROTOCOL_VERSION,
        };
        return fatal(st, reply_to, &format!("ERR {e}"));
    }
    // With a server password, HELLO must carry it; without one, the field is ignored.
    if node.config.password.is_some() {
        if let Err(e) = st.session.try_auth(&node, h.password) {
            return st.out.reply(reply_to, |s| s.error(&e.0));
        }
    }
    if !h.name.is_empty() {
        if let Err(e) = st.session.set_name(h.name) {
            return st.out.reply(reply_to, |s| s.error(&e.0));
        }
    }
    st.hello_done = true;
    st.out.reply(reply_to, |s| {
        s.array(4);
        s.int(PROTOCOL_VERSION as i64);
        s.bulk(b"ringkv");
        s.bulk(env!("CARGO_PKG_VERSION").as_bytes());
        s.int(node.node_id as i64);
    });
}

fn handle(st: &mut State, args: &[&[u8]], internal: bool, reply_to: ReplyTo, c: &Ctx) -> Handled {
    #[cfg(feature = "test-hooks")]
    {
        let delay = st.ctx.node.config.test_delay_us;
        if delay > 0 {
            // --test-delay-us: a deliberately slow server (blocks the loop, as slow work would).
            std::thread::sleep(std::time::Duration::from_micros(delay));
        }
    }
    let t0 = Instant::now();
    let (slot, parsed) = cmd::parse_slot(args, internal);
    let command = match parsed {
        Ok(command) => command,
        Err(e) => {
            st.out.reply(reply_to, |s| s.error(&e.0));
            if let Some(slot) = slot {
                let stats = &st.ctx.stats().cmds;
                if cmd::parse_failure_is_rejection(slot, args.len()) {
                    stats.reject(slot);
                } else {
                    stats.record(slot, t0.elapsed().as_micros() as u64, true);
                }
            }
            return Handled::Done;
        }
    };
    // A parsed command always has a slot.
    let slot = slot.unwrap_or_default();
    if !st.session.authenticated
        && !matches!(
            command,
            Command::Auth(..) | Command::Hello(_) | Command::Quit
        )
    {
        st.out
            .reply(reply_to, |s| s.error("NOAUTH Authentication required."));
        st.ctx.stats().cmds.reject(slot);
        return Handled::Done;
    }
    st.commands += 1;
    let ctx = st.ctx.clone();
    let node = &ctx.node;
    if command.is_write() {
        if let Some(e) = node.durability.failing() {
            st.out.reply(reply_to, |s| {
                s.error(&format!(
                    "MISCONF Errors writing to the WAL ({e}); writes are refused until the \
                     disk accepts them again, reads still work"
                ))
            });
            ctx.stats().cmds.reject(slot);
            return Handled::Done;
        }
    }
    let mut failed = false;
    match command.route() {
        Route::None => {
            let session = &mut st.session;
            st.out.reply(reply_to, |s| {
                let mut s = Track::new(s);
                match command.family() {
                    Family::Connection => conncmd::exec(&command, session, node, &mut s),
                    Family::Server => servercmd::exec(&command, node, &mut s),
                    Family::Strings | Family::Keys | Family::Keyspace => {
                        let msg = "ERR internal: a keyed command routed without keys";
                        ringkv_proto::ReplySink::error(&mut s, msg)
                    }
                }
                failed = s.failed;
            });
        }
        Route::Key(k) => {
            let owner = ctx.owner(node.store.shard_of(key_hash(k)));
            if owner == ctx.id {
                let mut marks = Marks::new();
                st.out.reply(reply_to, |s| {
                    let mut s = Track::new(s);
                    marks = cmd::run_keyed(&command, &node.store, c, &mut s);
                    failed = s.failed;
                });
                st.out.mark(marks);
            } else {
                // Timed and counted by the loop that runs it.
                st.out.forward(owner, args, reply_to);
                return Handled::Done;
            }
        }
        Route::All if matches!(command, Command::Keys(_) | Command::Scan(_)) => {
            st.commands -= 1;
            return Handled::Walk;
        }
        Route::Keys(_) | Route::Pairs(_) | Route::Rename(..) | Route::All => {
            if st.out.pending {
                st.commands -= 1;
                return Handled::Barrier;
            }
            let mut marks = Marks::new();
            st.out.reply(reply_to, |s| {
                let mut s = Track::new(s);
                marks = cmd::run_keyed(&command, &node.store, c, &mut s);
                failed = s.failed;
            });
            st.out.mark(marks);
        }
    }
    let secret = matches!(command, Command::Auth(..) | Command::Hello(_));
    record(st, slot, args, t0, failed, secret);
    Handled::Done
}
