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
    /// This node's own copy of a key (its winner, or nil), bypassing the coordinator: for
    /// operators and tests checking what one replica holds.
    GetLocal(&'a [u8]),
    /// This connection's read and write quorums: show them (None), or set them (0: default).
    /// Run by the connection (it changes the session).
    Quorum(Option<(u8, u8)>),
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
        [s, key] if eq(s, "getlocal") => ClusterSub::GetLocal(key),
        [s] if eq(s, "quorum") => ClusterSub::Quorum(None),
        [s, r, w] if eq(s, "quorum") => ClusterSub::Quorum(Some((quorum_arg(r)?, quorum_arg(w)?))),
        [s, ..] => {
            return Err(CmdError::msg(format!(
                "ERR unknown subcommand or wrong number of arguments for 'CLUSTER|{}'. Try \
                 CLUSTER NODES, INFO, MYID, MAP, JOIN host:port, LEAVE [id], GETLOCAL key, QUORUM [r w]",
                String::from_utf8_lossy(s)
            )))
        }
        [] => return Err(CmdError::arity("cluster")),
    };
    Ok(Command::Cluster(sub))
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
        ClusterSub::GetLocal(key) => {
            let hash = ringkv_proto::key_hash(key);
            let mut s = node.store.lock(node.store.shard_of(hash));
            match s.get(hash, key, crate::util::now_ms()) {
                Some(live) => out.bulk(live.value()),
                None => out.nil(),
            }
        }
        ClusterSub::Join(addr) => match std::str::from_utf8(addr) {
            Ok(a)
                if a.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                m.add_seed(a.to_owned());
                out.simple("OK");
            }
            _ => out.error("ERR CLUSTER JOIN needs a peer address as host:port"),
        },
        ClusterSub::Leave(id) => {
            let target = match id {
                None => m.me,
                Some(b) => match std::str::from_utf8(b)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                {
                    Some(id) => id,
                    None => return out.error(
                        "ERR CLUSTER LEAVE takes a node id (16 hex digits, as CLUSTER NODES shows)",
                    ),
                },
            };
            if m.set_state(target, MemberState::Removed) {
                out.simple("OK");
            } else {
                out.error(&format!("ERR unknown node {}", format_id(target)));
            }
        }
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
