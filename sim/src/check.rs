//! The checker: after the heal, reads every acknowledged key through every node (GET, at the
//! cluster's R) until all of them answer every value, or the convergence limit passes; what
//! is still missing then is lost.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::resp::{Conn, Reply};
use crate::rng::Rng;
use crate::{Log, CHECK_AFTER_MS, CONVERGE_LIMIT_MS, HEAL_MS};

/// Keys per pipelined batch of GETs.
const BATCH: usize = 100;
const READ_TIMEOUT: Duration = Duration::from_millis(5_000);
/// Pause between two rounds of reads.
const ROUND_MS: u64 = 250;

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The keys `node` does not answer with their value (with what it answered instead).
async fn missing_on(node: &str, acked: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut conn = None;
    for chunk in acked.chunks(BATCH) {
        let c = match &mut conn {
            Some(c) => c,
            None => match Conn::open(node, READ_TIMEOUT).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    out.extend(chunk.iter().map(|(k, _)| format!("{k} on {node}: {e}")));
                    continue;
                }
            },
        };
        let reqs: Vec<Vec<&[u8]>> = chunk
            .iter()
            .map(|(k, _)| vec![&b"GET"[..], k.as_bytes()])
            .collect();
        match tokio::time::timeout(READ_TIMEOUT, c.pipeline(&reqs)).await {
            Ok(Ok(replies)) => {
                for ((k, v), r) in chunk.iter().zip(replies) {
                    if r != Reply::Bulk(Some(v.as_bytes().to_vec())) {
                        out.push(format!("{k} on {node}: {r:?}"));
                    }
                }
            }
            Ok(Err(e)) => {
                conn = None;
                out.extend(chunk.iter().map(|(k, _)| format!("{k} on {node}: {e}")));
            }
            Err(_) => {
                conn = None;
                out.extend(chunk.iter().map(|(k, _)| format!("{k} on {node}: timeout")));
            }
        }
    }
    out
}

pub async fn run(nodes: Vec<String>, log: Rc<RefCell<Log>>, _rng: Rng) -> turmoil::Result {
    tokio::time::sleep(Duration::from_millis(HEAL_MS + CHECK_AFTER_MS)).await;
    let acked = log.borrow().acked.clone();
    loop {
        let mut missing = Vec::new();
        for n in &nodes {
            missing.extend(missing_on(n, &acked).await);
        }
        let now = now_ms();
        if missing.is_empty() {
            let mut l = log.borrow_mut();
            l.converge_ms = Some(now.saturating_sub(HEAL_MS));
            l.checked = true;
            return Ok(());
        }
        if now >= HEAL_MS + CONVERGE_LIMIT_MS {
            let mut l = log.borrow_mut();
            l.lost = missing;
            l.checked = true;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(ROUND_MS)).await;
    }
}
