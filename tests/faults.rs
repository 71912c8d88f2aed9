//! What ringkv guarantees under faults, checked on real processes: partitions of several
//! shapes, message loss, delays, SIGKILL and restart, SIGSTOP and SIGCONT, clock skew, a join
//! and a leave, each run driven by one seed (tests/fault/). A failing run prints its seed, its
//! schedule and the command that repeats it; `custom_run` (ignored) runs any scenario with any
//! seed for any length:
//!
//! `FAULTS_SCENARIO=siblings FAULTS_SEED=7 FAULTS_SECS=600 cargo test --test faults custom_run -- --ignored --nocapture`

mod common;
mod fault;

use fault::nemesis::{Menu, Schedule};
use fault::{report, run, Outcome, Scenario};

/// Seconds of faults per run in CI (the issue asks at least 60).
const CI_FAULT_SECS: u64 = 60;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// Every workload lost nothing, saw nothing unexpected, could read everything at the end,
/// and the cluster converged; faults were in force as long as asked.
fn assert_nothing_lost(s: &Scenario, o: &Outcome) {
    let text = report(s, o);
    println!("{text}");
    let bad = o
        .lines
        .iter()
        .any(|l| l.check.lost > 0 || l.check.unexpected > 0 || l.check.pending);
    assert!(
        !bad && o.converge_ms.is_some(),
        "acknowledged writes lost or the cluster did not converge:\n{text}\nrepeat: {}",
        s.repeat_command()
    );
    for l in &o.lines {
        assert!(
            l.acked > 0,
            "{}: nothing was acknowledged\n{text}",
            l.workload
        );
    }
    assert!(
        o.faulty_ms >= s.fault_secs * 1_000,
        "faults were in force for {} ms, not {} s",
        o.faulty_ms,
        s.fault_secs
    );
}

/// The runs, by name: CI runs each with its seed; `custom_run` any of them with any seed.
fn scenario(name: &str, seed: u64) -> Scenario {
    let base = |name, nodes, conflicts| Scenario {
        name,
        seed,
        nodes,
        fault_secs: CI_FAULT_SECS,
        conflicts,
        menu: Menu::ALL,
        skews_ms: Vec::new(),
        set_clients: 3,
        register_clients: 0,
        counter_clients: 2,
        sequential_keys: 0,
        extra_flags: Vec::new(),
    };
    let lww_skew = |name, skews_ms| Scenario {
        fault_secs: 30,
        // Slow and lossy links: the skewed node then often coordinates a write before the
        // previous one reached it (partitions alone rarely do: a cut-off node reaches no W).
        menu: Menu::LINKS,
        skews_ms,
        set_clients: 1,
        counter_clients: 1,
        sequential_keys: 6,
        ..base(name, 3, "lww")
    };
    match name {
        "siblings" => Scenario {
            register_clients: 3,
            ..base("siblings", 5, "siblings")
        },
        // Strict quorums (no stand-ins), so that a stale read-back of the sequential
        // registers counts as a loss; the other runs exercise hinted handoff.
        "lww" => Scenario {
            sequential_keys: 4,
            extra_flags: vec!["--hinted-handoff".into(), "off".into()],
            ..base("lww", 5, "lww")
        },
        "membership" => Scenario {
            menu: Menu {
                membership: true,
                ..Menu::ALL
            },
            ..base("membership", 5, "siblings")
        },
        "durability" => Scenario {
            menu: Menu {
                partitions: true,
                loss: false,
                delay: false,
                kills: false,
                kill_two: true,
                pauses: false,
                membership: false,
            },
            ..base("durability", 3, "siblings")
        },
        "lww-skew" => lww_skew("lww-skew", vec![0, -5_000, 0]),
        "lww-no-skew" => lww_skew("lww-no-skew", Vec::new()),
        other => panic!(
            "no scenario {other}: siblings, lww, membership, durability, lww-skew, lww-no-skew"
        ),
    }
}

/// Siblings mode, every fault kind: sets, registers with contexts and counters lose nothing.
#[test]
fn siblings_mode_loses_no_acknowledged_write() {
    let s = scenario("siblings", 101);
    let o = run(&s);
    assert_nothing_lost(&s, &o);
    assert!(o.kills > 0 && o.pauses > 0 && o.frames_dropped > 0 && o.connections_cut > 0);
}

/// Last-write-wins with clocks in agreement: unique keys and counters lose nothing, and a
/// register written by one client at a time never reads back an earlier acknowledged write
/// and ends at its last acknowledged write.
#[test]
fn lww_mode_without_skew_loses_no_acknowledged_write() {
    let s = scenario("lww", 202);
    let o = run(&s);
    assert_nothing_lost(&s, &o);
}

/// Siblings mode, every fault kind, and the layout changing under them: node 4 joins a
/// third of the way in and node 0 leaves two thirds in, their partitions streaming while the
/// faults go on. Nothing acknowledged is lost, and both moves commit after the heal.
#[test]
fn a_join_and_a_leave_under_faults_lose_nothing() {
    let s = scenario("membership", 505);
    let o = run(&s);
    assert_nothing_lost(&s, &o);
}

/// --fsync always, and two of the three nodes (two of every key's three replicas) killed at
/// the same instant, again and again: acknowledged writes survive in the WAL.
#[test]
fn two_of_three_nodes_killed_at_once_lose_nothing() {
    let s = scenario("durability", 303);
    let o = run(&s);
    assert_nothing_lost(&s, &o);
    assert!(o.kills >= 4, "the schedule killed {} nodes", o.kills);
}

/// The skewed run must lose acknowledged writes (and nothing else).
fn assert_skew_loses(s: &Scenario, o: &Outcome) {
    let text = report(s, o);
    println!("{text}");
    assert!(
        o.line("sequential").check.lost > 0,
        "with a clock 5 s behind, last-write-wins must lose some acknowledged writes:\n{text}"
    );
    for w in ["set", "counter"] {
        let l = o.line(w);
        assert_eq!(l.check.lost + l.check.unexpected, 0, "{w}:\n{text}");
    }
    assert!(o.converge_ms.is_some(), "did not converge:\n{text}");
}

/// Last-write-wins with a node whose clock is 5 s behind: a write it coordinates before the
/// previous write reached it carries an older timestamp and loses to that write wherever the
/// two meet, although it was acknowledged. The checker must see that loss; the same seed and
/// faults with clocks in agreement must lose nothing (docs/faults.md). Three nodes, so every
/// quorum is of real replicas and a stale read-back is a lost write. Counters and unique keys
/// lose nothing even with the skew.
#[test]
fn lww_with_clock_skew_loses_acknowledged_writes() {
    let (skewed, control) = (scenario("lww-skew", 404), scenario("lww-no-skew", 404));
    let (o, c) = std::thread::scope(|t| {
        let o = t.spawn(|| run(&skewed));
        let c = t.spawn(|| run(&control));
        (
            o.join().expect("skewed run"),
            c.join().expect("control run"),
        )
    });
    assert_skew_loses(&skewed, &o);
    assert_nothing_lost(&control, &c);
}

/// The seed decides the whole schedule: the same seed gives the same one, another seed
/// another, and faults are in force for at least the time asked.
#[test]
fn a_seed_repeats_its_schedule() {
    let a = Schedule::generate(7, 5, 60_000, Menu::ALL);
    assert_eq!(a, Schedule::generate(7, 5, 60_000, Menu::ALL));
    assert_ne!(a, Schedule::generate(8, 5, 60_000, Menu::ALL));
    assert!(a.faulty_ms() >= 60_000, "{a}");
    assert!(matches!(
        a.events.last().map(|e| &e.action),
        Some(fault::nemesis::Action::Heal)
    ));
}

/// Any scenario (FAULTS_SCENARIO, default siblings) with any seed (FAULTS_SEED) and length
/// (FAULTS_SECS), plus node flags (FAULTS_FLAGS): for repeating a failed run and long runs.
#[test]
#[ignore]
fn custom_run() {
    let name: String = env_or("FAULTS_SCENARIO", "siblings".to_string());
    let mut s = scenario(&name, env_or("FAULTS_SEED", 1));
    s.fault_secs = env_or("FAULTS_SECS", s.fault_secs);
    s.extra_flags.extend(
        env_or("FAULTS_FLAGS", String::new())
            .split_whitespace()
            .map(str::to_string),
    );
    let o = run(&s);
    if s.skews_ms.iter().any(|&k| k != 0) {
        assert_skew_loses(&s, &o);
    } else {
        assert_nothing_lost(&s, &o);
    }
}

/// The proxy itself, against an echo server standing in for node 1 and a dialer that says it
/// is node 0: frames pass; dropped frames never arrive while later ones do; delayed frames
/// arrive no sooner than the delay; a held frame arrives once the hold ends; a cut closes the
/// connection and refuses a new one.
#[test]
fn the_proxy_passes_drops_delays_and_cuts() {
    use bytes::BytesMut;
    use fault::proxy::{self, LinkMode, Net};
    use ringkv_proto::peer::{ClusterSettings, Conflicts, PeerHello, PeerRequest};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    let io = fault::Io::start();
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_addr = echo.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let (mut r, mut w) = (s.try_clone().unwrap(), s);
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let l0 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addrs = [l0.local_addr().unwrap(), l1.local_addr().unwrap()];
    let net = Net::new(&addrs);
    l1.set_nonblocking(true).unwrap();
    let n = net.clone();
    io.spawn(async move {
        let l = tokio::net::TcpListener::from_std(l1).unwrap();
        proxy::serve(n, 1, l, echo_addr).await
    });

    let hello = |id: u64| {
        let mut out = BytesMut::new();
        let advertise = addrs[0].to_string();
        PeerRequest::Hello(PeerHello {
            min_version: 1,
            max_version: 1,
            node_id: 7,
            nonce: &[0; 32],
            advertise: &advertise,
            zone: "",
            settings: ClusterSettings {
                n: 3,
                partitions: 64,
                conflicts: Conflicts::Siblings,
            },
        })
        .encode(id, &mut out);
        out.to_vec()
    };
    let read_frame = |s: &mut std::net::TcpStream| -> Option<Vec<u8>> {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).ok()?;
        let mut rest = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut rest).ok()?;
        Some([len.to_vec(), rest].concat())
    };
    let connect = || {
        let s = std::net::TcpStream::connect(addrs[1]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };

    // Pass: the hello comes back (the echo server answers every frame with itself).
    let mut s = connect();
    s.write_all(&hello(1)).unwrap();
    assert_eq!(read_frame(&mut s), Some(hello(1)));
    // Drop: frame 2 vanishes, frame 3 (sent after the link passes again) arrives first.
    net.set(0, 1, LinkMode::Drop);
    s.write_all(&hello(2)).unwrap();
    wait_for_count(&net.frames_dropped, 1);
    net.set(0, 1, LinkMode::Pass);
    s.write_all(&hello(3)).unwrap();
    assert_eq!(read_frame(&mut s), Some(hello(3)));
    // Delay: no sooner than asked.
    net.set(1, 0, LinkMode::Delay(300));
    let sent = Instant::now();
    s.write_all(&hello(4)).unwrap();
    assert_eq!(read_frame(&mut s), Some(hello(4)));
    assert!(sent.elapsed() >= Duration::from_millis(300));
    // Hold, then pass: the held frame is delivered, nothing lost.
    net.set(1, 0, LinkMode::Pass);
    net.set(0, 1, LinkMode::Hold);
    s.write_all(&hello(6)).unwrap();
    net.set(0, 1, LinkMode::Pass);
    assert_eq!(read_frame(&mut s), Some(hello(6)));
    // Cut: the open connection closes, a new one is closed after its hello.
    net.set(1, 0, LinkMode::Cut);
    assert_eq!(read_frame(&mut s), None);
    let mut s = connect();
    s.write_all(&hello(5)).unwrap();
    assert_eq!(read_frame(&mut s), None);
    assert!(
        net.connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
}

fn wait_for_count(c: &std::sync::atomic::AtomicU64, at_least: u64) {
    common::wait_until(
        "the proxy to count the frame",
        std::time::Duration::from_secs(10),
        || c.load(std::sync::atomic::Ordering::Relaxed) >= at_least,
    );
}
