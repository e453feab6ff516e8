//! Sending an InfluxDB write and reading its answer: a 2xx writes every line; any other status is a
//! [`SinkError::Status`] with the server's message, which the shared policy turns into a retry, a split (400:
//! a line the server cannot parse) or a rejection. The reachability check is `/ping` (1.x) or `/health` (2.x).

use super::InfluxStore;
use crate::sinks::error::{error_chain, excerpt};
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
        let text = resp.text().await.unwrap_or_default();
        Err(SinkError::Status {
            key: self.key,
            endpoint: endpoint(),
            status: status.as_u16(),
            message: excerpt(&text),
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
