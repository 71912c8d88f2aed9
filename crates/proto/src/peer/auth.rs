//! The peer handshake: HMAC proofs over both sides' nonces, the PEER_HELLO reply, and the
//! cluster settings both sides must agree on.
//!
//! The cluster secret never crosses the wire. Each side sends a fresh 32-byte random nonce,
//! and each proves it knows the secret with an HMAC over both nonces and both node ids. The
//! labels differ per direction, so one side's proof can never be replayed as the other's; the
//! nonces are fresh per connection, so a recorded proof is worthless on the next one.

use constant_time_eq::constant_time_eq_32;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{ProtoError, ReplySink, Value};

/// Length of a handshake nonce, in bytes.
pub const NONCE_LEN: usize = 32;
/// Length of a proof (an HMAC-SHA256 output), in bytes.
pub const PROOF_LEN: usize = 32;

/// The error text (Fatal, then close) for a proof that does not verify.
pub const AUTH_FAILED: &str =
    "ERR peer authentication failed: the cluster secrets differ (--cluster-secret)";

const SERVER_LABEL: &[u8] = b"ringkv-peer-v1 server";
const CLIENT_LABEL: &[u8] = b"ringkv-peer-v1 client";

type HmacSha256 = Hmac<Sha256>;

fn proof(
    secret: &[u8],
    label: &[u8],
    nonces: [&[u8; NONCE_LEN]; 2],
    ids: [u64; 2],
) -> [u8; PROOF_LEN] {
    // HMAC takes a key of any length (a long one is hashed first), so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(label);
    mac.update(nonces[0]);
    mac.update(nonces[1]);
    mac.update(&ids[0].to_be_bytes());
    mac.update(&ids[1].to_be_bytes());
    mac.finalize().into_bytes().into()
}

/// The server's proof, sent in the PEER_HELLO reply:
/// HMAC-SHA256(secret, "ringkv-peer-v1 server" ‖ dialer nonce ‖ server nonce ‖ u64 BE dialer
/// id ‖ u64 BE server id).
pub fn server_proof(
    secret: &[u8],
    dialer_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    dialer_id: u64,
    server_id: u64,
) -> [u8; PROOF_LEN] {
    proof(
        secret,
        SERVER_LABEL,
        [dialer_nonce, server_nonce],
        [dialer_id, server_id],
    )
}

/// The dialer's proof, sent in PEER_AUTH (same arguments as [`server_proof`]; the order
/// inside the HMAC is the server's first):
/// HMAC-SHA256(secret, "ringkv-peer-v1 client" ‖ server nonce ‖ dialer nonce ‖ u64 BE server
/// id ‖ u64 BE dialer id).
pub fn client_proof(
    secret: &[u8],
    dialer_nonce: &[u8; NONCE_LEN],
    server_nonce: &[u8; NONCE_LEN],
    dialer_id: u64,
    server_id: u64,
) -> [u8; PROOF_LEN] {
    proof(
        secret,
        CLIENT_LABEL,
        [server_nonce, dialer_nonce],
        [server_id, dialer_id],
    )
}

/// Compares a received proof with the expected one in constant time (no timing hint of how
/// many leading bytes matched). A proof of the wrong length never verifies.
pub fn verify_proof(expected: &[u8; PROOF_LEN], got: &[u8]) -> bool {
    <&[u8; PROOF_LEN]>::try_from(got).is_ok_and(|got| constant_time_eq_32(expected, got))
}

/// How concurrent versions are resolved (`--conflicts`); every node of a cluster must agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Conflicts {
    Siblings = 0,
    Lww = 1,
}

impl Conflicts {
    pub fn from_u8(b: u8) -> Option<Conflicts> {
        Some(match b {
            0 => Conflicts::Siblings,
            1 => Conflicts::Lww,
            _ => return None,
        })
    }

    /// The `--conflicts` value.
    pub fn name(self) -> &'static str {
        match self {
            Conflicts::Siblings => "siblings",
            Conflicts::Lww => "lww",
        }
    }
}

/// The settings that decide where keys live and how versions merge: two nodes that disagree
/// on any of them would place or resolve the same key differently, so they refuse to link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Replicas per key (`--n`).
    pub n: u32,
    /// Ring partitions (`--partitions`).
    pub partitions: u32,
    pub conflicts: Conflicts,
}

impl ClusterSettings {
    /// The Fatal error text when the connecting node's settings differ from this node's, one
    /// clause per differing setting naming both values; `None` when they agree.
    pub fn mismatch(&self, connecting: &ClusterSettings) -> Option<String> {
        let mut diffs = Vec::new();
        let mut differ = |flag: &str, ours: &str, theirs: &str| {
            if ours != theirs {
                diffs.push(format!(
                    "this node has --{flag} {ours}, the connecting node --{flag} {theirs}"
                ));
            }
        };
        differ("n", &self.n.to_string(), &connecting.n.to_string());
        differ(
            "partitions",
            &self.partitions.to_string(),
            &connecting.partitions.to_string(),
        );
        differ(
            "conflicts",
            self.conflicts.name(),
            connecting.conflicts.name(),
        );
        if diffs.is_empty() {
            None
        } else {
            Some(format!("ERR cluster settings differ: {}", diffs.join("; ")))
        }
    }
}

/// The Ok reply to PEER_HELLO: `[Int version, Int server node id, Bulk server nonce, Bulk
/// server proof]` (the node id's u64 bits as an i64).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloReply {
    pub version: u16,
    pub node_id: u64,
    pub nonce: [u8; NONCE_LEN],
    pub proof: [u8; PROOF_LEN],
}

impl HelloReply {
    pub fn write<S: ReplySink + ?Sized>(&self, sink: &mut S) {
        sink.array(4);
        sink.int(i64::from(self.version));
        sink.int(self.node_id as i64);
        sink.bulk(&self.nonce);
        sink.bulk(&self.proof);
    }

    /// Reads the reply value of an Ok PEER_HELLO reply frame.
    pub fn from_value(v: &Value) -> Result<HelloReply, ProtoError> {
        let bad = |why| ProtoError::malformed("PEER_HELLO reply", why);
        let Value::Array(items) = v else {
            return Err(bad("not an array"));
        };
        let [Value::Int(version), Value::Int(node_id), Value::Bulk(nonce), Value::Bulk(proof)] =
            items.as_slice()
        else {
            return Err(bad("not [Int, Int, Bulk, Bulk]"));
        };
        Ok(HelloReply {
            version: u16::try_from(*version).map_err(|_| bad("version out of range"))?,
            node_id: *node_id as u64,
            nonce: <[u8; NONCE_LEN]>::try_from(&nonce[..])
                .map_err(|_| bad("nonce is not 32 bytes"))?,
            proof: <[u8; PROOF_LEN]>::try_from(&proof[..])
                .map_err(|_| bad("proof is not 32 bytes"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// RFC 4231 §4.2 (test case 1) and §4.7 (test case 6, a key longer than the block): the
    /// primitive under the proofs is standard HMAC-SHA256.
    #[test]
    fn rfc4231_vectors() {
        assert_eq!(
            hmac(&[0x0b; 20], b"Hi There"),
            unhex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
        );
        assert_eq!(
            hmac(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            ),
            unhex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")
        );
    }

    /// The proofs are the HMAC of exactly the concatenation the spec states.
    #[test]
    fn proofs_follow_the_formula() {
        let (dn, sn) = ([1u8; 32], [2u8; 32]);
        let mut msg = b"ringkv-peer-v1 server".to_vec();
        msg.extend_from_slice(&dn);
        msg.extend_from_slice(&sn);
        msg.extend_from_slice(&7u64.to_be_bytes());
        msg.extend_from_slice(&9u64.to_be_bytes());
        assert_eq!(
            server_proof(b"s", &dn, &sn, 7, 9).to_vec(),
            hmac(b"s", &msg)
        );

        let mut msg = b"ringkv-peer-v1 client".to_vec();
        msg.extend_from_slice(&sn);
        msg.extend_from_slice(&dn);
        msg.extend_from_slice(&9u64.to_be_bytes());
        msg.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(
            client_proof(b"s", &dn, &sn, 7, 9).to_vec(),
            hmac(b"s", &msg)
        );
    }

    #[test]
    fn proofs_depend_on_every_input() {
        let (dn, sn) = ([1u8; 32], [2u8; 32]);
        let p = server_proof(b"secret", &dn, &sn, 7, 9);
        assert!(verify_proof(&p, &p));
        assert_ne!(p, server_proof(b"secreT", &dn, &sn, 7, 9));
        assert_ne!(p, server_proof(b"secret", &sn, &dn, 7, 9));
        assert_ne!(p, server_proof(b"secret", &dn, &sn, 9, 7));
        assert_ne!(p, server_proof(b"secret", &dn, &[3; 32], 7, 9));
        // One side's proof is never the other's.
        assert_ne!(p, client_proof(b"secret", &dn, &sn, 7, 9));
        let mut q = p;
        q[31] ^= 1;
        assert!(!verify_proof(&p, &q));
        assert!(!verify_proof(&p, &p[..31]));
        assert!(!verify_proof(&p, &[]));
    }
}
