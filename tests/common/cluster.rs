//! Several real ringkv nodes on loopback forming one cluster, started as the prototype's
//! quick start did: each names the others with --peers (ports are reserved first, so every
//! node knows them before any starts). Nodes can be killed and restarted on their data.

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use ringkv_client::{Bytes, Client, ClientConfig, PutOptions};

use super::resp::{Conn, Reply};
use super::{wait_until, Server};

pub const SECRET: &str = "test-cluster-secret-0123456789";
/// How long a cluster may take to agree on its members and their liveness.
pub const CONVERGE: Duration = Duration::from_secs(30);

pub struct Cluster {
    pub nodes: Vec<Option<Server>>,
    pub ports: Vec<u16>,
    /// The port each node's peers dial: its own, or a proxy's in front of it (fault runs).
    pub reach: Vec<u16>,
    dirs: Vec<tempfile::TempDir>,
    extra: Vec<String>,
    /// Flags for one node only, by index.
    own: Vec<Vec<String>>,
    /// Nodes started later ([`Cluster::start_first`]): the first ones do not name them in
    /// --peers (a seed that never answers would hold their bootstrap).
    first: usize,
}

/// Ports free now (bound then released) for nodes that must know each other's ports, and
/// that are restarted on them. Taken below the kernel's ephemeral range when there is room:
/// a released port of that range may go to any outgoing connection (a client's, a peer
/// link's) before its node binds it again, and the node then fails with "Address already in
/// use". Nothing takes a port below that range unless asked for it by number.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::collections::HashSet;
    use std::sync::Mutex;
    /// Ports this process handed out already (its tests run in parallel).
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    /// The lowest port tried: above the well-known and most registered service ports.
    const LOWEST_PORT: u16 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let mut taken = TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    let span = u64::from(ephemeral_low.saturating_sub(LOWEST_PORT));
    let mut seed = u64::from(std::process::id()) << 32
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut found = None;
        // Enough tries to find a free one unless that range is nearly full.
        for _ in 0..(if span >= 1_000 { 2_000 } else { 0 }) {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let port = LOWEST_PORT + ((seed >> 33) % span) as u16;
            if !taken.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                found = Some(port);
                break;
            }
        }
        // No room below the ephemeral range: any free port (the old way).
        let port = found.unwrap_or_else(|| {
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind an ephemeral port")
                .port()
        });
        taken.insert(port);
        out.push(port);
    }
    out
}

impl Cluster {
    /// Starts `n` nodes, each with `--peers` naming the others, plus `extra` flags.
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_each(n, extra, |_| Vec::new())
    }

    /// [`Cluster::start`], with flags for each node from `own(i)` too.
    pub fn start_each(n: usize, extra: &[&str], own: impl Fn(usize) -> Vec<String>) -> Cluster {
        let ports = free_ports(n);
        Self::start_first(n, ports.clone(), ports, extra, own)
    }

    /// Starts a node on each of `ports`, whose peers reach it on `reach` (where `reach`
    /// differs, the node advertises it: a proxy listens there), starting only nodes
    /// `0..first`; the others are started
    /// with [`Cluster::restart`] and join the running cluster.
    pub fn start_first(
        first: usize,
        ports: Vec<u16>,
        reach: Vec<u16>,
        extra: &[&str],
        own: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        let n = ports.len();
        let mut c = Cluster {
            first,
            nodes: Vec::new(),
            ports,
            reach,
            dirs: (0..n)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            own: (0..n).map(own).collect(),
        };
        for i in 0..n {
            let s = (i < first).then(|| c.spawn(i));
            c.nodes.push(s);
        }
        c
    }

    pub fn dir(&self, i: usize) -> PathBuf {
        self.dirs[i].path().to_path_buf()
    }

    fn args(&self, i: usize) -> Vec<String> {
        let peers: Vec<String> = self
            .reach
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && (*j < self.first || i >= self.first))
            .map(|(_, p)| format!("127.0.0.1:{p}"))
            .collect();
        let mut a = vec![
            "--port".to_string(),
            self.ports[i].to_string(),
            "--cluster-secret".into(),
            SECRET.into(),
        ];
        // One loop per node unless the test asks for more (several nodes share 2 cores).
        if !self.extra.iter().any(|a| a == "--threads") {
            a.extend(["--threads".into(), "1".into()]);
        }
        if self.reach[i] != self.ports[i] {
            a.extend(["--advertise".into(), format!("127.0.0.1:{}", self.reach[i])]);
        }
        if !peers.is_empty() {
            a.push("--peers".into());
            a.push(peers.join(","));
        }
        a.extend(self.extra.iter().cloned());
        a.extend(self.own[i].iter().cloned());
        a
    }

    fn spawn(&self, i: usize) -> Server {
        let args = self.args(i);
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        Server::start_in(self.dirs[i].path(), &refs)
    }

    pub fn node(&self, i: usize) -> &Server {
        self.nodes[i].as_ref().expect("node is running")
    }

    /// A binary client (ringkv-client) connected to node `i`.
    pub async fn client(&self, i: usize) -> Client {
        Client::connect(self.node(i).addr, ClientConfig::default())
            .await
            .expect("connect")
    }

    pub fn conn(&self, i: usize) -> Conn {
        Conn::connect(self.node(i).addr)
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(s) = self.nodes[i].take() {
            s.kill();
        }
    }

    /// Restarts node `i` on its data directory and port.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let s = self.spawn(i);
        self.nodes[i] = Some(s);
    }

    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    /// CLUSTER NODES of node `i`, one line per member.
    pub fn nodes_of(&self, i: usize) -> Vec<String> {
        let reply = Conn::try_connect(self.node(i).addr)
            .ok()
            .and_then(|mut c| c.try_call(&[b"CLUSTER", b"NODES"]).ok());
        match reply {
            Some(Reply::Bulk(Some(b))) => String::from_utf8_lossy(&b)
                .lines()
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Liveness node `i` shows for the member listening on `port`.
    pub fn liveness_seen(&self, i: usize, port: u16) -> Option<String> {
        let suffix = format!(":{port}");
        self.nodes_of(i).iter().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 6 && f[1].ends_with(&suffix)).then(|| f[4].to_string())
        })
    }

    /// Starts one more node (a new port and data directory, `--peers` naming every other
    /// node, plus `own` flags): it joins the running cluster. Its index.
    pub fn add(&mut self, own: &[&str]) -> usize {
        let i = self.nodes.len();
        let port = free_ports(1)[0];
        self.ports.push(port);
        self.reach.push(port);
        self.first += 1;
        self.dirs.push(tempfile::tempdir().expect("tempdir"));
        self.own.push(own.iter().map(|s| s.to_string()).collect());
        let s = self.spawn(i);
        self.nodes.push(Some(s));
        i
    }

    /// Waits until every running node lists every node, running ones up and the others down,
    /// and every one active (no join or leave in progress).
    pub fn wait_converged(&self) {
        let n = self.nodes.len();
        wait_until(
            "the cluster to agree on its members and liveness",
            CONVERGE,
            || {
                self.running().into_iter().all(|i| {
                    let lines = self.nodes_of(i);
                    lines.len() == n
                        && lines.iter().all(|l| l.split(' ').nth(3) == Some("active"))
                        && (0..n).all(|j| {
                            let want = if self.nodes[j].is_some() {
                                "up"
                            } else {
                                "down"
                            };
                            self.liveness_seen(i, self.reach[j]).as_deref() == Some(want)
                        })
                })
            },
        );
    }

    /// Node `i`'s own copy of `key` (CLUSTER GETLOCAL: no coordinator, no read repair).
    pub fn local(&self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        match self.conn(i).call(&[b"CLUSTER", b"GETLOCAL", key]) {
            Reply::Bulk(b) => b,
            other => panic!("CLUSTER GETLOCAL on node {i}: {other:?}"),
        }
    }
}

/// A ring as CLUSTER MAP shows it: each partition's preference list, as node ports.
pub struct RingMap {
    bits: u32,
    lists: Vec<Vec<u16>>,
}

impl RingMap {
    /// The ports of the nodes that replicate `key`.
    pub fn owners(&self, key: &[u8]) -> &[u16] {
        let hash = ringkv_proto::key_hash(key);
        let p = if self.bits == 0 {
            0
        } else {
            (hash >> (64 - self.bits)) as usize
        };
        &self.lists[p]
    }
}

impl Cluster {
    /// Node `i`'s CLUSTER MAP.
    /// The first key `prefix<n>` whose replicas are exactly the nodes `want` (by index), as
    /// node 0's CLUSTER MAP shows them.
    pub fn key_on(&self, prefix: &str, want: &[usize]) -> String {
        let mut want: Vec<u16> = want.iter().map(|&i| self.ports[i]).collect();
        want.sort();
        let map = self.map(0);
        (0..10_000)
            .map(|n| format!("{prefix}{n}"))
            .find(|k| {
                let mut o = map.owners(k.as_bytes()).to_vec();
                o.sort();
                o == want
            })
            .unwrap_or_else(|| panic!("no key {prefix}* on nodes {want:?}"))
    }

    pub fn map(&self, i: usize) -> RingMap {
        let Reply::Array(Some(map)) = self.conn(i).call_str(&["CLUSTER", "MAP"]) else {
            panic!("CLUSTER MAP")
        };
        let (Reply::Int(partitions), Reply::Array(Some(nodes)), Reply::Array(Some(lists))) =
            (&map[1], &map[2], &map[3])
        else {
            panic!("CLUSTER MAP shape: {map:?}")
        };
        let port = |ix: &Reply| -> u16 {
            let Reply::Int(ix) = ix else { panic!("{ix:?}") };
            let Reply::Array(Some(node)) = &nodes[*ix as usize] else {
                panic!("node {ix}")
            };
            let Reply::Bulk(Some(addr)) = &node[1] else {
                panic!("{node:?}")
            };
            String::from_utf8_lossy(addr)
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        };
        let lists = lists
            .iter()
            .map(|l| match l {
                Reply::Array(Some(l)) => l.iter().map(port).collect(),
                other => panic!("{other:?}"),
            })
            .collect();
        RingMap {
            bits: partitions.trailing_zeros(),
            lists,
        }
    }

    /// A field of node `i`'s CLUSTER INFO (None: not there, or the node is not reachable).
    pub fn info(&self, i: usize, field: &str) -> Option<String> {
        let mut c = Conn::try_connect(self.node(i).addr).ok()?;
        let Ok(Reply::Bulk(Some(b))) = c.try_call(&[b"CLUSTER", b"INFO"]) else {
            return None;
        };
        let text = String::from_utf8_lossy(&b).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    }
}

/// Write options passing `ctx`, a context from a GET or an earlier write.
pub fn with_context(ctx: &Bytes) -> PutOptions {
    PutOptions {
        context: Some(ctx.clone()),
        ttl: None,
    }
}
