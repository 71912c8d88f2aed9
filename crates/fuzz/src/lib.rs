//! Fuzz target bodies: one plain `fn(&[u8])` per decoder that reads untrusted bytes.
//!
//! The same functions are driven by the coverage-guided binaries in `fuzz/` (cargo-fuzz,
//! libFuzzer) and by `tests/replay.rs`, which runs every file of `fuzz/corpus/<target>/`
//! under `cargo test`. A target panics (so the fuzzer reports a crash) when the decoder
//! panics, or when a cheap property fails:
//! - `frame`: frames found one after another never overrun the buffer, a cut-short frame is
//!   "need more bytes", and a parsed request re-encodes to the very payload it came from;
//!   reply frames (what clients decode) go through `Value::decode` and re-encode the same;
//! - `resp`: with the authenticated and the pre-AUTH limits, every request consumes at least
//!   one and at most the given bytes, respects the argument limits, parses the same from
//!   exactly its own bytes, and any cut-short prefix of it is "need more bytes";
//! - `wal`: the segment scanner reports records in sequence order inside the buffer, and a
//!   clean scan ends in zeros only; the records are applied to a shard as recovery does;
//! - `snapshot`: the snapshot reader loads into a shard or reports corruption at an offset
//!   inside the file.
//!
//! Every decoder call runs under [`alloc::bounded`]: the memory it holds at once may not exceed
//! a small multiple of the input's size, so a huge claimed length or count must be checked
//! before it sizes anything (at every nesting level).
//!
//! The WAL and snapshot formats are guarded by CRC32s that random mutation almost never
//! satisfies; the first input byte of those targets is a mode whose bits ask the target to
//! repair the header and the checksums first (see [`wal_input`], [`snapshot_input`]), so the
//! fuzzer also explores what lies behind them.

pub mod alloc;
pub mod seeds;

use std::path::Path;

use bytes::{Bytes, BytesMut};
use ringkv::snapshot;
use ringkv::store::Shard;
use ringkv::wal::record;
use ringkv_proto::frame::{decode_frame, Request};
use ringkv_proto::resp::{parse_request, RespLimits, RespRequest, MAX_INLINE};
use ringkv_proto::{Value, HEADER_LEN};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory and fuzz binary.
pub const TARGETS: &[(&str, Target)] = &[
    ("frame", frame),
    ("resp", resp),
    ("wal", wal),
    ("snapshot", snapshot),
];

/// The server's limits (src/net/connection.rs and src/config.rs), mirrored here.
pub const MAX_ARGS: usize = 1024 * 1024;
pub const PREAUTH_ARGS: usize = 10;
pub const PREAUTH_BULK: usize = 16 * 1024;
pub const MAX_BULK: usize = 512 * 1024 * 1024;
/// The smallest `--max-frame-bytes` the server accepts, and the default.
pub const MIN_MAX_FRAME: usize = 4096;
pub const DEFAULT_MAX_FRAME: usize = ringkv::config::DEFAULT_MAX_FRAME;

/// Bound on the memory a decoder may hold at once for `len` input bytes. The largest decoded
/// form per input byte is a reply array of 1-byte nils: a 56-byte `Value` each, in a vector that
/// holds its old and new blocks while it grows (up to 3 × 56), next to an outer array that
/// reserved its claimed count. Memory sized by a claimed length, or reserved again at every
/// nesting level, is far above.
pub const BYTES_PER_INPUT_BYTE: usize = 256;
pub const BOUND_SLACK_BYTES: usize = 64 * 1024;

fn alloc_bound(len: usize) -> usize {
    BYTES_PER_INPUT_BYTE * len + BOUND_SLACK_BYTES
}

/// Binary frames: split a pipelined stream with `decode_frame`, parse each request as the
/// server does (pre- and post-HELLO argument limits), re-encode what parses.
pub fn frame(data: &[u8]) {
    for max_frame in [MIN_MAX_FRAME, DEFAULT_MAX_FRAME] {
        for max_args in [PREAUTH_ARGS, MAX_ARGS] {
            frame_stream(data, max_frame, max_args);
        }
    }
}

fn frame_stream(data: &[u8], max_frame: usize, max_args: usize) {
    let mut rest = data;
    loop {
        let split = alloc::bounded("decode_frame", alloc_bound(rest.len()), || {
            decode_frame(rest, max_frame)
        });
        let (header, payload, used) = match split {
            // Need more bytes, or a framing error (the server closes the connection).
            Ok(None) | Err(_) => return,
            Ok(Some(f)) => f,
        };
        assert!(
            (HEADER_LEN..=rest.len()).contains(&used) && used <= max_frame,
            "frame took {used} of {} bytes (max frame {max_frame})",
            rest.len()
        );
        assert_eq!(
            payload.len(),
            used - HEADER_LEN,
            "payload is the frame's tail"
        );
        assert_eq!(payload, &rest[HEADER_LEN..used]);
        // The same frame cut short by one byte is incomplete, not an error or another frame.
        assert_eq!(
            decode_frame(&rest[..used - 1], max_frame),
            Ok(None),
            "a frame cut short must ask for more bytes"
        );
        if header.is_reply() {
            reply_payload(payload);
        } else {
            request_payload(header.request_id, header.opcode, payload, used, max_args);
        }
        rest = &rest[used..];
    }
}

/// A request payload, parsed as the server does, re-encoded when it parses.
fn request_payload(id: u64, opcode: u8, payload: &[u8], used: usize, max_args: usize) {
    // Declared before the request: the re-decoded request borrows from it.
    let mut out = BytesMut::new();
    let parsed = alloc::bounded("Request::parse", alloc_bound(payload.len()), || {
        Request::parse(opcode, payload, max_args)
    });
    let Ok(req) = parsed else {
        return;
    };
    if let Request::Command { args } = &req {
        assert!(!args.is_empty() && args.len() <= max_args);
    }
    req.encode(id, &mut out);
    assert_eq!(
        &out[HEADER_LEN..],
        payload,
        "re-encoding changed the payload"
    );
    let again = decode_frame(&out, usize::MAX);
    match again {
        Ok(Some((h, p, n))) => {
            assert_eq!((h.request_id, h.opcode, n), (id, opcode, used));
            assert_eq!(Request::parse(h.opcode, p, max_args).as_ref(), Ok(&req));
        }
        other => panic!("an encoded request does not decode: {other:?}"),
    };
}

/// A reply payload, decoded as clients do, re-encoded when it decodes.
fn reply_payload(payload: &[u8]) {
    let payload = Bytes::copy_from_slice(payload);
    let decoded = alloc::bounded("Value::decode", alloc_bound(payload.len()), || {
        Value::decode(&payload)
    });
    if let Ok(v) = decoded {
        let mut out = BytesMut::new();
        v.encode(&mut out);
        assert_eq!(&out[..], &payload[..], "re-encoding changed the reply");
    }
}

/// RESP2: parse a pipelined stream with the limits before and after AUTH.
pub fn resp(data: &[u8]) {
    let authed = RespLimits {
        max_args: MAX_ARGS,
        max_bulk: MAX_BULK.min(DEFAULT_MAX_FRAME),
        max_inline: MAX_INLINE,
        unauthenticated: false,
    };
    let preauth = RespLimits {
        max_args: PREAUTH_ARGS,
        max_bulk: PREAUTH_BULK,
        max_inline: MAX_INLINE,
        unauthenticated: true,
    };
    // Small limits reach the limit checks with small inputs.
    let tiny = RespLimits {
        max_args: 3,
        max_bulk: 8,
        max_inline: 16,
        unauthenticated: true,
    };
    for limits in [authed, preauth, tiny] {
        resp_stream(data, &limits);
    }
}

fn resp_stream(data: &[u8], limits: &RespLimits) {
    let mut rest = data;
    loop {
        let parsed = alloc::bounded("parse_request", alloc_bound(rest.len()), || {
            parse_request(rest, limits)
        });
        let (req, used) = match parsed {
            Ok(None) | Err(_) => return,
            Ok(Some(r)) => r,
        };
        assert!(
            (1..=rest.len()).contains(&used),
            "request took {used} of {} bytes",
            rest.len()
        );
        let argc = match &req {
            RespRequest::Args(a) => {
                for arg in a {
                    assert!(arg.len() <= limits.max_bulk.max(limits.max_inline));
                }
                a.len()
            }
            RespRequest::Owned(a) => a.len(),
            RespRequest::Empty => 0,
        };
        assert!(argc <= limits.max_args, "{argc} arguments over the limit");
        // The request does not depend on what follows it...
        assert_eq!(
            parse_request(&rest[..used], limits).as_ref(),
            Ok(&Some((req, used))),
            "a request parses differently from exactly its own bytes"
        );
        // ...and arriving one byte short, it is incomplete (the server reads in chunks).
        assert_eq!(
            parse_request(&rest[..used - 1], limits),
            Ok(None),
            "a request cut short must ask for more bytes: {:?}",
            String::from_utf8_lossy(&rest[..used])
        );
        rest = &rest[used..];
    }
}

/// Mode bits of the first byte of a `wal` or `snapshot` input.
pub const FIX_HEADER: u8 = 1;
pub const FIX_CHECKSUMS: u8 = 2;

/// Splits a `wal` input into (segment bytes, shard id to scan for). With [`FIX_HEADER`], the
/// magic is made valid, the format version too (1 and 2 are kept: both are read) and the shard
/// id is the header's; with [`FIX_CHECKSUMS`], every record that fits gets its correct
/// checksums (format 2: payload and header CRC; format 1: the one CRC).
pub fn wal_input(data: &[u8]) -> (Vec<u8>, u32) {
    let Some((&mode, seg)) = data.split_first() else {
        return (Vec::new(), 0);
    };
    let mut seg = seg.to_vec();
    if seg.len() < record::SEGMENT_HEADER {
        return (seg, 0);
    }
    let mut shard = 0;
    if mode & FIX_HEADER != 0 {
        seg[..8].copy_from_slice(record::SEGMENT_MAGIC);
        let version = record::u32_at(&seg, 8);
        if version != record::FORMAT_VERSION && version != record::FORMAT_VERSION_V1 {
            seg[8..12].copy_from_slice(&record::FORMAT_VERSION.to_le_bytes());
        }
        shard = record::u32_at(&seg, 12);
    }
    if mode & FIX_CHECKSUMS != 0 {
        let v1 = record::u32_at(&seg, 8) == record::FORMAT_VERSION_V1;
        let header = if v1 {
            record::RECORD_HEADER_V1
        } else {
            record::RECORD_HEADER
        };
        let mut pos = record::SEGMENT_HEADER;
        while pos + header <= seg.len() {
            let len = record::u32_at(&seg, pos + record::OFF_LEN) as usize;
            let end = pos + header + len;
            if len > record::MAX_RECORD || end > seg.len() {
                break;
            }
            if v1 {
                let crc = crc32fast::hash(&seg[pos + 4..end]);
                seg[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
            } else {
                let at = pos + record::OFF_PAYLOAD_CRC;
                let crc = crc32fast::hash(&seg[pos + header..end]);
                seg[at..at + 4].copy_from_slice(&crc.to_le_bytes());
                let crc = crc32fast::hash(&seg[pos + record::OFF_LEN..pos + header]);
                seg[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
            }
            pos = end;
        }
    }
    (seg, shard)
}

/// WAL segments: scan, apply each record to a shard as recovery does, and count what a
/// `--repair` would drop after damage.
pub fn wal(data: &[u8]) {
    let (seg, shard_id) = wal_input(data);
    let mut shard = Shard::default();
    let mut seqs = Vec::new();
    let mut next_offset = record::SEGMENT_HEADER;
    let scan = alloc::bounded("wal scan", alloc_bound(seg.len()), || {
        record::scan(&seg, shard_id, |r| {
            // Records come in file order, back to back, each payload at the end of its record.
            assert_eq!(r.offset, next_offset, "records are not back to back");
            let start = (r.payload.as_ptr() as usize).wrapping_sub(seg.as_ptr() as usize);
            let header = start.wrapping_sub(r.offset);
            assert!(
                matches!(header, record::RECORD_HEADER | record::RECORD_HEADER_V1)
                    && start + r.payload.len() <= seg.len(),
                "record payload is not right after its header inside the segment"
            );
            next_offset = start + r.payload.len();
            seqs.push(r.seq);
            if r.kind == record::TXN {
                txn_parts(r.payload, &mut shard);
            } else {
                shard.apply(r.kind, r.payload);
            }
        })
    });
    assert_eq!(scan.records, seqs.len());
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "records out of order");
    assert!(scan.good_len <= seg.len());
    if scan.records > 0 {
        assert_eq!(
            scan.good_len, next_offset,
            "good_len is the end of the last record"
        );
    }
    match &scan.damage {
        None => assert!(
            seg[scan.good_len..].iter().all(|&b| b == 0),
            "a clean scan stopped before non-zero bytes"
        ),
        Some(_) => {
            // What `--repair` counts before moving the segment aside.
            let n = alloc::bounded("count_recoverable_after", alloc_bound(seg.len()), || {
                record::count_recoverable_after(&seg, scan.good_len)
            });
            assert!(n <= seg.len() / record::RECORD_HEADER_V1);
        }
    }
}

/// Splits a `snapshot` input into (file bytes, shard id). With [`FIX_HEADER`] the magic and
/// version are made valid and the shard id is the header's; with [`FIX_CHECKSUMS`], every
/// block that fits gets its correct CRC, and so does the footer's count.
pub fn snapshot_input(data: &[u8]) -> (Vec<u8>, usize) {
    let Some((&mode, file)) = data.split_first() else {
        return (Vec::new(), 0);
    };
    let mut file = file.to_vec();
    let mut shard = 0;
    if mode & FIX_HEADER != 0 && file.len() >= snapshot::HEADER {
        file[..8].copy_from_slice(snapshot::MAGIC);
        file[8..12].copy_from_slice(&snapshot::FORMAT_VERSION.to_le_bytes());
        shard = record::u32_at(&file, 12) as usize;
    }
    if mode & FIX_CHECKSUMS != 0 {
        let mut pos = snapshot::HEADER;
        while pos + 8 <= file.len() {
            let len = record::u32_at(&file, pos) as usize;
            if len == 0 {
                if pos + 16 <= file.len() {
                    let crc = crc32fast::hash(&file[pos + 8..pos + 16]);
                    file[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
                }
                break;
            }
            let end = pos + 8 + len;
            if end > file.len() {
                break;
            }
            let crc = crc32fast::hash(&file[pos + 8..end]);
            file[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
            pos = end;
        }
    }
    (file, shard)
}

/// A TXN record's payload: decoded (the caller's allocation bound covers it), every part's
/// records applied as recovery applies a shard's own part.
fn txn_parts(payload: &[u8], shard: &mut Shard) {
    let Ok(parts) = record::txn::decode(payload) else {
        return;
    };
    assert!(!parts.is_empty(), "a transaction of no part decoded");
    assert!(
        parts.windows(2).all(|w| w[0].shard < w[1].shard),
        "parts not in shard order"
    );
    for p in &parts {
        let mut n = 0;
        for (kind, body) in p.records() {
            assert!(
                matches!(kind, record::VERSIONS | record::DEL | record::CLEAR),
                "a part holds a record of type {kind}"
            );
            shard.apply(kind, body);
            n += 1;
        }
        assert_eq!(
            n, p.count,
            "a part's record count does not match its records"
        );
    }
}

/// Snapshots: load into an empty shard.
pub fn snapshot(data: &[u8]) {
    let (file, shard_id) = snapshot_input(data);
    let mut shard = Shard::default();
    let loaded = alloc::bounded("snapshot load", alloc_bound(file.len()), || {
        snapshot::load_bytes(&file, Path::new("fuzz.rks"), shard_id, &mut shard, &|_| {})
    });
    match loaded {
        Ok((_seq, count)) => {
            assert!(shard.len() as u64 <= count, "more keys than entries read");
            assert!(
                count <= file.len() as u64 / 4,
                "more entries than the file can hold"
            );
        }
        Err(snapshot::SnapshotError::Corrupt { offset, .. }) => {
            assert!(offset <= file.len(), "corruption reported past the end");
        }
        Err(e @ snapshot::SnapshotError::Io { .. }) => panic!("no I/O happens here: {e}"),
        Err(e @ snapshot::SnapshotError::Settle { .. }) => {
            panic!("loading settles nothing: {e}")
        }
    }
}
