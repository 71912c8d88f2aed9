//! The node: everything the loops share. Configuration, the store, counters, the client list
//! and the shutdown signal. Below `net` and `cmd`, above `store`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::Config;
use crate::durability::Durability;
use crate::stats::{CmdStats, Counter, SlowLog};
use crate::store::{NodeId, Store};
use crate::util::{lock, now_ms};

/// Counters of one event loop (each on its own cache line; summed for INFO).
#[derive(Default)]
#[repr(align(128))]
pub struct LoopStats {
    pub commands: Counter,
    pub connections_received: Counter,
    pub rejected_connections: Counter,
    pub net_input_bytes: Counter,
    pub net_output_bytes: Counter,
    pub forwarded: Counter,
    pub protocol_errors: Counter,
    /// Connections closed for passing --max-query-buffer-bytes.
    pub query_limit_disconnections: Counter,
    /// Connections closed for passing --max-output-buffer-bytes.
    pub output_limit_disconnections: Counter,
    /// Requests answered with the TIMEOUT error (--request-timeout-ms).
    pub request_timeouts: Counter,
    /// Per-command calls, time, failures and latency histogram.
    pub cmds: CmdStats,
}

impl LoopStats {
    /// Adds to one of this loop's counters (only the loop itself may).
    #[inline]
    pub fn add(c: &Counter, n: u64) {
        c.add(n);
    }

    /// CONFIG RESETSTAT: zeroes what INFO and the metrics show, from any thread, without
    /// writing the loop's counters (see [`Counter::reset`]).
    pub fn reset(&self) {
        for c in [
            &self.commands,
            &self.connections_received,
            &self.rejected_connections,
            &self.net_input_bytes,
            &self.net_output_bytes,
            &self.forwarded,
            &self.protocol_errors,
            &self.query_limit_disconnections,
            &self.output_limit_disconnections,
            &self.request_timeouts,
        ] {
            c.reset();
        }
        self.cmds.reset();
    }
}

/// One connected client, as CLIENT LIST shows it.
pub struct ClientInfo {
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub created: Instant,
    pub name: Mutex<String>,
    pub last_active_ms: AtomicU64,
    pub binary: AtomicBool,
}

pub struct Node {
    pub config: Config,
    pub node_id: NodeId,
    pub store: Arc<Store>,
    pub durability: Durability,
    pub started: Instant,
    pub started_unix_ms: u64,
    pub stats: Box<[LoopStats]>,
    pub max_clients: AtomicUsize,
    pub connected: AtomicUsize,
    next_client_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Woken whenever a connection ends (graceful shutdown waits for the last one).
    pub disconnected: tokio::sync::Notify,
    pub bound: Mutex<Option<SocketAddr>>,
    pub slowlog: SlowLog,
    /// TLS settings (`--tls-cert`); `None` serves plaintext only.
    pub tls: Option<crate::tls::TlsServer>,
    /// The cluster this node belongs to (`--cluster-secret`); `None` standalone.
    pub membership: Option<Arc<crate::ring::membership::Membership>>,
}

impl Node {
    pub fn new(config: Config, node_id: NodeId, store: Arc<Store>, durability: Durability) -> Node {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Node {
            store,
            durability,
            stats: (0..config.threads).map(|_| LoopStats::default()).collect(),
            max_clients: AtomicUsize::new(config.max_clients),
            connected: AtomicUsize::new(0),
            next_client_id: AtomicU64::new(1),
            clients: Mutex::new(BTreeMap::new()),
            shutdown,
            started: Instant::now(),
            started_unix_ms: now_ms(),
            bound: Mutex::new(None),
            slowlog: SlowLog::new(config.slowlog_log_slower_than, config.slowlog_max_len),
            disconnected: tokio::sync::Notify::new(),
            node_id,
            config,
            tls: None,
            membership: None,
        }
    }

    /// The same node, in this cluster.
    pub fn with_membership(
        self,
        membership: Option<Arc<crate::ring::membership::Membership>>,
    ) -> Node {
        Node { membership, ..self }
    }

    /// The same node, serving TLS with these settings.
    pub fn with_tls(self, tls: Option<crate::tls::TlsServer>) -> Node {
        Node { tls, ..self }
    }

    /// Reserves a connection slot, or None when at --max-clients.
    pub fn admit(&self) -> bool {
        let max = self.max_clients.load(Relaxed);
        let mut cur = self.connected.load(Relaxed);
        loop {
            if cur >= max {
                return false;
            }
            match self
                .connected
                .compare_exchange_weak(cur, cur + 1, Relaxed, Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }

    pub fn register(&self, info: Arc<ClientInfo>) -> u64 {
        let id = self.next_client_id.fetch_add(1, Relaxed);
        lock(&self.clients).insert(id, info);
        id
    }

    pub fn unregister(&self, id: u64) {
        lock(&self.clients).remove(&id);
        self.release();
    }

    /// Gives back a slot taken by `admit`.
    pub fn release(&self) {
        self.connected.fetch_sub(1, Relaxed);
        self.disconnected.notify_waiters();
    }

    pub fn clients(&self) -> Vec<(u64, Arc<ClientInfo>)> {
        lock(&self.clients)
            .iter()
            .map(|(id, c)| (*id, c.clone()))
            .collect()
    }

    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    pub fn total(&self, f: impl Fn(&LoopStats) -> &Counter) -> u64 {
        self.stats.iter().map(|s| f(s).get()).sum()
    }
}

/// The HELLO client name a ringkv node gives when it connects to another node (the cluster's
/// peer links): this prefix and its node id in 16 hex digits.
pub const PEER_NAME_PREFIX: &str = "ringkv-node/";

/// A HELLO client name, read as a peer's: None if it is not one (an ordinary client), Some(Err)
/// if it claims to be a node without a valid id.
pub fn peer_node_id(name: &[u8]) -> Option<Result<NodeId, ()>> {
    let hex = name.strip_prefix(PEER_NAME_PREFIX.as_bytes())?;
    let id = std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.len() == 16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .filter(|&id| id != 0);
    Some(id.ok_or(()))
}
