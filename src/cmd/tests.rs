//! The command table against parse, family and route (split from mod.rs for its size).

use super::*;

/// Argument vectors to try for a command name; the first that parses is used.
fn candidates(name: &str) -> Vec<Vec<&str>> {
    vec![
        vec![name],
        vec![name, "k"],
        vec![name, "k", "1"],
        vec![name, "k", "1", "2"],
        vec![name, "count"],
        vec![name, "get"],
        vec![name, "get", "maxclients"],
        vec![name, "setname", "n"],
        vec![name, "default", "pw"],
        vec![name, "0"],
        vec![name, "nodes"],
        vec![name, "1", "0"],
        vec![name, "k", "1", "0"],
        vec![name, "encoding", "k"],
        vec![name, "and", "d", "k"],
    ]
}

/// Every command of the table parses, and its family agrees with its route and with the
/// file that executes it: keyed families have keys, the others have none.
#[test]
fn every_command_has_a_family_that_agrees_with_its_route() {
    let mut unparsed = Vec::new();
    for spec in table::TABLE {
        let parsed = candidates(spec.name).into_iter().find_map(|args| {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            parse(&args, false).ok().map(|c| format!("{c:?}"))
        });
        if parsed.is_none() {
            unparsed.push(spec.name);
        }
    }
    assert!(unparsed.is_empty(), "no sample parses for {unparsed:?}");
    for spec in table::TABLE {
        for args in candidates(spec.name) {
            let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
            let Ok(c) = parse(&args, false) else { continue };
            let keyed = matches!(
                c.route(),
                Route::Key(_) | Route::Keys(_) | Route::Pairs(_) | Route::Rename(..)
            );
            match c.family() {
                Family::Strings | Family::Keys => assert!(keyed, "{c:?} has no keys"),
                Family::Keyspace => assert_eq!(c.route(), Route::All, "{c:?}"),
                Family::Connection | Family::Server => {
                    assert_eq!(c.route(), Route::None, "{c:?}")
                }
            }
        }
    }
    for (args, family) in [
        (&[&b"VGET"[..], b"k"][..], Family::Strings),
        (&[b"VDEL", b"k", b""], Family::Strings),
        (&[b"VPUT", b"k", b"v", b"", &[0u8; 8]], Family::Strings),
    ] {
        let c = parse(args, true).expect("internal command parses");
        assert_eq!(c.family(), family);
        assert!(matches!(c.route(), Route::Key(b"k")), "{c:?}");
    }
}

/// Every request parses into a `Command` that is moved around: a new variant must not make
/// it larger than the 88 bytes it had (box or heap-allocate a large payload instead).
#[test]
fn command_stays_small() {
    assert!(
        std::mem::size_of::<Command<'static>>() <= 88,
        "Command is {} bytes",
        std::mem::size_of::<Command<'static>>()
    );
}
