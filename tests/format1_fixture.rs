//! Backward compatibility (in the manner of redb's `backward_compatibility.rs`): a data
//! directory written by an older release opens with every key, value and expiry intact, and
//! keeps them after the build has converted it and restarted on it.
//!
//! The fixture in `tests/fixtures/format1/` was made by the format-1 release (its README says
//! how); `expected.tsv` lists what it holds.

mod common;

use common::resp::{Conn, Reply};
use common::*;
use ringkv_client::{Client, ClientConfig, PutOptions};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/data")
}

struct Expected {
    key: String,
    expires_at_ms: i64,
    value: Vec<u8>,
}

fn expected() -> Vec<Expected> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/expected.tsv");
    let text = std::fs::read_to_string(&path).expect("read expected.tsv");
    text.lines()
        .map(|line| {
            let mut f = line.split('\t');
            let key = f.next().expect("key").to_string();
            let expires_at_ms = f
                .next()
                .expect("expiry")
                .parse()
                .expect("expiry is a number");
            let hex = f.next().unwrap_or("");
            let value = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            Expected {
                key,
                expires_at_ms,
                value,
            }
        })
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Every expected key reads back with its value and expiry; the deleted, renamed-away and
/// expired keys do not; nothing else is there.
fn check_contents(server: &Server, what: &str) {
    let mut c = Conn::connect(server.addr);
    let want = expected();
    for e in &want {
        let got = c.call(&[b"GET", e.key.as_bytes()]);
        assert_eq!(
            got,
            Reply::Bulk(Some(e.value.clone())),
            "{what}: GET {} is wrong",
            e.key
        );
        let before = now_ms();
        let Reply::Int(pttl) = c.call(&[b"PTTL", e.key.as_bytes()]) else {
            panic!("{what}: PTTL {} is not an integer", e.key)
        };
        let after = now_ms();
        if e.expires_at_ms < 0 {
            assert_eq!(pttl, -1, "{what}: {} gained an expiry", e.key);
        } else {
            // The expiry is absolute: PTTL is it minus the server's clock during the call.
            let lo = e.expires_at_ms - after;
            let hi = e.expires_at_ms - before;
            assert!(
                (lo..=hi).contains(&pttl),
                "{what}: PTTL {} = {pttl}, want {lo}..={hi}",
                e.key
            );
        }
    }
    for gone in ["gone", "expired", "key:1", "key:3"] {
        assert_eq!(
            c.call(&[b"EXISTS", gone.as_bytes()]),
            Reply::Int(0),
            "{what}: {gone} is readable"
        );
    }
    let Reply::Array(Some(keys)) = c.call(&[b"KEYS", b"*"]) else {
        panic!("{what}: KEYS * is not an array")
    };
    assert_eq!(keys.len(), want.len(), "{what}: KEYS * = {keys:?}");
}

/// The build converts the directory on open: the metadata says format 2 at once, and every
/// shard soon has a format-2 snapshot (which replaces the format-1 records).
fn assert_converted(dir: &Path) {
    let meta = std::fs::read_to_string(dir.join("meta")).unwrap();
    assert!(meta.contains("format = 2"), "meta not converted:\n{meta}");
    // The keys keep the placement they were written with (docs/storage.md, "Placement").
    assert!(
        !meta.contains("partitions"),
        "meta gained partitions:\n{meta}"
    );
    for shard in ["shard-0000", "shard-0001"] {
        let has_format_2_snapshot = || {
            std::fs::read_dir(dir.join(shard))
                .unwrap()
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".rks"))
                .any(|e| {
                    std::fs::read(e.path())
                        .is_ok_and(|b| b.len() > 12 && b[8..12] == 2u32.to_le_bytes())
                })
        };
        wait_until(
            &format!("a format-2 snapshot of {shard}"),
            std::time::Duration::from_secs(30),
            has_format_2_snapshot,
        );
    }
}

#[test]
fn format1_data_directory_opens_with_everything_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    copy_dir(&fixture(), &dir);
    let flags = ["--threads", "2", "--shards", "2"];

    let server = Server::start_in(&dir, &flags);
    check_contents(&server, "first open of the format-1 directory");
    assert_converted(&dir);
    // A versioned write with the context the old clock gave supersedes it: one value left.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = Client::connect(server.addr, ClientConfig::default())
            .await
            .expect("connect");
        let old = client.get("versioned").await.unwrap().expect("versioned");
        assert_eq!(old.values.len(), 1, "one version: {old:?}");
        let opts = PutOptions {
            context: Some(old.context.clone()),
            ttl: None,
        };
        client.put_with("versioned", "four", opts).await.unwrap();
        let now = client.get("versioned").await.unwrap().expect("versioned");
        assert_eq!(
            now.values.len(),
            1,
            "the new write superseded the old: {now:?}"
        );
        assert_eq!(&now.values[0][..], b"four");
        client
            .put_with(
                "versioned",
                "three",
                PutOptions {
                    context: Some(now.context.clone()),
                    ttl: None,
                },
            )
            .await
            .unwrap();
    });
    let _ = server.terminate();

    // Restarted on what this build wrote (converted, plus one write): still all there.
    let server = Server::start_in(&dir, &flags);
    check_contents(&server, "restart after conversion");
    let _ = server.kill();
    let server = Server::start_in(&dir, &flags);
    check_contents(&server, "restart after kill -9");
}
