//! Counters through the commands (see `store::counter`): two replicas increment one key
//! concurrently; the commands see the sum, and keep it a counter until a value replaces it.

use bytes::BytesMut;
use ringkv_proto::{key_hash, ReplySink, RespWriter};

use super::{parse_slot, run_keyed, Ctx};
use crate::store::{Placement, Store, VersionPolicy};

fn replica(actor: u64) -> Store {
    let policy = VersionPolicy {
        actor,
        ..VersionPolicy::default()
    };
    Store::with_policy(1, Placement::Legacy, policy)
}

fn run(store: &Store, actor: u64, now_ms: u64, line: &str) -> String {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    let ctx = Ctx {
        node_id: actor,
        now_ms,
        max_value: 1 << 20,
        max_reply: usize::MAX,
    };
    let mut buf = BytesMut::new();
    let mut out = RespWriter::new(&mut buf);
    match parse_slot(&args, true).1 {
        Ok(c) => {
            run_keyed(&c, store, &ctx, &mut out);
        }
        Err(e) => out.error(&e.0),
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// What the binary GET returns: the values of the key's versions (context dropped).
struct Values(Vec<Vec<u8>>);

impl ReplySink for Values {
    fn simple(&mut self, _: &str) {}
    fn error(&mut self, m: &str) {
        panic!("{m}")
    }
    fn int(&mut self, _: i64) {}
    fn bulk(&mut self, _: &[u8]) {}
    fn nil(&mut self) {}
    fn array(&mut self, _: usize) {}
    fn versioned(&mut self, _: &[u8], values: &[&[u8]]) {
        self.0 = values.iter().map(|v| v.to_vec()).collect();
    }
    fn wants_context(&self) -> bool {
        true
    }
}

/// Sends `from`'s copy of `key` to `to` (replication, as the cluster layer does).
fn sync(from: &Store, to: &Store, key: &[u8]) {
    let h = key_hash(key);
    let e = from.lock(0).entry(h, key).cloned().expect("entry");
    to.lock(0).merge(h, &e);
}

#[test]
fn concurrent_increments_read_as_their_sum_and_stay_a_counter() {
    let (a, b) = (replica(1), replica(2));
    assert_eq!(run(&a, 1, 1, "SET n 10"), "+OK\r\n");
    assert_eq!(
        run(&a, 1, 2, "INCRBY n 5"),
        ":15\r\n",
        "a string's integer is the base"
    );
    sync(&a, &b, b"n");
    // Concurrent: neither has seen the other's increment.
    assert_eq!(run(&a, 1, 3, "INCRBY n 2"), ":17\r\n");
    assert_eq!(run(&b, 2, 4, "DECRBY n 7"), ":8\r\n");
    sync(&b, &a, b"n");
    assert_eq!(run(&a, 1, 5, "GET n"), "$2\r\n10\r\n", "10 + 5 + 2 - 7");
    assert_eq!(run(&a, 1, 5, "STRLEN n"), ":2\r\n");
    // The binary GET shows one value, not the concurrent versions.
    let mut tx = crate::store::Tx::for_shard(&a, 0);
    let mut v = Values(Vec::new());
    crate::cmd::versioned::get(&mut tx, b"n", 5, &mut v).expect("get");
    drop(tx);
    assert_eq!(v.0, vec![b"10".to_vec()]);
    // EXPIRE rewrites it as a counter: a later concurrent increment on b still adds.
    assert_eq!(run(&a, 1, 6, "EXPIRE n 1000"), ":1\r\n");
    assert_eq!(run(&b, 2, 7, "INCRBY n 100"), ":108\r\n");
    sync(&b, &a, b"n");
    assert_eq!(run(&a, 1, 8, "GET n"), "$3\r\n110\r\n");
    assert_eq!(run(&a, 1, 8, "INCR n"), ":111\r\n");
    // A value replaces it: INCRBYFLOAT writes a string, as SET does.
    assert_eq!(run(&a, 1, 9, "INCRBYFLOAT n 0.5"), "$5\r\n111.5\r\n");
    assert_eq!(
        run(&a, 1, 10, "INCR n"),
        "-ERR value is not an integer or out of range\r\n"
    );
}
