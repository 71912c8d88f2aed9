//! The client against a scripted fake server on 127.0.0.1:0: handshake, id matching with
//! out-of-order replies, errors, timeouts, limits and reconnects.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringkv_client::{Client, ClientConfig, ClientError, PutOptions, Ttl, Value};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::{FrameWriter, Opcode, ReplySink, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// One accepted connection of the fake server.
struct Peer {
    stream: TcpStream,
    buf: BytesMut,
}

/// A request as the fake server saw it.
struct Got {
    id: u64,
    opcode: u8,
    payload: Vec<u8>,
}

impl Got {
    fn request(&self) -> Request<'_> {
        Request::parse(self.opcode, &self.payload, 1024).expect("client sent a valid request")
    }

    fn key(&self) -> Vec<u8> {
        match self.request() {
            Request::Get { key } | Request::Put { key, .. } | Request::Delete { key, .. } => {
                key.to_vec()
            }
            other => panic!("not a keyed request: {other:?}"),
        }
    }

    fn args(&self) -> Vec<String> {
        match self.request() {
            Request::Command { args } => args
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            other => panic!("not a command: {other:?}"),
        }
    }
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Peer {
        let (stream, _) = listener.accept().await.expect("accept");
        Peer {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The next request frame, or `None` at EOF.
    async fn read(&mut self) -> Option<Got> {
        loop {
            if let Some((h, payload, used)) = decode_frame(&self.buf, 1 << 20).expect("frame") {
                let got = Got {
                    id: h.request_id,
                    opcode: h.opcode,
                    payload: payload.to_vec(),
                };
                let _ = self.buf.split_to(used);
                return Some(got);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    async fn reply(&mut self, got: &Got, f: impl FnOnce(&mut FrameWriter<'_>)) {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::new(&mut out, got.id, got.opcode);
        f(&mut w);
        w.finish();
        self.stream.write_all(&out).await.expect("write");
    }

    /// Reads HELLO, checks it and accepts it; returns the password and client name.
    async fn handshake(&mut self) -> (Vec<u8>, Vec<u8>) {
        let got = self.read().await.expect("HELLO");
        assert_eq!(got.opcode, Opcode::Hello as u8, "first frame must be HELLO");
        let (password, name) = match got.request() {
            Request::Hello {
                min_version,
                max_version,
                password,
                client_name,
            } => {
                assert_eq!((min_version, max_version), (1, 1));
                (password.to_vec(), client_name.to_vec())
            }
            other => panic!("expected HELLO, got {other:?}"),
        };
        self.reply(&got, |w| {
            w.array(4);
            w.int(1);
            w.bulk(b"ringkv");
            w.bulk(b"0.1.0-test");
            w.int(7);
        })
        .await;
        (password, name)
    }
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

#[tokio::test]
async fn handshake_and_out_of_order_replies() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let (password, name) = p.handshake().await;
        assert_eq!(password, b"s3cret");
        assert_eq!(name, b"test-client");
        // Collect all 100 GETs, then answer them in reverse order.
        let mut reqs = Vec::new();
        while reqs.len() < 100 {
            let got = p.read().await.expect("GET");
            assert_eq!(got.opcode, Opcode::Get as u8);
            reqs.push(got);
        }
        for got in reqs.iter().rev() {
            let mut v = b"v-".to_vec();
            v.extend_from_slice(&got.key());
            p.reply(got, |w| w.versioned(b"ctx", &[&v])).await;
        }
    });

    let config = ClientConfig {
        password: Some("s3cret".into()),
        client_name: Some("test-client".into()),
        ..ClientConfig::default()
    };
    let client = Client::connect(addr.as_str(), config)
        .await
        .expect("connect");
    let info = client.server_info().expect("info");
    assert_eq!(info.node_id, 7);
    assert_eq!(info.server_version, "0.1.0-test");

    let gets = (0..100).map(|i| {
        let c = client.clone();
        async move { (i, c.get(format!("k{i}")).await) }
    });
    for (i, r) in futures::future::join_all(gets).await {
        let v = r.expect("get").expect("present");
        assert_eq!(v.context, Bytes::from_static(b"ctx"));
        assert_eq!(v.value().expect("value"), format!("v-k{i}").as_bytes());
        assert!(!v.has_siblings());
    }
    server.await.expect("server");
}

#[tokio::test]
async fn error_reply_keeps_connection_usable() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("command");
        assert_eq!(got.args(), ["BOGUS", "x"]);
        p.reply(&got, |w| w.error("ERR unknown command 'BOGUS'"))
            .await;
        let got = p.read().await.expect("ping");
        assert_eq!(got.opcode, Opcode::Ping as u8);
        p.reply(&got, |w| w.simple("PONG")).await;
        let got = p.read().await.expect("get");
        p.reply(&got, |w| w.nil()).await;
    });
    let client = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect("connect");
    match client.command(&["BOGUS", "x"]).await {
        Err(e @ ClientError::Server(_)) => {
            assert_eq!(e.to_string(), "ERR unknown command 'BOGUS'");
            assert_eq!(e.server_prefix(), Some("ERR"));
            assert!(!e.is_connection_error());
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    client.ping().await.expect("ping after error");
    assert_eq!(client.get("missing").await.expect("get"), None);
    server.await.expect("server");
}

#[tokio::test]
async fn wrong_password_fails_handshake() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        let got = p.read().await.expect("HELLO");
        p.reply(&got, |w| {
            w.error("WRONGPASS invalid username-password pair or user is disabled.")
        })
        .await;
    });
    let err = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect_err("must fail");
    match &err {
        ClientError::Handshake(msg) => assert!(msg.contains("WRONGPASS"), "{msg}"),
        other => panic!("expected a handshake error, got {other:?}"),
    }
    assert!(err.is_connection_error());
    server.await.expect("server");
}

#[tokio::test]
async fn connection_loss_fails_pending_and_next_request_reconnects() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let _ = p.read().await.expect("GET");
        drop(p); // vanish without answering

        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("GET again");
        p.reply(&got, |w| w.versioned(b"c2", &[b"back"])).await;
    });
    let client = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect("connect");
    match client.get("k").await {
        Err(ClientError::ConnectionLost(_)) => {}
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    let v = client.get("k").await.expect("reconnected").expect("value");
    assert_eq!(v.value().expect("value"), "back");
    server.await.expect("server");
}

#[tokio::test]
async fn timeout_drops_pending_and_ignores_late_reply() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let slow = p.read().await.expect("GET slow");
        // The client only sends the next request after the first timed out.
        let next = p.read().await.expect("GET next");
        p.reply(&slow, |w| w.versioned(b"", &[b"late"])).await;
        p.reply(&next, |w| w.versioned(b"", &[b"on time"])).await;
    });
    let config = ClientConfig {
        request_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    let client = Client::connect(addr.as_str(), config)
        .await
        .expect("connect");
    match client.get("slow").await {
        Err(e @ ClientError::Timeout { .. }) => {
            assert!(e.to_string().contains("request_timeout"), "{e}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    let v = client.get("next").await.expect("get").expect("value");
    assert_eq!(v.value().expect("value"), "on time");
    server.await.expect("server");
}

#[tokio::test]
async fn in_flight_limit_fails_fast() {
    let (l, addr) = listener().await;
    let (got_first_tx, got_first_rx) = oneshot::channel();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("GET");
        got_first_tx.send(()).expect("signal");
        release_rx.await.expect("release");
        p.reply(&got, |w| w.nil()).await;
    });
    let config = ClientConfig {
        max_in_flight: 1,
        ..ClientConfig::default()
    };
    let client = Client::connect(addr.as_str(), config)
        .await
        .expect("connect");
    let c = client.clone();
    let first = tokio::spawn(async move { c.get("a").await });
    got_first_rx.await.expect("server saw the first request");
    match client.get("b").await {
        Err(ClientError::TooManyInFlight { max: 1 }) => {}
        other => panic!("expected TooManyInFlight, got {other:?}"),
    }
    release_tx.send(()).expect("release");
    assert_eq!(first.await.expect("task").expect("get"), None);
    server.await.expect("server");
}

#[tokio::test]
async fn oversized_reply_closes_connection() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("GET");
        let big = vec![b'x'; 4096];
        p.reply(&got, |w| w.versioned(b"", &[&big])).await;
        // The client hangs up.
        assert!(p.read().await.is_none());
    });
    let config = ClientConfig {
        max_frame_bytes: 1024,
        ..ClientConfig::default()
    };
    let client = Client::connect(addr.as_str(), config)
        .await
        .expect("connect");
    match client.get("big").await {
        Err(ClientError::ConnectionLost(reason)) => {
            assert!(reason.contains("exceeds the limit"), "{reason}")
        }
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    server.await.expect("server");
}

#[tokio::test]
async fn fatal_reply_fails_request_and_reconnects() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("command");
        let mut out = BytesMut::new();
        FrameWriter::new(&mut out, got.id, got.opcode).fatal("ERR Protocol error: boom");
        p.stream.write_all(&out).await.expect("write");
        drop(p);

        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        let got = p.read().await.expect("ping");
        p.reply(&got, |w| w.simple("PONG")).await;
    });
    let client = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect("connect");
    match client.command(&["X"]).await {
        Err(ClientError::Server(msg)) => assert_eq!(msg, "ERR Protocol error: boom"),
        other => panic!("expected the fatal error, got {other:?}"),
    }
    client.ping().await.expect("ping on a new connection");
    server.await.expect("server");
}

#[tokio::test]
async fn typed_wrappers_send_the_right_requests() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;

        let got = p.read().await.expect("PUT");
        match got.request() {
            Request::Put {
                key,
                value,
                context,
                ttl_ms,
            } => {
                assert_eq!(
                    (key, value, context, ttl_ms),
                    (&b"k"[..], &b"v"[..], &b"old"[..], 1500)
                );
            }
            other => panic!("expected PUT, got {other:?}"),
        }
        p.reply(&got, |w| w.versioned(b"new", &[])).await;

        let got = p.read().await.expect("DELETE");
        match got.request() {
            Request::Delete { key, context } => {
                assert_eq!((key, context), (&b"k"[..], &b"new"[..]))
            }
            other => panic!("expected DELETE, got {other:?}"),
        }
        p.reply(&got, |w| w.int(1)).await;

        let script: Vec<(Vec<&str>, Value)> = vec![
            (vec!["INCRBY", "n", "-5"], Value::Int(-5)),
            (
                vec!["MGET", "a", "b"],
                Value::Array(vec![Value::Bulk(Bytes::from_static(b"1")), Value::Nil]),
            ),
            (
                vec!["MSET", "a", "1", "b", "2"],
                Value::Simple(Bytes::from_static(b"OK")),
            ),
            (vec!["DEL", "a", "b"], Value::Int(2)),
            (vec!["EXISTS", "a"], Value::Int(0)),
            (vec!["EXPIRE", "a", "10"], Value::Int(0)),
            (vec!["TTL", "a"], Value::Int(-2)),
            (vec!["TTL", "b"], Value::Int(42)),
            (vec!["DBSIZE"], Value::Int(3)),
            (vec!["INCR", "n"], Value::Simple(Bytes::from_static(b"OK"))),
        ];
        for (args, reply) in script {
            let got = p.read().await.expect("command");
            assert_eq!(got.args(), args);
            let mut out = BytesMut::new();
            reply.encode(&mut out);
            // Hand-build the frame around an already encoded value.
            let mut frame = BytesMut::new();
            let w = FrameWriter::new(&mut frame, got.id, got.opcode);
            w.finish();
            frame.extend_from_slice(&out);
            let len = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&len.to_be_bytes());
            p.stream.write_all(&frame).await.expect("write");
        }
    });
    let client = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect("connect");
    let ctx = client
        .put_with(
            "k",
            "v",
            PutOptions {
                context: Some(Bytes::from_static(b"old")),
                ttl: Some(Duration::from_millis(1500)),
            },
        )
        .await
        .expect("put");
    assert_eq!(ctx, "new");
    assert!(client.delete_with("k", &ctx).await.expect("delete"));
    assert_eq!(client.incr_by("n", -5).await.expect("incrby"), -5);
    assert_eq!(
        client.mget(&["a", "b"]).await.expect("mget"),
        vec![Some(Bytes::from_static(b"1")), None]
    );
    client.mset(&[("a", "1"), ("b", "2")]).await.expect("mset");
    assert_eq!(client.del(&["a", "b"]).await.expect("del"), 2);
    assert_eq!(client.exists(&["a"]).await.expect("exists"), 0);
    assert!(!client.expire("a", 10).await.expect("expire"));
    assert_eq!(client.ttl("a").await.expect("ttl"), Ttl::Missing);
    assert_eq!(
        client.ttl("b").await.expect("ttl"),
        Ttl::Expires(Duration::from_secs(42))
    );
    assert_eq!(client.dbsize().await.expect("dbsize"), 3);
    match client.incr("n").await {
        Err(ClientError::UnexpectedReply {
            command: "INCR", ..
        }) => {}
        other => panic!("expected UnexpectedReply, got {other:?}"),
    }
    server.await.expect("server");
}

#[tokio::test]
async fn close_stops_the_client() {
    let (l, addr) = listener().await;
    let server = tokio::spawn(async move {
        let mut p = Peer::accept(&l).await;
        p.handshake().await;
        assert!(p.read().await.is_none(), "client should hang up");
    });
    let client = Client::connect(addr.as_str(), ClientConfig::default())
        .await
        .expect("connect");
    client.close();
    assert!(matches!(client.ping().await, Err(ClientError::Closed)));
    server.await.expect("server");
}

#[tokio::test]
async fn connect_refused_is_an_io_error() {
    let (l, addr) = listener().await;
    drop(l);
    match Client::connect(addr.as_str(), ClientConfig::default()).await {
        Err(e @ ClientError::Io(_)) => assert!(e.is_connection_error()),
        other => panic!("expected an I/O error, got {other:?}"),
    }
}
