//! Async, multiplexed Rust client for ringkv, speaking its binary frame protocol (see
//! `protocol.md` at the root of the repository).
//!
//! One [`Client`] holds one TCP connection, shared by every task that clones it: requests are
//! tagged with ids, written in batches by a writer task and matched to their replies (which may
//! arrive in any order) by a reader task, so concurrent calls are pipelined for free.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringkv_client::{Client, ClientConfig, PutOptions};
//!
//! # async fn demo() -> Result<(), ringkv_client::ClientError> {
//! let client = Client::connect("127.0.0.1:7379", ClientConfig::default()).await?;
//!
//! // Binary GET/PUT/DELETE carry the causal context of Dynamo-style versioning.
//! let ctx = client.put("greeting", "hello").await?;
//! if let Some(v) = client.get("greeting").await? {
//!     println!("value {:?}, siblings {}", v.value(), v.values.len());
//! }
//! // Overwrite what we read, with a TTL.
//! client
//!     .put_with("greeting", "hi", PutOptions { context: Some(ctx), ttl: Some(Duration::from_secs(60)) })
//!     .await?;
//! client.delete("greeting").await?;
//!
//! // Any Redis-like command, and typed wrappers for common ones.
//! let n = client.incr_by("counter", 5).await?;
//! let values = client.mget(&["a", "b"]).await?;
//! let reply = client.command(&["DBSIZE"]).await?;
//! # let _ = (n, values, reply);
//! # Ok(()) }
//! ```
//!
//! **Errors.** An error reply from the server becomes [`ClientError::Server`] and leaves the
//! connection usable. If the connection breaks, the requests in flight fail with
//! [`ClientError::ConnectionLost`] (they may or may not have been applied) and the next request
//! reconnects, repeating the handshake. Nothing is retried automatically.
//!
//! **Clusters.** [`ClusterClient`] talks to a ringkv cluster: it fetches the partition map
//! (`CLUSTER MAP`) from any seed node, keeps one [`Client`] per node (connected on first use)
//! and sends each keyed request straight to a replica of its key, so no node has to forward it.
//! When a replica is down it uses the next one in the key's preference list; a write whose
//! connection broke after it was sent is not retried ([`ClusterError::OutcomeUnknown`]). The map
//! is fetched again every [`MAP_REFRESH_INTERVAL`], after a connection failure and after a
//! `TRYAGAIN` reply, so nodes that join or leave are picked up.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringkv_client::ClusterError> {
//! let cluster = ringkv_client::ClusterClient::connect(
//!     ["127.0.0.1:7001", "127.0.0.1:7002"],
//!     ringkv_client::ClientConfig::default(),
//! )
//! .await?;
//! cluster.put("k", "v").await?;
//! let v = cluster.get("k").await?;
//! println!("{:?} lives on {:?}", v, cluster.replicas_of("k"));
//! # Ok(()) }
//! ```
//!
//! **Limits.** At most [`ClientConfig::max_in_flight`] requests wait for replies at once
//! (beyond that calls fail fast with [`ClientError::TooManyInFlight`]); reply frames larger than
//! [`ClientConfig::max_frame_bytes`] close the connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ringkv_proto::Request;
use tokio::net::ToSocketAddrs;
use tokio::sync::Semaphore;

mod cluster;
mod conn;
mod error;
mod tls;

pub use bytes::Bytes;
pub use cluster::{ClusterClient, ClusterError, ClusterResult, MAP_REFRESH_INTERVAL};
pub use error::{ClientError, Result};
pub use ringkv_proto::Value;
pub use tls::{TlsConfig, TlsOptions};

use conn::{deadline_after, CallFailure, Connection};

/// The server's default port.
pub const DEFAULT_PORT: u16 = 7379;

/// The opaque causal context of a stored value: hand it back to [`Client::put_with`] or
/// [`Client::delete_with`] to say "this write supersedes what I read".
pub type Context = Bytes;

/// Connection settings. `ClientConfig::default()` suits a local server without a password.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Sent in HELLO; `None` for a server without a password.
    pub password: Option<String>,
    /// Shown by the server in client listings and logs.
    pub client_name: Option<String>,
    /// Limit for TCP connect plus handshake (default 5 s).
    pub connect_timeout: Duration,
    /// Limit for each request's reply (default 30 s). `Duration::MAX` waits forever.
    pub request_timeout: Duration,
    /// Largest reply frame accepted, header included (default 64 MiB).
    pub max_frame_bytes: usize,
    /// Most requests waiting for a reply at once (default 4096).
    pub max_in_flight: usize,
    /// Connect with TLS (default: plaintext). The handshake counts towards `connect_timeout`.
    pub tls: Option<TlsConfig>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            password: None,
            client_name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_frame_bytes: 64 << 20,
            max_in_flight: 4096,
            tls: None,
        }
    }
}

/// What the server said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Binary protocol version in use (1).
    pub protocol_version: u16,
    /// The server's release, e.g. `"0.1.0"`.
    pub server_version: String,
    /// Id of the node this client is connected to.
    pub node_id: u64,
}

/// A stored value with its causal context, as returned by [`Client::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// Opaque causal context; pass it to the next write of this key.
    pub context: Context,
    /// One entry normally; several when concurrent writes left siblings. Empty when the key
    /// was deleted but the server still reports its context.
    pub values: Vec<Bytes>,
}

impl Versioned {
    /// The first value (the only one unless there are siblings).
    pub fn value(&self) -> Option<&Bytes> {
        self.values.first()
    }

    /// True if concurrent writes left more than one value.
    pub fn has_siblings(&self) -> bool {
        self.values.len() > 1
    }
}

/// Options of [`Client::put_with`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The context from an earlier [`Client::get`] of this key; `None` writes without one.
    pub context: Option<Context>,
    /// Expire the key after this long (rounded to milliseconds, at least 1 ms); `None` keeps
    /// it forever.
    pub ttl: Option<Duration>,
}

/// Remaining time to live of a key, as returned by [`Client::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// The key does not exist.
    Missing,
    /// The key exists and never expires.
    NoExpiry,
    /// The key expires after this long.
    Expires(Duration),
}

/// A handle to one multiplexed connection. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: Vec<SocketAddr>,
    config: ClientConfig,
    /// The current connection, if any. Replaced when found closed.
    slot: Mutex<Option<Arc<Connection>>>,
    /// Serialises reconnects so that concurrent callers share one new connection.
    connecting: tokio::sync::Mutex<()>,
    in_flight: Semaphore,
    closed: AtomicBool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .field("server", &self.server_info())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Resolves `addr` (e.g. `"127.0.0.1:7379"`, `("localhost", 7379)` or a `SocketAddr`),
    /// connects and performs the handshake. Reconnects later use the same resolved addresses.
    pub async fn connect(addr: impl ToSocketAddrs, config: ClientConfig) -> Result<Client> {
        let addrs: Vec<SocketAddr> =
            match tokio::time::timeout(config.connect_timeout, tokio::net::lookup_host(addr)).await
            {
                Ok(r) => r?.collect(),
                Err(_) => {
                    return Err(ClientError::Timeout {
                        during: "connect",
                        after: config.connect_timeout,
                    })
                }
            };
        if addrs.is_empty() {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            )));
        }
        let conn = Connection::open(&addrs, &config).await?;
        let in_flight = Semaphore::new(config.max_in_flight.clamp(1, Semaphore::MAX_PERMITS));
        Ok(Client {
            inner: Arc::new(Inner {
                addrs,
                config,
                slot: Mutex::new(Some(conn)),
                connecting: tokio::sync::Mutex::new(()),
                in_flight,
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The handshake reply of the current connection (`None` while disconnected).
    pub fn server_info(&self) -> Option<ServerInfo> {
        self.lock_slot()
            .as_ref()
            .filter(|c| !c.is_closed())
            .and_then(|c| c.info().cloned())
    }

    /// The configuration this client was created with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Closes the connection: requests in flight fail with [`ClientError::ConnectionLost`],
    /// later ones with [`ClientError::Closed`]. Affects every clone.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(conn) = self.lock_slot().take() {
            conn.close("the client was closed");
        }
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection>>> {
        self.inner.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open_connection(&self) -> Option<Arc<Connection>> {
        self.lock_slot()
            .as_ref()
            .filter(|c| !c.is_closed())
            .cloned()
    }

    /// The current connection, reconnecting if it was lost.
    async fn connection(&self) -> Result<Arc<Connection>> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if let Some(c) = self.open_connection() {
            return Ok(c);
        }
        let _one_at_a_time = self.inner.connecting.lock().await;
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if let Some(c) = self.open_connection() {
            return Ok(c);
        }
        tracing::debug!(addrs = ?self.inner.addrs, "reconnecting to ringkv");
        let conn = Connection::open(&self.inner.addrs, &self.inner.config).await?;
        let mut slot = self.lock_slot();
        if self.inner.closed.load(Ordering::Acquire) {
            // close() ran while we were connecting.
            conn.close("the client was closed");
            return Err(ClientError::Closed);
        }
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn request(&self, req: Request<'_>) -> Result<Value> {
        self.request_tracked(&req).await.map_err(|f| f.error)
    }

    /// Sends one request; on failure also says whether it may have reached the server.
    /// Failing to (re)connect means it surely did not.
    pub(crate) async fn request_tracked(
        &self,
        req: &Request<'_>,
    ) -> std::result::Result<Value, CallFailure> {
        let unsent = |error| CallFailure { error, sent: false };
        let _permit = self.inner.in_flight.try_acquire().map_err(|_| {
            unsent(ClientError::TooManyInFlight {
                max: self.inner.config.max_in_flight,
            })
        })?;
        let conn = self.connection().await.map_err(unsent)?;
        let deadline = deadline_after(self.inner.config.request_timeout);
        conn.call_tracked(req, deadline, "request").await
    }

    // ----- binary operations -----

    /// Reads a key. `None` if it does not exist.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Versioned>> {
        get_reply(self.request(Request::Get { key: key.as_ref() }).await?)
    }

    /// Writes a key without a context or TTL. Returns the new context.
    pub async fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Context> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Writes a key with a causal context and/or a TTL. Returns the new context.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: PutOptions,
    ) -> Result<Context> {
        self.put_returning(key, value, opts)
            .await
            .map(|v| v.context)
    }

    /// [`put_with`](Self::put_with), returning the whole reply: the new context and, when the
    /// write left siblings (a concurrent write it did not supersede), every sibling's value.
    /// `values` is empty when the write left one version: the value just written.
    pub async fn put_returning(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        opts: PutOptions,
    ) -> Result<Versioned> {
        let reply = self
            .request(Request::Put {
                key: key.as_ref(),
                value: value.as_ref(),
                context: opts.context.as_deref().unwrap_or(&[]),
                ttl_ms: ttl_ms(&opts),
            })
            .await?;
        put_reply(reply)
    }

    /// Deletes a key. `true` if it existed.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.delete_with(key, []).await
    }

    /// Deletes a key, superseding the version described by `context` (from a GET).
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        context: impl AsRef<[u8]>,
    ) -> Result<bool> {
        let reply = self
            .request(Request::Delete {
                key: key.as_ref(),
                context: context.as_ref(),
            })
            .await?;
        delete_reply(reply)
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        match self.request(Request::Ping).await? {
            Value::Simple(_) | Value::Bulk(_) => Ok(()),
            other => Err(unexpected("PING", &other)),
        }
    }

    // ----- commands -----

    /// Sends any command of the Redis-like command set, e.g. `&["MGET", "a", "b"]`, and
    /// returns its reply as is. An error reply is `Err(ClientError::Server(..))`.
    pub async fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Value> {
        if args.is_empty() {
            return Err(empty_command());
        }
        self.request(Request::Command {
            args: args.iter().map(|a| a.as_ref()).collect(),
        })
        .await
    }

    /// `MGET`: the values of several keys, `None` for missing ones.
    pub async fn mget<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<Vec<Option<Bytes>>> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"MGET");
        args.extend(keys.iter().map(|k| k.as_ref()));
        match self.command(&args).await? {
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::Nil => Ok(None),
                    Value::Bulk(b) => Ok(Some(b)),
                    Value::Versioned { mut values, .. } => Ok(if values.is_empty() {
                        None
                    } else {
                        Some(values.swap_remove(0))
                    }),
                    other => Err(unexpected("MGET", &other)),
                })
                .collect(),
            other => Err(unexpected("MGET", &other)),
        }
    }

    /// `MSET`: sets several keys.
    pub async fn mset<K: AsRef<[u8]>, V: AsRef<[u8]>>(&self, pairs: &[(K, V)]) -> Result<()> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(pairs.len() * 2 + 1);
        args.push(b"MSET");
        for (k, v) in pairs {
            args.push(k.as_ref());
            args.push(v.as_ref());
        }
        match self.command(&args).await? {
            Value::Simple(_) => Ok(()),
            other => Err(unexpected("MSET", &other)),
        }
    }

    /// `INCR`: adds 1 to an integer value (a missing key counts as 0); returns the new value.
    pub async fn incr(&self, key: impl AsRef<[u8]>) -> Result<i64> {
        let reply = self.command(&[b"INCR".as_slice(), key.as_ref()]).await?;
        int_reply("INCR", reply)
    }

    /// `INCRBY`: adds `by` to an integer value; returns the new value.
    pub async fn incr_by(&self, key: impl AsRef<[u8]>, by: i64) -> Result<i64> {
        let by = by.to_string();
        let reply = self
            .command(&[b"INCRBY".as_slice(), key.as_ref(), by.as_bytes()])
            .await?;
        int_reply("INCRBY", reply)
    }

    /// `DECRBY`: subtracts `by`; returns the new value.
    pub async fn decr_by(&self, key: impl AsRef<[u8]>, by: i64) -> Result<i64> {
        let by = by.to_string();
        let reply = self
            .command(&[b"DECRBY".as_slice(), key.as_ref(), by.as_bytes()])
            .await?;
        int_reply("DECRBY", reply)
    }

    /// A counter's value (`GET`, parsed): `None` if the key does not exist. On a cluster the
    /// value is the sum of every increment any replica holds (INCR keeps a PN-counter).
    pub async fn counter(&self, key: impl AsRef<[u8]>) -> Result<Option<i64>> {
        counter_reply(self.command(&[b"GET".as_slice(), key.as_ref()]).await?)
    }

    /// Resolves a key's siblings: reads it (every sibling and their context) and writes
    /// `value` with that context, superseding them all. Returns the new context. A write
    /// that raced in between stays a sibling (read again to see it).
    pub async fn resolve(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<Context> {
        let key = key.as_ref();
        let context = self.get(key).await?.map(|v| v.context);
        let opts = PutOptions { context, ttl: None };
        self.put_with(key, value, opts).await
    }

    /// `DEL`: deletes keys; returns how many existed.
    pub async fn del<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"DEL");
        args.extend(keys.iter().map(|k| k.as_ref()));
        count_reply("DEL", self.command(&args).await?)
    }

    /// `EXISTS`: how many of `keys` exist (a key given twice counts twice).
    pub async fn exists<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<u64> {
        let mut args: Vec<&[u8]> = Vec::with_capacity(keys.len() + 1);
        args.push(b"EXISTS");
        args.extend(keys.iter().map(|k| k.as_ref()));
        count_reply("EXISTS", self.command(&args).await?)
    }

    /// `EXPIRE`: sets a key's time to live in seconds. `false` if the key does not exist.
    pub async fn expire(&self, key: impl AsRef<[u8]>, seconds: u64) -> Result<bool> {
        let secs = seconds.to_string();
        let reply = self
            .command(&[b"EXPIRE".as_slice(), key.as_ref(), secs.as_bytes()])
            .await?;
        Ok(int_reply("EXPIRE", reply)? > 0)
    }

    /// `TTL`: a key's remaining time to live (whole seconds).
    pub async fn ttl(&self, key: impl AsRef<[u8]>) -> Result<Ttl> {
        let reply = self.command(&[b"TTL".as_slice(), key.as_ref()]).await?;
        Ok(match int_reply("TTL", reply)? {
            -2 => Ttl::Missing,
            -1 => Ttl::NoExpiry,
            n if n >= 0 => Ttl::Expires(Duration::from_secs(n as u64)),
            n => return Err(unexpected("TTL", &Value::Int(n))),
        })
    }

    /// `DBSIZE`: the number of keys on the node.
    pub async fn dbsize(&self) -> Result<u64> {
        count_reply("DBSIZE", self.command(&["DBSIZE"]).await?)
    }
}

fn empty_command() -> ClientError {
    ClientError::Server("ERR empty command (give at least the command name)".into())
}

/// The TTL field of a binary PUT: 0 for none, else milliseconds (at least 1).
fn ttl_ms(opts: &PutOptions) -> u64 {
    match opts.ttl {
        None => 0,
        Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
    }
}

fn get_reply(reply: Value) -> Result<Option<Versioned>> {
    match reply {
        Value::Nil => Ok(None),
        Value::Versioned { context, values } => Ok(Some(Versioned { context, values })),
        Value::Bulk(b) => Ok(Some(Versioned {
            context: Bytes::new(),
            values: vec![b],
        })),
        other => Err(unexpected("GET", &other)),
    }
}

fn put_reply(reply: Value) -> Result<Versioned> {
    match reply {
        Value::Versioned { context, values } => Ok(Versioned { context, values }),
        Value::Simple(_) => Ok(Versioned {
            context: Bytes::new(),
            values: Vec::new(),
        }),
        other => Err(unexpected("PUT", &other)),
    }
}

fn delete_reply(reply: Value) -> Result<bool> {
    match reply {
        Value::Int(n) => Ok(n > 0),
        other => Err(unexpected("DELETE", &other)),
    }
}

fn unexpected(command: &'static str, got: &Value) -> ClientError {
    let mut got = format!("{got:?}");
    if got.len() > 200 {
        let mut cut = 200;
        while !got.is_char_boundary(cut) {
            cut -= 1;
        }
        got.truncate(cut);
        got.push_str("...");
    }
    ClientError::UnexpectedReply { command, got }
}

/// GET of a counter: the binary protocol answers with the value and its context.
fn counter_reply(v: Value) -> Result<Option<i64>> {
    let parse = |b: &[u8]| std::str::from_utf8(b).ok().and_then(|s| s.parse().ok());
    let n = match &v {
        Value::Nil => return Ok(None),
        Value::Bulk(b) => parse(b),
        Value::Versioned { values, .. } if values.len() == 1 => parse(&values[0]),
        _ => None,
    };
    n.map(Some)
        .ok_or_else(|| unexpected("GET of a counter", &v))
}

fn int_reply(command: &'static str, v: Value) -> Result<i64> {
    match v {
        Value::Int(n) => Ok(n),
        other => Err(unexpected(command, &other)),
    }
}

fn count_reply(command: &'static str, v: Value) -> Result<u64> {
    match v {
        Value::Int(n) if n >= 0 => Ok(n as u64),
        other => Err(unexpected(command, &other)),
    }
}
