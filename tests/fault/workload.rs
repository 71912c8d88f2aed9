//! What clients do during a fault run, what they were told, and the checks made from that
//! after the cluster heals. Every client talks to every node directly (not through the
//! proxies) and sends each request to a node picked at random; a write whose reply was an
//! error or never came is *unknown* (it may or may not have been applied), never lost.
//!
//! - **Set**: unique keys, each written once. Every acknowledged key must be readable (at the
//!   node's R) from every node, with its value.
//! - **Register** (`siblings`): clients read a register (siblings and context) and write a new
//!   value with that context. A value acknowledged and absent at the end must have been read
//!   by some later write (whose context then superseded it); otherwise it was lost.
//! - **Counter**: INCRBY through random nodes; every node's final value lies between the sum
//!   of acknowledged increments and that plus the unknown ones.
//! - **Sequential register** (`lww` mode): one writer per key writes blind (no context), a
//!   write only after the previous one's reply, and reads the key back (through a random
//!   node) after each acknowledged write. With W + R > N that read must not return an earlier
//!   acknowledged write: that means this one was discarded in favour of an older one (lost).
//!   At the end, the value must be the last acknowledged write or an unknown one.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use ringkv_client::{Client, ClientConfig, PutOptions};
use tokio::sync::watch;

use super::rng::Rng;

/// A reply may take this long; a SIGSTOPped node never answers.
const CLIENT_TIMEOUT_MS: u64 = 3_000;
/// Reads in flight per node during a check.
const CHECK_READS_INFLIGHT: usize = 64;

/// Answered / asked, during the faults.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
}

impl Tally {
    fn count<T, E>(&mut self, r: &Result<T, E>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(_) => self.failed += 1,
        }
    }

    pub fn add(&mut self, o: Tally) {
        self.ok += o.ok;
        self.failed += o.failed;
    }

    pub fn availability(&self) -> f64 {
        self.ok as f64 / (self.ok + self.failed).max(1) as f64
    }
}

/// One client per node, each with its own connection.
pub async fn connect(addrs: &[SocketAddr]) -> Vec<Client> {
    let mut out = Vec::new();
    for a in addrs {
        out.push(
            Client::connect(*a, config())
                .await
                .unwrap_or_else(|e| panic!("connect to {a}: {e}")),
        );
    }
    out
}

/// A workload client's connections, one per node, made when first needed and again after a
/// failure to connect (a node may not have started yet, or be down).
pub struct Pool {
    addrs: Vec<SocketAddr>,
    clients: Vec<Option<Client>>,
}

impl Pool {
    pub fn new(addrs: Vec<SocketAddr>) -> Pool {
        let clients = addrs.iter().map(|_| None).collect();
        Pool { addrs, clients }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    /// Node `i`'s client, or an error if it can't be reached now.
    pub async fn get(&mut self, i: usize) -> Result<Client, ringkv_client::ClientError> {
        if let Some(c) = &self.clients[i] {
            return Ok(c.clone());
        }
        let c = Client::connect(self.addrs[i], config()).await?;
        self.clients[i] = Some(c.clone());
        Ok(c)
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        request_timeout: Duration::from_millis(CLIENT_TIMEOUT_MS),
        connect_timeout: Duration::from_millis(1_000),
        ..ClientConfig::default()
    }
}

/// What a check found: `lost` counts acknowledged writes missing, `unexpected` values nobody
/// wrote or a disagreement between nodes; `pending` is true while reads still fail or
/// replicas still disagree (the check is worth repeating).
#[derive(Debug, Default, Clone)]
pub struct Check {
    pub lost: u64,
    pub unexpected: u64,
    pub pending: bool,
    pub detail: String,
}

// ---------------------------------------------------------------- set

#[derive(Debug, Default)]
pub struct SetLog {
    pub acked: Vec<String>,
    pub unknown: u64,
    pub tally: Tally,
}

pub async fn set_client(
    addrs: Vec<SocketAddr>,
    prefix: String,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
    pace: Duration,
) -> SetLog {
    let mut pool = Pool::new(addrs);
    let mut log = SetLog::default();
    let mut tick = tokio::time::interval(pace);
    for i in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let key = format!("{prefix}-{i}");
        let node = rng.below(pool.len() as u64) as usize;
        // No connection: nothing was sent, so the write surely did not happen.
        let Ok(c) = pool.get(node).await else {
            log.tally.failed += 1;
            continue;
        };
        let r = c.put(&key, &key).await;
        log.tally.count(&r);
        match r {
            Ok(_) => log.acked.push(key),
            Err(_) => log.unknown += 1,
        }
    }
    log
}

/// Every acknowledged key from every node, skipping (node, key) pairs already confirmed in
/// an earlier round (`confirmed`); `strict` rereads everything.
pub async fn check_set(
    clients: &[Client],
    acked: &[String],
    confirmed: &mut HashSet<(usize, usize)>,
    strict: bool,
) -> Check {
    let mut c = Check::default();
    for (node, client) in clients.iter().enumerate() {
        let todo: Vec<usize> = (0..acked.len())
            .filter(|k| strict || !confirmed.contains(&(node, *k)))
            .collect();
        let mut reads = futures::stream::iter(todo)
            .map(|k| async move { (k, client.get(&acked[k]).await) })
            .buffer_unordered(CHECK_READS_INFLIGHT);
        while let Some((k, r)) = reads.next().await {
            match r {
                Ok(Some(v)) if v.values.len() == 1 && v.values[0] == acked[k].as_bytes() => {
                    confirmed.insert((node, k));
                }
                Ok(Some(v)) => {
                    c.unexpected += 1;
                    if c.detail.len() < 400 {
                        c.detail += &format!("node {node} has {} = {:?}; ", acked[k], v.values);
                    }
                }
                Ok(None) => {
                    c.lost += 1;
                    if c.detail.len() < 400 {
                        c.detail += &format!("node {node} lacks {}; ", acked[k]);
                    }
                }
                Err(e) => {
                    c.pending = true;
                    if c.detail.len() < 400 {
                        c.detail += &format!("node {node}, read of {}: {e}; ", acked[k]);
                    }
                }
            }
        }
    }
    c.pending |= c.lost > 0;
    c
}

// ---------------------------------------------------------------- register (siblings)

#[derive(Debug, Clone)]
pub struct RegWrite {
    pub key: usize,
    pub value: String,
    /// The values the read before this write returned: its context covered them.
    pub seen: Vec<String>,
    pub acked: bool,
}

#[derive(Debug, Default)]
pub struct RegLog {
    pub writes: Vec<RegWrite>,
    /// Every value a read returned, by key: proof that its write took effect.
    pub observed: Vec<(usize, String)>,
    pub tally: Tally,
}

pub fn reg_key(k: usize) -> String {
    format!("reg-{k}")
}

pub async fn register_client(
    addrs: Vec<SocketAddr>,
    id: usize,
    keys: usize,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
    pace: Duration,
) -> RegLog {
    let mut pool = Pool::new(addrs);
    let mut log = RegLog::default();
    let mut tick = tokio::time::interval(pace);
    for i in 0.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let key = rng.below(keys as u64) as usize;
        let (r, w) = (rng.below(pool.len() as u64), rng.below(pool.len() as u64));
        let (Ok(reader), Ok(writer)) = (pool.get(r as usize).await, pool.get(w as usize).await)
        else {
            log.tally.failed += 1;
            continue;
        };
        let read = reader.get(reg_key(key)).await;
        log.tally.count(&read);
        // Registers exist before the run ([`create_registers`]), and every write carries a
        // context: a write without one would supersede whatever its coordinator holds,
        // unseen (protocol.md §2.4), which the check could not tell from a loss.
        let (context, seen): (_, Vec<String>) = match read {
            Ok(Some(v)) => (Some(v.context), v.values.iter().map(text).collect()),
            Ok(None) | Err(_) => continue,
        };
        log.observed.extend(seen.iter().map(|v| (key, v.clone())));
        let value = format!("c{id}-{i}");
        let r = writer
            .put_with(reg_key(key), &value, PutOptions { context, ttl: None })
            .await;
        log.tally.count(&r);
        log.writes.push(RegWrite {
            key,
            value,
            seen,
            acked: r.is_ok(),
        });
    }
    log
}

/// Writes each register's first value, before the faults.
pub async fn create_registers(addr: SocketAddr, keys: usize) -> Vec<RegWrite> {
    let clients = connect(&[addr]).await;
    let mut out = Vec::new();
    for key in 0..keys {
        let value = format!("init-{key}");
        clients[0]
            .put(reg_key(key), &value)
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", reg_key(key)));
        out.push(RegWrite {
            key,
            value,
            seen: Vec::new(),
            acked: true,
        });
    }
    out
}

fn text(b: &ringkv_client::Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each register's siblings as every node reads them: all nodes must agree, and every
/// acknowledged value is there or was read by a later write that took effect (whose context
/// then superseded it). A write took effect if it was acknowledged or some read returned its
/// value; a failed write with no such evidence excuses nothing.
pub async fn check_registers(clients: &[Client], keys: usize, log: &RegLog) -> Check {
    let writes = &log.writes;
    let mut c = Check::default();
    let mut written: HashSet<(usize, &str)> = HashSet::new();
    let mut observed: HashSet<(usize, &str)> = HashSet::new();
    for w in writes {
        written.insert((w.key, &w.value));
        observed.extend(w.seen.iter().map(|s| (w.key, s.as_str())));
    }
    observed.extend(log.observed.iter().map(|(k, v)| (*k, v.as_str())));
    for key in 0..keys {
        let mut finals: Vec<HashSet<String>> = Vec::new();
        for (node, client) in clients.iter().enumerate() {
            match client.get(reg_key(key)).await {
                Ok(v) => finals.push(
                    v.map(|v| v.values.iter().map(text).collect())
                        .unwrap_or_default(),
                ),
                Err(e) => {
                    c.pending = true;
                    c.detail += &format!("node {node}, read of {}: {e}; ", reg_key(key));
                }
            }
        }
        let Some(first) = finals.first() else {
            continue;
        };
        if finals.iter().any(|f| f != first) {
            c.pending = true;
            c.detail += &format!("nodes disagree on {}; ", reg_key(key));
            continue;
        }
        for v in first {
            if !written.contains(&(key, v.as_str())) {
                c.unexpected += 1;
                c.detail += &format!("{} holds {v}, never written; ", reg_key(key));
            }
        }
        let took_effect = |w: &RegWrite| {
            w.acked || first.contains(&w.value) || observed.contains(&(key, w.value.as_str()))
        };
        let superseded: HashSet<&str> = writes
            .iter()
            .filter(|w| w.key == key && took_effect(w))
            .flat_map(|w| w.seen.iter().map(String::as_str))
            .collect();
        for w in writes.iter().filter(|w| w.key == key && w.acked) {
            if !first.contains(&w.value) && !superseded.contains(w.value.as_str()) {
                c.lost += 1;
                if c.detail.len() < 400 {
                    c.detail += &format!("{} lost {}; ", reg_key(key), w.value);
                }
            }
        }
    }
    c.pending |= c.lost > 0;
    c
}

// ---------------------------------------------------------------- counters

#[derive(Debug, Default)]
pub struct CounterLog {
    /// Per key: the sum of acknowledged increments, and of unknown ones.
    pub acked: HashMap<usize, i64>,
    pub unknown: HashMap<usize, i64>,
    pub tally: Tally,
}

pub fn counter_key(k: usize) -> String {
    format!("cnt-{k}")
}

pub async fn counter_client(
    addrs: Vec<SocketAddr>,
    keys: usize,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
    pace: Duration,
) -> CounterLog {
    let mut pool = Pool::new(addrs);
    let mut log = CounterLog::default();
    let mut tick = tokio::time::interval(pace);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let key = rng.below(keys as u64) as usize;
        let by = rng.range(1, 5) as i64;
        let node = rng.below(pool.len() as u64) as usize;
        let Ok(c) = pool.get(node).await else {
            log.tally.failed += 1;
            continue;
        };
        let r = c.incr_by(counter_key(key), by).await;
        log.tally.count(&r);
        let sum = match r {
            Ok(_) => log.acked.entry(key).or_default(),
            Err(_) => log.unknown.entry(key).or_default(),
        };
        *sum += by;
    }
    log
}

pub async fn check_counters(clients: &[Client], keys: usize, log: &CounterLog) -> Check {
    let mut c = Check::default();
    for key in 0..keys {
        let acked = log.acked.get(&key).copied().unwrap_or(0);
        let most = acked + log.unknown.get(&key).copied().unwrap_or(0);
        let mut values = Vec::new();
        for (node, client) in clients.iter().enumerate() {
            match client.counter(counter_key(key)).await {
                Ok(v) => values.push(v.unwrap_or(0)),
                Err(e) => {
                    c.pending = true;
                    c.detail += &format!("node {node}, read of {}: {e}; ", counter_key(key));
                }
            }
        }
        if values.iter().any(|v| Some(v) != values.first()) {
            c.pending = true;
            c.detail += &format!("nodes disagree on {}: {values:?}; ", counter_key(key));
            continue;
        }
        let Some(&v) = values.first() else { continue };
        if v < acked {
            c.lost += (acked - v) as u64;
            c.detail += &format!("{} = {v}, acknowledged {acked}; ", counter_key(key));
        } else if v > most {
            c.unexpected += (v - most) as u64;
            c.detail += &format!("{} = {v}, at most {most} sent; ", counter_key(key));
        }
    }
    c.pending |= c.lost > 0;
    c
}

// ---------------------------------------------------------------- sequential register

/// One key's writes, in the order its single writer made them: (value, acknowledged).
#[derive(Debug, Default)]
pub struct SeqLog {
    pub key: String,
    pub writes: Vec<(String, bool)>,
    /// Acknowledged writes whose read-back returned an earlier write, and the first few.
    pub stale: Vec<usize>,
    pub stale_seen: Vec<(String, String)>,
    pub tally: Tally,
}

/// The write number in a sequential register's value `<key>-<i>`.
fn seq_index(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .rsplit('-')
        .next()?
        .parse()
        .ok()
}

pub async fn sequential_client(
    addrs: Vec<SocketAddr>,
    key: String,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
    pace: Duration,
) -> SeqLog {
    let mut pool = Pool::new(addrs);
    let mut log = SeqLog {
        key,
        ..SeqLog::default()
    };
    for i in 0.. {
        // `pace` (several milliseconds) between a reply and the next write: without clock
        // skew, each write's timestamp is then later than its predecessor's, never equal.
        tokio::select! {
            _ = tokio::time::sleep(pace) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let value = format!("{}-{i}", log.key);
        let node = rng.below(pool.len() as u64) as usize;
        let Ok(c) = pool.get(node).await else {
            log.tally.failed += 1;
            continue;
        };
        let r = c.put(&log.key, &value).await;
        log.tally.count(&r);
        log.writes.push((value.clone(), r.is_ok()));
        if r.is_err() {
            continue;
        }
        let reader = rng.below(pool.len() as u64) as usize;
        let Ok(reader) = pool.get(reader).await else {
            continue;
        };
        if let Ok(Some(v)) = reader.get(&log.key).await {
            // An earlier write that was acknowledged: it completed before this one began, so
            // reading it now means this one was discarded. (An earlier write whose outcome
            // was unknown may take effect late, e.g. from the socket of a paused node: no
            // proof of anything.)
            let got = v.value().and_then(|b| seq_index(b));
            let acked_earlier = got.is_some_and(|g| g < i && log.writes[g as usize].1);
            if acked_earlier {
                log.stale.push(i as usize);
                if log.stale_seen.len() < 3 {
                    log.stale_seen.push((value, text(&v.values[0])));
                }
            }
        }
    }
    log
}

/// `count_stale`: whether a stale read-back proves a loss (quorums of real replicas only;
/// see [`super::Scenario::sloppy`]); otherwise stale read-backs are only reported.
pub async fn check_sequential(clients: &[Client], logs: &[SeqLog], count_stale: bool) -> Check {
    let mut c = Check::default();
    for log in logs {
        let mut finals = Vec::new();
        for (node, client) in clients.iter().enumerate() {
            match client.get(&log.key).await {
                Ok(v) => finals.push(v.map(|v| v.values.iter().map(text).collect::<Vec<_>>())),
                Err(e) => {
                    c.pending = true;
                    c.detail += &format!("node {node}, read of {}: {e}; ", log.key);
                }
            }
        }
        if finals.iter().any(|f| Some(f) != finals.first()) {
            c.pending = true;
            c.detail += &format!("nodes disagree on {}: {finals:?}; ", log.key);
            continue;
        }
        let Some(last) = finals.first() else { continue };
        // Lost writes by index: stale read-backs and acknowledged writes after the final
        // value, each counted once.
        let mut lost: HashSet<usize> = HashSet::new();
        if !log.stale.is_empty() {
            c.detail +=
                &format!(
                "{}: {} acknowledged writes read back as an earlier one{} (wrote, read: {:?}); ",
                log.key,
                log.stale.len(),
                if count_stale { "" } else { " (not counted: sloppy quorum)" },
                log.stale_seen
            );
            if count_stale {
                lost.extend(&log.stale);
            }
        }
        let Some(values) = last else {
            // Nothing there: every acknowledged write was lost.
            lost.extend(
                log.writes
                    .iter()
                    .enumerate()
                    .filter(|w| w.1 .1)
                    .map(|w| w.0),
            );
            c.lost += lost.len() as u64;
            continue;
        };
        let [value] = values.as_slice() else {
            c.unexpected += 1;
            c.detail += &format!("{} has siblings {values:?}; ", log.key);
            continue;
        };
        let Some(at) = log.writes.iter().position(|w| &w.0 == value) else {
            c.unexpected += 1;
            c.detail += &format!("{} holds {value}, never written; ", log.key);
            continue;
        };
        // The writes acknowledged after the final one, if that one was acknowledged too (an
        // unknown write may have taken effect after all of them).
        if log.writes[at].1 {
            let after: Vec<usize> = (at + 1..log.writes.len())
                .filter(|&j| log.writes[j].1)
                .collect();
            if !after.is_empty() {
                c.detail += &format!(
                    "{} ends at {value}, {} acknowledged writes after it; ",
                    log.key,
                    after.len()
                );
            }
            lost.extend(after);
        }
        c.lost += lost.len() as u64;
    }
    c
}
