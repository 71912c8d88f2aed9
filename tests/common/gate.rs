//! Waiting for durability in tests of the storage layer, through the server's own reply gate
//! (`ringkv::durability::Gate`, which each event loop holds).

use std::rc::Rc;
use std::sync::Arc;

use ringkv::durability::{Durability, Gate};

/// Wakes the writers of the shards written (as an event loop does at the end of its tick),
/// then waits on a gate, mirrored by one follower task per shard as on an event loop, until
/// the writes are durable as the policy requires (or the disk failed).
pub fn wait(
    rt: &tokio::runtime::Runtime,
    d: &Durability,
    marks: &[(u32, u64)],
) -> Result<(), Arc<str>> {
    for &(s, _) in marks {
        d.logs[s as usize].kick();
    }
    let gate = Rc::new(Gate::new(d));
    let local = tokio::task::LocalSet::new();
    local.block_on(rt, async {
        for (shard, log) in d.logs.iter().enumerate() {
            let (gate, log) = (gate.clone(), log.clone());
            tokio::task::spawn_local(async move { gate.follow(&log, shard).await });
        }
        gate.wait(marks).await
    })
}
