//! Counting replica answers toward a write quorum (W) or a read quorum (R).
//!
//! The coordinator feeds every answer it gets (in any order, late, repeated, from anyone) and
//! asks what it means. The rules, each a bug of the Go prototype this replaces:
//! - only the targets count: the preference-list replicas and the hinted stand-ins the
//!   coordinator chose ([`WriteQuorum::add_target`]); an answer from any other node is ignored;
//! - a node counts once: its first answer wins, repeats and later contradictions are ignored;
//! - a failure (error, timeout, refusal) never counts toward the quorum.
//!
//! [`Progress::Reached`] is final: acks only grow. [`Progress::Impossible`] means the targets
//! still unanswered cannot make up the missing acks; adding a target (a stand-in) can make the
//! quorum possible again, so the coordinator decides when to give up.

use super::NodeId;
use smallvec::SmallVec;

/// Where a quorum stands after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Progress {
    /// Not enough acks yet, and enough targets unanswered to still get there.
    Pending,
    /// At least the quorum of acks: reply to the client.
    Reached,
    /// acks + unanswered targets < quorum: it cannot be reached with these targets.
    Impossible,
}

/// A replica's answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteAnswer {
    /// The version is durably applied under the replica's fsync policy, or the replica already
    /// durably holds a newer or equal version (it is up to date; the coordinator maps that
    /// reply to `Applied`, never to `Failed`). For a hinted stand-in: the hint is durable.
    Applied,
    /// The replica erred, refused or timed out: never an ack.
    Failed,
}

/// A replica's answer to a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadAnswer {
    /// The replica sent its entry.
    Found,
    /// The replica has no entry for the key: an answer (it counts toward R, and is a read
    /// repair target).
    Missing,
    /// The replica erred or timed out: not an answer.
    Failed,
}

/// Targets inline up to this many (N=3 plus a couple of stand-ins) before spilling to the heap.
const INLINE_TARGETS: usize = 5;

/// The answers of each target, first answer only: the shared core of both quorums.
#[derive(Debug, Clone)]
struct Tally<A> {
    need: usize,
    targets: SmallVec<[(NodeId, Option<A>); INLINE_TARGETS]>,
    acks: usize,
    failures: usize,
}

impl<A: Copy> Tally<A> {
    fn new(need: usize, targets: &[NodeId]) -> Tally<A> {
        let mut t = Tally {
            need,
            targets: SmallVec::new(),
            acks: 0,
            failures: 0,
        };
        for &id in targets {
            t.add_target(id);
        }
        t
    }

    fn add_target(&mut self, id: NodeId) {
        if !self.targets.iter().any(|(t, _)| *t == id) {
            self.targets.push((id, None));
        }
    }

    /// Records `ans` from `from` if it is a target's first answer; `acked` says whether it
    /// counts toward the quorum.
    fn answer(&mut self, from: NodeId, ans: A, acked: bool) -> Progress {
        if let Some((_, slot @ None)) = self.targets.iter_mut().find(|(t, _)| *t == from) {
            *slot = Some(ans);
            if acked {
                self.acks += 1;
            } else {
                self.failures += 1;
            }
        }
        self.progress()
    }

    fn progress(&self) -> Progress {
        let unanswered = self.targets.len() - self.acks - self.failures;
        if self.acks >= self.need {
            Progress::Reached
        } else if self.acks + unanswered < self.need {
            Progress::Impossible
        } else {
            Progress::Pending
        }
    }

    fn answer_of(&self, id: NodeId) -> Option<A> {
        self.targets
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, a)| *a)
    }

    fn unanswered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.targets
            .iter()
            .filter(|(_, a)| a.is_none())
            .map(|(t, _)| *t)
    }
}

/// Acks toward W for one write.
#[derive(Debug, Clone)]
pub struct WriteQuorum(Tally<WriteAnswer>);

impl WriteQuorum {
    /// A write that needs `w` acks from `targets` (repeated ids count once). `w = 0` is
    /// Reached at once; `w` above the number of targets is Impossible until targets are added.
    pub fn new(w: usize, targets: &[NodeId]) -> WriteQuorum {
        WriteQuorum(Tally::new(w, targets))
    }

    /// Records `from`'s answer and says where the quorum stands. Ignored (the progress is
    /// unchanged) when `from` is not a target or has answered before.
    pub fn answer(&mut self, from: NodeId, ans: WriteAnswer) -> Progress {
        let acked = match ans {
            WriteAnswer::Applied => true,
            WriteAnswer::Failed => false,
        };
        self.0.answer(from, ans, acked)
    }

    /// Lets `id` count (a hinted stand-in chosen after a replica failed); no-op if it already
    /// is a target.
    pub fn add_target(&mut self, id: NodeId) {
        self.0.add_target(id);
    }

    /// Where the quorum stands now.
    pub fn progress(&self) -> Progress {
        self.0.progress()
    }

    /// Targets that answered Applied.
    pub fn acks(&self) -> usize {
        self.0.acks
    }

    /// Targets that answered Failed.
    pub fn failures(&self) -> usize {
        self.0.failures
    }

    /// The first answer of target `id`, if it answered.
    pub fn answer_of(&self, id: NodeId) -> Option<WriteAnswer> {
        self.0.answer_of(id)
    }

    /// Targets that have not answered yet.
    pub fn unanswered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.unanswered()
    }
}

/// Answers toward R for one read.
#[derive(Debug, Clone)]
pub struct ReadQuorum(Tally<ReadAnswer>);

impl ReadQuorum {
    /// A read that needs `r` answers from `targets` (repeated ids count once).
    pub fn new(r: usize, targets: &[NodeId]) -> ReadQuorum {
        ReadQuorum(Tally::new(r, targets))
    }

    /// Records `from`'s answer: Found and Missing count toward R, Failed never does. Ignored
    /// when `from` is not a target or has answered before.
    pub fn answer(&mut self, from: NodeId, ans: ReadAnswer) -> Progress {
        let answered = match ans {
            ReadAnswer::Found | ReadAnswer::Missing => true,
            ReadAnswer::Failed => false,
        };
        self.0.answer(from, ans, answered)
    }

    /// Lets `id` count (a stand-in asked after a replica failed); no-op if already a target.
    pub fn add_target(&mut self, id: NodeId) {
        self.0.add_target(id);
    }

    /// Where the quorum stands now.
    pub fn progress(&self) -> Progress {
        self.0.progress()
    }

    /// Targets that answered Found or Missing.
    pub fn answers(&self) -> usize {
        self.0.acks
    }

    /// Targets that answered Failed.
    pub fn failures(&self) -> usize {
        self.0.failures
    }

    /// The first answer of target `id`, if it answered.
    pub fn answer_of(&self, id: NodeId) -> Option<ReadAnswer> {
        self.0.answer_of(id)
    }

    /// Targets that have not answered yet.
    pub fn unanswered(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.0.unanswered()
    }
}

#[cfg(test)]
mod tests {
    use super::Progress::{Impossible, Pending, Reached};
    use super::ReadAnswer::{Found, Missing};
    use super::WriteAnswer::{Applied, Failed};
    use super::*;

    /// The preference list of the scripts: N=3.
    const PREF: [NodeId; 3] = [11, 22, 33];
    /// A node outside the list (e.g. the non-replica coordinator itself).
    const STRANGER: NodeId = 99;
    /// A hinted stand-in.
    const STAND_IN: NodeId = 44;

    #[test]
    fn write_reaches_w_with_two_real_acks() {
        let mut q = WriteQuorum::new(2, &PREF);
        assert_eq!(q.progress(), Pending);
        assert_eq!(q.answer(11, Applied), Pending);
        assert_eq!(q.answer(33, Applied), Reached);
        // A late answer changes nothing once Reached (a late failure included).
        assert_eq!(q.answer(22, Failed), Reached);
        assert_eq!((q.acks(), q.failures()), (2, 1));
        assert_eq!(q.unanswered().count(), 0);
    }

    #[test]
    fn write_duplicates_and_strangers_do_not_count() {
        let mut q = WriteQuorum::new(2, &PREF);
        assert_eq!(q.answer(11, Applied), Pending);
        assert_eq!(q.answer(11, Applied), Pending, "a repeated ack counts once");
        assert_eq!(
            q.answer(STRANGER, Applied),
            Pending,
            "a non-target never counts"
        );
        assert_eq!(q.acks(), 1);
        // The first answer wins: a node that failed and then acks stays a failure.
        assert_eq!(q.answer(22, Failed), Pending);
        assert_eq!(q.answer(22, Applied), Pending);
        assert_eq!(q.answer_of(22), Some(Failed));
        assert_eq!((q.acks(), q.failures()), (1, 1));
        assert_eq!(q.answer(33, Applied), Reached);
    }

    #[test]
    fn write_failures_never_ack_and_make_it_impossible() {
        let mut q = WriteQuorum::new(2, &PREF);
        assert_eq!(q.answer(11, Failed), Pending);
        assert_eq!(q.answer(22, Failed), Impossible, "1 left cannot make 2");
        assert_eq!(q.answer(33, Applied), Impossible);
        assert_eq!((q.acks(), q.failures()), (1, 2));
        // A hinted stand-in makes it possible again, and its durable hint counts.
        q.add_target(STAND_IN);
        assert_eq!(q.progress(), Pending);
        assert_eq!(q.answer(STAND_IN, Applied), Reached);
        assert_eq!(q.acks(), 2);
    }

    #[test]
    fn write_stale_and_newer_replicas_ack_as_applied() {
        // 22 already held a newer version, 33 an equal one: the coordinator maps both to
        // Applied (they are up to date), so they count; only a real error is Failed.
        let mut q = WriteQuorum::new(3, &PREF);
        assert_eq!(q.answer(11, Applied), Pending);
        assert_eq!(q.answer(22, Applied), Pending);
        assert_eq!(q.answer(33, Applied), Reached);
    }

    #[test]
    fn write_stand_in_counts_only_once_added() {
        let mut q = WriteQuorum::new(2, &PREF);
        assert_eq!(q.answer(11, Applied), Pending);
        assert_eq!(q.answer(STAND_IN, Applied), Pending, "not yet a target");
        q.add_target(STAND_IN);
        q.add_target(STAND_IN);
        q.add_target(11);
        assert_eq!(q.progress(), Pending);
        assert_eq!(q.answer(STAND_IN, Applied), Reached);
        assert_eq!(q.unanswered().collect::<Vec<_>>(), vec![22, 33]);
    }

    #[test]
    fn write_edge_quorums() {
        assert_eq!(WriteQuorum::new(0, &PREF).progress(), Reached);
        assert_eq!(WriteQuorum::new(4, &PREF).progress(), Impossible);
        assert_eq!(WriteQuorum::new(1, &[]).progress(), Impossible);
        // Repeated targets count once: three slots, not four.
        let mut q = WriteQuorum::new(3, &[11, 22, 22, 33]);
        assert_eq!(q.answer(22, Applied), Pending);
        assert_eq!(q.answer(11, Failed), Impossible);
    }

    #[test]
    fn read_missing_is_an_answer_and_failed_is_not() {
        let mut q = ReadQuorum::new(2, &PREF);
        assert_eq!(q.answer(11, Missing), Pending);
        assert_eq!(q.answer(22, ReadAnswer::Failed), Pending);
        assert_eq!(q.answer(33, Found), Reached);
        assert_eq!((q.answers(), q.failures()), (2, 1));
        assert_eq!(q.answer_of(11), Some(Missing));
        assert_eq!(q.answer_of(22), Some(ReadAnswer::Failed));
    }

    #[test]
    fn read_errors_make_it_impossible() {
        let mut q = ReadQuorum::new(2, &PREF);
        assert_eq!(q.answer(11, ReadAnswer::Failed), Pending);
        assert_eq!(q.answer(22, ReadAnswer::Failed), Impossible);
        assert_eq!(q.answer(33, Found), Impossible);
        q.add_target(STAND_IN);
        assert_eq!(q.answer(STAND_IN, Missing), Reached);
    }

    #[test]
    fn read_duplicates_strangers_and_late_answers() {
        let mut q = ReadQuorum::new(2, &PREF);
        assert_eq!(q.answer(33, Found), Pending);
        assert_eq!(q.answer(33, Found), Pending, "a repeat counts once");
        assert_eq!(q.answer(33, Missing), Pending);
        assert_eq!(q.answer_of(33), Some(Found), "the first answer wins");
        assert_eq!(q.answer(STRANGER, Found), Pending);
        assert_eq!(q.answer_of(STRANGER), None);
        assert_eq!(q.answers(), 1);
        assert_eq!(q.answer(22, Missing), Reached);
        // The late replica still gets recorded (read repair checks it too).
        assert_eq!(q.answer(11, Found), Reached);
        assert_eq!(q.answer_of(11), Some(Found));
        assert_eq!(q.answers(), 3);
    }
}
