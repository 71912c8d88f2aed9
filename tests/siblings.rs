//! Concurrent versions over the binary protocol (issue "Versions and completions"): siblings
//! kept and resolved by causal context, last-write-wins mode, the deterministic winner Redis
//! commands see, deletes as clocked tombstones, the tombstone grace, and the sibling bound.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringkv_client::{Bytes, Client, ClientConfig, PutOptions, Value};

async fn connect(server: &Server) -> Client {
    Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("connect")
}

fn with(context: &Bytes) -> PutOptions {
    PutOptions {
        context: Some(context.clone()),
        ttl: None,
    }
}

/// The live values of `key` over the binary GET, sorted (siblings come in dot order).
async fn values(client: &Client, key: &str) -> Vec<Bytes> {
    let mut v = client
        .get(key)
        .await
        .unwrap()
        .map_or_else(Vec::new, |v| v.values);
    v.sort();
    v
}

async fn info_field(client: &Client, field: &str) -> u64 {
    let Value::Bulk(text) = client.command(&["INFO", "stats"]).await.unwrap() else {
        panic!("INFO is not a bulk string")
    };
    let text = String::from_utf8_lossy(&text).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in INFO stats:\n{text}"))
}

async fn wait_for_tombstones(client: &Client, want: u64, within: Duration) {
    wait_until_async(&format!("{want} tombstones"), within, || async {
        info_field(client, "tombstones").await == want
    })
    .await;
}

/// Two clients read the same context and both write: both versions stay, as siblings, with
/// one context; a write with that context resolves them to one. RESP sees one winner.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_writes_are_siblings_until_a_write_resolves_them() {
    let server = Server::start(&["--threads", "2"]);
    let (a, b) = (connect(&server).await, connect(&server).await);
    a.put("k", "base").await.unwrap();
    let ctx = a.get("k").await.unwrap().expect("present").context;
    a.put_with("k", "from-a", with(&ctx)).await.unwrap();
    b.put_with("k", "from-b", with(&ctx)).await.unwrap();

    let read = a.get("k").await.unwrap().expect("present");
    let mut got = read.values.clone();
    got.sort();
    assert_eq!(
        got,
        ["from-a", "from-b"],
        "both concurrent writes are siblings"
    );
    assert!(read.has_siblings());

    // RESP: the deterministic winner, the later write (newest timestamp, then greatest dot).
    let mut resp = common::resp::Conn::connect(server.addr);
    assert_eq!(
        resp.call(&[b"GET", b"k"]),
        common::resp::Reply::Bulk(Some(b"from-b".to_vec())),
        "RESP GET shows the newest sibling"
    );
    // A binary COMMAND GET replies as the GET opcode: its context covers both siblings, so
    // it carries both (a context with one value would let a write supersede the other unseen).
    match a.command(&["GET", "k"]).await.unwrap() {
        Value::Versioned {
            mut values,
            context,
        } => {
            values.sort();
            assert_eq!(values, ["from-a", "from-b"]);
            assert_eq!(context, read.context);
        }
        other => panic!("COMMAND GET replied {other:?}"),
    }
    assert_eq!(a.command(&["DBSIZE"]).await.unwrap(), Value::Int(1));

    // Writing with the context that came with both siblings supersedes both.
    b.put_with("k", "merged", with(&read.context))
        .await
        .unwrap();
    assert_eq!(values(&a, "k").await, ["merged"]);
}

/// A PUT reply that leaves siblings carries them all, so its context is safe to write with;
/// one that leaves a single version carries no values.
#[tokio::test(flavor = "current_thread")]
async fn a_put_that_leaves_siblings_returns_them() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let first = client
        .put_returning("p", "one", PutOptions::default())
        .await
        .unwrap();
    assert!(first.values.is_empty(), "{first:?}");
    client
        .put_with("p", "two", with(&first.context))
        .await
        .unwrap();
    let mut reply = client
        .put_returning("p", "three", with(&first.context))
        .await
        .unwrap();
    reply.values.sort();
    assert_eq!(reply.values, ["three", "two"]);
    // Writing with that context supersedes both, which is sound because the reply showed both.
    client
        .put_with("p", "four", with(&reply.context))
        .await
        .unwrap();
    assert_eq!(values(&client, "p").await, ["four"]);
}

/// With --conflicts lww, concurrent writes never become siblings: the newest timestamp wins.
#[tokio::test(flavor = "current_thread")]
async fn lww_keeps_only_the_newest_write() {
    let server = Server::start(&["--threads", "2", "--conflicts", "lww"]);
    let (a, b) = (connect(&server).await, connect(&server).await);
    let ctx = a.put("k", "base").await.unwrap();
    a.put_with("k", "older", with(&ctx)).await.unwrap();
    b.put_with("k", "newer", with(&ctx)).await.unwrap();
    let read = a.get("k").await.unwrap().expect("present");
    assert_eq!(read.values, ["newer"], "no sibling is stored in lww mode");
}

/// A DELETE with a stale context leaves the write it did not see as a live sibling; one with
/// the current context hides the key from every reader.
#[tokio::test(flavor = "current_thread")]
async fn delete_supersedes_only_what_its_context_covers() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let stale = client.put("d", "v1").await.unwrap();
    client.put_with("d", "v2", with(&stale)).await.unwrap();
    // The delete saw v1 only (the context of its write): v2 is concurrent with it and stays.
    assert!(client.delete_with("d", &stale).await.unwrap());
    assert_eq!(
        values(&client, "d").await,
        ["v2"],
        "the concurrent write survives"
    );

    let current = client.get("d").await.unwrap().expect("present").context;
    assert!(client.delete_with("d", &current).await.unwrap());
    assert!(client.get("d").await.unwrap().is_none());
    assert_eq!(client.command(&["GET", "d"]).await.unwrap(), Value::Nil);
    assert_eq!(client.exists(&["d"]).await.unwrap(), 0);
    assert_eq!(client.dbsize().await.unwrap(), 0);
    assert_eq!(
        client.command(&["KEYS", "*"]).await.unwrap(),
        Value::Array(vec![])
    );
}

/// The tombstone is persisted: it survives a crash and restart (replayed from the WAL) while
/// its grace lasts, and is purged once the grace has passed.
#[tokio::test(flavor = "current_thread")]
async fn tombstone_survives_restart_and_is_purged_after_the_grace() {
    const GRACE: Duration = Duration::from_secs(3);
    let data = tempfile::tempdir().unwrap();
    let long = ["--threads", "2", "--tombstone-grace-secs", "600"];
    let deleted_at;
    {
        let server = Server::start_in(data.path(), &long);
        let client = connect(&server).await;
        let ctx = client.put("t", "v").await.unwrap();
        // Taken before the request: the tombstone's time is the server's, somewhere in the
        // round trip, so only this is a lower bound for it.
        deleted_at = Instant::now();
        assert!(client.delete_with("t", &ctx).await.unwrap());
        assert_eq!(info_field(&client, "tombstones").await, 1);
        assert_eq!(client.dbsize().await.unwrap(), 0, "tombstones are not keys");
        // kill -9: the tombstone comes back from the WAL, not from a shutdown snapshot.
        let _ = server.kill();
    }
    {
        let server = Server::start_in(data.path(), &long);
        let client = connect(&server).await;
        assert_eq!(
            info_field(&client, "tombstones").await,
            1,
            "the tombstone survived the crash"
        );
        assert!(client.get("t").await.unwrap().is_none());
        let _ = server.kill();
    }
    // The same tombstone under a grace of 3 s: purged once 3 s have passed since the delete.
    let server = Server::start_in(
        data.path(),
        &["--threads", "2", "--tombstone-grace-secs", "3"],
    );
    let client = connect(&server).await;
    wait_for_tombstones(&client, 0, GRACE + Duration::from_secs(20)).await;
    assert!(
        deleted_at.elapsed() >= GRACE,
        "purged after {:?}, before the grace of {GRACE:?}",
        deleted_at.elapsed()
    );
    assert_eq!(info_field(&client, "tombstones_purged").await, 1);
    assert!(client.get("t").await.unwrap().is_none());
}

/// Redis deletes (DEL, UNLINK, GETDEL, an expiry in the past) write tombstones too; with no
/// peers and no grace they are purged as soon as they are durable.
#[tokio::test(flavor = "current_thread")]
async fn redis_deletes_write_tombstones_that_are_purged_when_durable() {
    let server = Server::start(&["--threads", "2", "--tombstone-grace-secs", "600"]);
    let client = connect(&server).await;
    for k in ["a", "b", "c", "d"] {
        client.command(&["SET", k, "v"]).await.unwrap();
    }
    client.command(&["DEL", "a"]).await.unwrap();
    client.command(&["UNLINK", "b"]).await.unwrap();
    client.command(&["GETDEL", "c"]).await.unwrap();
    client.command(&["PEXPIREAT", "d", "1"]).await.unwrap();
    assert_eq!(info_field(&client, "tombstones").await, 4);
    assert_eq!(client.dbsize().await.unwrap(), 0);
    drop(server);

    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client.command(&["SET", "a", "v"]).await.unwrap();
    client.command(&["DEL", "a"]).await.unwrap();
    wait_for_tombstones(&client, 0, Duration::from_secs(20)).await;
}

/// A context kept from before a key was deleted and purged does not cover a write made after
/// the purge (dots come from the shard's log position, never reused): the stale write and the
/// new one become siblings instead of the new one being silently superseded.
#[tokio::test(flavor = "current_thread")]
async fn a_context_from_before_a_purge_does_not_supersede_later_writes() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let old = client.put("k", "v1").await.unwrap();
    client.put_with("k", "v2", with(&old)).await.unwrap();
    let before = client.get("k").await.unwrap().expect("present").context;
    assert!(client.delete_with("k", &before).await.unwrap());
    wait_for_tombstones(&client, 0, Duration::from_secs(20)).await;
    client.put("k", "after-purge").await.unwrap();
    client.put_with("k", "stale", with(&before)).await.unwrap();
    assert_eq!(values(&client, "k").await, ["after-purge", "stale"]);
}

/// Past --max-siblings a write is refused with an error naming the key, and nothing changes.
#[tokio::test(flavor = "current_thread")]
async fn too_many_siblings_is_refused_naming_the_key() {
    let server = Server::start(&["--threads", "2", "--max-siblings", "3"]);
    let client = connect(&server).await;
    let ctx = client.put("s", "base").await.unwrap();
    for v in ["1", "2", "3"] {
        client.put_with("s", v, with(&ctx)).await.unwrap();
    }
    let err = client
        .put_with("s", "4", with(&ctx))
        .await
        .expect_err("a fourth sibling is refused");
    let text = err.to_string();
    assert!(
        text.contains("'s'") && text.contains("--max-siblings 3"),
        "{text}"
    );
    assert_eq!(values(&client, "s").await, ["1", "2", "3"]);
    // The context of a read that returned them resolves them.
    let read = client.get("s").await.unwrap().expect("present");
    client
        .put_with("s", "one", with(&read.context))
        .await
        .unwrap();
    assert_eq!(values(&client, "s").await, ["one"]);
}

/// The server's sibling limits agree with what the store decodes.
#[test]
fn sibling_limits_agree() {
    assert_eq!(
        ringkv::config::DEFAULT_MAX_SIBLINGS,
        ringkv::store::write::DEFAULT_MAX_SIBLINGS
    );
    const { assert!(ringkv::config::MAX_SIBLINGS_LIMIT < ringkv::store::dvv::MAX_DECODED_SIBLINGS) };
}

/// EXPIRE, PEXPIRE, PERSIST, GETEX and SET KEEPTTL are writes: each makes a new version, so the
/// key's context moves on (and replicas can order the TTL change like any write).
#[tokio::test(flavor = "current_thread")]
async fn ttl_changes_are_new_versions() {
    use ringkv::store::VersionVector;
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client.put("k", "v").await.unwrap();
    let mut last = VersionVector::new();
    for cmd in [
        &["EXPIRE", "k", "100"][..],
        &["PEXPIRE", "k", "200000"],
        &["PERSIST", "k"],
        &["GETEX", "k", "EX", "50"],
        &["SET", "k", "w", "KEEPTTL"],
    ] {
        client.command(cmd).await.unwrap();
        let read = client.get("k").await.unwrap().expect("present");
        let ctx = VersionVector::decode(&read.context).unwrap();
        assert!(
            ctx.descends(&last) && ctx != last,
            "{cmd:?} did not make a new version: {ctx:?} after {last:?}"
        );
        last = ctx;
    }
    assert!(matches!(
        client.command(&["TTL", "k"]).await.unwrap(),
        Value::Int(1..=50)
    ));
}

/// With a tombstone grace, an expired key behaves as a tombstone dated at its expiry: invisible,
/// not a key, counted in `tombstones` until the grace passes. Without one it is dropped, as
/// Redis drops it.
#[tokio::test(flavor = "current_thread")]
async fn an_expired_key_is_a_tombstone_for_the_grace() {
    let server = Server::start(&["--threads", "2", "--tombstone-grace-secs", "600"]);
    let client = connect(&server).await;
    client
        .command(&["SET", "e", "v", "PX", "50"])
        .await
        .unwrap();
    wait_for_tombstones(&client, 1, Duration::from_secs(20)).await;
    assert!(client.get("e").await.unwrap().is_none());
    assert_eq!(client.dbsize().await.unwrap(), 0);
    drop(server);

    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client
        .command(&["SET", "e", "v", "PX", "50"])
        .await
        .unwrap();
    wait_until_async("the key to expire", Duration::from_secs(20), || async {
        info_field(&client, "expired_keys").await > 0
    })
    .await;
    assert_eq!(info_field(&client, "tombstones").await, 0);
    assert_eq!(client.dbsize().await.unwrap(), 0);
}
