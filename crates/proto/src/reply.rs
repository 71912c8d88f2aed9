//! Writing replies. Commands describe their reply through [`ReplySink`]; the connection picks
//! the encoder for its protocol. Both encoders write straight into the output buffer: no
//! intermediate reply value is built on the hot path.

use bytes::{BufMut, BytesMut};

use crate::frame::{begin_frame, finish_frame, Status, FLAG_REPLY};
use crate::value::{TAG_ARRAY, TAG_BULK, TAG_ERROR, TAG_INT, TAG_NIL, TAG_SIMPLE, TAG_VERSIONED};
use crate::wire::put_bytes;

/// The reply vocabulary shared by RESP2 and the binary protocol.
///
/// An array is announced with its length and followed by exactly that many values.
pub trait ReplySink {
    /// A status reply such as `OK` or `PONG` (must not contain CR or LF).
    fn simple(&mut self, s: &str);
    /// An error reply: `PREFIX message`, e.g. `ERR syntax error` (no CR or LF).
    fn error(&mut self, msg: &str);
    fn int(&mut self, v: i64);
    fn bulk(&mut self, b: &[u8]);
    fn nil(&mut self);
    fn array(&mut self, len: usize);
    /// A stored value with its causal context. RESP clients see only the value as a bulk
    /// string (an array of bulk strings if there are siblings); binary clients get both.
    fn versioned(&mut self, context: &[u8], values: &[&[u8]]);
    /// Whether `versioned` shows the context (binary) or drops it (RESP): a caller may skip
    /// building a context nobody reads. (No default: a wrapper must pass it on.)
    fn wants_context(&self) -> bool;
}

/// Encodes replies as RESP2.
pub struct RespWriter<'a> {
    out: &'a mut BytesMut,
}

impl<'a> RespWriter<'a> {
    pub fn new(out: &'a mut BytesMut) -> Self {
        RespWriter { out }
    }

    fn prefix_len(&mut self, c: u8, n: i64) {
        let mut b = itoa::Buffer::new();
        self.out.put_u8(c);
        self.out.put_slice(b.format(n).as_bytes());
        self.out.put_slice(b"\r\n");
    }
}

impl ReplySink for RespWriter<'_> {
    fn simple(&mut self, s: &str) {
        self.out.put_u8(b'+');
        self.out.put_slice(s.as_bytes());
        self.out.put_slice(b"\r\n");
    }
    fn error(&mut self, msg: &str) {
        self.out.put_u8(b'-');
        self.out.put_slice(msg.as_bytes());
        self.out.put_slice(b"\r\n");
    }
    fn int(&mut self, v: i64) {
        self.prefix_len(b':', v);
    }
    fn bulk(&mut self, b: &[u8]) {
        self.out.reserve(b.len() + 16);
        self.prefix_len(b'$', b.len() as i64);
        self.out.put_slice(b);
        self.out.put_slice(b"\r\n");
    }
    fn nil(&mut self) {
        self.out.put_slice(b"$-1\r\n");
    }
    fn array(&mut self, len: usize) {
        self.prefix_len(b'*', len as i64);
    }
    fn wants_context(&self) -> bool {
        false
    }
    fn versioned(&mut self, _context: &[u8], values: &[&[u8]]) {
        match values {
            [] => self.nil(),
            [one] => self.bulk(one),
            many => {
                self.array(many.len());
                for v in many {
                    self.bulk(v);
                }
            }
        }
    }
}

/// Encodes one reply as a binary frame. Call [`FrameWriter::finish`] after the reply's value.
pub struct FrameWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
    status: Status,
    first: bool,
}

impl<'a> FrameWriter<'a> {
    pub fn new(out: &'a mut BytesMut, request_id: u64, opcode: u8) -> Self {
        let start = begin_frame(out, request_id, opcode, FLAG_REPLY);
        FrameWriter {
            out,
            start,
            status: Status::Ok,
            first: true,
        }
    }

    /// Marks the frame fatal: the connection closes after it.
    pub fn fatal(mut self, msg: &str) {
        self.error(msg);
        self.status = Status::Fatal;
        self.finish();
    }

    pub fn finish(self) {
        finish_frame(self.out, self.start, self.status);
    }

    fn top(&mut self, is_error: bool) {
        if self.first {
            self.first = false;
            if is_error {
                self.status = Status::Error;
            }
        }
    }
}

impl ReplySink for FrameWriter<'_> {
    fn simple(&mut self, s: &str) {
        self.top(false);
        self.out.put_u8(TAG_SIMPLE);
        put_bytes(self.out, s.as_bytes());
    }
    fn error(&mut self, msg: &str) {
        self.top(true);
        self.out.put_u8(TAG_ERROR);
        put_bytes(self.out, msg.as_bytes());
    }
    fn int(&mut self, v: i64) {
        self.top(false);
        self.out.put_u8(TAG_INT);
        self.out.put_i64(v);
    }
    fn bulk(&mut self, b: &[u8]) {
        self.top(false);
        self.out.put_u8(TAG_BULK);
        put_bytes(self.out, b);
    }
    fn nil(&mut self) {
        self.top(false);
        self.out.put_u8(TAG_NIL);
    }
    fn array(&mut self, len: usize) {
        self.top(false);
        self.out.put_u8(TAG_ARRAY);
        self.out.put_u32(len as u32);
    }
    fn wants_context(&self) -> bool {
        true
    }
    fn versioned(&mut self, context: &[u8], values: &[&[u8]]) {
        self.top(false);
        self.out.put_u8(TAG_VERSIONED);
        put_bytes(self.out, context);
        self.out.put_u32(values.len() as u32);
        for v in values {
            put_bytes(self.out, v);
        }
    }
}
