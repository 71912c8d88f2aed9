//! Requests a peer sends over a link: gossip, heartbeats, replica writes and reads, hints and
//! forwarded client commands. Each reply goes back on the same link with the request's id;
//! replica writes and reads answer only once what they wrote or show is durable.

use std::rc::Rc;

use bytes::BytesMut;
use ringkv_proto::key_hash;
use ringkv_proto::peer::{GossipBody, PeerRequest};
use ringkv_proto::{FrameWriter, ReplySink};

use super::keyspace::replica::Served;
use super::link::Link;
use super::LocalLoop;
use crate::durability::Marks;
use crate::store::Entry;
use crate::util::now_ms;

pub(super) fn reply(link: &Link, id: u64, op: u8, f: impl FnOnce(&mut dyn ReplySink)) {
    link.send_reply(|out: &mut BytesMut| {
        let mut w = FrameWriter::new(out, id, op);
        f(&mut w);
        w.finish();
    });
}

/// Handles one request frame from a peer.
pub fn handle(lp: &Rc<dyn LocalLoop>, link: &Rc<Link>, id: u64, op: u8, payload: &[u8]) {
    let req = match PeerRequest::parse(op, payload) {
        Ok(r) => r,
        Err(e) => return reply(link, id, op, |s| s.error(&format!("ERR {e}"))),
    };
    let Some(cluster) = lp.cluster().cloned() else {
        return reply(link, id, op, |s| {
            s.error("ERR this node is not in cluster mode")
        });
    };
    let membership = &cluster.shared.membership;
    match req {
        PeerRequest::Hello(_) | PeerRequest::Auth { .. } => reply(link, id, op, |s| {
            s.error("ERR this peer link is already authenticated")
        }),
        PeerRequest::Ping => {
            if let Some(peer) = link.peer.get() {
                membership.heartbeat(peer, now_ms());
            }
            reply(link, id, op, |s| s.simple("PONG"))
        }
        PeerRequest::Gossip(body) => {
            let theirs = body.digest;
            if let Some(peer) = link.peer.get() {
                membership.heartbeat(peer, now_ms());
                membership.heard_digest(peer, theirs);
            }
            membership.merge(body.members);
            let view = membership.view();
            let mut out = BytesMut::new();
            let members = if view.digest == theirs {
                Vec::new()
            } else {
                view.layout.members().cloned().collect()
            };
            GossipBody {
                digest: view.digest,
                members,
            }
            .encode(&mut out);
            reply(link, id, op, |s| s.bulk(&out))
        }
        PeerRequest::Replicate { hint_for, entry } => {
            let Some(entry) = Entry::from_bytes(entry) else {
                return reply(link, id, op, |s| {
                    s.error("ERR malformed entry in REPLICATE")
                });
            };
            if hint_for != 0 {
                let (lp, link) = (lp.clone(), link.clone());
                tokio::task::spawn_local(async move {
                    let r = match lp.cluster() {
                        Some(c) => c.shared.hints.store(hint_for, entry).await,
                        None => Err("not in cluster mode".to_string()),
                    };
                    match r {
                        Ok(()) => reply(&link, id, op, |s| s.simple("OK")),
                        Err(e) => reply(&link, id, op, |s| {
                            s.error(&format!("ERR can't store the hint: {e}"))
                        }),
                    }
                });
                return;
            }
            let marks = apply(&**lp, &entry);
            answer_when_durable(lp, link, id, op, marks, |s| s.simple("OK"));
        }
        PeerRequest::Fetch { key } => {
            let store = &lp.node().store;
            let shard = store.shard_of(key_hash(key));
            let (found, marks) = {
                let s = store.lock(shard);
                let found = s.entry(key_hash(key), key).map(|e| e.as_bytes().to_vec());
                let marks: Marks = if s.wal.enabled {
                    [(shard as u32, s.wal.seq)].into_iter().collect()
                } else {
                    Marks::new()
                };
                (found, marks)
            };
            answer_when_durable(lp, link, id, op, marks, move |s| match &found {
                Some(b) => s.bulk(b),
                None => s.nil(),
            });
        }
        PeerRequest::ScanPartition(req) => {
            super::keyspace::replica::serve(lp, link, id, op, Served::Scan(req))
        }
        PeerRequest::CountKeys { partitions } => {
            super::keyspace::replica::serve(lp, link, id, op, Served::Count(&partitions))
        }
        PeerRequest::StreamRead(req) => super::stream::serve::read(lp, link, id, op, req),
        PeerRequest::StreamStatus { digest: _ } => super::stream::serve::status(lp, link, id, op),
        PeerRequest::Aae(req) => super::aae::replica::serve(lp, link, id, op, &req),
        PeerRequest::TombOffer { entries } => super::gc::serve_offer(lp, link, id, op, &entries),
        PeerRequest::TombPurge { entries } => super::gc::serve_purge(lp, link, id, op, &entries),
        PeerRequest::Forward { head, args } => {
            let args: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
            let (lp, link) = (lp.clone(), link.clone());
            membership
                .stats
                .forwarded
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::task::spawn_local(async move {
                let (out, marks) = super::coordinator::run_forwarded(&lp, head, args).await;
                answer_when_durable(&lp, &link, id, op, marks, |s| s.bulk(&out));
            });
        }
    }
}

/// Merges another replica's entry into the local shard; the WAL position to wait for.
pub fn apply(lp: &dyn LocalLoop, entry: &Entry) -> Marks {
    let store = &lp.node().store;
    let hash = key_hash(entry.key());
    let shard = store.shard_of(hash);
    let mut s = store.lock(shard);
    s.merge(hash, entry);
    if s.wal.enabled {
        [(shard as u32, s.wal.seq)].into_iter().collect()
    } else {
        Marks::new()
    }
}

pub(super) fn answer_when_durable(
    lp: &Rc<dyn LocalLoop>,
    link: &Rc<Link>,
    id: u64,
    op: u8,
    marks: Marks,
    f: impl FnOnce(&mut dyn ReplySink),
) {
    let mut frame = BytesMut::new();
    let mut w = FrameWriter::new(&mut frame, id, op);
    f(&mut w);
    w.finish();
    link.reply_when_durable(&**lp, marks, id, op, frame);
}
