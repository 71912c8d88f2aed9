//! Observability: JSON logs, INFO commandstats / latencystats, SLOWLOG and the Prometheus
//! metrics endpoint.

mod common;

use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::*;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn json_log_format_ready_line_is_json() {
    let server = Server::start(&["--log-format", "json", "--threads", "1"]);
    let log = server.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("ready on"))
        .expect("ready line logged");
    let v: serde_json::Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("ready line is not JSON ({e}): {line}"));
    let msg = v["fields"]["message"].as_str().expect("fields.message");
    assert!(msg.contains("ready on"), "{msg}");
    assert_eq!(v["level"], "INFO", "{line}");
    // Every line is JSON, not just the ready one.
    for l in log.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
    }
    assert_serving(&server);
}

fn bulk_text(r: &Reply) -> String {
    match r {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
        other => panic!("expected a bulk reply, got {other:?}"),
    }
}

fn info(c: &mut Conn, section: &str) -> String {
    bulk_text(&c.call_str(&["INFO", section]))
}

/// `key:a=1,b=2` lines of an INFO reply, as (key, [(a, "1"), ...]).
fn info_fields(text: &str, prefix: &str) -> Vec<(String, Vec<(String, String)>)> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| {
            let (name, rest) = l.split_once(':').expect("name:fields");
            let fields = rest
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("k=v");
                    (k.to_string(), v.to_string())
                })
                .collect();
            (name.to_string(), fields)
        })
        .collect()
}

fn field<'a>(
    rows: &'a [(String, Vec<(String, String)>)],
    name: &str,
    key: &str,
) -> Option<&'a str> {
    rows.iter()
        .find(|(n, _)| n == name)?
        .1
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[test]
fn commandstats_and_latencystats() {
    // Two loops, so some of the commands are run by the loop that doesn't hold the
    // connection: each must still be counted exactly once.
    let server = Server::start(&["--threads", "2", "--shards", "4", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    const N: usize = 50;
    for i in 0..N {
        let k = format!("k{i}");
        assert_eq!(c.call_str(&["SET", &k, "v"]), Reply::Simple("OK".into()));
    }
    for i in 0..10 {
        c.call_str(&["GET", &format!("k{i}")]);
    }
    c.call_str(&["SET", "n", "notanumber"]);
    assert_eq!(c.call_str(&["INCR", "n"]).kind(), "error");
    assert_eq!(c.call_str(&["GET"]).kind(), "error"); // wrong arity: rejected
    assert_eq!(c.call_str(&["SET", "a", "b", "BOGUS"]).kind(), "error"); // failed

    let text = info(&mut c, "commandstats");
    assert!(text.starts_with("# Commandstats\r\n"), "{text}");
    let rows = info_fields(&text, "cmdstat_");
    assert_eq!(
        field(&rows, "set", "calls"),
        Some(&*(N + 2).to_string()),
        "{text}"
    );
    assert_eq!(field(&rows, "set", "failed_calls"), Some("1"), "{text}");
    assert_eq!(field(&rows, "get", "calls"), Some("10"), "{text}");
    assert_eq!(field(&rows, "get", "rejected_calls"), Some("1"), "{text}");
    assert_eq!(field(&rows, "get", "failed_calls"), Some("0"), "{text}");
    assert_eq!(field(&rows, "incr", "calls"), Some("1"), "{text}");
    assert_eq!(field(&rows, "incr", "failed_calls"), Some("1"), "{text}");
    let per_call = field(&rows, "set", "usec_per_call").unwrap();
    assert_eq!(
        per_call.split_once('.').map(|(_, d)| d.len()),
        Some(2),
        "{per_call}"
    );
    let usec: u64 = field(&rows, "set", "usec").unwrap().parse().unwrap();
    let f: f64 = per_call.parse().unwrap();
    assert!((f - usec as f64 / (N + 2) as f64).abs() < 0.01, "{text}");
    assert!(
        field(&rows, "del", "calls").is_none(),
        "never called: {text}"
    );

    let text = info(&mut c, "latencystats");
    assert!(text.starts_with("# Latencystats\r\n"), "{text}");
    let rows = info_fields(&text, "latency_percentiles_usec_");
    let p = |k: &str| -> f64 {
        let v = field(&rows, "set", k).unwrap_or_else(|| panic!("{k}: {text}"));
        assert_eq!(v.split_once('.').map(|(_, d)| d.len()), Some(3), "{v}");
        v.parse().unwrap()
    };
    let (p50, p99, p999) = (p("p50"), p("p99"), p("p99.9"));
    assert!(p50 <= p99 && p99 <= p999, "{text}");

    // Not in the default INFO, but in INFO all / everything.
    let default = bulk_text(&c.call_str(&["INFO"]));
    assert!(!default.contains("# Commandstats"), "{default}");
    assert!(!default.contains("# Latencystats"), "{default}");
    assert!(default.contains("# Keyspace"), "{default}");
    for s in ["all", "everything"] {
        let all = info(&mut c, s);
        assert!(all.contains("# Commandstats\r\ncmdstat_"), "{all}");
        assert!(
            all.contains("# Latencystats\r\nlatency_percentiles_usec_"),
            "{all}"
        );
    }

    assert_eq!(
        c.call_str(&["CONFIG", "RESETSTAT"]),
        Reply::Simple("OK".into())
    );
    let text = info(&mut c, "commandstats");
    let rows = info_fields(&text, "cmdstat_");
    assert!(field(&rows, "set", "calls").is_none(), "{text}");
    assert!(field(&rows, "get", "calls").is_none(), "{text}");
    let text = info(&mut c, "latencystats");
    assert!(!text.contains("usec_set:"), "{text}");
}

fn array(r: Reply) -> Vec<Reply> {
    match r {
        Reply::Array(Some(v)) => v,
        other => panic!("expected an array, got {other:?}"),
    }
}

fn int(r: &Reply) -> i64 {
    match r {
        Reply::Int(n) => *n,
        other => panic!("expected an integer, got {other:?}"),
    }
}

#[test]
fn slowlog() {
    let server = Server::start(&["--threads", "2", "--shards", "2", "--fsync", "off"]);
    let mut c = Conn::connect(server.addr);
    let ok = Reply::Simple("OK".into());
    // Defaults.
    let got = array(c.call_str(&["CONFIG", "GET", "slowlog-*"]));
    assert_eq!(
        got,
        vec![
            Reply::Bulk(Some(b"slowlog-log-slower-than".to_vec())),
            Reply::Bulk(Some(b"10000".to_vec())),
            Reply::Bulk(Some(b"slowlog-max-len".to_vec())),
            Reply::Bulk(Some(b"128".to_vec())),
        ]
    );
    assert_eq!(c.call_str(&["SLOWLOG", "LEN"]), Reply::Int(0));
    assert_eq!(c.call_str(&["SLOWLOG", "GET"]), Reply::Array(Some(vec![])));

    // Log everything.
    assert_eq!(
        c.call_str(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        ok
    );
    assert_eq!(c.call_str(&["SLOWLOG", "RESET"]), ok);
    // Every entry below took at most the time since here.
    let logged_from = Instant::now();
    assert_eq!(c.call_str(&["CLIENT", "SETNAME", "observer"]), ok);
    let long = "x".repeat(200);
    assert_eq!(c.call_str(&["SET", "big", &long]), ok);
    let mut del: Vec<String> = vec!["DEL".into()];
    del.extend((0..40).map(|i| format!("key{i}")));
    let del: Vec<&str> = del.iter().map(String::as_str).collect();
    c.call_str(&del);
    for i in 0..5 {
        c.call_str(&["GET", &format!("g{i}")]);
    }

    let entries = array(c.call_str(&["SLOWLOG", "GET", "-1"]));
    let most_us = logged_from.elapsed().as_micros() as i64;
    // RESET, CLIENT SETNAME, SET, DEL, 5 GETs (newest first).
    assert_eq!(entries.len(), 9, "{entries:?}");
    let ids: Vec<i64> = entries.iter().map(|e| int(&array(e.clone())[0])).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let local = c.stream().local_addr().unwrap().to_string();
    for e in &entries {
        let e = array(e.clone());
        assert_eq!(e.len(), 6, "{e:?}");
        let t = int(&e[1]);
        assert!((now - 60..=now + 60).contains(&t), "{t} vs {now}");
        let us = int(&e[2]);
        assert!(
            (0..=most_us).contains(&us),
            "duration {us} µs is not within the {most_us} µs the commands took"
        );
        assert_eq!(bulk_text(&e[4]), local);
    }
    let set = array(entries[6].clone());
    let args = array(set[3].clone());
    assert_eq!(bulk_text(&args[0]), "SET");
    assert_eq!(
        bulk_text(&args[2]),
        format!("{}... (72 more bytes)", "x".repeat(128))
    );
    assert_eq!(bulk_text(&set[5]), "observer");
    let d = array(array(entries[5].clone())[3].clone());
    assert_eq!(d.len(), 32);
    assert_eq!(bulk_text(&d[0]), "DEL");
    assert_eq!(bulk_text(&d[30]), "key29");
    assert_eq!(bulk_text(&d[31]), "... (10 more arguments)");

    // Default count 10 and explicit counts.
    assert_eq!(array(c.call_str(&["SLOWLOG", "GET"])).len(), 10);
    assert_eq!(array(c.call_str(&["SLOWLOG", "GET", "2"])).len(), 2);
    assert_eq!(array(c.call_str(&["SLOWLOG", "GET", "0"])).len(), 0);
    let e = c.call_str(&["SLOWLOG", "GET", "-2"]);
    assert_eq!(
        e,
        Reply::Error("ERR count should be greater than or equal to -1".into())
    );
    assert_eq!(c.call_str(&["SLOWLOG", "GET", "x"]).kind(), "error");
    assert_eq!(c.call_str(&["SLOWLOG", "BOGUS"]).kind(), "error");
    assert_eq!(c.call_str(&["SLOWLOG", "LEN", "1"]).kind(), "error");
    assert!(array(c.call_str(&["SLOWLOG", "HELP"])).len() > 4);

    // Max length trims.
    assert_eq!(c.call_str(&["CONFIG", "SET", "slowlog-max-len", "3"]), ok);
    assert_eq!(c.call_str(&["SLOWLOG", "LEN"]), Reply::Int(3));
    for _ in 0..5 {
        c.call_str(&["PING"]);
    }
    assert_eq!(c.call_str(&["SLOWLOG", "LEN"]), Reply::Int(3));

    // Negative disables.
    assert_eq!(
        c.call_str(&["CONFIG", "SET", "slowlog-log-slower-than", "-1"]),
        ok
    );
    assert_eq!(c.call_str(&["SLOWLOG", "RESET"]), ok);
    c.call_str(&["SET", "a", "b"]);
    assert_eq!(c.call_str(&["SLOWLOG", "LEN"]), Reply::Int(0));
    assert_eq!(
        c.call_str(&["CONFIG", "GET", "slowlog-log-slower-than"]),
        Reply::Array(Some(vec![
            Reply::Bulk(Some(b"slowlog-log-slower-than".to_vec())),
            Reply::Bulk(Some(b"-1".to_vec())),
        ]))
    );
    assert_eq!(
        c.call_str(&["CONFIG", "SET", "slowlog-max-len", "abc"])
            .kind(),
        "error"
    );

    // AUTH is never logged (it carries a password).
    assert_eq!(
        c.call_str(&["CONFIG", "SET", "slowlog-log-slower-than", "0"]),
        ok
    );
    assert_eq!(c.call_str(&["SLOWLOG", "RESET"]), ok);
    c.call_str(&["AUTH", "secret"]);
    c.call_str(&["PING"]);
    let entries = array(c.call_str(&["SLOWLOG", "GET", "-1"]));
    let names: Vec<String> = entries
        .into_iter()
        .map(|e| bulk_text(&array(array(e)[3].clone())[0]).to_uppercase())
        .collect();
    // The commands around AUTH are logged, AUTH is not (newest first).
    assert_eq!(names, ["PING", "SLOWLOG"], "AUTH must not be logged");
}

#[test]
fn slowlog_flags() {
    let server = Server::start(&[
        "--threads",
        "1",
        "--slowlog-log-slower-than",
        "-1",
        "--slowlog-max-len",
        "5",
    ]);
    let mut c = Conn::connect(server.addr);
    let got = array(c.call_str(&["CONFIG", "GET", "slowlog-*"]));
    assert_eq!(bulk_text(&got[1]), "-1");
    assert_eq!(bulk_text(&got[3]), "5");
}

/// Waits (bounded) for a log line containing `needle`; returns it.
fn wait_log(server: &Server, needle: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(l) = server.log_text().lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            server.log_text()
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

/// One HTTP/1.1 request over a fresh connection: (status code, headers, body).
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    assert_eq!(body.len(), len, "body length");
    (status, head.to_string(), body.to_string())
}

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A strict parser of the text exposition format: `# HELP`/`# TYPE` comments, then
/// `name{label="value",...} number` lines. Checks every sample's family was declared first.
fn parse_prometheus(body: &str) -> Vec<Sample> {
    let mut types: std::collections::HashMap<String, String> = Default::default();
    let mut helped = std::collections::HashSet::new();
    let mut out = Vec::new();
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    assert!(body.ends_with('\n'), "body must end with a newline");
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name, tail) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap_or(""));
            assert!(ident(name), "bad name in {line:?}");
            match kw {
                "HELP" => {
                    assert!(!tail.is_empty(), "empty help: {line:?}");
                    assert!(helped.insert(name.to_string()), "HELP twice: {line:?}");
                }
                "TYPE" => {
                    assert!(
                        ["counter", "gauge", "summary", "histogram", "untyped"].contains(&tail),
                        "bad type: {line:?}"
                    );
                    assert!(
                        types.insert(name.to_string(), tail.to_string()).is_none(),
                        "TYPE twice: {line:?}"
                    );
                }
                _ => panic!("unknown comment {line:?}"),
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "bad line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("labels end with }");
                let labels = inner
                    .split(',')
                    .map(|kv| {
                        let (k, v) = kv.split_once('=').expect("label=value");
                        assert!(ident(k), "bad label name in {line:?}");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("quoted label value");
                        assert!(
                            !v.contains(['"', '\\', '\n']),
                            "unescaped label in {line:?}"
                        );
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(ident(name), "bad metric name in {line:?}");
        let family = if types.contains_key(name) {
            name
        } else {
            name.strip_suffix("_sum")
                .or_else(|| name.strip_suffix("_count"))
                .filter(|f| types.get(*f).is_some_and(|t| t == "summary"))
                .unwrap_or_else(|| panic!("sample before its TYPE: {line:?}"))
        };
        assert!(helped.contains(family), "no HELP for {family}");
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
    })
}

#[test]
fn prometheus_metrics_endpoint() {
    // Every duration the server reports took place after this.
    let t0 = Instant::now();
    let server = Server::start(&[
        "--threads",
        "2",
        "--shards",
        "2",
        "--fsync",
        "always",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let line = wait_log(&server, "metrics on ");
    let addr: std::net::SocketAddr = line
        [line.find("metrics on ").unwrap() + "metrics on ".len()..]
        .split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");

    let mut c = Conn::connect(server.addr);
    const N: usize = 30;
    for i in 0..N {
        assert_eq!(
            c.call_str(&["SET", &format!("m{i}"), "v"]),
            Reply::Simple("OK".into())
        );
    }
    c.call_str(&["GET", "m1"]);

    let (status, head, body) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{head}\n{body}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let samples = parse_prometheus(&body);
    let v = |name: &str, labels: &[(&str, &str)]| {
        find(&samples, name, labels)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{body}"))
            .value
    };
    assert!(
        v("ringkv_commands_total", &[("cmd", "set")]) >= N as f64,
        "{body}"
    );
    assert_eq!(v("ringkv_commands_total", &[("cmd", "get")]), 1.0);
    assert_eq!(
        v("ringkv_command_duration_seconds_count", &[("cmd", "set")]),
        N as f64
    );
    let q50 = v(
        "ringkv_command_duration_seconds",
        &[("cmd", "set"), ("quantile", "0.5")],
    );
    let q99 = v(
        "ringkv_command_duration_seconds",
        &[("cmd", "set"), ("quantile", "0.99")],
    );
    let q999 = v(
        "ringkv_command_duration_seconds",
        &[("cmd", "set"), ("quantile", "0.999")],
    );
    assert!(0.0 <= q50 && q50 <= q99 && q99 <= q999, "{body}");
    let within_test = |x: f64| (0.0..=t0.elapsed().as_secs_f64()).contains(&x);
    let sum = v("ringkv_command_duration_seconds_sum", &[("cmd", "set")]);
    assert!(
        within_test(sum),
        "SET time {sum} s beyond the test's run: {body}"
    );
    assert!(v("ringkv_connected_clients", &[]) >= 1.0);
    assert!(v("ringkv_connections_received_total", &[]) >= 1.0);
    assert!(v("ringkv_memory_rss_bytes", &[]) > 0.0);
    assert!(v("ringkv_used_memory_bytes", &[]) > 0.0);
    let keys = v("ringkv_keys", &[("shard", "0")]) + v("ringkv_keys", &[("shard", "1")]);
    assert_eq!(keys, N as f64);
    // Nothing was deleted: the gauges are there, at zero.
    assert_eq!(v("ringkv_tombstones", &[]), 0.0);
    assert_eq!(v("ringkv_tombstones_purged_total", &[]), 0.0);
    assert!(
        v("ringkv_wal_fsyncs_total", &[]) >= 1.0,
        "--fsync always: {body}"
    );
    assert!(v("ringkv_wal_bytes", &[]) > 0.0);
    let per_sec = v("ringkv_wal_fsyncs_per_second", &[]);
    assert!(
        per_sec <= v("ringkv_wal_fsyncs_total", &[]),
        "more fsyncs in the last second than in all: {body}"
    );
    for name in [
        "ringkv_wal_last_fsync_seconds",
        "ringkv_recovery_duration_seconds",
    ] {
        let d = v(name, &[]);
        assert!(within_test(d), "{name} = {d} s, beyond the test's run");
    }
    // BGSAVE shows up as new snapshots, each within the test's run.
    let snapshots = v("ringkv_snapshots_total", &[]);
    assert_eq!(c.call_str(&["BGSAVE"]).kind(), "simple");
    let deadline = Instant::now() + LIMIT;
    loop {
        let (_, _, body) = http_get(addr, "/metrics");
        let samples = parse_prometheus(&body);
        let now = |name: &str| find(&samples, name, &[]).map(|s| s.value);
        if now("ringkv_snapshots_total").is_some_and(|n| n > snapshots) {
            let d = now("ringkv_last_snapshot_duration_seconds").unwrap_or(f64::NAN);
            assert!(within_test(d), "last snapshot took {d} s: {body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BGSAVE made no snapshot within {LIMIT:?}: {body}"
        );
        std::thread::park_timeout(Duration::from_millis(20));
    }

    // A later scrape sees later commands.
    c.call_str(&["SET", "late", "v"]);
    let (_, _, body) = http_get(addr, "/metrics");
    let samples = parse_prometheus(&body);
    assert!(
        find(&samples, "ringkv_commands_total", &[("cmd", "set")])
            .unwrap()
            .value
            >= (N + 1) as f64
    );

    let (status, _, _) = http_get(addr, "/other");
    assert_eq!(status, 404);
    assert_serving(&server);
}

#[test]
fn metrics_off_by_default_and_protected() {
    let server = Server::start(&["--threads", "1"]);
    assert!(!server.log_text().contains("metrics on"));
    drop(server);
    let err = match Server::try_start(&["--threads", "1", "--metrics-addr", "0.0.0.0:0"]) {
        Ok(_) => panic!("a non-loopback metrics address without a password must be refused"),
        Err(log) => log,
    };
    assert!(err.contains("protected mode"), "{err}");
}
