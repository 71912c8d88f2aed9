//! A minimal RESP2 codec for the pipelined RESP client: a request encoder and an incremental
//! reply parser that only finds reply boundaries and whether a reply is an error.

use bytes::{BufMut, BytesMut};

use crate::workload::{Op, Request};

/// Largest bulk string or array length accepted in a reply.
const MAX_LEN: i64 = 512 << 20;
/// Deepest array nesting accepted in a reply.
const MAX_DEPTH: usize = 32;

fn put_uint(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

fn put_bulk(out: &mut BytesMut, b: &[u8]) {
    out.put_u8(b'$');
    put_uint(out, b.len() as u64);
    out.put_slice(b"\r\n");
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

/// Appends the RESP command of `req`: GET key, SET key value [EX secs], DEL key.
pub fn encode(req: &Request, out: &mut BytesMut) {
    match req.op {
        Op::Read => {
            out.put_slice(b"*2\r\n$3\r\nGET\r\n");
            put_bulk(out, &req.key);
        }
        Op::Delete => {
            out.put_slice(b"*2\r\n$3\r\nDEL\r\n");
            put_bulk(out, &req.key);
        }
        Op::Write => {
            out.reserve(req.value.len() + 64);
            match req.ttl_secs {
                Some(_) => out.put_slice(b"*5\r\n$3\r\nSET\r\n"),
                None => out.put_slice(b"*3\r\n$3\r\nSET\r\n"),
            }
            put_bulk(out, &req.key);
            put_bulk(out, &req.value);
            if let Some(t) = req.ttl_secs {
                out.put_slice(b"$2\r\nEX\r\n");
                let mut n = BytesMut::new();
                put_uint(&mut n, t);
                put_bulk(out, &n);
            }
        }
    }
}

/// Appends an arbitrary command.
#[cfg(test)]
pub fn encode_args(args: &[&[u8]], out: &mut BytesMut) {
    out.put_u8(b'*');
    put_uint(out, args.len() as u64);
    out.put_slice(b"\r\n");
    for a in args {
        put_bulk(out, a);
    }
}

/// One parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Bytes the reply takes in the buffer.
    pub len: usize,
    /// The error text, if the reply (at top level) is an error.
    pub error: Option<String>,
}

/// Finds the first complete reply in `buf`. `Ok(None)` if more bytes are needed; `Err` if
/// the bytes are not RESP2.
pub fn parse(buf: &[u8]) -> Result<Option<Reply>, String> {
    let Some(end) = skip(buf, 0, 0)? else {
        return Ok(None);
    };
    let error = (buf[0] == b'-').then(|| {
        let line = &buf[1..end.saturating_sub(2).max(1)];
        String::from_utf8_lossy(line).into_owned()
    });
    Ok(Some(Reply { len: end, error }))
}

/// The end of the CRLF-terminated line starting at `pos` (index after the LF).
fn line_end(buf: &[u8], pos: usize) -> Option<usize> {
    let rest = buf.get(pos..)?;
    let i = rest.iter().position(|&b| b == b'\n')?;
    Some(pos + i + 1)
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    let s = std::str::from_utf8(line).map_err(|_| "a non-UTF-8 length".to_string())?;
    s.parse::<i64>()
        .map_err(|_| format!("`{}` is not an integer", s.escape_debug()))
}

/// Skips one reply starting at `pos`; returns the index just after it.
fn skip(buf: &[u8], pos: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("reply nested too deeply".into());
    }
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, pos) else {
        if buf.len() - pos > 64 * 1024 {
            return Err("reply line longer than 64 KiB".into());
        }
        return Ok(None);
    };
    if end < pos + 3 || buf[end - 2] != b'\r' {
        return Err("reply line not terminated by CRLF".into());
    }
    let line = &buf[pos + 1..end - 2];
    match kind {
        b'+' | b'-' => Ok(Some(end)),
        b':' => parse_int(line).map(|_| Some(end)),
        b'$' => {
            let n = parse_int(line)?;
            if n < 0 {
                return Ok(Some(end));
            }
            if n > MAX_LEN {
                return Err(format!("bulk reply of {n} bytes is too large"));
            }
            let stop = end + n as usize + 2;
            if buf.len() < stop {
                return Ok(None);
            }
            if &buf[stop - 2..stop] != b"\r\n" {
                return Err("bulk reply not terminated by CRLF".into());
            }
            Ok(Some(stop))
        }
        b'*' => {
            let n = parse_int(line)?;
            if n > MAX_LEN {
                return Err(format!("array reply of {n} elements is too large"));
            }
            let mut at = end;
            for _ in 0..n.max(0) {
                match skip(buf, at, depth + 1)? {
                    Some(next) => at = next,
                    None => return Ok(None),
                }
            }
            Ok(Some(at))
        }
        other => Err(format!(
            "unexpected reply type byte {:?}",
            char::from(other).escape_debug().to_string()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn replies() {
        let all = b"+OK\r\n-ERR bad\r\n:12\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n*-1\r\n";
        let mut pos = 0;
        let mut seen = Vec::new();
        while pos < all.len() {
            let r = parse(&all[pos..]).unwrap().unwrap();
            seen.push(r.error.clone());
            pos += r.len;
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(seen[1].as_deref(), Some("ERR bad"));
        assert!(seen.iter().enumerate().all(|(i, e)| i == 1 || e.is_none()));
    }

    #[test]
    fn incomplete_then_complete() {
        let full = b"*3\r\n$5\r\nhello\r\n:1\r\n+x\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut {cut}");
        }
        assert_eq!(parse(full).unwrap().unwrap().len, full.len());
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcde\r\n").is_err());
        assert!(parse(b"+OK\n").is_err());
    }

    #[test]
    fn encodes_commands() {
        let mut out = BytesMut::new();
        let req = Request {
            op: Op::Write,
            key: *b"key:000000000001",
            value: Bytes::from_static(b"vv"),
            ttl_secs: Some(60),
        };
        encode(&req, &mut out);
        assert_eq!(
            &out[..],
            b"*5\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$2\r\nvv\r\n$2\r\nEX\r\n$2\r\n60\r\n"
        );
        out.clear();
        encode_args(&[b"INFO", b"stats"], &mut out);
        assert_eq!(&out[..], b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n");
    }
}
