//! The layout this node last knew, kept in `<data-dir>/cluster-layout`, so that a member that
//! restarts comes back knowing its cluster (as Riak keeps its ring file and Cassandra its
//! peers table). Without it a restarted member started alone in its layout and learned the
//! others one gossip round at a time: in between it coordinated writes on a ring of the
//! members it knew, acknowledged them on nodes that are not the key's replicas, and dropped
//! those copies once the whole layout was back (an acknowledged write lost; docs/faults.md).
//!
//! The file is the GOSSIP body (protocol.md §6) behind a magic and a length, with a CRC-32,
//! written atomically whenever the layout changes (at the next commit tick, and at a clean
//! stop). What it holds is
//! merged like any gossip, so a stale file is harmless: newer entries from peers win.
//!
//! ```text
//! "rkvlay01", u32 body length, body (u64 digest, u32 count, count × member), u32 crc32(body)
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bytes::BytesMut;
use ringkv_proto::peer::{GossipBody, MemberWire};

use crate::disk::{write_atomic, RealFs};
use crate::ring::layout::Layout;

const MAGIC: &[u8; 8] = b"rkvlay01";
/// The file name in the data directory.
pub const FILE_NAME: &str = "cluster-layout";
/// A layout file larger than this is not read (a layout of 10,000 members is about 1 MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayoutFileError {
    #[error("can't read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a layout file, or is damaged ({why}); moving it away starts this node \
         alone in its layout until gossip reaches it: do so only while its peers are up"
    )]
    Damaged { path: PathBuf, why: String },
}

/// The saved layout of this node, and the digest last written.
pub struct LayoutFile {
    path: PathBuf,
    saved_digest: Mutex<Option<u64>>,
    /// The last save failed (its warning was logged).
    failing: std::sync::atomic::AtomicBool,
}

impl LayoutFile {
    /// The file in `data_dir`, and the members it holds (None: no file yet).
    pub fn open(data_dir: &Path) -> (LayoutFile, Result<Option<Vec<MemberWire>>, LayoutFileError>) {
        let path = data_dir.join(FILE_NAME);
        let loaded = read(&path);
        let saved = match &loaded {
            Ok(Some((digest, _))) => Some(*digest),
            _ => None,
        };
        let file = LayoutFile {
            path,
            saved_digest: Mutex::new(saved),
            failing: Default::default(),
        };
        (file, loaded.map(|o| o.map(|(_, m)| m)))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `digest` differs from what the file holds.
    pub fn stale(&self, digest: u64) -> bool {
        *self.saved_digest.lock().unwrap_or_else(|e| e.into_inner()) != Some(digest)
    }

    /// Records whether the last save failed; whether that is news (a failure after a success,
    /// worth a warning).
    pub fn note_failure(&self, failed: bool) -> bool {
        let was = self
            .failing
            .swap(failed, std::sync::atomic::Ordering::Relaxed);
        failed && !was
    }

    /// Writes `layout` (whose digest is `digest`) atomically and synced. Blocking: run it
    /// off the event loop.
    pub fn save(&self, layout: &Layout, digest: u64) -> io::Result<()> {
        let data = encode(layout, digest);
        write_atomic(&RealFs, &self.path, &data)?;
        *self.saved_digest.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        Ok(())
    }
}

/// The file's bytes for `layout`.
pub fn encode(layout: &Layout, digest: u64) -> Vec<u8> {
    let body = GossipBody {
        digest,
        members: layout.members().cloned().collect(),
    };
    let mut b = BytesMut::new();
    body.encode(&mut b);
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + b.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(&b);
    out.extend_from_slice(&crc32fast::hash(&b).to_be_bytes());
    out
}

/// The digest and members of a file's bytes.
pub fn decode(data: &[u8]) -> Result<(u64, Vec<MemberWire>), String> {
    let rest = data
        .strip_prefix(MAGIC.as_slice())
        .ok_or("no layout file magic")?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or("truncated length")?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() != len.saturating_add(4) {
        return Err(format!("{} bytes after the length {len}", rest.len()));
    }
    let (body, crc) = rest.split_at(len);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err("CRC mismatch".into());
    }
    let body = GossipBody::decode(body).map_err(|e| e.to_string())?;
    Ok((body.digest, body.members))
}

fn read(path: &Path) -> Result<Option<(u64, Vec<MemberWire>)>, LayoutFileError> {
    let damaged = |why: String| LayoutFileError::Damaged {
        path: path.to_path_buf(),
        why,
    };
    let size = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(LayoutFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if size > MAX_FILE_BYTES {
        return Err(damaged(format!("{size} bytes, more than {MAX_FILE_BYTES}")));
    }
    let data = std::fs::read(path).map_err(|source| LayoutFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    decode(&data).map(Some).map_err(damaged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::layout::MemberState;

    fn layout() -> Layout {
        let mut l = Layout::new();
        l.set(1, "127.0.0.1:7001", "", MemberState::Active);
        l.set(2, "127.0.0.1:7002", "z2", MemberState::Leaving);
        l
    }

    #[test]
    fn a_saved_layout_reads_back_and_damage_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (f, loaded) = LayoutFile::open(dir.path());
        assert!(matches!(loaded, Ok(None)));
        let l = layout();
        assert!(f.stale(l.digest()));
        f.save(&l, l.digest()).expect("save");
        assert!(!f.stale(l.digest()));
        let (f2, loaded) = LayoutFile::open(dir.path());
        let members = loaded.expect("read").expect("a layout");
        let mut back = Layout::new();
        back.merge(members);
        assert_eq!(back, l);
        assert!(!f2.stale(l.digest()));

        let mut data = std::fs::read(f.path()).expect("read");
        let last = data.len() - 5;
        data[last] ^= 1;
        std::fs::write(f.path(), &data).expect("write");
        let (_, loaded) = LayoutFile::open(dir.path());
        let err = loaded.expect_err("damaged");
        assert!(err.to_string().contains("CRC mismatch"), "{err}");
        std::fs::write(f.path(), &data[..10]).expect("write");
        assert!(LayoutFile::open(dir.path()).1.is_err());
    }
}
