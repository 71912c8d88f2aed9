//! Multi-shard commands lock their shards in ascending order only, so any mix of them from
//! many connections on several loops finishes: cross-shard MSET, MSETNX, DEL, EXISTS, MGET
//! and RENAME, each connection giving its keys in a different order, over shared keys.
//! A deadlock would leave clients waiting: the test fails when they are not all done within
//! a deadline (the connections have read timeouts, and the server is killed on drop).

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::*;

const CLIENTS: usize = 8;
const ROUNDS: usize = 150;
const SHARED_KEYS: usize = 16;
const SHARDS: u64 = 16;
const DEADLINE: Duration = Duration::from_secs(60);

/// The shard of `key` on a server with a new data directory (placement by the default
/// partitions), as `Store::shard_of`.
fn shard_of(key: &str) -> u64 {
    let placement = ringkv::store::Placement::partitioned(ringkv::config::DEFAULT_PARTITIONS)
        .expect("a power of two");
    placement.shard(ringkv_proto::key_hash(key.as_bytes()), SHARDS as usize) as u64
}

/// Two key names of client `c` that live on different shards.
fn rename_pair(c: usize) -> (String, String) {
    let a = format!("ren:{c}:a");
    let b = (0..)
        .map(|i| format!("ren:{c}:b{i}"))
        .find(|b| shard_of(b) != shard_of(&a))
        .expect("some key lands on another shard");
    (a, b)
}

fn client(addr: std::net::SocketAddr, c: usize) -> Result<(), String> {
    let mut conn = Conn::try_connect(addr).map_err(|e| format!("client {c}: connect: {e}"))?;
    let mut keys: Vec<String> = (0..SHARED_KEYS).map(|i| format!("shared:{i}")).collect();
    // Each client its own key order: rotated, and reversed for odd clients.
    keys.rotate_left(c % SHARED_KEYS);
    if c % 2 == 1 {
        keys.reverse();
    }
    let (src, dst) = rename_pair(c);
    let mut call = |args: Vec<&str>| -> Result<Reply, String> {
        let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        match conn.try_call(&bytes) {
            Ok(Reply::Error(e)) => Err(format!("client {c}: {args:?} -> error {e}")),
            Ok(r) => Ok(r),
            Err(e) => Err(format!("client {c}: {args:?} got no reply: {e}")),
        }
    };
    call(vec!["SET", &src, "v"])?;
    let value = format!("c{c}");
    for round in 0..ROUNDS {
        let mut mset = vec!["MSET"];
        for k in &keys {
            mset.push(k);
            mset.push(&value);
        }
        call(mset)?;
        let mut mget = vec!["MGET"];
        mget.extend(keys.iter().map(String::as_str));
        call(mget)?;
        let mut exists = vec!["EXISTS"];
        exists.extend(keys.iter().rev().map(String::as_str));
        call(exists)?;
        let tmp = format!("tmp:{c}:{round}");
        let mut msetnx = vec!["MSETNX", tmp.as_str(), "1"];
        msetnx.extend(keys.iter().take(3).flat_map(|k| [k.as_str(), "x"]));
        call(msetnx)?;
        let mut del = vec!["DEL", tmp.as_str()];
        del.extend(keys.iter().skip(5).take(3).map(String::as_str));
        call(del)?;
        let (from, to) = if round % 2 == 0 {
            (&src, &dst)
        } else {
            (&dst, &src)
        };
        let r = call(vec!["RENAME", from, to])?;
        if r != Reply::Simple("OK".into()) {
            return Err(format!("client {c}: RENAME {from} {to} -> {r:?}"));
        }
    }
    Ok(())
}

#[test]
fn cross_shard_commands_from_many_connections_all_finish() {
    let server = Server::start(&["--threads", "2", "--shards", "16", "--fsync", "off"]);
    let addr = server.addr;
    let (tx, rx) = mpsc::channel();
    for c in 0..CLIENTS {
        let tx = tx.clone();
        thread::spawn(move || {
            let _ = tx.send((c, client(addr, c)));
        });
    }
    drop(tx);
    let deadline = Instant::now() + DEADLINE;
    let mut done = 0;
    while done < CLIENTS {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((_, Ok(()))) => done += 1,
            Ok((_, Err(e))) => panic!("{e}"),
            Err(_) => panic!(
                "only {done} of {CLIENTS} clients finished {ROUNDS} rounds of cross-shard \
                 commands within {DEADLINE:?}: the others are stuck (a lock-order deadlock?)"
            ),
        }
    }
    assert_serving(&server);
}
