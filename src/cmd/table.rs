//! The command table: names, arities and key positions, as Redis's COMMAND reports them.
//! Parsing checks arity here, and COMMAND / COMMAND COUNT / COMMAND INFO answer from it.

/// One command's static description.
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis convention: N > 0 exactly N arguments (name included), -N at least N.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// One-line syntax, for `kvsh help` style documentation.
    pub summary: &'static str,
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly"];
const F: &[&str] = &["fast"];
const A: &[&str] = &["admin"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $f:expr, $l:expr, $s:expr, $sum:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            summary: $sum,
        }
    };
}

/// Hot commands first: lookup is a linear scan that compares lengths before bytes.
pub static TABLE: &[Spec] = &[
    spec!("get", 2, R, 1, 1, 1, "GET key"),
    spec!(
        "set",
        -3,
        W,
        1,
        1,
        1,
        "SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]"
    ),
    spec!("del", -2, W, 1, -1, 1, "DEL key [key ...]"),
    spec!("mget", -2, R, 1, -1, 1, "MGET key [key ...]"),
    spec!("mset", -3, W, 1, -1, 2, "MSET key value [key value ...]"),
    spec!("incr", 2, W, 1, 1, 1, "INCR key"),
    spec!("ping", -1, F, 0, 0, 0, "PING [message]"),
    spec!("exists", -2, R, 1, -1, 1, "EXISTS key [key ...]"),
    spec!("expire", -3, W, 1, 1, 1, "EXPIRE key seconds [NX|XX|GT|LT]"),
    spec!("ttl", 2, R, 1, 1, 1, "TTL key"),
    spec!("pttl", 2, R, 1, 1, 1, "PTTL key"),
    spec!("decr", 2, W, 1, 1, 1, "DECR key"),
    spec!("incrby", 3, W, 1, 1, 1, "INCRBY key increment"),
    spec!("decrby", 3, W, 1, 1, 1, "DECRBY key decrement"),
    spec!("incrbyfloat", 3, W, 1, 1, 1, "INCRBYFLOAT key increment"),
    spec!("setnx", 3, W, 1, 1, 1, "SETNX key value"),
    spec!("setex", 4, W, 1, 1, 1, "SETEX key seconds value"),
    spec!("psetex", 4, W, 1, 1, 1, "PSETEX key milliseconds value"),
    spec!("getset", 3, W, 1, 1, 1, "GETSET key value"),
    spec!("getdel", 2, W, 1, 1, 1, "GETDEL key"),
    spec!(
        "getex",
        -2,
        W,
        1,
        1,
        1,
        "GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]"
    ),
    spec!("append", 3, W, 1, 1, 1, "APPEND key value"),
    spec!("strlen", 2, R, 1, 1, 1, "STRLEN key"),
    spec!("getrange", 4, R, 1, 1, 1, "GETRANGE key start end"),
    spec!("substr", 4, R, 1, 1, 1, "SUBSTR key start end"),
    spec!("setrange", 4, W, 1, 1, 1, "SETRANGE key offset value"),
    spec!(
        "msetnx",
        -3,
        W,
        1,
        -1,
        2,
        "MSETNX key value [key value ...]"
    ),
    spec!("unlink", -2, W, 1, -1, 1, "UNLINK key [key ...]"),
    spec!("type", 2, R, 1, 1, 1, "TYPE key"),
    spec!("rename", 3, W, 1, 2, 1, "RENAME key newkey"),
    spec!("renamenx", 3, W, 1, 2, 1, "RENAMENX key newkey"),
    spec!("keys", 2, R, 0, 0, 0, "KEYS pattern"),
    spec!("randomkey", 1, R, 0, 0, 0, "RANDOMKEY"),
    spec!(
        "scan",
        -2,
        R,
        0,
        0,
        0,
        "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]"
    ),
    spec!(
        "pexpire",
        -3,
        W,
        1,
        1,
        1,
        "PEXPIRE key milliseconds [NX|XX|GT|LT]"
    ),
    spec!(
        "expireat",
        -3,
        W,
        1,
        1,
        1,
        "EXPIREAT key unix-seconds [NX|XX|GT|LT]"
    ),
    spec!(
        "pexpireat",
        -3,
        W,
        1,
        1,
        1,
        "PEXPIREAT key unix-ms [NX|XX|GT|LT]"
    ),
    spec!("expiretime", 2, R, 1, 1, 1, "EXPIRETIME key"),
    spec!("pexpiretime", 2, R, 1, 1, 1, "PEXPIRETIME key"),
    spec!("persist", 2, W, 1, 1, 1, "PERSIST key"),
    spec!("dbsize", 1, R, 0, 0, 0, "DBSIZE"),
    spec!("flushdb", -1, W, 0, 0, 0, "FLUSHDB [ASYNC|SYNC]"),
    spec!("flushall", -1, W, 0, 0, 0, "FLUSHALL [ASYNC|SYNC]"),
    spec!("echo", 2, F, 0, 0, 0, "ECHO message"),
    spec!(
        "hello",
        -1,
        F,
        0,
        0,
        0,
        "HELLO [2 [AUTH user pass] [SETNAME name]]"
    ),
    spec!("auth", -2, F, 0, 0, 0, "AUTH [user] password"),
    spec!("select", 2, F, 0, 0, 0, "SELECT 0"),
    spec!(
        "client",
        -2,
        A,
        0,
        0,
        0,
        "CLIENT SETNAME|GETNAME|ID|LIST|INFO ..."
    ),
    spec!("quit", -1, F, 0, 0, 0, "QUIT"),
    spec!("info", -1, R, 0, 0, 0, "INFO [section ...]"),
    spec!(
        "config",
        -2,
        A,
        0,
        0,
        0,
        "CONFIG GET pattern | CONFIG SET name value | CONFIG RESETSTAT"
    ),
    spec!(
        "command",
        -1,
        R,
        0,
        0,
        0,
        "COMMAND [COUNT|INFO name ...|DOCS]"
    ),
    spec!("time", 1, F, 0, 0, 0, "TIME"),
    spec!("shutdown", -1, A, 0, 0, 0, "SHUTDOWN [NOSAVE|SAVE]"),
];

/// Looks a command up by its name in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 16 {
        return None;
    }
    TABLE
        .iter()
        .find(|s| s.name.len() == name.len() && s.name.as_bytes().eq_ignore_ascii_case(name))
}

impl Spec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let a = self.arity;
        if a >= 0 {
            argc == a as usize
        } else {
            argc >= a.unsigned_abs() as usize
        }
    }
}
