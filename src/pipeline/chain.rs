//! The tamper-evident insurance timeline: each closed incident of a policy is sealed with
//! `hash = SHA-256(prev_hash ‖ record encoded with hash empty)`, chaining the records of
//! one policy. `firewatch verify-chain` re-computes every link (docs/insurance.md).

use firewatch_proto::{IncidentRecord, InsuranceTimelineRecord};
use prost::Message;
use rustc_hash::FxHashMap;
use sha2::{Digest, Sha256};

/// The hash before a policy's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// The head (last sequence and hash) of every policy's chain.
#[derive(Debug, Default, Clone)]
pub struct ChainHeads {
    heads: FxHashMap<u32, (u64, [u8; 32])>,
}

/// A broken chain.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ChainError {
    /// A record's hash is not what its content gives.
    #[error(
        "policy {policy} record {seq} (log offset {offset}): hash mismatch, the record was altered"
    )]
    HashMismatch {
        /// Policy.
        policy: u32,
        /// Chain position.
        seq: u64,
        /// Log offset.
        offset: u64,
    },
    /// A record does not follow its predecessor.
    #[error("policy {policy} record {seq} (log offset {offset}): does not follow record {expected_seq} (missing, reordered or inserted record)")]
    BrokenLink {
        /// Policy.
        policy: u32,
        /// Chain position found.
        seq: u64,
        /// Expected position.
        expected_seq: u64,
        /// Log offset.
        offset: u64,
    },
}

/// Hash of a record (with its `hash` field ignored).
pub fn record_hash(rec: &InsuranceTimelineRecord) -> [u8; 32] {
    let mut unsealed = rec.clone();
    unsealed.hash.clear();
    let mut h = Sha256::new();
    h.update(&rec.prev_hash);
    h.update(unsealed.encode_to_vec());
    h.finalize().into()
}

impl ChainHeads {
    /// Seals `incident` as the next record of `policy`'s chain.
    pub fn seal(&mut self, policy: u32, incident: IncidentRecord) -> InsuranceTimelineRecord {
        let (seq, prev) = self.heads.get(&policy).copied().unwrap_or((0, GENESIS));
        let mut rec = InsuranceTimelineRecord {
            policy_id: policy,
            chain_seq: seq + 1,
            incident: Some(incident),
            prev_hash: prev.to_vec(),
            hash: Vec::new(),
        };
        let hash = record_hash(&rec);
        rec.hash = hash.to_vec();
        self.heads.insert(policy, (seq + 1, hash));
        rec
    }

    /// Checks one record against the chain so far and advances it.
    pub fn verify_next(
        &mut self,
        rec: &InsuranceTimelineRecord,
        offset: u64,
    ) -> Result<(), ChainError> {
        let (seq, prev) = self
            .heads
            .get(&rec.policy_id)
            .copied()
            .unwrap_or((0, GENESIS));
        let policy = rec.policy_id;
        if rec.chain_seq != seq + 1 || rec.prev_hash != prev {
            return Err(ChainError::BrokenLink {
                policy,
                seq: rec.chain_seq,
                expected_seq: seq + 1,
                offset,
            });
        }
        let h = record_hash(rec);
        if rec.hash != h {
            return Err(ChainError::HashMismatch {
                policy,
                seq: rec.chain_seq,
                offset,
            });
        }
        self.heads.insert(policy, (rec.chain_seq, h));
        Ok(())
    }

    /// Adopts a record as the head without checking (restart: rebuild from the log).
    pub fn adopt(&mut self, rec: &InsuranceTimelineRecord) {
        if let Ok(h) = <[u8; 32]>::try_from(rec.hash.as_slice()) {
            self.heads.insert(rec.policy_id, (rec.chain_seq, h));
        }
    }

    /// Policies with a chain.
    pub fn len(&self) -> usize {
        self.heads.len()
    }

    /// True when no chain exists.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(id: &str) -> IncidentRecord {
        IncidentRecord {
            incident_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_chains_verify_and_tampering_is_caught() {
        let mut w = ChainHeads::default();
        let recs = vec![
            w.seal(1, inc("a")),
            w.seal(2, inc("b")),
            w.seal(1, inc("c")),
        ];
        let mut v = ChainHeads::default();
        for (i, r) in recs.iter().enumerate() {
            v.verify_next(r, i as u64).unwrap();
        }
        // Altered content.
        let mut bad = recs.clone();
        bad[2].incident.as_mut().unwrap().incident_id = "x".into();
        let mut v = ChainHeads::default();
        v.verify_next(&bad[0], 0).unwrap();
        v.verify_next(&bad[1], 1).unwrap();
        assert!(matches!(
            v.verify_next(&bad[2], 2),
            Err(ChainError::HashMismatch {
                policy: 1,
                seq: 2,
                ..
            })
        ));
        // A removed record.
        let mut v = ChainHeads::default();
        v.verify_next(&recs[1], 0).unwrap();
        assert!(matches!(
            v.verify_next(&recs[2], 1),
            Err(ChainError::BrokenLink { policy: 1, .. })
        ));
    }
}
