//! CONFIG RESETSTAT while both event loops are busy: each reset zeroes INFO stats and
//! commandstats (a reset undone by a loop's concurrent update would leave the earlier counts
//! in place), and once the load stops the counters count exactly again.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::*;

const CLIENTS: u64 = 4;
const ROUNDS: usize = 15;
/// Commands the load makes between two resets, so an undone reset would stand out.
const BETWEEN_RESETS: u64 = 500;
const DEADLINE: Duration = Duration::from_secs(60);
const AFTER: u64 = 100;

fn text(r: Reply) -> String {
    match r {
        Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("expected a bulk reply, got {other:?}"),
    }
}

/// `name:value` from an INFO section.
fn info_field(c: &mut Conn, section: &str, name: &str) -> u64 {
    let t = text(c.call_str(&["INFO", section]));
    let prefix = format!("{name}:");
    t.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in INFO {section}:\n{t}"))
}

/// `calls=` of `cmdstat_<cmd>`, 0 when the command is not listed (never called since reset).
fn cmd_calls(c: &mut Conn, cmd: &str) -> u64 {
    let t = text(c.call_str(&["INFO", "commandstats"]));
    let prefix = format!("cmdstat_{cmd}:calls=");
    t.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let n = rest.split(',').next().unwrap_or_default();
            n.parse()
                .unwrap_or_else(|_| panic!("bad calls in INFO commandstats:\n{t}"))
        })
        .unwrap_or(0)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

#[test]
fn resetstat_under_load_zeroes_and_counting_continues() {
    let server = Server::start(&["--threads", "2", "--shards", "4", "--fsync", "off"]);
    let issued = Arc::new(AtomicU64::new(0));
    let replied = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let (issued, replied, stop) = (issued.clone(), replied.clone(), stop.clone());
            let addr = server.addr;
            thread::spawn(move || {
                let mut c = Conn::connect(addr);
                let mut i = 0u64;
                while !stop.load(SeqCst) {
                    // Keys on both loops.
                    let key = format!("load:{t}:{}", i % 64);
                    issued.fetch_add(1, SeqCst);
                    assert_eq!(c.call_str(&["SET", &key, "v"]), Reply::Simple("OK".into()));
                    replied.fetch_add(1, SeqCst);
                    i += 1;
                }
            })
        })
        .collect();

    let mut c = Conn::connect(server.addr);
    for round in 0..ROUNDS {
        let start = replied.load(SeqCst);
        wait_until("load between resets", || {
            replied.load(SeqCst) >= start + BETWEEN_RESETS
        });
        // Every SET replied before the reset was recorded before it.
        let before = replied.load(SeqCst);
        assert_eq!(
            c.call_str(&["CONFIG", "RESETSTAT"]),
            Reply::Simple("OK".into())
        );
        let sets = cmd_calls(&mut c, "set");
        let total = info_field(&mut c, "stats", "total_commands_processed");
        let since = issued.load(SeqCst) - before;
        assert!(
            sets <= since,
            "round {round}: {sets} SETs counted after RESETSTAT, but at most {since} ran \
             since (of {before} before it): the reset was undone or incomplete"
        );
        // The loop's command counter is added per batch, after the replies: allow one batch
        // per load client, plus this connection's RESETSTAT and INFO.
        assert!(
            total <= since + CLIENTS + 2,
            "round {round}: total_commands_processed {total} after RESETSTAT, at most \
             {since} SETs ran since"
        );
    }
    stop.store(true, SeqCst);
    for t in load {
        t.join().expect("load thread");
    }

    // Quiet now: the counters count exactly again after a reset.
    assert_eq!(
        c.call_str(&["CONFIG", "RESETSTAT"]),
        Reply::Simple("OK".into())
    );
    for i in 0..AFTER {
        let key = format!("after:{i}");
        assert_eq!(c.call_str(&["SET", &key, "v"]), Reply::Simple("OK".into()));
    }
    assert_eq!(cmd_calls(&mut c, "set"), AFTER);
    assert_eq!(cmd_calls(&mut c, "get"), 0);
    // RESETSTAT itself (counted after it ran), the SETs, and the INFO commandstats calls;
    // a load connection's last batch may be added just after its reply was read.
    let total = info_field(&mut c, "stats", "total_commands_processed");
    let exact = 1 + AFTER + 2;
    assert!(
        (exact..=exact + CLIENTS).contains(&total),
        "total_commands_processed {total} after the reset, expected {exact}"
    );
}
