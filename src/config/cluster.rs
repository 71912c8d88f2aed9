//! Cluster settings: peers, the shared secret, ring shape (partitions, vnodes), replication
//! (N, W, R), hinted handoff and failure detection. A node is in cluster mode when it has a
//! cluster secret, with or without --peers (it can start alone and be joined later).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use serde::Deserialize;

use super::FileConfig;

/// A ring's partition count: Riak's default ring size is 64, this one starts finer so that
/// moving one partition moves little data.
pub const DEFAULT_PARTITIONS: u32 = 1024;
/// Most partitions (partition numbers fit in 16 bits; `store::placement::MAX_PARTITIONS`).
pub const MAX_PARTITIONS: u32 = 1 << 16;
/// Tokens per node: with 256, five nodes own within 10% of the mean partition count.
pub const DEFAULT_VNODES: u32 = 256;
pub const MAX_VNODES: u32 = 4096;
/// Replicas per key (Dynamo's N), and the default write and read quorums.
pub const DEFAULT_N: u32 = 3;
pub const MAX_N: u32 = 16;
pub const DEFAULT_W: u32 = 2;
pub const DEFAULT_R: u32 = 2;
/// Cassandra's phi_convict_threshold.
pub const DEFAULT_PHI_CONVICT_THRESHOLD: f64 = 8.0;
pub const MAX_PHI_CONVICT_THRESHOLD: f64 = 32.0;
/// Deadline of one call on a peer link.
pub const DEFAULT_PEER_TIMEOUT_MS: u64 = 2_000;
/// How often anti-entropy compares this node's partitions with their other replicas.
pub const DEFAULT_AAE_INTERVAL_MS: u64 = 60_000;
pub const MIN_AAE_INTERVAL_MS: u64 = 100;
/// Anti-entropy traffic per second (requests and replies of its calls, entries fetched and
/// pushed), bytes; 0: unthrottled.
pub const DEFAULT_AAE_RATE: u64 = 8 << 20;
/// Shortest cluster secret: 128 bits, if it is random.
pub const MIN_CLUSTER_SECRET_BYTES: usize = 16;
/// Longest zone name (it travels in PEER_HELLO and gossip as at most 64 bytes).
pub const MAX_ZONE_BYTES: usize = 64;
/// Longest "host:port" of a peer or advertised address (255 bytes on the wire).
pub const MAX_PEER_ADDR_BYTES: usize = 255;

/// The cluster flags (flattened into `Cli`).
#[derive(Debug, Default, clap::Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterArgs {
    /// Other nodes to join, HOST:PORT, comma-separated or repeated (hostnames are resolved
    /// when dialed). Needs --cluster-secret. [default: none: standalone]
    #[arg(long, value_name = "HOST:PORT,...", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Secret shared by every node of the cluster (at least 16 bytes): peers prove they know
    /// it (HMAC over nonces), it never crosses the wire. Setting it puts the node in cluster
    /// mode, even without --peers (it can be joined later with CLUSTER JOIN).
    #[arg(long, env = "RINGKV_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<Secret>,
    /// The address peers dial to reach this node. [default: --bind and the port listened on]
    #[arg(long, value_name = "HOST:PORT")]
    pub advertise: Option<String>,
    /// This node's zone (rack, availability zone): replicas of a key go to distinct zones
    /// first. At most 64 bytes of printable ASCII, no spaces. [default: none]
    #[arg(long)]
    pub zone: Option<String>,
    /// Partitions of the ring: a power of two, 1 to 65536, at least --shards. Every node of a
    /// cluster has the same; fixed for a data directory. [default: 1024]
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Tokens this node places on the ring (1 to 4096). [default: 256]
    #[arg(long)]
    pub vnodes: Option<u32>,
    /// Replicas of each key (1 to 16); every node of a cluster has the same. [default: 3]
    #[arg(long)]
    pub n: Option<u32>,
    /// Replicas that must have durably applied a write before it is acknowledged (1 to --n).
    /// [default: 2, or --n if smaller]
    #[arg(long)]
    pub w: Option<u32>,
    /// Replicas that must answer a read (1 to --n); W + R > N reads your writes.
    /// [default: 2, or --n if smaller]
    #[arg(long)]
    pub r: Option<u32>,
    /// When a replica is down, write to a stand-in that keeps a hint for it (sloppy quorum);
    /// "off" refuses the write instead. [default: on]
    #[arg(long, value_name = "on|off")]
    pub hinted_handoff: Option<OnOff>,
    /// Suspicion level at which a silent peer is marked down (phi accrual; above 0, at most
    /// 32). [default: 8]
    #[arg(long, allow_negative_numbers = true)]
    pub phi_convict_threshold: Option<f64>,
    /// Deadline of one call on a peer link, in milliseconds. [default: 2000]
    #[arg(long)]
    pub peer_timeout_ms: Option<u64>,
    /// Most bytes per second this node copies in when partitions move to it (join, leave,
    /// forget); 0: no limit. [default: 67108864, 64 MiB/s]
    #[arg(long, value_name = "BYTES_PER_SEC")]
    pub stream_rate: Option<u64>,
    /// Repair the replicas that answered a read with less than the others (in the
    /// background); "off" leaves that to anti-entropy. [default: on]
    #[arg(long, value_name = "on|off")]
    pub read_repair: Option<OnOff>,
    /// Compare this node's partitions with their other replicas periodically (Merkle
    /// anti-entropy) and exchange the keys that differ; "off" runs a round only on CLUSTER
    /// AAE. [default: on]
    #[arg(long, value_name = "on|off")]
    pub aae: Option<OnOff>,
    /// Milliseconds between anti-entropy rounds (at least 100). [default: 60000]
    #[arg(long)]
    pub aae_interval_ms: Option<u64>,
    /// Anti-entropy traffic this node starts, bytes per second (tree levels, key lists and
    /// the entries fetched and pushed); 0: unthrottled. [default: 8388608]
    #[arg(long)]
    pub aae_rate: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

/// The cluster secret. Its Debug form hides it, so a logged configuration never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<hidden>)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A peer's address as given: a host (name, IPv4, or IPv6 without brackets) and a port.
/// Names are kept as written and resolved when dialed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for PeerAddr {
    type Err = String;
    /// `host:port`, `1.2.3.4:port` or `[v6]:port`; the port is 1..=65535.
    fn from_str(s: &str) -> Result<PeerAddr, String> {
        let s = s.trim();
        if s.len() > MAX_PEER_ADDR_BYTES {
            return Err(format!("longer than {MAX_PEER_ADDR_BYTES} bytes"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, port) = rest
                .split_once("]:")
                .ok_or("an IPv6 address is written [ADDR]:PORT")?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
            (v6, port)
        } else {
            let (host, port) = s.rsplit_once(':').ok_or("no :PORT")?;
            if host.contains(':') {
                return Err("write an IPv6 address in brackets: [ADDR]:PORT".into());
            }
            let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if host.is_empty() || !host.chars().all(name_char) {
                return Err(format!("{host:?} is not a host name or address"));
            }
            (host, port)
        };
        match port.parse::<u16>() {
            Ok(port) if port > 0 => Ok(PeerAddr {
                host: host.to_string(),
                port,
            }),
            _ => Err(format!("{port:?} is not a port (1 to 65535)")),
        }
    }
}

/// `peers` in the config file: a list, or one comma-separated string as on the command line.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum PeerList {
    One(String),
    Many(Vec<String>),
}

/// The effective cluster settings.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Nodes to join at start (duplicates removed, in the order given).
    pub peers: Vec<PeerAddr>,
    /// Set: cluster mode.
    pub secret: Option<Secret>,
    /// What peers dial; `None`: the bind address and the port listened on.
    pub advertise: Option<PeerAddr>,
    pub zone: String,
    pub partitions: u32,
    pub vnodes: u32,
    pub n: u32,
    pub w: u32,
    pub r: u32,
    pub hinted_handoff: bool,
    pub phi_convict_threshold: f64,
    pub peer_timeout_ms: u64,
    /// Bytes per second a node copies in when partitions move to it; 0: unlimited.
    pub stream_rate_bps: u64,
    pub read_repair: bool,
    pub aae: bool,
    pub aae_interval_ms: u64,
    pub aae_rate: u64,
}

/// The default `--stream-rate`: moves copy at most this many bytes per second per receiving
/// node, so a join does not starve foreground requests of disk and network.
pub const DEFAULT_STREAM_RATE_BPS: u64 = 64 << 20;

fn parse_addr(flag: &str, s: &str) -> Result<PeerAddr, String> {
    s.parse()
        .map_err(|why| format!("{flag} {s:?} is not HOST:PORT: {why}"))
}

impl ClusterConfig {
    /// Flags over the file over the defaults; parse errors name the flag and the value.
    pub(super) fn resolve(
        cli: ClusterArgs,
        file: &mut FileConfig,
    ) -> Result<ClusterConfig, String> {
        let given = match (cli.peers.is_empty(), file.peers.take()) {
            (false, _) | (true, None) => cli.peers,
            (true, Some(PeerList::One(s))) => s.split(',').map(str::to_string).collect(),
            (true, Some(PeerList::Many(v))) => v,
        };
        let mut peers: Vec<PeerAddr> = Vec::with_capacity(given.len());
        // Blank items (a trailing comma, `--peers ""`) are skipped: an empty list is standalone.
        for s in given.iter().filter(|s| !s.trim().is_empty()) {
            let addr = parse_addr("--peers", s)?;
            if !peers.contains(&addr) {
                peers.push(addr);
            }
        }
        let advertise = match cli.advertise.or(file.advertise.take()) {
            Some(s) => Some(parse_addr("--advertise", &s)?),
            None => None,
        };
        let n = cli.n.or(file.n).unwrap_or(DEFAULT_N);
        Ok(ClusterConfig {
            peers,
            secret: cli
                .cluster_secret
                .or(file.cluster_secret.take())
                .filter(|s| !s.0.is_empty()),
            advertise,
            zone: cli.zone.or(file.zone.take()).unwrap_or_default(),
            partitions: cli
                .partitions
                .or(file.partitions)
                .unwrap_or(DEFAULT_PARTITIONS),
            vnodes: cli.vnodes.or(file.vnodes).unwrap_or(DEFAULT_VNODES),
            n,
            w: cli.w.or(file.w).unwrap_or(DEFAULT_W.min(n)),
            r: cli.r.or(file.r).unwrap_or(DEFAULT_R.min(n)),
            hinted_handoff: cli
                .hinted_handoff
                .or(file.hinted_handoff)
                .unwrap_or(OnOff::On)
                == OnOff::On,
            phi_convict_threshold: cli
                .phi_convict_threshold
                .or(file.phi_convict_threshold)
                .unwrap_or(DEFAULT_PHI_CONVICT_THRESHOLD),
            peer_timeout_ms: cli
                .peer_timeout_ms
                .or(file.peer_timeout_ms)
                .unwrap_or(DEFAULT_PEER_TIMEOUT_MS),
            stream_rate_bps: cli
                .stream_rate
                .or(file.stream_rate)
                .unwrap_or(DEFAULT_STREAM_RATE_BPS),
            read_repair: cli.read_repair.or(file.read_repair).unwrap_or(OnOff::On) == OnOff::On,
            aae: cli.aae.or(file.aae).unwrap_or(OnOff::On) == OnOff::On,
            aae_interval_ms: cli
                .aae_interval_ms
                .or(file.aae_interval_ms)
                .unwrap_or(DEFAULT_AAE_INTERVAL_MS),
            aae_rate: cli.aae_rate.or(file.aae_rate).unwrap_or(DEFAULT_AAE_RATE),
        })
    }

    /// Checks every rule; the error says which one failed and with what values.
    pub(super) fn validate(
        &self,
        shards: usize,
        bind: IpAddr,
        max_timeout_ms: u64,
    ) -> Result<(), String> {
        if self.secret.is_none() && !self.peers.is_empty() {
            return Err(
                "--peers needs --cluster-secret: peers authenticate each other with it".into(),
            );
        }
        if let Some(s) = &self.secret {
            if s.as_bytes().len() < MIN_CLUSTER_SECRET_BYTES {
                return Err(format!(
                    "--cluster-secret must be at least {MIN_CLUSTER_SECRET_BYTES} bytes (this \
                     one has {}): peers authenticate each other with it, so use a long random \
                     string",
                    s.as_bytes().len()
                ));
            }
            if self.advertise.is_none() && bind.is_unspecified() {
                return Err(format!(
                    "--bind {bind} is not an address peers can dial: set --advertise HOST:PORT \
                     (the address other nodes reach this one at)"
                ));
            }
        }
        self.validate_zone()?;
        self.validate_ring(shards)?;
        self.validate_quorums()?;
        let phi = self.phi_convict_threshold;
        // Written so that NaN fails too.
        if !(phi > 0.0 && phi <= MAX_PHI_CONVICT_THRESHOLD) {
            return Err(format!(
                "--phi-convict-threshold {phi} must be above 0 and at most \
                 {MAX_PHI_CONVICT_THRESHOLD}"
            ));
        }
        if !(1..=max_timeout_ms).contains(&self.peer_timeout_ms) {
            return Err(format!(
                "--peer-timeout-ms {} must be between 1 and {max_timeout_ms}",
                self.peer_timeout_ms
            ));
        }
        if self.aae_interval_ms < MIN_AAE_INTERVAL_MS {
            return Err(format!(
                "--aae-interval-ms {} must be at least {MIN_AAE_INTERVAL_MS}",
                self.aae_interval_ms
            ));
        }
        Ok(())
    }

    fn validate_zone(&self) -> Result<(), String> {
        let zone = &self.zone;
        if zone.len() > MAX_ZONE_BYTES {
            return Err(format!(
                "--zone must be at most {MAX_ZONE_BYTES} bytes (this one has {})",
                zone.len()
            ));
        }
        // No spaces: CLUSTER NODES prints space-separated fields.
        if let Some(c) = zone.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(format!(
                "--zone {zone:?} must be printable ASCII without spaces (it has {c:?})"
            ));
        }
        Ok(())
    }

    fn validate_ring(&self, shards: usize) -> Result<(), String> {
        let p = self.partitions;
        if !(1..=MAX_PARTITIONS).contains(&p) {
            return Err(format!(
                "--partitions {p} must be between 1 and {MAX_PARTITIONS}"
            ));
        }
        if !p.is_power_of_two() {
            return Err(format!(
                "--partitions {p} must be a power of two (e.g. {})",
                p.next_power_of_two()
            ));
        }
        if (p as usize) < shards {
            return Err(format!(
                "--partitions {p} must be at least --shards {shards} (each shard holds whole \
                 partitions)"
            ));
        }
        if !(1..=MAX_VNODES).contains(&self.vnodes) {
            return Err(format!(
                "--vnodes {} must be between 1 and {MAX_VNODES}",
                self.vnodes
            ));
        }
        Ok(())
    }

    fn validate_quorums(&self) -> Result<(), String> {
        let n = self.n;
        if !(1..=MAX_N).contains(&n) {
            return Err(format!("--n {n} must be between 1 and {MAX_N}"));
        }
        for (flag, v) in [("--w", self.w), ("--r", self.r)] {
            if !(1..=n).contains(&v) {
                return Err(format!("{flag} {v} must be between 1 and --n {n}"));
            }
        }
        Ok(())
    }
}
