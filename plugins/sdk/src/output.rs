//! Where a transform puts its results: points, documents and log lines, handed to the host at once.

use serde::Serialize;

use crate::{Point, Reject, sys};

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
    Trace = 4,
}

/// The outputs of the record being processed. The host validates each one; a malformed output (bad line
/// protocol, invalid index name) makes the record fail with the reason, so there is nothing to check here.
#[derive(Debug)]
pub struct Output {
    emitted: u32,
}

impl Output {
    pub(crate) fn new() -> Self {
        Self { emitted: 0 }
    }

    /// How many points and documents this record emitted so far.
    pub fn emitted(&self) -> u32 {
        self.emitted
    }

    /// An InfluxDB point. Without a timestamp, the worker uses the record's millisecond plus nanoseconds unique
    /// per partition, offset and point (records sharing a millisecond never overwrite each other).
    pub fn point(&mut self, point: &Point) {
        point.with_line(|line| self.point_line(line));
    }

    /// An InfluxDB point given as one line of line protocol.
    pub fn point_line(&mut self, line: &str) {
        self.emitted += 1;
        sys::emit_point(line);
    }

    /// A document for Elasticsearch/OpenSearch, serialized as JSON (must serialize to an object). The
    /// host assigns a deterministic id (topic, partition, offset, output number).
    pub fn document<T: Serialize + ?Sized>(&mut self, index: &str, body: &T) -> Result<(), Reject> {
        let body = serde_json::to_vec(body).map_err(|e| Reject::new(format!("serializing document: {e}")))?;
        self.document_json(index, &body, None);
        Ok(())
    }

    /// A document with an id chosen by the plugin (documents with the same id overwrite each other).
    pub fn document_with_id<T: Serialize + ?Sized>(
        &mut self,
        index: &str,
        id: &str,
        body: &T,
    ) -> Result<(), Reject> {
        let body = serde_json::to_vec(body).map_err(|e| Reject::new(format!("serializing document: {e}")))?;
        self.document_json(index, &body, Some(id));
        Ok(())
    }

    /// A document whose body is already JSON text (for instance the record's own value).
    pub fn document_json(&mut self, index: &str, json: &[u8], id: Option<&str>) {
        self.emitted += 1;
        sys::emit_document(index, json, id);
    }

    /// A log line, attributed to the plugin and rate-limited by the host.
    pub fn log(&mut self, level: Level, message: &str) {
        sys::log(level as i32, message);
    }
}
