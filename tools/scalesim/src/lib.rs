//! scalesim: what a ringkv cluster of hundreds of nodes does, by simulation over the
//! project's own code (docs/scale.md has the numbers and the commands that made them).
//!
//! - [`gossip`]: a seeded discrete-event simulation of gossip and failure detection (real
//!   `Layout`, `PhiDetector`, GOSSIP encoders) over a network model of latency, jitter and
//!   loss: how long a layout change takes to reach every node, how long a dead node takes to
//!   be convicted, how often a live one is, and what gossip costs;
//! - [`ring_stats`]: partition balance and the share of replicas that move when a node joins,
//!   from `Ring::build`;
//! - [`cost`]: the CPU the real per-message and per-change work takes at each size (wall
//!   clock on the machine that runs it: indicative, never asserted).

pub mod cost;
pub mod gossip;
pub mod ring_stats;
pub mod rng;
pub mod turmoil_sim;
pub mod wire;
