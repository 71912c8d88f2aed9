//! Peer links of a cluster: the messages nodes send each other (protocol.md §6).
//!
//! A peer link is a binary-frame connection on the client port: the same 16-byte header, status
//! codes and reply values (§2), opcodes `0x40`–`0x7f`. Its first frame is PEER_HELLO instead of
//! HELLO; after the mutual HMAC handshake ([`server_proof`], [`client_proof`]) requests flow
//! both ways, matched by request id. Structured reply bodies (a gossip view, an entry) travel
//! as a Bulk value.
//!
//! As for client frames, [`PeerRequest::parse`] borrows from the frame payload, bounds every
//! field before allocating, requires the payload to be consumed exactly and never panics; the
//! `encode_*` functions append one whole request frame.

mod aae;
mod auth;
mod gossip;
mod keyspace;
mod stream;
mod tomb;

pub use aae::{
    decode_hashes, decode_key_hashes, encode_hashes, encode_key_hashes, AaeRequest, TreeShape,
    AAE_SEGMENT_BITS, MAX_AAE_LIST, MAX_AAE_ROOTS,
};
pub use auth::{
    client_proof, server_proof, verify_proof, ClusterSettings, Conflicts, HelloReply, AUTH_FAILED,
    NONCE_LEN, PROOF_LEN,
};
pub use gossip::{GossipBody, MemberState, MemberWire};
pub use keyspace::{
    decode_counts, encode_counts, ScanPartition, ScanSlice, MAX_COUNT_KEYS_PARTITIONS,
    MAX_SCAN_PARTITION_COUNT, SCAN_FLAG_MATCH,
};
pub use stream::{StreamBatch, StreamPhase, StreamRead, StreamStatus, MAX_STREAM_BATCH_BYTES};
pub use tomb::{decode_states, encode_states, MAX_TOMB_BATCH, TOMB_HELD, TOMB_NEWER};

use bytes::{BufMut, BytesMut};
use smallvec::SmallVec;

use crate::frame::{begin_frame, finish_frame, Status};
use crate::wire::{put_bytes, Reader};
use crate::{ProtoError, Protocol};

/// The opcodes reserved for peer links. A client connection that sends one gets
/// [`ProtoError::PeerOpcode`] from [`crate::Request::parse`].
pub const PEER_OPCODES: std::ops::RangeInclusive<u8> = 0x40..=0x7f;
/// Longest advertised address (`host:port`) a peer may announce, in bytes.
pub const MAX_ADDR_BYTES: usize = 255;
/// Longest zone name, in bytes.
pub const MAX_ZONE_BYTES: usize = 64;

/// Whether `opcode` is in the peer range (assigned or not).
pub fn is_peer_opcode(opcode: u8) -> bool {
    PEER_OPCODES.contains(&opcode)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PeerOpcode {
    PeerHello = 0x40,
    PeerAuth = 0x41,
    Gossip = 0x42,
    Replicate = 0x43,
    Fetch = 0x44,
    Forward = 0x45,
    PeerPing = 0x46,
    ScanPartition = 0x47,
    CountKeys = 0x48,
    StreamRead = 0x49,
    StreamStatus = 0x4a,
    AaeRoots = 0x50,
    AaeBranches = 0x51,
    AaeLeaves = 0x52,
    AaeKeys = 0x53,
    TombOffer = 0x58,
    TombPurge = 0x59,
}

impl PeerOpcode {
    pub fn from_u8(b: u8) -> Option<PeerOpcode> {
        Some(match b {
            0x40 => PeerOpcode::PeerHello,
            0x41 => PeerOpcode::PeerAuth,
            0x42 => PeerOpcode::Gossip,
            0x43 => PeerOpcode::Replicate,
            0x44 => PeerOpcode::Fetch,
            0x45 => PeerOpcode::Forward,
            0x46 => PeerOpcode::PeerPing,
            0x47 => PeerOpcode::ScanPartition,
            0x48 => PeerOpcode::CountKeys,
            0x49 => PeerOpcode::StreamRead,
            0x4a => PeerOpcode::StreamStatus,
            0x50 => PeerOpcode::AaeRoots,
            0x51 => PeerOpcode::AaeBranches,
            0x52 => PeerOpcode::AaeLeaves,
            0x53 => PeerOpcode::AaeKeys,
            0x58 => PeerOpcode::TombOffer,
            0x59 => PeerOpcode::TombPurge,
            _ => return None,
        })
    }

    /// The name used in protocol.md and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            PeerOpcode::PeerHello => "PEER_HELLO",
            PeerOpcode::PeerAuth => "PEER_AUTH",
            PeerOpcode::Gossip => "GOSSIP",
            PeerOpcode::Replicate => "REPLICATE",
            PeerOpcode::Fetch => "FETCH",
            PeerOpcode::Forward => "FORWARD",
            PeerOpcode::PeerPing => "PEER_PING",
            PeerOpcode::ScanPartition => "SCAN_PARTITION",
            PeerOpcode::CountKeys => "COUNT_KEYS",
            PeerOpcode::StreamRead => "STREAM_READ",
            PeerOpcode::StreamStatus => "STREAM_STATUS",
            PeerOpcode::AaeRoots => "AAE_ROOTS",
            PeerOpcode::AaeBranches => "AAE_BRANCHES",
            PeerOpcode::AaeLeaves => "AAE_LEAVES",
            PeerOpcode::AaeKeys => "AAE_KEYS",
            PeerOpcode::TombOffer => "TOMB_OFFER",
            PeerOpcode::TombPurge => "TOMB_PURGE",
        }
    }
}

/// The first frame of a peer link: who the dialer is, its challenge, and the cluster settings
/// it runs with (which must equal the server's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello<'a> {
    pub min_version: u16,
    pub max_version: u16,
    pub node_id: u64,
    /// The dialer's fresh random challenge.
    pub nonce: &'a [u8; NONCE_LEN],
    /// Where other nodes reach the dialer, `host:port` (at most [`MAX_ADDR_BYTES`]).
    pub advertise: &'a str,
    /// The dialer's zone, empty for none (at most [`MAX_ZONE_BYTES`]).
    pub zone: &'a str,
    pub settings: ClusterSettings,
}

/// Everything of a FORWARD but its arguments: where the client's request came from and how
/// its reply must be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardHead {
    /// The client's protocol: the reply comes back encoded for it.
    pub proto: Protocol,
    /// The client's request id and opcode, echoed in a binary reply frame (0 for RESP).
    pub client_request_id: u64,
    pub client_opcode: u8,
    /// Read and write quorums asked for, 0 = the node's default.
    pub r: u8,
    pub w: u8,
}

/// A decoded peer request. Byte fields borrow from the frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRequest<'a> {
    Hello(PeerHello<'a>),
    /// The dialer's proof that it knows the cluster secret.
    Auth {
        proof: &'a [u8; PROOF_LEN],
    },
    /// A membership digest, with the sender's view of the members when they differ.
    Gossip(GossipBody),
    /// Store `entry` (a format-2 entry, key included). `hint_for` 0: for this replica itself;
    /// otherwise the node id of the owner it stands in for (store it as a hint).
    Replicate {
        hint_for: u64,
        entry: &'a [u8],
    },
    /// Read the entry of a key.
    Fetch {
        key: &'a [u8],
    },
    /// Run a client's command here and send back its reply, encoded for that client.
    Forward {
        head: ForwardHead,
        args: SmallVec<[&'a [u8]; 6]>,
    },
    Ping,
    /// A slice of one partition's live keys, in hash order.
    ScanPartition(ScanPartition<'a>),
    /// The live keys of each partition named.
    CountKeys {
        partitions: Vec<u32>,
    },
    /// A batch of one partition's entries, for a node that will own it.
    StreamRead(StreamRead),
    /// Where this node's copies for the moves of the asker's layout stand.
    StreamStatus {
        digest: u64,
    },
    /// A call of anti-entropy (§6.2): tree levels of partitions, or a segment's keys.
    Aae(AaeRequest),
    /// Tombstones past their grace (format-2 entries): merge each, say which are now held.
    TombOffer {
        entries: Vec<&'a [u8]>,
    },
    /// Purge each key whose stored entry is still the tombstone given.
    TombPurge {
        entries: Vec<&'a [u8]>,
    },
}

impl<'a> PeerRequest<'a> {
    /// Parses a peer request payload. Opcodes not assigned (0x40–0x4a, 0x50–0x53, 0x58–0x59
    /// are) are
    /// [`ProtoError::UnknownOpcode`].
    pub fn parse(opcode: u8, payload: &'a [u8]) -> Result<Self, ProtoError> {
        let op = PeerOpcode::from_u8(opcode).ok_or(ProtoError::UnknownOpcode(opcode))?;
        let mut r = Reader::new(payload, op.name());
        let req = match op {
            PeerOpcode::PeerHello => PeerRequest::Hello(read_hello(&mut r)?),
            PeerOpcode::PeerAuth => PeerRequest::Auth {
                proof: read_fixed(&mut r, "proof is not 32 bytes")?,
            },
            PeerOpcode::Gossip => PeerRequest::Gossip(GossipBody::read(&mut r)?),
            PeerOpcode::Replicate => PeerRequest::Replicate {
                hint_for: r.u64()?,
                entry: r.bytes()?,
            },
            PeerOpcode::Fetch => PeerRequest::Fetch { key: r.bytes()? },
            PeerOpcode::Forward => read_forward(&mut r)?,
            PeerOpcode::PeerPing => PeerRequest::Ping,
            PeerOpcode::ScanPartition => PeerRequest::ScanPartition(ScanPartition::read(&mut r)?),
            PeerOpcode::CountKeys => PeerRequest::CountKeys {
                partitions: keyspace::read_partitions(&mut r)?,
            },
            PeerOpcode::StreamRead => PeerRequest::StreamRead(StreamRead::read(&mut r)?),
            PeerOpcode::StreamStatus => PeerRequest::StreamStatus { digest: r.u64()? },
            PeerOpcode::AaeRoots => PeerRequest::Aae(aae::read_roots(&mut r)?),
            PeerOpcode::AaeBranches => PeerRequest::Aae(aae::read_branches(&mut r)?),
            PeerOpcode::AaeLeaves => PeerRequest::Aae(aae::read_leaves(&mut r)?),
            PeerOpcode::AaeKeys => PeerRequest::Aae(aae::read_keys(&mut r)?),
            PeerOpcode::TombOffer => PeerRequest::TombOffer {
                entries: tomb::read_entries(&mut r)?,
            },
            PeerOpcode::TombPurge => PeerRequest::TombPurge {
                entries: tomb::read_entries(&mut r)?,
            },
        };
        r.finish()?;
        Ok(req)
    }

    pub fn opcode(&self) -> PeerOpcode {
        match self {
            PeerRequest::Hello(_) => PeerOpcode::PeerHello,
            PeerRequest::Auth { .. } => PeerOpcode::PeerAuth,
            PeerRequest::Gossip(_) => PeerOpcode::Gossip,
            PeerRequest::Replicate { .. } => PeerOpcode::Replicate,
            PeerRequest::Fetch { .. } => PeerOpcode::Fetch,
            PeerRequest::Forward { .. } => PeerOpcode::Forward,
            PeerRequest::Ping => PeerOpcode::PeerPing,
            PeerRequest::ScanPartition(_) => PeerOpcode::ScanPartition,
            PeerRequest::CountKeys { .. } => PeerOpcode::CountKeys,
            PeerRequest::StreamRead(_) => PeerOpcode::StreamRead,
            PeerRequest::StreamStatus { .. } => PeerOpcode::StreamStatus,
            PeerRequest::Aae(a) => a.opcode(),
            PeerRequest::TombOffer { .. } => PeerOpcode::TombOffer,
            PeerRequest::TombPurge { .. } => PeerOpcode::TombPurge,
        }
    }

    /// Appends this request as one whole frame.
    pub fn encode(&self, request_id: u64, out: &mut BytesMut) {
        match self {
            PeerRequest::Hello(h) => encode_peer_hello(request_id, h, out),
            PeerRequest::Auth { proof } => encode_peer_auth(request_id, proof, out),
            PeerRequest::Gossip(body) => encode_gossip(request_id, body, out),
            PeerRequest::Replicate { hint_for, entry } => {
                encode_replicate(request_id, *hint_for, entry, out)
            }
            PeerRequest::Fetch { key } => encode_fetch(request_id, key, out),
            PeerRequest::Forward { head, args } => encode_forward(request_id, head, args, out),
            PeerRequest::Ping => encode_peer_ping(request_id, out),
            PeerRequest::ScanPartition(s) => encode_scan_partition(request_id, s, out),
            PeerRequest::CountKeys { partitions } => encode_count_keys(request_id, partitions, out),
            PeerRequest::StreamRead(s) => encode_stream_read(request_id, s, out),
            PeerRequest::StreamStatus { digest } => encode_stream_status(request_id, *digest, out),
            PeerRequest::Aae(a) => encode_aae(request_id, a, out),
            PeerRequest::TombOffer { entries } => encode_tomb_offer(request_id, entries, out),
            PeerRequest::TombPurge { entries } => encode_tomb_purge(request_id, entries, out),
        }
    }
}

fn read_hello<'a>(r: &mut Reader<'a>) -> Result<PeerHello<'a>, ProtoError> {
    let min_version = r.u16()?;
    let max_version = r.u16()?;
    let node_id = r.u64()?;
    let nonce = read_fixed(r, "nonce is not 32 bytes")?;
    let advertise = read_addr(r)?;
    let zone = read_zone(r)?;
    let n = r.u32()?;
    let partitions = r.u32()?;
    let conflicts = Conflicts::from_u8(r.u8()?).ok_or(r.error("unknown conflicts mode"))?;
    Ok(PeerHello {
        min_version,
        max_version,
        node_id,
        nonce,
        advertise,
        zone,
        settings: ClusterSettings {
            n,
            partitions,
            conflicts,
        },
    })
}

fn read_forward<'a>(r: &mut Reader<'a>) -> Result<PeerRequest<'a>, ProtoError> {
    let proto = match r.u8()? {
        PROTO_RESP => Protocol::Resp,
        PROTO_BINARY => Protocol::Binary,
        _ => return Err(r.error("unknown client protocol")),
    };
    let head = ForwardHead {
        proto,
        client_request_id: r.u64()?,
        client_opcode: r.u8()?,
        r: r.u8()?,
        w: r.u8()?,
    };
    let argc = r.u32()? as usize;
    if argc == 0 {
        return Err(r.error("no arguments"));
    }
    // Each argument takes at least its 4 length bytes: bound the count by the payload before
    // reserving anything.
    if argc > r.remaining() / 4 {
        return Err(r.error("truncated"));
    }
    let mut args = SmallVec::with_capacity(argc);
    for _ in 0..argc {
        args.push(r.bytes()?);
    }
    Ok(PeerRequest::Forward { head, args })
}

/// A `bytes` field that must be exactly `N` bytes long.
fn read_fixed<'a, const N: usize>(
    r: &mut Reader<'a>,
    wrong_len: &'static str,
) -> Result<&'a [u8; N], ProtoError> {
    let b = r.bytes()?;
    <&[u8; N]>::try_from(b).map_err(|_| r.error(wrong_len))
}

/// A `bytes` field holding UTF-8 text of at most `max` bytes.
fn read_str<'a>(
    r: &mut Reader<'a>,
    max: usize,
    too_long: &'static str,
    not_utf8: &'static str,
) -> Result<&'a str, ProtoError> {
    let b = r.bytes()?;
    if b.len() > max {
        return Err(r.error(too_long));
    }
    std::str::from_utf8(b).map_err(|_| r.error(not_utf8))
}

/// The limits and errors of the two text fields a peer announces: its address and its zone.
pub(crate) fn read_addr<'a>(r: &mut Reader<'a>) -> Result<&'a str, ProtoError> {
    read_str(
        r,
        MAX_ADDR_BYTES,
        "address over 255 bytes",
        "address is not UTF-8",
    )
}

pub(crate) fn read_zone<'a>(r: &mut Reader<'a>) -> Result<&'a str, ProtoError> {
    read_str(r, MAX_ZONE_BYTES, "zone over 64 bytes", "zone is not UTF-8")
}

/// The `proto` byte of FORWARD.
const PROTO_RESP: u8 = 0;
const PROTO_BINARY: u8 = 1;

fn proto_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Resp => PROTO_RESP,
        Protocol::Binary => PROTO_BINARY,
    }
}

fn request_frame(
    out: &mut BytesMut,
    request_id: u64,
    op: PeerOpcode,
    body: impl FnOnce(&mut BytesMut),
) {
    let start = begin_frame(out, request_id, op as u8, 0);
    body(out);
    finish_frame(out, start, Status::Ok);
}

/// Appends a PEER_HELLO frame. Fields over their limits are sent as given (the receiver
/// refuses them).
pub fn encode_peer_hello(request_id: u64, h: &PeerHello<'_>, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::PeerHello, |out| {
        out.put_u16(h.min_version);
        out.put_u16(h.max_version);
        out.put_u64(h.node_id);
        put_bytes(out, h.nonce);
        put_bytes(out, h.advertise.as_bytes());
        put_bytes(out, h.zone.as_bytes());
        out.put_u32(h.settings.n);
        out.put_u32(h.settings.partitions);
        out.put_u8(h.settings.conflicts as u8);
    });
}

/// Appends a PEER_AUTH frame carrying the dialer's proof.
pub fn encode_peer_auth(request_id: u64, proof: &[u8; PROOF_LEN], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::PeerAuth, |out| {
        put_bytes(out, proof)
    });
}

/// Appends a GOSSIP frame.
pub fn encode_gossip(request_id: u64, body: &GossipBody, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::Gossip, |out| body.encode(out));
}

/// Appends a REPLICATE frame: `entry` is a format-2 entry; `hint_for` 0 or the owner's id.
pub fn encode_replicate(request_id: u64, hint_for: u64, entry: &[u8], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::Replicate, |out| {
        out.put_u64(hint_for);
        put_bytes(out, entry);
    });
}

/// Appends a FETCH frame.
pub fn encode_fetch(request_id: u64, key: &[u8], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::Fetch, |out| {
        put_bytes(out, key)
    });
}

/// Appends a FORWARD frame. `args` must not be empty (the receiver refuses argc 0).
pub fn encode_forward(request_id: u64, head: &ForwardHead, args: &[&[u8]], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::Forward, |out| {
        out.put_u8(proto_byte(head.proto));
        out.put_u64(head.client_request_id);
        out.put_u8(head.client_opcode);
        out.put_u8(head.r);
        out.put_u8(head.w);
        out.put_u32(args.len() as u32);
        for a in args {
            put_bytes(out, a);
        }
    });
}

/// Appends a PEER_PING frame (empty payload).
pub fn encode_peer_ping(request_id: u64, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::PeerPing, |_| {});
}

/// Appends a SCAN_PARTITION frame. A count outside 1..=[`MAX_SCAN_PARTITION_COUNT`] is sent
/// as given (the receiver refuses it).
pub fn encode_scan_partition(request_id: u64, s: &ScanPartition<'_>, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::ScanPartition, |out| {
        s.encode_body(out)
    });
}

/// Appends a STREAM_READ frame.
pub fn encode_stream_read(request_id: u64, s: &StreamRead, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::StreamRead, |out| {
        s.encode_body(out)
    });
}

/// Appends a STREAM_STATUS frame carrying the asker's layout digest.
pub fn encode_stream_status(request_id: u64, digest: u64, out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::StreamStatus, |out| {
        out.put_u64(digest)
    });
}

/// Appends an anti-entropy request frame (its opcode follows the request).
pub fn encode_aae(request_id: u64, req: &AaeRequest, out: &mut BytesMut) {
    request_frame(out, request_id, req.opcode(), |out| req.encode_body(out));
}

impl AaeRequest {
    pub fn opcode(&self) -> PeerOpcode {
        match self {
            AaeRequest::Roots { .. } => PeerOpcode::AaeRoots,
            AaeRequest::Branches { .. } => PeerOpcode::AaeBranches,
            AaeRequest::Leaves { .. } => PeerOpcode::AaeLeaves,
            AaeRequest::Keys { .. } => PeerOpcode::AaeKeys,
        }
    }
}

/// Appends a COUNT_KEYS frame naming `partitions`.
pub fn encode_count_keys(request_id: u64, partitions: &[u32], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::CountKeys, |out| {
        keyspace::put_partitions(out, partitions)
    });
}

/// Appends a TOMB_OFFER frame. A count outside 1..=[`MAX_TOMB_BATCH`] is sent as given (the
/// receiver refuses it).
pub fn encode_tomb_offer(request_id: u64, entries: &[&[u8]], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::TombOffer, |out| {
        tomb::put_entries(out, entries)
    });
}

/// Appends a TOMB_PURGE frame (the same body as TOMB_OFFER).
pub fn encode_tomb_purge(request_id: u64, entries: &[&[u8]], out: &mut BytesMut) {
    request_frame(out, request_id, PeerOpcode::TombPurge, |out| {
        tomb::put_entries(out, entries)
    });
}
