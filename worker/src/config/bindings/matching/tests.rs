//! The isolation rules: allowlist entries, whole-name topic regexes, and overlapping bindings of each kind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use super::*;
use crate::config::parse_bindings;

fn admits(entry: &str, name: &str) -> bool {
    entry_admits(entry, name)
}

#[test]
fn a_plain_entry_admits_whole_segments_only() {
    assert!(admits("acme", "acme"));
    for name in ["acme-x", "acme_x", "acme.x", "acme-eu-1"] {
        assert!(admits("acme", name), "{name}");
    }
    for name in ["acmebank-x", "acmebank", "acm", "xacme", "ACME-x", "acme+x"] {
        assert!(!admits("acme", name), "{name}");
    }
}

#[test]
fn an_entry_ending_with_a_separator_is_a_prefix() {
    assert!(admits("env_", "env_metrics"));
    assert!(admits("env_", "env_"));
    assert!(!admits("env_", "env"));
    assert!(!admits("env_", "environment"));
    assert!(admits("events-", "events-2024.01"));
    assert!(admits("acme.", "acme.logs"));
    assert!(!admits("acme-", "acmebank-x"));
}

#[test]
fn an_entry_with_a_star_is_a_glob() {
    assert!(admits("*", "anything"));
    assert!(admits("*", ""));
    assert!(admits("acme-*", "acme-x"));
    assert!(admits("acme-*", "acme-"));
    assert!(!admits("acme-*", "acmebank-x"));
    assert!(!admits("acme-*", "acme"));
    assert!(admits("*-logs", "acme-logs"));
    assert!(!admits("*-logs", "acme-logs-old"));
    assert!(admits("a*b*c", "aXbYc"));
    assert!(admits("a*b*c", "abc"));
    assert!(admits("a*b*c", "abbbcbc"));
    assert!(!admits("a*b*c", "acb"));
    assert!(admits("**", "x"));
}

#[test]
fn allowed_is_any_entry() {
    let entries = vec!["acme".to_string(), "env_".to_string()];
    assert!(allowed(&entries, "acme-x"));
    assert!(allowed(&entries, "env_cpu"));
    assert!(!allowed(&entries, "acmebank-x"));
    assert!(!allowed(&[], "acme"));
}

fn load(bindings: &[(&str, &str)]) -> Result<Vec<BindingConfig>, ConfigError> {
    let text: String = bindings
        .iter()
        .enumerate()
        .map(|(i, (field, value))| {
            format!(
                "[[bindings]]\nname = \"b{i}\"\n{field} = '{value}'\nplugin = \"127.0.0.1:15000/a/p:v1\"\n"
            )
        })
        .collect();
    parse_bindings(&text, config::FileFormat::Toml, "b.toml")
}

#[test]
fn an_empty_allowlist_entry_is_refused_naming_its_key() {
    let text = "[[bindings]]\ntopic = \"t\"\nplugin = \"127.0.0.1:15000/a/p:v1\"\n\
                allowed_indices = [\"acme\", \"env_\", \"\"]\n";
    let err = parse_bindings(text, config::FileFormat::Toml, "bindings").unwrap_err();
    assert_eq!(err.key, "bindings[0].allowed_indices[2]", "{err}");
    let text = "[[bindings]]\ntopic = \"t\"\nplugin = \"127.0.0.1:15000/a/p:v1\"\n\
                allowed_measurements = [\"\"]\n";
    let err = parse_bindings(text, config::FileFormat::Toml, "b.toml").unwrap_err();
    assert_eq!(err.key, "b.toml[0].allowed_measurements[0]", "{err}");
}

#[test]
fn a_topic_regex_matches_whole_names() {
    let b = load(&[("topic_regex", "client-a")]).unwrap();
    let t = &b[0].topics;
    assert!(t.matches("client-a"));
    assert!(!t.matches("client-ab"));
    assert!(!t.matches("xclient-a"));
    assert_eq!(t.subscription(), "^(client-a)$");
    assert_eq!(b[0].name, "b0");

    // An alternation is whole too (`^a|b` would match any name ending... with `b`, anywhere).
    let b = load(&[("topic_regex", "^client-a|client-b")]).unwrap();
    assert!(b[0].topics.matches("client-b"));
    assert!(!b[0].topics.matches("x-client-b"));
    assert!(!b[0].topics.matches("client-ab"));
    assert_eq!(b[0].topics.subscription(), "^(client-a|client-b)$");

    // librdkafka sees the same set: POSIX extended syntax, anchored both ends.
    let t = TopicRegex::new("client-.*").unwrap();
    assert_eq!(TopicMatch::Regex(t).subscription(), "^(client-.*)$");
}

#[test]
fn a_regex_that_only_parses_once_wrapped_is_refused() {
    let err = load(&[("topic_regex", "a)|(b")]).unwrap_err();
    assert_eq!(err.key, "b.toml[0].topic_regex", "{err}");
}

#[test]
fn the_default_name_of_a_regex_binding_is_unchanged() {
    let text = "[[bindings]]\ntopic_regex = \"client-.*\"\nplugin = \"127.0.0.1:15000/a/p:v1\"\n";
    let b = parse_bindings(text, config::FileFormat::Toml, "b.toml").unwrap();
    assert_eq!(b[0].name, "^client-.*");
}

fn refused(bindings: &[(&str, &str)]) -> ConfigError {
    load(bindings).expect_err("an overlap")
}

#[test]
fn two_equal_topic_names_are_refused_naming_both_bindings() {
    let err = refused(&[
        ("topic", "client-x"),
        ("topic", "client-y"),
        ("topic", "client-x"),
    ]);
    assert_eq!(err.key, "b.toml[2].topic");
    assert!(err.message.contains("`b0` (b.toml[0])"), "{err}");
    assert!(err.message.contains("`b2` (b.toml[2])"), "{err}");
    assert!(err.message.contains("`client-x`"), "{err}");
}

#[test]
fn a_name_matched_by_a_regex_is_refused_in_either_order() {
    let err = refused(&[("topic_regex", "client-.*"), ("topic", "client-x")]);
    assert_eq!(err.key, "b.toml[1].topic");
    assert!(
        err.message.contains("`b0`") && err.message.contains("`b1`"),
        "{err}"
    );
    assert!(err.message.contains("`client-x`"), "{err}");
    let err = refused(&[("topic", "client-x"), ("topic_regex", "client-.*")]);
    assert_eq!(err.key, "b.toml[1].topic_regex");
    assert!(
        err.message.contains("`b0`") && err.message.contains("`b1`"),
        "{err}"
    );
    // Whole names: a regex that is a prefix of the name does not take it.
    load(&[("topic_regex", "client-a"), ("topic", "client-ab")]).unwrap();
}

#[test]
fn two_regexes_with_a_common_topic_are_refused_with_the_shortest_one() {
    let err = refused(&[
        ("topic", "other"),
        ("topic_regex", "client-.*"),
        ("topic_regex", ".*-eu"),
    ]);
    assert_eq!(err.key, "b.toml[2].topic_regex");
    assert!(err.message.contains("`b1` (b.toml[1])"), "{err}");
    assert!(err.message.contains("`b2` (b.toml[2])"), "{err}");
    assert!(err.message.contains("`client-eu`"), "{err}");

    // Unicode classes, narrowed to topic characters: the same verdicts.
    let err = refused(&[("topic_regex", "client-.*"), ("topic_regex", "\\w+-eu")]);
    assert!(err.message.contains("`client-eu`"), "{err}");
    let err = refused(&[
        ("topic_regex", "client-[0-9]+"),
        ("topic_regex", "client-(1|2)[a-z]*"),
    ]);
    assert!(err.message.contains("`client-1`"), "{err}");
    // Same language, written differently.
    let err = refused(&[("topic_regex", "(?i)ACME"), ("topic_regex", "acme")]);
    assert!(err.message.contains("`acme`"), "{err}");
}

#[test]
fn disjoint_regexes_are_accepted() {
    load(&[
        ("topic_regex", "client-a.*"),
        ("topic_regex", "client-b.*"),
        ("topic_regex", "client-[0-9]+"),
        ("topic_regex", "tenant-[a-z]+-[0-9]{2}"),
        ("topic_regex", "tenant-[a-z]+-[0-9]{3}"),
        ("topic", "client-"),
    ])
    .unwrap();
    // They only share names Kafka does not allow (a space; longer than 249 characters).
    load(&[("topic_regex", "client .*"), ("topic_regex", "client[ -].*")]).unwrap();
    load(&[("topic_regex", "a{250}.*"), ("topic_regex", "a+")]).unwrap();
    load(&[
        ("topic_regex", "client-é.*"),
        ("topic_regex", "client-\\w*[^a-z0-9_]"),
    ])
    .unwrap();
    let err = refused(&[("topic_regex", "a{249}.*"), ("topic_regex", "a+")]);
    assert!(err.message.contains(&format!("`{}`", "a".repeat(249))), "{err}");
}

#[test]
fn regexes_too_large_to_compare_are_left_to_the_run_time_check() {
    // "an `a` 20 characters before the end": a DFA of 2^21 states.
    let big = "tenant-[a-z]*a[a-z]{20}";
    let b = load(&[("topic_regex", big), ("topic_regex", "tenant-.*")]).unwrap();
    let topic = format!("tenant-{}", "a".repeat(21));
    assert_eq!(owner(&b, |b| &b.topics, &topic).unwrap_err(), (0, 1));
    assert_eq!(owner(&b, |b| &b.topics, "tenant-x").unwrap().unwrap().name, "b1");
    assert!(owner(&b, |b| &b.topics, "other").unwrap().is_none());
    // A name is still compared exactly.
    let err = refused(&[("topic_regex", big), ("topic", &topic)]);
    assert_eq!(err.key, "b.toml[1].topic");
}
