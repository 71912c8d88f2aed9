//! What to send: operation mix, key choice (uniform, zipfian, sequential) and value sizes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use crate::args::{Args, Dist, SizeRange};

/// Operation types, also the index into per-op statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Read = 0,
    Write = 1,
    Delete = 2,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Read, Op::Write, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Delete => "delete",
        }
    }
}

/// Length of a key: `key:` plus 12 digits.
pub const KEY_LEN: usize = 16;

/// Writes `key:%012d` into `out`.
pub fn format_key(i: u64, out: &mut [u8; KEY_LEN]) {
    out[..4].copy_from_slice(b"key:");
    let mut n = i;
    for b in out[4..].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub op: Op,
    pub key: [u8; KEY_LEN],
    /// The value of a write (a slice of a shared buffer; empty otherwise).
    pub value: Bytes,
    /// TTL in seconds of a write, if any.
    pub ttl_secs: Option<u64>,
}

/// State shared by all connections' generators.
pub struct Shared {
    dist: Dist,
    keys: u64,
    zipf: Option<Zipf>,
    sequential: AtomicU64,
    values: Bytes,
    size: SizeRange,
    read: f64,
    write: f64,
    delete: f64,
    ttl_share: f64,
    ttl_secs: u64,
}

impl Shared {
    pub fn new(args: &Args) -> Arc<Shared> {
        // One buffer of printable bytes; values are slices of it at varying offsets.
        let len = args.value_size.max * 2 + 64;
        let mut rng = SmallRng::seed_from_u64(args.seed ^ 0x5eed_0f7a_1e00);
        let buf: Vec<u8> = (0..len).map(|_| b'a' + rng.random_range(0..26u8)).collect();
        Arc::new(Shared {
            dist: args.dist,
            keys: args.keys,
            zipf: (args.dist == Dist::Zipfian).then(|| Zipf::new(args.keys, args.zipf_s)),
            sequential: AtomicU64::new(0),
            values: Bytes::from(buf),
            size: args.value_size,
            read: args.read,
            write: args.write,
            delete: args.delete,
            ttl_share: args.ttl_share,
            ttl_secs: args.ttl_secs,
        })
    }
}

/// A per-connection generator of requests.
pub struct Generator {
    shared: Arc<Shared>,
    rng: SmallRng,
}

impl Generator {
    pub fn new(shared: Arc<Shared>, seed: u64) -> Generator {
        Generator {
            shared,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn next_key_index(&mut self) -> u64 {
        let s = &self.shared;
        match s.dist {
            Dist::Uniform => self.rng.random_range(0..s.keys),
            Dist::Sequential => s.sequential.fetch_add(1, Ordering::Relaxed) % s.keys,
            Dist::Zipfian => match &s.zipf {
                Some(z) => z.sample(&mut self.rng) - 1,
                None => 0,
            },
        }
    }

    pub fn next(&mut self) -> Request {
        let u: f64 = self.rng.random();
        let s = &self.shared;
        let op = if u < s.read {
            Op::Read
        } else if u < s.read + s.write {
            Op::Write
        } else if s.delete > 0.0 {
            Op::Delete
        } else if s.write > 0.0 {
            // The shares add up to 1 only up to rounding.
            Op::Write
        } else {
            Op::Read
        };
        let mut key = [0u8; KEY_LEN];
        let idx = self.next_key_index();
        format_key(idx, &mut key);
        let (value, ttl_secs) = if op == Op::Write {
            let s = &self.shared;
            let size = if s.size.min == s.size.max {
                s.size.min
            } else {
                self.rng.random_range(s.size.min..=s.size.max)
            };
            let off = self.rng.random_range(0..=s.values.len() - size);
            let ttl =
                (s.ttl_share > 0.0 && self.rng.random_bool(s.ttl_share)).then_some(s.ttl_secs);
            (s.values.slice(off..off + size), ttl)
        } else {
            (Bytes::new(), None)
        };
        Request {
            op,
            key,
            value,
            ttl_secs,
        }
    }
}

/// Zipf distribution over `1..=n` with P(k) ∝ k^-s, sampled by rejection-inversion
/// (W. Hörmann and G. Derflinger, "Rejection-inversion to generate variates from monotone
/// discrete distributions", 1996): O(1) setup and sampling for any n, unlike the YCSB
/// generator whose zeta(n) precomputation is O(n).
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        let n = n as f64;
        let mut z = Zipf {
            n,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n + 0.5);
        z.threshold = 2.0 - z.h_integral_inv(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in `1..=n` (1 is the most frequent).
    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        loop {
            let u: f64 = rng.random();
            let u = self.h_integral_n + u * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inv(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inv(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1+x)/x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1)/x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn key_format() {
        let mut k = [0u8; KEY_LEN];
        format_key(42, &mut k);
        assert_eq!(&k, b"key:000000000042");
        format_key(999_999_999_999, &mut k);
        assert_eq!(&k, b"key:999999999999");
    }

    #[test]
    fn zipf_frequencies() {
        for s in [0.5, 0.99, 1.0, 1.5] {
            let z = Zipf::new(1000, s);
            let mut rng = SmallRng::seed_from_u64(7);
            let mut counts = vec![0u64; 1001];
            let draws = 400_000;
            for _ in 0..draws {
                let k = z.sample(&mut rng);
                assert!((1..=1000).contains(&k));
                counts[k as usize] += 1;
            }
            // P(1)/P(2) = 2^s, P(1)/P(10) = 10^s.
            let r12 = counts[1] as f64 / counts[2] as f64;
            let r110 = counts[1] as f64 / counts[10] as f64;
            assert!((r12 / 2f64.powf(s) - 1.0).abs() < 0.05, "s={s} r12={r12}");
            assert!(
                (r110 / 10f64.powf(s) - 1.0).abs() < 0.1,
                "s={s} r110={r110}"
            );
        }
    }

    #[test]
    fn zipf_single_key() {
        let z = Zipf::new(1, 0.99);
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(z.sample(&mut rng), 1);
        }
    }

    #[test]
    fn mix_and_sizes() {
        let args = Args::parse_from([
            "kvbench",
            "--read",
            "0.5",
            "--write",
            "0.3",
            "--delete",
            "0.2",
            "--value-size",
            "10..20",
            "--ttl-share",
            "0.5",
            "--keys",
            "50",
            "--dist",
            "sequential",
        ]);
        let mut g = Generator::new(Shared::new(&args), 3);
        let mut n = [0u32; 3];
        let mut ttl = 0;
        for i in 0..10_000u64 {
            let r = g.next();
            n[r.op as usize] += 1;
            let mut k = [0u8; KEY_LEN];
            format_key(i % 50, &mut k);
            assert_eq!(r.key, k);
            if r.op == Op::Write {
                assert!((10..=20).contains(&r.value.len()));
                ttl += u32::from(r.ttl_secs.is_some());
            } else {
                assert!(r.value.is_empty());
            }
        }
        assert!((4700..5300).contains(&n[0]), "{n:?}");
        assert!((2700..3300).contains(&n[1]), "{n:?}");
        assert!((1700..2300).contains(&n[2]), "{n:?}");
        assert!(ttl > n[1] / 3 && ttl < n[1] * 2 / 3);
    }

    #[test]
    fn zero_share_never_chosen() {
        let args = Args::parse_from(["kvbench", "--read", "1", "--write", "0"]);
        let mut g = Generator::new(Shared::new(&args), 3);
        for _ in 0..10_000 {
            assert_eq!(g.next().op, Op::Read);
        }
    }
}
