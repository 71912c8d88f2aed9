//! Handing commands to the loop that owns their shard.
//!
//! A connection collects the commands of one read for each other loop into one
//! [`RemoteBatch`] (arguments copied into one buffer), sends it, and goes on serving; the
//! owner runs the batch in one go between its own reads and sends back the encoded replies,
//! each tagged with the slot of its request in the connection's reply queue
//! (`net::replies`) and with its own durability marks, so each completes on its own.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringkv_proto::{FrameWriter, ReplySink, RespWriter};
use smallvec::SmallVec;
use tokio::sync::mpsc;

use super::event_loop::LoopCtx;
use crate::cmd::{self, Ctx};
use crate::durability::Marks;
use crate::node::ClientInfo;
use crate::stats::Track;
use crate::util::{lock, now_ms};

/// How a reply must be encoded: RESP, or a binary frame answering (request id, opcode).
pub type ReplyTo = Option<(u64, u8)>;

pub struct Item {
    args: SmallVec<[(u32, u32); 6]>,
    reply_to: ReplyTo,
    /// The request's slot in the connection's reply queue.
    slot: u64,
}

pub struct RemoteBatch {
    data: Bytes,
    items: Vec<Item>,
    /// The connection's channel for completed batches.
    reply: mpsc::UnboundedSender<RemoteReply>,
    /// The client that sent the batch (for SLOWLOG entries).
    client: Arc<ClientInfo>,
    /// Reply bytes the client's output buffer can still take; past it the rest of the batch
    /// is not run and the client is disconnected (--max-output-buffer-bytes).
    budget: usize,
}

impl RemoteBatch {
    /// The reply-queue slots of its commands (to fail them if the batch can't be sent).
    pub fn slots(&self) -> impl Iterator<Item = u64> + '_ {
        self.items.iter().map(|i| i.slot)
    }
}

/// Encoded replies of a batch, back to back.
pub struct RemoteReply {
    pub out: BytesMut,
    /// One per command run, in batch order.
    pub done: Vec<Done>,
    /// The replies passed the budget; the commands after that were not run.
    pub overflow: bool,
}

/// One command of a batch, run.
pub struct Done {
    pub slot: u64,
    /// Where its reply ends in `out` (it starts where the previous one ends).
    pub end: u32,
    /// WAL positions its reply depends on: it waits for them at the origin.
    pub marks: Marks,
}

/// Collects the commands for one other loop.
#[derive(Default)]
pub struct BatchBuilder {
    data: BytesMut,
    items: Vec<Item>,
}

impl BatchBuilder {
    /// Adds a command whose reply completes slot `slot`.
    pub fn push(&mut self, args: &[&[u8]], reply_to: ReplyTo, slot: u64) {
        let mut ranges = SmallVec::with_capacity(args.len());
        for a in args {
            let start = self.data.len() as u32;
            self.data.extend_from_slice(a);
            ranges.push((start, self.data.len() as u32));
        }
        self.items.push(Item {
            args: ranges,
            reply_to,
            slot,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn build(
        self,
        client: Arc<ClientInfo>,
        budget: usize,
        reply: mpsc::UnboundedSender<RemoteReply>,
    ) -> RemoteBatch {
        RemoteBatch {
            data: self.data.freeze(),
            items: self.items,
            reply,
            client,
            budget,
        }
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
    let mut done = Vec::with_capacity(batch.items.len());
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
        let mut marks = Marks::new();
        reply_into(&mut out, item.reply_to, |sink| {
            let mut sink = Track::new(sink);
            let (s, parsed) = cmd::parse_slot(&args, true);
            slot = s;
            match parsed {
                Ok(command) => marks = cmd::run_keyed(&command, &node.store, &c, &mut sink),
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
        done.push(Done {
            slot: item.slot,
            end: out.len() as u32,
            marks,
        });
    }
    // The requester may have gone (connection closed): nothing to do then.
    let _ = batch.reply.send(RemoteReply {
        out,
        done,
        overflow,
    });
}
