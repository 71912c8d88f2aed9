//! Causal contexts over the binary protocol (protocol.md §2.4): PUT descends from the context
//! it is given, a bad context is refused, and a binary COMMAND GET replies Versioned as GET
//! does. (Siblings and deletes: tests/siblings.rs.)
//!
//! The context is opaque to clients; these tests decode it with the server's own
//! `VersionVector` to check what it carries.

mod common;

use common::*;
use ringkv::store::VersionVector;
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
    let mut c = VersionVector::new();
    c.add_dot(ringkv::store::dvv::Dot { actor, counter: n });
    Bytes::from(c.encoded())
}

fn clock(ctx: &[u8]) -> VersionVector {
    VersionVector::decode(ctx).expect("a context the server made decodes")
}

async fn context_of(client: &Client, key: &str) -> VersionVector {
    let v = client.get(key).await.unwrap().expect("key present");
    clock(&v.context)
}

#[tokio::test(flavor = "current_thread")]
async fn put_descends_from_the_context_it_is_given() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let me = dot_actor(&server);

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
    assert!(ctx.get(me) >= 1, "{ctx:?}");
    let read = context_of(&client, "k").await;
    assert_eq!(read, ctx, "GET returns the context PUT made");

    // A later PUT without a context still descends from the stored version, with a newer
    // dot of this node.
    let next = clock(&client.put("k", "w").await.unwrap());
    assert_eq!(next.get(OTHER), 5, "{next:?}");
    assert!(next.get(me) > ctx.get(me), "{next:?} after {ctx:?}");
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
