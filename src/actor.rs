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
}

impl Why {
    pub fn kept(self) -> bool {
        match self {
            Why::Clean | Why::Synced | Why::SameBoot => true,
            Why::First | Why::NoLog | Why::Reboot => false,
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
        }
    }
}

/// The rule of the module doc: whether `prev`'s actor may be kept by a run with `fsync`, on a
/// machine whose boot id is `boot`.
pub fn decide(prev: Option<&Previous>, fsync: FsyncPolicy, boot: Option<&str>) -> Why {
    let Some(prev) = prev else { return Why::First };
    if fsync == FsyncPolicy::Off || prev.fsync == FsyncPolicy::Off {
        return Why::NoLog;
    }
    if prev.clean {
        return Why::Clean;
    }
    if prev.fsync == FsyncPolicy::Always {
        return Why::Synced;
    }
    match (prev.boot.as_deref(), boot) {
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
        fsync: FsyncPolicy,
        boot: Option<String>,
        fresh: u64,
    ) -> std::io::Result<(ActorFile, Why)> {
        let path = dir.join(ACTOR_FILE);
        let prev = match fs.read(&path) {
            Ok(bytes) => {
                let parsed = std::str::from_utf8(&bytes).ok().and_then(parse);
                if parsed.is_none() {
                    warn!(path = %path.display(), "the actor file is unreadable; taking a new actor");
                }
                parsed
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let why = decide(prev.as_ref(), fsync, boot.as_deref());
        let actor = match (&prev, why.kept()) {
            (Some(p), true) => p.actor,
            _ => fresh,
        };
        let file = ActorFile {
            path,
            state: Previous {
                actor,
                fsync,
                boot,
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
            "fsync" => {
                fsync = [
                    FsyncPolicy::Always,
                    FsyncPolicy::Batch,
                    FsyncPolicy::Never,
                    FsyncPolicy::Off,
                ]
                .into_iter()
                .find(|&p| p.name() == v)
            }
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

    #[test]
    fn the_actor_changes_only_when_shipped_records_may_be_lost() {
        use FsyncPolicy::*;
        let b = Some("boot-a");
        assert_eq!(decide(None, Batch, b), Why::First);
        assert_eq!(
            decide(Some(&prev(Batch, b, true)), Batch, Some("boot-b")),
            Why::Clean
        );
        assert_eq!(
            decide(Some(&prev(Always, b, false)), Batch, Some("boot-b")),
            Why::Synced
        );
        assert_eq!(
            decide(Some(&prev(Batch, b, false)), Batch, b),
            Why::SameBoot
        );
        assert_eq!(
            decide(Some(&prev(Never, b, false)), Always, b),
            Why::SameBoot
        );
        assert_eq!(
            decide(Some(&prev(Batch, b, false)), Batch, Some("boot-b")),
            Why::Reboot
        );
        assert_eq!(
            decide(Some(&prev(Batch, None, false)), Batch, None),
            Why::Reboot
        );
        assert_eq!(
            decide(Some(&prev(Batch, b, false)), Batch, None),
            Why::Reboot
        );
        assert_eq!(decide(Some(&prev(Off, b, true)), Batch, b), Why::NoLog);
        assert_eq!(decide(Some(&prev(Batch, b, true)), Off, b), Why::NoLog);
    }

    #[test]
    fn the_file_round_trips_and_a_damaged_one_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let boot = || Some("b1".to_string());
        let (f, why) = ActorFile::start(&fs, dir.path(), FsyncPolicy::Batch, boot(), 11).unwrap();
        assert_eq!((f.actor(), why), (11, Why::First));
        // A crash (no clean mark), same boot: kept.
        let (f, why) = ActorFile::start(&fs, dir.path(), FsyncPolicy::Batch, boot(), 12).unwrap();
        assert_eq!((f.actor(), why), (11, Why::SameBoot));
        // A crash, then a reboot: fresh.
        let other = Some("b2".to_string());
        let (f, why) = ActorFile::start(&fs, dir.path(), FsyncPolicy::Batch, other, 13).unwrap();
        assert_eq!((f.actor(), why), (13, Why::Reboot));
        // A clean stop, then a reboot: kept.
        f.mark_clean(&fs).unwrap();
        let other = Some("b3".to_string());
        let (f, why) = ActorFile::start(&fs, dir.path(), FsyncPolicy::Batch, other, 14).unwrap();
        assert_eq!((f.actor(), why), (13, Why::Clean));
        drop(f);
        let path = dir.path().join(ACTOR_FILE);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse(&text), Some(prev_with(13)));
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
        let (f, why) = ActorFile::start(&fs, dir.path(), FsyncPolicy::Batch, boot(), 15).unwrap();
        assert_eq!((f.actor(), why), (15, Why::First));
    }

    fn prev_with(actor: u64) -> Previous {
        Previous {
            actor,
            fsync: FsyncPolicy::Batch,
            boot: Some("b3".into()),
            clean: false,
        }
    }
}
