//! Anti-entropy hash trees (Riak's TicTac AAE is the model): the key hash space is cut into
//! 2^[`SEGMENT_BITS`] fixed segments (the top bits of a key's hash), and a segment's hash is
//! the XOR of [`entry_hash`] over its keys. XOR makes the tree incremental and order-free: a
//! change of a key's stored versions XORs out the old entry's hash and XORs in the new one, so
//! two replicas holding the same entries hold the same segment hashes, whatever order the
//! writes arrived in. Upper levels (a partition's branches and root) are XORs of segments,
//! derived when asked (cluster::aae); only the segments are kept.
//!
//! Each shard keeps the segments of its own keys ([`SegmentHashes`], updated by every path
//! that changes a slot: writes, merges, removes, expiry, purges, WAL replay and snapshot load
//! all go through `Shard::place_quiet` / `remove_quiet`); the store XORs the shards'
//! segments of a range together, so any placement works (with partitioned placement a
//! partition's segments are all in one shard).
//!
//! What is hashed: the entry's canonical bytes ([`Entry::as_bytes`]: key, causal context, the
//! versions in dot order), with every value version that carries an expiry taken in its
//! expired form ([`VersionRef::expired`]). Replicas turn expired values into tombstones at
//! different times (lazily on read, or by the active expiry cycle), and that conversion must
//! not make equal data look different; a version's dot names its content, so hashing its
//! post-expiry form from the start loses nothing that could differ between replicas.

use ringkv_proto::key_hash;
pub use ringkv_proto::peer::AAE_SEGMENT_BITS as SEGMENT_BITS;

use super::entry::{Entry, VersionRef};

/// Segments per block: a shard allocates its segment hashes 1,024 at a time (8 KiB), for the
/// blocks (the top 10 bits of the hash) it holds keys in; a block is found by direct index.
const BLOCK_BITS: u32 = 10;
const BLOCK_SEGMENTS: usize = 1 << BLOCK_BITS;
const BLOCKS: usize = 1 << (SEGMENT_BITS - BLOCK_BITS);

/// The segment of a key hash: its top [`SEGMENT_BITS`] bits.
#[inline]
pub fn segment_of(hash: u64) -> u32 {
    (hash >> (64 - SEGMENT_BITS)) as u32
}

/// The key hashes of segment `seg`, inclusive.
pub fn segment_hashes_range(seg: u32) -> (u64, u64) {
    let from = u64::from(seg) << (64 - SEGMENT_BITS);
    (from, from | (u64::MAX >> SEGMENT_BITS))
}

/// Whether a version is hashed in another form than stored: a value with an expiry.
#[inline]
fn expiring(v: &VersionRef<'_>) -> bool {
    !v.is_tombstone() && v.expires_at_ms.is_some()
}

/// The hash of an entry in the tree (see the module comment). Costs one xxh3 of the entry's
/// bytes; an entry with an expiring value is re-encoded first (TTL keys only).
pub fn entry_hash(e: &Entry) -> u64 {
    if e.version_count() == 1 && !expiring(&e.winner()) {
        return key_hash(e.as_bytes());
    }
    let mut versions = e.versions();
    if !versions.iter().any(|v| expiring(&v.value)) {
        return key_hash(e.as_bytes());
    }
    for v in versions.values_mut() {
        if expiring(v) {
            *v = v.expired();
        }
    }
    key_hash(Entry::new(e.key(), &versions).as_bytes())
}

/// One shard's segment hashes, by block.
#[derive(Default, Clone)]
pub struct SegmentHashes {
    /// Indexed by block; empty until the first key arrives.
    blocks: Vec<Option<Box<[u64; BLOCK_SEGMENTS]>>>,
}

impl std::fmt::Debug for SegmentHashes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SegmentHashes({} blocks)",
            self.blocks.iter().flatten().count()
        )
    }
}

impl SegmentHashes {
    /// XORs `h` into the segment of `key_hash` (adds or removes one entry's hash).
    #[inline]
    pub fn toggle(&mut self, key_hash: u64, h: u64) {
        let seg = segment_of(key_hash) as usize;
        if self.blocks.is_empty() {
            self.blocks.resize(BLOCKS, None);
        }
        if let Some(slot) = self.blocks.get_mut(seg >> BLOCK_BITS) {
            let block = slot.get_or_insert_with(|| Box::new([0; BLOCK_SEGMENTS]));
            block[seg % BLOCK_SEGMENTS] ^= h;
        }
    }

    /// XORs segments `first..first + out.len()` into `out`.
    pub fn xor_into(&self, first: u32, out: &mut [u64]) {
        let mut seg = first as usize;
        let mut out = out;
        while !out.is_empty() {
            // The run of `out` within this segment's block.
            let at = seg % BLOCK_SEGMENTS;
            let n = out.len().min(BLOCK_SEGMENTS - at);
            let (run, rest) = out.split_at_mut(n);
            if let Some(Some(b)) = self.blocks.get(seg >> BLOCK_BITS) {
                for (o, h) in run.iter_mut().zip(&b[at..at + n]) {
                    *o ^= h;
                }
            }
            out = rest;
            seg += n;
        }
    }

    /// Equal segment hashes (a block never allocated equals one of zeros).
    pub fn same_hashes(&self, other: &SegmentHashes) -> bool {
        (0..BLOCKS).all(|i| self.block(i) == other.block(i))
    }

    fn block(&self, i: usize) -> &[u64; BLOCK_SEGMENTS] {
        const ZERO: &[u64; BLOCK_SEGMENTS] = &[0; BLOCK_SEGMENTS];
        match self.blocks.get(i) {
            Some(Some(b)) => b,
            Some(None) | None => ZERO,
        }
    }

    pub fn heap_bytes(&self) -> usize {
        self.blocks.capacity() * 8 + self.blocks.iter().flatten().count() * BLOCK_SEGMENTS * 8
    }
}

impl super::Store {
    /// The shards that may hold keys of segments `first..first + count`: with partitioned
    /// placement a range within one partition is in one shard; otherwise every shard.
    fn shards_of_segments(&self, first: u32, count: u32) -> Vec<usize> {
        let from = segment_hashes_range(first).0;
        let to = segment_hashes_range(first + count.max(1) - 1).1;
        match self.placement() {
            super::Placement::Partitioned { bits }
                if super::partition_of(from, bits) == super::partition_of(to, bits) =>
            {
                vec![self.shard_of(from)]
            }
            super::Placement::Partitioned { .. } | super::Placement::Legacy => {
                (0..self.len()).collect()
            }
        }
    }

    /// The hashes of segments `first..first + count` (XOR over the shards holding them).
    pub fn segment_hashes(&self, first: u32, count: u32) -> Vec<u64> {
        let mut out = vec![0u64; count as usize];
        for s in self.shards_of_segments(first, count) {
            self.lock(s).segment_hashes_into(first, &mut out);
        }
        out
    }

    /// The keys of each segment named, with their entry hashes (see `Shard::segment_keys`).
    pub fn segment_keys(&self, segments: &[u32], now_ms: u64) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        for &seg in segments {
            for s in self.shards_of_segments(seg, 1) {
                self.lock(s).segment_keys(seg, now_ms, &mut out);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::entry::Versions;

    #[test]
    fn segments_cover_the_hash_space_in_order() {
        assert_eq!(segment_of(0), 0);
        assert_eq!(segment_of(u64::MAX), (1 << SEGMENT_BITS) - 1);
        let (from, to) = segment_hashes_range(5);
        assert_eq!(segment_of(from), 5);
        assert_eq!(segment_of(to), 5);
        assert_eq!(segment_of(to + 1), 6);
    }

    /// Memory: one 8 KiB block per 1,024 segments touched (docs/cluster.md).
    #[test]
    fn memory_is_one_block_per_1024_segments_touched() {
        let mut t = SegmentHashes::default();
        assert_eq!(t.heap_bytes(), 0);
        t.toggle(0, 1);
        let one = t.heap_bytes();
        t.toggle(1 << (64 - SEGMENT_BITS), 1); // segment 1: the same block
        assert_eq!(t.heap_bytes(), one);
        t.toggle(1 << (64 - SEGMENT_BITS + BLOCK_BITS), 1); // the next block
        assert_eq!(t.heap_bytes() - one, 8 << 10);
        assert_eq!(one - (8 << 10), BLOCKS * 8, "the block index");
    }

    /// An expired value's tombstone hashes as the value did: replicas converting it at
    /// different times keep equal trees. A different TTL (another version) hashes otherwise.
    #[test]
    fn expiry_conversion_keeps_the_hash() {
        let v = VersionRef::value(b"v", 10, Some(50));
        let live = Entry::with_one(b"k", 1, v);
        let dead = Entry::with_one(b"k", 1, v.expired());
        assert_ne!(live.as_bytes(), dead.as_bytes());
        assert_eq!(entry_hash(&live), entry_hash(&dead));
        let other = Entry::with_one(b"k", 1, VersionRef::value(b"v", 10, Some(60)));
        assert_ne!(entry_hash(&live), entry_hash(&other));
        let plain = Entry::with_one(b"k", 1, VersionRef::value(b"v", 10, None));
        assert_eq!(entry_hash(&plain), key_hash(plain.as_bytes()));
        // Siblings: one converted, one not yet.
        let mut s = Versions::new();
        s.overwrite(1, v);
        let none = crate::store::VersionVector::new();
        s.update(&none, 2, VersionRef::value(b"w", 11, Some(70)));
        assert_eq!(s.len(), 2);
        let both = Entry::new(b"k", &s);
        for x in s.values_mut() {
            if x.value == b"v" {
                *x = x.expired();
            }
        }
        assert_eq!(entry_hash(&both), entry_hash(&Entry::new(b"k", &s)));
    }
}
