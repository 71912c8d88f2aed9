use thiserror::Error;

/// A framing or encoding error. Every variant means the byte stream can't be trusted any more:
/// the server answers with an error and closes that connection.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes (raise --max-frame-bytes)")]
    FrameTooLarge { len: u64, max: u64 },
    #[error("frame length {0} is shorter than the 12-byte header")]
    FrameTooShort(u32),
    #[error("unknown opcode 0x{0:02x}")]
    UnknownOpcode(u8),
    /// An opcode of the peer range (0x40–0x7f, protocol.md §6) on a client connection.
    #[error("peer opcode 0x{0:02x} is only accepted on an authenticated peer link")]
    PeerOpcode(u8),
    #[error("malformed {what} payload: {why}")]
    Malformed {
        what: &'static str,
        why: &'static str,
    },
    #[error("unsupported protocol version range {min}..={max} (server speaks {server})")]
    Version { min: u16, max: u16, server: u16 },
    /// RESP errors carry the exact text Redis sends (after the `ERR ` prefix).
    #[error("{0}")]
    Resp(std::borrow::Cow<'static, str>),
}

impl ProtoError {
    pub(crate) fn malformed(what: &'static str, why: &'static str) -> Self {
        ProtoError::Malformed { what, why }
    }
}
