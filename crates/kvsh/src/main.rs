//! `kvsh`: the interactive shell of ringkv, in the manner of `redis-cli`.
//!
//! Speaks the binary protocol through `ringkv-client` and depends on nothing else of the
//! server. See `kvsh --help` for modes, output formats and exit codes.

use std::ffi::OsString;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

mod cluster;
mod output;
mod shell;

use clap::Parser;
use output::{hex, Printer};
use ringkv_client::{Bytes, Client, ClientConfig, ClientError, TlsConfig, TlsOptions, Value};
use rustyline::error::ReadlineError;
use rustyline::history::DefaultHistory;
use rustyline::Editor;
use shell::{help_text, ShellHelper};

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
  resolve KEY VALUE      replace every sibling of KEY by VALUE (a put with the context get
                         returned); prints OK
  --show-context also prints the causal context (hex) of get and put replies.

CLUSTER
  cluster nodes          the nodes as a table: id, address, zone, state, liveness, partitions
  cluster info           the cluster's settings and counters (CLUSTER INFO), one per line
  cluster join HOST:PORT ask the node to join HOST:PORT's cluster; waits up to 10 s until it
                         is listed by CLUSTER NODES (exit status 1 if not)
  cluster leave [ID]     remove this node (or node ID, 16 hex digits) from the cluster
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
  2  kvsh could not connect to the server (or the handshake, e.g. the password or TLS,
     failed)

TLS
  kvsh --tls --cacert ca.pem [--cert client.pem --key client.key] ...";

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

    /// Connect with TLS (the server runs with --tls-cert); needs --cacert.
    #[arg(long, requires = "cacert")]
    tls: bool,

    /// PEM file with the CA certificate that signed the server's certificate.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cacert: Option<PathBuf>,

    /// PEM client certificate, for a server with --tls-auth-clients (with --key).
    #[arg(long, value_name = "FILE", requires_all = ["tls", "key"])]
    cert: Option<PathBuf>,

    /// PEM private key of --cert.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "cert"])]
    key: Option<PathBuf>,

    /// Name the server's certificate must carry. [default: --host]
    #[arg(long, value_name = "NAME", requires = "tls")]
    sni: Option<String>,

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
    let tls = match &args.cacert {
        None => None,
        Some(ca) => {
            let opts = TlsOptions {
                ca_file: ca.clone(),
                cert_file: args.cert.clone(),
                key_file: args.key.clone(),
                server_name: Some(args.sni.clone().unwrap_or_else(|| args.host.clone())),
            };
            match TlsConfig::from_options(&opts) {
                Ok(t) => Some(t),
                Err(e) => {
                    eprintln!("kvsh: {e}");
                    return ExitCode::from(2);
                }
            }
        }
    };
    let config = ClientConfig {
        tls,
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
        (b"resolve", 3) => client
            .resolve(&words[1], &words[2])
            .await
            .map(Shown::Written),
        (b"delete", 2) => client
            .delete(&words[1])
            .await
            .map(|existed| Shown::Value(Value::Int(existed as i64))),
        (b"put", _) | (b"delete", _) | (b"resolve", _) => {
            let usage = match name_lc.as_slice() {
                b"put" => "put KEY VALUE",
                b"resolve" => "resolve KEY VALUE",
                _ => "delete KEY",
            };
            Err(ClientError::Server(format!(
                "ERR wrong number of arguments for '{}' (usage: {usage})",
                String::from_utf8_lossy(name)
            )))
        }
        (b"cluster", n) if n >= 2 => match cluster::run(client, &words[1..], printer.raw).await {
            Some(result) => result.map(Shown::Text),
            None => client.command(words).await.map(Shown::Value),
        },
        _ => client.command(words).await.map(Shown::Value),
    };

    match result {
        Ok(shown) => {
            let mut out = Vec::new();
            match shown {
                Shown::Value(v) => printer.print(&v, &mut out),
                Shown::Text(text) => out.extend_from_slice(text.as_bytes()),
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
    /// Text kvsh formatted itself (`cluster nodes` ...), printed as is.
    Text(String),
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
