//! Which local shard a key lives in.
//!
//! A data directory made by this build places keys by partition: the partition of a key is the
//! top `log2(P)` bits of its 64-bit hash (the ring's rule, `--partitions P`), and the shard is
//! `partition % shards`, so every key of a partition is in one shard, the unit later streamed,
//! hashed into Merkle trees and given hints. Directories made before partitions existed keep
//! the placement they were written with, `(hash >> 40) % shards`: moving keys between shards
//! would need a rewrite of every shard's files, and a node never does that silently.

/// Most partitions of a ring: partition numbers fit in 16 bits.
pub const MAX_PARTITIONS: u32 = 1 << 16;

/// How keys are spread over the local shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Data directories without a `partitions` line in `meta`: shard = `(hash >> 40) % shards`.
    Legacy,
    /// shard = `partition % shards`, partition = the top `bits` bits of the hash.
    Partitioned {
        /// log2 of the partition count (0..=16).
        bits: u8,
    },
}

impl Placement {
    /// Placement by `partitions` partitions; `None` unless it is a power of two in
    /// 1..=[`MAX_PARTITIONS`] (the configuration checks this first, with a clearer error).
    pub fn partitioned(partitions: u32) -> Option<Placement> {
        (partitions.is_power_of_two() && partitions <= MAX_PARTITIONS).then(|| {
            Placement::Partitioned {
                bits: partitions.trailing_zeros() as u8,
            }
        })
    }

    /// The partition count (`None` for the legacy placement, which has no partitions).
    pub fn partitions(self) -> Option<u32> {
        match self {
            Placement::Legacy => None,
            Placement::Partitioned { bits } => Some(1 << bits),
        }
    }

    /// The shard of a key hash among `nshards` (> 0).
    #[inline]
    pub fn shard(self, hash: u64, nshards: usize) -> usize {
        let n = nshards as u64;
        (match self {
            Placement::Legacy => (hash >> 40) % n,
            Placement::Partitioned { bits } => partition_of(hash, bits) as u64 % n,
        }) as usize
    }
}

/// The partition of a key hash with `2^bits` partitions: its top `bits` bits (0 when there is
/// one partition). The ring (issue 10's `ring::partition`) must compute the same.
#[inline]
pub fn partition_of(hash: u64, bits: u8) -> u32 {
    // checked_shr: a shift by 64 (one partition) is 0, not an overflow.
    hash.checked_shr(64 - u32::from(bits)).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_proto::key_hash;

    #[test]
    fn only_powers_of_two_up_to_the_max_are_placements() {
        for ok in [1, 2, 1024, MAX_PARTITIONS] {
            assert_eq!(
                Placement::partitioned(ok).and_then(|p| p.partitions()),
                Some(ok)
            );
        }
        for bad in [0, 3, 1000, MAX_PARTITIONS * 2] {
            assert_eq!(Placement::partitioned(bad), None, "{bad}");
        }
        assert_eq!(Placement::Legacy.partitions(), None);
    }

    #[test]
    fn the_partition_is_the_top_bits() {
        assert_eq!(partition_of(u64::MAX, 0), 0);
        assert_eq!(partition_of(u64::MAX, 10), 1023);
        assert_eq!(partition_of(1 << 54, 10), 1);
        assert_eq!(partition_of((1 << 54) - 1, 10), 0);
        assert_eq!(partition_of(0xabcd << 48, 16), 0xabcd);
        // Partition p starts at p << (64 - bits) on the ring (docs: cluster design).
        for p in [0u64, 1, 511, 1023] {
            assert_eq!(partition_of(p << 54, 10), p as u32);
        }
    }

    /// Every key of a partition lives in one shard, for shard counts that divide the
    /// partition count and ones that don't; and every shard gets some partition.
    #[test]
    fn every_key_of_a_partition_maps_to_one_shard() {
        for (partitions, shards) in [(1u32, 1usize), (8, 8), (1024, 16), (1024, 3), (64, 6)] {
            let placement = Placement::partitioned(partitions).unwrap();
            let bits = partitions.trailing_zeros() as u8;
            let mut shard_of_partition = vec![None; partitions as usize];
            let mut used = vec![false; shards];
            for i in 0..20_000u32 {
                let h = key_hash(format!("key:{i}").as_bytes());
                let p = partition_of(h, bits) as usize;
                let s = placement.shard(h, shards);
                used[s] = true;
                match shard_of_partition[p] {
                    None => shard_of_partition[p] = Some(s),
                    Some(seen) => assert_eq!(
                        seen, s,
                        "P={partitions} S={shards}: partition {p} is in shards {seen} and {s}"
                    ),
                }
            }
            assert!(
                used.iter().all(|u| *u),
                "P={partitions} S={shards}: {used:?}"
            );
        }
    }

    #[test]
    fn legacy_placement_is_unchanged() {
        for i in 0..1000u32 {
            let h = key_hash(format!("k{i}").as_bytes());
            for shards in [1usize, 2, 3, 16] {
                assert_eq!(
                    Placement::Legacy.shard(h, shards),
                    ((h >> 40) % shards as u64) as usize
                );
            }
        }
    }
}
