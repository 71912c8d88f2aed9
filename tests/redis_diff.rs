//! Differential test: the same deterministic command list runs against a real `redis-server`
//! and against ringkv, over raw RESP, and the replies must be identical (TTLs within a
//! tolerance). Things that legitimately differ (INFO, CLIENT ID/LIST, COMMAND, TIME values,
//! RANDOMKEY on several keys, SCAN cursor values, HELLO content) are compared by shape only or
//! not at all.
//!
//! It needs `redis-server` on PATH and fails without it (a skipped comparison would pass
//! without checking anything). `.ci/run` installs it.

mod common;

use std::collections::BTreeSet;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::Server;

// ---------------------------------------------------------------------------------------------
// Requests over the shared RESP2 client

/// Sends one request given as owned arguments and reads its reply.
fn call(c: &mut Conn, args: &[Vec<u8>]) -> io::Result<Reply> {
    c.send_pipeline(&[args])?;
    c.read()
}

/// Sends one command line (see [`tokenize`]) and reads its reply; panics on an I/O error.
fn cmd_line(c: &mut Conn, line: &str) -> Reply {
    call(c, &tokenize(line)).expect(line)
}

/// Splits a command line on spaces; `"..."` quotes an argument (so `""` is an empty one), with
/// `\"`, `\\`, `\r`, `\n`, `\t` and `\xHH` escapes inside quotes.
fn tokenize(line: &str) -> Vec<Vec<u8>> {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        let mut arg = Vec::new();
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                    match b[i] {
                        b'r' => arg.push(b'\r'),
                        b'n' => arg.push(b'\n'),
                        b't' => arg.push(b'\t'),
                        b'x' => {
                            let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                            arg.push(u8::from_str_radix(hex, 16).unwrap());
                            i += 2;
                        }
                        c => arg.push(c),
                    }
                } else {
                    arg.push(b[i]);
                }
                i += 1;
            }
            assert!(i < b.len(), "unterminated quote in {line:?}");
            i += 1;
        } else {
            while i < b.len() && b[i] != b' ' {
                arg.push(b[i]);
                i += 1;
            }
        }
        out.push(arg);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The reference server

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

struct RedisServer {
    child: Child,
    addr: SocketAddr,
}

impl RedisServer {
    fn start(bin: &PathBuf) -> RedisServer {
        // A port picked this way can be taken by someone else before redis binds it: retry.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(bin)
                .args(["--port", &port.to_string()])
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
                // ringkv has one database: make SELECT comparable.
                .args(["--databases", "1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut server = RedisServer {
                child,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match server.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return server,
                Err(e) => last_err = e,
            }
        }
        panic!("redis-server did not start: {last_err}");
    }

    /// Polls PING until PONG, the process exiting, or the deadline.
    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("redis-server exited: {status}"));
            }
            if let Ok(mut c) = Conn::try_connect(self.addr) {
                if let Ok(Reply::Simple(s)) = c.try_call(&[b"PING"]) {
                    if s == "PONG" {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                return Err("no PONG before the deadline".into());
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// The command list
//
// One command a line. A line may start with a comparison mode:
//   `~N`     integer replies may differ by N (TTL family)
//   `#sort`  array replies compared as sorted lists (KEYS)
//   `#scan`  iterate SCAN from the given cursor to 0 on each server; compare the key sets
//   `#shape` compare reply kinds only (and error texts exactly)
//   `#skip`  send to both, compare nothing
// `//` starts a comment line.

const CASES: &str = r#"
// ---------- connection
PING
PING hello
PING ""
PING a b
ECHO
ECHO hi
ECHO ""
ECHO a b
ECHO "with space\r\nand crlf"
SELECT 0
SELECT 1
SELECT -1
SELECT abc
SELECT 00
SELECT 99999999999
SELECT
SELECT 0 0
#shape HELLO
#shape HELLO 2
HELLO 1
HELLO 4
HELLO abc
HELLO 2 FOO
HELLO 1 FOO
#shape HELLO 2 AUTH default anything
HELLO 2 AUTH nosuchuser pass
HELLO 2 AUTH default
HELLO 1 SETNAME
HELLO abc FOO
HELLO 2 SETNAME
HELLO 2 SETNAME "bad name"
AUTH
AUTH pass
AUTH default anything
AUTH nosuchuser pass
AUTH a b c
AUTH nosuchuser pass
CLIENT
CLIENT FOO
CLIENT GETNAME
CLIENT SETNAME
CLIENT SETNAME a b
CLIENT SETNAME "a b"
CLIENT SETNAME "a\nb"
CLIENT SETNAME myname
CLIENT GETNAME
CLIENT GETNAME x
CLIENT SETNAME ""
CLIENT GETNAME
#shape CLIENT ID
CLIENT ID x
#shape CLIENT LIST
#shape CLIENT INFO
#shape TIME
TIME x
#shape INFO
#shape INFO server
#shape INFO keyspace
CONFIG
CONFIG FOO
CONFIG GET
#shape CONFIG GET maxclients
#shape CONFIG GET nosuchparam
CONFIG SET
CONFIG SET maxclients
CONFIG SET maxclients abc
CONFIG SET maxclients 0
CONFIG SET maxclients -5
CONFIG SET nosuchparam 1
CONFIG RESETSTAT x
#shape CONFIG RESETSTAT
#shape DBSIZE
FLUSHALL
FLUSHALL x
FLUSHALL SYNC
FLUSHALL ASYNC
FLUSHALL SYNC ASYNC
FLUSHDB
FLUSHDB x
FLUSHDB ASYNC
FLUSHDB sync
DBSIZE
DBSIZE x
nosuchcommand
nosuchcommand a b ""
NoSuchCommand "x y"
"" a
nosuchcommand aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa b
nosuchcommand aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb c d
nosuchcommand 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50

// ---------- GET / SET
GET
GET a b
GET missing
SET
SET k
SET k v
GET k
SET k v2 NX
SET k v3 XX
GET k
SET newk v XX
GET newk
SET newk v NX
GET newk
SET k v NX XX
SET k v XX NX
SET k v nx nx
SET k v xx xx
SET k v GET
SET k v4 GET GET
SET missing2 v GET
GET missing2
SET k v5 NX GET
GET k
SET k2 v XX GET
GET k2
SET k3 v NX GET
GET k3
SET k v FOO
SET k v EX
SET k v EX 10 PX 100
SET k v PX 100 EX 10
SET k v EX 10 EXAT 9999999999
SET k v EX 10 PXAT 9999999999999
SET k v EX 10 KEEPTTL
SET k v KEEPTTL EX 10
SET k v KEEPTTL KEEPTTL
SET k v KEEPTTL PX 10
SET k v PERSIST
SET k v EX 0
SET k v EX -1
SET k v PX 0
SET k v PX -100
SET k v EXAT 0
SET k v PXAT 0
SET k v EXAT -5
SET k v EX abc
SET k v EX 1.5
SET k v EX " 10"
SET k v EX 010
SET k v EX +10
SET k v EX 9223372036854775807
SET k v EX 9223372036854775
SET k v EX 9223372036854774
SET k v PX 9223372036854775807
SET k v EXAT 9223372036854775807
SET k v PXAT 9223372036854775807
SET k v EX 99999999999999999999
SET k v EX 0 NX XX
SET k v EX abc NX XX
SET k v NX XX EX abc
SET k v EX abc EX 100
SET k v EX 10 EX 100
~1 TTL k
SET k v EX 100 EX 0
GET k
SET k v PX 100000 PX 200000
~1 TTL k
SET k v EX 100
~1 TTL k
SET k v2 KEEPTTL
~1 TTL k
GET k
SET k v3
TTL k
SET k v EXAT 4102444800
EXPIRETIME k
PEXPIRETIME k
SET k v PXAT 4102444800123
PEXPIRETIME k
EXPIRETIME k
SET k v EXAT 1
GET k
SET k v PXAT 1
EXISTS k
SET k v px 100000 nx
SET k v
SET "" empty-key
GET ""
SET emptyval ""
GET emptyval
STRLEN emptyval
SET bin "a\x00b\r\nc"
GET bin
STRLEN bin

// ---------- SETNX / SETEX / PSETEX / GETSET / GETDEL / GETEX
SETNX
SETNX k
SETNX k v w
SETNX nx1 v
SETNX nx1 v2
GET nx1
SETEX
SETEX k 10
SETEX k 10 v w
SETEX k 0 v
SETEX k -10 v
SETEX k abc v
SETEX k 9223372036854775807 v
SETEX k 9223372036854775 v
SETEX k 100 v
~1 TTL k
GET k
PSETEX k 0 v
PSETEX k -1 v
PSETEX k abc v
PSETEX k 9223372036854775807 v
PSETEX k 100000 v
~1 TTL k
GETSET
GETSET k
GETSET k v w
GETSET k newv
TTL k
GETSET gsmissing v
GET gsmissing
GETDEL
GETDEL a b
GETDEL k
GETDEL k
EXISTS k
GETEX
GETEX missing
GETEX missing EX 10
GETEX missing FOO
GETEX missing EX 0
GETEX missing EX abc
GETEX missing PX 9223372036854775807
GETEX missing EX 10 EX
SET gx v
GETEX gx
TTL gx
GETEX gx EX 100
~1 TTL gx
GETEX gx PX 200000
~1 TTL gx
GETEX gx EXAT 4102444800
EXPIRETIME gx
GETEX gx PXAT 4102444800999
PEXPIRETIME gx
GETEX gx PERSIST
TTL gx
GETEX gx PERSIST PERSIST
GETEX gx EX 10 EX 20
~1 TTL gx
GETEX gx EX 10 PX 20
GETEX gx EX 10 PERSIST
GETEX gx PERSIST EX 10
GETEX gx KEEPTTL
GETEX gx NX
GETEX gx EX
GETEX gx EX 0
GETEX gx EX -1
GETEX gx PX 0
GETEX gx EXAT 0
GETEX gx EX abc
GETEX gx EX 9223372036854775807
GETEX gx PX 9223372036854775807
GETEX gx EX abc PERSIST
GETEX gx EX 1 EX abc
GETEX gx EXAT 1
EXISTS gx

// ---------- APPEND / STRLEN / GETRANGE / SUBSTR / SETRANGE
APPEND
APPEND k
APPEND k v w
APPEND ap hello
APPEND ap " world"
GET ap
APPEND ap ""
STRLEN
STRLEN a b
STRLEN ap
STRLEN missing
SET apttl v EX 100
APPEND apttl w
~1 TTL apttl
GETRANGE
GETRANGE k 0
GETRANGE k 0 1 2
GETRANGE missing 0 -1
GETRANGE missing 5 2
GETRANGE ap 0 -1
GETRANGE ap 0 4
GETRANGE ap -5 -1
GETRANGE ap -1 -5
GETRANGE ap -100 -1
GETRANGE ap 0 -100
GETRANGE ap -100 -100
GETRANGE ap 5 2
GETRANGE ap 100 200
GETRANGE ap 3 100
GETRANGE ap 0 0
GETRANGE ap -1 -1
GETRANGE ap 10 10
GETRANGE ap 11 11
GETRANGE ap -9223372036854775808 9223372036854775807
GETRANGE ap 9223372036854775807 -9223372036854775808
GETRANGE ap a 1
GETRANGE ap 0 b
GETRANGE ap 01 2
GETRANGE ap 0 99999999999999999999
GETRANGE emptyval 0 -1
GETRANGE emptyval -1 0
SUBSTR ap 0 4
SUBSTR ap -3 -1
SUBSTR
SETNX intval 12345
GETRANGE intval 1 2
GETRANGE intval -2 -1
SETRANGE
SETRANGE k 0
SETRANGE k 0 v w
SETRANGE sr -1 x
SETRANGE sr abc x
SETRANGE sr 1.5 x
SETRANGE sr 5 hello
GET sr
STRLEN sr
SETRANGE sr 0 HE
GET sr
SETRANGE sr 8 "xyz!!"
GET sr
SETRANGE sr 2 ""
SETRANGE srmissing 10 ""
EXISTS srmissing
SETRANGE srmissing 0 ""
EXISTS srmissing
SETRANGE sr 536870912 x
SETRANGE sr 9223372036854775807 x
SETRANGE srmissing 536870912 x
SETRANGE srmissing 536870912 ""
SETRANGE intval 1 9
GET intval
SET srttl v EX 100
SETRANGE srttl 3 x
~1 TTL srttl
GET srttl

// ---------- INCR family
INCR
INCR a b
DECR
INCRBY
INCRBY k
INCRBY k 1 2
DECRBY k
INCRBYFLOAT
INCRBYFLOAT k
INCR ctr
INCR ctr
DECR ctr
INCRBY ctr 10
INCRBY ctr -20
DECRBY ctr 5
DECRBY ctr -5
GET ctr
INCRBY ctr abc
INCRBY ctr 1.5
INCRBY ctr " 1"
INCRBY ctr "1 "
INCRBY ctr 01
INCRBY ctr +1
INCRBY ctr -0
INCRBY ctr 0
INCRBY ctr ""
INCRBY ctr 9223372036854775808
INCRBY ctr -9223372036854775809
DECRBY ctr -9223372036854775808
DECRBY ctr 9223372036854775808
DECRBY newctr 9223372036854775807
DECR newctr
DECR newctr
GET newctr
INCRBY newctr -1
SET iv " 1"
INCR iv
SET iv "1 "
INCR iv
SET iv 01
INCR iv
SET iv +1
INCR iv
SET iv -0
INCR iv
SET iv 00
INCR iv
SET iv ""
INCR iv
SET iv abc
INCR iv
DECR iv
INCRBY iv 1
SET iv 1.0
INCR iv
SET iv 9223372036854775807
INCR iv
INCRBY iv 0
INCRBY iv -1
DECR iv
SET iv -9223372036854775808
DECR iv
INCRBY iv -1
INCR iv
SET iv 9223372036854775808
INCR iv
SET iv 123456789012345678901234567890
INCR iv
SET iv 007
INCRBY iv 1
SET ittl 5 EX 100
INCR ittl
~1 TTL ittl
INCRBYFLOAT ittl 1.5
~1 TTL ittl
GET ittl
SET f 10.5
INCRBYFLOAT f 0.1
INCRBYFLOAT f -5
GET f
SET f 5.0e3
INCRBYFLOAT f 2.0e2
GET f
INCRBYFLOAT fnew 3.0
INCRBYFLOAT fnew -3
GET fnew
INCRBYFLOAT fz -0
INCRBYFLOAT fz -0.0
SET fz -0
INCRBYFLOAT fz 0
SET fz -0.0
INCRBYFLOAT fz 0
INCRBYFLOAT fz 1e2
INCRBYFLOAT fz 1.5e-3
INCRBYFLOAT fz .5
INCRBYFLOAT fz 5.
INCRBYFLOAT fz +1
INCRBYFLOAT fz -1.25
INCRBYFLOAT fz 100
INCRBYFLOAT fi 1
INCRBYFLOAT fi 2
INCRBYFLOAT fi 0.5
INCRBYFLOAT fs 0.1
INCRBYFLOAT fs 0.2
INCRBYFLOAT fs 1.1
INCRBYFLOAT fs 2.2
INCRBYFLOAT fs -3.6
INCRBYFLOAT fs 3.14159
INCRBYFLOAT fs 123.456
INCRBYFLOAT fs 0.001
SET fl 1000.1
INCRBYFLOAT fl 0.2
SET fl 1e10
INCRBYFLOAT fl 0.1
INCRBYFLOAT fl -1e10
INCRBYFLOAT fl 1e300
INCRBYFLOAT fl -1e300
INCRBYFLOAT fl 1e-17
INCRBYFLOAT fl 5e-18
INCRBYFLOAT fl 0x10
INCRBYFLOAT fl 0x1.8p1
INCRBYFLOAT fl -123456789.987654321
INCRBYFLOAT fl 1e4000
INCRBYFLOAT fl 1e4932
INCRBYFLOAT fl 1.2e4932
INCRBYFLOAT fl 1e-4000
INCRBYFLOAT fl 3.4e-4950
INCRBYFLOAT fl 12345678901234567890.123456789
INCRBYFLOAT fl 0.000000000000000000000000000001
INCRBYFLOAT fl 00001.5000
INCRBYFLOAT fl 9223372036854775807
INCRBYFLOAT fl 18446744073709551616
INCRBYFLOAT fl 2.5
GET fl
INCRBYFLOAT f abc
INCRBYFLOAT f ""
INCRBYFLOAT f " 1"
INCRBYFLOAT f "1 "
INCRBYFLOAT f nan
INCRBYFLOAT f inf
INCRBYFLOAT f -inf
INCRBYFLOAT f infinity
INCRBYFLOAT f 1e
INCRBYFLOAT f e5
INCRBYFLOAT f 1e5000
GET f
SET f abc
INCRBYFLOAT f 1
SET f "1 "
INCRBYFLOAT f 1
SET f inf
INCRBYFLOAT f 1
SET f 3.0
INCRBYFLOAT f 0
GET f
SET f 1e3
INCRBYFLOAT f 0
GET f
SET f 100
INCRBYFLOAT f 0.5
INCR f

// ---------- MGET / MSET / MSETNX
MGET
MGET k
MGET k missing ap ctr
MGET missing missing
MSET
MSET a
MSET a 1 b
MSET a 1 b 2 c
MSET a 1 b 2 c 3
MGET a b c d
MSET a 10 a 11
GET a
MSET e1 v EX 10
MGET e1 EX
MSETNX
MSETNX a
MSETNX a 1 b
MSETNX nx-a 1 nx-b 2
MGET nx-a nx-b
MSETNX nx-a 1 nx-c 3
MGET nx-a nx-c
MSETNX nx-d 1 nx-d 2
GET nx-d
SET mttl v EX 100
MSET mttl w
TTL mttl

// ---------- DEL / UNLINK / EXISTS / TYPE
DEL
EXISTS
UNLINK
TYPE
TYPE a b
MSET d1 1 d2 2 d3 3
EXISTS d1
EXISTS d1 d1 d1
EXISTS d1 d2 d3 nope
EXISTS nope
DEL d1 d1
DEL d2 d3 nope
DEL nope
EXISTS d1 d2 d3
MSET u1 1 u2 2
UNLINK u1 u2 u3
TYPE ap
TYPE nope
TYPE intval

// ---------- RENAME / RENAMENX
RENAME
RENAME a
RENAME a b c
RENAMENX
RENAMENX a b c
RENAME nope other
RENAMENX nope other
RENAME nope nope
RENAMENX nope nope
SET r1 v1
RENAME r1 r1
RENAMENX r1 r1
GET r1
RENAME r1 r2
EXISTS r1
GET r2
SET r3 v3 EX 100
RENAME r3 r2
~1 TTL r2
GET r2
SET r4 v4
RENAMENX r2 r4
RENAMENX r2 r5
~1 TTL r5
EXISTS r2
SET r6 v6 EX 100
RENAME r4 r6
TTL r6
GET r6

// ---------- KEYS / RANDOMKEY / SCAN
FLUSHDB
KEYS
KEYS a b
KEYS *
RANDOMKEY
RANDOMKEY x
SET only one
RANDOMKEY
KEYS *
MSET user:1 a user:2 b user:10 c usr:3 d user:x e "user:*" f "h[a]llo" g hello h hallo i hxllo j
#sort KEYS *
#sort KEYS user:*
#sort KEYS user:?
#sort KEYS user:[0-9]*
#sort KEYS user:[^0-9]
#sort KEYS user:\*
#sort KEYS h?llo
#sort KEYS h[ae]llo
#sort KEYS h[^e]llo
#sort KEYS h[a-e]llo
#sort KEYS h\[a\]llo
#sort KEYS *llo
#sort KEYS nomatch*
#sort KEYS ""
#sort KEYS [
#sort KEYS user:[1
SET aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa 1
#sort KEYS "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b"
#sort KEYS "a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*"
#sort KEYS *a*a*
#sort KEYS "*a*?"
#sort KEYS "h*l*o"
#sort KEYS "**llo"
DEL aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
#skip RANDOMKEY
SCAN
SCAN abc
SCAN " 1"
SCAN "1 "
SCAN 1.5
SCAN 99999999999999999999999
SCAN 0 COUNT 0
#scan SCAN ""
#scan SCAN +0
SCAN -
SCAN 0x10
SCAN 0 COUNT -1
SCAN 0 COUNT abc
SCAN 0 COUNT
SCAN 0 MATCH
SCAN 0 FOO bar
SCAN 0 COUNT 10 FOO
#scan SCAN 0
#scan SCAN 0 COUNT 1
#scan SCAN 0 COUNT 3 MATCH user:*
#scan SCAN 0 MATCH h*llo
#scan SCAN 0 MATCH nothing*
#scan SCAN 0 TYPE string
#scan SCAN 0 TYPE list
#scan SCAN 0 type STRING
#scan SCAN 0 MATCH a MATCH user:1
#scan SCAN 0 COUNT 1000

// ---------- EXPIRE family, TTL, PERSIST
FLUSHDB
EXPIRE
EXPIRE k
PEXPIRE k
EXPIREAT k
PEXPIREAT k
TTL
TTL a b
PTTL
PTTL a b
EXPIRETIME
PEXPIRETIME a b
PERSIST
PERSIST a b
TTL nope
PTTL nope
EXPIRETIME nope
PEXPIRETIME nope
PERSIST nope
EXPIRE nope 10
PEXPIRE nope 10
EXPIREAT nope 10
PEXPIREAT nope 10
SET ek v
TTL ek
PTTL ek
EXPIRETIME ek
PEXPIRETIME ek
PERSIST ek
EXPIRE ek abc
EXPIRE ek 1.5
EXPIRE ek ""
EXPIRE ek 010
EXPIRE ek " 10"
EXPIRE ek 10 FOO
EXPIRE ek abc FOO
EXPIRE ek abc NX XX
EXPIRE ek 10 NX XX
EXPIRE ek 10 XX NX
EXPIRE ek 10 NX GT
EXPIRE ek 10 LT NX
EXPIRE ek 10 GT LT
EXPIRE ek 10 LT GT
EXPIRE ek 10 NX XX FOO
EXPIRE ek 10 GT LT NX
EXPIRE ek 10 nx nx
EXPIRE ek 9223372036854775807
EXPIRE ek 9223372036854775
EXPIRE ek -9223372036854775808
EXPIRE ek 99999999999999999999
PEXPIRE ek 9223372036854775807
EXPIREAT ek 9223372036854775807
PEXPIREAT ek 9223372036854775807
EXISTS ek
~1 TTL ek
EXPIRE ek 100 XX
// Not "100 GT": equal relative times compare by the millisecond clock, so it would be racy.
EXPIRE ek 99 GT
~1 TTL ek
EXPIRE ek 100 LT
~1 TTL ek
EXPIRE ek 50 NX
EXPIRE ek 200 NX
~1 TTL ek
EXPIRE ek 300 GT
~1 TTL ek
EXPIRE ek 100 GT
EXPIRE ek 400 LT
EXPIRE ek 100 LT
~1 TTL ek
EXPIRE ek 200 XX GT
~1 TTL ek
EXPIRE ek 100 XX GT
EXPIRE ek 50 XX LT
~1 TTL ek
EXPIRE ek 100 XX LT GT
EXPIRE ek 100 gt gt
~1 TTL ek
EXPIRE ek 100 XX XX
~1 TTL ek
PERSIST ek
PERSIST ek
TTL ek
EXPIRE ek 100 XX
EXPIRE ek 100 XX GT
EXPIRE ek 100 XX LT
TTL ek
PEXPIRE ek 100000
~1 TTL ek
~50 PTTL ek
PEXPIRE ek 200000 GT
~50 PTTL ek
EXPIREAT ek 4102444800
EXPIRETIME ek
PEXPIRETIME ek
EXPIREAT ek 4102444801 LT
EXPIREAT ek 4102444799 LT
EXPIRETIME ek
EXPIREAT ek 4102444800 GT
EXPIREAT ek 4102444800 LT
PEXPIREAT ek 4102444800500
PEXPIRETIME ek
EXPIRETIME ek
PEXPIREAT ek 4102444800500 NX
PEXPIREAT ek 4102444800501 XX
PEXPIRETIME ek
PERSIST ek
EXPIRE ek -1 GT
EXISTS ek
EXPIRE ek -1 LT
EXISTS ek
SET ek v
EXPIRE ek 0
EXISTS ek
SET ek v
EXPIRE ek -10
EXISTS ek
SET ek v
PEXPIRE ek -1
EXISTS ek
SET ek v
EXPIREAT ek 1
EXISTS ek
SET ek v
PEXPIREAT ek 0
EXISTS ek
SET ek v
EXPIREAT ek -9223372036854775
EXISTS ek
SET ek v
PEXPIREAT ek -9223372036854775808
EXISTS ek
SET ek v EX 100
EXPIRE ek -1 NX
EXISTS ek
EXPIRE ek -1 XX
EXISTS ek
SET ek v EX 100
EXPIRE ek 0 LT
EXISTS ek
SET ek v EX 100
EXPIRE ek 0 GT
EXISTS ek
SET ek v
GETEX ek EX 100
EXPIRE ek 100 NX
GETEX ek PERSIST
EXPIRE ek 100 NX
~1 TTL ek

// ---------- QUIT
QUIT extra-args-are-ignored
"#;

/// More cases, in the same format: SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD,
/// BITFIELD_RO, LCS, COPY, TOUCH, OBJECT.
const BIT_CASES: &str = include_str!("redis_diff/bits.cases");

/// `n` random bit-command lines (SET, SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP, BITFIELD,
/// BITFIELD_RO, LCS, GET) over four keys, from a fixed seed (xorshift64), so a mismatch
/// replays: ranges, widths, offsets and values crowd around the edges where the arithmetic
/// is easy to get wrong.
fn random_bit_cases(seed: u64, n: usize) -> Vec<String> {
    let mut x = seed;
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m.max(1)
    };
    let key = |r: u64| format!("br{r}");
    let signed = |r: u64| r as i64 - 60;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let k = key(next(4));
        let line = match next(10) {
            0 => {
                let bytes: String = (0..next(12))
                    .map(|_| format!("\\x{:02x}", [0, 0xff, next(256) as u8][next(3) as usize]))
                    .collect();
                format!("SET {k} \"{bytes}\"")
            }
            1 => format!("SETBIT {k} {} {}", next(120), next(2)),
            2 => format!("GETBIT {k} {}", next(130)),
            3 => match next(3) {
                0 => format!("BITCOUNT {k}"),
                1 => format!(
                    "BITCOUNT {k} {} {}",
                    signed(next(120)) / 6,
                    signed(next(120)) / 6
                ),
                _ => format!(
                    "BITCOUNT {k} {} {} {}",
                    signed(next(120)),
                    signed(next(120)),
                    ["BIT", "BYTE"][next(2) as usize]
                ),
            },
            4 => {
                let (b, s, e) = (next(2), signed(next(120)), signed(next(120)));
                match next(4) {
                    0 => format!("BITPOS {k} {b}"),
                    1 => format!("BITPOS {k} {b} {}", s / 6),
                    2 => format!("BITPOS {k} {b} {} {}", s / 6, e / 6),
                    _ => format!(
                        "BITPOS {k} {b} {s} {e} {}",
                        ["BIT", "BYTE"][next(2) as usize]
                    ),
                }
            }
            5 => {
                let op = ["AND", "OR", "XOR", "NOT"][next(4) as usize];
                let srcs = if op == "NOT" { 1 } else { 1 + next(3) };
                let srcs: Vec<String> = (0..srcs).map(|_| key(next(4))).collect();
                format!("BITOP {op} {} {}", key(next(4)), srcs.join(" "))
            }
            6 | 7 => {
                let ro = next(4) == 0;
                let mut l = format!("{} {k}", if ro { "BITFIELD_RO" } else { "BITFIELD" });
                for _ in 0..1 + next(3) {
                    let sign = next(2) == 0;
                    let bits = 1 + next(if sign { 64 } else { 63 });
                    let t = format!("{}{bits}", if sign { "i" } else { "u" });
                    let off = if next(3) == 0 {
                        format!("#{}", next(4))
                    } else {
                        next(100).to_string()
                    };
                    let v = match next(6) {
                        0 => i64::MAX,
                        1 => i64::MIN,
                        2 => next(u64::MAX) as i64,
                        3 => -(next(300) as i64),
                        _ => next(300) as i64,
                    };
                    match if ro { 0 } else { next(4) } {
                        0 => l.push_str(&format!(" GET {t} {off}")),
                        1 => l.push_str(&format!(" SET {t} {off} {v}")),
                        2 => l.push_str(&format!(" INCRBY {t} {off} {v}")),
                        _ => l.push_str(&format!(
                            " OVERFLOW {}",
                            ["WRAP", "SAT", "FAIL"][next(3) as usize]
                        )),
                    }
                }
                l
            }
            8 => {
                let opt = [
                    "",
                    " LEN",
                    " IDX",
                    " IDX WITHMATCHLEN",
                    " IDX MINMATCHLEN 2 WITHMATCHLEN",
                ];
                format!("LCS {k} {}{}", key(next(4)), opt[next(5) as usize])
            }
            _ => format!("GET {k}"),
        };
        out.push(line);
    }
    out
}

/// The comparison mode of one case line.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Exact,
    Tolerance(i64),
    Sorted,
    Scan,
    Shape,
    Skip,
}

fn parse_case(line: &str) -> (Mode, &str) {
    if let Some(rest) = line.strip_prefix('~') {
        let (n, cmd) = rest.split_once(' ').expect("~N command");
        return (Mode::Tolerance(n.parse().expect("tolerance")), cmd);
    }
    for (tag, mode) in [
        ("#sort ", Mode::Sorted),
        ("#scan ", Mode::Scan),
        ("#shape ", Mode::Shape),
        ("#skip ", Mode::Skip),
    ] {
        if let Some(cmd) = line.strip_prefix(tag) {
            return (mode, cmd);
        }
    }
    (Mode::Exact, line)
}

fn sorted(r: Reply) -> Reply {
    match r {
        Reply::Array(Some(mut items)) => {
            items.sort_by_key(Reply::show);
            Reply::Array(Some(items))
        }
        other => other,
    }
}

/// Iterates SCAN from the given cursor until cursor 0 (bounded); returns the set of keys, or
/// the first reply if it was not a well-formed SCAN page.
fn scan_all(c: &mut Conn, args: &[Vec<u8>]) -> Result<BTreeSet<Vec<u8>>, Reply> {
    let mut args = args.to_vec();
    let mut keys = BTreeSet::new();
    for _ in 0..100_000 {
        let r = call(c, &args).expect("scan");
        let Reply::Array(Some(page)) = &r else {
            return Err(r);
        };
        let [Reply::Bulk(Some(cursor)), Reply::Array(Some(batch))] = page.as_slice() else {
            return Err(r);
        };
        for k in batch {
            match k {
                Reply::Bulk(Some(k)) => {
                    keys.insert(k.clone());
                }
                _ => return Err(r.clone()),
            }
        }
        if cursor == b"0" {
            return Ok(keys);
        }
        args[1] = cursor.clone();
    }
    panic!("SCAN did not return to cursor 0");
}

fn compare(mode: Mode, want: &Reply, got: &Reply) -> bool {
    match mode {
        Mode::Exact | Mode::Sorted | Mode::Scan => want == got,
        Mode::Tolerance(n) => match (want, got) {
            (Reply::Int(a), Reply::Int(b)) => (a - b).abs() <= n,
            _ => want == got,
        },
        Mode::Shape => match (want, got) {
            (Reply::Error(a), Reply::Error(b)) => a == b,
            _ => want.kind() == got.kind(),
        },
        Mode::Skip => true,
    }
}

/// Arity cases generated from ringkv's own command table: for each command one call with too
/// few arguments and (for fixed arities) one with too many. These must match Redis's error.
fn arity_cases() -> Vec<String> {
    let specs: &[(&str, i32)] = &[
        ("get", 2),
        ("set", -3),
        ("del", -2),
        ("mget", -2),
        ("mset", -3),
        ("incr", 2),
        ("exists", -2),
        ("expire", -3),
        ("ttl", 2),
        ("pttl", 2),
        ("decr", 2),
        ("incrby", 3),
        ("decrby", 3),
        ("incrbyfloat", 3),
        ("setnx", 3),
        ("setex", 4),
        ("psetex", 4),
        ("getset", 3),
        ("getdel", 2),
        ("getex", -2),
        ("append", 3),
        ("strlen", 2),
        ("getrange", 4),
        ("substr", 4),
        ("setrange", 4),
        ("msetnx", -3),
        ("unlink", -2),
        ("type", 2),
        ("rename", 3),
        ("renamenx", 3),
        ("keys", 2),
        ("randomkey", 1),
        ("scan", -2),
        ("pexpire", -3),
        ("expireat", -3),
        ("pexpireat", -3),
        ("expiretime", 2),
        ("pexpiretime", 2),
        ("persist", 2),
        ("dbsize", 1),
        ("echo", 2),
        ("auth", -2),
        ("select", 2),
        ("client", -2),
        ("config", -2),
        ("time", 1),
        ("setbit", 4),
        ("getbit", 3),
        ("bitcount", -2),
        ("bitpos", -3),
        ("bitop", -4),
        ("bitfield", -2),
        ("bitfield_ro", -2),
        ("lcs", -3),
        ("copy", -3),
        ("touch", -2),
        ("object", -2),
    ];
    let mut out = Vec::new();
    for &(name, arity) in specs {
        let n = arity.unsigned_abs() as usize;
        // Too few (name counts as one argument).
        if n >= 2 {
            let mut line = name.to_uppercase();
            for i in 1..n - 1 {
                line.push_str(&format!(" a{i}"));
            }
            out.push(line);
        }
        if arity > 0 {
            let mut line = name.to_string();
            for i in 1..=n {
                line.push_str(&format!(" a{i}"));
            }
            out.push(line);
        }
    }
    out
}

/// Every case line, in order: the arity cases, CASES, the bit cases (fixed and random), QUIT.
fn all_lines() -> Vec<String> {
    let mut lines: Vec<String> = arity_cases();
    let case_lines = |text: &'static str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .map(String::from)
    };
    lines.extend(case_lines(CASES));
    // The bit, LCS, COPY, TOUCH and OBJECT cases go before the last case (QUIT).
    let quit = lines.pop().expect("CASES ends with QUIT");
    assert!(
        quit.starts_with("QUIT"),
        "the last case is QUIT, not {quit:?}"
    );
    lines.extend(case_lines(BIT_CASES));
    lines.extend(random_bit_cases(0x5eed_b175, 3000));
    lines.push(quit);
    lines
}

/// One mismatch: the case, and both replies.
struct Mismatch {
    cmd: String,
    redis: String,
    ringkv: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\n    redis:  {}\n    ringkv: {}",
            self.cmd, self.redis, self.ringkv
        )
    }
}

/// Runs every case on both servers (each through one connection, then a fresh one); the
/// number compared and the mismatches.
fn run_cases(redis: SocketAddr, ringkv: SocketAddr) -> (usize, Vec<Mismatch>) {
    let mut want = Conn::try_connect(redis).expect("connect redis-server");
    let mut got = Conn::try_connect(ringkv).expect("connect ringkv");
    let mut mismatches = Vec::new();
    let mut compared = 0;
    let mut differ = |cmd: &str, redis: String, ringkv: String| {
        mismatches.push(Mismatch {
            cmd: cmd.to_string(),
            redis,
            ringkv,
        })
    };
    for line in &all_lines() {
        let (mode, cmd) = parse_case(line);
        let args = tokenize(cmd);
        let (w, g) = match mode {
            Mode::Scan => {
                let w = scan_all(&mut want, &args);
                let g = scan_all(&mut got, &args);
                let show = |r: &Result<BTreeSet<Vec<u8>>, Reply>| match r {
                    Ok(keys) => {
                        let v: Vec<String> = keys
                            .iter()
                            .map(|k| String::from_utf8_lossy(k).into_owned())
                            .collect();
                        format!("keys {v:?}")
                    }
                    Err(r) => r.show(),
                };
                if w != g {
                    differ(cmd, show(&w), show(&g));
                }
                compared += 1;
                continue;
            }
            Mode::Sorted => (
                sorted(call(&mut want, &args).expect(cmd)),
                sorted(call(&mut got, &args).expect(cmd)),
            ),
            _ => (
                call(&mut want, &args).expect(cmd),
                call(&mut got, &args).expect(cmd),
            ),
        };
        compared += 1;
        if !compare(mode, &w, &g) {
            differ(cmd, w.show(), g.show());
        }
    }

    // QUIT (the last case) closes both connections.
    assert!(want.closed(), "redis-server kept the connection after QUIT");
    assert!(got.closed(), "ringkv kept the connection after QUIT");

    // A fresh connection still works and sees the same data.
    let mut want = Conn::try_connect(redis).unwrap();
    let mut got = Conn::try_connect(ringkv).unwrap();
    for cmd in ["DBSIZE", "GET ek", "QUIT"] {
        let (w, g) = (cmd_line(&mut want, cmd), cmd_line(&mut got, cmd));
        compared += 1;
        if w != g {
            differ(cmd, w.show(), g.show());
        }
    }
    (compared, mismatches)
}

fn redis_server() -> PathBuf {
    find_on_path("redis-server").unwrap_or_else(|| {
        panic!(
            "redis-server is not on PATH: this test compares ringkv with a real Redis reply by \
             reply. Install it (Debian/Ubuntu: `sudo apt-get install redis-server`; macOS: \
             `brew install redis`) or run `.ci/run`, which installs it."
        )
    })
}

/// Prints and asserts that every mismatch is one `allowed` accepts (a documented cluster
/// difference, or none at all).
fn assert_matches(
    what: &str,
    compared: usize,
    mismatches: &[Mismatch],
    allowed: fn(&Mismatch) -> bool,
) {
    let wrong: Vec<String> = mismatches
        .iter()
        .filter(|m| !allowed(m))
        .map(|m| m.to_string())
        .collect();
    println!(
        "{what}: {compared} commands compared, {} differ, {} of them documented",
        mismatches.len(),
        mismatches.len() - wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{what}: {} of {compared} replies differ from redis-server without a documented \
         reason:\n  {}",
        wrong.len(),
        wrong.join("\n  ")
    );
}

fn none(_: &Mismatch) -> bool {
    false
}

#[test]
fn replies_match_redis_server() {
    let redis = RedisServer::start(&redis_server());
    let ringkv = Server::start(&["--threads", "2"]);
    let (compared, mismatches) = run_cases(redis.addr, ringkv.addr);
    assert_matches("a single node", compared, &mismatches, none);
}

/// The same cases against one node of a 3-node cluster (N=3 W=2 R=2): every command answers,
/// and replies match Redis except where protocol.md §7 documents a cluster difference (each
/// listed in [`CLUSTER_DIFFERENCES`] with the reply ringkv gives).
#[test]
fn a_cluster_node_replies_as_redis_except_where_documented() {
    let redis = RedisServer::start(&redis_server());
    let c = common::cluster::Cluster::start(3, &["--threads", "2"]);
    c.wait_converged();
    let (compared, mismatches) = run_cases(redis.addr, c.node(0).addr);
    assert_matches(
        "a cluster node",
        compared,
        &mismatches,
        documented_difference,
    );
}

/// Cluster differences protocol.md §7 documents: (command name, what ringkv's reply says).
/// Anything else that differs fails the test.
const CLUSTER_DIFFERENCES: &[(&str, &str)] = &[];

fn documented_difference(m: &Mismatch) -> bool {
    let name = m.cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
    CLUSTER_DIFFERENCES
        .iter()
        .any(|(c, reply)| *c == name && m.ringkv.contains(reply))
}

/// A Python interpreter that has redis-py (`.ci/run` installs it: Debian's python3-redis, else
/// pip); the test fails without one.
fn python_with_redis_py() -> String {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import redis"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return py.to_string();
        }
    }
    panic!(
        "no python3 with redis-py: this test runs the case list through a real Python Redis \
         client. Install it (Debian/Ubuntu: `sudo apt-get install python3-redis`, or \
         `python3 -m pip install redis`) or run `.ci/run`, which installs it."
    )
}

/// The case list through redis-py (tests/py/redis_py_diff.py) against redis-server and
/// `ringkv`: the differences it prints.
fn run_cases_with_redis_py(redis: SocketAddr, ringkv: SocketAddr) -> (usize, Vec<Mismatch>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("cases");
    let mut text = String::new();
    for line in all_lines() {
        let (mode, cmd) = parse_case(&line);
        let mode = match mode {
            Mode::Exact => "exact".to_string(),
            Mode::Tolerance(n) => format!("approx:{n}"),
            Mode::Sorted => "sorted".into(),
            Mode::Scan => "scan".into(),
            Mode::Shape => "shape".into(),
            Mode::Skip => "skip".into(),
        };
        let args: Vec<String> = tokenize(cmd)
            .iter()
            .map(|a| match a.is_empty() {
                true => "-".to_string(), // an empty argument
                false => a.iter().map(|b| format!("{b:02x}")).collect(),
            })
            .collect();
        text.push_str(&format!("{mode} {}\n", args.join(" ")));
    }
    std::fs::write(&file, text).expect("write cases");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/redis_py_diff.py");
    let mut cmd = Command::new(python_with_redis_py());
    cmd.arg(script)
        .arg(&file)
        .arg(redis.port().to_string())
        .arg(ringkv.port().to_string());
    let ran = common::run_bounded(&mut cmd, Duration::from_secs(300));
    assert!(
        ran.status.success(),
        "redis_py_diff.py failed:\n{}",
        ran.stderr
    );
    let mut compared = 0;
    let mut mismatches = Vec::new();
    for line in ran.stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        if let Some(n) = v.get("compared").and_then(|n| n.as_u64()) {
            compared = n as usize;
            continue;
        }
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        mismatches.push(Mismatch {
            cmd: field("cmd"),
            redis: field("redis"),
            ringkv: field("ringkv"),
        });
    }
    assert!(compared > 4000, "redis-py ran {compared} cases");
    (compared, mismatches)
}

#[test]
fn redis_py_sees_the_same_replies_from_ringkv_and_a_cluster_node() {
    let redis = RedisServer::start(&redis_server());
    let single = Server::start(&["--threads", "2"]);
    let (compared, mismatches) = run_cases_with_redis_py(redis.addr, single.addr);
    assert_matches("redis-py, a single node", compared, &mismatches, none);
    drop(single);
    let redis = RedisServer::start(&redis_server());
    let c = common::cluster::Cluster::start(3, &["--threads", "2"]);
    c.wait_converged();
    let (compared, mismatches) = run_cases_with_redis_py(redis.addr, c.node(0).addr);
    assert_matches(
        "redis-py, a cluster node",
        compared,
        &mismatches,
        documented_difference,
    );
}
