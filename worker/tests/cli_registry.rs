//! `millrace plugin push|pull|inspect <ref>` and `millrace bindings check` against the stack's real OCI registry
//! (`make stack-up`), and `bindings check` / `config check` refusing overlapping bindings (offline).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::{Command, Output};

fn registry() -> String {
    if let Ok(a) = std::env::var("MILLRACE_STACK_REGISTRY") {
        return a;
    }
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.stack/registry.addr");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|_| {
            panic!(
                "the stack's registry is not running ({}); run `make stack-up`",
                file.display()
            )
        })
        .trim()
        .to_string()
}

fn millrace(args: &[&str], cache: &std::path::Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_millrace"))
        .args(args)
        // The CLI creates the cache private; a temp dir itself is open to others, which it refuses.
        .env("MILLRACE_CACHE_DIR", cache.join("plugins"))
        .output()
        .expect("run millrace")
}

fn dist(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/dist/{name}.wasm"));
    assert!(p.exists(), "{} missing: run `make plugins`", p.display());
    p.to_string_lossy().into_owned()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[test]
fn push_then_pull_and_inspect_by_reference() {
    let cache = tempfile::tempdir().unwrap();
    let repo = format!(
        "cli/push-{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    let reference = format!("{}/{repo}:v1", registry());
    let out = millrace(
        &["plugin", "push", &dist("seed_compat"), &reference, "--insecure"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest = text(&out.stdout);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "piped output is the digest alone: {digest}"
    );
    assert!(
        text(&out.stderr).is_empty(),
        "quiet when not on a terminal: {}",
        text(&out.stderr)
    );

    let out = millrace(
        &["plugin", "pull", &reference, "--insecure", "--json"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["manifest_digest"], digest.as_str());
    assert_eq!(v["source"], "registry");
    // A second pull by digest is served by the cache.
    let pinned = format!("{}/{repo}@{digest}", registry());
    let out = millrace(&["plugin", "pull", &pinned, "--json"], cache.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["source"], "cache");

    let out = millrace(&["plugin", "inspect", &pinned], cache.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains(&format!("manifest  {digest}")), "{stdout}");
    assert!(stdout.contains("contract  seed contract"), "{stdout}");
}

#[test]
fn bad_references_and_missing_plugins_are_clear_errors() {
    let cache = tempfile::tempdir().unwrap();
    let out = millrace(&["plugin", "pull", "http://nope/x:v1"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid plugin reference"),
        "{}",
        text(&out.stderr)
    );
    let missing = format!("{}/cli/never-pushed:v1", registry());
    let out = millrace(&["plugin", "pull", &missing, "--insecure"], cache.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));
    let out = millrace(
        &["plugin", "pull", "127.0.0.1:1/x/y:v1", "--insecure"],
        cache.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unreachable"), "{}", text(&out.stderr));
}

#[test]
fn bindings_check_pulls_compiles_and_smoke_tests_every_binding() {
    let cache = tempfile::tempdir().unwrap();
    let repo = format!(
        "cli/check-{}-{}",
        std::process::id(),
        std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos()
    );
    let reference = format!("{}/{repo}:v1", registry());
    let out = millrace(
        &["plugin", "push", &dist("seed_router"), &reference, "--insecure"],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let digest = text(&out.stdout);
    let file = cache.path().join("bindings.toml");
    let good = format!(
        "[[bindings]]\nname = \"good\"\ntopic = \"t1\"\nplugin = \"{}/{repo}@{digest}\"\nsmoke = ['{{\"type\":\"metric\",\"source\":\"s\",\"value\":1}}']\n",
        registry()
    );
    std::fs::write(&file, &good).unwrap();
    let insecure = registry();
    let args = [
        "bindings",
        "check",
        file.to_str().unwrap(),
        "--insecure-registry",
        insecure.as_str(),
    ];
    let out = millrace(&args, cache.path());
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("ok      good"),
        "{}",
        text(&out.stdout)
    );

    // A smoke sample the plugin rejects, and a reference that does not exist: both refused.
    let bad = format!(
        "{good}\n[[bindings]]\nname = \"picky\"\ntopic = \"t2\"\nplugin = \"{}/{repo}@{digest}\"\nsmoke = ['{{\"type\":\"trace\"}}']\n\n[[bindings]]\nname = \"missing\"\ntopic = \"t3\"\nplugin = \"{}/{repo}:nope\"\n",
        registry(),
        registry()
    );
    std::fs::write(&file, bad).unwrap();
    let out = millrace(&args, cache.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("REFUSED picky") && stdout.contains("rejected"),
        "{stdout}"
    );
    assert!(
        stdout.contains("REFUSED missing") && stdout.contains("not found"),
        "{stdout}"
    );
    assert!(stdout.contains("3 binding(s), 2 refused"), "{stdout}");
}

#[test]
fn bindings_check_and_config_check_refuse_a_topic_in_two_bindings() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = "127.0.0.1:1/a/p@sha256:0000000000000000000000000000000000000000000000000000000000000000";
    let bindings = format!(
        "[[bindings]]\nname = \"acme\"\ntopic = \"client-acme\"\nplugin = \"{plugin}\"\n\
         [[bindings]]\nname = \"everyone\"\ntopic_regex = \"client-.*\"\nplugin = \"{plugin}\"\n"
    );
    let file = dir.path().join("bindings.toml");
    std::fs::write(&file, &bindings).unwrap();
    let out = millrace(&["bindings", "check", file.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bindings.toml[1].topic_regex")
            && stderr.contains("`acme`")
            && stderr.contains("`everyone`")
            && stderr.contains("`client-acme`"),
        "{stderr}"
    );

    let config = dir.path().join("worker.toml");
    std::fs::write(&config, format!("[kafka]\nbrokers = \"k:9092\"\n{bindings}")).unwrap();
    let out = millrace(&["config", "check", config.to_str().unwrap()], dir.path());
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bindings[1].topic_regex")
            && stderr.contains("`acme`")
            && stderr.contains("`everyone`"),
        "{stderr}"
    );
}
