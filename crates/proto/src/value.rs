//! The binary encoding of reply values, and their decoded form for clients.
//!
//! ```text
//! tag  meaning    body
//! 0x00 nil        -
//! 0x01 simple     u32 BE length, bytes   (a status such as "OK" or "PONG")
//! 0x02 error      u32 BE length, bytes   ("PREFIX message", e.g. "ERR syntax error")
//! 0x03 integer    i64 BE
//! 0x04 bulk       u32 BE length, bytes
//! 0x05 array      u32 BE count, then count values
//! 0x06 versioned  u32 BE length + context bytes, u32 BE count, count × (u32 BE length, bytes)
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

pub const TAG_NIL: u8 = 0x00;
pub const TAG_SIMPLE: u8 = 0x01;
pub const TAG_ERROR: u8 = 0x02;
pub const TAG_INT: u8 = 0x03;
pub const TAG_BULK: u8 = 0x04;
pub const TAG_ARRAY: u8 = 0x05;
pub const TAG_VERSIONED: u8 = 0x06;

/// Arrays nest at most this deep in a decoded reply (the server never nests more than 2).
pub const MAX_DEPTH: usize = 32;
/// Items reserved up front for an array nested in another (see `decode_one`).
const NESTED_PREALLOC: usize = 16;

/// A decoded reply value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Nil,
    Simple(Bytes),
    Error(Bytes),
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Value>),
    /// A value with its causal context: one entry per sibling (one in the common case).
    Versioned {
        context: Bytes,
        values: Vec<Bytes>,
    },
}

impl Value {
    /// Decodes one value that fills `buf` exactly (a reply frame's payload).
    pub fn decode(buf: &Bytes) -> Result<Value, ProtoError> {
        let mut r = Reader::new(buf, "reply");
        let v = decode_one(&mut r, buf, 0)?;
        r.finish()?;
        Ok(v)
    }

    /// Appends the binary encoding of this value.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Value::Nil => out.put_u8(TAG_NIL),
            Value::Simple(s) => {
                out.put_u8(TAG_SIMPLE);
                put_bytes(out, s);
            }
            Value::Error(s) => {
                out.put_u8(TAG_ERROR);
                put_bytes(out, s);
            }
            Value::Int(i) => {
                out.put_u8(TAG_INT);
                out.put_i64(*i);
            }
            Value::Bulk(b) => {
                out.put_u8(TAG_BULK);
                put_bytes(out, b);
            }
            Value::Array(items) => {
                out.put_u8(TAG_ARRAY);
                out.put_u32(items.len() as u32);
                for v in items {
                    v.encode(out);
                }
            }
            Value::Versioned { context, values } => {
                out.put_u8(TAG_VERSIONED);
                put_bytes(out, context);
                out.put_u32(values.len() as u32);
                for v in values {
                    put_bytes(out, v);
                }
            }
        }
    }
}

fn sub(whole: &Bytes, part: &[u8]) -> Bytes {
    whole.slice_ref(part)
}

fn decode_one(r: &mut Reader<'_>, whole: &Bytes, depth: usize) -> Result<Value, ProtoError> {
    Ok(match r.u8()? {
        TAG_NIL => Value::Nil,
        TAG_SIMPLE => Value::Simple(sub(whole, r.bytes()?)),
        TAG_ERROR => Value::Error(sub(whole, r.bytes()?)),
        TAG_INT => Value::Int(r.u64()? as i64),
        TAG_BULK => Value::Bulk(sub(whole, r.bytes()?)),
        TAG_ARRAY => {
            if depth >= MAX_DEPTH {
                return Err(ProtoError::malformed("reply", "arrays nested too deep"));
            }
            let n = r.u32()? as usize;
            // Every value takes at least one byte: bound the count before reserving.
            if n > r.remaining() {
                return Err(ProtoError::malformed("reply", "truncated"));
            }
            // The count is bounded only by the bytes left, which every enclosing array has
            // already reserved for: reserving it in full at each level would multiply memory
            // by the depth (32 levels × 56 bytes per input byte). Only the outermost array
            // reserves its count; nested ones grow as their items actually arrive.
            let reserve = if depth == 0 {
                n
            } else {
                n.min(NESTED_PREALLOC)
            };
            let mut items = Vec::with_capacity(reserve);
            for _ in 0..n {
                items.push(decode_one(r, whole, depth + 1)?);
            }
            Value::Array(items)
        }
        TAG_VERSIONED => {
            let context = sub(whole, r.bytes()?);
            let n = r.u32()? as usize;
            if n > r.remaining() / 4 {
                return Err(ProtoError::malformed("reply", "truncated"));
            }
            let mut values = Vec::with_capacity(n);
            for _ in 0..n {
                values.push(sub(whole, r.bytes()?));
            }
            Value::Versioned { context, values }
        }
        _ => return Err(ProtoError::malformed("reply", "unknown value tag")),
    })
}
