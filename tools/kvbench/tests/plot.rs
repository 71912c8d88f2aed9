//! `--plot` draws an SVG from JSON results.

mod support;

use std::time::Duration;

use support::{kvbench, FakeResp};

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn plots_results_as_svg() {
    let server = FakeResp::start(Duration::ZERO, None);
    let addr = server.addr.to_string();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("closed.json");
    let b = dir.path().join("open.json");
    for (path, extra) in [(&a, &["-P", "4"][..]), (&b, &["--rate", "2000"][..])] {
        let mut args = vec!["--addr", &addr, "--proto", "resp", "-d", "1s", "-q"];
        args.extend(extra);
        args.extend(["--json", path.to_str().unwrap()]);
        let out = kvbench(&args, LIMIT);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let svg = dir.path().join("plot.svg");
    let out = kvbench(
        &[
            "--plot",
            svg.to_str().unwrap(),
            a.to_str().unwrap(),
            b.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    for needle in [
        "Throughput",
        "Latency by percentile",
        "closed",
        "open",
        "<polyline",
    ] {
        assert!(text.contains(needle), "no {needle} in the SVG");
    }

    // Not a result: a clear error, not a panic.
    let out = kvbench(
        &["--plot", svg.to_str().unwrap(), svg.to_str().unwrap()],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a kvbench JSON result"));
}
