//! The cluster-aware client: fetches the partition map (`CLUSTER MAP`) from any node and sends
//! each keyed request straight to a replica of its key, so no node has to forward it.
//!
//! Routing follows the server's ring rules (protocol.md §6, `src/ring/partition.rs`): a key's
//! partition is the top `log2(P)` bits of [`ringkv_proto::key_hash`] (partition 0 when P = 1),
//! and the map lists each partition's preference list, preferred replica first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ringkv_proto::{Request, Value};
use thiserror::Error;

mod map;

use crate::conn::CallFailure;
use crate::{
    counter_reply, delete_reply, empty_command, get_reply, int_reply, put_reply, ttl_ms, Client,
    ClientConfig, ClientError, Context, PutOptions, Versioned,
};
use map::PartitionMap;

/// How old the partition map may get before the next request fetches it again: a layout change
/// (a node joined or left) is seen within this long even when nothing fails.
pub const MAP_REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// After a connection to a node failed, it is tried after the other candidates for this long.
const NODE_BACKOFF: Duration = Duration::from_secs(1);
/// Refreshes prompted by failures are at most this frequent (a dead node must not turn every
/// request into a map fetch).
const MIN_REFRESH_GAP: Duration = Duration::from_millis(200);
/// How many times one request follows a `TRYAGAIN` reply (the layout is changing) with a fresh
/// map before giving up.
const MAX_TRYAGAIN: usize = 3;

/// Everything a [`ClusterClient`] call can fail with.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// No seed address was given.
    #[error("no seed address given: pass at least one host:port of a cluster node")]
    NoSeeds,

    /// No node answered `CLUSTER MAP`.
    #[error(
        "could not fetch the partition map (CLUSTER MAP) from any of {tried:?}: {last} \
         (are the nodes running, and started with --cluster-secret?)"
    )]
    NoMap {
        tried: Vec<String>,
        last: Box<ClientError>,
    },

    /// A node sent a `CLUSTER MAP` reply this client does not understand.
    #[error(
        "node {addr} sent a partition map this client cannot read: {why} \
         (is it a compatible ringkv version?)"
    )]
    BadMap { addr: String, why: String },

    /// Every replica of the key (and every other node) failed to connect, or broke the
    /// connection before the request was sent: nothing was applied.
    #[error("no node of the cluster could take the request (tried {tried:?}): {last}")]
    NoReplicaReachable {
        tried: Vec<String>,
        last: Box<ClientError>,
    },

    /// The connection broke (or the reply timed out) after a write was sent: it may or may not
    /// have been applied. It is not retried on another replica behind your back.
    #[error(
        "the request to {addr} was sent but no reply came: {source}; it may or may not have \
         been applied (read the key to find out)"
    )]
    OutcomeUnknown { addr: String, source: ClientError },

    /// The cluster kept answering `TRYAGAIN` while its layout changed.
    #[error(
        "the cluster answered TRYAGAIN {attempts} times (its layout is changing); retry later"
    )]
    LayoutChanging { attempts: usize },

    /// Any other error of the node that ran the request, e.g. an error reply (`NOQUORUM ...`).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Result alias of the cluster client.
pub type ClusterResult<T> = std::result::Result<T, ClusterError>;

/// The map in use and when it was fetched.
struct MapState {
    map: Arc<PartitionMap>,
    fetched_at: Instant,
    /// A failure suggested the map may be out of date.
    stale: bool,
}

/// One node's connection, opened on first use.
#[derive(Default)]
struct NodeSlot {
    client: Option<Client>,
    /// When a connection to it last failed (cleared by the next success).
    failed_at: Option<Instant>,
}

struct Shared {
    seeds: Vec<String>,
    config: ClientConfig,
    map: Mutex<MapState>,
    nodes: Mutex<HashMap<String, NodeSlot>>,
    /// One map fetch at a time; callers that waited find the map fresh.
    refreshing: tokio::sync::Mutex<()>,
}

/// A client for a ringkv cluster: one [`Client`] per node, each keyed request sent straight to
/// a replica of its key. Cheap to clone; clones share the connections and the map.
///
/// - **Routing.** A key goes to the first reachable node of its partition's preference list
///   (the preferred replica), which coordinates the request itself: no forwarding hop.
/// - **Failover.** A node that refuses the connection, or whose connection broke before the
///   request was sent, is skipped for the next one in the list (then any other node, which
///   forwards). A node that failed is tried last for a second. After a *write* was sent and the
///   connection broke, the write is not retried: [`ClusterError::OutcomeUnknown`]. Reads
///   ([`get`](Self::get), and [`command`](Self::command) of a read-only command) are retried on
///   the next replica.
/// - **Map refresh.** The map is fetched again by the first request after
///   [`MAP_REFRESH_INTERVAL`], after any connection failure, and after a `TRYAGAIN` reply
///   (which is then retried with the new map, at most a few times). A map with an older layout
///   version than the one in use is ignored.
#[derive(Clone)]
pub struct ClusterClient {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterClient")
            .field("seeds", &self.shared.seeds)
            .field("layout_version", &self.layout_version())
            .finish_non_exhaustive()
    }
}

impl ClusterClient {
    /// Fetches the partition map from the first seed that answers (`"host:port"` each).
    /// `config` applies to every node's connection.
    pub async fn connect<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
        config: ClientConfig,
    ) -> ClusterResult<ClusterClient> {
        let seeds: Vec<String> = seeds.into_iter().map(Into::into).collect();
        if seeds.is_empty() {
            return Err(ClusterError::NoSeeds);
        }
        let nodes = Mutex::new(HashMap::new());
        let (addr, map) = fetch_first(&seeds, &config, &nodes).await?;
        tracing::debug!(%addr, version = map.version, "fetched the partition map");
        let shared = Shared {
            seeds,
            config,
            map: Mutex::new(MapState {
                map: Arc::new(map),
                fetched_at: Instant::now(),
                stale: false,
            }),
            nodes,
            refreshing: tokio::sync::Mutex::new(()),
        };
        Ok(ClusterClient {
            shared: Arc::new(shared),
        })
    }

    /// The layout version of the map in use.
    pub fn layout_version(&self) -> u64 {
        self.lock_map().map.version
    }

    /// The nodes of the map in use: (node id, `"host:port"`).
    pub fn nodes(&self) -> Vec<(u64, String)> {
        let st = self.lock_map();
        st.map
            .nodes
            .iter()
            .map(|n| (n.id, n.addr.to_string()))
            .collect()
    }

    /// The replicas of `key` in the map in use, preferred first (`"host:port"` each).
    pub fn replicas_of(&self, key: impl AsRef<[u8]>) -> Vec<String> {
        let st = self.lock_map();
        let map = &st.map;
        map.preference(key.as_ref())
            .iter()
            .map(|&i| map.nodes[i as usize].addr.to_string())
            .collect()
    }

    /// Fetches the partition map now (from the map's nodes, then the seeds).
    pub async fn refresh(&self) -> ClusterResult<()> {
        let _one = self.shared.refreshing.lock().await;
        let mut candidates: Vec<String> = self
            .ordered(|map| (0..map.nodes.len() as u32).collect())
            .iter()
            .map(|a| a.to_string())
            .collect();
        for s in &self.shared.seeds {
            if !candidates.contains(s) {
                candidates.push(s.clone());
            }
        }
        let (addr, map) = fetch_first(&candidates, &self.shared.config, &self.shared.nodes).await?;
        let mut st = self.lock_map();
        st.fetched_at = Instant::now();
        st.stale = false;
        if map.version >= st.map.version {
            if map.version != st.map.version || map.nodes != st.map.nodes {
                tracing::debug!(%addr, from = st.map.version, to = map.version, "new partition map");
            }
            st.map = Arc::new(map);
        }
        Ok(())
    }

    /// Closes every node's connection (see [`Client::close`]).
    pub fn close(&self) {
        for slot in self.lock_nodes().values() {
            if let Some(c) = &slot.client {
                c.close();
            }
        }
    }

    // ----- requests -----

    /// Reads a key from a replica. `None` if it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> ClusterResult<Option<Versioned>> {
        let key = key.as_ref();
        let reply = self.send(key, &Request::Get { key }, true).await?;
        Ok(get_reply(reply)?)
    }

    /// Writes a key without a context or TTL. Returns the new context.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> ClusterResult<Context> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Writes a key with a causal context and/or a TTL (see [`Client::put_with`]).
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: PutOptions,
    ) -> ClusterResult<Context> {
        Ok(self.put_returning(key, value, opts).await?.context)
    }

    /// [`put_with`](Self::put_with), returning the whole reply (see [`Client::put_returning`]).
    pub async fn put_returning(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: PutOptions,
    ) -> ClusterResult<Versioned> {
        let key = key.as_ref();
        let req = Request::Put {
            key,
            value: value.as_ref(),
            context: opts.context.as_deref().unwrap_or(&[]),
            ttl_ms: ttl_ms(&opts),
        };
        Ok(put_reply(self.send(key, &req, false).await?)?)
    }

    /// `INCRBY` on a replica of the key: adds `by` (negative to subtract) to its counter;
    /// returns the total the coordinator computed (see [`Client::counter`]).
    pub async fn incr_by(&self, key: impl AsRef<[u8]>, by: i64) -> ClusterResult<i64> {
        let by = by.to_string();
        let reply = self
            .command(&[b"INCRBY".as_slice(), key.as_ref(), by.as_bytes()])
            .await?;
        Ok(int_reply("INCRBY", reply)?)
    }

    /// A counter's value, `None` if the key does not exist (see [`Client::counter`]).
    pub async fn counter(&self, key: impl AsRef<[u8]>) -> ClusterResult<Option<i64>> {
        let reply = self.command(&[b"GET".as_slice(), key.as_ref()]).await?;
        Ok(counter_reply(reply)?)
    }

    /// Resolves a key's siblings (see [`Client::resolve`]): reads them with their context and
    /// writes `value` with it. Returns the new context.
    pub async fn resolve(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> ClusterResult<Context> {
        let key = key.as_ref();
        let context = self.get(key).await?.map(|v| v.context);
        let opts = PutOptions { context, ttl: None };
        self.put_with(key, value, opts).await
    }

    /// Deletes a key. `true` if it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> ClusterResult<bool> {
        self.delete_with(key, []).await
    }

    /// Deletes a key, superseding the version described by `context` (from a GET).
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        context: impl AsRef<[u8]>,
    ) -> ClusterResult<bool> {
        let key = key.as_ref();
        let req = Request::Delete {
            key,
            context: context.as_ref(),
        };
        Ok(delete_reply(self.send(key, &req, false).await?)?)
    }

    /// Sends any command, routed by its first key (from the command table; e.g. `SET k v`
    /// goes to a replica of `k`). A command without keys goes to any node. Multi-key commands
    /// go to a replica of the first key, which splits them per key as any node does.
    pub async fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> ClusterResult<Value> {
        let Some(name) = args.first() else {
            return Err(empty_command().into());
        };
        let spec = ringkv_proto::commands::lookup(name.as_ref());
        let read_only = spec.is_some_and(|s| s.flags.contains(&"readonly"));
        let key: &[u8] = match spec {
            Some(s) if s.first_key > 0 => {
                args.get(s.first_key as usize).map_or(b"", |k| k.as_ref())
            }
            // No key: any node will do; the empty key picks one deterministically.
            Some(_) | None => b"",
        };
        let req = Request::Command {
            args: args.iter().map(|a| a.as_ref()).collect(),
        };
        self.send(key, &req, read_only).await
    }

    /// Sends `req` to the replicas of `key` in turn (then the other nodes) until one answers.
    /// `retry_sent`: the request may be repeated after a connection broke with it in flight
    /// (reads only).
    async fn send(&self, key: &[u8], req: &Request<'_>, retry_sent: bool) -> ClusterResult<Value> {
        let mut tried: Vec<String> = Vec::new();
        let mut last = None;
        for _ in 0..=MAX_TRYAGAIN {
            self.refresh_if_due().await;
            let candidates = self.ordered(|map| {
                let prefs = map.preference(key);
                let rest = (0..map.nodes.len() as u32).filter(|i| !prefs.contains(i));
                prefs.iter().copied().chain(rest).collect()
            });
            let mut tryagain = false;
            for addr in candidates {
                let (client, had_failed) = match self.client_for(&addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.node_failed(&addr);
                        tried.push(addr.to_string());
                        last = Some(e);
                        continue;
                    }
                };
                match client.request_tracked(req).await {
                    Ok(v) => {
                        if had_failed {
                            self.node_ok(&addr);
                        }
                        return Ok(v);
                    }
                    Err(CallFailure { error, .. }) if error.server_prefix() == Some("TRYAGAIN") => {
                        tryagain = true;
                        last = Some(error);
                        break;
                    }
                    Err(CallFailure { error, sent }) if error.is_connection_error() => {
                        self.node_failed(&addr);
                        if sent && !retry_sent {
                            return Err(ClusterError::OutcomeUnknown {
                                addr: addr.to_string(),
                                source: error,
                            });
                        }
                        tried.push(addr.to_string());
                        last = Some(error);
                    }
                    Err(CallFailure { error, .. }) => return Err(error.into()),
                }
            }
            if !tryagain {
                return Err(ClusterError::NoReplicaReachable {
                    tried,
                    last: Box::new(last.unwrap_or_else(|| {
                        ClientError::Server("CLUSTERDOWN the partition map names no node".into())
                    })),
                });
            }
            // The node knows a newer layout: fetch it now, not after MIN_REFRESH_GAP.
            if let Err(e) = self.refresh().await {
                tracing::debug!(error = %e, "partition map refresh after TRYAGAIN failed");
            }
        }
        Err(ClusterError::LayoutChanging {
            attempts: MAX_TRYAGAIN + 1,
        })
    }

    /// Refreshes the map if it is old, or stale after a failure (not more often than
    /// [`MIN_REFRESH_GAP`]). A failed refresh keeps the old map.
    async fn refresh_if_due(&self) {
        let due = {
            let st = self.lock_map();
            let age = st.fetched_at.elapsed();
            age >= MAP_REFRESH_INTERVAL || (st.stale && age >= MIN_REFRESH_GAP)
        };
        if due {
            if let Err(e) = self.refresh().await {
                tracing::debug!(error = %e, "partition map refresh failed; keeping the old map");
                // Do not retry on every request while the cluster is unreachable.
                let mut st = self.lock_map();
                st.fetched_at = Instant::now();
            }
        }
    }

    /// The addresses of the nodes `pick` chooses from the map, nodes that failed within
    /// [`NODE_BACKOFF`] moved to the end.
    fn ordered(&self, pick: impl FnOnce(&PartitionMap) -> Vec<u32>) -> Vec<Arc<str>> {
        let map = self.lock_map().map.clone();
        let mut addrs: Vec<Arc<str>> = pick(&map)
            .into_iter()
            .map(|i| map.nodes[i as usize].addr.clone())
            .collect();
        let nodes = self.lock_nodes();
        let backing_off = |a: &Arc<str>| {
            nodes
                .get(&**a)
                .and_then(|s| s.failed_at)
                .is_some_and(|t| t.elapsed() < NODE_BACKOFF)
        };
        // Stable: the preference order holds within both groups.
        addrs.sort_by_key(backing_off);
        addrs
    }

    /// The node's client (connecting on first use), and whether it had failed before.
    async fn client_for(&self, addr: &str) -> Result<(Client, bool), ClientError> {
        client_for(&self.shared.nodes, &self.shared.config, addr).await
    }

    fn node_failed(&self, addr: &str) {
        self.lock_nodes()
            .entry(addr.to_owned())
            .or_default()
            .failed_at = Some(Instant::now());
        self.lock_map().stale = true;
    }

    fn node_ok(&self, addr: &str) {
        if let Some(slot) = self.lock_nodes().get_mut(addr) {
            slot.failed_at = None;
        }
    }

    fn lock_map(&self) -> MutexGuard<'_, MapState> {
        // Poisoning only means a panic elsewhere; the state is replaced whole, never torn.
        self.shared.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_nodes(&self) -> MutexGuard<'_, HashMap<String, NodeSlot>> {
        lock_nodes(&self.shared.nodes)
    }
}

fn lock_nodes(
    nodes: &Mutex<HashMap<String, NodeSlot>>,
) -> MutexGuard<'_, HashMap<String, NodeSlot>> {
    nodes.lock().unwrap_or_else(|e| e.into_inner())
}

/// The node's client from `nodes`, connecting (without holding the lock) on first use.
async fn client_for(
    nodes: &Mutex<HashMap<String, NodeSlot>>,
    config: &ClientConfig,
    addr: &str,
) -> Result<(Client, bool), ClientError> {
    if let Some(slot) = lock_nodes(nodes).get(addr) {
        if let Some(c) = &slot.client {
            return Ok((c.clone(), slot.failed_at.is_some()));
        }
    }
    let fresh = Client::connect(addr, config.clone()).await?;
    let mut nodes = lock_nodes(nodes);
    let slot = nodes.entry(addr.to_owned()).or_default();
    match &slot.client {
        // Another request connected meanwhile: use that one.
        Some(c) => {
            fresh.close();
            Ok((c.clone(), slot.failed_at.is_some()))
        }
        None => {
            slot.client = Some(fresh.clone());
            Ok((fresh, slot.failed_at.is_some()))
        }
    }
}

/// `CLUSTER MAP` from the first of `addrs` that answers with a readable map.
async fn fetch_first(
    addrs: &[String],
    config: &ClientConfig,
    nodes: &Mutex<HashMap<String, NodeSlot>>,
) -> ClusterResult<(String, PartitionMap)> {
    let mut last = None;
    for addr in addrs {
        let client = match client_for(nodes, config, addr).await {
            Ok((c, _)) => c,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match client.command(&["CLUSTER", "MAP"]).await {
            Ok(reply) => {
                return PartitionMap::parse(reply)
                    .map(|m| (addr.clone(), m))
                    .map_err(|why| ClusterError::BadMap {
                        addr: addr.clone(),
                        why,
                    })
            }
            Err(e) => last = Some(e),
        }
    }
    Err(ClusterError::NoMap {
        tried: addrs.to_vec(),
        last: Box::new(
            last.unwrap_or_else(|| ClientError::Server("ERR no address to ask for the map".into())),
        ),
    })
}
