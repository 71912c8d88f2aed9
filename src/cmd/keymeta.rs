//! COPY, TOUCH and OBJECT: commands about a key rather than its value's content.
//!
//! ringkv keeps no per-key access time, LFU counter or object encoding, so OBJECT answers
//! what Redis 7 would answer for the same value written by SET (protocol.md §3.5).

use smallvec::SmallVec;

use super::{eq, int, CmdError, CmdResult, Command, Ctx};
use crate::store::Tx;
use ringkv_proto::{key_hash, ReplySink};

/// Redis's OBJ_ENCODING_EMBSTR_SIZE_LIMIT: longer strings are "raw".
pub const EMBSTR_MAX_BYTES: usize = 44;
/// Redis shares the integers 0..OBJ_SHARED_INTEGERS: their REFCOUNT is INT_MAX.
pub const SHARED_INTEGERS: i64 = 10_000;
const SHARED_REFCOUNT: i64 = i32::MAX as i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectSub {
    Encoding,
    Freq,
    IdleTime,
    RefCount,
}

pub const OBJECT_HELP: &[&str] = &[
    "OBJECT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "ENCODING <key>",
    "    Return the kind of internal representation used in order to store the value",
    "    associated with a <key>.",
    "FREQ <key>",
    "    Return the access frequency index of the <key>. The returned integer is",
    "    proportional to the logarithm of the recent access frequency of the key.",
    "IDLETIME <key>",
    "    Return the idle time of the <key>, that is the approximated number of",
    "    seconds elapsed since the last access to the key.",
    "REFCOUNT <key>",
    "    Return the number of references of the value associated with the specified",
    "    <key>.",
    "HELP",
    "    Prints this help.",
];

pub fn parse<'a>(name: &'static str, a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    Ok(match name {
        "touch" => Command::Touch(a.iter().copied().collect()),
        "copy" => {
            let mut replace = false;
            let mut i = 2;
            while i < a.len() {
                if eq(a[i], "REPLACE") {
                    replace = true;
                } else if eq(a[i], "DB") && i + 1 < a.len() {
                    // Only database 0 exists, as for SELECT.
                    let db = int(a[i + 1])?;
                    if i32::try_from(db).is_err() {
                        return Err(CmdError::msg(
                            "ERR value is out of range, value must between -2147483648 and \
                             2147483647",
                        ));
                    }
                    if db != 0 {
                        return Err(CmdError::msg("ERR DB index is out of range"));
                    }
                    i += 1;
                } else {
                    return Err(CmdError::SYNTAX);
                }
                i += 1;
            }
            Command::Copy([a[0], a[1]], replace)
        }
        "object" => {
            let sub = a[0];
            let which = [
                ("ENCODING", ObjectSub::Encoding),
                ("FREQ", ObjectSub::Freq),
                ("IDLETIME", ObjectSub::IdleTime),
                ("REFCOUNT", ObjectSub::RefCount),
            ]
            .into_iter()
            .find(|(n, _)| eq(sub, n));
            match (which, a.len()) {
                (Some((_, s)), 2) => Command::Object(s, a[1]),
                (None, 1) if eq(sub, "HELP") => Command::ObjectHelp,
                (Some((n, _)), _) => {
                    return Err(CmdError::arity(&format!("object|{}", n.to_lowercase())))
                }
                (None, _) if eq(sub, "HELP") => return Err(CmdError::arity("object|help")),
                (None, _) => {
                    return Err(CmdError::msg(format!(
                        "ERR unknown subcommand '{}'. Try OBJECT HELP.",
                        String::from_utf8_lossy(&sub[..sub.len().min(128)])
                    )))
                }
            }
        }
        _ => return Err(CmdError::unknown(a)),
    })
}

/// The encoding Redis 7 gives a string stored by SET (`tryObjectEncoding`): "int" for a
/// canonical 64-bit integer of at most 20 characters, "embstr" up to 44 bytes, else "raw".
pub fn encoding(v: &[u8]) -> &'static str {
    if as_int(v).is_some() {
        "int"
    } else if v.len() <= EMBSTR_MAX_BYTES {
        "embstr"
    } else {
        "raw"
    }
}

fn as_int(v: &[u8]) -> Option<i64> {
    (v.len() <= 20).then(|| int(v).ok()).flatten()
}

/// COPY src dst [REPLACE]: 1 if copied (value and TTL), 0 if src is missing or dst exists
/// without REPLACE.
pub fn copy(
    tx: &mut Tx<'_>,
    keys: [&[u8]; 2],
    replace: bool,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let [src, dst] = keys;
    if src == dst {
        return Err(CmdError::msg(
            "ERR source and destination objects are the same",
        ));
    }
    let (hs, hd) = (key_hash(src), key_hash(dst));
    let Some((value, ttl)) = tx
        .shard(hs)?
        .get(hs, src, ctx.now_ms)
        .map(|e| (e.value().to_vec(), e.expires_at_ms()))
    else {
        out.int(0);
        return Ok(());
    };
    let shard = tx.shard(hd)?;
    if !replace && shard.get(hd, dst, ctx.now_ms).is_some() {
        out.int(0);
        return Ok(());
    }
    super::strings::write(shard, hd, dst, &value, ttl, ctx)?;
    out.int(1);
    Ok(())
}

/// TOUCH: how many of the keys exist (ringkv keeps no access time to update).
pub fn touch(
    tx: &mut Tx<'_>,
    keys: &SmallVec<[&[u8]; 4]>,
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let mut n = 0;
    for &k in keys {
        let h = key_hash(k);
        n += i64::from(tx.shard(h)?.get(h, k, ctx.now_ms).is_some());
    }
    out.int(n);
    Ok(())
}

/// OBJECT ENCODING | FREQ | IDLETIME | REFCOUNT key: nil for a missing key.
pub fn object(
    tx: &mut Tx<'_>,
    sub: ObjectSub,
    key: &[u8],
    ctx: &Ctx,
    out: &mut dyn ReplySink,
) -> CmdResult<()> {
    let h = key_hash(key);
    let Some(e) = tx.shard(h)?.get(h, key, ctx.now_ms) else {
        out.nil();
        return Ok(());
    };
    match sub {
        ObjectSub::Encoding => out.bulk(encoding(e.value()).as_bytes()),
        ObjectSub::RefCount => out.int(match as_int(e.value()) {
            Some(n) if (0..SHARED_INTEGERS).contains(&n) => SHARED_REFCOUNT,
            _ => 1,
        }),
        // Seconds since the key's current version was written (reads don't reset it).
        ObjectSub::IdleTime => {
            out.int((ctx.now_ms.saturating_sub(e.version.timestamp_ms) / 1000) as i64)
        }
        // Redis without an LFU maxmemory policy; ringkv has no eviction policy at all.
        ObjectSub::Freq => {
            return Err(CmdError::msg(
                "ERR An LFU maxmemory policy is not selected, access frequency not tracked. \
                 Please note that when switching between policies at runtime LRU and LFU data \
                 will take some time to adjust.",
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_as_redis_set() {
        assert_eq!(encoding(b"123"), "int");
        assert_eq!(encoding(b"-9223372036854775808"), "int");
        assert_eq!(encoding(b"9223372036854775808"), "embstr");
        assert_eq!(encoding(b"0123"), "embstr");
        assert_eq!(encoding(b"+1"), "embstr");
        assert_eq!(encoding(b""), "embstr");
        assert_eq!(encoding(&[b'a'; 44]), "embstr");
        assert_eq!(encoding(&[b'a'; 45]), "raw");
        assert_eq!(encoding(&[b'1'; 45]), "raw");
    }
}
