//! The `ringkv-client` crate against the real server over the binary protocol: multiplexing
//! many concurrent requests over one connection, causal contexts, TTLs, generic commands,
//! passwords, reconnecting and large values.
//!
//! No fixed sleeps: anything time-dependent polls a condition until a deadline.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use ringkv_client::{Bytes, Client, ClientConfig, ClientError, PutOptions, Value};

/// Generous bound for conditions that should become true quickly.
const DEADLINE: Duration = Duration::from_secs(10);

async fn connect(server: &Server) -> Client {
    Client::connect(server.addr, ClientConfig::default())
        .await
        .expect("connect")
}

/// The text of a server error reply, or a panic naming what came instead.
fn server_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> String {
    match r {
        Err(ClientError::Server(msg)) => msg,
        other => panic!("expected a server error reply, got {other:?}"),
    }
}

/// A stored value as the binary COMMAND path returns it (Versioned for GET-like commands,
/// Bulk otherwise); `None` for Nil.
fn value_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Nil => None,
        Value::Bulk(b) => Some(b.clone()),
        Value::Versioned { values, .. } if values.len() == 1 => Some(values[0].clone()),
        other => panic!("expected a value or nil, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_pipelined_requests_from_eight_tasks_on_one_connection() {
    const TASKS: usize = 8;
    const KEYS_PER_TASK: usize = 625; // 8 × 625 × (PUT + GET) = 10,000 requests
    const CHUNK: usize = 125; // 8 × 125 in flight at most, under max_in_flight

    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;

    let mut handles = Vec::new();
    for t in 0..TASKS {
        let client = client.clone();
        handles.push(tokio::spawn(async move {
            let keys: Vec<String> = (0..KEYS_PER_TASK).map(|i| format!("t{t}:{i}")).collect();
            let value = |i: usize| format!("value-of-task-{t}-key-{i}-{}", "x".repeat(i % 37));
            for chunk in (0..KEYS_PER_TASK).collect::<Vec<_>>().chunks(CHUNK) {
                let puts = chunk.iter().map(|&i| client.put(&keys[i], value(i)));
                for (r, &i) in join_all(puts).await.into_iter().zip(chunk) {
                    let ctx = r.unwrap_or_else(|e| panic!("put {}: {e}", keys[i]));
                    assert!(!ctx.is_empty(), "put {} returned an empty context", keys[i]);
                }
            }
            for chunk in (0..KEYS_PER_TASK).collect::<Vec<_>>().chunks(CHUNK) {
                let gets = chunk.iter().map(|&i| client.get(&keys[i]));
                for (r, &i) in join_all(gets).await.into_iter().zip(chunk) {
                    let v = r
                        .unwrap_or_else(|e| panic!("get {}: {e}", keys[i]))
                        .unwrap_or_else(|| panic!("get {}: missing", keys[i]));
                    assert_eq!(v.values.len(), 1, "{}: {v:?}", keys[i]);
                    assert_eq!(
                        v.value().unwrap().as_ref(),
                        value(i).as_bytes(),
                        "reply matched to the wrong request for {}",
                        keys[i]
                    );
                }
            }
        }));
    }
    let done = tokio::time::timeout(Duration::from_secs(60), join_all(handles))
        .await
        .expect("10,000 requests did not finish within 60 s");
    for r in done {
        r.expect("task panicked");
    }
    // Everything went over the one connection that is still open.
    assert!(client.server_info().is_some());
    assert_eq!(
        client.dbsize().await.unwrap(),
        (TASKS * KEYS_PER_TASK) as u64
    );
}

#[tokio::test(flavor = "current_thread")]
async fn causal_context_round_trip_and_garbage_context() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;

    let ctx1 = client.put("cc", "one").await.unwrap();
    assert!(!ctx1.is_empty());
    let got = client.get("cc").await.unwrap().expect("cc exists");
    assert!(!got.context.is_empty(), "GET must return a causal context");
    assert_eq!(got.values, vec![Bytes::from_static(b"one")]);

    let ctx2 = client
        .put_with(
            "cc",
            "two",
            PutOptions {
                context: Some(got.context.clone()),
                ttl: None,
            },
        )
        .await
        .unwrap();
    assert!(!ctx2.is_empty());
    assert_ne!(ctx2, got.context, "a write must produce a new context");
    let got2 = client.get("cc").await.unwrap().expect("cc exists");
    assert_eq!(got2.values, vec![Bytes::from_static(b"two")]);
    assert!(!got2.has_siblings());
    assert_eq!(
        got2.context, ctx2,
        "GET returns the context of the last PUT"
    );

    // A context nobody handed out: an error reply, and the connection stays usable.
    let err = server_error(
        client
            .put_with(
                "cc",
                "three",
                PutOptions {
                    context: Some(Bytes::from_static(b"garbage context")),
                    ttl: None,
                },
            )
            .await,
    );
    assert!(
        err.starts_with("ERR invalid causal context"),
        "unexpected error text: {err}"
    );
    let err = server_error(client.delete_with("cc", b"garbage context").await);
    assert!(err.starts_with("ERR invalid causal context"), "{err}");
    // Nothing was written by the rejected requests.
    let got3 = client.get("cc").await.unwrap().expect("cc exists");
    assert_eq!(got3.values, vec![Bytes::from_static(b"two")]);
    client.ping().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn put_with_ttl_expires() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;

    // Several keys, so that both loops (local and forwarded PUTs) are involved.
    let keys: Vec<String> = (0..8).map(|i| format!("short{i}")).collect();
    let ttl = Duration::from_millis(300);
    let before = Instant::now();
    for key in &keys {
        let opts = PutOptions {
            context: None,
            ttl: Some(ttl),
        };
        client.put_with(key, "lived", opts).await.unwrap();
    }
    client.put("long", "lived").await.unwrap();
    match client.command(&["PTTL", &keys[0]]).await.unwrap() {
        // -2 only if the test was descheduled for the whole TTL.
        Value::Int(ms) => assert!(ms == -2 || (0..=300).contains(&ms), "PTTL {ms}"),
        other => panic!("PTTL reply {other:?}"),
    }
    assert_eq!(
        client.command(&["PTTL", "long"]).await.unwrap(),
        Value::Int(-1)
    );

    let deadline = Instant::now() + DEADLINE;
    loop {
        let gets = join_all(keys.iter().map(|k| client.get(k))).await;
        let left = gets
            .into_iter()
            .filter(|g| g.as_ref().unwrap().is_some())
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} keys with a 300 ms TTL still there after {DEADLINE:?}"
        );
        tokio::task::yield_now().await;
    }
    // Expiry is counted in whole milliseconds of the wall clock: allow a little slack.
    assert!(
        before.elapsed() + Duration::from_millis(5) >= ttl,
        "keys vanished after {:?}, before their TTL of {ttl:?}",
        before.elapsed()
    );
    assert!(client.get("long").await.unwrap().is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn delete_returns_true_then_false() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;

    client.put("gone", "soon").await.unwrap();
    assert!(client.delete("gone").await.unwrap());
    assert!(!client.delete("gone").await.unwrap());
    assert!(client.get("gone").await.unwrap().is_none());
    assert!(!client.delete("never-existed").await.unwrap());
}

#[tokio::test(flavor = "current_thread")]
async fn generic_commands() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;

    assert_eq!(
        client.command(&["INCRBY", "n", "5"]).await.unwrap(),
        Value::Int(5)
    );
    assert_eq!(
        client.command(&["INCRBY", "n", "-7"]).await.unwrap(),
        Value::Int(-2)
    );
    assert_eq!(client.incr_by("n", 2).await.unwrap(), 0);

    client.command(&["SET", "a", "1"]).await.unwrap();
    client.command(&["SET", "c", "3"]).await.unwrap();
    match client
        .command(&["MGET", "a", "missing-b", "c", "missing-d"])
        .await
        .unwrap()
    {
        Value::Array(items) => {
            let got: Vec<Option<Bytes>> = items.iter().map(value_bytes).collect();
            assert_eq!(
                got,
                vec![
                    Some(Bytes::from_static(b"1")),
                    None,
                    Some(Bytes::from_static(b"3")),
                    None
                ]
            );
        }
        other => panic!("MGET reply {other:?}"),
    }
    assert_eq!(
        client.mget(&["missing-b", "a"]).await.unwrap(),
        vec![None, Some(Bytes::from_static(b"1"))]
    );

    // Error replies carry the Redis text and leave the connection usable.
    client.command(&["SET", "s", "not a number"]).await.unwrap();
    let err = server_error(client.command(&["INCR", "s"]).await);
    assert_eq!(err, "ERR value is not an integer or out of range");
    let e = client.command(&["INCR", "s"]).await.unwrap_err();
    assert_eq!(e.server_prefix(), Some("ERR"));
    assert!(!e.is_connection_error());

    let err = server_error(client.command(&["GET"]).await);
    assert_eq!(err, "ERR wrong number of arguments for 'get' command");
    let err = server_error(client.command(&["INCRBY", "n"]).await);
    assert_eq!(err, "ERR wrong number of arguments for 'incrby' command");
    let err = server_error(client.command(&["NOSUCHCOMMAND", "x"]).await);
    assert!(
        err.starts_with("ERR unknown command 'NOSUCHCOMMAND'"),
        "{err}"
    );

    assert_eq!(
        client.command(&["PING"]).await.unwrap(),
        Value::Simple(Bytes::from_static(b"PONG"))
    );
    assert_eq!(client.incr("n").await.unwrap(), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn password() {
    let server = Server::start(&["--threads", "2", "--password", "pw"]);

    let right = ClientConfig {
        password: Some("pw".into()),
        ..ClientConfig::default()
    };
    let client = Client::connect(server.addr, right)
        .await
        .expect("right password");
    client.put("p", "1").await.unwrap();
    assert_eq!(
        client
            .get("p")
            .await
            .unwrap()
            .unwrap()
            .value()
            .unwrap()
            .as_ref(),
        b"1"
    );

    let wrong = ClientConfig {
        password: Some("not-pw".into()),
        ..ClientConfig::default()
    };
    match Client::connect(server.addr, wrong).await {
        Err(ClientError::Handshake(msg)) => assert!(msg.contains("WRONGPASS"), "{msg}"),
        other => panic!("wrong password: expected a handshake error, got {other:?}"),
    }

    // Without a password the binary HELLO itself is refused (protocol.md §2.3: an empty
    // password is treated like a wrong one), so no binary request gets through.
    match Client::connect(server.addr, ClientConfig::default()).await {
        Err(ClientError::Handshake(msg)) => assert!(msg.contains("WRONGPASS"), "{msg}"),
        other => panic!("no password: expected a handshake error, got {other:?}"),
    }

    // Over RESP, where a connection exists before authentication, commands fail with NOAUTH.
    let mut s = server.tcp();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$1\r\np\r\n").unwrap();
    assert_eq!(read_reply(&mut s), "-NOAUTH Authentication required.\r\n");
    s.write_all(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n*2\r\n$3\r\nGET\r\n$1\r\np\r\n")
        .unwrap();
    let expect = b"+OK\r\n$1\r\n1\r\n";
    assert_eq!(read_n(&mut s, expect.len()), expect);

    // The authenticated binary client is unaffected by the refused ones.
    client.ping().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn reconnects_after_the_server_closes_the_connection() {
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    client.put("survives", "yes").await.unwrap();

    for round in 0..3 {
        assert_eq!(
            client.command(&["QUIT"]).await.unwrap(),
            Value::Simple(Bytes::from_static(b"OK")),
            "round {round}"
        );
        // The server closes the connection after the OK; wait until the client noticed.
        let deadline = Instant::now() + DEADLINE;
        while client.server_info().is_some() {
            assert!(
                Instant::now() < deadline,
                "client did not notice the close within {DEADLINE:?}"
            );
            tokio::task::yield_now().await;
        }
        // The next request opens a new connection (with a new HELLO) and succeeds.
        let v = client.get("survives").await.expect("request after QUIT");
        assert_eq!(v.unwrap().value().unwrap().as_ref(), b"yes");
        assert!(client.server_info().is_some());
        client.incr("reconnects").await.unwrap();
    }
    assert_eq!(client.incr("reconnects").await.unwrap(), 4);

    // Concurrent callers after a close share one new connection and all succeed.
    client.command(&["QUIT"]).await.unwrap();
    let deadline = Instant::now() + DEADLINE;
    while client.server_info().is_some() {
        assert!(Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    let results = join_all((0..50).map(|i| {
        let client = client.clone();
        async move { client.put(format!("after-{i}"), format!("{i}")).await }
    }))
    .await;
    for r in results {
        r.expect("put after reconnect");
    }
    assert_eq!(client.dbsize().await.unwrap(), 52);
}

#[tokio::test(flavor = "current_thread")]
async fn large_values_round_trip() {
    // Default frame limit (64 MiB): a 1 MiB value through PUT/GET and through SET/GET.
    let server = Server::start(&["--threads", "2"]);
    let client = connect(&server).await;
    let big: Vec<u8> = (0..1usize << 20).map(|i| (i * 31 % 251) as u8).collect();
    client.put("big", &big).await.unwrap();
    let got = client.get("big").await.unwrap().expect("big exists");
    assert!(
        got.value().unwrap().as_ref() == big.as_slice(),
        "1 MiB value corrupted"
    );
    client
        .command(&[b"SET".as_slice(), b"big2", &big])
        .await
        .unwrap();
    let v = client.command(&["GET", "big2"]).await.unwrap();
    assert!(value_bytes(&v).unwrap().as_ref() == big.as_slice());
    // Several large values in flight at once, interleaved with small requests.
    let results = join_all((0..8).map(|i| {
        let client = client.clone();
        let mut value = big.clone();
        value[0] = i as u8;
        async move {
            client.put(format!("big-{i}"), &value).await.unwrap();
            client.ping().await.unwrap();
            let got = client.get(format!("big-{i}")).await.unwrap().unwrap();
            got.value().unwrap().as_ref() == value.as_slice()
        }
    }))
    .await;
    assert!(
        results.into_iter().all(|ok| ok),
        "a large value came back wrong"
    );

    // A server whose frame limit is 1 MiB + 64: a PUT frame of exactly the limit is accepted.
    const LIMIT: usize = (1 << 20) + 64;
    let limit = LIMIT.to_string();
    let server = Server::start(&["--threads", "2", "--max-frame-bytes", &limit]);
    let client = connect(&server).await;
    let key = b"edge";
    // PUT frame: 16-byte header + key (4 + len) + value (4 + len) + context (4) + ttl (8).
    let vlen = LIMIT - 16 - (4 + key.len()) - 4 - 4 - 8;
    let edge = vec![b'e'; vlen];
    client
        .put(key, &edge)
        .await
        .expect("frame of exactly the limit");
    let got = client.get(key).await.unwrap().expect("edge exists");
    assert_eq!(got.value().unwrap().len(), vlen);
    assert!(got.value().unwrap().as_ref() == edge.as_slice());
    client.ping().await.unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn client_limits_and_close() {
    let server = Server::start(&["--threads", "2"]);

    // More concurrent calls than max_in_flight: the excess fails fast, the rest succeed and
    // the connection stays usable.
    let config = ClientConfig {
        max_in_flight: 4,
        ..ClientConfig::default()
    };
    let client = Client::connect(server.addr, config).await.unwrap();
    let results = join_all((0..64).map(|i| client.put(format!("lim{i}"), "x"))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    for r in &results {
        if let Err(e) = r {
            assert!(
                matches!(e, ClientError::TooManyInFlight { max: 4 }),
                "unexpected error {e}"
            );
        }
    }
    assert!(
        (4..64).contains(&ok),
        "{ok} of 64 succeeded with max_in_flight 4"
    );
    client.ping().await.unwrap();

    // A reply frame larger than max_frame_bytes drops the connection (that request fails as
    // lost), and the next request reconnects.
    let config = ClientConfig {
        max_frame_bytes: 64 * 1024,
        ..ClientConfig::default()
    };
    let small = Client::connect(server.addr, config).await.unwrap();
    small.put("wide", vec![b'w'; 100 * 1024]).await.unwrap();
    match small.get("wide").await {
        Err(e) => assert!(e.is_connection_error(), "{e}"),
        Ok(v) => panic!(
            "a 100 KiB reply passed a 64 KiB frame limit: {:?}",
            v.map(|v| v.values.len())
        ),
    }
    small
        .ping()
        .await
        .expect("reconnects after the oversized reply");
    assert_eq!(small.incr("after-wide").await.unwrap(), 1);

    // close() affects every clone.
    let clone = small.clone();
    small.close();
    assert!(matches!(clone.ping().await, Err(ClientError::Closed)));
    assert!(matches!(small.get("wide").await, Err(ClientError::Closed)));
}
