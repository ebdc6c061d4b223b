//! HTTP/3 framing (RFC 9114 7): QUIC variable-length integers and an incremental frame reader
//! that buffers only the frames we interpret and skips the others' payloads as they arrive.

use bytes::{Buf, Bytes, BytesMut};

pub const DATA: u64 = 0x0;
pub const HEADERS: u64 = 0x1;
pub const CANCEL_PUSH: u64 = 0x3;
pub const SETTINGS: u64 = 0x4;
pub const PUSH_PROMISE: u64 = 0x5;
pub const GOAWAY: u64 = 0x7;
pub const MAX_PUSH_ID: u64 = 0xd;

/// Frame types of HTTP/2 that HTTP/3 reserves: receiving one is H3_FRAME_UNEXPECTED (7.2.8).
pub fn is_reserved_http2(ty: u64) -> bool {
    matches!(ty, 0x2 | 0x6 | 0x8 | 0x9)
}

/// Decodes a QUIC variable-length integer at the start of `buf`: value and length, or `None`
/// while incomplete.
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(..len)?;
    let mut value = u64::from(first & 0x3f);
    for &b in &bytes[1..] {
        value = (value << 8) | u64::from(b);
    }
    Some((value, len))
}

pub fn write_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & ((1 << 62) - 1)) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// A frame: type and header bytes, then `payload`.
pub fn encode_frame(ty: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 16);
    write_varint(&mut out, ty);
    write_varint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// What the reader found next.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A frame read whole.
    Frame { ty: u64, payload: Bytes },
    /// The header of a frame whose payload is skipped (DATA and unknown types).
    Skipped { ty: u64, len: u64 },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of type {ty:#x} and {len} bytes exceeds the limit")]
    TooLarge { ty: u64, len: u64 },
}

#[derive(Default)]
pub struct FrameReader {
    buf: BytesMut,
    /// Payload bytes of a skipped frame still to drop.
    skip: u64,
}

impl FrameReader {
    pub fn push(&mut self, mut data: &[u8]) {
        // Payload of a skipped frame is dropped here, never copied.
        if self.buf.is_empty() && self.skip > 0 {
            let n = self.skip.min(data.len() as u64) as usize;
            self.skip -= n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Whether nothing is buffered or owed: a stream may end here.
    pub fn at_boundary(&self) -> bool {
        self.buf.is_empty() && self.skip == 0
    }

    /// The next frame, once complete. `whole(ty)` says whether to buffer a frame type (and the
    /// largest payload accepted), or `None` to skip its payload.
    pub fn next(
        &mut self,
        whole: impl Fn(u64) -> Option<u64>,
    ) -> Result<Option<Event>, FrameError> {
        if self.skip > 0 {
            let n = self.skip.min(self.buf.len() as u64) as usize;
            self.buf.advance(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let Some((ty, a)) = read_varint(&self.buf) else {
            return Ok(None);
        };
        let Some((len, b)) = read_varint(&self.buf[a..]) else {
            return Ok(None);
        };
        match whole(ty) {
            Some(limit) => {
                if len > limit {
                    return Err(FrameError::TooLarge { ty, len });
                }
                let total = a + b + len as usize;
                if self.buf.len() < total {
                    return Ok(None);
                }
                self.buf.advance(a + b);
                let payload = self.buf.split_to(len as usize).freeze();
                Ok(Some(Event::Frame { ty, payload }))
            }
            None => {
                self.buf.advance(a + b);
                self.skip = len;
                Ok(Some(Event::Skipped { ty, len }))
            }
        }
    }
}

/// Parses a SETTINGS payload into (identifier, value) pairs.
pub fn parse_settings(mut payload: &[u8]) -> Option<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    while !payload.is_empty() {
        let (id, a) = read_varint(payload)?;
        let (value, b) = read_varint(&payload[a..])?;
        payload = &payload[a + b..];
        out.push((id, value));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_rfc9000_examples() {
        for (hex, v) in [
            (&[0x25u8][..], 37u64),
            (&[0x40, 0x25], 37),
            (&[0x7b, 0xbd], 15293),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494878333),
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151288809941952652,
            ),
        ] {
            assert_eq!(read_varint(hex), Some((v, hex.len())));
        }
        for v in [
            0,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            (1 << 62) - 1,
        ] {
            let mut out = Vec::new();
            write_varint(&mut out, v);
            assert_eq!(read_varint(&out), Some((v, out.len())));
        }
        assert_eq!(read_varint(&[0x40]), None);
    }

    #[test]
    fn reader_buffers_known_frames_and_skips_others() {
        let mut wire = encode_frame(HEADERS, b"abc");
        wire.extend_from_slice(&encode_frame(0x21, &[9; 1000])); // GREASE
        wire.extend_from_slice(&encode_frame(DATA, b"body"));
        wire.extend_from_slice(&encode_frame(HEADERS, b"trailers"));
        let whole = |ty| (ty == HEADERS).then_some(100);
        // Byte by byte: the reader must cope with every split.
        let mut r = FrameReader::default();
        let mut events = Vec::new();
        for b in &wire {
            r.push(std::slice::from_ref(b));
            while let Some(e) = r.next(whole).unwrap() {
                events.push(e);
            }
        }
        assert!(r.at_boundary());
        assert_eq!(
            events,
            [
                Event::Frame {
                    ty: HEADERS,
                    payload: Bytes::from_static(b"abc")
                },
                Event::Skipped {
                    ty: 0x21,
                    len: 1000
                },
                Event::Skipped { ty: DATA, len: 4 },
                Event::Frame {
                    ty: HEADERS,
                    payload: Bytes::from_static(b"trailers")
                },
            ]
        );
    }

    #[test]
    fn reader_limits_and_truncation() {
        let mut r = FrameReader::default();
        r.push(&encode_frame(HEADERS, &[0; 200]));
        assert_eq!(
            r.next(|_| Some(100)),
            Err(FrameError::TooLarge {
                ty: HEADERS,
                len: 200
            })
        );
        let mut r = FrameReader::default();
        r.push(&encode_frame(HEADERS, b"abc")[..3]);
        assert_eq!(r.next(|_| Some(100)), Ok(None));
        assert!(!r.at_boundary());
    }

    #[test]
    fn settings_parse() {
        let mut p = Vec::new();
        for v in [1u64, 0, 6, 16384, 0x21, 7] {
            write_varint(&mut p, v);
        }
        assert_eq!(
            parse_settings(&p),
            Some(vec![(1, 0), (6, 16384), (0x21, 7)])
        );
        assert_eq!(parse_settings(&p[..p.len() - 1]), None);
    }
}
