//! Key ranges across shards, in hash order (cluster-wide SCAN, KEYS, DBSIZE, RANDOMKEY): a
//! partition's keys live in one shard (`placement`), so a range within one partition locks
//! one shard; a wider range (or the legacy placement) visits every shard, one at a time.

use super::placement::{partition_of, Placement};
use super::Store;

/// Live keys of a range, examined in hash order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeKeys {
    /// `(hash, key)` of the keys examined, in hash order.
    pub keys: Vec<(u64, Vec<u8>)>,
    /// The hash of the first live key not examined (resume there, inclusive), or None when
    /// the range has no more keys.
    pub next: Option<u64>,
    /// The WAL positions of the shards read: a reply showing these keys waits for them, as
    /// any reply waits for what it shows.
    pub marks: super::Marks,
}

/// A batch of a partition's entries: `(hash, entry bytes)` in hash order, where to resume
/// (None: done), and the WAL positions showing them must wait for.
pub type RangeEntries = (Vec<(u64, Vec<u8>)>, Option<u64>, super::Marks);

impl Store {
    /// Examines the live keys whose hash is in `from..=to`, the smallest hashes first: at least
    /// `limit` (when there are that many, more only to keep keys of equal hash together).
    pub fn range_keys(&self, from: u64, to: u64, limit: usize, now_ms: u64) -> RangeKeys {
        if from > to || limit == 0 {
            return RangeKeys::default();
        }
        let shards: Vec<usize> = match self.placement {
            Placement::Partitioned { bits }
                if partition_of(from, bits) == partition_of(to, bits) =>
            {
                vec![self.shard_of(from)]
            }
            Placement::Partitioned { .. } | Placement::Legacy => (0..self.len()).collect(),
        };
        let mut all: Vec<(u64, Vec<u8>)> = Vec::new();
        // The smallest hash some shard left out.
        let mut left: Option<u64> = None;
        let mut marks = super::Marks::new();
        for s in shards {
            let mut g = self.lock(s);
            let (keys, next) = g.range_keys(from, to, limit, now_ms);
            if g.wal.enabled {
                super::add_mark(&mut marks, s as u32, g.wal.seq);
            }
            drop(g);
            all.extend(keys);
            left = min_some(left, next);
        }
        all.sort_unstable_by_key(|k| k.0);
        if all.len() > limit {
            // Cut after the limit-th key, past any keys with its hash.
            let last = all[limit - 1].0;
            let cut = all.partition_point(|k| k.0 <= last);
            left = min_some(left, all.get(cut).map(|k| k.0));
            all.truncate(cut);
        }
        RangeKeys {
            keys: all,
            next: left,
            marks,
        }
    }

    /// The entries (as bytes, tombstones included) of one partition's hash range `from..=to`,
    /// up to about `max_bytes`, and where to resume (None: the range is done); with the WAL
    /// positions what they show must wait for.
    pub fn range_entries(&self, from: u64, to: u64, max_bytes: usize) -> RangeEntries {
        let mut marks = super::Marks::new();
        if from > to {
            return (Vec::new(), None, marks);
        }
        let shards: Vec<usize> = match self.placement {
            Placement::Partitioned { bits }
                if partition_of(from, bits) == partition_of(to, bits) =>
            {
                vec![self.shard_of(from)]
            }
            Placement::Partitioned { .. } | Placement::Legacy => (0..self.len()).collect(),
        };
        let mut all = Vec::new();
        let mut left: Option<u64> = None;
        for s in shards {
            let mut g = self.lock(s);
            let (entries, next) = g.range_entries(from, to, max_bytes);
            if g.wal.enabled {
                super::add_mark(&mut marks, s as u32, g.wal.seq);
            }
            drop(g);
            all.extend(entries);
            left = min_some(left, next);
        }
        if left.is_some() || all.windows(2).any(|w| w[0].0 > w[1].0) {
            // Several shards (legacy placement): keep only what precedes every shard's cut.
            all.sort_unstable_by_key(|e| e.0);
            if let Some(cut) = left {
                all.retain(|e| e.0 < cut);
            }
        }
        (all, left, marks)
    }

    /// Removes (logged) from shard `shard` the keys, tombstones included, of the partitions
    /// `drop` says to, looking at up to `limit` slots from `from`; how many, and where to go on
    /// (None: the shard is done). A node drops this way the partitions it no longer
    /// replicates. Nothing in a legacy directory (it has no partitions).
    pub fn drop_partitions(
        &self,
        shard: usize,
        drop: &dyn Fn(u32) -> bool,
        from: usize,
        limit: usize,
    ) -> (usize, Option<usize>) {
        match self.placement {
            Placement::Partitioned { bits } => {
                self.lock(shard).drop_partitions(bits, drop, from, limit)
            }
            Placement::Legacy => (0, None),
        }
    }

    /// Live keys per partition, for the partitions named (`partitions` partitions in all on
    /// the ring): one pass over the shards that hold them.
    pub fn count_partitions(&self, wanted: &[u32], now_ms: u64) -> Vec<u64> {
        let bits = match self.placement {
            Placement::Partitioned { bits } => bits,
            // No partitions on disk: a node in cluster mode always places by partition.
            Placement::Legacy => return vec![0; wanted.len()],
        };
        let total = 1usize << bits;
        let mut counts = vec![0u64; total];
        let mut shards: Vec<usize> = wanted
            .iter()
            .filter(|&&p| (p as usize) < total)
            .map(|&p| p as usize % self.len().max(1))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        for s in shards {
            self.lock(s).count_partitions(bits, now_ms, &mut counts);
        }
        wanted
            .iter()
            .map(|&p| counts.get(p as usize).copied().unwrap_or(0))
            .collect()
    }
}

fn min_some(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
