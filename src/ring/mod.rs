//! The cluster's pure logic: where a key lives, who is alive, when a quorum is met, who is a
//! member.
//!
//! Nothing here touches sockets or the store: every function is a deterministic computation
//! over its arguments (time comes in as `now_ms`), so each node computes the same answers from
//! the same membership and the tests can script every input.
//! - [`partition`]: the token ring, partitions and their preference lists and fallbacks;
//! - [`detector`]: the phi-accrual failure detector (local liveness, never ownership);
//! - [`quorum`]: counting replica answers toward W (writes) and R (reads);
//! - [`layout`]: the members and their states, merged by gossip;
//! - [`membership`]: what a node knows of its cluster, shared by its loops (layout, ring,
//!   liveness), as immutable views.

pub mod aae;
pub mod detector;
pub mod layout;
pub mod membership;
pub mod partition;
pub mod quorum;

pub use detector::{classify, Liveness, PhiDetector, DEFAULT_PHI_CONVICT_THRESHOLD};
pub use partition::{partition_of, partition_start, token, Ring, RingError, RingNode};
pub use quorum::{Progress, ReadAnswer, ReadQuorum, WriteAnswer, WriteQuorum};

/// A node's identity in the cluster (the same number as the store's `NodeId`, the actor of
/// its dots); a plain alias so that the ring depends on nothing above it.
pub type NodeId = u64;
