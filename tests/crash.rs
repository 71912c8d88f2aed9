//! Crash test: concurrent writers with `--fsync always`, SIGKILL at pseudo-random moments, and
//! a restart on the same data directory after each kill. Every acknowledged write must
//! survive; a write in flight at the kill (sent, not acknowledged) may or may not.

mod common;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::resp::{Conn, Reply};
use common::Server;

const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 250;
const COUNTERS_PER_WRITER: usize = 8;
const MIN_KILLS: usize = 20;
const MAX_KILLS: usize = 40;
/// The whole loop stops starting new rounds after this (it has at least MIN_KILLS by then).
const BUDGET: Duration = Duration::from_secs(25);
const FLAGS: &[&str] = &[
    "--fsync",
    "always",
    "--threads",
    "2",
    "--shards",
    "8",
    "--snapshot-wal-bytes",
    "65536",
    "--wal-segment-bytes",
    "16384",
];

/// A round must reach its target of acknowledged ops within this (it takes well under a
/// second normally; at most 2,000 ops with group commit).
const ROUND_DEADLINE: Duration = Duration::from_secs(30);
/// Read and write timeout of the test's connections.
const TIMEOUT: Duration = Duration::from_secs(15);

fn connect(server: &Server) -> Conn {
    Conn::try_connect_timeout(server.addr, TIMEOUT).expect("connect")
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

// ---------------------------------------------------------------------------------------------
// The model: per key, the last acknowledged value and the predicted values of ops in flight.

type Val = Option<Vec<u8>>;

#[derive(Default, Clone)]
struct KeyState {
    /// Latest acknowledged value (None: absent). Keys never written are absent.
    acked: Val,
    /// Predicted value after each op sent but not yet acknowledged, in order.
    pending: VecDeque<Val>,
}

impl KeyState {
    fn predicted(&self) -> &Val {
        self.pending.back().unwrap_or(&self.acked)
    }
}

/// One writer's key space (disjoint from the others', so its order alone decides values).
struct Model {
    tid: usize,
    keys: HashMap<Vec<u8>, KeyState>,
}

enum Op {
    Set(Vec<u8>, Vec<u8>),
    Incr(Vec<u8>),
    Del(Vec<u8>),
    MSet(Vec<(Vec<u8>, Vec<u8>)>),
}

impl Op {
    fn keys(&self) -> Vec<&[u8]> {
        match self {
            Op::Set(k, _) | Op::Incr(k) | Op::Del(k) => vec![k],
            Op::MSet(kv) => kv.iter().map(|(k, _)| k.as_slice()).collect(),
        }
    }

    fn args(&self) -> Vec<Vec<u8>> {
        match self {
            Op::Set(k, v) => vec![b"SET".to_vec(), k.clone(), v.clone()],
            Op::Incr(k) => vec![b"INCR".to_vec(), k.clone()],
            Op::Del(k) => vec![b"DEL".to_vec(), k.clone()],
            Op::MSet(kv) => {
                let mut a = vec![b"MSET".to_vec()];
                for (k, v) in kv {
                    a.push(k.clone());
                    a.push(v.clone());
                }
                a
            }
        }
    }
}

impl Model {
    fn key(&self, i: usize) -> Vec<u8> {
        format!("w{}:key:{i}", self.tid).into_bytes()
    }

    fn counter(&self, i: usize) -> Vec<u8> {
        format!("w{}:ctr:{i}", self.tid).into_bytes()
    }

    fn value(rng: &mut u64, round: usize, n: u64) -> Vec<u8> {
        // 100..1100 bytes, so the WAL grows quickly enough for snapshots and rotations.
        let len = 100 + (xorshift(rng) % 1000) as usize;
        let mut v = format!("r{round}-n{n}-").into_bytes();
        let fill = b'a' + (n % 26) as u8;
        v.resize(len, fill);
        v
    }

    fn random_op(&self, rng: &mut u64, round: usize, n: u64) -> Op {
        let pick = xorshift(rng) % 100;
        let key = self.key((xorshift(rng) % KEYS_PER_WRITER as u64) as usize);
        match pick {
            0..=44 => Op::Set(key, Self::value(rng, round, n)),
            45..=59 => {
                Op::Incr(self.counter((xorshift(rng) % COUNTERS_PER_WRITER as u64) as usize))
            }
            60..=62 => Op::Del(self.counter((xorshift(rng) % COUNTERS_PER_WRITER as u64) as usize)),
            63..=77 => Op::Del(key),
            _ => {
                // 2..=5 distinct keys: almost always on several shards.
                let n_keys = 2 + (xorshift(rng) % 4) as usize;
                let mut kv: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
                while kv.len() < n_keys {
                    let k = self.key((xorshift(rng) % KEYS_PER_WRITER as u64) as usize);
                    if kv.iter().all(|(x, _)| *x != k) {
                        let v = Self::value(rng, round, n);
                        kv.push((k, v));
                    }
                }
                Op::MSet(kv)
            }
        }
    }

    /// Records `op` as sent; returns the reply it must get.
    fn sent(&mut self, op: &Op) -> Reply {
        match op {
            Op::Set(k, v) => {
                self.keys
                    .entry(k.clone())
                    .or_default()
                    .pending
                    .push_back(Some(v.clone()));
                Reply::Simple("OK".into())
            }
            Op::MSet(kv) => {
                for (k, v) in kv {
                    self.keys
                        .entry(k.clone())
                        .or_default()
                        .pending
                        .push_back(Some(v.clone()));
                }
                Reply::Simple("OK".into())
            }
            Op::Incr(k) => {
                let st = self.keys.entry(k.clone()).or_default();
                let cur: i64 = match st.predicted() {
                    Some(b) => std::str::from_utf8(b).unwrap().parse().unwrap(),
                    None => 0,
                };
                st.pending
                    .push_back(Some((cur + 1).to_string().into_bytes()));
                Reply::Int(cur + 1)
            }
            Op::Del(k) => {
                let st = self.keys.entry(k.clone()).or_default();
                let existed = st.predicted().is_some();
                st.pending.push_back(None);
                Reply::Int(existed as i64)
            }
        }
    }

    /// The oldest op in flight was acknowledged.
    fn acked(&mut self, op: &Op) {
        for k in op.keys() {
            let st = self.keys.get_mut(k).expect("key in flight");
            st.acked = st.pending.pop_front().expect("op in flight");
        }
    }
}

/// Counts acknowledged ops across writers; the main thread waits on it to pick the kill moment.
struct Progress {
    acked: Mutex<u64>,
    cv: Condvar,
}

/// Writes until the connection breaks (the kill). Returns the model and how many ops it got
/// acknowledged.
fn writer(
    server_addr: std::net::SocketAddr,
    mut m: Model,
    seed: u64,
    round: usize,
    progress: Arc<Progress>,
) -> (Model, u64) {
    let mut c = match Conn::try_connect_timeout(server_addr, TIMEOUT) {
        Ok(c) => c,
        Err(_) => return (m, 0),
    };
    let mut rng = seed | 1;
    let mut n = 0u64;
    let mut acked = 0u64;
    loop {
        // A pipeline of 1..=4 commands.
        let depth = 1 + (xorshift(&mut rng) % 4) as usize;
        let mut ops = Vec::new();
        let mut expect = VecDeque::new();
        for _ in 0..depth {
            n += 1;
            let op = m.random_op(&mut rng, round, n);
            expect.push_back(m.sent(&op));
            ops.push(op);
        }
        if c.send_pipeline(&ops.iter().map(Op::args).collect::<Vec<_>>())
            .is_err()
        {
            return (m, acked);
        }
        for op in &ops {
            let want = expect.pop_front().unwrap();
            match c.read() {
                Ok(got) => {
                    assert_eq!(
                        got,
                        want,
                        "writer {}: reply to {:?}",
                        m.tid,
                        op.args()
                            .first()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                    );
                    m.acked(op);
                    acked += 1;
                    let mut a = progress.acked.lock().unwrap();
                    *a += 1;
                    progress.cv.notify_all();
                }
                Err(_) => return (m, acked),
            }
        }
    }
}

/// After a restart: every key holds its acknowledged value or the value of an op that was in
/// flight at the kill. The model then takes what is there as acknowledged.
fn verify(server: &Server, models: &mut [Model], round: usize) -> (usize, usize) {
    let mut c = connect(server);
    let (mut checked, mut inflight_seen) = (0, 0);
    for m in models.iter_mut() {
        let keys: Vec<Vec<u8>> = m.keys.keys().cloned().collect();
        for chunk in keys.chunks(200) {
            let cmds: Vec<Vec<Vec<u8>>> = chunk
                .iter()
                .map(|k| vec![b"GET".to_vec(), k.clone()])
                .collect();
            c.send_pipeline(&cmds).expect("send GETs");
            for k in chunk {
                let got = match c.read().expect("GET reply") {
                    Reply::Bulk(v) => v,
                    other => panic!("GET {}: {other:?}", String::from_utf8_lossy(k)),
                };
                let st = m.keys.get_mut(k).unwrap();
                if got != st.acked {
                    let ok = st.pending.iter().any(|p| *p == got);
                    assert!(
                        ok,
                        "round {round}: key {} lost an acknowledged write: acknowledged {:?}, in flight {:?}, found {:?}",
                        String::from_utf8_lossy(k),
                        st.acked.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned()),
                        st.pending.iter().map(|p| p.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned())).collect::<Vec<_>>(),
                        got.as_ref().map(|v| String::from_utf8_lossy(&v[..v.len().min(24)]).into_owned()),
                    );
                    inflight_seen += 1;
                }
                st.acked = got;
                st.pending.clear();
                checked += 1;
            }
        }
    }
    (checked, inflight_seen)
}

fn count(log: &str, what: &str) -> usize {
    log.lines().filter(|l| l.contains(what)).count()
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    let mut rng: u64 = 0x5eed_1234_abcd_0042;
    let mut models: Vec<Model> = (0..WRITERS)
        .map(|tid| Model {
            tid,
            keys: HashMap::new(),
        })
        .collect();
    let mut server = Server::start_in(data.path(), FLAGS);
    let (mut snapshots, mut torn) = (0, 0);
    let mut kills = 0;
    let mut total_acked = 0u64;
    while kills < MAX_KILLS && (kills < MIN_KILLS || started.elapsed() < BUDGET) {
        let round = kills;
        let target = 50 + xorshift(&mut rng) % 1951;
        // Some rounds also ask for a snapshot halfway, so snapshots overlap writes and kills.
        let bgsave_at = xorshift(&mut rng).is_multiple_of(3).then_some(target / 2);
        let progress = Arc::new(Progress {
            acked: Mutex::new(0),
            cv: Condvar::new(),
        });
        let handles: Vec<_> = std::mem::take(&mut models)
            .into_iter()
            .map(|m| {
                let p = progress.clone();
                let addr = server.addr;
                let seed = xorshift(&mut rng);
                std::thread::spawn(move || writer(addr, m, seed, round, p))
            })
            .collect();
        let deadline = Instant::now() + ROUND_DEADLINE;
        let mut bgsave_pending = bgsave_at;
        {
            let mut a = progress.acked.lock().unwrap();
            loop {
                if let Some(at) = bgsave_pending {
                    if *a >= at {
                        drop(a);
                        let r = connect(&server).call(&[b"BGSAVE"]);
                        assert!(
                            matches!(&r, Reply::Simple(_))
                                || matches!(&r, Reply::Error(e) if e.contains("in progress")),
                            "BGSAVE: {r:?}"
                        );
                        bgsave_pending = None;
                        a = progress.acked.lock().unwrap();
                        continue;
                    }
                }
                if *a >= target {
                    break;
                }
                // A round that can't reach its target is a failure (a stuck or dead server, a
                // writer that stopped), not a reason to kill early and call it a round.
                assert!(
                    Instant::now() <= deadline,
                    "round {round}: only {} of {target} ops acknowledged within {ROUND_DEADLINE:?}\n\
                     server log:\n{}",
                    *a,
                    server.log_text()
                );
                let (g, _) = progress
                    .cv
                    .wait_timeout(a, Duration::from_millis(100))
                    .unwrap();
                a = g;
            }
        }
        let pid = server.pid();
        let log = server.log_text();
        snapshots += count(&log, "snapshot written");
        let status = server.kill();
        assert!(!status.success(), "SIGKILL must not look like a clean exit");
        kills += 1;
        let mut round_acked = 0;
        for h in handles {
            let (m, a) = h.join().expect("writer thread");
            round_acked += a;
            models.push(m);
        }
        models.sort_by_key(|m| m.tid);
        total_acked += round_acked;
        let inflight: usize = models
            .iter()
            .flat_map(|m| m.keys.values())
            .filter(|s| !s.pending.is_empty())
            .count();
        server = Server::start_in(data.path(), FLAGS);
        let rlog = server.log_text();
        torn += count(&rlog, "torn record");
        let (checked, seen) = verify(&server, &mut models, round);
        println!(
            "round {round}: killed pid {pid} after {round_acked} acknowledged ops (target {target}{}), \
             {inflight} keys in flight, restart checked {checked} keys ({seen} showed an in-flight write), \
             {:.1}s",
            if bgsave_at.is_some() { ", BGSAVE" } else { "" },
            started.elapsed().as_secs_f64()
        );
    }
    // A few writes on every shard, so the graceful exit snapshots each of them.
    let mut c = connect(&server);
    let finals: Vec<Vec<Vec<u8>>> = (0..200)
        .map(|i| {
            vec![
                b"SET".to_vec(),
                format!("final:{i}").into_bytes(),
                b"x".to_vec(),
            ]
        })
        .collect();
    c.send_pipeline(&finals).unwrap();
    for _ in 0..200 {
        assert_eq!(c.read().unwrap(), Reply::Simple("OK".into()));
    }
    let status = server.terminate();
    assert!(status.success(), "graceful exit: {status}");
    println!(
        "{kills} kills, {total_acked} acknowledged ops, {snapshots} snapshots written, \
         {torn} torn tails truncated at recovery, {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(kills >= MIN_KILLS);
    assert!(snapshots > 0, "no snapshot was taken during the crash loop");
    // After the graceful exit (which snapshots every shard), each shard has one snapshot and
    // no segment it covers.
    for shard in 0..8 {
        let dir = data.path().join(format!("shard-{shard:04}"));
        let mut snaps = Vec::new();
        let mut segs = Vec::new();
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if let Some(s) = name
                .strip_prefix("snap-")
                .and_then(|s| s.strip_suffix(".rks"))
            {
                snaps.push(s.parse::<u64>().unwrap());
            } else if let Some(s) = name
                .strip_prefix("wal-")
                .and_then(|s| s.strip_suffix(".log"))
            {
                segs.push(s.parse::<u64>().unwrap());
            }
        }
        assert_eq!(snaps.len(), 1, "{}: snapshots {snaps:?}", dir.display());
        assert!(
            segs.iter().all(|&first| first > snaps[0]),
            "{}: segments {segs:?} but snapshot {}",
            dir.display(),
            snaps[0]
        );
    }
    // And a last restart after the graceful exit still has everything.
    let server = Server::start_in(data.path(), FLAGS);
    let (checked, seen) = verify(&server, &mut models, kills);
    assert_eq!(seen, 0, "nothing was in flight at the graceful exit");
    let mut c = connect(&server);
    assert_eq!(
        c.call(&[b"GET", b"final:199"]),
        Reply::Bulk(Some(b"x".to_vec()))
    );
    println!("after the graceful exit: {checked} keys checked");
}
