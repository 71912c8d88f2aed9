//! Wire codec of ringkv, shared by the server, the client crate, `kvsh` and the load generator.
//!
//! Two protocols share one port; the first byte of a connection picks one:
//! - **binary frames** ([`frame`]): length-prefixed, request ids, replies in any order;
//!   a binary connection starts with a `HELLO` frame, whose first byte is always `0x00`.
//! - **RESP2** ([`resp`]): multibulk and inline commands, as Redis speaks them.
//!
//! Replies are written through one [`ReplySink`] interface with an encoder per protocol, so
//! command code never knows which protocol a client speaks. Peer links of a cluster speak the
//! binary frames too, with their own opcodes ([`peer`]). This crate knows nothing of sockets
//! or stores: it turns bytes into typed requests and replies into bytes.
//! Every decoder checks lengths against limits before allocating and never panics.

pub mod commands;
pub mod error;
pub mod frame;
pub mod peer;
pub mod reply;
pub mod resp;
pub mod value;
mod wire;

pub use error::ProtoError;
pub use frame::{FrameHeader, Opcode, Request, Status, HEADER_LEN, PROTOCOL_VERSION};
pub use peer::{PeerOpcode, PeerRequest};
pub use reply::{FrameWriter, ReplySink, RespWriter};
pub use resp::{Parsed, RespLimits, RespRequest};
pub use value::Value;

/// The hash of a key used everywhere a key is placed: shard inside a node, and (later) the
/// position on the cluster ring. xxh3-64 with seed 0: stable across versions and platforms,
/// so clients can route with the same function.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Which protocol a connection speaks, decided by its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Binary,
    Resp,
}

impl Protocol {
    /// A binary connection must open with a HELLO frame, whose 4-byte big-endian length is
    /// far below 2^24, so its first byte is 0x00. RESP never starts with 0x00.
    pub fn detect(first_byte: u8) -> Protocol {
        if first_byte == 0 {
            Protocol::Binary
        } else {
            Protocol::Resp
        }
    }
}
