//! The data directory: an exclusive lock so two processes can't share it, and a metadata file
//! with the node id and the formats in use.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::disk::{write_atomic, Fs};

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
    shards: usize,
    _lock: File,
}

fn write_meta_file(fs: &dyn Fs, meta: &Path, id: u64, shards: usize) -> std::io::Result<()> {
    let text = format!(
        "# ringkv data directory; do not edit\nformat = {META_FORMAT}\nnode_id = {id}\nshards = {shards}\n"
    );
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
}

impl DataDir {
    /// Creates or opens `path`, takes its lock, and reads (or writes, the first time) its
    /// metadata. `shards` must match what the directory was created with.
    pub fn open(
        fs: &dyn Fs,
        path: &Path,
        shards: usize,
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
        let write_meta = |id: u64| write_meta_file(fs, &meta, id, shards).map_err(io);
        let (node_id, opened_format) = match std::fs::read_to_string(&meta) {
            Ok(text) => parse_meta(&text, shards).map_err(|why| DataDirError::Meta {
                path: meta.clone(),
                why,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_meta(new_id)?;
                (new_id, META_FORMAT)
            }
            Err(e) => return Err(io(e)),
        };
        Ok(DataDir {
            path: path.to_path_buf(),
            node_id,
            opened_format,
            shards,
            _lock: lock,
        })
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
        write_meta_file(fs, &meta, self.node_id, self.shards).map_err(|source| DataDirError::Io {
            path: meta.clone(),
            source,
        })
    }
}

/// The node id and the format of a metadata file.
fn parse_meta(text: &str, shards: usize) -> Result<(u64, u32), String> {
    let mut format = None;
    let mut node_id = None;
    let mut stored_shards = None;
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
        Some(s) if s == shards => Ok((id, format)),
        Some(s) => Err(format!(
            "the data was written with --shards {s}, but this start asks for {shards}; \
             start with --shards {s} (changing the shard count is not supported)"
        )),
        None => Err("no shards line".into()),
    }
}
