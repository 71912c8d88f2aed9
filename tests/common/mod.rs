//! Test harness: runs the real `ringkv` binary on an ephemeral loopback port with its own
//! data directory, waits for its "ready" log line (never a fixed sleep), and stops exactly the
//! process it started, by PID.

#![allow(dead_code)]

pub mod cluster;
pub mod gate;
pub mod peer;
pub mod resp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: DataDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

/// The server's data directory: a temporary one it owns (removed when the server is dropped),
/// or an existing one the test owns (kept, so another server can restart on it).
pub enum DataDir {
    Temp(tempfile::TempDir),
    Existing(PathBuf),
}

impl DataDir {
    pub fn path(&self) -> &Path {
        match self {
            DataDir::Temp(t) => t.path(),
            DataDir::Existing(p) => p,
        }
    }
}

impl Server {
    /// Starts a server with `--port 0`, a fresh data dir, and the extra flags.
    pub fn start(extra: &[&str]) -> Server {
        Self::try_start(extra).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts a server; on failure returns everything it logged.
    pub fn try_start(extra: &[&str]) -> Result<Server, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        Self::spawn(DataDir::Temp(dir), extra)
    }

    /// Starts a server on an existing data directory, which it neither creates nor removes
    /// (for restarts on the same data).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Self::try_start_in(dir, extra).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Like [`Server::start_in`]; on failure returns everything it logged.
    pub fn try_start_in(dir: &Path, extra: &[&str]) -> Result<Server, String> {
        Self::spawn(DataDir::Existing(dir.to_path_buf()), extra)
    }

    fn spawn(dir: DataDir, extra: &[&str]) -> Result<Server, String> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ringkv"));
        // A test that names the port (cluster nodes whose peers must know it) passes --port.
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(["--bind", "127.0.0.1"]);
        // The ready line is logged at info: the default, unless the test picks a level.
        if !extra.contains(&"--log-level") {
            cmd.args(["--log-level", "info"]);
        }
        cmd.arg("--data-dir")
            .arg(dir.path())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        // RINGKV_TEST_LOG_DIR keeps every incarnation's log, appended to a file named after
        // the data directory (for following a run by hand; the in-memory log is per process).
        let mut keep = std::env::var_os("RINGKV_TEST_LOG_DIR").and_then(|d| {
            let name = dir.path().file_name()?.to_os_string();
            let path = Path::new(&d).join(name).with_extension("log");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .ok()
        });
        let (tx, rx) = mpsc::channel();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let ready = ready_addr(&line);
                    if let Some(f) = keep.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    // Log first, then announce: whoever learns the address must also find
                    // the ready line in the log.
                    log.lock().unwrap().push(line);
                    if let Some(addr) = ready {
                        let _ = tx.send(addr);
                    }
                }
            })
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    return Ok(Server {
                        child: Some(child),
                        addr,
                        dir,
                        log,
                    })
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // The process is gone, so its stderr ends: collect the last lines.
                        let _ = reader.join();
                        let text = log.lock().unwrap().join("\n");
                        return Err(format!("exited with {status}:\n{text}"));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(log.lock().unwrap().join("\n"));
                    }
                }
            }
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// A plain TCP connection with read/write timeouts, for raw-byte tests.
    pub fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_bounded(&mut child, Duration::from_secs(20))
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = child.kill();
        child.wait().expect("wait")
    }

    /// Waits for the process to exit by itself (e.g. after SHUTDOWN).
    pub fn wait_exit(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_bounded(&mut child, Duration::from_secs(20))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The `kvsh` binary (its own workspace package, `crates/kvsh`), next to this package's
/// `ringkv`.
pub fn kvsh_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("kvsh"))
}

/// The `kvbench` binary (`tools/kvbench`), next to this package's `ringkv`.
pub fn kvbench_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_binary("kvbench"))
}

/// Cargo gives a test only its own package's binaries, so another package's binary is built
/// here with the same profile (`cargo build -p NAME`, a no-op when it is fresh).
fn workspace_binary(name: &str) -> PathBuf {
    let ringkv = Path::new(env!("CARGO_BIN_EXE_ringkv"));
    let dir = ringkv.parent().expect("bin dir");
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", name, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "`cargo build -p {name} --bin {name}` failed: {status:?}"
    );
    assert!(
        bin.exists(),
        "{name} was built but is not at {}",
        bin.display()
    );
    bin
}

/// Parses the address out of "ringkv ... ready on 127.0.0.1:PORT (...)".
fn ready_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("ready on ")? + "ready on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Sends raw bytes and reads until `expect` bytes arrived or the peer closed.
pub fn roundtrip(s: &mut TcpStream, send: &[u8], expect: usize) -> Vec<u8> {
    s.write_all(send).unwrap();
    read_n(s, expect)
}

/// Reads until `n` bytes arrived, EOF, or the read timeout.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < n {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => out.extend_from_slice(&buf[..k]),
        }
    }
    out
}

/// Reads one RESP reply line-wise (enough for simple/error/integer/bulk replies).
pub fn read_reply(s: &mut TcpStream) -> String {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or(0);
    if let Some(n) = line
        .strip_prefix('$')
        .and_then(|n| n.trim().parse::<i64>().ok())
    {
        if n >= 0 {
            let mut body = vec![0u8; n as usize + 2];
            r.read_exact(&mut body).unwrap();
            line.push_str(&String::from_utf8_lossy(&body));
        }
    }
    line
}

/// True once the peer has closed the connection (read returns 0), within the timeout.
pub fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => return matches!(e.kind(), std::io::ErrorKind::ConnectionReset),
        }
    }
}

/// Copies a directory tree (a data directory fixture into a test's temporary directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every live key of a store and its value (as Redis commands see them at `now_ms`), for
/// tests that compare a store with a model.
pub fn live_keys(
    store: &ringkv::store::Store,
    now_ms: u64,
) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    for i in 0..store.len() {
        let shard = store.lock(i);
        let mut pos = Some(0);
        while let Some(p) = pos {
            pos = shard.scan(p, 1024, now_ms, |e| {
                m.insert(e.key().to_vec(), e.value().to_vec());
            });
        }
    }
    m
}

/// How often a condition wait polls (bounded by its deadline; never a sleep standing in for
/// the condition).
pub const POLL: Duration = Duration::from_millis(10);

/// Waits until `cond` holds, failing the test with `what` if it does not within `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::park_timeout(POLL);
    }
}

/// [`wait_until`] for a check that says what is still wrong: the test fails with the last
/// answer if it is still wrong after `within`.
pub fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let t = Instant::now();
    loop {
        let why = match check() {
            Ok(()) => return,
            Err(why) => why,
        };
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}: {why}"
        );
        std::thread::park_timeout(POLL);
    }
}

/// [`wait_until`] for a condition that needs the async runtime (a client call).
pub async fn wait_until_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while !cond().await {
        assert!(
            t.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// A field of a server's INFO server section.
pub fn info_server(server: &Server, field: &str) -> String {
    let reply = resp::Conn::connect(server.addr).call_str(&["INFO", "server"]);
    let resp::Reply::Bulk(Some(b)) = reply else {
        panic!("INFO server: {reply:?}")
    };
    String::from_utf8_lossy(&b)
        .lines()
        .find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.trim().to_string()))
        .unwrap_or_else(|| panic!("INFO server has no {field}"))
}

/// The actor of the dots a server mints (`ringkv::actor`): not its node id.
pub fn dot_actor(server: &Server) -> u64 {
    let hex = info_server(server, "dot_actor");
    u64::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("dot_actor {hex:?}: {e}"))
}

/// PING over a fresh connection answers PONG: the server is up and serving.
pub fn assert_serving(server: &Server) {
    let mut s = server.tcp();
    s.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    assert_eq!(read_n(&mut s, 7), b"+PONG\r\n");
}

/// What a child process printed and how it ended.
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` (stdin closed) and collects its output; killed (by its own PID) after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("can't run {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_bounded(&mut child, limit);
    Ran {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}
