//! The CPU side, timed on the machine that runs the tool (wall clock, so indicative only,
//! never asserted): what steady gossip costs a node at a given cluster size, and what ring
//! rebuilds cost. Per peer and heartbeat interval a node starts one exchange and answers one:
//! two `Membership::view` reads (the layout digest is cached in the view), two digest-only
//! GOSSIP bodies encoded and two decoded, one `Membership::merge` of no members, and two
//! `Membership::heartbeat`s (each updates its sender's liveness; every peer's is re-evaluated
//! at most every `LIVENESS_SCAN_INTERVAL_MS`). A layout change costs a `Layout` clone, a digest
//! and a ring build; a change of a peer's liveness a new view sharing the rings.
use std::time::Instant;

use bytes::BytesMut;
use ringkv::ring::layout::{Layout, MemberState};
use ringkv::ring::membership::{Membership, HEARTBEAT_INTERVAL_MS};
use ringkv::ring::RingError;

use ringkv_proto::peer::GossipBody;

use crate::ring_stats::{node_ids, ring_of, RingShape};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Cost {
    pub nodes: usize,
    /// One `Layout` clone, and one `Layout::digest`, microseconds.
    pub clone_us: f64,
    pub digest_us: f64,
    /// One `Membership::check_liveness` (every peer evaluated) with every peer up,
    /// microseconds.
    pub check_liveness_us: f64,
    /// One `Membership::heartbeat` at the steady rate (every peer heard twice per
    /// interval), with the periodic scans amortized, microseconds.
    pub heartbeat_us: f64,
    /// The rest of one round trip, both ends (views, digest-only bodies, the empty merge),
    /// microseconds.
    pub round_trip_us: f64,
    /// One `Ring::build` of `nodes` members, milliseconds.
    pub ring_build_ms: f64,
    /// A node hearing from each of its peers for the first time (n-1 liveness changes, each
    /// a view and ring rebuild), total milliseconds.
    pub first_contact_ms: f64,
}

impl Cost {
    /// Share of one core a node spends on steady gossip (the operations above only).
    pub fn gossip_cpu_share(&self) -> f64 {
        let per_s = 1000.0 / HEARTBEAT_INTERVAL_MS as f64;
        let peers = self.nodes.saturating_sub(1) as f64;
        // Per peer and interval: one round trip started, one answered, each end a heartbeat;
        // and per interval one scan of every peer (the tick).
        let per_peer = peers * (self.round_trip_us + 2.0 * self.heartbeat_us);
        per_s * (per_peer + self.check_liveness_us) / 1e6
    }
}

fn time_us(reps: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..reps.max(1) {
        f();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(reps.max(1))
}

/// Times the real operations at `nodes` members (`reps` repetitions of the small ones).
pub fn measure(nodes: usize, shape: RingShape, seed: u64, reps: u32) -> Result<Cost, RingError> {
    let ids = node_ids(&mut Rng::new(seed), nodes);
    let addr = |i: usize| format!("10.0.{}.{}:7379", i >> 8, i & 0xff);
    let mut layout = Layout::new();
    for (i, &id) in ids.iter().enumerate() {
        layout.set(id, &addr(i), "", MemberState::Active);
    }
    let clone_us = time_us(reps, || drop(std::hint::black_box(layout.clone())));
    let digest_us = time_us(reps, || {
        std::hint::black_box(layout.digest());
    });
    let ring_build_ms = time_us(1, || {
        drop(std::hint::black_box(ring_of(shape, &ids)));
    }) / 1e3;
    let settings = shape.settings();
    let m = Membership::new(
        ids[0],
        settings,
        &addr(0),
        "",
        MemberState::Active,
        Vec::new(),
    )?;
    m.merge(layout.members().cloned().collect());
    let t0 = 1_000_000;
    let first_contact_ms = time_us(1, || {
        for &id in &ids[1..] {
            m.heartbeat(id, t0);
        }
    }) / 1e3;
    let check_liveness_us = time_us(reps, || m.check_liveness(t0 + 100));
    let heartbeat_us = steady_heartbeat_us(&m, &ids[1..], t0 + 200);
    let round_trip_us = time_us(reps, || {
        let mut out = BytesMut::new();
        for _ in 0..2 {
            let view = m.view();
            out.clear();
            GossipBody {
                digest: view.digest,
                members: Vec::new(),
            }
            .encode(&mut out);
            std::hint::black_box(GossipBody::decode(&out).ok());
        }
        m.merge(Vec::new());
    });
    Ok(Cost {
        nodes,
        clone_us,
        digest_us,
        check_liveness_us,
        heartbeat_us,
        round_trip_us,
        ring_build_ms,
        first_contact_ms,
    })
}

/// Mean cost of one heartbeat when every peer is heard twice per interval (a request and
/// an answer per interval, each way), after a warm-up that fills the detectors' windows.
fn steady_heartbeat_us(m: &Membership, peers: &[ringkv::ring::NodeId], from_ms: u64) -> f64 {
    const WARM_CYCLES: u64 = 8;
    const TIMED_CYCLES: u64 = 4;
    let half_ms = HEARTBEAT_INTERVAL_MS / 2;
    let n = peers.len().max(1) as u64;
    let beat = |k: u64| {
        let id = peers[(k % n) as usize];
        m.heartbeat(id, from_ms + k * half_ms / n);
    };
    for k in 0..WARM_CYCLES * n {
        beat(k);
    }
    let start = Instant::now();
    for k in WARM_CYCLES * n..(WARM_CYCLES + TIMED_CYCLES) * n {
        beat(k);
    }
    start.elapsed().as_secs_f64() * 1e6 / (TIMED_CYCLES * n) as f64
}
