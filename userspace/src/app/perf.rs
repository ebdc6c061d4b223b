//! `perf`: the protocol of quinn's perf tool.
//!
//! The client writes the size it wants to download as a big-endian u64, then any upload bytes,
//! then finishes. We read to the end, discarding the upload, then send that many bytes.

use bytes::Bytes;

use super::{Handler, Output};

/// Response bytes come from this one static buffer: sending costs no allocation or copy
/// before quinn-proto's own packetisation.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

#[derive(Default)]
pub struct PerfStream {
    header: [u8; 8],
    header_len: usize,
    /// Bytes still to send, known once the header is complete and the upload has ended.
    remaining: Option<u64>,
    /// Upload bytes received (the header excluded), for logs.
    uploaded: u64,
}

impl Handler for PerfStream {
    fn on_data(&mut self, mut data: Bytes) {
        if self.header_len < 8 {
            let take = (8 - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + take].copy_from_slice(&data[..take]);
            self.header_len += take;
            let _ = data.split_to(take);
        }
        self.uploaded += data.len() as u64;
    }

    fn on_fin(&mut self) {
        // A request shorter than its header asks for nothing.
        self.remaining = Some(if self.header_len == 8 {
            u64::from_be_bytes(self.header)
        } else {
            0
        });
    }

    fn next_output(&mut self) -> Output {
        match self.remaining {
            None => Output::Pending,
            Some(0) => Output::Finish,
            Some(n) => {
                let len = n.min(ZEROS.len() as u64) as usize;
                self.remaining = Some(n - len as u64);
                Output::Chunk(Bytes::from_static(&ZEROS[..len]))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(h: &mut PerfStream) -> (u64, bool) {
        let mut sent = 0;
        loop {
            match h.next_output() {
                Output::Chunk(c) => sent += c.len() as u64,
                Output::Finish => return (sent, true),
                Output::Pending => return (sent, false),
                Output::Reset(_) => panic!("perf never resets"),
            }
        }
    }

    #[test]
    fn header_split_across_chunks_and_upload_ignored() {
        let mut h = PerfStream::default();
        let size = 200_000u64.to_be_bytes();
        h.on_data(Bytes::copy_from_slice(&size[..3]));
        assert_eq!(
            drain(&mut h),
            (0, false),
            "nothing is sent before the upload ends"
        );
        let mut rest = size[3..].to_vec();
        rest.extend_from_slice(&[7; 1000]);
        h.on_data(rest.into());
        h.on_data(Bytes::from_static(&[1; 500]));
        h.on_fin();
        assert_eq!(h.uploaded, 1500);
        assert_eq!(drain(&mut h), (200_000, true));
    }

    #[test]
    fn short_request_downloads_nothing() {
        let mut h = PerfStream::default();
        h.on_data(Bytes::from_static(&[0, 0, 1]));
        h.on_fin();
        assert_eq!(drain(&mut h), (0, true));
    }
}
