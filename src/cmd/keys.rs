//! Key commands: DEL, EXISTS, TYPE, RENAME, the EXPIRE and TTL families, PERSIST, and the
//! keyspace-wide KEYS, SCAN, RANDOMKEY, DBSIZE, FLUSHDB/FLUSHALL.

use ringkv_proto::{key_hash, ReplySink};

use super::{eq, int, CmdError, CmdResult, Command, Ctx, Expiry};
use crate::store::glob::glob_match;
use crate::store::{Store, Tx};

/// EXPIRE's NX / XX / GT / LT (Redis 7). XX combines with GT or LT; NX with none of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExpireCond {
    pub nx: bool,
    pub xx: bool,
    pub gt: bool,
    pub lt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TtlKind {
    TtlSecs,
    TtlMs,
    AtSecs,
    AtMs,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan<'a> {
    pub cursor: u64,
    pub pattern: Option<&'a [u8]>,
    pub count: usize,
    /// `TYPE t`: only "string" matches anything here.
    pub only_strings: bool,
}

pub fn parse<'a>(name: &'static str, a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    Ok(match name {
        "del" | "unlink" => Command::Del(a.iter().copied().collect()),
        "exists" => Command::Exists(a.iter().copied().collect()),
        "type" => Command::Type(a[0]),
        "rename" => Command::Rename(a[0], a[1], false),
        "renamenx" => Command::Rename(a[0], a[1], true),
        "keys" => Command::Keys(a[0]),
        "randomkey" => Command::RandomKey,
        "dbsize" => Command::DbSize,
        "flushdb" | "flushall" => match a {
            [] => Command::Flush,
            [m] if eq(m, "ASYNC") || eq(m, "SYNC") => Command::Flush,
            _ => return Err(CmdError::SYNTAX),
        },
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            // As Redis's expireGenericCommand: options first, then the number.
            let mut cond = ExpireCond::default();
            for o in &a[2..] {
                if eq(o, "NX") {
                    cond.nx = true;
                } else if eq(o, "XX") {
                    cond.xx = true;
                } else if eq(o, "GT") {
                    cond.gt = true;
                } else if eq(o, "LT") {
                    cond.lt = true;
                } else {
                    return Err(CmdError::msg(format!(
                        "ERR Unsupported option {}",
                        String::from_utf8_lossy(o)
                    )));
                }
            }
            if cond.nx && (cond.xx || cond.gt || cond.lt) {
                return Err(CmdError::msg(
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                ));
            }
            if cond.gt && cond.lt {
                return Err(CmdError::msg(
                    "ERR GT and LT options at the same time are not compatible",
                ));
            }
            let v = int(a[1])?;
            let ms = match name {
                "expire" | "expireat" => v.checked_mul(1000),
                _ => Some(v),
            }
            .ok_or_else(|| CmdError::invalid_expire(name))?;
            let when = match name {
                "expire" | "pexpire" => {
                    if !super::relative_expire_fits(ms) {
                        return Err(CmdError::invalid_expire(name));
                    }
                    Expiry::In(ms)
                }
                _ => Expiry::At(ms),
            };
            Command::Expire(a[0], when, cond, name)
        }
        "ttl" => Command::Ttl(a[0], TtlKind::TtlSecs),
        "pttl" => Command::Ttl(a[0], TtlKind::TtlMs),
        "expiretime" => Command::Ttl(a[0], TtlKind::AtSecs),
        "pexpiretime" => Command::Ttl(a[0], TtlKind::AtMs),
        "persist" => Command::Persist(a[0]),
        "scan" => {
            let cursor = scan_cursor(a[0]).ok_or(CmdError::msg("ERR invalid cursor"))?;
            let mut scan = Scan {
                cursor,
                pattern: None,
                count: 10,
                only_strings: true,
            };
            let mut opts = a[1..].iter();
            while let Some(o) = opts.next() {
                let v = opts.next().ok_or(CmdError::SYNTAX)?;
                if eq(o, "MATCH") {
                    scan.pattern = Some(v);
                } else if eq(o, "COUNT") {
                    let c = int(v)?;
                    if c < 1 {
                        return Err(CmdError::SYNTAX);
                    }
                    scan.count = c.min(1 << 20) as usize;
                } else if eq(o, "TYPE") {
                    scan.only_strings = eq(v, "string");
                } else {
                    return Err(CmdError::SYNTAX);
                }
            }
            Command::Scan(scan)
        }
        _ => return Err(CmdError::unknown(a)),
    })
}

/// A SCAN cursor as Redis reads it (`strtoul`, whole string): optional sign, decimal digits,
/// no overflow; "" is 0 and "-1" wraps around, as in C.
fn scan_cursor(a: &[u8]) -> Option<u64> {
    if a.is_empty() {
        return Some(0);
    }
    let (neg, digits) = match a[0] {
        b'-' => (true, &a[1..]),
        b'+' => (false, &a[1..]),
        _ => (false, a),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(if neg { v.wrapping_neg() } else { v })
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
        Command::Del(ref keys) => {
            let mut n = 0;
            for &k in keys {
                let h = key_hash(k);
                let shard = tx.shard(h)?;
                if shard.get(h, k, now).is_some() {
                    super::strings::delete(shard, h, k, ctx)?;
                    n += 1;
                }
            }
            out.int(n);
        }
        Command::Exists(ref keys) => {
            let mut n = 0;
            for &k in keys {
                let h = key_hash(k);
                if tx.shard(h)?.get(h, k, now).is_some() {
                    n += 1;
                }
            }
            out.int(n);
        }
        Command::Type(k) => {
            let h = key_hash(k);
            out.simple(if tx.shard(h)?.get(h, k, now).is_some() {
                "string"
            } else {
                "none"
            });
        }
        Command::Rename(src, dst, nx) => {
            let (hs, hd) = (key_hash(src), key_hash(dst));
            let Some((value, ttl)) = tx
                .shard(hs)?
                .get(hs, src, now)
                .map(|e| (e.value().to_vec(), e.expires_at_ms()))
            else {
                out.error("ERR no such key");
                return Ok(());
            };
            if src == dst {
                if nx {
                    out.int(0);
                } else {
                    out.simple("OK");
                }
                return Ok(());
            }
            if nx && tx.shard(hd)?.get(hd, dst, now).is_some() {
                out.int(0);
                return Ok(());
            }
            // The new key and the old one's tombstone become one TXN record in each shard's
            // WAL (store::tx): a crash keeps both changes or neither, across shards too.
            super::strings::write(tx.shard(hd)?, hd, dst, &value, ttl, ctx)?;
            super::strings::delete(tx.shard(hs)?, hs, src, ctx)?;
            if nx {
                out.int(1);
            } else {
                out.simple("OK");
            }
        }
        Command::Expire(k, when, cond, _) => {
            let h = key_hash(k);
            let shard = tx.shard(h)?;
            let Some(e) = shard.get(h, k, now) else {
                out.int(0);
                return Ok(());
            };
            let at = when.resolve(now);
            let cur = e.expires_at_ms();
            // As Redis: a key without TTL counts as an infinite TTL for GT / LT.
            let ok = (!cond.nx || cur.is_none())
                && (!cond.xx || cur.is_some())
                && (!cond.gt || cur.is_some_and(|c| at > c))
                && (!cond.lt || cur.is_none_or(|c| at < c));
            if !ok {
                out.int(0);
                return Ok(());
            }
            let kept = super::strings::Copied::of(&e, now);
            super::strings::set_expiry(shard, h, k, &kept, Some(at), ctx)?;
            out.int(1);
        }
        Command::Ttl(k, kind) => {
            let h = key_hash(k);
            let v = match tx.shard(h)?.get(h, k, now) {
                None => -2,
                Some(e) => match e.expires_at_ms() {
                    None => -1,
                    Some(at) => {
                        let left = at.saturating_sub(now) as i64;
                        match kind {
                            // Redis rounds the remaining seconds to the nearest.
                            TtlKind::TtlSecs => (left + 500) / 1000,
                            TtlKind::TtlMs => left,
                            // EXPIRETIME rounds too, as Redis's ttlGenericCommand.
                            TtlKind::AtSecs => ((at + 500) / 1000) as i64,
                            TtlKind::AtMs => at as i64,
                        }
                    }
                },
            };
            out.int(v);
        }
        Command::Persist(k) => {
            let h = key_hash(k);
            let shard = tx.shard(h)?;
            match shard.get(h, k, now) {
                Some(e) if e.expires_at_ms().is_some() => {
                    let kept = super::strings::Copied::of(&e, now);
                    super::strings::set_expiry(shard, h, k, &kept, None, ctx)?;
                    out.int(1);
                }
                _ => out.int(0),
            }
        }
        Command::Copy(keys, replace) => super::keymeta::copy(tx, keys, replace, ctx, out)?,
        Command::Touch(ref keys) => super::keymeta::touch(tx, keys, ctx, out)?,
        Command::Object(sub, k) => super::keymeta::object(tx, sub, k, ctx, out)?,
        string_commands!() | keyspace_commands!() | connection_commands!() | server_commands!() => {
            return Err(CmdError::msg("ERR internal: not a key command"))
        }
    }
    Ok(())
}

/// Runs a keyspace-wide command. KEYS, SCAN, DBSIZE and RANDOMKEY lock one shard at a time
/// (so other loops keep serving; like Redis Cluster, KEYS is not a point-in-time view across
/// shards); FLUSHDB locks them all at once, so it is atomic.
pub fn exec_all(
    cmd: &Command<'_>,
    store: &Store,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> crate::store::Marks {
    let now = ctx.now_ms;
    let mut marks = crate::store::Marks::new();
    match *cmd {
        Command::DbSize => {
            let n: usize = (0..store.len()).map(|i| store.lock(i).len()).sum();
            out.int(n as i64);
        }
        Command::Flush => {
            // Atomic: every shard is locked (in index order) before any is cleared, so no
            // other command sees some shards flushed and others not.
            let mut shards = store.lock_all();
            for (i, shard) in shards.iter_mut().enumerate() {
                shard.clear();
                if shard.wal.enabled {
                    marks.push((i as u32, shard.wal.seq));
                }
            }
            out.simple("OK");
        }
        Command::Keys(_) | Command::Scan(_) => {
            // Off the event loops (which drive the walk slice by slice, see
            // net/connection.rs): run the same walk to its end.
            match KeyWalk::new(cmd, store.len(), usize::MAX) {
                Some(mut walk) => {
                    while !walk.step(store, now) {}
                    walk.reply(out);
                }
                None => out.error("ERR internal: not a key walk"),
            }
        }
        Command::RandomKey => {
            let n = store.len();
            let start = (now as usize).wrapping_mul(2654435761) % n;
            let key = (0..n).find_map(|k| store.lock((start + k) % n).random_key(now));
            match key {
                Some(k) => out.bulk(&k),
                None => out.nil(),
            }
        }
        string_commands!() | key_commands!() | connection_commands!() | server_commands!() => {
            out.error("ERR internal: not a keyspace command")
        }
    }
    marks
}

/// Slots of one shard examined per lock hold by KEYS and SCAN. Between slices the shard lock
/// is released and the loop serves other requests, so a walk over millions of keys never
/// stalls the node (Redis runs KEYS in one go and blocks every client meanwhile).
pub const WALK_SLICE_SLOTS: usize = 1024;

/// A KEYS or SCAN in progress: which shard and slot it has reached, and what it collected.
///
/// KEYS visits every slot of every shard; SCAN visits at most COUNT slots from its cursor.
/// Slots don't move while a key lives, so a key present for the whole walk is returned
/// exactly once by KEYS and at least once by a full SCAN iteration; keys added or removed
/// during the walk may or may not be.
pub struct KeyWalk<'a> {
    pattern: Option<&'a [u8]>,
    only_strings: bool,
    scan: bool,
    shards: usize,
    shard: usize,
    pos: usize,
    /// Slots SCAN may still visit (COUNT); unbounded for KEYS.
    budget: usize,
    keys: Vec<Vec<u8>>,
    key_bytes: usize,
    /// Most key bytes the reply may hold (the client's output buffer limit).
    max_reply_bytes: usize,
    /// SCAN's next cursor, once done.
    cursor: u64,
    too_big: bool,
}

impl<'a> KeyWalk<'a> {
    /// A walk for KEYS or SCAN; None for any other command.
    pub fn new(cmd: &Command<'a>, shards: usize, max_reply_bytes: usize) -> Option<KeyWalk<'a>> {
        let shards = shards.max(1);
        let mut w = KeyWalk {
            pattern: None,
            only_strings: true,
            scan: false,
            shards,
            shard: 0,
            pos: 0,
            budget: usize::MAX,
            keys: Vec::new(),
            key_bytes: 0,
            max_reply_bytes,
            cursor: 0,
            too_big: false,
        };
        match cmd {
            Command::Keys(p) => w.pattern = (*p != b"*").then_some(*p),
            Command::Scan(s) => {
                // Cursor = slot position * shards + shard: shard-major order, and 0 only at
                // the start and the end.
                w.scan = true;
                w.pattern = s.pattern;
                w.only_strings = s.only_strings;
                w.budget = s.count;
                w.shard = (s.cursor % shards as u64) as usize;
                w.pos = usize::try_from(s.cursor / shards as u64).unwrap_or(usize::MAX);
            }
            _ => return None,
        }
        Some(w)
    }

    /// Examines one slice of at most [`WALK_SLICE_SLOTS`] slots under one shard lock.
    /// Returns true once the walk is complete.
    pub fn step(&mut self, store: &Store, now_ms: u64) -> bool {
        if self.shard >= self.shards || self.too_big {
            return true;
        }
        let slice = WALK_SLICE_SLOTS.min(self.budget);
        let g = store.lock(self.shard);
        let slots = g.slot_count();
        let resume = g.scan(self.pos, slice, now_ms, |e| {
            let wanted = self.only_strings && self.pattern.is_none_or(|p| glob_match(p, e.key()));
            if wanted {
                self.key_bytes += e.key().len();
                self.keys.push(e.key().to_vec());
            }
        });
        drop(g);
        if self.key_bytes > self.max_reply_bytes {
            self.too_big = true;
            return true;
        }
        let visited = match resume {
            Some(p) => p - self.pos,
            // An empty or finished shard still costs one unit, so SCAN always progresses.
            None => slots.saturating_sub(self.pos).max(1),
        };
        self.budget = self.budget.saturating_sub(visited);
        match resume {
            Some(p) => self.pos = p,
            None => {
                self.shard += 1;
                self.pos = 0;
            }
        }
        let n = self.shards as u64;
        if self.shard == self.shards {
            self.cursor = 0;
            return true;
        }
        if self.budget == 0 {
            self.cursor = (self.pos as u64).saturating_mul(n) + self.shard as u64;
            return true;
        }
        false
    }

    /// Writes the reply: KEYS' array of keys, or SCAN's cursor and keys.
    pub fn reply(self, out: &mut dyn ReplySink) {
        if self.too_big {
            return out.error(
                "ERR the reply would exceed this client's output buffer limit \
                 (--max-output-buffer-bytes); use SCAN to walk the keyspace in steps",
            );
        }
        if self.scan {
            out.array(2);
            let mut b = itoa::Buffer::new();
            out.bulk(b.format(self.cursor).as_bytes());
        }
        out.array(self.keys.len());
        for k in &self.keys {
            out.bulk(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::TryLockError;

    use super::*;
    use crate::store::{Supersede, VersionRef};

    const SHARDS: usize = 8;
    /// The shard the test holds while FLUSHDB runs.
    const HELD: usize = 5;

    fn put(store: &Store, shard: usize) {
        let key = format!("key-of-{shard}");
        let key = (0..)
            .map(|i| format!("{key}-{i}"))
            .find(|k| store.shard_of(key_hash(k.as_bytes())) == shard)
            .unwrap_or(key);
        let h = key_hash(key.as_bytes());
        let v = VersionRef::value(b"v", 0, None);
        let _ = store
            .lock(shard)
            .write(h, key.as_bytes(), Supersede::Local, v, |_| ());
    }

    /// FLUSHDB takes every shard's lock before clearing any: while one shard is held
    /// elsewhere, the shards before it stay locked and unchanged (a flush that cleared shards
    /// one at a time would have emptied them already).
    #[test]
    fn flushdb_clears_no_shard_until_it_holds_them_all() {
        let store = Store::new(SHARDS);
        for i in 0..SHARDS {
            put(&store, i);
        }
        let ctx = Ctx {
            node_id: 1,
            now_ms: 0,
            max_value: 1 << 20,
            max_reply: usize::MAX,
        };
        let held = store.lock(HELD);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        std::thread::scope(|s| {
            let flusher = s.spawn(|| {
                let mut buf = bytes::BytesMut::new();
                let mut out = ringkv_proto::RespWriter::new(&mut buf);
                exec_all(&Command::Flush, &store, &ctx, &mut out);
                buf
            });
            // Wait until the flusher reached the held shard: the one before it is taken.
            let before = HELD - 1;
            loop {
                match store.try_lock(before) {
                    Err(TryLockError::WouldBlock) => break,
                    Err(TryLockError::Poisoned(_)) => panic!("shard {before} poisoned"),
                    Ok(g) => assert!(
                        !g.is_empty(),
                        "FLUSHDB cleared shard {before} while shard {HELD} was still locked \
                         elsewhere: it is not atomic"
                    ),
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "FLUSHDB never took shard {before}"
                );
                std::thread::yield_now();
            }
            // Every shard before the held one is locked by the flusher, none cleared yet.
            for i in 0..HELD {
                assert!(
                    matches!(store.try_lock(i), Err(TryLockError::WouldBlock)),
                    "shard {i} is not held by FLUSHDB while it waits for shard {HELD}"
                );
            }
            assert!(!held.is_empty(), "the held shard is untouched");
            drop(held);
            let reply = flusher.join().expect("FLUSHDB thread");
            assert_eq!(&reply[..], b"+OK\r\n");
        });
        for i in 0..SHARDS {
            assert!(store.lock(i).is_empty(), "shard {i} flushed");
        }
    }
}
