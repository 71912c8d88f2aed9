//! The peer handshake (protocol.md §6): PEER_HELLO with the dialer's nonce and settings, the
//! server's nonce and proof, then PEER_AUTH with the dialer's proof. Both proofs are
//! HMAC-SHA256 over both nonces and both ids, keyed by the cluster secret: each side proves it
//! knows the secret without sending it, and a recorded exchange can't be replayed.

use std::rc::Rc;
use std::time::Duration;

use super::sys::TcpStream;
use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::{decode_frame, Status};
use ringkv_proto::peer::{
    self, client_proof, server_proof, verify_proof, ClusterSettings, Conflicts, HelloReply,
    PeerHello, PeerRequest, AUTH_FAILED, NONCE_LEN,
};
use ringkv_proto::{FrameWriter, ReplySink, Value, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use super::link::{self, Link};
use super::LocalLoop;
use crate::ring::NodeId;

/// Largest frame accepted during the handshake (its messages are a few hundred bytes).
const HANDSHAKE_FRAME_BYTES: usize = 4096;
/// Unauthenticated peer handshakes in progress at once; past it a PEER_HELLO is refused (peer
/// links don't count against --max-clients, so this bounds what a stranger can hold open).
const MAX_PENDING_PEER_HANDSHAKES: usize = 64;

/// Counts one handshake in progress for as long as it lives.
struct Pending<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("can't connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0} ms (--peer-timeout-ms)")]
    Timeout(u64),
    #[error("the peer refused the link: {0}")]
    Refused(String),
    #[error(
        "the peer failed authentication: it does not know this cluster's secret \
         (--cluster-secret must be the same on every node)"
    )]
    BadServerProof,
    #[error("the peer is this node itself (its own --peers or --advertise address?)")]
    Itself,
    #[error("the peer answered with a malformed frame: {0}")]
    Malformed(String),
    #[error("this node is not in cluster mode")]
    NotClustered,
}

/// 32 bytes from the kernel's CSPRNG.
#[cfg(not(feature = "sim"))]
fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    use std::io::Read;
    let mut n = [0u8; NONCE_LEN];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut n)?;
    Ok(n)
}

/// Under `sim`: from the run's seed (a seed replays the same run).
#[cfg(feature = "sim")]
fn nonce() -> std::io::Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    for c in n.chunks_mut(8) {
        c.copy_from_slice(&crate::util::sim_rng::next_u64().to_le_bytes()[..c.len()]);
    }
    Ok(n)
}

/// The settings that must match on both ends.
pub fn settings(lp: &dyn LocalLoop) -> ClusterSettings {
    let cfg = &lp.node().config;
    ClusterSettings {
        n: cfg.cluster.n,
        partitions: cfg.cluster.partitions,
        conflicts: match cfg.conflicts {
            crate::config::ConflictMode::Siblings => Conflicts::Siblings,
            crate::config::ConflictMode::Lww => Conflicts::Lww,
        },
    }
}

/// Reads one whole frame into `rbuf` (bounded); returns (status, opcode, payload, request id).
async fn read_frame(
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
) -> Result<(u8, u8, Bytes, u64), HandshakeError> {
    loop {
        match decode_frame(rbuf, HANDSHAKE_FRAME_BYTES) {
            Ok(Some((hdr, payload, used))) => {
                let p = Bytes::copy_from_slice(payload);
                bytes::Buf::advance(rbuf, used);
                return Ok((hdr.status, hdr.opcode, p, hdr.request_id));
            }
            Ok(None) => {}
            Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(HandshakeError::Refused(
                "connection closed during the handshake".into(),
            ));
        }
    }
}

/// An Ok reply's value, or the peer's error as Refused.
fn reply_value(status: u8, payload: &Bytes) -> Result<Value, HandshakeError> {
    let v = Value::decode(payload).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    match (Status::from_u8(status), v) {
        (Some(Status::Ok), v) => Ok(v),
        (_, Value::Error(m)) => Err(HandshakeError::Refused(
            String::from_utf8_lossy(&m).into_owned(),
        )),
        (_, v) => Err(HandshakeError::Malformed(format!("{v:?}"))),
    }
}

/// Dials `addr` and authenticates; the stream, bytes read past the handshake, and the peer's id.
pub async fn dial(
    lp: &dyn LocalLoop,
    addr: &str,
) -> Result<(TcpStream, BytesMut, NodeId), HandshakeError> {
    let timeout_ms = lp.node().config.cluster.peer_timeout_ms;
    super::sys::timeout(Duration::from_millis(timeout_ms), dial_inner(lp, addr))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout_ms))?
}

async fn dial_inner(
    lp: &dyn LocalLoop,
    addr: &str,
) -> Result<(TcpStream, BytesMut, NodeId), HandshakeError> {
    let cluster = lp
        .cluster()
        .ok_or(HandshakeError::NotClustered)?
        .shared
        .clone();
    let me = lp.node().node_id;
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let my_nonce = nonce()?;
    let mut out = BytesMut::new();
    let hello = PeerHello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        node_id: me,
        nonce: &my_nonce,
        advertise: cluster.advertise(),
        zone: &cluster.zone,
        settings: settings(lp),
    };
    peer::encode_peer_hello(1, &hello, &mut out);
    stream.write_all(&out).await?;
    let mut rbuf = BytesMut::with_capacity(1024);
    let (status, _, payload, _) = read_frame(&mut stream, &mut rbuf).await?;
    let v = reply_value(status, &payload)?;
    let reply = HelloReply::from_value(&v).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
    if reply.node_id == me {
        return Err(HandshakeError::Itself);
    }
    let want = server_proof(&cluster.secret, &my_nonce, &reply.nonce, me, reply.node_id);
    if !verify_proof(&want, &reply.proof) {
        // Close without a proof of our own: a party that can't prove it knows the secret must
        // not get one (it could relay it, with the real server's nonce, to that server).
        return Err(HandshakeError::BadServerProof);
    }
    let proof = client_proof(&cluster.secret, &my_nonce, &reply.nonce, me, reply.node_id);
    out.clear();
    peer::encode_peer_auth(2, &proof, &mut out);
    stream.write_all(&out).await?;
    let (status, _, payload, _) = read_frame(&mut stream, &mut rbuf).await?;
    reply_value(status, &payload)?;
    Ok((stream, rbuf, reply.node_id))
}

/// Writes one reply frame and flushes it.
async fn answer(
    stream: &mut TcpStream,
    id: u64,
    op: u8,
    fatal: Option<&str>,
    f: impl FnOnce(&mut dyn ReplySink),
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    match fatal {
        Some(msg) => FrameWriter::new(&mut out, id, op).fatal(msg),
        None => {
            let mut w = FrameWriter::new(&mut out, id, op);
            f(&mut w);
            w.finish();
        }
    }
    stream.write_all(&out).await
}

/// Serves a connection whose first frame is PEER_HELLO: authenticates the dialer, then runs
/// the link. The connection does not count against --max-clients.
pub async fn accept(lp: Rc<dyn LocalLoop>, mut stream: TcpStream, mut rbuf: BytesMut) {
    let remote = stream
        .peer_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let timeout_ms = lp.node().config.cluster.peer_timeout_ms;
    let counter = lp.cluster().map(|c| c.shared.clone());
    let pending = match &counter {
        Some(c) => {
            let n = c
                .handshakes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let guard = Pending(&c.handshakes);
            if n >= MAX_PENDING_PEER_HANDSHAKES {
                let msg = "ERR too many peer handshakes in progress; retry";
                let _ = answer(&mut stream, 0, 0x40, Some(msg), |_| {}).await;
                warn!(peer = %remote, "refused a peer handshake: {MAX_PENDING_PEER_HANDSHAKES} in progress");
                return;
            }
            Some(guard)
        }
        None => None,
    };
    let r = super::sys::timeout(
        Duration::from_millis(timeout_ms),
        accept_inner(&*lp, &mut stream, &mut rbuf, &remote),
    )
    .await;
    let peer = match r {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => {
            warn!(peer = %remote, error = %e, "refused a peer link");
            return;
        }
        Err(_) => {
            warn!(peer = %remote, "peer handshake timed out");
            return;
        }
    };
    // Authenticated: no longer a pending handshake.
    drop(pending);
    info!(peer = %remote, node = %crate::ring::membership::format_id(peer), "accepted a peer link");
    let Some(membership) = lp.cluster().map(|c| c.shared.membership.clone()) else {
        return;
    };
    let link = Rc::new(Link::new(remote.clone(), membership));
    link.peer.set(Some(peer));
    link.mark_up();
    let _ = link::run(lp, link, stream, rbuf).await;
}

async fn accept_inner(
    lp: &dyn LocalLoop,
    stream: &mut TcpStream,
    rbuf: &mut BytesMut,
    remote: &str,
) -> Result<NodeId, HandshakeError> {
    let (_, op, payload, id) = read_frame(stream, rbuf).await?;
    let Some(cluster) = lp.cluster().map(|c| c.shared.clone()) else {
        let msg = "ERR this node is not in cluster mode (start it with --cluster-secret)";
        answer(stream, id, op, Some(msg), |_| {}).await?;
        return Err(HandshakeError::NotClustered);
    };
    let me = lp.node().node_id;
    let hello = match PeerRequest::parse(op, &payload) {
        Ok(PeerRequest::Hello(h)) => h,
        Ok(_) | Err(_) => {
            let msg = "ERR protocol error: a peer link starts with a well-formed PEER_HELLO";
            answer(stream, id, op, Some(msg), |_| {}).await?;
            return Err(HandshakeError::Malformed(msg.into()));
        }
    };
    let refuse = if hello.max_version < PROTOCOL_VERSION || hello.min_version > PROTOCOL_VERSION {
        Some(format!(
            "ERR unsupported protocol version range {}..={} (server speaks {PROTOCOL_VERSION})",
            hello.min_version, hello.max_version
        ))
    } else if hello.node_id == me {
        Some(format!(
            "ERR node id collision: the connecting node has this node's id {me:016x}; node ids \
             must be unique (start one of them on a new data directory)"
        ))
    } else {
        settings(lp).mismatch(&hello.settings)
    };
    if let Some(msg) = refuse {
        answer(stream, id, op, Some(&msg), |_| {}).await?;
        return Err(HandshakeError::Refused(msg));
    }
    let my_nonce = nonce()?;
    let dialer = hello.node_id;
    let reply = HelloReply {
        version: PROTOCOL_VERSION,
        node_id: me,
        nonce: my_nonce,
        proof: server_proof(&cluster.secret, hello.nonce, &my_nonce, dialer, me),
    };
    let want = client_proof(&cluster.secret, hello.nonce, &my_nonce, dialer, me);
    answer(stream, id, op, None, |s| reply.write(s)).await?;
    // A dialer that finds this node's proof wrong closes without answering.
    let (_, op, payload, id) = read_frame(stream, rbuf).await.map_err(|e| match e {
        HandshakeError::Refused(_) => HandshakeError::Refused(
            "the connecting node closed the link after this node's proof: the cluster secrets \
             differ (--cluster-secret)"
                .into(),
        ),
        e => e,
    })?;
    let ok = matches!(PeerRequest::parse(op, &payload), Ok(PeerRequest::Auth { proof }) if verify_proof(&want, proof));
    if !ok {
        answer(stream, id, op, Some(AUTH_FAILED), |_| {}).await?;
        warn!(peer = %remote, "a node failed peer authentication: wrong --cluster-secret");
        return Err(HandshakeError::Refused(AUTH_FAILED.into()));
    }
    answer(stream, id, op, None, |s| s.simple("OK")).await?;
    Ok(dialer)
}
