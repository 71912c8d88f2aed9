//! The persisted progress of this node's incoming partition copies, so a copy resumes where it
//! stopped after a crash or restart of either side, and whether this node was ever admitted as
//! an owner (so a restart does not make it join again).
//!
//! An append-only file of fixed-size records, each with its CRC-32; a torn or corrupt tail is
//! ignored (that batch is copied again). Rewritten compactly when a plan starts.
//!
//! ```text
//! record: u8 kind, u32 partition, u64 source, u64 next, u64 bytes, u64 keys, u32 crc32
//! kind 1 PLAN (next = layout digest)  2 FETCHED (bytes of a batch not yet applied)
//!      3 APPLIED (durable through next; bytes/keys: totals for this source)
//!      4 DONE (the source's copy is complete)  5 MEMBER (admitted as an owner)
//! ```

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::disk::{write_atomic, RealFs};
use crate::ring::NodeId;

const RECORD_BYTES: usize = 1 + 4 + 8 * 4 + 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Plan = 1,
    Fetched = 2,
    Applied = 3,
    Done = 4,
    Member = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Plan,
            2 => Kind::Fetched,
            3 => Kind::Applied,
            4 => Kind::Done,
            5 => Kind::Member,
            _ => return None,
        })
    }
}

/// One partition's copy from one source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The smallest hash still to copy.
    pub next: u64,
    pub done: bool,
    pub bytes: u64,
    pub keys: u64,
}

/// What the file says.
#[derive(Debug, Default)]
pub struct Loaded {
    pub member: bool,
    /// The layout digest the cursors belong to (0: none).
    pub digest: u64,
    pub cursors: HashMap<(u32, NodeId), Cursor>,
    /// Bytes fetched but never applied before the last stop: they are copied again.
    pub resent: u64,
}

pub struct ProgressFile {
    path: PathBuf,
    file: Option<File>,
}

fn encode(
    kind: Kind,
    p: u32,
    source: NodeId,
    next: u64,
    bytes: u64,
    keys: u64,
) -> [u8; RECORD_BYTES] {
    let mut r = [0u8; RECORD_BYTES];
    r[0] = kind as u8;
    r[1..5].copy_from_slice(&p.to_be_bytes());
    r[5..13].copy_from_slice(&source.to_be_bytes());
    r[13..21].copy_from_slice(&next.to_be_bytes());
    r[21..29].copy_from_slice(&bytes.to_be_bytes());
    r[29..37].copy_from_slice(&keys.to_be_bytes());
    let crc = crc32fast::hash(&r[..37]);
    r[37..].copy_from_slice(&crc.to_be_bytes());
    r
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    u64::from_be_bytes(a)
}

/// Replays the records; stops at the first torn or corrupt one.
pub fn parse(data: &[u8]) -> Loaded {
    let mut l = Loaded::default();
    let mut fetched: HashMap<(u32, NodeId), u64> = HashMap::new();
    for r in data.chunks_exact(RECORD_BYTES) {
        let crc = u32::from_be_bytes([r[37], r[38], r[39], r[40]]);
        if crc32fast::hash(&r[..37]) != crc {
            break;
        }
        let Some(kind) = Kind::from_u8(r[0]) else {
            break;
        };
        let p = u32::from_be_bytes([r[1], r[2], r[3], r[4]]);
        let (source, next, bytes, keys) = (
            be64(&r[5..13]),
            be64(&r[13..21]),
            be64(&r[21..29]),
            be64(&r[29..37]),
        );
        match kind {
            Kind::Member => l.member = true,
            Kind::Plan => {
                l.digest = next;
                l.cursors.clear();
                fetched.clear();
            }
            Kind::Fetched => {
                fetched.insert((p, source), bytes);
            }
            Kind::Applied | Kind::Done => {
                fetched.remove(&(p, source));
                l.cursors.insert(
                    (p, source),
                    Cursor {
                        next,
                        done: kind == Kind::Done,
                        bytes,
                        keys,
                    },
                );
            }
        }
    }
    l.resent = fetched.values().sum();
    l
}

impl ProgressFile {
    /// Reads the file at `path` (missing: nothing yet).
    pub fn open(path: PathBuf) -> io::Result<(ProgressFile, Loaded)> {
        let loaded = match std::fs::read(&path) {
            Ok(data) => parse(&data),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Loaded::default(),
            Err(e) => return Err(e),
        };
        Ok((ProgressFile { path, file: None }, loaded))
    }

    fn append(&mut self, rec: &[u8], sync: bool) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let Some(f) = self.file.as_mut() else {
            return Err(io::Error::other("progress file not open"));
        };
        f.write_all(rec)?;
        if sync {
            f.sync_data()?;
        }
        Ok(())
    }

    /// Starts a new plan for `digest`, keeping `cursors` (rewritten atomically).
    pub fn rewrite(
        &mut self,
        member: bool,
        digest: u64,
        cursors: &HashMap<(u32, NodeId), Cursor>,
    ) -> io::Result<()> {
        let mut data = Vec::with_capacity((cursors.len() + 2) * RECORD_BYTES);
        if member {
            data.extend_from_slice(&encode(Kind::Member, 0, 0, 0, 0, 0));
        }
        data.extend_from_slice(&encode(Kind::Plan, 0, 0, digest, 0, 0));
        for (&(p, src), c) in cursors {
            let kind = if c.done { Kind::Done } else { Kind::Applied };
            data.extend_from_slice(&encode(kind, p, src, c.next, c.bytes, c.keys));
        }
        self.file = None;
        write_atomic(&RealFs, &self.path, &data)
    }

    /// A batch of `bytes` was fetched and is about to be applied. Not synced: it only lets a
    /// restart count what it copies again.
    pub fn fetched(&mut self, p: u32, src: NodeId, bytes: u64) -> io::Result<()> {
        self.append(&encode(Kind::Fetched, p, src, 0, bytes, 0), false)
    }

    /// Everything before `c.next` is durable here.
    pub fn applied(&mut self, p: u32, src: NodeId, c: &Cursor) -> io::Result<()> {
        let kind = if c.done { Kind::Done } else { Kind::Applied };
        self.append(&encode(kind, p, src, c.next, c.bytes, c.keys), true)
    }

    /// This node was admitted as an owner.
    pub fn member(&mut self) -> io::Result<()> {
        self.append(&encode(Kind::Member, 0, 0, 0, 0, 0), true)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_keeps_the_last_cursor_and_counts_unapplied_batches() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut f, l) = ProgressFile::open(dir.path().join("p")).expect("open");
        assert!(!l.member && l.cursors.is_empty());
        f.rewrite(false, 77, &HashMap::new()).expect("rewrite");
        let c = Cursor {
            next: 10,
            done: false,
            bytes: 100,
            keys: 2,
        };
        f.fetched(3, 9, 100).expect("fetched");
        f.applied(3, 9, &c).expect("applied");
        f.fetched(3, 9, 50).expect("fetched");
        f.member().expect("member");
        let (_, l) = ProgressFile::open(dir.path().join("p")).expect("reopen");
        assert!(l.member);
        assert_eq!(l.digest, 77);
        assert_eq!(l.cursors.get(&(3, 9)), Some(&c));
        assert_eq!(l.resent, 50);
    }

    #[test]
    fn a_torn_tail_is_ignored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p");
        let (mut f, _) = ProgressFile::open(path.clone()).expect("open");
        f.rewrite(true, 5, &HashMap::new()).expect("rewrite");
        let c = Cursor {
            next: 1,
            done: true,
            bytes: 1,
            keys: 1,
        };
        f.applied(0, 1, &c).expect("applied");
        let mut data = std::fs::read(&path).expect("read");
        let whole = data.len();
        data.extend_from_slice(&encode(Kind::Applied, 0, 1, 99, 9, 9)[..20]);
        let l = parse(&data);
        assert_eq!(l.cursors.get(&(0, 1)), Some(&c));
        data.truncate(whole);
        data[whole - 1] ^= 1; // corrupt the last whole record: it is dropped
        let l = parse(&data);
        assert!(l.member);
        assert!(l.cursors.is_empty());
    }
}
