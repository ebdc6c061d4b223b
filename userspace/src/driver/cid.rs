//! Connection IDs that name their owner, so that a packet can be steered by its destination
//! connection ID alone (after NAT rebinding or migration, when the peer's address no longer
//! says anything): to this host by a load balancer, to the worker by the host.
//!
//! The layout follows QUIC-LB's plaintext form (draft-ietf-quic-load-balancers): a first octet
//! with the config rotation bits (top 3, always 0 here) and the length of the rest (low 5),
//! then the server id, which is this host's `server.server_id` followed by the worker's index
//! (one octet), then a random nonce of [`NONCE_LEN`] bytes. The steering side reads the octet
//! at [`CidLayout::worker_offset`] of a short header's destination connection ID
//! (`ebpf/quixd_reuseport.c`); a load balancer reads the host's bytes from offset 1.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes after the server id.
pub const NONCE_LEN: usize = 6;
/// The config rotation value of this layout (QUIC-LB's top 3 bits of the first octet); 0b111
/// is reserved for IDs that carry no routing information.
const CONFIG_ROTATION: u8 = 0;

/// Where the parts of our connection IDs sit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidLayout {
    /// This host's id (`server.server_id`); may be empty on a single host.
    pub host: Vec<u8>,
}

impl CidLayout {
    /// The layout for a host with id `host` (`server.server_id`).
    pub fn new(host: &[u8]) -> Self {
        Self {
            host: host.to_vec(),
        }
    }

    /// Length of every connection ID we issue.
    pub fn len(&self) -> usize {
        1 + self.host.len() + 1 + NONCE_LEN
    }

    /// Never empty: kept for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first octet of every connection ID we issue.
    pub fn first_octet(&self) -> u8 {
        (CONFIG_ROTATION << 5) | (self.len() as u8 - 1)
    }

    /// Where the worker's index sits.
    pub fn worker_offset(&self) -> usize {
        1 + self.host.len()
    }

    /// The worker named by a connection ID of this layout, if it is one of ours.
    pub fn worker_of(&self, cid: &[u8]) -> Option<u8> {
        (cid.len() == self.len()
            && cid[0] == self.first_octet()
            && cid[1..self.worker_offset()] == self.host[..])
            .then(|| cid[self.worker_offset()])
    }
}

/// Issues connection IDs for one worker.
pub struct WorkerCids {
    template: Vec<u8>,
    rng: SystemRandom,
}

impl WorkerCids {
    pub fn new(layout: &CidLayout, worker: u8) -> Self {
        let mut template = Vec::with_capacity(layout.len());
        template.push(layout.first_octet());
        template.extend_from_slice(&layout.host);
        template.push(worker);
        template.resize(layout.len(), 0);
        Self {
            template,
            rng: SystemRandom::new(),
        }
    }
}

impl ConnectionIdGenerator for WorkerCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; 20];
        let len = self.template.len();
        bytes[..len].copy_from_slice(&self.template);
        // The system's generator does not fail on Linux or Windows; should it, a nonce of
        // zeroes still routes correctly, and quinn-proto retries IDs that collide.
        let _ = self.rng.fill(&mut bytes[len - NONCE_LEN..len]);
        ConnectionId::new(&bytes[..len])
    }

    fn cid_len(&self) -> usize {
        self.template.len()
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
        let layout = CidLayout::default();
        let mut gen = WorkerCids::new(&layout, 3);
        let a = gen.generate_cid();
        let b = gen.generate_cid();
        assert_eq!(a.len(), 8);
        assert_eq!(a[0], 0x07, "config rotation 0, length of the rest 7");
        assert_eq!(layout.worker_offset(), 1);
        assert_eq!(
            (layout.worker_of(&a), layout.worker_of(&b)),
            (Some(3), Some(3))
        );
        assert_ne!(a, b, "nonces differ");
        // Not our layout: another length, or the reserved rotation value.
        assert_eq!(layout.worker_of(&[0x07, 1, 2]), None);
        assert_eq!(layout.worker_of(&[0xe7, 1, 2, 3, 4, 5, 6, 7]), None);
    }

    #[test]
    fn the_host_id_comes_before_the_worker() {
        let layout = CidLayout {
            host: vec![0xab, 0xcd],
        };
        let cid = WorkerCids::new(&layout, 9).generate_cid();
        assert_eq!(cid.len(), 10);
        assert_eq!(&cid[..4], &[0x09, 0xab, 0xcd, 9]);
        assert_eq!(layout.worker_offset(), 3);
        assert_eq!(layout.worker_of(&cid), Some(9));
        let other_host = CidLayout {
            host: vec![0xab, 0xce],
        };
        assert_eq!(other_host.worker_of(&cid), None);
    }
}
