//! A real disk whose fdatasyncs a test can hold (feature `test-hooks`, `--test-hold-syncs-file`):
//! while the named file exists, every `sync_data` waits before syncing, so a test can keep
//! writes un-acknowledged under `--fsync always` for as long as it needs, then release them by
//! removing the file (no sleeps: the test waits on conditions, the server polls the file).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Contents, Fs, FsFile};

/// How often a held sync looks at the file again.
const POLL_MS: u64 = 1;
/// A sync is never held longer than this, so a test that forgets the file can't hang the
/// server forever.
const MAX_HOLD_MS: u64 = 60_000;

/// [`Fs`] over another one, holding `sync_data` while `hold` exists.
pub struct HoldSyncs {
    inner: Arc<dyn Fs>,
    hold: Arc<PathBuf>,
}

impl HoldSyncs {
    pub fn new(inner: Arc<dyn Fs>, hold: PathBuf) -> HoldSyncs {
        HoldSyncs {
            inner,
            hold: Arc::new(hold),
        }
    }
}

struct HeldFile {
    inner: Box<dyn FsFile>,
    hold: Arc<PathBuf>,
}

fn wait_while_held(hold: &Path) {
    let t = Instant::now();
    while hold.exists() && t.elapsed() < Duration::from_millis(MAX_HOLD_MS) {
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
}

impl FsFile for HeldFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        wait_while_held(&self.hold);
        self.inner.sync_data()
    }
}

impl Fs for HoldSyncs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inner = self.inner.create(path)?;
        Ok(Box::new(HeldFile {
            inner,
            hold: self.hold.clone(),
        }))
    }
    fn append(&self, path: &Path) -> io::Result<Box<dyn FsFile>> {
        let inner = self.inner.append(path)?;
        Ok(Box::new(HeldFile {
            inner,
            hold: self.hold.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Contents> {
        self.inner.read(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn sync_file(&self, path: &Path) -> io::Result<()> {
        self.inner.sync_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
}
