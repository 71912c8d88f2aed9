//! Handing commands to the loop that owns their shard.
//!
//! A connection collects the commands of one read for each other loop into one
//! [`RemoteBatch`] (arguments copied into one buffer), sends it, and gets back the encoded
//! replies in order. The owner runs the batch in one go between its own reads.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringkv_proto::{FrameWriter, ReplySink, RespWriter};
use smallvec::SmallVec;
use tokio::sync::oneshot;

use super::event_loop::LoopCtx;
use crate::cmd::{self, Ctx};
use crate::durability::{add_mark, Marks};
use crate::node::ClientInfo;
use crate::stats::Track;
use crate::util::{lock, now_ms};

/// How a reply must be encoded: RESP, or a binary frame answering (request id, opcode).
pub type ReplyTo = Option<(u64, u8)>;

pub struct Item {
    args: SmallVec<[(u32, u32); 6]>,
    reply_to: ReplyTo,
}

pub struct RemoteBatch {
    data: Bytes,
    items: Vec<Item>,
    reply: oneshot::Sender<RemoteReply>,
    /// The client that sent the batch (for SLOWLOG entries).
    client: Arc<ClientInfo>,
    /// Reply bytes the client's output buffer can still take; past it the rest of the batch
    /// is not run and the client is disconnected (--max-output-buffer-bytes).
    budget: usize,
}

/// Encoded replies of a batch, back to back; `ends[i]` is where reply i ends.
pub struct RemoteReply {
    pub out: BytesMut,
    pub ends: Vec<u32>,
    /// WAL records the batch produced: the replies wait for them at the origin.
    pub marks: Marks,
    /// The replies passed the budget; the commands after that were not run.
    pub overflow: bool,
}

/// Collects the commands for one other loop.
#[derive(Default)]
pub struct BatchBuilder {
    data: BytesMut,
    items: Vec<Item>,
}

impl BatchBuilder {
    /// Adds a command; returns its index in the batch.
    pub fn push(&mut self, args: &[&[u8]], reply_to: ReplyTo) -> usize {
        let mut ranges = SmallVec::with_capacity(args.len());
        for a in args {
            let start = self.data.len() as u32;
            self.data.extend_from_slice(a);
            ranges.push((start, self.data.len() as u32));
        }
        self.items.push(Item {
            args: ranges,
            reply_to,
        });
        self.items.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn build(
        self,
        client: Arc<ClientInfo>,
        budget: usize,
    ) -> (RemoteBatch, oneshot::Receiver<RemoteReply>) {
        let (tx, rx) = oneshot::channel();
        (
            RemoteBatch {
                data: self.data.freeze(),
                items: self.items,
                reply: tx,
                client,
                budget,
            },
            rx,
        )
    }
}

/// Encodes one reply into `buf` in the connection's protocol.
#[inline]
pub fn reply_into(buf: &mut BytesMut, reply_to: ReplyTo, f: impl FnOnce(&mut dyn ReplySink)) {
    match reply_to {
        None => f(&mut RespWriter::new(buf)),
        Some((id, op)) => {
            let mut w = FrameWriter::new(buf, id, op);
            f(&mut w);
            w.finish();
        }
    }
}

/// Runs a batch handed to this loop.
pub fn execute(ctx: &LoopCtx, batch: RemoteBatch) {
    let node = &ctx.node;
    let c = Ctx {
        node_id: node.node_id,
        now_ms: now_ms(),
        max_value: node.config.max_value(),
        max_reply: node.config.max_output_buffer_bytes,
    };
    let mut out = BytesMut::with_capacity(batch.items.len() * 16);
    let mut ends = Vec::with_capacity(batch.items.len());
    let mut marks = Marks::new();
    let mut overflow = false;
    for item in &batch.items {
        if out.len() > batch.budget {
            overflow = true;
            break;
        }
        let args: SmallVec<[&[u8]; 6]> = item
            .args
            .iter()
            .map(|&(s, e)| &batch.data[s as usize..e as usize])
            .collect();
        let t0 = Instant::now();
        let mut failed = false;
        let mut slot = None;
        reply_into(&mut out, item.reply_to, |sink| {
            let mut sink = Track::new(sink);
            let (s, parsed) = cmd::parse_slot(&args, true);
            slot = s;
            match parsed {
                Ok(command) => {
                    for (s, q) in cmd::run_keyed(&command, &node.store, &c, &mut sink) {
                        add_mark(&mut marks, s, q);
                    }
                }
                Err(e) => sink.error(&e.0),
            }
            failed = sink.failed;
        });
        if let Some(slot) = slot {
            let us = t0.elapsed().as_micros() as u64;
            ctx.stats().cmds.record(slot, us, failed);
            if node.slowlog.is_slow(us) {
                let name = lock(&batch.client.name).clone();
                node.slowlog.push(&args, us, batch.client.addr, name);
            }
        }
        ends.push(out.len() as u32);
    }
    // The requester may have gone (connection closed): nothing to do then.
    let _ = batch.reply.send(RemoteReply {
        out,
        ends,
        marks,
        overflow,
    });
}
