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
    let mut config = RegistryConfig::new(cache.unwrap_or(dir.path()));
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
    let blobs: Vec<_> = dir_files(&cache.path().join("blobs")).into_iter().collect();
    assert!(
        blobs.is_empty(),
        "nothing stored after a failed verification: {blobs:?}"
    );
    assert!(dir_files(&cache.path().join("compiled")).is_empty());
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
    {
        let f = store_with(&reg.addr, Some(cache.path()), |c| {
            c.pull_policy = PullPolicy::IfNotPresent
        });
        assert_eq!(f.store.load(&pinned).await?.source, Source::Registry);
        f.store.load(&tagged).await?;
    }
    reg.stop();

    // A new process with the same cache: everything cached loads without the registry.
    let f = store_with(&reg.addr, Some(cache.path()), |c| {
        c.pull_policy = PullPolicy::IfNotPresent
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
    for file in dir_files(&cache.path().join("blobs"))
        .into_iter()
        .chain(dir_files(&cache.path().join("compiled")))
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
