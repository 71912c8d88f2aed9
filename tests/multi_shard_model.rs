//! Model check of multi-shard writes over small random histories (proptest), on the simulated
//! disk, through the real executor, writers and recovery.
//!
//! A history of SET, MSET, MSETNX, DEL and RENAME over six keys on three shards runs with
//! `--fsync never`, so every record reaches the OS and none is synced. Then a crash keeps, of
//! each shard's WAL, a random prefix of its commands (and possibly a torn piece of the next
//! record). The model of what recovery must give, per shard: the commands of its kept prefix,
//! plus every command that also wrote a shard where it was kept (docs/storage.md, "Multi-shard
//! writes"), each command's effect taken from what it did to the live store. So every command
//! is kept on all of its shards or on none, and a shard's own writes are a prefix of its log.
//! A second restart gives the same state (the log goes on without a gap).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use ringkv::cmd::{self, Ctx};
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::{Fs, SimFs};
use ringkv::durability::Durability;
use ringkv::store::Store;
use ringkv::wal::record;
use ringkv::wal::shard_dir;
use ringkv_proto::{key_hash, RespWriter};

const SHARDS: usize = 3;
const KEYS_PER_SHARD: usize = 2;
const NOW: u64 = 4_000_000_000_000;

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn config(policy: FsyncPolicy) -> Config {
    Config::from_cli(Cli {
        fsync: Some(policy),
        shards: Some(SHARDS),
        threads: Some(1),
        data_dir: Some(PathBuf::from("/sim/data")),
        snapshot_wal_bytes: Some(0),
        snapshot_interval_secs: Some(0),
        ..Default::default()
    })
    .expect("valid config")
}

fn start(fs: &SimFs, policy: FsyncPolicy) -> Result<(Arc<Store>, Durability), TestCaseError> {
    let store = Arc::new(Store::new(SHARDS));
    let d = Durability::start(&config(policy), store.clone(), Arc::new(fs.clone()))
        .map_err(|e| TestCaseError::fail(format!("start: {e}")))?;
    Ok((store, d))
}

fn shard_of(key: &[u8]) -> usize {
    Store::new(SHARDS).shard_of(key_hash(key))
}

/// Key `i` of the six: two per shard.
fn key(i: usize) -> Vec<u8> {
    let shard = i / KEYS_PER_SHARD;
    (0..1000)
        .map(|n| format!("k{i}-{n}").into_bytes())
        .find(|k| shard_of(k) == shard)
        .expect("some key lands on each shard")
}

fn dump(store: &Store) -> State {
    common::live_keys(store, NOW)
}

#[derive(Debug, Clone)]
enum Op {
    Set(usize),
    Mset(Vec<usize>),
    Msetnx(Vec<usize>),
    Del(Vec<usize>),
    Rename(usize, usize),
}

fn op() -> impl Strategy<Value = Op> {
    let n = SHARDS * KEYS_PER_SHARD;
    let keys = prop::collection::btree_set(0..n, 1..4).prop_map(|s| s.into_iter().collect());
    prop_oneof![
        (0..n).prop_map(Op::Set),
        keys.clone().prop_map(Op::Mset),
        keys.clone().prop_map(Op::Msetnx),
        keys.prop_map(Op::Del),
        (0..n, 0..n).prop_map(|(a, b)| Op::Rename(a, b)),
    ]
}

/// The command's arguments; values are unique to the command.
fn argv(op: &Op, id: usize) -> Vec<Vec<u8>> {
    let val = |j: usize| format!("v{id}.{j}").into_bytes();
    let mut a: Vec<Vec<u8>> = Vec::new();
    let mut pairs = |name: &str, ks: &[usize]| {
        a.push(name.into());
        for (j, &k) in ks.iter().enumerate() {
            a.push(key(k));
            a.push(val(j));
        }
    };
    match op {
        Op::Set(k) => pairs("SET", &[*k]),
        Op::Mset(ks) => pairs("MSET", ks),
        Op::Msetnx(ks) => pairs("MSETNX", ks),
        Op::Del(ks) => {
            a.push(b"DEL".to_vec());
            a.extend(ks.iter().map(|&k| key(k)));
        }
        Op::Rename(s, d) => a.extend([b"RENAME".to_vec(), key(*s), key(*d)]),
    }
    a
}

/// What one command did: the shards it logged to (and its last seq there), and its effect on
/// each key it changed (None: removed).
struct Done {
    marks: BTreeMap<usize, u64>,
    effect: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

fn diff(before: &State, after: &State) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| (k.clone(), after.get(k).cloned()))
        .collect()
}

/// Bytes of shard `shard`'s WAL to keep so that its records up to `upto_seq` survive, plus
/// `torn` bytes of the next one (counted as [`SimFs::crash_torn`] counts: bytes that differ
/// from the synced state, here the non-zero bytes after the segment header).
fn keep_bytes(fs: &SimFs, shard: usize, upto_seq: u64, torn: usize) -> usize {
    let dir = shard_dir(Path::new("/sim/data"), shard);
    let mut keep = 0;
    for n in fs.list(&dir).unwrap_or_default() {
        let Ok(data) = fs.read(&dir.join(&n)) else {
            continue;
        };
        let mut end = record::SEGMENT_HEADER;
        let mut next_len = 0;
        record::scan(&data, shard as u32, |r| {
            let stop = r.offset + record::RECORD_HEADER + r.payload.len();
            if r.seq <= upto_seq {
                end = stop;
            } else if next_len == 0 {
                next_len = data[r.offset..stop].iter().filter(|&&b| b != 0).count();
            }
        });
        let nonzero = |b: &[u8]| b.iter().filter(|&&x| x != 0).count();
        keep += nonzero(&data[record::SEGMENT_HEADER.min(end)..end]);
        // A piece of the next record, never all of it.
        keep += torn.min(next_len.saturating_sub(1));
    }
    keep
}

fn run_case(ops: &[Op], cuts: &[(usize, usize)]) -> Result<(), TestCaseError> {
    let fs = SimFs::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (store, d) = start(&fs, FsyncPolicy::Never)?;
    let ctx = Ctx {
        node_id: 1,
        now_ms: NOW,
        max_value: 1 << 20,
        max_reply: usize::MAX,
    };
    let mut done: Vec<Done> = Vec::new();
    for (id, op) in ops.iter().enumerate() {
        let a = argv(op, id);
        let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        let c = cmd::parse(&refs, false).expect("command parses");
        let before = dump(&store);
        let seqs =
            |store: &Store| -> Vec<u64> { (0..SHARDS).map(|i| store.lock(i).wal.seq).collect() };
        let seq_before = seqs(&store);
        let mut out = BytesMut::new();
        // run_keyed's marks cover every shard the command locked, read or written (no dirty
        // reads); the model needs the shards it wrote, where its records are.
        let marks = cmd::run_keyed(&c, &store, &ctx, &mut RespWriter::new(&mut out));
        common::gate::wait(&rt, &d, &marks).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let written = seqs(&store)
            .into_iter()
            .enumerate()
            .filter(|&(i, q)| q > seq_before[i])
            .collect();
        done.push(Done {
            marks: written,
            effect: diff(&before, &dump(&store)),
        });
    }
    fs.fail_after(0);
    d.shutdown();
    // Per shard: how many of the commands that wrote it survive, and how much of the next.
    let mut kept: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); SHARDS];
    let mut keep = Vec::new();
    for (shard, &(frac, torn)) in cuts.iter().enumerate() {
        let log: Vec<usize> = (0..done.len())
            .filter(|&c| done[c].marks.contains_key(&shard))
            .collect();
        let n = frac % (log.len() + 1);
        kept[shard] = log[..n].iter().copied().collect();
        let upto = n
            .checked_sub(1)
            .map_or(0, |last| done[log[last]].marks[&shard]);
        keep.push(keep_bytes(&fs, shard, upto, torn));
    }
    let dirs: Vec<PathBuf> = (0..SHARDS)
        .map(|i| shard_dir(Path::new("/sim/data"), i))
        .collect();
    fs.crash_torn(&|p: &Path| {
        dirs.iter()
            .position(|d| p.starts_with(d))
            .map_or(0, |i| keep[i])
    });
    // The model: a command survives on all its shards if it survived on any.
    let survived: BTreeSet<usize> = kept.iter().flatten().copied().collect();
    let mut want = State::new();
    for c in &survived {
        for (k, v) in &done[*c].effect {
            match v {
                Some(v) => want.insert(k.clone(), v.clone()),
                None => want.remove(k),
            };
        }
    }
    for round in ["first", "second"] {
        let (store, d) = start(&fs, FsyncPolicy::Always)?;
        let got = dump(&store);
        d.shutdown();
        prop_assert_eq!(
            &got,
            &want,
            "{} restart; kept per shard {:?}, ops {:?}",
            round,
            kept,
            ops
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 200,
        // A failure prints its minimal input; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_crash_keeps_every_command_on_all_of_its_shards_or_on_none(
        ops in prop::collection::vec(op(), 1..10),
        cuts in prop::collection::vec((0usize..16, 0usize..40), SHARDS),
    ) {
        run_case(&ops, &cuts)?;
    }
}
