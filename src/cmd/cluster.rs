//! CLUSTER: the node's view of its cluster (NODES, INFO, MYID, MAP) and the operator's
//! membership actions (JOIN, LEAVE). The layout changes here only; gossip spreads it and the
//! cluster layer dials what JOIN names.

use std::fmt::Write;

use ringkv_proto::ReplySink;

use super::{eq, CmdError, CmdResult, Command};
use crate::node::Node;
use crate::ring::layout::MemberState;
use crate::ring::membership::{format_id, liveness_name, Membership};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterSub<'a> {
    Nodes,
    Info,
    MyId,
    Map,
    Join(&'a [u8]),
    Leave(Option<&'a [u8]>),
    /// A node that will never return: its partitions are copied from the other replicas.
    Forget(&'a [u8]),
    /// Stops a join or leave in progress (this node's, or the node named).
    Cancel(Option<&'a [u8]>),
    /// This node's own copy of a key (its winner, or nil), bypassing the coordinator: for
    /// operators and tests checking what one replica holds.
    GetLocal(&'a [u8]),
    /// This connection's read and write quorums: show them (None), or set them (0: default).
    /// Run by the connection (it changes the session).
    Quorum(Option<(u8, u8)>),
    /// Start an anti-entropy round now (it runs in the background; INFO's cluster_aae_rounds
    /// counts it when done).
    Aae,
}

/// Parses a quorum argument: 0 (the default) to `MAX_QUORUM`.
fn quorum_arg(b: &[u8]) -> CmdResult<u8> {
    match super::int(b) {
        Ok(n) if (0..=MAX_QUORUM as i64).contains(&n) => Ok(n as u8),
        _ => Err(CmdError::msg(format!(
            "ERR CLUSTER QUORUM takes R and W from 0 (the node's default) to {MAX_QUORUM}"
        ))),
    }
}

/// Largest R or W a request may ask for (4 bits of the binary frame header; --n is at most 16).
pub const MAX_QUORUM: u8 = 15;

pub fn parse<'a>(a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    let sub = match a {
        [s] if eq(s, "nodes") => ClusterSub::Nodes,
        [s] if eq(s, "info") => ClusterSub::Info,
        [s] if eq(s, "myid") => ClusterSub::MyId,
        [s] if eq(s, "map") => ClusterSub::Map,
        [s, addr] if eq(s, "join") || eq(s, "meet") => ClusterSub::Join(addr),
        [s] if eq(s, "leave") => ClusterSub::Leave(None),
        [s, id] if eq(s, "leave") => ClusterSub::Leave(Some(id)),
        [s, id] if eq(s, "forget") => ClusterSub::Forget(id),
        [s] if eq(s, "cancel") => ClusterSub::Cancel(None),
        [s, id] if eq(s, "cancel") => ClusterSub::Cancel(Some(id)),
        [s, key] if eq(s, "getlocal") => ClusterSub::GetLocal(key),
        [s] if eq(s, "quorum") => ClusterSub::Quorum(None),
        [s] if eq(s, "aae") => ClusterSub::Aae,
        [s, r, w] if eq(s, "quorum") => ClusterSub::Quorum(Some((quorum_arg(r)?, quorum_arg(w)?))),
        [s, ..] => {
            return Err(CmdError::msg(format!(
                "ERR unknown subcommand or wrong number of arguments for 'CLUSTER|{}'. Try \
                 CLUSTER NODES, INFO, MYID, MAP, JOIN host:port, LEAVE [id], FORGET id, CANCEL [id], \
                 GETLOCAL key, QUORUM [r w], AAE",
                String::from_utf8_lossy(s)
            )))
        }
        [] => return Err(CmdError::arity("cluster")),
    };
    Ok(Command::Cluster(sub))
}

/// CLUSTER GETLOCAL: this replica's own copy of `key`, and the WAL position the reply must
/// wait for (what it shows must be durable here, as for GET).
pub fn get_local(node: &Node, key: &[u8], out: &mut dyn ReplySink) -> crate::store::Marks {
    let hash = ringkv_proto::key_hash(key);
    let shard = node.store.shard_of(hash);
    let mut s = node.store.lock(shard);
    let marks = s.logged().map(|q| (shard as u32, q)).into_iter().collect();
    match s.get(hash, key, crate::util::now_ms()) {
        Some(live) => out.bulk(live.value()),
        None => out.nil(),
    }
    marks
}

pub fn exec(sub: &ClusterSub<'_>, node: &Node, out: &mut dyn ReplySink) {
    let Some(m) = node.membership.as_deref() else {
        return out.error(
            "ERR This instance has cluster support disabled (start it with --cluster-secret)",
        );
    };
    match sub {
        ClusterSub::Nodes => out.bulk(nodes(m).as_bytes()),
        ClusterSub::Info => out.bulk(info(m).as_bytes()),
        ClusterSub::MyId => out.bulk(format_id(m.me).as_bytes()),
        ClusterSub::Map => map(m, out),
        ClusterSub::Quorum(_) => out.error("ERR internal: CLUSTER QUORUM is run by the connection"),
        ClusterSub::GetLocal(_) => {
            out.error("ERR internal: CLUSTER GETLOCAL is run by the connection")
        }
        ClusterSub::Aae => {
            m.stats.aae.trigger.notify_one();
            out.simple("OK");
        }
        ClusterSub::Join(addr) => match std::str::from_utf8(addr) {
            Ok(a)
                if a.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                // A node joining a cluster copies the partitions it will own; keys it held
                // alone would have no owner there (Riak asks the same of a joining node).
                if m.alone() && node.store.stored_keys() > 0 {
                    return out.error(&format!(
                        "ERR this node holds {} keys; only an empty node can join a cluster \
                         (FLUSHALL first, or start a new node with --peers)",
                        node.store.stored_keys()
                    ));
                }
                match m.join_seed(a.to_owned()) {
                    Ok(()) => out.simple("OK"),
                    Err(e) => out.error(&e),
                }
            }
            _ => out.error("ERR CLUSTER JOIN needs a peer address as host:port"),
        },
        ClusterSub::Leave(id) => match node_arg(m, *id, "LEAVE") {
            Ok(target) => result(out, m.leave(target)),
            Err(e) => out.error(&e),
        },
        ClusterSub::Forget(id) => match node_arg(m, Some(id), "FORGET") {
            Ok(target) => result(out, m.forget(target)),
            Err(e) => out.error(&e),
        },
        ClusterSub::Cancel(id) => match node_arg(m, *id, "CANCEL") {
            Ok(target) => result(out, m.cancel(target)),
            Err(e) => out.error(&e),
        },
    }
}

fn result(out: &mut dyn ReplySink, r: Result<(), String>) {
    match r {
        Ok(()) => out.simple("OK"),
        Err(e) => out.error(&e),
    }
}

/// A node id argument (16 hex digits), or this node when absent.
fn node_arg(m: &Membership, id: Option<&[u8]>, sub: &str) -> Result<u64, String> {
    match id {
        None => Ok(m.me),
        Some(b) => std::str::from_utf8(b)
            .ok()
            .filter(|s| s.len() == 16)
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or_else(|| {
                format!("ERR CLUSTER {sub} takes a node id (16 hex digits, as CLUSTER NODES shows)")
            }),
    }
}

/// One line per node: id, address, zone, state, liveness, partitions owned (in a preference
/// list), and `myself` for this node.
pub fn nodes(m: &Membership) -> String {
    let view = m.view();
    let mut s = String::new();
    for mem in view.layout.members() {
        let zone = if mem.zone.is_empty() { "-" } else { &mem.zone };
        let _ = writeln!(
            s,
            "{} {} {} {} {} {}{}",
            format_id(mem.id),
            mem.addr,
            zone,
            mem.state.name(),
            liveness_name(view.liveness(mem.id)),
            view.ring.owned(mem.id),
            if mem.id == m.me { " myself" } else { "" }
        );
    }
    s
}

/// CLUSTER INFO and INFO's cluster section (without its header).
pub fn info(m: &Membership) -> String {
    let view = m.view();
    let st = &m.settings;
    let (mut up, mut suspect, mut down) = (0, 0, 0);
    for mem in view
        .layout
        .members()
        .filter(|x| x.state != MemberState::Removed)
    {
        match liveness_name(view.liveness(mem.id)) {
            "up" => up += 1,
            "suspect" => suspect += 1,
            _ => down += 1,
        }
    }
    let s = &m.stats;
    let r = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let calls = r(&s.peer_calls);
    let mut out = format!(
        "cluster_enabled:1\r\ncluster_state:{}\r\ncluster_my_id:{}\r\ncluster_layout_version:{}\r\n\
         cluster_known_nodes:{}\r\ncluster_nodes_up:{up}\r\ncluster_nodes_suspect:{suspect}\r\n\
         cluster_nodes_down:{down}\r\ncluster_partitions:{}\r\ncluster_vnodes:{}\r\ncluster_n:{}\r\n\
         cluster_w:{}\r\ncluster_r:{}\r\ncluster_read_your_writes:{}\r\ncluster_conflicts:{}\r\n\
         cluster_hinted_handoff:{}\r\ncluster_hints_stored:{}\r\ncluster_hints_delivered:{}\r\n\
         cluster_read_repairs:{}\r\ncluster_write_quorum_failures:{}\r\n\
         cluster_read_quorum_failures:{}\r\ncluster_forwarded:{}\r\ncluster_peer_calls:{calls}\r\n\
         cluster_peer_call_failures:{}\r\ncluster_peer_call_mean_us:{}\r\n",
        if down == 0 { "ok" } else { "degraded" },
        format_id(m.me),
        view.layout_version(),
        view.layout.len(),
        st.partitions,
        st.vnodes,
        st.n,
        st.w,
        st.r,
        if st.w + st.r > st.n { "yes" } else { "no" },
        if st.lww { "lww" } else { "siblings" },
        if st.hinted_handoff { "on" } else { "off" },
        r(&s.hints_stored),
        r(&s.hints_delivered),
        r(&s.read_repairs),
        r(&s.write_quorum_failures),
        r(&s.read_quorum_failures),
        r(&s.forwarded),
        r(&s.peer_call_failures),
        r(&s.peer_call_us).checked_div(calls).unwrap_or(0),
    );
    // The last count DBSIZE or RANDOMKEY computed (INFO must not wait on peers); -1: none yet.
    let at = r(&s.cluster_keys_at_ms);
    let (keys, age) = match at {
        0 => (-1, -1),
        at => (
            r(&s.cluster_keys) as i64,
            crate::util::now_ms().saturating_sub(at) as i64,
        ),
    };
    let _ = write!(out, "cluster_keys:{keys}\r\ncluster_keys_age_ms:{age}\r\n");
    let gc = |a: &std::sync::atomic::AtomicU64| r(a);
    let _ = write!(
        out,
        "cluster_gc_candidates:{}\r\ncluster_gc_confirmed:{}\r\ncluster_gc_purged:{}\r\n\
         cluster_gc_refused:{}\r\ncluster_hints_expired:{}\r\ncluster_last_absence_ms:{}\r\n\
         cluster_stale_start:{}\r\n",
        gc(&s.gc_candidates),
        gc(&s.gc_confirmed),
        gc(&s.gc_purged),
        gc(&s.gc_refused),
        gc(&s.hints_expired),
        gc(&s.last_absence_ms),
        u8::from(s.stale_start.load(std::sync::atomic::Ordering::Relaxed)),
    );
    let st = m.streaming();
    let _ = write!(
        out,
        "cluster_moving_partitions:{}\r\ncluster_stream_phase:{}\r\n\
         cluster_stream_partitions:{}\r\ncluster_stream_partitions_done:{}\r\n\
         cluster_stream_bytes:{}\r\ncluster_stream_keys:{}\r\ncluster_stream_bytes_resent:{}\r\n\
         cluster_stream_bytes_this_run:{}\r\n\
         cluster_stream_rate_bps:{}\r\ncluster_stream_eta_secs:{}\r\n\
         cluster_unowned_keys_dropped:{}\r\ncluster_moves_partitions:{}\r\n\
         cluster_moves_partitions_done:{}\r\ncluster_moves_bytes:{}\r\ncluster_moves_rate_bps:{}\r\n",
        st.moving,
        if st.phase.is_empty() {
            "idle"
        } else {
            st.phase
        },
        st.partitions,
        st.partitions_done,
        st.bytes,
        st.keys,
        st.bytes_resent,
        st.session_bytes,
        st.rate_bps,
        st.eta_secs,
        st.dropped_keys,
        st.moves.0,
        st.moves.1,
        st.moves.2,
        st.moves.3,
    );
    aae_info(m, &view, &mut out);
    let pending = m.hints_pending();
    let total: u64 = pending.iter().map(|p| p.1).sum();
    let _ = write!(out, "cluster_hints_pending:{total}\r\n");
    for (target, count, age_ms) in pending {
        let _ = write!(
            out,
            "cluster_hints_pending_{}:count={count},oldest_age_ms={age_ms}\r\n",
            format_id(target)
        );
    }
    out
}

/// INFO cluster's anti-entropy lines (docs/cluster.md, "Anti-entropy").
fn aae_info(m: &Membership, view: &crate::ring::membership::View, out: &mut String) {
    let a = &m.stats.aae;
    let r = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
    let mine = (0..view.ring.partitions()).filter(|&p| view.ring.preference(p).contains(&view.me));
    let (oldest, newest) = a.oldest_newest(mine);
    let now = crate::util::now_ms();
    // Age of the last exchange, ms; -1: never.
    let age = |t: u64| match t {
        0 => -1,
        t => now.saturating_sub(t) as i64,
    };
    let _ = write!(
        out,
        "cluster_aae_rounds:{}\r\ncluster_aae_trees_compared:{}\r\n\
         cluster_aae_segments_differing:{}\r\ncluster_aae_keys_repaired:{}\r\n\
         cluster_aae_bytes_exchanged:{}\r\ncluster_aae_errors:{}\r\n\
         cluster_aae_last_round_ms:{}\r\ncluster_aae_oldest_exchange_age_ms:{}\r\n\
         cluster_aae_newest_exchange_age_ms:{}\r\n",
        r(&a.rounds),
        r(&a.trees_compared),
        r(&a.segments_differing),
        r(&a.keys_repaired),
        r(&a.bytes_exchanged),
        r(&a.errors),
        r(&a.last_round_ms),
        age(oldest),
        age(newest),
    );
}

/// The partition map for cluster-aware clients: `[layout version, partitions, [[id, addr],
/// ...] (nodes), [[node index, ...] per partition] (preference lists)]`.
fn map(m: &Membership, out: &mut dyn ReplySink) {
    let view = m.view();
    let members: Vec<_> = view.layout.owners().collect();
    out.array(4);
    out.int(view.layout_version() as i64);
    out.int(view.ring.partitions() as i64);
    out.array(members.len());
    for mem in &members {
        out.array(2);
        out.bulk(format_id(mem.id).as_bytes());
        out.bulk(mem.addr.as_bytes());
    }
    out.array(view.ring.partitions() as usize);
    for p in 0..view.ring.partitions() {
        let prefs = view.ring.preference(p);
        out.array(prefs.len());
        for id in prefs {
            let i = members.iter().position(|x| x.id == *id).unwrap_or(0);
            out.int(i as i64);
        }
    }
}

/// CLUSTER QUORUM on a connection: validates against N, sets `quorum`, answers.
pub fn quorum(node: &Node, set: Option<(u8, u8)>, quorum: &mut (u8, u8), out: &mut dyn ReplySink) {
    let Some(m) = node.membership.as_deref() else {
        return out.error(
            "ERR This instance has cluster support disabled (start it with --cluster-secret)",
        );
    };
    if let Some((r, w)) = set {
        let n = m.settings.n as u8;
        if r > n || w > n {
            return out.error(&format!(
                "ERR CLUSTER QUORUM {r} {w}: R and W can be at most N ({n})"
            ));
        }
        *quorum = (r, w);
        return out.simple("OK");
    }
    let eff = |v: u8, d: usize| if v == 0 { d as i64 } else { v as i64 };
    out.array(2);
    out.int(eff(quorum.0, m.settings.r));
    out.int(eff(quorum.1, m.settings.w));
}
