//! Completing multi-shard transactions after a crash.
//!
//! A command that wrote to several shards left one TXN record, holding every shard's part, in
//! each participant's WAL. The WALs sync independently, so a crash can keep some copies and
//! lose others. After every shard has replayed its own WAL, a part whose shard did not
//! recover it (the shard's recovered sequence number is below the part's) is applied to that
//! shard now. That is correct at the end of the shard's recovery: its WAL is read as a prefix,
//! so a shard that lacks the record at the part's sequence number lacks every later one too,
//! and nothing it recovered is newer than the part. The shard's log then goes on after the
//! part's sequence number (the caller snapshots it there, so that the numbers it skipped
//! are not taken for a deleted segment at the next start).

use std::collections::BTreeMap;

use tracing::warn;

use super::record::txn;
use super::replay::{apply_part, Recovered};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "a multi-shard transaction names shard {shard}, but the node has {shards} shards (was \
         the data directory written with another --shards?)"
    )]
    NoSuchShard { shard: u32, shards: usize },
    #[error("shard {shard}: completing a multi-shard transaction at sequence number {seq}: {why}")]
    Corrupt {
        shard: u32,
        seq: u64,
        why: &'static str,
    },
}

/// A part some shard lost: (sequence number, transaction, index of the part).
type Missing<'a> = (u64, &'a [u8], usize);

/// Applies every transaction part that its shard lost, in each shard's sequence order.
/// Returns the shards it changed; their `last_seq` is moved to their last part's. Takes the
/// copies out of `recovered` (`txns` is left empty).
pub fn resolve(store: &Store, recovered: &mut [Recovered]) -> Result<Vec<usize>, ResolveError> {
    let copies: Vec<Vec<u8>> = recovered
        .iter_mut()
        .flat_map(|r| std::mem::take(&mut r.txns))
        .collect();
    // Each transaction is found once per surviving copy: keep one, by its first part.
    let mut txns: BTreeMap<(u32, u64), &[u8]> = BTreeMap::new();
    for t in &copies {
        // A copy that does not decode was refused as corruption by the replay, unless it
        // lay where only transactions are read (a covered segment): skip it there.
        if let Some(first) = txn::decode(t).ok().and_then(|p| p.first().copied()) {
            txns.entry((first.shard, first.seq)).or_insert(t.as_slice());
        }
    }
    let mut missing: BTreeMap<usize, Vec<Missing<'_>>> = BTreeMap::new();
    for &t in txns.values() {
        let Ok(parts) = txn::decode(t) else { continue };
        for (i, p) in parts.iter().enumerate() {
            let Some(r) = recovered.get(p.shard as usize) else {
                return Err(ResolveError::NoSuchShard {
                    shard: p.shard,
                    shards: recovered.len(),
                });
            };
            if p.seq > r.last_seq {
                missing
                    .entry(p.shard as usize)
                    .or_default()
                    .push((p.seq, t, i));
            }
        }
    }
    let mut changed = Vec::new();
    for (shard, mut parts) in missing {
        parts.sort_unstable_by_key(|m| m.0);
        let mut s = store.lock(shard);
        for (seq, t, i) in parts {
            let bad = |why| ResolveError::Corrupt {
                shard: shard as u32,
                seq,
                why,
            };
            let decoded = txn::decode(t).map_err(bad)?;
            let part = decoded.get(i).ok_or(bad("part out of range"))?;
            apply_part(&mut s, part).map_err(bad)?;
            recovered[shard].last_seq = seq;
        }
        warn!(
            shard,
            last_seq = recovered[shard].last_seq,
            "completed multi-shard writes this shard's WAL lost in a crash (another \
             participant's copy survived)"
        );
        changed.push(shard);
    }
    Ok(changed)
}
