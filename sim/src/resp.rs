//! A small RESP2 client over turmoil's TCP: what the workload and the checker send.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use turmoil::net::TcpStream;

use crate::node::{PASSWORD, PORT};

/// Longest reply line or bulk accepted (replies here are short).
const MAX_REPLY_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

pub struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.to_string())
}

/// One RESP request.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply at the start of `b`: the reply and the bytes it used, or None if more
/// bytes are needed.
fn parse(b: &[u8]) -> io::Result<Option<(Reply, usize)>> {
    let Some(end) = b.windows(2).position(|w| w == b"\r\n") else {
        if b.len() > MAX_REPLY_BYTES {
            return Err(bad("reply line too long"));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&b[1..end]).map_err(|_| bad("reply line not UTF-8"))?;
    let used = end + 2;
    let num = || line.parse::<i64>().map_err(|_| bad("bad number in reply"));
    match b.first() {
        Some(b'+') => Ok(Some((Reply::Status(line.to_string()), used))),
        Some(b'-') => Ok(Some((Reply::Error(line.to_string()), used))),
        Some(b':') => Ok(Some((Reply::Int(num()?), used))),
        Some(b'$') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Reply::Bulk(None), used)));
            }
            let n = usize::try_from(n).map_err(|_| bad("bad bulk length"))?;
            if n > MAX_REPLY_BYTES {
                return Err(bad("bulk too long"));
            }
            if b.len() < used + n + 2 {
                return Ok(None);
            }
            Ok(Some((
                Reply::Bulk(Some(b[used..used + n].to_vec())),
                used + n + 2,
            )))
        }
        Some(b'*') => {
            let n = num()?;
            if n < 0 {
                return Ok(Some((Reply::Array(Vec::new()), used)));
            }
            let mut items = Vec::new();
            let mut at = used;
            for _ in 0..n {
                match parse(&b[at..])? {
                    Some((r, u)) => {
                        items.push(r);
                        at += u;
                    }
                    None => return Ok(None),
                }
            }
            Ok(Some((Reply::Array(items), at)))
        }
        Some(_) => Err(bad("unknown reply type")),
        None => Ok(None),
    }
}

impl Conn {
    /// Connects to `host` and authenticates, within `limit`.
    pub async fn open(host: &str, limit: Duration) -> io::Result<Conn> {
        let go = async {
            let s = TcpStream::connect((host, PORT)).await?;
            let mut c = Conn { s, buf: Vec::new() };
            match c.call(&[b"AUTH", PASSWORD.as_bytes()]).await? {
                Reply::Status(_) => Ok(c),
                other => Err(bad(&format!("AUTH answered {other:?}"))),
            }
        };
        tokio::time::timeout(limit, go)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Sends requests (pipelined) and reads their replies, in order.
    pub async fn pipeline(&mut self, reqs: &[Vec<&[u8]>]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        for r in reqs {
            encode(&mut out, r);
        }
        self.s.write_all(&out).await?;
        let mut replies = Vec::with_capacity(reqs.len());
        while replies.len() < reqs.len() {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    pub async fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.s.write_all(&out).await?;
        self.read_reply().await
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            if let Some((r, used)) = parse(&self.buf)? {
                self.buf.drain(..used);
                return Ok(r);
            }
            let mut chunk = [0u8; 4096];
            let n = self.s.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}
