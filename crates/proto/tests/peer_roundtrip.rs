//! Property tests of the peer-link codec (protocol.md §6): encode → decode round trips of every
//! peer message under arbitrary stream splitting, truncation and trailing bytes as exact
//! errors, field limits at and past their bounds, and "never panics" on arbitrary input.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use ringkv_proto::frame::decode_frame;
use ringkv_proto::peer::{
    self, client_proof, server_proof, verify_proof, ClusterSettings, Conflicts, ForwardHead,
    GossipBody, HelloReply, MemberState, MemberWire, PeerHello, MAX_ADDR_BYTES, MAX_ZONE_BYTES,
};
use ringkv_proto::{
    FrameWriter, Opcode, PeerOpcode, PeerRequest, ProtoError, Protocol, Request, Value,
};

const MAX_FRAME: usize = 1 << 20;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn blob(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

/// An owned peer request, so a strategy can generate it; [`Owned::as_req`] borrows it.
#[derive(Debug, Clone)]
enum Owned {
    Hello {
        versions: (u16, u16),
        node_id: u64,
        nonce: [u8; 32],
        advertise: String,
        zone: String,
        settings: ClusterSettings,
    },
    Auth([u8; 32]),
    Gossip(GossipBody),
    Replicate(u64, Vec<u8>),
    Fetch(Vec<u8>),
    Forward(ForwardHead, Vec<Vec<u8>>),
    Ping,
}

impl Owned {
    fn as_req(&self) -> PeerRequest<'_> {
        match self {
            Owned::Hello {
                versions,
                node_id,
                nonce,
                advertise,
                zone,
                settings,
            } => PeerRequest::Hello(PeerHello {
                min_version: versions.0,
                max_version: versions.1,
                node_id: *node_id,
                nonce,
                advertise,
                zone,
                settings: *settings,
            }),
            Owned::Auth(proof) => PeerRequest::Auth { proof },
            Owned::Gossip(body) => PeerRequest::Gossip(body.clone()),
            Owned::Replicate(hint_for, entry) => PeerRequest::Replicate {
                hint_for: *hint_for,
                entry,
            },
            Owned::Fetch(key) => PeerRequest::Fetch { key },
            Owned::Forward(head, args) => PeerRequest::Forward {
                head: *head,
                args: args.iter().map(|a| a.as_slice()).collect(),
            },
            Owned::Ping => PeerRequest::Ping,
        }
    }
}

/// Text of at most `max` UTF-8 bytes (any characters, multi-byte ones included).
fn text(max: usize) -> impl Strategy<Value = String> {
    ".{0,64}".prop_map(move |s: String| {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    })
}

fn settings() -> impl Strategy<Value = ClusterSettings> {
    (any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(n, partitions, lww)| ClusterSettings {
        n,
        partitions,
        conflicts: if lww {
            Conflicts::Lww
        } else {
            Conflicts::Siblings
        },
    })
}

fn member() -> impl Strategy<Value = MemberWire> {
    (
        any::<u64>(),
        any::<u64>(),
        0u8..4,
        text(MAX_ADDR_BYTES),
        text(MAX_ZONE_BYTES),
    )
        .prop_map(|(id, version, state, addr, zone)| MemberWire {
            id,
            version,
            state: MemberState::from_u8(state).expect("0..4"),
            addr,
            zone,
        })
}

fn gossip_body() -> impl Strategy<Value = GossipBody> {
    (any::<u64>(), vec(member(), 0..6)).prop_map(|(digest, members)| GossipBody { digest, members })
}

fn forward_head() -> impl Strategy<Value = ForwardHead> {
    (
        any::<bool>(),
        any::<u64>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(
            |(binary, client_request_id, client_opcode, r, w)| ForwardHead {
                proto: if binary {
                    Protocol::Binary
                } else {
                    Protocol::Resp
                },
                client_request_id,
                client_opcode,
                r,
                w,
            },
        )
}

fn any_peer_request() -> impl Strategy<Value = Owned> {
    prop_oneof![
        (
            (any::<u16>(), any::<u16>()),
            any::<u64>(),
            any::<[u8; 32]>(),
            text(MAX_ADDR_BYTES),
            text(MAX_ZONE_BYTES),
            settings(),
        )
            .prop_map(|(versions, node_id, nonce, advertise, zone, settings)| {
                Owned::Hello {
                    versions,
                    node_id,
                    nonce,
                    advertise,
                    zone,
                    settings,
                }
            }),
        any::<[u8; 32]>().prop_map(Owned::Auth),
        gossip_body().prop_map(Owned::Gossip),
        (any::<u64>(), blob(256)).prop_map(|(h, e)| Owned::Replicate(h, e)),
        blob(64).prop_map(Owned::Fetch),
        (forward_head(), vec(blob(32), 1..10)).prop_map(|(h, a)| Owned::Forward(h, a)),
        Just(Owned::Ping),
    ]
}

fn encode(req: &PeerRequest<'_>, id: u64) -> BytesMut {
    let mut out = BytesMut::new();
    req.encode(id, &mut out);
    out
}

fn malformed(op: PeerOpcode, why: &'static str) -> ProtoError {
    ProtoError::Malformed {
        what: op.name(),
        why,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn peer_request_round_trip(owned in any_peer_request(), id in any::<u64>()) {
        // The frame outlives `req`: a request is invariant in its lifetime.
        let frame = encode(&owned.as_req(), id);
        let req = owned.as_req();
        for cut in 0..frame.len() {
            prop_assert_eq!(decode_frame(&frame[..cut], MAX_FRAME).unwrap(), None);
        }
        let (h, payload, used) = decode_frame(&frame, MAX_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        prop_assert_eq!((h.request_id, h.opcode, h.flags, h.status), (id, req.opcode() as u8, 0, 0));
        let parsed = PeerRequest::parse(h.opcode, payload).unwrap();
        prop_assert_eq!(parsed.opcode(), req.opcode());
        prop_assert_eq!(parsed, req);
    }

    /// Many peer requests on one link, read off in arbitrary pieces.
    #[test]
    fn peer_request_stream_round_trip(
        reqs in vec((any_peer_request(), any::<u64>()), 1..8),
        cuts in vec(any::<usize>(), 0..16),
    ) {
        let mut stream = BytesMut::new();
        for (r, id) in &reqs {
            r.as_req().encode(*id, &mut stream);
        }
        let mut ends: Vec<usize> = cuts.iter().map(|&c| c % (stream.len() + 1)).collect();
        ends.push(stream.len());
        ends.sort_unstable();
        let (mut buf, mut fed, mut got) = (BytesMut::new(), 0, 0);
        for end in ends {
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            while let Some((h, payload, used)) = decode_frame(&buf, MAX_FRAME).unwrap() {
                let (r, id) = &reqs[got];
                prop_assert_eq!(h.request_id, *id);
                prop_assert_eq!(PeerRequest::parse(h.opcode, payload).unwrap(), r.as_req());
                got += 1;
                let _ = buf.split_to(used);
            }
        }
        prop_assert_eq!(got, reqs.len());
        prop_assert!(buf.is_empty());
    }

    /// Every strict prefix of a payload is `truncated` and every extension `trailing bytes`:
    /// never a success with other fields, never a panic.
    #[test]
    fn peer_payload_truncation_and_trailing_bytes(req in any_peer_request(), extra in blob(8)) {
        let req = req.as_req();
        let frame = encode(&req, 1);
        let (h, payload, _) = decode_frame(&frame, MAX_FRAME).unwrap().unwrap();
        for cut in 0..payload.len() {
            prop_assert_eq!(
                PeerRequest::parse(h.opcode, &payload[..cut]).unwrap_err(),
                malformed(req.opcode(), "truncated")
            );
        }
        if !extra.is_empty() {
            let mut longer = payload.to_vec();
            longer.extend_from_slice(&extra);
            prop_assert_eq!(
                PeerRequest::parse(h.opcode, &longer).unwrap_err(),
                malformed(req.opcode(), "trailing bytes")
            );
        }
    }

    #[test]
    fn gossip_body_round_trip(body in gossip_body(), extra in 1usize..8) {
        let mut out = BytesMut::new();
        body.encode(&mut out);
        prop_assert_eq!(GossipBody::decode(&out).unwrap(), body.clone());
        prop_assert_eq!(
            GossipBody::decode(&out[..out.len() - 1]).unwrap_err(),
            malformed(PeerOpcode::Gossip, "truncated")
        );
        out.resize(out.len() + extra, 0);
        prop_assert_eq!(
            GossipBody::decode(&out).unwrap_err(),
            malformed(PeerOpcode::Gossip, "trailing bytes")
        );
    }

    /// The PEER_HELLO reply written through the reply encoder reads back as it was.
    #[test]
    fn hello_reply_round_trip(version in any::<u16>(), node_id in any::<u64>(),
                              nonce in any::<[u8; 32]>(), proof in any::<[u8; 32]>()) {
        let r = HelloReply { version, node_id, nonce, proof };
        let mut out = BytesMut::new();
        let mut w = FrameWriter::new(&mut out, 9, PeerOpcode::PeerHello as u8);
        r.write(&mut w);
        w.finish();
        let (_, payload, _) = decode_frame(&out, MAX_FRAME).unwrap().unwrap();
        let v = Value::decode(&Bytes::copy_from_slice(payload)).unwrap();
        prop_assert_eq!(HelloReply::from_value(&v).unwrap(), r);
    }

    #[test]
    fn proofs_verify_only_themselves(secret in blob(80), dn in any::<[u8; 32]>(),
                                     sn in any::<[u8; 32]>(), d in any::<u64>(), s in any::<u64>()) {
        let sp = server_proof(&secret, &dn, &sn, d, s);
        let cp = client_proof(&secret, &dn, &sn, d, s);
        prop_assert!(verify_proof(&sp, &sp));
        prop_assert!(verify_proof(&cp, &cp));
        prop_assert!(!verify_proof(&sp, &cp));
        let mut other = secret.clone();
        other.push(1); // not 0: HMAC pads a short key with zero bytes
        prop_assert!(!verify_proof(&sp, &server_proof(&other, &dn, &sn, d, s)));
    }

    #[test]
    fn peer_parse_never_panics(op in 0x3fu8..0x60, payload in blob(128)) {
        let _ = PeerRequest::parse(op, &payload);
        let _ = GossipBody::decode(&payload);
    }

    #[test]
    fn peer_parse_damaged_never_panics(req in any_peer_request(), at in any::<usize>(), b in any::<u8>()) {
        let frame = encode(&req.as_req(), 1);
        let (h, payload, _) = decode_frame(&frame, MAX_FRAME).unwrap().unwrap();
        let mut damaged = payload.to_vec();
        if !damaged.is_empty() {
            let at = at % damaged.len();
            damaged[at] = b;
        }
        let _ = PeerRequest::parse(h.opcode, &damaged);
    }
}

/// A valid PEER_HELLO payload with the given nonce, advertise and zone fields (raw bytes).
fn hello_payload(nonce: &[u8], advertise: &[u8], zone: &[u8], conflicts: u8) -> Vec<u8> {
    let mut p = vec![0, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
    for f in [nonce, advertise, zone] {
        p.extend_from_slice(&(f.len() as u32).to_be_bytes());
        p.extend_from_slice(f);
    }
    p.extend_from_slice(&[0, 0, 0, 3, 0, 0, 4, 0, conflicts]);
    p
}

#[test]
fn hello_field_limits() {
    let hello = |n: &[u8], a: &[u8], z: &[u8], c: u8| {
        PeerRequest::parse(0x40, &hello_payload(n, a, z, c)).map(|_| ())
    };
    let e = |why| Err(malformed(PeerOpcode::PeerHello, why));
    let (nonce, addr, zone) = ([7u8; 32], [b'a'; MAX_ADDR_BYTES], [b'z'; MAX_ZONE_BYTES]);
    // At the limits: accepted.
    let p = hello_payload(&nonce, &addr, &zone, 1);
    let Ok(PeerRequest::Hello(h)) = PeerRequest::parse(0x40, &p) else {
        panic!("a valid PEER_HELLO")
    };
    assert_eq!((h.node_id, h.advertise.len(), h.zone.len()), (7, 255, 64));
    assert_eq!(h.settings.conflicts, Conflicts::Lww);
    // Past them.
    assert_eq!(
        hello(&nonce[..31], &addr, &zone, 0),
        e("nonce is not 32 bytes")
    );
    assert_eq!(hello(&[7; 33], &addr, &zone, 0), e("nonce is not 32 bytes"));
    assert_eq!(
        hello(&nonce, &[b'a'; 256], b"", 0),
        e("address over 255 bytes")
    );
    assert_eq!(hello(&nonce, b"", &[b'z'; 65], 0), e("zone over 64 bytes"));
    assert_eq!(hello(&nonce, b"\xff:1", b"", 0), e("address is not UTF-8"));
    assert_eq!(hello(&nonce, b"", b"\xc3", 0), e("zone is not UTF-8"));
    assert_eq!(hello(&nonce, b"", b"", 2), e("unknown conflicts mode"));
    // A length that claims more than the payload holds.
    let mut p = hello_payload(&nonce, b"", b"", 0);
    p[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(PeerRequest::parse(0x40, &p).map(|_| ()), e("truncated"));
}

#[test]
fn auth_gossip_forward_field_limits() {
    let mut auth = 31u32.to_be_bytes().to_vec();
    auth.extend_from_slice(&[0; 31]);
    assert_eq!(
        PeerRequest::parse(0x41, &auth),
        Err(malformed(PeerOpcode::PeerAuth, "proof is not 32 bytes"))
    );

    let body = |state: u8, addr: &[u8], zone: &[u8]| {
        let mut p = vec![0; 8];
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p.push(state);
        for f in [addr, zone] {
            p.extend_from_slice(&(f.len() as u32).to_be_bytes());
            p.extend_from_slice(f);
        }
        p
    };
    let g = |why| Err(malformed(PeerOpcode::Gossip, why));
    assert!(GossipBody::decode(&body(3, &[b'a'; 255], &[b'z'; 64])).is_ok());
    assert_eq!(
        GossipBody::decode(&body(4, b"", b"")),
        g("unknown member state")
    );
    assert_eq!(
        GossipBody::decode(&body(1, &[b'a'; 256], b"")),
        g("address over 255 bytes")
    );
    assert_eq!(
        GossipBody::decode(&body(1, b"", &[b'z'; 65])),
        g("zone over 64 bytes")
    );
    assert_eq!(
        PeerRequest::parse(0x42, &body(9, b"", b"")).unwrap_err(),
        malformed(PeerOpcode::Gossip, "unknown member state")
    );
    // A huge count with no members behind it is refused before anything is reserved.
    let mut huge = vec![0; 8];
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(GossipBody::decode(&huge), g("truncated"));

    let forward = |proto: u8, argc: u32, rest: &[u8]| {
        let mut p = vec![proto, 0, 0, 0, 0, 0, 0, 0, 8, 0x20, 0, 0];
        p.extend_from_slice(&argc.to_be_bytes());
        p.extend_from_slice(rest);
        PeerRequest::parse(0x45, &p).map(|_| ())
    };
    let f = |why| Err(malformed(PeerOpcode::Forward, why));
    assert_eq!(forward(0, 1, &[0, 0, 0, 0]), Ok(()));
    assert_eq!(forward(2, 1, &[0, 0, 0, 0]), f("unknown client protocol"));
    assert_eq!(forward(1, 0, &[]), f("no arguments"));
    assert_eq!(forward(1, u32::MAX, &[0, 0, 0, 0]), f("truncated"));
}

/// Which opcodes are peer opcodes, for both parsers, over all 256 values.
#[test]
fn opcode_ranges() {
    for op in 0..=255u8 {
        let peer = PeerOpcode::from_u8(op);
        let assigned = (0x40..=0x4a).contains(&op)
            || (0x50..=0x53).contains(&op)
            || (0x58..=0x59).contains(&op);
        assert_eq!(peer.is_some(), assigned, "{op:#04x}");
        if let Some(p) = peer {
            assert_eq!(p as u8, op);
        }
        match PeerRequest::parse(op, &[]) {
            Err(ProtoError::UnknownOpcode(o)) => assert!(peer.is_none() && o == op),
            _ => assert!(peer.is_some(), "{op:#04x}"),
        }
        // The client parser: the whole peer range is refused as such, the rest as before.
        let in_range = (0x40..=0x7f).contains(&op);
        assert_eq!(peer::is_peer_opcode(op), in_range);
        let client = Request::parse(op, &[], 16);
        if in_range {
            assert_eq!(client, Err(ProtoError::PeerOpcode(op)));
        } else if Opcode::from_u8(op).is_none() {
            assert_eq!(client, Err(ProtoError::UnknownOpcode(op)));
        }
    }
}

#[test]
fn hello_reply_shape_errors() {
    let bad = |why| {
        Err(ProtoError::Malformed {
            what: "PEER_HELLO reply",
            why,
        })
    };
    let good = || {
        vec![
            Value::Int(1),
            Value::Int(-1),
            Value::Bulk(Bytes::from_static(&[1; 32])),
            Value::Bulk(Bytes::from_static(&[2; 32])),
        ]
    };
    let r = HelloReply::from_value(&Value::Array(good())).unwrap();
    assert_eq!(
        r.node_id,
        u64::MAX,
        "the node id's 64 bits travel as an i64"
    );
    assert_eq!(HelloReply::from_value(&Value::Int(1)), bad("not an array"));
    let mut v = good();
    v.pop();
    assert_eq!(
        HelloReply::from_value(&Value::Array(v)),
        bad("not [Int, Int, Bulk, Bulk]")
    );
    let mut v = good();
    v[0] = Value::Int(70_000);
    assert_eq!(
        HelloReply::from_value(&Value::Array(v)),
        bad("version out of range")
    );
    let mut v = good();
    v[2] = Value::Bulk(Bytes::from_static(&[1; 31]));
    assert_eq!(
        HelloReply::from_value(&Value::Array(v)),
        bad("nonce is not 32 bytes")
    );
    let mut v = good();
    v[3] = Value::Bulk(Bytes::from_static(&[1; 33]));
    assert_eq!(
        HelloReply::from_value(&Value::Array(v)),
        bad("proof is not 32 bytes")
    );
}

#[test]
fn direct_encoders_match_the_request_encoder() {
    let entry = b"entry";
    let mut a = BytesMut::new();
    peer::encode_replicate(5, 42, entry, &mut a);
    assert_eq!(
        a,
        encode(
            &PeerRequest::Replicate {
                hint_for: 42,
                entry
            },
            5
        )
    );
    let mut a = BytesMut::new();
    peer::encode_fetch(6, b"k", &mut a);
    assert_eq!(a, encode(&PeerRequest::Fetch { key: b"k" }, 6));
}

/// SCAN_PARTITION and COUNT_KEYS refuse what they can't mean, with the errors protocol.md
/// §6.2 lists, and round-trip what they can.
#[test]
fn keyspace_payloads() {
    use ringkv_proto::peer::{ScanPartition, ScanSlice};
    let scan = |count: u32, flags: u8, pattern: &[u8]| {
        let mut p = Vec::new();
        p.extend_from_slice(&3u32.to_be_bytes());
        p.extend_from_slice(&7u64.to_be_bytes());
        p.extend_from_slice(&count.to_be_bytes());
        p.push(flags);
        p.extend_from_slice(&(pattern.len() as u32).to_be_bytes());
        p.extend_from_slice(pattern);
        p
    };
    let s = |why| Err(malformed(PeerOpcode::ScanPartition, why));
    let parse = |p: &[u8]| PeerRequest::parse(0x47, p).map(|r| format!("{r:?}"));
    assert_eq!(parse(&scan(0, 0, b"")), s("count out of range"));
    assert_eq!(parse(&scan(100_001, 0, b"")), s("count out of range"));
    assert_eq!(parse(&scan(5, 2, b"")), s("unknown flags"));
    assert_eq!(parse(&scan(5, 0, b"a*")), s("pattern without its flag"));
    assert_eq!(parse(&scan(5, 1, b"a*")[..20]), s("truncated"));
    let mut long = scan(5, 0, b"");
    long.push(0);
    assert_eq!(parse(&long), s("trailing bytes"));
    let all = scan(5, 0, b"");
    assert_eq!(
        PeerRequest::parse(0x47, &all).unwrap(),
        PeerRequest::ScanPartition(ScanPartition {
            partition: 3,
            from: 7,
            count: 5,
            pattern: None,
        })
    );
    // An empty MATCH pattern is a pattern (it matches the empty key only), not "no MATCH".
    let empty = scan(5, 1, b"");
    assert_eq!(
        PeerRequest::parse(0x47, &empty).unwrap(),
        PeerRequest::ScanPartition(ScanPartition {
            partition: 3,
            from: 7,
            count: 5,
            pattern: Some(b""),
        })
    );

    let c = |why| Err(malformed(PeerOpcode::CountKeys, why));
    let parse = |p: &[u8]| PeerRequest::parse(0x48, p).map(|r| format!("{r:?}"));
    assert_eq!(parse(&[0, 1, 0, 1]), c("too many partitions"));
    assert_eq!(parse(&[0, 0, 0, 2, 0, 0, 0, 1]), c("truncated"));
    assert_eq!(
        PeerRequest::parse(0x48, &[0, 0, 0, 1, 0, 0, 0, 9]).unwrap(),
        PeerRequest::CountKeys {
            partitions: vec![9]
        }
    );

    // Replies: a malformed slice is an error, not a panic or a huge allocation.
    let slice = ScanSlice {
        next: None,
        examined: 1,
        keys: vec![b"k".to_vec()],
    };
    let mut b = bytes::BytesMut::new();
    slice.encode(&mut b);
    assert_eq!(ScanSlice::decode(&b).unwrap(), slice);
    let mut bad = b.to_vec();
    bad[0] = 2;
    assert!(ScanSlice::decode(&bad).is_err(), "unknown more flag");
    let mut bad = b.to_vec();
    bad[8] = 1; // more 0 with a next
    assert!(ScanSlice::decode(&bad).is_err(), "next past the end");
    let mut huge = b[..13].to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(
        ScanSlice::decode(&huge).is_err(),
        "a key count beyond the bytes"
    );
    assert!(ringkv_proto::peer::decode_counts(&[0, 0, 0, 9, 1]).is_err());
}
