//! Failures end the run with a clear message and a non-zero exit, never a panic or a hang.

mod support;

use std::time::Duration;

use support::{kvbench, FakeResp};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn connection_refused_is_reported() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for proto in ["resp", "binary"] {
        let addr = format!("127.0.0.1:{port}");
        let out = kvbench(
            &["--addr", &addr, "--proto", proto, "-n", "10", "-q"],
            LIMIT,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("cannot connect"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn server_closing_mid_run_ends_the_run() {
    let server = FakeResp::start(Duration::ZERO, Some(300));
    let addr = server.addr.to_string();
    let out = kvbench(
        &[
            "--addr", &addr, "--proto", "resp", "-c", "2", "-P", "4", "-n", "100000", "--json",
            "-", "-q",
        ],
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the run ended early"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON even on failure");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("closed the connection"),
        "{r}"
    );
    assert_eq!(r["totals"]["requests"].as_u64(), Some(300));
}

#[test]
fn invalid_flags_are_rejected() {
    for args in [
        &["--read", "1.0"][..],
        &["--connections", "0"],
        &["--dist", "pareto"],
        &["--consistency", "most"],
        &["--value-size", "10..5"],
        &["--duration", "5 parsecs"],
    ] {
        let out = kvbench(args, LIMIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
}
