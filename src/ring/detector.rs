//! The phi-accrual failure detector (Hayashibara et al. 2004, as Akka implements it).
//!
//! Instead of a yes/no timeout, the detector keeps the recent heartbeat inter-arrival times
//! and reports phi = -log10(P(a heartbeat arrives later than now)), under a normal
//! distribution fitted to those times. phi 1 means a 10% chance the peer is still fine, phi 8
//! (Cassandra's default `phi_convict_threshold`) a 10^-8 chance. The mean is shifted by an
//! acceptable pause, so one lost or late heartbeat does not raise suspicion, and the standard
//! deviation has a floor, so perfectly regular heartbeats do not make a few milliseconds of
//! delay look fatal. Liveness from phi is local and only steers requests; it never changes
//! the ring.
//!
//! Time is passed in (`now_ms`, from a monotonic source), so the detector is pure and testable.

use std::collections::VecDeque;

/// Cassandra's default `phi_convict_threshold`: Down at phi >= 8.
pub const DEFAULT_PHI_CONVICT_THRESHOLD: f64 = 8.0;
/// How many recent inter-arrival intervals the distribution is fitted to.
pub const SAMPLE_WINDOW_INTERVALS: usize = 1000;
/// Floor of the fitted standard deviation (Akka's default `min-std-deviation`).
pub const MIN_STD_DEVIATION_MS: f64 = 100.0;
/// Silence beyond the usual interval that is still normal (a lost heartbeat, a GC pause):
/// added to the fitted mean.
pub const ACCEPTABLE_PAUSE_MS: f64 = 1000.0;
/// An interval longer than this many expected intervals is an outage, not a sample of the
/// peer's normal rhythm: it is not added (as Cassandra's `MAX_INTERVAL`), so a peer that comes
/// back is judged by its usual rhythm, not by the length of its outage.
pub const MAX_SAMPLE_INTERVAL_MULTIPLE: u64 = 4;

/// Intervals (and the expected interval) are clamped to this (about 49 days), so that the
/// sums of a full window cannot overflow.
const MAX_INTERVAL_MS: u64 = u32::MAX as u64;

/// A peer's liveness as this node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// phi below half the convict threshold.
    Up,
    /// phi at least half the convict threshold: late enough to prefer other replicas, not yet
    /// convicted (the half is a choice: it gives one step of warning on the same scale).
    Suspect,
    /// phi at or above the convict threshold: requests go to stand-ins.
    Down,
}

/// The liveness for `phi` under `convict_threshold`: Down at `phi >= convict_threshold`,
/// Suspect at `phi >= convict_threshold / 2`, else Up. A NaN phi (never produced by
/// [`PhiDetector::phi`]) counts as Down.
pub fn classify(phi: f64, convict_threshold: f64) -> Liveness {
    if phi.is_nan() || phi >= convict_threshold {
        Liveness::Down
    } else if phi >= convict_threshold / 2.0 {
        Liveness::Suspect
    } else {
        Liveness::Up
    }
}

/// One peer's heartbeat history.
#[derive(Debug, Clone)]
pub struct PhiDetector {
    expected_interval_ms: u64,
    /// Recent intervals, oldest first, at most [`SAMPLE_WINDOW_INTERVALS`].
    intervals: VecDeque<u64>,
    sum_ms: u128,
    sum_sq_ms: u128,
    last_ms: Option<u64>,
}

impl PhiDetector {
    /// A detector for heartbeats sent every `expected_interval_ms` (at least 1 ms). The expected
    /// interval is the first sample, so phi is meaningful from the first heartbeat on. Before
    /// any heartbeat phi is 0: nothing is known yet (see [`PhiDetector::watching_from`] for a
    /// peer that must prove itself alive).
    pub fn new(expected_interval_ms: u64) -> PhiDetector {
        let expected = expected_interval_ms.clamp(1, MAX_INTERVAL_MS);
        let mut d = PhiDetector {
            expected_interval_ms: expected,
            intervals: VecDeque::with_capacity(SAMPLE_WINDOW_INTERVALS),
            sum_ms: 0,
            sum_sq_ms: 0,
            last_ms: None,
        };
        d.push(expected);
        d
    }

    /// A detector that treats `now_ms` as a heartbeat: a peer never heard from goes Suspect,
    /// then Down, on the same schedule as one that fell silent at `now_ms`.
    pub fn watching_from(expected_interval_ms: u64, now_ms: u64) -> PhiDetector {
        let mut d = PhiDetector::new(expected_interval_ms);
        d.last_ms = Some(now_ms);
        d
    }

    /// A heartbeat arrived at `now_ms`. A time at or before the last heartbeat adds no sample
    /// (a clock that went back); an interval past [`MAX_SAMPLE_INTERVAL_MULTIPLE`] expected
    /// intervals is an outage and adds no sample either.
    pub fn heartbeat(&mut self, now_ms: u64) {
        match self.last_ms {
            Some(last) if now_ms <= last => return,
            Some(last) => {
                let interval = now_ms - last;
                if interval
                    <= self
                        .expected_interval_ms
                        .saturating_mul(MAX_SAMPLE_INTERVAL_MULTIPLE)
                {
                    self.push(interval);
                }
            }
            None => {}
        }
        self.last_ms = Some(now_ms);
    }

    fn push(&mut self, interval: u64) {
        let interval = interval.min(MAX_INTERVAL_MS);
        if self.intervals.len() == SAMPLE_WINDOW_INTERVALS {
            if let Some(old) = self.intervals.pop_front() {
                self.sum_ms -= u128::from(old);
                self.sum_sq_ms -= u128::from(old) * u128::from(old);
            }
        }
        self.intervals.push_back(interval);
        self.sum_ms += u128::from(interval);
        self.sum_sq_ms += u128::from(interval) * u128::from(interval);
    }

    /// Mean and standard deviation of the sampled intervals, in ms.
    fn stats(&self) -> (f64, f64) {
        let count = self.intervals.len().max(1) as f64;
        let mean = self.sum_ms as f64 / count;
        let variance = (self.sum_sq_ms as f64 / count - mean * mean).max(0.0);
        (mean, variance.sqrt())
    }

    /// phi at `now_ms`: 0 before any heartbeat, and near 0 right after one; grows without
    /// bound (never NaN or infinite) as silence lasts.
    pub fn phi(&self, now_ms: u64) -> f64 {
        let Some(last) = self.last_ms else {
            return 0.0;
        };
        let elapsed = now_ms.saturating_sub(last) as f64;
        let (mean, std) = self.stats();
        let y = (elapsed - (mean + ACCEPTABLE_PAUSE_MS)) / std.max(MIN_STD_DEVIATION_MS);
        // The logistic approximation of the normal tail (Bowling et al. 2009, used by Akka):
        // P(later) = 1 / (1 + e^z) with z = y (1.5976 + 0.070566 y²), so phi = log10(1 + e^z),
        // written as a softplus so that a long silence gives a large finite phi, not infinity.
        let z = y * (1.5976 + 0.070566 * y * y);
        (z.max(0.0) + (-z.abs()).exp().ln_1p()) / std::f64::consts::LN_10
    }

    /// The liveness at `now_ms` under `convict_threshold` (see [`classify`]).
    pub fn liveness(&self, now_ms: u64, convict_threshold: f64) -> Liveness {
        classify(self.phi(now_ms), convict_threshold)
    }

    /// When the last heartbeat arrived, if any.
    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL_MS: u64 = 500;
    /// Probe resolution when looking for the moment a state is reached.
    const PROBE_STEP_MS: u64 = 5;

    /// The first probe time after `from` (up to `limit_ms` later) at which `d` reports `want`.
    fn first_time(d: &PhiDetector, from: u64, limit_ms: u64, want: Liveness) -> Option<u64> {
        (0..=limit_ms / PROBE_STEP_MS)
            .map(|k| from + k * PROBE_STEP_MS)
            .find(|&t| d.liveness(t, DEFAULT_PHI_CONVICT_THRESHOLD) == want)
    }

    /// A deterministic pseudo-random source for jitter.
    fn jitter(state: &mut u64, range: u64) -> u64 {
        let mut g = crate::util::SplitMix64(*state);
        let x = g.next_u64();
        *state = g.0;
        x % range
    }

    /// Where suspicion and conviction fall for a perfectly regular peer: std is at its floor,
    /// so phi = log10(1 + e^z) with y = (t - interval - pause) / floor; phi 4 at y ≈ 3.63,
    /// phi 8 at y ≈ 5.22.
    fn regular_schedule() -> (u64, u64) {
        let base = INTERVAL_MS as f64 + ACCEPTABLE_PAUSE_MS;
        (
            (base + 3.63 * MIN_STD_DEVIATION_MS) as u64,
            (base + 5.22 * MIN_STD_DEVIATION_MS) as u64,
        )
    }

    #[test]
    fn classify_uses_half_the_threshold_for_suspect() {
        assert_eq!(classify(0.0, 8.0), Liveness::Up);
        assert_eq!(classify(3.99, 8.0), Liveness::Up);
        assert_eq!(classify(4.0, 8.0), Liveness::Suspect);
        assert_eq!(classify(7.99, 8.0), Liveness::Suspect);
        assert_eq!(classify(8.0, 8.0), Liveness::Down);
        assert_eq!(classify(f64::NAN, 8.0), Liveness::Down);
        assert_eq!(classify(1e300, 8.0), Liveness::Down);
    }

    #[test]
    fn regular_heartbeats_stay_up_and_silence_convicts_on_schedule() {
        let mut d = PhiDetector::new(INTERVAL_MS);
        assert_eq!(d.phi(123_456), 0.0, "no heartbeat yet: no evidence");
        let mut t = 10_000;
        for _ in 0..200 {
            d.heartbeat(t);
            for probe in [t, t + INTERVAL_MS / 2, t + INTERVAL_MS] {
                let phi = d.phi(probe);
                assert!(phi < 0.5, "phi {phi} at {probe} with regular beats");
            }
            t += INTERVAL_MS;
        }
        let last = t - INTERVAL_MS;
        let suspect = first_time(&d, last, 60_000, Liveness::Suspect).expect("suspected");
        let down = first_time(&d, last, 60_000, Liveness::Down).expect("convicted");
        let (want_suspect, want_down) = regular_schedule();
        println!(
            "500 ms beats stop: suspect after {} ms, down after {} ms (computed {want_suspect}, \
             {want_down})",
            suspect - last,
            down - last
        );
        assert!(
            (suspect - last).abs_diff(want_suspect) <= 20,
            "{}",
            suspect - last
        );
        assert!((down - last).abs_diff(want_down) <= 20, "{}", down - last);
        // phi only grows with silence, and stays finite.
        let mut prev = 0.0;
        for k in 0..1000 {
            let phi = d.phi(last + k * 37);
            assert!(phi >= prev && phi.is_finite(), "phi {phi} after {prev}");
            prev = phi;
        }
        assert!(d.phi(u64::MAX).is_finite());
    }

    #[test]
    fn jittery_heartbeats_never_convict() {
        let mut d = PhiDetector::new(INTERVAL_MS);
        let mut rng = 7;
        let mut t = 1_000;
        let mut worst: f64 = 0.0;
        for beat in 0..2_000 {
            // 250..750 ms apart, and every 50th heartbeat lost (twice the gap).
            let mut gap = INTERVAL_MS / 2 + jitter(&mut rng, INTERVAL_MS);
            if beat % 50 == 49 {
                gap += INTERVAL_MS;
            }
            for probe in (0..=gap).step_by(PROBE_STEP_MS as usize) {
                worst = worst.max(d.phi(t + probe));
            }
            t += gap;
            d.heartbeat(t);
        }
        println!("jittery 500 ms beats (±250 ms, 2% lost): highest phi {worst:.3}");
        assert!(
            classify(worst, DEFAULT_PHI_CONVICT_THRESHOLD) == Liveness::Up,
            "false suspicion: phi {worst}"
        );
    }

    #[test]
    fn a_peer_recovers_and_its_outage_does_not_skew_the_schedule() {
        let mut d = PhiDetector::new(INTERVAL_MS);
        let mut t = 0;
        for _ in 0..100 {
            t += INTERVAL_MS;
            d.heartbeat(t);
        }
        let outage_end = t + 30_000;
        assert_eq!(
            d.liveness(outage_end, DEFAULT_PHI_CONVICT_THRESHOLD),
            Liveness::Down
        );
        d.heartbeat(outage_end);
        assert_eq!(
            d.liveness(outage_end, DEFAULT_PHI_CONVICT_THRESHOLD),
            Liveness::Up
        );
        t = outage_end;
        for _ in 0..10 {
            t += INTERVAL_MS;
            d.heartbeat(t);
            assert_eq!(
                d.liveness(t + INTERVAL_MS, DEFAULT_PHI_CONVICT_THRESHOLD),
                Liveness::Up
            );
        }
        // The 30 s gap was not sampled: the next silence convicts on the usual schedule.
        let down = first_time(&d, t, 60_000, Liveness::Down).expect("convicted");
        assert!(
            (down - t).abs_diff(regular_schedule().1) <= 20,
            "{}",
            down - t
        );
    }

    #[test]
    fn a_peer_never_heard_from_is_convicted_when_watched() {
        let d = PhiDetector::watching_from(INTERVAL_MS, 5_000);
        assert_eq!(d.last_heartbeat_ms(), Some(5_000));
        let down = first_time(&d, 5_000, 60_000, Liveness::Down).expect("convicted");
        // Only the expected interval is known: the same schedule as a regular peer.
        assert!(
            (down - 5_000).abs_diff(regular_schedule().1) <= 20,
            "{}",
            down - 5_000
        );
        // A clock that goes back adds nothing and moves nothing.
        let mut d = PhiDetector::new(INTERVAL_MS);
        d.heartbeat(1_000);
        d.heartbeat(900);
        assert_eq!(d.last_heartbeat_ms(), Some(1_000));
    }

    #[test]
    fn extreme_intervals_and_times_do_not_panic() {
        for expected in [0, 1, u64::MAX] {
            let mut d = PhiDetector::new(expected);
            for t in [0, 1, u64::MAX / 2, u64::MAX] {
                d.heartbeat(t);
                for probe in [0, t, u64::MAX] {
                    let phi = d.phi(probe);
                    assert!(phi.is_finite() && phi >= 0.0, "phi {phi}");
                }
            }
        }
    }

    #[test]
    fn the_window_is_bounded() {
        let mut d = PhiDetector::new(INTERVAL_MS);
        let mut t = 0;
        for _ in 0..(SAMPLE_WINDOW_INTERVALS * 3) {
            t += INTERVAL_MS * 2;
            d.heartbeat(t);
        }
        assert_eq!(d.intervals.len(), SAMPLE_WINDOW_INTERVALS);
        // Only 1000 ms intervals remain (the 500 ms bootstrap sample aged out).
        assert_eq!(d.stats(), (1000.0, 0.0));
    }
}
