mod common;

use common::*;
use std::io::Write;

#[test]
fn inline_commands_as_netcat_sends_them() {
    let server = Server::start(&["--threads", "2"]);
    let mut s = server.tcp();
    s.write_all(b"SET a 1\r\nGET a\r\nINCR a\r\nDEL a\r\nGET a\r\n")
        .unwrap();
    let expect = b"+OK\r\n$1\r\n1\r\n:2\r\n:1\r\n$-1\r\n";
    assert_eq!(read_n(&mut s, expect.len()), expect);
}

#[test]
fn sigterm_exits_zero() {
    let server = Server::start(&[]);
    assert_serving(&server);
    let status = server.terminate();
    assert!(status.success(), "{status}");
}
