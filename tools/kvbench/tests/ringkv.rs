//! kvbench against a real ringkv: exact request counts (checked with the server's own
//! counter), the JSON result's shape and the histogram file, for both protocols.

mod support;

use std::time::{Duration, Instant};

use support::{kvbench, kvbench_json, Server};

const LIMIT: Duration = Duration::from_secs(60);

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Runs `--requests 5000 --connections 4 --pipeline 8` and checks that the server processed
/// exactly 5000 commands more (plus kvbench's setup commands, reported as 0).
fn exact_count(proto: &str) {
    let server = Server::start();
    let addr = server.addr.to_string();
    // Each INFO is itself one command, counted after its reply: measure that offset.
    let a = server.commands_processed();
    let b = server.commands_processed();
    let per_info = b - a;
    let result = kvbench_json(
        &[
            "--addr",
            &addr,
            "--proto",
            proto,
            "--requests",
            "5000",
            "--connections",
            "4",
            "--pipeline",
            "8",
            "--read",
            "0.6",
            "--write",
            "0.3",
            "--delete",
            "0.1",
            "--value-size",
            "8..64",
            "--ttl-share",
            "0.5",
        ],
        LIMIT,
    );
    let totals = &result["totals"];
    assert_eq!(u(&totals["requests"]), 5000, "{totals}");
    assert_eq!(u(&totals["errors"]), 0, "{result}");
    let setup = u(&totals["setup_commands"]);
    let per_op: u64 = ["read", "write", "delete"]
        .iter()
        .map(|op| u(&totals["per_op"][op]["requests"]))
        .sum();
    assert_eq!(per_op, 5000);
    for op in ["read", "write", "delete"] {
        assert!(u(&totals["per_op"][op]["requests"]) > 0, "{op}: {totals}");
    }

    // The server adds a connection's count when it finishes a batch, which can be just
    // after the last reply went out: poll (bounded) until the count settles.
    let expected = b + per_info + 5000 + setup;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = 0;
    loop {
        let c = server.commands_processed() - polls * per_info;
        polls += 1;
        assert!(
            c <= expected,
            "server counted {c} commands, more than {expected}"
        );
        if c == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server counted {c} commands, expected {expected}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exactly_n_requests_resp() {
    exact_count("resp");
}

#[test]
fn exactly_n_requests_binary() {
    exact_count("binary");
}

fn json_and_hdr(proto: &str) {
    let server = Server::start();
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let hdr = dir.path().join("latency.hdr");
    let json_path = dir.path().join("result.json");
    let out = kvbench(
        &[
            "--addr",
            &addr,
            "--proto",
            proto,
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--connections",
            "2",
            "--pipeline",
            "4",
            "--dist",
            "zipfian",
            "--keys",
            "1000",
            "--consistency",
            "quorum",
            "--quiet",
            "--json",
            json_path.to_str().unwrap(),
            "--hdr-out",
            hdr.to_str().unwrap(),
        ],
        LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("p99.9"), "summary table: {stdout}");
    assert!(stdout.contains("consistency quorum"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(r["config"]["proto"], proto);
    assert_eq!(r["config"]["consistency"], "quorum");
    assert_eq!(r["config"]["mode"], "closed");
    let total = u(&r["totals"]["requests"]);
    assert!(total > 100, "{r}");
    assert!(u(&r["totals"]["warmup_requests"]) > 0);
    let per_op: u64 = ["read", "write", "delete"]
        .iter()
        .map(|op| u(&r["totals"]["per_op"][op]["requests"]))
        .sum();
    assert_eq!(per_op, total);
    let series: u64 = r["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| u(&s["requests"]))
        .sum();
    assert_eq!(series, total);
    let all = &r["latency_us"]["all"];
    let p = |k: &str| all[k].as_f64().unwrap();
    assert!(p("p50") > 0.0 && p("p50") <= p("p90") && p("p90") <= p("p99"));
    assert!(p("p99") <= p("p999") && p("p999") <= p("max"));
    assert_eq!(u(&all["count"]), total);
    assert!(r["throughput"]["requests_per_sec"].as_f64().unwrap() > 0.0);
    assert!(r["error"].is_null());

    let bytes = std::fs::read(&hdr).unwrap();
    let h: hdrhistogram::Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .expect("V2 histogram");
    assert_eq!(h.len(), total);
}

#[test]
fn json_and_histogram_resp() {
    json_and_hdr("resp");
}

#[test]
fn json_and_histogram_binary() {
    json_and_hdr("binary");
}
