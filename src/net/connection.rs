//! One client connection: read, decode (binary frames or RESP, chosen by the first byte),
//! route each command to the loop owning its shard, write each reply when it is ready.
//!
//! Per read, the connection parses every complete request in its buffer (up to a bound),
//! runs local ones at once and sends one batch to each other loop involved, then goes on:
//! a reply that can't be sent yet (another loop runs it, or it waits for WAL records to be
//! durable) waits in its own slot of the reply queue ([`Replies`]) with its own deadline,
//! and binary replies behind it are not held back. A multi-key command waits for earlier
//! forwarded ones to have run first, so one client's commands take effect in the order it
//! sent them.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use ringkv_proto::{key_hash, Protocol};
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use super::deadlines::{expired, write_out, Deadlines};
use super::event_loop::LoopCtx;
use super::forward::ReplyTo;
use super::replies::Replies;
use super::request::{hello, next_binary, next_resp, Next};
use crate::cmd::{
    self, cluster::ClusterSub, connection as conncmd, server as servercmd, Command, Ctx, Family,
    Route, Session,
};
use crate::node::{ClientInfo, LoopStats};
use crate::sockets::{self, TcpStream};
use crate::stats::Track;
use crate::tls::{self, Accepted};
use crate::util::{lock, now_ms};

/// Most requests handled per read before replies are written (bounds latency and memory).
const MAX_BATCH: usize = 1024;
/// Replies buffered before they are written out, even mid-batch.
const OUT_SOFT_LIMIT: usize = 1 << 20;
/// Buffers larger than this are released once empty, so one big value doesn't pin memory.
const KEEP_BUF: usize = 1 << 20;
const READ_CHUNK: usize = 16 * 1024;

pub(super) struct State {
    pub(super) ctx: Rc<LoopCtx>,
    pub(super) session: Session,
    pub(super) out: Replies,
    pub(super) hello_done: bool,
    commands: u64,
    /// Bytes the request at the front of the read buffer needs at least before parsing it
    /// again is worth it (RESP; see `ringkv_proto::Parsed::Incomplete`).
    pub(super) need: usize,
    /// The (R, W) the binary request being handled asks for (frame header byte 15; 0 = none).
    pub(super) req_quorum: (u8, u8),
    /// How many replicas hold each write of the connection's last write command (WAIT).
    last_writes: Vec<Rc<crate::cluster::coordinator::AckWatch>>,
}

enum Handled {
    Done,
    /// The command needs the keyspace in the state earlier commands leave it: wait for the
    /// forwarded ones to have run first.
    Barrier,
    /// KEYS or SCAN: wait for forwarded commands, then walk the keyspace slice by slice
    /// ([`walk`]).
    Walk,
    /// A cluster command the connection must see finish before its next one (a
    /// read-modify-write: it reads the replicas first).
    Inline(
        futures::future::LocalBoxFuture<'static, crate::cluster::coordinator::Reply>,
        ReplyTo,
        bool,
    ),
}

pub async fn serve(ctx: Rc<LoopCtx>, mut stream: TcpStream) {
    let node = ctx.node.clone();
    // A connection holds a client slot while it says what it is, so that connections that
    // send nothing can't pile up past --max-clients. A peer node's link (first frame
    // PEER_HELLO) is not a client: it gives the slot back (or gets in without one) and is
    // served by the cluster layer. (Peer links are plaintext: with --tls-cert every
    // connection is a client.) Past the limit, a connection has only --peer-timeout-ms to
    // say PEER_HELLO (a dialing peer sends it at once), so those without a slot stay few.
    let admitted = node.admit();
    let limit_ms = if admitted {
        node.config.request_read_timeout_ms
    } else {
        node.config.cluster.peer_timeout_ms
    };
    if ctx.cluster.is_some() && node.tls.is_none() && is_peer(&mut stream, &node, limit_ms).await {
        if admitted {
            node.release();
        }
        let _ = stream.set_nodelay(true);
        let lp: Rc<dyn crate::cluster::LocalLoop> = ctx.clone();
        crate::cluster::handshake::accept(lp, stream, BytesMut::new()).await;
        return;
    }
    if !admitted {
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
    let cfg = &node.config;
    let mut st = State {
        ctx,
        session,
        out: Replies::new(
            info,
            cfg.threads,
            cfg.max_output_buffer_bytes,
            Duration::from_millis(cfg.request_timeout_ms),
        ),
        hello_done: false,
        commands: 0,
        need: 0,
        req_quorum: (0, 0),
        last_writes: Vec::new(),
    };
    // Plaintext without TLS configured goes straight to `run`; each stream type gets its own
    // copy of `run`, so TLS costs a plaintext connection nothing per request.
    let ended = match &node.tls {
        None => run(&mut st, &mut stream).await,
        Some(t) => match tls::accept(
            t,
            stream,
            node.shutdown_signal(),
            (node.config.timeout_secs > 0).then(|| Duration::from_secs(node.config.timeout_secs)),
        )
        .await
        {
            Accepted::Plain(mut s) => run(&mut st, &mut s).await,
            Accepted::Tls(mut s) => run(&mut st, &mut *s).await,
            Accepted::Closed => Ok(()),
        },
    };
    if let Err(e) = ended {
        debug!(client = id, error = %e, "connection ended");
    }
    node.unregister(id);
}

/// Whether the connection's first frame is a PEER_HELLO (binary frame, opcode 0x40), looking
/// at its first 13 bytes without consuming them, for at most `limit_ms` (0: unbounded, as
/// --request-read-timeout-ms 0 means for any request). A shutdown ends the wait; the
/// connection then closes as a client's would.
async fn is_peer(stream: &mut TcpStream, node: &crate::node::Node, limit_ms: u64) -> bool {
    let mut b = [0u8; 13];
    let mut shutdown = node.shutdown_signal();
    let look = async {
        loop {
            match sockets::peek(stream, &mut b).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if Protocol::detect(b[0]) != Protocol::Binary => return n == 0,
                Ok(n) if n >= b.len() => {
                    return b[12] == ringkv_proto::peer::PeerOpcode::PeerHello as u8
                }
                // Part of the header so far: look again shortly.
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    };
    let bounded = async {
        match limit_ms {
            0 => look.await,
            ms => tokio::time::timeout(Duration::from_millis(ms), look)
                .await
                .unwrap_or(false),
        }
    };
    tokio::select! {
        peer = bounded => peer,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

/// The connection's loop: handle what was read, write what is ready, then wait for more
/// input (unless --max-inflight requests are pending), a forwarded batch's replies, a change
/// of the WAL's durable state, or the oldest pending request's deadline.
async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    st: &mut State,
    stream: &mut S,
) -> std::io::Result<()> {
    let ctx = st.ctx.clone();
    let max_inflight = ctx.node.config.max_inflight;
    let mut rbuf = BytesMut::with_capacity(READ_CHUNK);
    // One shutdown future per connection, polled by every read: creating it per read costs
    // a registration with the watch channel each time (seen in profiles).
    let mut shutdown = ctx.node.shutdown_signal();
    let stop = shutdown.wait_for(|s| *s);
    tokio::pin!(stop);
    let mut dl = Deadlines::new(&ctx.node);
    let timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(timer);
    // The oldest pending request's deadline (--request-timeout-ms), re-armed only when it
    // changes, so requests that complete at once cost no timer operation.
    let req_timer = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(req_timer);
    let mut req_armed = None;
    let mut proto = None;
    // Complete requests may remain in `rbuf`.
    let mut more = false;
    loop {
        // Before looking at the durable state, so that no change after the look is missed.
        let changed = ctx.durable_changed();
        tokio::pin!(changed);
        st.out.poll_durable(&ctx);
        if !rbuf.is_empty() && !st.session.close && st.out.has_room(max_inflight) {
            let p = *proto.get_or_insert_with(|| {
                let p = Protocol::detect(rbuf[0]);
                st.session.info.binary.store(p == Protocol::Binary, Relaxed);
                st.out.set_ordered(p == Protocol::Resp);
                p
            });
            let (used, m) = process(st, &rbuf, p).await;
            rbuf.advance(used);
            more = m;
            if !more {
                dl.parsed(used, rbuf.len());
            }
        }
        if let Some(ended) = must_close(st) {
            return ended;
        }
        if st.session.close {
            st.out.finish_stream();
        }
        if !st.out.wbuf.is_empty() {
            write_out(stream, &st.out.wbuf, &mut dl, timer.as_mut()).await?;
            LoopStats::add(&ctx.stats().net_output_bytes, st.out.wbuf.len() as u64);
            st.out.wbuf.clear();
            if st.out.wbuf.capacity() > KEEP_BUF {
                st.out.wbuf = BytesMut::with_capacity(READ_CHUNK);
            }
        }
        // Closing (QUIT, a framing error): every earlier request's reply goes out first,
        // then the error or Fatal frame, then the connection closes.
        if st.session.close && st.out.idle() {
            return Ok(());
        }
        if rbuf.is_empty() {
            more = false;
        }
        let room = st.out.has_room(max_inflight);
        if more && room && !st.session.close {
            continue;
        }
        let read = room && !st.session.close;
        // Not reading (back-pressure): the clock of a request arriving slowly pauses.
        dl.pause(!read);
        rearm(&mut req_armed, st.out.next_deadline(), req_timer.as_mut());
        if read {
            make_room(&mut rbuf);
        }
        dl.arm(timer.as_mut());
        tokio::select! {
            r = stream.read_buf(&mut rbuf), if read => {
                let n = r?;
                if n == 0 {
                    return Ok(());
                }
                more = false;
                dl.last_io = tokio::time::Instant::now();
                LoopStats::add(&ctx.stats().net_input_bytes, n as u64);
            }
            _ = &mut stop => return Ok(()),
            _ = &mut timer, if dl.armed => dl.fired(timer.as_mut()).map_err(expired)?,
            r = st.out.recv_remote(), if st.out.batches_out() => {
                st.out.on_remote(&ctx, r);
                // Others completing in this tick (a peer's answers arrive together) join this
                // write instead of each making its own.
                tokio::task::yield_now().await;
                st.out.take_ready(&ctx);
            }
            _ = &mut changed, if st.out.durable_waiting() => {}
            _ = &mut req_timer, if req_armed.is_some() => {
                let n = st.out.expire(tokio::time::Instant::now());
                LoopStats::add(&ctx.stats().request_timeouts, n);
            }
        }
    }
}

/// Points `timer` at `deadline` if that changed (a timer operation only when the oldest
/// pending request changes, not per request).
fn rearm(
    armed: &mut Option<tokio::time::Instant>,
    deadline: Option<tokio::time::Instant>,
    timer: std::pin::Pin<&mut tokio::time::Sleep>,
) {
    if deadline != *armed {
        if let Some(at) = deadline {
            timer.reset(at);
        }
        *armed = deadline;
    }
}

/// Room for the next read; a big buffer left empty by one large request is released.
fn make_room(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > KEEP_BUF {
        *rbuf = BytesMut::with_capacity(READ_CHUNK);
    }
    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
        rbuf.reserve(READ_CHUNK);
    }
}

/// Whether the connection must close now: the disk failed a write it waits for (nothing
/// pending is acknowledged), or its replies passed --max-output-buffer-bytes.
fn must_close(st: &mut State) -> Option<std::io::Result<()>> {
    if let Some(e) = st.out.failed.take() {
        return Some(Err(std::io::Error::other(format!(
            "closing connection: its writes could not be made durable: {e}"
        ))));
    }
    if st.out.overflow {
        LoopStats::add(&st.ctx.stats().output_limit_disconnections, 1);
        warn!(
            client = %st.session.info.addr,
            limit = st.out.limit,
            "closing connection: its replies passed --max-output-buffer-bytes"
        );
        return Some(Ok(()));
    }
    None
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
        if count >= MAX_BATCH
            || st.out.buffered() >= OUT_SOFT_LIMIT
            || !st.out.has_room(cfg.max_inflight)
        {
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
    let ctx = st.ctx.clone();
    st.out.send_batches(&ctx).await;
    LoopStats::add(&st.ctx.stats().commands, std::mem::take(&mut st.commands));
    (pos, more)
}

/// Runs one command, waiting for forwarded ones to have run first when it needs the keyspace
/// as they leave it, and driving KEYS / SCAN slice by slice.
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
            let ctx = st.ctx.clone();
            st.out.drain_remote(&ctx).await;
            c.now_ms = now_ms();
            handle(st, args, internal, reply_to, c);
        }
        Handled::Walk => {
            let ctx = st.ctx.clone();
            st.out.drain_remote(&ctx).await;
            walk(st, args, internal, reply_to).await;
            c.now_ms = now_ms();
        }
        Handled::Inline(fut, reply_to, write) => {
            let ctx = st.ctx.clone();
            st.out.drain_remote(&ctx).await;
            let tx = st.out.later(reply_to, write);
            tx.complete(fut.await);
            st.out.drain_remote(&ctx).await;
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
    // The walk showed every shard: its reply waits for what they held to be durable.
    st.out.reply_marked(&ctx, reply_to, false, |s| {
        let mut s = Track::new(s);
        w.reply(&mut s);
        failed = s.failed;
        cmd::current_marks(store)
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
    if ctx.cluster.is_some() {
        if let Some(h) = cluster_route(st, &command, args, internal, reply_to) {
            record(st, slot, args, t0, false, false);
            return h;
        }
    }
    let mut failed = false;
    match command.route() {
        // A replica's own copy: shown once durable here, as GET's is.
        Route::None if matches!(command, Command::Cluster(ClusterSub::GetLocal(_))) => {
            if let Command::Cluster(ClusterSub::GetLocal(key)) = &command {
                st.out.reply_marked(&ctx, reply_to, false, |s| {
                    cmd::cluster::get_local(node, key, s)
                });
            }
        }
        Route::None => {
            let session = &mut st.session;
            st.out.reply(reply_to, |s| {
                let mut s = Track::new(s);
                match command.family() {
                    Family::Connection => conncmd::exec(&command, session, node, &mut s),
                    Family::Server => match command {
                        Command::Cluster(ClusterSub::Quorum(set)) => {
                            cmd::cluster::quorum(node, set, &mut session.quorum, &mut s)
                        }
                        _ => servercmd::exec(&command, node, &mut s),
                    },
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
                failed = run_here(st, &ctx, &command, c, reply_to);
            } else {
                // Timed and counted by the loop that runs it.
                st.out.forward(owner, args, reply_to, command.is_write());
                return Handled::Done;
            }
        }
        Route::All if matches!(command, Command::Keys(_) | Command::Scan(_)) => {
            st.commands -= 1;
            return Handled::Walk;
        }
        Route::Keys(_) | Route::Pairs(_) | Route::Rename(..) | Route::All => {
            if st.out.remote_outstanding() {
                st.commands -= 1;
                return Handled::Barrier;
            }
            failed = run_here(st, &ctx, &command, c, reply_to);
        }
    }
    let secret = matches!(command, Command::Auth(..) | Command::Hello(_));
    record(st, slot, args, t0, failed, secret);
    Handled::Done
}

/// In cluster mode, a keyed command goes to the coordinator (None: not a keyed command, run
/// here as usual).
fn cluster_route(
    st: &mut State,
    command: &Command<'_>,
    args: &[&[u8]],
    internal: bool,
    reply_to: ReplyTo,
) -> Option<Handled> {
    use crate::cluster::coordinator::{coordinate, AckWatch, Coordinated, Quorum};
    if let Command::Wait(n, timeout_ms) = *command {
        return Some(wait(st, n, timeout_ms, reply_to));
    }
    let ctx = st.ctx.clone();
    let cfg = &ctx.node.config;
    // This request's quorums (binary header), else the connection's (CLUSTER QUORUM), else
    // the node's.
    let pick = |req: u8, conn: u8, node: u32| match (req, conn) {
        (0, 0) => node as usize,
        (0, c) => c as usize,
        (r, _) => r as usize,
    };
    let q = Quorum {
        r: pick(st.req_quorum.0, st.session.quorum.0, cfg.cluster.r),
        w: pick(st.req_quorum.1, st.session.quorum.1, cfg.cluster.w),
    };
    if q.r > cfg.cluster.n as usize || q.w > cfg.cluster.n as usize {
        let msg = format!(
            "ERR this request asks for R={} W={}, but keys have only N={} replicas",
            q.r, q.w, cfg.cluster.n
        );
        st.out.reply(reply_to, |s| s.error(&msg));
        return Some(Handled::Done);
    }
    let lp: Rc<dyn crate::cluster::LocalLoop> = ctx.clone();
    let write = command.is_write();
    let mut watches = Vec::new();
    let coordinated = match command.route() {
        Route::None => return None,
        Route::Key(_) => {
            let owned: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
            let watch = write.then(|| Rc::new(AckWatch::default()));
            watches.extend(watch.clone());
            coordinate(&lp, owned, internal, reply_to, q, true, watch)
        }
        Route::Keys(_) | Route::Pairs(_) => {
            match crate::cluster::multi::split(&lp, command, reply_to, q, &mut watches) {
                Some(c) => c,
                None => match crate::cluster::scratch::run(&lp, command, args, reply_to, q) {
                    Some(c) => c,
                    None => return Some(unsupported(st, args, reply_to)),
                },
            }
        }
        Route::All => match crate::cluster::keyspace::run(&lp, command, reply_to, q) {
            Some(c) => c,
            None => return Some(unsupported(st, args, reply_to)),
        },
        Route::Rename(src, dst) => {
            let nx = matches!(command, Command::Rename(_, _, true));
            crate::cluster::rename::rename(&lp, src, dst, nx, reply_to, q, &mut watches)
        }
    };
    if write {
        st.last_writes = watches;
    }
    match coordinated {
        Coordinated::Ready(b) => st.out.later(reply_to, write).complete(b),
        Coordinated::Pending(fut) => {
            let tx = st.out.later(reply_to, write);
            tokio::task::spawn_local(async move { tx.complete(fut.await) });
        }
        Coordinated::Read(fut) => {
            let tx = st.out.later(reply_to, write);
            tokio::task::spawn_local(async move {
                let (reply, repair) = fut.await;
                tx.complete(reply);
                if let Some(repair) = repair {
                    repair.run().await;
                }
            });
        }
        Coordinated::Inline(fut) => {
            st.commands -= 1;
            return Some(Handled::Inline(fut, reply_to, write));
        }
    }
    Some(Handled::Done)
}

/// WAIT numreplicas timeout on a cluster: the number of replicas that durably hold the
/// connection's last write (the fewest, for a multi-key write), once at least `n` do or the
/// timeout passes (0: --request-timeout-ms, so that the connection never waits unbounded).
fn wait(st: &mut State, n: i64, timeout_ms: i64, reply_to: ReplyTo) -> Handled {
    let watches = st.last_writes.clone();
    let cap = st.ctx.node.config.request_timeout_ms;
    let ms = if timeout_ms == 0 {
        cap
    } else {
        (timeout_ms as u64).min(cap)
    };
    let fut = async move {
        let want = usize::try_from(n).unwrap_or(0);
        for w in &watches {
            w.wait_for(want, Duration::from_millis(ms)).await;
        }
        let held = watches.iter().map(|w| w.count()).min().unwrap_or(0);
        let out = crate::cluster::coordinator::encode(reply_to, |s| s.int(held as i64));
        (out, crate::durability::Marks::new())
    };
    Handled::Inline(Box::pin(fut), reply_to, false)
}

/// A command the cluster does not run yet: a clear error, nothing done.
fn unsupported(st: &mut State, args: &[&[u8]], reply_to: ReplyTo) -> Handled {
    let name = String::from_utf8_lossy(args[0]).to_uppercase();
    st.out.reply(reply_to, |s| {
        s.error(&format!(
            "ERR {name} is not supported in cluster mode yet; every other command is"
        ))
    });
    Handled::Done
}

/// Runs a keyed command on this loop, its reply waiting for the WAL positions it read or
/// wrote; whether it failed.
fn run_here(
    st: &mut State,
    ctx: &LoopCtx,
    command: &Command<'_>,
    c: &Ctx,
    reply_to: ReplyTo,
) -> bool {
    let mut failed = false;
    st.out.reply_marked(ctx, reply_to, command.is_write(), |s| {
        let mut s = Track::new(s);
        let marks = cmd::run_keyed(command, &ctx.node.store, c, &mut s);
        failed = s.failed;
        marks
    });
    failed
}
