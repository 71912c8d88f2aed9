//! Binary frames: the protocol of `ringkv-client`, `kvsh`, and of peer links ([`crate::peer`]).
//!
//! ```text
//! offset size field
//! 0      4    length      u32 BE: bytes after this field (12 + payload length)
//! 4      8    request id  u64 BE: chosen by the requester, echoed in the reply
//! 12     1    opcode      see [`Opcode`]; replies echo the request's opcode
//! 13     1    flags       bit 0: this frame is a reply; other bits 0
//! 14     1    status      replies: see [`Status`]; requests: 0
//! 15     1    quorum      requests: R << 4 | W asked of a cluster (0: default); replies: 0
//! 16     ..   payload     opcode-specific (requests), an encoded [`crate::Value`] (replies)
//! ```
//! The full byte-by-byte specification, with examples, is in protocol.md.

use bytes::{BufMut, BytesMut};
use smallvec::SmallVec;

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// Size of the fixed header, length field included.
pub const HEADER_LEN: usize = 16;
/// Bytes of the header counted by the length field.
const COUNTED_HEADER: u32 = 12;
/// The binary protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Flag bit marking a reply frame.
pub const FLAG_REPLY: u8 = 0x01;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Opcode {
    Hello = 0x01,
    Ping = 0x02,
    Get = 0x10,
    Put = 0x11,
    Delete = 0x12,
    /// Any command of the Redis-like command set, as an argument vector.
    Command = 0x20,
}

impl Opcode {
    pub fn from_u8(b: u8) -> Option<Opcode> {
        Some(match b {
            0x01 => Opcode::Hello,
            0x02 => Opcode::Ping,
            0x10 => Opcode::Get,
            0x11 => Opcode::Put,
            0x12 => Opcode::Delete,
            0x20 => Opcode::Command,
            _ => return None,
        })
    }
}

/// Status byte of a reply frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The payload is the command's reply.
    Ok = 0,
    /// The command failed; the payload is an error value (`PREFIX message`). The connection
    /// stays usable.
    Error = 1,
    /// The stream was malformed; the payload is an error value and the server closes the
    /// connection after sending this frame.
    Fatal = 2,
}

impl Status {
    pub fn from_u8(b: u8) -> Option<Status> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Error,
            2 => Status::Fatal,
            _ => return None,
        })
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub request_id: u64,
    /// Raw opcode byte: an unknown opcode is a per-request error, not a framing error.
    pub opcode: u8,
    pub flags: u8,
    pub status: u8,
    /// Byte 15. In a request to a cluster node: the read quorum R in the high 4 bits and the
    /// write quorum W in the low 4 bits for this request, 0 for the default (protocol.md §7).
    pub quorum: u8,
}

impl FrameHeader {
    pub fn is_reply(&self) -> bool {
        self.flags & FLAG_REPLY != 0
    }

    /// The (R, W) this request asks for; 0 = the default.
    pub fn quorum(&self) -> (u8, u8) {
        (self.quorum >> 4, self.quorum & 0x0f)
    }
}

/// A whole frame found at the front of a buffer: header, payload, bytes it took.
pub type SplitFrame<'a> = (FrameHeader, &'a [u8], usize);

/// Splits one frame off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, `Ok(Some((header, payload, consumed)))` for a
/// whole frame. The length is checked against `max_frame` (which counts the whole frame,
/// header included) before anything else, so a caller can refuse to buffer a huge frame.
pub fn decode_frame(buf: &[u8], max_frame: usize) -> Result<Option<SplitFrame<'_>>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let total = 4u64 + len as u64;
    if total > max_frame as u64 {
        return Err(ProtoError::FrameTooLarge {
            len: total,
            max: max_frame as u64,
        });
    }
    if len < COUNTED_HEADER {
        return Err(ProtoError::FrameTooShort(len));
    }
    let total = total as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[4..12]);
    let header = FrameHeader {
        request_id: u64::from_be_bytes(id),
        opcode: buf[12],
        flags: buf[13],
        status: buf[14],
        quorum: buf[15],
    };
    Ok(Some((header, &buf[HEADER_LEN..total], total)))
}

/// Appends a frame header with a placeholder length; returns its offset for [`finish_frame`].
pub fn begin_frame(out: &mut BytesMut, request_id: u64, opcode: u8, flags: u8) -> usize {
    let start = out.len();
    out.put_u32(0);
    out.put_u64(request_id);
    out.put_u8(opcode);
    out.put_u8(flags);
    out.put_u8(0);
    out.put_u8(0);
    start
}

/// Sets the request id of the whole frame at the start of `frame` (one encoded before its id
/// was known).
pub fn set_request_id(frame: &mut [u8], request_id: u64) {
    if let Some(id) = frame.get_mut(4..12) {
        id.copy_from_slice(&request_id.to_be_bytes());
    }
}

/// Patches the length (and status) of the frame begun at `start`.
pub fn finish_frame(out: &mut BytesMut, start: usize, status: Status) {
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 14] = status as u8;
}

/// A decoded binary request. Byte fields borrow from the frame payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Opens a connection: the range of protocol versions the client speaks, and optional
    /// credentials and client name (empty = none).
    Hello {
        min_version: u16,
        max_version: u16,
        password: &'a [u8],
        client_name: &'a [u8],
    },
    Ping,
    /// Reads a key: the reply carries the value(s) and the causal context.
    Get {
        key: &'a [u8],
    },
    /// Writes a key. `context` is a token from an earlier GET (empty = none);
    /// `ttl_ms` 0 means no expiry.
    Put {
        key: &'a [u8],
        value: &'a [u8],
        context: &'a [u8],
        ttl_ms: u64,
    },
    /// Deletes a key (writes a tombstone), with an optional causal context.
    Delete {
        key: &'a [u8],
        context: &'a [u8],
    },
    /// Any command as an argument vector, e.g. `["INCRBY", "n", "5"]`.
    Command {
        args: SmallVec<[&'a [u8]; 6]>,
    },
}

impl<'a> Request<'a> {
    /// Parses a request payload. `max_args` bounds the argument count of `Command`. An opcode
    /// of the peer range 0x40–0x7f is [`ProtoError::PeerOpcode`] (a client connection must not
    /// send one; peer links parse with [`crate::peer::PeerRequest::parse`]).
    pub fn parse(opcode: u8, payload: &'a [u8], max_args: usize) -> Result<Self, ProtoError> {
        let op = match Opcode::from_u8(opcode) {
            Some(op) => op,
            None if crate::peer::is_peer_opcode(opcode) => {
                return Err(ProtoError::PeerOpcode(opcode))
            }
            None => return Err(ProtoError::UnknownOpcode(opcode)),
        };
        let what = match op {
            Opcode::Hello => "HELLO",
            Opcode::Ping => "PING",
            Opcode::Get => "GET",
            Opcode::Put => "PUT",
            Opcode::Delete => "DELETE",
            Opcode::Command => "COMMAND",
        };
        let mut r = Reader::new(payload, what);
        let req = match op {
            Opcode::Hello => Request::Hello {
                min_version: r.u16()?,
                max_version: r.u16()?,
                password: r.bytes()?,
                client_name: r.bytes()?,
            },
            Opcode::Ping => Request::Ping,
            Opcode::Get => Request::Get { key: r.bytes()? },
            Opcode::Put => Request::Put {
                key: r.bytes()?,
                value: r.bytes()?,
                context: r.bytes()?,
                ttl_ms: r.u64()?,
            },
            Opcode::Delete => Request::Delete {
                key: r.bytes()?,
                context: r.bytes()?,
            },
            Opcode::Command => {
                let argc = r.u32()? as usize;
                if argc == 0 {
                    return Err(ProtoError::malformed(what, "no arguments"));
                }
                if argc > max_args {
                    return Err(ProtoError::malformed(what, "too many arguments"));
                }
                // Each argument takes at least its 4-byte length: bound the count by the
                // payload before reserving anything.
                if argc > r.remaining() / 4 {
                    return Err(ProtoError::malformed(what, "truncated"));
                }
                let mut args = SmallVec::with_capacity(argc);
                for _ in 0..argc {
                    args.push(r.bytes()?);
                }
                Request::Command { args }
            }
        };
        r.finish()?;
        Ok(req)
    }

    pub fn opcode(&self) -> Opcode {
        match self {
            Request::Hello { .. } => Opcode::Hello,
            Request::Ping => Opcode::Ping,
            Request::Get { .. } => Opcode::Get,
            Request::Put { .. } => Opcode::Put,
            Request::Delete { .. } => Opcode::Delete,
            Request::Command { .. } => Opcode::Command,
        }
    }

    /// Appends this request as one whole frame.
    pub fn encode(&self, request_id: u64, out: &mut BytesMut) {
        let start = begin_frame(out, request_id, self.opcode() as u8, 0);
        match self {
            Request::Hello {
                min_version,
                max_version,
                password,
                client_name,
            } => {
                out.put_u16(*min_version);
                out.put_u16(*max_version);
                put_bytes(out, password);
                put_bytes(out, client_name);
            }
            Request::Ping => {}
            Request::Get { key } => put_bytes(out, key),
            Request::Put {
                key,
                value,
                context,
                ttl_ms,
            } => {
                put_bytes(out, key);
                put_bytes(out, value);
                put_bytes(out, context);
                out.put_u64(*ttl_ms);
            }
            Request::Delete { key, context } => {
                put_bytes(out, key);
                put_bytes(out, context);
            }
            Request::Command { args } => {
                out.put_u32(args.len() as u32);
                for a in args {
                    put_bytes(out, a);
                }
            }
        }
        finish_frame(out, start, Status::Ok);
    }
}
