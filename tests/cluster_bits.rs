//! Bit commands on a cluster: SETBIT, BITFIELD and friends written through one node are read
//! the same through another (they are coordinated as single-key commands: reads at R,
//! read-modify-writes at R then W); commands over several keys answer the "not supported in
//! cluster mode yet" error and change nothing.

mod common;

use common::cluster::{Cluster, CONVERGE};
use common::resp::Reply;
use common::wait_until;

fn int(n: i64) -> Reply {
    Reply::Int(n)
}

#[test]
fn bit_commands_through_one_node_agree_with_another() {
    let c = Cluster::start(3, &[]);
    c.wait_converged();
    let mut a = c.conn(0);
    let keys: Vec<String> = (0..12).map(|i| format!("bits{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        // Three distinct bits (i, 3i+1 and 100+i, all below byte 20).
        for off in [i, 3 * i + 1, 100 + i] {
            assert_eq!(
                a.call_str(&["SETBIT", k, &off.to_string(), "1"]),
                int(0),
                "{k}"
            );
        }
        assert_eq!(
            a.call_str(&["SETBIT", k, &i.to_string(), "1"]),
            int(1),
            "{k}"
        );
        assert_eq!(
            a.call_str(&["BITFIELD", k, "INCRBY", "u8", "#20", "7"]),
            Reply::Array(Some(vec![int(7)])),
            "{k}"
        );
    }
    // The writes were replicated: every replica (N=3: each node) holds the value itself.
    for k in &keys {
        let Reply::Bulk(Some(v)) = a.call_str(&["GET", k]) else {
            panic!("{k} exists")
        };
        wait_until(&format!("{k} on every node"), CONVERGE, || {
            (0..3).all(|i| c.local(i, k.as_bytes()).as_deref() == Some(&v[..]))
        });
    }
    for node in [1, 2] {
        let mut b = c.conn(node);
        for (i, k) in keys.iter().enumerate() {
            let what = format!("{k} through node {node}");
            // Bits i, 3i+1, 100+i and the three of u8 #20 = 7 (bits 165..=167).
            assert_eq!(b.call_str(&["BITCOUNT", k]), int(6), "{what}");
            for off in [i, 3 * i + 1, 100 + i] {
                assert_eq!(
                    b.call_str(&["GETBIT", k, &off.to_string()]),
                    int(1),
                    "{what}"
                );
            }
            assert_eq!(b.call_str(&["GETBIT", k, "99"]), int(0), "{what}");
            assert_eq!(b.call_str(&["BITPOS", k, "1"]), int(i as i64), "{what}");
            assert_eq!(
                b.call_str(&["BITFIELD_RO", k, "GET", "u8", "#20"]),
                Reply::Array(Some(vec![int(7)])),
                "{what}"
            );
            assert_eq!(b.call_str(&["STRLEN", k]), int(21), "{what}");
            assert_eq!(b.call_str(&["TOUCH", k]), int(1), "{what}");
            assert_eq!(
                b.call_str(&["OBJECT", "ENCODING", k]),
                Reply::Bulk(Some(b"embstr".to_vec())),
                "{what}"
            );
        }
    }
    // A read-modify-write through another node sees the first node's writes.
    let mut b = c.conn(2);
    assert_eq!(b.call_str(&["SETBIT", &keys[5], "5", "0"]), int(1));
    assert_eq!(a.call_str(&["GETBIT", &keys[5], "5"]), int(0));
    for cmd in [
        vec!["BITOP", "AND", "bits-dest", "bits1", "bits2"],
        vec!["COPY", "bits1", "bits-copy"],
        vec!["LCS", "bits1", "bits2"],
        vec!["TOUCH", "bits1", "bits2"],
    ] {
        match a.call_str(&cmd) {
            Reply::Error(e) => assert!(
                e.contains("not supported in cluster mode yet"),
                "{cmd:?}: {e}"
            ),
            r => panic!("{cmd:?}: {r:?}"),
        }
    }
    assert_eq!(b.call_str(&["EXISTS", "bits-dest", "bits-copy"]), int(0));
}
