//! The actor of the dots this node mints, and when a start must take a new one.
//!
//! A version vector covers every counter of an actor up to its entry. So an actor must never
//! mint a dot for a key while a peer holds a version of that actor which this node has
//! forgotten: the new dot would cover it, and at the next sync that version would vanish, and
//! with it every version it superseded, though nothing descending from them survives (Riak's
//! "kv679"; issue 13's ten-minute fault run lost an acknowledged write this way). Two rules
//! keep it from happening:
//! - Nothing leaves a node before it is durable there as `--fsync` requires (client replies,
//!   REPLICATE, FETCH answers, read repair, anti-entropy: `cluster::wait_durable`). A process
//!   crash then loses no version a peer may hold: with `always` it was synced, otherwise it
//!   was written to the OS, which keeps it when the process dies.
//! - A start decides here whether the previous run's actor is still safe. It is unless the
//!   OS itself may have dropped written data the previous run had shipped: the previous run
//!   did not stop cleanly, did not sync before shipping (`batch`, `never`), and the machine
//!   rebooted since (or the boot can't be told). Then, and when the previous run kept no log
//!   (`--fsync off`) or nothing says what it was, this run takes a fresh random actor: its dots
//!   cover nothing of the old one. A context grows by one entry per fresh actor that later
//!   coordinates the key, so the rule keeps fresh actors to machine crashes.
//!
//! The state is the file `actor` in the data directory, written atomically before the node
//! serves (`clean = 0`) and again after a clean shutdown synced every shard (`clean = 1`).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::config::FsyncPolicy;
use crate::disk::{write_atomic, Fs};

/// The file, in the data directory.
pub const ACTOR_FILE: &str = "actor";

/// What the previous run left in [`ACTOR_FILE`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub actor: u64,
    pub fsync: FsyncPolicy,
    /// The machine's boot id while it ran (None: unknown).
    pub boot: Option<String>,
    /// It stopped after syncing every shard.
    pub clean: bool,
}

/// Why this run has the actor it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Kept: the previous run stopped cleanly.
    Clean,
    /// Kept: the previous run synced everything before it left the node (`--fsync always`).
    Synced,
    /// Kept: the previous run crashed, but the machine did not reboot, so the OS kept every
    /// record it wrote.
    SameBoot,
    /// Fresh: the data directory has no actor file (new, or from a version without one).
    First,
    /// Fresh: the previous run kept no log, or this one keeps none (`--fsync off`).
    NoLog,
    /// Fresh: the previous run crashed without syncing and the machine may have rebooted
    /// since: records it shipped may be gone here.
    Reboot,
    /// Fresh: `--repair` may drop damaged records, which may have been shipped.
    Repair,
    /// Fresh: the actor file is damaged, or was removed after a failed fsync.
    Unreadable,
}

impl Why {
    pub fn kept(self) -> bool {
        match self {
            Why::Clean | Why::Synced | Why::SameBoot => true,
            Why::First | Why::NoLog | Why::Reboot | Why::Repair | Why::Unreadable => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Why::Clean => "kept: clean stop",
            Why::Synced => "kept: the previous run synced before sending (--fsync always)",
            Why::SameBoot => "kept: process crash, same boot",
            Why::First => "new: first start with this data directory's format",
            Why::NoLog => "new: --fsync off keeps no log",
            Why::Reboot => "new: unclean stop and a reboot since (unsynced records may be lost)",
            Why::Repair => "new: --repair may drop records",
            Why::Unreadable => "new: the actor file is damaged",
        }
    }
}

/// How a run starts, as far as its dot actor is concerned.
#[derive(Debug, Clone, Copy)]
pub struct Start<'a> {
    pub fsync: FsyncPolicy,
    /// The machine's boot id now (None: unknown).
    pub boot: Option<&'a str>,
    /// `--repair`: recovery may drop damaged records.
    pub repair: bool,
}

/// The rule of the module doc: whether `prev`'s actor may be kept by this start.
pub fn decide(prev: Option<&Previous>, now: Start<'_>) -> Why {
    let Some(prev) = prev else { return Why::First };
    if now.fsync == FsyncPolicy::Off || prev.fsync == FsyncPolicy::Off {
        return Why::NoLog;
    }
    if now.repair {
        return Why::Repair;
    }
    if prev.clean {
        return Why::Clean;
    }
    if prev.fsync == FsyncPolicy::Always {
        return Why::Synced;
    }
    match (prev.boot.as_deref(), now.boot) {
        (Some(a), Some(b)) if a == b => Why::SameBoot,
        _ => Why::Reboot,
    }
}

/// This machine's boot id (Linux), which changes at every boot; None elsewhere.
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty() && id.len() <= 64).then(|| id.to_string())
}

/// The actor file of a data directory, for one run.
pub struct ActorFile {
    path: PathBuf,
    state: Previous,
}

impl ActorFile {
    /// Reads what the previous run left, chooses this run's actor (`fresh` if it may not keep
    /// the old one), and records it, unclean, before anything is minted.
    pub fn start(
        fs: &dyn Fs,
        dir: &Path,
        now: Start<'_>,
        fresh: u64,
    ) -> std::io::Result<(ActorFile, Why)> {
        let path = dir.join(ACTOR_FILE);
        let (prev, why) = match fs.read(&path) {
            Ok(bytes) => match std::str::from_utf8(&bytes).ok().and_then(parse) {
                Some(p) => {
                    let why = decide(Some(&p), now);
                    (Some(p), why)
                }
                None => (None, Why::Unreadable),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, Why::First),
            Err(e) => return Err(e),
        };
        let (actor, fsync) = match (&prev, why) {
            // Records of the crashed run may still be unsynced: until a clean stop, the file
            // must keep saying so, whatever this run's policy.
            (Some(p), Why::SameBoot) => (p.actor, p.fsync),
            (Some(p), Why::Clean | Why::Synced) => (p.actor, now.fsync),
            _ => (fresh, now.fsync),
        };
        let file = ActorFile {
            path,
            state: Previous {
                actor,
                fsync,
                boot: now.boot.map(str::to_string),
                clean: false,
            },
        };
        write_atomic(fs, &file.path, file.render().as_bytes())?;
        info!(actor = %format!("{actor:016x}"), "dot actor {}", why.as_str());
        Ok((file, why))
    }

    pub fn actor(&self) -> u64 {
        self.state.actor
    }

    /// After a shutdown that synced every shard: the next start may keep the actor.
    pub fn mark_clean(mut self, fs: &dyn Fs) -> std::io::Result<()> {
        self.state.clean = true;
        write_atomic(fs, &self.path, self.render().as_bytes())
    }

    fn render(&self) -> String {
        let s = &self.state;
        format!(
            "# ringkv: the actor of this node's dots; do not edit\nactor = {}\nfsync = {}\n\
             boot = {}\nclean = {}\n",
            s.actor,
            s.fsync.name(),
            s.boot.as_deref().unwrap_or("unknown"),
            u8::from(s.clean)
        )
    }
}

/// After a failed fsync the OS may have dropped records this run wrote, and perhaps shipped,
/// without any reboot: the next start must take a fresh actor. Best effort (the disk is
/// failing): the file is removed, and a missing file means a fresh actor.
pub fn forget(fs: &dyn Fs, dir: &Path) {
    let path = dir.join(ACTOR_FILE);
    let removed = match fs.remove(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.and_then(|()| fs.sync_dir(dir)),
    };
    match removed {
        Ok(()) => warn!("a WAL fsync failed: the next start takes a new dot actor"),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "a WAL fsync failed and the actor file can't be removed: remove it before the next start")
        }
    }
}

/// The file's contents; None if any line is missing or malformed.
fn parse(text: &str) -> Option<Previous> {
    let (mut actor, mut fsync, mut boot, mut clean) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=')?;
        let v = v.trim();
        match k.trim() {
            "actor" => actor = v.parse::<u64>().ok().filter(|&a| a != 0),
            "fsync" => fsync = <FsyncPolicy as clap::ValueEnum>::from_str(v, false).ok(),
            "boot" => boot = Some((v != "unknown").then(|| v.to_string())),
            "clean" => clean = matches!(v, "0" | "1").then_some(v == "1"),
            _ => return None,
        }
    }
    Some(Previous {
        actor: actor?,
        fsync: fsync?,
        boot: boot?,
        clean: clean?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::RealFs;

    fn prev(fsync: FsyncPolicy, boot: Option<&str>, clean: bool) -> Previous {
        Previous {
            actor: 7,
            fsync,
            boot: boot.map(str::to_string),
            clean,
        }
    }

    fn start_in(d: &Path, policy: FsyncPolicy, boot: &str, fresh: u64) -> (ActorFile, Why) {
        ActorFile::start(&RealFs, d, at(policy, Some(boot)), fresh).unwrap()
    }

    fn at(fsync: FsyncPolicy, boot: Option<&str>) -> Start<'_> {
        Start {
            fsync,
            boot,
            repair: false,
        }
    }

    #[test]
    fn the_actor_changes_only_when_shipped_records_may_be_lost() {
        use FsyncPolicy::*;
        let (a, b) = (Some("boot-a"), Some("boot-b"));
        let cases = [
            (None, at(Batch, a), Why::First),
            (Some(prev(Batch, a, true)), at(Batch, b), Why::Clean),
            (Some(prev(Always, a, false)), at(Batch, b), Why::Synced),
            (Some(prev(Batch, a, false)), at(Batch, a), Why::SameBoot),
            (Some(prev(Never, a, false)), at(Always, a), Why::SameBoot),
            (Some(prev(Batch, a, false)), at(Batch, b), Why::Reboot),
            (Some(prev(Batch, None, false)), at(Batch, None), Why::Reboot),
            (Some(prev(Batch, a, false)), at(Batch, None), Why::Reboot),
            (Some(prev(Off, a, true)), at(Batch, a), Why::NoLog),
            (Some(prev(Batch, a, true)), at(Off, a), Why::NoLog),
        ];
        for (p, now, want) in cases {
            assert_eq!(decide(p.as_ref(), now), want, "{p:?} {now:?}");
        }
        let repair = Start {
            repair: true,
            ..at(Always, a)
        };
        assert_eq!(decide(Some(&prev(Always, a, true)), repair), Why::Repair);
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (fs, d) = (RealFs, dir.path());
        let start = |policy, boot, fresh| start_in(d, policy, boot, fresh);
        let (f, why) = start(FsyncPolicy::Batch, "b1", 11);
        assert_eq!((f.actor(), why), (11, Why::First));
        // A crash (no clean mark), same boot: kept.
        let (f, why) = start(FsyncPolicy::Batch, "b1", 12);
        assert_eq!((f.actor(), why), (11, Why::SameBoot));
        // A crash, then a reboot: fresh.
        let (f, why) = start(FsyncPolicy::Batch, "b2", 13);
        assert_eq!((f.actor(), why), (13, Why::Reboot));
        // A clean stop, then a reboot: kept.
        f.mark_clean(&fs).unwrap();
        let (f, why) = start(FsyncPolicy::Batch, "b3", 14);
        assert_eq!((f.actor(), why), (13, Why::Clean));
        drop(f);
        let path = d.join(ACTOR_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse(&text), Some(prev_with(13, "b3")));
        for bad in [
            text.replace("actor = 13", "actor = 0"),
            text.replace("fsync = batch", "fsync = sometimes"),
            text.replace("clean = 0", "clean = yes"),
            text.replace("boot = b3\n", ""),
            format!("{text}extra = 1\n"),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
        std::fs::write(&path, "actor = 13\n").unwrap();
        let (f, why) = start(FsyncPolicy::Batch, "b3", 15);
        assert_eq!((f.actor(), why), (15, Why::Unreadable));
        drop(f);
        // A failed fsync forgets the actor.
        forget(&fs, d);
        let (f, why) = start(FsyncPolicy::Batch, "b3", 16);
        assert_eq!((f.actor(), why), (16, Why::First));
        drop(f);
    }

    /// A batch run crashed; a same-boot restart under `always` keeps the actor but must not
    /// record `always`: the crashed run's records may still be unsynced when it crashes too.
    #[test]
    fn a_kept_actor_keeps_the_weaker_policy_until_a_clean_stop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let start = |policy, boot, fresh| start_in(d, policy, boot, fresh);
        drop(start(FsyncPolicy::Batch, "b1", 21));
        let (f, why) = start(FsyncPolicy::Always, "b1", 22);
        assert_eq!((f.actor(), why), (21, Why::SameBoot));
        drop(f);
        let (f, why) = start(FsyncPolicy::Always, "b2", 23);
        assert_eq!((f.actor(), why), (23, Why::Reboot));
        // Now a run under `always` from the start: its crash keeps the actor across a reboot.
        drop(f);
        let (f, why) = start(FsyncPolicy::Always, "b3", 24);
        assert_eq!((f.actor(), why), (23, Why::Synced));
        drop(f);
    }

    fn prev_with(actor: u64, boot: &str) -> Previous {
        Previous {
            actor,
            fsync: FsyncPolicy::Batch,
            boot: Some(boot.into()),
            clean: false,
        }
    }
}
