//! The CPU side, timed on the machine that runs the tool (wall clock, so indicative only,
//! never asserted): what steady gossip costs a node at a given cluster size, and what ring
//! rebuilds cost. Per exchange it starts, `cluster::gossip` clones the layout and computes
//! its digest once; per exchange it answers, `cluster::serve` clones it and computes the
//! digest twice; every heartbeat (two per peer per interval) runs
//! `Membership::check_liveness` over every member; and `Membership` rebuilds the ring on
//! every layout change and every change of a peer's liveness, so a node that starts rebuilds
//! it once per peer it hears from.

use std::time::Instant;

use ringkv::ring::layout::{Layout, MemberState};
use ringkv::ring::membership::{Membership, Settings, HEARTBEAT_INTERVAL_MS};
use ringkv::ring::{Ring, RingError, RingNode};

use crate::ring_stats::{node_ids, RingShape};
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct Cost {
    pub nodes: usize,
    /// One `Layout` clone, and one `Layout::digest`, microseconds.
    pub clone_us: f64,
    pub digest_us: f64,
    /// One `Membership::check_liveness` with every peer up, microseconds.
    pub check_liveness_us: f64,
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
        let start = self.clone_us + self.digest_us;
        let answer = self.clone_us + 2.0 * self.digest_us;
        let heartbeats = 2.0 * self.check_liveness_us;
        peers * per_s * (start + answer + heartbeats) / 1e6
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
    let members: Vec<RingNode> = ids
        .iter()
        .map(|&id| RingNode {
            id,
            zone: String::new(),
        })
        .collect();
    let ring_build_ms = time_us(1, || {
        let ring = Ring::build(shape.partitions, shape.vnodes, shape.n, &members);
        drop(std::hint::black_box(ring));
    }) / 1e3;
    let settings = Settings {
        partitions: shape.partitions,
        vnodes: shape.vnodes,
        n: shape.n,
        w: ringkv::config::DEFAULT_W as usize,
        r: ringkv::config::DEFAULT_R as usize,
        lww: false,
        hinted_handoff: true,
        phi_convict_threshold: ringkv::config::DEFAULT_PHI_CONVICT_THRESHOLD,
    };
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
    Ok(Cost {
        nodes,
        clone_us,
        digest_us,
        check_liveness_us,
        ring_build_ms,
        first_contact_ms,
    })
}
