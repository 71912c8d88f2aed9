//! Single-node behaviour of the bit commands and INFO cpu that the differential test
//! (tests/redis_diff.rs) can't show: ringkv's own value limit, and CPU times that move.

mod common;

use std::time::Duration;

use common::resp::{Conn, Reply};
use common::*;

const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// A write that would grow a value past --max-frame-bytes is refused (before the value is
/// built) with SETRANGE's error; reads past it answer zeros, as Redis does up to its 512 MB.
#[test]
fn bit_writes_past_the_value_limit_are_refused() {
    const LIMIT: usize = 65536;
    let server = Server::start(&["--threads", "1", "--max-frame-bytes", &LIMIT.to_string()]);
    let mut c = Conn::connect(server.addr);
    let last_bit = (LIMIT * 8 - 1).to_string();
    let past = (LIMIT * 8).to_string();
    let err = |e: &str| Reply::Error(e.to_string());
    assert_eq!(c.call_str(&["SETBIT", "k", &past, "1"]), err(TOO_BIG));
    assert_eq!(c.call_str(&["EXISTS", "k"]), Reply::Int(0));
    assert_eq!(c.call_str(&["SETBIT", "k", &last_bit, "1"]), Reply::Int(0));
    assert_eq!(c.call_str(&["STRLEN", "k"]), Reply::Int(LIMIT as i64));
    assert_eq!(c.call_str(&["GETBIT", "k", &last_bit]), Reply::Int(1));
    assert_eq!(c.call_str(&["GETBIT", "k", "4000000000"]), Reply::Int(0));
    assert_eq!(
        c.call_str(&[
            "BITFIELD",
            "k",
            "SET",
            "u8",
            &(LIMIT * 8 - 4).to_string(),
            "255"
        ]),
        err(TOO_BIG)
    );
    assert_eq!(
        c.call_str(&["BITFIELD", "k", "GET", "u8", "4000000000"]),
        Reply::Array(Some(vec![Reply::Int(0)]))
    );
    assert_eq!(
        c.call_str(&["SETRANGE", "k2", &LIMIT.to_string(), "x"]),
        err(TOO_BIG)
    );
    // LCS's table is (len1 + 1) * (len2 + 1) * 4 bytes: 65537 * 2 * 4 is past the limit.
    assert_eq!(c.call_str(&["SET", "one", "x"]), Reply::Simple("OK".into()));
    assert_eq!(
        c.call_str(&["LCS", "k", "one", "LEN"]),
        err("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len")
    );
    assert_serving(&server);
}

fn cpu_fields(c: &mut Conn, section: &str) -> Vec<(String, f64)> {
    let Reply::Bulk(Some(text)) = c.call_str(&["INFO", section]) else {
        panic!("INFO {section} is not a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    assert!(
        text.contains("# CPU\r\n"),
        "INFO {section} has a CPU section:\n{text}"
    );
    [
        "used_cpu_sys",
        "used_cpu_user",
        "used_cpu_sys_children",
        "used_cpu_user_children",
    ]
    .iter()
    .map(|name| {
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("INFO {section} has no {name}:\n{text}"));
        let f: f64 = v
            .parse()
            .unwrap_or_else(|e| panic!("{name}:{v} is not a float: {e}"));
        assert!(f >= 0.0, "{name}:{v}");
        (name.to_string(), f)
    })
    .collect()
}

/// INFO cpu (and the default INFO) has Redis's four used_cpu_* fields, floats from
/// getrusage, and used_cpu_user grows while the server works.
#[test]
fn info_cpu_fields_parse_and_user_time_grows() {
    let server = Server::start(&["--threads", "1"]);
    let mut c = Conn::connect(server.addr);
    cpu_fields(&mut c, "default");
    let before = cpu_fields(&mut c, "cpu")[1].1;
    // LCS of two 2,000-byte values fills a 4M-cell table: CPU work on the server.
    let a: String = (0..2000)
        .map(|i| (b'a' + (i * 7 % 26) as u8) as char)
        .collect();
    let b: String = (0..2000)
        .map(|i| (b'a' + (i * 11 % 26) as u8) as char)
        .collect();
    c.call_str(&["SET", "a", &a]);
    c.call_str(&["SET", "b", &b]);
    wait_until("used_cpu_user grows", Duration::from_secs(60), || {
        assert!(matches!(c.call_str(&["LCS", "a", "b", "LEN"]), Reply::Int(n) if n > 0));
        cpu_fields(&mut c, "cpu")[1].1 > before
    });
}

fn wal_bytes(c: &mut Conn) -> u64 {
    let Reply::Bulk(Some(text)) = c.call_str(&["INFO", "persistence"]) else {
        panic!("INFO persistence is not a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("wal_bytes:"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no wal_bytes in:\n{text}"))
}

/// A SETBIT or BITFIELD that changes no bit and does not grow the value writes no new version
/// (nothing reaches the WAL); one that changes a bit does. (--fsync always: a write's reply
/// waits for its WAL record, so wal_bytes has counted it by then.)
#[test]
fn bit_writes_that_change_nothing_write_nothing() {
    let server = Server::start(&["--threads", "1", "--fsync", "always"]);
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.call_str(&["SETBIT", "k", "7", "1"]), Reply::Int(0));
    let w = wal_bytes(&mut c);
    assert!(w > 0, "the first SETBIT was logged");
    assert_eq!(c.call_str(&["SETBIT", "k", "7", "1"]), Reply::Int(1));
    assert_eq!(c.call_str(&["SETBIT", "k", "3", "0"]), Reply::Int(0));
    assert_eq!(
        c.call_str(&[
            "BITFIELD", "k", "SET", "u8", "0", "1", "OVERFLOW", "FAIL", "INCRBY", "u2", "6", "7"
        ]),
        Reply::Array(Some(vec![Reply::Int(1), Reply::Bulk(None)]))
    );
    assert_eq!(wal_bytes(&mut c), w, "no-op bit writes reached the WAL");
    assert_eq!(c.call_str(&["SETBIT", "k", "7", "0"]), Reply::Int(1));
    assert!(
        wal_bytes(&mut c) > w,
        "a SETBIT that changes a bit is logged"
    );
    assert_eq!(c.call_str(&["SETBIT", "k", "8", "0"]), Reply::Int(0));
    assert_eq!(
        c.call_str(&["STRLEN", "k"]),
        Reply::Int(2),
        "growing is a change"
    );
}

/// OBJECT IDLETIME counts from the last write: reads and TOUCH don't reset it, a write does.
/// OBJECT ENCODING answers as for the value stored by SET (a short value built by SETBIT is
/// "embstr", where Redis says "raw").
#[test]
fn object_idletime_counts_from_the_last_write() {
    let server = Server::start(&["--threads", "1"]);
    let mut c = Conn::connect(server.addr);
    assert_eq!(c.call_str(&["SETBIT", "k", "1", "1"]), Reply::Int(0));
    assert_eq!(
        c.call_str(&["OBJECT", "ENCODING", "k"]),
        Reply::Bulk(Some(b"embstr".to_vec()))
    );
    wait_until("OBJECT IDLETIME reaches 1", Duration::from_secs(10), || {
        assert_eq!(c.call_str(&["GET", "k"]), Reply::Bulk(Some(b"@".to_vec())));
        assert_eq!(c.call_str(&["TOUCH", "k"]), Reply::Int(1));
        matches!(c.call_str(&["OBJECT", "IDLETIME", "k"]), Reply::Int(n) if n >= 1)
    });
    assert_eq!(c.call_str(&["SETBIT", "k", "2", "1"]), Reply::Int(0));
    assert_eq!(c.call_str(&["OBJECT", "IDLETIME", "k"]), Reply::Int(0));
}

/// BITOP and LCS over keys on different event loops see one state of all their keys: a writer
/// MSETs the same value to every key (the XOR of all eight is then zeros, the LCS of two the
/// whole value), so a torn read shows.
#[test]
fn multi_key_bit_commands_are_atomic_across_loops() {
    let server = Server::start(&["--threads", "2"]);
    let keys: Vec<String> = (0..8).map(|i| format!("atomic:{i}")).collect();
    let mut c = Conn::connect(server.addr);
    let rounds = 300;
    let value = |round: usize| format!("{round:06}-{}", "x".repeat(round % 7));
    let mset = |c: &mut Conn, round: usize| {
        let v = value(round);
        let mut args = vec!["MSET"];
        for k in &keys {
            args.push(k);
            args.push(&v);
        }
        assert_eq!(c.call_str(&args), Reply::Simple("OK".into()));
    };
    mset(&mut c, 0);
    let addr = server.addr;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = Conn::connect(addr);
            for round in 1..=rounds {
                mset(&mut w, round);
            }
        });
        let mut xor = vec!["BITOP", "XOR", "dest"];
        xor.extend(keys.iter().map(String::as_str));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let Reply::Int(len) = c.call_str(&xor) else {
                panic!("BITOP answers an integer")
            };
            let Reply::Bulk(Some(d)) = c.call_str(&["GET", "dest"]) else {
                panic!("BITOP wrote dest")
            };
            assert_eq!(d.len() as i64, len);
            // An even number of equal values XORs to zeros.
            assert!(d.iter().all(|&b| b == 0), "torn BITOP: {d:?}");
            // Equal values: one match, the whole of both.
            let lcs = c.call_str(&["LCS", &keys[1], &keys[6], "IDX"]);
            let Reply::Array(Some(parts)) = &lcs else {
                panic!("LCS IDX: {lcs:?}")
            };
            let Reply::Int(len) = parts[3] else {
                panic!("LCS IDX: {lcs:?}")
            };
            let whole = Reply::Array(Some(vec![Reply::Int(0), Reply::Int(len - 1)]));
            assert_eq!(
                parts[1],
                Reply::Array(Some(vec![Reply::Array(Some(vec![whole.clone(), whole]))])),
                "torn LCS: {lcs:?}"
            );
            if c.call_str(&["GET", &keys[0]]) == Reply::Bulk(Some(value(rounds).into_bytes())) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "writer did not finish"
            );
        }
    });
}
