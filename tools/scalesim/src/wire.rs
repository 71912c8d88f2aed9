//! Exact GOSSIP message sizes, from the project's own encoders: a request is a peer frame
//! (`peer::encode_gossip`), its answer a reply frame holding the body as a Bulk
//! (`FrameWriter::bulk`, as `cluster::serve` answers). TCP/IP and TLS overheads are not counted.

use bytes::BytesMut;
use ringkv::ring::layout::Member;
use ringkv_proto::peer::{self, GossipBody};
use ringkv_proto::{FrameWriter, PeerOpcode, ReplySink};

/// Bytes of a GOSSIP request and of its reply carrying `members` (none: digest only).
pub fn gossip_sizes(digest: u64, members: &[Member]) -> (u64, u64) {
    let body = GossipBody {
        digest,
        members: members.to_vec(),
    };
    let mut req = BytesMut::new();
    peer::encode_gossip(1, &body, &mut req);
    let mut encoded = BytesMut::new();
    body.encode(&mut encoded);
    let mut rep = BytesMut::new();
    let mut w = FrameWriter::new(&mut rep, 1, PeerOpcode::Gossip as u8);
    w.bulk(&encoded);
    w.finish();
    (req.len() as u64, rep.len() as u64)
}

/// Bytes of the layout itself as gossip carries it (the GOSSIP body with every member).
pub fn layout_body_bytes(digest: u64, members: &[Member]) -> u64 {
    let body = GossipBody {
        digest,
        members: members.to_vec(),
    };
    let mut out = BytesMut::new();
    body.encode(&mut out);
    out.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv::ring::layout::MemberState;

    #[test]
    fn digest_only_messages_are_small_and_members_add_their_bytes() {
        let (req, rep) = gossip_sizes(7, &[]);
        // 16-byte frame header + 8 digest + 4 count; the reply adds a tag and a length.
        assert_eq!(req, 28);
        assert_eq!(rep, 33);
        let m = Member {
            id: 1,
            version: 1,
            state: MemberState::Active,
            addr: "10.0.0.1:7379".into(),
            zone: String::new(),
        };
        let (req1, rep1) = gossip_sizes(7, std::slice::from_ref(&m));
        // id, version, state, 4-byte length + address, 4-byte length + empty zone.
        assert_eq!(req1 - req, 8 + 8 + 1 + 4 + 13 + 4);
        assert_eq!(rep1 - rep, req1 - req);
    }
}
