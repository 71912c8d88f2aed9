//! Durability of the real binary: torn tails, corruption and `--repair`, the data directory's
//! lock and metadata, snapshots, graceful shutdown, fsync policies, INFO persistence, TTLs
//! across restarts.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::Server;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Assertion helpers on top of the shared client.
trait ConnExt {
    fn set(&mut self, k: &str, v: &str);
    fn get(&mut self, k: &str) -> Option<String>;
    fn int(&mut self, args: &[&[u8]]) -> i64;
    /// `INFO persistence` as a map.
    fn persistence(&mut self) -> HashMap<String, String>;
}

impl ConnExt for Conn {
    fn set(&mut self, k: &str, v: &str) {
        assert_eq!(
            self.call(&[b"SET", k.as_bytes(), v.as_bytes()]),
            Reply::Simple("OK".into())
        );
    }

    fn get(&mut self, k: &str) -> Option<String> {
        match self.call(&[b"GET", k.as_bytes()]) {
            Reply::Bulk(v) => v.map(|b| String::from_utf8(b).unwrap()),
            other => panic!("GET {k}: {other:?}"),
        }
    }

    fn int(&mut self, args: &[&[u8]]) -> i64 {
        match self.call(args) {
            Reply::Int(n) => n,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    fn persistence(&mut self) -> HashMap<String, String> {
        match self.call(&[b"INFO", b"persistence"]) {
            Reply::Bulk(Some(b)) => String::from_utf8(b)
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect(),
            other => panic!("INFO: {other:?}"),
        }
    }
}

/// Polls `cond` until it holds or `limit` passes (then panics with `what`).
fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

fn shard_dir(data: &Path, shard: usize) -> PathBuf {
    data.join(format!("shard-{shard:04}"))
}

/// (first seq, path) of a shard's segments, oldest first.
fn segments(data: &Path, shard: usize) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(shard_dir(data, shard))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let first = name
                        .strip_prefix("wal-")?
                        .strip_suffix(".log")?
                        .parse()
                        .ok()?;
                    Some((first, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Sequence numbers of a shard's snapshots, oldest first.
fn snapshots(data: &Path, shard: usize) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(shard_dir(data, shard))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix("snap-")?
                        .strip_suffix(".rks")?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

use ringkv::wal::record::{self, RECORD_HEADER, SEGMENT_HEADER};

/// Offsets of the records of a segment file, and the end of the last one (segments are
/// zero-filled ahead of the write position: the zeros are not records).
fn record_offsets(data: &[u8]) -> (Vec<usize>, usize) {
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER;
    while pos + RECORD_HEADER <= data.len() && data[pos..].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if pos + RECORD_HEADER + len > data.len() {
            break;
        }
        out.push(pos);
        pos += RECORD_HEADER + len;
    }
    assert!(
        data[pos..].iter().all(|&b| b == 0),
        "segment does not end on a record boundary"
    );
    (out, pos)
}

/// A field `name=value` of the last log line containing `line`.
fn log_field(log: &str, line: &str, name: &str) -> Option<u64> {
    let l = log.lines().rev().find(|l| l.contains(line))?;
    let pat = format!("{name}=");
    let at = l.find(&pat)? + pat.len();
    l[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

const ONE_SHARD: &[&str] = &["--fsync", "always", "--threads", "1", "--shards", "1"];
const TWO_SHARDS: &[&str] = &["--fsync", "always", "--threads", "1", "--shards", "2"];

// ---------------------------------------------------------------------------------------------
// 1. Torn tail.

#[test]
fn torn_tail_is_truncated_and_the_rest_recovered() {
    let data = tempfile::tempdir().unwrap();
    let n = 40;
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    for i in 0..n {
        c.set(&format!("key:{i}"), &format!("value-{i}"));
    }
    server.kill();
    let segs = segments(data.path(), 0);
    let (_, newest) = segs.last().expect("shard 0 has a segment");
    let bytes = std::fs::read(newest).unwrap();
    let (offsets, end) = record_offsets(&bytes);
    assert!(!offsets.is_empty(), "shard 0 got no writes");
    let last = *offsets.last().unwrap();
    // Cut inside the last record (what a crash leaves when the file's size reached the disk
    // but not all of the record).
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(newest)
        .unwrap();
    f.set_len(end as u64 - 3).unwrap();
    drop(f);

    let server = Server::start_in(data.path(), TWO_SHARDS);
    let log = server.log_text();
    assert!(log.contains("torn"), "no torn-tail warning:\n{log}");
    assert_eq!(
        std::fs::metadata(newest).unwrap().len(),
        last as u64,
        "the torn record is cut off"
    );
    let mut c = Conn::connect(server.addr);
    let missing: Vec<usize> = (0..n)
        .filter(|i| c.get(&format!("key:{i}")) != Some(format!("value-{i}")))
        .collect();
    assert_eq!(
        missing.len(),
        1,
        "exactly the cut record's key is lost: {missing:?}"
    );
    // The node goes on from there, and a later restart reads the truncated segment cleanly.
    c.set("after", "torn");
    assert!(server.terminate().success());
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.get("after").as_deref(), Some("torn"));
    let present = (0..n)
        .filter(|i| c.get(&format!("key:{i}")).is_some())
        .count();
    assert_eq!(present, n - 1);
}

// ---------------------------------------------------------------------------------------------
// 2. Corruption in the middle of a segment; --repair.

/// Writes `n` keys on one shard, kills the server; returns the segment's path.
fn one_segment(data: &Path, n: usize) -> PathBuf {
    let server = Server::start_in(data, ONE_SHARD);
    let mut c = Conn::connect(server.addr);
    for i in 0..n {
        c.set(&format!("key:{i}"), &format!("value-{i}"));
    }
    server.kill();
    let segs = segments(data, 0);
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs[0].1.clone()
}

fn check_repair(data: &Path, seg: &Path, n: usize, bad: usize, offset: usize) {
    // Without --repair: refuses, naming the file and the offset.
    let err = match Server::try_start_in(data, ONE_SHARD) {
        Ok(_) => panic!("started on a corrupt WAL"),
        Err(e) => e,
    };
    assert!(err.contains("exited with"), "{err}");
    assert!(!err.contains("exit status: 0"), "must exit non-zero: {err}");
    assert!(
        err.contains(&seg.display().to_string()),
        "error names the file {}:\n{err}",
        seg.display()
    );
    assert!(
        err.contains(&format!("corrupt at offset {offset}")),
        "error names offset {offset}:\n{err}"
    );

    // With --repair: starts, drops the damaged record and everything after it.
    let mut flags = ONE_SHARD.to_vec();
    flags.push("--repair");
    let server = Server::start_in(data, &flags);
    let log = server.log_text();
    // What the count covers: the intact records after the damaged one (lost too).
    let dropped = n - bad - 1;
    assert!(
        log.contains(&format!("dropped {dropped} WAL records")),
        "log reports {dropped} records dropped:\n{log}"
    );
    let damaged = seg.with_extension("damaged");
    assert!(damaged.exists(), "{} exists", damaged.display());
    assert!(!seg.exists(), "{} was moved aside", seg.display());
    let mut c = Conn::connect(server.addr);
    for i in 0..n {
        let want = (i < bad).then(|| format!("value-{i}"));
        assert_eq!(c.get(&format!("key:{i}")), want, "key:{i}");
    }
    c.set("after-repair", "yes");
    // A crash after the repair, then a normal start (no --repair): the records read before
    // the damage are still there, and so is what was written since.
    server.kill();
    let server = Server::start_in(data, ONE_SHARD);
    let mut c = Conn::connect(server.addr);
    for i in 0..n {
        let want = (i < bad).then(|| format!("value-{i}"));
        assert_eq!(c.get(&format!("key:{i}")), want, "key:{i} after the crash");
    }
    assert_eq!(c.get("after-repair").as_deref(), Some("yes"));
}

#[test]
fn bit_flip_refuses_to_start_and_repair_drops_the_rest() {
    let data = tempfile::tempdir().unwrap();
    let n = 40;
    let bad = 10;
    let seg = one_segment(data.path(), n);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (offsets, _) = record_offsets(&bytes);
    assert_eq!(offsets.len(), n);
    bytes[offsets[bad] + RECORD_HEADER + 2] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    check_repair(data.path(), &seg, n, bad, offsets[bad]);
}

#[test]
fn undecodable_record_with_a_good_checksum_names_its_offset() {
    let data = tempfile::tempdir().unwrap();
    let n = 30;
    let bad = 7;
    let seg = one_segment(data.path(), n);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (offsets, _) = record_offsets(&bytes);
    let at = offsets[bad];
    let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let seq = u64::from_le_bytes(bytes[at + 9..at + 17].try_into().unwrap());
    // A payload no entry decodes from (unknown flag bits), with checksums that match.
    let mut rebuilt = Vec::new();
    record::append(&mut rebuilt, record::VERSIONS, seq, &vec![0xff; len]);
    bytes[at..at + RECORD_HEADER + len].copy_from_slice(&rebuilt);
    std::fs::write(&seg, &bytes).unwrap();
    check_repair(data.path(), &seg, n, bad, at);
}

// ---------------------------------------------------------------------------------------------
// 3. and 4. The data directory: lock and metadata.

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let first = Server::start_in(data.path(), TWO_SHARDS);
    let err = match Server::try_start_in(data.path(), TWO_SHARDS) {
        Ok(_) => panic!("two servers share one data directory"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(err.contains("in use by another ringkv process"), "{err}");
    assert_serving(&first);
    // Once the first is gone, the directory is free.
    assert!(first.terminate().success());
    let again = Server::start_in(data.path(), TWO_SHARDS);
    common::assert_serving(&again);
}

fn assert_serving(s: &Server) {
    common::assert_serving(s)
}

#[test]
fn another_shard_count_is_refused_with_both_counts() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_in(data.path(), &["--threads", "1", "--shards", "4"]);
    // SHUTDOWN rather than SIGTERM: the server logs "ready" before it installs its SIGTERM
    // handler, so a SIGTERM this early may find the default action (death by signal).
    Conn::connect(s.addr).send(&[b"SHUTDOWN"]).expect("send");
    assert!(s.wait_exit().success());
    let err = match Server::try_start_in(data.path(), &["--threads", "1", "--shards", "8"]) {
        Ok(_) => panic!("started with another shard count"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(
        err.contains("--shards 4") && err.contains("asks for 8"),
        "names both counts:\n{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. BGSAVE, then a crash.

#[test]
fn snapshot_then_crash_recovers_everything_and_drops_old_segments() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    for i in 0..100 {
        c.set(&format!("before:{i}"), &format!("v{i}"));
    }
    let before = c.persistence();
    let taken: u64 = before["snapshots_taken"].parse().unwrap();
    assert_eq!(
        c.call(&[b"BGSAVE"]),
        Reply::Simple("Background saving started".into())
    );
    wait_until(Duration::from_secs(20), "BGSAVE to finish", || {
        let p = c.persistence();
        p["snapshot_in_progress"] == "0" && p["snapshots_taken"].parse::<u64>().unwrap() > taken
    });
    let p = c.persistence();
    assert_eq!(p["last_snapshot_status"], "ok");
    assert!(p["last_snapshot_time"].parse::<u64>().unwrap() > 0);
    let lastsave = c.int(&[b"LASTSAVE"]);
    assert_eq!(lastsave.to_string(), p["last_snapshot_time"]);
    for i in 0..50 {
        c.set(&format!("after:{i}"), &format!("w{i}"));
    }
    server.kill();

    for shard in 0..2 {
        let snaps = snapshots(data.path(), shard);
        assert_eq!(snaps.len(), 1, "shard {shard}: {snaps:?}");
        let segs = segments(data.path(), shard);
        assert!(
            segs.iter().all(|(first, _)| *first > snaps[0]),
            "shard {shard}: snapshot {} but segments {segs:?}",
            snaps[0]
        );
    }
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let log = server.log_text();
    assert_eq!(
        log_field(&log, "recovery done", "snapshot_entries"),
        Some(100)
    );
    assert_eq!(log_field(&log, "recovery done", "wal_records"), Some(50));
    let mut c = Conn::connect(server.addr);
    for i in 0..100 {
        assert_eq!(c.get(&format!("before:{i}")), Some(format!("v{i}")));
    }
    for i in 0..50 {
        assert_eq!(c.get(&format!("after:{i}")), Some(format!("w{i}")));
    }
    assert_eq!(c.int(&[b"DBSIZE"]), 150);
}

// ---------------------------------------------------------------------------------------------
// 6. A graceful shutdown snapshots every shard.

#[test]
fn sigterm_writes_snapshots() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    for i in 0..100 {
        c.set(&format!("k{i}"), "v");
    }
    let status = server.terminate();
    assert!(status.success(), "{status}");
    for shard in 0..2 {
        assert_eq!(snapshots(data.path(), shard).len(), 1, "shard {shard}");
    }
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let log = server.log_text();
    assert_eq!(
        log_field(&log, "recovery done", "snapshot_entries"),
        Some(100),
        "{log}"
    );
    assert_eq!(
        log_field(&log, "recovery done", "wal_records"),
        Some(0),
        "{log}"
    );
    assert_eq!(log_field(&log, "recovery done", "keys"), Some(100), "{log}");
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.int(&[b"DBSIZE"]), 100);
    let p = c.persistence();
    assert_eq!(p["recovered_keys"], "100");
}

// ---------------------------------------------------------------------------------------------
// 7. and 8. Policies and INFO persistence.

#[test]
fn fsync_batch_reports_its_interval() {
    let server = Server::start(&["--fsync", "batch", "--threads", "1", "--shards", "2"]);
    let mut c = Conn::connect(server.addr);
    c.set("a", "1");
    let p = c.persistence();
    assert_eq!(p["fsync_policy"], "batch");
    assert_eq!(p["fsync_interval_ms"], "1000");
    assert_eq!(p["wal_enabled"], "1");
    drop(c);
    assert!(server.terminate().success());
}

#[test]
fn fsync_off_is_memory_only() {
    let data = tempfile::tempdir().unwrap();
    let flags = &["--fsync", "off", "--threads", "1", "--shards", "2"];
    let server = Server::start_in(data.path(), flags);
    let mut c = Conn::connect(server.addr);
    for i in 0..20 {
        c.set(&format!("k{i}"), "v");
    }
    let p = c.persistence();
    assert_eq!(p["fsync_policy"], "off");
    assert_eq!(p["wal_enabled"], "0");
    assert!(!p.contains_key("fsync_interval_ms"));
    drop(c);
    assert!(server.terminate().success());
    for shard in 0..2 {
        assert!(
            segments(data.path(), shard).is_empty(),
            "shard {shard} has segments"
        );
        assert!(
            snapshots(data.path(), shard).is_empty(),
            "shard {shard} has snapshots"
        );
    }
    let server = Server::start_in(data.path(), flags);
    let mut c = Conn::connect(server.addr);
    assert_eq!(
        c.int(&[b"DBSIZE"]),
        0,
        "memory-only data is gone after a restart"
    );
    assert_eq!(c.get("k0"), None);
}

#[test]
fn info_persistence_has_every_field() {
    let server = Server::start(TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    for i in 0..10 {
        c.set(&format!("k{i}"), "v");
    }
    let p = c.persistence();
    for field in [
        "fsync_policy",
        "wal_enabled",
        "wal_bytes",
        "wal_fsyncs",
        "wal_fsyncs_per_sec",
        "wal_last_fsync_latency_us",
        "snapshot_in_progress",
        "snapshots_taken",
        "last_snapshot_time",
        "last_snapshot_duration_ms",
        "recovery_time_ms",
    ] {
        assert!(
            p.contains_key(field),
            "INFO persistence lacks {field}: {p:?}"
        );
    }
    assert_eq!(p["fsync_policy"], "always");
    assert_eq!(p["wal_enabled"], "1");
    // Ten acknowledged writes with --fsync always: ten records in the WAL, synced.
    assert!(p["wal_bytes"].parse::<u64>().unwrap() > 10 * RECORD_HEADER as u64);
    assert!(p["wal_fsyncs"].parse::<u64>().unwrap() >= 1);
    for numeric in [
        "wal_fsyncs_per_sec",
        "wal_last_fsync_latency_us",
        "last_snapshot_time",
        "last_snapshot_duration_ms",
        "recovery_time_ms",
    ] {
        assert!(
            p[numeric].parse::<u64>().is_ok(),
            "{numeric}: {:?}",
            p[numeric]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 9. TTLs across restarts.

#[test]
fn ttls_survive_restarts_and_expired_keys_stay_expired() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    assert_eq!(
        c.call(&[b"SET", b"long", b"v", b"EX", b"1000"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(
        c.call(&[b"SET", b"short", b"v", b"PX", b"200"]),
        Reply::Simple("OK".into())
    );
    wait_until(Duration::from_secs(10), "the 200 ms key to expire", || {
        c.get("short").is_none()
    });
    // First a crash (the WAL is replayed), then a graceful exit (the snapshot is loaded).
    server.kill();
    for round in ["after a crash", "after a graceful restart"] {
        let server = Server::start_in(data.path(), TWO_SHARDS);
        let mut c = Conn::connect(server.addr);
        let ttl = c.int(&[b"TTL", b"long"]);
        assert!((990..=1000).contains(&ttl), "{round}: TTL {ttl}");
        assert_eq!(c.get("long").as_deref(), Some("v"), "{round}");
        assert_eq!(c.get("short"), None, "{round}: an expired key came back");
        assert_eq!(c.int(&[b"EXISTS", b"short"]), 0, "{round}");
        assert!(server.terminate().success());
    }
}

// ---------------------------------------------------------------------------------------------
// 10. A data directory that can't be written.

#[test]
fn read_only_data_dir_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let ro = parent.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let probe = ro.join("probe");
    if std::fs::write(&probe, b"x").is_ok() {
        // Root ignores mode 0555. A data directory below a regular file can't be created or
        // written by anyone: the start must fail as clearly.
        let _ = std::fs::remove_file(&probe);
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = parent.path().join("file");
        std::fs::write(&file, b"not a directory").unwrap();
        let dir = file.join("data");
        let err = match Server::try_start_in(&dir, TWO_SHARDS) {
            Ok(_) => panic!("started on a data directory below a regular file"),
            Err(e) => e,
        };
        assert!(
            err.contains("exited with") && !err.contains("exit status: 0"),
            "{err}"
        );
        assert!(err.contains(&dir.display().to_string()), "{err}");
        return;
    }
    let r = Server::try_start_in(&ro, TWO_SHARDS);
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = match r {
        Ok(_) => panic!("started on a read-only data directory"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(err.contains(&ro.display().to_string()), "{err}");
    assert!(err.contains("writable"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// 11. Group commit and the fsync policies, through INFO persistence.

fn fsyncs(c: &mut Conn) -> u64 {
    c.persistence()["wal_fsyncs"].parse().unwrap()
}

/// `--fsync always` acknowledges a write after the fdatasync that covers it, and writes arriving
/// meanwhile share the next one: many concurrent writers need fewer fdatasyncs than writes.
#[test]
fn group_commit_shares_fdatasyncs_among_concurrent_writers() {
    const CLIENTS: usize = 16;
    const WRITES: usize = 100;
    let server = Server::start(ONE_SHARD);
    let mut c = Conn::connect(server.addr);
    let before = fsyncs(&mut c);
    let addr = server.addr;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut c = Conn::connect(addr);
                barrier.wait();
                for i in 0..WRITES {
                    // One write at a time per client: only other clients can share its sync.
                    c.set(&format!("w{w}:{i}"), "v");
                }
            })
        })
        .collect();
    for h in writers {
        h.join().expect("writer");
    }
    let writes = (CLIENTS * WRITES) as u64;
    let synced = fsyncs(&mut c) - before;
    println!("{writes} acknowledged writes, {synced} fdatasyncs");
    assert!(synced >= 1, "acknowledged writes without any fdatasync");
    assert!(
        synced < writes,
        "{synced} fdatasyncs for {writes} concurrent writes: none was shared"
    );
    assert_eq!(c.int(&[b"DBSIZE"]), writes as i64);
}

/// `--fsync batch`: a write is acknowledged once written to the OS, before any fdatasync, and
/// fdatasync follows within the interval.
#[test]
fn fsync_batch_acknowledges_before_sync_and_syncs_within_the_interval() {
    let interval_ms = 1000u64;
    let server = Server::start(&[
        "--fsync",
        "batch",
        "--fsync-interval-ms",
        &interval_ms.to_string(),
        "--threads",
        "1",
        "--shards",
        "1",
    ]);
    let mut c = Conn::connect(server.addr);
    // Sequential writes on one connection: with `always` each would need its own fdatasync.
    let t = Instant::now();
    let before = fsyncs(&mut c);
    let n = 200u64;
    for i in 0..n {
        c.set(&format!("k{i}"), "v");
    }
    let during = fsyncs(&mut c) - before;
    // At most one fdatasync per interval passed (plus one in progress at the start).
    let intervals = t.elapsed().as_millis() as u64 / interval_ms + 2;
    assert!(
        during <= intervals && during < n,
        "{during} fdatasyncs for {n} sequential acknowledged writes in {:?}",
        t.elapsed()
    );
    // Then the interval's fdatasync covers them.
    let acked_at = fsyncs(&mut c);
    wait_until(
        Duration::from_millis(interval_ms * 10),
        "the batch fdatasync",
        || fsyncs(&mut c) > acked_at,
    );
    assert_eq!(c.persistence()["fsync_policy"], "batch");
}

// ---------------------------------------------------------------------------------------------
// 12. Recovery refusals and clean-up (docs/storage.md, Recovery).

/// A damaged snapshot stops the start; with `--repair` it is moved aside and the next older one
/// (here none) is used, with the WAL after it.
#[test]
fn damaged_snapshot_refuses_start_and_repair_skips_it() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), ONE_SHARD);
    let mut c = Conn::connect(server.addr);
    for i in 0..50 {
        c.set(&format!("snap:{i}"), "v");
    }
    drop(c);
    assert!(server.terminate().success());
    let snaps = snapshots(data.path(), 0);
    assert_eq!(snaps.len(), 1);
    // A second life writes to the WAL after the snapshot, then crashes.
    let server = Server::start_in(data.path(), ONE_SHARD);
    let mut c = Conn::connect(server.addr);
    for i in 0..30 {
        c.set(&format!("wal:{i}"), "w");
    }
    server.kill();
    let snap = shard_dir(data.path(), 0).join(format!("snap-{:020}.rks", snaps[0]));
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&snap, &bytes).unwrap();

    let err = match Server::try_start_in(data.path(), ONE_SHARD) {
        Ok(_) => panic!("started on a damaged snapshot"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(
        err.contains(&snap.display().to_string()),
        "names the file:\n{err}"
    );
    assert!(err.contains("--repair"), "says what to do:\n{err}");

    let mut flags = ONE_SHARD.to_vec();
    flags.push("--repair");
    let server = Server::start_in(data.path(), &flags);
    let log = server.log_text();
    assert!(log.contains("skipping unreadable snapshot"), "{log}");
    assert!(!snap.exists(), "the damaged snapshot was moved aside");
    assert!(snap.with_extension("damaged").exists());
    let mut c = Conn::connect(server.addr);
    // What only the snapshot had is gone; the WAL after it was replayed.
    assert_eq!(c.get("snap:0"), None);
    for i in 0..30 {
        assert_eq!(c.get(&format!("wal:{i}")).as_deref(), Some("w"), "wal:{i}");
    }
}

/// A missing segment in the middle of the WAL stops the start, naming the missing records.
#[test]
fn missing_middle_segment_refuses_start() {
    let data = tempfile::tempdir().unwrap();
    let flags = &[
        "--fsync",
        "always",
        "--threads",
        "1",
        "--shards",
        "1",
        "--wal-segment-bytes",
        "4096",
    ];
    let server = Server::start_in(data.path(), flags);
    let mut c = Conn::connect(server.addr);
    let value = "x".repeat(200);
    for i in 0..100 {
        c.set(&format!("k{i}"), &value);
    }
    server.kill();
    let segs = segments(data.path(), 0);
    assert!(segs.len() >= 3, "{segs:?}");
    let (first, gone) = &segs[1];
    std::fs::remove_file(gone).unwrap();
    let err = match Server::try_start_in(data.path(), flags) {
        Ok(_) => panic!("started with a segment missing"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(
        err.contains(&format!("WAL records {first}..")) && err.contains("are missing"),
        "names the gap from {first}:\n{err}"
    );
}

/// `*.tmp` (an unfinished snapshot) is deleted at start.
#[test]
fn unfinished_snapshot_files_are_deleted_at_start() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    c.set("k", "v");
    drop(c);
    assert!(server.terminate().success());
    let tmps: Vec<PathBuf> = (0..2)
        .map(|s| shard_dir(data.path(), s).join(format!("snap-{:020}.tmp", 999)))
        .collect();
    for t in &tmps {
        std::fs::write(t, b"half a snapshot").unwrap();
    }
    let server = Server::start_in(data.path(), TWO_SHARDS);
    for t in &tmps {
        assert!(!t.exists(), "{} is still there", t.display());
    }
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.get("k").as_deref(), Some("v"));
}

/// A data directory written by a newer build (unknown `format` in `meta`) is refused with a
/// clear error, and left as it is.
#[test]
fn unknown_data_format_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let meta = data.path().join("meta");
    let text = "# ringkv data directory; do not edit\nformat = 99\nnode_id = 7\nshards = 1\n";
    std::fs::write(&meta, text).unwrap();
    let err = match Server::try_start_in(data.path(), ONE_SHARD) {
        Ok(_) => panic!("started on an unknown data format"),
        Err(e) => e,
    };
    assert!(
        err.contains("exited with") && !err.contains("exit status: 0"),
        "{err}"
    );
    assert!(
        err.contains(&meta.display().to_string()),
        "names the file:\n{err}"
    );
    assert!(
        err.contains("format 99 is not supported"),
        "says what is wrong:\n{err}"
    );
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), text);
}

/// A WAL segment with an unknown (newer) format version is refused, also with `--repair`:
/// it is not damage to set aside.
#[test]
fn unknown_segment_format_is_refused() {
    let data = tempfile::tempdir().unwrap();
    let seg = one_segment(data.path(), 5);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&(record::FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let err = match Server::try_start_in(data.path(), ONE_SHARD) {
        Ok(_) => panic!("started on an unknown segment format"),
        Err(e) => e,
    };
    assert!(
        err.contains(&format!(
            "unsupported segment format version {}",
            record::FORMAT_VERSION + 1
        )),
        "{err}"
    );
    assert!(err.contains(&seg.display().to_string()), "{err}");
    // Not damage: --repair must not move a newer build's log aside.
    let mut flags = ONE_SHARD.to_vec();
    flags.push("--repair");
    let err = match Server::try_start_in(data.path(), &flags) {
        Ok(_) => panic!("--repair started on an unknown segment format"),
        Err(e) => e,
    };
    assert!(err.contains("unsupported segment format version"), "{err}");
    assert!(seg.exists(), "the segment was moved aside");
}

/// `repair = true` in the config file works as `--repair` does (README: every flag can be set
/// in the file).
#[test]
fn repair_can_be_set_in_the_config_file() {
    let data = tempfile::tempdir().unwrap();
    let n = 20;
    let bad = 5;
    let seg = one_segment(data.path(), n);
    let mut bytes = std::fs::read(&seg).unwrap();
    let (offsets, _) = record_offsets(&bytes);
    bytes[offsets[bad] + 4] ^= 0x01; // the length field
    std::fs::write(&seg, &bytes).unwrap();
    assert!(
        Server::try_start_in(data.path(), ONE_SHARD).is_err(),
        "started on a corrupt WAL without repair"
    );
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("ringkv.toml");
    std::fs::write(&cfg, "repair = true\n").unwrap();
    let mut flags = ONE_SHARD.to_vec();
    flags.extend(["--config", cfg.to_str().unwrap()]);
    let server = Server::start_in(data.path(), &flags);
    let log = server.log_text();
    assert!(
        log.contains(&format!("dropped {} WAL records", n - bad - 1)),
        "{log}"
    );
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.get("key:0").as_deref(), Some("value-0"));
    assert_eq!(c.get(&format!("key:{bad}")), None);
}

// ---------------------------------------------------------------------------------------------
// 13. Snapshot triggers.

/// `--snapshot-interval-secs`: a changed shard is snapshotted at least that often.
#[test]
fn snapshot_interval_triggers_a_snapshot() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(
        data.path(),
        &[
            "--threads",
            "1",
            "--shards",
            "1",
            "--snapshot-interval-secs",
            "1",
            "--snapshot-wal-bytes",
            "0",
        ],
    );
    let mut c = Conn::connect(server.addr);
    assert_eq!(snapshots(data.path(), 0), Vec::<u64>::new());
    for i in 0..10 {
        c.set(&format!("k{i}"), "v");
    }
    wait_until(Duration::from_secs(20), "a timed snapshot", || {
        c.persistence()["snapshots_taken"] != "0"
    });
    wait_until(Duration::from_secs(5), "the snapshot file", || {
        !snapshots(data.path(), 0).is_empty()
    });
    assert_eq!(c.persistence()["last_snapshot_status"], "ok");
    // Nothing else can have triggered it: no BGSAVE was sent, snapshots by WAL size are off,
    // and the server is still running (no shutdown snapshot).
    server.kill();
    let server = Server::start_in(data.path(), ONE_SHARD);
    let log = server.log_text();
    assert_eq!(
        log_field(&log, "recovery done", "snapshot_entries"),
        Some(10),
        "{log}"
    );
}

/// SIGINT is a graceful shutdown too: snapshots written, exit status 0.
#[test]
fn sigint_writes_snapshots_and_exits_zero() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let mut c = Conn::connect(server.addr);
    for i in 0..100 {
        c.set(&format!("k{i}"), "v");
    }
    drop(c);
    let pid = server.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
    for shard in 0..2 {
        assert_eq!(snapshots(data.path(), shard).len(), 1, "shard {shard}");
    }
    let server = Server::start_in(data.path(), TWO_SHARDS);
    let log = server.log_text();
    assert_eq!(
        log_field(&log, "recovery done", "snapshot_entries"),
        Some(100),
        "{log}"
    );
    assert_eq!(log_field(&log, "recovery done", "wal_records"), Some(0));
}
