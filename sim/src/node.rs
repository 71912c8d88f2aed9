//! One real ringkv node as a turmoil host: the same start-up as `src/main.rs` (data
//! directory, store, durability, cluster layer), then the node's one event loop on the host's
//! runtime (`ringkv::net::run_local`), with turmoil's sockets and clock (feature `sim`).
//!
//! What a crash keeps: the host's [`Disk`] outlives its software. The store is kept whole,
//! as `--fsync always` would keep every write a replica acknowledged (the simulation runs
//! `--fsync off`, so there is no WAL thread; an applied write that was not yet synced is kept
//! too, which only makes a crash gentler); the data directory (node id, hint logs, stream
//! progress, last-alive stamp) is a real directory on tmpfs, written through synchronously.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use ringkv::cluster::Cluster;
use ringkv::config::{Cli, Config, ConflictMode};
use ringkv::datadir::DataDir;
use ringkv::disk::{Fs, RealFs};
use ringkv::durability::Durability;
use ringkv::node::Node;
use ringkv::store::{Conflicts, Store, VersionPolicy};

/// The client and peer port of every node.
pub const PORT: u16 = 7000;
/// The password clients authenticate with (a non-loopback bind requires one).
pub const PASSWORD: &str = "simulated-password";
const SECRET: &str = "simulated-cluster-secret";

/// What a node is, fixed for the run.
pub struct NodeSpec {
    /// Its host name in the simulation ("n1"...), which peers dial.
    pub name: String,
    /// Its node id (drawn from the seed).
    pub id: u64,
    /// Every node's host name, itself included.
    pub all: Vec<String>,
    /// Its data directory.
    pub dir: PathBuf,
    /// Extra flags (the workload's settings).
    pub flags: Vec<String>,
}

/// What survives a crash of the host: the store (see the module comment).
#[derive(Default)]
pub struct Disk {
    store: RefCell<Option<Arc<Store>>>,
}

type BoxError = Box<dyn std::error::Error>;

fn config(spec: &NodeSpec) -> Result<Config, BoxError> {
    let peers: Vec<String> = spec
        .all
        .iter()
        .filter(|n| **n != spec.name)
        .map(|n| format!("{n}:{PORT}"))
        .collect();
    let mut args: Vec<String> = [
        "ringkv",
        "--bind",
        "0.0.0.0",
        "--threads",
        "1",
        "--shards",
        "4",
        "--fsync",
        "off",
        "--password",
        PASSWORD,
        "--cluster-secret",
        SECRET,
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend([
        "--port".into(),
        PORT.to_string(),
        "--data-dir".into(),
        spec.dir.display().to_string(),
        "--advertise".into(),
        format!("{}:{PORT}", spec.name),
        "--peers".into(),
        peers.join(","),
    ]);
    args.extend(spec.flags.iter().cloned());
    let cli = Cli::try_parse_from(args)?;
    Ok(Config::from_cli(cli)?)
}

/// Crashes and restarts of one node, driven by the fault schedule.
///
/// Not turmoil's own `crash`/`bounce`: a bounce builds the host a new tokio runtime, whose
/// paused clock starts from the real `Instant` of that moment, and the sub-millisecond
/// difference shifts the node's timers from one run of a seed to the next. Here the host's
/// software stays, and the node runs in a `LocalSet` of its own: a crash drops that set,
/// which ends every task of the node and closes its sockets at once (its listener goes, so
/// peers and clients are refused, as by a dead process), and a restart starts the node again
/// on the same clock.
#[derive(Default)]
pub struct Power {
    down: std::cell::Cell<bool>,
    changed: tokio::sync::Notify,
}

impl Power {
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
        self.changed.notify_waiters();
    }

    pub fn is_down(&self) -> bool {
        self.down.get()
    }

    async fn until(&self, down: bool) {
        loop {
            let changed = self.changed.notified();
            if self.down.get() == down {
                return;
            }
            changed.await;
        }
    }
}

/// The host's software: runs the node whenever it is powered, forever (the simulation ends
/// when the clients are done).
pub async fn host(
    spec: Arc<NodeSpec>,
    disk: std::rc::Rc<Disk>,
    power: std::rc::Rc<Power>,
) -> turmoil::Result {
    loop {
        power.until(false).await;
        let local = tokio::task::LocalSet::new();
        let ran = local
            .run_until(async {
                tokio::select! {
                    r = run(spec.clone(), disk.clone()) => r,
                    _ = power.until(true) => Ok(()),
                }
            })
            .await;
        // The crash: every task the node spawned ends here.
        drop(local);
        ran?;
        // A node that returned by itself (it shut down) stays down until the next restart.
        if !power.is_down() {
            power.until(true).await;
        }
    }
}

/// Starts the node and serves until it shuts down.
pub async fn run(spec: Arc<NodeSpec>, disk: std::rc::Rc<Disk>) -> turmoil::Result {
    let config = config(&spec)?;
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    let dir = DataDir::open(
        fs.as_ref(),
        &config.data_dir,
        config.shards,
        config.cluster.partitions,
        spec.id,
    )?;
    dir.require_partitioned()?;
    let store = disk
        .store
        .borrow_mut()
        .get_or_insert_with(|| {
            // The store outlives every crash here (nothing is ever lost), so the node may
            // keep one dot actor for good (`ringkv::actor` would keep it too).
            let policy = VersionPolicy {
                actor: dir.node_id,
                conflicts: match config.conflicts {
                    ConflictMode::Siblings => Conflicts::Siblings,
                    ConflictMode::Lww => Conflicts::Lww,
                },
                max_siblings: config.max_siblings,
                tombstone_grace_ms: config.tombstone_grace_secs * 1000,
                purge_needs_approval: true,
            };
            Arc::new(Store::with_policy(config.shards, dir.placement, policy))
        })
        .clone();
    let durability = Durability::start(&config, store.clone(), fs)?;
    let cluster =
        Cluster::open(&config, dir.node_id, store.stored_keys() > 0)?.ok_or("no cluster secret")?;
    ringkv::cluster::alive::check_absence(
        &config.data_dir,
        config.tombstone_grace_secs.saturating_mul(1000),
        &cluster.membership,
    );
    let node = Node::new(config, dir.node_id, store, durability)
        .with_membership(Some(cluster.membership.clone()));
    ringkv::net::run_local(Arc::new(node), Some(cluster)).await?;
    drop(dir);
    Ok(())
}
