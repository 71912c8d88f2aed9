//! The anti-entropy examples of protocol.md §6.3, byte for byte, read from protocol.md itself:
//! each request is encoded and compared, then parsed back; each reply body is encoded and
//! decoded. Malformed payloads are refused with the errors §6.2 lists.

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::peer::{self, AaeRequest, MAX_AAE_LIST};
use ringkv_proto::{FrameWriter, PeerOpcode, PeerRequest, ProtoError, ReplySink, Value};

mod common;

use common::example;

fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut out = BytesMut::new();
    f(&mut out);
    out.to_vec()
}

fn check_request(name: &str, id: u64, req: AaeRequest) {
    let bytes = example(name);
    assert_eq!(
        encoded(|o| peer::encode_aae(id, &req, o)),
        bytes,
        "encode_aae of {name}"
    );
    let generic = PeerRequest::Aae(req.clone());
    assert_eq!(
        encoded(|o| generic.encode(id, o)),
        bytes,
        "encode of {name}"
    );
    let (h, payload, used) = decode_frame(&bytes, 1 << 20).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!((h.request_id, h.opcode), (id, req.opcode() as u8));
    assert_eq!(PeerRequest::parse(h.opcode, payload).unwrap(), generic);
}

fn reply(id: u64, op: PeerOpcode, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::new(&mut out, id, op as u8);
    w.bulk(body);
    w.finish();
    out.to_vec()
}

fn reply_body(frame: &[u8]) -> Bytes {
    let (h, payload, _) = decode_frame(frame, 1 << 20).unwrap().unwrap();
    assert!(h.is_reply());
    match Value::decode(&Bytes::copy_from_slice(payload)).unwrap() {
        Value::Bulk(b) => b,
        other => panic!("a Bulk: {other:?}"),
    }
}

#[test]
fn anti_entropy_examples() {
    check_request(
        "aae-roots-request",
        10,
        AaeRequest::Roots {
            partitions: vec![3, 7],
        },
    );
    let roots = [0x5a17_c309_e442_b801, 0];
    let bytes = reply(
        10,
        PeerOpcode::AaeRoots,
        &encoded(|o| peer::encode_hashes(&roots, o)),
    );
    assert_eq!(bytes, example("aae-roots-reply"));
    assert_eq!(peer::decode_hashes(&reply_body(&bytes)).unwrap(), roots);

    check_request(
        "aae-branches-request",
        11,
        AaeRequest::Branches { partition: 3 },
    );
    check_request(
        "aae-leaves-request",
        12,
        AaeRequest::Leaves {
            partition: 3,
            branches: vec![5],
        },
    );
    check_request(
        "aae-keys-request",
        13,
        AaeRequest::Keys {
            partition: 3,
            segments: vec![165],
        },
    );
    let keys = vec![(b"user:7".to_vec(), 0x0123_4567_89ab_cdef)];
    let bytes = reply(
        13,
        PeerOpcode::AaeKeys,
        &encoded(|o| peer::encode_key_hashes(&keys, o)),
    );
    assert_eq!(bytes, example("aae-keys-reply"));
    assert_eq!(peer::decode_key_hashes(&reply_body(&bytes)).unwrap(), keys);
}

#[test]
fn malformed_anti_entropy_payloads_are_refused() {
    let malformed = |op: PeerOpcode, why: &'static str| {
        Err::<(), _>(ProtoError::Malformed {
            what: op.name(),
            why,
        })
    };
    let parse = |op: PeerOpcode, p: &[u8]| PeerRequest::parse(op as u8, p).map(|_| ());
    // A count beyond the limit, and one beyond the bytes present.
    let mut over = 3u32.to_be_bytes().to_vec();
    over.extend_from_slice(&(MAX_AAE_LIST + 1).to_be_bytes());
    assert_eq!(
        parse(PeerOpcode::AaeKeys, &over),
        malformed(PeerOpcode::AaeKeys, "too many items")
    );
    let mut short = 3u32.to_be_bytes().to_vec();
    short.extend_from_slice(&2u32.to_be_bytes());
    short.extend_from_slice(&1u32.to_be_bytes());
    assert_eq!(
        parse(PeerOpcode::AaeLeaves, &short),
        malformed(PeerOpcode::AaeLeaves, "truncated")
    );
    assert_eq!(
        parse(PeerOpcode::AaeBranches, &[0, 0, 0, 3, 0]),
        malformed(PeerOpcode::AaeBranches, "trailing bytes")
    );
    assert_eq!(
        parse(PeerOpcode::AaeRoots, &u32::MAX.to_be_bytes()),
        malformed(PeerOpcode::AaeRoots, "too many items")
    );
}
