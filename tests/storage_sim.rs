//! Storage under simulated faults: torn WAL tails at every byte, bit flips, power loss at every
//! step of a snapshot, unsynced data lost by a crash, and a full disk. Everything runs on
//! `SimFs` (an in-memory disk with power-loss semantics) except where a real directory is
//! the point; no test sleeps for a fixed time.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use ringkv::cmd::{self, Ctx};
use ringkv::config::{Cli, Config, FsyncPolicy};
use ringkv::disk::{Fs, RealFs, SimFs};
use ringkv::durability::{Durability, Marks};
use ringkv::snapshot;
use ringkv::store::{Entry, Shard, Store, VectorClock, VersionRef};
use ringkv::wal::replay::{self, Recovered, RecoveryError};
use ringkv::wal::{record, segment_name, shard_dir};
use ringkv_proto::{key_hash, RespWriter};

const NOW: u64 = 4_000_000_000_000;
const DEADLINE: Duration = Duration::from_secs(15);

type State = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn sim_dir() -> PathBuf {
    PathBuf::from("/sim/data")
}

fn config(dir: &Path, shards: usize, policy: FsyncPolicy, segment: Option<u64>) -> Config {
    Config::from_cli(Cli {
        fsync: Some(policy),
        shards: Some(shards),
        threads: Some(1),
        data_dir: Some(dir.to_path_buf()),
        wal_segment_bytes: segment,
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

/// Runs one command through the real parser and executor; returns its WAL marks and reply.
fn run(store: &Store, args: &[&[u8]]) -> (Marks, Vec<u8>) {
    let c = cmd::parse(args, false).expect("command parses");
    let mut out = BytesMut::new();
    let marks = cmd::run_keyed(&c, store, &ctx(), &mut RespWriter::new(&mut out));
    (marks, out.to_vec())
}

/// Waits until the writes are durable, through the server's reply gate.
fn wait(rt: &tokio::runtime::Runtime, d: &Durability, marks: &Marks) -> Result<(), Arc<str>> {
    common::gate::wait(rt, d, marks)
}

fn dump_shard(shard: &Shard) -> State {
    let mut m = State::new();
    let mut pos = Some(0);
    while let Some(p) = pos {
        pos = shard.scan(p, 1024, NOW, |e| {
            m.insert(e.key().to_vec(), (e.value().to_vec(), e.expires_at_ms()));
        });
    }
    m
}

fn dump(store: &Store) -> State {
    let mut m = State::new();
    for i in 0..store.len() {
        m.extend(dump_shard(&store.lock(i)));
    }
    m
}

/// Recovers every shard from `fs` into a fresh store, as a restart would.
fn recover_store(
    fs: &dyn Fs,
    dir: &Path,
    shards: usize,
    repair: bool,
) -> Result<(Store, Vec<Recovered>), RecoveryError> {
    let store = Store::new(shards);
    let mut out = Vec::new();
    for i in 0..shards {
        let mut shard = store.lock(i);
        out.push(replay::recover(fs, dir, i, &mut shard, repair, &|_| {})?);
    }
    Ok((store, out))
}

/// "kill -9" then power loss: from now on nothing reaches the disk (every operation fails),
/// the node's threads stop, then only what was made durable survives.
fn kill_and_crash(d: &Durability, fs: &SimFs) {
    fs.fail_after(0);
    d.shutdown();
    fs.crash();
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < DEADLINE, "timed out waiting for {what}");
        // Poll interval of a condition wait (bounded by the deadline above).
        std::thread::park_timeout(Duration::from_millis(2));
    }
}

fn entry(key: &[u8], value: &[u8]) -> Entry {
    Entry::with_one(key, 1, VersionRef::value(value, NOW, None))
}

/// The same key and value as the previous release encoded them (format 1).
fn entry_v1(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut clock = VectorClock::new();
    clock.increment(1);
    ringkv::store::legacy::encode_v1(key, value, &clock.encoded(), NOW, None, false)
}

fn write_file(fs: &dyn Fs, path: &Path, data: &[u8]) {
    fs.create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = fs.create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_data().unwrap();
    drop(f);
    fs.sync_dir(path.parent().unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A hand-built segment and its model.

/// A logical WAL operation, with its expected effect.
#[derive(Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Del(Vec<u8>),
    Clear,
}

fn apply_model(m: &mut State, op: &Op) {
    match op {
        Op::Put(k, v) => {
            m.insert(k.clone(), (v.clone(), None));
        }
        Op::Del(k) => {
            m.remove(k);
        }
        Op::Clear => m.clear(),
    }
}

/// Segment bytes for `ops` (sequence numbers from 1), and the offset where each record ends.
fn build_segment(shard: u32, ops: &[Op]) -> (Vec<u8>, Vec<usize>) {
    let mut b = record::segment_header(shard, 1).to_vec();
    let mut ends = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let seq = i as u64 + 1;
        match op {
            Op::Put(k, v) => record::append(&mut b, record::VERSIONS, seq, entry(k, v).as_bytes()),
            Op::Del(k) => record::append(&mut b, record::DEL, seq, k),
            Op::Clear => record::append(&mut b, record::CLEAR, seq, &[]),
        }
        ends.push(b.len());
    }
    (b, ends)
}

fn small_ops() -> Vec<Op> {
    vec![
        Op::Put(b"k1".to_vec(), b"one".to_vec()),
        Op::Put(b"k2".to_vec(), b"two".to_vec()),
        Op::Del(b"k1".to_vec()),
        Op::Put(b"k3".to_vec(), b"three".to_vec()),
        Op::Put(b"k2".to_vec(), b"two again".to_vec()),
    ]
}

fn model_of(ops: &[Op]) -> State {
    let mut m = State::new();
    for op in ops {
        apply_model(&mut m, op);
    }
    m
}

fn file_len(fs: &dyn Fs, path: &Path) -> Option<usize> {
    fs.read(path).ok().map(|c| c.len())
}

/// Recovers a segment cut at `cut` and checks the outcome; returns nothing, panics on failure.
fn check_cut(fs: &dyn Fs, dir: &Path, full: &[u8], ends: &[usize], ops: &[Op], cut: usize) {
    let path = shard_dir(dir, 0).join(segment_name(1));
    write_file(fs, &path, &full[..cut]);
    let mut shard = Shard::default();
    let r = replay::recover(fs, dir, 0, &mut shard, false, &|_| {})
        .unwrap_or_else(|e| panic!("cut at {cut}: recovery failed: {e}"));
    let complete = ends.iter().take_while(|&&e| e <= cut).count();
    assert_eq!(
        r.records as usize, complete,
        "cut at {cut}: records replayed"
    );
    assert_eq!(
        r.last_seq, complete as u64,
        "cut at {cut}: last sequence number"
    );
    assert_eq!(r.dropped, 0, "cut at {cut}");
    assert_eq!(
        dump_shard(&shard),
        model_of(&ops[..complete]),
        "cut at {cut}: recovered content"
    );
    let good = if complete == 0 {
        record::SEGMENT_HEADER
    } else {
        ends[complete - 1]
    };
    match file_len(fs, &path) {
        Some(len) => assert_eq!(len, good, "cut at {cut}: file length after recovery"),
        // A segment without one whole record may be removed instead of cut back to its header.
        None => assert_eq!(
            complete, 0,
            "cut at {cut}: segment with records was removed"
        ),
    }
    // What recovery left is itself a clean WAL: recovering again changes nothing.
    let mut again = Shard::default();
    let r2 = replay::recover(fs, dir, 0, &mut again, false, &|_| {})
        .unwrap_or_else(|e| panic!("cut at {cut}: second recovery failed: {e}"));
    assert_eq!(r2.last_seq, r.last_seq, "cut at {cut}");
    assert_eq!(dump_shard(&again), dump_shard(&shard), "cut at {cut}");
}

// ---------------------------------------------------------------------------------------------
// 1. Torn tails.

#[test]
fn torn_tail_at_every_offset_of_a_small_segment() {
    let ops = small_ops();
    let (full, ends) = build_segment(0, &ops);
    for cut in 0..=full.len() {
        let fs = SimFs::new();
        check_cut(&fs, &sim_dir(), &full, &ends, &ops, cut);
    }
}

#[test]
fn torn_tail_at_every_offset_inside_the_last_record() {
    // A longer segment whose last record is large, including a CLEAR in the middle.
    let mut ops: Vec<Op> = (0..20)
        .map(|i| Op::Put(format!("key{i}").into_bytes(), vec![b'a' + i as u8; 10 + i]))
        .collect();
    ops.insert(7, Op::Clear);
    ops.push(Op::Del(b"key3".to_vec()));
    ops.push(Op::Put(b"big".to_vec(), vec![b'x'; 300]));
    let (full, ends) = build_segment(0, &ops);
    let start = ends[ends.len() - 2];
    for cut in start..=full.len() {
        let fs = SimFs::new();
        check_cut(&fs, &sim_dir(), &full, &ends, &ops, cut);
    }
    // The same on a real directory (memory-mapped reads, real truncation).
    let tmp = tempfile::tempdir().unwrap();
    for cut in start..=full.len() {
        check_cut(&RealFs, tmp.path(), &full, &ends, &ops, cut);
    }
}

#[test]
fn torn_tail_written_by_the_real_writer() {
    // A segment produced by the WAL writer itself, then cut inside its last record.
    let fs = SimFs::new();
    let dir = sim_dir();
    let store = Arc::new(Store::new(1));
    let d = Durability::start(
        &config(&dir, 1, FsyncPolicy::Always, None),
        store.clone(),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let rt = rt();
    for i in 0..10 {
        let (m, _) = run(&store, &[b"SET", format!("k{i}").as_bytes(), b"value"]);
        wait(&rt, &d, &m).unwrap();
    }
    let (m, _) = run(&store, &[b"SET", b"last", &[b'z'; 100]]);
    wait(&rt, &d, &m).unwrap();
    let expected_all = dump(&store);
    kill_and_crash(&d, &fs);
    let path = shard_dir(&dir, 0).join(segment_name(1));
    let file = fs.read(&path).unwrap().to_vec();
    // The writer zero-fills segments ahead of its write position: the records end at
    // `good_len`, zeros follow.
    let s = record::scan(&file, 0, |_| {});
    assert!(s.damage.is_none() && s.records == 11, "{s:?}");
    assert!(file[s.good_len..].iter().all(|&b| b == 0));
    let full = &file[..s.good_len];
    let mut ends = Vec::new();
    let mut pos = record::SEGMENT_HEADER;
    while pos < full.len() {
        let len = u32::from_le_bytes(full[pos + 4..pos + 8].try_into().unwrap()) as usize;
        pos += record::RECORD_HEADER + len;
        ends.push(pos);
    }
    assert_eq!(pos, full.len());
    let start = ends[ends.len() - 2];
    for cut in start..=full.len() {
        // The file cut at `cut`, or only the first `cut` bytes of the write reached the
        // preallocated zeros.
        for padded in [false, true] {
            let fs = SimFs::new();
            let mut bytes = full[..cut].to_vec();
            if padded {
                bytes.resize(file.len(), 0);
            }
            write_file(&fs, &path, &bytes);
            let (st, r) = recover_store(&fs, &dir, 1, false)
                .unwrap_or_else(|e| panic!("cut at {cut} ({padded}): recovery failed: {e}"));
            let mut expected = expected_all.clone();
            let good = if cut < full.len() {
                expected.remove(b"last".as_slice());
                assert_eq!(r[0].last_seq, 10, "cut at {cut} ({padded})");
                start
            } else {
                assert_eq!(r[0].last_seq, 11);
                full.len()
            };
            assert_eq!(dump(&st), expected, "cut at {cut} ({padded})");
            let after = fs.read(&path).unwrap().to_vec();
            let s = record::scan(&after, 0, |_| {});
            assert!(s.damage.is_none(), "cut at {cut} ({padded}): {s:?}");
            assert_eq!(s.good_len, good, "cut at {cut} ({padded})");
            assert!(
                after.len() == good || (after.len() == bytes.len() && cut == good),
                "cut at {cut} ({padded}): file of {} bytes left",
                after.len()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Corruption in the middle.

/// Every single-bit flip anywhere in a record in the middle of a segment (its checksums, its
/// length, its type, its sequence number, its payload) is detected as corruption at that
/// record: the start is refused, and `--repair` keeps the records before it and reports the
/// intact ones after it as dropped. None is taken for a torn tail (which would truncate the
/// records after it silently).
#[test]
fn bit_flip_in_a_middle_record_is_corruption_at_its_offset() {
    let ops = small_ops();
    let (full, ends) = build_segment(0, &ops);
    let dir = sim_dir();
    let path = shard_dir(&dir, 0).join(segment_name(1));
    // Record #3 (index 2) spans ends[1]..ends[2]: every byte of it, every bit of each byte.
    let (rec_start, rec_end) = (ends[1], ends[2]);
    let mut flips = 0;
    for at in rec_start..rec_end {
        for bit in 0..8 {
            flips += 1;
            let fs = SimFs::new();
            write_file(&fs, &path, &full);
            fs.flip(&path, at, 1 << bit);
            let mut shard = Shard::default();
            match replay::recover(&fs, &dir, 0, &mut shard, false, &|_| {}) {
                Err(RecoveryError::Corrupt {
                    path: p, offset, ..
                }) => {
                    assert_eq!(p, path, "flip at {at}.{bit}");
                    assert_eq!(
                        offset, rec_start,
                        "flip at {at}.{bit}: offset of the damaged record"
                    );
                }
                other => panic!("flip at {at}.{bit}: expected Corrupt, got {other:?}"),
            }
            // Nothing was changed on disk by the refusal.
            assert_eq!(file_len(&fs, &path), Some(full.len()), "flip at {at}.{bit}");

            // --repair: keeps the records before, drops the intact ones after, moves the file.
            let mut shard = Shard::default();
            let r = replay::recover(&fs, &dir, 0, &mut shard, true, &|_| {})
                .unwrap_or_else(|e| panic!("flip at {at}.{bit}: repair failed: {e}"));
            // The intact records after the damaged one.
            assert_eq!(
                r.dropped,
                ops.len() - 3,
                "flip at {at}.{bit}: records dropped"
            );
            assert_eq!(r.records, 2, "flip at {at}.{bit}");
            assert_eq!(
                dump_shard(&shard),
                model_of(&ops[..2]),
                "flip at {at}.{bit}"
            );
            let names = fs.list(&shard_dir(&dir, 0)).unwrap();
            assert_eq!(
                names,
                vec![format!("wal-{:020}.damaged", 1)],
                "flip at {at}.{bit}: segment moved aside"
            );
        }
    }
    // No byte was skipped: the record's header and payload, all of it.
    assert_eq!(flips, (rec_end - rec_start) * 8);
    assert!(rec_end - rec_start > record::RECORD_HEADER);
}

/// The same in a segment as the writer leaves it: zero-filled ahead of the last record, so a
/// damaged length could otherwise point into the zeros and pass for a torn tail.
#[test]
fn bit_flip_in_a_middle_record_of_a_zero_filled_segment_is_corruption() {
    let ops = small_ops();
    let (mut full, ends) = build_segment(0, &ops);
    full.resize(full.len() + 64 * 1024, 0);
    let dir = sim_dir();
    let path = shard_dir(&dir, 0).join(segment_name(1));
    for rec in 0..ops.len() - 1 {
        let start = if rec == 0 {
            record::SEGMENT_HEADER
        } else {
            ends[rec - 1]
        };
        for at in start..ends[rec] {
            for bit in 0..8 {
                let fs = SimFs::new();
                write_file(&fs, &path, &full);
                fs.flip(&path, at, 1 << bit);
                let mut shard = Shard::default();
                match replay::recover(&fs, &dir, 0, &mut shard, false, &|_| {}) {
                    Err(RecoveryError::Corrupt { offset, .. }) => {
                        assert_eq!(offset, start, "record {rec}, flip at {at}.{bit}")
                    }
                    other => {
                        panic!("record {rec}, flip at {at}.{bit}: expected Corrupt, got {other:?}")
                    }
                }
            }
        }
    }
}

/// Segments written before the record header had its own checksum (format 1) are still
/// replayed after an upgrade, and the writer goes on in a new format 2 segment.
#[test]
fn format_1_segments_are_replayed_after_an_upgrade() {
    let ops = small_ops();
    let mut old = record::segment_header_version(record::FORMAT_VERSION_V1, 0, 1).to_vec();
    for (i, op) in ops.iter().enumerate() {
        let seq = i as u64 + 1;
        match op {
            Op::Put(k, v) => record::append_v1(&mut old, record::PUT_V1, seq, &entry_v1(k, v)),
            Op::Del(k) => record::append_v1(&mut old, record::DEL, seq, k),
            Op::Clear => record::append_v1(&mut old, record::CLEAR, seq, &[]),
        }
    }
    let fs = SimFs::new();
    let dir = sim_dir();
    write_file(&fs, &shard_dir(&dir, 0).join(segment_name(1)), &old);
    let store = Arc::new(Store::new(1));
    let d = Durability::start(
        &config(&dir, 1, FsyncPolicy::Always, None),
        store.clone(),
        Arc::new(fs.clone()),
    )
    .unwrap();
    assert_eq!(dump(&store), model_of(&ops));
    let rt = rt();
    let (m, _) = run(&store, &[b"SET", b"new", b"format"]);
    wait(&rt, &d, &m).unwrap();
    let expected = dump(&store);
    kill_and_crash(&d, &fs);
    let next = shard_dir(&dir, 0).join(segment_name(ops.len() as u64 + 1));
    let bytes = fs.read(&next).unwrap().to_vec();
    assert_eq!(
        u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        record::FORMAT_VERSION,
        "the new segment is in the new format"
    );
    let (st, _) = recover_store(&fs, &dir, 1, false).unwrap();
    assert_eq!(dump(&st), expected);
}

#[test]
fn repair_then_restart_keeps_what_was_recovered() {
    // A node started with --repair goes on serving; a later restart without --repair must
    // neither fail nor lose what the repair kept (the good records before the damage) or what
    // was acknowledged since.
    let ops = small_ops();
    let (full, ends) = build_segment(0, &ops);
    let fs = SimFs::new();
    let dir = sim_dir();
    let path = shard_dir(&dir, 0).join(segment_name(1));
    write_file(&fs, &path, &full);
    fs.corrupt(&path, ends[1] + record::RECORD_HEADER + 1);
    let store = Arc::new(Store::new(1));
    let mut cfg = config(&dir, 1, FsyncPolicy::Always, None);
    assert!(Durability::start(&cfg, store.clone(), Arc::new(fs.clone())).is_err());
    cfg.repair = true;
    let store = Arc::new(Store::new(1));
    let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone())).unwrap();
    let mut expected = model_of(&ops[..2]);
    assert_eq!(dump(&store), expected);
    let (m, _) = run(&store, &[b"SET", b"after", b"repair"]);
    wait(&rt(), &d, &m).unwrap();
    expected.insert(b"after".to_vec(), (b"repair".to_vec(), None));
    kill_and_crash(&d, &fs);
    cfg.repair = false;
    let (st, _) = recover_store(&fs, &dir, 1, false)
        .unwrap_or_else(|e| panic!("restart after a repair failed: {e}"));
    assert_eq!(dump(&st), expected);
}

// ---------------------------------------------------------------------------------------------
// 3. Power loss at every step of a snapshot.

/// A shard with enough data for several snapshot blocks.
fn fill(store: &Store, round: u8, n: usize) {
    let mut s = store.lock(0);
    for i in 0..n {
        let k = format!("key{i:05}");
        if round > 0 && i % 7 == 0 {
            s.remove(key_hash(k.as_bytes()), k.as_bytes());
            continue;
        }
        let v = vec![b'a' + round; 1000 + (i % 13)];
        s.put(key_hash(k.as_bytes()), entry(k.as_bytes(), &v));
    }
    if round > 0 {
        for i in n..n + 50 {
            let k = format!("new{i:05}");
            s.put(key_hash(k.as_bytes()), entry(k.as_bytes(), b"fresh"));
        }
    }
}

#[test]
fn snapshot_power_loss_at_every_step_leaves_old_or_new() {
    let dir = sim_dir();
    let sdir = shard_dir(&dir, 0);
    // Builds the scenario up to the second snapshot; returns the disk, store, and both states.
    let setup = || {
        let fs = SimFs::new();
        let store = Store::new(1);
        fill(&store, 0, 1200);
        snapshot::write(&fs, &store, 0, 10, &sdir).unwrap();
        let old = dump(&store);
        fill(&store, 1, 1200);
        let new = dump(&store);
        assert_ne!(old, new);
        (fs, store, old, new)
    };
    let (fs, store, _, new) = setup();
    let before = fs.ops();
    snapshot::write(&fs, &store, 0, 20, &sdir).unwrap();
    let steps = fs.ops() - before;
    assert!(
        steps >= 7,
        "a snapshot of two blocks takes {steps} operations"
    );
    let (st, r) = recover_store(&fs, &dir, 1, false).unwrap();
    assert_eq!((r[0].snapshot_seq, dump(&st)), (20, new));

    for n in 0..steps {
        let (fs, store, old, new) = setup();
        fs.fail_after(n);
        assert!(
            snapshot::write(&fs, &store, 0, 20, &sdir).is_err(),
            "step {n}: the injected failure must surface"
        );
        fs.crash();
        let (st, r) = recover_store(&fs, &dir, 1, false)
            .unwrap_or_else(|e| panic!("step {n}: recovery failed: {e}"));
        let got = dump(&st);
        match r[0].snapshot_seq {
            10 => assert!(
                got == old,
                "step {n}: old snapshot loaded with other content"
            ),
            20 => assert!(
                got == new,
                "step {n}: new snapshot loaded with other content"
            ),
            s => panic!("step {n}: loaded snapshot {s}"),
        }
    }
}

/// The full snapshot path of a running node (WAL rotation, snapshot, removal of what it
/// supersedes), failing at every step: a restart must find every acknowledged write.
#[test]
fn bgsave_power_loss_at_every_step_keeps_every_acknowledged_write() {
    let dir = sim_dir();
    let shards = 2;
    let rt = rt();
    // Starts a node, writes, snapshots, writes more; returns it ready for the second bgsave.
    let setup = || {
        let fs = SimFs::new();
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(
            &config(&dir, shards, FsyncPolicy::Always, None),
            store.clone(),
            Arc::new(fs.clone()),
        )
        .unwrap();
        for i in 0..40 {
            let (m, _) = run(&store, &[b"SET", format!("k{i}").as_bytes(), b"first"]);
            wait(&rt, &d, &m).unwrap();
        }
        assert!(d.bgsave());
        wait_until("the first snapshot", || {
            d.stats.snapshots.load(Relaxed) == 1
        });
        assert!(d.stats.last_snapshot_ok.load(Relaxed));
        for i in 0..40 {
            let k = format!("k{i}");
            let args: Vec<&[u8]> = match i % 3 {
                0 => vec![b"DEL", k.as_bytes()],
                1 => vec![b"SET", k.as_bytes(), b"second"],
                _ => vec![b"APPEND", k.as_bytes(), b"+"],
            };
            let (m, _) = run(&store, &args);
            wait(&rt, &d, &m).unwrap();
        }
        let expected = dump(&store);
        (fs, store, d, expected)
    };
    let (fs, _store, d, expected) = setup();
    let before = fs.ops();
    assert!(d.bgsave());
    wait_until("the second snapshot", || {
        d.stats.snapshots.load(Relaxed) == 2
    });
    assert!(d.stats.last_snapshot_ok.load(Relaxed));
    let steps = fs.ops() - before;
    kill_and_crash(&d, &fs);
    let (st, r) = recover_store(&fs, &dir, shards, false).unwrap();
    assert!(r.iter().all(|r| r.snapshot_seq > 0));
    assert_eq!(dump(&st), expected);
    assert!(
        steps > 10,
        "bgsave of {shards} shards took {steps} operations"
    );

    for n in 0..steps {
        let (fs, _store, d, expected) = setup();
        fs.fail_after(n);
        assert!(d.bgsave());
        wait_until("the failing snapshot", || {
            d.stats.snapshots.load(Relaxed) == 2
        });
        kill_and_crash(&d, &fs);
        let (st, _) = recover_store(&fs, &dir, shards, false)
            .unwrap_or_else(|e| panic!("step {n}: recovery failed: {e}"));
        assert_eq!(dump(&st), expected, "step {n}");
        // And the node starts on it and takes writes.
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(
            &config(&dir, shards, FsyncPolicy::Always, None),
            store.clone(),
            Arc::new(fs.clone()),
        )
        .unwrap_or_else(|e| panic!("step {n}: restart failed: {e}"));
        assert_eq!(dump(&store), expected, "step {n}");
        let (m, _) = run(&store, &[b"SET", b"later", b"x"]);
        wait(&rt, &d, &m).unwrap();
        d.shutdown();
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Power loss with writes in flight.

/// One write as the node saw it: which shard record made it, and its effect.
struct Logged {
    shard: u32,
    seq: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

#[test]
fn power_loss_keeps_every_acknowledged_write() {
    let dir = sim_dir();
    let shards = 4;
    let rt = rt();
    // Different crash points inside the writer's rounds that follow the acknowledged writes.
    for crash_after in [0usize, 1, 2, 3, 5, 8, 13, 21] {
        let fs = SimFs::new();
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(
            &config(&dir, shards, FsyncPolicy::Always, None),
            store.clone(),
            Arc::new(fs.clone()),
        )
        .unwrap();
        let mut log: Vec<Logged> = Vec::new();
        let mut write = |i: usize, round: &str| {
            let key = format!("key{}", i % 30).into_bytes();
            let value = format!("{round}-{i}").into_bytes();
            let (m, reply) = run(&store, &[b"SET", &key, &value]);
            assert_eq!(reply, b"+OK\r\n");
            assert_eq!(m.len(), 1);
            log.push(Logged {
                shard: m[0].0,
                seq: m[0].1,
                key,
                value,
            });
            m
        };
        for i in 0..100 {
            let m = write(i, "acked");
            wait(&rt, &d, &m).unwrap();
        }
        let acked = 100;
        fs.fail_after(crash_after);
        for i in 100..160 {
            let m = write(i, "unacked");
            for &(s, _) in m.iter() {
                d.logs[s as usize].kick();
            }
        }
        kill_and_crash(&d, &fs);
        let (st, r) = recover_store(&fs, &dir, shards, false)
            .unwrap_or_else(|e| panic!("crash after {crash_after}: recovery failed: {e}"));
        // Per shard, what survived is exactly a prefix of its log, at least every acked write.
        for (s, r) in r.iter().enumerate() {
            let last = r.last_seq;
            let acked_last = log[..acked]
                .iter()
                .filter(|w| w.shard == s as u32)
                .map(|w| w.seq)
                .max()
                .unwrap_or(0);
            assert!(
                last >= acked_last,
                "crash after {crash_after}: shard {s} recovered up to {last}, acked {acked_last}"
            );
            let mut want = State::new();
            for w in log.iter().filter(|w| w.shard == s as u32 && w.seq <= last) {
                want.insert(w.key.clone(), (w.value.clone(), None));
            }
            assert_eq!(
                dump_shard(&st.lock(s)),
                want,
                "crash after {crash_after}: shard {s} is not a prefix of its log"
            );
        }
        // The node starts again on what survived and takes writes.
        let store = Arc::new(Store::new(shards));
        let d = Durability::start(
            &config(&dir, shards, FsyncPolicy::Always, None),
            store.clone(),
            Arc::new(fs.clone()),
        )
        .unwrap();
        assert_eq!(dump(&store), dump(&st));
        let (m, _) = run(&store, &[b"SET", b"again", b"1"]);
        wait(&rt, &d, &m).unwrap();
        d.shutdown();
    }
}

#[test]
fn power_loss_with_fsync_never_recovers_without_error() {
    // Acknowledged only to the OS: a crash may lose them, but recovery must work.
    let dir = sim_dir();
    let fs = SimFs::new();
    let store = Arc::new(Store::new(2));
    let d = Durability::start(
        &config(&dir, 2, FsyncPolicy::Never, None),
        store.clone(),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let rt = rt();
    for i in 0..50 {
        let (m, _) = run(&store, &[b"SET", format!("k{i}").as_bytes(), b"v"]);
        wait(&rt, &d, &m).unwrap();
    }
    kill_and_crash(&d, &fs);
    let (st, _) = recover_store(&fs, &dir, 2, false).unwrap();
    assert!(dump(&st).len() <= 50);
}

// ---------------------------------------------------------------------------------------------
// 5. A full disk.

#[test]
fn enospc_refuses_then_recovers_when_space_returns() {
    let dir = sim_dir();
    let fs = SimFs::new();
    let store = Arc::new(Store::new(1));
    let d = Durability::start(
        &config(&dir, 1, FsyncPolicy::Always, None),
        store.clone(),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let rt = rt();
    let mut expected = State::new();
    for i in 0..20 {
        let k = format!("k{i}");
        let (m, _) = run(&store, &[b"SET", k.as_bytes(), b"before"]);
        wait(&rt, &d, &m).unwrap();
        expected.insert(k.into_bytes(), (b"before".to_vec(), None));
    }
    assert!(d.failing().is_none());
    fs.limit_space(Some(10));
    let (m, _) = run(&store, &[b"SET", b"full", b"disk"]);
    let err = wait(&rt, &d, &m).expect_err("a write to a full disk fails");
    assert!(err.contains("No space") || err.contains("28"), "{err}");
    assert!(d.failing().is_some());
    fs.limit_space(None);
    wait_until("the writer to retry after space returned", || {
        d.failing().is_none()
    });
    // The write that failed was kept and written by the retry.
    wait(&rt, &d, &m).unwrap();
    expected.insert(b"full".to_vec(), (b"disk".to_vec(), None));
    for i in 0..20 {
        let k = format!("k{i}");
        let (m, _) = run(&store, &[b"SET", k.as_bytes(), b"after"]);
        wait(&rt, &d, &m).unwrap();
        expected.insert(k.into_bytes(), (b"after".to_vec(), None));
    }
    kill_and_crash(&d, &fs);
    let (st, _) = recover_store(&fs, &dir, 1, false).unwrap();
    assert_eq!(dump(&st), expected);
}

#[test]
fn enospc_while_opening_a_new_segment_clears_when_space_returns() {
    enospc_at_rotation(false);
}

#[test]
fn enospc_while_opening_a_new_segment_then_a_write_before_the_retry() {
    enospc_at_rotation(true);
}

fn enospc_at_rotation(write_before_retry: bool) {
    // The disk fills exactly when the WAL rotates to a new segment: the record that filled
    // the segment is safe, the new segment's header can't be written.
    let dir = sim_dir();
    let fs = SimFs::new();
    let store = Arc::new(Store::new(1));
    let d = Durability::start(
        &config(&dir, 1, FsyncPolicy::Always, Some(4096)),
        store.clone(),
        Arc::new(fs.clone()),
    )
    .unwrap();
    let rt = rt();
    let wal_bytes = || d.logs[0].stats.wal_bytes.load(Relaxed);
    let mut expected = State::new();
    // Fresh keys, values shorter than 128 bytes: a record's size is a constant plus the
    // value's length.
    let set = |i: usize, len: usize, expected: &mut State| {
        let k = format!("key{i:04}");
        let v = vec![b'v'; len];
        let (m, _) = run(&store, &[b"SET", k.as_bytes(), &v]);
        expected.insert(k.into_bytes(), (v, None));
        m
    };
    let mut i = 0;
    let m = set(i, 20, &mut expected);
    wait(&rt, &d, &m).unwrap();
    let before = wal_bytes();
    i += 1;
    let m = set(i, 20, &mut expected);
    wait(&rt, &d, &m).unwrap();
    let base = (wal_bytes() - before) as usize - 20;
    assert!(base + 20 <= 127, "record overhead {base}");
    // Fill the segment so that one last record ends exactly at the rotation size: writing it
    // needs no growth of the (zero-filled ahead) file, whatever the preallocation step.
    while 4096 - wal_bytes() as usize - base > 127 {
        i += 1;
        let m = set(i, 20, &mut expected);
        wait(&rt, &d, &m).unwrap();
    }
    let last = 4096 - wal_bytes() as usize - base;
    // Room for that record, not for a segment header after it.
    fs.limit_space(Some(base + last + 10));
    i += 1;
    let m = set(i, last, &mut expected);
    wait(&rt, &d, &m).expect("the record itself fitted and was synced");
    assert_eq!(wal_bytes(), 4096);
    // The rotation follows the sync that acknowledged the record.
    wait_until("the failed rotation to be reported", || {
        d.failing().is_some()
    });
    fs.limit_space(None);
    if write_before_retry {
        // A write arriving before the writer's own retry (the server refuses new writes
        // while `failing()`, but one admitted just before may come) goes on in the current
        // segment. It was not part of the failed attempt, so the standing error does not fail
        // it: its waiter is released by the writer's retry.
        i += 1;
        let m = set(i, 100, &mut expected);
        wait(&rt, &d, &m).expect("a write after the failed attempt waits for the retry");
        wait_until("writes to be accepted again", || d.failing().is_none());
    } else {
        // Nothing else is written (the server refuses writes meanwhile): the writer's own
        // retry must clear the error.
        wait_until("writes to be accepted again", || d.failing().is_none());
    }
    for _ in 0..60 {
        i += 1;
        let m = set(i, 100, &mut expected);
        wait(&rt, &d, &m).unwrap();
    }
    assert!(d.failing().is_none());
    kill_and_crash(&d, &fs);
    let (st, _) = recover_store(&fs, &dir, 1, false)
        .unwrap_or_else(|e| panic!("recovery after a full disk failed: {e}"));
    assert_eq!(dump(&st), expected);
}

#[test]
fn failed_snapshot_right_after_a_restart_loses_nothing() {
    // After a restart the writer appends to a fresh segment that has no record yet; a
    // snapshot then finds nothing to rotate. If opening "the next" segment (the same name)
    // fails half-way, the segment being appended to must not be replaced or removed.
    let dir = sim_dir();
    let fs = SimFs::new();
    let rt = rt();
    let cfg = config(&dir, 1, FsyncPolicy::Always, Some(4096));
    let store = Arc::new(Store::new(1));
    let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone())).unwrap();
    for i in 0..10 {
        let (m, _) = run(&store, &[b"SET", format!("k{i}").as_bytes(), b"first life"]);
        wait(&rt, &d, &m).unwrap();
    }
    kill_and_crash(&d, &fs);

    let store = Arc::new(Store::new(1));
    let d = Durability::start(&cfg, store.clone(), Arc::new(fs.clone())).unwrap();
    fs.limit_space(Some(10));
    assert!(d.bgsave());
    wait_until("the snapshot attempt", || {
        d.stats.snapshots.load(Relaxed) == 1
    });
    assert!(
        !d.stats.last_snapshot_ok.load(Relaxed),
        "no room for a snapshot"
    );
    fs.limit_space(None);
    // Enough acknowledged writes to fill the segment and rotate to the next one.
    for i in 0..60 {
        let (m, _) = run(&store, &[b"SET", format!("k{i}").as_bytes(), &[b's'; 100]]);
        wait(&rt, &d, &m).unwrap();
    }
    let expected = dump(&store);
    kill_and_crash(&d, &fs);
    let (st, _) =
        recover_store(&fs, &dir, 1, false).unwrap_or_else(|e| panic!("recovery failed: {e}"));
    assert_eq!(dump(&st), expected);
}

// ---------------------------------------------------------------------------------------------
// 6. docs/storage.md and the code agree.

const STORAGE_MD: &str = include_str!("../docs/storage.md");

/// The rows (offset, size, field) of the first table after the heading `## {title}`.
fn doc_table(title: &str) -> Vec<(usize, Option<usize>, String)> {
    let heading = format!("\n## {title}\n");
    let at = STORAGE_MD
        .find(&heading)
        .unwrap_or_else(|| panic!("docs/storage.md has no section {title:?}"));
    let rows: Vec<_> = STORAGE_MD[at + heading.len()..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header row and the |---| row
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            assert_eq!(cells.len(), 3, "{title}: row {l:?}");
            let offset = cells[0]
                .parse()
                .unwrap_or_else(|_| panic!("{title}: offset {:?}", cells[0]));
            (offset, cells[1].parse().ok(), cells[2].to_string())
        })
        .collect();
    assert!(rows.len() >= 4, "{title}: table not found");
    rows
}

/// A field's name: its text up to the first ':', ',' or '`'.
fn field_name(text: &str) -> &str {
    text.split([':', ',', '`']).next().unwrap_or("").trim()
}

/// Checks that the rows are back to back (each offset is the previous offset plus its size),
/// and returns the offset of the row whose field starts with `field`.
fn offset_of(rows: &[(usize, Option<usize>, String)], field: &str) -> usize {
    for w in rows.windows(2) {
        if let (Some(size), _) = (w[0].1, &w[1]) {
            assert_eq!(w[0].0 + size, w[1].0, "rows {:?} and {:?}", w[0], w[1]);
        }
    }
    rows.iter()
        .find(|r| field_name(&r.2) == field)
        .unwrap_or_else(|| panic!("no field {field:?} in {rows:?}"))
        .0
}

/// The number after `= ` in a field such as "format version, u32 = 2".
fn documented_value(rows: &[(usize, Option<usize>, String)], field: &str) -> u32 {
    let r = rows.iter().find(|r| field_name(&r.2) == field).unwrap();
    r.2.rsplit("= ")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no value in {:?}", r.2))
}

fn documented_magic(rows: &[(usize, Option<usize>, String)]) -> Vec<u8> {
    let r = rows.iter().find(|r| field_name(&r.2) == "magic").unwrap();
    r.2.split('`').nth(1).unwrap().as_bytes().to_vec()
}

#[test]
fn storage_md_tables_match_the_code() {
    // WAL segment header: the documented fields are where the writer puts them.
    let seg = doc_table("WAL segment");
    let header = record::segment_header(7, 0x0102_0304_0506_0708);
    assert_eq!(documented_magic(&seg), record::SEGMENT_MAGIC);
    let at = offset_of(&seg, "magic");
    assert_eq!(&header[at..at + 8], record::SEGMENT_MAGIC);
    let at = offset_of(&seg, "format version");
    assert_eq!(
        documented_value(&seg, "format version"),
        record::FORMAT_VERSION
    );
    assert_eq!(
        u32::from_le_bytes(header[at..at + 4].try_into().unwrap()),
        record::FORMAT_VERSION
    );
    let at = offset_of(&seg, "shard number");
    assert_eq!(
        u32::from_le_bytes(header[at..at + 4].try_into().unwrap()),
        7
    );
    let at = offset_of(&seg, "sequence number of the first record in this segment");
    assert_eq!(
        u64::from_le_bytes(header[at..at + 8].try_into().unwrap()),
        0x0102_0304_0506_0708
    );
    assert_eq!(offset_of(&seg, "records"), record::SEGMENT_HEADER);
    assert_eq!(header.len(), record::SEGMENT_HEADER);

    // WAL record: build one, and read every field back at its documented offset.
    let rec = doc_table("WAL record");
    let payload = b"the payload of a record";
    let mut b = Vec::new();
    record::append(&mut b, record::DEL, 0x1122_3344_5566_7788, payload);
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let hdr = offset_of(&rec, "payload");
    assert_eq!(hdr, record::RECORD_HEADER);
    assert_eq!(b.len(), hdr + payload.len());
    assert_eq!(u32_at(offset_of(&rec, "len")) as usize, payload.len());
    assert_eq!(b[offset_of(&rec, "type")], record::DEL);
    let at = offset_of(&rec, "seq");
    assert_eq!(
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap()),
        0x1122_3344_5566_7788
    );
    assert_eq!(
        u32_at(offset_of(&rec, "payload CRC32")),
        crc32fast::hash(payload)
    );
    // "header CRC32: of bytes 4 … 20": the header checksum covers exactly the rest of the header.
    assert_eq!(offset_of(&rec, "header CRC32"), 0);
    assert!(rec[0].2.contains(&format!("of bytes 4 … {}", hdr - 1)));
    assert_eq!(u32_at(0), crc32fast::hash(&b[4..hdr]));
    // The type codes.
    let types = &rec.iter().find(|r| field_name(&r.2) == "type").unwrap().2;
    for (code, name) in [
        (record::PUT_V1, "PUT_V1"),
        (record::DEL, "DEL"),
        (record::CLEAR, "CLEAR"),
        (record::VERSIONS, "VERSIONS"),
        (record::TXN, "TXN"),
    ] {
        assert!(types.contains(&format!("{code} {name}")), "{types}");
    }
    // Format 1, read only: its header size as documented.
    assert!(STORAGE_MD.contains(&format!(
        "Format 1 (read only) had a {}-byte header",
        record::RECORD_HEADER_V1
    )));
    assert!(STORAGE_MD.contains(&format!(
        "this build writes format {} and reads formats {} and {}",
        record::FORMAT_VERSION,
        record::FORMAT_VERSION_V1,
        record::FORMAT_VERSION
    )));

    // Snapshot header, as the snapshot writer lays it out.
    let snap = doc_table("Snapshot");
    assert_eq!(documented_magic(&snap), snapshot::MAGIC);
    assert_eq!(
        documented_value(&snap, "format version"),
        snapshot::FORMAT_VERSION
    );
    assert_eq!(offset_of(&snap, "blocks"), snapshot::HEADER);
    let fs = SimFs::new();
    let dir = sim_dir();
    let store = Store::new(1);
    fs.create_dir_all(&dir).unwrap();
    snapshot::write(&fs, &store, 0, 0x99, &dir).unwrap();
    let file = fs
        .read(&dir.join(snapshot::snapshot_name(0x99)))
        .unwrap()
        .to_vec();
    let at = offset_of(&snap, "magic");
    assert_eq!(&file[at..at + 8], snapshot::MAGIC);
    let at = offset_of(&snap, "format version");
    assert_eq!(
        u32::from_le_bytes(file[at..at + 4].try_into().unwrap()),
        snapshot::FORMAT_VERSION
    );
    let at = offset_of(&snap, "seq");
    assert_eq!(
        u64::from_le_bytes(file[at..at + 8].try_into().unwrap()),
        0x99
    );

    // The meta file's format.
    assert!(STORAGE_MD.contains(&format!("\nformat = {}\n", ringkv::datadir::META_FORMAT)));

    // The worked example: `SET a 1`, the first write to a shard of node 5.
    let ts = 1_796_601_888_000u64;
    let e = Entry::with_one(b"a", 5, VersionRef::value(b"1", ts, None));
    let b = e.as_bytes();
    assert_eq!(b.len(), 15, "the example entry is 15 bytes");
    assert_eq!(&b[..8], &[0x01, 0x61, 0x08, 0x01, 0x05, 0x01, 0x02, 0x00]);
    assert_eq!(b[14], 0x31);
    assert!(STORAGE_MD.contains("01 61 08 01 05 01 02 00 <6-byte varint timestamp> 31   entry"));
    assert!(STORAGE_MD.contains("0f 00 00 00    len = 15"));
    assert!(STORAGE_MD.contains("10             VERSIONS"));
    assert_eq!(record::VERSIONS, 0x10);
}
