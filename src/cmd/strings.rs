//! String commands: GET, SET (and its relatives), INCR*, APPEND, GETRANGE, SETRANGE, MGET,
//! MSET, MSETNX, and the binary protocol's versioned VGET / VPUT / VDEL.

use super::ldouble::{LDouble, Parsed};
use super::{eq, int, relative_expire_fits, CmdError, CmdResult, Command, Ctx, Expiry};
use crate::store::counter::{self, CounterState, Rendered};
use crate::store::entry::ValueKind;
use crate::store::{Live, Shard, Supersede, Tx, VersionRef};
use ringkv_proto::{key_hash, ReplySink};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cond {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if it exists.
    Xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetReply {
    /// `+OK`, or nil when the condition failed (SET).
    Ok,
    /// `:1` / `:0` (SETNX).
    Int,
    /// The old value (SET ... GET, GETSET).
    Old,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Set<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub cond: Cond,
    pub expiry: Option<Expiry>,
    pub keep_ttl: bool,
    pub reply: SetReply,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GetExMode {
    Expire(Expiry),
    Persist,
    /// A bad expire value: the error to answer if the key exists.
    Invalid(&'static str),
}

const NOT_INT_TEXT: &str = "ERR value is not an integer or out of range";
const INVALID_GETEX_TEXT: &str = "ERR invalid expire time in 'getex' command";

/// The options SET and GETEX share, parsed as Redis's `parseExtendedStringArgumentsOrReply`:
/// NX/XX/GET/KEEPTTL only for SET, PERSIST only for GETEX; EX/PX/EXAT/PXAT exclude each other
/// and KEEPTTL/PERSIST, but the same one may repeat (the last value wins). The expire value
/// is only checked afterwards, so a syntax error wins over a bad number.
#[derive(Default)]
struct ExtOpts<'a> {
    nx: bool,
    xx: bool,
    get: bool,
    keep_ttl: bool,
    persist: bool,
    /// (option name, value) of the EX/PX/EXAT/PXAT given.
    expire: Option<(&'static str, &'a [u8])>,
}

fn parse_ext_opts<'a>(opts: &[&'a [u8]], for_set: bool) -> CmdResult<ExtOpts<'a>> {
    let mut o = ExtOpts::default();
    let mut i = 0;
    while i < opts.len() {
        let opt = opts[i];
        let next = opts.get(i + 1).copied();
        let kind = o.expire.map(|(k, _)| k);
        let other_expire = |name: &str| kind.is_some_and(|k| k != name);
        if for_set && eq(opt, "NX") && !o.xx {
            o.nx = true;
        } else if for_set && eq(opt, "XX") && !o.nx {
            o.xx = true;
        } else if for_set && eq(opt, "GET") {
            o.get = true;
        } else if for_set && eq(opt, "KEEPTTL") && kind.is_none() {
            o.keep_ttl = true;
        } else if !for_set && eq(opt, "PERSIST") && kind.is_none() {
            o.persist = true;
        } else if let Some(name) = ["EX", "PX", "EXAT", "PXAT"]
            .into_iter()
            .find(|n| eq(opt, n) && !other_expire(n) && !o.keep_ttl && !o.persist)
        {
            let Some(v) = next else {
                return Err(CmdError::SYNTAX);
            };
            o.expire = Some((name, v));
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 1;
    }
    Ok(o)
}

/// Validates an expire value as Redis's `getExpireMillisecondsOrReply`: positive, and not
/// overflowing milliseconds (relative ones: once added to the current time).
fn expire_value(kind: &str, v: &[u8], cmd: &str) -> CmdResult<Expiry> {
    let v = int(v)?;
    let secs = kind == "EX" || kind == "EXAT";
    let ms = if secs { v.checked_mul(1000) } else { Some(v) };
    let relative = kind == "EX" || kind == "PX";
    match ms {
        Some(ms) if v > 0 && (!relative || relative_expire_fits(ms)) => Ok(if relative {
            Expiry::In(ms)
        } else {
            Expiry::At(ms)
        }),
        _ => Err(CmdError::invalid_expire(cmd)),
    }
}

pub fn parse<'a>(name: &'static str, a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    let set = |key, value, reply| Set {
        key,
        value,
        cond: Cond::Always,
        expiry: None,
        keep_ttl: false,
        reply,
    };
    Ok(match name {
        "get" => Command::Get(a[0]),
        "set" => {
            let o = parse_ext_opts(&a[2..], true)?;
            let mut s = set(a[0], a[1], SetReply::Ok);
            if let Some((kind, v)) = o.expire {
                s.expiry = Some(expire_value(kind, v, "set")?);
            }
            s.keep_ttl = o.keep_ttl;
            s.cond = if o.nx {
                Cond::Nx
            } else if o.xx {
                Cond::Xx
            } else {
                Cond::Always
            };
            if o.get {
                s.reply = SetReply::Old;
            }
            Command::Set(s)
        }
        "setnx" => Command::Set(Set {
            cond: Cond::Nx,
            ..set(a[0], a[1], SetReply::Int)
        }),
        "setex" | "psetex" => {
            let v = int(a[1])?;
            let ms = if name == "setex" {
                v.checked_mul(1000)
            } else {
                Some(v)
            };
            match ms {
                Some(ms) if v > 0 && relative_expire_fits(ms) => Command::Set(Set {
                    expiry: Some(Expiry::In(ms)),
                    ..set(a[0], a[2], SetReply::Ok)
                }),
                _ => return Err(CmdError::invalid_expire(name)),
            }
        }
        "getset" => Command::Set(set(a[0], a[1], SetReply::Old)),
        "getdel" => Command::GetDel(a[0]),
        "getex" => {
            let o = parse_ext_opts(&a[1..], false)?;
            // Redis looks the key up before it checks the expire value: a missing key answers
            // nil even with a bad one, so a bad value travels to execution.
            let mode = match o.expire {
                Some((kind, v)) => Some(match expire_value(kind, v, "getex") {
                    Ok(e) => GetExMode::Expire(e),
                    Err(e) if e == CmdError::NOT_INT => GetExMode::Invalid(NOT_INT_TEXT),
                    Err(_) => GetExMode::Invalid(INVALID_GETEX_TEXT),
                }),
                None if o.persist => Some(GetExMode::Persist),
                None => None,
            };
            Command::GetEx(a[0], mode)
        }
        "append" => Command::Append(a[0], a[1]),
        "strlen" => Command::Strlen(a[0]),
        "getrange" | "substr" => Command::GetRange(a[0], int(a[1])?, int(a[2])?),
        "setrange" => {
            let off = int(a[1])?;
            if off < 0 {
                return Err(CmdError::msg("ERR offset is out of range"));
            }
            Command::SetRange(a[0], off as usize, a[2])
        }
        "incr" => Command::IncrBy(a[0], 1),
        "decr" => Command::IncrBy(a[0], -1),
        "incrby" => Command::IncrBy(a[0], int(a[1])?),
        "decrby" => {
            let d = int(a[1])?;
            Command::IncrBy(
                a[0],
                d.checked_neg()
                    .ok_or(CmdError::msg("ERR decrement would overflow"))?,
            )
        }
        "incrbyfloat" => Command::IncrByFloat(
            a[0],
            match LDouble::parse(a[1]) {
                Parsed::Finite(v) => Some(v),
                Parsed::Infinite => None,
                Parsed::Invalid => return Err(CmdError::NOT_FLOAT),
            },
        ),
        "mget" => Command::MGet(a.iter().copied().collect()),
        "mset" | "msetnx" => {
            if !a.len().is_multiple_of(2) {
                return Err(CmdError::arity(name));
            }
            Command::MSet(
                a.chunks(2).map(|p| (p[0], p[1])).collect(),
                name == "msetnx",
            )
        }
        _ => return Err(CmdError::unknown(a)),
    })
}

/// VGET key | VPUT key value context ttl_ms(u64 BE) | VDEL key context: the binary protocol's
/// versioned operations, expressed as argument vectors so they route like any command.
/// Gives the command with its statistics slot.
pub fn parse_internal<'a>(
    name: &[u8],
    args: &[&'a [u8]],
) -> CmdResult<Option<(usize, Command<'a>)>> {
    Ok(Some(match (name, args.len()) {
        (b"VGET", 2) => (crate::stats::VGET, Command::VGet(args[1])),
        (b"VPUT", 5) => (
            crate::stats::VPUT,
            Command::VPut {
                key: args[1],
                value: args[2],
                context: args[3],
                ttl_ms: <[u8; 8]>::try_from(args[4])
                    .map(u64::from_be_bytes)
                    .map_err(|_| CmdError::SYNTAX)?,
            },
        ),
        (b"VDEL", 3) => (crate::stats::VDEL, Command::VDel(args[1], args[2])),
        _ => return Ok(None),
    }))
}

/// Writes `value` as the new version of `key`, superseding every version this node has (a
/// write without a causal context: every RESP write).
pub(crate) fn write(
    shard: &mut Shard,
    hash: u64,
    key: &[u8],
    value: &[u8],
    expires_at_ms: Option<u64>,
    ctx: &Ctx,
) -> CmdResult<()> {
    write_version(
        shard,
        hash,
        key,
        VersionRef::value(value, ctx.now_ms, expires_at_ms),
    )
}

/// Writes `v` over every version this node has of `key`.
fn write_version(shard: &mut Shard, hash: u64, key: &[u8], v: VersionRef<'_>) -> CmdResult<()> {
    shard
        .write(hash, key, Supersede::Local, v, |_| ())
        .map_err(|e| super::versioned::write_error(key, e))
}

/// Deletes `key`: a tombstone that supersedes every version this node has. It stays (invisible
/// to reads) until the tombstone grace has passed, so that the next write descends from it.
pub(crate) fn delete(shard: &mut Shard, hash: u64, key: &[u8], ctx: &Ctx) -> CmdResult<()> {
    let v = VersionRef::tombstone(ctx.now_ms);
    shard
        .write(hash, key, Supersede::Local, v, |_| ())
        .map_err(|e| super::versioned::write_error(key, e))
}

/// A live version copied out of its shard (the shard can't lend its own while it writes).
pub(crate) struct Copied {
    value: Vec<u8>,
    /// A counter's state (a counter stays a counter).
    counter: Option<Vec<u8>>,
}

impl Copied {
    pub(crate) fn of(e: &Live<'_>) -> Copied {
        Copied {
            value: e.value().to_vec(),
            // A state too large to store again is kept as its total, a string.
            counter: e.counter_state().filter(|s| s.storable()).map(|s| {
                let mut b = Vec::new();
                s.encode(&mut b);
                b
            }),
        }
    }
}

/// A new version of the live `key` with the same value and another expiry (EXPIRE, PERSIST,
/// GETEX): a TTL change is a write, so replicas order it like one. An expiry not in the future
/// deletes the key, as Redis does.
pub(crate) fn set_expiry(
    shard: &mut Shard,
    hash: u64,
    key: &[u8],
    kept: &Copied,
    expires_at_ms: Option<u64>,
    ctx: &Ctx,
) -> CmdResult<()> {
    let v = match &kept.counter {
        Some(state) => VersionRef::counter(state, &kept.value, ctx.now_ms, expires_at_ms),
        None => VersionRef::value(&kept.value, ctx.now_ms, expires_at_ms),
    };
    match expires_at_ms {
        Some(at) if at <= ctx.now_ms => delete(shard, hash, key, ctx),
        _ => write_version(shard, hash, key, v),
    }
}

/// The counter a live key holds: its state (the join of its concurrent versions), or a new
/// lineage from a string's integer.
fn counter_of(e: &Live<'_>) -> CmdResult<CounterState> {
    match e.version.kind() {
        ValueKind::Counter => e.counter_state().ok_or(CmdError::msg(
            "ERR the counter's stored state is corrupt; SET the key anew",
        )),
        ValueKind::Bytes => Ok(CounterState::with_base(
            parse_i64_value(e.value())?,
            counter::lineage_after(e.entry.winner_dot()),
        )),
    }
}

fn parse_i64_value(v: &[u8]) -> CmdResult<i64> {
    if v.len() > 20 {
        return Err(CmdError::NOT_INT);
    }
    int(v)
}

/// Runs a command on keys whose shards are locked in `tx`; an error is the reply.
pub fn exec(
    cmd: &Command<'_>,
    tx: &mut Tx<'_>,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let now = ctx.now_ms;
    match *cmd {
        Command::Get(key) => {
            // RESP sees the winner as a bulk string; a binary COMMAND GET replies as the GET
            // opcode does (every sibling, with the context that covers them).
            if out.wants_context() {
                return super::versioned::get(tx, key, now, out);
            }
            let h = key_hash(key);
            match tx.shard(h)?.get(h, key, now) {
                Some(e) => out.bulk(e.value()),
                None => out.nil(),
            }
        }
        Command::Set(ref s) => {
            if s.value.len() > ctx.max_value {
                return Err(CmdError::TOO_BIG);
            }
            let h = key_hash(s.key);
            let shard = tx.shard(h)?;
            let simple = s.cond == Cond::Always && s.reply == SetReply::Ok && !s.keep_ttl;
            let mut old_ttl = None;
            if !simple {
                let old = shard.get(h, s.key, now);
                let exists = old.is_some();
                old_ttl = old.and_then(|e| e.expires_at_ms());
                if s.reply == SetReply::Old {
                    match old {
                        Some(e) => out.bulk(e.value()),
                        None => out.nil(),
                    }
                }
                let go = match s.cond {
                    Cond::Always => true,
                    Cond::Nx => !exists,
                    Cond::Xx => exists,
                };
                if !go {
                    match s.reply {
                        SetReply::Ok => out.nil(),
                        SetReply::Int => out.int(0),
                        SetReply::Old => {}
                    }
                    return Ok(());
                }
            }
            let expires = match s.expiry {
                Some(e) => Some(e.resolve(now)),
                None if s.keep_ttl => old_ttl,
                None => None,
            };
            match expires {
                // An expiry not in the future (SET ... PXAT <past>) leaves no key, as in Redis:
                // a tombstone, if there was anything to supersede.
                Some(at) if at <= now => {
                    if shard.entry(h, s.key).is_some() {
                        delete(shard, h, s.key, ctx)?;
                    }
                }
                _ => write(shard, h, s.key, s.value, expires, ctx)?,
            }
            match s.reply {
                SetReply::Ok => out.simple("OK"),
                SetReply::Int => out.int(1),
                SetReply::Old => {}
            }
        }
        Command::GetDel(key) => {
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            match shard.get(h, key, now) {
                Some(e) => out.bulk(e.value()),
                None => {
                    out.nil();
                    return Ok(());
                }
            }
            delete(shard, h, key, ctx)?;
        }
        Command::GetEx(key, mode) => {
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            let Some(e) = shard.get(h, key, now) else {
                out.nil();
                return Ok(());
            };
            if let Some(GetExMode::Invalid(msg)) = mode {
                return Err(CmdError::msg(msg));
            }
            out.bulk(e.value());
            let expiry = match mode {
                Some(GetExMode::Invalid(_)) | None => return Ok(()),
                Some(GetExMode::Persist) if e.expires_at_ms().is_some() => None,
                Some(GetExMode::Persist) => return Ok(()),
                Some(GetExMode::Expire(x)) => Some(x.resolve(now)),
            };
            let kept = Copied::of(&e);
            set_expiry(shard, h, key, &kept, expiry, ctx)?;
        }
        Command::Append(key, suffix) => {
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            let (mut v, ttl) = match shard.get(h, key, now) {
                Some(e) => (e.value().to_vec(), e.expires_at_ms()),
                None => (Vec::new(), None),
            };
            if v.len() + suffix.len() > ctx.max_value {
                return Err(CmdError::TOO_BIG);
            }
            v.extend_from_slice(suffix);
            write(shard, h, key, &v, ttl, ctx)?;
            out.int(v.len() as i64);
        }
        Command::Strlen(key) => {
            let h = key_hash(key);
            out.int(tx.shard(h)?.get(h, key, now).map_or(0, |e| e.value().len()) as i64);
        }
        Command::GetRange(key, start, end) => {
            let h = key_hash(key);
            let Some(e) = tx.shard(h)?.get(h, key, now) else {
                out.bulk(b"");
                return Ok(());
            };
            let v = e.value();
            let len = v.len() as i64;
            let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
            let (s, t) = (norm(start), norm(end).min(len - 1));
            if len == 0 || s > t || (start < 0 && end < 0 && start > end) {
                out.bulk(b"");
            } else {
                out.bulk(&v[s as usize..=t as usize]);
            }
        }
        Command::SetRange(key, off, patch) => {
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            let cur = shard.get(h, key, now);
            if patch.is_empty() {
                out.int(cur.map_or(0, |e| e.value().len()) as i64);
                return Ok(());
            }
            if off.saturating_add(patch.len()) > ctx.max_value {
                return Err(CmdError::TOO_BIG);
            }
            let (mut v, ttl) = match cur {
                Some(e) => (e.value().to_vec(), e.expires_at_ms()),
                None => (Vec::new(), None),
            };
            if v.len() < off + patch.len() {
                v.resize(off + patch.len(), 0);
            }
            v[off..off + patch.len()].copy_from_slice(patch);
            write(shard, h, key, &v, ttl, ctx)?;
            out.int(v.len() as i64);
        }
        Command::IncrBy(key, delta) => {
            // A PN-counter (store::counter): this node's increments are its own entry, so
            // concurrent increments through other replicas merge instead of overwriting.
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            let (mut state, ttl) = match shard.get(h, key, now) {
                Some(e) => (counter_of(&e)?, e.expires_at_ms()),
                // A new lineage, after whatever the key held (a tombstone, an expired value).
                None => {
                    let after = shard.entry(h, key).and_then(|e| e.winner_dot());
                    (
                        CounterState::with_base(0, counter::lineage_after(after)),
                        None,
                    )
                }
            };
            let n = state
                .add(ctx.node_id, delta)
                .map_err(|e| CmdError::msg(e.to_string()))?;
            if !state.storable() {
                return Err(CmdError::msg(
                    counter::CounterError::TooManyActors.to_string(),
                ));
            }
            let mut r = Rendered::new(&state);
            let v = r.version(&VersionRef::value(b"", now, ttl));
            write_version(shard, h, key, v)?;
            out.int(n);
        }
        Command::IncrByFloat(key, delta) => {
            // As Redis: C long double arithmetic and "%.17Lf" formatting (see ldouble).
            let h = key_hash(key);
            let shard = tx.shard(h)?;
            let (cur, ttl) = match shard.get(h, key, now) {
                Some(e) => (
                    match LDouble::parse(e.value()) {
                        Parsed::Finite(v) => Some(v),
                        Parsed::Infinite => None,
                        Parsed::Invalid => return Err(CmdError::NOT_FLOAT),
                    },
                    e.expires_at_ms(),
                ),
                None => (Some(LDouble::ZERO), None),
            };
            let Some(n) = cur.zip(delta).and_then(|(c, d)| c.checked_add(d)) else {
                return Err(CmdError::msg("ERR increment would produce NaN or Infinity"));
            };
            let s = n.to_human();
            write(shard, h, key, s.as_bytes(), ttl, ctx)?;
            out.bulk(s.as_bytes());
        }
        Command::MGet(ref keys) => {
            // Only when the reply could pass the limit: sum the values first.
            if keys.len() as u128 * ctx.max_value as u128 > ctx.max_reply as u128 {
                let mut total = 0usize;
                for &k in keys {
                    let h = key_hash(k);
                    total += tx.shard(h)?.get(h, k, now).map_or(0, |e| e.value().len());
                }
                if total > ctx.max_reply {
                    return Err(CmdError::msg(format!(
                        "ERR MGET reply of {total} bytes would exceed the output buffer limit \
                         of {} (--max-output-buffer-bytes); ask for fewer keys",
                        ctx.max_reply
                    )));
                }
            }
            out.array(keys.len());
            for &k in keys {
                let h = key_hash(k);
                match tx.shard(h)?.get(h, k, now) {
                    Some(e) => out.bulk(e.value()),
                    None => out.nil(),
                }
            }
        }
        Command::MSet(ref pairs, nx) => {
            if pairs.iter().any(|(_, v)| v.len() > ctx.max_value) {
                return Err(CmdError::TOO_BIG);
            }
            if nx {
                for &(k, _) in pairs {
                    let h = key_hash(k);
                    if tx.shard(h)?.get(h, k, now).is_some() {
                        out.int(0);
                        return Ok(());
                    }
                }
            }
            for &(k, v) in pairs {
                let h = key_hash(k);
                write(tx.shard(h)?, h, k, v, None, ctx)?;
            }
            if nx {
                out.int(1);
            } else {
                out.simple("OK");
            }
        }
        Command::VGet(key) => super::versioned::get(tx, key, now, out)?,
        Command::VPut {
            key,
            value,
            context,
            ttl_ms,
        } => super::versioned::put(tx, key, value, context, ttl_ms, ctx, out)?,
        Command::VDel(key, context) => super::versioned::delete(tx, key, context, ctx, out)?,
        Command::SetBit(key, off, on) => super::bits::setbit(tx, key, off, on, ctx, out)?,
        Command::GetBit(key, off) => super::bits::getbit(tx, key, off, ctx, out)?,
        Command::BitCount(key, ref range) => super::bits::count(tx, key, range, ctx, out)?,
        Command::BitPos(key, bit, ref range) => super::bits::pos(tx, key, bit, range, ctx, out)?,
        Command::BitOp(op, ref keys) => super::bits::bitop(op, keys, tx, ctx, out)?,
        Command::BitField(ref bf) => super::bitfield::exec(bf, tx, ctx, out)?,
        Command::Lcs(ref l) => super::lcs::exec(l, tx, ctx, out)?,
        key_commands!() | keyspace_commands!() | connection_commands!() | server_commands!() => {
            return Err(CmdError::msg("ERR internal: not a string command"))
        }
    }
    Ok(())
}
