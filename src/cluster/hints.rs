//! Durable hinted handoff. A node standing in for a replica that is down stores the write as a
//! hint, in one append-only log per intended owner (`<data dir>/hints/<owner id>.log`), and
//! acknowledges only once the hint is synced to disk, so a stand-in's ack is as durable as the
//! owner's would have been. When the owner is reachable again the log is replayed to it, and
//! deleted only after the owner acknowledged every hint in it.
//!
//! Record: `u32` BE length of the rest, `u32` BE CRC-32 (crc32fast, ISO-HDLC) of the rest,
//! `u64` BE time stored (ms), then the entry bytes. A torn tail (a crash while appending, never
//! acknowledged) is cut at start.
//!
//! Appends go through one writer thread that takes every hint queued meanwhile, appends each
//! owner's to its log and syncs each log once (group commit, as the WAL does); the queue is
//! bounded, and a hint that finds it full is refused (a stand-in then does not acknowledge).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use crate::ring::NodeId;
use crate::store::Entry;
use crate::util::{lock, now_ms};

/// Largest hint record accepted when reading a log back (an entry is bounded by the frame).
const MAX_HINT_RECORD_BYTES: usize = 1 << 30;
/// Hints waiting for the writer thread; past it new hints are refused.
const MAX_QUEUED_HINTS: usize = 65_536;

/// One hint for the writer thread: owner, record bytes, and where to say it is durable.
type Queued = (
    NodeId,
    Vec<u8>,
    tokio::sync::oneshot::Sender<Result<(), String>>,
);

#[derive(Default)]
struct Target {
    /// Records in `<id>.log` and `<id>.sending`.
    pending: u64,
    /// When the oldest pending hint was stored.
    oldest_ms: Option<u64>,
    /// A replay is running.
    replaying: bool,
    /// Hints of the running replay left out as too old (deleted with the delivered ones).
    expired: u64,
}

pub struct Hints {
    dir: PathBuf,
    targets: Arc<Mutex<HashMap<NodeId, Target>>>,
    #[cfg_attr(feature = "sim", allow(dead_code))]
    queue: std::sync::mpsc::SyncSender<Queued>,
    /// Hints older than this are dropped unsent (the tombstone grace, see `set_max_age`), and
    /// where to count them.
    max_age: std::sync::OnceLock<(u64, Arc<crate::ring::membership::Membership>)>,
}

/// Pending hints for one owner, for INFO.
pub struct Pending {
    pub target: NodeId,
    pub count: u64,
    pub oldest_age_ms: u64,
}

fn log_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("{id:016x}.log"))
}

fn sending_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("{id:016x}.sending"))
}

/// Reads every whole record of a hint log: (stored_ms, entry).
fn read_log(path: &Path) -> std::io::Result<Vec<(u64, Entry)>> {
    Ok(read_log_len(path)?.0)
}

/// The records of a hint log and the length of its valid prefix.
fn read_log_len(path: &Path) -> std::io::Result<(Vec<(u64, Entry)>, u64)> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut buf)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut rest = &buf[..];
    while rest.len() >= 8 {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if !(8..=MAX_HINT_RECORD_BYTES).contains(&len) || rest.len() < 8 + len {
            break;
        }
        let body = &rest[8..8 + len];
        if crc32fast::hash(body) != crc {
            warn!(log = %path.display(), "hint log has a torn or corrupt record; ignoring the rest");
            break;
        }
        let stored = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
        match Entry::from_bytes(&body[8..]) {
            Some(e) => out.push((stored, e)),
            None => warn!(log = %path.display(), "hint record with a malformed entry skipped"),
        }
        rest = &rest[8 + len..];
    }
    Ok((out, (buf.len() - rest.len()) as u64))
}

impl Hints {
    /// Opens (creating) the hint directory and counts what is pending there.
    pub fn open(dir: PathBuf) -> std::io::Result<Hints> {
        std::fs::create_dir_all(&dir)?;
        let mut targets: HashMap<NodeId, Target> = HashMap::new();
        for ent in std::fs::read_dir(&dir)? {
            let path = ent?.path();
            let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| u64::from_str_radix(s, 16).ok())
            else {
                continue;
            };
            let (recs, valid) = read_log_len(&path)?;
            // Cut a torn tail (a crash mid-append, never acknowledged), so hints appended
            // after it are not hidden behind it.
            if std::fs::metadata(&path)?.len() > valid {
                OpenOptions::new().write(true).open(&path)?.set_len(valid)?;
            }
            let t = targets.entry(id).or_default();
            t.pending += recs.len() as u64;
            if let Some(min) = recs.iter().map(|r| r.0).min() {
                t.oldest_ms = Some(t.oldest_ms.map_or(min, |o| o.min(min)));
            }
        }
        let total: u64 = targets.values().map(|t| t.pending).sum();
        if total > 0 {
            info!(
                hints = total,
                owners = targets.len(),
                "pending hints found at start"
            );
        }
        let targets = Arc::new(Mutex::new(targets));
        let (queue, rx) = std::sync::mpsc::sync_channel(MAX_QUEUED_HINTS);
        // Under `sim` there is no writer thread (it would run outside the simulated clock):
        // `store` appends inline, and the queue's receiver is dropped unused.
        #[cfg(feature = "sim")]
        drop(rx);
        #[cfg(not(feature = "sim"))]
        {
            let (d, t) = (dir.clone(), targets.clone());
            std::thread::Builder::new()
                .name("ringkv-hints".into())
                .spawn(move || write_hints(&d, &t, rx))?;
        }
        Ok(Hints {
            dir,
            targets,
            queue,
            max_age: std::sync::OnceLock::new(),
        })
    }

    /// Hints older than `ms` are never delivered: once the tombstone grace has passed, the
    /// tombstone that covers a hinted value may be purged everywhere (cluster::gc), and the
    /// hint would bring the value back (Cassandra's max hint window is below gc_grace for the
    /// same reason). What such a hint carried reached W replicas; anti-entropy repairs the rest.
    pub fn set_max_age(&self, ms: u64, counted_in: Arc<crate::ring::membership::Membership>) {
        let _ = self.max_age.set((ms, counted_in));
    }

    /// Stores a hint for `target` durably (appended and synced before this returns).
    pub async fn store(&self, target: NodeId, entry: Entry) -> Result<(), String> {
        let mut body = Vec::with_capacity(8 + entry.as_bytes().len());
        body.extend_from_slice(&now_ms().to_be_bytes());
        body.extend_from_slice(entry.as_bytes());
        let mut rec = Vec::with_capacity(8 + body.len());
        rec.extend_from_slice(&(body.len() as u32).to_be_bytes());
        rec.extend_from_slice(&crc32fast::hash(&body).to_be_bytes());
        rec.extend_from_slice(&body);
        #[cfg(feature = "sim")]
        return append_for(&self.dir, &self.targets, target, [&rec[..]].into_iter(), 1)
            .map_err(|e| e.to_string());
        #[cfg(not(feature = "sim"))]
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.queue.try_send((target, rec, tx)).map_err(|_| {
                format!("more than {MAX_QUEUED_HINTS} hints are waiting for the disk")
            })?;
            rx.await
                .map_err(|_| "the hint writer stopped".to_string())?
        }
    }

    /// Owners with pending hints and no replay running.
    pub fn waiting(&self) -> Vec<NodeId> {
        lock(&self.targets)
            .iter()
            .filter(|(_, t)| t.pending > 0 && !t.replaying)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn pending(&self) -> Vec<Pending> {
        let now = now_ms();
        let mut v: Vec<Pending> = lock(&self.targets)
            .iter()
            .filter(|(_, t)| t.pending > 0)
            .map(|(id, t)| Pending {
                target: *id,
                count: t.pending,
                oldest_age_ms: t.oldest_ms.map_or(0, |o| now.saturating_sub(o)),
            })
            .collect();
        v.sort_by_key(|p| p.target);
        v
    }

    pub fn total_pending(&self) -> u64 {
        lock(&self.targets).values().map(|t| t.pending).sum()
    }

    /// Takes `target`'s hints for delivery: the log becomes the `.sending` file (new hints go
    /// to a fresh log meanwhile), which is returned, with a previous unfinished one first.
    pub fn begin_replay(&self, target: NodeId) -> std::io::Result<Vec<Entry>> {
        let mut t = lock(&self.targets);
        let (log, sending) = (log_path(&self.dir, target), sending_path(&self.dir, target));
        let mut recs = read_log(&sending)?;
        let fresh = read_log(&log)?;
        if !fresh.is_empty() {
            // Append the log to the sending file, synced, then remove the log.
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&sending)?;
            let mut raw = Vec::new();
            File::open(&log)?.read_to_end(&mut raw)?;
            f.write_all(&raw)?;
            f.sync_data()?;
            std::fs::remove_file(&log)?;
            recs.extend(fresh);
        }
        let cutoff = self
            .max_age
            .get()
            .map_or(0, |(ms, _)| now_ms().saturating_sub(*ms));
        let before = recs.len();
        recs.retain(|(stored, _)| *stored >= cutoff);
        let e = t.entry(target).or_default();
        e.replaying = true;
        e.expired = (before - recs.len()) as u64;
        Ok(recs.into_iter().map(|(_, e)| e).collect())
    }

    /// Ends a replay: on success the delivered hints are deleted.
    pub fn end_replay(&self, target: NodeId, delivered: Option<u64>) {
        let mut t = lock(&self.targets);
        let e = t.entry(target).or_default();
        e.replaying = false;
        let expired = std::mem::take(&mut e.expired);
        if let Some(n) = delivered {
            if let Err(err) = std::fs::remove_file(sending_path(&self.dir, target)) {
                warn!(error = %err, "can't remove a delivered hint log; its hints will be sent again");
                return;
            }
            if expired > 0 {
                warn!(node = %format!("{target:016x}"), hints = expired,
                    "dropped hints older than the tombstone grace (they could bring deleted keys back)");
                if let Some((_, m)) = self.max_age.get() {
                    m.stats
                        .hints_expired
                        .fetch_add(expired, std::sync::atomic::Ordering::Relaxed);
                }
            }
            e.pending = e.pending.saturating_sub(n + expired);
            if e.pending == 0 {
                e.oldest_ms = None;
            }
        }
    }
}

#[cfg(not(feature = "sim"))]
/// The writer thread: takes every queued hint, appends each owner's records to its log, syncs
/// each log once, then acknowledges them all. The targets' lock is held while a log is written,
/// so a replay never takes a log mid-append.
fn write_hints(
    dir: &Path,
    targets: &Mutex<HashMap<NodeId, Target>>,
    rx: std::sync::mpsc::Receiver<Queued>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let mut by_target: HashMap<NodeId, Vec<Queued>> = HashMap::new();
        for q in batch {
            by_target.entry(q.0).or_default().push(q);
        }
        for (target, hints) in by_target {
            let n = hints.len() as u64;
            let r = append_for(dir, targets, target, hints.iter().map(|h| &h.1[..]), n);
            for (_, _, tx) in hints {
                let _ = tx.send(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            }
        }
    }
}

/// Appends `n` records to `target`'s log, synced, and counts them pending.
fn append_for<'a>(
    dir: &Path,
    targets: &Mutex<HashMap<NodeId, Target>>,
    target: NodeId,
    recs: impl Iterator<Item = &'a [u8]>,
    n: u64,
) -> std::io::Result<()> {
    let mut t = lock(targets);
    let r = append_synced(&log_path(dir, target), recs);
    if r.is_ok() {
        let e = t.entry(target).or_default();
        e.pending += n;
        e.oldest_ms.get_or_insert(now_ms());
    }
    r
}

fn append_synced<'a>(path: &Path, recs: impl Iterator<Item = &'a [u8]>) -> std::io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    for r in recs {
        f.write_all(r)?;
    }
    f.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Shard, Supersede, VersionPolicy, VersionRef};
    use ringkv_proto::key_hash;

    fn entry(key: &str, v: &str) -> Entry {
        let mut s = Shard::with_policy(VersionPolicy::default());
        let mut seen = None;
        s.write(
            key_hash(key.as_bytes()),
            key.as_bytes(),
            Supersede::Local,
            VersionRef::value(v.as_bytes(), 1, None),
            |e| seen = Some(e.clone()),
        )
        .expect("write");
        seen.expect("seen")
    }

    fn keys(v: &[Entry]) -> Vec<Vec<u8>> {
        let mut k: Vec<Vec<u8>> = v.iter().map(|e| e.key().to_vec()).collect();
        k.sort();
        k
    }

    /// A torn tail (a crash mid-append) is cut at open, so hints appended after it are not
    /// hidden behind it; a failed replay keeps every hint, hints stored during a replay
    /// survive its success, and a restart in the middle of a replay loses nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn torn_tails_failed_replays_and_appends_during_replay_lose_no_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hdir = dir.path().join("hints");
        let owner: NodeId = 7;
        let h = Hints::open(hdir.clone()).expect("open");
        h.store(owner, entry("a", "1")).await.expect("store a");
        drop(h);
        // A crash while appending: half a record at the end of the log.
        let mut f = OpenOptions::new()
            .append(true)
            .open(log_path(&hdir, owner))
            .expect("log");
        f.write_all(&[0, 0, 0, 40, 1, 2, 3]).expect("torn tail");
        drop(f);
        let h = Hints::open(hdir.clone()).expect("reopen");
        assert_eq!(h.total_pending(), 1);
        h.store(owner, entry("b", "2")).await.expect("store b");
        let first = h.begin_replay(owner).expect("replay");
        assert_eq!(keys(&first), vec![b"a".to_vec(), b"b".to_vec()]);
        // The owner did not acknowledge them all: nothing is deleted.
        h.end_replay(owner, None);
        assert_eq!(h.total_pending(), 2);
        let again = h.begin_replay(owner).expect("replay again");
        assert_eq!(keys(&again), keys(&first));
        h.store(owner, entry("c", "3"))
            .await
            .expect("store during replay");
        h.end_replay(owner, Some(again.len() as u64));
        assert_eq!(h.total_pending(), 1, "the hint stored during the replay");
        // A restart during the next replay: the hints being sent are still there.
        let sending = h.begin_replay(owner).expect("replay c");
        assert_eq!(keys(&sending), vec![b"c".to_vec()]);
        drop(h);
        let h = Hints::open(hdir).expect("restart");
        assert_eq!(h.total_pending(), 1);
        assert_eq!(
            keys(&h.begin_replay(owner).expect("after restart")),
            vec![b"c".to_vec()]
        );
    }
}
