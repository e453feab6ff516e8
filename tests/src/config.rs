//! One builder for the worker configurations of the tests: [`TestConfig`] renders the TOML text the worker
//! reads (`millrace worker --config FILE`, [`crate::e2e::start_worker`], `WorkerConfig::from_toml`), with the
//! addresses of the stack's servers filled in, and [`Binding`] renders a `[[bindings]]` entry (of a worker
//! configuration or of a bindings file).
//!
//! Only what a test sets is rendered; everything else keeps the worker's default. Typed methods cover the
//! common sections; [`TestConfig::set`] and the section closures ([`TestConfig::batching`], ...) set any
//! other key, and [`TestConfig::extra`] appends raw TOML for what the builder cannot express.
//!
//! ```no_run
//! use millrace_tests::config::{Binding, TestConfig};
//! let toml = TestConfig::for_group("group-1")
//!     .binding(Binding::topic("client-1").plugin("127.0.0.1:15000/acme/router@sha256:...").measurements(["env_"]))
//!     .influxdb("db_1")
//!     .elasticsearch()
//!     .dead_letter("dlq-1")
//!     .metrics_port(0)
//!     .batching(|b| b.set("linger", "50ms"))
//!     .to_toml();
//! ```

use std::fmt;
use std::path::Path;

use crate::{addr, http_url};

/// A TOML value as the tests write them: strings (durations and sizes too), integers, booleans, string lists.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    List(Vec<String>),
}

impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Self::Float(n)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Self::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Self::Str(s)
    }
}

impl From<&String> for Value {
    fn from(s: &String) -> Self {
        Self::Str(s.clone())
    }
}

impl From<&Path> for Value {
    fn from(p: &Path) -> Self {
        Self::Str(p.display().to_string())
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Self::Int(i64::from(n))
            }
        }
    )*};
}
from_int!(i32, u16, u32);

impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Self::Int(n)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Self::Bool(b)
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for Value {
    fn from(items: [S; N]) -> Self {
        Self::List(items.iter().map(|s| s.as_ref().to_string()).collect())
    }
}

impl From<Vec<String>> for Value {
    fn from(items: Vec<String>) -> Self {
        Self::List(items)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Str(s) => f.write_str(&quote(s)),
            Self::Int(n) => write!(f, "{n}"),
            Self::Float(n) => write!(f, "{n:?}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::List(items) => {
                let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
                write!(f, "[{}]", items.join(", "))
            }
        }
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The keys of one TOML table, in the order they were set (setting a key again replaces its value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table(Vec<(String, Value)>);

impl Table {
    /// Sets `key` to `value`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_string(), value)),
        }
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn render(&self, out: &mut String) {
        for (key, value) in &self.0 {
            out.push_str(&format!("{key} = {value}\n"));
        }
    }
}

/// One `[[bindings]]` entry: a topic (or a topic regex) bound to a plugin, with what it may write.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    keys: Table,
    limits: Option<Table>,
}

impl Binding {
    /// A binding of one topic.
    pub fn topic(topic: &str) -> Self {
        Self {
            keys: Table::default().set("topic", topic),
            limits: None,
        }
    }

    /// A binding of every topic matching a regular expression.
    pub fn topic_regex(regex: &str) -> Self {
        Self {
            keys: Table::default().set("topic_regex", regex),
            limits: None,
        }
    }

    /// The binding's label in metrics, logs and dead-letter headers (rendered before the topic).
    pub fn name(mut self, name: &str) -> Self {
        self.keys.0.retain(|(k, _)| k != "name");
        self.keys.0.insert(0, ("name".into(), name.into()));
        self
    }

    /// The plugin's OCI reference (`registry/repo@sha256:...` or `:tag`).
    pub fn plugin(self, reference: &str) -> Self {
        self.set("plugin", reference)
    }

    /// `allowed_measurements`: measurement name prefixes (`"*"`: any).
    pub fn measurements<S: AsRef<str>>(self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.set("allowed_measurements", list(prefixes))
    }

    /// `allowed_indices`: index name prefixes (`"*"`: any).
    pub fn indices<S: AsRef<str>>(self, prefixes: impl IntoIterator<Item = S>) -> Self {
        self.set("allowed_indices", list(prefixes))
    }

    /// `smoke`: sample record values a new plugin version must pass.
    pub fn smoke<S: AsRef<str>>(self, samples: impl IntoIterator<Item = S>) -> Self {
        self.set("smoke", list(samples))
    }

    /// Any other key of the binding.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.keys = self.keys.set(key, value);
        self
    }

    /// `[bindings.limits]`: fuel, memory, timeout, ...
    pub fn limits(mut self, f: impl FnOnce(Table) -> Table) -> Self {
        self.limits = Some(f(self.limits.take().unwrap_or_default()));
        self
    }

    /// The `[[bindings]]` entry as TOML.
    pub fn to_toml(&self) -> String {
        let mut out = String::from("[[bindings]]\n");
        self.keys.render(&mut out);
        if let Some(limits) = &self.limits {
            out.push_str("[bindings.limits]\n");
            limits.render(&mut out);
        }
        out
    }
}

/// The text of a bindings file (`bindings_file`, `millrace bindings check`) holding these bindings.
pub fn bindings_file<'a>(bindings: impl IntoIterator<Item = &'a Binding>) -> String {
    bindings
        .into_iter()
        .map(Binding::to_toml)
        .collect::<Vec<_>>()
        .join("\n")
}

fn list<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Value {
    Value::List(items.into_iter().map(|s| s.as_ref().to_string()).collect())
}

/// A worker configuration under construction; [`TestConfig::to_toml`] (or `Display`) renders it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestConfig {
    /// Top-level keys (`bindings_file`), rendered before any table.
    top: Table,
    /// Tables by dotted name (`kafka`, `sinks.influxdb`, ...), in the order they were first set.
    tables: Vec<(String, Table)>,
    bindings: Vec<Binding>,
    extra: Vec<String>,
}

impl TestConfig {
    /// `[kafka]` with the stack's broker and nothing else.
    pub fn new() -> Self {
        Self::default().set("kafka", "brokers", addr("kafka"))
    }

    /// What most end-to-end tests run: the stack's broker, consumer group `group`, and a 6 s session timeout
    /// (a worker that leaves without a word is noticed quickly).
    pub fn for_group(group: &str) -> Self {
        Self::new()
            .set("kafka", "group_id", group)
            .set("kafka", "session_timeout", "6s")
    }

    /// Sets `key` of table `table` (dotted: `kafka`, `sinks.influxdb`, `registry`, ...).
    pub fn set(self, table: &str, key: &str, value: impl Into<Value>) -> Self {
        self.section(table, |t| t.set(key, value))
    }

    /// Sets keys of table `table` with a closure (`|t| t.set("linger", "50ms").set("max_records", 500)`).
    pub fn section(mut self, table: &str, f: impl FnOnce(Table) -> Table) -> Self {
        let i = match self.tables.iter().position(|(name, _)| name == table) {
            Some(i) => i,
            None => {
                self.tables.push((table.to_string(), Table::default()));
                self.tables.len() - 1
            }
        };
        let t = std::mem::take(&mut self.tables[i].1);
        self.tables[i].1 = f(t);
        self
    }

    /// The table `table`, if anything was set in it.
    pub fn table(&self, table: &str) -> Option<&Table> {
        self.tables.iter().find(|(n, _)| n == table).map(|(_, t)| t)
    }

    /// Adds a `[[bindings]]` entry.
    pub fn binding(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    /// `bindings_file`: the bindings live in this (watched) file instead.
    pub fn bindings_file(mut self, path: &Path) -> Self {
        self.top = self.top.set("bindings_file", path);
        self
    }

    /// `[reload] interval`: how often the bindings file is checked.
    pub fn reload_interval(self, interval: &str) -> Self {
        self.set("reload", "interval", interval)
    }

    /// `[sinks.influxdb]`: the stack's InfluxDB, database `db` (which must exist: [`crate::e2e::create_db`]).
    pub fn influxdb(self, db: &str) -> Self {
        self.influxdb_url(&http_url("influxdb"), db)
    }

    /// `[sinks.influxdb]` at another URL (a TLS server, an unreachable port).
    pub fn influxdb_url(self, url: &str, db: &str) -> Self {
        self.set("sinks.influxdb", "url", url)
            .set("sinks.influxdb", "database", db)
    }

    /// `[sinks.influxdb_v2]`: the stack's VictoriaMetrics (InfluxDB v2 write API).
    pub fn influxdb_v2(self, org: &str, bucket: &str) -> Self {
        self.influxdb_v2_url(&http_url("victoriametrics"), org, bucket)
    }

    /// `[sinks.influxdb_v2]` at another URL.
    pub fn influxdb_v2_url(self, url: &str, org: &str, bucket: &str) -> Self {
        self.set("sinks.influxdb_v2", "url", url)
            .set("sinks.influxdb_v2", "org", org)
            .set("sinks.influxdb_v2", "bucket", bucket)
    }

    /// `[sinks.elasticsearch]`: the stack's Elasticsearch API.
    pub fn elasticsearch(self) -> Self {
        self.elasticsearch_urls([http_url("elasticsearch")])
    }

    /// `[sinks.elasticsearch]` at other URLs (a proxy, a TLS proxy).
    pub fn elasticsearch_urls<S: AsRef<str>>(self, urls: impl IntoIterator<Item = S>) -> Self {
        self.set("sinks.elasticsearch", "urls", list(urls))
    }

    /// `ca_file` on every sink configured so far.
    pub fn sinks_ca_file(mut self, ca: &Path) -> Self {
        let sinks: Vec<String> = self
            .tables
            .iter()
            .map(|(name, _)| name.clone())
            .filter(|name| name.starts_with("sinks."))
            .collect();
        for sink in sinks {
            self = self.set(&sink, "ca_file", ca);
        }
        self
    }

    /// `[dead_letter] topic`.
    pub fn dead_letter(self, topic: &str) -> Self {
        self.set("dead_letter", "topic", topic)
    }

    /// `[metrics] address = "127.0.0.1:<port>"` (0: any free port, when the test does not scrape it).
    pub fn metrics_port(self, port: u16) -> Self {
        self.set("metrics", "address", format!("127.0.0.1:{port}"))
    }

    /// `[registry]`: plugins cached in `<dir>/plugins` (created private by the worker; a temp dir itself is
    /// open to others, which the worker refuses), the stack's registry spoken to over plain HTTP.
    pub fn registry_cache(self, dir: &Path) -> Self {
        self.set("registry", "cache_dir", dir.join("plugins").as_path())
            .set("registry", "insecure", [addr("registry")])
    }

    /// Keys of `[batching]`.
    pub fn batching(self, f: impl FnOnce(Table) -> Table) -> Self {
        self.section("batching", f)
    }

    /// Keys of `[pipeline]`.
    pub fn pipeline(self, f: impl FnOnce(Table) -> Table) -> Self {
        self.section("pipeline", f)
    }

    /// Raw TOML appended at the end (whole tables only: not keys of a table the builder renders).
    pub fn extra(mut self, toml: &str) -> Self {
        self.extra.push(toml.to_string());
        self
    }

    /// The configuration as the TOML text the worker reads.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        self.top.render(&mut out);
        for (name, table) in &self.tables {
            out.push_str(&format!("[{name}]\n"));
            table.render(&mut out);
        }
        for b in &self.bindings {
            out.push_str(&b.to_toml());
        }
        for e in &self.extra {
            out.push_str(e);
            out.push('\n');
        }
        out
    }

    /// The configuration as the worker parses and validates it.
    pub fn parse(&self) -> anyhow::Result<millrace_worker::WorkerConfig> {
        Ok(millrace_worker::WorkerConfig::from_toml(&self.to_toml())?)
    }

    /// Starts a worker in this process with this configuration ([`crate::e2e::start_worker`]).
    pub fn start(&self) -> anyhow::Result<crate::e2e::RunningWorker> {
        crate::e2e::start_worker(&self.to_toml())
    }

    /// Writes the configuration to `path` (for a `millrace worker --config` process).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_toml())?;
        Ok(())
    }
}

impl fmt::Display for TestConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_toml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tables_bindings_and_quoted_values() {
        let toml = TestConfig::default()
            .set("kafka", "brokers", "k:9092")
            .bindings_file(Path::new("/tmp/b.toml"))
            .binding(
                Binding::topic("t")
                    .plugin("r/p@sha256:0")
                    .measurements(["env_"])
                    .name("n")
                    .limits(|l| l.set("fuel", 7))
                    .smoke([r#"{"a":"b\c"}"#]),
            )
            .influxdb_url("http://i", "db")
            .sinks_ca_file(Path::new("/ca.pem"))
            .set("kafka", "group_id", "g")
            .batching(|b| b.set("linger", "50ms").set("linger", "60ms"))
            .to_toml();
        assert_eq!(
            toml,
            "bindings_file = \"/tmp/b.toml\"\n\
             [kafka]\nbrokers = \"k:9092\"\ngroup_id = \"g\"\n\
             [sinks.influxdb]\nurl = \"http://i\"\ndatabase = \"db\"\nca_file = \"/ca.pem\"\n\
             [batching]\nlinger = \"60ms\"\n\
             [[bindings]]\nname = \"n\"\ntopic = \"t\"\nplugin = \"r/p@sha256:0\"\n\
             allowed_measurements = [\"env_\"]\nsmoke = [\"{\\\"a\\\":\\\"b\\\\c\\\"}\"]\n\
             [bindings.limits]\nfuel = 7\n"
        );
    }
}
