//! Deterministic simulation of a ringkv cluster under turmoil (issue 13, item 3).
//!
//! One run = one seed: 3 to 5 real nodes ([`node`]) in a simulated network, clients writing
//! unique keys through random nodes ([`workload`]) while the driver injects the faults the
//! seed picks ([`faults`]: partitions, one-way partitions, held links, message loss, latency,
//! crashes and restarts), then heals everything and checks that every acknowledged write is
//! readable at R from every node ([`check`]).

pub mod check;
pub mod faults;
pub mod node;
pub mod resp;
pub mod rng;
pub mod workload;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use faults::Fault;
pub use faults::Profile;
use rng::Rng;

/// When the clients start writing (the cluster forms before: every node starts joining).
pub const WRITE_START_MS: u64 = 1_000;
/// When faults start, and when everything is healed.
pub const FAULT_START_MS: u64 = 1_200;
pub const HEAL_MS: u64 = 4_000;
/// When the clients stop writing (before the heal: the last writes see faults too).
pub const WRITE_END_MS: u64 = 3_800;
/// The checker starts reading at the heal plus this, and gives up at the heal plus
/// [`CONVERGE_LIMIT_MS`]: hints replay once the failure detector sees a node again, and
/// read repair and anti-entropy fill the rest.
pub const CHECK_AFTER_MS: u64 = 1_000;
pub const CONVERGE_LIMIT_MS: u64 = 15_000;
/// Largest simulated time of a run (a run that goes past it is a hang: a failure).
const SIM_LIMIT: Duration = Duration::from_secs(60);
/// Message latency when no latency fault is on (ms).
pub const BASE_LATENCY_MS: u64 = 10;

/// What one seed's run showed.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub seed: u64,
    pub profile: Option<Profile>,
    pub nodes: usize,
    /// Writes answered +OK.
    pub acked: usize,
    /// Writes answered with an error or not at all (outcome unknown: not checked).
    pub failed: usize,
    /// Acknowledged writes not readable from some node after the convergence limit, with
    /// what was read instead.
    pub lost: Vec<String>,
    /// Simulated ms from the heal until every node read every acknowledged write.
    pub converge_ms: Option<u64>,
    /// The fault schedule, as printed.
    pub schedule: Vec<String>,
    /// A digest of everything the clients saw, to compare two runs of one seed.
    pub trace: u64,
}

impl Outcome {
    pub fn line(&self) -> String {
        format!(
            "seed {} {:?} nodes {} acked {} failed {} lost {} converge_ms {} trace {:016x}",
            self.seed,
            self.profile.unwrap_or(Profile::Mixed),
            self.nodes,
            self.acked,
            self.failed,
            self.lost.len(),
            self.converge_ms
                .map_or_else(|| "never".to_string(), |m| m.to_string()),
            self.trace
        )
    }
}

/// What the clients and the checker record, shared with the driver (one thread).
#[derive(Default)]
pub struct Log {
    pub acked: Vec<(String, String)>,
    pub failed: usize,
    pub trace: u64,
    pub converge_ms: Option<u64>,
    pub lost: Vec<String>,
    pub checked: bool,
}

impl Log {
    /// Mixes an event into the trace digest.
    pub fn note(&mut self, what: &str) {
        if std::env::var_os("SIM_TRACE").is_some() {
            let t = turmoil::sim_elapsed().map_or(0, |d| d.as_millis());
            println!("trace {t} {what}");
        }
        for b in what.bytes() {
            self.trace = (self.trace ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A data directory root on tmpfs when there is one (hint logs are synced on every append).
fn scratch() -> std::io::Result<tempfile::TempDir> {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("ringkv-sim")
            .tempdir_in(shm)
        {
            return Ok(d);
        }
    }
    tempfile::Builder::new().prefix("ringkv-sim").tempdir()
}

/// The nodes' settings: N=3, the given W and R, siblings, short peer timeouts.
pub fn flags(w: u32, r: u32) -> Vec<String> {
    flags_with(w, r, Conflicts::Siblings)
}

/// How concurrent writes of a key are kept (`--conflicts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflicts {
    Siblings,
    /// Last write wins, with every node's clock the same (the simulation's).
    Lww,
}

/// The nodes' settings: N=3, the given W and R and conflict mode, short peer timeouts.
pub fn flags_with(w: u32, r: u32, conflicts: Conflicts) -> Vec<String> {
    let mode = match conflicts {
        Conflicts::Siblings => "siblings",
        Conflicts::Lww => "lww",
    };
    let mut f: Vec<String> = [
        "--n",
        "3",
        "--conflicts",
        mode,
        "--partitions",
        "32",
        "--peer-timeout-ms",
        "300",
        "--request-timeout-ms",
        "1000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    f.extend(["--w".into(), w.to_string(), "--r".into(), r.to_string()]);
    f
}

/// Registers one host per name, each running a node; returns their power switches.
pub fn start_nodes(
    sim: &mut turmoil::Sim<'_>,
    rng: &mut Rng,
    names: &[String],
    root: &std::path::Path,
    flags: &[String],
) -> Vec<(String, Rc<node::Power>)> {
    let mut powers = Vec::new();
    for name in names {
        let spec = Arc::new(node::NodeSpec {
            name: name.clone(),
            id: (rng.next_u64() & ringkv::store::MAX_NODE_ID).max(1),
            all: names.to_vec(),
            dir: root.join(name),
            flags: flags.to_vec(),
        });
        let disk = Rc::new(node::Disk::default());
        let power = Rc::new(node::Power::default());
        powers.push((name.clone(), power.clone()));
        sim.host(name.as_str(), move || {
            node::host(spec.clone(), disk.clone(), power.clone())
        });
    }
    powers
}

/// A simulation with the settings every run uses.
pub fn builder(seed: u64) -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(SIM_LIMIT)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(BASE_LATENCY_MS))
        .enable_random_order()
        .build()
}

/// Runs one seed to the end: Err if the simulation itself failed (a node's software returned
/// an error or panicked, or the run hung past its limit).
pub fn run_seed(seed: u64) -> Result<Outcome, String> {
    run_profile(seed, Profile::Mixed)
}

/// Runs one seed with the given fault profile.
pub fn run_profile(seed: u64, profile: Profile) -> Result<Outcome, String> {
    run_with(seed, profile, Conflicts::Siblings)
}

/// Runs one seed with the given fault profile and conflict mode.
pub fn run_with(seed: u64, profile: Profile, conflicts: Conflicts) -> Result<Outcome, String> {
    ringkv::util::sim_rng::seed(seed);
    let mut rng = Rng::new(seed);
    let n = 3 + rng.below(3) as usize;
    let mut sim = builder(seed);
    let tmp = scratch().map_err(|e| format!("can't make a scratch directory: {e}"))?;
    let names: Vec<String> = (1..=n).map(|i| format!("n{i}")).collect();
    let powers = start_nodes(
        &mut sim,
        &mut rng,
        &names,
        tmp.path(),
        &flags_with(2, 2, conflicts),
    );
    let log = Rc::new(RefCell::new(Log::default()));
    for c in 0..workload::CLIENTS {
        let w = workload::Writer {
            id: c,
            nodes: names.clone(),
            rng: Rng::new(rng.next_u64()),
            log: log.clone(),
        };
        sim.client(format!("c{c}").as_str(), w.run());
    }
    sim.client(
        "checker",
        check::run(names.clone(), log.clone(), Rng::new(rng.next_u64())),
    );
    let schedule = faults::schedule(&mut rng, &names, profile);
    let mut next = 0;
    let mut state = faults::State::default();
    let power = |n: &str| {
        powers
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    };
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while next < schedule.len() && schedule[next].0 <= now {
            faults::apply(&mut sim, &names, &schedule[next].1, &mut state, &power);
            next += 1;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(format!("seed {seed}: the simulation failed: {e}")),
        }
    }
    let l = log.borrow();
    Ok(Outcome {
        seed,
        profile: Some(profile),
        nodes: n,
        acked: l.acked.len(),
        failed: l.failed,
        lost: l.lost.clone(),
        converge_ms: l.converge_ms,
        schedule: schedule
            .iter()
            .map(|(t, f): &(u64, Fault)| format!("{t} ms: {f}"))
            .collect(),
        trace: l.trace,
    })
}
