//! LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]: the longest common
//! subsequence of two values, by Redis 7.0's dynamic programming (t_string.c `lcsCommand`),
//! including which of several equally long subsequences it picks and the order of IDX ranges.

use super::{eq, int, CmdError, CmdResult, Ctx};
use crate::store::Tx;
use ringkv_proto::{key_hash, ReplySink};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lcs<'a> {
    /// The two keys (an array, so the command routes as a key list).
    pub keys: [&'a [u8]; 2],
    pub len: bool,
    pub idx: bool,
    pub min_match_len: u64,
    pub with_match_len: bool,
}

pub fn parse<'a>(a: &[&'a [u8]]) -> CmdResult<Lcs<'a>> {
    let mut l = Lcs {
        keys: [a[0], a[1]],
        len: false,
        idx: false,
        min_match_len: 0,
        with_match_len: false,
    };
    let mut j = 2;
    while j < a.len() {
        let o = a[j];
        if eq(o, "IDX") {
            l.idx = true;
        } else if eq(o, "LEN") {
            l.len = true;
        } else if eq(o, "WITHMATCHLEN") {
            l.with_match_len = true;
        } else if eq(o, "MINMATCHLEN") && j + 1 < a.len() {
            l.min_match_len = int(a[j + 1])?.max(0) as u64;
            j += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        j += 1;
    }
    if l.idx && l.len {
        return Err(CmdError::msg(
            "ERR If you want both the length and indexes, please just use IDX.",
        ));
    }
    Ok(l)
}

/// One IDX range: (start, end) in the first value, (start, end) in the second, inclusive.
type Range = ((u32, u32), (u32, u32));

/// The LCS table: `t[i * (blen + 1) + j]` is the LCS length of a[..i] and b[..j].
fn table(a: &[u8], b: &[u8]) -> Vec<u32> {
    let w = b.len() + 1;
    let mut t = vec![0u32; (a.len() + 1) * w];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    t
}

/// Walks the table back from the end as Redis does: the subsequence, and the ranges of
/// contiguous matches from last to first (those shorter than `min` left out).
pub fn walk(a: &[u8], b: &[u8], min: u64) -> (Vec<u8>, Vec<Range>) {
    let t = table(a, b);
    let w = b.len() + 1;
    let total = t[a.len() * w + b.len()] as usize;
    let mut result = vec![0u8; total];
    let mut ranges = Vec::new();
    let (mut i, mut j, mut k) = (a.len(), b.len(), total);
    // The current range, while one is open.
    let mut open: Option<Range> = None;
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            result[k - 1] = a[i - 1];
            let (x, y) = ((i - 1) as u32, (j - 1) as u32);
            open = Some(match open {
                None => ((x, x), (y, y)),
                // Moving back along a diagonal always extends the open range.
                Some(((_, ae), (_, be))) => ((x, ae), (y, be)),
            });
            if x == 0 || y == 0 {
                emit = true;
            }
            k -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            emit = open.is_some();
        }
        if let (true, Some(r)) = (emit, open) {
            if u64::from(r.0 .1 - r.0 .0 + 1) >= min {
                ranges.push(r);
            }
            open = None;
        }
    }
    (result, ranges)
}

/// Runs LCS on its two keys, locked in `tx`.
pub fn exec(l: &Lcs<'_>, tx: &mut Tx<'_>, ctx: &Ctx, out: &mut dyn ReplySink) -> CmdResult<()> {
    let [ka, kb] = l.keys;
    let ha = key_hash(ka);
    let a = tx
        .shard(ha)?
        .get(ha, ka, ctx.now_ms)
        .map_or(Vec::new(), |e| e.value().to_vec());
    let hb = key_hash(kb);
    let shard = tx.shard(hb)?;
    let live_b = shard.get(hb, kb, ctx.now_ms);
    let b = live_b.as_ref().map_or(&[][..], |e| e.value());
    if a.len() >= u32::MAX as usize - 1 || b.len() >= u32::MAX as usize - 1 {
        return Err(CmdError::msg("ERR String too long for LCS"));
    }
    // The table is (alen + 1) * (blen + 1) u32s; Redis refuses one larger than
    // proto-max-bulk-len (here the node's value limit) rather than allocate it.
    let cells = (a.len() as u128 + 1) * (b.len() as u128 + 1);
    if cells * 4 > ctx.max_value as u128 {
        return Err(CmdError::msg(
            "ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    if l.len && !l.idx {
        let t = table(&a, b);
        out.int(i64::from(t[t.len() - 1]));
        return Ok(());
    }
    let (result, ranges) = walk(&a, b, l.min_match_len);
    if !l.idx {
        out.bulk(&result);
        return Ok(());
    }
    out.array(4);
    out.bulk(b"matches");
    out.array(ranges.len());
    for ((as_, ae), (bs, be)) in ranges {
        out.array(2 + usize::from(l.with_match_len));
        out.array(2);
        out.int(i64::from(as_));
        out.int(i64::from(ae));
        out.array(2);
        out.int(i64::from(bs));
        out.int(i64::from(be));
        if l.with_match_len {
            out.int(i64::from(ae - as_ + 1));
        }
    }
    out.bulk(b"len");
    out.int(result.len() as i64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Redis's documentation.
    #[test]
    fn redis_doc_example() {
        let (s, r) = walk(b"ohmytext", b"mynewtext", 0);
        assert_eq!(s, b"mytext");
        assert_eq!(r, vec![((4, 7), (5, 8)), ((2, 3), (0, 1))]);
        let (_, r) = walk(b"ohmytext", b"mynewtext", 4);
        assert_eq!(r, vec![((4, 7), (5, 8))]);
        assert_eq!(walk(b"", b"abc", 0), (Vec::new(), Vec::new()));
        assert_eq!(walk(b"abc", b"xyz", 0), (Vec::new(), Vec::new()));
    }
}
