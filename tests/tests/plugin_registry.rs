//! The plugin registry crate against a real CNCF distribution registry: artifacts pushed by the ORAS SDK and
//! by `millrace plugin push`, verification, tampering, offline start, authentication, tag moves, single
//! flight. Tests that stop a registry or tamper with it run their own (`PrivateRegistry`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use millrace_plugin_registry::{
    Credentials, PluginRef, PluginStore, PullPolicy, RegistryConfig, RegistryError, RegistryMetrics, Source,
};
use millrace_runtime::{EngineConfig, Limits, Output, Record, Runtime, Verdict};
use millrace_tests::{PrivateRegistry, addr, dist, oras_push, push_plugin, unique, venv_python};

fn runtime() -> Runtime {
    Runtime::new(EngineConfig {
        max_instances: 8,
        ..EngineConfig::default()
    })
    .unwrap()
}

struct Fixture {
    store: PluginStore,
    metrics: RegistryMetrics,
    prom: prometheus::Registry,
    _cache: tempfile::TempDir,
}

fn store_with(
    registry: &str,
    cache: Option<&std::path::Path>,
    tweak: impl FnOnce(&mut RegistryConfig),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    // The cache is created by the store (private); a temp dir itself is open to others.
    let mut config = RegistryConfig::new(cache.unwrap_or(dir.path()).join("cache"));
    config.insecure_registries = vec![registry.to_string()];
    config.timeout = Duration::from_secs(5);
    tweak(&mut config);
    let prom = prometheus::Registry::new();
    let metrics = RegistryMetrics::new(&prom).unwrap();
    let store = PluginStore::new(config, runtime(), metrics.clone()).unwrap();
    Fixture {
        store,
        metrics,
        prom,
        _cache: dir,
    }
}

fn counter(f: &Fixture, name: &str, label: &str) -> u64 {
    f.prom
        .gather()
        .iter()
        .filter(|m| m.name() == name)
        .flat_map(|m| m.get_metric().to_vec())
        .filter(|m| m.get_label().iter().any(|l| l.value() == label))
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

/// Runs one metric record through a seed-router plugin and returns its line.
fn route_metric(plugin: &millrace_runtime::Plugin) -> String {
    let mut inst = plugin.instance(Limits::default()).unwrap();
    let p = inst.process(&Record {
        topic: "t",
        value: Some(br#"{"type":"metric","source":"s1","unit":"C","value":1.5}"#),
        ..Default::default()
    });
    match p.result {
        Ok(Verdict::Accepted(o)) => match &o[0] {
            Output::Point(p) => p.line().to_string(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn dir_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn oras_pushed_artifacts_with_wasm_types_and_oras_defaults_pull_verify_and_run() -> Result<()> {
    let registry = addr("registry");
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{}")?;
    let repo = unique("it/oras");
    let wasm_typed = oras_push(
        &format!("{registry}/{repo}:typed"),
        &dist("seed_router"),
        Some("application/wasm"),
        Some((&config, "application/vnd.wasm.config.v0+json")),
    )?;
    let defaults = oras_push(
        &format!("{registry}/{repo}:defaults"),
        &dist("seed_router"),
        None,
        None,
    )?;
    assert_ne!(wasm_typed, defaults, "different manifests, same module");

    let f = store_with(&registry, None, |_| {});
    for reference in [
        format!("{registry}/{repo}:typed"),
        format!("{registry}/{repo}@{defaults}"),
    ] {
        let loaded = f.store.load(&PluginRef::parse(&reference)?).await?;
        assert_eq!(
            loaded.module_digest,
            millrace_plugin_registry::sha256(&std::fs::read(dist("seed_router"))?)
        );
        assert_eq!(
            route_metric(&loaded.plugin),
            "env_metrics,source=s1,unit=C value=1.5"
        );
    }
    // The second manifest shares the module: fetched from the cache, compiled once.
    assert_eq!(counter(&f, "millrace_plugin_compilations_total", "ok"), 1);
    assert_eq!(counter(&f, "millrace_plugin_pulls_total", "ok"), 2);
    assert!(f.metrics.pull_bytes.get() > 100_000, "one module's bytes pulled");
    Ok(())
}

#[tokio::test]
async fn other_artifacts_are_refused_naming_what_was_found() -> Result<()> {
    let registry = addr("registry");
    let dir = tempfile::tempdir()?;
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a plugin")?;
    let repo = unique("it/notes");
    oras_push(&format!("{registry}/{repo}:v1"), &notes, Some("text/plain"), None)?;
    let f = store_with(&registry, None, |_| {});
    let err = f
        .store
        .load(&PluginRef::parse(&format!("{registry}/{repo}:v1"))?)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unsupported_artifact", "{err}");
    assert!(err.to_string().contains("text/plain"), "{err}");

    let err = f
        .store
        .load(&PluginRef::parse(&format!("{registry}/{repo}:missing"))?)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
    Ok(())
}

#[tokio::test]
async fn millrace_push_is_read_by_oras_and_skopeo() -> Result<()> {
    let registry = addr("registry");
    let repo = unique("it/pushed");
    let reference = PluginRef::parse(&format!("{registry}/{repo}:v1"))?;
    let wasm = std::fs::read(dist("acme_iot"))?;
    let f = store_with(&registry, None, |_| {});
    let digest = f.store.push(&wasm, "acme_iot.wasm", &reference).await?;

    let raw = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{registry}/{repo}:v1"),
        ])
        .output()?;
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(
        millrace_plugin_registry::sha256(&raw.stdout),
        digest,
        "skopeo sees the digest we printed"
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout)?;
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"],
        "acme_iot.wasm"
    );

    let out = tempfile::tempdir()?;
    let script = format!(
        "import oras.client\nc = oras.client.OrasClient(hostname='{registry}', insecure=True)\n\
         print(c.pull(target='{registry}/{repo}:v1', outdir='{}'))",
        out.path().display()
    );
    let pulled = std::process::Command::new(venv_python())
        .args(["-c", &script])
        .output()?;
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    assert_eq!(
        std::fs::read(out.path().join("acme_iot.wasm"))?,
        wasm,
        "ORAS pulls the same bytes"
    );

    // A module that is not a plugin never reaches the registry.
    let err = f
        .store
        .push(b"\0asm\x01\0\0\0", "empty.wasm", &reference)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "plugin");
    Ok(())
}

#[tokio::test]
async fn a_tampered_blob_is_refused_and_nothing_is_cached() -> Result<()> {
    let reg = PrivateRegistry::start(None)?;
    let repo = "it/tamper";
    let digest = push_plugin(&format!("{}/{repo}:v1", reg.addr), "seed_router")?;
    let module = std::fs::read(dist("seed_router"))?;
    let blob = reg.blob_file(&millrace_plugin_registry::sha256(&module));
    let mut tampered = std::fs::read(&blob)?;
    assert_eq!(tampered, module, "the registry stores the module as is");
    let n = tampered.len();
    tampered[n - 1] ^= 0xff;
    std::fs::write(&blob, &tampered)?;

    let cache = tempfile::tempdir()?;
    let f = store_with(&reg.addr, Some(cache.path()), |_| {});
    let err = f
        .store
        .load(&PluginRef::parse(&format!("{}/{repo}@{digest}", reg.addr))?)
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert_eq!(
        counter(&f, "millrace_plugin_verification_failures_total", "module"),
        1
    );
    let blobs: Vec<_> = dir_files(&cache.path().join("cache/blobs")).into_iter().collect();
    assert!(
        blobs.is_empty(),
        "nothing stored after a failed verification: {blobs:?}"
    );
    assert!(dir_files(&cache.path().join("cache/compiled")).is_empty());
    Ok(())
}

#[tokio::test]
async fn cached_plugins_load_offline_and_pulls_resume_when_the_registry_is_back() -> Result<()> {
    let mut reg = PrivateRegistry::start(None)?;
    let repo = "it/offline";
    let pinned_digest = push_plugin(&format!("{}/{repo}:v1", reg.addr), "seed_router")?;
    let pinned = PluginRef::parse(&format!("{}/{repo}@{pinned_digest}", reg.addr))?;
    let tagged = PluginRef::parse(&format!("{}/{repo}:v1", reg.addr))?;
    let cache = tempfile::tempdir()?;
    // Processes that share a cache share the key of its compiled artifacts (registry.compiled_key).
    let key = || millrace_plugin_registry::CompiledKey::from_secret(b"the fleet's cache key").unwrap();
    {
        let f = store_with(&reg.addr, Some(cache.path()), |c| {
            c.pull_policy = PullPolicy::IfNotPresent;
            c.compiled_key = Some(key());
        });
        assert_eq!(f.store.load(&pinned).await?.source, Source::Registry);
        f.store.load(&tagged).await?;
    }
    reg.stop();

    // A new process with the same cache: everything cached loads without the registry.
    let f = store_with(&reg.addr, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::IfNotPresent;
        c.compiled_key = Some(key());
    });
    let loaded = f.store.load(&pinned).await?;
    assert_eq!(loaded.source, Source::Cache);
    assert_eq!(
        route_metric(&loaded.plugin),
        "env_metrics,source=s1,unit=C value=1.5"
    );
    assert_eq!(
        counter(&f, "millrace_plugin_cache_hits_total", "compiled"),
        1,
        "no recompilation"
    );
    assert_eq!(f.store.load(&tagged).await?.manifest_digest, pinned_digest);
    // Under Always the tag cannot be resolved, but its last known resolution still serves.
    let always = store_with(&reg.addr, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::Always
    });
    let resolved = always.store.resolve(&tagged).await?;
    assert!(resolved.stale);
    assert_eq!(resolved.manifest_digest, pinned_digest);

    let other = format!("{}/{repo}:v2", reg.addr);
    let err = f.store.load(&PluginRef::parse(&other)?).await.unwrap_err();
    assert_eq!(err.kind(), "not_cached", "{err}");
    assert!(
        err.to_string()
            .contains("not in the plugin cache and the registry is unreachable"),
        "{err}"
    );

    reg.restart()?;
    let v2 = push_plugin(&other, "acme_iot")?;
    let loaded = f.store.load(&PluginRef::parse(&other)?).await?;
    assert_eq!((loaded.source, loaded.manifest_digest), (Source::Registry, v2));
    Ok(())
}

#[tokio::test]
async fn corrupt_cache_entries_are_discarded_and_fetched_again() -> Result<()> {
    let registry = addr("registry");
    let tag = format!("{registry}/{}:v1", unique("it/corrupt"));
    let digest = push_plugin(&tag, "seed_router")?;
    let reference = PluginRef::parse(&format!("{tag}@{digest}"))?;
    let cache = tempfile::tempdir()?;
    store_with(&registry, Some(cache.path()), |_| {})
        .store
        .load(&reference)
        .await?;
    // Flip a byte in every cached file: module, manifest and compiled artifact.
    for file in dir_files(&cache.path().join("cache/blobs"))
        .into_iter()
        .chain(dir_files(&cache.path().join("cache/compiled")))
    {
        let mut b = std::fs::read(&file)?;
        b[0] ^= 0x55;
        std::fs::write(&file, b)?;
    }
    let f = store_with(&registry, Some(cache.path()), |_| {});
    let loaded = f.store.load(&reference).await?;
    assert_eq!(loaded.source, Source::Registry, "fetched again");
    assert_eq!(
        route_metric(&loaded.plugin),
        "env_metrics,source=s1,unit=C value=1.5"
    );
    assert!(counter(&f, "millrace_plugin_verification_failures_total", "cache") >= 1);
    // And the cache is whole again.
    let again = store_with(&registry, Some(cache.path()), |_| {});
    assert_eq!(again.store.load(&reference).await?.source, Source::Cache);
    Ok(())
}

#[tokio::test]
async fn registries_with_authentication_need_the_right_credentials() -> Result<()> {
    let reg = PrivateRegistry::start(Some(("alice", "wonderland")))?;
    let reference = PluginRef::parse(&format!("{}/it/auth:v1", reg.addr))?;
    let wasm = std::fs::read(dist("seed_router"))?;

    let anonymous = store_with(&reg.addr, None, |_| {});
    assert_eq!(
        anonymous
            .store
            .push(&wasm, "r.wasm", &reference)
            .await
            .unwrap_err()
            .kind(),
        "unauthorized"
    );
    let basic = |password: &str| {
        let password = password.to_string();
        store_with(&reg.addr, None, move |c| {
            c.credentials = Credentials::Basic {
                username: "alice".into(),
                password,
            }
        })
    };
    let wrong = basic("rabbit-hole");
    let err = wrong.store.push(&wasm, "r.wasm", &reference).await.unwrap_err();
    assert_eq!(err.kind(), "unauthorized", "{err}");
    basic("wonderland")
        .store
        .push(&wasm, "r.wasm", &reference)
        .await?;

    let err = anonymous.store.load(&reference).await.unwrap_err();
    assert_eq!(err.kind(), "unauthorized", "{err}");
    assert_eq!(
        wrong.store.load(&reference).await.unwrap_err().kind(),
        "unauthorized"
    );

    // The form Kubernetes mounts for imagePullSecrets.
    use base64::Engine as _;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.json");
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )?;
    let docker = store_with(&reg.addr, None, |c| {
        c.credentials = Credentials::DockerConfig { path: config }
    });
    let loaded = docker.store.load(&reference).await?;
    assert_eq!(
        route_metric(&loaded.plugin),
        "env_metrics,source=s1,unit=C value=1.5"
    );
    Ok(())
}

#[tokio::test]
async fn a_moved_tag_is_picked_up_under_always_and_interval_not_if_not_present() -> Result<()> {
    let registry = addr("registry");
    let tag = format!("{registry}/{}:stable", unique("it/moving"));
    let reference = PluginRef::parse(&tag)?;
    let v1 = push_plugin(&tag, "seed_router")?;
    let cache = tempfile::tempdir()?;
    let if_not_present = store_with(&registry, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::IfNotPresent
    });
    assert_eq!(if_not_present.store.load(&reference).await?.manifest_digest, v1);

    let v2 = push_plugin(&tag, "acme_iot")?;
    assert_ne!(v1, v2);
    assert_eq!(
        if_not_present.store.load(&reference).await?.manifest_digest,
        v1,
        "IfNotPresent keeps v1"
    );

    let interval = store_with(&registry, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::Interval(Duration::from_secs(3600))
    });
    assert_eq!(
        interval.store.resolve(&reference).await?.manifest_digest,
        v1,
        "resolved less than 1 h ago"
    );
    let short = store_with(&registry, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::Interval(Duration::from_millis(1))
    });
    // The 1 ms interval elapsing is the point here: time passes, there is nothing else to wait for.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let loaded = short.store.load(&reference).await?;
    assert_eq!(loaded.manifest_digest, v2, "interval elapsed: re-resolved");
    assert_eq!(
        loaded.plugin.digest(),
        millrace_plugin_registry::sha256(&std::fs::read(dist("acme_iot"))?)
    );
    let always = store_with(&registry, None, |c| c.pull_policy = PullPolicy::Always);
    assert_eq!(always.store.load(&reference).await?.manifest_digest, v2);
    Ok(())
}

#[tokio::test]
async fn concurrent_loads_of_one_plugin_fetch_and_compile_once() -> Result<()> {
    let registry = addr("registry");
    let tag = format!("{registry}/{}:v1", unique("it/flight"));
    push_plugin(&tag, "acme_iot")?;
    let f = store_with(&registry, None, |_| {});
    let reference = PluginRef::parse(&tag)?;
    let loads = (0..8).map(|_| {
        let store = f.store.clone();
        let reference = reference.clone();
        tokio::spawn(async move { store.load(&reference).await })
    });
    let results = futures::future::join_all(loads).await;
    let digests: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|r| r.unwrap().unwrap().module_digest)
        .collect();
    assert_eq!(digests.len(), 1);
    assert_eq!(counter(&f, "millrace_plugin_pulls_total", "ok"), 1);
    assert_eq!(counter(&f, "millrace_plugin_compilations_total", "ok"), 1);
    assert_eq!(counter(&f, "millrace_plugin_cache_hits_total", "memory"), 7);
    Ok(())
}

#[tokio::test]
async fn modules_over_the_size_cap_are_refused_before_download() -> Result<()> {
    let registry = addr("registry");
    let tag = format!("{registry}/{}:v1", unique("it/big"));
    push_plugin(&tag, "acme_iot")?;
    let f = store_with(&registry, None, |c| c.max_module_bytes = 64 * 1024);
    let err = f.store.load(&PluginRef::parse(&tag)?).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit: 65536, .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_registry_signed_by_a_private_ca_is_trusted_through_ca_file_only() -> Result<()> {
    let ca = millrace_tests::tls::TestCa::new()?;
    let reg = PrivateRegistry::start_tls(&ca.cert, &ca.key)?;
    let wasm = std::fs::read(dist("seed_router"))?;
    let tagged = PluginRef::parse(&format!("{}/it/tls:v1", reg.addr))?;
    let over_tls = |ca_file: Option<std::path::PathBuf>| {
        store_with(&reg.addr, None, move |c| {
            c.insecure_registries.clear(); // TLS, as for every registry not declared insecure
            c.ca_file = ca_file;
        })
    };

    // Without the CA the certificate is not trusted: nothing is pushed or pulled.
    let untrusted = over_tls(None);
    let err = untrusted
        .store
        .push(&wasm, "router.wasm", &tagged)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = untrusted.store.load(&tagged).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // With it: push, then a verified pull and load.
    let trusted = over_tls(Some(ca.ca.clone()));
    let digest = trusted.store.push(&wasm, "router.wasm", &tagged).await?;
    let loaded = trusted.store.load(&tagged).await?;
    assert_eq!(loaded.manifest_digest, digest);
    assert_eq!(loaded.source, Source::Registry);
    assert_eq!(
        route_metric(&loaded.plugin),
        "env_metrics,source=s1,unit=C value=1.5"
    );

    // A file without a certificate is refused when the store is made, with a typed error.
    let config = {
        let mut c = RegistryConfig::new(tempfile::tempdir()?.path());
        c.ca_file = Some(ca.garbage_file()?);
        c
    };
    let err = PluginStore::new(config, runtime(), RegistryMetrics::unregistered()).unwrap_err();
    assert_eq!(err.kind(), "invalid_ca", "{err}");
    assert!(!err.is_retriable());
    Ok(())
}

// ---- Supply chain (issue 14): a registry is untrusted input; caches and credentials are attack surface ----

/// Serves `router` on a free loopback port; returns `127.0.0.1:port`.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A body that never ends, `chunk` bytes every `every`.
fn endless(chunk: usize, every: Duration) -> axum::body::Body {
    let bytes = axum::body::Bytes::from(vec![b' '; chunk]);
    axum::body::Body::from_stream(futures::stream::unfold(bytes, move |b| async move {
        if !every.is_zero() {
            tokio::time::sleep(every).await;
        }
        Some((Ok::<_, std::io::Error>(b.clone()), b))
    }))
}

#[tokio::test]
async fn endless_and_trickling_registry_answers_end_in_typed_errors() -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    // A misbehaving registry: a manifest without end, one that trickles a byte at a time, an error page
    // without end, and a token service whose answer never ends.
    let token_realm =
        serve(axum::Router::new().route("/token", get(|| async { endless(8192, Duration::ZERO) }))).await;
    let realm = format!("Bearer realm=\"http://{token_realm}/token\",service=\"x\"");
    let router =
        axum::Router::new()
            .route(
                "/v2/endless/manifests/v1",
                get(|| async { endless(8192, Duration::ZERO) }),
            )
            .route(
                "/v2/trickle/manifests/v1",
                get(|| async { endless(1, Duration::from_millis(50)) }),
            )
            .route(
                "/v2/error/manifests/v1",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, endless(8192, Duration::ZERO)) }),
            )
            .route(
                "/v2/token/manifests/v1",
                get(move || {
                    let realm = realm.clone();
                    async move {
                        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, realm)], "").into_response()
                    }
                }),
            );
    let registry = serve(router).await;
    let f = store_with(&registry, None, |c| {
        c.max_manifest_bytes = 256 << 10;
        c.timeout = Duration::from_secs(2);
    });
    let resolve = |repo: &str| PluginRef::parse(&format!("{registry}/{repo}:v1")).unwrap();

    let started = std::time::Instant::now();
    let err = f.store.resolve(&resolve("endless")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit, size, .. } if limit == 256 << 10 && size <= (256 << 10) + 65536),
        "{err}"
    );
    let err = f.store.resolve(&resolve("trickle")).await.unwrap_err();
    assert_eq!(err.kind(), "not_cached", "{err}");
    assert!(err.to_string().contains("not complete within 2s"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline covers the whole transfer"
    );
    let err = f.store.resolve(&resolve("error")).await.unwrap_err();
    assert_eq!(
        err.kind(),
        "protocol",
        "an endless error body is cut, the status kept: {err}"
    );
    let err = f.store.resolve(&resolve("token")).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::TooLarge { limit: 65536, .. }),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn credentials_never_reach_a_token_service_on_another_host() -> Result<()> {
    use axum::http::{HeaderMap, StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use std::sync::{Arc, Mutex};
    // A token service that records what it was sent; `strict` refuses anonymous requests.
    let seen: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
    let strict = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let token_service = {
        let (seen, strict) = (seen.clone(), strict.clone());
        serve(axum::Router::new().route(
            "/token",
            get(move |headers: HeaderMap| {
                let (seen, strict) = (seen.clone(), strict.clone());
                async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_string());
                    seen.lock().unwrap().push(auth.clone());
                    if strict.load(std::sync::atomic::Ordering::SeqCst) && auth.is_none() {
                        return (StatusCode::UNAUTHORIZED, "credentials needed").into_response();
                    }
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"token":"granted"}"#,
                    )
                        .into_response()
                }
            }),
        ))
        .await
    };
    // The realm is named by another host name (`localhost`) than the registry's (`127.0.0.1`).
    let port = token_service.rsplit(':').next().unwrap().to_string();
    let realm = format!("Bearer realm=\"http://localhost:{port}/token\",service=\"reg\"");
    let digest = format!("sha256:{}", "a".repeat(64));
    let registry = {
        let digest = digest.clone();
        serve(axum::Router::new().fallback(move |headers: HeaderMap| {
            let (realm, digest) = (realm.clone(), digest.clone());
            async move {
                if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some("Bearer granted")
                {
                    (StatusCode::OK, [("docker-content-digest", digest)], "").into_response()
                } else {
                    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, realm)], "").into_response()
                }
            }
        }))
        .await
    };
    let reference = PluginRef::parse(&format!("{registry}/team/plugin:v1"))?;
    let with_credentials = |realms: Vec<String>| {
        store_with(&registry, None, move |c| {
            c.credentials = Credentials::Basic {
                username: "alice".into(),
                password: "wonderland".into(),
            };
            c.token_realms = realms;
        })
    };

    // Not trusted: an anonymous token is asked for, and the credentials stay home.
    let untrusted = with_credentials(vec![]);
    assert_eq!(untrusted.store.resolve(&reference).await?.manifest_digest, digest);
    assert_eq!(seen.lock().unwrap().as_slice(), &[None]);
    // A push would hand the credentials to oci-client's token flow: refused before it starts.
    let wasm = std::fs::read(dist("seed_router"))?;
    let err = untrusted
        .store
        .push(&wasm, "p.wasm", &reference)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("registry.token_realms"), "{err}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "nothing sent to the token service by the refused push"
    );

    // A token service that wants credentials: the refusal names the option that would trust it.
    strict.store(true, std::sync::atomic::Ordering::SeqCst);
    let err = with_credentials(vec![])
        .store
        .resolve(&reference)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "unauthorized", "{err}");
    assert!(err.to_string().contains("registry.token_realms"), "{err}");
    assert!(
        seen.lock().unwrap().iter().all(Option::is_none),
        "{:?}",
        seen.lock().unwrap()
    );

    // Trusted by configuration: now it gets them.
    let trusted = with_credentials(vec![format!("localhost:{port}")]);
    assert_eq!(trusted.store.resolve(&reference).await?.manifest_digest, digest);
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:wonderland")
    );
    assert_eq!(
        seen.lock().unwrap().last().unwrap().as_deref(),
        Some(basic.as_str())
    );
    Ok(())
}

#[tokio::test]
async fn a_digest_is_served_only_to_the_repository_it_was_pulled_from() -> Result<()> {
    let mut reg = PrivateRegistry::start(None)?;
    // Client B's private plugin; client A has a repository of its own with another plugin.
    let private = format!("{}/clients/b/router", reg.addr);
    let digest_b = push_plugin(&format!("{private}:v1"), "seed_router")?;
    push_plugin(&format!("{}/clients/a/plugin:v1", reg.addr), "acme_iot")?;
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().to_path_buf();
    let f = store_with(&reg.addr, Some(&cache_dir), |_| {});
    let own = f
        .store
        .load(&PluginRef::parse(&format!("{private}@{digest_b}"))?)
        .await?;

    // A names B's digest under its own repository: neither the loaded plugin nor the disk cache serves it.
    let stolen = PluginRef::parse(&format!("{}/clients/a/plugin@{digest_b}", reg.addr))?;
    let err = f.store.load(&stolen).await.unwrap_err();
    assert_eq!(err.kind(), "not_found", "{err}");
    let fresh = store_with(&reg.addr, Some(&cache_dir), |_| {});
    assert_eq!(fresh.store.load(&stolen).await.unwrap_err().kind(), "not_found");
    // Offline, the cache cannot ask the registry: still refused, B's own reference still loads.
    reg.stop();
    let offline = store_with(&reg.addr, Some(&cache_dir), |_| {});
    let err = offline.store.load(&stolen).await.unwrap_err();
    assert_eq!(err.kind(), "not_cached", "{err}");
    let again = offline
        .store
        .load(&PluginRef::parse(&format!("{private}@{digest_b}"))?)
        .await?;
    assert_eq!(again.source, Source::Cache);
    assert_eq!(route_metric(&again.plugin), route_metric(&own.plugin));
    Ok(())
}

#[tokio::test]
async fn a_tampered_compiled_artifact_never_executes() -> Result<()> {
    let registry = addr("registry");
    let repo = unique("it/compiled");
    let router = push_plugin(&format!("{registry}/{repo}:router"), "seed_router")?;
    let other = push_plugin(&format!("{registry}/{repo}:other"), "acme_iot")?;
    let cache = tempfile::tempdir()?;
    let cache_dir = cache.path().to_path_buf();
    let key = || millrace_plugin_registry::CompiledKey::from_secret(b"a secret of the worker fleet").unwrap();
    let shared = |k: Option<millrace_plugin_registry::CompiledKey>| {
        store_with(&registry, Some(&cache_dir), move |c| c.compiled_key = k)
    };
    let first = shared(Some(key()));
    let reference = PluginRef::parse(&format!("{registry}/{repo}@{router}"))?;
    let expected = route_metric(&first.store.load(&reference).await?.plugin);
    first
        .store
        .load(&PluginRef::parse(&format!("{registry}/{repo}@{other}"))?)
        .await?;
    drop(first);
    // With the key, a later worker loads the artifact without compiling.
    let warm = shared(Some(key()));
    assert_eq!(route_metric(&warm.store.load(&reference).await?.plugin), expected);
    assert_eq!(counter(&warm, "millrace_plugin_compilations_total", "ok"), 0);
    drop(warm);

    // Whoever can write the cache swaps in the other module's artifact (valid native code) and its MAC file.
    let module = |name: &str| millrace_plugin_registry::sha256(&std::fs::read(dist(name)).unwrap());
    let artifact = |name: &str| {
        let hex = module(name).trim_start_matches("sha256:").to_string();
        dir_files(&cache_dir.join("cache/compiled"))
            .into_iter()
            .find(|p| p.file_name().unwrap().to_str() == Some(hex.as_str()))
            .unwrap()
    };
    let (target, planted) = (artifact("seed_router"), artifact("acme_iot"));
    std::fs::copy(&planted, &target)?;
    std::fs::copy(planted.with_extension("mac"), target.with_extension("mac"))?;
    let after = shared(Some(key()));
    let loaded = after.store.load(&reference).await?;
    assert_eq!(
        route_metric(&loaded.plugin),
        expected,
        "the planted code did not run"
    );
    assert_eq!(counter(&after, "millrace_plugin_compilations_total", "ok"), 1);
    assert_eq!(
        counter(&after, "millrace_plugin_verification_failures_total", "cache"),
        1
    );
    // Without a configured key each process has its own: nothing compiled by another process loads.
    let own_key = shared(None);
    own_key.store.load(&reference).await?;
    assert_eq!(counter(&own_key, "millrace_plugin_compilations_total", "ok"), 1);
    Ok(())
}

#[tokio::test]
async fn the_trust_policy_accepts_cosign_signatures_by_trusted_keys_only() -> Result<()> {
    use millrace_plugin_registry::signature::{TrustPolicy, TrustRule, TrustedKey};
    use millrace_tests::{cosign_keygen, cosign_sign};
    let mut reg = PrivateRegistry::start(None)?;
    let keys = tempfile::tempdir()?;
    let (trusted_key, trusted_pub) = cosign_keygen(&keys.path().join("trusted"))?;
    let (other_key, _) = cosign_keygen(&keys.path().join("other"))?;
    let signed = push_plugin(&format!("{}/team/signed:v1", reg.addr), "seed_router")?;
    let unsigned = push_plugin(&format!("{}/team/unsigned:v1", reg.addr), "seed_router")?;
    let wrong = push_plugin(&format!("{}/team/wrong:v1", reg.addr), "seed_router")?;
    let copied = push_plugin(&format!("{}/team/copied:v1", reg.addr), "acme_iot")?;
    let exempt = push_plugin(&format!("{}/team/lab/x:v1", reg.addr), "seed_router")?;
    // Signatures made by an independent implementation of the cosign format.
    cosign_sign(&reg.addr, "team/signed", &signed, &trusted_key)?;
    cosign_sign(&reg.addr, "team/wrong", &wrong, &other_key)?;
    // A good signature of one plugin copied to another's signature tag: it names the wrong digest.
    cosign_sign(&reg.addr, "team/copied", &signed, &trusted_key)?;
    let tag = |d: &str| format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    let copy = std::process::Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{}/team/copied:{}", reg.addr, tag(&signed)))
        .arg(format!("docker://{}/team/copied:{}", reg.addr, tag(&copied)))
        .output()?;
    assert!(copy.status.success(), "{}", String::from_utf8_lossy(&copy.stderr));

    let key = TrustedKey::from_file(&trusted_pub)?;
    let policy = TrustPolicy {
        rules: vec![
            TrustRule {
                prefix: format!("{}/team", reg.addr),
                require_signature: true,
                keys: vec![key],
            },
            TrustRule {
                prefix: format!("{}/team/lab", reg.addr),
                require_signature: false,
                keys: vec![],
            },
        ],
    };
    let cache = tempfile::tempdir()?;
    let f = store_with(&reg.addr, Some(cache.path()), |c| c.trust = policy.clone());
    let addr = reg.addr.clone();
    let load = |repo: &str, d: &str| PluginRef::parse(&format!("{addr}/{repo}@{d}")).unwrap();

    let loaded = f.store.load(&load("team/signed", &signed)).await?;
    assert_eq!(
        route_metric(&loaded.plugin),
        "env_metrics,source=s1,unit=C value=1.5"
    );
    f.store.load(&load("team/lab/x", &exempt)).await?;
    for (repo, digest, kind) in [
        ("team/unsigned", &unsigned, "unsigned"),
        ("team/wrong", &wrong, "bad_signature"),
        ("team/copied", &copied, "bad_signature"),
    ] {
        let err = f.store.load(&load(repo, digest)).await.unwrap_err();
        assert_eq!(err.kind(), kind, "{repo}: {err}");
        assert!(err.is_retriable(), "a signature can still be pushed or replaced");
    }
    assert_eq!(
        counter(&f, "millrace_plugin_verification_failures_total", "unsigned"),
        1
    );
    assert_eq!(
        counter(&f, "millrace_plugin_verification_failures_total", "bad_signature"),
        2
    );
    let copied_err = f.store.load(&load("team/copied", &copied)).await.unwrap_err();
    assert!(
        copied_err.to_string().contains(&signed),
        "names the digest it signed: {copied_err}"
    );

    // Offline, a new process verifies the kept signature again, with its own keys.
    reg.stop();
    let offline = store_with(&reg.addr, Some(cache.path()), |c| c.trust = policy.clone());
    offline.store.load(&load("team/signed", &signed)).await?;
    let mut stricter = policy.clone();
    let (_, unrelated_pub) = cosign_keygen(&keys.path().join("unrelated"))?;
    stricter.rules[0].keys = vec![TrustedKey::from_file(&unrelated_pub)?];
    let rotated = store_with(&reg.addr, Some(cache.path()), |c| c.trust = stricter);
    let err = rotated
        .store
        .load(&load("team/signed", &signed))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_signature", "{err}");
    Ok(())
}
