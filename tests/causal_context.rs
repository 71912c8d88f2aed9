//! Causal contexts over the binary protocol (protocol.md §2.4): PUT and DELETE descend from
//! the context they are given, a DELETE leaves a tombstone so the next write of the key
//! descends from it (not counted as a key, kept across a restart), and a binary COMMAND GET
//! replies Versioned as GET does.
//!
//! The context is opaque to clients; these tests decode it with the server's own
//! `VectorClock` to check what it carries.

mod common;

use common::*;
use ringkv::store::VectorClock;
use ringkv_client::{Bytes, Client, ClientConfig, PutOptions, Value};

/// An actor that is not this node: a context carrying its counter can only come from the
/// client.
const OTHER: u64 = 0x5eed_0000_0000_0077;

async fn connect(server: &Server) -> Client {
    Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("connect")
}

fn context_with(actor: u64, n: u64) -> Bytes {
    let mut c = VectorClock::new();
    for _ in 0..n {
        c.increment(actor);
    }
    Bytes::from(c.encoded())
}

fn clock(ctx: &[u8]) -> VectorClock {
    VectorClock::decode(ctx).expect("a context the server made decodes")
}

fn node_id(client: &Client) -> u64 {
    client.server_info().expect("handshake done").node_id
}

async fn context_of(client: &Client, key: &str) -> VectorClock {
    let v = client.get(key).await.unwrap().expect("key present");
    clock(&v.context)
}

#[tokio::test(flavor = "current_thread")]
async fn put_descends_from_the_context_it_is_given() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let me = node_id(&client);

    let opts = PutOptions {
        context: Some(context_with(OTHER, 5)),
        ttl: None,
    };
    let ctx = clock(&client.put_with("k", "v", opts).await.unwrap());
    assert_eq!(
        ctx.get(OTHER),
        5,
        "PUT dropped the context's counter: {ctx:?}"
    );
    assert_eq!(ctx.get(me), 1, "{ctx:?}");
    let read = context_of(&client, "k").await;
    assert_eq!(read, ctx, "GET returns the context PUT made");

    // A later PUT without a context still descends from the stored version.
    let next = clock(&client.put("k", "w").await.unwrap());
    assert_eq!((next.get(OTHER), next.get(me)), (5, 2), "{next:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn delete_descends_from_the_context_it_is_given() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let me = node_id(&client);

    client.put("d", "v").await.unwrap();
    assert!(client
        .delete_with("d", context_with(OTHER, 3))
        .await
        .unwrap());
    // Gone for every reader: GET, EXISTS, DBSIZE, KEYS, SCAN.
    assert!(client.get("d").await.unwrap().is_none());
    assert_eq!(client.command(&["GET", "d"]).await.unwrap(), Value::Nil);
    assert_eq!(client.exists(&["d"]).await.unwrap(), 0);
    assert_eq!(client.dbsize().await.unwrap(), 0);
    assert_eq!(
        client.command(&["KEYS", "*"]).await.unwrap(),
        Value::Array(vec![])
    );
    match client.command(&["SCAN", "0"]).await.unwrap() {
        Value::Array(items) => assert_eq!(items.get(1), Some(&Value::Array(vec![]))),
        other => panic!("SCAN reply {other:?}"),
    }
    assert!(!client.delete("d").await.unwrap(), "already deleted");

    // The next write descends from the delete: its context's counter and 3 events here
    // (PUT, DELETE, PUT).
    let ctx = clock(&client.put("d", "again").await.unwrap());
    assert_eq!(ctx.get(OTHER), 3, "DELETE ignored its context: {ctx:?}");
    assert_eq!(ctx.get(me), 3, "{ctx:?}");
    assert_eq!(client.dbsize().await.unwrap(), 1);

    // FLUSHDB drops tombstones too: a write after it starts a new history.
    assert!(client
        .delete_with("d", context_with(OTHER, 4))
        .await
        .unwrap());
    client.command(&["FLUSHDB"]).await.unwrap();
    let fresh = clock(&client.put("d", "new").await.unwrap());
    assert_eq!((fresh.get(OTHER), fresh.get(me)), (0, 1), "{fresh:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn delete_of_a_missing_key_with_a_context_is_remembered_across_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let me;
    {
        let server = Server::start_in(data.path(), &["--threads", "2"]);
        let client = connect(&server).await;
        me = node_id(&client);
        assert!(!client
            .delete_with("m", context_with(OTHER, 2))
            .await
            .unwrap());
        assert_eq!(client.dbsize().await.unwrap(), 0);
        assert!(server.terminate().success());
    }
    let server = Server::start_in(data.path(), &["--threads", "2"]);
    let client = connect(&server).await;
    assert_eq!(node_id(&client), me, "same node after a restart");
    assert_eq!(client.dbsize().await.unwrap(), 0);
    let ctx = clock(&client.put("m", "v").await.unwrap());
    assert_eq!((ctx.get(OTHER), ctx.get(me)), (2, 2), "{ctx:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_bad_context_is_refused_and_changes_nothing() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client.put("b", "v").await.unwrap();
    let before = context_of(&client, "b").await;
    let err = client.delete_with("b", [0xff, 0xff]).await.unwrap_err();
    assert_eq!(
        err.server_prefix(),
        Some("ERR"),
        "a malformed context is an error: {err}"
    );
    assert_eq!(context_of(&client, "b").await, before);
}

#[tokio::test(flavor = "current_thread")]
async fn command_get_replies_versioned_with_the_context() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client.put("g", "1").await.unwrap();
    let read = client.get("g").await.unwrap().expect("present");
    assert_eq!(
        client.command(&["GET", "g"]).await.unwrap(),
        Value::Versioned {
            context: read.context.clone(),
            values: vec![Bytes::from_static(b"1")],
        }
    );
    assert_eq!(
        client.command(&["GET", "missing"]).await.unwrap(),
        Value::Nil
    );
    // Only GET: MGET and GETDEL reply as over RESP.
    assert_eq!(
        client.command(&["MGET", "g", "missing"]).await.unwrap(),
        Value::Array(vec![Value::Bulk(Bytes::from_static(b"1")), Value::Nil])
    );
    assert_eq!(
        client.command(&["GETDEL", "g"]).await.unwrap(),
        Value::Bulk(Bytes::from_static(b"1"))
    );
    client.put("g", "1").await.unwrap();
    // The same GET over RESP is a plain bulk string (the context is not shown).
    let mut resp = common::resp::Conn::connect(server.addr);
    assert_eq!(
        resp.call_str(&["GET", "g"]),
        common::resp::Reply::Bulk(Some(b"1".to_vec()))
    );
}
