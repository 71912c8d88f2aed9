//! Commands: parsing an argument vector into a typed [`Command`], then executing it.
//!
//! One file per family: `strings` (GET, SET, INCR, ...), `keys` (DEL, EXPIRE, SCAN, ...),
//! `connection` (PING, AUTH, CLIENT, ...), `server` (INFO, CONFIG, COMMAND, ...).
//! Parsing validates everything it can (arity, options, numbers) before any shard is touched,
//! and [`Command::route`] says which shards a command needs, so the event loop can run it on
//! the loop that owns them.

/// Patterns naming every command of one family, so that each family's `exec` can answer the
/// other families' commands with an error in one arm while the compiler still checks that it
/// handles every command of its own (a new variant goes into exactly one of these, which
/// `Command::family` enforces).
macro_rules! string_commands {
    () => {
        $crate::cmd::Command::Get(_)
            | $crate::cmd::Command::Set(_)
            | $crate::cmd::Command::GetDel(_)
            | $crate::cmd::Command::GetEx(..)
            | $crate::cmd::Command::Append(..)
            | $crate::cmd::Command::Strlen(_)
            | $crate::cmd::Command::GetRange(..)
            | $crate::cmd::Command::SetRange(..)
            | $crate::cmd::Command::IncrBy(..)
            | $crate::cmd::Command::IncrByFloat(..)
            | $crate::cmd::Command::MGet(_)
            | $crate::cmd::Command::MSet(..)
            | $crate::cmd::Command::VGet(_)
            | $crate::cmd::Command::VPut { .. }
            | $crate::cmd::Command::VDel(..)
            | $crate::cmd::Command::SetBit(..)
            | $crate::cmd::Command::GetBit(..)
            | $crate::cmd::Command::BitCount(..)
            | $crate::cmd::Command::BitPos(..)
            | $crate::cmd::Command::BitOp(..)
            | $crate::cmd::Command::BitField(_)
            | $crate::cmd::Command::Lcs(_)
    };
}
macro_rules! key_commands {
    () => {
        $crate::cmd::Command::Del(_)
            | $crate::cmd::Command::Exists(_)
            | $crate::cmd::Command::Type(_)
            | $crate::cmd::Command::Rename(..)
            | $crate::cmd::Command::Expire(..)
            | $crate::cmd::Command::Ttl(..)
            | $crate::cmd::Command::Persist(_)
            | $crate::cmd::Command::Copy(..)
            | $crate::cmd::Command::Touch(_)
            | $crate::cmd::Command::Object(..)
    };
}
macro_rules! keyspace_commands {
    () => {
        $crate::cmd::Command::Keys(_)
            | $crate::cmd::Command::Scan(_)
            | $crate::cmd::Command::RandomKey
            | $crate::cmd::Command::DbSize
            | $crate::cmd::Command::Flush
    };
}
macro_rules! connection_commands {
    () => {
        $crate::cmd::Command::Ping(_)
            | $crate::cmd::Command::Echo(_)
            | $crate::cmd::Command::Hello(_)
            | $crate::cmd::Command::Auth(..)
            | $crate::cmd::Command::Select(_)
            | $crate::cmd::Command::Client(_)
            | $crate::cmd::Command::Quit
            | $crate::cmd::Command::Wait(..)
    };
}
macro_rules! server_commands {
    () => {
        $crate::cmd::Command::Info(_)
            | $crate::cmd::Command::ConfigGet(_)
            | $crate::cmd::Command::ConfigSet(_)
            | $crate::cmd::Command::ConfigResetStat
            | $crate::cmd::Command::CommandInfo(_)
            | $crate::cmd::Command::Time
            | $crate::cmd::Command::Shutdown
            | $crate::cmd::Command::BgSave
            | $crate::cmd::Command::LastSave
            | $crate::cmd::Command::SlowLog(_)
            | $crate::cmd::Command::Cluster(_)
            | $crate::cmd::Command::ObjectHelp
    };
}

pub mod bitfield;
pub mod bits;
pub mod cluster;
pub mod connection;
pub mod keymeta;
pub mod keys;
pub mod lcs;
pub mod ldouble;
pub mod server;
pub mod slowlog;
pub mod strings;
pub mod table;
pub mod versioned;

#[cfg(test)]
mod counter_tests;

use std::borrow::Cow;

use smallvec::SmallVec;

pub use connection::Session;

/// An error reply, full text with its Redis prefix (`ERR ...`, `WRONGTYPE ...`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CmdError(pub Cow<'static, str>);

impl CmdError {
    pub const SYNTAX: CmdError = CmdError(Cow::Borrowed("ERR syntax error"));
    pub const NOT_INT: CmdError =
        CmdError(Cow::Borrowed("ERR value is not an integer or out of range"));
    pub const NOT_FLOAT: CmdError = CmdError(Cow::Borrowed("ERR value is not a valid float"));
    pub const TOO_BIG: CmdError = CmdError(Cow::Borrowed(
        "ERR string exceeds maximum allowed size (proto-max-bulk-len)",
    ));

    pub fn msg(s: impl Into<Cow<'static, str>>) -> CmdError {
        CmdError(s.into())
    }

    pub fn arity(name: &str) -> CmdError {
        CmdError(Cow::Owned(format!(
            "ERR wrong number of arguments for '{name}' command"
        )))
    }

    pub fn invalid_expire(name: &str) -> CmdError {
        CmdError(Cow::Owned(format!(
            "ERR invalid expire time in '{name}' command"
        )))
    }

    pub fn unknown(args: &[&[u8]]) -> CmdError {
        // Same text as Redis 7, including the trailing space after each argument.
        let name = String::from_utf8_lossy(&args[0][..args[0].len().min(128)]).into_owned();
        // Redis quotes arguments while the quoted list is under 128 bytes, cutting the last
        // one so the list stays within 128.
        let mut list: Vec<u8> = Vec::new();
        for a in args.iter().skip(1) {
            if list.len() >= 128 {
                break;
            }
            let room = 128 - list.len();
            list.push(b'\'');
            list.extend_from_slice(&a[..a.len().min(room)]);
            list.extend_from_slice(b"' ");
        }
        let s = format!(
            "ERR unknown command '{name}', with args beginning with: {}",
            String::from_utf8_lossy(&list)
        );
        CmdError(Cow::Owned(s.replace(['\r', '\n'], " ")))
    }
}

pub type CmdResult<T> = Result<T, CmdError>;

impl From<crate::store::tx::NotLocked> for CmdError {
    fn from(e: crate::store::tx::NotLocked) -> CmdError {
        CmdError(Cow::Owned(format!("ERR {e}")))
    }
}

/// What a keyspace command needs besides its shards.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// This node's id in vector clocks.
    pub node_id: u64,
    /// Wall clock at execution (ms since the epoch), read once per batch.
    pub now_ms: u64,
    /// Largest value a command may store.
    pub max_value: usize,
    /// Largest reply a command may build (--max-output-buffer-bytes): MGET of one big key
    /// repeated must not build gigabytes.
    pub max_reply: usize,
}

/// When a key expires, as given on the command line (resolved against the clock at execution,
/// so a forwarded command measures relative TTLs from when it runs, as Redis does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Relative, in milliseconds (> 0).
    In(i64),
    /// Absolute unix time in milliseconds.
    At(i64),
}

impl Expiry {
    /// Absolute expiry time; saturates far in the future instead of overflowing.
    pub fn resolve(self, now_ms: u64) -> u64 {
        match self {
            Expiry::In(ms) => now_ms.saturating_add(ms.max(0) as u64),
            Expiry::At(ms) => ms.max(0) as u64,
        }
    }
}

/// A typed, validated command. Byte fields borrow from the request buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Command<'a> {
    // strings
    Get(&'a [u8]),
    Set(strings::Set<'a>),
    GetDel(&'a [u8]),
    GetEx(&'a [u8], Option<strings::GetExMode>),
    Append(&'a [u8], &'a [u8]),
    Strlen(&'a [u8]),
    GetRange(&'a [u8], i64, i64),
    SetRange(&'a [u8], usize, &'a [u8]),
    IncrBy(&'a [u8], i64),
    /// The increment; None for an infinite one (a valid float whose sum can't be stored).
    IncrByFloat(&'a [u8], Option<ldouble::LDouble>),
    MGet(SmallVec<[&'a [u8]; 4]>),
    MSet(SmallVec<[(&'a [u8], &'a [u8]); 2]>, bool),
    /// Binary protocol: read with causal context.
    VGet(&'a [u8]),
    /// Binary protocol: write with optional causal context and TTL.
    VPut {
        key: &'a [u8],
        value: &'a [u8],
        context: &'a [u8],
        ttl_ms: u64,
    },
    /// Binary protocol: delete with optional causal context.
    VDel(&'a [u8], &'a [u8]),
    // bits (strings family)
    SetBit(&'a [u8], u64, bool),
    GetBit(&'a [u8], u64),
    /// The range arguments, read at execution: Redis 7.0 answers 0 for a missing key before
    /// it looks at them.
    BitCount(&'a [u8], SmallVec<[&'a [u8]; 3]>),
    /// The bit sought, and the range arguments (read at execution, as for BITCOUNT).
    BitPos(&'a [u8], bool, SmallVec<[&'a [u8]; 3]>),
    /// The destination key, then the sources.
    BitOp(bits::BitOp, SmallVec<[&'a [u8]; 4]>),
    BitField(bitfield::BitField<'a>),
    Lcs(lcs::Lcs<'a>),
    // keys
    Del(SmallVec<[&'a [u8]; 4]>),
    Exists(SmallVec<[&'a [u8]; 4]>),
    Type(&'a [u8]),
    Rename(&'a [u8], &'a [u8], bool),
    Expire(&'a [u8], Expiry, keys::ExpireCond, &'static str),
    Ttl(&'a [u8], keys::TtlKind),
    Persist(&'a [u8]),
    /// Source and destination, and REPLACE.
    Copy([&'a [u8]; 2], bool),
    Touch(SmallVec<[&'a [u8]; 4]>),
    Object(keymeta::ObjectSub, &'a [u8]),
    Keys(&'a [u8]),
    Scan(keys::Scan<'a>),
    RandomKey,
    DbSize,
    Flush,
    // connection
    Ping(Option<&'a [u8]>),
    Echo(&'a [u8]),
    Hello(connection::Hello<'a>),
    /// Password, and whether a user name ("default") was given.
    Auth(&'a [u8], bool),
    Select(i64),
    Client(connection::ClientCmd<'a>),
    Quit,
    /// WAIT numreplicas timeout_ms.
    Wait(i64, i64),
    // server
    Info(SmallVec<[&'a [u8]; 2]>),
    ConfigGet(SmallVec<[&'a [u8]; 2]>),
    ConfigSet(SmallVec<[(&'a [u8], &'a [u8]); 1]>),
    ConfigResetStat,
    CommandInfo(server::CommandSub<'a>),
    Time,
    Shutdown,
    BgSave,
    LastSave,
    SlowLog(slowlog::SlowLogSub),
    Cluster(cluster::ClusterSub<'a>),
    ObjectHelp,
}

/// Which file executes a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `strings`: one or more keys, shards locked in a [`crate::store::Tx`].
    Strings,
    /// `keys`: one or more keys, shards locked in a [`crate::store::Tx`].
    Keys,
    /// `keys::exec_all`: every shard, one at a time.
    Keyspace,
    /// `connection`: the session, no keys.
    Connection,
    /// `server`: the node, no keys.
    Server,
}

/// Which shards a command needs.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'c, 'a> {
    /// No keyspace access (connection and server commands).
    None,
    /// One key: run on the loop that owns its shard.
    Key(&'a [u8]),
    /// Several keys: lock all their shards together, so the command is atomic on the node.
    Keys(&'c [&'a [u8]]),
    /// Pairs (MSET): keys at even positions.
    Pairs(&'c [(&'a [u8], &'a [u8])]),
    Rename(&'a [u8], &'a [u8]),
    /// Every shard, one at a time (KEYS, DBSIZE, FLUSHDB, RANDOMKEY, SCAN).
    All,
}

impl<'a> Command<'a> {
    pub fn route(&self) -> Route<'_, 'a> {
        use Command::*;
        match self {
            Get(k)
            | GetDel(k)
            | GetEx(k, _)
            | Append(k, _)
            | Strlen(k)
            | GetRange(k, ..)
            | SetRange(k, ..)
            | IncrBy(k, _)
            | IncrByFloat(k, _)
            | VGet(k)
            | VDel(k, _)
            | Type(k)
            | Expire(k, ..)
            | Ttl(k, _)
            | Persist(k)
            | SetBit(k, ..)
            | GetBit(k, _)
            | BitCount(k, _)
            | BitPos(k, ..)
            | Object(_, k) => Route::Key(k),
            BitField(bf) => Route::Key(bf.key),
            // Several keys: in a cluster these answer "not supported in cluster mode yet"
            // (cluster::multi::split does not split them).
            BitOp(_, ks) => Route::Keys(ks),
            Lcs(l) => Route::Keys(&l.keys),
            Copy(ks, _) => Route::Keys(ks),
            Set(s) => Route::Key(s.key),
            VPut { key, .. } => Route::Key(key),
            MGet(ks) | Del(ks) | Exists(ks) | Touch(ks) => match ks.as_slice() {
                [one] => Route::Key(one),
                many => Route::Keys(many),
            },
            MSet(pairs, _) => match pairs.as_slice() {
                [(k, _)] => Route::Key(k),
                many => Route::Pairs(many),
            },
            Rename(a, b, _) => Route::Rename(a, b),
            Keys(_) | Scan(_) | RandomKey | DbSize | Flush => Route::All,
            Ping(_) | Echo(_) | Hello(_) | Auth(..) | Select(_) | Client(_) | Quit | Wait(..)
            | Info(_) | ConfigGet(_) | ConfigSet(_) | ConfigResetStat | CommandInfo(_) | Time
            | Shutdown | BgSave | LastSave | SlowLog(_) | Cluster(_) | ObjectHelp => Route::None,
        }
    }

    /// Which family (file) executes this command. Exhaustive, so a new command does not
    /// compile until it is given a family (and a route, and a write flag).
    pub fn family(&self) -> Family {
        match self {
            string_commands!() => Family::Strings,
            key_commands!() => Family::Keys,
            keyspace_commands!() => Family::Keyspace,
            connection_commands!() => Family::Connection,
            server_commands!() => Family::Server,
        }
    }

    /// Whether this command changes the keyspace (for stats, and later the WAL and replication).
    pub fn is_write(&self) -> bool {
        use Command::*;
        match self {
            Set(_)
            | GetDel(_)
            | GetEx(_, Some(_))
            | Append(..)
            | SetRange(..)
            | IncrBy(..)
            | IncrByFloat(..)
            | MSet(..)
            | VPut { .. }
            | VDel(..)
            | Del(_)
            | Rename(..)
            | Expire(..)
            | Persist(_)
            | SetBit(..)
            | BitOp(..)
            | Copy(..)
            | Flush => true,
            BitField(bf) => bf.writes(),
            Get(_)
            | GetEx(_, None)
            | Strlen(_)
            | GetRange(..)
            | MGet(_)
            | VGet(_)
            | Exists(_)
            | Type(_)
            | Ttl(..)
            | Keys(_)
            | Scan(_)
            | RandomKey
            | DbSize
            | GetBit(..)
            | BitCount(..)
            | BitPos(..)
            | Lcs(_)
            | Touch(_)
            | Object(..) => false,
            Ping(_) | Echo(_) | Hello(_) | Auth(..) | Select(_) | Client(_) | Quit | Wait(..)
            | Info(_) | ConfigGet(_) | ConfigSet(_) | ConfigResetStat | CommandInfo(_) | Time
            | Shutdown | BgSave | LastSave | SlowLog(_) | Cluster(_) | ObjectHelp => false,
        }
    }
}

/// Parses an argument vector. `internal` admits the binary protocol's VGET/VPUT/VDEL forms,
/// which RESP clients can't send.
pub fn parse<'a>(args: &[&'a [u8]], internal: bool) -> CmdResult<Command<'a>> {
    parse_slot(args, internal).1
}

/// How a command that failed to parse counts in the statistics: as a failed call (the
/// arguments were wrong, as Redis's failed_calls) or a rejected one (wrong arity).
pub fn parse_failure_is_rejection(slot: usize, argc: usize) -> bool {
    table::TABLE.get(slot).is_none_or(|s| !s.arity_ok(argc))
}

/// Like [`parse`], also giving the command's statistics slot ([`crate::stats`]): its index
/// in the command table, or one of the internal commands' slots; None for an unknown name.
pub fn parse_slot<'a>(
    args: &[&'a [u8]],
    internal: bool,
) -> (Option<usize>, CmdResult<Command<'a>>) {
    let Some(&name) = args.first() else {
        return (None, Err(CmdError::msg("ERR empty command")));
    };
    if internal {
        match strings::parse_internal(name, args) {
            Ok(Some((slot, c))) => return (Some(slot), Ok(c)),
            Ok(None) => {}
            Err(e) => return (None, Err(e)),
        }
    }
    let Some(slot) = table::lookup_index(name) else {
        return (None, Err(CmdError::unknown(args)));
    };
    (Some(slot), parse_spec(&table::TABLE[slot], args))
}

fn parse_spec<'a>(spec: &'static table::Spec, args: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    if !spec.arity_ok(args.len()) {
        return Err(CmdError::arity(spec.name));
    }
    let a = &args[1..];
    match spec.name {
        "get" | "set" | "setnx" | "setex" | "psetex" | "getset" | "getdel" | "getex" | "append"
        | "strlen" | "getrange" | "substr" | "setrange" | "incr" | "decr" | "incrby" | "decrby"
        | "incrbyfloat" | "mget" | "mset" | "msetnx" => strings::parse(spec.name, a),
        "del" | "unlink" | "exists" | "type" | "rename" | "renamenx" | "keys" | "randomkey"
        | "scan" | "expire" | "pexpire" | "expireat" | "pexpireat" | "expiretime"
        | "pexpiretime" | "ttl" | "pttl" | "persist" | "dbsize" | "flushdb" | "flushall" => {
            keys::parse(spec.name, a)
        }
        "ping" | "echo" | "hello" | "auth" | "select" | "client" | "quit" | "wait" => {
            connection::parse(spec.name, a)
        }
        "setbit" | "getbit" | "bitcount" | "bitpos" | "bitop" | "bitfield" | "bitfield_ro"
        | "lcs" => bits::parse(spec.name, a),
        "copy" | "touch" | "object" => keymeta::parse(spec.name, a),
        "slowlog" => slowlog::parse(a),
        "cluster" => cluster::parse(a),
        _ => server::parse(spec.name, a),
    }
}

/// Parses a Redis integer argument as Redis's `string2ll` does: optional '-', then digits with
/// no leading zero ("0" alone is fine, "01", "-0", "+1", " 1" are not), fitting an i64.
pub fn int(arg: &[u8]) -> CmdResult<i64> {
    let digits = arg.strip_prefix(b"-").unwrap_or(arg);
    let canonical = match digits {
        [b'0'] => digits.len() == arg.len(),
        [b'1'..=b'9', rest @ ..] => rest.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    std::str::from_utf8(arg)
        .ok()
        .filter(|_| canonical && arg.len() <= 20)
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(CmdError::NOT_INT)
}

/// Whether a relative expire of `ms` milliseconds can be added to the current time without
/// overflowing a signed 64-bit millisecond timestamp (Redis answers "invalid expire time"
/// otherwise).
pub fn relative_expire_fits(ms: i64) -> bool {
    ms.checked_add(crate::util::now_ms() as i64).is_some()
}

/// Parses a float argument as Redis does (no NaN; "inf" allowed, rejected where it matters).
pub fn float(arg: &[u8]) -> CmdResult<f64> {
    std::str::from_utf8(arg)
        .ok()
        .filter(|s| !s.is_empty() && !s.starts_with(char::is_whitespace))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| !f.is_nan())
        .ok_or(CmdError::NOT_FLOAT)
}

pub fn eq(arg: &[u8], word: &str) -> bool {
    arg.eq_ignore_ascii_case(word.as_bytes())
}

/// Runs a command that touches the keyspace, locking the shards it routes to; returns the
/// WAL positions its reply must wait for: the records it wrote and, for every shard it read,
/// that shard's position when read (a reply never shows a write before it is durable).
/// Used alike by the loop that received the command and by the loop it was handed to.
pub fn run_keyed(
    cmd: &Command<'_>,
    store: &crate::store::Store,
    ctx: &Ctx,
    out: &mut dyn ringkv_proto::ReplySink,
) -> crate::store::Marks {
    use crate::store::Tx;
    use ringkv_proto::key_hash;
    let mut tx = match cmd.route() {
        Route::Key(k) => Tx::for_hashes(store, [key_hash(k)]),
        Route::Keys(ks) => Tx::for_hashes(store, ks.iter().map(|k| key_hash(k))),
        Route::Pairs(ps) => Tx::for_hashes(store, ps.iter().map(|(k, _)| key_hash(k))),
        Route::Rename(a, b) => Tx::for_hashes(store, [key_hash(a), key_hash(b)]),
        Route::All => {
            let mut marks = keys::exec_all(cmd, store, ctx, out);
            for (s, q) in current_marks(store) {
                crate::store::add_mark(&mut marks, s, q);
            }
            return marks;
        }
        Route::None => {
            out.error("ERR internal: command has no keys");
            return Default::default();
        }
    };
    let done = match cmd.family() {
        Family::Keys => keys::exec(cmd, &mut tx, ctx, out),
        Family::Strings => strings::exec(cmd, &mut tx, ctx, out),
        Family::Keyspace | Family::Connection | Family::Server => {
            Err(CmdError::msg("ERR internal: not a keyed command"))
        }
    };
    if let Err(e) = done {
        out.error(&e.0);
    }
    // Read or written, every shard the command saw: its reply may expose what they hold.
    tx.read_marks()
}

/// The WAL position of every shard now, for a reply computed from the whole keyspace (DBSIZE,
/// RANDOMKEY, KEYS, SCAN): taken after the command ran, so it covers whatever it saw.
pub fn current_marks(store: &crate::store::Store) -> crate::store::Marks {
    (0..store.len())
        .filter_map(|i| {
            let s = store.lock(i);
            s.wal.enabled.then_some((i as u32, s.wal.seq))
        })
        .collect()
}

#[cfg(test)]
mod tests;
