//! The binary protocol's versioned GET / PUT / DELETE (protocol.md §2.4): every sibling with
//! the key's causal context, and writes that supersede exactly what their context covers.

use super::{CmdError, CmdResult, Ctx};
use crate::store::counter;
use crate::store::dvv::DecodeError;
use crate::store::entry::ValueKind;
use crate::store::write::WriteError;
use crate::store::{Entry, Supersede, Tx, VersionRef, VersionVector};
use ringkv_proto::{key_hash, ReplySink};
use smallvec::SmallVec;

/// Every live sibling's value (tombstones and expired values are not shown). A counter's
/// concurrent versions are not conflicts: they show as one value, their joined total (its
/// digits go in `total`).
fn live_values<'e>(
    e: &'e Entry,
    now_ms: u64,
    total: &'e mut itoa::Buffer,
) -> SmallVec<[&'e [u8]; 2]> {
    let versions = e.versions();
    let mut out: SmallVec<[&'e [u8]; 2]> = versions
        .iter()
        .filter(|v| v.value.is_live(now_ms) && v.value.kind() == ValueKind::Bytes)
        .map(|v| v.value.value)
        .collect();
    // Only live counter versions: a merged copy read in the cluster was not expired first.
    let live = versions.iter().filter(|v| v.value.is_live(now_ms));
    if let Some(j) = counter::joined(live.map(|v| &v.value)) {
        out.push(total.format(j.total()).as_bytes());
    }
    out
}

/// GET: every live sibling and the context that covers them; nil if there is none.
pub fn get(tx: &mut Tx<'_>, key: &[u8], now_ms: u64, out: &mut dyn ReplySink) -> CmdResult<()> {
    let h = key_hash(key);
    let shard = tx.shard(h)?;
    // Lazy expiry first, as every read does.
    let _ = shard.get(h, key, now_ms);
    reply(shard.entry(h, key), now_ms, out);
    Ok(())
}

/// A versioned read's reply from the key's entry: every live sibling with the context that
/// covers them, nil if there is none. Never a context with fewer values than it covers: a
/// write with it would supersede siblings the client never saw.
pub fn reply(e: Option<&Entry>, now_ms: u64, out: &mut dyn ReplySink) {
    let Some(e) = e else {
        out.nil();
        return;
    };
    let mut total = itoa::Buffer::new();
    let values = live_values(e, now_ms, &mut total);
    if values.is_empty() {
        out.nil();
    } else {
        out.versioned(&e.context_bytes(), &values);
    }
}

/// PUT: supersedes the versions `context` covers (all this node has, without a context).
/// Replies with the new context, and with every sibling's value when the write left more than
/// one, so that the context is safe to write with again (it covers only what the client saw).
pub fn put(
    tx: &mut Tx<'_>,
    key: &[u8],
    value: &[u8],
    context: &[u8],
    ttl_ms: u64,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    if value.len() > ctx.max_value {
        return Err(CmdError::TOO_BIG);
    }
    let context = decode_context(context)?;
    let h = key_hash(key);
    let expires = (ttl_ms > 0).then(|| ctx.now_ms.saturating_add(ttl_ms));
    let v = VersionRef::value(value, ctx.now_ms, expires);
    write(tx, h, key, context.as_ref(), v, ctx.now_ms, out)
}

/// DELETE: a tombstone superseding what `context` covers; a concurrent write the context did
/// not see stays as a live sibling. Replies 1 if the key had a live value (any sibling).
pub fn delete(
    tx: &mut Tx<'_>,
    key: &[u8],
    context: &[u8],
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let context = decode_context(context)?;
    let h = key_hash(key);
    let shard = tx.shard(h)?;
    // Lazy expiry first, as every read does.
    let _ = shard.get(h, key, ctx.now_ms);
    let live = shard
        .entry(h, key)
        .is_some_and(|e| !live_values(e, ctx.now_ms, &mut itoa::Buffer::new()).is_empty());
    // A missing key deleted without a context: nothing to record.
    if live || context.is_some() || shard.entry(h, key).is_some() {
        let sup = match &context {
            Some(c) => Supersede::Context(c),
            None => Supersede::Local,
        };
        shard
            .write(h, key, sup, VersionRef::tombstone(ctx.now_ms), |_| ())
            .map_err(|e| write_error(key, e))?;
    }
    out.int(live as i64);
    Ok(())
}

fn write(
    tx: &mut Tx<'_>,
    h: u64,
    key: &[u8],
    context: Option<&VersionVector>,
    v: VersionRef<'_>,
    now_ms: u64,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let sup = match context {
        Some(c) => Supersede::Context(c),
        None => Supersede::Local,
    };
    tx.shard(h)?
        .write(h, key, sup, v, |e| {
            let mut total = itoa::Buffer::new();
            let values = if e.version_count() > 1 {
                live_values(e, now_ms, &mut total)
            } else {
                SmallVec::new()
            };
            out.versioned(&e.context_bytes(), &values);
        })
        .map_err(|e| write_error(key, e))
}

/// A refused write as the client's error: the sibling bound names the key.
pub(crate) fn write_error(key: &[u8], e: WriteError) -> CmdError {
    match e {
        WriteError::TooManySiblings(e) => {
            let shown: String = String::from_utf8_lossy(&key[..key.len().min(64)]).into_owned();
            CmdError::msg(format!(
                "ERR write to key '{shown}' refused: it would have {} siblings, more than \
                 --max-siblings {}; read the key and write with the context the read returned \
                 to resolve them",
                e.count, e.max
            ))
        }
        WriteError::ForgedContext { .. }
        | WriteError::ContextTooLarge { .. }
        | WriteError::CountersExhausted => CmdError::msg(format!("ERR {e}")),
    }
}

/// A causal context from a client: empty means none.
fn decode_context(context: &[u8]) -> CmdResult<Option<VersionVector>> {
    if context.is_empty() {
        return Ok(None);
    }
    VersionVector::decode(context)
        .map(Some)
        .map_err(|e: DecodeError| CmdError::msg(format!("ERR invalid causal context: {e}")))
}
