//! Durability of a node: recovery at start, one WAL writer per shard, snapshots (automatic,
//! on BGSAVE, at shutdown), and the gate that holds a reply until its write is safe ([`Gate`]).

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::config::{Config, FsyncPolicy};
use crate::disk::Fs;
use crate::snapshot;
use crate::store::Store;
use crate::util::{lock, now_ms};
use crate::wal::replay::{recover, Recovered, RecoveryError};
use crate::wal::resolve::{resolve, ResolveError};
use crate::wal::writer::{self, Msg, ShardLog, WriterConfig};
use crate::wal::{parse_segment_name, shard_dir};

pub use crate::store::{add_mark, Marks};

#[derive(Default)]
pub struct PersistStats {
    pub recovery_ms: AtomicU64,
    pub recovered_keys: AtomicU64,
    pub recovered_records: AtomicU64,
    pub last_snapshot_unix_ms: AtomicU64,
    pub last_snapshot_ms: AtomicU64,
    pub last_snapshot_ok: AtomicBool,
    pub snapshots: AtomicU64,
    pub snapshot_running: AtomicBool,
    pub fsyncs_per_sec: AtomicU64,
}

enum Job {
    All,
    Stop,
}

pub struct Durability {
    pub policy: FsyncPolicy,
    pub interval: Duration,
    pub logs: Vec<Arc<ShardLog>>,
    pub stats: Arc<PersistStats>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    jobs: Mutex<Option<Sender<Job>>>,
    scheduler: Mutex<Option<JoinHandle<()>>>,
    ctx: Arc<SnapCtx>,
    wcfg: Option<Arc<WriterConfig>>,
}

struct SnapCtx {
    fs: Arc<dyn Fs>,
    store: Arc<Store>,
    data_dir: PathBuf,
    logs: Vec<Arc<ShardLog>>,
    stats: Arc<PersistStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("shard {shard}: {source}")]
    Recovery { shard: usize, source: RecoveryError },
    #[error("{0}")]
    Txn(#[from] ResolveError),
    #[error(
        "shard {shard}: writing the snapshot that keeps completed multi-shard writes: {source}"
    )]
    TxnSnapshot {
        shard: usize,
        source: snapshot::SnapshotError,
    },
    #[error("can't start the WAL writer of shard {shard}: {source}")]
    Writer {
        shard: usize,
        source: std::io::Error,
    },
}

impl Durability {
    /// Recovers every shard (in parallel, with a progress line each second), then starts the
    /// writers and the snapshot scheduler. With `--fsync off` there is nothing to recover.
    pub fn start(
        cfg: &Config,
        store: Arc<Store>,
        fs: Arc<dyn Fs>,
    ) -> Result<Durability, StartError> {
        let stats = Arc::new(PersistStats::default());
        let n = store.len();
        let mut logs = Vec::new();
        let mut writers = Vec::new();
        let mut writer_cfg = None;
        let mut repaired = Vec::new();
        if cfg.fsync != FsyncPolicy::Off {
            let t = Instant::now();
            let mut recovered = recover_all(cfg, &store, fs.as_ref())?;
            complete_txns(cfg, &store, fs.as_ref(), &mut recovered)?;
            let ms = t.elapsed().as_millis() as u64;
            let keys: usize = (0..n).map(|i| store.lock(i).len()).sum();
            let records: u64 = recovered.iter().map(|r| r.records).sum();
            let dropped: usize = recovered.iter().map(|r| r.dropped).sum();
            stats.recovery_ms.store(ms, Relaxed);
            stats.recovered_keys.store(keys as u64, Relaxed);
            stats.recovered_records.store(records, Relaxed);
            info!(
                keys,
                wal_records = records,
                snapshot_entries = recovered.iter().map(|r| r.snapshot_entries).sum::<u64>(),
                ms,
                "recovery done"
            );
            if dropped > 0 {
                warn!(
                    dropped,
                    "--repair dropped {dropped} WAL records that could not be read"
                );
            }
            let wcfg = Arc::new(WriterConfig {
                data_dir: cfg.data_dir.clone(),
                policy: cfg.fsync,
                interval: Duration::from_millis(cfg.fsync_interval_ms),
                segment_bytes: cfg.wal_segment_bytes,
                failing: Default::default(),
            });
            writer_cfg = Some(wcfg.clone());
            for (i, r) in recovered.iter().enumerate() {
                if r.repaired {
                    repaired.push(i);
                }
                store.lock(i).start_logging(r.last_seq);
                let (log, h) = writer::start(
                    i,
                    r.last_seq,
                    r.snapshot_seq,
                    r.wal_bytes,
                    store.clone(),
                    fs.clone(),
                    wcfg.clone(),
                )
                .map_err(|source| StartError::Writer { shard: i, source })?;
                logs.push(log);
                writers.push(h);
            }
        }
        let ctx = Arc::new(SnapCtx {
            fs,
            store,
            data_dir: cfg.data_dir.clone(),
            logs: logs.clone(),
            stats: stats.clone(),
        });
        // What --repair kept lives only in memory and in files recovery no longer reads (the
        // readable start of a segment moved aside): a snapshot makes it durable before any
        // client sees it, so a crash after the repair neither loses it nor finds a gap.
        for &i in &repaired {
            if snapshot_shard(&ctx, i) {
                info!(shard = i, "snapshot of the repaired shard written");
            } else {
                warn!(
                    shard = i,
                    "could not snapshot the repaired shard: a crash before the next snapshot \
                     needs --repair again"
                );
            }
        }
        let (jobs, scheduler) = if cfg.fsync != FsyncPolicy::Off {
            let (tx, rx) = std::sync::mpsc::channel();
            let c = ctx.clone();
            let every = Duration::from_secs(cfg.snapshot_interval_secs);
            let wal_bytes = cfg.snapshot_wal_bytes;
            let h = std::thread::Builder::new()
                .name("ringkv-snapshots".into())
                .spawn(move || schedule(c, rx, every, wal_bytes))
                .ok();
            (Some(tx), h)
        } else {
            (None, None)
        };
        Ok(Durability {
            policy: cfg.fsync,
            interval: Duration::from_millis(cfg.fsync_interval_ms),
            logs,
            stats,
            writers: Mutex::new(writers),
            jobs: Mutex::new(jobs),
            scheduler: Mutex::new(scheduler),
            ctx,
            wcfg: writer_cfg,
        })
    }

    pub fn enabled(&self) -> bool {
        !self.logs.is_empty()
    }

    /// The last record of `shard` that a crash can't lose, under the fsync policy (synced
    /// with `always`, written to the OS otherwise); everything when there is no WAL.
    pub fn durable_seq(&self, shard: usize) -> u64 {
        match self.logs.get(shard) {
            None => u64::MAX,
            Some(log) => {
                let d = log.state.borrow();
                if self.policy == FsyncPolicy::Always {
                    d.synced
                } else {
                    d.written
                }
            }
        }
    }

    /// Why writes are refused, if some shard's disk currently refuses them. Cheap when all is
    /// well (one atomic load), as it runs before every write command.
    pub fn failing(&self) -> Option<Arc<str>> {
        let n = self.wcfg.as_ref()?.failing.load(Relaxed);
        if n == 0 {
            return None;
        }
        self.logs
            .iter()
            .find_map(|l| l.state.borrow().error.clone())
    }

    /// Starts snapshots of every shard in the background; false if one is already running.
    pub fn bgsave(&self) -> bool {
        if self.stats.snapshot_running.load(Relaxed) {
            return false;
        }
        match &*lock(&self.jobs) {
            Some(tx) => tx.send(Job::All).is_ok(),
            None => false,
        }
    }

    /// Graceful shutdown: snapshot every shard (in parallel), write and sync the WAL, stop
    /// the threads. True if every record this run logged is synced (never with `--fsync
    /// off`, which keeps none): the next start may keep the dot actor (`crate::actor`).
    pub fn shutdown(&self) -> bool {
        if let Some(tx) = lock(&self.jobs).take() {
            let _ = tx.send(Job::Stop);
        }
        if let Some(h) = lock(&self.scheduler).take() {
            let _ = h.join();
        }
        if self.enabled() {
            info!("writing snapshots before exit");
            std::thread::scope(|s| {
                for i in 0..self.logs.len() {
                    let c = &self.ctx;
                    s.spawn(move || snapshot_shard(c, i));
                }
            });
        }
        for l in &self.logs {
            l.send(Msg::Stop);
        }
        for h in lock(&self.writers).drain(..) {
            let _ = h.join();
        }
        self.enabled()
            && self.logs.iter().enumerate().all(|(i, l)| {
                let d = l.state.borrow();
                d.error.is_none() && d.synced >= self.ctx.store.lock(i).wal.seq
            })
    }
}

/// The reply gate: holds a reply until the WAL records it made or shows are durable as
/// `--fsync` requires (fsynced for `always`, written to the OS otherwise), or fails with the
/// disk's error. Connections check it per request without waiting ([`Gate::poll`]) and wait
/// for [`Gate::changed`] only while some reply is pending; the tests of the storage layer
/// wait through [`Gate::wait`].
///
/// One per event loop (it is not `Sync`): it mirrors each shard's published durable state,
/// with one [`Gate::follow`] task per shard on the loop, and wakes the loop's waiting
/// connections locally, so a WAL round costs one cross-thread wake per loop rather than one
/// per connection. Whoever waits must first wake the writers (`ShardLog::kick`); the loop does
/// it at the end of its tick, so that one round covers every connection served in it.
pub struct Gate {
    policy: FsyncPolicy,
    seen: RefCell<Vec<writer::Durable>>,
    changed: Notify,
}

impl Gate {
    pub fn new(d: &Durability) -> Gate {
        Gate {
            policy: d.policy,
            seen: RefCell::new(d.logs.iter().map(|l| l.state.borrow().clone()).collect()),
            changed: Notify::new(),
        }
    }

    /// Resolves once every mark is durable (or with the disk's error).
    pub async fn wait(&self, marks: &[(u32, u64)]) -> Result<(), Arc<str>> {
        loop {
            let changed = self.changed();
            if let Some(done) = self.poll(marks) {
                return done;
            }
            changed.await;
        }
    }

    /// Whether every mark is durable now, without waiting: Some(Ok) if so, Some(Err) with the
    /// disk's error if one failed, None while some are pending. No allocation, no syscall:
    /// a reply whose marks are already durable costs this check only.
    pub fn poll(&self, marks: &[(u32, u64)]) -> Option<Result<(), Arc<str>>> {
        let seen = self.seen.borrow();
        let mut pending = false;
        for &(shard, seq) in marks {
            match seen.get(shard as usize).and_then(|st| self.check(st, seq)) {
                Some(Ok(())) => {}
                Some(Err(e)) => return Some(Err(e)),
                None => pending = true,
            }
        }
        (!pending).then_some(Ok(()))
    }

    /// Completes at the next change of any shard's durable state. Create it before calling
    /// [`Gate::poll`], so that a change between the two is not missed.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Whether `seq` is safe in state `d` as the policy requires: Some(Ok) if it is,
    /// Some(Err) if the disk failed while writing or syncing it, None while still pending.
    /// A write taken after the failed attempt is not failed by it: the writer's retry covers
    /// it (and a write admitted just as the disk came back must not see the stale error).
    fn check(&self, d: &writer::Durable, seq: u64) -> Option<Result<(), Arc<str>>> {
        let upto = if self.policy == FsyncPolicy::Always {
            d.synced
        } else {
            d.written
        };
        if upto >= seq {
            return Some(Ok(()));
        }
        match &d.error {
            Some(e) if seq <= d.failed_upto => Some(Err(e.clone())),
            _ => None,
        }
    }

    /// Mirrors shard `shard`'s durable state (from `log`) into the gate and wakes its waiters,
    /// until the writer stops; then releases every waiter on that shard with an error.
    pub async fn follow(&self, log: &ShardLog, shard: usize) {
        let mut rx = log.state.subscribe();
        loop {
            let d = rx.borrow_and_update().clone();
            if let Some(st) = self.seen.borrow_mut().get_mut(shard) {
                *st = d;
            }
            self.changed.notify_waiters();
            if rx.changed().await.is_err() {
                break;
            }
        }
        if let Some(st) = self.seen.borrow_mut().get_mut(shard) {
            st.error = Some("the WAL writer stopped".into());
            st.failed_upto = u64::MAX;
        }
        self.changed.notify_waiters();
    }
}

/// Completes the multi-shard writes some shard lost (see [`resolve`]) and snapshots each
/// shard so changed, before its writer starts: its log then goes on after the sequence
/// numbers it lost, and the snapshot is what makes the skipped numbers no gap. Nothing is
/// deleted, so a crash in the middle finds every copy again at the next start.
fn complete_txns(
    cfg: &Config,
    store: &Store,
    fs: &dyn Fs,
    recovered: &mut [Recovered],
) -> Result<(), StartError> {
    let changed = resolve(store, recovered)?;
    for shard in changed {
        let seq = recovered[shard].last_seq;
        let dir = shard_dir(&cfg.data_dir, shard);
        snapshot::write(fs, store, shard, seq, &dir)
            .map_err(|source| StartError::TxnSnapshot { shard, source })?;
        recovered[shard].snapshot_seq = seq;
    }
    Ok(())
}

fn recover_all(cfg: &Config, store: &Store, fs: &dyn Fs) -> Result<Vec<Recovered>, StartError> {
    let n = store.len();
    // Total bytes to read, for the progress line.
    let mut total = 0u64;
    for i in 0..n {
        let dir = shard_dir(&cfg.data_dir, i);
        if let Ok(names) = std::fs::read_dir(&dir) {
            for e in names.flatten() {
                total += e.metadata().map_or(0, |m| m.len());
            }
        }
    }
    let done = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let results: Vec<Result<Recovered, StartError>> = std::thread::scope(|s| {
        let reporter = s.spawn(|| {
            let t = Instant::now();
            while !finished.load(Relaxed) {
                std::thread::park_timeout(Duration::from_secs(1));
                if finished.load(Relaxed) {
                    break;
                }
                let d = done.load(Relaxed);
                info!(
                    "recovering: {:.1} of {:.1} MiB ({:.0}%), {:.0}s",
                    d as f64 / 1048576.0,
                    total as f64 / 1048576.0,
                    if total > 0 {
                        d as f64 * 100.0 / total as f64
                    } else {
                        100.0
                    },
                    t.elapsed().as_secs_f64()
                );
            }
        });
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let done = &done;
                s.spawn(move || {
                    let mut shard = store.lock(i);
                    recover(fs, &cfg.data_dir, i, &mut shard, cfg.repair, &|b| {
                        done.fetch_add(b, Relaxed);
                    })
                    .map_err(|source| StartError::Recovery { shard: i, source })
                })
            })
            .collect();
        let r = handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(StartError::Writer {
                        shard: usize::MAX,
                        source: std::io::Error::other("recovery thread panicked"),
                    })
                })
            })
            .collect();
        finished.store(true, Relaxed);
        reporter.thread().unpark();
        let _ = reporter.join();
        r
    });
    results.into_iter().collect()
}

/// Takes one shard's snapshot: rotate the WAL (the snapshot covers everything before the new
/// segment), copy the shard in slices, make it durable, then delete what it supersedes.
fn snapshot_shard(c: &SnapCtx, shard: usize) -> bool {
    // Nothing logged since the newest snapshot: it is still exact.
    if c.store.lock(shard).wal.seq == c.logs[shard].stats.snapshot_seq.load(Relaxed) {
        return true;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    if !c.logs[shard].send(Msg::Rotate(tx)) {
        return false;
    }
    let seq = match rx.recv() {
        Ok(Ok(seq)) => seq,
        Ok(Err(e)) => {
            warn!(shard, error = %e, "snapshot skipped: the WAL could not rotate");
            return false;
        }
        Err(_) => return false,
    };
    c.logs[shard].stats.since_snapshot.store(0, Relaxed);
    let dir = shard_dir(&c.data_dir, shard);
    let before = c.logs[shard].stats.snapshot_seq.load(Relaxed);
    let settle = || settle_txns(c, shard, before);
    match snapshot::write_settled(c.fs.as_ref(), &c.store, shard, seq, &dir, &settle) {
        Ok(w) => {
            info!(
                shard,
                seq,
                entries = w.entries,
                bytes = w.bytes,
                ms = w.millis,
                "snapshot written"
            );
            c.logs[shard].stats.snapshot_seq.store(seq, Relaxed);
            // Only now that the snapshot is durable: remove older snapshots and segments.
            if let Ok(names) = c.fs.list(&dir) {
                let mut freed = 0u64;
                for n in names {
                    let old_snap = snapshot::parse_snapshot_name(&n).is_some_and(|s| s < seq);
                    let old_seg = parse_segment_name(&n).is_some_and(|first| first <= seq);
                    if old_snap || old_seg {
                        let p = dir.join(&n);
                        if old_seg {
                            freed += std::fs::metadata(&p).map_or(0, |m| m.len());
                        }
                        let _ = c.fs.remove(&p);
                    }
                }
                let _ = c.fs.sync_dir(&dir);
                let stats = &c.logs[shard].stats;
                let cur = stats.wal_bytes.load(Relaxed);
                stats.wal_bytes.store(cur.saturating_sub(freed), Relaxed);
            }
            true
        }
        Err(e) => {
            error!(shard, error = %e, "snapshot failed (the WAL still has everything)");
            false
        }
    }
}

/// Before a snapshot of `shard` is kept: if a multi-shard write reached the shard since its
/// previous snapshot (`before`), every WAL is synced, so that every participant's TXN copy
/// is durable. The snapshot may then hold such a write (its copy ends up not in this shard's
/// WAL, which the snapshot lets go, nor only in this unsynced tail), and its removing the
/// older segments can't take away the last copy another participant would need.
fn settle_txns(c: &SnapCtx, shard: usize, before: u64) -> Result<(), String> {
    if c.store.lock(shard).wal.txn_seq <= before {
        return Ok(());
    }
    let waits: Vec<_> = c
        .logs
        .iter()
        .map(|l| {
            let (tx, rx) = std::sync::mpsc::channel();
            l.send(Msg::Sync(tx)).then_some(rx)
        })
        .collect();
    for (i, rx) in waits.into_iter().enumerate() {
        match rx.map(|rx| rx.recv()) {
            Some(Ok(Ok(_))) => {}
            Some(Ok(Err(e))) => return Err(format!("shard {i}: {e}")),
            None | Some(Err(_)) => return Err(format!("shard {i}: the WAL writer stopped")),
        }
    }
    Ok(())
}

fn snapshot_all(c: &SnapCtx) {
    c.stats.snapshot_running.store(true, Relaxed);
    let t = Instant::now();
    let mut ok = true;
    for i in 0..c.logs.len() {
        ok &= snapshot_shard(c, i);
    }
    finish(c, ok, t);
}

fn finish(c: &SnapCtx, ok: bool, t: Instant) {
    c.stats.last_snapshot_ok.store(ok, Relaxed);
    if ok {
        c.stats.last_snapshot_unix_ms.store(now_ms(), Relaxed);
    }
    c.stats
        .last_snapshot_ms
        .store(t.elapsed().as_millis() as u64, Relaxed);
    c.stats.snapshots.fetch_add(1, Relaxed);
    c.stats.snapshot_running.store(false, Relaxed);
}

/// Every second: fsync rate for INFO, and a snapshot of any shard whose WAL grew past the
/// threshold or whose last snapshot is older than the interval (if it changed since).
fn schedule(c: Arc<SnapCtx>, rx: Receiver<Job>, every: Duration, wal_bytes: u64) {
    let mut last = vec![Instant::now(); c.logs.len()];
    let mut fsyncs_before: u64 = c.logs.iter().map(|l| l.stats.fsyncs.load(Relaxed)).sum();
    let mut tick = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Job::All) => {
                snapshot_all(&c);
                last.iter_mut().for_each(|l| *l = Instant::now());
            }
            Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let fsyncs: u64 = c.logs.iter().map(|l| l.stats.fsyncs.load(Relaxed)).sum();
        let secs = tick.elapsed().as_secs_f64().max(0.001);
        c.stats
            .fsyncs_per_sec
            .store(((fsyncs - fsyncs_before) as f64 / secs) as u64, Relaxed);
        fsyncs_before = fsyncs;
        tick = Instant::now();
        for (i, last) in last.iter_mut().enumerate() {
            let grown = c.logs[i].stats.since_snapshot.load(Relaxed);
            let due = (wal_bytes > 0 && grown >= wal_bytes)
                || (!every.is_zero() && grown > 0 && last.elapsed() >= every);
            if due {
                c.stats.snapshot_running.store(true, Relaxed);
                let t = Instant::now();
                let ok = snapshot_shard(&c, i);
                finish(&c, ok, t);
                *last = Instant::now();
            }
        }
    }
}
