//! Cluster-wide key space commands: SCAN, KEYS, DBSIZE, RANDOMKEY, FLUSHDB/FLUSHALL.
//!
//! - Every partition is read at one replica (this node if it is one, else the first reachable
//!   replica that answers), with SCAN_PARTITION (a slice of its live keys in hash order) or
//!   COUNT_KEYS (protocol.md §6.2).
//! - A SCAN cursor is a position on the hash ring: every live key whose hash is below it has
//!   been examined, and the walk goes on from it in hash order, partition after partition (0:
//!   the start, and the end). A position is a hash, not a slot, so it means the same on every
//!   replica and after a restart.
//! - FLUSHDB/FLUSHALL deletes every key it finds at the reachable replicas through the normal
//!   replicated write path (a coordinated DEL per key: tombstones, hints for replicas that are
//!   down), so a node that was down does not bring the keys back.

pub mod replica;

use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, StreamExt};
use ringkv_proto::peer::{ScanPartition, ScanSlice, MAX_SCAN_PARTITION_COUNT};
use ringkv_proto::ReplySink;

use super::coordinator::{coordinate, encode, Coordinated, Quorum, Reply, ReplyTo};
use super::{LocalLoop, LoopCluster};
use crate::cmd::keys::Scan;
use crate::cmd::whole::Whole;
use crate::cmd::Command;
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::partition::{partition_of, partition_start};
use replica::{count_all, readers, scan_at, scan_one};

/// Partitions one SCAN call visits at most (so a SCAN over many empty partitions still
/// answers quickly; its cursor says where to go on).
pub const MAX_SCAN_PARTITIONS_PER_CALL: usize = 64;
/// Key bytes past which a SCAN call stops visiting further partitions.
pub const SCAN_SOFT_REPLY_BYTES: usize = 1 << 20;
/// Keys examined per SCAN_PARTITION call of KEYS and FLUSHALL.
pub const WALK_BATCH_KEYS: u32 = 10_000;
/// Partitions KEYS and FLUSHALL walk at once.
pub const WALK_PARALLEL_PARTITIONS: usize = 8;
/// Coordinated DELs in flight at once per partition during FLUSHALL.
pub const FLUSH_PARALLEL_DELETES: usize = 64;

/// Runs a key space command across the cluster; None if `command` is not one.
pub fn run(
    lp: &Rc<dyn LocalLoop>,
    command: &Command<'_>,
    reply_to: ReplyTo,
    q: Quorum,
) -> Option<Coordinated> {
    let cl = lp.cluster()?.clone();
    let lp = lp.clone();
    let view = cl.view();
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms);
    let fut: futures::future::LocalBoxFuture<'static, Reply> = match command.whole()? {
        Whole::Scan(s) => {
            let s = OwnedScan::of(s);
            Box::pin(async move { scan(&lp, &cl, &view, s, reply_to, timeout).await })
        }
        Whole::Keys(p) => {
            let pattern = (p != b"*").then(|| p.to_vec());
            Box::pin(async move { keys(&lp, &cl, &view, pattern, reply_to, timeout).await })
        }
        Whole::DbSize => Box::pin(async move {
            match count_all(&lp, &cl, &view, timeout).await {
                Ok(c) => {
                    let total: u64 = c.iter().sum();
                    remember_total(&cl, total);
                    reply(reply_to, |s| s.int(total as i64))
                }
                Err(e) => reply(reply_to, |s| s.error(&e)),
            }
        }),
        Whole::RandomKey => {
            Box::pin(async move { random_key(&lp, &cl, &view, reply_to, timeout).await })
        }
        Whole::Flush => Box::pin(async move { flush(&lp, &cl, &view, reply_to, q, timeout).await }),
    };
    // The connection waits for it before its next command (FLUSHALL then SET must not race).
    Some(Coordinated::Inline(fut))
}

fn reply(reply_to: ReplyTo, f: impl FnOnce(&mut dyn ReplySink)) -> Reply {
    (encode(reply_to, f), Marks::new())
}

/// The last cluster key count DBSIZE computed, for INFO (which must not wait on peers).
fn remember_total(cl: &LoopCluster, total: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = &cl.shared.membership.stats;
    stats.cluster_keys.store(total, Relaxed);
    stats
        .cluster_keys_at_ms
        .store(crate::util::now_ms().max(1), Relaxed);
}

/// SCAN's arguments, owned (the walk outlives the request buffer).
struct OwnedScan {
    cursor: u64,
    pattern: Option<Vec<u8>>,
    count: usize,
    only_strings: bool,
}

impl OwnedScan {
    fn of(s: &Scan<'_>) -> OwnedScan {
        OwnedScan {
            cursor: s.cursor,
            pattern: s.pattern.map(|p| p.to_vec()),
            count: s.count,
            only_strings: s.only_strings,
        }
    }
}

/// The cursor after partition `p` is done: the next partition's start, or 0 after the last.
fn after_partition(p: u32, view: &View) -> u64 {
    let next = u64::from(p) + 1;
    if next >= u64::from(view.ring.partitions()) {
        0
    } else {
        partition_start(next as u32, view.ring.partition_bits())
    }
}

/// One SCAN call: examines about COUNT keys from the cursor on, across as many partitions as
/// that takes (at most [`MAX_SCAN_PARTITIONS_PER_CALL`]).
async fn scan(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &Arc<View>,
    s: OwnedScan,
    reply_to: ReplyTo,
    timeout: Duration,
) -> Reply {
    let bits = view.ring.partition_bits();
    let mut cursor = s.cursor;
    let mut budget = s.count.max(1);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    // TYPE other than string: no key here has another type, the walk is over at once.
    let calls = if s.only_strings {
        MAX_SCAN_PARTITIONS_PER_CALL
    } else {
        cursor = 0;
        0
    };
    for _ in 0..calls {
        let p = partition_of(cursor, bits);
        let req = ScanPartition {
            partition: p,
            from: cursor,
            count: budget.min(MAX_SCAN_PARTITION_COUNT as usize) as u32,
            pattern: s.pattern.as_deref(),
        };
        let slice = match scan_one(lp, cl, view, &req, timeout).await {
            Ok(sl) => sl,
            Err(e) => return reply(reply_to, |o| o.error(&e)),
        };
        bytes += slice.keys.iter().map(|k| k.len()).sum::<usize>();
        keys.extend(slice.keys);
        // An empty partition costs one unit, so a walk over empty ones still ends.
        budget = budget.saturating_sub((slice.examined as usize).max(1));
        cursor = match slice.next {
            Some(h) => h,
            None => after_partition(p, view),
        };
        if cursor == 0 || budget == 0 || bytes >= SCAN_SOFT_REPLY_BYTES {
            break;
        }
    }
    reply(reply_to, |o| {
        o.array(2);
        let mut b = itoa::Buffer::new();
        o.bulk(b.format(cursor).as_bytes());
        o.array(keys.len());
        for k in &keys {
            o.bulk(k);
        }
    })
}

/// Every key of partition `p` at one reader (failing over to the next reader from where the
/// last one stopped), or at `only` if given.
async fn walk_partition(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    p: u32,
    pattern: Option<&[u8]>,
    only: Option<crate::ring::NodeId>,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, String> {
    let mut from = partition_start(p, view.ring.partition_bits());
    let mut keys = Vec::new();
    loop {
        let req = ScanPartition {
            partition: p,
            from,
            count: WALK_BATCH_KEYS,
            pattern,
        };
        let slice: ScanSlice = match only {
            Some(node) => scan_at(lp, cl, view, node, &req, timeout).await?,
            None => scan_one(lp, cl, view, &req, timeout).await?,
        };
        keys.extend(slice.keys);
        match slice.next {
            Some(h) => from = h,
            None => return Ok(keys),
        }
    }
}

/// KEYS: every partition walked at one replica; each key once.
async fn keys(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &Arc<View>,
    pattern: Option<Vec<u8>>,
    reply_to: ReplyTo,
    timeout: Duration,
) -> Reply {
    let max_bytes = lp.node().config.max_output_buffer_bytes;
    let pattern = pattern.as_deref();
    let mut walks = stream::iter(0..view.ring.partitions())
        .map(|p| walk_partition(lp, cl, view, p, pattern, None, timeout))
        .buffer_unordered(WALK_PARALLEL_PARTITIONS);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = walks.next().await {
        match r {
            Ok(ks) => {
                bytes += ks.iter().map(|k| k.len()).sum::<usize>();
                keys.extend(ks);
            }
            Err(e) => return reply(reply_to, |o| o.error(&e)),
        }
        if bytes > max_bytes {
            return reply(reply_to, |o| {
                o.error(
                    "ERR the reply would exceed this client's output buffer limit \
                     (--max-output-buffer-bytes); use SCAN to walk the keyspace in steps",
                )
            });
        }
    }
    reply(reply_to, |o| {
        o.array(keys.len());
        for k in &keys {
            o.bulk(k);
        }
    })
}

/// Under `sim`: from the run's seed.
#[cfg(feature = "sim")]
fn random() -> u64 {
    crate::util::sim_rng::next_u64()
}

/// A random u64 (RANDOMKEY needs spread, not unpredictability).
#[cfg(not(feature = "sim"))]
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// RANDOMKEY: a partition picked with odds by its key count (so about uniform over keys), then
/// the first key at or after a random position in it (wrapping to its start).
async fn random_key(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &Arc<View>,
    reply_to: ReplyTo,
    timeout: Duration,
) -> Reply {
    let counts = match count_all(lp, cl, view, timeout).await {
        Ok(c) => c,
        Err(e) => return reply(reply_to, |o| o.error(&e)),
    };
    let total: u64 = counts.iter().sum();
    remember_total(cl, total);
    if total == 0 {
        return reply(reply_to, |o| o.nil());
    }
    let mut pick = random() % total;
    let p = counts
        .iter()
        .position(|&c| {
            if pick < c {
                true
            } else {
                pick -= c;
                false
            }
        })
        .unwrap_or(0) as u32;
    let bits = view.ring.partition_bits();
    let start = partition_start(p, bits);
    let span = replica::partition_end(p, bits) - start;
    let at = start + random() % span.saturating_add(1).max(1);
    for from in [at, start] {
        let req = ScanPartition {
            partition: p,
            from,
            count: 1,
            pattern: None,
        };
        match scan_one(lp, cl, view, &req, timeout).await {
            Ok(sl) => {
                if let Some(k) = sl.keys.first() {
                    return reply(reply_to, |o| o.bulk(k));
                }
            }
            Err(e) => return reply(reply_to, |o| o.error(&e)),
        }
    }
    // The partition emptied meanwhile.
    reply(reply_to, |o| o.nil())
}

/// FLUSHDB/FLUSHALL: for each partition, the keys of every reachable replica (a key one of
/// them missed is still found), each deleted by a coordinated DEL (tombstones at W, hints for
/// replicas that are down). Keys written meanwhile may survive.
async fn flush(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &Arc<View>,
    reply_to: ReplyTo,
    q: Quorum,
    timeout: Duration,
) -> Reply {
    let mut parts = stream::iter(0..view.ring.partitions())
        .map(|p| flush_partition(lp, cl, view, p, q, timeout))
        .buffer_unordered(WALK_PARALLEL_PARTITIONS);
    let mut first_error: Option<String> = None;
    let (mut deleted, mut failed) = (0u64, 0u64);
    while let Some(r) = parts.next().await {
        match r {
            Ok((d, f, e)) => {
                deleted += d;
                failed += f;
                if first_error.is_none() {
                    first_error = e;
                }
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    tracing::info!(deleted, failed, "FLUSHALL on the cluster");
    match first_error {
        None => reply(reply_to, |o| o.simple("OK")),
        Some(e) => reply(reply_to, |o| {
            o.error(&format!(
                "ERR FLUSHALL deleted {deleted} keys but not all ({failed} failed, first: {e}); \
                 run it again"
            ))
        }),
    }
}

/// One partition of FLUSHALL: (keys deleted, deletes failed, first failure).
async fn flush_partition(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &Arc<View>,
    p: u32,
    q: Quorum,
    timeout: Duration,
) -> Result<(u64, u64, Option<String>), String> {
    let mut found: HashSet<Vec<u8>> = HashSet::new();
    let mut answered = 0;
    let mut last = String::from("no replica is reachable");
    for node in readers(lp, cl, view, p) {
        match walk_partition(lp, cl, view, p, None, Some(node), timeout).await {
            Ok(ks) => {
                answered += 1;
                found.extend(ks);
            }
            Err(e) => last = e,
        }
    }
    if answered == 0 {
        return Err(format!(
            "CLUSTERDOWN no replica of partition {p} answered: {last}"
        ));
    }
    let mut dels = stream::iter(found)
        .map(|k| {
            let args = vec![b"DEL".to_vec(), k];
            coordinate(lp, args, false, None, q, true, None).reply()
        })
        .buffer_unordered(FLUSH_PARALLEL_DELETES);
    let (mut deleted, mut failed, mut first) = (0u64, 0u64, None);
    while let Some((out, _)) = dels.next().await {
        // RESP: an error reply starts with '-'.
        if out.first() == Some(&b'-') {
            failed += 1;
            if first.is_none() {
                let line = out[..].split(|&b| b == b'\r').next().unwrap_or_default();
                first =
                    Some(String::from_utf8_lossy(line.get(1..).unwrap_or_default()).into_owned());
            }
        } else {
            deleted += 1;
        }
    }
    Ok((deleted, failed, first))
}
