//! The partition map of `CLUSTER MAP`, and which replicas a key has in it.

use std::sync::Arc;

use ringkv_proto::{key_hash, Value};

/// The most partitions a map may have (the server's limit).
const MAX_PARTITIONS: i64 = 65536;

/// A node of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MapNode {
    pub(super) id: u64,
    /// `"host:port"`; shared, so routing a request clones no string.
    pub(super) addr: Arc<str>,
}

/// The partition map as `CLUSTER MAP` sends it.
#[derive(Debug)]
pub(super) struct PartitionMap {
    pub(super) version: u64,
    /// log2 of the partition count.
    bits: u32,
    pub(super) nodes: Vec<MapNode>,
    /// Each partition's preference list, as indexes into `nodes`.
    prefs: Vec<Vec<u32>>,
}

impl PartitionMap {
    /// Reads `[Int version, Int partitions, [[Bulk id hex, Bulk addr]...], [[Int index...]...]]`.
    pub(super) fn parse(reply: Value) -> Result<PartitionMap, String> {
        let Value::Array(items) = reply else {
            return Err(format!("expected an array, got {}", kind(&reply)));
        };
        let [Value::Int(version), Value::Int(partitions), Value::Array(nodes), Value::Array(prefs)] =
            items.as_slice()
        else {
            return Err("expected [version, partitions, nodes, preference lists]".into());
        };
        let version =
            u64::try_from(*version).map_err(|_| format!("negative layout version {version}"))?;
        if !(1..=MAX_PARTITIONS).contains(partitions) || !(*partitions as u64).is_power_of_two() {
            return Err(format!(
                "partition count {partitions} is not a power of two in 1..={MAX_PARTITIONS}"
            ));
        }
        let nodes = nodes
            .iter()
            .map(|n| match n {
                Value::Array(f) => match f.as_slice() {
                    [Value::Bulk(id), Value::Bulk(addr)] => {
                        let id = std::str::from_utf8(id)
                            .ok()
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                            .ok_or("a node id is not hex")?;
                        let addr = std::str::from_utf8(addr)
                            .map_err(|_| "a node address is not UTF-8")?
                            .into();
                        Ok(MapNode { id, addr })
                    }
                    _ => Err("a node is not [id, address]"),
                },
                _ => Err("a node is not an array"),
            })
            .collect::<Result<Vec<_>, _>>()?;
        if prefs.len() as i64 != *partitions {
            return Err(format!(
                "{} preference lists for {partitions} partitions",
                prefs.len()
            ));
        }
        let prefs = prefs
            .iter()
            .map(|p| match p {
                Value::Array(list) => list
                    .iter()
                    .map(|i| match i {
                        Value::Int(i) if (0..nodes.len() as i64).contains(i) => Ok(*i as u32),
                        _ => Err("a preference list names no node of the map"),
                    })
                    .collect::<Result<Vec<u32>, _>>(),
                _ => Err("a preference list is not an array"),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PartitionMap {
            version,
            bits: (*partitions as u64).trailing_zeros(),
            nodes,
            prefs,
        })
    }

    fn partition_of(&self, key: &[u8]) -> usize {
        if self.bits == 0 {
            0
        } else {
            (key_hash(key) >> (64 - self.bits)) as usize
        }
    }

    pub(super) fn preference(&self, key: &[u8]) -> &[u32] {
        self.prefs
            .get(self.partition_of(key))
            .map_or(&[], |p| p.as_slice())
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Simple(_) => "a simple string",
        Value::Error(_) => "an error",
        Value::Int(_) => "an integer",
        Value::Bulk(_) => "a bulk string",
        Value::Array(_) => "an array",
        Value::Versioned { .. } => "a versioned value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, addr: &str) -> Value {
        Value::Array(vec![
            Value::Bulk(id.as_bytes().to_vec().into()),
            Value::Bulk(addr.as_bytes().to_vec().into()),
        ])
    }

    fn map(version: i64, partitions: i64, nodes: Vec<Value>, prefs: Vec<Vec<i64>>) -> Value {
        Value::Array(vec![
            Value::Int(version),
            Value::Int(partitions),
            Value::Array(nodes),
            Value::Array(
                prefs
                    .into_iter()
                    .map(|p| Value::Array(p.into_iter().map(Value::Int).collect()))
                    .collect(),
            ),
        ])
    }

    #[test]
    fn a_key_maps_to_the_top_bits_of_its_hash() {
        let nodes = vec![
            node("00000000000000aa", "a:1"),
            node("00000000000000bb", "b:1"),
        ];
        let prefs = (0..4).map(|p| vec![p % 2, 1 - p % 2]).collect();
        let m = PartitionMap::parse(map(3, 4, nodes, prefs)).expect("a valid map");
        assert_eq!((m.version, m.bits, m.nodes[1].id), (3, 2, 0xbb));
        for key in [&b"a"[..], b"b", b"key:17", b""] {
            let p = (key_hash(key) >> 62) as usize;
            assert_eq!(m.partition_of(key), p);
            assert_eq!(m.preference(key), [p as u32 % 2, 1 - p as u32 % 2]);
        }
        let one = PartitionMap::parse(map(1, 1, vec![node("1", "a:1")], vec![vec![0]])).unwrap();
        assert_eq!(one.partition_of(b"anything"), 0);
    }

    #[test]
    fn unreadable_maps_are_refused() {
        let a = || vec![node("01", "a:1")];
        for (bad, why) in [
            (Value::Nil, "expected an array"),
            (map(-1, 1, a(), vec![vec![0]]), "negative layout version"),
            (map(1, 3, a(), vec![vec![0]; 3]), "not a power of two"),
            (map(1, 1 << 17, a(), vec![]), "not a power of two"),
            (map(1, 2, a(), vec![vec![0]]), "1 preference lists for 2"),
            (map(1, 1, a(), vec![vec![1]]), "names no node"),
            (
                map(1, 1, vec![node("xyz", "a:1")], vec![vec![0]]),
                "not hex",
            ),
        ] {
            let err = PartitionMap::parse(bad).expect_err(why);
            assert!(err.contains(why), "{err} / {why}");
        }
    }
}
