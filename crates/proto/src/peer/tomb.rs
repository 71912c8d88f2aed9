//! The tombstone collection calls of a cluster (protocol.md §6.4). A replica whose tombstones
//! passed their grace offers them to every other replica of their partition (TOMB_OFFER: the
//! receiver merges each one and says whether it now holds exactly that tombstone); when all
//! did, it purges its own copies and asks the others to purge theirs (TOMB_PURGE: each purges
//! a key only if what it holds is still that tombstone).
//!
//! ```text
//! TOMB_OFFER request:  u32 n, n × bytes entry        (format-2 entries, key included)
//!   reply Bulk:        u32 n, n × u8 state           (TOMB_HELD or TOMB_NEWER, in order)
//! TOMB_PURGE request:  u32 n, n × bytes entry
//!   reply Int:         keys purged
//! ```

use bytes::{BufMut, BytesMut};

use crate::wire::{put_bytes, Reader};
use crate::ProtoError;

/// Most entries one TOMB_OFFER or TOMB_PURGE may carry.
pub const MAX_TOMB_BATCH: u32 = 1_000;
/// TOMB_OFFER state: after the merge the replica holds the offered tombstone (same causal
/// context, every version dead).
pub const TOMB_HELD: u8 = 0;
/// TOMB_OFFER state: after the merge the replica holds something newer than the offer (a
/// later write or delete): the key must not be purged now.
pub const TOMB_NEWER: u8 = 1;

pub(crate) fn read_entries<'a>(r: &mut Reader<'a>) -> Result<Vec<&'a [u8]>, ProtoError> {
    let n = r.u32()?;
    if n == 0 || n > MAX_TOMB_BATCH {
        return Err(r.error("entry count out of range"));
    }
    // Each entry takes at least its 4 length bytes: bound the count before reserving.
    if n as usize > r.remaining() / 4 {
        return Err(r.error("truncated"));
    }
    (0..n).map(|_| r.bytes()).collect()
}

pub(crate) fn put_entries(out: &mut BytesMut, entries: &[&[u8]]) {
    out.put_u32(entries.len() as u32);
    for e in entries {
        put_bytes(out, e);
    }
}

/// The reply body of TOMB_OFFER: one state per entry offered, in the same order.
pub fn encode_states(states: &[u8], out: &mut BytesMut) {
    out.put_u32(states.len() as u32);
    out.put_slice(states);
}

/// Decodes a TOMB_OFFER reply body; every state must be known.
pub fn decode_states(buf: &[u8]) -> Result<Vec<u8>, ProtoError> {
    let mut r = Reader::new(buf, "TOMB_OFFER");
    let n = r.u32()? as usize;
    let states = r.take(n)?;
    if states.iter().any(|s| *s != TOMB_HELD && *s != TOMB_NEWER) {
        return Err(r.error("unknown state"));
    }
    r.finish()?;
    Ok(states.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::{PeerOpcode, PeerRequest};

    #[test]
    fn offer_round_trips_and_bad_counts_are_refused() {
        let entries: Vec<&[u8]> = vec![b"e1", b"entry-two"];
        let mut out = BytesMut::new();
        PeerRequest::TombOffer {
            entries: entries.clone(),
        }
        .encode(7, &mut out);
        let payload = &out[16..];
        let req = PeerRequest::parse(PeerOpcode::TombOffer as u8, payload).unwrap();
        assert_eq!(req, PeerRequest::TombOffer { entries });
        // Zero entries, too many, a count over the payload: refused, no panic.
        for n in [0u32, MAX_TOMB_BATCH + 1, 3] {
            let mut p = BytesMut::new();
            p.put_u32(n);
            p.put_u32(0);
            let e = PeerRequest::parse(0x59, &p).unwrap_err().to_string();
            let why = if n == 3 {
                "truncated"
            } else {
                "entry count out of range"
            };
            assert!(
                e.contains("TOMB_PURGE") && e.contains(why),
                "count {n}: {e}"
            );
        }
    }

    #[test]
    fn states_round_trip_and_unknown_states_are_refused() {
        let mut out = BytesMut::new();
        encode_states(&[TOMB_HELD, TOMB_NEWER], &mut out);
        assert_eq!(decode_states(&out).unwrap(), vec![TOMB_HELD, TOMB_NEWER]);
        assert!(decode_states(&[0, 0, 0, 1, 9]).is_err());
        assert!(decode_states(&[0, 0, 0, 2, 0]).is_err(), "truncated");
    }
}
