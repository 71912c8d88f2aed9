//! RESP compatibility through a real Redis client library (the `redis` crate), against a real
//! ringkv server with two event loops, so that keys live on different loops and multi-key
//! commands must stay atomic and correct across them; and the same suite against one node of
//! a 3-node cluster (module `cluster`), where a command's reply may differ only as protocol.md
//! §7 documents (the tests that check such a difference say so).

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Server;
use redis::{Connection, FromRedisValue, RedisError, Value};

const FAR: i64 = 4_102_444_800; // 2100-01-01, in seconds

/// What a test runs against: one server, or node 0 of a 3-node cluster (N=3 W=2 R=2).
enum Target {
    Single(Server),
    Cluster(common::cluster::Cluster),
}

impl Target {
    fn single() -> Target {
        Target::Single(Server::start(&["--threads", "2"]))
    }

    fn cluster() -> Target {
        let c = common::cluster::Cluster::start(3, &["--threads", "2"]);
        c.wait_converged();
        Target::Cluster(c)
    }

    fn redis_url(&self) -> String {
        match self {
            Target::Single(s) => s.redis_url(),
            Target::Cluster(c) => c.node(0).redis_url(),
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }
}

/// Each test body, run against a single server and against a cluster node.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod single {
            $(#[test] fn $name() { super::$name(super::Target::single()) })*
        }
        mod cluster {
            $(#[test] fn $name() { super::$name(super::Target::cluster()) })*
        }
    };
}

on_both!(
    set_get_del_and_set_options,
    set_relatives_and_string_commands,
    counters,
    key_commands,
    scan_returns_every_key,
    expire_family,
    lazy_expiry,
    active_expiry_without_touching_keys,
    connection_and_server_commands,
    pipeline_of_a_thousand_commands,
    multi_key_commands_are_atomic_across_loops,
    async_client,
);

fn conn(server: &Target) -> Connection {
    let client = redis::Client::open(server.redis_url()).expect("client");
    let con = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("connect");
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    con
}

fn cmd(args: &[&str]) -> redis::Cmd {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c
}

/// Runs a command and converts its reply; panics (naming the command) on an error reply.
fn q<T: FromRedisValue>(con: &mut Connection, args: &[&str]) -> T {
    cmd(args)
        .query(con)
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Runs a command that must fail; returns the full error text ("ERR ...", "NOPROTO ...").
fn err(con: &mut Connection, args: &[&str]) -> String {
    match cmd(args).query::<Value>(con) {
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
        Err(e) => text(&e),
    }
}

fn text(e: &RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Polls `cond` until it holds or `limit` passes; true if it held.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

const NOT_INT: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

fn set_get_del_and_set_options(server: Target) {
    let mut c = conn(&server);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v");
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "missing"]), None);
    assert_eq!(q::<i64>(&mut c, &["DEL", "k", "k", "missing"]), 1);
    assert_eq!(q::<Option<String>>(&mut c, &["GET", "k"]), None);

    // NX / XX
    assert_eq!(q::<Option<String>>(&mut c, &["SET", "k", "1", "XX"]), None);
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "1", "NX"]).as_deref(),
        Some("OK")
    );
    assert_eq!(q::<Option<String>>(&mut c, &["SET", "k", "2", "NX"]), None);
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "3", "XX"]).as_deref(),
        Some("OK")
    );
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "3");
    assert_eq!(err(&mut c, &["SET", "k", "v", "NX", "XX"]), SYNTAX);
    // GET
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "4", "GET"]).as_deref(),
        Some("3")
    );
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "new", "x", "GET"]),
        None
    );
    assert_eq!(q::<String>(&mut c, &["GET", "new"]), "x");
    // GET + NX: old value back, no write when the key exists.
    assert_eq!(
        q::<Option<String>>(&mut c, &["SET", "k", "5", "NX", "GET"]).as_deref(),
        Some("4")
    );
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "4");
    // EX / PX / EXAT / PXAT
    let _: () = q(&mut c, &["SET", "k", "v", "EX", "100"]);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    let _: () = q(&mut c, &["SET", "k", "v", "PX", "100000"]);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((90_000..=100_000).contains(&pttl), "{pttl}");
    let far = FAR.to_string();
    let _: () = q(&mut c, &["SET", "k", "v", "EXAT", &far]);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), FAR);
    let far_ms = (FAR * 1000 + 250).to_string();
    let _: () = q(&mut c, &["SET", "k", "v", "PXAT", &far_ms]);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), FAR * 1000 + 250);
    // KEEPTTL keeps it, a plain SET drops it.
    let _: () = q(&mut c, &["SET", "k", "v2", "KEEPTTL"]);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), FAR * 1000 + 250);
    assert_eq!(q::<String>(&mut c, &["GET", "k"]), "v2");
    let _: () = q(&mut c, &["SET", "k", "v3"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(
        err(&mut c, &["SET", "k", "v", "EX", "10", "KEEPTTL"]),
        SYNTAX
    );
    assert_eq!(
        err(&mut c, &["SET", "k", "v", "EX", "10", "PX", "10"]),
        SYNTAX
    );
    assert_eq!(
        err(&mut c, &["SET", "k", "v", "EX", "0"]),
        "ERR invalid expire time in 'set' command"
    );
    assert_eq!(err(&mut c, &["SET", "k", "v", "EX", "abc"]), NOT_INT);
    assert_eq!(
        err(&mut c, &["SET", "k"]),
        "ERR wrong number of arguments for 'set' command"
    );
}

fn set_relatives_and_string_commands(server: Target) {
    let mut c = conn(&server);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "a", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["SETNX", "a", "2"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "a"]), "1");

    let _: () = q(&mut c, &["SETEX", "e", "100", "v"]);
    assert!((99..=100).contains(&q::<i64>(&mut c, &["TTL", "e"])));
    assert_eq!(
        err(&mut c, &["SETEX", "e", "0", "v"]),
        "ERR invalid expire time in 'setex' command"
    );
    let _: () = q(&mut c, &["PSETEX", "p", "100000", "v"]);
    assert!((90_000..=100_000).contains(&q::<i64>(&mut c, &["PTTL", "p"])));
    assert_eq!(
        err(&mut c, &["PSETEX", "p", "-1", "v"]),
        "ERR invalid expire time in 'psetex' command"
    );

    // GETSET returns the old value and drops the TTL.
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETSET", "e", "w"]).as_deref(),
        Some("v")
    );
    assert_eq!(q::<i64>(&mut c, &["TTL", "e"]), -1);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETSET", "gs-new", "w"]),
        None
    );

    assert_eq!(
        q::<Option<String>>(&mut c, &["GETDEL", "e"]).as_deref(),
        Some("w")
    );
    assert_eq!(q::<Option<String>>(&mut c, &["GETDEL", "e"]), None);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "e"]), 0);

    let _: () = q(&mut c, &["SET", "g", "val"]);
    assert_eq!(q::<String>(&mut c, &["GETEX", "g", "EX", "100"]), "val");
    assert!((99..=100).contains(&q::<i64>(&mut c, &["TTL", "g"])));
    assert_eq!(q::<String>(&mut c, &["GETEX", "g", "PERSIST"]), "val");
    assert_eq!(q::<i64>(&mut c, &["TTL", "g"]), -1);
    assert_eq!(
        q::<Option<String>>(&mut c, &["GETEX", "nope", "EX", "10"]),
        None
    );
    assert_eq!(err(&mut c, &["GETEX", "g", "EX", "10", "PERSIST"]), SYNTAX);

    assert_eq!(q::<i64>(&mut c, &["APPEND", "s", "Hello"]), 5);
    assert_eq!(q::<i64>(&mut c, &["APPEND", "s", " World"]), 11);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "s"]), 11);
    assert_eq!(q::<i64>(&mut c, &["STRLEN", "nope"]), 0);
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "0", "4"]), "Hello");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "-5", "-1"]), "World");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "-3", "-1"]), "rld");
    assert_eq!(
        q::<String>(&mut c, &["GETRANGE", "s", "0", "-1"]),
        "Hello World"
    );
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "-100", "2"]), "Hel");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "5", "2"]), "");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "-1", "-5"]), "");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "s", "10", "100"]), "d");
    assert_eq!(q::<String>(&mut c, &["GETRANGE", "nope", "0", "-1"]), "");

    // SETRANGE pads with zero bytes.
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "s", "6", "Redis"]), 11);
    assert_eq!(q::<String>(&mut c, &["GET", "s"]), "Hello Redis");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "pad", "5", "x"]), 6);
    assert_eq!(q::<Vec<u8>>(&mut c, &["GET", "pad"]), b"\0\0\0\0\0x");
    assert_eq!(q::<i64>(&mut c, &["SETRANGE", "nothing", "5", ""]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "nothing"]), 0);
    assert_eq!(
        err(&mut c, &["SETRANGE", "s", "-1", "x"]),
        "ERR offset is out of range"
    );

    let _: () = q(&mut c, &["MSET", "m1", "a", "m2", "b", "m3", "c"]);
    assert_eq!(
        q::<Vec<Option<String>>>(&mut c, &["MGET", "m1", "nope", "m2", "m3"]),
        vec![Some("a".into()), None, Some("b".into()), Some("c".into())]
    );
    assert_eq!(
        err(&mut c, &["MSET", "m1", "a", "m2"]),
        "ERR wrong number of arguments for 'mset' command"
    );
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "n1", "1", "n2", "2"]), 1);
    assert_eq!(q::<i64>(&mut c, &["MSETNX", "n2", "x", "n3", "3"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "n3"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "n2"]), "2");
}

fn counters(server: Target) {
    let mut c = conn(&server);
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCR", "n"]), 2);
    assert_eq!(q::<i64>(&mut c, &["DECR", "n"]), 1);
    assert_eq!(q::<i64>(&mut c, &["INCRBY", "n", "10"]), 11);
    assert_eq!(q::<i64>(&mut c, &["DECRBY", "n", "20"]), -9);
    assert_eq!(q::<String>(&mut c, &["GET", "n"]), "-9");
    assert_eq!(err(&mut c, &["INCRBY", "n", "1.5"]), NOT_INT);
    assert_eq!(err(&mut c, &["INCRBY", "n", "01"]), NOT_INT);

    for bad in ["abc", " 1", "1 ", "01", "+1", "1.0", ""] {
        let _: () = q(&mut c, &["SET", "b", bad]);
        assert_eq!(err(&mut c, &["INCR", "b"]), NOT_INT, "{bad:?}");
    }
    let _: () = q(&mut c, &["SET", "max", &i64::MAX.to_string()]);
    assert_eq!(
        err(&mut c, &["INCR", "max"]),
        "ERR increment or decrement would overflow"
    );
    let _: () = q(&mut c, &["SET", "min", &i64::MIN.to_string()]);
    assert_eq!(
        err(&mut c, &["DECR", "min"]),
        "ERR increment or decrement would overflow"
    );
    assert_eq!(
        err(&mut c, &["DECRBY", "x", &i64::MIN.to_string()]),
        "ERR decrement would overflow"
    );
    // The TTL survives INCR.
    let _: () = q(&mut c, &["SET", "t", "5", "EX", "100"]);
    assert_eq!(q::<i64>(&mut c, &["INCR", "t"]), 6);
    assert!(q::<i64>(&mut c, &["TTL", "t"]) > 0);

    let _: () = q(&mut c, &["SET", "f", "10.50"]);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "0.1"]), "10.6");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "-5"]), "5.6");
    let _: () = q(&mut c, &["SET", "f", "5.0e3"]);
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "f", "2.0e2"]), "5200");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "g", "0.1"]), "0.1");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "g", "0.2"]), "0.3");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "h", "3.0"]), "3");
    assert_eq!(q::<String>(&mut c, &["INCRBYFLOAT", "z", "-0"]), "0");
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "f", "abc"]),
        "ERR value is not a valid float"
    );
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "f", "inf"]),
        "ERR increment would produce NaN or Infinity"
    );
    let _: () = q(&mut c, &["SET", "nf", "x1"]);
    assert_eq!(
        err(&mut c, &["INCRBYFLOAT", "nf", "1"]),
        "ERR value is not a valid float"
    );
}

fn key_commands(server: Target) {
    let mut c = conn(&server);
    let _: () = q(&mut c, &["MSET", "a", "1", "b", "2"]);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "a", "a", "b", "nope"]), 3);
    assert_eq!(q::<String>(&mut c, &["TYPE", "a"]), "string");
    assert_eq!(q::<String>(&mut c, &["TYPE", "nope"]), "none");

    // RENAME keeps the TTL and overwrites; a missing source is an error.
    let _: () = q(&mut c, &["SET", "src", "v", "EX", "100"]);
    let _: () = q(&mut c, &["RENAME", "src", "dst"]);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "src"]), 0);
    assert_eq!(q::<String>(&mut c, &["GET", "dst"]), "v");
    assert!((99..=100).contains(&q::<i64>(&mut c, &["TTL", "dst"])));
    assert_eq!(err(&mut c, &["RENAME", "nope", "x"]), "ERR no such key");
    assert_eq!(err(&mut c, &["RENAMENX", "nope", "x"]), "ERR no such key");
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "dst", "a"]), 0);
    assert_eq!(q::<i64>(&mut c, &["RENAMENX", "dst", "fresh"]), 1);
    assert!((99..=100).contains(&q::<i64>(&mut c, &["TTL", "fresh"])));
    let _: () = q(&mut c, &["RENAME", "a", "a"]);

    // KEYS with glob patterns.
    let _: () = q(
        &mut c,
        &[
            "MSET", "user:1", "x", "user:2", "x", "user:10", "x", "hello", "x", "hallo", "x",
        ],
    );
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "user:?"]);
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    let mut keys: Vec<String> = q(&mut c, &["KEYS", "h[ae]llo"]);
    keys.sort();
    assert_eq!(keys, ["hallo", "hello"]);
    let all: Vec<String> = q(&mut c, &["KEYS", "*"]);
    assert_eq!(all.len() as i64, q::<i64>(&mut c, &["DBSIZE"]));

    // RANDOMKEY: one of the keys; nil when empty.
    let all: HashSet<String> = all.into_iter().collect();
    for _ in 0..20 {
        let k: String = q(&mut c, &["RANDOMKEY"]);
        assert!(all.contains(&k), "{k}");
    }
    let _: () = q(&mut c, &["FLUSHDB"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    assert_eq!(q::<Option<String>>(&mut c, &["RANDOMKEY"]), None);
    let _: () = q(&mut c, &["SET", "x", "1"]);
    let _: () = q(&mut c, &["FLUSHALL"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
    let _: () = q(&mut c, &["SET", "x", "1"]);
    let _: () = q(&mut c, &["FLUSHALL", "ASYNC"]);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
}

fn scan_returns_every_key(server: Target) {
    let mut c = conn(&server);
    let mut want = HashSet::new();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        let k = format!("key:{i}");
        pipe.cmd("SET").arg(&k).arg(i).ignore();
        want.insert(k);
    }
    pipe.cmd("SET").arg("other").arg(1).ignore();
    let _: () = pipe.query(&mut c).unwrap();
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 5001);

    for count in ["10", "1", "1000"] {
        let mut got = HashSet::new();
        let mut cursor = "0".to_string();
        let mut calls = 0;
        loop {
            let (next, keys): (String, Vec<String>) =
                q(&mut c, &["SCAN", &cursor, "MATCH", "key:*", "COUNT", count]);
            got.extend(keys);
            calls += 1;
            assert!(calls < 100_000, "SCAN never returned to cursor 0");
            if next == "0" {
                break;
            }
            cursor = next;
        }
        assert_eq!(got, want, "COUNT {count}");
    }
    // Plain iteration includes the non-matching key.
    let mut n = HashSet::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) =
            q(&mut c, &["SCAN", &cursor.to_string(), "COUNT", "500"]);
        n.extend(keys);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    assert_eq!(n.len(), 5001);
    assert_eq!(err(&mut c, &["SCAN", "abc"]), "ERR invalid cursor");
    assert_eq!(err(&mut c, &["SCAN", "0", "COUNT", "0"]), SYNTAX);
}

fn expire_family(server: Target) {
    let mut c = conn(&server);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["PTTL", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), -1);
    assert_eq!(q::<i64>(&mut c, &["TTL", "nope"]), -2);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "nope"]), -2);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "nope", "10"]), 0);

    // NX / XX / GT / LT
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "XX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "100", "NX"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "NX"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "50", "GT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "200", "GT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "300", "LT"]), 0);
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "150", "XX", "LT"]), 1);
    let ttl: i64 = q(&mut c, &["TTL", "k"]);
    assert!((149..=150).contains(&ttl), "{ttl}");
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "10", "NX", "XX"]),
        "ERR NX and XX, GT or LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "10", "GT", "LT"]),
        "ERR GT and LT options at the same time are not compatible"
    );
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "10", "FOO"]),
        "ERR Unsupported option FOO"
    );

    assert_eq!(q::<i64>(&mut c, &["PEXPIRE", "k", "100000"]), 1);
    let pttl: i64 = q(&mut c, &["PTTL", "k"]);
    assert!((90_000..=100_000).contains(&pttl), "{pttl}");
    let far = FAR.to_string();
    assert_eq!(q::<i64>(&mut c, &["EXPIREAT", "k", &far]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXPIRETIME", "k"]), FAR);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), FAR * 1000);
    assert!((q::<i64>(&mut c, &["TTL", "k"]) - (FAR - now_secs())).abs() <= 2);
    assert_eq!(
        q::<i64>(&mut c, &["EXPIREAT", "k", &(FAR + 10).to_string(), "LT"]),
        0
    );
    let far_ms = (FAR * 1000 - 1).to_string();
    assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", &far_ms, "LT"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PEXPIRETIME", "k"]), FAR * 1000 - 1);

    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 1);
    assert_eq!(q::<i64>(&mut c, &["PERSIST", "k"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "k"]), -1);
    // A time in the past deletes.
    assert_eq!(q::<i64>(&mut c, &["EXPIRE", "k", "-1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
    let _: () = q(&mut c, &["SET", "k", "v"]);
    assert_eq!(q::<i64>(&mut c, &["PEXPIREAT", "k", "1"]), 1);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "k"]), 0);
    assert_eq!(
        err(&mut c, &["EXPIRE", "k", "9223372036854775807"]),
        "ERR invalid expire time in 'expire' command"
    );
}

fn lazy_expiry(server: Target) {
    let mut c = conn(&server);
    let _: () = q(&mut c, &["SET", "lazy", "v", "PX", "50"]);
    let gone = wait_until(Duration::from_secs(10), || {
        q::<Option<String>>(&mut c, &["GET", "lazy"]).is_none()
    });
    assert!(gone, "key with PX 50 still readable after 10 s");
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "lazy"]), 0);
    assert_eq!(q::<i64>(&mut c, &["TTL", "lazy"]), -2);
}

fn active_expiry_without_touching_keys(server: Target) {
    let mut c = conn(&server);
    let mut pipe = redis::pipe();
    for i in 0..1000 {
        pipe.cmd("SET")
            .arg(format!("exp:{i}"))
            .arg("v")
            .arg("PX")
            .arg(100)
            .ignore();
    }
    let _: () = pipe.query(&mut c).unwrap();
    let _: () = q(&mut c, &["SET", "keeper", "v"]);
    let mut last = -1;
    let drained = wait_until(Duration::from_secs(15), || {
        last = q(&mut c, &["DBSIZE"]);
        last == 1
    });
    assert!(
        drained,
        "DBSIZE stuck at {last}: active expiry did not collect the keys"
    );
    // INFO is this node's: on a cluster, DBSIZE counts each partition at one replica, which
    // may have expired its copies before this node's active cycle reached them all.
    let mut info = String::new();
    let expired = wait_until(Duration::from_secs(15), || {
        info = q(&mut c, &["INFO", "stats"]);
        info.contains("expired_keys:1000")
    });
    assert!(expired, "{info}");
    assert_eq!(q::<i64>(&mut c, &["DEL", "keeper"]), 1);
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 0);
}

fn connection_and_server_commands(server: Target) {
    let mut c = conn(&server);
    assert_eq!(q::<String>(&mut c, &["PING"]), "PONG");
    assert_eq!(q::<String>(&mut c, &["PING", "hi"]), "hi");
    assert_eq!(q::<String>(&mut c, &["ECHO", "hello world"]), "hello world");
    let _: () = q(&mut c, &["SELECT", "0"]);
    assert_eq!(
        err(&mut c, &["SELECT", "1"]),
        "ERR DB index is out of range"
    );

    let id: i64 = q(&mut c, &["CLIENT", "ID"]);
    assert!(id > 0);
    assert_eq!(q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]), None);
    let _: () = q(&mut c, &["CLIENT", "SETNAME", "compat-test"]);
    assert_eq!(
        q::<Option<String>>(&mut c, &["CLIENT", "GETNAME"]).as_deref(),
        Some("compat-test")
    );
    assert_eq!(
        err(&mut c, &["CLIENT", "SETNAME", "has space"]),
        "ERR Client names cannot contain spaces, newlines or special characters."
    );
    let list: String = q(&mut c, &["CLIENT", "LIST"]);
    let mine = list
        .lines()
        .find(|l| l.starts_with(&format!("id={id} ")))
        .unwrap_or_else(|| panic!("own id {id} not in CLIENT LIST:\n{list}"));
    assert!(mine.contains(" name=compat-test "), "{mine}");

    let _: () = q(&mut c, &["SET", "k", "v"]);
    let info: String = q(&mut c, &["INFO"]);
    for section in ["# Server", "# Clients", "# Memory", "# Stats", "# Keyspace"] {
        assert!(info.contains(section), "INFO lacks {section}:\n{info}");
    }
    assert!(info.contains("db0:keys=1,"), "{info}");
    let clients: String = q(&mut c, &["INFO", "clients"]);
    assert!(clients.contains("connected_clients:"), "{clients}");
    assert!(!clients.contains("# Server"), "{clients}");

    let (name, value): (String, i64) = q(&mut c, &["CONFIG", "GET", "maxclients"]);
    assert_eq!(name, "maxclients");
    assert!(value > 0);
    let _: () = q(&mut c, &["CONFIG", "SET", "maxclients", "50"]);
    let (_, value): (String, i64) = q(&mut c, &["CONFIG", "GET", "maxclients"]);
    assert_eq!(value, 50);

    let count: i64 = q(&mut c, &["COMMAND", "COUNT"]);
    assert!(count >= 50, "{count}");
    let (secs, micros): (i64, i64) = q(&mut c, &["TIME"]);
    assert!((secs - now_secs()).abs() <= 60, "{secs}");
    assert!((0..1_000_000).contains(&micros));

    let e = err(&mut c, &["NOSUCH", "a"]);
    assert_eq!(
        e,
        "ERR unknown command 'NOSUCH', with args beginning with: 'a' "
    );
}

fn pipeline_of_a_thousand_commands(server: Target) {
    let mut c = conn(&server);
    let mut pipe = redis::pipe();
    for i in 0..250 {
        pipe.cmd("SET").arg(format!("p:{i}")).arg(i);
        pipe.cmd("GET").arg(format!("p:{i}"));
        pipe.cmd("INCR").arg(format!("p:{i}"));
        pipe.cmd("EXISTS")
            .arg(format!("p:{i}"))
            .arg(format!("p:{}", i + 1000));
    }
    let replies: Vec<Value> = pipe.query(&mut c).unwrap();
    assert_eq!(replies.len(), 1000);
    for (i, r) in replies.chunks(4).enumerate() {
        assert_eq!(r[0], Value::Okay, "SET p:{i}");
        assert_eq!(
            r[1],
            Value::BulkString(i.to_string().into_bytes()),
            "GET p:{i}"
        );
        assert_eq!(r[2], Value::Int(i as i64 + 1), "INCR p:{i}");
        assert_eq!(r[3], Value::Int(1), "EXISTS p:{i}");
    }
    assert_eq!(q::<i64>(&mut c, &["DBSIZE"]), 250);
}

/// Multi-key commands spanning both event loops are atomic: a reader never sees a torn MSET.
fn multi_key_commands_are_atomic_across_loops(server: Target) {
    let keys: Vec<String> = (0..24).map(|i| format!("atomic:{i}")).collect();
    let mut c = conn(&server);
    let mut init = vec!["MSET"];
    for k in &keys {
        init.push(k);
        init.push("0");
    }
    let _: () = q(&mut c, &init);

    let rounds = 300;
    let writer = {
        let url = server.redis_url();
        let keys = keys.clone();
        std::thread::spawn(move || {
            let client = redis::Client::open(url).unwrap();
            let mut w = client
                .get_connection_with_timeout(Duration::from_secs(10))
                .unwrap();
            w.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for round in 1..=rounds {
                let v = round.to_string();
                let mut args = vec!["MSET"];
                for k in &keys {
                    args.push(k);
                    args.push(&v);
                }
                let _: () = q(&mut w, &args);
            }
        })
    };
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let vals: Vec<String> = q(&mut c, &mget);
        // On a cluster MSET and MGET are split per key (protocol.md §7: not atomic across
        // keys), so MGET may see a torn MSET there; it still sees each key's latest round.
        assert!(
            server.is_cluster() || vals.iter().all(|v| v == &vals[0]),
            "torn MSET seen by MGET: {vals:?}"
        );
        if vals.iter().all(|v| v == &rounds.to_string()) {
            break;
        }
        assert!(Instant::now() < deadline, "writer did not finish in time");
    }
    writer.join().unwrap();

    // DEL / EXISTS / MSETNX across loops count every key.
    let mut exists = vec!["EXISTS"];
    exists.extend(keys.iter().map(String::as_str));
    assert_eq!(q::<i64>(&mut c, &exists), keys.len() as i64);
    let mut msetnx = vec!["MSETNX", "fresh-key", "1"];
    msetnx.push(&keys[7]);
    msetnx.push("x");
    assert_eq!(q::<i64>(&mut c, &msetnx), 0);
    assert_eq!(q::<i64>(&mut c, &["EXISTS", "fresh-key"]), 0);
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    assert_eq!(q::<i64>(&mut c, &del), keys.len() as i64);
    assert_eq!(q::<i64>(&mut c, &exists), 0);
}

/// The async API works too (tokio).
fn async_client(server: Target) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = redis::Client::open(server.redis_url()).unwrap();
        let mut con = tokio::time::timeout(
            Duration::from_secs(10),
            client.get_multiplexed_async_connection(),
        )
        .await
        .expect("connect in time")
        .unwrap();
        let _: () = redis::cmd("SET")
            .arg("ak")
            .arg("av")
            .query_async(&mut con)
            .await
            .unwrap();
        let v: String = redis::cmd("GET")
            .arg("ak")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(v, "av");
        let n: i64 = redis::cmd("INCR")
            .arg("an")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(n, 1);
    });
}
