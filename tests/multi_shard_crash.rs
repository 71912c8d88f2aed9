//! Multi-shard writes (RENAME, RENAMENX, MSET, MSETNX, DEL across two shards) survive a crash all
//! or nothing, on the simulated disk (src/disk/sim.rs), through the real command executor,
//! WAL writers, snapshots and recovery: docs/storage.md, "Multi-shard writes".
//!
//! - every combination of how much of each shard's unsynced WAL tail survives (none, torn at
//!   chosen offsets, all: "A synced only", "B synced only", both, neither);
//! - a crash at every disk operation of the command's writes and fsyncs (`--fsync always`),
//!   where anything acknowledged must be there;
//! - a crash at every disk operation of a snapshot taken right after the command (the snapshot
//!   of one shard must never be the only trace of its part).
//!
//! After each crash the node restarts, takes new writes on both shards, crashes again and
//! restarts: the completed transaction and the new writes are both there (the log goes on
//! after what recovery completed, without a gap).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringkv::cmd::{self, Ctx};
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::{Fs, SimFs};
use ringkv::durability::{Durability, Marks};
use ringkv::store::Store;
use ringkv::wal::record::{self, txn};
use ringkv::wal::shard_dir;
use ringkv_proto::{key_hash, RespWriter};

const SHARDS: usize = 2;
const NOW: u64 = 4_000_000_000_000;
const DEADLINE: Duration = Duration::from_secs(15);

type State = BTreeMap<Vec<u8>, Vec<u8>>;

fn dir() -> PathBuf {
    PathBuf::from("/sim/data")
}

fn config(policy: FsyncPolicy) -> Config {
    Config::from_cli(Cli {
        fsync: Some(policy),
        // A batch interval no test reaches: nothing is synced unless asked.
        fsync_interval_ms: Some(3_600_000),
        shards: Some(SHARDS),
        threads: Some(1),
        data_dir: Some(dir()),
        // No automatic snapshots: the tests decide when one happens.
        snapshot_wal_bytes: Some(0),
        snapshot_interval_secs: Some(0),
        ..Default::default()
    })
    .expect("valid config")
}

fn ctx() -> Ctx {
    Ctx {
        node_id: 1,
        now_ms: NOW,
        max_value: 1 << 20,
        max_reply: usize::MAX,
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn start(fs: &SimFs, policy: FsyncPolicy) -> (Arc<Store>, Durability) {
    let store = Arc::new(Store::new(SHARDS));
    let d = Durability::start(&config(policy), store.clone(), Arc::new(fs.clone()))
        .unwrap_or_else(|e| panic!("restart failed: {e}"));
    (store, d)
}

/// Runs one command through the real parser and executor.
fn run(store: &Store, args: &[&[u8]]) -> (Marks, Vec<u8>) {
    let c = cmd::parse(args, false).expect("command parses");
    let mut out = BytesMut::new();
    let marks = cmd::run_keyed(&c, store, &ctx(), &mut RespWriter::new(&mut out));
    (marks, out.to_vec())
}

fn dump(store: &Store) -> State {
    common::live_keys(store, NOW)
}

/// A key named `prefix`-n that lands on `shard`.
fn key_on(shard: usize, prefix: &str) -> Vec<u8> {
    let store = Store::new(SHARDS);
    (0..1000)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|k| store.shard_of(key_hash(k)) == shard)
        .expect("some key lands on each shard")
}

/// One multi-shard command: what runs before it (made durable), the command, its reply.
struct Case {
    name: &'static str,
    setup: Vec<Vec<Vec<u8>>>,
    cmd: Vec<Vec<u8>>,
    reply: &'static [u8],
    /// How many shards it writes (shard 0 first).
    shards: usize,
}

fn args(a: &[&[u8]]) -> Vec<Vec<u8>> {
    a.iter().map(|x| x.to_vec()).collect()
}

fn cases() -> Vec<Case> {
    let (s0, s1) = (key_on(0, "src"), key_on(1, "src"));
    let (d0, d1) = (key_on(0, "dst"), key_on(1, "dst"));
    vec![
        Case {
            name: "MSET of two keys of one shard",
            setup: vec![args(&[b"MSET", &s0, b"old0", &d0, b"old0b"])],
            cmd: args(&[b"MSET", &s0, b"new0", &d0, b"new0b"]),
            reply: b"+OK\r\n",
            shards: 1,
        },
        Case {
            name: "RENAME within one shard",
            setup: vec![args(&[b"SET", &s0, b"moved-value"])],
            cmd: args(&[b"RENAME", &s0, &d0]),
            reply: b"+OK\r\n",
            shards: 1,
        },
        Case {
            name: "RENAME shard 0 -> shard 1 over an existing key",
            setup: vec![
                args(&[b"SET", &s0, b"moved-value"]),
                args(&[b"SET", &d1, b"old"]),
            ],
            cmd: args(&[b"RENAME", &s0, &d1]),
            reply: b"+OK\r\n",
            shards: 2,
        },
        Case {
            name: "RENAME shard 1 -> shard 0",
            setup: vec![args(&[b"SET", &s1, b"moved-value"])],
            cmd: args(&[b"RENAME", &s1, &d0]),
            reply: b"+OK\r\n",
            shards: 2,
        },
        Case {
            name: "RENAMENX shard 0 -> shard 1",
            setup: vec![args(&[b"SET", &s0, b"moved-value"])],
            cmd: args(&[b"RENAMENX", &s0, &d1]),
            reply: b":1\r\n",
            shards: 2,
        },
        Case {
            name: "MSET over existing keys of both shards",
            setup: vec![args(&[b"MSET", &s0, b"old0", &s1, b"old1"])],
            cmd: args(&[b"MSET", &s0, b"new0", &d0, b"new0b", &s1, b"new1"]),
            reply: b"+OK\r\n",
            shards: 2,
        },
        Case {
            name: "DEL of keys on both shards",
            setup: vec![args(&[b"MSET", &s0, b"old0", &s1, b"old1"])],
            cmd: args(&[b"DEL", &s0, &s1]),
            reply: b":2\r\n",
            shards: 2,
        },
        Case {
            name: "MSETNX on both shards",
            setup: vec![],
            cmd: args(&[b"MSETNX", &s0, b"new0", &s1, b"new1"]),
            reply: b":1\r\n",
            shards: 2,
        },
    ]
}

fn exec(store: &Store, a: &[Vec<u8>]) -> (Marks, Vec<u8>) {
    let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
    run(store, &refs)
}

/// A fresh disk holding the case's setup, durable and cleanly shut down; and the state then.
fn prepared(case: &Case) -> (SimFs, State) {
    let fs = SimFs::new();
    let rt = rt();
    let (store, d) = start(&fs, FsyncPolicy::Always);
    for a in &case.setup {
        let (m, _) = exec(&store, a);
        common::gate::wait(&rt, &d, &m).expect("setup write is durable");
    }
    let before = dump(&store);
    d.shutdown();
    (fs, before)
}

/// Runs the case's command and checks its reply; returns its marks and the state after it.
fn command(case: &Case, store: &Store) -> (Marks, State) {
    let (m, reply) = exec(store, &case.cmd);
    assert_eq!(reply, case.reply, "{}", case.name);
    assert_eq!(m.len(), case.shards, "{}: shards written", case.name);
    (m, dump(store))
}

/// Stops the node so that nothing more reaches the disk ("kill -9"); the disk's unsynced
/// state stays as it was, for the caller to crash.
fn kill(d: &Durability, fs: &SimFs) {
    fs.fail_after(0);
    d.shutdown();
}

/// Restarts on what the crash left; checks the state is `want`; then writes to both shards,
/// crashes after they are acknowledged, restarts, and checks both the state and the writes.
fn restart_and_check(fs: &SimFs, want: &State, what: &str) {
    let rt = rt();
    let (store, d) = start(fs, FsyncPolicy::Always);
    assert_eq!(&dump(&store), want, "{what}: recovered state");
    let (k0, k1) = (key_on(0, "later"), key_on(1, "later"));
    let (m0, _) = run(&store, &[b"SET", &k0, b"after-restart"]);
    let (m1, _) = run(&store, &[b"SET", &k1, b"after-restart"]);
    common::gate::wait(&rt, &d, &m0).expect("write after restart");
    common::gate::wait(&rt, &d, &m1).expect("write after restart");
    kill(&d, fs);
    fs.crash();
    let (store, d) = start(fs, FsyncPolicy::Always);
    let mut want = want.clone();
    want.insert(k0, b"after-restart".to_vec());
    want.insert(k1, b"after-restart".to_vec());
    assert_eq!(dump(&store), want, "{what}: second restart");
    d.shutdown();
}

/// The segment files of one shard that hold unsynced bytes, and how many.
fn unsynced(fs: &SimFs, shard: usize) -> usize {
    let dir = shard_dir(&dir(), shard);
    fs.list(&dir)
        .unwrap_or_default()
        .iter()
        .map(|n| fs.unsynced_bytes(&dir.join(n)))
        .sum()
}

/// Torn-write offsets to try out of `n` unsynced bytes: none, all, and cuts inside the
/// record's header, at its end and in its payload (the record scanner's own tests cut a
/// record at every offset; here what matters is lost, torn or whole, per shard).
fn cuts(n: usize) -> Vec<usize> {
    let mut v = vec![0, 1, 2, 20, 21, 22, n / 2, n.saturating_sub(1), n];
    v.retain(|&c| c <= n);
    v.sort_unstable();
    v.dedup();
    v
}

#[test]
fn every_mix_of_lost_torn_and_kept_wal_tails_is_all_or_nothing() {
    for case in cases() {
        let (fs, before) = prepared(&case);
        let rt = rt();
        // `--fsync never`: the command's records reach the OS and stay unsynced, so each
        // shard's tail can survive a crash in whole, in part or not at all.
        let (store, d) = start(&fs, FsyncPolicy::Never);
        let (m, after) = command(&case, &store);
        common::gate::wait(&rt, &d, &m).expect("written to the OS");
        kill(&d, &fs);
        let n = [unsynced(&fs, 0), unsynced(&fs, 1)];
        assert!(
            n[0] > 0 && (n[1] > 0) == (case.shards == 2),
            "{}: the tails written are unsynced",
            case.name
        );
        let mut tried = 0;
        for k0 in cuts(n[0]) {
            for k1 in cuts(n[1]) {
                // Every cut of one tail against the other lost or whole; torn against torn
                // only at the record's ends.
                let edge = |k: usize, n: usize| k == 0 || k == n;
                let end = |k: usize, n: usize| k == 1 || k + 1 == n;
                let wanted = edge(k0, n[0]) || edge(k1, n[1]) || (end(k0, n[0]) && end(k1, n[1]));
                if !wanted {
                    continue;
                }
                let f = fs.fork();
                let s0 = shard_dir(&dir(), 0);
                f.crash_torn(&|p: &Path| if p.starts_with(&s0) { k0 } else { k1 });
                // A shard whose whole record survived carries the whole transaction.
                let want = if k0 == n[0] || (k1 == n[1] && n[1] > 0) {
                    &after
                } else {
                    &before
                };
                let what = format!(
                    "{}: kept {k0} of {} and {k1} of {} bytes",
                    case.name, n[0], n[1]
                );
                restart_and_check(&f, want, &what);
                tried += 1;
            }
        }
        assert!(
            tried >= 8 * case.shards,
            "{}: only {tried} crash states",
            case.name
        );
    }
}

#[test]
fn a_crash_at_every_step_of_the_writes_and_syncs_is_all_or_nothing() {
    for case in cases() {
        // The disk operations the command's round costs, counted on a run without a crash.
        let (fs, _) = prepared(&case);
        let (store, d) = start(&fs, FsyncPolicy::Always);
        let rt = rt();
        let ops0 = fs.ops();
        let (m, _) = command(&case, &store);
        common::gate::wait(&rt, &d, &m).expect("acknowledged");
        let total = fs.ops() - ops0;
        d.shutdown();
        assert!(
            total >= 2 * case.shards,
            "{}: a write and a sync per shard, got {total}",
            case.name
        );
        let mut acked_any = false;
        for at in 0..=total {
            let (fs, before) = prepared(&case);
            let (store, d) = start(&fs, FsyncPolicy::Always);
            fs.fail_after(at);
            let (m, after) = command(&case, &store);
            let acked = common::gate::wait(&rt, &d, &m).is_ok();
            acked_any |= acked;
            kill(&d, &fs);
            fs.crash();
            let (store, d) = start(&fs, FsyncPolicy::Always);
            let got = dump(&store);
            d.shutdown();
            let what = format!("{}: crash at operation {at} of {total}", case.name);
            assert!(
                got == before || got == after,
                "{what}: half a transaction survived\nbefore {before:?}\nafter  {after:?}\ngot    {got:?}"
            );
            if acked {
                assert_eq!(got, after, "{what}: acknowledged, then lost");
            }
            restart_and_check(&fs, &got, &what);
        }
        assert!(
            acked_any,
            "{}: the last crash point comes after the reply",
            case.name
        );
    }
}

#[test]
fn a_crash_at_every_step_of_a_snapshot_after_the_command_is_all_or_nothing() {
    for case in cases() {
        let (fs, _) = prepared(&case);
        let rt = rt();
        let (store, d) = start(&fs, FsyncPolicy::Never);
        let (m, _) = command(&case, &store);
        common::gate::wait(&rt, &d, &m).expect("written to the OS");
        let ops0 = fs.ops();
        assert!(d.bgsave());
        wait_snapshots(&d, 1);
        let total = fs.ops() - ops0;
        d.shutdown();
        for at in 0..=total {
            let (fs, before) = prepared(&case);
            let (store, d) = start(&fs, FsyncPolicy::Never);
            let (m, after) = command(&case, &store);
            common::gate::wait(&rt, &d, &m).expect("written to the OS");
            fs.fail_after(at);
            assert!(d.bgsave());
            wait_snapshots(&d, 1);
            kill(&d, &fs);
            fs.crash();
            let (store, d) = start(&fs, FsyncPolicy::Always);
            let got = dump(&store);
            d.shutdown();
            let what = format!(
                "{}: crash at operation {at} of {total} of a BGSAVE",
                case.name
            );
            assert!(
                got == before || got == after,
                "{what}: half a transaction survived\nbefore {before:?}\nafter  {after:?}\ngot    {got:?}"
            );
            restart_and_check(&fs, &got, &what);
        }
    }
}

fn wait_snapshots(d: &Durability, n: u64) {
    let t = Instant::now();
    while d.stats.snapshots.load(Relaxed) < n {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for the snapshot");
        // Poll interval of a condition wait (bounded by the deadline above).
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

#[test]
fn flushdb_is_not_covered_a_crash_can_clear_one_shard_only() {
    // README and docs/storage.md name FLUSHDB as the exception; if it becomes atomic on disk,
    // this fails and the documents must change with it.
    let case = Case {
        name: "FLUSHDB",
        setup: vec![args(&[
            b"MSET",
            &key_on(0, "k"),
            b"v0",
            &key_on(1, "k"),
            b"v1",
        ])],
        cmd: vec![],
        reply: b"",
        shards: 2,
    };
    let (fs, before) = prepared(&case);
    let rt = rt();
    let (store, d) = start(&fs, FsyncPolicy::Never);
    let c = cmd::parse(&[b"FLUSHDB"], false).expect("parses");
    let mut out = BytesMut::new();
    let m = cmd::run_keyed(&c, &store, &ctx(), &mut RespWriter::new(&mut out));
    assert_eq!(&out[..], b"+OK\r\n");
    common::gate::wait(&rt, &d, &m).expect("written to the OS");
    kill(&d, &fs);
    // Shard 0's CLEAR survives, shard 1's is lost.
    let s0 = shard_dir(&dir(), 0);
    fs.crash_torn(&|p: &Path| if p.starts_with(&s0) { usize::MAX } else { 0 });
    let (store, d) = start(&fs, FsyncPolicy::Always);
    let got = dump(&store);
    d.shutdown();
    let shard1_only: State = before
        .into_iter()
        .filter(|(k, _)| Store::new(SHARDS).shard_of(key_hash(k)) == 1)
        .collect();
    assert_eq!(got, shard1_only);
}

const STORAGE_MD: &str = include_str!("../docs/storage.md");

/// The rows of the table under `## title` in docs/storage.md: (offset, field text).
fn doc_table(title: &str) -> Vec<(usize, String)> {
    let heading = format!("\n## {title}\n");
    let at = STORAGE_MD
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/storage.md has no section {title:?}"));
    STORAGE_MD[at + heading.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            (cells[0].parse().expect("offset"), cells[2].to_string())
        })
        .collect()
}

fn offset_of(table: &[(usize, String)], field: &str) -> usize {
    table
        .iter()
        .find(|(_, f)| f.starts_with(field))
        .unwrap_or_else(|| panic!("no field {field:?}"))
        .0
}

/// Every record of a shard's WAL: (type, seq, payload).
fn wal_records(fs: &SimFs, shard: usize) -> Vec<(u8, u64, Vec<u8>)> {
    let dir = shard_dir(&dir(), shard);
    let mut out = Vec::new();
    for n in fs.list(&dir).unwrap_or_default() {
        if n.starts_with("wal-") {
            let data = fs.read(&dir.join(&n)).expect("segment reads");
            record::scan(&data, shard as u32, |r| {
                out.push((r.kind, r.seq, r.payload.to_vec()))
            });
        }
    }
    out
}

#[test]
fn storage_md_txn_tables_match_the_code() {
    let u32_at = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    assert_eq!(record::TXN, 4);
    assert!(STORAGE_MD.contains("| 8 | 1 | type: 1 PUT_V1, 2 DEL, 3 CLEAR, 4 TXN, 16 VERSIONS |"));
    assert_eq!(txn::MAX_PARTS, 65_536);
    assert!(STORAGE_MD.contains("`parts u32` (1 … 65,536)"));
    assert_eq!(txn::MAX_PART_RECORDS, 1_048_576);
    assert!(STORAGE_MD.contains("u32, 1 … 1,048,576"));

    let fs = SimFs::new();
    let rt = rt();
    let (store, d) = start(&fs, FsyncPolicy::Always);
    let (a0, b0, a1) = (key_on(0, "a"), key_on(0, "b"), key_on(1, "a"));
    // One record: as it always was, no TXN. Two records in one shard: a TXN of one part.
    let (m, _) = run(&store, &[b"SET", &a0, b"0"]);
    common::gate::wait(&rt, &d, &m).expect("durable");
    let (m, _) = run(&store, &[b"MSET", &a0, b"1", &b0, b"2"]);
    common::gate::wait(&rt, &d, &m).expect("durable");
    let single = wal_records(&fs, 0);
    let kinds: Vec<u8> = single.iter().map(|r| r.0).collect();
    assert_eq!(kinds, [record::VERSIONS, record::TXN]);
    let one = &single[1].2;
    assert_eq!(u32_at(one, 0), 1, "one part");
    // "a TXN of one shard is 9 bytes more than its two records alone"
    let len1 = u32_at(one, 4 + 16 + 1) as usize;
    let len2 = u32_at(one, 4 + 16 + 5 + len1 + 1) as usize;
    assert_eq!(
        record::RECORD_HEADER + one.len(),
        2 * record::RECORD_HEADER + len1 + len2 + 9
    );
    assert!(STORAGE_MD.contains("so a TXN of one shard is 9 bytes more than its two records alone"));
    // Two shards: one TXN record in each, the same payload, each under its own seq.
    let (m, _) = run(&store, &[b"MSET", &a0, b"3", &b0, b"4", &a1, b"5"]);
    common::gate::wait(&rt, &d, &m).expect("durable");
    // Stopped without the shutdown's snapshots, which would let the segments go.
    kill(&d, &fs);
    let (r0, r1) = (wal_records(&fs, 0), wal_records(&fs, 1));
    let (t0, t1) = (r0.last().unwrap(), r1.last().unwrap());
    assert_eq!((t0.0, t0.1, t1.0, t1.1), (record::TXN, 3, record::TXN, 1));
    assert_eq!(t0.2, t1.2, "every participant holds the same payload");
    assert_eq!(
        m.to_vec(),
        vec![(0, 3), (1, 1)],
        "the reply waits for both copies"
    );
    let p = &t0.2;
    assert_eq!(u32_at(p, 0), 2, "parts");
    let part = doc_table("TXN part");
    let first = 4;
    assert_eq!(u32_at(p, first + offset_of(&part, "shard")), 0);
    assert_eq!(u64_at(p, first + offset_of(&part, "seq")), 3);
    assert_eq!(u32_at(p, first + offset_of(&part, "records")), 2);
    let rec = first + offset_of(&part, "the records");
    assert_eq!(p[rec], record::VERSIONS);
    // Walk the first part's records (type u8 | len u32 | payload) to the second part.
    let mut at = rec;
    for _ in 0..2 {
        at += 5 + u32_at(p, at + 1) as usize;
    }
    assert_eq!(u32_at(p, at + offset_of(&part, "shard")), 1);
    assert_eq!(u64_at(p, at + offset_of(&part, "seq")), 1);
    assert_eq!(u32_at(p, at + offset_of(&part, "records")), 1);
    let decoded = txn::decode(p).expect("decodes");
    assert_eq!(decoded.len(), 2);
}
