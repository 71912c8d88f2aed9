//! The fault menu and the schedule a seed picks from it, between [`FAULT_START_MS`] and
//! [`HEAL_MS`], where everything is healed at once.

use std::fmt;
use std::time::Duration;

use crate::rng::Rng;
use crate::{BASE_LATENCY_MS, FAULT_START_MS, HEAL_MS};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Cut every link between the two sides (both directions).
    Partition(Vec<String>, Vec<String>),
    /// Cut one direction only: `from` can't reach `to`, `to` still reaches `from`.
    OneWay {
        from: String,
        to: String,
    },
    /// Hold every message between two nodes (delivered, in a burst, at the release).
    Hold(String, String),
    Release(String, String),
    /// Links fail at random with this probability per message (TCP segments lost on a failed
    /// link: a connection through it stalls), and come back at random.
    Loss(f64),
    /// Largest message latency (ms): messages of different connections overtake each other.
    Latency(u64),
    /// The node's process dies (its disk survives: see `node`), and starts again.
    Crash(String),
    Restart(String),
    /// Repair every link, release every hold, no loss, base latency, restart crashed nodes.
    HealAll,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Partition(a, b) => write!(f, "partition {a:?} | {b:?}"),
            Fault::OneWay { from, to } => write!(f, "one-way cut {from} -> {to}"),
            Fault::Hold(a, b) => write!(f, "hold {a} <-> {b}"),
            Fault::Release(a, b) => write!(f, "release {a} <-> {b}"),
            Fault::Loss(p) => write!(f, "message loss {p}"),
            Fault::Latency(ms) => write!(f, "max latency {ms} ms"),
            Fault::Crash(n) => write!(f, "crash {n}"),
            Fault::Restart(n) => write!(f, "restart {n}"),
            Fault::HealAll => write!(f, "heal all"),
        }
    }
}

/// What is broken now (to heal it).
#[derive(Default)]
pub struct State {
    crashed: Vec<String>,
}

/// How hard a schedule hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// One fault every 100-500 ms; loss up to 2%, latency up to 300 ms, a crashed node back
    /// within 200-1500 ms.
    Mixed,
    /// One fault every 50-250 ms; loss up to 10%, latency up to 600 ms, a crashed node back
    /// within 500-2500 ms (so two or more are often down at once).
    Harsh,
}

struct Limits {
    gap: (u64, u64),
    loss: [f64; 3],
    latency: (u64, u64),
    down: (u64, u64),
}

fn limits(p: Profile) -> Limits {
    match p {
        Profile::Mixed => Limits {
            gap: (100, 500),
            loss: [0.001, 0.005, 0.02],
            latency: (20, 300),
            down: (200, 1_500),
        },
        Profile::Harsh => Limits {
            gap: (50, 250),
            loss: [0.01, 0.05, 0.1],
            latency: (50, 600),
            down: (500, 2_500),
        },
    }
}

/// The seed's faults: one every `gap` ms from [`FAULT_START_MS`]; each crash is followed by
/// its restart (or the heal), each hold by its release, each loss by its end.
pub fn schedule(rng: &mut Rng, names: &[String], profile: Profile) -> Vec<(u64, Fault)> {
    let lim = limits(profile);
    let mut out: Vec<(u64, Fault)> = Vec::new();
    let mut t = FAULT_START_MS + rng.below(300);
    while t < HEAL_MS {
        let a = rng.pick(names).clone();
        let others: Vec<String> = names.iter().filter(|n| **n != a).cloned().collect();
        let b = rng.pick(&others).clone();
        match rng.below(9) {
            0 | 1 => {
                let mut side: Vec<String> = Vec::new();
                let mut rest: Vec<String> = Vec::new();
                for n in names {
                    if rng.below(2) == 0 {
                        side.push(n.clone());
                    } else {
                        rest.push(n.clone());
                    }
                }
                if side.is_empty() || rest.is_empty() {
                    // One node isolated.
                    out.push((t, Fault::Partition(vec![a], others)));
                } else {
                    out.push((t, Fault::Partition(side, rest)));
                }
            }
            2 => out.push((t, Fault::OneWay { from: a, to: b })),
            3 => {
                out.push((t, Fault::Hold(a.clone(), b.clone())));
                let until = (t + rng.range(100, 1_000)).min(HEAL_MS);
                out.push((until, Fault::Release(a, b)));
            }
            4 => {
                let p = lim.loss[rng.below(3) as usize];
                out.push((t, Fault::Loss(p)));
                out.push(((t + rng.range(100, 600)).min(HEAL_MS), Fault::Loss(0.0)));
            }
            5 => out.push((t, Fault::Latency(rng.range(lim.latency.0, lim.latency.1)))),
            6 | 7 => {
                out.push((t, Fault::Crash(a.clone())));
                let back = t + rng.range(lim.down.0, lim.down.1);
                if back < HEAL_MS {
                    out.push((back, Fault::Restart(a)));
                }
            }
            _ => out.push((t, Fault::HealAll)),
        }
        t += rng.range(lim.gap.0, lim.gap.1);
    }
    out.push((HEAL_MS, Fault::HealAll));
    // Stable: events at one time keep the order they were drawn in.
    out.sort_by_key(|(t, _)| *t);
    out
}

fn heal(sim: &mut turmoil::Sim<'_>, names: &[String], state: &mut State, power: &Power) {
    for a in names {
        for b in names {
            if a < b {
                sim.repair(a.as_str(), b.as_str());
                sim.release(a.as_str(), b.as_str());
            }
        }
    }
    sim.set_fail_rate(0.0);
    sim.set_max_message_latency(Duration::from_millis(BASE_LATENCY_MS));
    for n in std::mem::take(&mut state.crashed) {
        power(&n).set_down(false);
    }
}

/// The power switch of a node, by name.
pub type Power<'a> = dyn Fn(&str) -> std::rc::Rc<crate::node::Power> + 'a;

pub fn apply(
    sim: &mut turmoil::Sim<'_>,
    names: &[String],
    f: &Fault,
    state: &mut State,
    power: &Power,
) {
    match f {
        Fault::Partition(a, b) => {
            for x in a {
                for y in b {
                    sim.partition(x.as_str(), y.as_str());
                }
            }
        }
        Fault::OneWay { from, to } => sim.partition_oneway(from.as_str(), to.as_str()),
        Fault::Hold(a, b) => sim.hold(a.as_str(), b.as_str()),
        Fault::Release(a, b) => sim.release(a.as_str(), b.as_str()),
        Fault::Loss(p) => sim.set_fail_rate(*p),
        Fault::Latency(ms) => sim.set_max_message_latency(Duration::from_millis(*ms)),
        Fault::Crash(n) => {
            if !state.crashed.contains(n) {
                power(n).set_down(true);
                state.crashed.push(n.clone());
            }
        }
        Fault::Restart(n) => {
            if let Some(i) = state.crashed.iter().position(|c| c == n) {
                state.crashed.remove(i);
                power(n).set_down(false);
            }
        }
        Fault::HealAll => heal(sim, names, state, power),
    }
}
