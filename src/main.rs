//! The `ringkv` server binary.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use ringkv::actor::ActorFile;
use ringkv::cluster::Cluster;
use ringkv::config::{Cli, Config, ConflictMode, FsyncPolicy, LogFormat};
use ringkv::datadir::DataDir;
use ringkv::disk::{Fs, RealFs};
use ringkv::durability::Durability;
use ringkv::metrics::Metrics;
use ringkv::net::Server;
use ringkv::node::Node;
use ringkv::store::{Conflicts, Placement, Store, VersionPolicy};
use tracing::{error, info, warn};

/// mimalloc: the cluster path allocates per request (futures, peer frames); glibc malloc cost
/// a quarter of its CPU there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringkv: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    // Certificates first: a bad file stops the start before the data directory is touched.
    let tls = match ringkv::tls::load(&config) {
        Ok(t) => t,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    #[cfg(feature = "test-hooks")]
    ringkv::util::set_test_clock_skew_ms(config.test_clock_skew_ms);
    let fs: Arc<dyn Fs> = Arc::new(RealFs);
    #[cfg(feature = "test-hooks")]
    let fs: Arc<dyn Fs> = match &config.test_hold_syncs_file {
        Some(p) => Arc::new(ringkv::disk::HoldSyncs::new(fs, p.clone())),
        None => fs,
    };
    // The lock is held until the process exits.
    let opened = DataDir::open(
        fs.as_ref(),
        &config.data_dir,
        config.shards,
        config.cluster.partitions,
        random_id(),
    );
    // A cluster node needs partition placement; an older directory is refused, never moved.
    let opened = opened.and_then(|d| match config.clustered() {
        true => d.require_partitioned().map(|()| d),
        false => Ok(d),
    });
    let mut dir = match opened {
        Ok(d) => d,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    if dir.placement == Placement::Legacy {
        info!("the data directory predates partitions: its keys keep the legacy shard placement");
    }
    if config.fsync == FsyncPolicy::Off {
        info!("--fsync off: no WAL and no snapshots; data lives in memory only");
    }
    let actor = match start_actor(&config, fs.as_ref(), &dir.path) {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    let fs_meta = fs.clone();
    let store = Arc::new(Store::with_policy(
        config.shards,
        dir.placement,
        version_policy(&config, actor.actor()),
    ));
    let durability = match Durability::start(&config, store.clone(), fs) {
        Ok(d) => d,
        Err(e) => {
            error!("can't recover the data directory: {e}");
            return ExitCode::from(1);
        }
    };
    let upgraded = dir.opened_format != ringkv::datadir::META_FORMAT;
    if let Err(e) = dir.finish_upgrade(fs_meta.as_ref()) {
        error!("{e}");
        return ExitCode::from(1);
    }
    if upgraded && durability.enabled() {
        // Rewrite everything in the new format now (a snapshot of every shard replaces the
        // old records), rather than carrying the old ones until the next snapshot.
        info!(
            "converting the data directory from format {} to {}",
            dir.opened_format,
            ringkv::datadir::META_FORMAT
        );
        durability.bgsave();
    }
    let cluster = match Cluster::open(&config, dir.node_id, store.stored_keys() > 0) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(c) = &cluster {
        // Before the stamp is renewed: how long was this node away?
        ringkv::cluster::alive::check_absence(
            &config.data_dir,
            config.tombstone_grace_secs.saturating_mul(1000),
            &c.membership,
        );
    }
    let node = Node::new(config, dir.node_id, store, durability)
        .with_tls(tls)
        .with_membership(cluster.as_ref().map(|c| c.membership.clone()));
    let node = Arc::new(node);
    let server = match Server::start(node.clone(), cluster.clone()) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(c) = &cluster {
        c.bound(server.addr);
        info!(
            advertise = c.advertise(),
            peers = ?node.config.cluster.peers,
            "cluster mode: N={} W={} R={}",
            node.config.cluster.n,
            node.config.cluster.w,
            node.config.cluster.r
        );
    }
    let metrics = match node.config.metrics_addr {
        None => None,
        Some(addr) => match Metrics::start(node.clone(), addr) {
            Ok(m) => {
                info!("metrics on {}", m.addr);
                Some(m)
            }
            Err(e) => {
                error!("can't serve metrics on {addr}: {e}");
                node.shutdown();
                server.join();
                node.durability.shutdown();
                return ExitCode::from(1);
            }
        },
    };
    let cfg = &node.config;
    let ready = format!(
        "ringkv {} ready on {} ({} event loops, {} shards, node id {:016x}{})",
        env!("CARGO_PKG_VERSION"),
        server.addr,
        cfg.threads,
        cfg.shards,
        node.node_id,
        match &node.tls {
            None => "",
            Some(t) if t.only => ", TLS only",
            Some(_) => ", TLS and plaintext",
        }
    );
    wait_for_signal(&node, &ready);
    info!("shutting down: no new connections, finishing in-flight requests");
    server.join();
    if let Some(m) = metrics {
        m.join();
    }
    if node.durability.shutdown() {
        // Everything is synced: the next start may keep this run's dot actor.
        if let Err(e) = actor.mark_clean(fs_meta.as_ref()) {
            warn!("can't mark the clean stop (the next start takes a new dot actor): {e}");
        }
    }
    drop(dir);
    info!("bye");
    ExitCode::SUCCESS
}

/// Logs `ready` once the signal handlers are in place (so a SIGTERM right after the ready
/// line is a graceful shutdown), then blocks until SIGINT/SIGTERM or a SHUTDOWN command.
fn wait_for_signal(node: &Arc<Node>, ready: &str) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "can't watch signals; stopping");
            node.shutdown();
            return;
        }
    };
    rt.block_on(async {
        let mut shutdown = node.shutdown_signal();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                error!("can't install signal handlers");
                node.shutdown();
                return;
            };
            info!("{ready}");
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received"),
                _ = int.recv() => info!("SIGINT received"),
                _ = shutdown.wait_for(|s| *s) => {}
            }
        }
        #[cfg(not(unix))]
        info!("{ready}");
        #[cfg(not(unix))]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = shutdown.wait_for(|s| *s) => {}
        }
    });
    node.shutdown();
}

/// This run's dot actor (`ringkv::actor`), recorded before anything is minted.
fn start_actor(config: &Config, fs: &dyn Fs, dir: &std::path::Path) -> Result<ActorFile, String> {
    #[cfg(not(feature = "test-hooks"))]
    let boot = ringkv::actor::boot_id();
    #[cfg(feature = "test-hooks")]
    let boot = config.test_boot_id.clone().or_else(ringkv::actor::boot_id);
    let now = ringkv::actor::Start {
        fsync: config.fsync,
        boot: boot.as_deref(),
        repair: config.repair,
    };
    ActorFile::start(fs, dir, now, random_id())
        .map(|(a, _)| a)
        .map_err(|e| {
            format!(
                "can't write {}: {e}",
                dir.join(ringkv::actor::ACTOR_FILE).display()
            )
        })
}

/// The rules for new versions: the store's view of the conflict settings.
fn version_policy(config: &Config, actor: u64) -> VersionPolicy {
    VersionPolicy {
        actor,
        conflicts: match config.conflicts {
            ConflictMode::Siblings => Conflicts::Siblings,
            ConflictMode::Lww => Conflicts::Lww,
        },
        max_siblings: config.max_siblings,
        tombstone_grace_ms: config.tombstone_grace_secs * 1000,
        // A cluster node purges a tombstone only once every replica holds it (cluster::gc).
        purge_needs_approval: config.clustered(),
    }
}

/// A random id of 56 bits (see `store::MAX_NODE_ID`), never 0: a new data directory's node id
/// (kept in its metadata), or a new dot actor (`ringkv::actor`).
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    (h.finish() & ringkv::store::MAX_NODE_ID).max(1)
}
