//! The writers: each writes unique keys, one at a time, through a node picked at random
//! (a new one after any error), and records which writes were acknowledged.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use crate::resp::{Conn, Reply};
use crate::rng::Rng;
use crate::{Log, WRITE_END_MS, WRITE_START_MS};

pub const CLIENTS: usize = 3;
/// A client's own bound on one request (above the server's --request-timeout-ms).
const CLIENT_TIMEOUT: Duration = Duration::from_millis(2_000);
/// Pause between two writes of one client.
const THINK_MS: (u64, u64) = (5, 40);

pub struct Writer {
    pub id: usize,
    pub nodes: Vec<String>,
    pub rng: Rng,
    pub log: Rc<RefCell<Log>>,
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    pub async fn run(mut self) -> turmoil::Result {
        tokio::time::sleep(Duration::from_millis(WRITE_START_MS)).await;
        let mut conn: Option<(String, Conn)> = None;
        let mut i = 0u64;
        while now_ms() < WRITE_END_MS {
            let (node, mut c) = match conn.take() {
                Some(c) => c,
                None => {
                    let node = self.rng.pick(&self.nodes).clone();
                    match Conn::open(&node, CLIENT_TIMEOUT).await {
                        Ok(c) => (node, c),
                        Err(e) => {
                            self.log.borrow_mut().note(&format!(
                                "c{} connect {node}: {:?}",
                                self.id,
                                e.kind()
                            ));
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
            };
            let key = format!("k{}-{i}", self.id);
            let val = format!("v{}-{i}", self.id);
            i += 1;
            let r = tokio::time::timeout(
                CLIENT_TIMEOUT,
                c.call(&[b"SET", key.as_bytes(), val.as_bytes()]),
            )
            .await;
            {
                let mut l = self.log.borrow_mut();
                match r {
                    Ok(Ok(Reply::Status(s))) if s == "OK" => {
                        l.note(&format!("{key} ok via {node}"));
                        l.acked.push((key, val));
                        conn = Some((node, c));
                    }
                    Ok(Ok(other)) => {
                        l.note(&format!("{key} {other:?} via {node}"));
                        l.failed += 1;
                        // A refusal (no quorum): try another node next time.
                    }
                    Ok(Err(e)) => {
                        l.note(&format!("{key} io {:?} via {node}", e.kind()));
                        l.failed += 1;
                    }
                    Err(_) => {
                        l.note(&format!("{key} timeout via {node}"));
                        l.failed += 1;
                    }
                }
            }
            let think = self.rng.range(THINK_MS.0, THINK_MS.1);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
        Ok(())
    }
}
