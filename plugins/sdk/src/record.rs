//! The input record, decoded without copying from the ABI v1 encoding the host writes (ABI.md, "Record").

use serde::Deserialize;

use crate::Reject;

const HEADER_LEN: usize = 40;
const ABSENT: u32 = u32::MAX;
const NO_TIMESTAMP: i64 = i64::MIN;
/// Flag bit set by the host when it checked that the value is valid UTF-8 (ABI.md, "Record encoding").
pub(crate) const FLAG_VALUE_UTF8: u32 = 1;

/// One Kafka record: value, key, headers and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: Option<i64>,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
    /// The value as text, when the host vouched that it is UTF-8: read without a second check.
    value_text: Option<&'a str>,
    headers: Headers<'a>,
}

/// The record's headers, in order; a header may have no value.
#[derive(Debug, Clone, Copy)]
pub struct Headers<'a> {
    raw: &'a [u8],
    count: u32,
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.buf.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn optional(&mut self, len: u32) -> Option<Option<&'a [u8]>> {
        if len == ABSENT {
            Some(None)
        } else {
            self.take(len as usize).map(Some)
        }
    }
}

/// Whether the bytes being decoded are the record the host wrote into the input buffer, whose UTF-8 flag
/// may be trusted, or bytes from anywhere else (a plugin's own, tests), whose flag is only a hint.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    Host,
    Untrusted,
}

/// The value as text when the flag says it is UTF-8. In the sandbox (`wasm32`), for the host's own
/// encoding, this skips the check: the host made it, natively and faster. Anywhere else the check is made
/// here, once per record (natively that is what a host would do, so the native baseline of `make bench`
/// does the same work).
fn flagged_text(v: &[u8], source: Source) -> Option<&str> {
    if cfg!(target_arch = "wasm32") && source == Source::Host {
        // SAFETY: `Source::Host` is only passed by `decode_from_host`, whose caller guarantees that `v`
        // lies in the bytes the host wrote into the input buffer for this call. The host sets
        // FLAG_VALUE_UTF8 only after checking that exactly these bytes are valid UTF-8
        // (`runtime/src/record.rs`), and nothing writes to that buffer between the host's write and the
        // end of `millrace_process` (ABI.md, "Exports"). The guest trusts its host as it trusts its own
        // memory: a host that lied could as well write any bytes into the guest's state.
        #[allow(unsafe_code)]
        let text = unsafe { std::str::from_utf8_unchecked(v) };
        Some(text)
    } else {
        std::str::from_utf8(v).ok()
    }
}

fn le_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

impl<'a> Record<'a> {
    /// Decodes the ABI v1 encoding of a record. The value's UTF-8 flag is checked, not trusted: these
    /// bytes may come from anywhere.
    pub fn decode(buf: &'a [u8]) -> Result<Self, Reject> {
        Self::decode_from(buf, Source::Untrusted)
    }

    /// Decodes the record the host wrote into the input buffer, trusting its UTF-8 flag.
    ///
    /// # Safety
    ///
    /// `buf` must be (a prefix of) the bytes the host wrote for the current `millrace_process` call,
    /// unmodified since.
    #[allow(unsafe_code)]
    pub(crate) unsafe fn decode_from_host(buf: &'a [u8]) -> Result<Self, Reject> {
        Self::decode_from(buf, Source::Host)
    }

    fn decode_from(buf: &'a [u8], source: Source) -> Result<Self, Reject> {
        Self::try_decode(buf, source).ok_or_else(|| Reject::new("malformed record encoding from the host"))
    }

    fn try_decode(buf: &'a [u8], source: Source) -> Option<Self> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let offset = le_i64(&buf[0..8]);
        let timestamp = le_i64(&buf[8..16]);
        let mut c = Cursor { buf, at: 16 };
        let partition = c.u32()? as i32;
        let flags = c.u32()?;
        let topic_len = c.u32()?;
        let key_len = c.u32()?;
        let value_len = c.u32()?;
        let count = c.u32()?;
        let topic = std::str::from_utf8(c.take(topic_len as usize)?).ok()?;
        let key = c.optional(key_len)?;
        let value = c.optional(value_len)?;
        let value_text = match value {
            Some(v) if flags & FLAG_VALUE_UTF8 != 0 => flagged_text(v, source),
            _ => None,
        };
        let raw = &buf[c.at..];
        let headers = Headers { raw, count };
        // Validate the header section once so iteration can't fail later.
        if headers.iter_checked().count() != count as usize {
            return None;
        }
        Some(Self {
            topic,
            partition,
            offset,
            timestamp_ms: (timestamp != NO_TIMESTAMP).then_some(timestamp),
            key,
            value,
            value_text,
            headers,
        })
    }

    pub fn topic(&self) -> &'a str {
        self.topic
    }

    pub fn partition(&self) -> i32 {
        self.partition
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Milliseconds since the Unix epoch, when the record has a timestamp.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }

    pub fn key(&self) -> Option<&'a [u8]> {
        self.key
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&'a [u8]> {
        self.value
    }

    /// The value as UTF-8 text.
    pub fn value_str(&self) -> Result<&'a str, Reject> {
        if let Some(text) = self.value_text {
            return Ok(text);
        }
        let v = self.value.ok_or_else(|| Reject::new("record has no value"))?;
        std::str::from_utf8(v).map_err(|e| Reject::new(format!("value is not UTF-8: {e}")))
    }

    /// The value parsed as JSON into `T` (which may borrow from the record).
    pub fn json<T: Deserialize<'a>>(&self) -> Result<T, Reject> {
        // Text the host checked lets serde_json skip its UTF-8 check of every string it reads.
        let parsed = match (self.value_text, self.value) {
            (Some(text), _) => serde_json::from_str(text),
            (None, Some(v)) => serde_json::from_slice(v),
            (None, None) => return Err(Reject::new("record has no value")),
        };
        parsed.map_err(|e| Reject::new(format!("invalid JSON: {e}")))
    }

    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }

    /// The value of the first header named `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v)
    }
}

impl<'a> Headers<'a> {
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `(name, value)` pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        self.iter_checked()
    }

    fn iter_checked(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + 'a {
        let mut c = Cursor { buf: self.raw, at: 0 };
        let mut left = self.count;
        std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let name_len = c.u32()?;
            let value_len = c.u32()?;
            let name = std::str::from_utf8(c.take(name_len as usize)?).ok()?;
            let value = c.optional(value_len)?;
            Some((name, value))
        })
    }
}
