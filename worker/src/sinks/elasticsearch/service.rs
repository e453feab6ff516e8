//! Sending a `_bulk` request and turning the answer into results: a 2xx is read item by item
//! ([`response`](super::response)); any other status is a [`SinkError::Status`] for the shared policy (a 400 or
//! 413 splits the batch, a 429 or 5xx is retried). The reachability check is the cluster's root (`ping`).

use elasticsearch::BulkParts;

use super::{ElasticsearchStore, SECTION, encoder, response};
use crate::sinks::error::{error_chain, excerpt, retry_after};
use crate::sinks::{ItemResult, Payload, SinkError, Store};

/// Where errors say they come from.
const ENDPOINT: &str = "_bulk";

impl Store for ElasticsearchStore {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, SinkError> {
        let transport = |message: String| SinkError::Transport {
            key: SECTION,
            endpoint: ENDPOINT.into(),
            message,
        };
        let bulk =
            encoder::encode(batch, &self.data_streams).map_err(|e| transport(format!("encoding: {e}")))?;
        if bulk.sent.is_empty() {
            return Ok(bulk.results);
        }
        let resp = self
            .client
            .bulk(BulkParts::None)
            .body(vec![bulk.body])
            .send()
            .await
            .map_err(|e| transport(error_chain(&e)))?;
        let status = resp.status_code().as_u16();
        let unreadable = |message: String| SinkError::Response {
            key: SECTION,
            endpoint: ENDPOINT.into(),
            message,
        };
        if !(200..300).contains(&status) {
            let after = retry_after(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()));
            let text = resp.text().await.unwrap_or_default();
            return Err(SinkError::Status {
                key: SECTION,
                endpoint: ENDPOINT.into(),
                status,
                message: excerpt(&text),
                retry_after: after,
                // The body holds nothing but the documents: a 400, 413 or 422 is about them.
                about_items: true,
            });
        }
        let text = resp.text().await.map_err(|e| unreadable(error_chain(&e)))?;
        let mut results = bulk.results;
        response::read(&text, &bulk.sent, &mut results).map_err(unreadable)?;
        Ok(results)
    }

    async fn ping(&self) -> bool {
        self.client
            .ping()
            .send()
            .await
            .is_ok_and(|r| r.status_code().is_success())
    }
}
