//! `tools/local-cluster.sh start 3` / `status` / `stop` with this build's binaries, on free
//! ports: the nodes agree on three members up, and `stop` leaves none of the recorded PIDs.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const SCRIPT_LIMIT: Duration = Duration::from_secs(90);

/// Three consecutive free loopback ports (the script numbers nodes from its first port).
fn free_run_of_3() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = first.local_addr().expect("addr").port();
        if p > 65000 {
            continue;
        }
        let rest: Vec<_> = (1..3)
            .filter_map(|i| TcpListener::bind(("127.0.0.1", p + i)).ok())
            .collect();
        if rest.len() == 2 {
            return p;
        }
    }
    panic!("no three consecutive free ports")
}

fn script(dir: &Path, port: u16, args: &[&str]) -> Ran {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_ringkv"))
        .parent()
        .expect("bin dir");
    // kvsh is what the script asks CLUSTER NODES with.
    let _ = kvsh_binary();
    run_bounded(
        Command::new("bash")
            .arg(repo.join("tools/local-cluster.sh"))
            .args(args)
            .env("LOCAL_CLUSTER_DIR", dir)
            .env("LOCAL_CLUSTER_PORT", port.to_string())
            .env("LOCAL_CLUSTER_WAIT", "60")
            .env("RINGKV_BIN_DIR", bin_dir)
            .env_remove("RINGKV_CLUSTER_SECRET"),
        SCRIPT_LIMIT,
    )
}

fn alive(pid: u32) -> bool {
    // A zombie (exited, not yet reaped by its new parent) is gone for this purpose.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// Kills whatever the script recorded if the test fails half way.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in recorded_pids(&self.0) {
            if alive(pid) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn recorded_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect()
}

#[test]
fn start_3_converges_and_stop_ends_exactly_its_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("local-cluster");
    let _cleanup = Cleanup(dir.clone());
    let port = free_run_of_3();

    let ran = script(&dir, port, &["start", "3"]);
    assert!(ran.status.success(), "start 3 failed: {ran:?}");
    assert!(ran.stdout.contains("cluster secret (dev only"), "{ran:?}");
    assert!(ran.stdout.contains("cluster up: 3 nodes"), "{ran:?}");
    let pids = recorded_pids(&dir);
    assert_eq!(pids.len(), 3, "{ran:?}");
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");

    // Checked here too, not only by the script: every node lists three nodes up.
    for i in 0..3 {
        let addr = format!("127.0.0.1:{}", port + i).parse().expect("addr");
        let reply = common::resp::Conn::connect(addr).call_str(&["CLUSTER", "NODES"]);
        let common::resp::Reply::Bulk(Some(text)) = reply else {
            panic!("CLUSTER NODES of {addr}: {reply:?}")
        };
        let text = String::from_utf8_lossy(&text).into_owned();
        let up = text
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some("up"))
            .count();
        assert_eq!(up, 3, "node {addr}:\n{text}");
    }
    for i in 1..=3 {
        assert!(dir.join(format!("node{i}")).is_dir());
        assert!(dir.join(format!("node{i}.log")).is_file());
    }

    let ran = script(&dir, port, &["status"]);
    assert!(ran.status.success(), "{ran:?}");
    assert_eq!(ran.stdout.matches(" running").count(), 3, "{ran:?}");
    assert_eq!(ran.stdout.matches(" up ").count(), 3, "{ran:?}");

    // A second start refuses while the first runs.
    let ran = script(&dir, port, &["start", "3"]);
    assert!(!ran.status.success(), "{ran:?}");
    assert!(ran.stderr.contains("already running"), "{ran:?}");

    let ran = script(&dir, port, &["stop"]);
    assert!(ran.status.success(), "{ran:?}");
    wait_until(
        "the recorded nodes to exit",
        Duration::from_secs(20),
        || pids.iter().all(|&p| !alive(p)),
    );
    assert!(!dir.join("pids").exists());
}
