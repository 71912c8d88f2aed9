//! The anti-entropy calls (protocol.md §6.4): two replicas of a partition compare their hash
//! trees top down and then list the keys of the segments that differ, with each key's entry
//! hash. The entries themselves move with FETCH and REPLICATE.
//!
//! ```text
//! AAE_ROOTS request:    u32 n, n × u32 partition          reply Bulk: u32 n, n × u64 root
//! AAE_BRANCHES request: u32 partition                     reply Bulk: u32 n, n × u64 branch
//! AAE_LEAVES request:   u32 partition, u32 n, n × u32 branch
//!   reply Bulk:         u32 m, m × u64 segment (m = n × leaves per branch, branch by branch)
//! AAE_KEYS request:     u32 partition, u32 n, n × u32 segment (index within the partition)
//!   reply Bulk:         u32 m, m × (bytes key, u64 entry hash)
//! ```

use bytes::{BufMut, BytesMut};

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// The key hash space is cut into 2^20 segments (a key's segment: the top 20 bits of its
/// hash). Both sides of an exchange must use the same value: it is part of the protocol.
pub const AAE_SEGMENT_BITS: u32 = 20;
/// Most partitions one AAE_ROOTS may name (every partition of the largest ring).
pub const MAX_AAE_ROOTS: u32 = 1 << 16;
/// Most branches one AAE_LEAVES, or segments one AAE_KEYS, may name.
pub const MAX_AAE_LIST: u32 = 1024;

/// The shape of one partition's tree, from the ring's partition bits: `segments` leaves, in
/// `branches` branches of `leaves` consecutive segments each. The root is the XOR of the
/// branches, a branch the XOR of its leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeShape {
    pub segments: u32,
    pub branches: u32,
    pub leaves: u32,
}

impl TreeShape {
    /// For a ring of 2^`partition_bits` partitions (at most 2^16).
    pub fn new(partition_bits: u32) -> TreeShape {
        let seg_bits = AAE_SEGMENT_BITS.saturating_sub(partition_bits);
        let branch_bits = seg_bits.div_ceil(2);
        TreeShape {
            segments: 1 << seg_bits,
            branches: 1 << branch_bits,
            leaves: 1 << (seg_bits - branch_bits),
        }
    }
}

/// A decoded anti-entropy request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AaeRequest {
    Roots { partitions: Vec<u32> },
    Branches { partition: u32 },
    Leaves { partition: u32, branches: Vec<u32> },
    Keys { partition: u32, segments: Vec<u32> },
}

fn read_list(r: &mut Reader<'_>, max: u32) -> Result<Vec<u32>, ProtoError> {
    let n = r.u32()?;
    if n > max {
        return Err(r.error("too many items"));
    }
    if n as usize > r.remaining() / 4 {
        return Err(r.error("truncated"));
    }
    (0..n).map(|_| r.u32()).collect()
}

fn put_list(out: &mut BytesMut, items: &[u32]) {
    out.put_u32(items.len() as u32);
    for i in items {
        out.put_u32(*i);
    }
}

pub(crate) fn read_roots(r: &mut Reader<'_>) -> Result<AaeRequest, ProtoError> {
    Ok(AaeRequest::Roots {
        partitions: read_list(r, MAX_AAE_ROOTS)?,
    })
}

pub(crate) fn read_branches(r: &mut Reader<'_>) -> Result<AaeRequest, ProtoError> {
    Ok(AaeRequest::Branches {
        partition: r.u32()?,
    })
}

pub(crate) fn read_leaves(r: &mut Reader<'_>) -> Result<AaeRequest, ProtoError> {
    let partition = r.u32()?;
    Ok(AaeRequest::Leaves {
        partition,
        branches: read_list(r, MAX_AAE_LIST)?,
    })
}

pub(crate) fn read_keys(r: &mut Reader<'_>) -> Result<AaeRequest, ProtoError> {
    let partition = r.u32()?;
    Ok(AaeRequest::Keys {
        partition,
        segments: read_list(r, MAX_AAE_LIST)?,
    })
}

impl AaeRequest {
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        match self {
            AaeRequest::Roots { partitions } => put_list(out, partitions),
            AaeRequest::Branches { partition } => out.put_u32(*partition),
            AaeRequest::Leaves {
                partition,
                branches: items,
            }
            | AaeRequest::Keys {
                partition,
                segments: items,
            } => {
                out.put_u32(*partition);
                put_list(out, items);
            }
        }
    }
}

/// The reply body of AAE_ROOTS, AAE_BRANCHES and AAE_LEAVES: a list of hashes.
pub fn encode_hashes(hashes: &[u64], out: &mut BytesMut) {
    out.put_u32(hashes.len() as u32);
    for h in hashes {
        out.put_u64(*h);
    }
}

pub fn decode_hashes(buf: &[u8]) -> Result<Vec<u64>, ProtoError> {
    let mut r = Reader::new(buf, "AAE hashes");
    let n = r.u32()? as usize;
    if n > r.remaining() / 8 {
        return Err(r.error("truncated"));
    }
    let hashes = (0..n).map(|_| r.u64()).collect::<Result<Vec<u64>, _>>()?;
    r.finish()?;
    Ok(hashes)
}

/// The reply body of AAE_KEYS: each key with its entry hash.
pub fn encode_key_hashes(keys: &[(Vec<u8>, u64)], out: &mut BytesMut) {
    out.put_u32(keys.len() as u32);
    for (k, h) in keys {
        put_bytes(out, k);
        out.put_u64(*h);
    }
}

pub fn decode_key_hashes(buf: &[u8]) -> Result<Vec<(Vec<u8>, u64)>, ProtoError> {
    let mut r = Reader::new(buf, "AAE_KEYS");
    let n = r.u32()? as usize;
    // Each item takes at least 12 bytes (length and hash): bound the count before reserving.
    if n > r.remaining() / 12 {
        return Err(r.error("truncated"));
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = r.bytes()?.to_vec();
        out.push((k, r.u64()?));
    }
    r.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_split_the_segments_of_a_partition() {
        let s = TreeShape::new(10);
        assert_eq!((s.segments, s.branches, s.leaves), (1024, 32, 32));
        let s = TreeShape::new(6);
        assert_eq!((s.segments, s.branches, s.leaves), (16384, 128, 128));
        let s = TreeShape::new(0);
        assert_eq!(s.segments, 1 << 20);
        assert_eq!(s.branches * s.leaves, s.segments);
        let s = TreeShape::new(16);
        assert_eq!((s.segments, s.branches, s.leaves), (16, 4, 4));
    }

    #[test]
    fn key_hashes_round_trip_and_truncation_is_refused() {
        let keys = vec![(b"a".to_vec(), 1u64), (Vec::new(), u64::MAX)];
        let mut b = BytesMut::new();
        encode_key_hashes(&keys, &mut b);
        assert_eq!(decode_key_hashes(&b).unwrap(), keys);
        assert!(decode_key_hashes(&b[..b.len() - 1]).is_err());
        let mut h = BytesMut::new();
        encode_hashes(&[7, 8], &mut h);
        assert_eq!(decode_hashes(&h).unwrap(), vec![7, 8]);
        assert!(decode_hashes(&h[..h.len() - 1]).is_err());
    }
}
