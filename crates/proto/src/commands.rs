//! The command table: names, arities, key positions (as Redis's COMMAND reports them), syntax
//! and a one-line description. The server checks arity and answers COMMAND from it; kvsh
//! builds its help, hints and completion from it. One table, so the two can't drift.

/// One command's static description.
#[derive(Debug)]
pub struct Spec {
    /// Lowercase name.
    pub name: &'static str,
    /// Redis convention: N > 0 exactly N arguments (name included), -N at least N.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub step: i32,
    /// Syntax, e.g. `GET key`.
    pub syntax: &'static str,
    /// What it does, in one line.
    pub about: &'static str,
}

const W: &[&str] = &["write"];
const R: &[&str] = &["readonly"];
const F: &[&str] = &["fast"];
const A: &[&str] = &["admin"];

macro_rules! spec {
    ($name:literal, $arity:expr, $flags:expr, $f:expr, $l:expr, $s:expr, $syn:literal, $about:literal) => {
        Spec {
            name: $name,
            arity: $arity,
            flags: $flags,
            first_key: $f,
            last_key: $l,
            step: $s,
            syntax: $syn,
            about: $about,
        }
    };
}

/// Hot commands first: lookup is a linear scan that compares lengths before bytes.
pub static TABLE: &[Spec] = &[
    spec!("get", 2, R, 1, 1, 1, "GET key", "the value of a key"),
    spec!(
        "set",
        -3,
        W,
        1,
        1,
        1,
        "SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]",
        "set a key"
    ),
    spec!(
        "del",
        -2,
        W,
        1,
        -1,
        1,
        "DEL key [key ...]",
        "delete keys; the number deleted"
    ),
    spec!(
        "mget",
        -2,
        R,
        1,
        -1,
        1,
        "MGET key [key ...]",
        "the values of several keys"
    ),
    spec!(
        "mset",
        -3,
        W,
        1,
        -1,
        2,
        "MSET key value [key value ...]",
        "set several keys"
    ),
    spec!(
        "incr",
        2,
        W,
        1,
        1,
        1,
        "INCR key",
        "add 1 to an integer value"
    ),
    spec!(
        "ping",
        -1,
        F,
        0,
        0,
        0,
        "PING [message]",
        "PONG, or the message"
    ),
    spec!(
        "exists",
        -2,
        R,
        1,
        -1,
        1,
        "EXISTS key [key ...]",
        "how many of the keys exist"
    ),
    spec!(
        "expire",
        -3,
        W,
        1,
        1,
        1,
        "EXPIRE key seconds [NX|XX|GT|LT]",
        "set a TTL in seconds"
    ),
    spec!(
        "ttl",
        2,
        R,
        1,
        1,
        1,
        "TTL key",
        "remaining TTL in seconds (-1 none, -2 no such key)"
    ),
    spec!(
        "pttl",
        2,
        R,
        1,
        1,
        1,
        "PTTL key",
        "remaining TTL in milliseconds"
    ),
    spec!(
        "decr",
        2,
        W,
        1,
        1,
        1,
        "DECR key",
        "subtract 1 from an integer value"
    ),
    spec!(
        "incrby",
        3,
        W,
        1,
        1,
        1,
        "INCRBY key increment",
        "add to an integer value"
    ),
    spec!(
        "decrby",
        3,
        W,
        1,
        1,
        1,
        "DECRBY key decrement",
        "subtract from an integer value"
    ),
    spec!(
        "incrbyfloat",
        3,
        W,
        1,
        1,
        1,
        "INCRBYFLOAT key increment",
        "add to a float value"
    ),
    spec!(
        "setnx",
        3,
        W,
        1,
        1,
        1,
        "SETNX key value",
        "set a key if it does not exist"
    ),
    spec!(
        "setex",
        4,
        W,
        1,
        1,
        1,
        "SETEX key seconds value",
        "set a key with a TTL in seconds"
    ),
    spec!(
        "psetex",
        4,
        W,
        1,
        1,
        1,
        "PSETEX key milliseconds value",
        "set a key with a TTL in milliseconds"
    ),
    spec!(
        "getset",
        3,
        W,
        1,
        1,
        1,
        "GETSET key value",
        "set a key, return the old value"
    ),
    spec!(
        "getdel",
        2,
        W,
        1,
        1,
        1,
        "GETDEL key",
        "get a key and delete it"
    ),
    spec!(
        "getex",
        -2,
        W,
        1,
        1,
        1,
        "GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]",
        "get a key and change its TTL"
    ),
    spec!(
        "append",
        3,
        W,
        1,
        1,
        1,
        "APPEND key value",
        "append to a value; the new length"
    ),
    spec!(
        "strlen",
        2,
        R,
        1,
        1,
        1,
        "STRLEN key",
        "the length of a value"
    ),
    spec!(
        "getrange",
        4,
        R,
        1,
        1,
        1,
        "GETRANGE key start end",
        "a substring of a value"
    ),
    spec!(
        "substr",
        4,
        R,
        1,
        1,
        1,
        "SUBSTR key start end",
        "a substring of a value (old name of GETRANGE)"
    ),
    spec!(
        "setrange",
        4,
        W,
        1,
        1,
        1,
        "SETRANGE key offset value",
        "overwrite part of a value"
    ),
    spec!(
        "msetnx",
        -3,
        W,
        1,
        -1,
        2,
        "MSETNX key value [key value ...]",
        "set several keys if none exists"
    ),
    spec!(
        "unlink",
        -2,
        W,
        1,
        -1,
        1,
        "UNLINK key [key ...]",
        "delete keys"
    ),
    spec!(
        "type",
        2,
        R,
        1,
        1,
        1,
        "TYPE key",
        "the type of a key's value"
    ),
    spec!("rename", 3, W, 1, 2, 1, "RENAME key newkey", "rename a key"),
    spec!("setbit", 4, W, 1, 1, 1, "SETBIT key offset 0|1", "set one bit; the old bit"),
    spec!("getbit", 3, R, 1, 1, 1, "GETBIT key offset", "one bit of a value"),
    spec!(
        "bitcount",
        -2,
        R,
        1,
        1,
        1,
        "BITCOUNT key [start end [BYTE|BIT]]",
        "count the set bits"
    ),
    spec!(
        "bitpos",
        -3,
        R,
        1,
        1,
        1,
        "BITPOS key 0|1 [start [end [BYTE|BIT]]]",
        "the first bit set or clear"
    ),
    spec!(
        "bitop",
        -4,
        W,
        2,
        -1,
        1,
        "BITOP AND|OR|XOR|NOT destkey key [key ...]",
        "bitwise operation between strings"
    ),
    spec!(
        "bitfield",
        -2,
        W,
        1,
        1,
        1,
        "BITFIELD key [GET type offset] [SET type offset value] [INCRBY type offset increment] [OVERFLOW WRAP|SAT|FAIL] ...",
        "integer fields of arbitrary width in a string"
    ),
    spec!(
        "bitfield_ro",
        -2,
        R,
        1,
        1,
        1,
        "BITFIELD_RO key [GET type offset ...]",
        "read integer fields of a string"
    ),
    spec!(
        "lcs",
        -3,
        R,
        1,
        2,
        1,
        "LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]",
        "longest common subsequence of two values"
    ),
    spec!(
        "copy",
        -3,
        W,
        1,
        2,
        1,
        "COPY source destination [DB 0] [REPLACE]",
        "copy a key (value and TTL)"
    ),
    spec!(
        "touch",
        -2,
        R,
        1,
        -1,
        1,
        "TOUCH key [key ...]",
        "how many of the keys exist"
    ),
    spec!(
        "object",
        -2,
        R,
        0,
        0,
        0,
        "OBJECT ENCODING|FREQ|IDLETIME|REFCOUNT key | OBJECT HELP",
        "how a key is stored"
    ),
    spec!(
        "renamenx",
        3,
        W,
        1,
        2,
        1,
        "RENAMENX key newkey",
        "rename a key if the new name is free"
    ),
    spec!(
        "keys",
        2,
        R,
        0,
        0,
        0,
        "KEYS pattern",
        "all keys matching a glob pattern"
    ),
    spec!("randomkey", 1, R, 0, 0, 0, "RANDOMKEY", "a random key"),
    spec!(
        "scan",
        -2,
        R,
        0,
        0,
        0,
        "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]",
        "iterate over keys"
    ),
    spec!(
        "pexpire",
        -3,
        W,
        1,
        1,
        1,
        "PEXPIRE key milliseconds [NX|XX|GT|LT]",
        "set a TTL in milliseconds"
    ),
    spec!(
        "expireat",
        -3,
        W,
        1,
        1,
        1,
        "EXPIREAT key unix-seconds [NX|XX|GT|LT]",
        "expire at a Unix time"
    ),
    spec!(
        "pexpireat",
        -3,
        W,
        1,
        1,
        1,
        "PEXPIREAT key unix-ms [NX|XX|GT|LT]",
        "expire at a Unix time in ms"
    ),
    spec!(
        "expiretime",
        2,
        R,
        1,
        1,
        1,
        "EXPIRETIME key",
        "the Unix time a key expires at"
    ),
    spec!(
        "pexpiretime",
        2,
        R,
        1,
        1,
        1,
        "PEXPIRETIME key",
        "the Unix time in ms a key expires at"
    ),
    spec!(
        "persist",
        2,
        W,
        1,
        1,
        1,
        "PERSIST key",
        "remove a key's TTL"
    ),
    spec!("dbsize", 1, R, 0, 0, 0, "DBSIZE", "the number of keys"),
    spec!(
        "flushdb",
        -1,
        W,
        0,
        0,
        0,
        "FLUSHDB [ASYNC|SYNC]",
        "delete every key"
    ),
    spec!(
        "flushall",
        -1,
        W,
        0,
        0,
        0,
        "FLUSHALL [ASYNC|SYNC]",
        "delete every key"
    ),
    spec!("echo", 2, F, 0, 0, 0, "ECHO message", "the message"),
    spec!(
        "hello",
        -1,
        F,
        0,
        0,
        0,
        "HELLO [2 [AUTH user pass] [SETNAME name]]",
        "handshake: protocol version 2, optional AUTH and SETNAME"
    ),
    spec!(
        "auth",
        -2,
        F,
        0,
        0,
        0,
        "AUTH [user] password",
        "authenticate this connection"
    ),
    spec!(
        "select",
        2,
        F,
        0,
        0,
        0,
        "SELECT 0",
        "select database 0 (the only one)"
    ),
    spec!(
        "client",
        -2,
        A,
        0,
        0,
        0,
        "CLIENT SETNAME|GETNAME|ID|LIST|INFO ...",
        "inspect connections"
    ),
    spec!("quit", -1, F, 0, 0, 0, "QUIT", "close the connection"),
    spec!(
        "info",
        -1,
        R,
        0,
        0,
        0,
        "INFO [section ...]",
        "server information and statistics"
    ),
    spec!(
        "config",
        -2,
        A,
        0,
        0,
        0,
        "CONFIG GET pattern | CONFIG SET name value | CONFIG RESETSTAT",
        "settings"
    ),
    spec!(
        "command",
        -1,
        R,
        0,
        0,
        0,
        "COMMAND [COUNT|INFO name ...|DOCS]",
        "the server's command table"
    ),
    spec!(
        "slowlog",
        -2,
        A,
        0,
        0,
        0,
        "SLOWLOG GET [count] | SLOWLOG LEN | SLOWLOG RESET | SLOWLOG HELP",
        "commands slower than slowlog-log-slower-than"
    ),
    spec!("time", 1, F, 0, 0, 0, "TIME", "the server's clock"),
    spec!(
        "wait",
        3,
        &[],
        0,
        0,
        0,
        "WAIT numreplicas timeout",
        "wait until this connection's last write is durable on numreplicas replicas (cluster)"
    ),
    spec!(
        "cluster",
        -2,
        A,
        0,
        0,
        0,
        "CLUSTER NODES | CLUSTER INFO | CLUSTER MYID | CLUSTER JOIN host:port | CLUSTER LEAVE [id] | CLUSTER MAP | CLUSTER GETLOCAL key",
        "the cluster's members, settings and partition map; join or leave"
    ),
    spec!(
        "bgsave",
        -1,
        A,
        0,
        0,
        0,
        "BGSAVE [SCHEDULE]",
        "snapshot every shard in the background"
    ),
    spec!(
        "lastsave",
        1,
        F,
        0,
        0,
        0,
        "LASTSAVE",
        "unix time of the last successful snapshot"
    ),
    spec!(
        "shutdown",
        -1,
        A,
        0,
        0,
        0,
        "SHUTDOWN [NOSAVE|SAVE]",
        "stop the server"
    ),
];

/// Looks a command up by its name in any case.
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    lookup_index(name).map(|i| &TABLE[i])
}

/// The position of a command in [`TABLE`], looked up by its name in any case.
pub fn lookup_index(name: &[u8]) -> Option<usize> {
    if name.len() > 16 {
        return None;
    }
    TABLE
        .iter()
        .position(|s| s.name.len() == name.len() && s.name.as_bytes().eq_ignore_ascii_case(name))
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
