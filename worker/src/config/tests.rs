//! The configuration's tests: defaults, strictness, keys named in errors, secrets, cross-section rules.

use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
    [kafka]
    brokers = "127.0.0.1:19092"
    [[bindings]]
    topic = "client-acme"
    plugin = "127.0.0.1:15000/acme/router:v1"
    allowed_measurements = ["env_"]
    [sinks.influxdb]
    url = "http://127.0.0.1:18086/"
    database = "metrics"
"#;

fn key_of(err: &ConfigError) -> &str {
    &err.key
}

#[test]
fn minimal_config_gets_defaults() {
    let c = WorkerConfig::from_toml(MINIMAL).unwrap();
    assert_eq!(c.kafka.group_id, "millrace");
    assert_eq!(c.bindings[0].name, "client-acme");
    assert_eq!(c.influxdb.as_ref().unwrap().url, "http://127.0.0.1:18086");
    assert_eq!(c.batching.max_records, 5000);
    assert_eq!(c.dead_letter_topic, "millrace-dead-letter");
    assert!(c.bindings[0].allows_measurement("env_metrics"));
    assert!(!c.bindings[0].allows_measurement("cpu"));
    assert!(!c.bindings[0].allows_index("anything"));
}

#[test]
fn every_default_is_the_documented_one() {
    let text = format!(
        "{MINIMAL}\n[sinks.influxdb_v2]\nurl = \"http://vm:8428\"\norg = \"o\"\nbucket = \"b\"\n\
         [sinks.elasticsearch]\nurls = [\"http://es:9200\"]\n"
    );
    let c = WorkerConfig::from_toml(&text).unwrap();
    let k = &c.kafka;
    assert_eq!(
        (
            k.group_id.as_str(),
            k.session_timeout,
            k.auto_offset_reset.as_str()
        ),
        ("millrace", Duration::from_secs(10), "earliest")
    );
    assert_eq!(k.statistics_interval, Duration::from_secs(5));
    assert!(k.properties.is_empty() && k.secret_properties.is_empty());
    assert_eq!(c.reload_interval, Duration::from_secs(2));
    assert_eq!(c.bindings_file, None);
    let b = &c.batching;
    assert_eq!((b.max_records, b.max_bytes, b.concurrency), (5000, 5 << 20, 4));
    assert_eq!(
        (b.linger, b.retry_initial_backoff, b.retry_max_backoff),
        (
            Duration::from_millis(50),
            Duration::from_millis(100),
            Duration::from_secs(30)
        )
    );
    assert_eq!(c.dead_letter_topic, "millrace-dead-letter");
    assert_eq!(c.metrics_address, "0.0.0.0:9187".parse().unwrap());
    let r = &c.registry;
    let fresh = millrace_plugin_registry::RegistryConfig::new("millrace-cache");
    assert_eq!(r.cache_dir, std::path::PathBuf::from("millrace-cache"));
    assert_eq!(r.cache_max_bytes, 1 << 30);
    assert_eq!(r.pull_policy, millrace_plugin_registry::PullPolicy::IfNotPresent);
    assert!(r.insecure_registries.is_empty() && r.ca_file.is_none());
    assert!(matches!(
        r.credentials,
        millrace_plugin_registry::Credentials::Anonymous
    ));
    assert_eq!(r.timeout, Duration::from_secs(30));
    assert_eq!(
        (r.max_module_bytes, r.max_manifest_bytes),
        (fresh.max_module_bytes, fresh.max_manifest_bytes)
    );
    let p = &c.pipeline;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!((p.lanes, p.max_in_flight_per_partition), (cores, 50_000));
    assert_eq!(
        (p.drain_timeout, p.max_instances),
        (Duration::from_secs(30), None)
    );
    let derived = (p.memory_budget / 4 / (2 << 20)).clamp(cores as u64 + 8, 1024) as u32;
    assert_eq!(p.instance_slots(), derived, "slots from the memory budget");
    let i = c.influxdb.as_ref().unwrap();
    assert!(i.gzip && i.timeout == Duration::from_secs(30) && i.password.is_none());
    assert!(i.retention_policy.is_none() && i.username.is_none() && i.ca_file.is_none());
    let v2 = c.influxdb_v2.as_ref().unwrap();
    assert!(v2.gzip && v2.timeout == Duration::from_secs(30) && v2.token.is_none());
    let es = c.elasticsearch.as_ref().unwrap();
    assert!(!es.gzip && es.timeout == Duration::from_secs(30) && matches!(es.auth, EsAuth::None));
    let binding = &c.bindings[0];
    assert_eq!(binding.limits, millrace_runtime::Limits::default());
    assert!(binding.allowed_indices.is_empty() && binding.smoke.is_empty());
}

#[test]
fn units_are_read_as_before() {
    let text = format!(
        "{MINIMAL}\n[batching]\nmax_bytes = 1048576\nlinger = \"1m 30s\"\n[registry]\ncache_max_bytes = \"512KiB\"\n\
         pull_policy = \"5m\"\n[pipeline]\ndrain_timeout = \"20s\"\nlanes = 0\n"
    )
    .replace("allowed_measurements", "limits = { memory = \"64MiB\", timeout = \"250ms\", max_output_bytes = 1024, recycle_memory = \"24MiB\", recycle_after_records = 5000 }\nallowed_measurements");
    let c = WorkerConfig::from_toml(&text).unwrap();
    assert_eq!(c.batching.max_bytes, 1 << 20);
    assert_eq!(c.batching.linger, Duration::from_secs(90));
    assert_eq!(c.registry.cache_max_bytes, 512 << 10);
    assert_eq!(
        c.registry.pull_policy,
        millrace_plugin_registry::PullPolicy::Interval(Duration::from_secs(300))
    );
    assert_eq!(c.pipeline.drain_timeout, Duration::from_secs(20));
    assert_eq!(c.pipeline.lanes, 1);
    let l = &c.bindings[0].limits;
    assert_eq!(
        (l.max_memory_bytes, l.timeout),
        (64 << 20, Duration::from_millis(250))
    );
    assert_eq!(l.max_output_bytes_per_record, 1024);
    assert_eq!(
        (l.recycle_memory_bytes, l.recycle_after_records),
        (24 << 20, 5000)
    );
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let err = WorkerConfig::from_toml(&MINIMAL.replace("[kafka]", "[kafka]\nbrokerz = 1")).unwrap_err();
    assert!(err.to_string().contains("brokerz"), "{err}");
    let err = WorkerConfig::from_toml(&format!("{MINIMAL}\n[batching]\nlinger = \"soon\"")).unwrap_err();
    assert!(err.to_string().contains("batching.linger"), "{err}");
    let bad = MINIMAL.replace("topic = \"client-acme\"", "topic = \"a\"\ntopic_regex = \"b\"");
    assert!(
        WorkerConfig::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("bindings[0].topic")
    );
}

#[test]
fn errors_name_the_full_key() {
    let cases = [
        (
            format!("{MINIMAL}\n[batching]\nlinger = \"soon\""),
            "batching.linger",
        ),
        (
            format!("{MINIMAL}\n[registry]\ncache_max_bytes = \"4 parsecs\""),
            "registry.cache_max_bytes",
        ),
        (
            format!("{MINIMAL}\n[registry]\npull_policy = \"sometimes\""),
            "registry.pull_policy",
        ),
        (
            format!("{MINIMAL}\n[metrics]\naddress = \"nowhere\""),
            "metrics.address",
        ),
        (
            format!("{MINIMAL}\n[kafka.tls]\nverify_hostname = \"maybe\""),
            "kafka.tls.verify_hostname",
        ),
        (
            MINIMAL.replace("brokers = \"127.0.0.1:19092\"", ""),
            "kafka.brokers",
        ),
        (
            MINIMAL.replace("http://127.0.0.1:18086/", "127.0.0.1:18086"),
            "sinks.influxdb.url",
        ),
        (
            format!("{MINIMAL}\n[sinks.elasticsearch]\nurls = [\"http://es:9200\", \"es:9200\"]"),
            "sinks.elasticsearch.urls[1]",
        ),
        (
            MINIMAL.replace(
                "allowed_measurements",
                "limits = { memory = \"lots\" }\nallowed_measurements",
            ),
            "bindings[0].limits.memory",
        ),
        (
            MINIMAL.replace(
                "allowed_measurements",
                "limits = { memroy = \"1MiB\" }\nallowed_measurements",
            ),
            "bindings[0].limits",
        ),
    ];
    for (text, key) in cases {
        let err = WorkerConfig::from_toml(&text).unwrap_err();
        assert_eq!(key_of(&err), key, "{err}");
    }
}

#[test]
fn bindings_files_name_keys_after_the_file() {
    let text = "[[bindings]]\ntopic = \"t\"\nplugin = \"127.0.0.1:15000/a/p:v1\"\nlimits = { timeout = \"never\" }\n";
    let err = parse_bindings(text, config::FileFormat::Toml, "b.toml").unwrap_err();
    assert_eq!(key_of(&err), "b.toml[0].limits.timeout", "{err}");
    let yaml = "bindings:\n  - topic: t\n    plugin: 127.0.0.1:15000/a/p:v1\n  - topic: u\n    plugin: '!'\n";
    let err = parse_bindings(yaml, config::FileFormat::Yaml, "b.yaml").unwrap_err();
    assert_eq!(key_of(&err), "b.yaml[1].plugin", "{err}");
}

#[test]
fn yaml_files_are_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("worker.yaml");
    std::fs::write(
        &path,
        "kafka:\n  brokers: k:9092\nbindings:\n  - topic: t\n    plugin: 127.0.0.1:15000/a/p:v1\n\
         sinks:\n  elasticsearch:\n    urls: [https://es:9200]\nbatching:\n  max_bytes: 1MiB\n",
    )
    .unwrap();
    let c = WorkerConfig::load(&path).unwrap();
    assert_eq!(c.kafka.brokers, "k:9092");
    assert_eq!(c.batching.max_bytes, 1 << 20);
    assert_eq!(c.elasticsearch.unwrap().urls, ["https://es:9200"]);
}

#[test]
fn secrets_come_from_files_and_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let text = format!(
        "{MINIMAL}\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_file = \"{}\"\n[kafka.client]\nfetch.min.bytes = 1\nsocket_keepalive_enable = true\n",
        pw.display()
    );
    // [kafka.sasl] after other tables is still the kafka section in TOML.
    let c = WorkerConfig::from_toml(&text).unwrap();
    assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
    assert_eq!(c.kafka.properties["security.protocol"], "SASL_PLAINTEXT");
    assert_eq!(c.kafka.properties["fetch.min.bytes"], "1");
    assert_eq!(c.kafka.properties["socket.keepalive.enable"], "true");
    let shown = c.redacted();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("<redacted>"));
}

/// Issue 14: every secret-bearing librdkafka property (keys, OAuth settings) and passwords written into URLs
/// are redacted in `config check`.
#[test]
fn secret_client_properties_and_url_passwords_are_redacted() {
    let text = format!(
        "{MINIMAL}\n[kafka.client]\n\"sasl.oauthbearer.config\" = \"principal=svc extension_secret=oauth-s3cret\"\n\
         \"ssl.key.pem\" = \"-----BEGIN PRIVATE KEY-----pem-s3cret\"\n\"sasl.oauthbearer.client.secret\" = \"client-s3cret\"\n\
         [sinks.elasticsearch]\nurls = [\"https://elastic:url-s3cret@es:9200\"]\n"
    );
    let c = WorkerConfig::from_toml(&text).unwrap();
    let shown = c.redacted();
    for secret in ["oauth-s3cret", "pem-s3cret", "client-s3cret", "url-s3cret"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(shown.contains("https://elastic:<redacted>@es:9200"), "{shown}");
    // A malformed URL with a password is quoted in the error without it.
    let bad = format!("{MINIMAL}\n[sinks.influxdb]\nurl = \"ftp://u:url-s3cret@influx\"\ndatabase = \"d\"\n");
    let err = WorkerConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(!err.contains("url-s3cret"), "{err}");
}

#[test]
fn registry_credentials_are_one_kind() {
    let with = |extra: &str| WorkerConfig::from_toml(&format!("{MINIMAL}\n[registry]\n{extra}"));
    let c = with("username = \"u\"\npassword = \"p\"").unwrap();
    assert!(matches!(
        c.registry.credentials,
        millrace_plugin_registry::Credentials::Basic { .. }
    ));
    let c = with("docker_config = \"/d.json\"").unwrap();
    assert!(matches!(
        c.registry.credentials,
        millrace_plugin_registry::Credentials::DockerConfig { .. }
    ));
    for bad in [
        "username = \"u\"",
        "username = \"u\"\npassword = \"p\"\ndocker_config = \"/d.json\"",
    ] {
        let err = with(bad).unwrap_err();
        assert_eq!(key_of(&err), "registry", "{err}");
        assert!(
            err.to_string()
                .contains("give username and password, or docker_config, or neither")
        );
    }
}

#[test]
fn the_dead_letter_topic_cannot_be_a_bound_topic() {
    let text = format!("{MINIMAL}\n[dead_letter]\ntopic = \"client-acme\"\n");
    let err = WorkerConfig::from_toml(&text).unwrap_err().to_string();
    assert!(
        err.contains("dead_letter.topic") && err.contains("forever"),
        "{err}"
    );
}

#[test]
fn regex_bindings_match_new_topics() {
    let c =
        WorkerConfig::from_toml(&MINIMAL.replace("topic = \"client-acme\"", "topic_regex = \"client-.*\""))
            .unwrap();
    // The librdkafka subscription is anchored at both ends (whole names); the binding keeps its name.
    assert_eq!(c.bindings[0].topics.subscription(), "^(client-.*)$");
    assert_eq!(c.bindings[0].name, "^client-.*");
    assert!(c.binding_for("client-zeta").is_some());
    assert!(c.binding_for("other").is_none());
}

#[test]
fn keys_of_list_elements_are_dotted() {
    assert_eq!(dotted("bindings[0]limits.memory"), "bindings[0].limits.memory");
    assert_eq!(dotted("a[1][2]b"), "a[1][2].b");
    assert_eq!(dotted("kafka.brokers"), "kafka.brokers");
}

#[test]
fn properties_the_guarantees_rest_on_cannot_be_overridden() {
    for (key, value) in [
        ("enable_auto_commit", "true"),
        ("enable.auto.offset.store", "true"),
        ("acks", "1"),
        ("enable.idempotence", "false"),
        ("group.id", "other"),
        ("auto.offset.reset", "latest"),
    ] {
        let text = MINIMAL.replace(
            "[[bindings]]",
            &format!("[kafka.client]\n\"{key}\" = \"{value}\"\n[[bindings]]"),
        );
        let err = WorkerConfig::from_toml(&text).unwrap_err();
        assert_eq!(
            key_of(&err),
            format!("kafka.client.{}", key.replace('_', ".")),
            "{err}"
        );
    }
    // Other properties pass through.
    let text = MINIMAL.replace(
        "[[bindings]]",
        "[kafka.client]\nfetch_min_bytes = 1024\n[[bindings]]",
    );
    let c = WorkerConfig::from_toml(&text).unwrap();
    assert_eq!(c.kafka.properties["fetch.min.bytes"], "1024");
}

#[test]
fn the_dead_letter_topic_must_be_a_kafka_topic_name() {
    for bad in ["has space", ".", "..", "ümlaut", &"x".repeat(250)] {
        let text = format!("{MINIMAL}\n[dead_letter]\ntopic = \"{bad}\"\n");
        let err = WorkerConfig::from_toml(&text).unwrap_err();
        assert_eq!(key_of(&err), "dead_letter.topic", "{bad}: {err}");
    }
    let text = format!("{MINIMAL}\n[dead_letter]\ntopic = \"acme.dead-letters_1\"\n");
    assert!(WorkerConfig::from_toml(&text).is_ok());
}

#[test]
fn starting_at_the_latest_offset_is_warned_about() {
    let c = WorkerConfig::from_toml(MINIMAL).unwrap();
    assert!(c.warnings().is_empty());
    let text = MINIMAL.replace(
        "brokers = \"127.0.0.1:19092\"",
        "brokers = \"127.0.0.1:19092\"\nauto_offset_reset = \"latest\"",
    );
    let w = WorkerConfig::from_toml(&text).unwrap().warnings();
    assert!(w.len() == 1 && w[0].contains("skipped"), "{w:?}");
}
