//! The network between the nodes of a fault run: one TCP proxy in front of each node, which
//! every peer link to that node goes through (the nodes advertise the proxy's address and
//! name each other by it in --peers; clients of the workloads dial the nodes directly). The
//! proxy reads the dialer's PEER_HELLO to learn which node it is, then forwards whole frames
//! in each direction under that direction's [`LinkMode`], which the nemesis changes at will.
//!
//! Frames, not bytes: dropping part of a frame would only test the framing code, while a
//! dropped frame is a lost message, which is what the cluster layer must survive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures::StreamExt;
use ringkv_proto::peer::PeerRequest;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

/// Largest frame the proxy forwards (a stream batch is far smaller); past it the connection
/// is closed, as a node would.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// How long a dialer has to send its PEER_HELLO.
const HELLO_WAIT_MS: u64 = 5_000;
/// Frames read but not yet written, per direction (a full queue stops reading: backpressure).
const QUEUE_FRAMES: usize = 4_096;
/// Limit on connecting to the node behind the proxy.
const CONNECT_TIMEOUT_MS: u64 = 1_000;

/// What happens to the frames one node sends another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    /// Connections between the two nodes are closed and new ones refused (a partition that
    /// the nodes see at once, as connection resets).
    Cut,
    /// Nothing is delivered and nothing is lost: frames wait in the proxy and the socket
    /// buffers until the mode changes (a silent partition, or a stalled network).
    Hold,
    /// Frames are discarded (message loss); the connection stays up.
    Drop,
    /// Frames are delivered this many milliseconds after they arrive, in order.
    Delay(u64),
}

/// The state of every directed link, shared by the proxies and the nemesis.
pub struct Net {
    n: usize,
    modes: Mutex<Vec<LinkMode>>,
    changed: watch::Sender<u64>,
    /// Each node's proxy address as the nodes advertise it, to tell who dialed.
    by_addr: HashMap<String, usize>,
    pub frames_passed: AtomicU64,
    pub frames_dropped: AtomicU64,
    pub connections_cut: AtomicU64,
    pub connections_refused: AtomicU64,
}

impl Net {
    pub fn new(proxy_addrs: &[SocketAddr]) -> Arc<Net> {
        let n = proxy_addrs.len();
        Arc::new(Net {
            n,
            modes: Mutex::new(vec![LinkMode::Pass; n * n]),
            changed: watch::channel(0).0,
            by_addr: proxy_addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (a.to_string(), i))
                .collect(),
            frames_passed: AtomicU64::new(0),
            frames_dropped: AtomicU64::new(0),
            connections_cut: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
        })
    }

    pub fn mode(&self, from: usize, to: usize) -> LinkMode {
        self.modes.lock().unwrap()[from * self.n + to]
    }

    /// Sets the mode of the link `from` → `to`.
    pub fn set(&self, from: usize, to: usize, mode: LinkMode) {
        self.modes.lock().unwrap()[from * self.n + to] = mode;
        self.changed.send_modify(|v| *v += 1);
    }

    /// Sets the mode of `from` → `to` unless the link is cut or held already.
    pub fn set_if_passing(&self, from: usize, to: usize, mode: LinkMode) {
        let mut modes = self.modes.lock().unwrap();
        let m = &mut modes[from * self.n + to];
        match *m {
            LinkMode::Cut | LinkMode::Hold => return,
            LinkMode::Pass | LinkMode::Drop | LinkMode::Delay(_) => *m = mode,
        }
        drop(modes);
        self.changed.send_modify(|v| *v += 1);
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_both(&self, a: usize, b: usize, mode: LinkMode) {
        self.set(a, b, mode);
        self.set(b, a, mode);
    }

    /// Every link back to Pass.
    pub fn heal(&self) {
        self.modes.lock().unwrap().fill(LinkMode::Pass);
        self.changed.send_modify(|v| *v += 1);
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.mode(a, b) == LinkMode::Cut || self.mode(b, a) == LinkMode::Cut
    }
}

/// Starts the proxy in front of node `to` (listening on `listener`, forwarding to `target`).
/// Runs until the runtime it was spawned on is dropped.
pub async fn serve(net: Arc<Net>, to: usize, listener: TcpListener, target: SocketAddr) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(net.clone(), to, conn, target));
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_offset(0)
        .length_field_length(4)
        // The length counts the bytes after it; the frame handed on keeps its length field.
        .length_adjustment(4)
        .num_skip(0)
        .max_frame_length(MAX_FRAME_BYTES)
        .big_endian()
        .new_codec()
}

/// Which node sent this first frame: the advertised address in its PEER_HELLO.
fn dialer(net: &Net, frame: &[u8]) -> Option<usize> {
    let (opcode, payload) = (*frame.get(12)?, frame.get(16..)?);
    match PeerRequest::parse(opcode, payload) {
        Ok(PeerRequest::Hello(h)) => net.by_addr.get(h.advertise).copied(),
        _ => None,
    }
}

async fn connection(net: Arc<Net>, to: usize, conn: TcpStream, target: SocketAddr) {
    let (rd, wr) = conn.into_split();
    let mut from_dialer = FramedRead::new(rd, codec());
    let first =
        tokio::time::timeout(Duration::from_millis(HELLO_WAIT_MS), from_dialer.next()).await;
    let Ok(Some(Ok(first))) = first else { return };
    // Only peer links come here (clients dial the nodes themselves).
    let Some(from) = dialer(&net, &first) else {
        return;
    };
    if net.cut(from, to) {
        net.connections_refused.fetch_add(1, Relaxed);
        return;
    }
    let server = tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        TcpStream::connect(target),
    )
    .await;
    let Ok(Ok(server)) = server else { return };
    let _ = server.set_nodelay(true);
    let (srd, swr) = server.into_split();
    let done = CancellationToken::new();
    let up = Direction {
        net: net.clone(),
        from,
        to,
        done: done.clone(),
    };
    let down = Direction {
        net,
        from: to,
        to: from,
        done: done.clone(),
    };
    tokio::spawn(up.run(Some(first), from_dialer, swr));
    tokio::spawn(down.run(None, FramedRead::new(srd, codec()), wr));
}

/// One direction of one proxied connection.
struct Direction {
    net: Arc<Net>,
    from: usize,
    to: usize,
    /// Cancelled when either direction ends: the whole connection closes.
    done: CancellationToken,
}

impl Direction {
    async fn run(
        self,
        first: Option<BytesMut>,
        rd: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
        wr: OwnedWriteHalf,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let this = Arc::new(self);
        let writer = tokio::spawn(this.clone().write(rx, wr));
        this.read(first, rd, tx).await;
        this.done.cancel();
        let _ = writer.await;
    }

    /// Waits while the link is held; false if the connection must close (the link is cut,
    /// or the other direction ended).
    async fn wait_out_hold(&self, changed: &mut watch::Receiver<u64>) -> bool {
        loop {
            match self.net.mode(self.from, self.to) {
                LinkMode::Cut => {
                    self.net.connections_cut.fetch_add(1, Relaxed);
                    return false;
                }
                LinkMode::Hold => {}
                LinkMode::Pass | LinkMode::Drop | LinkMode::Delay(_) => return true,
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return false },
                _ = self.done.cancelled() => return false,
            }
        }
    }

    async fn read(
        &self,
        mut first: Option<BytesMut>,
        mut rd: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
        tx: mpsc::Sender<(Instant, BytesMut)>,
    ) {
        let mut changed = self.net.changed.subscribe();
        loop {
            if !self.wait_out_hold(&mut changed).await {
                return;
            }
            let frame = match first.take() {
                Some(f) => f,
                None => tokio::select! {
                    f = rd.next() => match f {
                        Some(Ok(f)) => f,
                        _ => return,
                    },
                    // A new mode while waiting for a frame: look at it (a cut closes now).
                    _ = changed.changed() => continue,
                    _ = self.done.cancelled() => return,
                },
            };
            let now = Instant::now();
            let at = match self.net.mode(self.from, self.to) {
                LinkMode::Drop => {
                    self.net.frames_dropped.fetch_add(1, Relaxed);
                    continue;
                }
                LinkMode::Delay(ms) => now + Duration::from_millis(ms),
                // Hold or Cut that began just now: the writer waits or closes.
                LinkMode::Pass | LinkMode::Hold | LinkMode::Cut => now,
            };
            if tx.send((at, frame)).await.is_err() {
                return;
            }
        }
    }

    async fn write(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<(Instant, BytesMut)>,
        mut wr: OwnedWriteHalf,
    ) {
        let mut changed = self.net.changed.subscribe();
        loop {
            let (at, frame) = tokio::select! {
                m = rx.recv() => match m { Some(m) => m, None => return },
                _ = self.done.cancelled() => return,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.done.cancelled() => return,
            }
            if !self.wait_out_hold(&mut changed).await {
                self.done.cancel();
                return;
            }
            let ok = tokio::select! {
                r = wr.write_all(&frame) => r.is_ok(),
                _ = self.done.cancelled() => false,
            };
            if !ok {
                self.done.cancel();
                return;
            }
            self.net.frames_passed.fetch_add(1, Relaxed);
        }
    }
}
