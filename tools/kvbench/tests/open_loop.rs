//! Open loop at a fixed rate: latency counts from the intended send time, so a server that
//! cannot keep up shows growing latency (no coordinated omission), and a fast one does not.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::{kvbench_json, FakeResp};

const LIMIT: Duration = Duration::from_secs(30);

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// What an open-loop run against an overloaded server must show: requests never sent, a p99
/// far above the service time, and latency that grows as the run falls behind its schedule.
fn assert_falling_behind(r: &serde_json::Value) {
    let all = &r["latency_us"]["all"];
    assert!(r["totals"]["missed"].as_u64().unwrap() > 1000, "{r}");
    assert!(f(&all["p99"]) > 50_000.0, "p99 {} µs", all["p99"]);
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 2, "{r}");
    let (first, second) = (f(&series[0]["p50_us"]), f(&series[1]["p50_us"]));
    assert!(second > first * 2.0, "p50 by second: {first} then {second}");
}

const OVERLOAD: &[&str] = &[
    "--proto",
    "resp",
    "--rate",
    "2000",
    "--connections",
    "1",
    "--pipeline",
    "16",
    "--duration",
    "2s",
];

/// The same, against ringkv itself slowed down with its test-only `--test-delay-us`.
#[test]
fn overloaded_ringkv_shows_rising_latency() {
    let server = support::Server::start_with(&["--test-delay-us", "2000"]);
    let addr = server.addr.to_string();
    let mut args = vec!["--addr", &addr];
    args.extend_from_slice(OVERLOAD);
    assert_falling_behind(&kvbench_json(&args, LIMIT));
}

#[test]
fn overloaded_server_shows_rising_latency() {
    // ~2 ms per command, one at a time: at most ~500 requests/s.
    let server = FakeResp::start(Duration::from_millis(2), None);
    let addr = server.addr.to_string();
    let mut args = vec!["--addr", &addr];
    args.extend_from_slice(OVERLOAD);
    let r = kvbench_json(&args, LIMIT);
    assert_falling_behind(&r);
    // Far fewer than the 4000 scheduled got through; the rest were never sent.
    let requests = r["totals"]["requests"].as_u64().unwrap();
    assert!(requests < 2000, "{r}");
    let all = &r["latency_us"]["all"];
    assert!(f(&all["max"]) > 500_000.0, "max {} µs", all["max"]);
    let series = r["series"].as_array().unwrap();
    let second = f(&series[1]["p50_us"]);
    assert!(second > 100_000.0, "p50 of the second second: {second}");
}

#[test]
fn fast_server_keeps_latency_low() {
    let server = FakeResp::start(Duration::ZERO, None);
    let addr = server.addr.to_string();
    let r = kvbench_json(
        &[
            "--addr",
            &addr,
            "--proto",
            "resp",
            "--rate",
            "2000",
            "--connections",
            "1",
            "--pipeline",
            "16",
            "--duration",
            "2s",
        ],
        LIMIT,
    );
    let all = &r["latency_us"]["all"];
    let requests = r["totals"]["requests"].as_u64().unwrap();
    assert!((3900..=4000).contains(&requests), "{r}");
    assert!(f(&all["p99"]) < 50_000.0, "p99 {} µs", all["p99"]);
    // The rate was held: about 2000 per second.
    let tput = f(&r["throughput"]["requests_per_sec"]);
    assert!((1800.0..2200.0).contains(&tput), "{tput} req/s");
}

#[test]
fn open_loop_request_count_is_exact() {
    let server = FakeResp::start(Duration::ZERO, None);
    let addr = server.addr.to_string();
    let r = kvbench_json(
        &[
            "--addr",
            &addr,
            "--proto",
            "resp",
            "--rate",
            "20000",
            "--connections",
            "3",
            "--pipeline",
            "8",
            "--requests",
            "3001",
            "--warmup",
            "100ms",
        ],
        LIMIT,
    );
    assert_eq!(r["totals"]["requests"].as_u64(), Some(3001));
    let warmup = r["totals"]["warmup_requests"].as_u64().unwrap();
    assert_eq!(warmup, 2000, "100 ms at 20000/s");
    assert_eq!(server.commands.load(Ordering::SeqCst), 3001 + warmup);
}
