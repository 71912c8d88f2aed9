//! Test harness: a real ringkv server (the workspace's binary, built on demand) on an
//! ephemeral loopback port, a tiny in-process RESP server with a configurable service time,
//! and a way to run the kvbench binary with a bound on its run time.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace root (tools/kvbench/../..).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The ringkv binary next to kvbench's, built once per test process. A failed build fails
/// the test (never falls back to an older binary, which would test stale code).
fn ringkv_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let kvbench = PathBuf::from(env!("CARGO_BIN_EXE_kvbench"));
        let dir = kvbench.parent().expect("bin dir").to_path_buf();
        let bin = dir.join("ringkv");
        let mut cmd = Command::new(env!("CARGO"));
        // With the test-only hooks (--test-delay-us), as `cargo test --workspace` builds it.
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "ringkv",
            "--bin",
            "ringkv",
            "--features",
            "test-hooks",
        ])
        .current_dir(workspace())
        .stdin(Stdio::null());
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap_or_else(|e| {
            panic!("can't run `cargo build -p ringkv --bin ringkv --features test-hooks`: {e}")
        });
        assert!(
            out.status.success(),
            "`cargo build -p ringkv --bin ringkv --features test-hooks` failed ({}); the \
             kvbench tests need the current ringkv, fix the build first:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            bin.exists(),
            "`cargo build -p ringkv` succeeded but {} is missing",
            bin.display()
        );
        bin
    })
}

/// A running ringkv, killed (by PID) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    /// Starts ringkv with extra flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(ringkv_binary())
            .args(["--port", "0", "--bind", "127.0.0.1", "--fsync", "off"])
            .args(["--log-level", "info", "--threads", "2"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringkv");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = ready_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(addr) = rx.recv_timeout(Duration::from_millis(100)) {
                return Server {
                    child,
                    addr,
                    _dir: dir,
                    log,
                };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "ringkv exited with {status}:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("ringkv not ready:\n{}", log.lock().unwrap().join("\n"));
            }
        }
    }

    /// `total_commands_processed` from `INFO stats`, over a fresh connection.
    pub fn commands_processed(&self) -> u64 {
        let mut s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"*2\r\n$4\r\nINFO\r\n$5\r\nstats\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // A bulk reply: "$LEN\r\n" then LEN bytes and CRLF.
        loop {
            let n = s.read(&mut buf).expect("read INFO");
            assert!(n > 0, "server closed during INFO");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, rest)) = text.split_once("\r\n") {
                let len: usize = head.trim_start_matches('$').parse().expect("bulk len");
                if rest.len() >= len + 2 {
                    let field = rest
                        .lines()
                        .find_map(|l| l.strip_prefix("total_commands_processed:"))
                        .expect("total_commands_processed in INFO stats");
                    return field.trim().parse().expect("number");
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("ready on ")? + "ready on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Runs kvbench with `args`, killing it (by PID) if it runs longer than `limit`.
pub fn kvbench(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvbench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kvbench");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("kvbench {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Runs kvbench with `--json -` and returns the parsed result (panics on failure).
pub fn kvbench_json(args: &[&str], limit: Duration) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["--json", "-", "--quiet"]);
    let out = kvbench(&all, limit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kvbench {all:?} failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "kvbench output is not JSON ({e}):\n{}\nstderr:\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A small RESP server in the test process: one thread per connection, commands answered one
/// at a time in order, each after `service` of "processing" (`+OK` to everything).
pub struct FakeResp {
    pub addr: SocketAddr,
    /// Commands answered so far.
    pub commands: Arc<AtomicU64>,
}

impl FakeResp {
    /// `close_after`: close every connection after answering that many commands in total.
    pub fn start(service: Duration, close_after: Option<u64>) -> FakeResp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let commands = Arc::new(AtomicU64::new(0));
        let counter = commands.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, service, close_after, &counter));
            }
        });
        FakeResp { addr, commands }
    }
}

fn serve(mut s: TcpStream, service: Duration, close_after: Option<u64>, n: &AtomicU64) {
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let Ok(k) = s.read(&mut chunk) else { return };
        if k == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..k]);
        while let Some(used) = command_len(&buf) {
            buf.drain(..used);
            if close_after.is_some_and(|max| n.load(Ordering::SeqCst) >= max) {
                // Close with a FIN, not a reset: dropping the socket with unread requests
                // would make the kernel send RST, which may discard replies already sent.
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                while matches!(s.read(&mut chunk), Ok(k) if k > 0) {}
                return;
            }
            if !service.is_zero() {
                std::thread::sleep(service);
            }
            n.fetch_add(1, Ordering::SeqCst);
            if s.write_all(b"+OK\r\n").is_err() {
                return;
            }
        }
    }
}

/// The length of the first complete RESP command (an array of bulk strings) in `b`.
fn command_len(b: &[u8]) -> Option<usize> {
    fn line(b: &[u8], at: usize) -> Option<(i64, usize)> {
        let end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(b.get(at + 1..end)?)
            .ok()?
            .parse()
            .ok()?;
        Some((n, end + 2))
    }
    if b.first() != Some(&b'*') {
        return None;
    }
    let (n, mut at) = line(b, 0)?;
    for _ in 0..n {
        if b.get(at) != Some(&b'$') {
            return None;
        }
        let (len, next) = line(b, at)?;
        at = next + len as usize + 2;
        if b.len() < at {
            return None;
        }
    }
    Some(at)
}
