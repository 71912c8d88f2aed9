//! Snapshots: a compact, checksummed copy of one shard, written atomically.
//!
//! ```text
//! header: magic "RKVSNAP1" | format version u32 LE (2; 1 is read) | shard u32 LE | seq u64 LE
//!         | dot floor u64 LE (format 2)
//! blocks: len u32 LE | crc32 u32 LE (of the block's bytes) | entries: (len u32 LE, entry)*
//! footer: 0 u32 LE | crc32 u32 LE (of the count) | entry count u64 LE
//! ```
//! `seq` is the last WAL sequence number whose effect is surely included. The copy is taken
//! in slices while writes go on (fuzzy), which is sound because WAL records carry whole
//! versions: replaying every record after `seq` over it yields the exact state.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::disk::{parent, Fs};
use crate::record::{u32_at, u64_at};
use crate::store::{Entry, Shard, Store};

pub const MAGIC: &[u8; 8] = b"RKVSNAP1";
pub const HEADER: usize = 32;
/// How a snapshot's format encodes an entry.
type DecodeEntry = fn(&[u8]) -> Option<Entry>;

/// Format 1 had no counter floor.
const HEADER_V1: usize = 24;
/// The format this build writes: entries in the format-2 layout (store::Entry: every
/// version with its dot).
pub const FORMAT_VERSION: u32 = 2;
/// The older format this build still reads: format-1 entries (store::legacy), converted on
/// load.
pub const FORMAT_VERSION_V1: u32 = 1;
/// Entries copied per lock hold, so writes to the shard wait microseconds, not the whole copy.
const SLICE: usize = 2048;
const BLOCK: usize = 1 << 20;

pub fn snapshot_name(seq: u64) -> String {
    format!("snap-{seq:020}.rks")
}

pub fn parse_snapshot_name(name: &str) -> Option<u64> {
    name.strip_prefix("snap-")?
        .strip_suffix(".rks")?
        .parse()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} at offset {offset}: {why}")]
    Corrupt {
        path: PathBuf,
        offset: usize,
        why: &'static str,
    },
    #[error(
        "{path} not kept: the WAL copies of the multi-shard writes it covers could not be \
         made durable ({why}); the WAL still has everything"
    )]
    Settle { path: PathBuf, why: String },
}

/// Statistics of one snapshot written.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub entries: u64,
    pub bytes: u64,
    pub millis: u64,
}

/// Writes a snapshot of `shard` covering sequence number `seq` into `dir`: temporary file,
/// fdatasync, rename, fsync of the directory. Returns once it is durable.
pub fn write(
    fs: &dyn Fs,
    store: &Store,
    shard: usize,
    seq: u64,
    dir: &Path,
) -> Result<Written, SnapshotError> {
    write_settled(fs, store, shard, seq, dir, &|| Ok(()))
}

/// [`write`], calling `settle` once the copy is complete and before the snapshot takes its
/// name: the copy may hold a multi-shard write whose TXN records are not durable yet, and the
/// snapshot must not become the only trace of one part of it (docs/storage.md, "Multi-shard
/// writes"). An error from `settle` abandons the snapshot.
pub fn write_settled(
    fs: &dyn Fs,
    store: &Store,
    shard: usize,
    seq: u64,
    dir: &Path,
    settle: &dyn Fn() -> Result<(), String>,
) -> Result<Written, SnapshotError> {
    let t = Instant::now();
    let path = dir.join(snapshot_name(seq));
    let tmp = path.with_extension("tmp");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotError::Io { path: p, source }
    };
    let mut f = fs.create(&tmp).map_err(io(&tmp))?;
    // Read before the copy: every dot minted later is in a record after `seq`, replayed.
    let dot_floor = store.lock(shard).dot_floor();
    let mut head = Vec::with_capacity(HEADER);
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    head.extend_from_slice(&(shard as u32).to_le_bytes());
    head.extend_from_slice(&seq.to_le_bytes());
    head.extend_from_slice(&dot_floor.to_le_bytes());
    f.write_all(&head).map_err(io(&tmp))?;
    let mut bytes = HEADER as u64;
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK + 8);
    let mut count: u64 = 0;
    let mut pos = Some(0);
    let mut flush = |block: &mut Vec<u8>, f: &mut Box<dyn crate::disk::FsFile>| {
        let len = (block.len() - 8) as u32;
        let crc = crc32fast::hash(&block[8..]);
        block[..4].copy_from_slice(&len.to_le_bytes());
        block[4..8].copy_from_slice(&crc.to_le_bytes());
        let r = f.write_all(block);
        bytes += block.len() as u64;
        block.clear();
        r
    };
    block.extend_from_slice(&[0; 8]);
    while let Some(p) = pos {
        // Copy a slice under the lock; write outside it.
        pos = store.lock(shard).encoded_slice(p, SLICE, |e| {
            block.extend_from_slice(&(e.len() as u32).to_le_bytes());
            block.extend_from_slice(e);
            count += 1;
        });
        if block.len() >= BLOCK {
            flush(&mut block, &mut f).map_err(io(&tmp))?;
            block.extend_from_slice(&[0; 8]);
        }
    }
    if block.len() > 8 {
        flush(&mut block, &mut f).map_err(io(&tmp))?;
    }
    let mut foot = Vec::with_capacity(16);
    foot.extend_from_slice(&0u32.to_le_bytes());
    foot.extend_from_slice(&crc32fast::hash(&count.to_le_bytes()).to_le_bytes());
    foot.extend_from_slice(&count.to_le_bytes());
    f.write_all(&foot).map_err(io(&tmp))?;
    f.sync_data().map_err(io(&tmp))?;
    drop(f);
    if let Err(why) = settle() {
        let _ = fs.remove(&tmp);
        return Err(SnapshotError::Settle { path, why });
    }
    fs.rename(&tmp, &path).map_err(io(&path))?;
    fs.sync_dir(parent(&path)).map_err(io(dir))?;
    Ok(Written {
        entries: count,
        bytes: bytes + 16,
        millis: t.elapsed().as_millis() as u64,
    })
}

/// Loads a snapshot into `shard` (which must be empty); returns its sequence number and the
/// number of entries. Every block's checksum and every entry's layout is checked.
pub fn load(
    fs: &dyn Fs,
    path: &Path,
    shard_id: usize,
    shard: &mut Shard,
    progress: &dyn Fn(u64),
) -> Result<(u64, u64), SnapshotError> {
    let data = fs.read(path).map_err(|source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(&data, path, shard_id, shard, progress)
}

/// [`load`] on a snapshot's bytes already in memory (`path` only names it in errors). The
/// byte-level entry point the fuzz targets (crates/fuzz) call.
pub fn load_bytes(
    data: &[u8],
    path: &Path,
    shard_id: usize,
    shard: &mut Shard,
    progress: &dyn Fn(u64),
) -> Result<(u64, u64), SnapshotError> {
    let bad = |offset: usize, why: &'static str| SnapshotError::Corrupt {
        path: path.to_path_buf(),
        offset,
        why,
    };
    if data.len() < HEADER + 16 || &data[..8] != MAGIC {
        return Err(bad(0, "not a snapshot (bad magic or too short)"));
    }
    let (decode, header): (DecodeEntry, usize) = match u32_at(data, 8) {
        FORMAT_VERSION => (Entry::from_bytes, HEADER),
        FORMAT_VERSION_V1 => (crate::store::legacy::entry_from_v1, HEADER_V1),
        _ => return Err(bad(8, "unsupported snapshot format version")),
    };
    if data.len() < header + 16 {
        return Err(bad(0, "not a snapshot (too short)"));
    }
    if header == HEADER {
        shard.raise_dot_floor(u64_at(data, 24));
    }
    if u32_at(data, 12) != shard_id as u32 {
        return Err(bad(12, "snapshot belongs to another shard"));
    }
    let seq = u64_at(data, 16);
    // The footer's count sizes the shard before loading; bounded by what the file could
    // hold, so a damaged count can't reserve absurd memory (the footer is verified at the end).
    let claimed = u64_at(data, data.len() - 8) as usize;
    shard.reserve(claimed.min(data.len() / 16));
    let mut pos = header;
    let mut count = 0u64;
    loop {
        if data.len() < pos + 8 {
            return Err(bad(pos, "truncated (no footer)"));
        }
        let len = u32_at(data, pos) as usize;
        let crc = u32_at(data, pos + 4);
        if len == 0 {
            if data.len() != pos + 16 {
                return Err(bad(pos, "bytes after the footer"));
            }
            let n = u64_at(data, pos + 8);
            if crc32fast::hash(&n.to_le_bytes()) != crc || n != count {
                return Err(bad(pos, "footer does not match the entries read"));
            }
            return Ok((seq, count));
        }
        let start = pos + 8;
        let Some(block) = data.get(start..start.saturating_add(len)) else {
            return Err(bad(pos, "block runs past the end of the file"));
        };
        if crc32fast::hash(block) != crc {
            return Err(bad(pos, "block checksum mismatch"));
        }
        let mut b = 0;
        while b < block.len() {
            if block.len() - b < 4 {
                return Err(bad(start + b, "entry length cut off"));
            }
            let n = u32_at(block, b) as usize;
            let Some(raw) = block.get(b + 4..b + 4 + n) else {
                return Err(bad(start + b, "entry runs past its block"));
            };
            let e = decode(raw).ok_or_else(|| bad(start + b, "malformed entry"))?;
            shard.put(ringkv_proto::key_hash(e.key()), e);
            count += 1;
            b += 4 + n;
        }
        progress(len as u64);
        pos = start + len;
    }
}
