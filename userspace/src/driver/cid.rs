//! Connection IDs that name the worker owning the connection, so that a packet can be steered
//! to it by its destination connection ID alone (after NAT rebinding or migration, when the
//! peer's address no longer says anything).
//!
//! The layout follows QUIC-LB's plaintext form (draft-ietf-quic-load-balancers): a first octet
//! with the config rotation bits (top 3, always 0 here) and the length of the rest (low 5),
//! then the server id, which is the worker's index (one octet; no host part yet), then a random
//! nonce. The steering side reads octet [`WORKER_OFFSET`] of a short header's destination
//! connection ID (`ebpf/quixd_reuseport.c`).

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

/// Length of every connection ID we issue.
pub const CID_LEN: usize = 8;
/// Where the worker's index sits in the connection ID.
pub const WORKER_OFFSET: usize = 1;
/// The config rotation value of this layout (QUIC-LB's top 3 bits of the first octet); 0b111
/// is reserved for IDs that carry no routing information.
const CONFIG_ROTATION: u8 = 0;

/// Issues connection IDs for one worker.
pub struct WorkerCids {
    worker: u8,
    rng: SystemRandom,
}

impl WorkerCids {
    pub fn new(worker: u8) -> Self {
        Self {
            worker,
            rng: SystemRandom::new(),
        }
    }
}

/// The worker named by a connection ID of our layout, if it is one.
pub fn worker_of(cid: &[u8]) -> Option<u8> {
    let first = *cid.first()?;
    (cid.len() == CID_LEN
        && first >> 5 == CONFIG_ROTATION
        && usize::from(first & 0x1f) == CID_LEN - 1)
        .then(|| cid[WORKER_OFFSET])
}

impl ConnectionIdGenerator for WorkerCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = (CONFIG_ROTATION << 5) | (CID_LEN as u8 - 1);
        bytes[WORKER_OFFSET] = self.worker;
        // The system's generator does not fail on Linux or Windows; should it, a nonce of
        // zeroes still routes correctly, and quinn-proto retries IDs that collide.
        let _ = self.rng.fill(&mut bytes[WORKER_OFFSET + 1..]);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_worker_and_differ() {
        let mut gen = WorkerCids::new(3);
        let a = gen.generate_cid();
        let b = gen.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 0x07, "config rotation 0, length of the rest 7");
        assert_eq!((worker_of(&a), worker_of(&b)), (Some(3), Some(3)));
        assert_ne!(a, b, "nonces differ");
        // Not our layout: another length, or the reserved rotation value.
        assert_eq!(worker_of(&[0x07, 1, 2]), None);
        assert_eq!(worker_of(&[0xe7, 1, 2, 3, 4, 5, 6, 7]), None);
    }
}
