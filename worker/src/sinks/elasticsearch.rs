//! Elasticsearch/OpenSearch sink: the documented `_bulk` API through the `elasticsearch` crate, with plain
//! `application/json` so that Elasticsearch 7/8/9 and OpenSearch all accept it. Each document is an `index`
//! action with its deterministic id, so a redelivered record overwrites instead of duplicating. The response is
//! read per item: 429 and 5xx items are retried, other failures are rejected with the store's reason.

use elasticsearch::auth::Credentials;
use elasticsearch::cert::{Certificate, CertificateValidation};
use elasticsearch::http::Url;
use elasticsearch::http::transport::{MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::{BulkParts, Elasticsearch};
use serde_json::Value;

use super::{ItemResult, Payload, Store, WriteError, retriable_status};
use crate::config::{ElasticsearchConfig, EsAuth};

#[derive(Debug)]
pub struct ElasticsearchStore {
    client: Elasticsearch,
}

impl ElasticsearchStore {
    pub fn new(c: &ElasticsearchConfig) -> Result<Self, String> {
        let urls: Vec<Url> = c
            .urls
            .iter()
            .map(|u| Url::parse(u).map_err(|e| format!("`{u}`: {e}")))
            .collect::<Result<_, _>>()?;
        let mut builder = match urls.as_slice() {
            [one] => TransportBuilder::new(SingleNodeConnectionPool::new(one.clone())),
            _ => TransportBuilder::new(MultiNodeConnectionPool::round_robin(urls, None)),
        };
        builder = builder
            .disable_proxy()
            .timeout(c.timeout)
            .request_body_compression(c.gzip);
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let cert = Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: not a PEM certificate: {e}", path.display()))?;
            builder = builder.cert_validation(CertificateValidation::Full(cert));
        }
        builder = match &c.auth {
            EsAuth::None => builder,
            EsAuth::Basic { username, password } => builder.auth(Credentials::Basic(
                username.clone(),
                password.expose().to_string(),
            )),
            EsAuth::ApiKey(k) => builder.auth(Credentials::EncodedApiKey(k.expose().to_string())),
        };
        let transport = builder.build().map_err(|e| e.to_string())?;
        Ok(Self {
            client: Elasticsearch::new(transport),
        })
    }
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Value::from(s).to_string());
    }
}

fn item_result(item: &Value) -> ItemResult {
    let op = item
        .as_object()
        .and_then(|o| o.values().next())
        .unwrap_or(&Value::Null);
    let status = op["status"].as_u64().unwrap_or(0) as u16;
    if (200..300).contains(&status) {
        return ItemResult::Ok;
    }
    let reason = match &op["error"] {
        Value::Object(e) => format!(
            "{status} {}: {}",
            e.get("type").and_then(Value::as_str).unwrap_or("error"),
            e.get("reason").and_then(Value::as_str).unwrap_or("")
        ),
        Value::Null => format!("status {status}"),
        other => format!("{status} {other}"),
    };
    if status == 0 || retriable_status(status) {
        ItemResult::Retry(reason)
    } else {
        ItemResult::Reject(reason)
    }
}

impl Store for ElasticsearchStore {
    fn name(&self) -> &'static str {
        "elasticsearch"
    }

    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, WriteError> {
        // One NDJSON body; the crate ends it with the final newline.
        let mut ndjson = String::with_capacity(batch.iter().map(|p| p.len()).sum());
        let mut sent = Vec::with_capacity(batch.len());
        let mut results = vec![ItemResult::Ok; batch.len()];
        for (i, p) in batch.iter().enumerate() {
            match p {
                Payload::Document { index, id, body } => {
                    if !ndjson.is_empty() {
                        ndjson.push('\n');
                    }
                    ndjson.push_str("{\"index\":{\"_index\":");
                    push_json_string(&mut ndjson, index);
                    ndjson.push_str(",\"_id\":");
                    push_json_string(&mut ndjson, id);
                    ndjson.push_str("}}\n");
                    ndjson.push_str(body);
                    sent.push(i);
                }
                Payload::Line(_) => {
                    results[i] = ItemResult::Reject("a point was routed to Elasticsearch".into())
                }
            }
        }
        if sent.is_empty() {
            return Ok(results);
        }
        let resp = self
            .client
            .bulk(BulkParts::None)
            .body(vec![ndjson])
            .send()
            .await
            .map_err(|e| WriteError {
                retriable: true,
                message: format!("_bulk: {e}"),
            })?;
        let status = resp.status_code().as_u16();
        let text = resp.text().await.map_err(|e| WriteError {
            retriable: true,
            message: format!("_bulk response: {e}"),
        })?;
        if !(200..300).contains(&status) {
            return Err(WriteError {
                retriable: retriable_status(status) || matches!(status, 401 | 403 | 404),
                message: format!(
                    "_bulk answered {status}: {}",
                    text.chars().take(500).collect::<String>()
                ),
            });
        }
        let v: Value = serde_json::from_str(&text).map_err(|e| WriteError {
            retriable: true,
            message: format!("_bulk answered unreadable JSON: {e}"),
        })?;
        let items = v["items"].as_array().ok_or_else(|| WriteError {
            retriable: true,
            message: "_bulk answer without items".into(),
        })?;
        if items.len() != sent.len() {
            return Err(WriteError {
                retriable: true,
                message: format!(
                    "_bulk answered {} items for {} documents",
                    items.len(),
                    sent.len()
                ),
            });
        }
        for (i, item) in sent.into_iter().zip(items) {
            results[i] = item_result(item);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_items_are_classified() {
        let ok = serde_json::json!({"index": {"status": 201}});
        let busy = serde_json::json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}});
        let bad = serde_json::json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}}});
        assert_eq!(item_result(&ok), ItemResult::Ok);
        assert!(matches!(item_result(&busy), ItemResult::Retry(r) if r.contains("queue full")));
        assert_eq!(
            item_result(&bad),
            ItemResult::Reject("400 mapper_parsing_exception: failed to parse field [n]".into())
        );
    }
}
