//! Parsing one request off the read buffer: RESP commands and binary frames, with the
//! limits that apply before authentication, and the binary HELLO handshake.

use ringkv_proto::frame::{decode_frame, Opcode};
use ringkv_proto::resp::{parse_request_hinted, Parsed, RespLimits, MAX_INLINE};
use ringkv_proto::{FrameWriter, ProtoError, Request, RespRequest, PROTOCOL_VERSION};
use smallvec::SmallVec;

use super::connection::State;
use super::forward::ReplyTo;
use crate::node::LoopStats;

/// Most arguments in one command: as Redis (a signed 32-bit count), so what really bounds a
/// request is --max-query-buffer-bytes.
const MAX_ARGS: usize = i32::MAX as usize;
/// Largest RESP bulk argument whatever --max-frame-bytes says (protocol.md §3.2: the limit
/// is min(512 MiB, --max-frame-bytes), as Redis's proto-max-bulk-len default).
const MAX_BULK: usize = 512 * 1024 * 1024;
/// Before AUTH, Redis allows at most 10 arguments of 16 KiB (CVE-2021-32675).
const PREAUTH_ARGS: usize = 10;
const PREAUTH_BULK: usize = 16 * 1024;
/// Before authentication a binary frame is as tight: a HELLO with a password and a client name
/// of at most [`PREAUTH_BULK`] each, plus its fixed fields.
const PREAUTH_FRAME_BYTES: usize = 2 * PREAUTH_BULK + 64;

pub(super) enum Next<'a> {
    Args(SmallVec<[&'a [u8]; 6]>, bool, ReplyTo),
    Owned(Vec<Vec<u8>>),
    Hello(HelloReq<'a>, ReplyTo),
    Skip,
}

pub(super) struct HelloReq<'a> {
    min: u16,
    max: u16,
    password: &'a [u8],
    name: &'a [u8],
}

/// Replies to a framing error and marks the connection for closing.
fn fatal(st: &mut State, reply_to: ReplyTo, msg: &str) {
    LoopStats::add(&st.ctx.stats().protocol_errors, 1);
    match reply_to {
        None => st.out.reply(None, |s| s.error(msg)),
        Some((id, op)) => {
            // A fatal frame ends the stream: it goes out after every reply still pending.
            st.out.last(|buf| FrameWriter::new(buf, id, op).fatal(msg));
        }
    }
    st.session.close = true;
}

pub(super) fn next_resp<'a>(
    st: &mut State,
    buf: &'a [u8],
    max_frame: usize,
) -> Option<(Next<'a>, usize)> {
    let limits = if st.session.authenticated {
        RespLimits {
            max_args: MAX_ARGS,
            max_bulk: max_frame.min(MAX_BULK),
            max_inline: MAX_INLINE,
            unauthenticated: false,
        }
    } else {
        RespLimits {
            max_args: PREAUTH_ARGS,
            max_bulk: PREAUTH_BULK,
            max_inline: MAX_INLINE,
            unauthenticated: true,
        }
    };
    if buf.len() < st.need {
        return None;
    }
    let parsed = parse_request_hinted(buf, &limits);
    st.need = 0;
    match parsed {
        Ok(Parsed::Incomplete { need }) => {
            let max = st.ctx.node.config.max_query_buffer_bytes;
            if need > max {
                LoopStats::add(&st.ctx.stats().query_limit_disconnections, 1);
                fatal(
                    st,
                    None,
                    &format!(
                        "ERR Protocol error: this request needs at least {need} bytes, over \
                         the query buffer limit of {max} (--max-query-buffer-bytes)"
                    ),
                );
                return Some((Next::Skip, buf.len()));
            }
            st.need = need;
            None
        }
        Ok(Parsed::Done(RespRequest::Args(a), n)) => Some((Next::Args(a, false, None), n)),
        Ok(Parsed::Done(RespRequest::Owned(a), n)) => Some((Next::Owned(a), n)),
        Ok(Parsed::Done(RespRequest::Empty, n)) => Some((Next::Skip, n)),
        Err(e) => {
            fatal(st, None, &format!("ERR {e}"));
            Some((Next::Skip, buf.len()))
        }
    }
}

pub(super) fn next_binary<'a>(
    st: &mut State,
    buf: &'a [u8],
    max_frame: usize,
) -> Option<(Next<'a>, usize)> {
    let max_frame = if st.session.authenticated {
        max_frame
    } else {
        PREAUTH_FRAME_BYTES
    };
    let (hdr, payload, used) = match decode_frame(buf, max_frame) {
        Ok(Some(f)) => f,
        Ok(None) => return None,
        Err(e) => {
            let msg = match e {
                ProtoError::FrameTooLarge { len, max } if !st.session.authenticated => format!(
                    "ERR frame of {len} bytes exceeds the limit of {max} bytes before \
                     authentication (send HELLO with the password first)"
                ),
                e => format!("ERR {e}"),
            };
            fatal(st, Some((0, 0)), &msg);
            return Some((Next::Skip, buf.len()));
        }
    };
    let reply_to = Some((hdr.request_id, hdr.opcode));
    st.req_quorum = hdr.quorum();
    if hdr.is_reply() {
        st.out.reply(reply_to, |s| {
            s.error("ERR unexpected reply frame from a client")
        });
        return Some((Next::Skip, used));
    }
    if !st.hello_done && hdr.opcode == ringkv_proto::peer::PeerOpcode::PeerHello as u8 {
        // Cluster nodes take peer links before this point (net::connection::is_peer).
        fatal(
            st,
            reply_to,
            "ERR this node does not accept peer links: it is not in cluster mode (start it \
             with --cluster-secret), or it serves TLS",
        );
        return Some((Next::Skip, buf.len()));
    }
    if !st.hello_done && hdr.opcode != Opcode::Hello as u8 {
        fatal(
            st,
            reply_to,
            "ERR protocol error: the first frame must be HELLO",
        );
        return Some((Next::Skip, buf.len()));
    }
    let max_args = if st.session.authenticated {
        MAX_ARGS
    } else {
        PREAUTH_ARGS
    };
    let req = match Request::parse(hdr.opcode, payload, max_args) {
        Ok(r) => r,
        Err(ProtoError::UnknownOpcode(op)) => {
            st.out.reply(reply_to, |s| {
                s.error(&format!("ERR unknown opcode 0x{op:02x}"))
            });
            return Some((Next::Skip, used));
        }
        Err(e) => {
            st.out.reply(reply_to, |s| s.error(&format!("ERR {e}")));
            return Some((Next::Skip, used));
        }
    };
    let mut args: SmallVec<[&[u8]; 6]> = SmallVec::new();
    match req {
        Request::Hello {
            min_version,
            max_version,
            password,
            client_name,
        } => {
            let h = HelloReq {
                min: min_version,
                max: max_version,
                password,
                name: client_name,
            };
            return Some((Next::Hello(h, reply_to), used));
        }
        Request::Ping => args.push(b"PING"),
        Request::Get { key } => args.extend([&b"VGET"[..], key]),
        Request::Put {
            key,
            value,
            context,
            ttl_ms,
        } => {
            // The TTL travels as its 8 wire bytes (the payload's last field), so the
            // internal VPUT needs no formatting and forwards like any argument vector.
            let ttl = &payload[payload.len() - 8..];
            debug_assert_eq!(ttl, ttl_ms.to_be_bytes());
            args.extend([&b"VPUT"[..], key, value, context, ttl]);
        }
        Request::Delete { key, context } => args.extend([&b"VDEL"[..], key, context]),
        Request::Command { args: a } => return Some((Next::Args(a, false, reply_to), used)),
    }
    Some((Next::Args(args, true, reply_to), used))
}

pub(super) fn hello(st: &mut State, h: HelloReq<'_>, reply_to: ReplyTo) {
    let node = st.ctx.node.clone();
    if h.max < PROTOCOL_VERSION || h.min > PROTOCOL_VERSION {
        let e = ProtoError::Version {
            min: h.min,
            max: h.max,
            server: PROTOCOL_VERSION,
        };
        return fatal(st, reply_to, &format!("ERR {e}"));
    }
    // With a server password, HELLO must carry it; without one, the field is ignored.
    if node.config.password.is_some() {
        if let Err(e) = st.session.try_auth(&node, h.password) {
            return st.out.reply(reply_to, |s| s.error(&e.0));
        }
    }
    // Node ids must be unique (they are the actors of every dot): a node that meets another
    // with its own id refuses it (two copies of one data directory, say).
    match crate::node::peer_node_id(h.name) {
        None => {}
        Some(Ok(id)) if id == node.node_id => {
            let msg = format!(
                "ERR node id collision: the connecting node has this node's id {id:016x}; node \
                 ids must be unique (start one of them on a new data directory)"
            );
            return fatal(st, reply_to, &msg);
        }
        Some(Ok(_)) => {}
        Some(Err(())) => {
            let msg = format!(
                "ERR malformed node name: a client name starting with {:?} must end with the \
                 node's id in 16 hex digits",
                crate::node::PEER_NAME_PREFIX
            );
            return st.out.reply(reply_to, |s| s.error(&msg));
        }
    }
    if !h.name.is_empty() {
        if let Err(e) = st.session.set_name(h.name) {
            return st.out.reply(reply_to, |s| s.error(&e.0));
        }
    }
    st.hello_done = true;
    st.out.reply(reply_to, |s| {
        s.array(4);
        s.int(PROTOCOL_VERSION as i64);
        s.bulk(b"ringkv");
        s.bulk(env!("CARGO_PKG_VERSION").as_bytes());
        s.int(node.node_id as i64);
    });
}
