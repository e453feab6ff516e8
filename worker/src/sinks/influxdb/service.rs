//! Sending an InfluxDB write and reading its answer: a 2xx writes every line; any other status is a
//! [`SinkError::Status`] with the server's message, which the shared policy turns into a retry, a split (400:
//! a line the server cannot parse) or a rejection. A 400 whose message is not about the lines (a missing or
//! invalid parameter) is retried instead: splitting the batch would dead-letter every point of it. The reachability check is `/ping` (1.x) or `/health` (2.x).

use super::InfluxStore;
use crate::sinks::error::{error_chain, excerpt, retry_after};
use crate::sinks::{ItemResult, Payload, SinkError, Store};

impl Store for InfluxStore {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, SinkError> {
        let mut results = vec![ItemResult::Ok; batch.len()];
        let mut lines = Vec::with_capacity(batch.len());
        for (p, r) in batch.iter().zip(&mut results) {
            match p {
                Payload::Line(l) => lines.push(l.as_str()),
                Payload::Document { .. } => {
                    *r = ItemResult::Reject("a document was routed to an InfluxDB sink".into())
                }
            }
        }
        if lines.is_empty() {
            return Ok(results);
        }
        let endpoint = || self.request.endpoint().to_string();
        let body = self.request.encode(&lines).map_err(|e| SinkError::Transport {
            key: self.key,
            endpoint: endpoint(),
            message: format!("gzip: {e}"),
        })?;
        let resp = self
            .request
            .build(&self.client, body)
            .send()
            .await
            .map_err(|e| SinkError::Transport {
                key: self.key,
                endpoint: endpoint(),
                message: error_chain(&e),
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(results);
        }
        let after = retry_after(
            resp.headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let text = resp.text().await.unwrap_or_default();
        Err(SinkError::Status {
            key: self.key,
            endpoint: endpoint(),
            status: status.as_u16(),
            about_items: status != reqwest::StatusCode::BAD_REQUEST || about_lines(&text),
            message: excerpt(&text),
            retry_after: after,
        })
    }

    async fn ping(&self) -> bool {
        self.client
            .get(self.ping_url.clone())
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// Whether an InfluxDB (1.x, 2.x) or VictoriaMetrics 400 is about the lines sent: a line that does not parse,
/// a field type conflict, a point the server refused (`partial write`). Anything else is about the request.
fn about_lines(body: &str) -> bool {
    const LINE_ERRORS: [&str; 8] = [
        "unable to parse",
        "failed to parse",
        "partial write",
        "field type conflict",
        "invalid field",
        "bad timestamp",
        "invalid boolean",
        "invalid number",
    ];
    let body = body.to_ascii_lowercase();
    LINE_ERRORS.iter().any(|e| body.contains(e))
}

#[cfg(test)]
mod tests {
    use super::about_lines;

    #[test]
    fn a_400_is_about_the_lines_only_when_the_server_says_so() {
        for line_error in [
            r#"{"error":"unable to parse 'cpu value=': missing field value"}"#,
            r#"{"error":"partial write: field type conflict: input field \"v\" on measurement \"m\" is type string, already exists as type float dropped=1"}"#,
            r#"{"code":"invalid","message":"failed to parse line protocol: errors encountered on line(s): ..."}"#,
        ] {
            assert!(about_lines(line_error), "{line_error}");
        }
        for request_error in [
            r#"{"error":"database is required"}"#,
            r#"{"error":"invalid precision \"x\""}"#,
            r#"{"code":"invalid","message":"bucket is required"}"#,
            "",
        ] {
            assert!(!about_lines(request_error), "{request_error}");
        }
    }
}
