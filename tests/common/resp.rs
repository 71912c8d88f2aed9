//! A minimal blocking RESP2 client for the integration tests: requests are encoded as
//! multibulk arrays, replies are parsed into [`Reply`]. Strict on the wire format (every line
//! and bulk body must end in CRLF), so a malformed reply from the server fails the test.
//!
//! The `try_*` methods and [`Conn::read`] return I/O errors (for tests that expect the
//! connection to break, e.g. at a kill); [`Conn::call`], [`Conn::recv`] and friends panic with
//! a message naming what failed.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Read and write timeout of connections made by [`Conn::connect`] and [`Conn::try_connect`].
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One RESP2 reply. `Bulk(None)` is the nil bulk string (`$-1`), `Array(None)` the nil array
/// (`*-1`).
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply's type, for comparing replies by shape only.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Simple(_) => "simple",
            Reply::Error(_) => "error",
            Reply::Int(_) => "int",
            Reply::Bulk(None) => "nil",
            Reply::Bulk(Some(_)) => "bulk",
            Reply::Array(None) => "nil-array",
            Reply::Array(Some(_)) => "array",
        }
    }

    /// The whole reply as one line of text (`+OK`, `-ERR ...`, `:1`, `"bulk"`, `[...]`).
    pub fn show(&self) -> String {
        match self {
            Reply::Simple(s) => format!("+{s}"),
            Reply::Error(s) => format!("-{s}"),
            Reply::Int(n) => format!(":{n}"),
            Reply::Bulk(None) => "(nil)".into(),
            Reply::Bulk(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
            Reply::Array(None) => "(nil array)".into(),
            Reply::Array(Some(items)) => {
                let inner: Vec<String> = items.iter().map(Reply::show).collect();
                format!("[{}]", inner.join(", "))
            }
        }
    }
}

/// Compact, and abbreviated for long bulks and arrays, so failure messages stay readable.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Simple(s) => write!(f, "+{s}"),
            Reply::Error(s) => write!(f, "-{s}"),
            Reply::Int(n) => write!(f, ":{n}"),
            Reply::Bulk(None) => write!(f, "nil"),
            Reply::Bulk(Some(b)) if b.len() > 80 => write!(
                f,
                "{:?}...({} bytes)",
                String::from_utf8_lossy(&b[..80]),
                b.len()
            ),
            Reply::Bulk(Some(b)) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Reply::Array(None) => write!(f, "nil-array"),
            Reply::Array(Some(items)) if items.len() > 8 => {
                write!(f, "{:?}...({} items)", &items[..8], items.len())
            }
            Reply::Array(Some(items)) => write!(f, "{items:?}"),
        }
    }
}

/// Asserts `got == want`; for arrays, names the first differing item.
pub fn assert_reply(got: &Reply, want: &Reply, what: &str) {
    if got == want {
        return;
    }
    if let (Reply::Array(Some(g)), Reply::Array(Some(w))) = (got, want) {
        if let Some(i) = (0..g.len().min(w.len())).find(|&i| g[i] != w[i]) {
            panic!("{what}: array item {i} is {:?}, expected {:?}", g[i], w[i]);
        }
        panic!("{what}: array of {} items, expected {}", g.len(), w.len());
    }
    panic!("{what}: got {got:?}, expected {want:?}");
}

/// Appends one request (a multibulk array of `args`) to `out`.
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// One connection: a buffered reading half and the writing half of the same socket.
pub struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    /// Connects with [`TIMEOUT`] as read and write timeout; panics if that fails.
    pub fn connect(addr: SocketAddr) -> Conn {
        Self::try_connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// Connects with [`TIMEOUT`] as read and write timeout.
    pub fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        Self::try_connect_timeout(addr, TIMEOUT)
    }

    /// Connects with `timeout` as read and write timeout, and TCP_NODELAY.
    pub fn try_connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.set_nodelay(true)?;
        Self::try_from_stream(s)
    }

    /// Wraps a connected socket as it is (its timeouts included); panics if it can't be cloned.
    pub fn from_stream(s: TcpStream) -> Conn {
        Self::try_from_stream(s).expect("clone the socket")
    }

    fn try_from_stream(s: TcpStream) -> io::Result<Conn> {
        Ok(Conn {
            r: BufReader::with_capacity(64 * 1024, s.try_clone()?),
            w: s,
        })
    }

    /// The socket, for writing raw bytes or changing its options.
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.w
    }

    /// Sends one request.
    pub fn send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut out = Vec::new();
        encode(&mut out, args);
        self.w.write_all(&out)
    }

    /// Sends several requests in one write (a pipeline); read their replies in order.
    pub fn send_pipeline<C, A>(&mut self, cmds: &[C]) -> io::Result<()>
    where
        C: AsRef<[A]>,
        A: AsRef<[u8]>,
    {
        let mut out = Vec::new();
        for c in cmds {
            encode(&mut out, c.as_ref());
        }
        self.w.write_all(&out)
    }

    /// Reads one reply. EOF (also in the middle of a reply) is an error.
    pub fn read(&mut self) -> io::Result<Reply> {
        let line = self.line()?;
        let (tag, rest) = line.split_at(1.min(line.len()));
        Ok(match tag {
            "+" => Reply::Simple(rest.to_string()),
            "-" => Reply::Error(rest.to_string()),
            ":" => Reply::Int(
                rest.parse()
                    .map_err(|_| bad(format!("bad integer reply {line:?}")))?,
            ),
            "$" => {
                let n: i64 = rest
                    .parse()
                    .map_err(|_| bad(format!("bad bulk length {line:?}")))?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut body = vec![0u8; n as usize + 2];
                    self.r.read_exact(&mut body)?;
                    if !body.ends_with(b"\r\n") {
                        return Err(bad("bulk string not followed by CRLF".into()));
                    }
                    body.truncate(n as usize);
                    Reply::Bulk(Some(body))
                }
            }
            "*" => {
                let n: i64 = rest
                    .parse()
                    .map_err(|_| bad(format!("bad array length {line:?}")))?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n.min(1024) as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            _ => return Err(bad(format!("not a RESP reply: {line:?}"))),
        })
    }

    /// One reply line without its CRLF.
    fn line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "connection closed inside a reply line: {:?}",
                    String::from_utf8_lossy(&line)
                ),
            ));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|e| bad(format!("reply line is not UTF-8: {e}")))
    }

    /// Reads one reply; panics on an I/O or protocol error.
    pub fn recv(&mut self) -> Reply {
        self.read()
            .unwrap_or_else(|e| panic!("reading a reply (timed out?): {e}"))
    }

    /// Sends one request and reads its reply.
    pub fn try_call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Sends one request and reads its reply; panics, naming the request, on an error.
    pub fn call(&mut self, args: &[&[u8]]) -> Reply {
        self.try_call(args).unwrap_or_else(|e| {
            let shown: Vec<_> = args.iter().map(|a| String::from_utf8_lossy(a)).collect();
            panic!("{shown:?}: {e}")
        })
    }

    /// [`Conn::call`] with the arguments as text.
    pub fn call_str(&mut self, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.call(&args)
    }

    /// Reads the next replies and checks them against `expected`, naming the first mismatch.
    pub fn expect_all(&mut self, expected: &[Reply], what: &str) {
        for (i, want) in expected.iter().enumerate() {
            let got = self.recv();
            assert_reply(
                &got,
                want,
                &format!("{what}: reply #{i} out of order or wrong"),
            );
        }
    }

    /// True once the peer closed the connection (EOF) within the read timeout.
    pub fn closed(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.r.read(&mut buf), Ok(0))
            || matches!(self.r.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::ConnectionReset)
    }
}
