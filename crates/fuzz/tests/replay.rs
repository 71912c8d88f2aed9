//! Replays every file of `fuzz/corpus/<target>/` through its target body, so `cargo test`
//! re-checks every seed and every input the fuzzer ever kept (including the ones that once
//! crashed). A missing or empty corpus directory fails the test.

use std::path::PathBuf;

#[global_allocator]
static ALLOC: ringkv_fuzz::alloc::TrackingAlloc = ringkv_fuzz::alloc::TrackingAlloc;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn replay(target: &str) {
    let body = ringkv_fuzz::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no fuzz target named {target}"));
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "corpus {} is missing ({e}); run `cargo run -p ringkv-fuzz --bin gen-seeds`",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()).expect("corpus directory entry"))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        // A panic names the file, so it can be fuzzed or debugged alone.
        let r = std::panic::catch_unwind(|| body(&data));
        assert!(r.is_ok(), "{target}: {} fails its target", f.display());
    }
    eprintln!("{target}: replayed {} corpus files", files.len());
}

#[test]
fn frame_corpus() {
    replay("frame");
}

#[test]
fn resp_corpus() {
    replay("resp");
}

#[test]
fn wal_corpus() {
    replay("wal");
}

#[test]
fn snapshot_corpus() {
    replay("snapshot");
}

#[test]
fn every_target_has_a_replay_test() {
    let names: Vec<&str> = ringkv_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["frame", "resp", "wal", "snapshot"]);
}

/// The memory bound the targets assert is only real if the tracking allocator runs.
#[test]
fn allocation_tracking_is_installed() {
    use ringkv_fuzz::alloc;
    alloc::reset();
    let base = alloc::live();
    let v: Vec<u8> = Vec::with_capacity(123_456);
    assert!(alloc::peak_growth(base) >= 123_456);
    drop(v);
    // Many small blocks held at once count as much as one big one.
    let r = std::panic::catch_unwind(|| {
        alloc::bounded("test", 10_000, || {
            (0..100)
                .map(|_| Vec::<u8>::with_capacity(500))
                .collect::<Vec<_>>()
        })
    });
    assert!(
        r.is_err(),
        "memory held over the bound must fail the target"
    );
    let r = std::panic::catch_unwind(|| {
        alloc::bounded("test", 10_000, || {
            for _ in 0..100 {
                drop(Vec::<u8>::with_capacity(500));
            }
        })
    });
    assert!(r.is_ok(), "memory freed along the way must not count");
}

/// The committed WAL and snapshot seeds must get past the checksums (else the fuzzer starts
/// from inputs that the scanner rejects at the first byte); regenerate them with gen-seeds
/// when the formats change.
#[test]
fn seeds_reach_past_the_checksums() {
    use ringkv::wal::record;
    let read = |target: &str, name: &str| {
        let p = corpus_dir(target).join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (seg, _) = ringkv_fuzz::wal_input(&read("wal", "seed-clear-and-put"));
    let scan = record::scan(&seg, 3, |_| {});
    assert_eq!(
        scan.damage, None,
        "seed-clear-and-put no longer scans clean"
    );
    assert!(scan.records >= 5, "{} records", scan.records);

    let (file, _) = ringkv_fuzz::snapshot_input(&read("snapshot", "seed-three"));
    let mut shard = ringkv::store::Shard::default();
    let loaded = ringkv::snapshot::load_bytes(
        &file,
        std::path::Path::new("seed-three"),
        0,
        &mut shard,
        &|_| {},
    );
    assert_eq!(loaded.ok(), Some((17, 3)), "seed-three no longer loads");
    // One of the three is a tombstone: kept, not counted as a key.
    assert_eq!(shard.len(), 2);
}
