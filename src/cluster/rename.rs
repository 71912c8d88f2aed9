//! RENAME and RENAMENX on a cluster. The two keys may live on different nodes, so the command
//! is a sequence of single-key steps, ordered so that a failure leaves both keys, never
//! neither:
//!
//! 1. read the source at R (its value, expiry and causal context; `ERR no such key` if it is
//!    absent there);
//! 2. write the destination at W with that value and expiry ([`write_value`]; for RENAMENX
//!    only if the destination is absent at R, as SET NX checks it);
//! 3. delete the source at W with the context read in step 1, so that a write to the source
//!    made meanwhile elsewhere survives as a sibling instead of being deleted unseen.
//!
//! Step 3 failing (its quorum lost after step 2) is answered with the error, both keys
//! remaining. Not atomic: a reader may see both keys, or neither key (between the source's
//! delete and the destination's replication to a replica it reads), see protocol.md §7.

use std::rc::Rc;

use super::coordinator::{encode, AckWatch, Coordinated, Quorum, ReplyTo};
use super::multi::{add_marks, sub, Part};
use super::read::read_entry;
use super::LocalLoop;
use crate::durability::Marks;
use crate::store::Live;
use crate::util::now_ms;

/// What RENAME does, and how it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// RENAME: OK.
    Replace,
    /// RENAMENX: 1 if renamed, 0 if the destination exists.
    IfAbsent,
}

/// Coordinates RENAME (`nx` false) or RENAMENX; `watches` gets the acknowledgements of its
/// two writes (WAIT).
pub fn rename(
    lp: &Rc<dyn LocalLoop>,
    src: &[u8],
    dst: &[u8],
    nx: bool,
    reply_to: ReplyTo,
    q: Quorum,
    watches: &mut Vec<Rc<AckWatch>>,
) -> Coordinated {
    let mode = if nx { Mode::IfAbsent } else { Mode::Replace };
    let (src, dst) = (src.to_vec(), dst.to_vec());
    let (put, del): (Rc<AckWatch>, Rc<AckWatch>) = (Rc::default(), Rc::default());
    watches.push(put.clone());
    watches.push(del.clone());
    let lp = lp.clone();
    Coordinated::Inline(Box::pin(async move {
        let mut marks = Marks::new();
        let out = match run(&lp, &src, &dst, mode, q, put, del, &mut marks).await {
            Ok(true) if mode == Mode::IfAbsent => encode(reply_to, |s| s.int(1)),
            Ok(false) => encode(reply_to, |s| s.int(0)),
            Ok(true) => encode(reply_to, |s| s.simple("OK")),
            Err(e) => encode(reply_to, |s| s.error(&e)),
        };
        (out, marks)
    }))
}

/// The three steps of the module doc. Ok(false): RENAMENX found the destination.
#[allow(clippy::too_many_arguments)]
async fn run(
    lp: &Rc<dyn LocalLoop>,
    src: &[u8],
    dst: &[u8],
    mode: Mode,
    q: Quorum,
    put: Rc<AckWatch>,
    del: Rc<AckWatch>,
    marks: &mut Marks,
) -> Result<bool, String> {
    let Some(cl) = lp.cluster().cloned() else {
        return Err("ERR this node is not in cluster mode".into());
    };
    let entry = read_entry(lp, &cl, src, q.r).await?;
    let Some(live) = entry.as_ref().and_then(|e| Live::of(e, now_ms())) else {
        return Err("ERR no such key".into());
    };
    if src == dst {
        // As Redis: renaming a key to itself changes nothing.
        return Ok(mode == Mode::Replace);
    }
    let (value, expires) = (live.value().to_vec(), live.expires_at_ms());
    let context = live.context_bytes().to_vec();
    let nx = mode == Mode::IfAbsent;
    if !write_value(lp, dst, value, expires, nx, q, Some(put), marks).await? {
        return Ok(false);
    }
    let args = vec![b"VDEL".to_vec(), src.to_vec(), context];
    let (reply, m) = sub(lp, args, true, q, Some(del)).await;
    add_marks(marks, &m);
    match reply {
        Part::Int(_) => Ok(true),
        Part::Error(e) => Err(format!(
            "{e} (the new key was written; the old key may remain: read both, or delete it)"
        )),
        other => Err(format!(
            "ERR internal: unexpected delete reply {other:?}; the new key was written, the \
             old key may remain"
        )),
    }
}

/// Writes `value` to `key` at W through the key's coordinator, expiring at `expires_at_ms`
/// (absolute, as read from the source: the TTL keeps running), with a new version that
/// supersedes what the coordinating replica holds. With `nx`, only if the key is absent at R
/// (SET NX): Ok(false) if it exists. The step RENAME (and COPY) use to create the new key.
#[allow(clippy::too_many_arguments)]
pub(super) async fn write_value(
    lp: &Rc<dyn LocalLoop>,
    key: &[u8],
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
    nx: bool,
    q: Quorum,
    watch: Option<Rc<AckWatch>>,
    marks: &mut Marks,
) -> Result<bool, String> {
    let mut args = vec![b"SET".to_vec(), key.to_vec(), value];
    if let Some(at) = expires_at_ms {
        args.push(b"PXAT".to_vec());
        args.push(at.to_string().into_bytes());
    }
    if nx {
        args.push(b"NX".to_vec());
    }
    let (reply, m) = sub(lp, args, false, q, watch).await;
    add_marks(marks, &m);
    match reply {
        Part::Ok => Ok(true),
        Part::Nil if nx => Ok(false),
        Part::Error(e) => Err(e),
        other => Err(format!("ERR internal: unexpected SET reply {other:?}")),
    }
}
