//! Many clients at once, as the many-clients tests and the many-clients benchmark make them: distinct plugin
//! digests from one example module ([`with_custom_section`]), pushed in-process ([`push_modules`]), and the
//! clients' topics ([`create_topics`]) and records ([`produce_to`]).
//!
//! Every client gets its own digest by appending a WebAssembly custom section with a unique payload to the same
//! example module (the module stays valid; its bytes, hence its digests, differ). The modules are pushed
//! in-process with oci-client, as a wasm OCI artifact (the layout `millrace plugin push` writes): hundreds of
//! ORAS SDK processes would take minutes.

use std::time::Duration;

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Appends a custom section (id 0) named `name` holding `payload`: the module means the same, its bytes differ.
pub fn with_custom_section(module: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb128(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = module.to_vec();
    out.push(0);
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Pushes each module as a wasm OCI artifact to `<repo>:<tag>` (a few at a time) over plain HTTP; `repo` starts
/// with the registry's `host:port`. Returns the manifest digests, in the order of `modules`.
pub async fn push_modules(repo: &str, modules: &[(String, Vec<u8>)]) -> Result<Vec<String>> {
    use millrace_plugin_registry::sha256;
    use oci_client::client::{ClientConfig, ClientProtocol};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let registry = repo.split('/').next().unwrap_or(repo);
    client
        .store_auth_if_needed(registry, &RegistryAuth::Anonymous)
        .await;
    let config = json!({"architecture": "wasm", "os": "wasip1"})
        .to_string()
        .into_bytes();
    let config_digest = sha256(&config);
    let first: Reference = format!("{repo}:config").parse()?;
    client.push_blob(&first, config.clone(), &config_digest).await?;
    futures::stream::iter(modules)
        .map(|(tag, wasm)| {
            let (client, config_len, config_digest) = (&client, config.len(), &config_digest);
            async move {
                let reference: Reference = format!("{repo}:{tag}").parse()?;
                let layer_digest = sha256(wasm);
                client
                    .push_blob(&reference, wasm.clone(), &layer_digest)
                    .await?;
                let manifest = json!({
                    "schemaVersion": 2,
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "artifactType": "application/vnd.wasm.config.v0+json",
                    "config": {"mediaType": "application/vnd.wasm.config.v0+json", "digest": config_digest, "size": config_len},
                    "layers": [{
                        "mediaType": "application/wasm",
                        "digest": layer_digest,
                        "size": wasm.len(),
                        "annotations": {"org.opencontainers.image.title": format!("{tag}.wasm")},
                    }],
                })
                .to_string()
                .into_bytes();
                let digest = sha256(&manifest);
                client
                    .push_manifest_raw(
                        &reference,
                        manifest,
                        reqwest::header::HeaderValue::from_static("application/vnd.oci.image.manifest.v1+json"),
                    )
                    .await?;
                anyhow::Ok(digest)
            }
        })
        .buffered(8)
        .try_collect()
        .await
}

/// Creates the topics on `brokers`, with `partitions` partitions each (the stack's broker defaults to 4).
pub async fn create_topics(brokers: &str, topics: &[String], partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create()?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    for chunk in new.chunks(100) {
        let results = admin
            .create_topics(
                chunk,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await?;
        for r in results {
            r.map_err(|(topic, e)| anyhow::anyhow!("creating topic {topic}: {e}"))?;
        }
    }
    Ok(())
}

/// Records (key, value) to produce to a topic.
pub type Batch = (String, Vec<(String, Vec<u8>)>);

/// Produces records to several topics on `brokers` with one producer; the records of a topic get distinct
/// timestamps (now, now + 1 ms, ...).
pub async fn produce_to(brokers: &str, batches: &[Batch]) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "20")
        .create()?;
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let sends = batches.iter().flat_map(|(topic, records)| {
        let producer = &producer;
        records.iter().enumerate().map(move |(i, (key, value))| {
            producer.send(
                FutureRecord::to(topic)
                    .timestamp(base + i as i64)
                    .key(key.as_bytes())
                    .payload(value.as_slice()),
                Duration::from_secs(60),
            )
        })
    });
    for r in futures::future::join_all(sends).await {
        r.map_err(|(e, _)| e)?;
    }
    Ok(())
}
