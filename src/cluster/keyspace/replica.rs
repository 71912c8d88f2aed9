//! The replica side of the key space calls, and the calls themselves: one partition's slice
//! of keys (SCAN_PARTITION) or the live key counts of partitions (COUNT_KEYS), read at this
//! node when it is a replica of the partition, else at the first reachable replica that answers.

use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use ringkv_proto::peer::{self, ScanPartition, ScanSlice, MAX_SCAN_PARTITION_COUNT};
use ringkv_proto::Value;
use smallvec::SmallVec;

use crate::cluster::link::Link;
use crate::cluster::{wait_durable, LocalLoop, LoopCluster};
use crate::durability::Marks;
use crate::ring::membership::View;
use crate::ring::partition::{partition_of, partition_start};
use crate::ring::NodeId;
use crate::store::glob::glob_match;
use crate::util::now_ms;

/// Most key bytes one SCAN_PARTITION reply carries; past it the slice ends early (at a hash
/// boundary) and says where to resume.
pub const MAX_SCAN_REPLY_BYTES: usize = 4 << 20;

/// The last hash of partition `p` (of `2^bits`).
pub fn partition_end(p: u32, bits: u32) -> u64 {
    if bits == 0 || u64::from(p) + 1 >= 1u64 << bits {
        u64::MAX
    } else {
        partition_start(p + 1, bits) - 1
    }
}

/// Reads a slice of this node's copy of a partition (the replica side of SCAN_PARTITION), and
/// the WAL positions its reply must wait for (it shows what they hold).
pub fn local_scan(
    lp: &dyn LocalLoop,
    view: &View,
    req: &ScanPartition<'_>,
) -> Result<(ScanSlice, Marks), String> {
    let bits = view.ring.partition_bits();
    if req.partition >= view.ring.partitions() {
        return Err(format!(
            "ERR partition {} is out of range (this ring has {})",
            req.partition,
            view.ring.partitions()
        ));
    }
    if partition_of(req.from, bits) != req.partition {
        return Err(format!(
            "ERR resume position {:#018x} is not in partition {}",
            req.from, req.partition
        ));
    }
    let count = req.count.clamp(1, MAX_SCAN_PARTITION_COUNT) as usize;
    let to = partition_end(req.partition, bits);
    let found = lp.node().store.range_keys(req.from, to, count, now_ms());
    let mut slice = ScanSlice {
        next: found.next,
        examined: 0,
        keys: Vec::new(),
    };
    let mut bytes = 0usize;
    let mut i = 0;
    while i < found.keys.len() {
        // One group of equal hashes at a time: a resume position never splits one.
        let h = found.keys[i].0;
        let end = i + found.keys[i..].iter().take_while(|k| k.0 == h).count();
        if bytes > MAX_SCAN_REPLY_BYTES {
            slice.next = Some(h);
            break;
        }
        for (_, k) in &found.keys[i..end] {
            slice.examined += 1;
            if req.pattern.is_none_or(|p| glob_match(p, k)) {
                bytes += k.len();
                slice.keys.push(k.clone());
            }
        }
        i = end;
    }
    Ok((slice, found.marks))
}

/// The replica side of COUNT_KEYS.
pub fn local_count(lp: &dyn LocalLoop, partitions: &[u32]) -> Vec<u64> {
    lp.node().store.count_partitions(partitions, now_ms())
}

/// The nodes to read partition `p` at, in order: this node if it is a replica, then the other
/// replicas it can reach, those with a link up first.
pub fn readers(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    p: u32,
) -> SmallVec<[NodeId; 4]> {
    let prefs = view.ring.preference(p);
    let mut out: SmallVec<[(u8, NodeId); 4]> = prefs
        .iter()
        .filter_map(|&n| {
            if n == view.me {
                return Some((0, n));
            }
            if !view.reachable(n) {
                return None;
            }
            let up = view.addr(n).is_some_and(|a| cl.link(lp, a).is_up());
            Some((if up { 1 } else { 2 }, n))
        })
        .collect();
    out.sort_by_key(|t| t.0);
    out.into_iter().map(|t| t.1).collect()
}

/// SCAN_PARTITION at one node (this one: no call).
pub async fn scan_at(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    node: NodeId,
    req: &ScanPartition<'_>,
    timeout: Duration,
) -> Result<ScanSlice, String> {
    if node == view.me {
        // The connection holds the reply for these marks, as for any reply from this node's
        // store; here they are awaited before the keys are used at all.
        let (slice, marks) = local_scan(&**lp, view, req)?;
        wait_durable(&**lp, &marks).await?;
        return Ok(slice);
    }
    let link = cl.link_to(lp, view, node)?;
    let v = link
        .call(timeout, |rid, out| {
            peer::encode_scan_partition(rid, req, out)
        })
        .await
        .map_err(|e| e.to_string())?;
    let slice = match v {
        Value::Bulk(b) => ScanSlice::decode(&b).map_err(|e| e.to_string())?,
        other => return Err(format!("unexpected SCAN_PARTITION reply {other:?}")),
    };
    // A resume position must move forward within the partition, or a walk could loop.
    let bits = view.ring.partition_bits();
    if let Some(n) = slice.next {
        if n <= req.from || partition_of(n, bits) != req.partition {
            return Err(format!(
                "peer {node:016x} answered a resume position outside the partition"
            ));
        }
    }
    Ok(slice)
}

/// SCAN_PARTITION at the first reader of the partition that answers.
pub async fn scan_one(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    req: &ScanPartition<'_>,
    timeout: Duration,
) -> Result<ScanSlice, String> {
    let mut last = String::from("no replica is reachable");
    for node in readers(lp, cl, view, req.partition) {
        match scan_at(lp, cl, view, node, req, timeout).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(format!(
        "CLUSTERDOWN no replica of partition {} answered: {last}",
        req.partition
    ))
}

/// COUNT_KEYS at one node (this one: no call); one count per partition, in order.
async fn count_at(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    node: NodeId,
    partitions: &[u32],
    timeout: Duration,
) -> Result<Vec<u64>, String> {
    if node == view.me {
        return Ok(local_count(&**lp, partitions));
    }
    let link = cl.link_to(lp, view, node)?;
    let v = link
        .call(timeout, |rid, out| {
            peer::encode_count_keys(rid, partitions, out)
        })
        .await
        .map_err(|e| e.to_string())?;
    let counts = match v {
        Value::Bulk(b) => peer::decode_counts(&b).map_err(|e| e.to_string())?,
        other => return Err(format!("unexpected COUNT_KEYS reply {other:?}")),
    };
    if counts.len() != partitions.len() {
        return Err(format!(
            "peer {node:016x} answered {} counts for {} partitions",
            counts.len(),
            partitions.len()
        ));
    }
    Ok(counts)
}

/// The live keys of every partition, each counted at one replica: this node where it is one,
/// else one COUNT_KEYS per peer for all the partitions it is asked about; a peer that fails has
/// its partitions asked of their next reader. Indexed by partition.
pub async fn count_all(
    lp: &Rc<dyn LocalLoop>,
    cl: &LoopCluster,
    view: &View,
    timeout: Duration,
) -> Result<Vec<u64>, String> {
    let parts = view.ring.partitions();
    let mut counts = vec![0u64; parts as usize];
    let mut todo: Vec<(u32, SmallVec<[NodeId; 4]>, usize)> = (0..parts)
        .map(|p| (p, readers(lp, cl, view, p), 0))
        .collect();
    let mut last = String::from("no replica is reachable");
    while !todo.is_empty() {
        // Group what is left by the reader each partition is at.
        let mut by_node: Vec<(NodeId, Vec<u32>)> = Vec::new();
        for (p, readers, at) in &todo {
            let Some(&node) = readers.get(*at) else {
                return Err(format!(
                    "CLUSTERDOWN no replica of partition {p} answered: {last}"
                ));
            };
            match by_node.iter_mut().find(|(n, _)| *n == node) {
                Some((_, ps)) => ps.push(*p),
                None => by_node.push((node, vec![*p])),
            }
        }
        let calls = by_node
            .iter()
            .map(|(node, ps)| count_at(lp, cl, view, *node, ps, timeout));
        let results = futures::future::join_all(calls).await;
        let mut failed: Vec<NodeId> = Vec::new();
        for ((node, ps), r) in by_node.iter().zip(results) {
            match r {
                Ok(cs) => {
                    for (p, c) in ps.iter().zip(cs) {
                        counts[*p as usize] = c;
                    }
                }
                Err(e) => {
                    last = e;
                    failed.push(*node);
                }
            }
        }
        todo.retain_mut(|(_, readers, at)| match readers.get(*at) {
            Some(n) if failed.contains(n) => {
                *at += 1;
                true
            }
            Some(_) | None => false,
        });
    }
    Ok(counts)
}

/// Answers a SCAN_PARTITION or COUNT_KEYS a peer sent (serve.rs hands them here).
pub fn serve(lp: &Rc<dyn LocalLoop>, link: &Link, id: u64, op: u8, req: Served<'_>) {
    let view = match lp.cluster() {
        Some(c) => c.view(),
        None => return link.send_result(id, op, Err("ERR this node is not in cluster mode")),
    };
    let mut body = BytesMut::new();
    let r = match req {
        Served::Scan(s) => local_scan(&**lp, &view, &s).map(|(slice, marks)| {
            slice.encode(&mut body);
            marks
        }),
        Served::Count(ps) => {
            peer::encode_counts(&local_count(&**lp, ps), &mut body);
            Ok(Marks::new())
        }
    };
    match r {
        // Keys shown only once durable here, as FETCH shows an entry.
        Ok(marks) => {
            let mut frame = BytesMut::new();
            let mut w = ringkv_proto::FrameWriter::new(&mut frame, id, op);
            ringkv_proto::ReplySink::bulk(&mut w, &body);
            w.finish();
            link.reply_when_durable(&**lp, marks, id, op, frame);
        }
        Err(e) => link.send_result(id, op, Err(&e)),
    }
}

/// A key space request of a peer.
pub enum Served<'a> {
    Scan(ScanPartition<'a>),
    Count(&'a [u32]),
}
