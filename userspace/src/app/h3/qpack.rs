//! QPACK (RFC 9204) with a dynamic table of capacity 0: we advertise
//! `SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0`, so a peer may only use the static table and
//! literals. Decoding accepts every such field line, Huffman-coded or not; any reference to the
//! dynamic table is a `QPACK_DECOMPRESSION_FAILED`, as the RFC requires. Encoding uses the
//! static table and plain literals, so our sections need no acknowledgement.

use loona_hpack::huffman::HuffmanDecoder;

/// A decoded field line: name and value bytes.
pub type Field = (Vec<u8>, Vec<u8>);

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QpackError {
    #[error("field section references the dynamic table, whose capacity is 0")]
    DynamicReference,
    #[error("static table index {0} out of range")]
    BadStaticIndex(u64),
    #[error("truncated field section")]
    Truncated,
    #[error("integer too large")]
    IntegerOverflow,
    #[error("invalid Huffman string")]
    Huffman,
    #[error("field section larger than {0} bytes")]
    TooLarge(u64),
}

/// RFC 9204 Appendix A.
pub const STATIC_TABLE: [(&str, &str); 99] = [
    (":authority", ""),
    (":path", "/"),
    ("age", "0"),
    ("content-disposition", ""),
    ("content-length", "0"),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("referer", ""),
    ("set-cookie", ""),
    (":method", "CONNECT"),
    (":method", "DELETE"),
    (":method", "GET"),
    (":method", "HEAD"),
    (":method", "OPTIONS"),
    (":method", "POST"),
    (":method", "PUT"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "103"),
    (":status", "200"),
    (":status", "304"),
    (":status", "404"),
    (":status", "503"),
    ("accept", "*/*"),
    ("accept", "application/dns-message"),
    ("accept-encoding", "gzip, deflate, br"),
    ("accept-ranges", "bytes"),
    ("access-control-allow-headers", "cache-control"),
    ("access-control-allow-headers", "content-type"),
    ("access-control-allow-origin", "*"),
    ("cache-control", "max-age=0"),
    ("cache-control", "max-age=2592000"),
    ("cache-control", "max-age=604800"),
    ("cache-control", "no-cache"),
    ("cache-control", "no-store"),
    ("cache-control", "public, max-age=31536000"),
    ("content-encoding", "br"),
    ("content-encoding", "gzip"),
    ("content-type", "application/dns-message"),
    ("content-type", "application/javascript"),
    ("content-type", "application/json"),
    ("content-type", "application/x-www-form-urlencoded"),
    ("content-type", "image/gif"),
    ("content-type", "image/jpeg"),
    ("content-type", "image/png"),
    ("content-type", "text/css"),
    ("content-type", "text/html; charset=utf-8"),
    ("content-type", "text/plain"),
    ("content-type", "text/plain;charset=utf-8"),
    ("range", "bytes=0-"),
    ("strict-transport-security", "max-age=31536000"),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains",
    ),
    (
        "strict-transport-security",
        "max-age=31536000; includesubdomains; preload",
    ),
    ("vary", "accept-encoding"),
    ("vary", "origin"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    (":status", "100"),
    (":status", "204"),
    (":status", "206"),
    (":status", "302"),
    (":status", "400"),
    (":status", "403"),
    (":status", "421"),
    (":status", "425"),
    (":status", "500"),
    ("accept-language", ""),
    ("access-control-allow-credentials", "FALSE"),
    ("access-control-allow-credentials", "TRUE"),
    ("access-control-allow-headers", "*"),
    ("access-control-allow-methods", "get"),
    ("access-control-allow-methods", "get, post, options"),
    ("access-control-allow-methods", "options"),
    ("access-control-expose-headers", "content-length"),
    ("access-control-request-headers", "content-type"),
    ("access-control-request-method", "get"),
    ("access-control-request-method", "post"),
    ("alt-svc", "clear"),
    ("authorization", ""),
    (
        "content-security-policy",
        "script-src 'none'; object-src 'none'; base-uri 'none'",
    ),
    ("early-data", "1"),
    ("expect-ct", ""),
    ("forwarded", ""),
    ("if-range", ""),
    ("origin", ""),
    ("purpose", "prefetch"),
    ("server", ""),
    ("timing-allow-origin", "*"),
    ("upgrade-insecure-requests", "1"),
    ("user-agent", ""),
    ("x-forwarded-for", ""),
    ("x-frame-options", "deny"),
    ("x-frame-options", "sameorigin"),
];

/// Reads a prefixed integer (RFC 7541 5.1) whose prefix is the low `bits` bits of `buf[*pos]`.
pub fn read_prefix_int(buf: &[u8], pos: &mut usize, bits: u8) -> Result<u64, QpackError> {
    let first = *buf.get(*pos).ok_or(QpackError::Truncated)?;
    *pos += 1;
    let max = (1u64 << bits) - 1;
    let mut value = u64::from(first) & max;
    if value < max {
        return Ok(value);
    }
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos).ok_or(QpackError::Truncated)?;
        *pos += 1;
        // 62 bits is more than any length or index we could use; refuse before overflowing.
        if shift > 56 {
            return Err(QpackError::IntegerOverflow);
        }
        value = value
            .checked_add(u64::from(b & 0x7f) << shift)
            .ok_or(QpackError::IntegerOverflow)?;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Appends a prefixed integer; `flags` fills the bits above the prefix in the first byte.
pub fn write_prefix_int(out: &mut Vec<u8>, flags: u8, bits: u8, mut value: u64) {
    let max = (1u64 << bits) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decodes field sections. Holds the Huffman decoder's table, built on first use.
#[derive(Default)]
pub struct Decoder {
    huffman: Option<HuffmanDecoder>,
}

impl Decoder {
    /// Decodes one encoded field section (a HEADERS frame's payload). `max_size` bounds the
    /// decoded size as RFC 9114 4.2.2 counts it (name + value + 32 per line).
    pub fn decode(&mut self, buf: &[u8], max_size: u64) -> Result<Vec<Field>, QpackError> {
        let mut pos = 0;
        // Required Insert Count: anything but 0 needs the dynamic table.
        if read_prefix_int(buf, &mut pos, 8)? != 0 {
            return Err(QpackError::DynamicReference);
        }
        // Delta Base (sign bit + 7-bit integer): meaningless without dynamic references.
        read_prefix_int(buf, &mut pos, 7)?;
        let mut fields = Vec::new();
        let mut size = 0u64;
        while pos < buf.len() {
            let b = buf[pos];
            let field = if b & 0x80 != 0 {
                // Indexed field line: 1 T index(6).
                let is_static = b & 0x40 != 0;
                let index = read_prefix_int(buf, &mut pos, 6)?;
                if !is_static {
                    return Err(QpackError::DynamicReference);
                }
                let (n, v) = static_entry(index)?;
                (n.as_bytes().to_vec(), v.as_bytes().to_vec())
            } else if b & 0x40 != 0 {
                // Literal with name reference: 0 1 N T index(4), then the value.
                let is_static = b & 0x10 != 0;
                let index = read_prefix_int(buf, &mut pos, 4)?;
                if !is_static {
                    return Err(QpackError::DynamicReference);
                }
                let (n, _) = static_entry(index)?;
                let value = self.read_string(buf, &mut pos, 7)?;
                (n.as_bytes().to_vec(), value)
            } else if b & 0x20 != 0 {
                // Literal with literal name: 0 0 1 N H len(3), name, then the value.
                let name = self.read_string(buf, &mut pos, 3)?;
                let value = self.read_string(buf, &mut pos, 7)?;
                (name, value)
            } else {
                // Indexed field line with post-base index (0001) and literal with post-base
                // name reference (0000): both name dynamic entries.
                return Err(QpackError::DynamicReference);
            };
            size += field.0.len() as u64 + field.1.len() as u64 + 32;
            if size > max_size {
                return Err(QpackError::TooLarge(max_size));
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// A string literal: H flag just above a `bits`-bit length prefix, then the bytes.
    fn read_string(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
        bits: u8,
    ) -> Result<Vec<u8>, QpackError> {
        let huffman = buf.get(*pos).ok_or(QpackError::Truncated)? & (1 << bits) != 0;
        let len = read_prefix_int(buf, pos, bits)?;
        let end = pos
            .checked_add(usize::try_from(len).map_err(|_| QpackError::Truncated)?)
            .filter(|&end| end <= buf.len())
            .ok_or(QpackError::Truncated)?;
        let raw = &buf[*pos..end];
        *pos = end;
        if huffman {
            self.huffman
                .get_or_insert_with(HuffmanDecoder::new)
                .decode(raw)
                .map_err(|_| QpackError::Huffman)
        } else {
            Ok(raw.to_vec())
        }
    }
}

fn static_entry(index: u64) -> Result<(&'static str, &'static str), QpackError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| STATIC_TABLE.get(i))
        .copied()
        .ok_or(QpackError::BadStaticIndex(index))
}

/// Encodes a field section with the static table and plain literals only.
pub struct Encoder {
    buf: Vec<u8>,
}

impl Default for Encoder {
    fn default() -> Self {
        // Required Insert Count 0, Delta Base 0.
        Self { buf: vec![0, 0] }
    }
}

impl Encoder {
    pub fn field(&mut self, name: &str, value: &str) -> &mut Self {
        let mut name_index = None;
        for (i, (n, v)) in STATIC_TABLE.iter().enumerate() {
            if *n == name {
                if *v == value {
                    // Indexed field line, static: 1 1 index(6).
                    write_prefix_int(&mut self.buf, 0xc0, 6, i as u64);
                    return self;
                }
                name_index.get_or_insert(i);
            }
        }
        match name_index {
            // Literal with static name reference, N=0: 0 1 0 1 index(4).
            Some(i) => write_prefix_int(&mut self.buf, 0x50, 4, i as u64),
            None => {
                // Literal with literal name, N=0, H=0: 0 0 1 0 0 len(3).
                write_prefix_int(&mut self.buf, 0x20, 3, name.len() as u64);
                self.buf.extend_from_slice(name.as_bytes());
            }
        }
        write_prefix_int(&mut self.buf, 0, 7, value.len() as u64);
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn text(fields: &[Field]) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n.clone()).unwrap(),
                    String::from_utf8(v.clone()).unwrap(),
                )
            })
            .collect()
    }

    /// RFC 9204 B.1: literal field line with a static name reference.
    #[test]
    fn rfc9204_b1_literal_with_name_reference() {
        let section = hex("0000 510b 2f69 6e64 6578 2e68 746d 6c");
        let fields = Decoder::default().decode(&section, 16 * 1024).unwrap();
        assert_eq!(text(&fields), [(":path".into(), "/index.html".into())]);
    }

    /// RFC 9204 B.2-B.5 use the dynamic table, which we set to capacity 0: their field
    /// sections must be refused, not misread.
    #[test]
    fn rfc9204_dynamic_examples_are_refused() {
        for section in [
            // B.2 stream 4: Required Insert Count 2, two post-base indexed lines.
            "0381 10 11",
            // B.3 stream 8: Required Insert Count 4, dynamic indexed line 0x80.
            "0500 80 c1 81",
            // B.5 stream 12: Required Insert Count 5, dynamic indexed lines.
            "0601 81",
        ] {
            assert_eq!(
                Decoder::default().decode(&hex(section), 16 * 1024),
                Err(QpackError::DynamicReference),
                "{section}"
            );
        }
        // A section claiming Required Insert Count 0 yet naming a dynamic entry.
        assert_eq!(
            Decoder::default().decode(&hex("0000 80"), 1024),
            Err(QpackError::DynamicReference)
        );
        assert_eq!(
            Decoder::default().decode(&hex("0000 10"), 1024),
            Err(QpackError::DynamicReference)
        );
    }

    #[test]
    fn static_indexed_and_literal_names() {
        // :method GET (17), :scheme https (23), :path / (1), :authority literal
        // "example.com" by name ref (0), and a literal name "x-a" = "b".
        let mut section = hex("0000 d1 d7 c1");
        section.extend_from_slice(&hex("50 0b"));
        section.extend_from_slice(b"example.com");
        section.extend_from_slice(&hex("23"));
        section.extend_from_slice(b"x-a");
        section.extend_from_slice(&hex("01"));
        section.extend_from_slice(b"b");
        let fields = Decoder::default().decode(&section, 16 * 1024).unwrap();
        assert_eq!(
            text(&fields),
            [
                (":method".into(), "GET".into()),
                (":scheme".into(), "https".into()),
                (":path".into(), "/".into()),
                (":authority".into(), "example.com".into()),
                ("x-a".into(), "b".into()),
            ]
        );
    }

    /// Huffman strings (RFC 7541 C.4.1's "www.example.com" and C.4.2's "no-cache"), as a
    /// value and as a literal name.
    #[test]
    fn huffman_strings() {
        // :authority (0) by name ref, H=1 value of 12 bytes.
        let mut section = hex("0000 50 8c f1e3 c2e5 f23a 6ba0 ab90 f4ff");
        // Literal name with H=1 (0x28 | len 6): "no-cache" is a8eb 1064 9cbf.
        section.extend_from_slice(&hex("2e a8eb 1064 9cbf"));
        // Value H=1 "no-cache" as well.
        section.extend_from_slice(&hex("86 a8eb 1064 9cbf"));
        let fields = Decoder::default().decode(&section, 16 * 1024).unwrap();
        assert_eq!(
            text(&fields),
            [
                (":authority".into(), "www.example.com".into()),
                ("no-cache".into(), "no-cache".into()),
            ]
        );
        // Padding that is not a prefix of EOS (zeros) is an error, not garbage.
        assert_eq!(
            Decoder::default().decode(&hex("0000 50 81 00"), 1024),
            Err(QpackError::Huffman)
        );
        // Padding longer than 7 bits.
        assert_eq!(
            Decoder::default().decode(&hex("0000 50 82 f1ff"), 1024),
            Err(QpackError::Huffman)
        );
    }

    #[test]
    fn malformed_sections_are_errors() {
        for (section, err) in [
            ("", QpackError::Truncated),
            ("00", QpackError::Truncated),
            ("0000 ff", QpackError::Truncated),
            ("0000 ff 7f", QpackError::BadStaticIndex(63 + 127)),
            ("0000 51 05 61", QpackError::Truncated),
            (
                "0000 ff ffffffffffffffffffff 01",
                QpackError::IntegerOverflow,
            ),
            ("0000 27 ff ff", QpackError::Truncated),
        ] {
            assert_eq!(
                Decoder::default().decode(&hex(section), 1024),
                Err(err),
                "{section}"
            );
        }
    }

    #[test]
    fn size_limit_counts_overhead() {
        // ":path" "/" is 5 + 1 + 32 = 38 bytes.
        let section = hex("0000 c1");
        assert!(Decoder::default().decode(&section, 38).is_ok());
        assert_eq!(
            Decoder::default().decode(&section, 37),
            Err(QpackError::TooLarge(37))
        );
    }

    #[test]
    fn encoder_round_trips() {
        let mut enc = Encoder::default();
        enc.field(":status", "200")
            .field(":status", "416")
            .field("content-type", "text/html; charset=utf-8")
            .field("content-length", "1048576")
            .field("content-range", "bytes */10")
            .field("x-long", &"v".repeat(300));
        let fields = Decoder::default().decode(&enc.finish(), 1 << 20).unwrap();
        assert_eq!(
            text(&fields),
            [
                (":status".into(), "200".into()),
                (":status".into(), "416".into()),
                ("content-type".into(), "text/html; charset=utf-8".into()),
                ("content-length".into(), "1048576".into()),
                ("content-range".into(), "bytes */10".into()),
                ("x-long".into(), "v".repeat(300)),
            ]
        );
    }

    #[test]
    fn prefix_integers_round_trip() {
        for bits in [3u8, 4, 5, 6, 7, 8] {
            for v in [0u64, 1, 30, 31, 127, 128, 255, 1337, 1 << 20, (1 << 40) + 5] {
                let mut out = Vec::new();
                write_prefix_int(&mut out, 0, bits, v);
                let mut pos = 0;
                assert_eq!(read_prefix_int(&out, &mut pos, bits), Ok(v));
                assert_eq!(pos, out.len());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        write_prefix_int(&mut out, 0, 5, 1337);
        assert_eq!(out, [31, 154, 10]);
    }
}
