//! The narrow file layer every durable write goes through (WAL segments, snapshots, metadata).
//!
//! [`RealFs`] is the operating system. [`SimFs`] is an in-memory disk that remembers what was
//! made durable (file data by `sync_data`, names by `sync_dir`) so a test can "lose power"
//! and see only that, and can inject failures at any operation.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// An open file being written.
pub trait FsFile: Send {
    /// Appends at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Writes at `offset` (over preallocated zeros, or extending the file).
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Bytes of a whole file, memory-mapped where possible.
pub enum Contents {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Contents {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Contents::Mapped(m) => m,
            Contents::Owned(v) => v,
        }
    }
}

pub trait Fs: Send + Sync {
    /// Creates (or truncates) a file for writing.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    /// Opens an existing file for appending.
    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>>;
    fn read(&self, path: &Path) -> io::Result<Contents>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Cuts a file to `len` bytes and makes that durable.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Makes an existing file's data durable (fdatasync), e.g. a WAL tail found at recovery
    /// that the crashed process wrote but may not have synced.
    fn sync_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
}

/// Writes `data` to `path` atomically: temporary name, fsync, rename, fsync the directory.
/// A crash at any step leaves either the old file or the new one, never neither.
pub fn write_atomic(fs: &dyn Fs, path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs.create(&tmp)?;
    f.write_all(data)?;
    f.sync_data()?;
    drop(f);
    fs.rename(&tmp, path)?;
    fs.sync_dir(parent(path))
}

pub fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// The real file system.
pub struct RealFs;

struct RealFile(std::fs::File);

impl FsFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.0, buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Fs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        Ok(Box::new(RealFile(std::fs::File::create(path)?)))
    }
    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let f = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Box::new(RealFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Contents> {
        let f = std::fs::File::open(path)?;
        if f.metadata()?.len() == 0 {
            return Ok(Contents::Owned(Vec::new()));
        }
        // SAFETY: the file is in our locked data directory; nothing else writes it while it is
        // mapped (WAL segments being replayed and snapshots are immutable once written).
        let m = unsafe { memmap2::Mmap::map(&f)? };
        Ok(Contents::Mapped(m))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let f = std::fs::OpenOptions::new().write(true).open(path)?;
        f.set_len(len)?;
        f.sync_all()
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .open(path)?
            .sync_data()
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        std::fs::File::open(dir)?.sync_all()
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// An in-memory disk with power-loss semantics, for tests.
#[derive(Clone, Default)]
pub struct SimFs {
    inner: Arc<Mutex<Sim>>,
}

#[derive(Default)]
struct Sim {
    next_inode: u64,
    /// inode → (current data, data as of its last sync)
    inodes: HashMap<u64, (Vec<u8>, Vec<u8>)>,
    /// path → inode, as the running process sees it
    names: HashMap<PathBuf, u64>,
    /// path → inode, as made durable by directory syncs
    durable_names: HashMap<PathBuf, u64>,
    /// Operations left before every operation fails (a "crash" mid-way), if armed.
    ops_left: Option<usize>,
    /// Bytes that may still be written before writes fail with "no space".
    space_left: Option<usize>,
    ops: usize,
}

fn injected() -> io::Error {
    io::Error::other("injected failure (simulated crash)")
}

impl Sim {
    fn tick(&mut self) -> io::Result<()> {
        self.ops += 1;
        match &mut self.ops_left {
            Some(0) => Err(injected()),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

struct SimFile {
    fs: SimFs,
    inode: u64,
}

impl SimFile {
    /// Writes at `offset`, or at the end when None.
    fn write(&mut self, offset: Option<u64>, buf: &[u8]) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.tick()?;
        if let Some(left) = &mut s.space_left {
            if *left < buf.len() {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            *left -= buf.len();
        }
        let inode = self.inode;
        if let Some((data, _)) = s.inodes.get_mut(&inode) {
            let off = offset.map_or(data.len(), |o| o as usize);
            if data.len() < off + buf.len() {
                data.resize(off + buf.len(), 0);
            }
            data[off..off + buf.len()].copy_from_slice(buf);
        }
        Ok(())
    }
}

impl FsFile for SimFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.write(None, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.write(Some(offset), buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut s = self.fs.lock();
        s.tick()?;
        let inode = self.inode;
        if let Some((data, synced)) = s.inodes.get_mut(&inode) {
            synced.clone_from(data);
        }
        Ok(())
    }
}

impl SimFs {
    pub fn new() -> SimFs {
        SimFs::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sim> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loses power: only synced data under durably named files survives. Disarms failures.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.names = s.durable_names.clone();
        for (data, synced) in s.inodes.values_mut() {
            data.clone_from(synced);
        }
        s.ops_left = None;
        s.space_left = None;
    }

    /// After `n` more operations, every operation fails.
    pub fn fail_after(&self, n: usize) {
        self.lock().ops_left = Some(n);
    }

    /// Operations performed so far (to enumerate crash points).
    pub fn ops(&self) -> usize {
        self.lock().ops
    }

    /// Writes beyond `bytes` more fail with ENOSPC (`None`: unlimited).
    pub fn limit_space(&self, bytes: Option<usize>) {
        self.lock().space_left = bytes;
    }

    /// Overwrites one byte of a file (in current and durable state), to simulate corruption.
    pub fn corrupt(&self, path: &Path, offset: usize) {
        let mut s = self.lock();
        if let Some(&ino) = s.names.get(path) {
            if let Some((data, synced)) = s.inodes.get_mut(&ino) {
                for d in [data, synced] {
                    if let Some(b) = d.get_mut(offset) {
                        *b ^= 0x40;
                    }
                }
            }
        }
    }
}

impl Fs for SimFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.tick()?;
        s.next_inode += 1;
        let ino = s.next_inode;
        s.inodes.insert(ino, (Vec::new(), Vec::new()));
        s.names.insert(path.to_path_buf(), ino);
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: ino,
        }))
    }
    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let mut s = self.lock();
        s.tick()?;
        let ino = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(SimFile {
            fs: self.clone(),
            inode: ino,
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Contents> {
        let s = self.lock();
        let ino = s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Contents::Owned(
            s.inodes.get(ino).map(|d| d.0.clone()).unwrap_or_default(),
        ))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let ino = s.names.remove(from).ok_or(io::ErrorKind::NotFound)?;
        s.names.insert(to.to_path_buf(), ino);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        s.names.remove(path).ok_or(io::ErrorKind::NotFound)?;
        Ok(())
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let ino = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        if let Some((data, synced)) = s.inodes.get_mut(&ino) {
            data.truncate(len as usize);
            synced.clone_from(data);
        }
        Ok(())
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let ino = *s.names.get(path).ok_or(io::ErrorKind::NotFound)?;
        if let Some((data, synced)) = s.inodes.get_mut(&ino) {
            synced.clone_from(data);
        }
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.lock();
        s.tick()?;
        let in_dir = |p: &Path| p.parent() == Some(dir);
        let current: Vec<(PathBuf, u64)> = s
            .names
            .iter()
            .filter(|(p, _)| in_dir(p))
            .map(|(p, i)| (p.clone(), *i))
            .collect();
        s.durable_names.retain(|p, _| !in_dir(p));
        s.durable_names.extend(current);
        Ok(())
    }
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.lock();
        let mut names: Vec<String> = s
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }
}
