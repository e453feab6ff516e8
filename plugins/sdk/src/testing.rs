//! Host stubs for unit tests: run a transform natively over a [`TestRecord`] and look at what it emitted,
//! exactly as the host would have received it (the record goes through the ABI encoding and back).

use std::cell::RefCell;

use crate::Transform;

/// A record to feed a transform in tests. Built with [`TestRecord::json`] or [`TestRecord::value`] plus
/// the `with_*` methods.
#[derive(Debug, Clone)]
pub struct TestRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl TestRecord {
    /// A record whose value is `json` (not checked: malformed JSON is a fine test input).
    pub fn json(json: &str) -> Self {
        Self::value(json.as_bytes())
    }

    pub fn value(value: &[u8]) -> Self {
        Self {
            topic: "test".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: Some(1_700_000_000_000),
            key: None,
            value: Some(value.to_vec()),
            headers: Vec::new(),
        }
    }

    pub fn with_topic(mut self, topic: &str) -> Self {
        self.topic = topic.into();
        self
    }

    pub fn with_key(mut self, key: &[u8]) -> Self {
        self.key = Some(key.to_vec());
        self
    }

    pub fn with_offset(mut self, partition: i32, offset: i64) -> Self {
        self.partition = partition;
        self.offset = offset;
        self
    }

    pub fn with_timestamp_ms(mut self, ts: Option<i64>) -> Self {
        self.timestamp_ms = ts;
        self
    }

    pub fn with_header(mut self, name: &str, value: Option<&[u8]>) -> Self {
        self.headers.push((name.into(), value.map(<[u8]>::to_vec)));
        self
    }

    /// The ABI v1 encoding of the record, as the host writes it into guest memory.
    pub fn encode(&self) -> Vec<u8> {
        const ABSENT: u32 = u32::MAX;
        let mut b = Vec::with_capacity(64);
        b.extend_from_slice(&self.offset.to_le_bytes());
        b.extend_from_slice(&self.timestamp_ms.unwrap_or(i64::MIN).to_le_bytes());
        b.extend_from_slice(&self.partition.to_le_bytes());
        // Flags as the host sets them: the value is UTF-8.
        let flags = match &self.value {
            Some(v) if std::str::from_utf8(v).is_ok() => crate::record::FLAG_VALUE_UTF8,
            _ => 0,
        };
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&(self.topic.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.key.as_ref().map_or(ABSENT, |k| k.len() as u32).to_le_bytes());
        b.extend_from_slice(
            &self
                .value
                .as_ref()
                .map_or(ABSENT, |v| v.len() as u32)
                .to_le_bytes(),
        );
        b.extend_from_slice(&(self.headers.len() as u32).to_le_bytes());
        b.extend_from_slice(self.topic.as_bytes());
        b.extend_from_slice(self.key.as_deref().unwrap_or_default());
        b.extend_from_slice(self.value.as_deref().unwrap_or_default());
        for (name, value) in &self.headers {
            b.extend_from_slice(&(name.len() as u32).to_le_bytes());
            b.extend_from_slice(&value.as_ref().map_or(ABSENT, |v| v.len() as u32).to_le_bytes());
            b.extend_from_slice(name.as_bytes());
            b.extend_from_slice(value.as_deref().unwrap_or_default());
        }
        b
    }
}

/// A document as the host received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestDocument {
    pub index: String,
    pub body: String,
    pub id: Option<String>,
}

/// Everything a transform emitted for one record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lines of line protocol.
    pub points: Vec<String>,
    pub documents: Vec<TestDocument>,
    /// `(level, message)`; levels as in [`crate::Level`].
    pub logs: Vec<(i32, String)>,
    /// The reject reason, if the record was rejected (the host then discards its outputs).
    pub rejected: Option<String>,
}

thread_local! {
    static COLLECTOR: RefCell<Option<Outcome>> = const { RefCell::new(None) };
}

/// Feeds the host stubs; outside [`run`] outputs are dropped.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub(crate) fn collect(f: impl FnOnce(&mut Outcome)) {
    COLLECTOR.with(|c| {
        if let Some(o) = c.borrow_mut().as_mut() {
            f(o);
        }
    });
}

/// Runs `transform` over `record` natively and returns what it emitted.
pub fn run(transform: Transform, record: &TestRecord) -> Outcome {
    run_encoded(transform, &record.encode())
}

/// Runs `transform` over an already encoded record (for benchmarks that encode once).
pub fn run_encoded(transform: Transform, encoded: &[u8]) -> Outcome {
    COLLECTOR.with(|c| *c.borrow_mut() = Some(Outcome::default()));
    crate::__private::run(encoded, transform);
    COLLECTOR.with(|c| c.borrow_mut().take()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Output, Point, Record, Reject};

    fn echo(r: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
        let mut p = Point::new("echo")
            .tag("topic", r.topic())
            .field("partition", r.partition())
            .field("offset", r.offset());
        if let Some(k) = r.key() {
            p = p.tag(
                "key",
                std::str::from_utf8(k).map_err(|_| Reject::new("key not UTF-8"))?,
            );
        }
        for (name, value) in r.headers().iter() {
            p = p.field(name, value.map_or(-1, |v| v.len() as i64));
        }
        if let Some(ts) = r.timestamp_ms() {
            p = p.timestamp_ms(ts);
        }
        out.point(&p);
        out.document_json("echo", r.value().unwrap_or(b"{}"), Some("fixed"));
        out.log(crate::Level::Warn, "hello");
        if r.headers().iter().any(|(n, _)| n == "reject") {
            return Err(Reject::new("asked to"));
        }
        Ok(())
    }

    #[test]
    fn records_round_trip_through_the_abi_encoding() {
        let rec = TestRecord::json("{\"a\":1}")
            .with_topic("t1")
            .with_key(b"k")
            .with_offset(3, 99)
            .with_header("h", Some(b"xyz"))
            .with_header("n", None);
        let o = run(echo, &rec);
        assert_eq!(
            o.points,
            ["echo,topic=t1,key=k partition=3i,offset=99i,h=3i,n=-1i 1700000000000000000"]
        );
        assert_eq!(o.documents[0].body, "{\"a\":1}");
        assert_eq!(o.documents[0].id.as_deref(), Some("fixed"));
        assert_eq!(o.logs, [(1, "hello".to_string())]);
        assert_eq!(o.rejected, None);

        let o = run(
            echo,
            &TestRecord::value(b"{}")
                .with_timestamp_ms(None)
                .with_header("reject", None),
        );
        assert_eq!(o.points, ["echo,topic=test partition=0i,offset=0i,reject=-1i"]);
        assert_eq!(o.rejected.as_deref(), Some("asked to"));
    }

    #[test]
    fn truncated_encodings_are_rejected_not_misread() {
        let enc = TestRecord::json("{}").with_header("h", Some(b"v")).encode();
        for cut in 0..enc.len() {
            let o = run_encoded(echo, &enc[..cut]);
            assert_eq!(
                o.rejected.as_deref(),
                Some("malformed record encoding from the host"),
                "cut {cut}"
            );
        }
    }

    fn parse(r: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
        #[derive(serde::Deserialize)]
        struct Msg<'a> {
            name: &'a str,
        }
        let text = r.value_str()?;
        let msg: Msg = r.json()?;
        out.point(
            &Point::new("m")
                .tag("name", msg.name)
                .field("len", text.len() as i64),
        );
        Ok(())
    }

    fn with_flags(mut enc: Vec<u8>, flags: u32) -> Vec<u8> {
        enc[20..24].copy_from_slice(&flags.to_le_bytes());
        enc
    }

    #[test]
    fn the_value_is_text_with_or_without_the_hosts_utf8_flag() {
        let rec = TestRecord::json("{\"name\":\"caf\u{e9}\"}");
        let enc = rec.encode();
        assert_eq!(enc[20..24], crate::record::FLAG_VALUE_UTF8.to_le_bytes());
        let expected = ["m,name=caf\u{e9} len=16i"];
        assert_eq!(run_encoded(parse, &enc).points, expected);
        // A host that does not set the flag (older hosts): the SDK checks the text itself.
        assert_eq!(run_encoded(parse, &with_flags(enc.clone(), 0)).points, expected);
        // Unknown flag bits are ignored.
        assert_eq!(run_encoded(parse, &with_flags(enc, 0xFFFF_FFFE)).points, expected);
    }

    #[test]
    fn a_value_that_is_not_utf8_is_refused_as_text() {
        let rec = TestRecord::value(b"{\"name\":\"caf\xe9\"}");
        let enc = rec.encode();
        assert_eq!(enc[20..24], [0; 4], "no flag for bytes that are not UTF-8");
        let o = run_encoded(parse, &enc);
        assert!(
            o.rejected
                .as_deref()
                .is_some_and(|r| r.starts_with("value is not UTF-8")),
            "{o:?}"
        );
        // Bytes that do not come from the host's input buffer (tests, a plugin's own `Record::decode`) are
        // checked whatever their flag says, on every target.
        let o = run_encoded(parse, &with_flags(enc, crate::record::FLAG_VALUE_UTF8));
        assert!(
            o.rejected
                .as_deref()
                .is_some_and(|r| r.starts_with("value is not UTF-8")),
            "{o:?}"
        );
    }
}
