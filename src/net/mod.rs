//! Networking: listening sockets, one event loop per core, connections, and the hand-off of
//! requests between loops.
//!
//! ```text
//! socket ─▶ connection (codec) ─▶ Command ─▶ route by key ─▶ owner loop of the shard
//!                                               local: run now   other loop: one batch message
//!        ◀─ replies (RESP: in request order; binary: each when ready) ◀┘
//! ```

pub mod connection;
mod deadlines;
pub mod event_loop;
pub mod forward;
pub mod listener;
mod replies;
mod request;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::config::AcceptMode;
use crate::node::Node;

pub use event_loop::LoopMsg;

/// Capacity of each loop's inbox (batches from other loops, handed-off connections).
const INBOX: usize = 4096;

/// The inboxes of all loops, indexed by loop id.
pub struct Loops {
    pub inbox: Vec<mpsc::Sender<LoopMsg>>,
    /// The node's cluster (`--cluster-secret`), shared by every loop.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("can't listen on {addr}: {source} (is another server using the port? pick another with --port)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("can't start event loop thread: {0}")]
    Thread(std::io::Error),
    #[cfg(feature = "sim")]
    #[error("a simulated node runs one event loop, not {0} (set threads to 1)")]
    OneLoop(usize),
}

impl Server {
    /// Binds the listening sockets and starts the event loops.
    pub fn start(
        node: Arc<Node>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Result<Server, ServeError> {
        let cfg = &node.config;
        let t = cfg.threads;
        let want = SocketAddr::new(cfg.bind, cfg.port);
        let bind = |addr: SocketAddr| {
            listener::bind(addr, cfg.accept == AcceptMode::Reuseport)
                .map_err(|source| ServeError::Bind { addr, source })
        };
        // SO_REUSEPORT lets any process of this user bind the port too, and the kernel would
        // then split clients between two servers: a plain bind first fails if anyone listens.
        if cfg.accept == AcceptMode::Reuseport && want.port() != 0 {
            drop(
                listener::bind(want, false)
                    .map_err(|source| ServeError::Bind { addr: want, source })?,
            );
        }
        let first = bind(want)?;
        let addr = first
            .local_addr()
            .map_err(|source| ServeError::Bind { addr: want, source })?;
        // Port 0: every other loop binds the port the kernel chose for the first.
        let mut listeners = vec![Some(first)];
        for _ in 1..t {
            listeners.push(match cfg.accept {
                AcceptMode::Reuseport => Some(bind(addr)?),
                AcceptMode::Handoff => None,
            });
        }
        if let Ok(mut b) = node.bound.lock() {
            *b = Some(addr);
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..t).map(|_| mpsc::channel(INBOX)).unzip();
        let loops = Arc::new(Loops {
            inbox: senders,
            cluster,
        });
        let mut threads = Vec::with_capacity(t);
        for (id, (rx, l)) in receivers.into_iter().zip(listeners).enumerate() {
            let node = node.clone();
            let loops = loops.clone();
            let h = std::thread::Builder::new()
                .name(format!("ringkv-loop-{id}"))
                .spawn(move || event_loop::run(id, node, loops, rx, l))
                .map_err(ServeError::Thread)?;
            threads.push(h);
        }
        Ok(Server { addr, threads })
    }

    /// Waits for every loop to finish (after `Node::shutdown`).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Simulation only (feature `sim`): runs a node with one event loop on the current runtime
/// (a turmoil host's current-thread runtime, whose `LocalSet` takes the loop's tasks), until
/// it shuts down or the host is crashed. Binds `--bind`:`--port` on the simulated network.
#[cfg(feature = "sim")]
pub async fn run_local(
    node: Arc<Node>,
    cluster: Option<Arc<crate::cluster::Cluster>>,
) -> Result<(), ServeError> {
    let cfg = &node.config;
    if cfg.threads != 1 {
        return Err(ServeError::OneLoop(cfg.threads));
    }
    let want = SocketAddr::new(cfg.bind, cfg.port);
    let listener = crate::sockets::TcpListener::bind(want)
        .await
        .map_err(|source| ServeError::Bind { addr: want, source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ServeError::Bind { addr: want, source })?;
    if let Ok(mut b) = node.bound.lock() {
        *b = Some(addr);
    }
    if let Some(c) = &cluster {
        c.bound(addr);
    }
    let (tx, rx) = mpsc::channel(INBOX);
    let loops = Arc::new(Loops {
        inbox: vec![tx],
        cluster,
    });
    event_loop::run_tasks(0, node, loops, rx, Some(listener)).await;
    Ok(())
}
