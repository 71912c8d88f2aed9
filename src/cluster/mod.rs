//! The cluster layer: peer links (handshake, multiplexed calls), gossip and heartbeats, the
//! coordinator of quorum reads and writes, read repair and hinted handoff. Above `cmd` (it
//! runs commands on the local replica) and below `net` (connections hand it their keyed
//! commands); placement and membership logic without sockets is in `ring`.
//!
//! ```text
//! client ─▶ any node ─(not a replica: FORWARD, one hop)─▶ coordinating replica
//!   coordinator: runs the command on its replica (new version, own dot), durable here ─▶
//!   REPLICATE to the other replicas in parallel ─▶ reply at W durable acks; reads FETCH
//!   from all N, reply at R, repair the stale ones in the background; a replica that is
//!   down gets a hint instead.
//! ```

pub mod aae;
pub mod alive;
pub mod coordinator;
pub mod gc;
pub mod gossip;
pub mod handshake;
pub mod hints;
pub mod keyspace;
pub mod layout_file;
pub mod link;
pub mod multi;
pub mod open;
mod read;
pub mod rename;
mod replicate;
pub mod scratch;
pub mod serve;
pub mod stream;
pub mod sys;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::node::Node;
use crate::ring::membership::{Membership, View};

/// What the cluster layer needs of the event loop it runs on (implemented by net's loop
/// context): the node, and waiting for WAL positions to be durable.
pub trait LocalLoop {
    fn node(&self) -> &Arc<Node>;
    fn loop_id(&self) -> usize;
    /// Asks for the WAL writers of these shards to be woken.
    fn wake_writers(&self, marks: &[(u32, u64)]);
    /// Some(Ok) once every mark is durable, Some(Err) if the disk failed them.
    fn durable_now(&self, marks: &[(u32, u64)]) -> Option<Result<(), Arc<str>>>;
    /// Completes at the next change of any shard's durable state.
    fn durable_changed(&self) -> tokio::sync::futures::Notified<'_>;
    /// The cluster state of this loop.
    fn cluster(&self) -> Option<&Rc<LoopCluster>>;
}

/// Waits until `marks` (WAL positions of this node) are durable as `--fsync` requires, or the
/// disk fails them. Everything this node sends out of its own store waits so (a client reply,
/// a FETCH answer, a REPLICATE it coordinated, a read repair, an anti-entropy push): a peer
/// must never hold a version of this node that a crash here could lose, or this node's next
/// dot for that key, minted without it, would cover it (docs/cluster.md, "Versions after a
/// crash").
pub(crate) async fn wait_durable(lp: &dyn LocalLoop, marks: &[(u32, u64)]) -> Result<(), String> {
    if marks.is_empty() {
        return Ok(());
    }
    loop {
        let changed = lp.durable_changed();
        match lp.durable_now(marks) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => return Err(format!("ERR the WAL failed: {e}")),
            None => lp.wake_writers(marks),
        }
        changed.await;
    }
}

/// The WAL position of the shard holding `key`: what must be durable before anything read
/// from that shard now leaves this node (empty when the node keeps no WAL).
pub(crate) fn shard_mark(lp: &dyn LocalLoop, key: &[u8]) -> crate::durability::Marks {
    let store = &lp.node().store;
    let shard = store.shard_of(ringkv_proto::key_hash(key));
    let seq = store.lock(shard).logged();
    seq.map(|q| (shard as u32, q)).into_iter().collect()
}

/// What every loop of a node shares about its cluster.
pub struct Cluster {
    pub membership: Arc<Membership>,
    pub secret: Vec<u8>,
    /// This node's advertised address (`--advertise`, else the bound address, known once the
    /// listener is bound) and zone (sent in the handshake and gossip).
    advertise: std::sync::OnceLock<String>,
    pub zone: String,
    pub hints: hints::Hints,
    /// This node's incoming partition copies (joins and leaves).
    pub streams: stream::Streams,
    /// Peer handshakes in progress on any loop (not yet authenticated: bounded).
    pub handshakes: std::sync::atomic::AtomicUsize,
    /// The layout as this node last saved it (restored at start).
    pub layout_file: layout_file::LayoutFile,
}

impl Cluster {
    pub fn new(
        membership: Arc<Membership>,
        secret: Vec<u8>,
        advertise: Option<String>,
        zone: String,
        hints: hints::Hints,
        streams: stream::Streams,
        layout_file: layout_file::LayoutFile,
    ) -> Cluster {
        let a = std::sync::OnceLock::new();
        if let Some(addr) = advertise {
            let _ = a.set(addr);
        }
        Cluster {
            membership,
            secret,
            advertise: a,
            zone,
            hints,
            streams,
            handshakes: std::sync::atomic::AtomicUsize::new(0),
            layout_file,
        }
    }

    pub fn advertise(&self) -> &str {
        self.advertise.get().map_or("", |s| s.as_str())
    }

    /// The listener is bound: without --advertise, peers dial the bound address.
    pub fn bound(&self, addr: std::net::SocketAddr) {
        let _ = self.advertise.set(addr.to_string());
        let view = self.membership.view();
        let state = view
            .layout
            .get(view.me)
            .map_or(crate::ring::layout::MemberState::Active, |m| m.state);
        self.membership
            .set_self(self.advertise(), &self.zone, state);
    }
}

/// One loop's links to its peers (dialed lazily, by address) and its cached view.
pub struct LoopCluster {
    pub shared: Arc<Cluster>,
    links: RefCell<HashMap<String, Rc<link::Link>>>,
    view: RefCell<(u64, Arc<View>)>,
}

impl LoopCluster {
    pub fn new(shared: Arc<Cluster>) -> LoopCluster {
        let view = (shared.membership.generation(), shared.membership.view());
        LoopCluster {
            shared,
            links: RefCell::new(HashMap::new()),
            view: RefCell::new(view),
        }
    }

    /// The current view (refreshed only when membership changed).
    pub fn view(&self) -> Arc<View> {
        let m = &self.shared.membership;
        let g = m.generation();
        let mut v = self.view.borrow_mut();
        if v.0 != g {
            *v = (g, m.view());
        }
        v.1.clone()
    }

    /// The link to node `node` as `view` places it, if its address still belongs to it.
    pub fn link_to(
        &self,
        lp: &Rc<dyn LocalLoop>,
        view: &View,
        node: crate::ring::NodeId,
    ) -> Result<Rc<link::Link>, String> {
        let addr = view
            .addr(node)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("node {node:016x} has no address"))?;
        let link = self.link(lp, addr);
        if link.peer.get().is_some_and(|p| p != node) {
            return Err(format!("address {addr} now belongs to another node"));
        }
        Ok(link)
    }

    /// The link to `addr`, dialed (in the background) the first time it is asked for.
    pub fn link(&self, lp: &Rc<dyn LocalLoop>, addr: &str) -> Rc<link::Link> {
        if let Some(l) = self.links.borrow().get(addr) {
            return l.clone();
        }
        let l = Rc::new(link::Link::new(
            addr.to_owned(),
            self.shared.membership.clone(),
        ));
        self.links.borrow_mut().insert(addr.to_owned(), l.clone());
        tokio::task::spawn_local(link::dial_forever(lp.clone(), l.clone()));
        l
    }
}

/// Keeps this loop's links to every member dialed, so that the first request after a start or
/// a join finds them up (runs on every loop; gossip keeps loop 0's busy too).
pub async fn keep_links(lp: Rc<dyn LocalLoop>) {
    let Some(cl) = lp.cluster().cloned() else {
        return;
    };
    let mut shutdown = lp.node().shutdown_signal();
    let mut tick = sys::interval(std::time::Duration::from_millis(
        crate::ring::membership::HEARTBEAT_INTERVAL_MS,
    ));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let view = cl.view();
        for m in view.layout.members() {
            if m.id != view.me
                && m.state != crate::ring::layout::MemberState::Removed
                && !m.addr.is_empty()
            {
                let link = cl.link(&lp, &m.addr);
                // Heard from (on its own link to this node) while ours waits to redial.
                if view.reachable(m.id) {
                    link.redial_now();
                }
            }
        }
    }
}
