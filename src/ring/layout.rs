//! The cluster layout: which nodes are members, where peers reach them, their zone and their
//! state. It changes only by operator action (start with --peers, CLUSTER JOIN, CLUSTER LEAVE)
//! and spreads by gossip.
//!
//! Each member's entry carries its own version. A node bumps the version of its own entry when
//! it changes it (its address, zone, or its state on CLUSTER LEAVE); an operator action about
//! another node (CLUSTER LEAVE <id> sent elsewhere) bumps that node's entry from where it was
//! made. Merging keeps, per member, the entry with the higher version (equal versions: the
//! later state, then the greater address and zone, so every node picks the same one). Merge is
//! commutative, associative and idempotent, so views converge whatever the gossip order, and
//! the layout version (the sum of entry versions) only grows.

use std::collections::BTreeMap;

use super::NodeId;

/// A member as the layout keeps it is exactly what gossip carries (the codec's record), so the
/// two never need converting.
pub use ringkv_proto::peer::{MemberState, MemberWire as Member};

/// Whether a member in this state owns partitions (appears on the ring): active and leaving
/// ones do.
pub fn owns(state: MemberState) -> bool {
    match state {
        MemberState::Active | MemberState::Leaving => true,
        MemberState::Joining | MemberState::Removed => false,
    }
}

/// Whether a member in this state will own partitions once the layout's moves complete (the
/// target ring): active and joining ones do.
pub fn will_own(state: MemberState) -> bool {
    match state {
        MemberState::Active | MemberState::Joining => true,
        MemberState::Leaving | MemberState::Removed => false,
    }
}

/// The order that decides which of two records of one member wins a merge.
fn rank(m: &Member) -> (u64, MemberState, &str, &str) {
    (m.version, m.state, &m.addr, &m.zone)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    members: BTreeMap<NodeId, Member>,
}

impl Layout {
    pub fn new() -> Layout {
        Layout::default()
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values()
    }

    pub fn get(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The layout version: the sum of every member's entry version. Merging never lowers it,
    /// and two nodes with the same entries have the same version.
    pub fn version(&self) -> u64 {
        self.members
            .values()
            .fold(0u64, |v, m| v.saturating_add(m.version))
    }

    /// A 64-bit digest of every entry (FNV-1a over a canonical encoding): equal digests mean,
    /// for gossip, "nothing to send".
    pub fn digest(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |b: &[u8]| {
            for &x in b {
                h ^= x as u64;
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for m in self.members.values() {
            eat(&m.id.to_be_bytes());
            eat(&m.version.to_be_bytes());
            eat(&[m.state as u8]);
            eat(&(m.addr.len() as u32).to_be_bytes());
            eat(m.addr.as_bytes());
            eat(&(m.zone.len() as u32).to_be_bytes());
            eat(m.zone.as_bytes());
        }
        h
    }

    /// Merges one entry heard from a peer; whether it changed this layout.
    pub fn merge_member(&mut self, m: Member) -> bool {
        match self.members.get_mut(&m.id) {
            Some(cur) if rank(cur) >= rank(&m) => false,
            Some(cur) => {
                *cur = m;
                true
            }
            None => {
                self.members.insert(m.id, m);
                true
            }
        }
    }

    /// Merges every entry of another view; whether anything changed.
    pub fn merge(&mut self, other: impl IntoIterator<Item = Member>) -> bool {
        let mut changed = false;
        for m in other {
            changed |= self.merge_member(m);
        }
        changed
    }

    /// Sets a member's address, zone and state (adding it if unknown), bumping its version if
    /// anything differs; whether it changed.
    pub fn set(&mut self, id: NodeId, addr: &str, zone: &str, state: MemberState) -> bool {
        let next = match self.members.get(&id) {
            Some(m) if m.addr == addr && m.zone == zone && m.state == state => return false,
            Some(m) => m.version + 1,
            None => 1,
        };
        self.members.insert(
            id,
            Member {
                id,
                version: next,
                state,
                addr: addr.to_owned(),
                zone: zone.to_owned(),
            },
        );
        true
    }

    /// Changes a known member's state (an operator action); whether it changed.
    pub fn set_state(&mut self, id: NodeId, state: MemberState) -> bool {
        let Some(m) = self.members.get(&id) else {
            return false;
        };
        let (addr, zone) = (m.addr.clone(), m.zone.clone());
        self.set(id, &addr, &zone, state)
    }

    /// Members that own partitions, for building the ring.
    pub fn owners(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values().filter(|m| owns(m.state))
    }

    /// Members that will own partitions once every move completes (the target ring).
    pub fn future_owners(&self) -> impl Iterator<Item = &Member> + '_ {
        self.members.values().filter(|m| will_own(m.state))
    }

    /// Whether partitions are moving: some member joins or leaves.
    pub fn in_transition(&self) -> bool {
        self.members
            .values()
            .any(|m| matches!(m.state, MemberState::Joining | MemberState::Leaving))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: NodeId, version: u64, state: MemberState, addr: &str) -> Member {
        Member {
            id,
            version,
            state,
            addr: addr.into(),
            zone: String::new(),
        }
    }

    #[test]
    fn merge_keeps_the_higher_version_whatever_the_order() {
        let entries = [
            m(1, 1, MemberState::Active, "a:1"),
            m(1, 2, MemberState::Leaving, "a:1"),
            m(2, 1, MemberState::Active, "b:1"),
            m(2, 1, MemberState::Removed, "b:1"),
            m(3, 5, MemberState::Active, "c:2"),
            m(3, 5, MemberState::Active, "c:1"),
        ];
        let mut views = Vec::new();
        // Every rotation and the reverse order converge to one layout.
        for r in 0..entries.len() {
            for rev in [false, true] {
                let mut order: Vec<Member> = entries.to_vec();
                order.rotate_left(r);
                if rev {
                    order.reverse();
                }
                let mut l = Layout::new();
                l.merge(order);
                views.push(l);
            }
        }
        for v in &views {
            assert_eq!(v, &views[0]);
        }
        let l = &views[0];
        assert_eq!(l.get(1).map(|m| m.state), Some(MemberState::Leaving));
        assert_eq!(l.get(2).map(|m| m.state), Some(MemberState::Removed));
        assert_eq!(l.get(3).map(|m| m.addr.as_str()), Some("c:2"));
        assert_eq!(l.version(), 2 + 1 + 5);
    }

    #[test]
    fn merge_is_idempotent_and_reports_change() {
        let mut a = Layout::new();
        assert!(a.set(1, "a:1", "", MemberState::Active));
        assert!(!a.set(1, "a:1", "", MemberState::Active));
        let mut b = Layout::new();
        assert!(b.merge(a.members().cloned()));
        assert!(!b.merge(a.members().cloned()));
        assert_eq!(a.digest(), b.digest());
        assert!(b.set_state(1, MemberState::Leaving));
        assert_ne!(a.digest(), b.digest());
        assert!(a.merge(b.members().cloned()));
        assert_eq!(a, b);
        assert!(a.version() > 1);
    }

    #[test]
    fn only_active_and_leaving_own_partitions() {
        let mut l = Layout::new();
        l.set(1, "a:1", "", MemberState::Joining);
        l.set(2, "b:1", "", MemberState::Active);
        l.set(3, "c:1", "", MemberState::Leaving);
        l.set(4, "d:1", "", MemberState::Removed);
        let ids: Vec<NodeId> = l.owners().map(|m| m.id).collect();
        assert_eq!(ids, vec![2, 3]);
    }
}
