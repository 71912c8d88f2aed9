//! Partition placement on a real server (docs/storage.md, "Placement"): a new data directory
//! records its partition count, is refused with another one, and has every key in the shard
//! of its partition; a directory from before partitions keeps its placement, and a cluster
//! node (--cluster-secret) refuses it before touching it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::resp::{Conn, Reply};
use common::*;
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::RealFs;
use ringkv::durability::Durability;
use ringkv::store::{Entry, Placement, Store, VersionPolicy, VersionRef};
use ringkv_proto::key_hash;

const SECRET: &str = "placement-test-secret-0123456789";
const SHARDS: usize = 4;
const KEYS: usize = 300;
const FLAGS: &[&str] = &["--threads", "2", "--shards", "4"];

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("key:{i}")).collect()
}

fn value(key: &str) -> Vec<u8> {
    format!("value of {key}").into_bytes()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn meta(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("meta")).expect("read meta")
}

fn flags(extra: &[&'static str]) -> Vec<&'static str> {
    [FLAGS, extra].concat()
}

/// The data directory `dir` recovered in this process into a store with `placement` (the
/// server must have stopped). Shard i's files load into shard i, whatever the placement.
fn recover(dir: &Path, placement: Placement) -> (Arc<Store>, Durability) {
    let cfg = Config::from_cli(Cli {
        data_dir: Some(dir.to_path_buf()),
        threads: Some(1),
        shards: Some(SHARDS),
        fsync: Some(FsyncPolicy::Always),
        snapshot_wal_bytes: Some(0),
        snapshot_interval_secs: Some(0),
        ..Default::default()
    })
    .expect("valid config");
    let store = Arc::new(Store::with_policy(
        SHARDS,
        placement,
        VersionPolicy::default(),
    ));
    let d = Durability::start(&cfg, store.clone(), Arc::new(RealFs)).expect("recover");
    (store, d)
}

/// How many of `keys` are in the shard `placement` says.
fn found_in_place(store: &Store, placement: Placement, keys: &[String]) -> usize {
    keys.iter()
        .filter(|k| {
            let h = key_hash(k.as_bytes());
            let mut shard = store.lock(placement.shard(h, SHARDS));
            shard.get(h, k.as_bytes(), now_ms()).is_some()
        })
        .count()
}

/// A data directory as the build before partitions made it: format 2, keys in shard
/// `(hash >> 40) % shards`, and no `partitions` line in `meta`.
fn make_legacy_dir(dir: &Path) {
    let (store, d) = recover(dir, Placement::Legacy);
    let ts = now_ms();
    for k in keys() {
        let h = key_hash(k.as_bytes());
        let v = value(&k);
        let entry = Entry::with_one(k.as_bytes(), 5, VersionRef::value(&v, ts, None));
        store.lock(store.shard_of(h)).put(h, entry);
    }
    d.shutdown();
    let text = format!(
        "# ringkv data directory; do not edit\nformat = 2\nnode_id = 5\nshards = {SHARDS}\n"
    );
    std::fs::write(dir.join("meta"), text).expect("write meta");
}

fn set_all(server: &Server) {
    let mut c = Conn::connect(server.addr);
    for k in keys() {
        let v = value(&k);
        assert_eq!(
            c.call(&[b"SET", k.as_bytes(), &v]),
            Reply::Simple("OK".into())
        );
    }
}

/// Every key reads back through the server.
fn check_all(server: &Server, what: &str) {
    let mut c = Conn::connect(server.addr);
    for k in keys() {
        assert_eq!(
            c.call(&[b"GET", k.as_bytes()]),
            Reply::Bulk(Some(value(&k))),
            "{what}: GET {k}"
        );
    }
    let Reply::Int(n) = c.call(&[b"DBSIZE"]) else {
        panic!("{what}: DBSIZE is not an integer")
    };
    assert_eq!(n as usize, KEYS, "{what}: DBSIZE");
}

fn info_server(server: &Server) -> String {
    let mut c = Conn::connect(server.addr);
    match c.call(&[b"INFO", b"server"]) {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("INFO server: {other:?}"),
    }
}

/// The server refuses to start with `extra`; returns its log.
fn refused(dir: &Path, extra: &[&str]) -> String {
    match Server::try_start_in(dir, extra) {
        Ok(_) => panic!("started with {extra:?}"),
        Err(log) => log,
    }
}

/// The store's own constants (it can't import the configuration) agree with the flags'.
#[test]
fn the_store_and_the_flags_agree_on_partition_limits() {
    assert_eq!(
        ringkv::store::TEST_PARTITIONS,
        ringkv::config::DEFAULT_PARTITIONS
    );
    assert_eq!(
        ringkv::store::placement::MAX_PARTITIONS,
        ringkv::config::MAX_PARTITIONS
    );
}

#[test]
fn a_new_directory_records_its_partitions_and_places_keys_by_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let with_256 = flags(&["--partitions", "256"]);
    let server = Server::start_in(&dir, &with_256);
    assert!(
        meta(&dir).contains("\npartitions = 256\n"),
        "{}",
        meta(&dir)
    );
    assert!(info_server(&server).contains("shard_placement:partitions\r\n"));
    set_all(&server);
    assert!(server.terminate().success());

    // Each key is in the shard of its partition, in the files the server wrote.
    let placement = Placement::partitioned(256).unwrap();
    let (store, d) = recover(&dir, placement);
    assert_eq!(found_in_place(&store, placement, &keys()), KEYS);
    // The old rule would look in the wrong shard for many of them (so the check above can fail).
    let legacy = found_in_place(&store, Placement::Legacy, &keys());
    assert!(
        legacy < KEYS * 3 / 4,
        "{legacy} of {KEYS} also in their legacy shard"
    );
    d.shutdown();

    // Another partition count (the default included) would move keys: refused, naming both.
    let log = refused(&dir, &flags(&["--partitions", "512"]));
    assert!(
        log.contains("the data was written with --partitions 256, but this start asks for 512"),
        "{log}"
    );
    let log = refused(&dir, FLAGS);
    assert!(log.contains("asks for 1024"), "{log}");

    // The same count, now in cluster mode: every key is there. One node can't meet the
    // default quorums (N=3 W=2 R=2) and DBSIZE is not served in cluster mode yet, so this
    // node is a cluster of one (N=1) and each key is read from its local copy.
    let server = Server::start_in(
        &dir,
        &flags(&[
            "--partitions",
            "256",
            "--cluster-secret",
            SECRET,
            "--n",
            "1",
            "--w",
            "1",
            "--r",
            "1",
        ]),
    );
    let mut c = Conn::connect(server.addr);
    for k in keys() {
        assert_eq!(
            c.call(&[b"CLUSTER", b"GETLOCAL", k.as_bytes()]),
            Reply::Bulk(Some(value(&k))),
            "cluster mode, --partitions 256: CLUSTER GETLOCAL {k}"
        );
        assert_eq!(
            c.call(&[b"GET", k.as_bytes()]),
            Reply::Bulk(Some(value(&k))),
            "cluster mode, --partitions 256: GET {k}"
        );
    }
    assert!(meta(&dir).contains("\npartitions = 256\n"));
}

#[test]
fn a_legacy_directory_keeps_its_placement_and_is_refused_in_cluster_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    make_legacy_dir(&dir);
    let before = meta(&dir);
    // The test can fail: under the partition rule most keys would be looked up elsewhere.
    let (store, d) = recover(&dir, Placement::Legacy);
    let by_partition = found_in_place(&store, Placement::partitioned(1024).unwrap(), &keys());
    assert!(by_partition < KEYS * 3 / 4, "{by_partition} of {KEYS}");
    d.shutdown();

    // Cluster mode, by flag or by environment, is refused before the directory is touched.
    let log = refused(&dir, &flags(&["--cluster-secret", SECRET]));
    for says in [
        "predates partition placement",
        "fresh data directory",
        "--data-dir",
    ] {
        assert!(
            log.contains(says),
            "the refusal does not say {says:?}:\n{log}"
        );
    }
    let out = run_with_secret_env(&dir);
    assert!(out.contains("predates partition placement"), "{out}");
    assert_eq!(meta(&dir), before, "the refused starts changed meta");

    // Standalone it serves every key where it was, and stays legacy (any --partitions).
    let server = Server::start_in(&dir, &flags(&["--partitions", "64"]));
    check_all(&server, "legacy directory");
    assert!(info_server(&server).contains("shard_placement:legacy\r\n"));
    let mut c = Conn::connect(server.addr);
    assert_eq!(
        c.call(&[b"SET", b"key:0", &value("key:0")]),
        Reply::Simple("OK".into())
    );
    assert!(server.terminate().success());
    assert_eq!(
        meta(&dir),
        before,
        "a legacy directory gained a partitions line"
    );
    let server = Server::start_in(&dir, FLAGS);
    check_all(&server, "legacy directory after a restart");
}

#[test]
fn a_format1_directory_is_refused_in_cluster_mode_and_left_unconverted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/data");
    copy_dir(&fixture, &dir);
    let log = refused(
        &dir,
        &[
            "--threads",
            "2",
            "--shards",
            "2",
            "--cluster-secret",
            SECRET,
        ],
    );
    assert!(log.contains("predates partition placement"), "{log}");
    assert!(
        meta(&dir).contains("format = 1"),
        "converted anyway:\n{}",
        meta(&dir)
    );
}

/// Starts the server on `dir` in cluster mode by RINGKV_CLUSTER_SECRET, expecting it to exit
/// within the deadline; returns its stderr.
fn run_with_secret_env(dir: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
    cmd.args(["--port", "0", "--bind", "127.0.0.1", "--data-dir"])
        .arg(dir)
        .args(FLAGS)
        .env("RINGKV_CLUSTER_SECRET", SECRET);
    let ran = run_bounded(&mut cmd, Duration::from_secs(30));
    assert!(
        !ran.status.success(),
        "started in cluster mode: {}",
        ran.stderr
    );
    ran.stderr
}

/// Lookup cost in one shard's table for keys of one shard under partition placement (the top
/// hash bits fixed) against keys of no particular shard: equal when the table's tag bits
/// don't correlate with the placement (store::shard::table_hash). A measurement, not a check:
/// `cargo test --release --test placement -- --ignored --nocapture lookups`.
#[test]
#[ignore]
fn lookups_do_not_depend_on_the_shard() {
    use ringkv::store::Shard;
    use std::time::Instant;
    const N: usize = 400_000;
    let cases: [(&str, Option<(u32, usize)>); 4] = [
        ("any key", None),
        ("shard 0 of P=1024 S=16", Some((1024, 16))),
        ("shard 0 of P=128 S=16", Some((128, 16))),
        ("shard 0 of P=128 S=3", Some((128, 3))),
    ];
    for (name, of) in cases {
        let in_shard =
            |h: u64| of.is_none_or(|(p, s)| Placement::partitioned(p).unwrap().shard(h, s) == 0);
        let mut keys = (0u64..)
            .map(|i| format!("bench:{i}").into_bytes())
            .filter(|k| in_shard(key_hash(k)));
        let present: Vec<(u64, Vec<u8>)> =
            keys.by_ref().take(N).map(|k| (key_hash(&k), k)).collect();
        let absent: Vec<(u64, Vec<u8>)> = keys.take(N).map(|k| (key_hash(&k), k)).collect();
        let mut shard = Shard::with_policy(VersionPolicy::default());
        for (h, k) in &present {
            shard.put(*h, Entry::with_one(k, 1, VersionRef::value(b"v", 1, None)));
        }
        let mut time = |set: &[(u64, Vec<u8>)], want: bool| {
            let mut best = f64::MAX;
            for _ in 0..5 {
                let t = Instant::now();
                let mut hits = 0usize;
                for (h, k) in set {
                    hits += shard.get(*h, k, 2).is_some() as usize;
                }
                best = best.min(t.elapsed().as_nanos() as f64 / set.len() as f64);
                assert_eq!(hits, if want { set.len() } else { 0 });
            }
            best
        };
        let hit = time(&present, true);
        let miss = time(&absent, false);
        println!("{name:24} hit {hit:6.1} ns  miss {miss:6.1} ns  ({N} keys)");
    }
}
