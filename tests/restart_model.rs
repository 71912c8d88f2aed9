//! Restart equivalence: random writes go through the real parser and executor into a store
//! with a running WAL (on the simulated disk) and into a plain model; after a restart
//! (graceful shutdown, or power loss once every write was acknowledged), possibly with a
//! snapshot taken mid-way, the recovered store equals the model: every key, its value, and
//! its TTL.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;
use ringkv::cmd::{self, Ctx};
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::SimFs;
use ringkv::durability::Durability;
use ringkv::store::Store;
use ringkv_proto::RespWriter;

/// The commands' clock: fixed, and later than the real one, so that nothing that reads the
/// real clock could find a key expired.
const NOW: u64 = 4_000_000_000_000;
/// TTLs are far in the future: nothing expires during a case.
const FAR_MS: u64 = 400 * 24 * 3600 * 1000;
const KEYS: u8 = 20;

type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

#[derive(Debug, Clone)]
enum Op {
    Set(u8, Val, Option<u64>),
    Del(Vec<u8>),
    Incr(u8),
    Append(u8, Val),
    MSet(Vec<(u8, Val)>),
    Expire(u8, u64),
    Persist(u8),
    Flush,
}

/// Values: small integers (so INCR succeeds), words (so it fails), or empty.
#[derive(Debug, Clone)]
enum Val {
    Int(i64),
    Word(String),
}

impl Val {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Val::Int(n) => n.to_string().into_bytes(),
            Val::Word(w) => w.clone().into_bytes(),
        }
    }
}

fn key(k: u8) -> Vec<u8> {
    format!("key:{k}").into_bytes()
}

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        (-50i64..1000).prop_map(Val::Int),
        "[a-z]{0,12}".prop_map(Val::Word),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    let ttl = prop::option::of(1u64..1_000_000);
    prop_oneof![
        6 => (k.clone(), val(), ttl).prop_map(|(k, v, t)| Op::Set(k, v, t)),
        2 => prop::collection::vec(0..KEYS, 1..4).prop_map(Op::Del),
        3 => k.clone().prop_map(Op::Incr),
        2 => (k.clone(), val()).prop_map(|(k, v)| Op::Append(k, v)),
        2 => prop::collection::vec((0..KEYS, val()), 1..5).prop_map(Op::MSet),
        2 => (k.clone(), 1u64..1_000_000).prop_map(|(k, s)| Op::Expire(k, s)),
        // PERSIST, and rarely FLUSHDB.
        1 => (k, 0..12u8).prop_map(|(k, n)| if n == 0 { Op::Flush } else { Op::Persist(k) }),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Restart {
    /// SHUTDOWN: snapshot every shard, write and sync the WAL, stop.
    Graceful,
    /// Every write acknowledged, then the power goes (nothing more reaches the disk).
    PowerLoss,
}

#[derive(Debug, Clone)]
struct Life {
    ops: Vec<Op>,
    /// Take a snapshot (BGSAVE) after this many operations.
    snapshot_at: Option<usize>,
    restart: Restart,
}

fn life() -> impl Strategy<Value = Life> {
    (
        prop::collection::vec(op(), 0..40),
        any::<Option<prop::sample::Index>>(),
        any::<bool>(),
    )
        .prop_map(|(ops, at, graceful)| Life {
            snapshot_at: at.map(|i| i.index(ops.len() + 1)),
            ops,
            restart: if graceful {
                Restart::Graceful
            } else {
                Restart::PowerLoss
            },
        })
}

/// Applies `op` to the model; returns whether the command should fail.
fn model_apply(m: &mut Model, op: &Op) -> bool {
    match op {
        Op::Set(k, v, ttl) => {
            m.insert(key(*k), (v.bytes(), ttl.map(|ms| NOW + FAR_MS + ms)));
        }
        Op::Del(ks) => {
            for k in ks {
                m.remove(&key(*k));
            }
        }
        Op::Incr(k) => {
            let (cur, ttl) = match m.get(&key(*k)) {
                None => (0, None),
                Some((v, ttl)) => match cmd::int(v) {
                    Ok(n) if v.len() <= 20 => (n, *ttl),
                    _ => return true,
                },
            };
            let Some(n) = cur.checked_add(1) else {
                return true;
            };
            m.insert(key(*k), (n.to_string().into_bytes(), ttl));
        }
        Op::Append(k, v) => {
            let e = m.entry(key(*k)).or_insert((Vec::new(), None));
            e.0.extend_from_slice(&v.bytes());
        }
        Op::MSet(pairs) => {
            for (k, v) in pairs {
                m.insert(key(*k), (v.bytes(), None));
            }
        }
        Op::Expire(k, secs) => {
            if let Some(e) = m.get_mut(&key(*k)) {
                e.1 = Some(NOW + FAR_MS / 1000 * 1000 + secs * 1000);
            }
        }
        Op::Persist(k) => {
            if let Some(e) = m.get_mut(&key(*k)) {
                e.1 = None;
            }
        }
        Op::Flush => m.clear(),
    }
    false
}

fn args(op: &Op) -> Vec<Vec<u8>> {
    let mut a: Vec<Vec<u8>> = Vec::new();
    match op {
        Op::Set(k, v, ttl) => {
            a.extend([b"SET".to_vec(), key(*k), v.bytes()]);
            if let Some(ms) = ttl {
                a.extend([b"PX".to_vec(), (FAR_MS + ms).to_string().into_bytes()]);
            }
        }
        Op::Del(ks) => {
            a.push(b"DEL".to_vec());
            a.extend(ks.iter().map(|&k| key(k)));
        }
        Op::Incr(k) => a.extend([b"INCR".to_vec(), key(*k)]),
        Op::Append(k, v) => a.extend([b"APPEND".to_vec(), key(*k), v.bytes()]),
        Op::MSet(pairs) => {
            a.push(b"MSET".to_vec());
            for (k, v) in pairs {
                a.extend([key(*k), v.bytes()]);
            }
        }
        Op::Expire(k, secs) => a.extend([
            b"EXPIRE".to_vec(),
            key(*k),
            (FAR_MS / 1000 + secs).to_string().into_bytes(),
        ]),
        Op::Persist(k) => a.extend([b"PERSIST".to_vec(), key(*k)]),
        Op::Flush => a.push(b"FLUSHDB".to_vec()),
    }
    a
}

fn config(shards: usize) -> Config {
    Config::from_cli(Cli {
        fsync: Some(FsyncPolicy::Always),
        shards: Some(shards),
        threads: Some(1),
        data_dir: Some(PathBuf::from("/sim/data")),
        // Small segments, so that lives rotate the WAL too.
        wal_segment_bytes: Some(4096),
        snapshot_wal_bytes: Some(0),
        snapshot_interval_secs: Some(0),
        ..Default::default()
    })
    .expect("valid config")
}

fn dump(store: &Store) -> Model {
    let mut m = Model::new();
    for i in 0..store.len() {
        let shard = store.lock(i);
        let mut pos = Some(0);
        while let Some(p) = pos {
            pos = shard.scan(p, 1024, NOW, |e| {
                m.insert(e.key().to_vec(), (e.value().to_vec(), e.expires_at_ms()));
            });
        }
    }
    m
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), TestCaseError> {
    let t = Instant::now();
    while !cond() {
        prop_assert!(
            t.elapsed() < Duration::from_secs(15),
            "timed out waiting for {}",
            what
        );
        // Poll interval of a condition wait (bounded by the deadline above).
        std::thread::park_timeout(Duration::from_millis(1));
    }
    Ok(())
}

fn run_case(shards: usize, lives: &[Life]) -> Result<(), TestCaseError> {
    let fs = SimFs::new();
    let cfg = config(shards);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = Ctx {
        node_id: 1,
        now_ms: NOW,
        max_value: 1 << 20,
        max_reply: usize::MAX,
    };
    let mut model = Model::new();
    for (n, life) in lives.iter().enumerate() {
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone()))
            .map_err(|e| TestCaseError::fail(format!("start of life {n}: {e}")))?;
        prop_assert_eq!(dump(&store), model.clone(), "state after restart {}", n);
        let mut snapshots = 0u64;
        let mut snapshot = || -> Result<(), TestCaseError> {
            prop_assert!(d.bgsave());
            snapshots += 1;
            wait_until("the snapshot", || {
                d.stats.snapshots.load(Relaxed) == snapshots
            })?;
            prop_assert!(d.stats.last_snapshot_ok.load(Relaxed));
            Ok(())
        };
        for (i, op) in life.ops.iter().enumerate() {
            if life.snapshot_at == Some(i) {
                snapshot()?;
            }
            let a = args(op);
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            let c = cmd::parse(&refs, false)
                .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
            let mut out = BytesMut::new();
            let marks = cmd::run_keyed(&c, &store, &ctx, &mut RespWriter::new(&mut out));
            let fails = model_apply(&mut model, op);
            prop_assert_eq!(
                out.first() == Some(&b'-'),
                fails,
                "{:?} replied {:?}",
                op,
                String::from_utf8_lossy(&out)
            );
            common::gate::wait(&rt, &d, &marks)
                .map_err(|e| TestCaseError::fail(format!("{op:?}: wait: {e}")))?;
        }
        if life.snapshot_at == Some(life.ops.len()) {
            snapshot()?;
        }
        prop_assert_eq!(dump(&store), model.clone(), "live state of life {}", n);
        match life.restart {
            Restart::Graceful => prop_assert!(d.shutdown(), "a graceful stop syncs everything"),
            Restart::PowerLoss => {
                fs.fail_after(0);
                d.shutdown();
            }
        }
        // Whatever was not made durable is gone (after a graceful stop, nothing is).
        fs.crash();
    }
    let store = Arc::new(Store::new(shards));
    let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone()))
        .map_err(|e| TestCaseError::fail(format!("final start: {e}")))?;
    d.shutdown();
    prop_assert_eq!(dump(&store), model, "state after the last restart");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        max_shrink_iters: 200,
        // A failure prints its minimal input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn restart_preserves_the_model(
        shards in prop::sample::select(vec![1usize, 2, 4]),
        lives in prop::collection::vec(life(), 1..4),
    ) {
        run_case(shards, &lives)?;
    }
}
