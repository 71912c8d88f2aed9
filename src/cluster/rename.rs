//! RENAME and RENAMENX on a cluster. The two keys may live on different nodes, so the command
//! is a sequence of single-key steps, ordered so that a failure leaves both keys, never
//! neither:
//!
//! 1. read the source at R (its value, expiry and causal context; `ERR no such key` if it is
//!    absent there);
//! 2. write the destination at W with that value and expiry ([`write_value`]; for RENAMENX
//!    only if the destination is absent at R, as SET NX checks it);
//! 3. delete the source at W with the context read in step 1, so that a version of the source
//!    the read did not see (written meanwhile, or held only by replicas that did not answer)
//!    survives as a sibling instead of being deleted unseen.
//!
//! Step 3 failing (its quorum lost after step 2) is answered with the error, both keys
//! remaining. Not atomic: a reader may see both keys, or neither key (between the source's
//! delete and the destination's replication to a replica it reads), see protocol.md §7.

use std::rc::Rc;

use super::coordinator::{encode, AckWatch, Coordinated, Quorum, ReplyTo};
use super::multi::{add_marks, sub, Part};
use super::read::read_merged;
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

/// One RENAME: its keys, quorums, and the acknowledgements of its two writes (WAIT).
struct Rename {
    lp: Rc<dyn LocalLoop>,
    src: Vec<u8>,
    dst: Vec<u8>,
    mode: Mode,
    q: Quorum,
    put: Rc<AckWatch>,
    del: Rc<AckWatch>,
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
    let r = Rename {
        lp: lp.clone(),
        src: src.to_vec(),
        dst: dst.to_vec(),
        mode: if nx { Mode::IfAbsent } else { Mode::Replace },
        q,
        put: Rc::default(),
        del: Rc::default(),
    };
    watches.push(r.put.clone());
    watches.push(r.del.clone());
    Coordinated::Inline(Box::pin(async move {
        let mut marks = Marks::new();
        let out = match r.run(&mut marks).await {
            Ok(true) if r.mode == Mode::IfAbsent => encode(reply_to, |s| s.int(1)),
            Ok(false) => encode(reply_to, |s| s.int(0)),
            Ok(true) => encode(reply_to, |s| s.simple("OK")),
            Err(e) => encode(reply_to, |s| s.error(&e)),
        };
        (out, marks)
    }))
}

impl Rename {
    /// The three steps of the module doc. Ok(false): RENAMENX found the destination.
    async fn run(&self, marks: &mut Marks) -> Result<bool, String> {
        let lp = &self.lp;
        let Some(cl) = lp.cluster().cloned() else {
            return Err("ERR this node is not in cluster mode".into());
        };
        let (entry, read) = read_merged(lp, &cl, &cl.view(), &self.src, self.q.r).await?;
        // The reply also waits for what it showed of this node's copy.
        add_marks(marks, &read);
        let Some(live) = entry.as_ref().and_then(|e| Live::of(e, now_ms())) else {
            return Err("ERR no such key".into());
        };
        if self.src == self.dst {
            // As Redis: renaming a key to itself changes nothing.
            return Ok(self.mode == Mode::Replace);
        }
        let new = NewKey {
            key: &self.dst,
            value: live.value().to_vec(),
            expires_at_ms: live.expires_at_ms(),
            only_if_absent: self.mode == Mode::IfAbsent,
        };
        let context = live.context_bytes().to_vec();
        if !write_value(lp, new, self.q, Some(self.put.clone()), marks).await? {
            return Ok(false);
        }
        let args = vec![b"VDEL".to_vec(), self.src.clone(), context];
        let (reply, m) = sub(lp, args, true, self.q, Some(self.del.clone())).await;
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
}

/// A key to create with a value (RENAME's destination; COPY's).
pub(super) struct NewKey<'a> {
    pub key: &'a [u8],
    pub value: Vec<u8>,
    /// Absolute, as read from the source: the TTL keeps running.
    pub expires_at_ms: Option<u64>,
    /// Only if the key is absent at R (SET NX).
    pub only_if_absent: bool,
}

/// Writes `new` at W through its key's coordinator, with a new version that supersedes what
/// the coordinating replica holds: the step RENAME (and COPY) use to create the new key.
/// Ok(false): `only_if_absent` and the key exists at R.
pub(super) async fn write_value(
    lp: &Rc<dyn LocalLoop>,
    new: NewKey<'_>,
    q: Quorum,
    watch: Option<Rc<AckWatch>>,
    marks: &mut Marks,
) -> Result<bool, String> {
    let mut args = vec![b"SET".to_vec(), new.key.to_vec(), new.value];
    if let Some(at) = new.expires_at_ms {
        args.push(b"PXAT".to_vec());
        args.push(at.to_string().into_bytes());
    }
    if new.only_if_absent {
        args.push(b"NX".to_vec());
    }
    let (reply, m) = sub(lp, args, false, q, watch).await;
    add_marks(marks, &m);
    match reply {
        Part::Ok => Ok(true),
        Part::Nil if new.only_if_absent => Ok(false),
        Part::Error(e) => Err(e),
        other => Err(format!("ERR internal: unexpected SET reply {other:?}")),
    }
}
