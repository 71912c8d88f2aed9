//! How long a node was away: a cluster node stamps `<data dir>/last_alive` with its wall clock
//! every [`stamp_interval_ms`] while it runs, and reads the stamp back at start. A node that
//! was away longer than the tombstone grace says so in its log (docs/cluster.md, "A node that
//! was away longer than the grace" says what it does then and why it is safe).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::{info, warn};

use super::LocalLoop;
use crate::ring::membership::Membership;
use crate::util::now_ms;

/// The stamp file in the data directory: the wall-clock time (ms since the epoch, decimal).
pub const LAST_ALIVE_FILE: &str = "last_alive";
/// Bounds of the stamp interval: a quarter of the grace (so an absence is never under-counted
/// by more than that), at most once a minute, and no more often than this.
const STAMP_MIN_MS: u64 = 200;
const STAMP_MAX_MS: u64 = 60_000;

pub fn stamp_interval_ms(grace_ms: u64) -> u64 {
    (grace_ms / 4).clamp(STAMP_MIN_MS, STAMP_MAX_MS)
}

fn path(dir: &Path) -> PathBuf {
    dir.join(LAST_ALIVE_FILE)
}

/// The last stamp, if there is a readable one.
pub fn read(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(path(dir)).ok()?.trim().parse().ok()
}

/// Writes the stamp (a new file renamed over the old one: a crash leaves one or the other).
/// Not synced: a stamp lost in a crash only makes the next absence look longer.
fn write(dir: &Path, now: u64) -> std::io::Result<()> {
    let tmp = dir.join("last_alive.tmp");
    std::fs::write(&tmp, now.to_string())?;
    std::fs::rename(&tmp, path(dir))
}

/// At start, before the node serves: how long it was away, logged, and kept for INFO
/// (`cluster_last_absence_ms`, `cluster_stale_start`). Returns whether the absence was
/// longer than the grace.
pub fn check_absence(dir: &Path, grace_ms: u64, m: &Membership) -> bool {
    let now = now_ms();
    let Some(last) = read(dir) else {
        return false;
    };
    let away = now.saturating_sub(last);
    m.stats.last_absence_ms.store(away, Relaxed);
    let stale = away > grace_ms;
    m.stats.stale_start.store(stale, Relaxed);
    if stale {
        warn!(
            away_secs = away / 1000,
            grace_secs = grace_ms / 1000,
            "this node was away longer than the tombstone grace: its hints are dropped unsent, \
             and its copies are superseded by the tombstones its peers kept for it (none of its \
             partitions' tombstones was collected without its confirmation) before any is \
             collected; if it was removed from the layout meanwhile, wipe its data directory \
             before it rejoins (docs/cluster.md)"
        );
    } else {
        info!(
            away_secs = away / 1000,
            "back after an absence shorter than the tombstone grace"
        );
    }
    stale
}

/// Stamps the data directory until the node shuts down (run on one loop).
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let node = lp.node().clone();
    let dir = node.config.data_dir.clone();
    let grace_ms = node.config.tombstone_grace_secs.saturating_mul(1000);
    let mut shutdown = node.shutdown_signal();
    let mut tick = super::sys::interval(Duration::from_millis(stamp_interval_ms(grace_ms)));
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let d = dir.clone();
        let r = super::sys::blocking(move || write(&d, now_ms())).await;
        match r.and_then(|r| r) {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                warn!(error = %e, "can't write the last-alive stamp; the next start may think this node was away longer");
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_intervals_are_bounded() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), None);
        write(d.path(), 1234).unwrap();
        assert_eq!(read(d.path()), Some(1234));
        assert_eq!(stamp_interval_ms(0), STAMP_MIN_MS);
        assert_eq!(stamp_interval_ms(4_000), 1_000);
        assert_eq!(stamp_interval_ms(864_000_000), STAMP_MAX_MS);
    }
}
