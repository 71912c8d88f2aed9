//! The simulated disk for tests (feature `test-hooks`): see `SimFs`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Contents, Fs, FsFile};

/// An in-memory disk with power-loss semantics, for tests.
#[derive(Clone, Default)]
pub struct SimFs {
    inner: Arc<Mutex<Sim>>,
}

#[derive(Default, Clone)]
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
    /// Every fdatasync of an open file fails with EIO (and makes nothing durable).
    fail_syncs: bool,
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
        if s.fail_syncs {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
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
        s.fail_syncs = false;
    }

    /// Loses power after the disk persisted part of what was written but not synced: of each
    /// file, the first `keep(path)` bytes (in file order) that differ from its synced state
    /// survive, the rest does not (a write torn by the crash). Then as [`SimFs::crash`].
    pub fn crash_torn(&self, keep: &dyn Fn(&Path) -> usize) {
        {
            let mut s = self.lock();
            let files: Vec<(PathBuf, u64)> = s.names.iter().map(|(p, i)| (p.clone(), *i)).collect();
            for (path, ino) in files {
                let mut left = keep(&path);
                if let Some((data, synced)) = s.inodes.get_mut(&ino) {
                    let mut torn = synced.clone();
                    torn.resize(data.len().max(synced.len()), 0);
                    for (t, d) in torn.iter_mut().zip(data.iter()) {
                        if left == 0 {
                            break;
                        }
                        if t != d {
                            *t = *d;
                            left -= 1;
                        }
                    }
                    *synced = torn;
                }
            }
        }
        self.crash();
    }

    /// How many bytes of a file differ from its synced state (what [`SimFs::crash_torn`] may
    /// keep of it).
    pub fn unsynced_bytes(&self, path: &Path) -> usize {
        let s = self.lock();
        let Some((data, synced)) = s.names.get(path).and_then(|i| s.inodes.get(i)) else {
            return 0;
        };
        let common = data
            .iter()
            .zip(synced.iter())
            .filter(|(a, b)| a != b)
            .count();
        let longer = if data.len() > synced.len() {
            data[synced.len()..].iter().filter(|&&b| b != 0).count()
        } else {
            0
        };
        common + longer
    }

    /// An independent copy of this disk as it is now (so that a test can crash the same
    /// state in several ways).
    pub fn fork(&self) -> SimFs {
        let copy = self.lock().clone();
        SimFs {
            inner: Arc::new(Mutex::new(copy)),
        }
    }

    /// After `n` more operations, every operation fails.
    pub fn fail_after(&self, n: usize) {
        self.lock().ops_left = Some(n);
    }

    /// Operations performed so far (to enumerate crash points).
    pub fn ops(&self) -> usize {
        self.lock().ops
    }

    /// While set, every fdatasync of an open file fails with EIO (what a failing disk reports).
    pub fn fail_syncs(&self, fail: bool) {
        self.lock().fail_syncs = fail;
    }

    /// Writes beyond `bytes` more fail with ENOSPC (`None`: unlimited).
    pub fn limit_space(&self, bytes: Option<usize>) {
        self.lock().space_left = bytes;
    }

    /// Overwrites one byte of a file (in current and durable state), to simulate corruption.
    pub fn corrupt(&self, path: &Path, offset: usize) {
        self.flip(path, offset, 0x40);
    }

    /// Flips the bits of `mask` in one byte of a file (in current and durable state).
    pub fn flip(&self, path: &Path, offset: usize, mask: u8) {
        let mut s = self.lock();
        if let Some(&ino) = s.names.get(path) {
            if let Some((data, synced)) = s.inodes.get_mut(&ino) {
                for d in [data, synced] {
                    if let Some(b) = d.get_mut(offset) {
                        *b ^= mask;
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
