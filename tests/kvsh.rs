//! The `kvsh` binary against a real server: one-shot commands, piped scripts, passwords,
//! output and exit codes. Every child runs with a deadline and is killed by its PID if over.

mod common;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs kvsh with `args`, feeding `stdin` (or an empty, closed stdin), within a deadline.
fn kvsh(args: &[&str], stdin: Option<&str>) -> Output {
    kvsh_env(args, stdin, &[])
}

fn kvsh_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(kvsh_binary());
    cmd.args(args)
        .env_remove("RINGKV_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn kvsh");
    let pid = child.id();
    let mut child_in = child.stdin.take().unwrap();
    let input = stdin.unwrap_or("").to_owned();
    let writer = std::thread::spawn(move || {
        let _ = child_in.write_all(input.as_bytes());
        // Dropping closes the pipe: EOF for kvsh.
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
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
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(CHILD_TIMEOUT) {
        Ok(s) => s.expect("wait for kvsh"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let _ = rx.recv_timeout(Duration::from_secs(10));
            panic!("kvsh {args:?} did not finish within {CHILD_TIMEOUT:?}; killed");
        }
    };
    let _ = writer.join();
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

#[test]
fn one_shot_commands() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let p = port.as_str();

    let o = kvsh(&["-p", p, "SET", "a", "1"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");

    let o = kvsh(&["-p", p, "-c", "GET a"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "1\n"), "{o:?}");

    // Quotes in -c as in redis-cli.
    let o = kvsh(&["-p", p, "-c", "SET greeting \"hello world\""], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    let o = kvsh(&["-p", p, "GET", "greeting"], None);
    assert_eq!(o.stdout, "hello world\n", "{o:?}");

    let o = kvsh(&["-p", p, "GET", "missing"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "(nil)\n"), "{o:?}");

    let o = kvsh(&["-p", p, "INCR", "a"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "2\n"), "{o:?}");
}

#[test]
fn binary_aliases_put_get_delete() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let p = port.as_str();

    let o = kvsh(&["-p", p, "put", "k", "v"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");
    let o = kvsh(&["-p", p, "get", "k"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "v\n"), "{o:?}");
    let o = kvsh(&["-p", p, "delete", "k"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "1\n"), "{o:?}");
    let o = kvsh(&["-p", p, "get", "k"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "(nil)\n"), "{o:?}");
    let o = kvsh(&["-p", p, "delete", "k"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "0\n"), "{o:?}");

    // Wrong alias arity is a usage error caught by kvsh: exit 1.
    let o = kvsh(&["-p", p, "put", "k"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o
        .stdout
        .contains("(error) ERR wrong number of arguments for 'put'"));
}

/// Siblings are printed numbered; `resolve` replaces them all by one value.
#[test]
fn siblings_are_shown_and_resolve_replaces_them() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let p = port.as_str();
    // Two writes with the same (first) context: concurrent, so both stay.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = ringkv_client::Client::connect(server.addr, Default::default())
            .await
            .unwrap();
        let first = c.put("s", "v0").await.unwrap();
        for v in ["left", "right"] {
            let opts = ringkv_client::PutOptions {
                context: Some(first.clone()),
                ttl: None,
            };
            c.put_with("s", v, opts).await.unwrap();
        }
    });
    let o = kvsh(&["-p", p, "--no-raw", "get", "s"], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert!(
        o.stdout.contains("1) ") && o.stdout.contains("2) "),
        "numbered siblings: {o:?}"
    );
    assert!(
        o.stdout.contains("left") && o.stdout.contains("right"),
        "{o:?}"
    );
    let o = kvsh(&["-p", p, "resolve", "s", "both"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");
    let o = kvsh(&["-p", p, "get", "s"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "both\n"), "{o:?}");
    let o = kvsh(&["-p", p, "resolve", "s"], None);
    assert_eq!(o.code(), Some(1), "usage error: {o:?}");
}

#[test]
fn error_reply_exits_1() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let p = port.as_str();
    assert_eq!(kvsh(&["-p", p, "SET", "s", "abc"], None).code(), Some(0));
    let o = kvsh(&["-p", p, "INCR", "s"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert_eq!(
        o.stdout,
        "(error) ERR value is not an integer or out of range\n"
    );
    let o = kvsh(&["-p", p, "-c", "NOSUCH x"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stdout.starts_with("(error) ERR unknown command 'NOSUCH'"));

    // Formatted output (as on a terminal) with --no-raw.
    let o = kvsh(&["-p", p, "--no-raw", "INCR", "s"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert_eq!(
        o.stdout,
        "(error) ERR value is not an integer or out of range\n"
    );
    let o = kvsh(&["-p", p, "--no-raw", "GET", "s"], None);
    assert_eq!(o.stdout, "\"abc\"\n", "{o:?}");
}

#[test]
fn unreachable_server_exits_2() {
    let port = closed_port().to_string();
    let o = kvsh(&["-p", &port, "PING"], None);
    assert_eq!(o.code(), Some(2), "{o:?}");
    assert!(
        o.stderr.contains("could not connect") && o.stderr.contains(&port),
        "{o:?}"
    );
    assert!(o.stdout.is_empty(), "{o:?}");
    // The same for a script.
    let o = kvsh(&["-p", &port], Some("PING\n"));
    assert_eq!(o.code(), Some(2), "{o:?}");
    assert!(!o.stderr.is_empty());
}

#[test]
fn piped_script_with_an_error() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let script = "\
# a comment, then a blank line

SET a 1
INCR a
SET s x
INCR s
GET a
put k v
get k
delete k
GET s
";
    let o = kvsh(&["-p", &port], Some(script));
    assert_eq!(
        o.stdout,
        "OK\n2\nOK\n(error) ERR value is not an integer or out of range\n2\nOK\nv\n1\nx\n",
        "{o:?}"
    );
    assert_eq!(o.code(), Some(1), "{o:?}");
}

#[test]
fn piped_clean_script() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let o = kvsh(
        &["-p", &port],
        Some("SET a 10\nINCRBY a 5\nGET a\nMGET a nope\nDEL a\n"),
    );
    assert_eq!(o.stdout, "OK\n15\n15\n15\n(nil)\n1\n", "{o:?}");
    assert_eq!(o.code(), Some(0), "{o:?}");

    // No trailing newline on the last line, and `quit` stops the script.
    let o = kvsh(&["-p", &port], Some("SET b 1\nquit\nSET never 1\n"));
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");
    let o = kvsh(&["-p", &port], Some("EXISTS never b\nGET b"));
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "1\n1\n"), "{o:?}");

    // An empty script succeeds without output.
    let o = kvsh(&["-p", &port], Some(""));
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), ""), "{o:?}");
}

#[test]
fn password() {
    let server = Server::start(&["--password", "s3cret"]);
    let port = server.port().to_string();
    let p = port.as_str();

    let o = kvsh(&["-p", p, "-a", "s3cret", "SET", "a", "1"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");
    let o = kvsh(&["-p", p, "-a", "s3cret"], Some("GET a\nINCR a\n"));
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "1\n2\n"), "{o:?}");
    let o = kvsh_env(
        &["-p", p, "GET", "a"],
        None,
        &[("RINGKV_PASSWORD", "s3cret")],
    );
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "2\n"), "{o:?}");

    for bad in [&["-a", "wrong"][..], &[]] {
        let mut args = vec!["-p", p];
        args.extend_from_slice(bad);
        args.extend_from_slice(&["GET", "a"]);
        let o = kvsh(&args, None);
        assert_eq!(o.code(), Some(2), "{args:?}: {o:?}");
        assert!(
            o.stderr.contains("WRONGPASS"),
            "{args:?}: the reason is not shown: {o:?}"
        );
        assert!(o.stdout.is_empty(), "{o:?}");
    }
    assert_no_panic(&server);
}

fn assert_no_panic(server: &Server) {
    let log = server.log_text();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn usage_errors_exit_1() {
    let server = Server::start(&[]);
    let port = server.port().to_string();
    let p = port.as_str();
    let o = kvsh(&["-p", p, "-c", ""], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("empty command"), "{o:?}");
    let o = kvsh(&["-p", p, "-c", "SET \"a b"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("invalid command line"), "{o:?}");
    // In a script, a bad line is reported with its number and the rest still runs.
    let o = kvsh(&["-p", p], Some("SET x 'unterminated\nSET y 2\nGET y\n"));
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stderr.contains("line 1"), "{o:?}");
    assert_eq!(o.stdout, "OK\n2\n", "{o:?}");
}

// ----- cluster nodes|info|join|leave -----

/// A cluster node with no peers yet (it forms a cluster of one).
fn lone_node() -> Server {
    Server::start(&[
        "--cluster-secret",
        common::cluster::SECRET,
        "--threads",
        "1",
    ])
}

/// The CLUSTER NODES lines of `server` (through the RESP helper, not kvsh).
fn nodes_of(server: &Server) -> Vec<String> {
    match common::resp::Conn::connect(server.addr).call_str(&["CLUSTER", "NODES"]) {
        common::resp::Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b)
            .lines()
            .map(str::to_string)
            .collect(),
        other => panic!("CLUSTER NODES: {other:?}"),
    }
}

#[test]
fn cluster_nodes_and_info_are_readable() {
    let c = common::cluster::Cluster::start(2, &[]);
    c.wait_converged();
    let port = c.ports[0].to_string();
    let o = kvsh(&["-p", &port, "--no-raw", "-c", "cluster nodes"], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    let lines: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "a header and one line per node: {o:?}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("ADDRESS") && lines[0].contains("LIVENESS"),
        "{o:?}"
    );
    let col = lines[0].find("ADDRESS").unwrap();
    for p in &c.ports {
        let row = lines
            .iter()
            .find(|l| l.contains(&format!("127.0.0.1:{p}")))
            .unwrap_or_else(|| panic!("a row for port {p}: {o:?}"));
        assert_eq!(row.find("127.0.0.1:"), Some(col), "aligned: {o:?}");
        assert!(row.contains(" up "), "{o:?}");
    }
    assert_eq!(
        lines.iter().filter(|l| l.ends_with("myself")).count(),
        1,
        "{o:?}"
    );

    // Raw (piped, the default off a terminal): the server's lines, for scripts.
    let o = kvsh(&["-p", &port, "cluster", "nodes"], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert_eq!(o.stdout.lines().count(), 2, "{o:?}");

    let o = kvsh(&["-p", &port, "-c", "CLUSTER INFO"], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert!(o.stdout.contains("cluster_enabled:1\n"), "{o:?}");
    assert!(o.stdout.contains("cluster_known_nodes:2\n"), "{o:?}");
    assert!(!o.stdout.contains('\r'), "{o:?}");

    // The same commands from a script (the interactive shell runs them the same way).
    let o = kvsh(&["-p", &port], Some("cluster nodes\ncluster info\n"));
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert!(o.stdout.contains("cluster_nodes_up:2\n"), "{o:?}");

    let o = kvsh(&["-p", &port, "-c", "cluster join"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stdout.contains("usage: cluster nodes"), "{o:?}");
}

#[test]
fn cluster_join_waits_until_the_node_is_listed_and_leave_removes_it() {
    let a = lone_node();
    let b = lone_node();
    let (pa, b_addr) = (a.port().to_string(), b.addr.to_string());
    let o = kvsh(&["-p", &pa, "-c", &format!("cluster join {b_addr}")], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert!(
        o.stdout.starts_with("joined: node ") && o.stdout.contains(&format!(" at {b_addr} ")),
        "{o:?}"
    );
    assert!(o.stderr.contains("waiting up to 10s"), "{o:?}");
    // When kvsh said so, the node was listed.
    let nodes = nodes_of(&a);
    let b_line = nodes
        .iter()
        .find(|l| l.contains(&b_addr))
        .unwrap_or_else(|| panic!("{b_addr} in {nodes:?}"));
    let b_id = b_line.split(' ').next().unwrap().to_string();

    // kvsh waits until the leave is committed (the partitions B held are on A already).
    let o = kvsh(&["-p", &pa, "-c", &format!("cluster leave {b_id}")], None);
    assert_eq!(o.code(), Some(0), "{o:?}");
    assert!(
        o.stdout.starts_with("OK\n") && o.stdout.contains(&format!("node {b_id} is removed")),
        "{o:?}"
    );
    let nodes = nodes_of(&a);
    assert!(
        nodes
            .iter()
            .any(|l| l.starts_with(&b_id) && l.contains(" removed ")),
        "{nodes:?}"
    );
    // Nothing moves now: cancel says so; forgetting a removed node too.
    let o = kvsh(&["-p", &pa, "-c", "cluster cancel"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stdout.contains("not joining or leaving"), "{o:?}");
    let o = kvsh(&["-p", &pa, "-c", &format!("cluster forget {b_id}")], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stdout.contains("already left"), "{o:?}");
    let o = kvsh(&["-p", &pa, "-c", "cluster leave 123x"], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(o.stdout.contains("16 hex digits"), "{o:?}");
}

#[test]
fn cluster_join_of_nothing_gives_up_after_10s() {
    let a = lone_node();
    let pa = a.port().to_string();
    let dead = format!("127.0.0.1:{}", closed_port());
    let t = std::time::Instant::now();
    let o = kvsh(&["-p", &pa, "-c", &format!("cluster join {dead}")], None);
    assert_eq!(o.code(), Some(1), "{o:?}");
    assert!(
        o.stdout
            .contains("did not appear in CLUSTER NODES within 10s"),
        "{o:?}"
    );
    assert!(t.elapsed() >= Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(nodes_of(&a).len(), 1);
    // It stays joining (a seed that never answered may be an owner); cancel makes it itself.
    assert!(nodes_of(&a)[0].contains(" joining "), "{:?}", nodes_of(&a));
    let o = kvsh(&["-p", &pa, "-c", "cluster cancel"], None);
    assert_eq!((o.code(), o.stdout.as_str()), (Some(0), "OK\n"), "{o:?}");
    assert!(nodes_of(&a)[0].contains(" active "), "{:?}", nodes_of(&a));
}
