//! Commands that read several keys and compute on them (BITOP, LCS, COPY, TOUCH of several
//! keys) on a cluster: each key is read at R from its own replicas (it may live on other
//! nodes), the command runs on a scratch store holding those copies, and every key it changed
//! is written back through the coordinator as a plain SET (with its expiry) or DEL.
//!
//! Not atomic across keys (each is its own quorum write), as protocol.md §7 says: values are
//! written before deletions, so a failure part-way leaves a copy in place rather than none.

use std::rc::Rc;

use ringkv_proto::key_hash;
use smallvec::SmallVec;

use super::coordinator::{coordinate, error, run_on, Coordinated, Quorum, Reply, ReplyTo, Req};
use super::multi::add_marks;
use super::read::read_merged;
use super::LocalLoop;
use crate::cmd::{Command, Route};
use crate::durability::Marks;
use crate::store::{Entry, Live, Placement, Store, VersionPolicy};
use crate::util::now_ms;

/// The scratch run of `command`, or None if it is not one of these commands.
pub fn run(
    lp: &Rc<dyn LocalLoop>,
    command: &Command<'_>,
    args: &[&[u8]],
    reply_to: ReplyTo,
    q: Quorum,
) -> Option<Coordinated> {
    if !matches!(
        command,
        Command::BitOp(..) | Command::Lcs(_) | Command::Copy(..) | Command::Touch(_)
    ) {
        return None;
    }
    let mut keys: Vec<Vec<u8>> = Vec::new();
    match command.route() {
        Route::Key(k) => keys.push(k.to_vec()),
        Route::Keys(ks) => {
            for k in ks {
                if !keys.iter().any(|x| x == k) {
                    keys.push(k.to_vec());
                }
            }
        }
        Route::None | Route::Pairs(_) | Route::Rename(..) | Route::All => return None,
    }
    let req = Req {
        args: args.iter().map(|a| a.to_vec()).collect(),
        internal: false,
        reply_to,
        q,
        watch: None,
    };
    let lp = lp.clone();
    Some(Coordinated::Inline(Box::pin(async move {
        match run_on_copies(&lp, keys, &req).await {
            Ok(r) => r,
            Err(msg) => error(reply_to, &msg),
        }
    })))
}

async fn run_on_copies(
    lp: &Rc<dyn LocalLoop>,
    keys: Vec<Vec<u8>>,
    req: &Req,
) -> Result<Reply, String> {
    let Some(cl) = lp.cluster().cloned() else {
        return Err("ERR this node is not in cluster mode".into());
    };
    let view = cl.view();
    let mut marks = Marks::new();
    let mut before: Vec<(Vec<u8>, Option<Entry>)> = Vec::with_capacity(keys.len());
    for k in keys {
        let (copy, m) = read_merged(lp, &cl, &view, &k, req.q.r).await?;
        add_marks(&mut marks, &m);
        before.push((k, copy));
    }
    // The scratch copy's versions never leave it (only values are written back), but its
    // dots are this node's.
    let policy = VersionPolicy {
        actor: lp.node().store.actor(),
        ..VersionPolicy::default()
    };
    let scratch = Store::with_policy(1, Placement::Legacy, policy);
    for (k, copy) in &before {
        if let Some(e) = copy {
            scratch.lock(0).put(key_hash(k), e.clone());
        }
    }
    let (out, _) = run_on(&**lp, &scratch, req);
    // What the command changed, as writes: values first, then deletions. Compared as
    // commands see the keys (a copy expired but not purged yet is absent either way: a read
    // command never writes).
    let now = now_ms();
    let mut sets: SmallVec<[Vec<Vec<u8>>; 2]> = SmallVec::new();
    let mut dels: SmallVec<[Vec<Vec<u8>>; 2]> = SmallVec::new();
    for (k, copy) in &before {
        let after = scratch.lock(0).entry(key_hash(k), k).cloned();
        let seen = |e: &Option<Entry>| {
            e.as_ref()
                .and_then(|e| Live::of(e, now))
                .map(|l| (l.value().to_vec(), l.expires_at_ms()))
        };
        let (was, is) = (seen(copy), seen(&after));
        if was == is {
            continue;
        }
        match is {
            Some((value, expires)) => {
                let mut set = vec![b"SET".to_vec(), k.clone(), value];
                if let Some(at) = expires {
                    set.extend([b"PXAT".to_vec(), at.to_string().into_bytes()]);
                }
                sets.push(set);
            }
            None => dels.push(vec![b"DEL".to_vec(), k.clone()]),
        }
    }
    for w in sets.into_iter().chain(dels) {
        let (reply, m) = coordinate(lp, w, false, None, req.q, true, None)
            .reply()
            .await;
        if reply.first() == Some(&b'-') {
            let msg = String::from_utf8_lossy(&reply[1..]).trim_end().to_string();
            return Err(msg);
        }
        // The reply waits for this node's own part of each write to be durable, too.
        add_marks(&mut marks, &m);
    }
    Ok((out, marks))
}
