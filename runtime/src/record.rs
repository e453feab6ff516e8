//! The record handed to a plugin, and its ABI v1 wire encoding (see `plugins/ABI.md`): a fixed 40-byte
//! little-endian header followed by topic, key, value and headers, written straight into guest memory.

/// Marks an absent key, value or header value in a length field.
pub const ABSENT: u32 = u32::MAX;
/// Marks an absent timestamp.
pub const NO_TIMESTAMP: i64 = i64::MIN;
/// Size of the fixed part of an encoded record.
pub const HEADER_LEN: usize = 40;
/// Flag bit: the host checked that the value is valid UTF-8, so the guest may read it as text without
/// checking it again (a native check here is several times cheaper than the same check in the sandbox).
pub const FLAG_VALUE_UTF8: u32 = 1;

/// One input record: what a Kafka record carries, borrowed from the consumer's buffers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the record has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header<'a>],
}

/// One record header; Kafka allows a header without a value.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

impl<'a> Header<'a> {
    /// Borrowed views of owned headers (name, value), as a host keeps them.
    pub fn borrow_all(owned: &'a [(String, Option<Vec<u8>>)]) -> Vec<Header<'a>> {
        owned
            .iter()
            .map(|(name, value)| Header {
                name,
                value: value.as_deref(),
            })
            .collect()
    }
}

impl Record<'_> {
    /// Bytes of the v1 encoding, or `None` when a part exceeds the format's 32-bit lengths.
    pub(crate) fn encoded_len(&self) -> Option<usize> {
        let mut n = HEADER_LEN
            .checked_add(self.topic.len())?
            .checked_add(self.key.map_or(0, <[u8]>::len))?
            .checked_add(self.value.map_or(0, <[u8]>::len))?;
        for h in self.headers {
            n = n
                .checked_add(8)?
                .checked_add(h.name.len())?
                .checked_add(h.value.map_or(0, <[u8]>::len))?;
        }
        (n < u32::MAX as usize).then_some(n)
    }

    /// The flags word of the encoding: [`FLAG_VALUE_UTF8`] when the value is valid UTF-8.
    fn flags(&self) -> u32 {
        match self.value {
            Some(v) if std::str::from_utf8(v).is_ok() => FLAG_VALUE_UTF8,
            _ => 0,
        }
    }

    /// Writes the v1 encoding into `out`, which is exactly `encoded_len()` bytes long.
    pub(crate) fn encode(&self, out: &mut [u8]) {
        let mut w = Writer { out, at: 0 };
        w.bytes(&self.offset.to_le_bytes());
        w.bytes(&self.timestamp_ms.unwrap_or(NO_TIMESTAMP).to_le_bytes());
        w.bytes(&self.partition.to_le_bytes());
        w.u32(self.flags());
        w.u32(self.topic.len() as u32);
        w.u32(self.key.map_or(ABSENT, |k| k.len() as u32));
        w.u32(self.value.map_or(ABSENT, |v| v.len() as u32));
        w.u32(self.headers.len() as u32);
        w.bytes(self.topic.as_bytes());
        w.bytes(self.key.unwrap_or_default());
        w.bytes(self.value.unwrap_or_default());
        for h in self.headers {
            w.u32(h.name.len() as u32);
            w.u32(h.value.map_or(ABSENT, |v| v.len() as u32));
            w.bytes(h.name.as_bytes());
            w.bytes(h.value.unwrap_or_default());
        }
    }
}

struct Writer<'o> {
    out: &'o mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        // The caller sized `out` with `encoded_len`; a mismatch is a bug in this module, caught by tests.
        if let Some(dst) = self.out.get_mut(self.at..self.at + b.len()) {
            dst.copy_from_slice(b);
        }
        self.at += b.len();
    }

    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_layout_is_the_documented_one() {
        let headers = [
            Header {
                name: "h1",
                value: Some(b"v1"),
            },
            Header {
                name: "h2",
                value: None,
            },
        ];
        let r = Record {
            topic: "t",
            partition: 3,
            offset: 42,
            timestamp_ms: Some(1_700_000_000_000),
            key: None,
            value: Some(b"{}"),
            headers: &headers,
        };
        let n = r.encoded_len().unwrap();
        assert_eq!(n, 40 + 1 + 2 + (8 + 2 + 2) + (8 + 2));
        let mut buf = vec![0u8; n];
        r.encode(&mut buf);
        assert_eq!(i64::from_le_bytes(buf[0..8].try_into().unwrap()), 42);
        assert_eq!(
            i64::from_le_bytes(buf[8..16].try_into().unwrap()),
            1_700_000_000_000
        );
        assert_eq!(i32::from_le_bytes(buf[16..20].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(buf[24..28].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(buf[28..32].try_into().unwrap()), ABSENT);
        assert_eq!(u32::from_le_bytes(buf[32..36].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(buf[36..40].try_into().unwrap()), 2);
        assert_eq!(&buf[40..43], b"t{}");
        assert_eq!(&buf[43..47], &2u32.to_le_bytes());
        assert_eq!(&buf[51..55], b"h1v1");
        assert_eq!(&buf[59..63], &ABSENT.to_le_bytes());
        assert_eq!(&buf[63..65], b"h2");
        assert_eq!(
            u32::from_le_bytes(buf[20..24].try_into().unwrap()),
            FLAG_VALUE_UTF8
        );
    }

    #[test]
    fn the_utf8_flag_is_set_only_for_a_value_that_is_utf8() {
        let flags = |value: Option<&[u8]>| {
            let r = Record {
                topic: "t",
                value,
                ..Record::default()
            };
            let mut buf = vec![0u8; r.encoded_len().unwrap()];
            r.encode(&mut buf);
            u32::from_le_bytes(buf[20..24].try_into().unwrap())
        };
        assert_eq!(flags(Some(b"{\"a\":\"caf\xc3\xa9\"}")), FLAG_VALUE_UTF8);
        assert_eq!(flags(Some(b"")), FLAG_VALUE_UTF8);
        // Invalid sequences anywhere, including a truncated one at the end and an encoded surrogate.
        for bad in [&b"{\"a\":\"\xff\"}"[..], b"caf\xc3", b"\xed\xa0\x80", b"\xc0\xaf"] {
            assert_eq!(flags(Some(bad)), 0, "{bad:?}");
        }
        assert_eq!(flags(None), 0);
    }
}
