//! The operator's membership actions that start, stop or commit a move of partitions: CLUSTER
//! LEAVE, FORGET, CANCEL and JOIN (on a lone node), and the commit once every copy is done.

use tracing::info;

use super::{format_id, Membership};
use crate::ring::layout::MemberState;
use crate::ring::NodeId;

impl Membership {
    /// CLUSTER LEAVE: `id` starts handing its partitions over (a joining node, which owns
    /// nothing yet, is removed at once). Refused for the last owner.
    pub fn leave(&self, id: NodeId) -> Result<(), String> {
        let mut inner = self.inner();
        let Some(m) = inner.layout.get(id) else {
            return Err(format!("ERR unknown node {}", format_id(id)));
        };
        let next = match m.state {
            MemberState::Active => MemberState::Leaving,
            MemberState::Joining => MemberState::Removed,
            MemberState::Leaving => return Ok(()),
            MemberState::Removed => return Err(format!("ERR node {} already left", format_id(id))),
        };
        let others = inner.layout.future_owners().filter(|o| o.id != id).count();
        if next == MemberState::Leaving && others == 0 {
            return Err(format!(
                "ERR node {} is the last owner: no node would hold its partitions",
                format_id(id)
            ));
        }
        inner.layout.set_state(id, next);
        info!(node = %format_id(id), state = next.name(), "operator asked a node to leave");
        self.publish(&inner);
        Ok(())
    }

    /// CLUSTER FORGET: `id` is gone for good; its partitions are copied from the remaining
    /// replicas (it leaves without being a source). Refused while it is reachable.
    pub fn forget(&self, id: NodeId) -> Result<(), String> {
        if id == self.me {
            return Err("ERR a node can't forget itself; use CLUSTER LEAVE".into());
        }
        let view = self.view();
        if view.layout.get(id).map(|m| m.state) == Some(MemberState::Removed) {
            return Err(format!("ERR node {} already left", format_id(id)));
        }
        if view.reachable(id) {
            return Err(format!(
                "ERR node {} is up: use CLUSTER LEAVE {}, so that it hands its partitions over",
                format_id(id),
                format_id(id)
            ));
        }
        self.leave(id)
    }

    /// Commits `id`'s move (`joining` → `active`, `leaving` → `removed`) only if its entry is
    /// still at `version` (the one every receiver's copy was for): a cancel or another change
    /// meanwhile wins. Whether it committed.
    pub fn commit_move(&self, id: NodeId, version: u64) -> bool {
        let mut inner = self.inner();
        let Some(m) = inner.layout.get(id).cloned() else {
            return false;
        };
        let next = match m.state {
            MemberState::Joining => MemberState::Active,
            MemberState::Leaving => MemberState::Removed,
            MemberState::Active | MemberState::Removed => return false,
        };
        if m.version != version {
            return false;
        }
        inner.layout.set(id, &m.addr, &m.zone, next);
        info!(node = %format_id(id), from = m.state.name(), to = next.name(), "every moved partition is copied: committing the layout change");
        self.publish(&inner);
        true
    }

    /// CLUSTER CANCEL: stops `id`'s join (it is removed) or leave (it stays active). The
    /// copies made so far stay; they are dropped as unowned once nothing moves.
    pub fn cancel(&self, id: NodeId) -> Result<(), String> {
        let mut inner = self.inner();
        let Some(m) = inner.layout.get(id) else {
            return Err(format!("ERR unknown node {}", format_id(id)));
        };
        let alone = inner
            .layout
            .members()
            .all(|o| o.id == id || o.state == MemberState::Removed);
        let next = match m.state {
            // A lone node that was told to join (a seed never answered) is itself again.
            MemberState::Joining if alone => MemberState::Active,
            MemberState::Joining => MemberState::Removed,
            MemberState::Leaving => MemberState::Active,
            MemberState::Active | MemberState::Removed => {
                return Err(format!(
                    "ERR node {} is not joining or leaving; nothing to cancel",
                    format_id(id)
                ))
            }
        };
        inner.layout.set_state(id, next);
        info!(node = %format_id(id), state = next.name(), "operator cancelled a node's move");
        self.publish(&inner);
        Ok(())
    }

    /// CLUSTER JOIN on a node that is alone: it becomes a joining member (it must hold no
    /// keys; the caller checks). A node already in a cluster only learns a new seed.
    pub fn join_seed(&self, addr: String) -> Result<(), String> {
        {
            let mut inner = self.inner();
            let alone = inner
                .layout
                .members()
                .all(|m| m.id == self.me || m.state == MemberState::Removed);
            let me = inner.layout.get(self.me).cloned();
            if let Some(me) = me.filter(|_| alone) {
                if matches!(me.state, MemberState::Active | MemberState::Removed) {
                    inner
                        .layout
                        .set(self.me, &me.addr, &me.zone, MemberState::Joining);
                    info!(
                        "joining a cluster: this node owns nothing until its partitions are copied"
                    );
                    self.publish(&inner);
                }
            }
        }
        self.add_seed(addr);
        Ok(())
    }

    /// Whether this node is alone in its layout (CLUSTER JOIN makes it join).
    pub fn alone(&self) -> bool {
        self.inner()
            .layout
            .members()
            .all(|m| m.id == self.me || m.state == MemberState::Removed)
    }
}
