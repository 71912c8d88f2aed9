//! The peer-link examples of protocol.md §6, byte for byte, read from protocol.md itself: each
//! is encoded by the codec and compared, then decoded and compared with the values it
//! describes. (spec_examples.rs checks that protocol.md has exactly the examples checked.)

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::peer::{
    self, client_proof, server_proof, verify_proof, ClusterSettings, Conflicts, ForwardHead,
    GossipBody, HelloReply, MemberState, MemberWire, PeerHello, ScanPartition, ScanSlice,
    StreamBatch, StreamPhase, StreamRead, StreamStatus, AUTH_FAILED,
};
use ringkv_proto::{
    FrameWriter, Opcode, PeerOpcode, PeerRequest, Protocol, ReplySink, Request, Status, Value,
};
use smallvec::smallvec;

mod common;

use common::example;

/// The illustrative handshake of §6.3: secret, nonces and node ids.
const SECRET: &[u8] = b"correct horse";
const DIALER_NONCE: [u8; 32] = [0x11; 32];
const SERVER_NONCE: [u8; 32] = [0x22; 32];
const DIALER_ID: u64 = 1;
const SERVER_ID: u64 = 2;

const SETTINGS: ClusterSettings = ClusterSettings {
    n: 3,
    partitions: 1024,
    conflicts: Conflicts::Siblings,
};

fn hello() -> PeerHello<'static> {
    PeerHello {
        min_version: 1,
        max_version: 1,
        node_id: DIALER_ID,
        nonce: &DIALER_NONCE,
        advertise: "10.0.0.1:7379",
        zone: "a",
        settings: SETTINGS,
    }
}

fn encoded(f: impl FnOnce(&mut BytesMut)) -> Vec<u8> {
    let mut out = BytesMut::new();
    f(&mut out);
    out.to_vec()
}

/// Splits a request frame and parses it as a peer request: (request id, request).
fn parse(frame: &[u8]) -> (u64, PeerRequest<'_>) {
    let (h, payload, used) = decode_frame(frame, 1 << 20).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert_eq!((h.flags, h.status), (0, 0), "a request frame");
    (h.request_id, PeerRequest::parse(h.opcode, payload).unwrap())
}

/// Checks a request example both ways: encoding `req` gives the example's bytes, and they
/// parse back to `req` (also through the generic `PeerRequest::encode`). `PeerRequest` is
/// invariant in its lifetime, so the caller lends the example's bytes (`example(name)`).
fn check_request<'a>(name: &str, bytes: &'a [u8], id: u64, req: &PeerRequest<'a>, direct: Vec<u8>) {
    assert_eq!(direct, bytes, "encode_* of {name}");
    assert_eq!(encoded(|o| req.encode(id, o)), bytes, "encode of {name}");
    let (got_id, got) = parse(bytes);
    assert_eq!(got_id, id, "decoding {name}");
    assert_eq!(&got, req, "decoding {name}");
}

fn reply(id: u64, op: PeerOpcode, f: impl FnOnce(&mut FrameWriter<'_>)) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::new(&mut out, id, op as u8);
    f(&mut w);
    w.finish();
    out.to_vec()
}

/// Decodes a whole reply frame: (request id, opcode, status, value).
fn decode_reply(frame: &[u8]) -> (u64, u8, u8, Value) {
    let (h, payload, used) = decode_frame(frame, 1 << 20).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert!(h.is_reply());
    let v = Value::decode(&Bytes::copy_from_slice(payload)).unwrap();
    (h.request_id, h.opcode, h.status, v)
}

#[test]
fn handshake_examples() {
    let h = hello();
    check_request(
        "peer-hello-request",
        &example("peer-hello-request"),
        1,
        &PeerRequest::Hello(h.clone()),
        encoded(|o| peer::encode_peer_hello(1, &h, o)),
    );

    // The server's reply carries its nonce and its proof over both nonces.
    let sp = server_proof(SECRET, &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID);
    let r = HelloReply {
        version: 1,
        node_id: SERVER_ID,
        nonce: SERVER_NONCE,
        proof: sp,
    };
    let bytes = reply(1, PeerOpcode::PeerHello, |w| r.write(w));
    assert_eq!(bytes, example("peer-hello-reply"));
    let (id, op, status, v) = decode_reply(&bytes);
    assert_eq!((id, op, status), (1, 0x40, Status::Ok as u8));
    assert_eq!(HelloReply::from_value(&v).unwrap(), r);

    // The dialer checks the server's proof, then proves itself.
    let expected = server_proof(SECRET, &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID);
    assert!(verify_proof(&expected, &r.proof));
    let wrong = server_proof(b"other", &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID);
    assert!(!verify_proof(&wrong, &r.proof));
    let cp = client_proof(SECRET, &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID);
    check_request(
        "peer-auth-request",
        &example("peer-auth-request"),
        2,
        &PeerRequest::Auth { proof: &cp },
        encoded(|o| peer::encode_peer_auth(2, &cp, o)),
    );

    let ok = reply(2, PeerOpcode::PeerAuth, |w| w.simple("OK"));
    assert_eq!(ok, example("peer-auth-reply"));

    // A wrong secret: Fatal, then the server closes the link.
    let mut out = BytesMut::new();
    FrameWriter::new(&mut out, 2, PeerOpcode::PeerAuth as u8).fatal(AUTH_FAILED);
    assert_eq!(out.to_vec(), example("peer-auth-failed-reply"));
    let (_, _, status, v) = decode_reply(&out);
    assert_eq!(status, Status::Fatal as u8);
    assert_eq!(v, Value::Error(Bytes::from_static(AUTH_FAILED.as_bytes())));
}

/// The fixed proofs protocol.md prints for the example handshake, so another implementation
/// can check its HMAC input byte for byte.
#[test]
fn example_proofs() {
    let hex32 = |s: &str| -> [u8; 32] { common::hex(s).try_into().unwrap() };
    assert_eq!(
        server_proof(SECRET, &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID),
        hex32("93d4b578c931e1331e18b256561128ad6459964c3b86eb0c09309567179e3899")
    );
    assert_eq!(
        client_proof(SECRET, &DIALER_NONCE, &SERVER_NONCE, DIALER_ID, SERVER_ID),
        hex32("455af00f0e86c96c4a83f4d251ae52dcf9c02ae5d29d42a8e04bd7a608a7afc2")
    );
    assert!(common::SPEC.contains(
        "server proof = `93d4b578c931e1331e18b256561128ad6459964c3b86eb0c09309567179e3899`"
    ));
    assert!(common::SPEC.contains(
        "client proof = `455af00f0e86c96c4a83f4d251ae52dcf9c02ae5d29d42a8e04bd7a608a7afc2`"
    ));
}

#[test]
fn error_texts() {
    assert_eq!(
        AUTH_FAILED,
        "ERR peer authentication failed: the cluster secrets differ (--cluster-secret)"
    );
    assert_eq!(SETTINGS.mismatch(&SETTINGS), None);
    let five = ClusterSettings { n: 5, ..SETTINGS };
    assert_eq!(
        SETTINGS.mismatch(&five).unwrap(),
        "ERR cluster settings differ: this node has --n 3, the connecting node --n 5"
    );
    let all = ClusterSettings {
        n: 5,
        partitions: 512,
        conflicts: Conflicts::Lww,
    };
    assert_eq!(
        SETTINGS.mismatch(&all).unwrap(),
        "ERR cluster settings differ: this node has --n 3, the connecting node --n 5; \
         this node has --partitions 1024, the connecting node --partitions 512; \
         this node has --conflicts siblings, the connecting node --conflicts lww"
    );
}

#[test]
fn gossip_examples() {
    let body = GossipBody {
        digest: 0x0123_4567_89ab_cdef,
        members: vec![MemberWire {
            id: 2,
            version: 5,
            state: MemberState::Active,
            addr: "10.0.0.2:7379".into(),
            zone: "b".into(),
        }],
    };
    check_request(
        "gossip-request",
        &example("gossip-request"),
        3,
        &PeerRequest::Gossip(body.clone()),
        encoded(|o| peer::encode_gossip(3, &body, o)),
    );

    // Same digest on the receiver: its reply is the digest alone, in a Bulk.
    let digest_only = GossipBody {
        digest: body.digest,
        members: vec![],
    };
    let bytes = reply(3, PeerOpcode::Gossip, |w| {
        w.bulk(&encoded(|o| digest_only.encode(o)))
    });
    assert_eq!(bytes, example("gossip-reply"));
    let (_, _, status, v) = decode_reply(&bytes);
    assert_eq!(status, 0);
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(GossipBody::decode(&b).unwrap(), digest_only);
}

#[test]
fn data_examples() {
    // The entry bytes are illustrative: the codec carries them as they are.
    let entry = [0xe1, 0xe2, 0xe3, 0xe4, 0xe5, 0xe6];
    check_request(
        "replicate-request",
        &example("replicate-request"),
        4,
        &PeerRequest::Replicate {
            hint_for: 0,
            entry: &entry,
        },
        encoded(|o| peer::encode_replicate(4, 0, &entry, o)),
    );
    check_request(
        "fetch-request",
        &example("fetch-request"),
        5,
        &PeerRequest::Fetch { key: b"a" },
        encoded(|o| peer::encode_fetch(5, b"a", o)),
    );
    check_request(
        "peer-ping-request",
        &example("peer-ping-request"),
        7,
        &PeerRequest::Ping,
        encoded(|o| peer::encode_peer_ping(7, o)),
    );
}

#[test]
fn forward_examples() {
    // The client request of §2.5's command-set-request, forwarded.
    let head = ForwardHead {
        proto: Protocol::Binary,
        client_request_id: 8,
        client_opcode: Opcode::Command as u8,
        r: 0,
        w: 0,
    };
    let args: [&[u8]; 3] = [b"SET", b"k", b"v"];
    check_request(
        "forward-request",
        &example("forward-request"),
        6,
        &PeerRequest::Forward {
            head,
            args: smallvec![&b"SET"[..], &b"k"[..], &b"v"[..]],
        },
        encoded(|o| peer::encode_forward(6, &head, &args, o)),
    );

    // Its reply: a Bulk holding the client's whole reply frame, §2.5's command-set-reply.
    let client_reply = example("command-set-reply");
    let bytes = reply(6, PeerOpcode::Forward, |w| w.bulk(&client_reply));
    assert_eq!(bytes, example("forward-reply"));
    let (_, _, _, v) = decode_reply(&bytes);
    let Value::Bulk(inner) = v else {
        panic!("a Bulk: {v:?}")
    };
    let (id, op, status, v) = decode_reply(&inner);
    assert_eq!((id, op, status), (8, 0x20, 0));
    assert_eq!(v, Value::Simple(Bytes::from_static(b"OK")));
    // The forwarded arguments are the client's, unchanged.
    let client = example("command-set-request");
    let (h, payload, _) = decode_frame(&client, 1 << 20).unwrap().unwrap();
    let Request::Command { args: client_args } = Request::parse(h.opcode, payload, 16).unwrap()
    else {
        panic!("a COMMAND")
    };
    assert_eq!(client_args.as_slice(), &args[..]);
}

#[test]
fn keyspace_examples() {
    let scan = ScanPartition {
        partition: 3,
        from: 0x00c0_0000_0000_1234,
        count: 100,
        pattern: Some(b"user:*"),
    };
    check_request(
        "scan-partition-request",
        &example("scan-partition-request"),
        8,
        &PeerRequest::ScanPartition(scan),
        encoded(|o| peer::encode_scan_partition(8, &scan, o)),
    );
    let slice = ScanSlice {
        next: Some(0x00c0_0000_0000_9abc),
        examined: 2,
        keys: vec![b"user:7".to_vec(), b"user:42".to_vec()],
    };
    let bytes = reply(8, PeerOpcode::ScanPartition, |w| {
        w.bulk(&encoded(|o| slice.encode(o)))
    });
    assert_eq!(bytes, example("scan-partition-reply"));
    let (_, op, status, v) = decode_reply(&bytes);
    assert_eq!((op, status), (0x47, 0));
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(ScanSlice::decode(&b).unwrap(), slice);

    check_request(
        "count-keys-request",
        &example("count-keys-request"),
        9,
        &PeerRequest::CountKeys {
            partitions: vec![3, 7],
        },
        encoded(|o| peer::encode_count_keys(9, &[3, 7], o)),
    );
    let bytes = reply(9, PeerOpcode::CountKeys, |w| {
        w.bulk(&encoded(|o| peer::encode_counts(&[1200, 0], o)))
    });
    assert_eq!(bytes, example("count-keys-reply"));
    let (_, _, _, v) = decode_reply(&bytes);
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(peer::decode_counts(&b).unwrap(), vec![1200, 0]);
}

/// The tombstone collection examples of §6.3.
#[test]
fn tomb_examples() {
    let entries: Vec<&[u8]> = vec![&[0xaa, 0xbb, 0xcc], &[0xdd, 0xee]];
    check_request(
        "tomb-offer-request",
        &example("tomb-offer-request"),
        10,
        &PeerRequest::TombOffer {
            entries: entries.clone(),
        },
        encoded(|o| peer::encode_tomb_offer(10, &entries, o)),
    );
    let states = [peer::TOMB_HELD, peer::TOMB_NEWER];
    let bytes = reply(10, PeerOpcode::TombOffer, |w| {
        w.bulk(&encoded(|o| peer::encode_states(&states, o)))
    });
    assert_eq!(bytes, example("tomb-offer-reply"));
    let (_, op, status, v) = decode_reply(&bytes);
    assert_eq!((op, status), (0x58, 0));
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(peer::decode_states(&b).unwrap(), states.to_vec());

    let first = &entries[..1];
    check_request(
        "tomb-purge-request",
        &example("tomb-purge-request"),
        11,
        &PeerRequest::TombPurge {
            entries: first.to_vec(),
        },
        encoded(|o| peer::encode_tomb_purge(11, first, o)),
    );
    let bytes = reply(11, PeerOpcode::TombPurge, |w| w.int(1));
    assert_eq!(bytes, example("tomb-purge-reply"));
    assert_eq!(decode_reply(&bytes).3, Value::Int(1));
}

#[test]
fn stream_examples_match_the_codec() {
    let read = StreamRead {
        partition: 3,
        from: 0x00c0_0000_0000_0000,
        max_bytes: 1 << 20,
    };
    check_request(
        "stream-read-request",
        &example("stream-read-request"),
        10,
        &PeerRequest::StreamRead(read),
        encoded(|o| peer::encode_stream_read(10, &read, o)),
    );
    let batch = StreamBatch {
        next: None,
        entries: vec![vec![1, 2, 3, 4, 5]],
    };
    let bytes = reply(10, PeerOpcode::StreamRead, |w| {
        w.bulk(&encoded(|o| batch.encode(o)))
    });
    assert_eq!(bytes, example("stream-read-reply"));
    let (_, op, _, v) = decode_reply(&bytes);
    assert_eq!(op, 0x49);
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(StreamBatch::decode(&b).unwrap(), batch);

    check_request(
        "stream-status-request",
        &example("stream-status-request"),
        11,
        &PeerRequest::StreamStatus {
            digest: 0x0123_4567_89ab_cdef,
        },
        encoded(|o| peer::encode_stream_status(11, 0x0123_4567_89ab_cdef, o)),
    );
    let status = StreamStatus {
        digest: 0x0123_4567_89ab_cdef,
        phase: StreamPhase::Copying,
        partitions: 768,
        partitions_done: 256,
        bytes: 5_000_000,
        keys: 40_000,
        bytes_resent: 0,
        rate_bps: 1 << 20,
    };
    let bytes = reply(11, PeerOpcode::StreamStatus, |w| {
        w.bulk(&encoded(|o| status.encode(o)))
    });
    assert_eq!(bytes, example("stream-status-reply"));
    let (_, _, _, v) = decode_reply(&bytes);
    let Value::Bulk(b) = v else {
        panic!("a Bulk: {v:?}")
    };
    assert_eq!(StreamStatus::decode(&b).unwrap(), status);
}
