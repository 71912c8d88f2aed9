//! The membership body of GOSSIP, sent as a request payload and returned as a Bulk reply.
//!
//! ```text
//! u64 digest, u32 count, count × { u64 id, u64 version, u8 state, bytes addr, bytes zone }
//! ```

use bytes::{BufMut, BytesMut};

use super::{read_addr, read_zone};
use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// The fewest bytes one member takes: id, version, state and the two length fields.
const MIN_MEMBER_BYTES: usize = 8 + 8 + 1 + 4 + 4;

/// A member's place in the membership life cycle. Ordered by life: of two records of one
/// member with the same version, the later state wins a merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum MemberState {
    /// Known, not yet owning partitions (streaming on join arrives with rebalancing).
    Joining = 0,
    Active = 1,
    /// Asked to leave; still owns its partitions until it is removed.
    Leaving = 2,
    /// Left (or was removed by an operator); kept so the removal spreads.
    Removed = 3,
}

impl MemberState {
    pub fn from_u8(b: u8) -> Option<MemberState> {
        Some(match b {
            0 => MemberState::Joining,
            1 => MemberState::Active,
            2 => MemberState::Leaving,
            3 => MemberState::Removed,
            _ => return None,
        })
    }

    /// The name CLUSTER NODES and the logs show.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Active => "active",
            MemberState::Leaving => "leaving",
            MemberState::Removed => "removed",
        }
    }
}

/// One member as gossip carries it. `version` orders the records of one id: the higher wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberWire {
    pub id: u64,
    pub version: u64,
    pub state: MemberState,
    /// `host:port`, at most [`super::MAX_ADDR_BYTES`] bytes.
    pub addr: String,
    /// Empty for none, at most [`super::MAX_ZONE_BYTES`] bytes.
    pub zone: String,
}

/// A GOSSIP body: the sender's membership digest, and its members (none: digest only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipBody {
    pub digest: u64,
    pub members: Vec<MemberWire>,
}

impl GossipBody {
    /// Appends the encoding of this body (a GOSSIP payload, or the bytes of its Bulk reply).
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.digest);
        out.put_u32(self.members.len() as u32);
        for m in &self.members {
            out.put_u64(m.id);
            out.put_u64(m.version);
            out.put_u8(m.state as u8);
            put_bytes(out, m.addr.as_bytes());
            put_bytes(out, m.zone.as_bytes());
        }
    }

    /// Decodes a body that fills `buf` exactly (the Bulk of a GOSSIP reply).
    pub fn decode(buf: &[u8]) -> Result<GossipBody, ProtoError> {
        let mut r = Reader::new(buf, "GOSSIP");
        let body = GossipBody::read(&mut r)?;
        r.finish()?;
        Ok(body)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<GossipBody, ProtoError> {
        let digest = r.u64()?;
        let count = r.u32()? as usize;
        // Bound the count by the bytes present before reserving for it.
        if count > r.remaining() / MIN_MEMBER_BYTES {
            return Err(r.error("truncated"));
        }
        let mut members = Vec::with_capacity(count);
        for _ in 0..count {
            let id = r.u64()?;
            let version = r.u64()?;
            let state = MemberState::from_u8(r.u8()?).ok_or(r.error("unknown member state"))?;
            let addr = read_addr(r)?.to_owned();
            let zone = read_zone(r)?.to_owned();
            members.push(MemberWire {
                id,
                version,
                state,
                addr,
                zone,
            });
        }
        Ok(GossipBody { digest, members })
    }
}
