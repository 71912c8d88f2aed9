//! This node's tree of a partition, as the anti-entropy calls show it (the replica side of
//! AAE_ROOTS, AAE_BRANCHES, AAE_LEAVES and AAE_KEYS), and the levels above the store's
//! segments: a branch is the XOR of its leaves, the root the XOR of the branches.

use std::rc::Rc;

use bytes::BytesMut;
use ringkv_proto::peer::{self, AaeRequest, TreeShape, AAE_SEGMENT_BITS};

use crate::cluster::link::Link;
use crate::cluster::LocalLoop;
use crate::store::Store;
use crate::util::now_ms;

/// The first segment (of the whole hash space) of partition `p` of 2^`bits`.
pub fn first_segment(p: u32, bits: u32) -> u32 {
    match AAE_SEGMENT_BITS.checked_sub(bits) {
        Some(shift) if bits > 0 => p << shift,
        // One partition, or (not allowed by the config) more partitions than segments.
        Some(_) | None => 0,
    }
}

/// Every segment hash (leaf) of partition `p`, in order.
pub fn leaves(store: &Store, bits: u32, p: u32) -> Vec<u64> {
    let shape = TreeShape::new(bits);
    store.segment_hashes(first_segment(p, bits), shape.segments)
}

/// XOR of each run of `group` hashes.
pub fn fold(hashes: &[u64], group: usize) -> Vec<u64> {
    hashes
        .chunks(group.max(1))
        .map(|c| c.iter().fold(0, |a, h| a ^ h))
        .collect()
}

pub fn root(leaves: &[u64]) -> u64 {
    leaves.iter().fold(0, |a, h| a ^ h)
}

/// The reply body of an anti-entropy request, read from this node's store.
pub fn answer(store: &Store, partitions: u32, req: &AaeRequest) -> Result<BytesMut, String> {
    let bits = partitions.trailing_zeros();
    let shape = TreeShape::new(bits);
    let check = |p: u32| {
        if p >= partitions {
            Err(format!(
                "ERR partition {p} is out of range (this ring has {partitions})"
            ))
        } else {
            Ok(p)
        }
    };
    let mut body = BytesMut::new();
    match req {
        AaeRequest::Roots { partitions: ps } => {
            let mut roots = Vec::with_capacity(ps.len());
            for &p in ps {
                roots.push(root(&leaves(store, bits, check(p)?)));
            }
            peer::encode_hashes(&roots, &mut body);
        }
        AaeRequest::Branches { partition } => {
            let l = leaves(store, bits, check(*partition)?);
            peer::encode_hashes(&fold(&l, shape.leaves as usize), &mut body);
        }
        AaeRequest::Leaves {
            partition,
            branches,
        } => {
            let l = leaves(store, bits, check(*partition)?);
            let w = shape.leaves as usize;
            let mut out = Vec::with_capacity(branches.len() * w);
            for &b in branches {
                let at = b as usize * w;
                let run = l.get(at..at + w).ok_or_else(|| {
                    format!(
                        "ERR branch {b} is out of range ({} branches)",
                        shape.branches
                    )
                })?;
                out.extend_from_slice(run);
            }
            peer::encode_hashes(&out, &mut body);
        }
        AaeRequest::Keys {
            partition,
            segments,
        } => {
            let first = first_segment(check(*partition)?, bits);
            let mut global = Vec::with_capacity(segments.len());
            for &s in segments {
                if s >= shape.segments {
                    return Err(format!(
                        "ERR segment {s} is out of range ({} segments)",
                        shape.segments
                    ));
                }
                global.push(first + s);
            }
            let keys = store.segment_keys(&global, now_ms());
            peer::encode_key_hashes(&keys, &mut body);
        }
    }
    Ok(body)
}

/// Answers an anti-entropy request of a peer (serve.rs hands them here). Hashes describe
/// what this node holds in memory, durable or not: a difference they show is acted on with
/// FETCH, whose reply waits for durability as any read's.
pub fn serve(lp: &Rc<dyn LocalLoop>, link: &Link, id: u64, op: u8, req: &AaeRequest) {
    let partitions = match lp.cluster() {
        Some(c) => c.view().ring.partitions(),
        None => 0,
    };
    let r = answer(&lp.node().store, partitions, req);
    link.send_result(id, op, r.as_deref().map_err(String::as_str));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Supersede, VersionRef};
    use ringkv_proto::key_hash;

    fn put(store: &Store, key: &[u8], v: &[u8]) {
        let h = key_hash(key);
        let mut s = store.lock(store.shard_of(h));
        s.write(
            h,
            key,
            Supersede::Local,
            VersionRef::value(v, 1, None),
            |_| {},
        )
        .expect("write");
    }

    /// The levels agree: the root is the XOR of the branches, which are the XOR of their
    /// leaves; a key's partition's root changes with it, the others' do not.
    #[test]
    fn levels_follow_the_segments() {
        let store = Store::new(4);
        let parts = crate::store::TEST_PARTITIONS;
        let bits = parts.trailing_zeros();
        for i in 0..2_000 {
            put(&store, format!("k{i}").as_bytes(), b"v");
        }
        let roots: Vec<u64> = (0..parts).map(|p| root(&leaves(&store, bits, p))).collect();
        let p = crate::ring::partition::partition_of(key_hash(b"k7"), bits);
        let l = leaves(&store, bits, p);
        let shape = TreeShape::new(bits);
        assert_eq!(root(&fold(&l, shape.leaves as usize)), roots[p as usize]);
        put(&store, b"k7", b"changed");
        for q in 0..parts {
            let r = root(&leaves(&store, bits, q));
            assert_eq!(r == roots[q as usize], q != p, "partition {q}");
        }
        let bad = AaeRequest::Keys {
            partition: p,
            segments: vec![shape.segments],
        };
        assert!(answer(&store, parts, &bad).is_err());
        let bad = AaeRequest::Roots {
            partitions: vec![parts],
        };
        assert!(answer(&store, parts, &bad).is_err());
    }
}
