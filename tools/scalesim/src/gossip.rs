//! A seeded discrete-event simulation of the cluster's gossip and failure detection, driving
//! the project's own types: each node keeps a real [`Layout`] (merged with `merge_member`, its
//! digest by `Layout::digest`), a real [`PhiDetector`] per watched peer (classified with
//! [`classify`] at the default threshold), and sends messages sized by the real encoders.
//!
//! The rules are those of `cluster::gossip` and `cluster::serve`:
//! - every [`HEARTBEAT_INTERVAL_MS`] each node sends GOSSIP to every member of its layout that
//!   is not removed (full mesh), with its layout digest, and its members only when the digest
//!   that peer last answered with differs from its own;
//! - the receiver counts the request as the sender's heartbeat, notes its digest, merges the
//!   members, and answers with its own digest, and its members when the digests differ;
//! - the requester counts the answer as the peer's heartbeat (unless it came after the peer
//!   timeout), notes the digest and merges the members.
//!
//! Liveness is evaluated as `Membership` does: every peer's on each tick, and on a heartbeat
//! when the last such scan is [`LIVENESS_SCAN_INTERVAL_MS`] old (a heartbeat's own sender is
//! up at once, which matters only to the false-positive count below); for the false-positive
//! count, phi is read just before each heartbeat is applied, which is the highest phi the
//! silence reached (phi only grows with silence).
//!
//! What is not modelled: connection set-up and the handshake, TCP (a lost message is a call
//! that never completes, as if the link had dropped it), CPU time (a node answers at once),
//! and the ring rebuild each layout or liveness change causes (its cost is reported apart).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;

use ringkv::ring::detector::{classify, Liveness, PhiDetector};
use ringkv::ring::layout::{Layout, Member, MemberState};
use ringkv::ring::membership::{HEARTBEAT_INTERVAL_MS, LIVENESS_SCAN_INTERVAL_MS};
use ringkv::ring::NodeId;

use crate::ring_stats::node_ids;
use crate::rng::Rng;
use crate::wire::gossip_sizes;

const US_PER_MS: u64 = 1000;

/// The network between every pair of nodes.
#[derive(Debug, Clone, Copy)]
pub struct NetModel {
    /// Fixed one-way delay.
    pub latency_ms: f64,
    /// Mean of an exponential delay added to each message (queueing, scheduling).
    pub jitter_ms: f64,
    /// Probability that a message is lost (its call never completes).
    pub loss: f64,
}

impl Default for NetModel {
    /// One data centre: 0.25 ms plus 0.25 ms mean jitter, nothing lost.
    fn default() -> NetModel {
        NetModel {
            latency_ms: 0.25,
            jitter_ms: 0.25,
            loss: 0.0,
        }
    }
}

/// One run: warm-up, timed layout changes, a quiet stretch, then a node killed.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub nodes: usize,
    pub seed: u64,
    pub net: NetModel,
    /// Nodes that keep a detector for every peer (false-positive count); every node keeps
    /// one for the node that will be killed. All nodes when at least `nodes`.
    pub observers: usize,
    pub phi_convict_threshold: f64,
    pub peer_timeout_ms: u64,
    /// Before the first change: detectors fill with samples.
    pub warmup_ms: u64,
    /// Layout changes (CLUSTER LEAVE / CANCEL of a random member, made at a random node), one
    /// every `change_spacing_ms`.
    pub changes: usize,
    pub change_spacing_ms: u64,
    /// Steady gossip with no change and no fault: the cost and false-positive window.
    pub quiet_ms: u64,
    /// After the kill of one node: how long to watch the others convict it.
    pub after_kill_ms: u64,
}

impl GossipConfig {
    pub fn new(nodes: usize, seed: u64) -> GossipConfig {
        GossipConfig {
            nodes,
            seed,
            net: NetModel::default(),
            observers: 64,
            phi_convict_threshold: ringkv::config::DEFAULT_PHI_CONVICT_THRESHOLD,
            peer_timeout_ms: ringkv::config::DEFAULT_PEER_TIMEOUT_MS,
            warmup_ms: 20_000,
            changes: 5,
            change_spacing_ms: 3_000,
            quiet_ms: 30_000,
            after_kill_ms: 10_000,
        }
    }
}

/// A layout as gossip sends it, shared by every node holding the same one.
struct Snap {
    digest: u64,
    members: Vec<Member>,
    /// Indexes of the members that are not removed (whom a holder gossips with).
    peers: Vec<u32>,
    req_full: u64,
    rep_full: u64,
}

enum Kind {
    Tick(u32),
    Req {
        from: u32,
        to: u32,
        digest: u64,
        snap: Option<Rc<Snap>>,
        sent_us: u64,
    },
    Rep {
        from: u32,
        to: u32,
        digest: u64,
        snap: Option<Rc<Snap>>,
        sent_us: u64,
    },
    Change(usize),
    Kill,
    Quiet(bool),
}

struct Ev {
    at_us: u64,
    seq: u64,
    kind: Kind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Ev) -> bool {
        (self.at_us, self.seq) == (o.at_us, o.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Ev) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    /// Reversed: the heap pops the earliest event (ties in scheduling order).
    fn cmp(&self, o: &Ev) -> Ordering {
        (o.at_us, o.seq).cmp(&(self.at_us, self.seq))
    }
}

struct Node {
    alive: bool,
    layout: Layout,
    snap: Rc<Snap>,
    /// The digest each peer last answered with (`cluster::gossip`'s `heard`): members go
    /// along when it differs from this node's.
    answered: Vec<Option<u64>>,
    /// The digest each peer last sent either way (`Membership::heard_digest`).
    heard: Vec<Option<u64>>,
    /// Detectors by peer index (observers: all peers; others: only the victim's slot).
    watch: HashMap<u32, PhiDetector>,
    /// When every peer's liveness was last evaluated (ms).
    scanned_ms: u64,
    observer: bool,
    msgs_sent: u64,
    bytes_sent: u64,
}

/// Timings of one layout change.
#[derive(Debug, Clone)]
pub struct ChangeResult {
    /// Until the last live node holds the new layout.
    pub reach_all_ms: f64,
    /// Until half the live nodes do.
    pub reach_median_ms: f64,
    /// Until the node that made it has heard the new digest from every live peer (what
    /// `Membership::converged` waits for).
    pub origin_converged_ms: f64,
    /// Gossip bytes sent per node from the change until the next event of the run.
    pub bytes_per_node: f64,
}

/// How the live nodes convicted the killed one.
#[derive(Debug, Clone, Default)]
pub struct KillResult {
    /// From the kill to each live node's first Suspect and Down: min, median, max (ms).
    pub suspect_ms: [f64; 3],
    pub down_ms: [f64; 3],
    /// Live nodes that never convicted it within the watch.
    pub not_convicted: usize,
    pub live: usize,
}

#[derive(Debug, Clone, Default)]
pub struct GossipReport {
    pub nodes: usize,
    pub observers: usize,
    pub sim_ms: u64,
    pub events: u64,
    pub layout_bytes: u64,
    pub changes: Vec<ChangeResult>,
    pub kill: KillResult,
    /// Steady state (the quiet stretch): messages and bytes each node sends per second.
    pub msgs_per_node_s: f64,
    pub bytes_per_node_s: f64,
    /// False positives: (observer, live peer) silences that reached Suspect / Down, and
    /// the pair-seconds watched.
    pub false_suspect: u64,
    pub false_down: u64,
    pub pair_seconds: f64,
    /// Highest phi any observer had for a live peer.
    pub max_phi_live: f64,
}

struct Sim {
    cfg: GossipConfig,
    ids: Vec<NodeId>,
    nodes: Vec<Node>,
    snaps: HashMap<u64, Rc<Snap>>,
    index: HashMap<NodeId, u32>,
    heap: BinaryHeap<Ev>,
    seq: u64,
    now_us: u64,
    net_rng: Rng,
    plan_rng: Rng,
    victim: u32,
    killed_at_us: Option<u64>,
    suspect_at: Vec<Option<u64>>,
    down_at: Vec<Option<u64>>,
    /// The change being timed: its digest, start, origin, when each node got it, when the
    /// origin heard it from each peer.
    change: Option<(u64, u64, u32)>,
    reach: Vec<Option<u64>>,
    origin_heard: Vec<Option<u64>>,
    change_bytes0: u64,
    report: GossipReport,
    quiet_from: Option<(u64, u64, u64)>,
    /// Sizes of a digest-only request and reply.
    empty: (u64, u64),
}

fn addr_of(i: usize) -> String {
    format!(
        "10.{}.{}.{}:7379",
        (i >> 16) & 0xff,
        (i >> 8) & 0xff,
        i & 0xff
    )
}

/// Runs one simulation and reports what it measured.
pub fn run(cfg: &GossipConfig) -> GossipReport {
    let mut sim = Sim::new(cfg.clone());
    sim.run();
    sim.report
}

impl Sim {
    fn new(cfg: GossipConfig) -> Sim {
        let mut root = Rng::new(cfg.seed);
        let ids = node_ids(&mut root.fork(1), cfg.nodes);
        let mut plan_rng = root.fork(2);
        let net_rng = root.fork(3);
        let index: HashMap<NodeId, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        // A running cluster: every node holds the same layout of active members.
        let mut layout = Layout::new();
        for (i, &id) in ids.iter().enumerate() {
            layout.set(id, &addr_of(i), "", MemberState::Active);
        }
        let n = cfg.nodes;
        let victim = 1 + plan_rng.below(n.max(2) as u64 - 1) as u32;
        let observers = cfg.observers.min(n);
        let mut sim = Sim {
            ids,
            nodes: Vec::with_capacity(n),
            snaps: HashMap::new(),
            index,
            heap: BinaryHeap::new(),
            seq: 0,
            now_us: 0,
            net_rng,
            plan_rng,
            victim,
            killed_at_us: None,
            suspect_at: vec![None; n],
            down_at: vec![None; n],
            change: None,
            reach: vec![None; n],
            origin_heard: vec![None; n],
            change_bytes0: 0,
            report: GossipReport {
                nodes: n,
                observers,
                ..Default::default()
            },
            quiet_from: None,
            empty: gossip_sizes(0, &[]),
            cfg,
        };
        let snap = sim.intern(&layout);
        sim.report.layout_bytes = crate::wire::layout_body_bytes(snap.digest, &snap.members);
        for i in 0..n {
            sim.nodes.push(Node {
                alive: true,
                layout: layout.clone(),
                snap: snap.clone(),
                answered: vec![None; n],
                heard: vec![None; n],
                watch: HashMap::new(),
                scanned_ms: 0,
                observer: i < observers,
                msgs_sent: 0,
                bytes_sent: 0,
            });
            // Each node's gossip timer has its own phase.
            let phase = sim.plan_rng.below(HEARTBEAT_INTERVAL_MS * US_PER_MS);
            sim.push(phase, Kind::Tick(i as u32));
        }
        sim.schedule_plan();
        sim
    }

    fn schedule_plan(&mut self) {
        let c = &self.cfg;
        let mut t = c.warmup_ms;
        let spacing = c.change_spacing_ms;
        for k in 0..c.changes {
            self.push(t * US_PER_MS, Kind::Change(k));
            t += spacing;
        }
        let (quiet_start, quiet_ms) = (t, self.cfg.quiet_ms);
        self.push(quiet_start * US_PER_MS, Kind::Quiet(true));
        self.push((quiet_start + quiet_ms) * US_PER_MS, Kind::Quiet(false));
        let kill = quiet_start + quiet_ms;
        self.push(kill * US_PER_MS + 1, Kind::Kill);
        self.report.sim_ms = kill + self.cfg.after_kill_ms;
    }

    fn push(&mut self, at_us: u64, kind: Kind) {
        self.seq += 1;
        self.heap.push(Ev {
            at_us,
            seq: self.seq,
            kind,
        });
    }

    /// The shared snapshot of `layout` (built once per distinct layout).
    fn intern(&mut self, layout: &Layout) -> Rc<Snap> {
        let digest = layout.digest();
        if let Some(s) = self.snaps.get(&digest) {
            return s.clone();
        }
        let members: Vec<Member> = layout.members().cloned().collect();
        let peers = members
            .iter()
            .filter(|m| m.state != MemberState::Removed)
            .filter_map(|m| self.index.get(&m.id).copied())
            .collect();
        let (req_full, rep_full) = gossip_sizes(digest, &members);
        let s = Rc::new(Snap {
            digest,
            members,
            peers,
            req_full,
            rep_full,
        });
        self.snaps.insert(digest, s.clone());
        s
    }

    fn run(&mut self) {
        let end_us = self.report.sim_ms * US_PER_MS;
        while let Some(ev) = self.heap.pop() {
            if ev.at_us > end_us {
                break;
            }
            self.now_us = ev.at_us;
            self.report.events += 1;
            match ev.kind {
                Kind::Tick(i) => self.tick(i),
                Kind::Req {
                    from,
                    to,
                    digest,
                    snap,
                    sent_us,
                } => self.on_request(from, to, digest, snap, sent_us),
                Kind::Rep {
                    from,
                    to,
                    digest,
                    snap,
                    sent_us,
                } => self.on_reply(from, to, digest, snap, sent_us),
                Kind::Change(k) => self.start_change(k),
                Kind::Kill => self.kill(),
                Kind::Quiet(start) => self.quiet(start),
            }
        }
        self.finish_change();
        self.finish();
    }

    fn delay_us(&mut self) -> u64 {
        let net = self.cfg.net;
        let ms = net.latency_ms + self.net_rng.exp(net.jitter_ms);
        (ms * US_PER_MS as f64).round() as u64
    }

    fn lost(&mut self) -> bool {
        let p = self.cfg.net.loss;
        self.net_rng.chance(p)
    }

    fn tick(&mut self, i: u32) {
        let now = self.now_us;
        self.push(now + HEARTBEAT_INTERVAL_MS * US_PER_MS, Kind::Tick(i));
        if !self.nodes[i as usize].alive {
            return;
        }
        self.watch_victim(i, true);
        let snap = self.nodes[i as usize].snap.clone();
        let req_empty = self.empty.0;
        for &p in &snap.peers {
            // A killed process's connections close: its peers' links are down, nothing sent.
            if p == i || !self.nodes[p as usize].alive {
                continue;
            }
            let node = &mut self.nodes[i as usize];
            let full = node.answered[p as usize] != Some(snap.digest);
            node.msgs_sent += 1;
            node.bytes_sent += if full { snap.req_full } else { req_empty };
            if self.lost() {
                continue;
            }
            let at = now + self.delay_us();
            self.push(
                at,
                Kind::Req {
                    from: i,
                    to: p,
                    digest: snap.digest,
                    snap: full.then(|| snap.clone()),
                    sent_us: now,
                },
            );
        }
    }

    fn on_request(&mut self, from: u32, to: u32, digest: u64, snap: Option<Rc<Snap>>, sent: u64) {
        if !self.nodes[to as usize].alive {
            return;
        }
        self.heartbeat(to, from);
        self.nodes[to as usize].heard[from as usize] = Some(digest);
        self.note_heard(to, from, digest);
        if let Some(s) = snap {
            self.merge(to, &s);
        }
        let mine = self.nodes[to as usize].snap.clone();
        let full = mine.digest != digest;
        let node = &mut self.nodes[to as usize];
        node.msgs_sent += 1;
        node.bytes_sent += if full { mine.rep_full } else { self.empty.1 };
        self.watch_victim(to, false);
        if self.lost() {
            return;
        }
        let at = self.now_us + self.delay_us();
        self.push(
            at,
            Kind::Rep {
                from: to,
                to: from,
                digest: mine.digest,
                snap: full.then_some(mine),
                sent_us: sent,
            },
        );
    }

    fn on_reply(&mut self, from: u32, to: u32, digest: u64, snap: Option<Rc<Snap>>, sent: u64) {
        // `sent` is when the call began: an answer after the peer timeout is dropped.
        let timeout_us = self.cfg.peer_timeout_ms * US_PER_MS;
        if !self.nodes[to as usize].alive || self.now_us.saturating_sub(sent) > timeout_us {
            return;
        }
        self.heartbeat(to, from);
        let node = &mut self.nodes[to as usize];
        node.heard[from as usize] = Some(digest);
        node.answered[from as usize] = Some(digest);
        self.note_heard(to, from, digest);
        if let Some(s) = snap {
            self.merge(to, &s);
        }
        self.watch_victim(to, false);
    }

    /// `Membership::heartbeat` for the detectors this node keeps; counts a false suspicion or
    /// conviction when the silence that just ended had reached it.
    fn heartbeat(&mut self, at: u32, from: u32) {
        let node = &mut self.nodes[at as usize];
        if !node.observer && from != self.victim {
            return;
        }
        let now_ms = self.now_us / US_PER_MS;
        let det = node
            .watch
            .entry(from)
            .or_insert_with(|| PhiDetector::watching_from(HEARTBEAT_INTERVAL_MS, now_ms));
        if node.observer {
            let phi = det.phi(now_ms);
            self.report.max_phi_live = self.report.max_phi_live.max(phi);
            match classify(phi, self.cfg.phi_convict_threshold) {
                Liveness::Up => {}
                Liveness::Suspect => self.report.false_suspect += 1,
                Liveness::Down => {
                    self.report.false_suspect += 1;
                    self.report.false_down += 1;
                }
            }
        }
        det.heartbeat(now_ms);
    }

    /// A liveness scan at node `i` (`tick`: always; after a heartbeat: if the last is
    /// [`LIVENESS_SCAN_INTERVAL_MS`] old). After the kill: whether `i` now sees the victim
    /// Suspect or Down.
    fn watch_victim(&mut self, i: u32, tick: bool) {
        let now_ms = self.now_us / US_PER_MS;
        let node = &mut self.nodes[i as usize];
        if !tick && now_ms.saturating_sub(node.scanned_ms) < LIVENESS_SCAN_INTERVAL_MS {
            return;
        }
        node.scanned_ms = now_ms;
        let Some(_) = self.killed_at_us else { return };
        if self.down_at[i as usize].is_some() {
            return;
        }
        let live = match self.nodes[i as usize].watch.get(&self.victim) {
            Some(d) => d.liveness(now_ms, self.cfg.phi_convict_threshold),
            None => Liveness::Down,
        };
        match live {
            Liveness::Up => {}
            Liveness::Suspect => {
                self.suspect_at[i as usize].get_or_insert(self.now_us);
            }
            Liveness::Down => {
                self.suspect_at[i as usize].get_or_insert(self.now_us);
                self.down_at[i as usize] = Some(self.now_us);
            }
        }
    }

    /// `Layout::merge` of a peer's members (entries equal to ours are skipped: merging them
    /// changes nothing, and skipping saves cloning them).
    fn merge(&mut self, i: u32, s: &Snap) {
        let node = &mut self.nodes[i as usize];
        if node.snap.digest == s.digest {
            return;
        }
        let mut changed = false;
        for m in &s.members {
            if node.layout.get(m.id) != Some(m) {
                changed |= node.layout.merge_member(m.clone());
            }
        }
        if !changed {
            return;
        }
        let layout = std::mem::take(&mut self.nodes[i as usize].layout);
        let snap = self.intern(&layout);
        let node = &mut self.nodes[i as usize];
        node.layout = layout;
        node.snap = snap;
        self.note_reach(i);
    }

    fn note_reach(&mut self, i: u32) {
        if let Some((digest, _, _)) = self.change {
            if self.nodes[i as usize].snap.digest == digest {
                self.reach[i as usize].get_or_insert(self.now_us);
            }
        }
    }

    fn note_heard(&mut self, at: u32, from: u32, digest: u64) {
        if let Some((d, _, origin)) = self.change {
            if at == origin && digest == d {
                self.origin_heard[from as usize].get_or_insert(self.now_us);
            }
        }
    }
}

mod phases;
pub use phases::spread;
