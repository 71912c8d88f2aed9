//! The Prometheus endpoint (`--metrics-addr`): a thread of its own, with a small
//! current-thread runtime, answering `GET /metrics` in the text exposition format (0.0.4).
//!
//! Everything is read from the node's counters at scrape time: serving metrics costs the
//! event loops nothing.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::node::{LoopStats, Node};

/// Largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// A scrape must send its request and take its answer within this.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A running metrics endpoint.
pub struct Metrics {
    pub addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Metrics {
    /// Binds `addr` (so a bad address fails at startup) and serves until the node shuts down.
    pub fn start(node: Arc<Node>, addr: SocketAddr) -> std::io::Result<Metrics> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics endpoint can't start its runtime");
                        return;
                    }
                };
                rt.block_on(serve(node, listener));
            })?;
        Ok(Metrics { addr, thread })
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

async fn serve(node: Arc<Node>, listener: std::net::TcpListener) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics endpoint can't listen");
            return;
        }
    };
    let mut shutdown = node.shutdown_signal();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(IO_TIMEOUT, answer(&node, stream)).await {
                            Ok(Err(e)) => debug!(error = %e, "metrics scrape failed"),
                            Err(_) => debug!("metrics scrape timed out"),
                            Ok(Ok(())) => {}
                        }
                    });
                }
                Err(e) => {
                    debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}

/// Reads one request head and answers it; the connection is then closed.
async fn answer(node: &Node, mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() > MAX_REQUEST {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            )
            .await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => {
            let body = render(node);
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
            .await
        }
        (b"GET" | b"HEAD", _) => {
            respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await
        }
        _ => {
            respond(
                &mut stream,
                "405 Method Not Allowed",
                "text/plain",
                "only GET is supported\n",
            )
            .await
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = write!(
        out,
        "# HELP ringkv_{name} {help}\n# TYPE ringkv_{name} {kind}\n"
    );
}

/// A counter family with one sample per command; `value` picks the count, or None to leave
/// the command out.
fn per_command(
    out: &mut String,
    cmds: &[crate::stats::CmdSummary],
    name: &str,
    help: &str,
    value: impl Fn(&crate::stats::CmdSummary) -> Option<u64>,
) {
    family(out, name, "counter", help);
    for c in cmds {
        if let Some(v) = value(c) {
            let _ = writeln!(out, "ringkv_{name}{{cmd=\"{}\"}} {v}", c.name);
        }
    }
}

fn sample(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "ringkv_{name} {value}");
}

/// The metrics in the Prometheus text format.
pub fn render(node: &Node) -> String {
    let mut s = String::with_capacity(16 * 1024);
    let cmds = crate::stats::summarize(node.stats.iter().map(|l| &l.cmds));

    per_command(
        &mut s,
        &cmds,
        "commands_total",
        "Commands run, by command.",
        |c| (c.calls > 0).then_some(c.calls),
    );
    per_command(
        &mut s,
        &cmds,
        "commands_failed_total",
        "Commands that answered with an error, by command.",
        |c| (c.calls > 0).then_some(c.failed),
    );
    per_command(
        &mut s,
        &cmds,
        "commands_rejected_total",
        "Commands refused before running (arity, NOAUTH, MISCONF), by command.",
        |c| (c.rejected > 0).then_some(c.rejected),
    );
    family(
        &mut s,
        "command_duration_seconds",
        "summary",
        "Time to run a command, by command (quantiles since start or CONFIG RESETSTAT).",
    );
    for c in cmds.iter().filter(|c| c.calls > 0) {
        for (q, p) in [("0.5", 50.0), ("0.99", 99.0), ("0.999", 99.9)] {
            let _ = writeln!(
                s,
                "ringkv_command_duration_seconds{{cmd=\"{}\",quantile=\"{q}\"}} {}",
                c.name,
                c.hist.percentile(p) as f64 / 1e6
            );
        }
        let _ = writeln!(
            s,
            "ringkv_command_duration_seconds_sum{{cmd=\"{}\"}} {}",
            c.name,
            c.usec as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "ringkv_command_duration_seconds_count{{cmd=\"{}\"}} {}",
            c.name, c.calls
        );
    }

    family(
        &mut s,
        "connected_clients",
        "gauge",
        "Client connections open now.",
    );
    sample(&mut s, "connected_clients", node.connected.load(Relaxed));
    family(
        &mut s,
        "connections_received_total",
        "counter",
        "Client connections accepted.",
    );
    sample(
        &mut s,
        "connections_received_total",
        node.total(|x: &LoopStats| &x.connections_received),
    );
    family(
        &mut s,
        "memory_rss_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    sample(&mut s, "memory_rss_bytes", crate::cmd::server::rss_bytes());

    let mut used = 0usize;
    let mut keys = Vec::with_capacity(node.store.len());
    let (mut tombstones, mut purged) = (0usize, 0u64);
    for i in 0..node.store.len() {
        let g = node.store.lock(i);
        used += g.memory_bytes();
        keys.push(g.len());
        tombstones += g.tombstones();
        purged += g.purged;
    }
    family(
        &mut s,
        "used_memory_bytes",
        "gauge",
        "Memory used by the data set (estimate).",
    );
    sample(&mut s, "used_memory_bytes", used);
    family(&mut s, "keys", "gauge", "Keys, by shard.");
    for (i, n) in keys.iter().enumerate() {
        let _ = writeln!(s, "ringkv_keys{{shard=\"{i}\"}} {n}");
    }
    family(
        &mut s,
        "tombstones",
        "gauge",
        "Deleted keys kept as tombstones until their grace passes (not counted in keys).",
    );
    sample(&mut s, "tombstones", tombstones);
    if let Some(m) = node.membership.as_deref() {
        cluster_metrics(&mut s, m);
    }
    family(
        &mut s,
        "tombstones_purged_total",
        "counter",
        "Tombstones and expired keys purged after their grace.",
    );
    sample(&mut s, "tombstones_purged_total", purged);

    let d = &node.durability;
    let (mut wal_bytes, mut fsyncs, mut last_fsync_us) = (0u64, 0u64, 0u64);
    for l in &d.logs {
        wal_bytes += l.stats.wal_bytes.load(Relaxed);
        fsyncs += l.stats.fsyncs.load(Relaxed);
        last_fsync_us = last_fsync_us.max(l.stats.last_fsync_us.load(Relaxed));
    }
    let st = &d.stats;
    family(
        &mut s,
        "wal_fsyncs_total",
        "counter",
        "WAL fdatasync calls.",
    );
    sample(&mut s, "wal_fsyncs_total", fsyncs);
    family(
        &mut s,
        "wal_fsyncs_per_second",
        "gauge",
        "WAL fdatasync calls in the last second.",
    );
    sample(
        &mut s,
        "wal_fsyncs_per_second",
        st.fsyncs_per_sec.load(Relaxed),
    );
    family(
        &mut s,
        "wal_last_fsync_seconds",
        "gauge",
        "Duration of the slowest shard's last WAL fdatasync.",
    );
    sample(&mut s, "wal_last_fsync_seconds", last_fsync_us as f64 / 1e6);
    family(
        &mut s,
        "wal_bytes",
        "gauge",
        "Bytes in the live WAL segments.",
    );
    sample(&mut s, "wal_bytes", wal_bytes);
    family(&mut s, "snapshots_total", "counter", "Snapshots taken.");
    sample(&mut s, "snapshots_total", st.snapshots.load(Relaxed));
    family(
        &mut s,
        "last_snapshot_duration_seconds",
        "gauge",
        "Duration of the last snapshot.",
    );
    sample(
        &mut s,
        "last_snapshot_duration_seconds",
        st.last_snapshot_ms.load(Relaxed) as f64 / 1e3,
    );
    family(
        &mut s,
        "recovery_duration_seconds",
        "gauge",
        "Time the node took to recover its data at startup.",
    );
    sample(
        &mut s,
        "recovery_duration_seconds",
        st.recovery_ms.load(Relaxed) as f64 / 1e3,
    );
    s
}

/// The cluster layer's metrics: peers by liveness, per-peer calls and latency, quorum
/// failures, read repairs and hints.
fn cluster_metrics(s: &mut String, m: &crate::ring::membership::Membership) {
    use crate::ring::layout::MemberState;
    use crate::ring::membership::{format_id, liveness_name};
    let view = m.view();
    family(
        s,
        "cluster_peers",
        "gauge",
        "Cluster members by this node's view of their liveness.",
    );
    for state in ["up", "suspect", "down"] {
        let n = view
            .layout
            .members()
            .filter(|x| x.state != MemberState::Removed)
            .filter(|x| liveness_name(view.liveness(x.id)) == state)
            .count();
        let _ = writeln!(s, "ringkv_cluster_peers{{state=\"{state}\"}} {n}");
    }
    let st = &m.stats;
    let peers = st.per_peer();
    family(
        s,
        "cluster_peer_calls_total",
        "counter",
        "Calls to each peer (replica writes, reads, gossip, forwards).",
    );
    for (id, calls, _, _) in &peers {
        let _ = writeln!(
            s,
            "ringkv_cluster_peer_calls_total{{peer=\"{}\"}} {calls}",
            format_id(*id)
        );
    }
    family(
        s,
        "cluster_peer_call_failures_total",
        "counter",
        "Calls to each peer that failed or timed out.",
    );
    for (id, _, failed, _) in &peers {
        let _ = writeln!(
            s,
            "ringkv_cluster_peer_call_failures_total{{peer=\"{}\"}} {failed}",
            format_id(*id)
        );
    }
    family(
        s,
        "cluster_peer_call_seconds_sum",
        "counter",
        "Time spent waiting for each peer's answers (divide by calls for the mean latency).",
    );
    for (id, _, _, us) in &peers {
        let _ = writeln!(
            s,
            "ringkv_cluster_peer_call_seconds_sum{{peer=\"{}\"}} {}",
            format_id(*id),
            *us as f64 / 1e6
        );
    }
    family(
        s,
        "cluster_quorum_failures_total",
        "counter",
        "Requests that did not reach their quorum, by kind.",
    );
    let _ = writeln!(
        s,
        "ringkv_cluster_quorum_failures_total{{kind=\"read\"}} {}",
        st.read_quorum_failures.load(Relaxed)
    );
    let _ = writeln!(
        s,
        "ringkv_cluster_quorum_failures_total{{kind=\"write\"}} {}",
        st.write_quorum_failures.load(Relaxed)
    );
    family(
        s,
        "cluster_read_repairs_total",
        "counter",
        "Replicas sent a newer copy after a read.",
    );
    sample(
        s,
        "cluster_read_repairs_total",
        st.read_repairs.load(Relaxed),
    );
    family(
        s,
        "cluster_hints_stored_total",
        "counter",
        "Writes this node sent to a stand-in because a replica was down.",
    );
    sample(
        s,
        "cluster_hints_stored_total",
        st.hints_stored.load(Relaxed),
    );
    family(
        s,
        "cluster_hints_delivered_total",
        "counter",
        "Hints this node held and delivered to their owner.",
    );
    sample(
        s,
        "cluster_hints_delivered_total",
        st.hints_delivered.load(Relaxed),
    );
    // Tombstone collection (cluster::gc).
    for (name, help, v) in [
        (
            "cluster_gc_candidates_total",
            "Tombstones past their grace offered for collection.",
            &st.gc_candidates,
        ),
        (
            "cluster_gc_confirmed_total",
            "Tombstones every replica confirmed holding.",
            &st.gc_confirmed,
        ),
        (
            "cluster_gc_purged_total",
            "Tombstones purged here by the collector.",
            &st.gc_purged,
        ),
        (
            "cluster_gc_refused_total",
            "Tombstones kept because a replica could not confirm them.",
            &st.gc_refused,
        ),
        (
            "cluster_hints_expired_total",
            "Hints dropped unsent, older than the tombstone grace.",
            &st.hints_expired,
        ),
    ] {
        family(s, name, "counter", help);
        sample(s, name, v.load(Relaxed));
    }
    family(
        s,
        "cluster_hints_pending",
        "gauge",
        "Hints this node holds, by the node they are for.",
    );
    for (target, count, _) in m.hints_pending() {
        let _ = writeln!(
            s,
            "ringkv_cluster_hints_pending{{target=\"{}\"}} {count}",
            format_id(target)
        );
    }
}
