//! Command-line flags, their parsing and validation.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::{Deserialize, Serialize};

/// Load generator for ringkv (binary protocol) and any RESP2 server (ringkv, redis-server).
///
/// Closed loop (default): each of --connections keeps --pipeline requests in flight.
/// Open loop (--rate R): requests are scheduled at fixed times t0 + i/R and latency is
/// measured from the intended send time, so a slow server cannot hide its queueing
/// (no coordinated omission); --pipeline then caps the requests in flight per connection.
#[derive(Debug, Clone, Parser)]
#[command(name = "kvbench", version, about, long_about = None)]
pub struct Args {
    /// Server address (host:port).
    #[arg(long, short = 'a', default_value = "127.0.0.1:7379")]
    pub addr: String,

    /// Wire protocol: ringkv's binary protocol (via ringkv-client) or RESP2.
    #[arg(long, value_enum, default_value_t = Proto::Binary)]
    pub proto: Proto,

    /// Binary protocol: a ringkv cluster, --addr being any of its nodes. Each request goes
    /// straight to a replica of its key (ringkv-client's ClusterClient, which reads the
    /// partition map) instead of to --addr, which would forward it.
    #[arg(long)]
    pub cluster: bool,

    /// Number of connections (one task each).
    #[arg(long, short = 'c', default_value_t = 4)]
    pub connections: usize,

    /// Requests in flight per connection (closed loop); cap on in-flight requests per
    /// connection (open loop).
    #[arg(long, short = 'P', default_value_t = 1)]
    pub pipeline: usize,

    /// Open loop: total request rate in requests per second, spread evenly over connections.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,

    /// Measured run time (after the warmup), e.g. 10s, 500ms, 1m. Default 10s unless
    /// --requests is given.
    #[arg(long, short = 'd', value_parser = parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,

    /// Run exactly this many measured requests in total (warmup requests come on top and are
    /// reported separately).
    #[arg(long, short = 'n')]
    pub requests: Option<u64>,

    /// Warmup before measuring; its requests are sent but not recorded.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Number of distinct keys; keys are `key:%012d` (16 bytes).
    #[arg(long, short = 'k', default_value_t = 100_000)]
    pub keys: u64,

    /// Key distribution.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,

    /// Zipfian exponent (with --dist zipfian); key 0 is the hottest.
    #[arg(long, default_value_t = 0.99)]
    pub zipf_s: f64,

    /// Value size in bytes: fixed (`16`) or an inclusive range (`16..256`, uniform).
    #[arg(long, value_parser = parse_size_range, default_value = "16")]
    pub value_size: SizeRange,

    /// Share of reads (GET).
    #[arg(long, default_value_t = 0.9)]
    pub read: f64,

    /// Share of writes (PUT / SET).
    #[arg(long, default_value_t = 0.1)]
    pub write: f64,

    /// Share of deletes (DELETE / DEL).
    #[arg(long, default_value_t = 0.0)]
    pub delete: f64,

    /// Share of writes that carry a TTL of --ttl-secs.
    #[arg(long, default_value_t = 0.0)]
    pub ttl_share: f64,

    /// TTL of the writes selected by --ttl-share, in seconds.
    #[arg(long, default_value_t = 60)]
    pub ttl_secs: u64,

    /// Per-request consistency level. Validated and reported; it takes effect when the
    /// cluster lands (a single node ignores it).
    #[arg(long, value_enum, default_value_t = Consistency::One)]
    pub consistency: Consistency,

    /// Connect with TLS (both protocols); needs --cacert. The server name checked is the host
    /// part of --addr.
    #[arg(long, requires = "cacert")]
    pub tls: bool,

    /// PEM file with the CA certificate that signed the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate, for a server that requires one (with --key).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    pub cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    pub key: Option<PathBuf>,

    /// A reply not arriving within this long ends the run with an error.
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// Seed of the per-connection random generators (connection i uses seed + i).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Write the JSON result to FILE (`-` = stdout; the summary then goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Write the overall latency histogram (nanoseconds) to FILE in HdrHistogram's V2
    /// serialization.
    #[arg(long, value_name = "FILE")]
    pub hdr_out: Option<PathBuf>,

    /// No progress bar (it is also hidden when stdout is not a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Do not run a benchmark: plot the JSON results given as arguments to this SVG file
    /// (throughput over time and the latency percentile spectrum, side by side).
    #[arg(long, value_name = "OUT.svg")]
    pub plot: Option<PathBuf>,

    /// JSON result files to plot (with --plot).
    #[arg(value_name = "RESULT.json", requires = "plot")]
    pub inputs: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Binary,
    Resp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dist {
    Uniform,
    Zipfian,
    Sequential,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    Quorum,
    All,
}

impl Consistency {
    pub fn name(self) -> &'static str {
        match self {
            Consistency::One => "one",
            Consistency::Quorum => "quorum",
            Consistency::All => "all",
        }
    }
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Binary => "binary",
            Proto::Resp => "resp",
        }
    }
}

impl Dist {
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipfian => "zipfian",
            Dist::Sequential => "sequential",
        }
    }
}

/// An inclusive range of value sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SizeRange {
    pub min: usize,
    pub max: usize,
}

/// Largest value kvbench generates (the server's default frame limit is 64 MiB).
pub const MAX_VALUE_SIZE: usize = 32 << 20;

pub fn parse_size_range(s: &str) -> Result<SizeRange, String> {
    let num = |t: &str| -> Result<usize, String> {
        t.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{t}` is not a size in bytes"))
    };
    let (min, max) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if min > max {
        return Err(format!("empty range {s}: {min} > {max}"));
    }
    if max > MAX_VALUE_SIZE {
        return Err(format!(
            "{max} bytes is larger than the limit {MAX_VALUE_SIZE}"
        ));
    }
    Ok(SizeRange { min, max })
}

/// Parses `10s`, `500ms`, `2m`, `1h`, `250us` or a plain number of seconds (`1.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 10s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" | "µs" => n / 1e6,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use us, ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("`{s}`: {e}"))
}

impl Args {
    /// Checks the combinations clap cannot express. Returns a message for the user.
    pub fn validate(&self) -> Result<(), String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.pipeline == 0 {
            return Err("--pipeline must be at least 1".into());
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.keys > 1_000_000_000_000 {
            return Err("--keys must be at most 10^12 (keys are key:%012d)".into());
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err("--rate must be a positive number of requests per second".into());
            }
        }
        if self.requests == Some(0) {
            return Err("--requests must be at least 1".into());
        }
        if let Some(d) = self.duration {
            if d.is_zero() {
                return Err("--duration must be longer than 0".into());
            }
        }
        for (name, v) in [
            ("--read", self.read),
            ("--write", self.write),
            ("--delete", self.delete),
            ("--ttl-share", self.ttl_share),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "{name} must be a fraction between 0 and 1, got {v}"
                ));
            }
        }
        let sum = self.read + self.write + self.delete;
        if (sum - 1.0).abs() > 1e-6 {
            return Err(format!(
                "--read + --write + --delete must add up to 1, got {} + {} + {} = {sum}",
                self.read, self.write, self.delete
            ));
        }
        if self.dist == Dist::Zipfian && !(self.zipf_s.is_finite() && self.zipf_s > 0.0) {
            return Err("--zipf-s must be a positive number".into());
        }
        if self.ttl_share > 0.0 && self.ttl_secs == 0 {
            return Err("--ttl-secs must be at least 1".into());
        }
        if self.timeout.is_zero() {
            return Err("--timeout must be longer than 0".into());
        }
        Ok(())
    }

    /// The measured run length in duration mode (`None` in count mode).
    pub fn run_duration(&self) -> Option<Duration> {
        match self.requests {
            Some(_) => None,
            None => Some(self.duration.unwrap_or(Duration::from_secs(10))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("3 parsecs").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_range("16"), Ok(SizeRange { min: 16, max: 16 }));
        assert_eq!(
            parse_size_range("16..256"),
            Ok(SizeRange { min: 16, max: 256 })
        );
        assert_eq!(parse_size_range("1..=2"), Ok(SizeRange { min: 1, max: 2 }));
        assert!(parse_size_range("10..5").is_err());
        assert!(parse_size_range("x").is_err());
    }

    #[test]
    fn mix_must_sum_to_one() {
        let mut a = Args::parse_from(["kvbench"]);
        assert!(a.validate().is_ok());
        a.read = 1.0;
        assert!(a.validate().unwrap_err().contains("add up to 1"));
    }
}
