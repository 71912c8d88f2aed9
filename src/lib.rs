//! ringkv: a Dynamo-style key-value server with a Redis-compatible face.
//!
//! Where a request goes, by module:
//! - [`net`]: listeners, one event loop per core, connections, hand-off between loops;
//! - `ringkv_proto` (crates/proto): the wire codec, binary frames and RESP2;
//! - [`cmd`]: parsing into typed commands, then executing them, one file per family;
//! - [`store`]: shards of keys' versions (dotted version vectors, siblings, tombstones, TTL);
//! - [`wal`] / [`snapshot`]: durability, through the narrow file layer [`disk`];
//!   [`durability`] ties recovery, WAL writers and snapshots together for a node;
//! - [`cluster`]: peer links, gossip, the quorum coordinator, read repair, hinted handoff;
//!   [`ring`]: partitions, preference lists, the layout, failure detection, quorum counting;
//! - [`node`]: what the loops share (config, store, counters, client list, shutdown);
//! - [`ring`]: the cluster's pure logic: partitions and preference lists, failure detection,
//!   quorum counting (no sockets, no store);
//! - [`config`]: flags, config file, defaults; [`tls`]: certificates and the TLS handshake;
//! - [`record`]: the WAL record format (a leaf, so the store can log without the WAL);
//! - [`util`]: the wall clock and the mutex helper every layer uses; [`sockets`]: the TCP
//!   types every layer uses (simulated ones under feature `sim`).
//!
//! Dependencies point one way, top to bottom: net, metrics → cluster → cmd → node → ring, stats, durability →
//! wal → snapshot → store → record, util, config, disk. `tests/layering.rs` checks that the
//! module graph has no cycle and that the store imports nothing above it.

pub mod actor;
pub mod cluster;
pub mod cmd;
pub mod config;
pub mod datadir;
pub mod disk;
pub mod durability;
pub mod metrics;
pub mod net;
pub mod node;
pub mod record;
pub mod ring;
pub mod snapshot;
pub mod sockets;
pub mod stats;
pub mod store;
pub mod tls;
pub mod util;
pub mod wal;
