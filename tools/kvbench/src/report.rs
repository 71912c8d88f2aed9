//! The result: the JSON document (`--json`), the summary table and the histogram file.

use std::collections::BTreeMap;
use std::io::Write;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::args::{Args, SizeRange};
use crate::stats::{Bucket, Totals};
use crate::workload::Op;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Result {
    pub kvbench_version: String,
    pub config: Config,
    pub totals: Counts,
    /// Measured wall time: from the end of the warmup to the last reply.
    pub elapsed_secs: f64,
    pub throughput: Throughput,
    /// Latency percentiles in microseconds, by op (`read`, `write`, `delete`) and `all`.
    pub latency_us: BTreeMap<String, Latency>,
    /// The overall latency distribution: [percentile, microseconds] pairs.
    pub spectrum_us: Vec<(f64, f64)>,
    /// Per-second time series, by completion time from the end of the warmup.
    pub series: Vec<Second>,
    /// Why the run ended early (a connection failed), if it did.
    pub error: Option<String>,
    /// The first error reply, if any.
    pub first_error_reply: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub addr: String,
    pub proto: String,
    /// `closed` or `open`.
    pub mode: String,
    pub connections: usize,
    pub pipeline: usize,
    pub rate: Option<f64>,
    pub duration_secs: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_secs: f64,
    pub keys: u64,
    pub dist: String,
    pub zipf_s: f64,
    pub value_size: SizeRange,
    pub read: f64,
    pub write: f64,
    pub delete: f64,
    pub ttl_share: f64,
    pub ttl_secs: u64,
    /// Accepted and reported; takes effect when the cluster lands.
    pub consistency: String,
    pub timeout_secs: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counts {
    /// Measured requests completed (ok plus error replies).
    pub requests: u64,
    /// Error replies among them.
    pub errors: u64,
    /// Commands kvbench sent besides the workload (none: connecting sends only the binary
    /// protocol's HELLO, which is not a command).
    pub setup_commands: u64,
    /// Requests sent during the warmup (not recorded).
    pub warmup_requests: u64,
    /// Open loop with a duration: requests scheduled before the end that were never sent
    /// because the server fell behind (0 in closed loop).
    pub missed: u64,
    pub per_op: BTreeMap<String, OpCounts>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpCounts {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Throughput {
    pub requests_per_sec: f64,
    pub per_op: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    /// Successful requests in the histogram.
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Second {
    pub second: u64,
    pub requests: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency {
            count: 0,
            min: 0.0,
            mean: 0.0,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p999: 0.0,
            max: 0.0,
        };
    }
    Latency {
        count: h.len(),
        min: us(h.min()),
        mean: h.mean() / 1000.0,
        p50: us(h.value_at_quantile(0.5)),
        p90: us(h.value_at_quantile(0.9)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
    }
}

/// Percentiles 0, 90, 99, 99.9, ... on a logarithmic scale of 1/(1-q), plus 100.
fn spectrum(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut x = 0.0f64;
    while x <= 5.0 + 1e-9 {
        let q = 1.0 - 10f64.powf(-x);
        out.push((q * 100.0, us(h.value_at_quantile(q))));
        x += 0.1;
    }
    out.push((100.0, us(h.max())));
    out
}

pub struct Extra {
    pub elapsed_secs: f64,
    pub missed: u64,
    pub error: Option<String>,
}

pub fn build(args: &Args, t: &Totals, series: &BTreeMap<u64, Bucket>, extra: Extra) -> Result {
    let elapsed = extra.elapsed_secs;
    let rate = |n: u64| {
        if elapsed > 0.0 {
            n as f64 / elapsed
        } else {
            0.0
        }
    };
    let mut per_op = BTreeMap::new();
    let mut tput = BTreeMap::new();
    let mut lat = BTreeMap::new();
    for op in Op::ALL {
        let i = op as usize;
        let n = t.ok[i] + t.errors[i];
        per_op.insert(
            op.name().to_string(),
            OpCounts {
                requests: n,
                errors: t.errors[i],
            },
        );
        tput.insert(op.name().to_string(), rate(n));
        lat.insert(op.name().to_string(), latency(&t.hist[i]));
    }
    lat.insert("all".to_string(), latency(&t.all));
    let last = series.keys().next_back().copied();
    let series = match last {
        None => Vec::new(),
        Some(last) => (0..=last)
            .map(|s| match series.get(&s) {
                Some(b) => Second {
                    second: s,
                    requests: b.requests,
                    errors: b.errors,
                    p50_us: if b.hist.is_empty() {
                        0.0
                    } else {
                        us(b.hist.value_at_quantile(0.5))
                    },
                    p99_us: if b.hist.is_empty() {
                        0.0
                    } else {
                        us(b.hist.value_at_quantile(0.99))
                    },
                    max_us: us(b.hist.max()),
                },
                None => Second {
                    second: s,
                    requests: 0,
                    errors: 0,
                    p50_us: 0.0,
                    p99_us: 0.0,
                    max_us: 0.0,
                },
            })
            .collect(),
    };
    Result {
        kvbench_version: env!("CARGO_PKG_VERSION").to_string(),
        config: Config {
            addr: args.addr.clone(),
            proto: args.proto.name().to_string(),
            mode: if args.rate.is_some() {
                "open"
            } else {
                "closed"
            }
            .to_string(),
            connections: args.connections,
            pipeline: args.pipeline,
            rate: args.rate,
            duration_secs: args.run_duration().map(|d| d.as_secs_f64()),
            requests: args.requests,
            warmup_secs: args.warmup.as_secs_f64(),
            keys: args.keys,
            dist: args.dist.name().to_string(),
            zipf_s: args.zipf_s,
            value_size: args.value_size,
            read: args.read,
            write: args.write,
            delete: args.delete,
            ttl_share: args.ttl_share,
            ttl_secs: args.ttl_secs,
            consistency: args.consistency.name().to_string(),
            timeout_secs: args.timeout.as_secs_f64(),
            seed: args.seed,
        },
        totals: Counts {
            requests: t.requests(),
            errors: t.error_count(),
            setup_commands: 0,
            warmup_requests: t.warmup,
            missed: extra.missed,
            per_op,
        },
        elapsed_secs: elapsed,
        throughput: Throughput {
            requests_per_sec: rate(t.requests()),
            per_op: tput,
        },
        latency_us: lat,
        spectrum_us: spectrum(&t.all),
        series,
        error: extra.error,
        first_error_reply: t.first_error.clone(),
    }
}

/// The human-readable summary.
pub fn print_summary(r: &Result, out: &mut dyn Write) -> std::io::Result<()> {
    let c = &r.config;
    writeln!(out)?;
    writeln!(
        out,
        "kvbench {} {} | {} loop{} | {} connections x pipeline {} | {} keys {} | values {}",
        c.proto,
        c.addr,
        c.mode,
        c.rate.map(|r| format!(" at {r} req/s")).unwrap_or_default(),
        c.connections,
        c.pipeline,
        c.keys,
        c.dist,
        if c.value_size.min == c.value_size.max {
            format!("{} B", c.value_size.min)
        } else {
            format!("{}..{} B", c.value_size.min, c.value_size.max)
        },
    )?;
    writeln!(
        out,
        "mix read {} / write {} / delete {} (ttl share {}) | consistency {} (takes effect when the cluster lands)",
        c.read, c.write, c.delete, c.ttl_share, c.consistency
    )?;
    writeln!(
        out,
        "{} requests in {:.3} s = {:.0} req/s, {} errors{}{}",
        r.totals.requests,
        r.elapsed_secs,
        r.throughput.requests_per_sec,
        r.totals.errors,
        if r.totals.warmup_requests > 0 {
            format!(", {} warmup requests", r.totals.warmup_requests)
        } else {
            String::new()
        },
        if r.totals.missed > 0 {
            format!(
                ", {} scheduled requests never sent (server behind the rate)",
                r.totals.missed
            )
        } else {
            String::new()
        },
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<7} {:>10} {:>8} {:>11} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "op", "requests", "errors", "req/s", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "max µs"
    )?;
    let mut rows: Vec<(String, u64, u64, f64)> = Op::ALL
        .iter()
        .map(|op| {
            let n = &r.totals.per_op[op.name()];
            (
                op.name().to_string(),
                n.requests,
                n.errors,
                r.throughput.per_op[op.name()],
            )
        })
        .filter(|row| row.1 > 0)
        .collect();
    rows.push((
        "all".into(),
        r.totals.requests,
        r.totals.errors,
        r.throughput.requests_per_sec,
    ));
    for (name, n, e, tput) in rows {
        let l = &r.latency_us[&name];
        writeln!(
            out,
            "{:<7} {:>10} {:>8} {:>11.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            name, n, e, tput, l.p50, l.p90, l.p99, l.p999, l.max
        )?;
    }
    if let Some(e) = &r.first_error_reply {
        writeln!(out, "\nfirst error reply: {e}")?;
    }
    if let Some(e) = &r.error {
        writeln!(out, "\nthe run ended early: {e}")?;
    }
    Ok(())
}

/// Writes `h` in HdrHistogram's V2 serialization.
pub fn write_hdr(h: &Histogram<u64>, path: &std::path::Path) -> std::result::Result<(), String> {
    let mut buf = Vec::new();
    use hdrhistogram::serialization::Serializer;
    hdrhistogram::serialization::V2Serializer::new()
        .serialize(h, &mut buf)
        .map_err(|e| format!("cannot serialize the histogram: {e:?}"))?;
    std::fs::write(path, buf).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
