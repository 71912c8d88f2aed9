//! Moving partitions when a node joins or leaves (Garage's layout versions and Cassandra's
//! pending ranges are the models).
//!
//! - A joining node enters the layout as `joining`, a leaving one turns `leaving`. While any
//!   member is either, the view has a *target* ring besides the current one: reads use the
//!   current owners; writes go to both and need W acks in each (`replicate`).
//! - Every node that will own a partition it does not own now copies it ([`copy`]): once all
//!   reachable members gossip the same layout and a settle time passed (writes routed by the
//!   older layout have ended), it reads the partition in checksummed batches (STREAM_READ)
//!   from the owner it replaces (else from every reachable current owner), applies them as
//!   replica merges, and persists its progress per partition ([`progress`]), throttled by
//!   `--stream-rate`.
//! - The node whose join or leave it is (or, for a node that is gone, the lowest live member)
//!   asks every copying node for its status (STREAM_STATUS) and commits the change
//!   (`joining` → `active`, `leaving` → `removed`) once all are done ([`commit`]).
//! - Once nothing moves, each node drops its copies of partitions it no longer replicates.

pub mod commit;
pub mod copy;
pub mod progress;
pub mod serve;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use ringkv_proto::peer::{StreamPhase, StreamStatus};

use crate::ring::layout::MemberState;
use crate::ring::membership::View;
use crate::ring::NodeId;
use progress::{Cursor, ProgressFile};

/// One partition this node must copy, and from whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub partition: u32,
    pub sources: Vec<NodeId>,
}

/// The partitions `node` must copy in `view`: those it will own and does not own now, each
/// from every owner it replaces (together they hold every write a quorum of the current owners
/// acknowledged that the remaining ones may miss). When one of those is unreachable (a dead
/// node forgotten, or a join beside a failure), from every reachable current owner instead,
/// if at least N - W + 1 of them are (any W acknowledgements meet them); else from all the
/// current owners, which waits for the missing ones (the plan is made again each round).
pub fn incoming(view: &View, node: NodeId, w: usize) -> Vec<Incoming> {
    let Some(target) = view.target.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in 0..view.ring.partitions() {
        let now = view.ring.preference(p);
        let next = target.preference(p);
        // No owner yet (every member new): nothing to copy, the first ones are admitted.
        if now.is_empty() || now.contains(&node) || !next.contains(&node) {
            continue;
        }
        let replaced: Vec<NodeId> = now.iter().copied().filter(|n| !next.contains(n)).collect();
        let live: Vec<NodeId> = now.iter().copied().filter(|&n| view.reachable(n)).collect();
        let sources = if !replaced.is_empty() && replaced.iter().all(|&n| view.reachable(n)) {
            replaced
        } else if live.len() + w > now.len() {
            live
        } else {
            now.to_vec()
        };
        out.push(Incoming {
            partition: p,
            sources,
        });
    }
    out
}

/// Every node that must copy something in `view` (the commit waits for each).
pub fn receivers(view: &View) -> BTreeSet<NodeId> {
    let mut out = BTreeSet::new();
    let Some(target) = view.target.as_ref() else {
        return out;
    };
    for p in 0..view.ring.partitions() {
        let now = view.ring.preference(p);
        for n in target.preference(p) {
            if !now.contains(n) {
                out.insert(*n);
            }
        }
    }
    out
}

/// Partitions whose preference list changes in `view`.
pub fn moving_partitions(view: &View) -> u32 {
    (0..view.ring.partitions())
        .filter(|&p| view.moving(p).is_some())
        .count() as u32
}

/// What INFO shows of this node's copies.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    pub status: StreamStatus,
    /// Estimated seconds left (0 when unknown or done).
    pub eta_secs: u64,
    /// Bytes copied by this process.
    pub session_bytes: u64,
}

/// The copies of every receiving node, summed by the node that commits a move.
#[derive(Debug, Default, Clone, Copy)]
pub struct Progress {
    pub partitions: u32,
    pub partitions_done: u32,
    pub bytes: u64,
    pub rate_bps: u64,
}

/// This node's copies: the plan for the current layout, its cursors, counters.
pub struct Streams {
    pub(crate) state: Mutex<State>,
    /// The progress file; held only by the copy task (off the loop, in blocking threads).
    pub(crate) file: Arc<Mutex<ProgressFile>>,
    pub rate_bps: u64,
    /// Keys dropped because this node no longer replicates their partition.
    pub dropped_keys: AtomicU64,
    /// Every receiver's copies, when this node commits a move.
    progress: Mutex<Progress>,
}

#[derive(Debug, Default)]
pub(crate) struct State {
    /// Admitted as an owner at least once (a restart stays one).
    pub member: bool,
    pub digest: u64,
    pub phase: StreamPhase,
    pub plan: Vec<Incoming>,
    pub cursors: HashMap<(u32, NodeId), Cursor>,
    pub resent: u64,
    /// Bytes and keys copied since this process started (the rate), and when it began.
    pub session_bytes: u64,
    pub session_started_ms: u64,
    /// The layout whose unowned partitions were dropped, and since when (digest, ms) the
    /// members have agreed on the current one.
    pub cleaned_digest: u64,
    pub clean_since: Option<(u64, u64)>,
}

impl State {
    pub fn partition_done(&self, i: &Incoming) -> bool {
        i.sources
            .iter()
            .all(|s| self.cursors.get(&(i.partition, *s)).is_some_and(|c| c.done))
    }
}

impl Streams {
    /// Opens the progress file in `dir` (the data directory).
    pub fn open(dir: PathBuf, rate_bps: u64) -> std::io::Result<Streams> {
        let (file, loaded) = ProgressFile::open(dir.join("stream-progress"))?;
        Ok(Streams {
            state: Mutex::new(State {
                member: loaded.member,
                digest: loaded.digest,
                cursors: loaded.cursors,
                resent: loaded.resent,
                ..State::default()
            }),
            file: Arc::new(Mutex::new(file)),
            rate_bps,
            dropped_keys: AtomicU64::new(0),
            progress: Mutex::new(Progress::default()),
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn cluster_progress(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node was admitted as an owner before (then it starts active).
    pub fn was_member(&self) -> bool {
        self.state().member
    }

    /// Whether this node ever planned copies (a join it had begun, if not a member).
    pub fn has_history(&self) -> bool {
        self.state().digest != 0
    }

    /// Where this node's copies stand, for STREAM_STATUS and INFO.
    pub fn report(&self, now_ms: u64) -> Report {
        let s = self.state();
        let (mut bytes, mut keys) = (0u64, 0u64);
        for c in s.cursors.values() {
            bytes += c.bytes;
            keys += c.keys;
        }
        let done = s.plan.iter().filter(|i| s.partition_done(i)).count() as u32;
        let secs = now_ms.saturating_sub(s.session_started_ms) / 1000;
        let rate_bps = if s.session_started_ms == 0 || secs == 0 {
            0
        } else {
            s.session_bytes / secs
        };
        let total = s.plan.len() as u32;
        let eta_secs = match (done, rate_bps) {
            (0, _) | (_, 0) => 0,
            (d, r) => {
                let per = bytes / u64::from(d);
                per * u64::from(total - d) / r
            }
        };
        Report {
            status: StreamStatus {
                digest: s.digest,
                phase: s.phase,
                partitions: total,
                partitions_done: done,
                bytes,
                keys,
                bytes_resent: s.resent,
                rate_bps,
            },
            eta_secs,
            session_bytes: s.session_bytes,
        }
    }
}

/// Whether `id`'s state is in the middle of a move.
pub fn moving_state(state: MemberState) -> bool {
    match state {
        MemberState::Joining | MemberState::Leaving => true,
        MemberState::Active | MemberState::Removed => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::layout::Member;
    use crate::ring::membership::{Membership, Settings};

    fn member(id: NodeId, state: MemberState) -> Member {
        Member {
            id,
            version: 1,
            state,
            addr: format!("127.0.0.1:{}", 7000 + id),
            zone: String::new(),
        }
    }

    fn view_of(states: &[(NodeId, MemberState)]) -> std::sync::Arc<View> {
        let settings = Settings {
            partitions: 64,
            vnodes: 16,
            n: 3,
            w: 2,
            r: 2,
            lww: false,
            hinted_handoff: true,
            phi_convict_threshold: 8.0,
        };
        let (me, my_state) = states[0];
        let m = Membership::new(me, settings, "127.0.0.1:7000", "", my_state, Vec::new())
            .expect("ring");
        m.merge(states[1..].iter().map(|&(id, s)| member(id, s)).collect());
        for &(id, _) in &states[1..] {
            m.heartbeat(id, crate::util::now_ms());
        }
        m.view()
    }

    #[test]
    fn a_joining_node_copies_each_partition_from_the_owner_it_replaces() {
        use MemberState::{Active, Joining};
        let view = view_of(&[(4, Joining), (1, Active), (2, Active), (3, Active)]);
        let plan = incoming(&view, 4, 2);
        assert_eq!(receivers(&view), [4].into_iter().collect());
        assert!(
            !plan.is_empty() && plan.len() < 64,
            "{} partitions",
            plan.len()
        );
        let target = view.target.as_ref().expect("a target ring");
        for inc in &plan {
            let now = view.ring.preference(inc.partition);
            let next = target.preference(inc.partition);
            assert!(!now.contains(&4) && next.contains(&4));
            let replaced: Vec<NodeId> = now.iter().copied().filter(|n| !next.contains(n)).collect();
            assert_eq!(inc.sources, replaced, "partition {}", inc.partition);
        }
        assert_eq!(moving_partitions(&view), plan.len() as u32);
        // Nothing moves once it is active.
        let view = view_of(&[(4, Active), (1, Active), (2, Active), (3, Active)]);
        assert!(incoming(&view, 4, 2).is_empty() && receivers(&view).is_empty());
    }

    #[test]
    fn a_leaving_nodes_partitions_go_to_the_next_owners() {
        use MemberState::{Active, Leaving};
        let view = view_of(&[(1, Active), (2, Active), (3, Active), (4, Leaving)]);
        let all = receivers(&view);
        assert!(!all.contains(&4) && !all.is_empty());
        let target = view.target.as_ref().expect("a target ring");
        for p in 0..64 {
            assert!(!target.preference(p).contains(&4));
        }
    }
}
