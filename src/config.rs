//! Server configuration: command-line flags, an optional TOML file with the same settings, and
//! the defaults. Flags win over the file, the file over the defaults.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

mod cluster;

pub use cluster::{
    ClusterArgs, ClusterConfig, OnOff, PeerAddr, Secret, DEFAULT_N, DEFAULT_PARTITIONS,
    DEFAULT_PEER_TIMEOUT_MS, DEFAULT_PHI_CONVICT_THRESHOLD, DEFAULT_R, DEFAULT_VNODES, DEFAULT_W,
    MAX_N, MAX_PARTITIONS, MAX_PEER_ADDR_BYTES, MAX_PHI_CONVICT_THRESHOLD, MAX_VNODES,
    MAX_ZONE_BYTES, MIN_CLUSTER_SECRET_BYTES,
};

pub const DEFAULT_PORT: u16 = 7379;
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024 * 1024;
pub const DEFAULT_REQUEST_READ_TIMEOUT_MS: u64 = 30_000;
/// A request's deadline: Cassandra's read_request_timeout (5 s); a healthy fdatasync takes
/// milliseconds, so a write still waiting after this points at a sick disk.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// A tombstone's grace in cluster mode: Cassandra's gc_grace_seconds default (10 days).
pub const DEFAULT_CLUSTER_TOMBSTONE_GRACE_SECS: u64 = 10 * 24 * 3600;
pub const MAX_REQUEST_TIMEOUT_MS: u64 = 3_600_000;
/// Pending requests per connection: one full read batch (the connection handles at most
/// 1,024 requests per read), so a pipelined batch of writes under `--fsync always` is never
/// cut short; at a few hundred bytes per slot that bounds a connection at well under 1 MiB.
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;
pub const MAX_INFLIGHT: usize = 1 << 20;
pub const DEFAULT_MAX_OUTPUT_BUFFER_BYTES: usize = 256 * 1024 * 1024;
/// As Redis's client-query-buffer-limit.
pub const DEFAULT_MAX_QUERY_BUFFER_BYTES: usize = 1024 * 1024 * 1024;
/// Smallest output and query buffer limits accepted (room for ordinary replies and requests).
pub const MIN_CLIENT_BUFFER_BYTES: usize = 64 * 1024;
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, Parser, Default)]
#[command(
    name = "ringkv",
    version,
    about = "ringkv: a Dynamo-style key-value server that speaks its binary protocol and RESP2 on one port",
    long_about = "ringkv: a Dynamo-style key-value server that speaks its binary protocol and RESP2 \
on one port.\n\nWith no flags it serves on 127.0.0.1:7379 with data in ./data. Every flag can also be \
set in a TOML file given with --config (same names, with dashes or underscores); flags win over the file."
)]
pub struct Cli {
    /// Address to listen on. A non-loopback address requires --password (protected mode).
    /// [default: 127.0.0.1]
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// TCP port for clients (binary and RESP); 0 picks a free port, and the log line that says
    /// the server is ready names it. [default: 7379]
    #[arg(long)]
    pub port: Option<u16>,
    /// Data directory. [default: ./data]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Event loops (threads), each with its own runtime and listening socket.
    /// [default: number of cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Store shards; a multiple of --threads. Each shard has its own WAL and snapshot. One per
    /// loop measured best for durable writes (fewer, larger group commits). [default: threads]
    #[arg(long)]
    pub shards: Option<usize>,
    /// Password clients must give (AUTH, or HELLO in the binary protocol). [default: none]
    #[arg(long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Most client connections at once; more are refused with an error. [default: 10000]
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Largest binary frame or RESP argument, in bytes; also the largest value. [default: 67108864]
    #[arg(long)]
    pub max_frame_bytes: Option<usize>,
    /// Close a client connection idle for this many seconds: nothing read from it and none of
    /// its replies could be written (Redis's `timeout`; 0: never). [default: 0]
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Close a connection whose command (RESP) or frame (binary) has started arriving but is
    /// not complete after this many milliseconds, however slowly bytes trickle in (slowloris);
    /// 0: never. [default: 30000]
    #[arg(long)]
    pub request_read_timeout_ms: Option<u64>,
    /// A request not complete this many milliseconds after it was read (run by another
    /// loop, or its write waiting for fdatasync) gets a TIMEOUT error instead of its reply;
    /// a write that timed out may or may not have been applied. [default: 5000]
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Most requests of one connection waiting for their replies at once; past it the
    /// connection is not read until some complete (back-pressure). [default: 1024]
    #[arg(long)]
    pub max_inflight: Option<usize>,
    /// Most reply bytes buffered for one connection, counting replies computed by other
    /// loops; a client that pipelines past it without reading is disconnected, as with
    /// Redis's client-output-buffer-limit. [default: 268435456]
    #[arg(long)]
    pub max_output_buffer_bytes: Option<usize>,
    /// Most bytes of one incomplete request buffered for a connection (Redis's
    /// client-query-buffer-limit); past it the connection gets an error and is closed.
    /// [default: 1073741824]
    #[arg(long)]
    pub max_query_buffer_bytes: Option<usize>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive. [default: info]
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format: "text" (human-readable lines) or "json" (one JSON object per line).
    /// [default: text]
    #[arg(long)]
    pub log_format: Option<LogFormat>,
    /// Log commands slower than this many microseconds in the SLOWLOG (0: every command,
    /// negative: none). [default: 10000]
    #[arg(long, allow_negative_numbers = true)]
    pub slowlog_log_slower_than: Option<i64>,
    /// Most entries the SLOWLOG keeps (the oldest are dropped). [default: 128]
    #[arg(long)]
    pub slowlog_max_len: Option<u64>,
    /// Serve Prometheus metrics over HTTP at this address (GET /metrics), e.g. 127.0.0.1:9121;
    /// port 0 picks a free port (logged as "metrics on ADDR"). A non-loopback address requires
    /// --password, as --bind does. [default: off]
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// How connections are spread over loops: "reuseport" (one listening socket per loop,
    /// the kernel balances) or "handoff" (loop 0 accepts and deals connections round-robin).
    /// [default: reuseport]
    #[arg(long)]
    pub accept: Option<AcceptMode>,
    /// PEM certificate chain this server presents over TLS (with --tls-key). TLS is served on
    /// the same port as plaintext: a connection whose first byte is 0x16 (a TLS handshake
    /// record) is TLS. [default: no TLS]
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Unencrypted PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s) that client certificates must be signed by (see
    /// --tls-auth-clients).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificates, as Redis's tls-auth-clients: "yes" (required, signed by --tls-ca),
    /// "optional" (checked against --tls-ca if sent, else the client is let in) or "no" (not
    /// asked for). The flag alone means "yes". [default: yes with --tls-ca, else no]
    #[arg(long, value_name = "yes|no|optional", num_args = 0..=1, default_missing_value = "yes")]
    pub tls_auth_clients: Option<TlsAuthClients>,
    /// Refuse plaintext connections: they get an error ("TLS required on this port") and are
    /// closed. Needs --tls-cert.
    #[arg(long)]
    pub tls_only: bool,
    /// Most milliseconds a TLS handshake may take, counted from accept; a client that stalls
    /// is disconnected (and counted in INFO stats as tls_handshake_failures). [default: 10000]
    #[arg(long)]
    pub tls_handshake_timeout_ms: Option<u64>,
    /// When a write is acknowledged: "always" (after the fdatasync that covers it; writes
    /// arriving meanwhile share the next one), "batch" (once written to the OS; fdatasync every
    /// --fsync-interval-ms), "never" (written to the OS, synced when it pleases), or "off" (no
    /// WAL or snapshots at all: memory only, like Redis without persistence). [default: always]
    #[arg(long)]
    pub fsync: Option<FsyncPolicy>,
    /// Interval of fdatasync with --fsync batch, in milliseconds. [default: 1000]
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Size at which a WAL segment is closed and a new one started, in bytes. [default: 67108864]
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
    /// Snapshot a shard once its WAL grew by this many bytes (0: never by size).
    /// [default: 268435456]
    #[arg(long)]
    pub snapshot_wal_bytes: Option<u64>,
    /// Snapshot a changed shard at least this often, in seconds (0: never by time).
    /// [default: 3600]
    #[arg(long)]
    pub snapshot_interval_secs: Option<u64>,
    /// Start even if a WAL segment in the middle is corrupt: move it aside, drop the records
    /// that can't be read, and log how many. Without it the node refuses to start.
    #[arg(long)]
    pub repair: bool,
    /// What concurrent writes of a key leave: "siblings" (kept; a binary GET returns them all
    /// with one context, Redis commands see the newest) or "lww" (last write wins by timestamp,
    /// ties by node id; siblings are never stored). [default: siblings]
    #[arg(long)]
    pub conflicts: Option<ConflictMode>,
    /// Most siblings a key may hold; a write that would leave more is refused with an error
    /// naming the key (Riak refuses at 100). [default: 100]
    #[arg(long)]
    pub max_siblings: Option<usize>,
    /// Seconds a deleted key's tombstone (and an expired key) is kept before it is purged, so
    /// that replicas that missed the delete learn of it rather than resurrect the value
    /// (Cassandra's gc_grace_seconds). [default: 0 for a single node, which purges a tombstone
    /// as soon as it is durable; 864000 (10 days) in cluster mode]
    #[arg(long, alias = "tombstone-grace")]
    pub tombstone_grace_secs: Option<u64>,
    /// Testing only (feature `test-hooks`, absent from release builds): every command takes this many extra microseconds on its event loop (a
    /// deliberately slow server, to check that load generators handle coordinated omission).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_delay_us: u64,
    /// Testing only (feature `test-hooks`): while this file exists, every fdatasync of the
    /// WAL and snapshots waits (a disk a test can hold, to keep writes un-acknowledged).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub test_hold_syncs_file: Option<PathBuf>,
    /// Testing only (feature `test-hooks`): this node's wall clock runs this many
    /// milliseconds ahead (negative: behind), for tests of replicas whose clocks differ.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true, default_value_t = 0, allow_negative_numbers = true)]
    pub test_clock_skew_ms: i64,
    /// Testing only (feature `test-hooks`): the machine's boot id as this node sees it (what
    /// `/proc/sys/kernel/random/boot_id` says otherwise), so a test can show a reboot.
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub test_boot_id: Option<String>,
    /// TOML file with any of these settings (the cluster ones included).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictMode {
    Siblings,
    Lww,
}

impl ConflictMode {
    pub fn name(self) -> &'static str {
        match self {
            ConflictMode::Siblings => "siblings",
            ConflictMode::Lww => "lww",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    Always,
    Batch,
    Never,
    Off,
}

impl FsyncPolicy {
    pub fn name(self) -> &'static str {
        match self {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Batch => "batch",
            FsyncPolicy::Never => "never",
            FsyncPolicy::Off => "off",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Whether TLS clients must present a certificate signed by --tls-ca.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsAuthClients {
    Yes,
    No,
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptMode {
    Reuseport,
    Handoff,
}

/// The same settings, read from a file (names with dashes or underscores, as `--help` says).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    bind: Option<IpAddr>,
    port: Option<u16>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    threads: Option<usize>,
    shards: Option<usize>,
    password: Option<String>,
    #[serde(alias = "max_clients")]
    max_clients: Option<usize>,
    #[serde(alias = "max_frame_bytes")]
    max_frame_bytes: Option<usize>,
    timeout: Option<u64>,
    #[serde(alias = "request_read_timeout_ms")]
    request_read_timeout_ms: Option<u64>,
    #[serde(alias = "request_timeout_ms")]
    request_timeout_ms: Option<u64>,
    #[serde(alias = "max_inflight")]
    max_inflight: Option<usize>,
    #[serde(alias = "max_output_buffer_bytes")]
    max_output_buffer_bytes: Option<usize>,
    #[serde(alias = "max_query_buffer_bytes")]
    max_query_buffer_bytes: Option<usize>,
    #[serde(alias = "log_level")]
    log_level: Option<String>,
    #[serde(alias = "log_format")]
    log_format: Option<LogFormat>,
    #[serde(alias = "slowlog_log_slower_than")]
    slowlog_log_slower_than: Option<i64>,
    #[serde(alias = "slowlog_max_len")]
    slowlog_max_len: Option<u64>,
    #[serde(alias = "metrics_addr")]
    metrics_addr: Option<SocketAddr>,
    accept: Option<AcceptMode>,
    #[serde(alias = "tls_cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls_ca")]
    tls_ca: Option<PathBuf>,
    #[serde(alias = "tls_auth_clients")]
    tls_auth_clients: Option<TlsAuthClients>,
    #[serde(alias = "tls_only")]
    tls_only: Option<bool>,
    #[serde(alias = "tls_handshake_timeout_ms")]
    tls_handshake_timeout_ms: Option<u64>,
    fsync: Option<FsyncPolicy>,
    #[serde(alias = "fsync_interval_ms")]
    fsync_interval_ms: Option<u64>,
    #[serde(alias = "wal_segment_bytes")]
    wal_segment_bytes: Option<u64>,
    #[serde(alias = "snapshot_wal_bytes")]
    snapshot_wal_bytes: Option<u64>,
    #[serde(alias = "snapshot_interval_secs")]
    snapshot_interval_secs: Option<u64>,
    repair: Option<bool>,
    conflicts: Option<ConflictMode>,
    #[serde(alias = "max_siblings")]
    max_siblings: Option<usize>,
    #[serde(
        alias = "tombstone_grace_secs",
        alias = "tombstone-grace",
        alias = "tombstone_grace"
    )]
    tombstone_grace_secs: Option<u64>,
    // Cluster settings (see `cluster::ClusterArgs`).
    peers: Option<cluster::PeerList>,
    #[serde(alias = "cluster_secret")]
    cluster_secret: Option<Secret>,
    advertise: Option<String>,
    zone: Option<String>,
    partitions: Option<u32>,
    vnodes: Option<u32>,
    n: Option<u32>,
    w: Option<u32>,
    r: Option<u32>,
    #[serde(alias = "hinted_handoff")]
    hinted_handoff: Option<OnOff>,
    #[serde(alias = "phi_convict_threshold")]
    phi_convict_threshold: Option<f64>,
    #[serde(alias = "peer_timeout_ms")]
    peer_timeout_ms: Option<u64>,
    #[serde(alias = "stream_rate")]
    stream_rate: Option<u64>,
    #[serde(alias = "read_repair")]
    read_repair: Option<OnOff>,
    aae: Option<OnOff>,
    #[serde(alias = "aae_interval_ms")]
    aae_interval_ms: Option<u64>,
    #[serde(alias = "aae_rate")]
    aae_rate: Option<u64>,
}

/// Riak refuses writes past 100 siblings (and warns at 25).
pub const DEFAULT_MAX_SIBLINGS: usize = 100;
/// Highest --max-siblings: below what the decoders accept for one key
/// (`store::dvv::MAX_DECODED_SIBLINGS`, checked by a test), so a stored key always reads back.
pub const MAX_SIBLINGS_LIMIT: usize = 1000;
/// Highest --tombstone-grace-secs (a year).
pub const MAX_TOMBSTONE_GRACE_SECS: u64 = 366 * 86_400;

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: IpAddr,
    pub port: u16,
    pub data_dir: PathBuf,
    pub threads: usize,
    pub shards: usize,
    pub password: Option<String>,
    pub max_clients: usize,
    pub max_frame_bytes: usize,
    /// Idle seconds before a client connection is closed (0: never).
    pub timeout_secs: u64,
    pub request_read_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub max_inflight: usize,
    pub max_output_buffer_bytes: usize,
    pub max_query_buffer_bytes: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub slowlog_log_slower_than: i64,
    pub slowlog_max_len: u64,
    pub metrics_addr: Option<SocketAddr>,
    pub accept: AcceptMode,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub tls_auth_clients: TlsAuthClients,
    pub tls_only: bool,
    pub tls_handshake_timeout_ms: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    pub wal_segment_bytes: u64,
    pub snapshot_wal_bytes: u64,
    pub snapshot_interval_secs: u64,
    pub repair: bool,
    pub conflicts: ConflictMode,
    pub max_siblings: usize,
    pub tombstone_grace_secs: u64,
    pub cluster: ClusterConfig,
    /// Testing only (see `Cli::test_delay_us`).
    #[cfg(feature = "test-hooks")]
    pub test_delay_us: u64,
    /// Testing only (see `Cli::test_hold_syncs_file`).
    #[cfg(feature = "test-hooks")]
    pub test_hold_syncs_file: Option<PathBuf>,
    /// Testing only (see `Cli::test_clock_skew_ms`).
    #[cfg(feature = "test-hooks")]
    pub test_clock_skew_ms: i64,
    /// Testing only (see `Cli::test_boot_id`).
    #[cfg(feature = "test-hooks")]
    pub test_boot_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can't read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    pub fn from_cli(mut cli: Cli) -> Result<Config, ConfigError> {
        let mut file = match &cli.config {
            None => FileConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
        };
        let cluster = ClusterConfig::resolve(std::mem::take(&mut cli.cluster), &mut file)
            .map_err(ConfigError::Invalid)?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = cli.threads.or(file.threads).unwrap_or(cores);
        let c = Config {
            bind: cli
                .bind
                .or(file.bind)
                .unwrap_or(IpAddr::from([127, 0, 0, 1])),
            port: cli.port.or(file.port).unwrap_or(DEFAULT_PORT),
            data_dir: cli
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("./data")),
            threads,
            shards: cli.shards.or(file.shards).unwrap_or(threads),
            password: cli.password.or(file.password).filter(|p| !p.is_empty()),
            max_clients: cli.max_clients.or(file.max_clients).unwrap_or(10_000),
            max_frame_bytes: cli
                .max_frame_bytes
                .or(file.max_frame_bytes)
                .unwrap_or(DEFAULT_MAX_FRAME),
            timeout_secs: cli.timeout.or(file.timeout).unwrap_or(0),
            request_read_timeout_ms: cli
                .request_read_timeout_ms
                .or(file.request_read_timeout_ms)
                .unwrap_or(DEFAULT_REQUEST_READ_TIMEOUT_MS),
            request_timeout_ms: cli
                .request_timeout_ms
                .or(file.request_timeout_ms)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            max_inflight: cli
                .max_inflight
                .or(file.max_inflight)
                .unwrap_or(DEFAULT_MAX_INFLIGHT),
            max_output_buffer_bytes: cli
                .max_output_buffer_bytes
                .or(file.max_output_buffer_bytes)
                .unwrap_or(DEFAULT_MAX_OUTPUT_BUFFER_BYTES),
            max_query_buffer_bytes: cli
                .max_query_buffer_bytes
                .or(file.max_query_buffer_bytes)
                .unwrap_or(DEFAULT_MAX_QUERY_BUFFER_BYTES),
            log_level: cli
                .log_level
                .or(file.log_level)
                .unwrap_or_else(|| "info".into()),
            log_format: cli
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
            slowlog_log_slower_than: cli
                .slowlog_log_slower_than
                .or(file.slowlog_log_slower_than)
                .unwrap_or(10_000),
            slowlog_max_len: cli.slowlog_max_len.or(file.slowlog_max_len).unwrap_or(128),
            metrics_addr: cli.metrics_addr.or(file.metrics_addr),
            accept: cli.accept.or(file.accept).unwrap_or(AcceptMode::Reuseport),
            tls_auth_clients: cli.tls_auth_clients.or(file.tls_auth_clients).unwrap_or(
                if cli.tls_ca.is_some() || file.tls_ca.is_some() {
                    TlsAuthClients::Yes
                } else {
                    TlsAuthClients::No
                },
            ),
            tls_cert: cli.tls_cert.or(file.tls_cert),
            tls_key: cli.tls_key.or(file.tls_key),
            tls_ca: cli.tls_ca.or(file.tls_ca),
            tls_only: cli.tls_only || file.tls_only.unwrap_or(false),
            tls_handshake_timeout_ms: cli
                .tls_handshake_timeout_ms
                .or(file.tls_handshake_timeout_ms)
                .unwrap_or(DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS),
            fsync: cli.fsync.or(file.fsync).unwrap_or(FsyncPolicy::Always),
            fsync_interval_ms: cli
                .fsync_interval_ms
                .or(file.fsync_interval_ms)
                .unwrap_or(1000),
            wal_segment_bytes: cli
                .wal_segment_bytes
                .or(file.wal_segment_bytes)
                .unwrap_or(64 << 20),
            snapshot_wal_bytes: cli
                .snapshot_wal_bytes
                .or(file.snapshot_wal_bytes)
                .unwrap_or(256 << 20),
            snapshot_interval_secs: cli
                .snapshot_interval_secs
                .or(file.snapshot_interval_secs)
                .unwrap_or(3600),
            // A flag can only turn it on: --repair, or `repair = true` in the file.
            repair: cli.repair || file.repair.unwrap_or(false),
            conflicts: cli
                .conflicts
                .or(file.conflicts)
                .unwrap_or(ConflictMode::Siblings),
            max_siblings: cli
                .max_siblings
                .or(file.max_siblings)
                .unwrap_or(DEFAULT_MAX_SIBLINGS),
            // In a cluster a tombstone must outlive any replica's absence, or a replica that
            // missed the delete brings the value back (Cassandra's gc_grace_seconds, 10 days).
            tombstone_grace_secs: cli
                .tombstone_grace_secs
                .or(file.tombstone_grace_secs)
                .unwrap_or(if cluster.secret.is_some() {
                    DEFAULT_CLUSTER_TOMBSTONE_GRACE_SECS
                } else {
                    0
                }),
            cluster,
            #[cfg(feature = "test-hooks")]
            test_delay_us: cli.test_delay_us,
            #[cfg(feature = "test-hooks")]
            test_hold_syncs_file: cli.test_hold_syncs_file.clone(),
            #[cfg(feature = "test-hooks")]
            test_clock_skew_ms: cli.test_clock_skew_ms,
            #[cfg(feature = "test-hooks")]
            test_boot_id: cli.test_boot_id.clone(),
        };
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError::Invalid(s));
        if self.threads == 0 || self.threads > 1024 {
            return bad(format!(
                "--threads {} must be between 1 and 1024",
                self.threads
            ));
        }
        if self.shards == 0 || !self.shards.is_multiple_of(self.threads) || self.shards > 65536 {
            return bad(format!(
                "--shards {} must be a multiple of --threads {} (at most 65536)",
                self.shards, self.threads
            ));
        }
        if self.max_clients == 0 {
            return bad("--max-clients must be at least 1".into());
        }
        if !(4096..=(1 << 31)).contains(&self.max_frame_bytes) {
            return bad(format!(
                "--max-frame-bytes {} must be between 4096 and 2147483648",
                self.max_frame_bytes
            ));
        }
        for (flag, v) in [
            ("--max-output-buffer-bytes", self.max_output_buffer_bytes),
            ("--max-query-buffer-bytes", self.max_query_buffer_bytes),
        ] {
            if v < MIN_CLIENT_BUFFER_BYTES {
                return bad(format!(
                    "{flag} {v} must be at least {MIN_CLIENT_BUFFER_BYTES} bytes"
                ));
            }
        }
        if !(1..=MAX_REQUEST_TIMEOUT_MS).contains(&self.request_timeout_ms) {
            return bad(format!(
                "--request-timeout-ms {} must be between 1 and {MAX_REQUEST_TIMEOUT_MS}",
                self.request_timeout_ms
            ));
        }
        if !(1..=MAX_INFLIGHT).contains(&self.max_inflight) {
            return bad(format!(
                "--max-inflight {} must be between 1 and {MAX_INFLIGHT}",
                self.max_inflight
            ));
        }
        if self.fsync_interval_ms == 0 || self.fsync_interval_ms > 3_600_000 {
            return bad(format!(
                "--fsync-interval-ms {} must be between 1 and 3600000",
                self.fsync_interval_ms
            ));
        }
        if self.max_siblings == 0 || self.max_siblings > MAX_SIBLINGS_LIMIT {
            return bad(format!(
                "--max-siblings {} must be between 1 and {MAX_SIBLINGS_LIMIT}",
                self.max_siblings
            ));
        }
        if self.tombstone_grace_secs > MAX_TOMBSTONE_GRACE_SECS {
            return bad(format!(
                "--tombstone-grace-secs {} must be at most {MAX_TOMBSTONE_GRACE_SECS} (a year)",
                self.tombstone_grace_secs
            ));
        }
        if self.wal_segment_bytes < 4096 {
            return bad(format!(
                "--wal-segment-bytes {} must be at least 4096",
                self.wal_segment_bytes
            ));
        }
        if !self.bind.is_loopback() && self.password.is_none() {
            return bad(format!(
                "refusing to listen on {} without a password (protected mode): anyone who can \
                 reach this address could read and write all data. Set --password (or \
                 RINGKV_PASSWORD), or bind a loopback address such as 127.0.0.1",
                self.bind
            ));
        }
        if let Some(m) = self.metrics_addr {
            if !m.ip().is_loopback() && self.password.is_none() {
                return bad(format!(
                    "refusing to serve metrics on {m} without a password (protected mode): \
                     set --password, or use a loopback address such as 127.0.0.1"
                ));
            }
        }
        self.cluster
            .validate(self.shards, self.bind, MAX_REQUEST_TIMEOUT_MS)
            .map_err(ConfigError::Invalid)?;
        self.validate_tls()
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |s: &str| Err(ConfigError::Invalid(s.into()));
        let tls = self.tls_cert.is_some();
        if tls != self.tls_key.is_some() {
            return bad(
                "--tls-cert and --tls-key go together: give both (the certificate \
                        chain and its private key, PEM) or neither",
            );
        }
        if !tls && self.tls_only {
            return bad("--tls-only needs --tls-cert and --tls-key");
        }
        if !tls && self.tls_ca.is_some() {
            return bad(
                "--tls-ca needs --tls-cert and --tls-key (the CA checks client \
                        certificates, which only a TLS server asks for)",
            );
        }
        if self.tls_auth_clients != TlsAuthClients::No && self.tls_ca.is_none() {
            return bad(
                "--tls-auth-clients yes/optional needs --tls-ca FILE (the CA that \
                        client certificates must be signed by), or use --tls-auth-clients no",
            );
        }
        if self.tls_handshake_timeout_ms == 0 || self.tls_handshake_timeout_ms > 3_600_000 {
            return bad("--tls-handshake-timeout-ms must be between 1 and 3600000");
        }
        Ok(())
    }

    /// Cluster mode: a cluster secret is set (with or without --peers: a node started alone
    /// can be joined later with CLUSTER JOIN).
    pub fn clustered(&self) -> bool {
        self.cluster.secret.is_some()
    }

    /// Whether a read sees the last acknowledged write: the read and write quorums overlap
    /// (W + R > N). W + R <= N is allowed, and reported as not read-your-writes.
    pub fn read_your_writes(&self) -> bool {
        self.cluster.w + self.cluster.r > self.cluster.n
    }

    /// The address peers dial: --advertise, else the bind address and `bound_port` (the port
    /// actually listened on, which differs from --port 0).
    pub fn advertise(&self, bound_port: u16) -> PeerAddr {
        self.cluster.advertise.clone().unwrap_or_else(|| PeerAddr {
            host: self.bind.to_string(),
            port: bound_port,
        })
    }

    /// Largest value a command may store: one frame minus room for its header and key.
    pub fn max_value(&self) -> usize {
        self.max_frame_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// README and `--help`: every flag can also be set in the config file (same names, with
    /// dashes or underscores). Only --config itself and test-only flags are exceptions.
    #[test]
    fn every_flag_is_a_config_file_key() {
        let cmd = Cli::command();
        let mut checked = 0;
        for arg in cmd.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if matches!(
                long,
                "config"
                    | "help"
                    | "version"
                    | "test-delay-us"
                    | "test-hold-syncs-file"
                    | "test-clock-skew-ms"
                    | "test-boot-id"
            ) {
                continue;
            }
            for name in [long.to_string(), long.replace('-', "_")] {
                // A value of the wrong type is fine here: only an unknown key is the failure.
                let text = format!("{name} = []\n");
                let err = toml::from_str::<FileConfig>(&text)
                    .map(|_| String::new())
                    .unwrap_or_else(|e| e.to_string());
                assert!(
                    !err.contains("unknown field"),
                    "--{long} can't be set in the config file as {name:?}: {err}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 20, "only {checked} flags found");
    }

    #[test]
    fn repair_in_the_config_file() {
        let dir = std::env::temp_dir().join(format!("ringkv-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("repair.toml");
        for (text, flag, want) in [
            ("repair = true\n", false, true),
            ("repair = false\n", false, false),
            ("repair = false\n", true, true),
            ("", false, false),
        ] {
            std::fs::write(&path, text).unwrap();
            let c = Config::from_cli(Cli {
                config: Some(path.clone()),
                repair: flag,
                threads: Some(1),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(c.repair, want, "{text:?} with --repair {flag}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
