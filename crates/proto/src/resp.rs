//! RESP2 request parsing: multibulk (`*2\r\n$3\r\nGET\r\n$1\r\na\r\n`) and inline
//! (`GET a\r\n`) commands, with the limits and error texts of Redis 7.

use std::borrow::Cow;

use smallvec::SmallVec;

use crate::ProtoError;

/// Longest count line (`*N` / `$N`) and inline command Redis accepts.
pub const MAX_INLINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
pub struct RespLimits {
    /// Most arguments in one command.
    pub max_args: usize,
    /// Longest single argument.
    pub max_bulk: usize,
    /// Longest inline command line.
    pub max_inline: usize,
    /// The client has not authenticated yet (the limits are then the small pre-auth ones and
    /// the errors say so, as Redis does since CVE-2021-32675).
    pub unauthenticated: bool,
}

impl Default for RespLimits {
    fn default() -> Self {
        RespLimits {
            max_args: 1024 * 1024,
            max_bulk: 512 * 1024 * 1024,
            max_inline: MAX_INLINE,
            unauthenticated: false,
        }
    }
}

/// One parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum RespRequest<'a> {
    /// Arguments borrowed from the input buffer (multibulk, or inline without quotes).
    Args(SmallVec<[&'a [u8]; 6]>),
    /// Inline command with quotes or escapes: arguments had to be unescaped.
    Owned(Vec<Vec<u8>>),
    /// An empty line or `*0`: Redis ignores these.
    Empty,
}

fn err(msg: &'static str) -> ProtoError {
    ProtoError::Resp(Cow::Borrowed(msg))
}

/// Parses one request off the front of `buf`: `Ok(None)` if incomplete, else the request and
/// the number of bytes it took. Never panics and never allocates based on a declared length.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
) -> Result<Option<(RespRequest<'a>, usize)>, ProtoError> {
    Ok(match parse_request_hinted(buf, limits)? {
        Parsed::Done(req, n) => Some((req, n)),
        Parsed::Incomplete { .. } => None,
    })
}

/// What [`parse_request_hinted`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// A whole request and the bytes it took.
    Done(RespRequest<'a>, usize),
    /// Not a whole request yet, and it can't be one before the buffer holds at least `need`
    /// bytes (a lower bound from the counts already read). A caller that parses again only
    /// then reads a huge multibulk arriving in small pieces in O(n log n), not O(n²).
    Incomplete { need: usize },
}

/// Like [`parse_request`], and when the request is incomplete, says how many bytes it needs
/// at least (so the caller can skip parsing again until then).
pub fn parse_request_hinted<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
) -> Result<Parsed<'a>, ProtoError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete { need: 1 }),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Fewest bytes one more bulk argument takes on the wire (`$0\n\r\n`).
const MIN_BULK_WIRE_BYTES: usize = 5;

/// Finds the line starting at `from`, returns (line content end, next position).
fn line(buf: &[u8], from: usize) -> Option<(usize, usize)> {
    let rest = buf.get(from..)?;
    let i = rest.iter().position(|&b| b == b'\n')?;
    let end = from + i;
    let content_end = if end > from && buf[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    Some((content_end, end + 1))
}

/// Strict decimal integer, as Redis's string2ll: optional '-', digits, no overflow.
fn parse_i64(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first()? {
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_sub((d - b'0') as i64)?;
    }
    if neg {
        Some(v)
    } else {
        v.checked_neg()
    }
}

/// Multibulks with more arguments than this are walked twice: once to check they are
/// complete, then to collect the arguments, so an incomplete one allocates nothing.
const SMALL_MULTIBULK_ARGS: usize = 64;

fn parse_multibulk<'a>(buf: &'a [u8], limits: &RespLimits) -> Result<Parsed<'a>, ProtoError> {
    let Some((end, pos)) = line(buf, 1) else {
        if buf.len() > MAX_INLINE {
            return Err(err("Protocol error: too big mbulk count string"));
        }
        return Ok(Parsed::Incomplete {
            need: buf.len() + 1,
        });
    };
    let count = parse_i64(&buf[1..end])
        .filter(|&n| n <= i32::MAX as i64)
        .ok_or_else(|| err("Protocol error: invalid multibulk length"))?;
    if count <= 0 {
        return Ok(Parsed::Done(RespRequest::Empty, pos));
    }
    let count = count as usize;
    if count > limits.max_args {
        return Err(if limits.unauthenticated {
            err("Protocol error: unauthenticated multibulk length")
        } else {
            err("Protocol error: invalid multibulk length")
        });
    }
    if count > SMALL_MULTIBULK_ARGS {
        if let Walk::Incomplete(need) = walk_bulks(buf, limits, count, pos, |_| {})? {
            return Ok(Parsed::Incomplete { need });
        }
    }
    // Reserve only what the buffer could possibly hold.
    let mut args = SmallVec::with_capacity(count.min(buf.len() / MIN_BULK_WIRE_BYTES + 1));
    Ok(
        match walk_bulks(buf, limits, count, pos, |a| args.push(a))? {
            Walk::Complete(end) => Parsed::Done(RespRequest::Args(args), end),
            Walk::Incomplete(need) => Parsed::Incomplete { need },
        },
    )
}

enum Walk {
    /// Every argument is there; the request ends here.
    Complete(usize),
    /// The request needs at least this many bytes.
    Incomplete(usize),
}

/// Walks `count` bulk arguments from `pos`, handing each to `push`.
fn walk_bulks<'a>(
    buf: &'a [u8],
    limits: &RespLimits,
    count: usize,
    mut pos: usize,
    mut push: impl FnMut(&'a [u8]),
) -> Result<Walk, ProtoError> {
    // The rest of the request takes at least this many more bytes after argument `i`.
    let rest_after = |i: usize| (count - i - 1).saturating_mul(MIN_BULK_WIRE_BYTES);
    for i in 0..count {
        match buf.get(pos) {
            None => {
                return Ok(Walk::Incomplete(
                    pos.saturating_add(rest_after(i))
                        .saturating_add(MIN_BULK_WIRE_BYTES),
                ))
            }
            Some(b'$') => {}
            Some(&other) => {
                return Err(ProtoError::Resp(Cow::Owned(format!(
                    "Protocol error: expected '$', got '{}'",
                    char::from(other).escape_default()
                ))))
            }
        }
        let Some((end, next)) = line(buf, pos + 1) else {
            if buf.len() - pos > MAX_INLINE {
                return Err(err("Protocol error: too big bulk count string"));
            }
            let need = pos
                .saturating_add(MIN_BULK_WIRE_BYTES)
                .max(buf.len() + 1)
                .saturating_add(rest_after(i));
            return Ok(Walk::Incomplete(need));
        };
        // As Redis: a malformed or negative length is "invalid" even before AUTH; only a
        // well-formed length over the (small, pre-auth) limit is "unauthenticated".
        let len = parse_i64(&buf[pos + 1..end])
            .filter(|&n| n >= 0)
            .ok_or_else(|| err("Protocol error: invalid bulk length"))?;
        if len as u64 > limits.max_bulk as u64 {
            return Err(if limits.unauthenticated {
                err("Protocol error: unauthenticated bulk length")
            } else {
                err("Protocol error: invalid bulk length")
            });
        }
        let data_end = next + len as usize;
        if buf.len() < data_end + 2 {
            return Ok(Walk::Incomplete(
                (data_end + 2).saturating_add(rest_after(i)),
            ));
        }
        if &buf[data_end..data_end + 2] != b"\r\n" {
            return Err(err("Protocol error: expected CRLF after bulk string"));
        }
        push(&buf[next..data_end]);
        pos = data_end + 2;
    }
    Ok(Walk::Complete(pos))
}

fn parse_inline<'a>(buf: &'a [u8], limits: &RespLimits) -> Result<Parsed<'a>, ProtoError> {
    let Some((end, next)) = line(buf, 0) else {
        // A trailing CR may be the start of the line's CRLF: it doesn't count yet, so a line
        // of exactly `max_inline` bytes is accepted however its CRLF is split across reads.
        let pending = buf.len() - usize::from(buf.last() == Some(&b'\r'));
        if pending > limits.max_inline {
            return Err(err("Protocol error: too big inline request"));
        }
        return Ok(Parsed::Incomplete {
            need: buf.len() + 1,
        });
    };
    if end > limits.max_inline {
        return Err(err("Protocol error: too big inline request"));
    }
    let text = &buf[..end];
    let req = if text.iter().any(|&b| b == b'"' || b == b'\'') {
        let args = split_quoted(text)?;
        if args.len() > limits.max_args {
            return Err(err("Protocol error: invalid multibulk length"));
        }
        if args.is_empty() {
            RespRequest::Empty
        } else {
            RespRequest::Owned(args)
        }
    } else {
        let args: SmallVec<[&[u8]; 6]> = text
            .split(|b| b.is_ascii_whitespace())
            .filter(|a| !a.is_empty())
            .collect();
        if args.len() > limits.max_args {
            return Err(err("Protocol error: invalid multibulk length"));
        }
        if args.is_empty() {
            RespRequest::Empty
        } else {
            RespRequest::Args(args)
        }
    };
    Ok(Parsed::Done(req, next))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Splits an inline line as Redis's `sdssplitargs` does: double quotes with `\n \r \t \b \a
/// \\ \" \xHH` escapes, single quotes with `\'`; a closing quote must be followed by a space.
pub fn split_quoted(line: &[u8]) -> Result<Vec<Vec<u8>>, ProtoError> {
    let unbalanced = || err("Protocol error: unbalanced quotes in request");
    let mut out = Vec::new();
    let mut i = 0;
    // sdssplitargs works on a C string: a NUL ends the input (inside quotes, that leaves them
    // unbalanced). Stopping there also keeps the word loop below, which ends a word at a NUL
    // without consuming it, from spinning forever on one.
    let n = line.iter().position(|&b| b == 0).unwrap_or(line.len());
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let mut in_dq = false;
        let mut in_sq = false;
        loop {
            if in_dq {
                if i >= n {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\' && i + 3 < n && line[i + 1] == b'x' {
                    if let (Some(h), Some(l)) = (hex(line[i + 2]), hex(line[i + 3])) {
                        cur.push(h * 16 + l);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < n {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else if in_sq {
                if i >= n {
                    return Err(unbalanced());
                }
                let c = line[i];
                if c == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    cur.push(b'\'');
                    i += 2;
                } else if c == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return Err(unbalanced());
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => break,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    c => cur.push(c),
                }
                i += 1;
            }
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(buf: &[u8]) -> Vec<Vec<u8>> {
        match parse_request(buf, &RespLimits::default())
            .unwrap()
            .unwrap()
            .0
        {
            RespRequest::Args(a) => a.iter().map(|s| s.to_vec()).collect(),
            RespRequest::Owned(a) => a,
            RespRequest::Empty => vec![],
        }
    }

    #[test]
    fn multibulk_and_inline() {
        assert_eq!(
            args(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n"),
            vec![b"GET".to_vec(), b"a".to_vec()]
        );
        assert_eq!(
            args(b"SET a  1\r\n"),
            vec![b"SET".to_vec(), b"a".to_vec(), b"1".to_vec()]
        );
        assert_eq!(args(b"SET a \"x y\\n\"\n")[2], b"x y\n".to_vec());
        assert_eq!(args(b"SET a 'it\\'s'\r\n")[2], b"it's".to_vec());
    }

    #[test]
    fn limits_and_errors() {
        let l = RespLimits::default();
        assert!(parse_request(b"*2147483648\r\n", &l).is_err());
        assert!(parse_request(b"*1\r\n$600000000\r\n", &l).is_err());
        assert!(parse_request(b"*1\r\n$-1\r\n", &l).is_err());
        assert!(parse_request(b"SET a \"b\r\n", &l).is_err());
        assert_eq!(parse_request(b"*1\r\n$3\r\nGE", &l).unwrap(), None);
        let big = vec![b'a'; MAX_INLINE + 1];
        assert!(parse_request(&big[..MAX_INLINE], &l).unwrap().is_none());
        assert!(parse_request(&big, &l).is_err());
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert!(parse_request(b"*2\r\n$3\r\nGET\r\n*1\r\n", &l).is_err());
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
    }

    /// The hint is a true lower bound: parsing any prefix shorter than the whole request says
    /// "incomplete" with a `need` no larger than the request, and never errs.
    #[test]
    fn need_is_a_lower_bound() {
        let l = RespLimits::default();
        let mut req = format!("*{}\r\n", 200).into_bytes();
        for i in 0..200 {
            let a = "x".repeat(i % 7);
            req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        for cut in 0..req.len() {
            match parse_request_hinted(&req[..cut], &l).unwrap() {
                Parsed::Incomplete { need } => {
                    assert!(need > cut && need <= req.len(), "cut {cut}: need {need}")
                }
                Parsed::Done(..) => panic!("done at {cut} of {}", req.len()),
            }
        }
        match parse_request_hinted(&req, &l).unwrap() {
            Parsed::Done(RespRequest::Args(a), n) => {
                assert_eq!((a.len(), n), (200, req.len()));
            }
            other => panic!("{other:?}"),
        };
    }

    /// A 400,000-argument request arriving 4 KiB at a time is parsed a few dozen times when
    /// the caller waits for `need`, not once per piece (which made the total work quadratic).
    #[test]
    fn huge_multibulk_in_small_pieces_is_parsed_a_logarithmic_number_of_times() {
        let l = RespLimits::default();
        let pairs = 200_000;
        let mut req = format!("*{}\r\n$4\r\nMSET\r\n", 1 + 2 * pairs).into_bytes();
        for i in 0..pairs {
            req.extend_from_slice(format!("$8\r\n{i:08}\r\n$1\r\nv\r\n").as_bytes());
        }
        let pieces = req.len().div_ceil(4096);
        let (mut len, mut need, mut parses) = (0, 0, 0);
        let done = loop {
            len = (len + 4096).min(req.len());
            if len < need {
                continue;
            }
            parses += 1;
            match parse_request_hinted(&req[..len], &l).unwrap() {
                Parsed::Incomplete { need: n } => need = n,
                Parsed::Done(RespRequest::Args(a), n) => break (a.len(), n),
                Parsed::Done(other, _) => panic!("{other:?}"),
            }
        };
        assert_eq!(done, (1 + 2 * pairs, req.len()));
        assert!(
            parses <= 64,
            "{parses} parses for {pieces} pieces: the hint is not cutting re-parses"
        );
    }
}
