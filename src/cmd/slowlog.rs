//! SLOWLOG GET / LEN / RESET / HELP, as Redis 7. The log itself is in [`crate::stats`].

use ringkv_proto::ReplySink;

use super::{eq, int, CmdError, CmdResult, Command};
use crate::node::Node;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowLogSub {
    /// The newest entries: None for all.
    Get(Option<usize>),
    Len,
    Reset,
    Help,
}

const HELP: &[&str] = &[
    "SLOWLOG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET [<count>]",
    "    Return top <count> entries from the slowlog (default: 10, -1 mean all).",
    "    Entries are made of:",
    "    id, timestamp, time in microseconds, arguments array, client IP and port,",
    "    client name",
    "LEN",
    "    Return the length of the slowlog.",
    "RESET",
    "    Reset the slowlog.",
    "HELP",
    "    Print this help.",
];

pub fn parse<'a>(a: &[&'a [u8]]) -> CmdResult<Command<'a>> {
    let sub = a[0];
    let rest = &a[1..];
    let (name, max_rest) = if eq(sub, "GET") {
        ("get", 1)
    } else if eq(sub, "LEN") {
        ("len", 0)
    } else if eq(sub, "RESET") {
        ("reset", 0)
    } else if eq(sub, "HELP") {
        ("help", 0)
    } else {
        return Err(CmdError::msg(format!(
            "ERR unknown subcommand '{}'. Try SLOWLOG HELP.",
            String::from_utf8_lossy(sub)
        )));
    };
    if rest.len() > max_rest {
        return Err(CmdError::arity(&format!("slowlog|{name}")));
    }
    Ok(Command::SlowLog(match name {
        "get" => SlowLogSub::Get(match rest {
            [] => Some(10),
            [n] => {
                let n = int(n)?;
                if n < -1 {
                    return Err(CmdError::msg(
                        "ERR count should be greater than or equal to -1",
                    ));
                }
                if n == -1 {
                    None
                } else {
                    Some(n as usize)
                }
            }
            _ => return Err(CmdError::SYNTAX),
        }),
        "len" => SlowLogSub::Len,
        "reset" => SlowLogSub::Reset,
        _ => SlowLogSub::Help,
    }))
}

pub fn exec(sub: SlowLogSub, node: &Node, out: &mut dyn ReplySink) {
    let log = &node.slowlog;
    match sub {
        SlowLogSub::Get(count) => log.with_newest(count, |entries| {
            out.array(entries.len());
            for e in entries {
                out.array(6);
                out.int(e.id as i64);
                out.int(e.unix_secs as i64);
                out.int(e.us as i64);
                out.array(e.args.len());
                for a in &e.args {
                    out.bulk(a);
                }
                out.bulk(e.addr.to_string().as_bytes());
                out.bulk(e.name.as_bytes());
            }
        }),
        SlowLogSub::Len => out.int(log.len() as i64),
        SlowLogSub::Reset => {
            log.reset();
            out.simple("OK");
        }
        SlowLogSub::Help => {
            out.array(HELP.len());
            for l in HELP {
                out.simple(l);
            }
        }
    }
}
