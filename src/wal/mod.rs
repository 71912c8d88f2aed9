//! The write-ahead log: one per shard, in segment files of bounded size.
//!
//! - [`record`]: the byte format of records and segment headers, and the scanner that tells
//!   a torn tail from corruption;
//! - [`writer`]: the shard's WAL writer thread (group commit, fsync policies, rotation);
//! - [`replay`]: recovery of a shard from its newest snapshot plus the WAL after it;
//! - [`resolve`]: completing multi-shard writes (TXN records) some shard lost in a crash.

/// The record format is a leaf module ([`crate::record`]) so the store can append records
/// without depending on the WAL.
pub use crate::record;
pub mod replay;
pub mod resolve;
pub mod writer;

use std::path::{Path, PathBuf};

/// Directory of shard `i` inside the data directory.
pub fn shard_dir(data: &Path, shard: usize) -> PathBuf {
    data.join(format!("shard-{shard:04}"))
}

/// Segment file name: the sequence number of its first record, zero-padded so names sort.
pub fn segment_name(first_seq: u64) -> String {
    format!("wal-{first_seq:020}.log")
}

/// The first sequence number encoded in a segment file name.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_prefix("wal-")?
        .strip_suffix(".log")?
        .parse()
        .ok()
}
