//! The streaming calls of a cluster (protocol.md §6.4): a node that will own a partition once
//! a join or leave completes copies it from a current owner with STREAM_READ, one checksummed
//! batch of whole entries at a time; the node whose join or leave it is asks every node with
//! STREAM_STATUS whether its copies are done before it commits the layout change.
//!
//! ```text
//! STREAM_READ request:   u32 partition, u64 from, u32 max_bytes
//!   reply Bulk:          u8 more, u64 next, u32 n, n × bytes entry, u32 crc32 (IEEE) of
//!                        every byte before it
//! STREAM_STATUS request: u64 layout digest (the asker's)
//!   reply Bulk:          u64 layout digest (the answerer's), u8 phase, u32 partitions,
//!                        u32 partitions done, u64 bytes, u64 keys, u64 bytes resent,
//!                        u64 rate (bytes/s)
//! ```

use bytes::{BufMut, BytesMut};

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// Most bytes of entries one STREAM_READ may ask for (a batch goes past it only to finish the
/// entry, or the entries of one hash, that crossed it).
pub const MAX_STREAM_BATCH_BYTES: u32 = 8 << 20;

/// A STREAM_READ request: the entries of `partition` from hash `from` on, about `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamRead {
    pub partition: u32,
    /// Resume position: the smallest key hash still to copy (inclusive).
    pub from: u64,
    /// 1..=[`MAX_STREAM_BATCH_BYTES`].
    pub max_bytes: u32,
}

impl StreamRead {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<StreamRead, ProtoError> {
        let partition = r.u32()?;
        let from = r.u64()?;
        let max_bytes = r.u32()?;
        if max_bytes == 0 || max_bytes > MAX_STREAM_BATCH_BYTES {
            return Err(r.error("max_bytes out of range"));
        }
        Ok(StreamRead {
            partition,
            from,
            max_bytes,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u32(self.partition);
        out.put_u64(self.from);
        out.put_u32(self.max_bytes);
    }
}

/// One batch of a partition's entries (the reply of STREAM_READ), checked by its CRC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamBatch {
    /// Where to resume, or None once the partition's end was reached.
    pub next: Option<u64>,
    /// Whole entries (the store's entry encoding), in hash order.
    pub entries: Vec<Vec<u8>>,
}

/// The CRC of a batch: IEEE CRC-32, as the WAL's records.
fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

impl StreamBatch {
    /// Encodes a batch from entries given as slices (no copy on the sending side).
    pub fn encode_parts<'e>(
        next: Option<u64>,
        entries: impl ExactSizeIterator<Item = &'e [u8]>,
        out: &mut BytesMut,
    ) {
        let start = out.len();
        out.put_u8(u8::from(next.is_some()));
        out.put_u64(next.unwrap_or(0));
        out.put_u32(entries.len() as u32);
        for e in entries {
            put_bytes(out, e);
        }
        let crc = crc32(&out[start..]);
        out.put_u32(crc);
    }

    pub fn encode(&self, out: &mut BytesMut) {
        Self::encode_parts(self.next, self.entries.iter().map(|e| e.as_slice()), out)
    }

    /// Decodes a batch, refusing one whose CRC does not match (corrupted on the way).
    pub fn decode(buf: &[u8]) -> Result<StreamBatch, ProtoError> {
        let r = Reader::new(buf, "STREAM_READ");
        if buf.len() < 4 {
            return Err(r.error("truncated"));
        }
        let (body, tail) = buf.split_at(buf.len() - 4);
        let want = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32(body) != want {
            return Err(r.error("checksum mismatch: the batch was corrupted"));
        }
        let mut r = Reader::new(body, "STREAM_READ");
        let next = match (r.u8()?, r.u64()?) {
            (0, 0) => None,
            (1, at) => Some(at),
            (0, _) => return Err(r.error("next set past the partition's end")),
            _ => return Err(r.error("unknown more flag")),
        };
        let n = r.u32()? as usize;
        if n > r.remaining() / 4 {
            return Err(r.error("truncated"));
        }
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(r.bytes()?.to_vec());
        }
        r.finish()?;
        Ok(StreamBatch { next, entries })
    }
}

/// Where a node's incoming copies stand (the reply of STREAM_STATUS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStatus {
    /// The layout digest the answerer plans its copies for.
    pub digest: u64,
    pub phase: StreamPhase,
    /// Partitions this node must copy for the current moves, and how many are done.
    pub partitions: u32,
    pub partitions_done: u32,
    pub bytes: u64,
    pub keys: u64,
    /// Bytes copied again after a restart or a failed batch.
    pub bytes_resent: u64,
    /// Recent rate, bytes per second.
    pub rate_bps: u64,
}

/// A node's part in the current moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamPhase {
    /// Nothing is moving (or nothing moves to this node).
    #[default]
    Idle = 0,
    /// Moves are pending, but not every member routes with the new layout yet.
    Settling = 1,
    Copying = 2,
    /// Every partition this node must copy for `digest` is copied.
    Done = 3,
}

impl StreamPhase {
    pub fn from_u8(b: u8) -> Option<StreamPhase> {
        Some(match b {
            0 => StreamPhase::Idle,
            1 => StreamPhase::Settling,
            2 => StreamPhase::Copying,
            3 => StreamPhase::Done,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamPhase::Idle => "idle",
            StreamPhase::Settling => "settling",
            StreamPhase::Copying => "copying",
            StreamPhase::Done => "done",
        }
    }
}

impl StreamStatus {
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u64(self.digest);
        out.put_u8(self.phase as u8);
        out.put_u32(self.partitions);
        out.put_u32(self.partitions_done);
        out.put_u64(self.bytes);
        out.put_u64(self.keys);
        out.put_u64(self.bytes_resent);
        out.put_u64(self.rate_bps);
    }

    pub fn decode(buf: &[u8]) -> Result<StreamStatus, ProtoError> {
        let mut r = Reader::new(buf, "STREAM_STATUS");
        let digest = r.u64()?;
        let phase = StreamPhase::from_u8(r.u8()?).ok_or(r.error("unknown phase"))?;
        let s = StreamStatus {
            digest,
            phase,
            partitions: r.u32()?,
            partitions_done: r.u32()?,
            bytes: r.u64()?,
            keys: r.u64()?,
            bytes_resent: r.u64()?,
            rate_bps: r.u64()?,
        };
        r.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_ieee() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_batch_round_trips_and_a_flipped_bit_is_refused() {
        let b = StreamBatch {
            next: Some(42),
            entries: vec![b"one".to_vec(), Vec::new(), b"three".to_vec()],
        };
        let mut out = BytesMut::new();
        b.encode(&mut out);
        assert_eq!(StreamBatch::decode(&out).as_ref(), Ok(&b));
        for i in 0..out.len() {
            let mut bad = out.to_vec();
            bad[i] ^= 0x10;
            assert!(StreamBatch::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(StreamBatch::decode(&out[..3]).is_err());
    }

    #[test]
    fn a_status_round_trips() {
        let s = StreamStatus {
            digest: 7,
            phase: StreamPhase::Copying,
            partitions: 10,
            partitions_done: 4,
            bytes: 1 << 40,
            keys: 5,
            bytes_resent: 6,
            rate_bps: 9,
        };
        let mut out = BytesMut::new();
        s.encode(&mut out);
        assert_eq!(StreamStatus::decode(&out), Ok(s));
        assert!(StreamStatus::decode(&out[..out.len() - 1]).is_err());
    }
}
