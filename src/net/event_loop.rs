//! One event loop: a thread with its own current-thread tokio runtime. It accepts on its own
//! socket, serves the connections it accepted, runs batches other loops hand it for the shards
//! it owns, and expires keys in those shards.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, warn};

use super::forward::RemoteBatch;
use super::{connection, forward, Loops};
use crate::cluster::{LocalLoop, LoopCluster};
use crate::durability::Gate;
use crate::node::{LoopStats, Node};
use crate::sockets::{self, TcpListener};
use crate::util::now_ms;

pub enum LoopMsg {
    /// Commands for shards this loop owns, from a connection on another loop.
    Batch(RemoteBatch),
    /// A connection dealt to this loop (`--accept handoff`).
    Conn(sockets::Handoff),
}

/// What the tasks of one loop share.
pub struct LoopCtx {
    pub id: usize,
    pub node: Arc<Node>,
    pub loops: Arc<Loops>,
    /// Shards whose WAL writer must be woken at the end of this tick (group commit: the
    /// writes of every connection served in the tick go into one round).
    dirty: RefCell<Vec<u32>>,
    flush: Notify,
    /// Holds replies until what they made or show is durable (one follower task per shard
    /// mirrors the writers' state into it).
    gate: Gate,
    /// This loop's peer links and cluster view (cluster mode).
    pub cluster: Option<Rc<LoopCluster>>,
}

impl LocalLoop for LoopCtx {
    fn node(&self) -> &Arc<Node> {
        &self.node
    }

    fn loop_id(&self) -> usize {
        self.id
    }

    fn wake_writers(&self, marks: &[(u32, u64)]) {
        LoopCtx::wake_writers(self, marks)
    }

    fn durable_now(&self, marks: &[(u32, u64)]) -> Option<Result<(), Arc<str>>> {
        LoopCtx::durable_now(self, marks)
    }

    fn durable_changed(&self) -> tokio::sync::futures::Notified<'_> {
        LoopCtx::durable_changed(self)
    }

    fn cluster(&self) -> Option<&Rc<LoopCluster>> {
        self.cluster.as_ref()
    }
}

impl LoopCtx {
    /// Asks for the WAL writers of these shards to be woken once the loop has served every
    /// connection that is ready now.
    pub fn wake_writers(&self, marks: &[(u32, u64)]) {
        let mut d = self.dirty.borrow_mut();
        for &(s, _) in marks {
            if !d.contains(&s) {
                d.push(s);
            }
        }
        self.flush.notify_one();
    }

    /// Whether every mark is durable now (see [`Gate::poll`]).
    #[inline]
    pub fn durable_now(&self, marks: &[(u32, u64)]) -> Option<Result<(), Arc<str>>> {
        if marks.is_empty() {
            return Some(Ok(()));
        }
        self.gate.poll(marks)
    }

    /// Completes at the next change of any shard's durable state (see [`Gate::changed`]).
    pub fn durable_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.gate.changed()
    }
}

impl LoopCtx {
    pub fn stats(&self) -> &LoopStats {
        &self.node.stats[self.id]
    }

    /// The loop that owns `shard`.
    #[inline]
    pub fn owner(&self, shard: usize) -> usize {
        shard % self.node.config.threads
    }
}

pub fn run(
    id: usize,
    node: Arc<Node>,
    loops: Arc<Loops>,
    rx: mpsc::Receiver<LoopMsg>,
    listener: Option<std::net::TcpListener>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            warn!(loop_id = id, error = %e, "can't build runtime; shutting down");
            node.shutdown();
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match listener.map(sockets::listener_from_std).transpose() {
            Ok(l) => l,
            Err(e) => {
                warn!(loop_id = id, error = %e, "can't register listener");
                node.shutdown();
                None
            }
        };
        run_tasks(id, node, loops, rx, listener).await
    });
}

/// The loop's tasks, spawned on the current runtime's `LocalSet`; returns once the node shut
/// down and its connections drained. [`run`] calls it on the loop's own thread; a simulated
/// node (feature `sim`) on its host's runtime.
pub async fn run_tasks(
    id: usize,
    node: Arc<Node>,
    loops: Arc<Loops>,
    rx: mpsc::Receiver<LoopMsg>,
    listener: Option<TcpListener>,
) {
    let gate = Gate::new(&node.durability);
    let cluster = loops
        .cluster
        .as_ref()
        .map(|c| Rc::new(LoopCluster::new(c.clone())));
    let ctx = Rc::new(LoopCtx {
        id,
        node,
        loops,
        dirty: RefCell::new(Vec::new()),
        flush: Notify::new(),
        gate,
        cluster,
    });
    let mut shutdown = ctx.node.shutdown_signal();
    tokio::task::spawn_local(inbox(ctx.clone(), rx));
    tokio::task::spawn_local(expire(ctx.clone()));
    tokio::task::spawn_local(wake_writers(ctx.clone()));
    if ctx.cluster.is_some() {
        let lp: Rc<dyn LocalLoop> = ctx.clone();
        tokio::task::spawn_local(crate::cluster::keep_links(lp.clone()));
        tokio::task::spawn_local(crate::cluster::gc::run(lp.clone()));
        if id == 0 {
            tokio::task::spawn_local(crate::cluster::alive::run(lp.clone()));
            tokio::task::spawn_local(crate::cluster::gossip::run(lp.clone()));
            tokio::task::spawn_local(crate::cluster::stream::copy::run(lp.clone()));
            tokio::task::spawn_local(crate::cluster::stream::commit::run(lp.clone()));
            tokio::task::spawn_local(crate::cluster::aae::run(lp));
        }
    }
    for shard in 0..ctx.node.durability.logs.len() {
        let ctx = ctx.clone();
        tokio::task::spawn_local(async move {
            ctx.gate
                .follow(&ctx.node.durability.logs[shard], shard)
                .await
        });
    }
    if let Some(l) = listener {
        tokio::task::spawn_local(accept(ctx.clone(), l));
    }
    let _ = shutdown.wait_for(|s| *s).await;
    // Keep running other loops' batches until every connection on the node is gone, so
    // that in-flight requests finish; bounded so a stuck client can't hold the exit.
    let drain = async {
        loop {
            let notified = ctx.node.disconnected.notified();
            if ctx.node.connected.load(Relaxed) == 0 {
                break;
            }
            notified.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        warn!(
            loop_id = id,
            "connections still open after 10 s; exiting anyway"
        );
    }
    debug!(loop_id = id, "loop stopped");
}

async fn accept(ctx: Rc<LoopCtx>, listener: TcpListener) {
    let mut shutdown = ctx.node.shutdown_signal();
    let mut next = ctx.id;
    loop {
        let r = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (stream, _) = match r {
            Ok(s) => s,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        LoopStats::add(&ctx.stats().connections_received, 1);
        let t = ctx.node.config.threads;
        let target = if ctx.node.config.accept == crate::config::AcceptMode::Handoff {
            next = (next + 1) % t;
            next
        } else {
            ctx.id
        };
        if target == ctx.id {
            tokio::task::spawn_local(connection::serve(ctx.clone(), stream));
            continue;
        }
        match sockets::handoff(stream) {
            Ok(s) => {
                if ctx.loops.inbox[target]
                    .send(LoopMsg::Conn(s))
                    .await
                    .is_err()
                {
                    warn!("loop {target} is gone; dropping connection");
                }
            }
            Err(e) => warn!(error = %e, "can't hand off connection"),
        }
    }
    info!(loop_id = ctx.id, "stopped accepting");
}

async fn inbox(ctx: Rc<LoopCtx>, mut rx: mpsc::Receiver<LoopMsg>) {
    while let Some(msg) = rx.recv().await {
        match msg {
            LoopMsg::Batch(b) => forward::execute(&ctx, b),
            LoopMsg::Conn(s) => match sockets::adopt(s) {
                Ok(s) => {
                    tokio::task::spawn_local(connection::serve(ctx.clone(), s));
                }
                Err(e) => warn!(error = %e, "can't adopt handed-off connection"),
            },
        }
    }
}

/// Wakes the WAL writers of the shards written in this tick. Yielding first lets every other
/// ready task (connections woken by the same poll) run and add its writes to the round.
async fn wake_writers(ctx: Rc<LoopCtx>) {
    loop {
        ctx.flush.notified().await;
        tokio::task::yield_now().await;
        let dirty = std::mem::take(&mut *ctx.dirty.borrow_mut());
        for s in dirty {
            ctx.node.durability.logs[s as usize].kick();
        }
    }
}

/// Active expiry for the shards this loop owns: every 100 ms, remove keys whose TTL passed
/// and purge dead keys whose tombstone grace passed (once durable), at most 1000 of each per
/// shard per round before yielding to requests.
async fn expire(ctx: Rc<LoopCtx>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let store = &ctx.node.store;
    loop {
        tick.tick().await;
        let mut more = true;
        while more {
            more = false;
            let now = now_ms();
            for shard in (ctx.id..store.len()).step_by(ctx.node.config.threads) {
                let durable = ctx.node.durability.durable_seq(shard);
                let mut s = store.lock(shard);
                // Both run every round (no short-circuit): a busy expiry must not starve purges.
                let expired = s.expire_cycle(now, 1000);
                let purged = s.purge_cycle(now, durable, 1000);
                if expired == 1000 || purged == 1000 {
                    more = true;
                }
            }
            tokio::task::yield_now().await;
        }
    }
}
