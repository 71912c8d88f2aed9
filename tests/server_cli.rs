//! The `ringkv` binary's command line: help, protected mode, config files, validation,
//! SHUTDOWN and SIGTERM, and the ready line for port 0.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Runs `ringkv` with exactly `args`, expecting it to exit by itself within the deadline.
fn run_to_exit(args: &[&str]) -> (ExitStatus, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringkv");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(out) => {
            let out = out.expect("wait for ringkv");
            (
                out.status,
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            kill(pid);
            panic!("ringkv {args:?} did not exit within {LIMIT:?}");
        }
    }
}

fn kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
}

/// A server started with exactly `args` (unlike the harness, which adds --bind 127.0.0.1).
struct Raw {
    child: Child,
    port: u16,
    log: mpsc::Receiver<String>,
}

impl Raw {
    fn start(args: &[&str]) -> Raw {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ringkv");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("ready on ").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap();
                        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
                        return Raw {
                            child,
                            port,
                            log: rx,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    kill(child.id());
                    let _ = child.wait();
                    panic!("server {args:?} not ready:\n{}", seen.join("\n"));
                }
            }
        }
    }

    fn tcp(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        kill(self.child.id());
        let _ = self.child.wait();
        let _ = &self.log;
    }
}

fn send_expect(s: &mut TcpStream, send: &[u8], reply: &[u8]) {
    s.write_all(send).unwrap();
    let got = read_n(s, reply.len());
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(reply)
    );
}

/// Sends one RESP command and reads a bulk/array reply whole (bounded by the read timeout).
fn info(s: &mut TcpStream, cmd: &[u8]) -> String {
    s.write_all(cmd).unwrap();
    read_reply(s)
}

#[test]
fn help_lists_every_flag_and_default() {
    let (status, out, err) = run_to_exit(&["--help"]);
    assert!(status.success(), "{status}: {err}");
    for flag in [
        "--bind",
        "--port",
        "--data-dir",
        "--threads",
        "--shards",
        "--password",
        "--max-clients",
        "--max-frame-bytes",
        "--log-level",
        "--config",
        "--conflicts",
        "--max-siblings",
        "--tombstone-grace-secs",
        "--peers",
        "--cluster-secret",
        "--advertise",
        "--zone",
        "--partitions",
        "--vnodes",
        "--n",
        "--w",
        "--r",
        "--hinted-handoff",
        "--phi-convict-threshold",
        "--peer-timeout-ms",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
    for default in [
        "7379",
        "./data",
        "[default: 1024]",
        "[default: 256]",
        "[default: 2000]",
    ] {
        assert!(
            out.contains(default),
            "--help does not mention {default}:\n{out}"
        );
    }
    let (status, out, _) = run_to_exit(&["--version"]);
    assert!(status.success());
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
}

#[test]
fn protected_mode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (status, _, err) = run_to_exit(&["--bind", "0.0.0.0", "--port", "0", "--data-dir", data]);
    assert!(!status.success(), "started without a password: {err}");
    assert!(err.contains("protected mode"), "{err}");

    let (status, _, err) = run_to_exit(&["--bind", "::", "--port", "0", "--data-dir", data]);
    assert!(!status.success() && err.contains("protected mode"), "{err}");

    // With a password it starts; connect through loopback only.
    let raw = Raw::start(&[
        "--bind",
        "0.0.0.0",
        "--port",
        "0",
        "--data-dir",
        data,
        "--password",
        "x",
    ]);
    assert_ne!(raw.port, 0);
    let mut s = raw.tcp();
    send_expect(&mut s, b"PING\r\n", b"-NOAUTH Authentication required.\r\n");
    send_expect(&mut s, b"AUTH x\r\nPING\r\n", b"+OK\r\n+PONG\r\n");
}

#[test]
fn config_file_is_honoured_and_flags_win() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ringkv.toml");
    std::fs::write(
        &path,
        "# test config\nthreads = 1\nshards = 4\nmax-clients = 7\nlog_level = \"info\"\n",
    )
    .unwrap();
    let path = path.to_str().unwrap();

    let server = Server::start(&["--config", path]);
    let mut s = server.tcp();
    send_expect(
        &mut s,
        b"CONFIG GET maxclients\r\n",
        b"*2\r\n$10\r\nmaxclients\r\n$1\r\n7\r\n",
    );
    let text = info(&mut s, b"INFO server\r\n");
    assert!(text.contains("shards:4\r\n"), "{text}");
    assert!(text.contains("event_loops:1\r\n"), "{text}");
    drop(s);
    drop(server);

    // Flags override the file.
    let server = Server::start(&["--config", path, "--max-clients", "9", "--shards", "2"]);
    let mut s = server.tcp();
    send_expect(
        &mut s,
        b"CONFIG GET maxclients\r\n",
        b"*2\r\n$10\r\nmaxclients\r\n$1\r\n9\r\n",
    );
    let text = info(&mut s, b"INFO server\r\n");
    assert!(text.contains("shards:2\r\n"), "{text}");
    assert!(text.contains("event_loops:1\r\n"), "{text}");
}

#[test]
fn config_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "threads = 1\nmax_clientz = 3\n").unwrap();
    let (status, _, err) = run_to_exit(&[
        "--config",
        bad.to_str().unwrap(),
        "--port",
        "0",
        "--data-dir",
        data,
    ]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains("max_clientz") && err.contains("bad.toml"),
        "unclear error: {err}"
    );

    let wrong_type = dir.path().join("type.toml");
    std::fs::write(&wrong_type, "threads = \"two\"\n").unwrap();
    let (status, _, err) = run_to_exit(&[
        "--config",
        wrong_type.to_str().unwrap(),
        "--port",
        "0",
        "--data-dir",
        data,
    ]);
    assert!(!status.success() && err.contains("threads"), "{err}");

    let missing = dir.path().join("missing.toml");
    let (status, _, err) = run_to_exit(&[
        "--config",
        missing.to_str().unwrap(),
        "--port",
        "0",
        "--data-dir",
        data,
    ]);
    assert!(!status.success() && err.contains("missing.toml"), "{err}");
}

#[test]
fn shards_must_be_a_multiple_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (status, _, err) = run_to_exit(&[
        "--shards",
        "3",
        "--threads",
        "2",
        "--port",
        "0",
        "--data-dir",
        data,
    ]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("multiple"), "{err}");

    for bad in [
        &["--threads", "0"][..],
        &["--max-clients", "0"],
        &["--max-frame-bytes", "10"],
        &["--port", "notaport"],
        &["--max-siblings", "0"],
        &["--max-siblings", "1001"],
        &["--conflicts", "newest"],
        &["--tombstone-grace-secs", "99999999999"],
        &["--partitions", "1000"],
        &["--vnodes", "0"],
        &["--n", "17"],
        &["--w", "4"],
        &["--zone", "rack 1"],
        &["--cluster-secret", "too-short"],
        &["--hinted-handoff", "maybe"],
        &["--phi-convict-threshold", "0"],
        &["--peer-timeout-ms", "0"],
        &["--advertise", "nohost"],
    ] {
        let mut args = bad.to_vec();
        args.extend_from_slice(&["--data-dir", data]);
        let (status, _, err) = run_to_exit(&args);
        assert!(!status.success(), "{bad:?} accepted");
        assert!(!err.trim().is_empty(), "{bad:?}: no message");
    }
}

#[test]
fn shutdown_command_exits_zero() {
    let server = Server::start(&["--threads", "2"]);
    let mut s = server.tcp();
    s.write_all(b"SHUTDOWN\r\n").unwrap();
    // The reply (if any) and then the close.
    assert!(closed_by_peer(&mut s));
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
}

#[test]
fn shutdown_over_binary_exits_zero() {
    use bytes::BytesMut;
    use ringkv_proto::Request;
    let server = Server::start(&[]);
    let mut s = server.tcp();
    let mut out = BytesMut::new();
    Request::Hello {
        min_version: 1,
        max_version: 1,
        password: b"",
        client_name: b"",
    }
    .encode(1, &mut out);
    Request::Command {
        args: [&b"SHUTDOWN"[..]].into_iter().collect(),
    }
    .encode(2, &mut out);
    s.write_all(&out).unwrap();
    assert!(closed_by_peer(&mut s));
    let status = server.wait_exit();
    assert!(status.success(), "{status}");
}

/// Counts the complete `+PONG\r\n` replies in `got`; panics on anything else, including a
/// partial reply at the end.
fn count_pongs(got: &[u8]) -> usize {
    assert_eq!(
        got.len() % 7,
        0,
        "a partial reply: {} bytes, ending {:?}",
        got.len(),
        String::from_utf8_lossy(&got[got.len().saturating_sub(20)..])
    );
    for (i, chunk) in got.chunks(7).enumerate() {
        assert_eq!(chunk, b"+PONG\r\n", "reply {i}");
    }
    got.len() / 7
}

#[test]
fn sigterm_with_pipelined_requests_in_flight() {
    for round in 0..3 {
        let server = Server::start(&["--threads", "2"]);
        let mut s = server.tcp();
        let mut writer = s.try_clone().unwrap();
        // Far more than the socket buffers hold: the server is still reading when the
        // signal arrives.
        const N: usize = 300_000;
        let sent = std::thread::spawn(move || {
            let chunk = b"PING\r\n".repeat(1000);
            let mut sent = 0;
            while sent < N {
                if writer.write_all(&chunk).is_err() {
                    break;
                }
                sent += 1000;
            }
            sent
        });
        // Wait until replies flow, then signal.
        let mut got = read_n(&mut s, 7 * 1000);
        assert!(got.len() >= 7000, "no replies before the signal");
        let pid = server.pid();
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            assert!(Instant::now() < deadline, "connection not closed in time");
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("read: {e}"),
            }
        }
        let sent = sent.join().unwrap();
        let replies = count_pongs(&got);
        assert!(
            replies <= sent,
            "round {round}: {replies} replies > {sent} sent"
        );
        let status = server.wait_exit();
        assert!(status.success(), "round {round}: {status}");
    }
}

#[test]
fn port_zero_ready_line_names_the_port() {
    let server = Server::start(&["--threads", "3", "--shards", "6"]);
    assert_ne!(server.port(), 0);
    // The harness learns the address just before it stores the line: wait for the line.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        if let Some(l) = server.log_text().lines().find(|l| l.contains("ready on")) {
            break l.to_owned();
        }
        assert!(Instant::now() < deadline, "no ready line in the log");
        std::thread::yield_now();
    };
    assert!(
        ready.contains(&format!("ready on 127.0.0.1:{} ", server.port())),
        "{ready}"
    );
    assert!(ready.contains("3 event loops, 6 shards"), "{ready}");
    // Every loop serves on that port (reuseport): several connections all work.
    for _ in 0..12 {
        assert_serving(&server);
    }
    let mut s = server.tcp();
    s.write_all(b"INFO server\r\n").unwrap();
    let text = read_reply(&mut s);
    assert!(
        text.contains(&format!("tcp_port:{}\r\n", server.port())),
        "{text}"
    );
}

#[test]
fn a_second_server_on_the_same_port_is_refused() {
    // The loops bind with SO_REUSEPORT, which would let a second process share the port.
    let first = Server::start(&["--threads", "2"]);
    let port = first.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (status, out, err) = run_to_exit(&[
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        err.to_lowercase().contains("address already in use")
            || out.to_lowercase().contains("address already in use"),
        "{out}{err}"
    );
    assert_serving(&first);
}

#[test]
fn handoff_accept_mode_serves_every_loop() {
    let server = Server::start(&["--accept", "handoff", "--threads", "3"]);
    // Connections are dealt round-robin over the loops; each one must work, including
    // commands on keys owned by other loops.
    let mut conns: Vec<TcpStream> = (0..6).map(|_| server.tcp()).collect();
    for (i, s) in conns.iter_mut().enumerate() {
        let mut send = Vec::new();
        let mut expect = Vec::new();
        for k in 0..30 {
            send.extend_from_slice(format!("SET c{i}:{k} {k}\r\nGET c{i}:{k}\r\n").as_bytes());
            let v = k.to_string();
            expect.extend_from_slice(format!("+OK\r\n${}\r\n{v}\r\n", v.len()).as_bytes());
        }
        send_expect(s, &send, &expect);
    }
    let mut s = server.tcp();
    send_expect(&mut s, b"DBSIZE\r\n", b":180\r\n");
    drop(conns);
    let status = server.terminate();
    assert!(status.success(), "{status}");
}

/// The cluster flags' rules reach the user as they are written, from the real binary.
#[test]
fn cluster_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for (args, says) in [
        (
            &["--peers", "127.0.0.1:7380"][..],
            "--peers needs --cluster-secret: peers authenticate each other with it",
        ),
        (
            &["--cluster-secret", "short"],
            "--cluster-secret must be at least 16 bytes",
        ),
        (
            &["--threads", "1", "--shards", "8", "--partitions", "4"],
            "--partitions 4 must be at least --shards 8",
        ),
        (
            &["--partitions", "96"],
            "--partitions 96 must be a power of two",
        ),
        (
            &["--n", "2", "--r", "3"],
            "--r 3 must be between 1 and --n 2",
        ),
    ] {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--port", "0", "--data-dir", data]);
        let (status, _, err) = run_to_exit(&all);
        assert!(!status.success(), "{args:?} accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// CONFIG GET shows the cluster settings (read-only), and never the cluster secret, whether
/// asked by name or by pattern.
#[test]
fn cluster_settings_in_config_get_but_not_the_secret() {
    const SECRET: &str = "s3cret-value-of-the-cluster";
    let server = Server::start(&[
        "--cluster-secret",
        SECRET,
        "--peers",
        "127.0.0.1:1,node-b:7379",
        "--zone",
        "zone-a",
        "--partitions",
        "256",
        "--vnodes",
        "16",
        "--w",
        "1",
        "--r",
        "1",
        "--hinted-handoff",
        "off",
        "--phi-convict-threshold",
        "12.5",
        "--peer-timeout-ms",
        "700",
    ]);
    let mut s = server.tcp();
    let port = server.addr.port().to_string();
    for (param, want) in [
        ("peers", "127.0.0.1:1,node-b:7379"),
        ("advertise", &format!("127.0.0.1:{port}")),
        ("zone", "zone-a"),
        ("partitions", "256"),
        ("vnodes", "16"),
        ("n", "3"),
        ("w", "1"),
        ("r", "1"),
        ("hinted-handoff", "off"),
        ("phi-convict-threshold", "12.5"),
        ("peer-timeout-ms", "700"),
    ] {
        let cmd = format!("CONFIG GET {param}\r\n");
        let reply = format!(
            "*2\r\n${}\r\n{param}\r\n${}\r\n{want}\r\n",
            param.len(),
            want.len()
        );
        send_expect(&mut s, cmd.as_bytes(), reply.as_bytes());
    }
    send_expect(&mut s, b"CONFIG GET cluster-secret\r\n", b"*0\r\n");
    let mut c = common::resp::Conn::connect(server.addr);
    let all = c.call(&[b"CONFIG", b"GET", b"*"]);
    let common::resp::Reply::Array(Some(items)) = &all else {
        panic!("CONFIG GET *: {all:?}")
    };
    let texts: Vec<String> = items.iter().map(|r| r.show()).collect();
    assert!(texts.iter().any(|t| t.contains("partitions")), "{texts:?}");
    assert!(
        !texts
            .iter()
            .any(|t| t.contains(SECRET) || t.contains("secret")),
        "CONFIG GET * shows the secret: {texts:?}"
    );
    send_expect(
        &mut s,
        b"CONFIG SET partitions 8\r\n",
        b"-ERR CONFIG SET failed (possibly related to argument 'partitions') - can't set immutable config\r\n",
    );
    assert!(
        !server.log_text().contains(SECRET),
        "the log shows the secret"
    );
}
