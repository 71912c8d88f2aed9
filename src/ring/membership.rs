//! What a node knows of its cluster, shared by its loops: the layout (spread by gossip), the
//! ring built from it, and each peer's liveness (local: phi-accrual over heartbeats). Requests
//! read an immutable [`View`], rebuilt only when the layout or a liveness changes; the loops
//! notice by [`Membership::generation`] and keep their own copy of the `Arc` meanwhile.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::{info, warn};

use super::detector::{Liveness, PhiDetector};
use super::layout::{Layout, Member, MemberState};
use super::partition::{Ring, RingError, RingNode};
use super::NodeId;

mod moves;
#[cfg(test)]
mod tests;

/// How often a node sends each peer a heartbeat (its gossip message).
pub const HEARTBEAT_INTERVAL_MS: u64 = 500;

/// Least time between two evaluations of every peer's liveness on heartbeats. A heartbeat
/// updates its sender's liveness at once; the others' (whose phi grows with silence) are
/// re-evaluated on a heartbeat at most this often, and on every gossip tick. Without it each
/// of the 4 (n-1) heartbeats a second scanned all n members: O(n^2) a second, more than a
/// core at 1,000 nodes (docs/scale.md). It delays a conviction by at most this much plus the
/// gap until another peer's next heartbeat (at 64 nodes and more, under a millisecond); with
/// no other peer (two nodes) the tick's scan convicts.
pub const LIVENESS_SCAN_INTERVAL_MS: u64 = 100;

/// The replication settings every node of a cluster must share (checked at the handshake),
/// and this node's defaults for requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    pub partitions: u32,
    pub vnodes: u32,
    pub n: usize,
    pub w: usize,
    pub r: usize,
    pub lww: bool,
    pub hinted_handoff: bool,
    pub phi_convict_threshold: f64,
}

/// One immutable picture of the cluster, for routing requests. The layout and the rings are
/// shared between views: a change of a peer's liveness makes a new view without rebuilding
/// the rings (a node starting among n peers sees n such changes).
pub struct View {
    pub layout: Arc<Layout>,
    /// [`Layout::digest`] of `layout`, computed once per layout change (gossip sends it with
    /// every message).
    pub digest: u64,
    /// Who owns each partition now: reads go here, writes need W acks here.
    pub ring: Arc<Ring>,
    /// While partitions move (a member joins or leaves): who will own each partition once
    /// the moves complete. Writes also go to its new owners and need W acks among them too,
    /// so the new owners miss no write acknowledged during the move (Garage's layout versions).
    pub target: Option<Arc<Ring>>,
    liveness: HashMap<NodeId, Liveness>,
    pub me: NodeId,
}

impl View {
    pub fn layout_version(&self) -> u64 {
        self.layout.version()
    }

    /// The preference list partition `p` will have once the moves complete, when it differs
    /// from today's.
    pub fn moving(&self, p: u32) -> Option<&[NodeId]> {
        let t = self.target.as_ref()?.preference(p);
        (t != self.ring.preference(p)).then_some(t)
    }

    /// Where peers reach `id`.
    pub fn addr(&self, id: NodeId) -> Option<&str> {
        self.layout.get(id).map(|m| m.addr.as_str())
    }

    /// This node's view of `id`'s liveness (itself: up). A peer never heard from is down.
    pub fn liveness(&self, id: NodeId) -> Liveness {
        if id == self.me {
            return Liveness::Up;
        }
        self.liveness.get(&id).copied().unwrap_or(Liveness::Down)
    }

    /// Whether requests should be sent to `id` (suspects still are: only a conviction routes
    /// around a node).
    pub fn reachable(&self, id: NodeId) -> bool {
        match self.liveness(id) {
            Liveness::Up | Liveness::Suspect => true,
            Liveness::Down => false,
        }
    }
}

/// Counters of the cluster layer (INFO cluster, metrics), from any loop.
#[derive(Default)]
pub struct ClusterStats {
    pub write_quorum_failures: AtomicU64,
    pub read_quorum_failures: AtomicU64,
    pub read_repairs: AtomicU64,
    pub forwarded: AtomicU64,
    pub hints_stored: AtomicU64,
    pub hints_delivered: AtomicU64,
    pub peer_calls: AtomicU64,
    pub peer_call_failures: AtomicU64,
    /// Sum of peer call round trips, microseconds (mean = sum / calls).
    pub peer_call_us: AtomicU64,
    /// The cluster's live keys as the last DBSIZE or RANDOMKEY on this node counted them, and
    /// when (ms since the epoch; 0: never). INFO shows them without calling peers.
    pub cluster_keys: AtomicU64,
    pub cluster_keys_at_ms: AtomicU64,
    /// Tombstone collection (cluster::gc): dead keys past their grace taken as candidates;
    /// those every replica confirmed holding; keys purged here by it (own candidates and
    /// peers' TOMB_PURGE); candidates not purged because a replica was down, unreachable,
    /// failed or held something newer (retried later).
    pub gc_candidates: AtomicU64,
    pub gc_confirmed: AtomicU64,
    pub gc_purged: AtomicU64,
    pub gc_refused: AtomicU64,
    /// Hints dropped unsent because they were older than the tombstone grace.
    pub hints_expired: AtomicU64,
    /// How long this node was away before this start, as its last-alive stamp says (ms; 0:
    /// first start or no stamp), and whether that was longer than the tombstone grace.
    pub last_absence_ms: AtomicU64,
    pub stale_start: std::sync::atomic::AtomicBool,
    /// Anti-entropy (cluster::aae).
    pub aae: super::aae::AaeStats,
    /// Hints this node holds, per owner: (owner, count, age of the oldest in ms), refreshed
    /// by the cluster layer each heartbeat.
    hints_pending: Mutex<Vec<(NodeId, u64, u64)>>,
    /// This node's incoming partition copies, refreshed by the cluster layer's copy task.
    streaming: Mutex<StreamInfo>,
    /// Calls to each peer (each link keeps its peer's counters: no lock per call).
    per_peer: Mutex<HashMap<NodeId, Arc<PeerCounters>>>,
}

/// Where this node's incoming partition copies stand (INFO cluster).
#[derive(Debug, Default, Clone)]
pub struct StreamInfo {
    pub phase: &'static str,
    pub partitions: u32,
    pub partitions_done: u32,
    pub bytes: u64,
    pub keys: u64,
    pub bytes_resent: u64,
    /// Bytes copied by this process (since its start).
    pub session_bytes: u64,
    pub rate_bps: u64,
    pub eta_secs: u64,
    /// Partitions whose owners change in the current layout (cluster-wide).
    pub moving: u32,
    /// On the node that commits the current move: every receiver's copies, summed
    /// (partitions, done, bytes, bytes/s).
    pub moves: (u32, u32, u64, u64),
    pub dropped_keys: u64,
}

/// Calls to one peer, from every loop's link to it.
#[derive(Default)]
pub struct PeerCounters {
    pub id: NodeId,
    calls: AtomicU64,
    failures: AtomicU64,
    us: AtomicU64,
}

impl PeerCounters {
    pub fn record(&self, us: u64, ok: bool) {
        self.calls.fetch_add(1, Relaxed);
        self.us.fetch_add(us, Relaxed);
        if !ok {
            self.failures.fetch_add(1, Relaxed);
        }
    }
}

impl ClusterStats {
    /// Counts one finished call to a peer (INFO cluster); its round trip in microseconds (0
    /// if it got no answer).
    pub fn record_call(&self, us: u64, ok: bool) {
        self.peer_calls.fetch_add(1, Relaxed);
        self.peer_call_us.fetch_add(us, Relaxed);
        if !ok {
            self.peer_call_failures.fetch_add(1, Relaxed);
        }
    }

    /// The counters of calls to `peer` (a link looks them up once and keeps them).
    pub fn peer(&self, peer: NodeId) -> Arc<PeerCounters> {
        let mut m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(peer)
            .or_insert_with(|| {
                Arc::new(PeerCounters {
                    id: peer,
                    ..Default::default()
                })
            })
            .clone()
    }

    /// Per-peer (id, calls, failures, total microseconds), by id.
    pub fn per_peer(&self) -> Vec<(NodeId, u64, u64, u64)> {
        let m = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m
            .iter()
            .map(|(id, c)| {
                let r = |a: &AtomicU64| a.load(Relaxed);
                (*id, r(&c.calls), r(&c.failures), r(&c.us))
            })
            .collect();
        v.sort();
        v
    }
}

struct Inner {
    layout: Layout,
    detectors: HashMap<NodeId, PhiDetector>,
    liveness: HashMap<NodeId, Liveness>,
    /// Addresses to dial whose node is not known yet (--peers, CLUSTER JOIN).
    seeds: Vec<String>,
    /// The layout digest each peer last sent in gossip: when every reachable member's equals
    /// this node's, they all route with the same layout.
    heard: HashMap<NodeId, u64>,
    /// The other members of the layout restored at start (`restore`).
    restored: Vec<NodeId>,
    /// When every peer's liveness was last evaluated (ms).
    scanned_ms: u64,
}

pub struct Membership {
    pub me: NodeId,
    pub settings: Settings,
    inner: Mutex<Inner>,
    view: Mutex<Arc<View>>,
    /// Bumped whenever the view changes.
    generation: AtomicU64,
    pub stats: ClusterStats,
}

impl Membership {
    /// This node, alone in its layout in `state` (active, or joining a cluster), with `seeds`
    /// to contact.
    pub fn new(
        me: NodeId,
        settings: Settings,
        addr: &str,
        zone: &str,
        state: MemberState,
        seeds: Vec<String>,
    ) -> Result<Membership, RingError> {
        let mut layout = Layout::new();
        layout.set(me, addr, zone, state);
        let view = build_view(me, &settings, layout.clone(), HashMap::new())?;
        Ok(Membership {
            me,
            settings,
            inner: Mutex::new(Inner {
                layout,
                detectors: HashMap::new(),
                liveness: HashMap::new(),
                seeds,
                heard: HashMap::new(),
                restored: Vec::new(),
                scanned_ms: 0,
            }),
            view: Mutex::new(Arc::new(view)),
            generation: AtomicU64::new(1),
            stats: ClusterStats::default(),
        })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current view.
    pub fn view(&self) -> Arc<View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes whenever [`Membership::view`] does.
    pub fn generation(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The layout, for gossip (shared with the current view: no copy).
    pub fn layout(&self) -> Arc<Layout> {
        self.view().layout.clone()
    }

    /// Publishes a new view after a change of the layout: the rings are rebuilt.
    fn publish(&self, inner: &Inner) {
        match build_view(
            self.me,
            &self.settings,
            inner.layout.clone(),
            inner.liveness.clone(),
        ) {
            Ok(v) => self.set_view(v),
            // Settings were validated at start-up, so the ring always builds.
            Err(e) => warn!(error = %e, "can't build the ring for the new layout"),
        }
    }

    /// Publishes a new view after a change of liveness only: same layout, same rings.
    fn publish_liveness(&self, inner: &Inner) {
        let cur = self.view();
        self.set_view(View {
            layout: cur.layout.clone(),
            digest: cur.digest,
            ring: cur.ring.clone(),
            target: cur.target.clone(),
            liveness: inner.liveness.clone(),
            me: self.me,
        });
    }

    fn set_view(&self, v: View) {
        *self.view.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
        self.generation.fetch_add(1, Relaxed);
    }

    /// Merges the layout this node saved before it stopped (at start, before any peer is
    /// heard): like gossip, entries newer than this node's win; nothing is logged per member.
    /// Not this node's own entry: its state at start comes from what the data directory
    /// records for sure (`cluster::open`), and the file may be a tick older than a change of
    /// it (a node admitted just before a crash would come back joining).
    pub fn restore(&self, mut members: Vec<Member>) {
        members.retain(|m| m.id != self.me);
        let mut inner = self.inner();
        inner.restored = members.iter().map(|m| m.id).collect();
        if inner.layout.merge(members) {
            self.publish(&inner);
        }
    }

    /// How many members of the restored layout (still in the cluster) this node has not
    /// heard from since it started: until none, the layout may be older than the cluster's.
    pub fn restored_unheard(&self) -> usize {
        let inner = self.inner();
        inner
            .restored
            .iter()
            .filter(|id| !inner.heard.contains_key(id))
            .filter(|&&id| {
                inner
                    .layout
                    .get(id)
                    .is_some_and(|m| m.state != MemberState::Removed)
            })
            .count()
    }

    /// Merges members heard from a peer; whether the layout changed. Each change is logged
    /// once, here.
    pub fn merge(&self, members: Vec<Member>) -> bool {
        let mut inner = self.inner();
        let mut changed = false;
        for m in members {
            let before = inner.layout.get(m.id).map(|o| (o.state, o.addr.clone()));
            let (id, state, addr) = (m.id, m.state, m.addr.clone());
            if inner.layout.merge_member(m) {
                changed = true;
                match before {
                    None => {
                        info!(node = %format_id(id), %addr, state = state.name(), "node joined the layout")
                    }
                    Some((s, a)) if s != state || a != addr => {
                        info!(node = %format_id(id), %addr, from = s.name(), to = state.name(), "node changed in the layout")
                    }
                    Some(_) => {}
                }
            }
        }
        if changed {
            self.publish(&inner);
        }
        changed
    }

    /// Sets this node's own entry (its address, zone, state), bumping its version.
    pub fn set_self(&self, addr: &str, zone: &str, state: MemberState) -> bool {
        let mut inner = self.inner();
        let changed = inner.layout.set(self.me, addr, zone, state);
        if changed {
            info!(node = %format_id(self.me), state = state.name(), "this node changed its layout entry");
            self.publish(&inner);
        }
        changed
    }

    /// An operator action on a member (CLUSTER LEAVE <id>): whether it is known.
    pub fn set_state(&self, id: NodeId, state: MemberState) -> bool {
        let mut inner = self.inner();
        if inner.layout.get(id).is_none() {
            return false;
        }
        if inner.layout.set_state(id, state) {
            info!(node = %format_id(id), state = state.name(), "operator changed a node's state");
            self.publish(&inner);
        }
        true
    }

    /// A heartbeat from `id` arrived now: its liveness is updated at once, every other
    /// peer's at most every [`LIVENESS_SCAN_INTERVAL_MS`].
    pub fn heartbeat(&self, id: NodeId, now_ms: u64) {
        let mut inner = self.inner();
        inner
            .detectors
            .entry(id)
            .or_insert_with(|| PhiDetector::watching_from(HEARTBEAT_INTERVAL_MS, now_ms))
            .heartbeat(now_ms);
        if now_ms.saturating_sub(inner.scanned_ms) >= LIVENESS_SCAN_INTERVAL_MS {
            self.scan_liveness(&mut inner, now_ms);
        } else if id != self.me
            && inner.layout.get(id).is_some()
            && self.evaluate(&mut inner, id, now_ms)
        {
            self.publish_liveness(&inner);
        }
    }

    /// Re-evaluates every peer's liveness; logs and publishes changes.
    pub fn check_liveness(&self, now_ms: u64) {
        let mut inner = self.inner();
        self.scan_liveness(&mut inner, now_ms);
    }

    fn scan_liveness(&self, inner: &mut Inner, now_ms: u64) {
        inner.scanned_ms = now_ms;
        let ids: Vec<NodeId> = inner
            .layout
            .members()
            .map(|m| m.id)
            .filter(|&id| id != self.me)
            .collect();
        let mut changed = false;
        for id in ids {
            changed |= self.evaluate(inner, id, now_ms);
        }
        if changed {
            self.publish_liveness(inner);
        }
    }

    /// Evaluates peer `id`'s liveness now (never heard from: down); logs a change and says
    /// whether there was one.
    fn evaluate(&self, inner: &mut Inner, id: NodeId, now_ms: u64) -> bool {
        let now = match inner.detectors.get(&id) {
            Some(d) => d.liveness(now_ms, self.settings.phi_convict_threshold),
            None => Liveness::Down,
        };
        let before = inner.liveness.insert(id, now);
        if before == Some(now) {
            return false;
        }
        let from = before.map_or("unknown", liveness_name);
        info!(node = %format_id(id), from, to = liveness_name(now), "peer liveness changed");
        true
    }

    /// Peer `id` gossiped with layout digest `digest`.
    pub fn heard_digest(&self, id: NodeId, digest: u64) {
        self.inner().heard.insert(id, digest);
    }

    /// Whether every member this node can reach (not removed) last gossiped this node's
    /// layout digest: they route with the same layout. Members that are down coordinate
    /// nothing; they learn the layout by gossip when they return.
    pub fn converged(&self) -> bool {
        let inner = self.inner();
        let view = self.view();
        let mine = view.digest;
        let all = inner
            .layout
            .members()
            .filter(|m| m.id != self.me && m.state != MemberState::Removed)
            .filter(|m| view.reachable(m.id))
            .all(|m| inner.heard.get(&m.id) == Some(&mine));
        all
    }

    pub fn add_seed(&self, addr: String) {
        let mut inner = self.inner();
        if !inner.seeds.contains(&addr) {
            inner.seeds.push(addr);
        }
    }

    /// Addresses to dial that no known member has.
    pub fn seeds(&self) -> Vec<String> {
        let inner = self.inner();
        inner
            .seeds
            .iter()
            .filter(|s| !inner.layout.members().any(|m| &m.addr == *s))
            .cloned()
            .collect()
    }
}

impl Membership {
    pub fn set_streaming(&self, v: StreamInfo) {
        *self
            .stats
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = v;
    }

    pub fn streaming(&self) -> StreamInfo {
        self.stats
            .streaming
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_hints_pending(&self, v: Vec<(NodeId, u64, u64)>) {
        *self
            .stats
            .hints_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = v;
    }

    pub fn hints_pending(&self) -> Vec<(NodeId, u64, u64)> {
        self.stats
            .hints_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A node id as CLUSTER NODES and the logs show it: 16 hex digits.
pub fn format_id(id: NodeId) -> String {
    format!("{id:016x}")
}

fn build_view(
    me: NodeId,
    s: &Settings,
    layout: Layout,
    liveness: HashMap<NodeId, Liveness>,
) -> Result<View, RingError> {
    let digest = layout.digest();
    let nodes: Vec<RingNode> = layout
        .owners()
        .map(|m| RingNode {
            id: m.id,
            zone: m.zone.clone(),
        })
        .collect();
    let ring = Ring::build(s.partitions, s.vnodes, s.n, &nodes)?;
    let target = if layout.in_transition() {
        let future: Vec<RingNode> = layout
            .future_owners()
            .map(|m| RingNode {
                id: m.id,
                zone: m.zone.clone(),
            })
            .collect();
        Some(Arc::new(Ring::build(s.partitions, s.vnodes, s.n, &future)?))
    } else {
        None
    };
    Ok(View {
        layout: Arc::new(layout),
        digest,
        ring: Arc::new(ring),
        target,
        liveness,
        me,
    })
}

/// A liveness as CLUSTER NODES and the logs show it.
pub fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Up => "up",
        Liveness::Suspect => "suspect",
        Liveness::Down => "down",
    }
}
