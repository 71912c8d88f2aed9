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
