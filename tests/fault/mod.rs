//! The fault harness: real ringkv processes on loopback, a proxy on every peer link
//! ([`proxy`]), a seeded schedule of partitions, message loss, delays, SIGKILLs and SIGSTOPs
//! ([`nemesis`]), workloads whose clients record what they were told, and checkers that
//! compare that with what the healed cluster holds ([`workload`]). [`run`] ties them together:
//! one seed decides the schedule and every client's choices, and the seed, the schedule and
//! the command that repeats the run are printed first.

pub mod nemesis;
pub mod proxy;
pub mod rng;
pub mod workload;

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::common::cluster::{free_ports, Cluster};
use crate::common::resp::Reply;
use nemesis::{Action, Menu, Schedule};
use proxy::{LinkMode, Net};
use rng::Rng;
use workload::{Check, Tally};

/// How long a healed cluster may take until every check passes.
const CONVERGE_MAX: Duration = Duration::from_secs(120);
/// Fault runs at once in one test binary (each is several processes on a 2-core machine).
const RUNS_AT_ONCE: usize = 2;

/// The proxies and clients run here: a current-thread runtime on its own thread, while the
/// test's thread drives the schedule (which blocks on process starts).
pub struct Io {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Io {
    pub fn start() -> Io {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            rt.block_on(async {
                let _ = stopped.await;
            });
        });
        Io {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(f)
    }

    /// Runs `f` on the runtime and waits for it on this thread.
    pub fn wait<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let h = self.handle.spawn(f);
        self.handle.block_on(h).expect("task panicked")
    }
}

impl Drop for Io {
    /// Stops the runtime: every proxy and client task ends, their sockets close.
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A cluster whose peer links all go through proxies, with its nodes' process faults.
pub struct FaultCluster {
    pub net: Arc<Net>,
    pub cluster: Cluster,
    /// Nodes in the layout (started, and not left).
    pub members: Vec<usize>,
    /// Nodes that left, still running until the leave commits.
    left: Vec<usize>,
    killed: Vec<usize>,
    paused: Vec<usize>,
    // Last: dropped after the nodes, so that no proxy dies under a live node first.
    pub io: Io,
}

impl FaultCluster {
    /// Starts `n` nodes with `flags`, node `i` with its clock `skews_ms[i]` off, and waits
    /// until they agree on their members; only nodes `0..first` run, the others start at an
    /// [`Action::Join`].
    pub fn start_first(n: usize, first: usize, flags: &[&str], skews_ms: &[i64]) -> FaultCluster {
        let io = Io::start();
        let ports = free_ports(n);
        let listeners: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a proxy port"))
            .collect();
        let proxy_addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("proxy addr"))
            .collect();
        let net = Net::new(&proxy_addrs);
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true).expect("nonblocking");
            let (net, target) = (net.clone(), SocketAddr::from(([127, 0, 0, 1], ports[i])));
            io.spawn(async move {
                let l = tokio::net::TcpListener::from_std(l).expect("proxy listener");
                proxy::serve(net, i, l, target).await
            });
        }
        let reach = proxy_addrs.iter().map(|a| a.port()).collect();
        let skews: Vec<i64> = (0..n)
            .map(|i| skews_ms.get(i).copied().unwrap_or(0))
            .collect();
        let cluster = Cluster::start_first(first, ports, reach, flags, |i| match skews[i] {
            0 => Vec::new(),
            s => vec!["--test-clock-skew-ms".into(), s.to_string()],
        });
        let mut fc = FaultCluster {
            net,
            cluster,
            members: (0..first).collect(),
            left: Vec::new(),
            killed: Vec::new(),
            paused: Vec::new(),
            io,
        };
        fc.wait_moves_done(crate::common::cluster::CONVERGE);
        fc
    }

    /// Every node's client address (nodes not started or gone included).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        (0..self.cluster.nodes.len())
            .map(|i| SocketAddr::from(([127, 0, 0, 1], self.cluster.ports[i])))
            .collect()
    }

    /// The members' client addresses: what the final checks read from.
    pub fn member_addrs(&self) -> Vec<SocketAddr> {
        let all = self.addrs();
        self.members.iter().map(|&i| all[i]).collect()
    }

    fn signal(&self, i: usize, sig: libc::c_int) {
        let pid = self.cluster.node(i).pid() as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child this process started and has not reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to node {i} (pid {pid})");
    }

    pub fn apply(&mut self, action: &Action) {
        match action {
            Action::Partition { pairs, how, .. } => {
                for &(a, b) in pairs {
                    self.net.set_both(a, b, *how);
                }
            }
            // Loss and delay go only on links still passing: a partition in the same episode
            // stays whole (what the schedule prints).
            Action::Loss { links } => {
                for &(a, b) in links {
                    self.net.set_if_passing(a, b, LinkMode::Drop);
                }
            }
            Action::Delay { links, ms } => {
                for &(a, b) in links {
                    self.net.set_if_passing(a, b, LinkMode::Delay(*ms));
                }
            }
            Action::Kill(nodes) => {
                // Signals first, one after the other with nothing between: "at once".
                for &i in nodes {
                    self.signal(i, libc::SIGKILL);
                }
                for &i in nodes {
                    self.cluster.kill(i);
                    self.killed.push(i);
                }
            }
            Action::Pause(i) => {
                self.signal(*i, libc::SIGSTOP);
                self.paused.push(*i);
            }
            Action::Heal => self.heal(),
            Action::Join(i) => {
                self.cluster.restart(*i);
                self.members.push(*i);
            }
            Action::Leave(i) => {
                let r = self.cluster.conn(*i).call_str(&["CLUSTER", "LEAVE"]);
                assert_eq!(r, Reply::Simple("OK".into()), "CLUSTER LEAVE on node {i}");
                self.members.retain(|m| m != i);
                self.left.push(*i);
            }
        }
    }

    /// Waits until every member lists exactly the members as active and up, and the nodes
    /// that left as removed (joins and leaves committed), then stops the nodes that left.
    pub fn wait_moves_done(&mut self, within: Duration) {
        let want = self.members.len();
        let done = |fc: &FaultCluster| {
            fc.members.iter().all(|&i| {
                // CLUSTER NODES keeps listing a node that left, as `removed`.
                let lines: Vec<Vec<String>> = fc
                    .cluster
                    .nodes_of(i)
                    .iter()
                    .map(|l| l.split(' ').map(str::to_string).collect())
                    .filter(|f: &Vec<String>| f.get(3).map(String::as_str) != Some("removed"))
                    .collect();
                lines.len() == want
                    && lines.iter().all(|f| {
                        f.get(3).map(String::as_str) == Some("active")
                            && f.get(4).map(String::as_str) == Some("up")
                    })
            })
        };
        let deadline = Instant::now() + within;
        while !done(self) {
            if Instant::now() > deadline {
                let mut why = String::new();
                for &i in self.members.iter().chain(&self.left) {
                    why += &format!(
                        "node {i}: {:?} phase {:?} partitions done {:?}/{:?} moving {:?}\n",
                        self.cluster.nodes_of(i),
                        self.cluster.info(i, "cluster_stream_phase"),
                        self.cluster.info(i, "cluster_stream_partitions_done"),
                        self.cluster.info(i, "cluster_stream_partitions"),
                        self.cluster.info(i, "cluster_moving_partitions"),
                    );
                }
                panic!("joins and leaves did not commit within {within:?}:\n{why}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in std::mem::take(&mut self.left) {
            self.cluster.kill(i);
        }
    }

    /// Every link back, paused nodes resumed, killed nodes restarted on their data.
    pub fn heal(&mut self) {
        self.net.heal();
        for i in std::mem::take(&mut self.paused) {
            self.signal(i, libc::SIGCONT);
        }
        for i in std::mem::take(&mut self.killed) {
            self.cluster.restart(i);
        }
    }
}

/// One fault run's settings.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: &'static str,
    pub seed: u64,
    pub nodes: usize,
    pub fault_secs: u64,
    pub conflicts: &'static str,
    pub menu: Menu,
    pub skews_ms: Vec<i64>,
    pub set_clients: usize,
    pub register_clients: usize,
    pub counter_clients: usize,
    /// Sequential registers (one writer each).
    pub sequential_keys: usize,
    /// More node flags (`FAULTS_FLAGS` in `custom_run`).
    pub extra_flags: Vec<String>,
}

/// What one workload reported.
#[derive(Debug, Clone)]
pub struct Line {
    pub workload: &'static str,
    pub acked: u64,
    pub unknown: u64,
    pub tally: Tally,
    pub check: Check,
}

#[derive(Debug)]
pub struct Outcome {
    pub lines: Vec<Line>,
    /// When the check that passed began and ended, in ms after the heal.
    pub converge_ms: Option<(u64, u64)>,
    /// Measured: how long faults were in force.
    pub faulty_ms: u64,
    pub frames_dropped: u64,
    pub connections_cut: u64,
    pub kills: usize,
    pub pauses: usize,
    /// When every join and leave had committed, in ms after the heal.
    pub moves_done_ms: u64,
}

impl Outcome {
    pub fn line(&self, workload: &str) -> &Line {
        self.lines
            .iter()
            .find(|l| l.workload == workload)
            .unwrap_or_else(|| panic!("no {workload} workload in this run"))
    }
}

/// Keeps at most [`RUNS_AT_ONCE`] runs going in this test binary.
struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

static SLOTS: Slots = Slots {
    free: Mutex::new(RUNS_AT_ONCE),
    cv: Condvar::new(),
};

struct Slot;

impl Slot {
    fn take() -> Slot {
        let mut free = SLOTS.free.lock().unwrap();
        while *free == 0 {
            free = SLOTS.cv.wait(free).unwrap();
        }
        *free -= 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *SLOTS.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        SLOTS.cv.notify_one();
    }
}

impl Scenario {
    /// Whether a write may be acknowledged by stand-ins (hinted handoff) rather than by W of
    /// its replicas: with more nodes than N=3 a partition can make it so.
    pub fn sloppy(&self) -> bool {
        let handoff_off = self
            .extra_flags
            .windows(2)
            .any(|w| w[0] == "--hinted-handoff" && w[1] == "off");
        self.nodes > 3 && !handoff_off
    }

    /// The command that repeats this run.
    pub fn repeat_command(&self) -> String {
        format!(
            "FAULTS_SCENARIO={} FAULTS_SEED={} FAULTS_SECS={} cargo test --test faults \
             custom_run -- --ignored --nocapture",
            self.name, self.seed, self.fault_secs
        )
    }
}

/// Runs a scenario from start to verdict-ready outcome (the caller asserts).
pub fn run(s: &Scenario) -> Outcome {
    let _slot = Slot::take();
    let schedule = Schedule::generate(s.seed, s.nodes, s.fault_secs * 1_000, s.menu);
    println!("== fault run {} (seed {}):\n{schedule}", s.name, s.seed);
    println!("   repeat: {}", s.repeat_command());
    let flags = [
        "--conflicts",
        s.conflicts,
        "--fsync",
        "always",
        "--n",
        "3",
        "--w",
        "2",
        "--r",
        "2",
        "--partitions",
        "64",
        "--vnodes",
        "16",
        "--peer-timeout-ms",
        "500",
        "--request-timeout-ms",
        "2000",
        "--aae-interval-ms",
        "2000",
        "--log-level",
        "warn,ringkv=info",
    ];
    let mut flags = flags.to_vec();
    // A level in the scenario's flags (FAULTS_FLAGS) replaces the default one.
    if s.extra_flags.iter().any(|f| f == "--log-level") {
        if let Some(i) = flags.iter().position(|&f| f == "--log-level") {
            flags.drain(i..i + 2);
        }
    }
    flags.extend(s.extra_flags.iter().map(|f| f.as_str()));
    let first = if s.menu.membership {
        s.nodes - 1
    } else {
        s.nodes
    };
    let mut fc = FaultCluster::start_first(s.nodes, first, &flags, &s.skews_ms);
    let (stop_tx, stop) = watch::channel(false);
    let work = Workers::spawn(s, &fc, stop);
    let started = Instant::now();
    let (mut kills, mut pauses) = (0, 0);
    // Restarts at a heal block this thread for a while: later events then shift by as much,
    // so that every fault lasts as long as the schedule says.
    let mut late = Duration::ZERO;
    let (mut faulty, mut faulty_since) = (Duration::ZERO, None::<Instant>);
    for e in &schedule.events {
        let at = started + Duration::from_millis(e.at_ms) + late;
        match at.checked_duration_since(Instant::now()) {
            Some(d) => std::thread::sleep(d),
            None => late += Instant::now() - at,
        }
        match (&e.action, faulty_since) {
            (Action::Heal, Some(since)) => {
                faulty += since.elapsed();
                faulty_since = None;
            }
            (Action::Heal | Action::Join(_) | Action::Leave(_), _) => {}
            (_, None) => faulty_since = Some(Instant::now()),
            (_, Some(_)) => {}
        }
        println!(
            "   [{} {:>6.1} s] {}",
            s.name,
            started.elapsed().as_secs_f64(),
            e.action
        );
        match &e.action {
            Action::Kill(n) => kills += n.len(),
            Action::Pause(_) => pauses += 1,
            Action::Partition { .. } | Action::Loss { .. } | Action::Delay { .. } => {}
            Action::Heal | Action::Join(_) | Action::Leave(_) => {}
        }
        fc.apply(&e.action);
    }
    // Healed (the last event): the workloads stop, then the checks run until they pass.
    let _ = stop_tx.send(true);
    let logs = work.join(&fc.io);
    let healed = Instant::now();
    fc.wait_moves_done(CONVERGE_MAX);
    let moves_done_ms = healed.elapsed().as_millis() as u64;
    let converge_ms = converge(&fc, s, &logs, healed);
    let lines = logs.verdict(&fc, s);
    Outcome {
        lines,
        converge_ms,
        faulty_ms: faulty.as_millis() as u64,
        frames_dropped: fc
            .net
            .frames_dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        connections_cut: fc
            .net
            .connections_cut
            .load(std::sync::atomic::Ordering::Relaxed)
            + fc.net
                .connections_refused
                .load(std::sync::atomic::Ordering::Relaxed),
        kills,
        pauses,
        moves_done_ms,
    }
}

/// Polls every check until all pass or [`CONVERGE_MAX`]: how long after the heal the check
/// that passed began and ended (the cluster had converged by the end; the check itself reads
/// every acknowledged key from every node, which takes a while for long runs).
fn converge(
    fc: &FaultCluster,
    s: &Scenario,
    logs: &Arc<Logs>,
    healed: Instant,
) -> Option<(u64, u64)> {
    let addrs = fc.member_addrs();
    let (logs, s) = (logs.clone(), s.clone());
    let deadline = healed + CONVERGE_MAX;
    fc.io.wait(async move {
        let clients = workload::connect(&addrs).await;
        let mut confirmed = Default::default();
        loop {
            let began = healed.elapsed().as_millis() as u64;
            let checks = logs.check(&clients, &s, &mut confirmed, false).await;
            if checks.iter().all(|(_, c)| !c.pending) {
                return Some((began, healed.elapsed().as_millis() as u64));
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// The clients' records, once they stopped.
pub struct Logs {
    set: workload::SetLog,
    reg: workload::RegLog,
    counters: workload::CounterLog,
    seq: Vec<workload::SeqLog>,
}

const REGISTER_KEYS: usize = 4;
const COUNTER_KEYS: usize = 3;

impl Logs {
    async fn check(
        &self,
        clients: &[ringkv_client::Client],
        s: &Scenario,
        confirmed: &mut std::collections::HashSet<(usize, usize)>,
        strict: bool,
    ) -> Vec<(&'static str, Check)> {
        let mut out = Vec::new();
        if s.set_clients > 0 {
            let c = workload::check_set(clients, &self.set.acked, confirmed, strict).await;
            out.push(("set", c));
        }
        if s.register_clients > 0 {
            let c = workload::check_registers(clients, REGISTER_KEYS, &self.reg).await;
            out.push(("register", c));
        }
        if s.counter_clients > 0 {
            out.push((
                "counter",
                workload::check_counters(clients, COUNTER_KEYS, &self.counters).await,
            ));
        }
        if s.sequential_keys > 0 {
            // With stand-ins (a sloppy quorum) a write acknowledged by a hint need not be
            // visible at R until the hint is delivered (protocol.md §7): a stale read-back
            // proves nothing there.
            let c = workload::check_sequential(clients, &self.seq, !s.sloppy()).await;
            out.push(("sequential", c));
        }
        out
    }

    /// The final, strict pass over everything, as the report's lines.
    fn verdict(self: &Arc<Self>, fc: &FaultCluster, s: &Scenario) -> Vec<Line> {
        let (addrs, logs, s) = (fc.member_addrs(), self.clone(), s.clone());
        let checks = fc.io.wait(async move {
            let clients = workload::connect(&addrs).await;
            let mut confirmed = Default::default();
            logs.check(&clients, &s, &mut confirmed, true).await
        });
        checks
            .into_iter()
            .map(|(w, check)| {
                let (acked, unknown, tally) = self.counts(w);
                Line {
                    workload: w,
                    acked,
                    unknown,
                    tally,
                    check,
                }
            })
            .collect()
    }

    fn counts(&self, workload: &str) -> (u64, u64, Tally) {
        match workload {
            "set" => (
                self.set.acked.len() as u64,
                self.set.unknown,
                self.set.tally,
            ),
            "register" => {
                let acked = self.reg.writes.iter().filter(|w| w.acked).count() as u64;
                (acked, self.reg.writes.len() as u64 - acked, self.reg.tally)
            }
            "counter" => (
                self.counters.acked.values().sum::<i64>() as u64,
                self.counters.unknown.values().sum::<i64>() as u64,
                self.counters.tally,
            ),
            _ => {
                let mut t = Tally::default();
                let (mut acked, mut all) = (0, 0);
                for l in &self.seq {
                    t.add(l.tally);
                    acked += l.writes.iter().filter(|w| w.1).count() as u64;
                    all += l.writes.len() as u64;
                }
                (acked, all - acked, t)
            }
        }
    }
}

/// The running clients of every workload.
struct Workers {
    initial: Vec<workload::RegWrite>,
    set: Vec<tokio::task::JoinHandle<workload::SetLog>>,
    reg: Vec<tokio::task::JoinHandle<workload::RegLog>>,
    counters: Vec<tokio::task::JoinHandle<workload::CounterLog>>,
    seq: Vec<tokio::task::JoinHandle<workload::SeqLog>>,
}

impl Workers {
    fn spawn(s: &Scenario, fc: &FaultCluster, stop: watch::Receiver<bool>) -> Workers {
        let addrs = fc.addrs();
        let initial = if s.register_clients > 0 {
            let a = addrs.clone();
            fc.io
                .wait(async move { workload::create_registers(a[0], REGISTER_KEYS).await })
        } else {
            Vec::new()
        };
        let mut rng = Rng::new(s.seed).fork(0xc11e);
        let pace = Duration::from_millis(10);
        let mut w = Workers {
            initial,
            set: Vec::new(),
            reg: Vec::new(),
            counters: Vec::new(),
            seq: Vec::new(),
        };
        for c in 0..s.set_clients {
            let prefix = format!("set-{}-{c}", s.seed);
            let fut = workload::set_client(
                addrs.clone(),
                prefix,
                rng.fork(c as u64),
                stop.clone(),
                pace,
            );
            w.set.push(fc.io.spawn(fut));
        }
        for c in 0..s.register_clients {
            let fut = workload::register_client(
                addrs.clone(),
                c,
                REGISTER_KEYS,
                rng.fork(100 + c as u64),
                stop.clone(),
                pace * 3,
            );
            w.reg.push(fc.io.spawn(fut));
        }
        for c in 0..s.counter_clients {
            let fut = workload::counter_client(
                addrs.clone(),
                COUNTER_KEYS,
                rng.fork(200 + c as u64),
                stop.clone(),
                pace * 2,
            );
            w.counters.push(fc.io.spawn(fut));
        }
        for k in 0..s.sequential_keys {
            let fut = workload::sequential_client(
                addrs.clone(),
                format!("seq-{k}"),
                rng.fork(300 + k as u64),
                stop.clone(),
                Duration::from_millis(5),
            );
            w.seq.push(fc.io.spawn(fut));
        }
        w
    }

    fn join(self, io: &Io) -> Arc<Logs> {
        let mut logs = Logs {
            set: Default::default(),
            reg: Default::default(),
            counters: Default::default(),
            seq: Vec::new(),
        };
        logs.reg.writes.extend(self.initial);
        for h in self.set {
            let l = io.handle.block_on(h).expect("set client");
            logs.set.acked.extend(l.acked);
            logs.set.unknown += l.unknown;
            logs.set.tally.add(l.tally);
        }
        for h in self.reg {
            let l = io.handle.block_on(h).expect("register client");
            logs.reg.writes.extend(l.writes);
            logs.reg.observed.extend(l.observed);
            logs.reg.tally.add(l.tally);
        }
        for h in self.counters {
            let l = io.handle.block_on(h).expect("counter client");
            for (k, v) in l.acked {
                *logs.counters.acked.entry(k).or_default() += v;
            }
            for (k, v) in l.unknown {
                *logs.counters.unknown.entry(k).or_default() += v;
            }
            logs.counters.tally.add(l.tally);
        }
        for h in self.seq {
            logs.seq
                .push(io.handle.block_on(h).expect("sequential client"));
        }
        Arc::new(logs)
    }
}

/// The report of a run, one line per workload, as the issue asks: acknowledged, lost, time
/// to converge after healing, availability during the faults.
pub fn report(s: &Scenario, o: &Outcome) -> String {
    let mut out = format!(
        "== {} seed {} ({} nodes, {}, {:.0} s of faults, {} kills, {} pauses, {} frames \
         dropped, {} connections cut or refused): moves committed {:.1} s after healing, \
         converged {}\n",
        s.name,
        s.seed,
        s.nodes,
        s.conflicts,
        o.faulty_ms as f64 / 1000.0,
        o.kills,
        o.pauses,
        o.frames_dropped,
        o.connections_cut,
        o.moves_done_ms as f64 / 1000.0,
        o.converge_ms
            .map_or("NOT within the limit".to_string(), |(a, b)| format!(
                "by {:.1} s after healing (the passing check ran from {:.1} s)",
                b as f64 / 1000.0,
                a as f64 / 1000.0
            )),
    );
    for l in &o.lines {
        out += &format!(
            "   {:<10} acknowledged {:>6}  unknown {:>4}  lost {:>4}  unexpected {:>3}  \
             availability {:>5.1}%  {}\n",
            l.workload,
            l.acked,
            l.unknown,
            l.check.lost,
            l.check.unexpected,
            100.0 * l.tally.availability(),
            l.check.detail
        );
    }
    out
}
