//! The view's shared parts and the liveness scans' timing.

use std::sync::Arc;

use super::*;
use crate::ring::DEFAULT_PHI_CONVICT_THRESHOLD;

fn settings() -> Settings {
    Settings {
        partitions: 64,
        vnodes: 8,
        n: 3,
        w: 2,
        r: 2,
        lww: false,
        hinted_handoff: true,
        phi_convict_threshold: DEFAULT_PHI_CONVICT_THRESHOLD,
    }
}

fn member(id: NodeId, addr: &str) -> Member {
    Member {
        id,
        version: 1,
        state: MemberState::Active,
        addr: addr.into(),
        zone: String::new(),
    }
}

/// Node 1 with peers 2 and 3, both heard twice per heartbeat interval from 0 to `until_ms`.
fn three_heard_until(until_ms: u64) -> Membership {
    let m = Membership::new(1, settings(), "a:1", "", MemberState::Active, Vec::new())
        .expect("the ring builds");
    assert!(m.merge(vec![member(2, "b:1"), member(3, "c:1")]));
    let mut t = 0;
    while t <= until_ms {
        m.heartbeat(2, t);
        m.heartbeat(3, t);
        t += HEARTBEAT_INTERVAL_MS / 2;
    }
    m
}

#[test]
fn a_liveness_change_shares_the_layout_and_rings_of_the_view_before() {
    let m = three_heard_until(5_000);
    let before = m.view();
    assert_eq!(before.liveness(3), Liveness::Up);
    let generation = m.generation();
    m.check_liveness(60_000);
    let after = m.view();
    assert_eq!(after.liveness(2), Liveness::Down);
    assert_eq!(after.liveness(3), Liveness::Down);
    assert!(m.generation() > generation);
    assert!(Arc::ptr_eq(&before.ring, &after.ring));
    assert!(Arc::ptr_eq(&before.layout, &after.layout));
    assert_eq!(before.digest, after.digest);
}

#[test]
fn the_view_digest_is_its_layouts_and_a_layout_change_rebuilds_the_ring() {
    let m = three_heard_until(1_000);
    let before = m.view();
    assert_eq!(before.digest, before.layout.digest());
    m.leave(3).expect("node 3 may leave");
    let after = m.view();
    assert_eq!(after.digest, after.layout.digest());
    assert_ne!(after.digest, before.digest);
    assert!(!Arc::ptr_eq(&before.ring, &after.ring));
    assert!(after.target.is_some());
    assert_eq!(after.digest, m.inner().layout.digest());
}

/// Every path that changes the layout publishes it: the view's digest is the layout's.
#[test]
fn every_layout_change_reaches_the_view() {
    let m = three_heard_until(1_000);
    let agrees = |what: &str| {
        assert_eq!(m.view().digest, m.inner().layout.digest(), "after {what}");
        assert_eq!(*m.view().layout, m.inner().layout, "after {what}");
    };
    agrees("merge");
    m.set_self("a:2", "z1", MemberState::Active);
    agrees("set_self");
    m.leave(3).expect("node 3 may leave");
    agrees("leave");
    let version = m.view().layout.get(3).map_or(0, |x| x.version);
    assert!(m.commit_move(3, version));
    agrees("commit_move");
    assert!(m.set_state(2, MemberState::Leaving));
    agrees("set_state");
    m.merge(vec![member(4, "d:1")]);
    agrees("a merged newcomer");
}

/// Peer 3 falls silent while peer 2 keeps beating every 10 ms: every peer is scanned at
/// most every LIVENESS_SCAN_INTERVAL_MS on heartbeats (not on each), so 3 is convicted at
/// most that long after its phi crosses the threshold; and a heartbeat makes its own sender
/// up at once, between scans.
#[test]
fn heartbeats_scan_every_peer_at_most_every_scan_interval() {
    const STEP_MS: u64 = 10;
    let m = three_heard_until(10_000);
    let threshold = DEFAULT_PHI_CONVICT_THRESHOLD;
    let mut t = 10_000;
    let (mut crossed, mut seen) = (None, None);
    let mut scans = vec![m.inner().scanned_ms];
    while seen.is_none() {
        t += STEP_MS;
        assert!(t < 30_000, "peer 3 was never convicted");
        if crossed.is_none() {
            let d = m
                .inner()
                .detectors
                .get(&3)
                .map(|d| d.liveness(t, threshold));
            if d == Some(Liveness::Down) {
                crossed = Some(t);
            }
        }
        m.heartbeat(2, t);
        let scanned = m.inner().scanned_ms;
        if scans.last() != Some(&scanned) {
            scans.push(scanned);
        }
        if m.view().liveness(3) == Liveness::Down {
            seen = Some(t);
        }
    }
    let (crossed, seen) = (crossed.expect("phi crossed"), seen.expect("convicted"));
    assert!(
        seen >= crossed,
        "convicted at {seen} before phi crossed at {crossed}"
    );
    assert!(
        seen - crossed <= LIVENESS_SCAN_INTERVAL_MS,
        "convicted {} ms after phi crossed",
        seen - crossed
    );
    assert!(scans.len() > 10, "too few scans: {scans:?}");
    for w in scans.windows(2) {
        assert!(w[1] - w[0] >= LIVENESS_SCAN_INTERVAL_MS, "scans {w:?}");
    }
    // Between scans, 3's own heartbeat makes it up at once.
    let last = m.inner().scanned_ms;
    let back = last + STEP_MS;
    m.heartbeat(3, back);
    assert_eq!(m.inner().scanned_ms, last, "no scan within the interval");
    assert_eq!(m.view().liveness(3), Liveness::Up);
}

/// A restored layout's other members count as unheard until each answers (or is removed):
/// until then the node neither admits itself nor drops copies.
#[test]
fn restored_members_are_unheard_until_they_answer_or_are_removed() {
    let m = Membership::new(1, settings(), "a:1", "", MemberState::Active, Vec::new())
        .expect("membership");
    assert_eq!(m.restored_unheard(), 0, "nothing restored");
    m.restore(vec![member(1, "a:1"), member(2, "b:2"), member(3, "c:3")]);
    assert_eq!(m.view().layout.len(), 3);
    assert_eq!(m.restored_unheard(), 2);
    m.heard_digest(2, 7);
    assert_eq!(m.restored_unheard(), 1);
    m.set_state(3, MemberState::Removed);
    assert_eq!(m.restored_unheard(), 0);
}
