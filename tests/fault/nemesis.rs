//! The faults of a run, decided in full from the seed before the run starts (so the schedule
//! can be printed first and a seed always means the same schedule), then applied at their
//! times. A run is a series of episodes: one or two faults at once for 2–8 s, then a heal
//! (every link back, killed nodes restarted, paused ones resumed) and a quiet gap.

use std::fmt;

use super::proxy::LinkMode;
use super::rng::Rng;

/// Which faults a run may use.
#[derive(Debug, Clone, Copy)]
pub struct Menu {
    pub partitions: bool,
    pub loss: bool,
    pub delay: bool,
    pub kills: bool,
    /// Kill two nodes at the same instant (with N=3 on three nodes: two of every key's
    /// replicas, so an acknowledged write survives only through the WAL).
    pub kill_two: bool,
    pub pauses: bool,
    /// The last node starts a third of the way in and joins (its partitions stream to it);
    /// node 0 leaves two thirds of the way in (its partitions stream away). Both happen
    /// right after a heal, and process faults spare a node not yet joined or leaving.
    pub membership: bool,
}

impl Menu {
    pub const ALL: Menu = Menu {
        partitions: true,
        loss: true,
        delay: true,
        kills: true,
        kill_two: true,
        pauses: true,
        membership: false,
    };
    pub const LINKS: Menu = Menu {
        partitions: false,
        loss: true,
        delay: true,
        kills: false,
        kill_two: false,
        pauses: false,
        membership: false,
    };
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Both directions of every listed pair blocked (Cut or Hold); `shape` says which
    /// partition it is.
    Partition {
        shape: String,
        pairs: Vec<(usize, usize)>,
        how: LinkMode,
    },
    /// One direction of each listed link drops every frame.
    Loss {
        links: Vec<(usize, usize)>,
    },
    /// One direction of each listed link delays every frame.
    Delay {
        links: Vec<(usize, usize)>,
        ms: u64,
    },
    /// SIGKILL, all at the same instant; restarted at the next heal.
    Kill(Vec<usize>),
    /// SIGSTOP; SIGCONT at the next heal.
    Pause(usize),
    Heal,
    /// Start this node, new and empty: it joins the cluster.
    Join(usize),
    /// CLUSTER LEAVE on this node.
    Leave(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub seed: u64,
    pub nodes: usize,
    pub events: Vec<Event>,
}

impl Schedule {
    /// Episodes from 1 s in until faults were in force for at least `fault_ms` in all,
    /// ending with a heal.
    pub fn generate(seed: u64, nodes: usize, fault_ms: u64, menu: Menu) -> Schedule {
        let mut rng = Rng::new(seed).fork(0x5eed);
        let mut events = Vec::new();
        let (mut t, mut faulty) = (1_000, 0);
        let (mut joined, mut left) = (!menu.membership, !menu.membership);
        while faulty < fault_ms {
            // Membership changes start in a quiet moment: everything healed, all nodes up.
            if !joined && faulty >= fault_ms / 3 {
                joined = true;
                events.push(Event {
                    at_ms: t,
                    action: Action::Join(nodes - 1),
                });
            }
            if !left && faulty >= fault_ms * 2 / 3 {
                left = true;
                events.push(Event {
                    at_ms: t,
                    action: Action::Leave(0),
                });
            }
            let lasts = rng.range(2_000, 8_000);
            let at_once = if rng.chance(0.4) { 2 } else { 1 };
            // Not yet started, or leaving: no process faults (a leaving node restarted
            // could not tell it had left; the layout is not persisted, docs/cluster.md).
            let mut busy = Vec::new();
            if !joined {
                busy.push(nodes - 1);
            }
            if left && menu.membership {
                busy.push(0);
            }
            for _ in 0..at_once {
                if let Some(action) = pick(&mut rng, nodes, menu, &mut busy) {
                    events.push(Event { at_ms: t, action });
                }
            }
            events.push(Event {
                at_ms: t + lasts,
                action: Action::Heal,
            });
            faulty += lasts;
            t += lasts + rng.range(500, 3_000);
        }
        Schedule {
            seed,
            nodes,
            events,
        }
    }

    /// Milliseconds during which some fault was in force.
    pub fn faulty_ms(&self) -> u64 {
        let mut total = 0;
        let mut since = None;
        for e in &self.events {
            match (&e.action, since) {
                (Action::Heal, Some(s)) => {
                    total += e.at_ms - s;
                    since = None;
                }
                (Action::Heal | Action::Join(_) | Action::Leave(_), _) => {}
                (_, None) => since = Some(e.at_ms),
                (_, Some(_)) => {}
            }
        }
        total
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Partition,
    Loss,
    Delay,
    Kill,
    KillTwo,
    Pause,
}

/// One fault. Process faults go to nodes not already `busy` in this episode.
fn pick(rng: &mut Rng, n: usize, menu: Menu, busy: &mut Vec<usize>) -> Option<Action> {
    let mut kinds = Vec::new();
    if menu.partitions {
        kinds.extend([Kind::Partition; 3]);
    }
    if menu.loss {
        kinds.push(Kind::Loss);
    }
    if menu.delay {
        kinds.push(Kind::Delay);
    }
    if menu.kills {
        kinds.extend([Kind::Kill; 2]);
    }
    if menu.kill_two && n >= 3 {
        kinds.push(Kind::KillTwo);
    }
    if menu.pauses {
        kinds.push(Kind::Pause);
    }
    if kinds.is_empty() {
        return None;
    }
    let free: Vec<usize> = (0..n).filter(|i| !busy.contains(i)).collect();
    let action = match *rng.pick(&kinds) {
        Kind::Partition => partition(rng, n),
        Kind::Loss => Action::Loss {
            links: some_links(rng, n),
        },
        Kind::Delay => Action::Delay {
            links: some_links(rng, n),
            ms: rng.range(20, 400),
        },
        Kind::Kill | Kind::Pause if free.is_empty() => return None,
        Kind::KillTwo if free.len() < 2 => return None,
        Kind::Kill => Action::Kill(vec![*rng.pick(&free)]),
        Kind::KillTwo => {
            let order = rng.shuffled(free.len());
            Action::Kill(vec![free[order[0]], free[order[1]]])
        }
        Kind::Pause => Action::Pause(*rng.pick(&free)),
    };
    match &action {
        Action::Kill(nodes) => busy.extend(nodes),
        Action::Pause(i) => busy.push(*i),
        Action::Partition { .. }
        | Action::Loss { .. }
        | Action::Delay { .. }
        | Action::Heal
        | Action::Join(_)
        | Action::Leave(_) => {}
    }
    Some(action)
}

/// A random directed link per node, roughly: a third of all links.
fn some_links(rng: &mut Rng, n: usize) -> Vec<(usize, usize)> {
    let mut links = Vec::new();
    for a in 0..n {
        for b in 0..n {
            if a != b && rng.chance(0.34) {
                links.push((a, b));
            }
        }
    }
    if links.is_empty() {
        let a = rng.below(n as u64) as usize;
        links.push((a, (a + 1) % n));
    }
    links
}

/// Pairs between the two groups.
fn across(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter()
        .flat_map(|&x| b.iter().map(move |&y| (x, y)))
        .collect()
}

fn partition(rng: &mut Rng, n: usize) -> Action {
    let order = rng.shuffled(n);
    let how = if rng.chance(0.5) {
        LinkMode::Cut
    } else {
        LinkMode::Hold
    };
    let shape = rng.below(if n >= 5 { 4 } else { 3 });
    let (shape, pairs) = match shape {
        0 => {
            let k = rng.range(1, n as u64 - 1) as usize;
            let (a, b) = order.split_at(k);
            (format!("halves {a:?} | {b:?}"), across(a, b))
        }
        1 => {
            let (a, b) = order.split_at(1);
            (format!("isolated {a:?}"), across(a, b))
        }
        2 => {
            // order[0] sees both sides; the sides do not see each other.
            let rest = &order[1..];
            let k = rest.len().div_ceil(2);
            let (a, b) = rest.split_at(k);
            (
                format!("bridge {} between {a:?} and {b:?}", order[0]),
                across(a, b),
            )
        }
        _ => {
            // Jepsen's majorities ring: each node sees its two neighbours in `order`, a
            // majority of 5 with itself, and no two nodes see the same majority.
            let mut pairs = Vec::new();
            for i in 0..n {
                for j in i + 1..n {
                    let d = (j - i).min(n - (j - i));
                    if d > 1 {
                        pairs.push((order[i], order[j]));
                    }
                }
            }
            (format!("majorities ring {order:?}"), pairs)
        }
    };
    Action::Partition { shape, pairs, how }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Partition { shape, how, .. } => write!(f, "partition ({how:?}) {shape}"),
            Action::Loss { links } => write!(f, "drop frames on {links:?}"),
            Action::Delay { links, ms } => write!(f, "delay {ms} ms on {links:?}"),
            Action::Kill(nodes) => write!(f, "SIGKILL {nodes:?}"),
            Action::Pause(i) => write!(f, "SIGSTOP [{i}]"),
            Action::Heal => write!(f, "heal: links back, restart killed, SIGCONT paused"),
            Action::Join(i) => write!(f, "start [{i}]: it joins"),
            Action::Leave(i) => write!(f, "CLUSTER LEAVE on [{i}]"),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "schedule of seed {} ({} nodes, {:.1} s of faults):",
            self.seed,
            self.nodes,
            self.faulty_ms() as f64 / 1000.0
        )?;
        for e in &self.events {
            writeln!(f, "  {:>7.1} s  {}", e.at_ms as f64 / 1000.0, e.action)?;
        }
        Ok(())
    }
}
