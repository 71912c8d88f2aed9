//! A fake peer: dials a cluster node's client port, completes the PEER_HELLO / PEER_AUTH
//! handshake (protocol.md §6.1) with the test secret, then sends peer requests and waits for
//! their replies (requests the node sends on the link meanwhile are read and ignored).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringkv_proto::frame::decode_frame;
use ringkv_proto::peer::{self, ClusterSettings, Conflicts, PeerHello};
use ringkv_proto::Value;

use super::cluster::SECRET;

pub struct PeerConn {
    s: TcpStream,
    next_id: u64,
}

impl PeerConn {
    /// Connects as node `id` (the defaults: n 3, 1,024 partitions, siblings).
    pub fn connect(addr: SocketAddr, id: u64) -> PeerConn {
        Self::connect_n(addr, id, 3)
    }

    /// [`PeerConn::connect`] to a cluster of replication factor `n`.
    pub fn connect_n(addr: SocketAddr, id: u64, n: u32) -> PeerConn {
        let s = TcpStream::connect(addr).expect("dial the node");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        let mut c = PeerConn { s, next_id: 1 };
        let nonce = [0x5a; peer::NONCE_LEN];
        let hello = PeerHello {
            min_version: 1,
            max_version: 1,
            node_id: id,
            nonce: &nonce,
            advertise: "127.0.0.1:1",
            zone: "",
            settings: ClusterSettings {
                n,
                partitions: 1024,
                conflicts: Conflicts::Siblings,
            },
        };
        let reply = c.call(|rid, out| peer::encode_peer_hello(rid, &hello, out));
        let Ok(Value::Array(items)) = reply else {
            panic!("PEER_HELLO reply: {reply:?}")
        };
        let (Value::Int(server_id), Value::Bulk(server_nonce)) = (&items[1], &items[2]) else {
            panic!("PEER_HELLO reply items: {items:?}")
        };
        let server_nonce: [u8; peer::NONCE_LEN] =
            server_nonce[..].try_into().expect("a 32-byte nonce");
        let proof = peer::client_proof(
            SECRET.as_bytes(),
            &nonce,
            &server_nonce,
            id,
            *server_id as u64,
        );
        let ok = c.call(|rid, out| peer::encode_peer_auth(rid, &proof, out));
        assert_eq!(
            ok,
            Ok(Value::Simple(Bytes::from_static(b"OK"))),
            "PEER_AUTH"
        );
        c
    }

    /// Sends one request and returns its reply: Ok(value) or Err(error text).
    pub fn call(&mut self, encode: impl FnOnce(u64, &mut BytesMut)) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let mut out = BytesMut::new();
        encode(id, &mut out);
        self.s.write_all(&out).expect("send a peer request");
        loop {
            let mut len = [0u8; 4];
            self.s.read_exact(&mut len).expect("read a frame length");
            let mut frame = len.to_vec();
            frame.resize(4 + u32::from_be_bytes(len) as usize, 0);
            self.s.read_exact(&mut frame[4..]).expect("read a frame");
            let (h, payload, _) = decode_frame(&frame, 1 << 24)
                .expect("a valid frame")
                .expect("a whole frame");
            if !h.is_reply() || h.request_id != id {
                continue; // the node's own requests on the link (gossip, pings)
            }
            let v = Value::decode(&Bytes::copy_from_slice(payload)).expect("a reply value");
            return match (h.status, v) {
                (0, v) => Ok(v),
                (_, Value::Error(e)) => Err(String::from_utf8_lossy(&e).into_owned()),
                (status, v) => Err(format!("status {status}: {v:?}")),
            };
        }
    }
}
