//! The source side of the streaming calls: STREAM_READ answers a batch of this node's copy of
//! a partition, once what it shows is durable here; STREAM_STATUS says where this node's own
//! incoming copies stand.

use std::rc::Rc;

use bytes::BytesMut;
use ringkv_proto::peer::{StreamBatch, StreamRead};
use ringkv_proto::ReplySink;

use crate::cluster::keyspace::replica::partition_end;
use crate::cluster::link::Link;
use crate::cluster::LocalLoop;
use crate::ring::partition::partition_of;
use crate::util::now_ms;

/// STREAM_READ: up to `max_bytes` of this node's entries of the partition, from `from` on.
pub fn read(lp: &Rc<dyn LocalLoop>, link: &Rc<Link>, id: u64, op: u8, req: StreamRead) {
    let Some(cl) = lp.cluster() else {
        return link.send_result(id, op, Err("ERR this node is not in cluster mode"));
    };
    let view = cl.view();
    let bits = view.ring.partition_bits();
    if req.partition >= view.ring.partitions() {
        let msg = format!(
            "ERR partition {} is out of range (this ring has {})",
            req.partition,
            view.ring.partitions()
        );
        return link.send_result(id, op, Err(&msg));
    }
    if partition_of(req.from, bits) != req.partition {
        let msg = format!(
            "ERR resume position {:#018x} is not in partition {}",
            req.from, req.partition
        );
        return link.send_result(id, op, Err(&msg));
    }
    let to = partition_end(req.partition, bits);
    let (entries, next, marks) =
        lp.node()
            .store
            .range_entries(req.from, to, req.max_bytes as usize);
    let mut out =
        BytesMut::with_capacity(entries.iter().map(|e| e.1.len() + 4).sum::<usize>() + 32);
    StreamBatch::encode_parts(next, entries.iter().map(|e| e.1.as_slice()), &mut out);
    let mut frame = BytesMut::new();
    let mut w = ringkv_proto::FrameWriter::new(&mut frame, id, op);
    w.bulk(&out);
    w.finish();
    link.reply_when_durable(&**lp, marks, id, op, frame);
}

/// STREAM_STATUS: this node's copies (for the asker's layout digest, which the reply's own
/// digest lets it compare).
pub fn status(lp: &Rc<dyn LocalLoop>, link: &Rc<Link>, id: u64, op: u8) {
    let Some(cl) = lp.cluster() else {
        return link.send_result(id, op, Err("ERR this node is not in cluster mode"));
    };
    let r = cl.shared.streams.report(now_ms());
    let mut out = BytesMut::new();
    r.status.encode(&mut out);
    link.send_result(id, op, Ok(&out));
}
