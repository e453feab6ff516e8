//! Elasticsearch/OpenSearch sink: the documented `_bulk` API through the `elasticsearch` crate's transport
//! (node pool, auth, TLS, gzip), with plain `application/json` so that Elasticsearch 7/8/9 and OpenSearch all
//! accept it. Each document is an `index` action with its deterministic id, so a redelivered record overwrites
//! instead of duplicating. [`encoder`] builds the body, [`service`] sends it, [`response`] reads the answer item
//! by item; the shared policy decides what is retried, split or rejected.

mod encoder;
mod response;
mod service;

use elasticsearch::Elasticsearch;
use elasticsearch::auth::Credentials;
use elasticsearch::cert::CertificateValidation;
use elasticsearch::http::Url;
use elasticsearch::http::transport::{MultiNodeConnectionPool, SingleNodeConnectionPool, TransportBuilder};

use super::SinkError;
use super::tls::CaBundle;
use crate::config::{ElasticsearchConfig, EsAuth};

const SECTION: &str = "sinks.elasticsearch";

/// An Elasticsearch or OpenSearch cluster, written with `_bulk`.
#[derive(Debug)]
pub struct ElasticsearchStore {
    client: Elasticsearch,
    /// Index globs written with `create` (data streams).
    data_streams: Vec<String>,
}

impl ElasticsearchStore {
    /// A client of the configured nodes (round robin when there are several), named `elasticsearch`.
    pub fn new(c: &ElasticsearchConfig) -> Result<Self, SinkError> {
        let urls: Vec<Url> = c
            .urls
            .iter()
            .map(|u| {
                Url::parse(u).map_err(|e| SinkError::Url {
                    key: "sinks.elasticsearch.urls",
                    url: crate::redact::userinfo(u),
                    message: e.to_string(),
                })
            })
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
            let certs = CaBundle::load("sinks.elasticsearch.ca_file", path)?.elasticsearch()?;
            builder = builder.cert_validation(CertificateValidation::Full(certs));
        }
        builder = match &c.auth {
            EsAuth::None => builder,
            EsAuth::Basic { username, password } => builder.auth(Credentials::Basic(
                username.clone(),
                password.expose().to_string(),
            )),
            EsAuth::ApiKey(k) => builder.auth(Credentials::EncodedApiKey(k.expose().to_string())),
        };
        let transport = builder.build().map_err(|e| SinkError::Client {
            key: SECTION,
            message: e.to_string(),
        })?;
        Ok(Self {
            client: Elasticsearch::new(transport),
            data_streams: c.data_streams.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(urls: &[&str], ca_file: Option<&str>) -> ElasticsearchConfig {
        ElasticsearchConfig {
            urls: urls.iter().map(|u| u.to_string()).collect(),
            ca_file: ca_file.map(Into::into),
            auth: EsAuth::None,
            gzip: false,
            timeout: Duration::from_secs(1),
            data_streams: Vec::new(),
        }
    }

    #[test]
    fn errors_name_the_key_to_fix() {
        let e = ElasticsearchStore::new(&config(&["http://es:9200", "es 2"], None)).unwrap_err();
        assert_eq!(e.key(), "sinks.elasticsearch.urls");
        assert!(e.to_string().contains("`es 2`"), "{e}");
        let e = ElasticsearchStore::new(&config(&["https://es:9200"], Some("/nonexistent/not-a-cert.pem")))
            .unwrap_err();
        assert_eq!(e.key(), "sinks.elasticsearch.ca_file");
        assert!(e.to_string().contains("not-a-cert.pem"), "{e}");
        assert!(ElasticsearchStore::new(&config(&["http://a:9200", "http://b:9200"], None)).is_ok());
    }
}
