//! Vector clocks: node id → counter, kept sorted by node id.

use smallvec::SmallVec;

/// A node's identity: the actor of the dots it mints (random at first start; persisted with
/// the data dir).
pub type NodeId = u64;

/// New nodes draw ids below this: 56 random bits (collisions are checked when nodes meet),
/// so an actor takes at most 8 bytes in every dot and context, which keeps a small key in
/// one 64-byte allocation. Ids of older data directories (32 bits) stay valid.
pub const MAX_NODE_ID: NodeId = (1 << 56) - 1;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock {
    entries: SmallVec<[(NodeId, u64); 2]>,
}

/// The encoded clock is malformed (a corrupt or forged causal context).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed vector clock")]
pub struct ClockError;

impl VectorClock {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, node: NodeId) -> u64 {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => self.entries[i].1,
            Err(_) => 0,
        }
    }

    /// (node, counter) pairs, by node.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.entries.iter().copied()
    }

    pub fn increment(&mut self, node: NodeId) {
        match self.entries.binary_search_by_key(&node, |e| e.0) {
            Ok(i) => self.entries[i].1 += 1,
            Err(i) => self.entries.insert(i, (node, 1)),
        }
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VectorClock) {
        for &(node, c) in &other.entries {
            match self.entries.binary_search_by_key(&node, |e| e.0) {
                Ok(i) => self.entries[i].1 = self.entries[i].1.max(c),
                Err(i) => self.entries.insert(i, (node, c)),
            }
        }
    }

    /// True if `self` has seen everything `other` has (self ≥ other pointwise).
    pub fn descends(&self, other: &VectorClock) -> bool {
        other.entries.iter().all(|&(n, c)| self.get(n) >= c)
    }

    /// Neither descends from the other: the two versions were written concurrently.
    pub fn concurrent(&self, other: &VectorClock) -> bool {
        !self.descends(other) && !other.descends(self)
    }

    /// Compact encoding: varint count, then varint (node, counter) pairs.
    pub fn encode(&self, out: &mut impl Extend<u8>) {
        put_varint(out, self.entries.len() as u64);
        for &(n, c) in &self.entries {
            put_varint(out, n);
            put_varint(out, c);
        }
    }

    pub fn encoded(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.entries.len() * 6);
        self.encode(&mut v);
        v
    }

    pub fn decode(mut buf: &[u8]) -> Result<VectorClock, ClockError> {
        let n = get_varint(&mut buf)? as usize;
        // Each pair takes at least two bytes: bound the count before reserving.
        if n > buf.len() / 2 {
            return Err(ClockError);
        }
        let mut entries: SmallVec<[(NodeId, u64); 2]> = SmallVec::with_capacity(n);
        for _ in 0..n {
            let node = get_varint(&mut buf)?;
            let c = get_varint(&mut buf)?;
            if entries.last().is_some_and(|&(prev, _)| prev >= node) {
                return Err(ClockError);
            }
            entries.push((node, c));
        }
        if !buf.is_empty() {
            return Err(ClockError);
        }
        Ok(VectorClock { entries })
    }
}

/// Encoded clocks small enough to live on the stack (the common case: a few nodes).
pub type ClockBytes = SmallVec<[u8; 32]>;

impl VectorClock {
    pub fn encode_small(&self) -> ClockBytes {
        let mut b = ClockBytes::new();
        self.encode(&mut b);
        b
    }
}

pub fn put_varint(out: &mut impl Extend<u8>, mut v: u64) {
    while v >= 0x80 {
        out.extend(std::iter::once((v as u8) | 0x80));
        v >>= 7;
    }
    out.extend(std::iter::once(v as u8));
}

pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

pub fn get_varint(buf: &mut &[u8]) -> Result<u64, ClockError> {
    let mut v: u64 = 0;
    for i in 0..10 {
        let (&b, rest) = buf.split_first().ok_or(ClockError)?;
        *buf = rest;
        v |= ((b & 0x7f) as u64) << (7 * i);
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(ClockError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_roundtrip() {
        let mut a = VectorClock::new();
        a.increment(7);
        let mut b = a.clone();
        b.increment(3);
        assert!(b.descends(&a) && !a.descends(&b));
        let mut c = a.clone();
        c.increment(7);
        assert!(b.concurrent(&c));
        b.merge(&c);
        assert!(b.descends(&c));
        assert_eq!(VectorClock::decode(&b.encoded()), Ok(b));
        assert!(VectorClock::decode(&[5, 1]).is_err());
    }
}
