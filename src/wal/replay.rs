//! Recovery of one shard: the newest valid snapshot, then every WAL record after it.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::record::{
    count_recoverable_after, scan, txn, Damage, Record, FORMAT_VERSION, FORMAT_VERSION_V1,
    SEGMENT_HEADER, TXN,
};
use super::{parse_segment_name, shard_dir};
use crate::disk::Fs;
use crate::snapshot::{self, parse_snapshot_name, SnapshotError};
use crate::store::Shard;

#[derive(Debug, Default)]
pub struct Recovered {
    /// Sequence number of the last record applied (the log continues after it).
    pub last_seq: u64,
    pub snapshot_seq: u64,
    pub snapshot_entries: u64,
    pub records: u64,
    /// Bytes in the segments that remain.
    pub wal_bytes: u64,
    /// Records dropped by `--repair`.
    pub dropped: usize,
    /// `--repair` set something aside (a segment or a snapshot): what is in memory is no
    /// longer what a plain replay of the directory gives, until a new snapshot records it.
    pub repaired: bool,
    /// Payloads of the TXN records found in this shard's segments (also those the snapshot
    /// covers): another participant may have lost its copy (see [`super::resolve`]).
    pub txns: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: corrupt at offset {offset} ({why}). The node refuses to start rather than \
         lose acknowledged writes silently; start with --repair to move the damaged segment \
         aside and drop what can't be read"
    )]
    Corrupt {
        path: PathBuf,
        offset: usize,
        why: &'static str,
    },
    #[error(
        "{path}: WAL records {expected}..{found} are missing (a segment was deleted?); start \
         with --repair to continue without them"
    )]
    Gap {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error(
        "{path}: unsupported segment format version {version} (this build reads versions \
         {oldest} to {newest}); it was written by a newer ringkv: start that version, or \
         restore a backup. --repair does not set it aside"
    )]
    Format {
        path: PathBuf,
        version: u32,
        oldest: u32,
        newest: u32,
    },
    #[error("{0} (start with --repair to skip this snapshot)")]
    Snapshot(SnapshotError),
}

/// Rebuilds `shard` from `data_dir`. `progress` is told how many bytes were processed.
pub fn recover(
    fs: &dyn Fs,
    data_dir: &Path,
    shard_id: usize,
    shard: &mut Shard,
    repair: bool,
    progress: &dyn Fn(u64),
) -> Result<Recovered, RecoveryError> {
    let dir = shard_dir(data_dir, shard_id);
    let io = |p: &Path| {
        let path = p.to_path_buf();
        move |source| RecoveryError::Io { path, source }
    };
    fs.create_dir_all(&dir).map_err(io(&dir))?;
    let names = fs.list(&dir).map_err(io(&dir))?;
    let mut snaps: Vec<u64> = Vec::new();
    let mut segs: Vec<u64> = Vec::new();
    for n in &names {
        if n.ends_with(".tmp") {
            // A snapshot that never completed.
            let _ = fs.remove(&dir.join(n));
        } else if let Some(s) = parse_snapshot_name(n) {
            snaps.push(s);
        } else if let Some(s) = parse_segment_name(n) {
            segs.push(s);
        }
    }
    snaps.sort_unstable();
    segs.sort_unstable();
    let mut out = Recovered::default();
    for &s in snaps.iter().rev() {
        let path = dir.join(snapshot::snapshot_name(s));
        let mut fresh = Shard::with_policy(shard.policy);
        match snapshot::load(fs, &path, shard_id, &mut fresh, progress) {
            Ok((seq, n)) => {
                *shard = fresh;
                out.snapshot_seq = seq;
                out.snapshot_entries = n;
                break;
            }
            Err(e) if repair => {
                // Moved aside, so that the next start does not find it newest again.
                let aside = path.with_extension("damaged");
                let _ = fs.rename(&path, &aside);
                warn!(moved_to = %aside.display(), "--repair: skipping unreadable snapshot: {e}");
                out.repaired = true;
            }
            Err(e) => return Err(RecoveryError::Snapshot(e)),
        }
    }
    let mut applied = out.snapshot_seq;
    for (i, &first) in segs.iter().enumerate() {
        // Segments wholly covered by the snapshot (left by a crash before their removal).
        let path = dir.join(super::segment_name(first));
        if segs
            .get(i + 1)
            .is_some_and(|&next| next <= out.snapshot_seq + 1)
        {
            // Only the transactions in it are read (a crash during recovery's own resolution
            // may have left another participant needing them); damage here loses nothing.
            if let Ok(data) = fs.read(&path) {
                scan(&data, shard_id as u32, |r| collect_txn(&r, &mut out.txns));
            }
            continue;
        }
        let last = i + 1 == segs.len();
        let data = fs.read(&path).map_err(io(&path))?;
        let mut gap = None;
        let mut bad_payload = None;
        let scanned = scan(&data, shard_id as u32, |r| {
            let offset = r.offset;
            if gap.is_some() || bad_payload.is_some() {
                return;
            }
            collect_txn(&r, &mut out.txns);
            if r.seq <= applied {
                return;
            }
            if r.seq != applied + 1 && !repair {
                gap = Some((applied + 1, r.seq));
                return;
            }
            if let Err(why) = apply(shard, shard_id, &r) {
                bad_payload = Some((offset, why));
                return;
            }
            applied = r.seq;
            out.records += 1;
        });
        progress(data.len() as u64);
        if let Some((expected, found)) = gap {
            return Err(RecoveryError::Gap {
                path,
                expected,
                found,
            });
        }
        // A record that checks out but does not decode is corruption at that record: what
        // follows it is not applied.
        let (damage, good_len) = match (scanned.damage, bad_payload) {
            (_, Some((offset, why))) => (Some(Damage::Corrupt { offset, why }), offset),
            (d, None) => (d, scanned.good_len),
        };
        match damage {
            None => {
                // The crashed process may have written this without syncing it: make it
                // durable before its records count as acknowledged-safe state that later
                // writes build on (else a power cut later could leave a gap).
                if scanned.records > 0 {
                    fs.sync_file(&path).map_err(io(&path))?;
                }
                out.wal_bytes += scanned.good_len as u64
            }
            Some(Damage::Unsupported { version }) => {
                return Err(RecoveryError::Format {
                    path,
                    version,
                    oldest: FORMAT_VERSION_V1,
                    newest: FORMAT_VERSION,
                })
            }
            Some(Damage::Torn { offset }) if last => {
                warn!(
                    path = %path.display(),
                    offset,
                    "torn record at the end of the WAL (a crash mid-write): truncating it"
                );
                drop(data);
                if offset <= SEGMENT_HEADER && scanned.records == 0 {
                    fs.remove(&path).map_err(io(&path))?;
                } else {
                    fs.truncate(&path, scanned.good_len as u64)
                        .map_err(io(&path))?;
                    // As for an intact segment: the good prefix may be unsynced.
                    if scanned.records > 0 {
                        fs.sync_file(&path).map_err(io(&path))?;
                    }
                    out.wal_bytes += scanned.good_len as u64;
                }
            }
            Some(Damage::Torn { offset }) | Some(Damage::Corrupt { offset, .. }) if repair => {
                // The records that still check out after the damaged one.
                let dropped = count_recoverable_after(&data, good_len);
                drop(data);
                let aside = path.with_extension("damaged");
                fs.rename(&path, &aside).map_err(io(&path))?;
                warn!(
                    path = %path.display(),
                    offset,
                    dropped,
                    moved_to = %aside.display(),
                    "--repair: damaged WAL segment moved aside; {dropped} records after the damage dropped"
                );
                out.dropped += dropped;
                out.repaired = true;
            }
            Some(Damage::Torn { offset }) => {
                return Err(RecoveryError::Corrupt {
                    path,
                    offset,
                    why: "segment ends inside a record, but it is not the last segment",
                })
            }
            Some(Damage::Corrupt { offset, why }) => {
                return Err(RecoveryError::Corrupt { path, offset, why })
            }
        }
    }
    out.last_seq = applied;
    Ok(out)
}

/// Replays one record into the shard: its own part, for a TXN record.
fn apply(shard: &mut Shard, shard_id: usize, r: &Record<'_>) -> Result<(), &'static str> {
    if r.kind != TXN {
        return match shard.apply(r.kind, r.payload) {
            true => Ok(()),
            false => Err("a record's entry does not decode"),
        };
    }
    let parts = txn::decode(r.payload)?;
    let Some(part) = parts.iter().find(|p| p.shard == shard_id as u32) else {
        return Err("transaction record without a part for its own shard");
    };
    if part.seq != r.seq {
        return Err("transaction record's part is under another sequence number");
    }
    apply_part(shard, part)
}

/// Applies one shard's part of a transaction (at replay, or when recovery completes a
/// transaction this shard lost).
pub fn apply_part(shard: &mut Shard, part: &txn::Part<'_>) -> Result<(), &'static str> {
    for (kind, payload) in part.records() {
        if !shard.apply(kind, payload) {
            return Err("a transaction's entry does not decode");
        }
    }
    Ok(())
}

/// Keeps a copy of a TXN record of several shards (one of one shard concerns no other).
fn collect_txn(r: &Record<'_>, txns: &mut Vec<Vec<u8>>) {
    if r.kind == TXN && r.payload.get(..4).is_some_and(|n| n != 1u32.to_le_bytes()) {
        txns.push(r.payload.to_vec());
    }
}
