//! `kvsh`: the interactive shell of ringkv, in the manner of `redis-cli`.
//!
//! Speaks the binary protocol through `ringkv-client` and depends on nothing else of the
//! server. See `kvsh --help` for modes, output formats and exit codes.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ringkv_client::{Bytes, Client, ClientConfig, ClientError, Value};
use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{Context, Editor, Helper};

const AFTER_HELP: &str = "\
MODES
  kvsh -c 'SET a 1'      run one command (quotes as in redis-cli), print the reply, exit
  kvsh SET a 1           the same, with the command given as separate arguments
  kvsh < script.txt      stdin is not a terminal: run one command per line (blank lines and
                         lines starting with # are skipped), keep going after errors
  kvsh                   interactive: history in ~/.kvsh_history, TAB completes command
                         names, `help [COMMAND]` lists commands, `quit`/`exit` or Ctrl-D leaves

ALIASES (binary protocol, with causal contexts)
  put KEY VALUE          write a value; prints OK
  get KEY                read a value; siblings (concurrent versions) are printed numbered
  delete KEY             delete a key; prints (integer) 1 if it existed
  --show-context also prints the causal context (hex) of get and put replies.
  Everything else is sent to the server as a command, e.g. SET, MGET, INCR, TTL, INFO.

OUTPUT
  When stdout is a terminal (or with --no-raw), replies look like redis-cli's:
    OK   (integer) 5   \"value\" (quoted, non-printable bytes escaped)   (nil)
    (error) ERR ...   arrays as numbered lines `1) \"a\"`, nested arrays indented,
    (empty array)
  Otherwise (or with --raw): bulk values raw without quotes, integers bare, nil as (nil),
  array elements one per line, errors as `(error) MESSAGE`, all on stdout.
  Problems of kvsh itself (connection lost, timeout) are printed to stderr.

EXIT STATUS
  0  every command succeeded
  1  a command returned an error (in a script: at least one did)
  2  kvsh could not connect to the server (or the handshake, e.g. the password, failed)";

/// Interactive shell and command-line client for ringkv.
#[derive(Parser, Debug)]
#[command(name = "kvsh", version, after_help = AFTER_HELP)]
struct Args {
    /// Server host name or IP address.
    #[arg(short = 'H', long, default_value = "127.0.0.1")]
    host: String,

    /// Server port.
    #[arg(short, long, default_value_t = ringkv_client::DEFAULT_PORT)]
    port: u16,

    /// Password sent in the handshake (or set RINGKV_PASSWORD, which keeps it out of `ps`).
    #[arg(short = 'a', long, env = "RINGKV_PASSWORD", hide_env_values = true)]
    password: Option<String>,

    /// Run this one command (split on spaces, with "double" and 'single' quotes) and exit.
    #[arg(
        short = 'c',
        long = "command",
        value_name = "COMMAND",
        conflicts_with = "args"
    )]
    command: Option<String>,

    /// Print replies raw (no quotes, no type labels) even on a terminal.
    #[arg(long, conflicts_with = "no_raw")]
    raw: bool,

    /// Print replies formatted (quotes, type labels) even when stdout is not a terminal.
    #[arg(long)]
    no_raw: bool,

    /// Also print the causal context (hex) of values read with `get` and written with `put`.
    #[arg(long)]
    show_context: bool,

    /// Seconds to wait for each reply (0 = forever).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,

    /// A command and its arguments to run once, e.g. `kvsh SET greeting hello`.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    args: Vec<OsString>,
}

/// How one command ended, for the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// An error reply from the server (or a usage error caught by kvsh).
    Failed,
    /// The connection failed (and could not be re-established).
    Disconnected,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvsh: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };

    let stdout_tty = std::io::stdout().is_terminal();
    let printer = Printer {
        raw: args.raw || (!stdout_tty && !args.no_raw),
        show_context: args.show_context,
    };
    let config = ClientConfig {
        password: args.password.clone(),
        client_name: Some("kvsh".into()),
        request_timeout: if args.timeout == 0 {
            Duration::MAX
        } else {
            Duration::from_secs(args.timeout)
        },
        ..ClientConfig::default()
    };

    let client = match rt.block_on(Client::connect((args.host.as_str(), args.port), config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "kvsh: could not connect to {}:{}: {e}",
                args.host, args.port
            );
            return ExitCode::from(2);
        }
    };

    // One command from -c or the trailing arguments.
    let one_shot = if let Some(line) = &args.command {
        match ringkv_proto::resp::split_quoted(line.as_bytes()) {
            Ok(words) => Some(words),
            Err(e) => {
                eprintln!("kvsh: invalid command line: {e}");
                return ExitCode::from(1);
            }
        }
    } else if !args.args.is_empty() {
        Some(
            args.args
                .iter()
                .map(|a| a.as_encoded_bytes().to_vec())
                .collect(),
        )
    } else {
        None
    };

    let outcome = if let Some(words) = one_shot {
        if words.is_empty() {
            eprintln!("kvsh: empty command");
            return ExitCode::from(1);
        }
        rt.block_on(execute(&client, &words, &printer))
    } else if std::io::stdin().is_terminal() {
        let prompt = if args.host.contains(':') {
            format!("[{}]:{}> ", args.host, args.port)
        } else {
            format!("{}:{}> ", args.host, args.port)
        };
        interactive(&rt, &client, &printer, prompt)
    } else {
        script(&rt, &client, &printer)
    };
    match outcome {
        Outcome::Ok => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::Disconnected => ExitCode::from(2),
    }
}

// ----------------------------------------------------------------------------------------------
// Running commands

/// Runs one command line (already split into words) and prints its reply.
async fn execute(client: &Client, words: &[Vec<u8>], printer: &Printer) -> Outcome {
    let Some(name) = words.first() else {
        return Outcome::Ok;
    };
    let name_lc = name.to_ascii_lowercase();
    let result = match (name_lc.as_slice(), words.len()) {
        (b"get", 2) => client.get(&words[1]).await.map(|v| {
            Shown::Value(match v {
                Some(v) => Value::Versioned {
                    context: v.context,
                    values: v.values,
                },
                None => Value::Nil,
            })
        }),
        (b"put", 3) => client.put(&words[1], &words[2]).await.map(Shown::Written),
        (b"delete", 2) => client
            .delete(&words[1])
            .await
            .map(|existed| Shown::Value(Value::Int(existed as i64))),
        (b"put", _) | (b"delete", _) => {
            let usage = if name_lc == b"put" {
                "put KEY VALUE"
            } else {
                "delete KEY"
            };
            Err(ClientError::Server(format!(
                "ERR wrong number of arguments for '{}' (usage: {usage})",
                String::from_utf8_lossy(name)
            )))
        }
        _ => client.command(words).await.map(Shown::Value),
    };

    match result {
        Ok(shown) => {
            let mut out = Vec::new();
            match shown {
                Shown::Value(v) => printer.print(&v, &mut out),
                Shown::Written(context) => {
                    out.extend_from_slice(b"OK\n");
                    if printer.show_context {
                        out.extend_from_slice(format!("(context) {}\n", hex(&context)).as_bytes());
                    }
                }
            }
            emit(&out);
            Outcome::Ok
        }
        Err(ClientError::Server(msg)) => {
            emit(format!("(error) {msg}\n").as_bytes());
            Outcome::Failed
        }
        Err(e) => {
            eprintln!("kvsh: {e}");
            if e.is_connection_error() {
                Outcome::Disconnected
            } else {
                Outcome::Failed
            }
        }
    }
}

/// What a command produced.
enum Shown {
    Value(Value),
    /// A `put`: its new causal context.
    Written(Bytes),
}

/// Writes to stdout, ignoring errors (a closed pipe just ends the output).
fn emit(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

/// Input is read on a thread of its own (so that the runtime, and with it the client's
/// connection, keeps running while kvsh waits for input); after each line the runtime side
/// tells the input thread whether to read another one.
enum Ack {
    Continue,
    Quit,
}

/// Reads commands from non-terminal stdin, one per line; keeps going after errors.
fn script(rt: &tokio::runtime::Runtime, client: &Client, printer: &Printer) -> Outcome {
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(1);
    let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel::<Ack>(1);
    let reader = std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut stdin = stdin.lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("kvsh: cannot read stdin: {e}");
                    return;
                }
            }
            if line_tx.blocking_send(line.clone()).is_err() {
                return;
            }
            match ack_rx.recv() {
                Ok(Ack::Continue) => {}
                Ok(Ack::Quit) | Err(_) => return,
            }
        }
    });

    let mut worst = Outcome::Ok;
    rt.block_on(async {
        let mut line_no = 0usize;
        while let Some(line) = line_rx.recv().await {
            line_no += 1;
            let trimmed = line.trim_ascii();
            let ack = if trimmed.is_empty() || trimmed.starts_with(b"#") {
                Ack::Continue
            } else {
                match ringkv_proto::resp::split_quoted(trimmed) {
                    Ok(words) if is_quit(&words) => Ack::Quit,
                    Ok(words) => {
                        let outcome = execute(client, &words, printer).await;
                        worst = worse(worst, outcome);
                        Ack::Continue
                    }
                    Err(e) => {
                        eprintln!("kvsh: line {line_no}: {e}");
                        worst = worse(worst, Outcome::Failed);
                        Ack::Continue
                    }
                }
            };
            let quit = matches!(ack, Ack::Quit);
            if ack_tx.send(ack).is_err() || quit {
                break;
            }
        }
    });
    drop(line_rx);
    let _ = reader.join();
    // In a script, a lost connection is one more failed command: report 1, as for errors.
    match worst {
        Outcome::Ok => Outcome::Ok,
        _ => Outcome::Failed,
    }
}

fn worse(a: Outcome, b: Outcome) -> Outcome {
    match (a, b) {
        (Outcome::Disconnected, _) | (_, Outcome::Disconnected) => Outcome::Disconnected,
        (Outcome::Failed, _) | (_, Outcome::Failed) => Outcome::Failed,
        _ => Outcome::Ok,
    }
}

fn is_quit(words: &[Vec<u8>]) -> bool {
    words.len() == 1
        && (words[0].eq_ignore_ascii_case(b"quit") || words[0].eq_ignore_ascii_case(b"exit"))
}

/// The interactive loop: a rustyline editor on its own thread, commands run on the runtime.
fn interactive(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    printer: &Printer,
    prompt: String,
) -> Outcome {
    let (line_tx, mut line_rx) = tokio::sync::mpsc::channel::<String>(1);
    let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel::<Ack>(1);
    let editor_thread = std::thread::spawn(move || {
        let mut editor: Editor<ShellHelper, DefaultHistory> = match Editor::new() {
            Ok(e) => e,
            Err(e) => {
                eprintln!("kvsh: cannot start the line editor: {e}");
                return;
            }
        };
        editor.set_helper(Some(ShellHelper));
        let history = history_path();
        if let Some(path) = &history {
            let _ = editor.load_history(path);
        }
        loop {
            match editor.readline(&prompt) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                    }
                    if line_tx.blocking_send(line).is_err() {
                        break;
                    }
                    match ack_rx.recv() {
                        Ok(Ack::Continue) => {}
                        Ok(Ack::Quit) | Err(_) => break,
                    }
                }
                // Ctrl-C drops the line being typed, as in a shell.
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(e) => {
                    eprintln!("kvsh: cannot read input: {e}");
                    break;
                }
            }
        }
        if let Some(path) = &history {
            let _ = editor.save_history(path);
        }
    });

    rt.block_on(async {
        while let Some(line) = line_rx.recv().await {
            let ack = match ringkv_proto::resp::split_quoted(line.as_bytes()) {
                Ok(words) if words.is_empty() => Ack::Continue,
                Ok(words) if is_quit(&words) => Ack::Quit,
                Ok(words) if words[0].eq_ignore_ascii_case(b"help") => {
                    emit(help_text(words.get(1).map(|w| w.as_slice())).as_bytes());
                    Ack::Continue
                }
                Ok(words) => {
                    // Ctrl-C while a command runs abandons it (the reply, if any, is dropped).
                    tokio::select! {
                        _ = execute(client, &words, printer) => {}
                        _ = tokio::signal::ctrl_c() => eprintln!("(interrupted)"),
                    }
                    Ack::Continue
                }
                Err(e) => {
                    eprintln!("kvsh: {e}");
                    Ack::Continue
                }
            };
            let quit = matches!(ack, Ack::Quit);
            if ack_tx.send(ack).is_err() || quit {
                break;
            }
        }
    });
    drop(line_rx);
    let _ = editor_thread.join();
    Outcome::Ok
}

fn history_path() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE"))?;
    Some(PathBuf::from(home).join(".kvsh_history"))
}

// ----------------------------------------------------------------------------------------------
// Output

struct Printer {
    raw: bool,
    show_context: bool,
}

impl Printer {
    fn print(&self, v: &Value, out: &mut Vec<u8>) {
        if self.raw {
            print_raw(v, out);
        } else {
            print_pretty(v, 0, out);
        }
        if self.show_context {
            if let Value::Versioned { context, .. } = v {
                out.extend_from_slice(format!("(context) {}\n", hex(context)).as_bytes());
            }
        }
    }
}

/// redis-cli's terminal format. `indent` is the column the value starts at (for the second
/// and later lines of a nested array).
fn print_pretty(v: &Value, indent: usize, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"(nil)\n"),
        Value::Simple(s) => {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        Value::Error(e) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Value::Int(n) => out.extend_from_slice(format!("(integer) {n}\n").as_bytes()),
        Value::Bulk(b) => {
            quote(b, out);
            out.push(b'\n');
        }
        Value::Array(items) => print_numbered(items.iter(), items.len(), indent, out),
        Value::Versioned { values, .. } => match values.as_slice() {
            [] => out.extend_from_slice(b"(nil)\n"),
            [one] => {
                quote(one, out);
                out.push(b'\n');
            }
            many => {
                let items: Vec<Value> = many.iter().cloned().map(Value::Bulk).collect();
                print_numbered(items.iter(), items.len(), indent, out);
            }
        },
    }
}

fn print_numbered<'a>(
    items: impl Iterator<Item = &'a Value>,
    len: usize,
    indent: usize,
    out: &mut Vec<u8>,
) {
    if len == 0 {
        out.extend_from_slice(b"(empty array)\n");
        return;
    }
    let width = len.to_string().len();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.resize(out.len() + indent, b' ');
        }
        let label = format!("{:>width$}) ", i + 1);
        out.extend_from_slice(label.as_bytes());
        print_pretty(item, indent + label.len(), out);
    }
}

/// redis-cli's non-terminal format: values as they are, one per line.
fn print_raw(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Nil => out.extend_from_slice(b"(nil)\n"),
        Value::Simple(s) | Value::Bulk(s) => {
            out.extend_from_slice(s);
            out.push(b'\n');
        }
        Value::Error(e) => {
            out.extend_from_slice(b"(error) ");
            out.extend_from_slice(e);
            out.push(b'\n');
        }
        Value::Int(n) => out.extend_from_slice(format!("{n}\n").as_bytes()),
        Value::Array(items) => {
            for item in items {
                print_raw(item, out);
            }
        }
        Value::Versioned { values, .. } => {
            if values.is_empty() {
                out.extend_from_slice(b"(nil)\n");
            }
            for value in values {
                out.extend_from_slice(value);
                out.push(b'\n');
            }
        }
    }
}

/// Quotes bytes as redis-cli does (`sdscatrepr`): `"` and `\` escaped, `\n \r \t \a \b`,
/// other non-printable bytes as `\xHH`.
fn quote(b: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for &c in b {
        match c {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            7 => out.extend_from_slice(b"\\a"),
            8 => out.extend_from_slice(b"\\b"),
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\x{c:02x}").as_bytes()),
        }
    }
    out.push(b'"');
}

fn hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "(empty)".into();
    }
    b.iter().map(|c| format!("{c:02x}")).collect()
}

// ----------------------------------------------------------------------------------------------
// Help and completion

/// (name, syntax, summary) of kvsh's own commands and aliases.
const SHELL_COMMANDS: &[(&str, &str, &str)] = &[
    (
        "put",
        "put key value",
        "binary PUT: write a value (no context); prints OK",
    ),
    (
        "get",
        "get key",
        "binary GET: the value, or numbered siblings",
    ),
    (
        "delete",
        "delete key",
        "binary DELETE: (integer) 1 if the key existed",
    ),
    (
        "help",
        "help [command]",
        "list commands, or show one command's syntax",
    ),
    ("quit", "quit", "leave kvsh (also: exit, Ctrl-D)"),
    ("exit", "exit", "leave kvsh"),
];

/// (name, syntax, summary) of the server's commands, for help and completion. Commands not
/// listed here are still sent to the server.
const SERVER_COMMANDS: &[(&str, &str, &str)] = &[
    ("GET", "GET key", "the value of a key"),
    (
        "SET",
        "SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]",
        "set a key",
    ),
    (
        "DEL",
        "DEL key [key ...]",
        "delete keys; the number deleted",
    ),
    ("MGET", "MGET key [key ...]", "the values of several keys"),
    ("MSET", "MSET key value [key value ...]", "set several keys"),
    (
        "MSETNX",
        "MSETNX key value [key value ...]",
        "set several keys if none exists",
    ),
    ("INCR", "INCR key", "add 1 to an integer value"),
    ("DECR", "DECR key", "subtract 1 from an integer value"),
    ("INCRBY", "INCRBY key increment", "add to an integer value"),
    (
        "DECRBY",
        "DECRBY key decrement",
        "subtract from an integer value",
    ),
    (
        "INCRBYFLOAT",
        "INCRBYFLOAT key increment",
        "add to a float value",
    ),
    ("SETNX", "SETNX key value", "set a key if it does not exist"),
    (
        "SETEX",
        "SETEX key seconds value",
        "set a key with a TTL in seconds",
    ),
    (
        "PSETEX",
        "PSETEX key milliseconds value",
        "set a key with a TTL in milliseconds",
    ),
    (
        "GETSET",
        "GETSET key value",
        "set a key, return the old value",
    ),
    ("GETDEL", "GETDEL key", "get a key and delete it"),
    (
        "GETEX",
        "GETEX key [EX s|PX ms|EXAT t|PXAT t|PERSIST]",
        "get a key and change its TTL",
    ),
    (
        "APPEND",
        "APPEND key value",
        "append to a value; the new length",
    ),
    ("STRLEN", "STRLEN key", "the length of a value"),
    (
        "GETRANGE",
        "GETRANGE key start end",
        "a substring of a value",
    ),
    (
        "SUBSTR",
        "SUBSTR key start end",
        "a substring of a value (old name of GETRANGE)",
    ),
    (
        "SETRANGE",
        "SETRANGE key offset value",
        "overwrite part of a value",
    ),
    ("UNLINK", "UNLINK key [key ...]", "delete keys"),
    (
        "EXISTS",
        "EXISTS key [key ...]",
        "how many of the keys exist",
    ),
    ("TYPE", "TYPE key", "the type of a key's value"),
    ("RENAME", "RENAME key newkey", "rename a key"),
    (
        "RENAMENX",
        "RENAMENX key newkey",
        "rename a key if the new name is free",
    ),
    ("KEYS", "KEYS pattern", "all keys matching a glob pattern"),
    ("RANDOMKEY", "RANDOMKEY", "a random key"),
    (
        "SCAN",
        "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]",
        "iterate over keys",
    ),
    (
        "EXPIRE",
        "EXPIRE key seconds [NX|XX|GT|LT]",
        "set a TTL in seconds",
    ),
    (
        "PEXPIRE",
        "PEXPIRE key milliseconds [NX|XX|GT|LT]",
        "set a TTL in milliseconds",
    ),
    (
        "EXPIREAT",
        "EXPIREAT key unix-seconds [NX|XX|GT|LT]",
        "expire at a Unix time",
    ),
    (
        "PEXPIREAT",
        "PEXPIREAT key unix-ms [NX|XX|GT|LT]",
        "expire at a Unix time in ms",
    ),
    (
        "EXPIRETIME",
        "EXPIRETIME key",
        "the Unix time a key expires at",
    ),
    (
        "PEXPIRETIME",
        "PEXPIRETIME key",
        "the Unix time in ms a key expires at",
    ),
    (
        "TTL",
        "TTL key",
        "remaining TTL in seconds (-1 none, -2 no such key)",
    ),
    ("PTTL", "PTTL key", "remaining TTL in milliseconds"),
    ("PERSIST", "PERSIST key", "remove a key's TTL"),
    ("DBSIZE", "DBSIZE", "the number of keys"),
    ("FLUSHDB", "FLUSHDB [ASYNC|SYNC]", "delete every key"),
    ("FLUSHALL", "FLUSHALL [ASYNC|SYNC]", "delete every key"),
    ("PING", "PING [message]", "PONG, or the message"),
    ("ECHO", "ECHO message", "the message"),
    (
        "AUTH",
        "AUTH [user] password",
        "authenticate this connection",
    ),
    ("SELECT", "SELECT 0", "select database 0 (the only one)"),
    (
        "CLIENT",
        "CLIENT SETNAME|GETNAME|ID|LIST|INFO ...",
        "inspect connections",
    ),
    (
        "INFO",
        "INFO [section ...]",
        "server information and statistics",
    ),
    (
        "CONFIG",
        "CONFIG GET pattern | CONFIG SET name value | CONFIG RESETSTAT",
        "settings",
    ),
    (
        "COMMAND",
        "COMMAND [COUNT|INFO name ...|DOCS]",
        "the server's command table",
    ),
    ("TIME", "TIME", "the server's clock"),
    ("SHUTDOWN", "SHUTDOWN [NOSAVE|SAVE]", "stop the server"),
];

fn help_text(command: Option<&[u8]>) -> String {
    let find = |name: &[u8]| {
        SHELL_COMMANDS
            .iter()
            .chain(SERVER_COMMANDS)
            .find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(name))
    };
    match command {
        Some(name) => match find(name) {
            Some((_, syntax, summary)) => format!("  {syntax}\n  {summary}\n"),
            None => format!(
                "no help for '{}'; kvsh sends it to the server anyway\n",
                String::from_utf8_lossy(name)
            ),
        },
        None => {
            let mut s = String::from("kvsh commands (put/get/delete use the binary protocol):\n");
            for (_, syntax, summary) in SHELL_COMMANDS {
                s.push_str(&format!("  {syntax:<18} {summary}\n"));
            }
            s.push_str("\nserver commands (any other command is sent as typed):\n");
            for (_, syntax, _) in SERVER_COMMANDS {
                s.push_str(&format!("  {syntax}\n"));
            }
            s.push_str(
                "\nArguments split on spaces; use \"double quotes\" (with \\n \\xHH escapes) or \
                 'single quotes' for spaces.\n`help COMMAND` shows one command. TAB completes \
                 command names.\n",
            );
            s
        }
    }
}

struct ShellHelper;

/// A hint that is only shown, never inserted.
struct SyntaxHint(String);

impl Hint for SyntaxHint {
    fn display(&self) -> &str {
        &self.0
    }
    fn completion(&self) -> Option<&str> {
        None
    }
}

fn command_names() -> impl Iterator<Item = &'static str> {
    SHELL_COMMANDS
        .iter()
        .chain(SERVER_COMMANDS)
        .map(|(name, _, _)| *name)
}

impl Completer for ShellHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| c.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        let earlier: Vec<&str> = before[..start].split_ascii_whitespace().collect();
        let completing_name =
            earlier.is_empty() || (earlier.len() == 1 && earlier[0].eq_ignore_ascii_case("help"));
        if !completing_name {
            return Ok((start, Vec::new()));
        }
        let prefix = &before[start..];
        let lower = prefix
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase());
        let mut out: Vec<String> = command_names()
            .filter(|name| {
                name.len() >= prefix.len()
                    && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            })
            .map(|name| {
                if lower {
                    name.to_ascii_lowercase()
                } else {
                    name.to_ascii_uppercase()
                }
            })
            .collect();
        out.sort();
        out.dedup();
        Ok((start, out))
    }
}

impl Hinter for ShellHelper {
    type Hint = SyntaxHint;

    /// After `NAME ` (and nothing else), shows the rest of the command's syntax.
    fn hint(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> Option<SyntaxHint> {
        if pos != line.len() || !line.ends_with(' ') {
            return None;
        }
        let mut words = line.split_ascii_whitespace();
        let name = words.next()?;
        if words.next().is_some() {
            return None;
        }
        let (_, syntax, _) = SHELL_COMMANDS
            .iter()
            .chain(SERVER_COMMANDS)
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
        let rest = syntax.split_once(' ')?.1;
        Some(SyntaxHint(rest.to_string()))
    }
}

impl Highlighter for ShellHelper {
    fn highlight_hint<'h>(&self, hint: &'h str) -> Cow<'h, str> {
        Cow::Owned(format!("\x1b[90m{hint}\x1b[0m"))
    }
}

impl Validator for ShellHelper {}

impl Helper for ShellHelper {}
