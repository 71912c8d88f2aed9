//! Multi-key commands on a cluster: MGET, MSET, DEL/UNLINK and EXISTS are split into one
//! single-key command per key, each coordinated on its own (the keys may live on different
//! nodes), and their replies combined as Redis would reply to the whole. Per-key semantics:
//! MSET is not atomic across keys on a cluster (a failure may leave some keys written; the
//! reply is then the first error), DEL and EXISTS count per key. MSETNX checks every key
//! absent at R, then writes them all as MSET does (two rounds, not atomic: see
//! protocol.md §7).

use std::rc::Rc;

use bytes::BytesMut;
use futures::future::join_all;
use ringkv_proto::ReplySink;

use super::coordinator::{coordinate, encode, AckWatch, Coordinated, Quorum, ReplyTo};
use super::LocalLoop;
use crate::cmd::Command;
use crate::durability::Marks;

/// How the per-key replies combine.
enum Combine {
    /// MGET: an array of the values.
    Array,
    /// DEL, UNLINK, EXISTS: the sum of the integers.
    Sum,
    /// MSET: OK if every SET answered OK.
    AllOk,
}

/// One RESP reply, as the combination needs it.
#[derive(Debug)]
pub(super) enum Part {
    Nil,
    Bulk(Vec<u8>),
    Int(i64),
    Ok,
    Error(String),
}

/// Reads the single RESP reply a sub-command produced.
pub(super) fn part(b: &[u8]) -> Part {
    let line_end = b.windows(2).position(|w| w == b"\r\n").unwrap_or(b.len());
    let (tag, rest) = match b.first() {
        Some(t) => (*t, &b[1..line_end.max(1)]),
        None => return Part::Error("ERR internal: empty reply".into()),
    };
    let text = String::from_utf8_lossy(rest);
    match tag {
        b'+' => Part::Ok,
        b'-' => Part::Error(text.into_owned()),
        b':' => text
            .parse()
            .map(Part::Int)
            .unwrap_or_else(|_| Part::Error("ERR internal: bad integer reply".into())),
        b'$' if text == "-1" => Part::Nil,
        b'$' => {
            let start = line_end + 2;
            let len: usize = text.parse().unwrap_or(0);
            match b.get(start..start + len) {
                Some(v) => Part::Bulk(v.to_vec()),
                None => Part::Error("ERR internal: truncated reply".into()),
            }
        }
        _ => Part::Error("ERR internal: unexpected reply".into()),
    }
}

/// Splits a multi-key command; None if it is not one this module splits.
pub fn split(
    lp: &Rc<dyn LocalLoop>,
    command: &Command<'_>,
    reply_to: ReplyTo,
    q: Quorum,
    watches: &mut Vec<Rc<AckWatch>>,
) -> Option<Coordinated> {
    if let Command::MSet(pairs, true) = command {
        return Some(msetnx(lp, pairs, reply_to, q, watches));
    }
    let (subs, how): (Vec<Vec<Vec<u8>>>, Combine) = match command {
        Command::MGet(keys) => (
            keys.iter()
                .map(|k| vec![b"GET".to_vec(), k.to_vec()])
                .collect(),
            Combine::Array,
        ),
        Command::Del(keys) => (
            keys.iter()
                .map(|k| vec![b"DEL".to_vec(), k.to_vec()])
                .collect(),
            Combine::Sum,
        ),
        Command::Exists(keys) => (
            keys.iter()
                .map(|k| vec![b"EXISTS".to_vec(), k.to_vec()])
                .collect(),
            Combine::Sum,
        ),
        Command::MSet(pairs, false) => (
            pairs
                .iter()
                .map(|(k, v)| vec![b"SET".to_vec(), k.to_vec(), v.to_vec()])
                .collect(),
            Combine::AllOk,
        ),
        _ => return None,
    };
    let mut inline = false;
    let mut futs = Vec::with_capacity(subs.len());
    // Each key is started now, in order (blind writes apply at once, as for single keys).
    let write = command.is_write();
    for args in subs {
        let watch = write.then(|| Rc::new(AckWatch::default()));
        watches.extend(watch.clone());
        match coordinate(lp, args, false, None, q, true, watch) {
            Coordinated::Ready(r) => futs.push(Box::pin(async move { r }) as _),
            Coordinated::Pending(f) => futs.push(f),
            c @ Coordinated::Read(_) => futs.push(Box::pin(c.reply())),
            Coordinated::Inline(f) => {
                inline = true;
                futs.push(f)
            }
        }
    }
    let fut = Box::pin(async move {
        let replies = join_all(futs).await;
        let mut marks = Marks::new();
        for (_, m) in &replies {
            add_marks(&mut marks, m);
        }
        let parts: Vec<Part> = replies.iter().map(|(b, _)| part(b)).collect();
        (combine(parts, how, reply_to), marks)
    });
    Some(if inline {
        Coordinated::Inline(fut)
    } else {
        Coordinated::Pending(fut)
    })
}

/// Runs one single-key command through the coordinator (forwarded when this node is not a
/// replica of the key), as a RESP client would: its reply, and the WAL positions the reply
/// must wait for.
pub(super) async fn sub(
    lp: &Rc<dyn LocalLoop>,
    args: Vec<Vec<u8>>,
    internal: bool,
    q: Quorum,
    watch: Option<Rc<AckWatch>>,
) -> (Part, Marks) {
    let (out, marks) = coordinate(lp, args, internal, None, q, true, watch)
        .reply()
        .await;
    (part(&out), marks)
}

/// Adds `from`'s WAL positions to `to`.
pub(super) fn add_marks(to: &mut Marks, from: &Marks) {
    for &(shard, seq) in from {
        crate::store::add_mark(to, shard, seq);
    }
}

/// MSETNX on a cluster: every key is read at R (EXISTS, in parallel); if none exists, every
/// key is written as MSET writes it (SET at W, in parallel). Replies 1 if it wrote, 0 if a key
/// existed, or the first error (a write error may leave some keys written).
fn msetnx(
    lp: &Rc<dyn LocalLoop>,
    pairs: &[(&[u8], &[u8])],
    reply_to: ReplyTo,
    q: Quorum,
    watches: &mut Vec<Rc<AckWatch>>,
) -> Coordinated {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let sets: Vec<Rc<AckWatch>> = pairs.iter().map(|_| Rc::default()).collect();
    watches.extend(sets.iter().cloned());
    let lp = lp.clone();
    Coordinated::Inline(Box::pin(async move {
        let mut marks = Marks::new();
        let checks = pairs
            .iter()
            .map(|(k, _)| sub(&lp, vec![b"EXISTS".to_vec(), k.clone()], false, q, None));
        let mut existing = 0;
        for (p, m) in join_all(checks).await {
            add_marks(&mut marks, &m);
            match p {
                Part::Int(n) => existing += n,
                Part::Error(e) => return (encode(reply_to, |s| s.error(&e)), marks),
                Part::Nil | Part::Bulk(_) | Part::Ok => {
                    let msg = "ERR internal: unexpected EXISTS reply";
                    return (encode(reply_to, |s| s.error(msg)), marks);
                }
            }
        }
        if existing > 0 {
            return (encode(reply_to, |s| s.int(0)), marks);
        }
        let writes = pairs
            .into_iter()
            .zip(sets)
            .map(|((k, v), watch)| sub(&lp, vec![b"SET".to_vec(), k, v], false, q, Some(watch)));
        let mut parts = Vec::with_capacity(writes.len());
        for (p, m) in join_all(writes).await {
            add_marks(&mut marks, &m);
            parts.push(p);
        }
        let out = match parts.into_iter().find(|p| !matches!(p, Part::Ok)) {
            None => encode(reply_to, |s| s.int(1)),
            Some(Part::Error(e)) => encode(reply_to, |s| s.error(&e)),
            Some(other) => {
                let msg = format!("ERR internal: unexpected SET reply {other:?}");
                encode(reply_to, |s| s.error(&msg))
            }
        };
        (out, marks)
    }))
}

fn combine(parts: Vec<Part>, how: Combine, reply_to: ReplyTo) -> BytesMut {
    if let Some(e) = parts.iter().find_map(|p| match p {
        Part::Error(e) => Some(e.clone()),
        _ => None,
    }) {
        return encode(reply_to, |s| s.error(&e));
    }
    encode(reply_to, |s: &mut dyn ReplySink| match how {
        Combine::Array => {
            s.array(parts.len());
            for p in &parts {
                match p {
                    Part::Bulk(v) => s.bulk(v),
                    Part::Nil | Part::Int(_) | Part::Ok | Part::Error(_) => s.nil(),
                }
            }
        }
        Combine::Sum => s.int(
            parts
                .iter()
                .map(|p| match p {
                    Part::Int(n) => *n,
                    Part::Nil | Part::Bulk(_) | Part::Ok | Part::Error(_) => 0,
                })
                .sum(),
        ),
        Combine::AllOk => s.simple("OK"),
    })
}
