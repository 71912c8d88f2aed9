//! The data directory: an exclusive lock so two processes can't share it, and a metadata file
//! with the node id, the formats in use and how keys are placed in shards.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::disk::{write_atomic, Fs};
use crate::store::Placement;

/// The data directory format this build writes: format-2 entries (every version with its
/// dot) in WAL `VERSIONS` records and snapshots.
pub const META_FORMAT: u32 = 2;
/// The format of the previous release, still opened: its records and snapshots are read and
/// converted, and the metadata is rewritten at once so that the older build, which can't read
/// what this one writes, refuses the directory instead of misreading it.
pub const META_FORMAT_V1: u32 = 1;

/// An open, locked data directory. The lock is held as long as this value lives.
pub struct DataDir {
    pub path: PathBuf,
    pub node_id: u64,
    /// The format the directory was in when opened (META_FORMAT_V1: convert it).
    pub opened_format: u32,
    /// How the keys of this directory are spread over its shards: by partition for one made
    /// by this build (its `meta` has a `partitions` line), legacy for an older one.
    pub placement: Placement,
    shards: usize,
    _lock: File,
}

fn write_meta_file(
    fs: &dyn Fs,
    meta: &Path,
    id: u64,
    shards: usize,
    placement: Placement,
) -> std::io::Result<()> {
    let mut text = format!(
        "# ringkv data directory; do not edit\nformat = {META_FORMAT}\nnode_id = {id}\nshards = {shards}\n"
    );
    // A legacy directory stays without the line: its keys stay where they are.
    if let Some(p) = placement.partitions() {
        text.push_str(&format!("partitions = {p}\n"));
    }
    write_atomic(fs, meta, text.as_bytes())
}

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("can't use data directory {path}: {source} (is it writable? choose another with --data-dir)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "data directory {0} is in use by another ringkv process (it holds the lock on {0}/LOCK)"
    )]
    Locked(PathBuf),
    #[error("{path}: {why}")]
    Meta { path: PathBuf, why: String },
    #[error(
        "data directory {0} predates partition placement (its meta file has no partitions line, \
         so its keys are placed in shards by the old rule), and a cluster node needs every \
         partition in one shard. Cluster nodes need a fresh data directory: start with another \
         --data-dir (this one is left as it is), or without --cluster-secret to serve it \
         standalone"
    )]
    LegacyPlacement(PathBuf),
}

impl DataDir {
    /// Creates or opens `path`, takes its lock, and reads (or writes, the first time) its
    /// metadata. `shards` must match what the directory was created with, and so must
    /// `partitions` (a power of two, checked by the configuration) if it was created with one.
    pub fn open(
        fs: &dyn Fs,
        path: &Path,
        shards: usize,
        partitions: u32,
        new_id: u64,
    ) -> Result<DataDir, DataDirError> {
        let io = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("LOCK"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DataDirError::Locked(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let meta = path.join("meta");
        let meta_err = |why| DataDirError::Meta {
            path: meta.clone(),
            why,
        };
        let new_placement = Placement::partitioned(partitions)
            .ok_or_else(|| meta_err(format!("--partitions {partitions} is not a power of two")))?;
        let (node_id, opened_format, placement) = match std::fs::read_to_string(&meta) {
            Ok(text) => parse_meta(&text, shards, partitions).map_err(meta_err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_meta_file(fs, &meta, new_id, shards, new_placement).map_err(io)?;
                (new_id, META_FORMAT, new_placement)
            }
            Err(e) => return Err(io(e)),
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            node_id,
            opened_format,
            placement,
            shards,
            _lock: lock,
        })
    }

    /// Refuses a directory with the legacy placement, before anything is read or written
    /// (cluster mode: partitions are the unit of replication, so each must be in one shard).
    pub fn require_partitioned(&self) -> Result<(), DataDirError> {
        match self.placement {
            Placement::Partitioned { .. } => Ok(()),
            Placement::Legacy => Err(DataDirError::LegacyPlacement(self.path.clone())),
        }
    }

    /// After an older format was read (recovered) without error: mark the directory as this
    /// build's format before anything new is written, so that the older build, which can't
    /// read the new records, refuses it instead of misreading it. (A recovery that fails
    /// leaves the directory to the older build.)
    pub fn finish_upgrade(&mut self, fs: &dyn Fs) -> Result<(), DataDirError> {
        if self.opened_format == META_FORMAT {
            return Ok(());
        }
        let meta = self.path.join("meta");
        write_meta_file(fs, &meta, self.node_id, self.shards, self.placement).map_err(|source| {
            DataDirError::Io {
                path: meta.clone(),
                source,
            }
        })
    }
}

/// The node id, format and placement of a metadata file, checked against this start's
/// `--shards` and `--partitions`.
fn parse_meta(text: &str, shards: usize, partitions: u32) -> Result<(u64, u32, Placement), String> {
    let mut format = None;
    let mut node_id = None;
    let mut stored_shards = None;
    let mut stored_partitions = None;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("malformed line {line:?}"))?;
        let v = v.trim();
        match k.trim() {
            "format" => format = v.parse::<u32>().ok(),
            "node_id" => node_id = v.parse::<u64>().ok(),
            "shards" => stored_shards = v.parse::<usize>().ok(),
            "partitions" => {
                let p = v.parse::<u32>().ok().and_then(Placement::partitioned);
                stored_partitions =
                    Some(p.ok_or_else(|| format!("partitions {v:?} is not a power of two"))?);
            }
            _ => {}
        }
    }
    let format = match format {
        Some(f @ (META_FORMAT | META_FORMAT_V1)) => f,
        Some(f) => {
            return Err(format!(
                "format {f} is not supported by this build (it reads formats \
                 {META_FORMAT_V1} and {META_FORMAT}); a newer ringkv wrote it"
            ))
        }
        None => return Err("no format line".into()),
    };
    let id = node_id.ok_or("no node_id line")?;
    match stored_shards {
        Some(s) if s == shards => {}
        Some(s) => {
            return Err(format!(
                "the data was written with --shards {s}, but this start asks for {shards}; \
                 start with --shards {s} (changing the shard count is not supported)"
            ))
        }
        None => return Err("no shards line".into()),
    }
    let placement = match stored_partitions {
        None => Placement::Legacy,
        Some(p) if p.partitions() == Some(partitions) => p,
        Some(p) => {
            let p = p.partitions().unwrap_or(0);
            return Err(format!(
                "the data was written with --partitions {p}, but this start asks for \
                 {partitions}; start with --partitions {p} (changing the partition count \
                 would move keys between shards, which is not supported)"
            ));
        }
    };
    Ok((id, format, placement))
}
