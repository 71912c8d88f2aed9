//! The receiving side of a move: copies, batch by batch, every partition this node will own
//! and does not own yet, from the owners it replaces; each batch is merged as replica writes,
//! made durable, and only then recorded as copied, so a restart resumes after the last
//! durable batch.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::peer::{self, StreamBatch, StreamPhase, StreamRead};
use ringkv_proto::Value;
use tracing::{info, warn};

use super::progress::Cursor;
use super::{incoming, Incoming, Streams};
use crate::cluster::wait_durable;
use crate::cluster::{sys, LocalLoop, LoopCluster};
use crate::durability::Marks;
use crate::ring::membership::{format_id, StreamInfo, View};
use crate::ring::partition::partition_start;
use crate::ring::NodeId;
use crate::store::Entry;
use crate::util::now_ms;

/// How often the copy task looks at the layout when nothing moves.
pub const STREAM_TICK_MS: u64 = 250;
/// Bytes asked for per STREAM_READ (less when `--stream-rate` is lower: at most a tenth of a
/// second's worth, so throttling stays smooth).
pub const STREAM_BATCH_BYTES: u32 = 1 << 20;
/// Wait after a failed batch before trying again.
const RETRY_MS: u64 = 500;

/// Runs on loop 0 until shutdown.
pub async fn run(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let mut shutdown = lp.node().shutdown_signal();
    let mut tick = sys::interval(Duration::from_millis(STREAM_TICK_MS));
    tick.set_missed_tick_behavior(sys::MissedTickBehavior::Delay);
    let mut settled_since: Option<(u64, u64)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let view = cl.view();
        let streams = &cl.shared.streams;
        publish(&cl, &view);
        if view.target.is_none() {
            settled_since = None;
            idle(&cl);
            super::commit::cleanup(&lp, &cl, &view).await;
            continue;
        }
        // Plan and copy only once every member routes writes with this layout (and writes
        // routed with the older one have had their deadline to end): then each write after the
        // copy's cursor passed a key also reaches this node. (A node that just restarted may
        // hold an older layout until gossip reaches it: planning then would drop the progress
        // it persisted.)
        if !cl.shared.membership.converged() || view.layout.owners().next().is_none() {
            settled_since = None;
            streams.state().phase = StreamPhase::Settling;
            continue;
        }
        replan(&cl, &view).await;
        let digest = view.layout.digest();
        // The settle time runs per layout: one that converged during a long copy pass gets
        // its own.
        let now = now_ms();
        let since = match settled_since {
            Some((d, t)) if d == digest => t,
            _ => {
                settled_since = Some((digest, now));
                now
            }
        };
        if now.saturating_sub(since) < settle_ms(&*lp) {
            streams.state().phase = StreamPhase::Settling;
            continue;
        }
        let plan = {
            let mut s = streams.state();
            if s.phase != StreamPhase::Done {
                s.phase = StreamPhase::Copying;
            }
            s.plan.clone()
        };
        publish(&cl, &view);
        let mut all_done = true;
        // One pace per pass over the plan (a pass after a pause does not catch up in a burst).
        let mut pacer = Pacer::new(streams.rate_bps);
        for inc in &plan {
            if streams.state().partition_done(inc) {
                continue;
            }
            if cl.view().layout.digest() != view.layout.digest() {
                all_done = false;
                break; // the layout changed: plan again
            }
            if let Err(e) = copy_partition(&lp, &cl, inc, &mut pacer).await {
                warn!(partition = inc.partition, error = %e, "copying a partition failed; retrying");
                all_done = false;
                sys::sleep(Duration::from_millis(RETRY_MS)).await;
                break;
            }
        }
        if all_done {
            let mut s = streams.state();
            if s.phase != StreamPhase::Done {
                info!(
                    partitions = plan.len(),
                    "every partition moving to this node is copied"
                );
            }
            s.phase = StreamPhase::Done;
        }
        publish(&cl, &view);
    }
}

/// How long a new layout must be agreed before copying: a write's deadline, so a write
/// routed by the older layout has ended.
fn settle_ms(lp: &dyn LocalLoop) -> u64 {
    lp.node().config.request_timeout_ms
}

fn idle(cl: &LoopCluster) {
    let mut s = cl.shared.streams.state();
    if s.phase != StreamPhase::Idle {
        s.phase = StreamPhase::Idle;
        s.plan.clear();
    }
}

/// Plans the copies for `view`'s layout if not done yet; keeps the cursors of partitions
/// still to copy, so a restart, a source's absence or a second change resumes.
async fn replan(cl: &Rc<LoopCluster>, view: &Arc<View>) {
    let digest = view.layout.digest();
    let me = view.me;
    let streams = &cl.shared.streams;
    let plan = incoming(view, me, cl.shared.membership.settings.w);
    let (cursors, rewrite) = {
        let mut s = streams.state();
        // Same layout, same sources: nothing to plan. (Sources change when one becomes
        // unreachable and others can serve: a source that died mid-copy.)
        if s.digest == digest && s.plan == plan {
            return;
        }
        if s.phase == StreamPhase::Done {
            s.phase = StreamPhase::Copying;
        }
        // Within one layout, a partition still to copy keeps its cursors from every source it
        // was read from (a restart, or a source that went down and came back, resumes). A new
        // layout starts over: a copy made for an earlier move may have missed writes since
        // (a cancelled leave sends writes to the old owners only).
        let same_layout = s.digest == digest;
        let keep: std::collections::HashMap<(u32, NodeId), Cursor> = s
            .cursors
            .iter()
            .filter(|((p, _), _)| same_layout && plan.iter().any(|i| i.partition == *p))
            .map(|(k, v)| (*k, *v))
            .collect();
        let rewrite = s.digest != digest || keep.len() != s.cursors.len();
        s.digest = digest;
        s.cursors = keep.clone();
        s.plan = plan.clone();
        if s.session_started_ms == 0 {
            s.session_started_ms = now_ms();
        }
        (keep, rewrite)
    };
    if rewrite {
        info!(
            partitions = plan.len(),
            layout = format!("{digest:016x}"),
            "planned the partitions this node copies for the new layout"
        );
        let file = streams.file.clone();
        let r = sys::blocking(move || {
            let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
            f.rewrite(digest, &cursors)
        })
        .await;
        if let Err(e) = r.and_then(|r| r) {
            warn!(error = %e, "can't write the stream progress file");
        }
    }
}

/// Copies what is left of one partition from each of its sources.
async fn copy_partition(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    inc: &Incoming,
    pacer: &mut Pacer,
) -> Result<(), String> {
    let bits = cl.view().ring.partition_bits();
    for &src in &inc.sources {
        let key = (inc.partition, src);
        let mut cur = cl
            .shared
            .streams
            .state()
            .cursors
            .get(&key)
            .copied()
            .unwrap_or(Cursor {
                next: partition_start(inc.partition, bits),
                ..Cursor::default()
            });
        while !cur.done {
            let batch = fetch(lp, cl, src, inc.partition, cur.next).await?;
            // A resume position must move forward within the partition, or the copy would
            // loop on a source's bad answer.
            if let Some(n) = batch.next {
                let end = crate::cluster::keyspace::replica::partition_end(inc.partition, bits);
                if n <= cur.next || n > end {
                    return Err(format!(
                        "source {} answered resume position {n:#018x} after {:#018x} in \
                         partition {}",
                        format_id(src),
                        cur.next,
                        inc.partition
                    ));
                }
            }
            let bytes: u64 = batch.entries.iter().map(|e| e.len() as u64).sum();
            record_fetched(&cl.shared.streams, inc.partition, src, bytes).await;
            let marks = apply(&**lp, &batch)?;
            wait_durable(&**lp, &marks).await?;
            cur.bytes += bytes;
            cur.keys += batch.entries.len() as u64;
            match batch.next {
                Some(n) => cur.next = n,
                None => cur.done = true,
            }
            record_applied(&cl.shared.streams, inc.partition, src, cur, bytes).await?;
            publish(cl, &cl.view());
            pacer.pace(bytes).await;
        }
    }
    Ok(())
}

/// One STREAM_READ call to `src`.
async fn fetch(
    lp: &Rc<dyn LocalLoop>,
    cl: &Rc<LoopCluster>,
    src: NodeId,
    partition: u32,
    from: u64,
) -> Result<StreamBatch, String> {
    let view = cl.view();
    let addr = view
        .addr(src)
        .ok_or_else(|| format!("source {} left the layout", format_id(src)))?
        .to_string();
    if !view.reachable(src) {
        return Err(format!("source {} is down", format_id(src)));
    }
    let link = cl.link(lp, &addr);
    let rate = cl.shared.streams.rate_bps;
    let max_bytes = match rate {
        0 => STREAM_BATCH_BYTES,
        r => (r / 10).clamp(4096, u64::from(STREAM_BATCH_BYTES)) as u32,
    };
    let req = StreamRead {
        partition,
        from,
        max_bytes,
    };
    let timeout = Duration::from_millis(lp.node().config.cluster.peer_timeout_ms.max(5_000));
    let r = link
        .call(timeout, |id, out: &mut BytesMut| {
            peer::encode_stream_read(id, &req, out)
        })
        .await;
    match r {
        Ok(Value::Bulk(b)) => StreamBatch::decode(&b).map_err(|e| e.to_string()),
        Ok(Value::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
        Ok(other) => Err(format!("unexpected STREAM_READ reply {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// Merges a batch into the local replica; the WAL positions to wait for.
fn apply(lp: &dyn LocalLoop, batch: &StreamBatch) -> Result<Marks, String> {
    let mut marks = Marks::new();
    for bytes in &batch.entries {
        let entry = Entry::from_bytes(bytes).ok_or("a streamed entry is malformed")?;
        for (shard, seq) in crate::cluster::serve::apply(lp, &entry) {
            crate::store::add_mark(&mut marks, shard, seq);
        }
    }
    Ok(marks)
}

async fn record_fetched(streams: &Streams, p: u32, src: NodeId, bytes: u64) {
    let file = streams.file.clone();
    let _ = sys::blocking(move || {
        file.lock()
            .unwrap_or_else(|e| e.into_inner())
            .fetched(p, src, bytes)
    })
    .await;
}

async fn record_applied(
    streams: &Streams,
    p: u32,
    src: NodeId,
    cur: Cursor,
    batch_bytes: u64,
) -> Result<(), String> {
    let file = streams.file.clone();
    let r = sys::blocking(move || {
        file.lock()
            .unwrap_or_else(|e| e.into_inner())
            .applied(p, src, &cur)
    })
    .await;
    r.map_err(|e| e.to_string())?
        .map_err(|e| format!("can't record the copy's progress: {e}"))?;
    let mut s = streams.state();
    s.cursors.insert((p, src), cur);
    s.session_bytes += batch_bytes;
    Ok(())
}

/// Paces a copy at `--stream-rate`: after each batch, sleeps until the bytes copied since the
/// pacer started are due at the rate (so the time spent fetching and applying counts too).
pub struct Pacer {
    started: sys::Instant,
    bytes: u64,
    rate_bps: u64,
}

impl Pacer {
    pub fn new(rate_bps: u64) -> Pacer {
        Pacer {
            started: sys::Instant::now(),
            bytes: 0,
            rate_bps,
        }
    }

    async fn pace(&mut self, bytes: u64) {
        if self.rate_bps == 0 {
            return;
        }
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate_bps as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            sys::sleep(due - elapsed).await;
        }
    }
}

/// Counts dropped keys (cleanup).
pub fn count_dropped(streams: &Streams, n: u64) {
    streams.dropped_keys.fetch_add(n, Relaxed);
}

/// Copies this node's progress where INFO reads it.
fn publish(cl: &LoopCluster, view: &View) {
    let streams = &cl.shared.streams;
    let r = streams.report(now_ms());
    cl.shared.membership.set_streaming(StreamInfo {
        phase: r.status.phase.name(),
        partitions: r.status.partitions,
        partitions_done: r.status.partitions_done,
        bytes: r.status.bytes,
        keys: r.status.keys,
        bytes_resent: r.status.bytes_resent,
        session_bytes: r.session_bytes,
        rate_bps: r.status.rate_bps,
        eta_secs: r.eta_secs,
        moving: super::moving_partitions(view),
        moves: if view.target.is_some() {
            let m = *streams.cluster_progress();
            (m.partitions, m.partitions_done, m.bytes, m.rate_bps)
        } else {
            (0, 0, 0, 0)
        },
        dropped_keys: streams.dropped_keys.load(Relaxed),
    });
}
