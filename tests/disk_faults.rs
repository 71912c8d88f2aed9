//! The real server (event loops, connections, the reply gate) over the simulated disk: a disk
//! that fills up, an fdatasync that fails, power loss under concurrent clients. Clients talk
//! RESP over loopback TCP exactly as with the binary; only the file layer is `SimFs`, so that
//! faults can be injected and power lost where a real directory can't.

mod common;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::{Fs, SimFs};
use ringkv::durability::Durability;
use ringkv::net::Server;
use ringkv::node::Node;
use ringkv::store::Store;
use ringkv::wal::replay;

const DEADLINE: Duration = Duration::from_secs(20);

fn sim_dir() -> PathBuf {
    PathBuf::from("/sim/data")
}

/// A node serving on an ephemeral loopback port, its files on `fs`. Dropping it stops it
/// (gracefully: loops, then the WAL writers).
struct SimNode {
    node: Arc<Node>,
    server: Option<Server>,
    addr: SocketAddr,
}

impl SimNode {
    fn start(fs: &SimFs, threads: usize, shards: usize) -> SimNode {
        let cfg = Config::from_cli(Cli {
            bind: Some([127, 0, 0, 1].into()),
            port: Some(0),
            fsync: Some(FsyncPolicy::Always),
            threads: Some(threads),
            shards: Some(shards),
            data_dir: Some(sim_dir()),
            // No automatic snapshots: the tests decide when one happens.
            snapshot_wal_bytes: Some(0),
            snapshot_interval_secs: Some(0),
            ..Default::default()
        })
        .expect("valid config");
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone()))
            .unwrap_or_else(|e| panic!("recovery failed: {e}"));
        let node = Arc::new(Node::new(cfg, 1, store, d));
        let server = Server::start(node.clone(), None).expect("serve");
        let addr = server.addr;
        SimNode {
            node,
            server: Some(server),
            addr,
        }
    }

    fn conn(&self) -> Conn {
        Conn::connect(self.addr)
    }

    fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if let Some(s) = self.server.take() {
            self.node.shutdown();
            s.join();
            self.node.durability.shutdown();
        }
    }

    /// "kill -9" then power loss: nothing reaches the disk from now on, the node stops, and
    /// only what was made durable survives.
    fn crash(mut self, fs: &SimFs) {
        fs.fail_after(0);
        self.stop_now();
        fs.crash();
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        // Poll interval of a condition wait (bounded by the deadline above).
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(v: &str) -> Reply {
    Reply::Bulk(Some(v.as_bytes().to_vec()))
}

fn is_misconf(r: &Reply) -> bool {
    matches!(r, Reply::Error(e) if e.starts_with("MISCONF"))
}

/// Everything the server sends until it closes the connection (panics if it doesn't close
/// within the read timeout).
fn read_until_closed(c: &mut Conn) -> Vec<u8> {
    let s = c.stream();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

/// Recovers a node's data from `fs` as a restart would, and returns GET of each key.
fn recovered(fs: &SimFs, shards: usize) -> Store {
    let store = Store::new(shards);
    for i in 0..shards {
        let mut shard = store.lock(i);
        replay::recover(fs, &sim_dir(), i, &mut shard, false, &|_| {})
            .unwrap_or_else(|e| panic!("recovery of shard {i} failed: {e}"));
    }
    store
}

/// The value of `key` in a recovered store.
fn value(store: &Store, key: &[u8]) -> Option<Vec<u8>> {
    let hash = ringkv_proto::key_hash(key);
    let mut shard = store.lock(store.shard_of(hash));
    shard
        .get(hash, key, ringkv::util::now_ms())
        .map(|e| e.value().to_vec())
}

// ---------------------------------------------------------------------------------------------

/// docs/storage.md: "If the disk refuses a write (full, read-only), the affected connections
/// are closed without acknowledging their writes, and later write commands fail with MISCONF
/// while reads keep working. The writer retries every second and accepts writes again once the
/// disk does."
#[test]
fn full_disk_closes_unacknowledged_connections_then_misconf_while_reads_work() {
    let fs = SimFs::new();
    let n = SimNode::start(&fs, 1, 1);
    let mut c = n.conn();
    assert_eq!(c.call(&[b"SET", b"before", b"v"]), ok());

    fs.limit_space(Some(0));
    // Two pipelined writes on one connection: neither is acknowledged, the connection closes.
    let mut w = n.conn();
    w.send_pipeline(&[vec![&b"SET"[..], b"a", b"1"], vec![&b"SET"[..], b"b", b"2"]])
        .unwrap();
    let got = read_until_closed(&mut w);
    assert!(
        got.is_empty(),
        "a write that could not be made durable was answered: {:?}",
        String::from_utf8_lossy(&got)
    );

    // Later writes are refused with MISCONF; reads (and other connections) keep working.
    let r = c.call(&[b"SET", b"during", b"v"]);
    assert!(is_misconf(&r), "{r:?}");
    for write in [
        &[&b"DEL"[..], b"before"][..],
        &[b"INCR", b"counter"],
        &[b"APPEND", b"before", b"x"],
    ] {
        let r = c.call(write);
        assert!(is_misconf(&r), "{write:?}: {r:?}");
    }
    assert_eq!(c.call(&[b"GET", b"before"]), bulk("v"));
    assert_eq!(c.call(&[b"EXISTS", b"during"]), Reply::Int(0));
    let mut r2 = n.conn();
    assert_eq!(r2.call(&[b"GET", b"before"]), bulk("v"));

    // Space returns: the writer's retry accepts writes again, without a restart.
    fs.limit_space(None);
    wait_until("writes to be accepted again", || {
        c.call(&[b"SET", b"after", b"v"]) == ok()
    });
    assert_eq!(c.call(&[b"GET", b"after"]), bulk("v"));
    drop((c, w, r2));
    n.crash(&fs);
    let st = recovered(&fs, 1);
    assert_eq!(value(&st, b"before").as_deref(), Some(&b"v"[..]));
    assert_eq!(value(&st, b"after").as_deref(), Some(&b"v"[..]));
}

/// docs/storage.md: "A failed fdatasync leaves the file's state unknown, so writes stay refused
/// until a restart, when recovery reads back what is really on disk."
#[test]
fn failed_fdatasync_refuses_writes_until_restart() {
    let fs = SimFs::new();
    let n = SimNode::start(&fs, 1, 1);
    let start = ringkv::actor::Start {
        fsync: FsyncPolicy::Always,
        boot: Some("boot-1"),
        repair: false,
    };
    ringkv::actor::ActorFile::start(&fs, &sim_dir(), start, 9).expect("the actor file");
    let actor_file = sim_dir().join(ringkv::actor::ACTOR_FILE);
    let mut c = n.conn();
    assert_eq!(c.call(&[b"SET", b"before", b"v"]), ok());

    fs.fail_syncs(true);
    let mut w = n.conn();
    w.send(&[b"SET", b"lost", b"v"]).unwrap();
    let got = read_until_closed(&mut w);
    assert!(
        got.is_empty(),
        "answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    // The disk is healthy again, but what the failed fdatasync left is unknown. Records the
    // OS dropped may have been sent to other nodes: the next start takes a fresh dot actor
    // (docs/cluster.md, "Versions after a crash"), because the actor file is gone.
    fs.fail_syncs(false);
    assert!(
        fs.read(&actor_file).is_err(),
        "the actor file outlived a failed fdatasync"
    );
    let r = c.call(&[b"SET", b"during", b"v"]);
    match &r {
        Reply::Error(e) => assert!(
            e.starts_with("MISCONF") && e.contains("fdatasync") && e.contains("restart"),
            "{e}"
        ),
        other => panic!("a write after a failed fdatasync: {other:?}"),
    }
    assert_eq!(c.call(&[b"GET", b"before"]), bulk("v"));
    // Still refused after the writer's retries (it retries every second while a write error
    // stands; a failed fdatasync must not be cleared by them) and after a snapshot attempt.
    assert_eq!(
        c.call(&[b"BGSAVE"]),
        Reply::Simple("Background saving started".into())
    );
    wait_until("the snapshot attempt", || {
        n.node.durability.stats.snapshots.load(Relaxed) == 1
    });
    assert!(!n.node.durability.stats.last_snapshot_ok.load(Relaxed));
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(2500) {
        let r = c.call(&[b"SET", b"during", b"v"]);
        assert!(is_misconf(&r), "after {:?}: {r:?}", t.elapsed());
        // Poll interval while checking that the refusal lasts (bounded by the loop above).
        std::thread::park_timeout(Duration::from_millis(100));
    }
    drop((c, w));
    n.stop();

    // A restart recovers what is on disk and takes writes again.
    let n = SimNode::start(&fs, 1, 1);
    let mut c = n.conn();
    assert_eq!(c.call(&[b"GET", b"before"]), bulk("v"));
    assert_eq!(c.call(&[b"SET", b"after", b"v"]), ok());
    drop(c);
    n.stop();
}

/// A write a client got "+OK" for: key, value.
type Acked = (Vec<u8>, Vec<u8>);

/// Power loss while many clients write through the real server: every write a client got "+OK"
/// for survives (the reply gate of the event loops is what held the replies).
#[test]
fn power_loss_under_concurrent_clients_keeps_every_acknowledged_write() {
    let shards = 4;
    for crash_after in [0usize, 3, 10, 40] {
        let fs = SimFs::new();
        let n = SimNode::start(&fs, 2, shards);
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let (acked, stop, count, addr) =
                    (acked.clone(), stop.clone(), count.clone(), n.addr);
                std::thread::spawn(move || {
                    let mut c = Conn::connect(addr);
                    for i in 0.. {
                        if stop.load(Relaxed) {
                            return;
                        }
                        let k = format!("w{w}:k{}", i % 20).into_bytes();
                        let v = format!("{i}").into_bytes();
                        match c.try_call(&[b"SET", &k, &v]) {
                            Ok(Reply::Simple(s)) if s == "OK" => {
                                acked.lock().unwrap().push((k, v));
                                count.fetch_add(1, Relaxed);
                            }
                            // The disk went away: refused, or the connection closed.
                            Ok(_) | Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        wait_until("writes to be acknowledged", || count.load(Relaxed) >= 200);
        fs.fail_after(crash_after);
        wait_until("the injected failure to stop the writers", || {
            n.node.durability.failing().is_some()
        });
        stop.store(true, Relaxed);
        for h in writers {
            h.join().expect("writer thread");
        }
        n.crash(&fs);
        // Each writer's values grow per key: what recovery finds for a key is at least as new
        // as the last value acknowledged for it (unacknowledged later writes may survive too).
        let st = recovered(&fs, shards);
        let acked = acked.lock().unwrap();
        let mut last = std::collections::HashMap::new();
        for (k, v) in acked.iter() {
            last.insert(
                k.clone(),
                String::from_utf8_lossy(v).parse::<u64>().unwrap(),
            );
        }
        assert!(last.len() >= 20, "{} keys acknowledged", last.len());
        for (k, want) in last {
            let got = value(&st, &k).unwrap_or_else(|| {
                panic!(
                    "crash after {crash_after}: acknowledged key {} lost",
                    String::from_utf8_lossy(&k)
                )
            });
            let got: u64 = String::from_utf8_lossy(&got).parse().unwrap();
            assert!(
                got >= want,
                "crash after {crash_after}: {} recovered as {got}, acknowledged {want}",
                String::from_utf8_lossy(&k)
            );
        }
    }
}
