//! The same measurements under turmoil, the deterministic simulator of the rest of the
//! project's fault work: each simulated host runs a real [`Membership`] (merge, heartbeat,
//! check_liveness, the view and ring rebuilds) and the GOSSIP exchange of `cluster::gossip` /
//! `cluster::serve` over simulated UDP datagrams framed by the real encoders. Practical up to
//! a few hundred nodes (every host is a runtime stepped every millisecond of simulated time);
//! it cross-checks the discrete-event loop of [`crate::gossip`] at 64 nodes.
//!
//! Differences from the real node, all outside membership: datagrams instead of TCP links (no
//! handshake; a peer is known by its address), no peer timeout (a late answer still counts).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringkv::ring::layout::{Layout, MemberState};
use ringkv::ring::membership::{Membership, HEARTBEAT_INTERVAL_MS};
use ringkv::ring::{Liveness, NodeId};
use ringkv_proto::frame::{decode_frame, FLAG_REPLY};
use ringkv_proto::peer::{self, GossipBody, PeerRequest};
use ringkv_proto::{FrameWriter, PeerOpcode, ReplySink, Value};

use crate::ring_stats::{node_ids, RingShape};
use crate::rng::Rng;

const PORT: u16 = 7379;
/// Largest datagram: a GOSSIP with a few hundred members.
const MAX_DATAGRAM_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct TurmoilConfig {
    pub nodes: usize,
    pub seed: u64,
    pub warmup_ms: u64,
    /// Time allowed for a change to spread before the kill.
    pub change_watch_ms: u64,
    pub after_kill_ms: u64,
    pub max_latency_ms: u64,
    /// turmoil's step: every host runs this much simulated time per step (the resolution of
    /// every timing; a message arrives at a step boundary).
    pub tick_ms: u64,
}

impl TurmoilConfig {
    pub fn new(nodes: usize, seed: u64) -> TurmoilConfig {
        TurmoilConfig {
            nodes,
            seed,
            warmup_ms: 10_000,
            change_watch_ms: 3_000,
            after_kill_ms: 6_000,
            max_latency_ms: 2,
            tick_ms: 1,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TurmoilReport {
    /// From the change to the last live node holding it (ms; infinite if one never did).
    pub reach_all_ms: f64,
    /// From the change until its origin's `Membership::converged()` (ms).
    pub origin_converged_ms: f64,
    /// From the kill to each live node's view showing it Down: min, median, max (ms).
    pub down_ms: [f64; 3],
    pub not_convicted: usize,
    /// Live peers some node's view showed Down (after the warm-up).
    pub false_down: usize,
}

/// What the driver reads of each host.
#[derive(Default)]
struct Shared {
    members: Vec<Option<Rc<Membership>>>,
}

fn sim_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

fn host_name(i: usize) -> String {
    format!("n{i}")
}

/// Runs one turmoil simulation: warm-up, one layout change, one kill.
pub fn run(cfg: &TurmoilConfig) -> Result<TurmoilReport, Box<dyn std::error::Error>> {
    let mut root = Rng::new(cfg.seed);
    let ids = node_ids(&mut root.fork(1), cfg.nodes);
    let mut plan = root.fork(2);
    let mut layout = Layout::new();
    for (i, &id) in ids.iter().enumerate() {
        layout.set(
            id,
            &format!("{}:{PORT}", host_name(i)),
            "",
            MemberState::Active,
        );
    }
    let end_ms = cfg.warmup_ms + cfg.change_watch_ms + cfg.after_kill_ms;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_millis(end_ms + 1_000))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(cfg.max_latency_ms))
        .udp_capacity(4 * cfg.nodes + 64)
        .tick_duration(Duration::from_millis(cfg.tick_ms.max(1)))
        .rng_seed(cfg.seed)
        .build();
    let shared = Rc::new(RefCell::new(Shared {
        members: vec![None; cfg.nodes],
    }));
    for i in 0..cfg.nodes {
        let (shared, layout, ids) = (shared.clone(), layout.clone(), ids.clone());
        let phase = plan.below(HEARTBEAT_INTERVAL_MS);
        sim.host(host_name(i), move || {
            host(i, ids.clone(), layout.clone(), shared.clone(), phase)
        });
    }
    let victim = 1 + plan.below(cfg.nodes as u64 - 1) as usize;
    let origin = plan.below(cfg.nodes as u64) as usize;
    let target = ids[plan.below(cfg.nodes as u64) as usize];
    let mut d = Driver::new(cfg.nodes, victim);
    let (change_at, kill_at) = (cfg.warmup_ms, cfg.warmup_ms + cfg.change_watch_ms);
    while (sim.elapsed().as_millis() as u64) < end_ms {
        sim.step()?;
        let now = sim.elapsed().as_millis() as u64;
        let sh = shared.borrow();
        if now >= change_at && d.change.is_none() {
            if let Some(m) = &sh.members[origin] {
                m.set_state(target, MemberState::Leaving);
                d.change = Some((m.layout().digest(), now));
            }
        }
        if now >= kill_at && d.killed_at.is_none() {
            drop(sh);
            sim.crash(host_name(victim));
            d.killed_at = Some(now);
            continue;
        }
        d.observe(&sh, &ids, now, origin, cfg.warmup_ms);
    }
    Ok(d.report())
}

/// Observes the hosts after every step.
struct Driver {
    victim: usize,
    change: Option<(u64, u64)>,
    killed_at: Option<u64>,
    reach: Vec<Option<u64>>,
    converged: Option<u64>,
    down: Vec<Option<u64>>,
    generation: Vec<u64>,
    false_down: std::collections::HashSet<(usize, NodeId)>,
}

impl Driver {
    fn new(nodes: usize, victim: usize) -> Driver {
        Driver {
            victim,
            change: None,
            killed_at: None,
            reach: vec![None; nodes],
            converged: None,
            down: vec![None; nodes],
            generation: vec![0; nodes],
            false_down: Default::default(),
        }
    }

    fn observe(&mut self, sh: &Shared, ids: &[NodeId], now: u64, origin: usize, warm: u64) {
        for (i, m) in sh.members.iter().enumerate() {
            let Some(m) = m else { continue };
            if i == self.victim && self.killed_at.is_some() {
                continue;
            }
            if self.change.is_some() && i == origin && self.converged.is_none() && m.converged() {
                self.converged = Some(now);
            }
            // Layout and liveness changes bump the generation: look again only then.
            let g = m.generation();
            if g == self.generation[i] {
                continue;
            }
            self.generation[i] = g;
            let view = m.view();
            if let Some((digest, _)) = self.change {
                if self.reach[i].is_none() && view.layout.digest() == digest {
                    self.reach[i] = Some(now);
                }
            }
            for (j, &id) in ids.iter().enumerate() {
                if j == i || view.liveness(id) != Liveness::Down {
                    continue;
                }
                if j == self.victim && self.killed_at.is_some() {
                    self.down[i].get_or_insert(now);
                } else if now > warm {
                    self.false_down.insert((i, id));
                }
            }
        }
    }

    fn report(&self) -> TurmoilReport {
        let live = |i: &usize| *i != self.victim;
        let n = self.reach.len();
        let after = |t: Option<u64>, from: Option<u64>| match (t, from) {
            (Some(t), Some(f)) => (t - f) as f64,
            _ => f64::INFINITY,
        };
        let change_at = self.change.map(|c| c.1);
        let reach_all = (0..n)
            .filter(live)
            .map(|i| after(self.reach[i], change_at))
            .fold(0.0, f64::max);
        let downs: Vec<f64> = (0..n)
            .filter(live)
            .filter_map(|i| self.down[i].map(|t| after(Some(t), self.killed_at)))
            .collect();
        TurmoilReport {
            reach_all_ms: reach_all,
            origin_converged_ms: after(self.converged, change_at),
            not_convicted: (0..n)
                .filter(live)
                .filter(|&i| self.down[i].is_none())
                .count(),
            down_ms: crate::gossip::spread(downs),
            false_down: self.false_down.len(),
        }
    }
}

/// One host: a real `Membership` and the GOSSIP exchange over datagrams.
async fn host(
    me: usize,
    ids: Vec<NodeId>,
    layout: Layout,
    shared: Rc<RefCell<Shared>>,
    phase_ms: u64,
) -> turmoil::Result {
    let addr = format!("{}:{PORT}", host_name(me));
    let m = Rc::new(Membership::new(
        ids[me],
        RingShape::default().settings(),
        &addr,
        "",
        MemberState::Active,
        Vec::new(),
    )?);
    m.merge(layout.members().cloned().collect());
    shared.borrow_mut().members[me] = Some(m.clone());
    let by_ip: HashMap<IpAddr, NodeId> = (0..ids.len())
        .map(|i| (turmoil::lookup(host_name(i)), ids[i]))
        .collect();
    let sock = turmoil::net::UdpSocket::bind(("0.0.0.0", PORT)).await?;
    tokio::time::sleep(Duration::from_millis(phase_ms)).await;
    let mut tick = tokio::time::interval(Duration::from_millis(HEARTBEAT_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The digest each peer last answered with (cluster::gossip's `heard`).
    let mut answered: HashMap<NodeId, u64> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES];
    let mut out = BytesMut::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let layout = m.layout();
                let digest = layout.digest();
                for peer in layout.members() {
                    if peer.id == m.me || peer.state == MemberState::Removed {
                        continue;
                    }
                    let full = answered.get(&peer.id) != Some(&digest);
                    let body = GossipBody {
                        digest,
                        members: if full { layout.members().cloned().collect() } else { Vec::new() },
                    };
                    out.clear();
                    peer::encode_gossip(1, &body, &mut out);
                    sock.send_to(&out, peer.addr.as_str()).await?;
                }
                m.check_liveness(sim_ms());
            }
            r = sock.recv_from(&mut buf) => {
                let (len, from) = r?;
                let Some(&peer_id) = by_ip.get(&from.ip()) else { continue };
                on_datagram(&m, &sock, &buf[..len], from, peer_id, &mut answered, &mut out).await?;
            }
        }
    }
}

/// `cluster::serve` for a request, `cluster::gossip::exchange` for an answer.
async fn on_datagram(
    m: &Membership,
    sock: &turmoil::net::UdpSocket,
    datagram: &[u8],
    from: SocketAddr,
    peer_id: NodeId,
    answered: &mut HashMap<NodeId, u64>,
    out: &mut BytesMut,
) -> turmoil::Result {
    let Some((header, payload, _)) = decode_frame(datagram, MAX_DATAGRAM_BYTES)? else {
        return Ok(());
    };
    if header.flags & FLAG_REPLY != 0 {
        let Value::Bulk(b) = Value::decode(&Bytes::copy_from_slice(payload))? else {
            return Ok(());
        };
        let theirs = GossipBody::decode(&b)?;
        m.heartbeat(peer_id, sim_ms());
        m.heard_digest(peer_id, theirs.digest);
        answered.insert(peer_id, theirs.digest);
        m.merge(theirs.members);
        return Ok(());
    }
    let body = match PeerRequest::parse(header.opcode, payload)? {
        PeerRequest::Gossip(body) => body,
        other => return Err(format!("unexpected {:?}", other.opcode()).into()),
    };
    m.heartbeat(peer_id, sim_ms());
    m.heard_digest(peer_id, body.digest);
    m.merge(body.members);
    let layout = m.layout();
    let members = if layout.digest() == body.digest {
        Vec::new()
    } else {
        layout.members().cloned().collect()
    };
    let mut encoded = BytesMut::new();
    GossipBody {
        digest: layout.digest(),
        members,
    }
    .encode(&mut encoded);
    out.clear();
    let mut w = FrameWriter::new(out, header.request_id, PeerOpcode::Gossip as u8);
    w.bulk(&encoded);
    w.finish();
    sock.send_to(&out[..], from).await?;
    Ok(())
}
