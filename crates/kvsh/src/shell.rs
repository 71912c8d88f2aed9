//! Help, tab completion and syntax hints of the interactive shell.

use std::borrow::Cow;

use ringkv_proto::commands::TABLE;
use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::{Hint, Hinter};
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

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
        "resolve",
        "resolve key value",
        "replace every sibling of key by value (put with get's context); prints OK",
    ),
    (
        "cluster",
        "cluster nodes|info|join host:port|leave [id]|forget id|cancel [id]",
        "the cluster: its nodes (a table), settings; join, leave or forget a node (waits, with a \
         progress bar, until its partitions moved), cancel a join or leave",
    ),
    (
        "help",
        "help [command]",
        "list commands, or show one command's syntax",
    ),
    ("quit", "quit", "leave kvsh (also: exit, Ctrl-D)"),
    ("exit", "exit", "leave kvsh"),
];

/// Every command kvsh knows: its own, then the server's (from the shared command table).
/// Commands not listed are still sent to the server.
fn entries() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    SHELL_COMMANDS
        .iter()
        .copied()
        .chain(TABLE.iter().map(|s| (s.name, s.syntax, s.about)))
}

pub fn help_text(command: Option<&[u8]>) -> String {
    let find = |name: &[u8]| entries().find(|(n, _, _)| n.as_bytes().eq_ignore_ascii_case(name));
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
            for spec in TABLE {
                s.push_str(&format!("  {:<44} {}\n", spec.syntax, spec.about));
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

pub struct ShellHelper;

/// A hint that is only shown, never inserted.
pub struct SyntaxHint(String);

impl Hint for SyntaxHint {
    fn display(&self) -> &str {
        &self.0
    }
    fn completion(&self) -> Option<&str> {
        None
    }
}

fn command_names() -> impl Iterator<Item = &'static str> {
    entries().map(|(name, _, _)| name)
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
        if let [first] = earlier.as_slice() {
            if first.eq_ignore_ascii_case("cluster") {
                return Ok((
                    start,
                    complete_from(crate::cluster::SUBCOMMANDS, &before[start..], true),
                ));
            }
        }
        let completing_name =
            earlier.is_empty() || (earlier.len() == 1 && earlier[0].eq_ignore_ascii_case("help"));
        if !completing_name {
            return Ok((start, Vec::new()));
        }
        let names: Vec<&str> = command_names().collect();
        Ok((start, complete_from(&names, &before[start..], false)))
    }
}

/// The words of `words` that start with `prefix` (ignoring case), in the case of the prefix's
/// first letter (`empty_lower` for an empty prefix), sorted, without duplicates.
fn complete_from(words: &[&str], prefix: &str, empty_lower: bool) -> Vec<String> {
    let lower = prefix
        .chars()
        .next()
        .map_or(empty_lower, |c| c.is_ascii_lowercase());
    let mut out: Vec<String> = words
        .iter()
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
    out
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
        let (_, syntax, _) = entries().find(|(n, _, _)| n.eq_ignore_ascii_case(name))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn complete(line: &str) -> Vec<String> {
        let history = DefaultHistory::new();
        let ctx = Context::new(&history);
        ShellHelper
            .complete(line, line.len(), &ctx)
            .expect("complete")
            .1
    }

    #[test]
    fn cluster_is_completed_and_documented() {
        assert!(complete("clu").contains(&"cluster".to_string()));
        assert_eq!(
            complete("cluster "),
            ["cancel", "forget", "info", "join", "leave", "nodes"]
        );
        assert_eq!(complete("CLUSTER j"), ["join"]);
        assert_eq!(complete("cluster N"), ["NODES"]);
        let help = help_text(None);
        assert!(
            help.contains("cluster nodes|info|join host:port|leave [id]|forget id|cancel [id]"),
            "{help}"
        );
        let one = help_text(Some(b"cluster"));
        assert!(one.contains("join host:port"), "{one}");
    }
}
