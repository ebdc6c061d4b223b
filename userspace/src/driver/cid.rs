//! Connection IDs that name their owner, so that a packet can be steered by its destination
//! connection ID alone (after NAT rebinding or migration, when the peer's address no longer
//! says anything): to this host by a load balancer, to the worker by the host.
//!
//! The layout follows QUIC-LB (draft-ietf-quic-load-balancers): a first octet with the config
//! rotation bits (top 3, always 0 here) and the length of the rest (low 5), then the server
//! id, which is this host's `server.server_id` followed by the worker's index (one octet),
//! then a nonce.
//!
//! - Plaintext mode (no `server.cid_key`): the nonce is [`NONCE_LEN`] random bytes. The
//!   steering side reads the octet at [`CidLayout::worker_offset`] of a short header's
//!   destination connection ID (`ebpf/quixd_reuseport.c`); a load balancer reads the host's
//!   bytes from offset 1.
//! - Encrypted mode (`server.cid_key`): server id and nonce fill one AES block (the nonce
//!   takes the rest of the 16 bytes) that is encrypted with the key, QUIC-LB's single-pass
//!   case; only who holds the key can tell the owner. [`QuicLb`] also does the draft's
//!   four-pass case, for server ids too long to leave a 4-byte nonce in one block.

use std::time::Duration;

use aes::cipher::{generic_array::GenericArray, BlockDecrypt, BlockEncrypt, KeyInit};
use aes::Aes128;
use quinn_proto::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes after the server id (plaintext mode).
pub const NONCE_LEN: usize = 6;
/// The draft's least nonce length, so that encrypted IDs do not repeat too soon.
pub const MIN_NONCE_LEN: usize = 4;
/// Server id and nonce together: QUIC v1 connection IDs are at most 20 bytes, one of them the
/// first octet.
pub const MAX_PLAINTEXT_LEN: usize = 19;
/// The config rotation value of this layout (QUIC-LB's top 3 bits of the first octet); 0b111
/// is reserved for IDs that carry no routing information.
const CONFIG_ROTATION: u8 = 0;
const BLOCK_LEN: usize = 16;

/// Why an encrypted layout cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "a {server_id}-byte server id (host id and worker octet) leaves no room for a \
     {MIN_NONCE_LEN}-byte nonce in {MAX_PLAINTEXT_LEN} bytes"
)]
pub struct TooLong {
    pub server_id: usize,
}

/// QUIC-LB's encryption of server id and nonce (the connection ID without its first octet)
/// under a 16-byte key: one AES-128-ECB block when they are 16 bytes together, the draft's
/// four-round Feistel network with AES as round function otherwise.
#[derive(Clone)]
pub struct QuicLb {
    aes: Aes128,
    /// Server id and nonce together, 5 to 19 bytes.
    len: usize,
}

impl QuicLb {
    /// For server ids and nonces of `len` bytes together (the draft's bounds: 1 + 4 to 19).
    pub fn new(key: &[u8; 16], len: usize) -> Option<Self> {
        (1 + MIN_NONCE_LEN..=MAX_PLAINTEXT_LEN)
            .contains(&len)
            .then(|| Self {
                aes: Aes128::new(GenericArray::from_slice(key)),
                len,
            })
    }

    /// Encrypts `data` (server id then nonce, the configured length) in place; other lengths
    /// are left alone.
    pub fn encrypt(&self, data: &mut [u8]) {
        if data.len() != self.len {
            return;
        }
        if self.len == BLOCK_LEN {
            self.aes.encrypt_block(GenericArray::from_mut_slice(data));
            return;
        }
        let (mut left, mut right) = self.split(data);
        for pass in 1..=4 {
            if pass % 2 == 1 {
                self.round(pass, &left, &mut right);
            } else {
                self.round(pass, &right, &mut left);
            }
        }
        self.join(&left, &right, data);
    }

    /// Decrypts `data` in place: the inverse of [`Self::encrypt`].
    pub fn decrypt(&self, data: &mut [u8]) {
        if data.len() != self.len {
            return;
        }
        if self.len == BLOCK_LEN {
            self.aes.decrypt_block(GenericArray::from_mut_slice(data));
            return;
        }
        let (mut left, mut right) = self.split(data);
        for pass in (1..=4).rev() {
            if pass % 2 == 1 {
                self.round(pass, &left, &mut right);
            } else {
                self.round(pass, &right, &mut left);
            }
        }
        self.join(&left, &right, data);
    }

    fn half(&self) -> usize {
        self.len.div_ceil(2)
    }

    /// The halves, each `half` bytes at the front of its array; of an odd length the middle
    /// octet's high nibble goes left and its low nibble right.
    fn split(&self, data: &[u8]) -> ([u8; 10], [u8; 10]) {
        let half = self.half();
        let (mut left, mut right) = ([0u8; 10], [0u8; 10]);
        left[..half].copy_from_slice(&data[..half]);
        right[..half].copy_from_slice(&data[self.len - half..]);
        if self.len % 2 == 1 {
            left[half - 1] &= 0xf0;
            right[0] &= 0x0f;
        }
        (left, right)
    }

    fn join(&self, left: &[u8; 10], right: &[u8; 10], data: &mut [u8]) {
        let half = self.half();
        data[self.len - half..].copy_from_slice(&right[..half]);
        data[..half].copy_from_slice(&left[..half]);
        if self.len % 2 == 1 {
            data[half - 1] = left[half - 1] | right[0];
        }
    }

    /// One pass: `target ^= truncate(AES(expand(len, pass, input)), half)`, where the odd
    /// passes write the right half and the even ones the left.
    fn round(&self, pass: u8, input: &[u8; 10], target: &mut [u8; 10]) {
        let half = self.half();
        let mut block = GenericArray::from([0u8; BLOCK_LEN]);
        block[..half].copy_from_slice(&input[..half]);
        block[14] = self.len as u8;
        block[15] = pass;
        self.aes.encrypt_block(&mut block);
        for (t, b) in target[..half].iter_mut().zip(block.iter()) {
            *t ^= b;
        }
        // Of an odd length, the nibble the other half owns stays zero.
        if self.len % 2 == 1 {
            if pass % 2 == 1 {
                target[0] &= 0x0f;
            } else {
                target[half - 1] &= 0xf0;
            }
        }
    }
}

/// Where the parts of our connection IDs sit, and their key in encrypted mode.
#[derive(Clone)]
pub struct CidLayout {
    /// This host's id (`server.server_id`); may be empty on a single host.
    host: Vec<u8>,
    nonce_len: usize,
    /// Encrypted mode: server id and nonce are encrypted with it.
    cipher: Option<QuicLb>,
}

impl Default for CidLayout {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl std::fmt::Debug for CidLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("CidLayout")
            .field("host", &self.host)
            .field("nonce_len", &self.nonce_len)
            .field("encrypted", &self.cipher.is_some())
            .finish()
    }
}

impl CidLayout {
    /// The plaintext layout for a host with id `host` (`server.server_id`, which the config
    /// bounds to 8 bytes; beyond 12 the ID would outgrow 20 bytes, so the rest is cut).
    pub fn new(host: &[u8]) -> Self {
        let host = &host[..host.len().min(MAX_PLAINTEXT_LEN - 1 - NONCE_LEN)];
        Self {
            host: host.to_vec(),
            nonce_len: NONCE_LEN,
            cipher: None,
        }
    }

    /// The encrypted layout under `key` (`server.cid_key`): the nonce fills the AES block
    /// after the server id (single pass); a server id too long for that gets the draft's
    /// four-pass encryption and the nonce takes the ID to 20 bytes.
    pub fn encrypted(host: &[u8], key: &[u8; 16]) -> Result<Self, TooLong> {
        let server_id = host.len() + 1;
        let nonce_len = if server_id + MIN_NONCE_LEN <= BLOCK_LEN {
            BLOCK_LEN - server_id
        } else {
            MAX_PLAINTEXT_LEN.saturating_sub(server_id)
        };
        let cipher = QuicLb::new(key, server_id + nonce_len)
            .filter(|_| nonce_len >= MIN_NONCE_LEN)
            .ok_or(TooLong { server_id })?;
        Ok(Self {
            host: host.to_vec(),
            nonce_len,
            cipher: Some(cipher),
        })
    }

    /// The layout `server` configures: encrypted with `cid_key`, plaintext without.
    pub fn from_config(server: &crate::config::Server) -> Result<Self, TooLong> {
        match &server.cid_key {
            Some(key) => Self::encrypted(&server.server_id.0, &key.0),
            None => Ok(Self::new(&server.server_id.0)),
        }
    }

    /// This host's id.
    pub fn host(&self) -> &[u8] {
        &self.host
    }

    /// Whether our IDs are encrypted (then only who holds the key can read their owner).
    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    /// Length of every connection ID we issue.
    pub fn len(&self) -> usize {
        1 + self.host.len() + 1 + self.nonce_len
    }

    /// Never empty: kept for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first octet of every connection ID we issue.
    pub fn first_octet(&self) -> u8 {
        (CONFIG_ROTATION << 5) | (self.len() as u8 - 1)
    }

    /// Where the worker's index sits, in plaintext mode; encrypted, it has no fixed place.
    pub fn worker_offset(&self) -> Option<usize> {
        (!self.is_encrypted()).then_some(1 + self.host.len())
    }

    /// The worker named by a connection ID of this layout, if it is one of ours (this host's
    /// id, under our key). Allocation-free: the handoff asks it of every short header.
    pub fn worker_of(&self, cid: &[u8]) -> Option<u8> {
        if cid.len() != self.len() || cid.len() > 1 + MAX_PLAINTEXT_LEN {
            return None;
        }
        let (&first, rest) = cid.split_first()?;
        if first != self.first_octet() {
            return None;
        }
        let mut buf = [0u8; MAX_PLAINTEXT_LEN];
        let plain = &mut buf[..rest.len()];
        plain.copy_from_slice(rest);
        if let Some(cipher) = &self.cipher {
            cipher.decrypt(plain);
        }
        let host = self.host.len();
        (plain[..host] == self.host[..]).then_some(plain[host])
    }
}

/// Issues connection IDs for one worker.
pub struct WorkerCids {
    layout: CidLayout,
    worker: u8,
    /// Encrypted mode: the next nonce, a counter from a random start, so that no nonce
    /// repeats before it wraps (the draft forbids reuse; random ones would collide sooner).
    /// Plaintext mode draws random nonces: a counter there would link the IDs.
    counter: [u8; MAX_PLAINTEXT_LEN],
    rng: SystemRandom,
}

impl WorkerCids {
    pub fn new(layout: &CidLayout, worker: u8) -> Self {
        let rng = SystemRandom::new();
        let mut counter = [0u8; MAX_PLAINTEXT_LEN];
        // The system's generator does not fail on Linux or Windows; should it, the counter
        // starts at zero, which still never repeats within this run.
        let _ = rng.fill(&mut counter);
        Self {
            layout: layout.clone(),
            worker,
            counter,
            rng,
        }
    }
}

impl ConnectionIdGenerator for WorkerCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut bytes = [0u8; 1 + MAX_PLAINTEXT_LEN];
        let layout = &self.layout;
        let len = layout.len();
        let host = layout.host.len();
        bytes[0] = layout.first_octet();
        bytes[1..1 + host].copy_from_slice(&layout.host);
        bytes[1 + host] = self.worker;
        let nonce = &mut bytes[2 + host..len];
        match &layout.cipher {
            None => {
                // Should the system's generator fail, a nonce of zeroes still routes
                // correctly, and quinn-proto retries IDs that collide.
                let _ = self.rng.fill(nonce);
            }
            Some(cipher) => {
                let counter = &mut self.counter[..nonce.len()];
                nonce.copy_from_slice(counter);
                for octet in counter.iter_mut().rev() {
                    *octet = octet.wrapping_add(1);
                    if *octet != 0 {
                        break;
                    }
                }
                cipher.encrypt(&mut bytes[1..len]);
            }
        }
        ConnectionId::new(&bytes[..len])
    }

    fn cid_len(&self) -> usize {
        self.layout.len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn key(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    #[test]
    fn ids_name_their_worker_and_differ() {
        let layout = CidLayout::default();
        let mut gen = WorkerCids::new(&layout, 3);
        let a = gen.generate_cid();
        let b = gen.generate_cid();
        assert_eq!(a.len(), 8);
        assert_eq!(a[0], 0x07, "config rotation 0, length of the rest 7");
        assert_eq!(layout.worker_offset(), Some(1));
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
        let layout = CidLayout::new(&[0xab, 0xcd]);
        let cid = WorkerCids::new(&layout, 9).generate_cid();
        assert_eq!(cid.len(), 10);
        assert_eq!(&cid[..4], &[0x09, 0xab, 0xcd, 9]);
        assert_eq!(layout.worker_offset(), Some(3));
        assert_eq!(layout.worker_of(&cid), Some(9));
        let other_host = CidLayout::new(&[0xab, 0xce]);
        assert_eq!(other_host.worker_of(&cid), None);
    }

    /// The draft's "Encrypted CIDs" test vectors (draft-ietf-quic-load-balancers, section
    /// "Load Balancer Test Vectors"): one single-pass, three four-pass, two of those with a
    /// server id longer than its nonce.
    #[test]
    fn draft_test_vectors() {
        let k = key("8f95f09245765f80256934e50c66207f");
        let vectors = [
            (0, "ed793a", "ee080dbf", "0720b1d07b359d3c"),
            (
                1,
                "ed793a51d49b8f5fab65",
                "ee080dbf48",
                "2fcc381bc74cb4fbad2823a3d1f8fed2",
            ),
            (
                2,
                "ed793a51d49b8f5f",
                "ee080dbf48c0d1e5",
                "504dd2d05a7b0de9b2b9907afb5ecf8cc3",
            ),
            (
                3,
                "ed793a51d49b8f5fab",
                "ee080dbf48c0d1e55d",
                "125779c9cc86beb3a3a4a3ca96fce4bfe0cdbc",
            ),
        ];
        for (cr_bits, sid, nonce, cid) in vectors {
            let plain = [hex(sid), hex(nonce)].concat();
            let cid = hex(cid);
            assert_eq!(cid[0] & 0x1f, plain.len() as u8, "length self-description");
            // The draft's last vector carries rotation bits 0 despite its cr_bits column (3).
            if cr_bits < 3 {
                assert_eq!(cid[0] >> 5, cr_bits, "config rotation");
            }
            let quic_lb = QuicLb::new(&k, plain.len()).unwrap();
            let mut data = plain.clone();
            quic_lb.encrypt(&mut data);
            assert_eq!(data, cid[1..], "encrypting {sid} {nonce}");
            quic_lb.decrypt(&mut data);
            assert_eq!(data, plain, "decrypting {sid} {nonce}");
        }
    }

    /// The draft's worked four-pass example ("Encryption Example"), odd length.
    #[test]
    fn draft_four_pass_example() {
        let quic_lb = QuicLb::new(&key("fdf726a9893ec05c0632d3956680baf0"), 7).unwrap();
        let plain = hex("31441a9c69c275");
        let mut data = plain.clone();
        quic_lb.encrypt(&mut data);
        assert_eq!(data, hex("67947d29be054a"));
        quic_lb.decrypt(&mut data);
        assert_eq!(data, plain);
    }

    /// The single-pass vector is our layout: host `ed793a51d49b8f`, worker 0x5f (only the
    /// config rotation bits differ, ours being 0).
    #[test]
    fn our_layout_reproduces_the_single_pass_vector() {
        let k = key("8f95f09245765f80256934e50c66207f");
        let layout = CidLayout::encrypted(&hex("ed793a51d49b8f"), &k).unwrap();
        assert_eq!((layout.len(), layout.first_octet()), (17, 0x10));
        assert_eq!(layout.worker_offset(), None);
        let mut gen = WorkerCids::new(&layout, 0x5f);
        gen.counter[..8].copy_from_slice(&hex("ee080dbf48c0d1e5"));
        let cid = gen.generate_cid();
        let mut expected = hex("504dd2d05a7b0de9b2b9907afb5ecf8cc3");
        expected[0] = 0x10;
        assert_eq!(cid[..], expected[..]);
        assert_eq!(layout.worker_of(&cid), Some(0x5f));
        // The counter moved on: the next ID differs.
        assert_ne!(gen.generate_cid(), cid);
    }

    #[test]
    fn encrypted_ids_round_trip_for_every_worker() {
        let k = key("000102030405060708090a0b0c0d0e0f");
        let other_key = key("f00102030405060708090a0b0c0d0e0f");
        let hosts: [&[u8]; 4] = [&[], &[0xab, 0xcd], &[1, 2, 3, 4, 5, 6, 7, 8], &[9; 12]];
        for host in hosts {
            let layout = CidLayout::encrypted(host, &k).unwrap();
            // Single pass up to an 11-byte host (12 with the worker, 4 bytes of nonce).
            let expected_len = if host.len() <= 11 { 17 } else { 20 };
            assert_eq!(layout.len(), expected_len, "host of {} bytes", host.len());
            let mut other_host = host.to_vec();
            other_host.push(0);
            let other_host = CidLayout::encrypted(&other_host[1..], &k).unwrap();
            let rekeyed = CidLayout::encrypted(host, &other_key).unwrap();
            for worker in 0..=255u8 {
                let mut gen = WorkerCids::new(&layout, worker);
                let cid = gen.generate_cid();
                assert_eq!(cid.len(), layout.len());
                assert_eq!(cid[0], layout.first_octet());
                assert_eq!(layout.worker_of(&cid), Some(worker));
                assert_ne!(gen.generate_cid(), cid);
                if !host.is_empty() {
                    // Decrypts to another host id.
                    assert_eq!(other_host.worker_of(&cid), None);
                }
                if host.len() >= 8 {
                    // Under another key the host id is garbage (1 in 2^64 it matches).
                    assert_eq!(rekeyed.worker_of(&cid), None);
                }
            }
        }
    }

    #[test]
    fn foreign_ids_are_not_ours() {
        let k = key("000102030405060708090a0b0c0d0e0f");
        let layout = CidLayout::encrypted(&[0xab, 0xcd, 0xef, 0x01], &k).unwrap();
        let mut random = [0u8; 17];
        random[0] = layout.first_octet();
        for (i, octet) in random[1..].iter_mut().enumerate() {
            *octet = (i as u8).wrapping_mul(37) ^ 0x5a;
        }
        assert_eq!(layout.worker_of(&random), None);
        // A plaintext ID of the same host and length is not ours either.
        let mut plain = random;
        plain[1..6].copy_from_slice(&[0xab, 0xcd, 0xef, 0x01, 0]);
        assert_eq!(layout.worker_of(&plain), None);
        assert_eq!(layout.worker_of(&random[..16]), None);
        assert_eq!(layout.worker_of(&[]), None);
    }

    #[test]
    fn server_ids_that_leave_no_nonce_are_refused() {
        let k = [7; 16];
        assert!(CidLayout::encrypted(&[0; 14], &k).is_ok(), "15 + 4 = 19");
        assert_eq!(
            CidLayout::encrypted(&[0; 15], &k).unwrap_err(),
            TooLong { server_id: 16 }
        );
        assert!(QuicLb::new(&k, 4).is_none());
        assert!(QuicLb::new(&k, 20).is_none());
    }
}
