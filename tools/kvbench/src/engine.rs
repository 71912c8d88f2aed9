//! The schedule (closed or open loop) and the per-connection drivers for both protocols.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures::stream::{FuturesUnordered, StreamExt};
use ringkv_client::{
    Client, ClientConfig, ClientError, ClusterClient, ClusterError, PutOptions, TlsConfig,
    TlsOptions,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{watch, Notify};
use tokio_rustls::client::TlsStream;

use crate::args::{Args, Proto};
use crate::resp;
use crate::stats::Recorder;
use crate::workload::{Generator, Op, Request};

/// The run's schedule, shared by all connections.
pub struct Plan {
    pub t0: Instant,
    pub warmup_end: Instant,
    /// End of the measured phase (duration mode).
    pub end: Option<Instant>,
    /// Measured requests to run (count mode).
    pub requests: Option<u64>,
    /// Open loop: requests per second over all connections.
    pub rate: Option<f64>,
    pub connections: u64,
    pub pipeline: usize,
    /// Open loop: schedule slots that fall into the warmup.
    pub warmup_slots: u64,
    tickets: AtomicU64,
    stopped: AtomicBool,
    stop_tx: watch::Sender<bool>,
    /// The first fatal error (a connection that failed), which ended the run.
    fatal: Mutex<Option<String>>,
    /// Open loop: per connection, how many of its slots the pacer has released so far, and
    /// how it is woken.
    released: Vec<AtomicU64>,
    wake: Vec<Notify>,
}

/// What a connection should do next.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Send a request now; `start` is the time its latency counts from.
    Issue { start: Instant, measured: bool },
    /// Open loop: nothing to send until the pacer releases the next slot.
    Wait,
    /// Send nothing more.
    Done,
}

impl Plan {
    pub fn new(args: &Args, t0: Instant) -> Arc<Plan> {
        let warmup_end = t0 + args.warmup;
        let (stop_tx, _) = watch::channel(false);
        let warmup_slots = match args.rate {
            Some(r) => (args.warmup.as_secs_f64() * r).ceil() as u64,
            None => 0,
        };
        Arc::new(Plan {
            t0,
            warmup_end,
            end: args.run_duration().map(|d| warmup_end + d),
            requests: args.requests,
            rate: args.rate,
            connections: args.connections as u64,
            pipeline: args.pipeline,
            warmup_slots,
            tickets: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            stop_tx,
            fatal: Mutex::new(None),
            released: (0..args.connections).map(|_| AtomicU64::new(0)).collect(),
            wake: (0..args.connections).map(|_| Notify::new()).collect(),
        })
    }

    /// Open loop: starts the pacer, a thread that releases each schedule slot to its
    /// connection at its due time. A plain thread sleeping with the OS timer (tens of µs of
    /// slack) instead of the runtime's timer, whose 1 ms granularity would add up to 1 ms of
    /// our own lateness to every measured latency.
    pub fn start_pacer(self: &Arc<Plan>) -> Option<std::thread::JoinHandle<()>> {
        let rate = self.rate?;
        let plan = self.clone();
        let spawned = std::thread::Builder::new()
            .name("kvbench-pacer".into())
            .spawn(move || {
                let c = plan.connections;
                let mut g = 0u64;
                loop {
                    if plan.is_stopped()
                        || plan.requests.is_some_and(|n| g >= plan.warmup_slots + n)
                    {
                        break;
                    }
                    let due = plan.slot_time(g, rate);
                    if plan.end.is_some_and(|end| due >= end) {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        // Bounded, so that a stop is noticed.
                        std::thread::sleep((due - now).min(Duration::from_millis(20)));
                        continue;
                    }
                    let conn = (g % c) as usize;
                    plan.released[conn].fetch_add(1, Ordering::AcqRel);
                    plan.wake[conn].notify_one();
                    g += 1;
                }
                // Let every connection see that nothing more comes.
                for w in &plan.wake {
                    w.notify_one();
                }
            });
        match spawned {
            Ok(h) => Some(h),
            Err(e) => {
                self.abort(format!("cannot start the pacer thread: {e}"));
                None
            }
        }
    }

    /// Open loop: notified when the pacer released a slot of connection `conn`.
    pub fn woken(&self, conn: usize) -> &Notify {
        &self.wake[conn]
    }

    /// The intended send time of global schedule slot `g` (open loop).
    pub fn slot_time(&self, g: u64, rate: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(g as f64 / rate)
    }

    /// Open loop, duration mode: measured slots scheduled before the end.
    pub fn scheduled_slots(&self) -> Option<u64> {
        let (rate, end) = (self.rate?, self.end?);
        let total = ((end - self.t0).as_secs_f64() * rate).ceil() as u64;
        Some(total.saturating_sub(self.warmup_slots))
    }

    /// Stops every connection from sending more (they still wait for their replies).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.stop_tx.send_replace(true);
    }

    /// Ends the run because of `msg` (the first such message is kept).
    pub fn abort(&self, msg: String) {
        {
            let mut f = self.fatal.lock().unwrap_or_else(|e| e.into_inner());
            if f.is_none() {
                *f = Some(msg);
            }
        }
        self.stop();
    }

    pub fn fatal(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }
}

/// One connection's view of the schedule.
pub struct Sched {
    plan: Arc<Plan>,
    conn: u64,
    /// Open loop: requests this connection has sent.
    k: u64,
}

impl Sched {
    pub fn new(plan: Arc<Plan>, conn: usize) -> Sched {
        Sched {
            plan,
            conn: conn as u64,
            k: 0,
        }
    }

    pub fn next(&mut self, now: Instant) -> Next {
        let p = &*self.plan;
        if p.is_stopped() {
            return Next::Done;
        }
        match p.rate {
            None => {
                if p.end.is_some_and(|end| now >= end) {
                    return Next::Done;
                }
                if now < p.warmup_end {
                    return Next::Issue {
                        start: now,
                        measured: false,
                    };
                }
                if let Some(n) = p.requests {
                    // Claim one of the n tickets: exactly n measured requests in total.
                    if p.tickets.fetch_add(1, Ordering::Relaxed) >= n {
                        return Next::Done;
                    }
                }
                Next::Issue {
                    start: now,
                    measured: true,
                }
            }
            Some(rate) => {
                // Connection c owns slots c, c + C, c + 2C, ...; slot g is due at t0 + g/R.
                let g = self.k * p.connections + self.conn;
                if let Some(n) = p.requests {
                    if g >= p.warmup_slots + n {
                        return Next::Done;
                    }
                }
                let due = p.slot_time(g, rate);
                if let Some(end) = p.end {
                    if due >= end || now >= end {
                        return Next::Done;
                    }
                }
                if self.k >= p.released[self.conn as usize].load(Ordering::Acquire) {
                    return Next::Wait;
                }
                self.k += 1;
                Next::Issue {
                    start: due,
                    measured: g >= p.warmup_slots,
                }
            }
        }
    }
}

/// An open connection of either protocol.
pub enum Conn {
    Binary(Client),
    /// --cluster: one client per node, each request routed to a replica of its key.
    Cluster(ClusterClient),
    Resp(TcpStream),
    RespTls(Box<TlsStream<TcpStream>>),
}

/// The TLS settings of --tls / --cacert / --cert / --key, loaded once for all connections.
pub fn tls_config(args: &Args) -> Result<Option<TlsConfig>, String> {
    let Some(ca) = args.cacert.clone().filter(|_| args.tls) else {
        return Ok(None);
    };
    // The host part of host:port ([v6]:port too) is the name the certificate must carry.
    let host = args
        .addr
        .rsplit_once(':')
        .map_or(args.addr.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let opts = TlsOptions {
        ca_file: ca,
        cert_file: args.cert.clone(),
        key_file: args.key.clone(),
        server_name: Some(host.to_string()),
    };
    TlsConfig::from_options(&opts)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Opens one connection (for the binary protocol: connect plus HELLO, which is not a command).
pub async fn connect(args: &Args, tls: Option<&TlsConfig>) -> Result<Conn, String> {
    let limit = Duration::from_secs(5);
    match args.proto {
        Proto::Binary => {
            let config = ClientConfig {
                tls: tls.cloned(),
                client_name: Some("kvbench".into()),
                request_timeout: args.timeout,
                connect_timeout: limit,
                max_in_flight: args.pipeline.max(1) + 16,
                ..ClientConfig::default()
            };
            if args.cluster {
                return ClusterClient::connect([args.addr.as_str()], config)
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| e.to_string());
            }
            Client::connect(args.addr.as_str(), config)
                .await
                .map(Conn::Binary)
                .map_err(|e| e.to_string())
        }
        Proto::Resp => {
            let s = tokio::time::timeout(limit, TcpStream::connect(args.addr.as_str()))
                .await
                .map_err(|_| format!("connect timed out after {limit:?}"))?
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            match tls {
                None => Ok(Conn::Resp(s)),
                Some(t) => tokio::time::timeout(limit, t.connect(s))
                    .await
                    .map_err(|_| format!("TLS handshake timed out after {limit:?}"))?
                    .map(|s| Conn::RespTls(Box::new(s)))
                    .map_err(|e| e.to_string()),
            }
        }
    }
}

/// Runs one connection until its schedule is done and its replies are in. A failure ends
/// the whole run (via [`Plan::abort`]); what was recorded until then is kept.
pub async fn drive(
    conn: Conn,
    sched: Sched,
    gen: Generator,
    mut rec: Recorder,
    timeout: Duration,
) -> Recorder {
    let plan = sched.plan.clone();
    let res = match conn {
        Conn::Resp(s) => {
            let (rd, wr) = s.into_split();
            drive_resp(rd, wr, false, sched, gen, &mut rec, timeout).await
        }
        Conn::RespTls(s) => {
            let (rd, wr) = tokio::io::split(*s);
            drive_resp(rd, wr, true, sched, gen, &mut rec, timeout).await
        }
        Conn::Binary(c) => {
            let issue = |req, start, measured| binary_request(c.clone(), req, start, measured);
            let r = drive_binary(issue, sched, gen, &mut rec).await;
            c.close();
            r
        }
        Conn::Cluster(c) => {
            let issue = |req, start, measured| binary_request(c.clone(), req, start, measured);
            let r = drive_binary(issue, sched, gen, &mut rec).await;
            c.close();
            r
        }
    };
    if let Err(msg) = res {
        plan.abort(msg);
    }
    rec.flush();
    rec
}

fn tokio_instant(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(t)
}

/// `flush`: the stream buffers (TLS) and must be flushed once the writes are out.
async fn drive_resp<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut rd: R,
    mut wr: W,
    flush: bool,
    mut sched: Sched,
    mut gen: Generator,
    rec: &mut Recorder,
    timeout: Duration,
) -> Result<(), String> {
    let plan = sched.plan.clone();
    let conn = sched.conn as usize;
    let pipeline = plan.pipeline;
    let mut stop_rx = plan.subscribe();
    let mut unflushed = false;
    // Requests sent and not answered yet, in order: (op, latency start, measured).
    let mut inflight: VecDeque<(Op, Instant, bool)> = VecDeque::with_capacity(pipeline);
    let mut wbuf = BytesMut::with_capacity(64 * 1024);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut done = false;
    let mut last_progress = Instant::now();
    loop {
        let mut wait = false;
        let now = Instant::now();
        if !done {
            while inflight.len() < pipeline {
                match sched.next(now) {
                    Next::Issue { start, measured } => {
                        let req = gen.next();
                        resp::encode(&req, &mut wbuf);
                        inflight.push_back((req.op, start, measured));
                    }
                    Next::Wait => {
                        wait = true;
                        break;
                    }
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
        }
        if inflight.is_empty() {
            if done {
                return Ok(());
            }
            last_progress = now;
        }
        if rbuf.capacity() - rbuf.len() < 16 * 1024 {
            rbuf.reserve(64 * 1024);
        }
        let deadline = last_progress + timeout;
        tokio::select! {
            r = rd.read_buf(&mut rbuf) => {
                let n = r.map_err(|e| format!("reading from the server failed: {e}"))?;
                if n == 0 {
                    return Err(format!(
                        "the server closed the connection with {} replies outstanding",
                        inflight.len()
                    ));
                }
                let t = Instant::now();
                last_progress = t;
                loop {
                    match resp::parse(&rbuf) {
                        Ok(Some(reply)) => {
                            rbuf.advance(reply.len);
                            let Some((op, start, measured)) = inflight.pop_front() else {
                                return Err("the server sent a reply to no request".into());
                            };
                            rec.record(op, start, t, measured, reply.error);
                        }
                        Ok(None) => break,
                        Err(e) => return Err(format!("the server's reply is not RESP2: {e}")),
                    }
                }
            }
            r = async {
                if wbuf.is_empty() {
                    wr.flush().await.map(|()| None)
                } else {
                    wr.write(&wbuf).await.map(Some)
                }
            }, if !wbuf.is_empty() || unflushed => {
                match r.map_err(|e| format!("writing to the server failed: {e}"))? {
                    Some(n) => {
                        wbuf.advance(n);
                        unflushed = flush;
                    }
                    None => unflushed = false,
                }
            }
            _ = plan.woken(conn).notified(), if wait => {}
            _ = tokio::time::sleep_until(tokio_instant(deadline)), if !inflight.is_empty() => {
                return Err(format!(
                    "no reply from the server for {timeout:?} with {} requests outstanding \
                     (raise --timeout if that is expected)",
                    inflight.len()
                ));
            }
            _ = stop_rx.changed(), if !done => {}
        }
    }
}

/// (op, latency start, measured, completion time, result)
type Outcome = (Op, Instant, bool, Instant, Result<(), ClientError>);
type BoxFut = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What a binary-protocol driver needs of its client: one client or the cluster client.
trait Kv: Clone + Send + Sync + 'static {
    fn run(self, req: Request) -> impl Future<Output = Result<(), ClientError>> + Send;
}

impl Kv for Client {
    async fn run(self, req: Request) -> Result<(), ClientError> {
        match req.op {
            Op::Read => self.get(req.key).await.map(drop),
            Op::Write => {
                let opts = put_options(&req);
                self.put_with(req.key, req.value, opts).await.map(drop)
            }
            Op::Delete => self.delete(req.key).await.map(drop),
        }
    }
}

/// Errors of the cluster client that are not the node's reply (no replica reachable, outcome
/// unknown) are recorded as failed requests, not the end of the run: a cluster run measures
/// availability while nodes come and go.
impl Kv for ClusterClient {
    async fn run(self, req: Request) -> Result<(), ClientError> {
        let r = match req.op {
            Op::Read => self.get(req.key).await.map(drop),
            Op::Write => {
                let opts = put_options(&req);
                self.put_with(req.key, req.value, opts).await.map(drop)
            }
            Op::Delete => self.delete(req.key).await.map(drop),
        };
        r.map_err(|e| match e {
            ClusterError::Client(e) => e,
            other => ClientError::Server(other.to_string()),
        })
    }
}

fn put_options(req: &Request) -> PutOptions {
    PutOptions {
        context: None,
        ttl: req.ttl_secs.map(Duration::from_secs),
    }
}

fn binary_request(client: impl Kv, req: Request, start: Instant, measured: bool) -> BoxFut {
    Box::pin(async move {
        let op = req.op;
        let res = client.run(req).await;
        (op, start, measured, Instant::now(), res)
    })
}

async fn drive_binary(
    issue: impl Fn(Request, Instant, bool) -> BoxFut,
    mut sched: Sched,
    mut gen: Generator,
    rec: &mut Recorder,
) -> Result<(), String> {
    let plan = sched.plan.clone();
    let conn = sched.conn as usize;
    let pipeline = plan.pipeline;
    let mut stop_rx = plan.subscribe();
    let mut futs: FuturesUnordered<BoxFut> = FuturesUnordered::new();
    let mut done = false;
    loop {
        let mut wait = false;
        if !done {
            let now = Instant::now();
            while futs.len() < pipeline {
                match sched.next(now) {
                    Next::Issue { start, measured } => {
                        futs.push(issue(gen.next(), start, measured));
                    }
                    Next::Wait => {
                        wait = true;
                        break;
                    }
                    Next::Done => {
                        done = true;
                        break;
                    }
                }
            }
        }
        if done && futs.is_empty() {
            return Ok(());
        }
        tokio::select! {
            Some((op, start, measured, t, res)) = futs.next(), if !futs.is_empty() => match res {
                Ok(()) => rec.record(op, start, t, measured, None),
                Err(ClientError::Server(msg)) => rec.record(op, start, t, measured, Some(msg)),
                Err(e @ (ClientError::UnexpectedReply { .. } | ClientError::TooManyInFlight { .. })) => {
                    rec.record(op, start, t, measured, Some(e.to_string()))
                }
                Err(e) => return Err(e.to_string()),
            },
            _ = plan.woken(conn).notified(), if wait => {}
            _ = stop_rx.changed(), if !done => {}
        }
    }
}
