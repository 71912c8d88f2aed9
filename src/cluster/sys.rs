//! The cluster layer's sockets and timers, in one place: everything peer links and the
//! coordinator use of the network and of time comes through here. Today these are tokio's;
//! the fault-injection work can swap them for a simulated network and clock (the turmoil
//! crate's types have the same shape) under a test feature, without touching the replication
//! logic. Wall-clock time (versions, hints) comes from `crate::util::now_ms`, the one wall
//! clock of the crate.

pub use tokio::net::TcpStream;
pub use tokio::time::{interval, sleep, timeout, Instant, MissedTickBehavior};
