//! `ClusterClient` against two scripted fake nodes: what it retries elsewhere and what it does
//! not (a write whose connection broke after it was sent), and TRYAGAIN with a new map.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use ringkv_client::{ClientConfig, ClusterClient, ClusterError};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::{FrameWriter, ReplySink, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a fake node does with a binary GET or PUT.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    /// Answers it.
    Serve,
    /// Closes the connection without a reply (the request arrived: outcome unknown).
    Close,
    /// Answers `TRYAGAIN` (the layout is changing).
    TryAgain,
}

/// The map both nodes serve: layout version and the single partition's preference list.
type MapSpec = Arc<Mutex<(i64, Vec<i64>)>>;

struct Node {
    addr: String,
    gets: Arc<AtomicUsize>,
    puts: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

async fn read(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<(u64, u8, Vec<u8>)> {
    loop {
        if let Some((h, payload, used)) = decode_frame(buf, 1 << 20).expect("frame") {
            let got = (h.request_id, h.opcode, payload.to_vec());
            let _ = buf.split_to(used);
            return Some(got);
        }
        if stream.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn reply(stream: &mut TcpStream, id: u64, op: u8, f: impl FnOnce(&mut FrameWriter<'_>)) {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::new(&mut out, id, op);
    f(&mut w);
    w.finish();
    let _ = stream.write_all(&out).await;
}

/// Serves one connection: HELLO, CLUSTER MAP from `map` naming `addrs`, GET and PUT as `act`.
async fn serve(
    mut s: TcpStream,
    addrs: Arc<Vec<String>>,
    map: MapSpec,
    act: Act,
    gets: Arc<AtomicUsize>,
    puts: Arc<AtomicUsize>,
) {
    let mut buf = BytesMut::new();
    while let Some((id, op, payload)) = read(&mut s, &mut buf).await {
        let req = Request::parse(op, &payload, 64).expect("a valid request");
        let (is_put, is_get) = (
            matches!(req, Request::Put { .. }),
            matches!(req, Request::Get { .. }),
        );
        if is_put || is_get {
            let counter = if is_put { &puts } else { &gets };
            counter.fetch_add(1, Ordering::SeqCst);
            match act {
                Act::Close => return,
                Act::TryAgain => {
                    reply(&mut s, id, op, |w| {
                        w.error("TRYAGAIN this node is not a replica of the key")
                    })
                    .await
                }
                Act::Serve if is_put => reply(&mut s, id, op, |w| w.versioned(b"c", &[])).await,
                Act::Serve => reply(&mut s, id, op, |w| w.versioned(b"c", &[b"served"])).await,
            }
            continue;
        }
        match req {
            Request::Hello { .. } => {
                reply(&mut s, id, op, |w| {
                    w.array(4);
                    w.int(1);
                    w.bulk(b"ringkv");
                    w.bulk(b"0.1.0-test");
                    w.int(7);
                })
                .await
            }
            Request::Command { args } if args.len() == 2 && args[1] == b"MAP" => {
                let (version, prefs) = map.lock().unwrap().clone();
                reply(&mut s, id, op, |w| {
                    w.array(4);
                    w.int(version);
                    w.int(1);
                    w.array(addrs.len());
                    for (i, a) in addrs.iter().enumerate() {
                        w.array(2);
                        w.bulk(format!("{:016x}", i + 1).as_bytes());
                        w.bulk(a.as_bytes());
                    }
                    w.array(1);
                    w.array(prefs.len());
                    for p in prefs {
                        w.int(p);
                    }
                })
                .await
            }
            other => panic!("the fake node does not expect {other:?}"),
        }
    }
}

/// Two fake nodes serving `map`, acting on GET/PUT as `acts[i]`.
async fn fake_cluster(map: MapSpec, acts: [Act; 2]) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..2 {
        listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
    }
    let addrs: Arc<Vec<String>> = Arc::new(
        listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").to_string())
            .collect(),
    );
    let mut nodes = Vec::new();
    for (l, act) in listeners.into_iter().zip(acts) {
        let (gets, puts) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let addr = l.local_addr().expect("addr").to_string();
        let (a, m, g, p) = (addrs.clone(), map.clone(), gets.clone(), puts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (a, m, g, p) = (a.clone(), m.clone(), g.clone(), p.clone());
                tokio::spawn(serve(s, a, m, act, g, p));
            }
        });
        nodes.push(Node {
            addr,
            gets,
            puts,
            task,
        });
    }
    nodes
}

fn n(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// The preferred replica takes the request and drops the connection: a read is retried on the
/// next replica, a write is not (its outcome is unknown). Once the node is gone for good
/// (connection refused: nothing was sent), writes go to the next replica.
#[tokio::test]
async fn reads_fail_over_writes_sent_are_not_retried() {
    let map: MapSpec = Arc::new(Mutex::new((1, vec![0, 1])));
    let mut nodes = fake_cluster(map, [Act::Close, Act::Serve]).await;
    let client = ClusterClient::connect([nodes[0].addr.clone()], ClientConfig::default())
        .await
        .expect("map");
    assert_eq!(
        client.replicas_of("k"),
        [nodes[0].addr.clone(), nodes[1].addr.clone()]
    );

    match client.put("k", "v").await {
        Err(ClusterError::OutcomeUnknown { addr, .. }) => assert_eq!(addr, nodes[0].addr),
        other => panic!("a write cut off after it was sent: {other:?}"),
    }
    assert_eq!(
        (n(&nodes[0].puts), n(&nodes[1].puts)),
        (1, 0),
        "not retried"
    );

    let got = client
        .get("k")
        .await
        .expect("read retried on the next replica");
    assert_eq!(
        got.and_then(|v| v.value().cloned()).as_deref(),
        Some(&b"served"[..])
    );
    assert_eq!(n(&nodes[1].gets), 1);

    // Node 0 stops listening: connecting fails, so nothing is sent and the write moves on.
    nodes[0].task.abort();
    let _ = (&mut nodes[0].task).await;
    client
        .put("k", "v")
        .await
        .expect("write on the next replica");
    assert_eq!(n(&nodes[1].puts), 1);
    assert_eq!(n(&nodes[0].puts), 1, "node 0 got nothing more");
}

/// TRYAGAIN makes the client fetch the map again and follow the new preference list.
#[tokio::test]
async fn tryagain_refreshes_the_map() {
    let map: MapSpec = Arc::new(Mutex::new((1, vec![0])));
    let nodes = fake_cluster(map.clone(), [Act::TryAgain, Act::Serve]).await;
    let client = ClusterClient::connect([nodes[0].addr.clone()], ClientConfig::default())
        .await
        .expect("map");
    assert_eq!(client.layout_version(), 1);
    // The layout moves the key to node 1 before the client knows.
    *map.lock().unwrap() = (2, vec![1]);
    client.put("k", "v").await.expect("put after TRYAGAIN");
    assert_eq!(client.layout_version(), 2);
    assert_eq!((n(&nodes[0].puts), n(&nodes[1].puts)), (1, 1));

    // A node that keeps answering TRYAGAIN: a bounded number of attempts, then a clear error.
    *map.lock().unwrap() = (3, vec![0]);
    client.refresh().await.expect("refresh");
    match client.put("k", "v").await {
        Err(e @ ClusterError::LayoutChanging { .. }) => {
            assert!(e.to_string().contains("TRYAGAIN"), "{e}")
        }
        other => panic!("endless TRYAGAIN: {other:?}"),
    }
}
