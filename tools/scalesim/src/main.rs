//! scalesim: prints what a ringkv cluster of each size does (docs/scale.md).
//!
//! `scalesim --nodes 64,256,1000 --seed 1` runs, per size: the gossip simulation (layout
//! changes, a quiet stretch, one node killed), the ring's balance and the movement of joins,
//! and (with `--cost`) the CPU of the real operations on this machine.

use std::process::ExitCode;

use clap::Parser;

use scalesim::gossip::{self, GossipConfig, GossipReport, NetModel};
use scalesim::ring_stats::{self, node_ids, RingShape};
use scalesim::rng::Rng;

/// Time between two timed layout changes (each is measured until the next).
const CHANGE_SPACING_MS: u64 = 3_000;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Simulated ringkv clusters: gossip, failure detection, balance"
)]
struct Args {
    /// Cluster sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1000")]
    nodes: Vec<usize>,
    /// Seed of every random draw (node ids, timer phases, delays, losses, the plan).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Fixed one-way delay, ms.
    #[arg(long, default_value_t = 0.25)]
    latency_ms: f64,
    /// Mean of the exponential delay added to each message, ms.
    #[arg(long, default_value_t = 0.25)]
    jitter_ms: f64,
    /// Probability that a message is lost (0..1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Nodes that keep a detector for every peer (the false-positive count).
    #[arg(long, default_value_t = 64)]
    observers: usize,
    /// Gossip before the first change, seconds.
    #[arg(long, default_value_t = 20)]
    warmup_s: u64,
    /// Layout changes to time, one every 3 s.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Steady gossip with no change and no fault, seconds (cost and false positives).
    #[arg(long, default_value_t = 30)]
    quiet_s: u64,
    /// After killing one node, seconds to watch.
    #[arg(long, default_value_t = 10)]
    after_kill_s: u64,
    /// Ring shape (defaults: the server's).
    #[arg(long, default_value_t = ringkv::config::DEFAULT_PARTITIONS)]
    partitions: u32,
    #[arg(long, default_value_t = ringkv::config::DEFAULT_VNODES)]
    vnodes: u32,
    #[arg(long, default_value_t = ringkv::config::DEFAULT_N as usize)]
    n: usize,
    /// Joins to average the movement over.
    #[arg(long, default_value_t = 20)]
    joins: usize,
    /// Skip the gossip simulation (ring numbers only).
    #[arg(long)]
    no_gossip: bool,
    /// Also time the real operations on this machine (use a release build).
    #[arg(long)]
    cost: bool,
    /// Also run each size under turmoil (real Membership per host; slow past a few hundred
    /// nodes): one change and one kill, to cross-check the discrete-event numbers.
    #[arg(long)]
    turmoil: bool,
    /// turmoil's step, ms (the resolution of its timings).
    #[arg(long, default_value_t = 1)]
    turmoil_tick_ms: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = validate(&args) {
        eprintln!("scalesim: {e}");
        return ExitCode::from(2);
    }
    let shape = RingShape {
        partitions: args.partitions,
        vnodes: args.vnodes,
        n: args.n,
    };
    println!(
        "# scalesim --seed {} --latency-ms {} --jitter-ms {} --loss {} (partitions {}, vnodes {}, n {})",
        args.seed, args.latency_ms, args.jitter_ms, args.loss, shape.partitions, shape.vnodes, shape.n
    );
    match run(&args, shape) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scalesim: {e}");
            ExitCode::FAILURE
        }
    }
}

fn validate(a: &Args) -> Result<(), String> {
    if a.nodes.iter().any(|&n| n < 2) {
        return Err("--nodes: every size must be at least 2".into());
    }
    if !(0.0..1.0).contains(&a.loss) {
        return Err(format!("--loss must be in [0, 1), got {}", a.loss));
    }
    if a.latency_ms < 0.0 || a.jitter_ms < 0.0 {
        return Err("--latency-ms and --jitter-ms must be at least 0".into());
    }
    Ok(())
}

fn run(args: &Args, shape: RingShape) -> Result<(), ringkv::ring::RingError> {
    if !args.no_gossip {
        println!("\n## Gossip and failure detection (simulated)\n");
        println!("| nodes | change reaches all, ms (median / max of changes) | origin sees it everywhere, ms (max) | bytes per node per change (over steady) | kill → suspect, ms (min/med/max) | kill → down, ms (min/med/max) | not convicted | false suspect / down (pair-s watched) | max phi of a live peer | msgs per node per s | bytes per node per s | layout bytes | sim events |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for &n in &args.nodes {
            let r = gossip::run(&gossip_config(args, n));
            print_gossip(&r, CHANGE_SPACING_MS);
        }
    }
    println!("\n## Ring balance and movement (Ring::build)\n");
    println!("| nodes | primaries per node: mean, min, max (max/mean) | nodes heading none | replicas per node: mean, min, max (max/mean, min/mean) | one join moves (mean, max) | ideal 1/(n+1) | mean / ideal | primaries moved | moves not to the newcomer |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &args.nodes {
        let mut rng = Rng::new(args.seed);
        let ids = node_ids(&mut rng.fork(1), n);
        let b = ring_stats::balance(shape, &ids)?;
        let m = ring_stats::join_movement(shape, &ids, &mut rng.fork(4), args.joins)?;
        println!(
            "| {n} | {:.2}, {}, {} ({:.2}) | {} | {:.2}, {}, {} ({:.2}, {:.2}) | {:.5}, {:.5} | {:.5} | {:.2} | {:.5} | {} |",
            b.primary_mean, b.primary_min, b.primary_max, b.primary_max_over_mean(), b.primary_none,
            b.replica_mean, b.replica_min, b.replica_max, b.replica_max_over_mean(), b.replica_min_over_mean(),
            m.replica_moved_mean, m.replica_moved_max, m.ideal, m.over_ideal(), m.primary_moved_mean, m.collateral
        );
    }
    if args.turmoil {
        println!("\n## Cross-check under turmoil (real Membership per host)\n");
        println!("| nodes | change reaches all, ms | origin converged(), ms | kill → down, ms (min/med/max) | not convicted | live peers seen down | real time, s |");
        println!("|---|---|---|---|---|---|---|");
        for &n in &args.nodes {
            let started = std::time::Instant::now();
            let mut c = scalesim::turmoil_sim::TurmoilConfig::new(n, args.seed);
            c.tick_ms = args.turmoil_tick_ms;
            let r = scalesim::turmoil_sim::run(&c).map_err(|e| e.to_string());
            match r {
                Ok(r) => println!(
                    "| {n} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {} | {} | {:.1} |",
                    r.reach_all_ms,
                    r.origin_converged_ms,
                    r.down_ms[0],
                    r.down_ms[1],
                    r.down_ms[2],
                    r.not_convicted,
                    r.false_down,
                    started.elapsed().as_secs_f64()
                ),
                Err(e) => println!("| {n} | turmoil run failed: {e} |||||"),
            }
        }
    }
    if args.cost {
        println!("\n## CPU of the real operations on this machine (wall clock, indicative)\n");
        println!("| nodes | layout clone, µs | layout digest, µs | check_liveness, µs | heartbeat, µs | rest of a round trip, µs | steady gossip, share of a core | Ring::build, ms | first contact with every peer, ms |");
        println!("|---|---|---|---|---|---|---|---|---|");
        for &n in &args.nodes {
            let c = scalesim::cost::measure(n, shape, args.seed, 200)?;
            println!(
                "| {n} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2}% | {:.1} | {:.0} |",
                c.clone_us,
                c.digest_us,
                c.check_liveness_us,
                c.heartbeat_us,
                c.round_trip_us,
                100.0 * c.gossip_cpu_share(),
                c.ring_build_ms,
                c.first_contact_ms
            );
        }
    }
    Ok(())
}

fn gossip_config(a: &Args, nodes: usize) -> GossipConfig {
    let mut c = GossipConfig::new(nodes, a.seed);
    c.net = NetModel {
        latency_ms: a.latency_ms,
        jitter_ms: a.jitter_ms,
        loss: a.loss,
    };
    c.observers = a.observers;
    c.warmup_ms = a.warmup_s * 1000;
    c.changes = a.changes;
    c.change_spacing_ms = CHANGE_SPACING_MS;
    c.quiet_ms = a.quiet_s * 1000;
    c.after_kill_ms = a.after_kill_s * 1000;
    c
}

fn print_gossip(r: &GossipReport, spacing_ms: u64) {
    let reach: Vec<f64> = r.changes.iter().map(|c| c.reach_all_ms).collect();
    let [_, reach_med, reach_max] = gossip::spread(reach);
    let conv = r
        .changes
        .iter()
        .map(|c| c.origin_converged_ms)
        .fold(0.0, f64::max);
    let bytes =
        r.changes.iter().map(|c| c.bytes_per_node).sum::<f64>() / r.changes.len().max(1) as f64;
    // What the change added to the steady digest-only traffic of the same stretch.
    let bytes = bytes - r.bytes_per_node_s * spacing_ms as f64 / 1000.0;
    let k = &r.kill;
    println!(
        "| {} | {:.0} / {:.0} | {:.0} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {} of {} | {} / {} ({:.0}) | {:.2} | {:.0} | {:.0} | {} | {} |",
        r.nodes, reach_med, reach_max, conv, bytes,
        k.suspect_ms[0], k.suspect_ms[1], k.suspect_ms[2],
        k.down_ms[0], k.down_ms[1], k.down_ms[2],
        k.not_convicted, k.live,
        r.false_suspect, r.false_down, r.pair_seconds, r.max_phi_live,
        r.msgs_per_node_s, r.bytes_per_node_s, r.layout_bytes, r.events
    );
}
