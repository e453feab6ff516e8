//! Pieces of the many-clients benchmark (`make bench`, section "Many clients": `scripts/bench/many.sh`):
//!
//! ```text
//! bench_many setup KAFKA REGISTRY RUN RECORDS PARTITIONS PLUGIN PREFIX N...
//!     # max(N) clients, each with its own digest of PLUGIN (seed_router or c_envelope), its own topic of
//!     # PARTITIONS partitions and RECORDS records; writes PREFIX-<N>.toml (the first N clients' [[bindings]])
//!     # and PREFIX-<N>.json (what a run of them must deliver) per N; prints what it did as one JSON line
//! bench_many measure MILLRACE CONFIG PLAN BLACKHOLE_PORT METRICS_PORT LOG
//!     # runs `MILLRACE worker --config CONFIG` (its log to LOG) with a blackhole store on BLACKHOLE_PORT until
//!     # every output of PLAN arrived; prints memory, start-up, compile and drain figures as one JSON line
//! bench_many setup-fairness KAFKA REGISTRY RUN PARTITIONS PREFIX
//!     # a quiet client (seed_router) and a noisy one (hostile, cpu_budget 0.5): PREFIX.toml and PREFIX.json
//! bench_many fairness MILLRACE CONFIG PLAN KAFKA BLACKHOLE_PORT METRICS_PORT LOG RATE SECONDS BACKLOG
//!     # the quiet client at RATE records/s for SECONDS alone, then as long again beside a BACKLOG of noisy
//!     # records; prints the quiet client's latency percentiles of both phases as one JSON line
//! ```
//!
//! Times are taken in this process: the worker is its child, the blackhole store one of its tasks, and the
//! worker's log (JSON lines on stderr) is read as it is written.

use std::collections::{BTreeMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use millrace_tests::clients::{Batch, create_topics, produce_to, push_modules, with_custom_section};
use millrace_tests::config::{Binding, bindings_file};
use millrace_tests::dist;
use millrace_tests::e2e::{metric_sum, metrics_text, probe, signal};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};

/// How long a run may take before it is given up.
const RUN_TIMEOUT: Duration = Duration::from_secs(1800);

#[tokio::main]
async fn main() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Interrupted: the subcommand's future is dropped, and with it the worker process it started (killed).
    tokio::select! {
        r = run() => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

async fn run() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("setup") if a.len() >= 10 => {
            let sizes = a[9..]
                .iter()
                .map(|n| n.parse())
                .collect::<Result<Vec<usize>, _>>()?;
            setup(
                &a[2],
                &a[3],
                &a[4],
                a[5].parse()?,
                a[6].parse()?,
                &a[7],
                &a[8],
                &sizes,
            )
            .await
        }
        Some("measure") if a.len() == 8 => {
            measure(&a[2], &a[3], &a[4], a[5].parse()?, a[6].parse()?, &a[7]).await
        }
        Some("setup-fairness") if a.len() == 7 => {
            setup_fairness(&a[2], &a[3], &a[4], a[5].parse()?, &a[6]).await
        }
        Some("fairness") if a.len() == 12 => {
            let ports = (a[6].parse()?, a[7].parse()?);
            let load = (a[9].parse()?, a[10].parse()?, a[11].parse()?);
            fairness(&a[2], &a[3], &a[4], &a[5], ports, &a[8], load).await
        }
        _ => bail!(
            "usage: bench_many setup|measure|setup-fairness|fairness ARGS (see tests/examples/bench_many.rs)"
        ),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

// ---------------------------------------------------------------------------------------------------------
// Setup: modules, topics, records, bindings.

/// A client's records on its topic, and the outputs each record makes with `plugin`.
fn client_batch(plugin: &str, topic: &str, client: usize, records: usize) -> Result<(Batch, u64)> {
    let per_record = match plugin {
        "seed_router" => 1, // a metric: one point
        "c_envelope" => 2,  // a point and a document
        other => bail!("plugin {other}: seed_router or c_envelope"),
    };
    let values = (0..records)
        .map(|r| {
            let value = match plugin {
                "seed_router" => {
                    json!({"type": "metric", "source": format!("c{client:04}"), "unit": "n", "value": r})
                }
                _ => json!({"client": client, "rid": r}),
            };
            (format!("c{client}-{r}"), value.to_string().into_bytes())
        })
        .collect();
    Ok(((topic.to_string(), values), per_record))
}

#[allow(clippy::too_many_arguments)] // the subcommand's arguments
async fn setup(
    kafka: &str,
    registry: &str,
    run: &str,
    records: usize,
    partitions: i32,
    plugin: &str,
    prefix: &str,
    sizes: &[usize],
) -> Result<()> {
    let clients = sizes.iter().copied().max().unwrap_or(0);
    let started = Instant::now();
    let base = std::fs::read(dist(plugin))?;
    let modules: Vec<(String, Vec<u8>)> = (0..clients)
        .map(|i| {
            let tag = format!("c{i:04}");
            let wasm = with_custom_section(&base, "millrace-bench-client", format!("{run}-{tag}").as_bytes());
            (tag, wasm)
        })
        .collect();
    let repo = format!("{registry}/bench-many/{run}");
    let digests = push_modules(&repo, &modules).await?;
    let pushed = started.elapsed();

    let topics: Vec<String> = (0..clients).map(|i| format!("{run}-c{i:04}")).collect();
    create_topics(kafka, &topics, partitions).await?;
    let mut per_record = 0;
    let mut batches: Vec<Batch> = Vec::with_capacity(clients);
    for (c, topic) in topics.iter().enumerate() {
        let (batch, outputs) = client_batch(plugin, topic, c, records)?;
        per_record = outputs;
        batches.push(batch);
    }
    produce_to(kafka, &batches).await?;
    let produced = started.elapsed() - pushed;

    let (measurements, indices): (&[&str], &[&str]) = match plugin {
        "seed_router" => (&["env_"], &["*"]),
        _ => (&["kafka_records"], &["envelope-"]),
    };
    let bindings: Vec<Binding> = topics
        .iter()
        .zip(&digests)
        .enumerate()
        .map(|(i, (topic, digest))| {
            Binding::topic(topic)
                .name(&format!("c{i:04}"))
                .plugin(&format!("{repo}@{digest}"))
                .measurements(measurements)
                .indices(indices)
        })
        .collect();
    for &n in sizes {
        std::fs::write(format!("{prefix}-{n}.toml"), bindings_file(&bindings[..n]))?;
        let plan = json!({
            "plugin": plugin, "bindings": n, "partitions": partitions, "records_per_client": records,
            "records": n * records, "outputs": (n * records) as u64 * per_record,
        });
        std::fs::write(format!("{prefix}-{n}.json"), plan.to_string())?;
    }
    println!(
        "{}",
        json!({"clients": clients, "plugin": plugin, "module_bytes": base.len(), "push_s": pushed.as_secs_f64(),
               "produce_s": produced.as_secs_f64(), "records": clients * records})
    );
    Ok(())
}

async fn setup_fairness(kafka: &str, registry: &str, run: &str, partitions: i32, prefix: &str) -> Result<()> {
    let repo = format!("{registry}/bench-many/{run}-fair");
    let modules = vec![
        ("router".to_string(), std::fs::read(dist("seed_router"))?),
        ("hostile".to_string(), std::fs::read(dist("hostile"))?),
    ];
    let digests = push_modules(&repo, &modules).await?;
    let (quiet, noisy) = (format!("{run}-quiet"), format!("{run}-noisy"));
    create_topics(kafka, &[quiet.clone(), noisy.clone()], partitions).await?;
    const CPU_BUDGET: f64 = 0.5;
    const DEADLINE_MS: u64 = 100; // limits.timeout's default, written out
    let bindings = [
        Binding::topic(&quiet)
            .name("quiet")
            .plugin(&format!("{repo}@{}", digests[0]))
            .measurements(["env_"])
            .indices(["*"]),
        // Every record of the backlog spins until its fuel or its deadline runs out: the most a record can
        // cost, all of it plugin time.
        Binding::topic(&noisy)
            .name("noisy")
            .plugin(&format!("{repo}@{}", digests[1]))
            .measurements(["ok"])
            .set("cpu_budget", CPU_BUDGET)
            .limits(|l| l.set("timeout", format!("{DEADLINE_MS}ms"))),
    ];
    std::fs::write(format!("{prefix}.toml"), bindings_file(&bindings))?;
    let plan = json!({"quiet_topic": quiet, "noisy_topic": noisy, "cpu_budget": CPU_BUDGET,
                      "deadline_ms": DEADLINE_MS, "partitions": partitions});
    std::fs::write(format!("{prefix}.json"), plan.to_string())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// The blackhole store: InfluxDB `/write` and Elasticsearch `/_bulk` that accept everything and note what
// arrived when.

#[derive(Default)]
struct Arrivals {
    /// Hashes of the outputs seen (a point's line; a document's action and source lines).
    seen: HashSet<u64>,
    duplicates: u64,
    first: Option<Instant>,
    last_new: Option<Instant>,
    /// Latency (ms, arrival minus the point's timestamp) of the points of `source=quiet-<phase>`, by phase.
    latencies: BTreeMap<String, Vec<i64>>,
}

impl Arrivals {
    /// Notes one output; true if it had not arrived before.
    fn note(&mut self, output: &[u8], at: Instant) -> bool {
        let mut h = DefaultHasher::new();
        output.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            self.duplicates += 1;
            return false;
        }
        self.first.get_or_insert(at);
        self.last_new = Some(at);
        true
    }

    fn point(&mut self, line: &[u8], at: Instant, at_ms: i64) {
        if !self.note(line, at) {
            return;
        }
        // env_metrics,source=quiet-<phase>,unit=n value=<i> <timestamp ns>
        let Ok(line) = std::str::from_utf8(line) else {
            return;
        };
        let Some(rest) = line.strip_prefix("env_metrics,source=quiet-") else {
            return;
        };
        let phase = rest.split(',').next().unwrap_or("");
        if let Some(ts) = line.rsplit(' ').next().and_then(|t| t.parse::<i64>().ok()) {
            self.latencies
                .entry(phase.to_string())
                .or_default()
                .push(at_ms - ts / 1_000_000);
        }
    }

    fn outputs(&self) -> u64 {
        self.seen.len() as u64
    }
}

type Store = Arc<Mutex<Arrivals>>;

/// A request's body, gunzipped if the sink compressed it (both sinks do by default).
fn body_of(headers: &axum::http::HeaderMap, body: &[u8]) -> Vec<u8> {
    let gzip = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    if !gzip {
        return body.to_vec();
    }
    let mut out = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out) {
        Ok(_) => out,
        Err(e) => {
            eprintln!("blackhole: a gzip body that does not decompress: {e}");
            Vec::new()
        }
    }
}

async fn blackhole(port: u16) -> Result<Store> {
    use axum::Router;
    use axum::routing::{get, post};
    let store: Store = Arc::default();
    let (points, docs) = (store.clone(), store.clone());
    let app = Router::new()
        .route(
            "/write",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let points = points.clone();
                async move {
                    let (at, at_ms) = (Instant::now(), now_ms());
                    let body = body_of(&headers, &body);
                    let mut s = lock(&points);
                    for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                        s.point(line, at, at_ms);
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/_bulk",
            post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let docs = docs.clone();
                async move {
                    let at = Instant::now();
                    let body = body_of(&headers, &body);
                    let lines: Vec<&[u8]> = body.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
                    {
                        let mut s = lock(&docs);
                        for pair in lines.chunks(2) {
                            s.note(&pair.concat(), at);
                        }
                    }
                    let items: Vec<_> = (0..lines.len() / 2)
                        .map(|_| json!({"index": {"status": 201}}))
                        .collect();
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json!({"errors": false, "took": 0, "items": items}).to_string(),
                    )
                }
            }),
        )
        .route("/ping", get(|| async { axum::http::StatusCode::NO_CONTENT }))
        .route("/", get(|| async { "{}" }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(store)
}

// ---------------------------------------------------------------------------------------------------------
// The worker process and what its log says.

#[derive(Default)]
struct LogSeen {
    /// When `initial bindings loaded` was logged, and its fields (`ms`, `bindings`, `refused`).
    loaded: Option<(Instant, Value)>,
    /// When the first partitions were assigned (the worker joined its group with work to do).
    joined: Option<Instant>,
    warnings: u64,
    errors: u64,
    /// The first few warnings and errors, as logged.
    problems: Vec<String>,
}

impl LogSeen {
    fn note(&mut self, line: &str) {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            // Not a log record: a panic message, or output of a library.
            self.errors += 1;
            if self.problems.len() < 5 {
                self.problems.push(line.chars().take(300).collect());
            }
            return;
        };
        let fields = &v["fields"];
        match (v["level"].as_str(), fields["message"].as_str()) {
            (Some("INFO"), Some("initial bindings loaded")) => {
                self.loaded = Some((Instant::now(), fields.clone()));
            }
            (Some("INFO"), Some("partitions assigned")) if fields["added"].as_u64() > Some(0) => {
                self.joined.get_or_insert_with(Instant::now);
            }
            (Some(level @ ("WARN" | "ERROR")), _) => {
                if level == "WARN" {
                    self.warnings += 1;
                } else {
                    self.errors += 1;
                }
                if self.problems.len() < 5 {
                    self.problems
                        .push(format!("{level} {}", line.chars().take(300).collect::<String>()));
                }
            }
            _ => {}
        }
    }
}

/// `millrace worker` as a child process: its stderr copied to the log file and read as it comes.
struct Worker {
    child: Child,
    started: Instant,
    log: Arc<Mutex<LogSeen>>,
    log_path: String,
}

impl Worker {
    fn start(millrace: &str, config: &str, log_path: &str) -> Result<Self> {
        let mut file = std::fs::File::create(log_path)?;
        let started = Instant::now();
        let mut child = Command::new(millrace)
            .args(["worker", "--config", config])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {millrace}"))?;
        let stderr = child.stderr.take().context("the worker's stderr")?;
        let log: Arc<Mutex<LogSeen>> = Arc::default();
        let seen = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(file, "{line}");
                lock(&seen).note(&line);
            }
        });
        Ok(Self {
            child,
            started,
            log,
            log_path: log_path.to_string(),
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Seconds since the process was started.
    fn since_start(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.started).as_secs_f64()
    }

    /// An error if the worker has exited.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the worker exited ({status}); see {}", self.log_path);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited after `grace`.
    async fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        signal(&self.child, "TERM")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("the worker did not stop within {grace:?} of SIGTERM: killed");
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A field of /proc/PID/status in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(") ")
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

// ---------------------------------------------------------------------------------------------------------
// Many bindings: memory, start-up, compile, drain.

async fn measure(
    millrace: &str,
    config: &str,
    plan: &str,
    blackhole_port: u16,
    metrics_port: u16,
    log: &str,
) -> Result<()> {
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(plan)?)?;
    let want = plan["outputs"].as_u64().context("the plan has no `outputs`")?;
    let store = blackhole(blackhole_port).await?;
    let mut worker = Worker::start(millrace, config, log)?;
    let pid = worker.pid();
    let mut rss_loaded = None;
    let drained = loop {
        worker.check_alive()?;
        if rss_loaded.is_none() && lock(&worker.log).loaded.is_some() {
            rss_loaded = proc_status_bytes(pid, "VmRSS");
        }
        let (n, last) = {
            let s = lock(&store);
            (s.outputs(), s.last_new)
        };
        if n >= want {
            break last.unwrap_or_else(Instant::now);
        }
        if worker.started.elapsed() > RUN_TIMEOUT {
            bail!("timed out with {n} of {want} outputs in the store; see {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cpu = cpu_seconds(pid);
    // Every binding ran a record, so every one loaded; the log line may come a moment after the last output.
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock(&worker.log).loaded.is_none() && Instant::now() < deadline {
        worker.check_alive()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Idle with every binding loaded: the steady resident set.
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.check_alive()?;
    let (rss, hwm) = (proc_status_bytes(pid, "VmRSS"), proc_status_bytes(pid, "VmHWM"));
    let rss_loaded = rss_loaded.or(rss);
    let text = metrics_text(metrics_port).await;
    worker.stop(Duration::from_secs(60)).await?;

    let s = lock(&store);
    let seen = lock(&worker.log);
    let since = |at: Option<Instant>| at.map(|t| worker.since_start(t));
    let first = since(s.first);
    let joined = since(seen.joined);
    let sum = |name: &str| metric_sum(&text, name, &[]);
    let r = json!({
        "bindings": plan["bindings"], "records": plan["records"], "outputs": want, "plugin": plan["plugin"],
        "partitions": plan["partitions"], "duplicates": s.duplicates,
        "load_s": since(seen.loaded.as_ref().map(|(t, _)| *t)),
        "load_ms": seen.loaded.as_ref().map(|(_, f)| f["ms"].clone()),
        "loaded_bindings": seen.loaded.as_ref().map(|(_, f)| f["bindings"].clone()),
        "refused": seen.loaded.as_ref().map(|(_, f)| f["refused"].clone()),
        "joined_s": joined,
        "first_output_s": first,
        "first_output_after_join_s": first.zip(joined).map(|(f, j)| f - j),
        "drain_s": worker.since_start(drained),
        "cpu_s": cpu,
        "rss_peak_bytes": hwm, "rss_bytes": rss, "rss_loaded_bytes": rss_loaded,
        "compiled_plugins_resident": sum("millrace_compiled_plugins_resident"),
        "compiled_plugins_resident_bytes": sum("millrace_compiled_plugins_resident_bytes"),
        "compiled_plugin_unloads": sum("millrace_compiled_plugin_unloads_total"),
        "compiled_plugin_reloads": sum("millrace_compiled_plugin_reloads_total"),
        "instance_evictions": sum("millrace_instance_evictions_total"),
        "dead_letters": sum("millrace_dead_letters_total"),
        "warnings": seen.warnings, "errors": seen.errors, "problems": seen.problems,
    });
    println!("{r}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------
// Fairness: a quiet client alone, then beside a noisy one, on one lane.

/// Produces the quiet client's records at `rate`/s for `seconds`: metrics of `source=quiet-<phase>` whose
/// timestamp is the record's Kafka timestamp (the time it was produced). Returns how many.
async fn steady(
    producer: &FutureProducer,
    topic: &str,
    phase: &str,
    rate: f64,
    seconds: f64,
) -> Result<usize> {
    let n = (rate * seconds) as usize;
    let start = Instant::now();
    let mut pending = Vec::with_capacity(n);
    for i in 0..n {
        let due = Duration::from_secs_f64(i as f64 / rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let ts = now_ms();
        let value = json!({"type": "metric", "source": format!("quiet-{phase}"), "unit": "n", "value": i,
                           "timestamp": ts})
        .to_string();
        let key = format!("{phase}-{i}");
        pending.push(
            producer
                .send_result(FutureRecord::to(topic).key(&key).payload(&value).timestamp(ts))
                .map_err(|(e, _)| e)?,
        );
    }
    for d in pending {
        d.await?.map_err(|(e, _)| e)?;
    }
    Ok(n)
}

/// Waits until `n` points of the phase arrived.
async fn wait_phase(store: &Store, worker: &mut Worker, phase: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let got = lock(store).latencies.get(phase).map_or(0, Vec::len);
        if got >= n {
            return Ok(());
        }
        worker.check_alive()?;
        if Instant::now() > deadline {
            bail!("{got} of the {n} points of phase {phase} arrived");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// p50, p99 and max (ms) of a phase's latencies.
fn percentiles(store: &Store, phase: &str) -> Value {
    let mut v = lock(store).latencies.get(phase).cloned().unwrap_or_default();
    v.sort_unstable();
    let p = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len().max(1)) - 1;
        v.get(i).copied()
    };
    json!({"records": v.len(), "p50_ms": p(0.5), "p99_ms": p(0.99), "max_ms": v.last()})
}

/// What /metrics says about the noisy client.
struct Noisy {
    processed: f64,
    plugin_seconds: f64,
    throttled_seconds: f64,
    queued: f64,
}

async fn noisy(metrics_port: u16) -> (Noisy, String) {
    let text = metrics_text(metrics_port).await;
    let label = ["binding=\"noisy\""];
    let n = Noisy {
        processed: metric_sum(&text, "millrace_records_processed_total", &label),
        plugin_seconds: metric_sum(&text, "millrace_plugin_duration_seconds_sum", &label),
        throttled_seconds: metric_sum(&text, "millrace_binding_throttled_seconds_total", &label),
        queued: metric_sum(&text, "millrace_binding_queued_records", &label),
    };
    (n, text)
}

async fn fairness(
    millrace: &str,
    config: &str,
    plan: &str,
    kafka: &str,
    (blackhole_port, metrics_port): (u16, u16),
    log: &str,
    (rate, seconds, backlog): (f64, f64, usize),
) -> Result<()> {
    let plan: Value = serde_json::from_str(&std::fs::read_to_string(plan)?)?;
    let quiet = plan["quiet_topic"]
        .as_str()
        .context("the plan has no quiet_topic")?;
    let noisy_topic = plan["noisy_topic"]
        .as_str()
        .context("the plan has no noisy_topic")?;
    let deadline_ms = plan["deadline_ms"].as_f64().unwrap_or(100.0);
    let store = blackhole(blackhole_port).await?;
    let mut worker = Worker::start(millrace, config, log)?;
    // Ready: bindings loaded, in the group, stores answering.
    let ready_by = Instant::now() + Duration::from_secs(120);
    while probe(metrics_port, "/readyz").await != 200 {
        worker.check_alive()?;
        if Instant::now() > ready_by {
            bail!("the worker was not ready within 2 minutes; see {log}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka)
        .set("linger.ms", "1")
        .create()?;
    // Warm-up (not counted): the quiet client's instance, connections to the store.
    let n = steady(&producer, quiet, "warmup", rate, 3.0).await?;
    wait_phase(&store, &mut worker, "warmup", n).await?;

    eprintln!("  quiet client alone, {rate}/s for {seconds} s");
    let n = steady(&producer, quiet, "alone", rate, seconds).await?;
    wait_phase(&store, &mut worker, "alone", n).await?;

    // The noisy client's backlog, then the quiet client again while the backlog is worked off.
    let records: Vec<(String, Vec<u8>)> = (0..backlog)
        .map(|i| {
            (
                format!("n{i}"),
                json!({"do": "loop", "rid": i}).to_string().into_bytes(),
            )
        })
        .collect();
    produce_to(kafka, &[(noisy_topic.to_string(), records)]).await?;
    let busy_by = Instant::now() + Duration::from_secs(60);
    while noisy(metrics_port).await.0.processed < 1.0 {
        worker.check_alive()?;
        if Instant::now() > busy_by {
            bail!("the noisy client processed nothing within 60 s; see {log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("  quiet client beside {backlog} noisy records, {rate}/s for {seconds} s");
    let (before, _) = noisy(metrics_port).await;
    let phase_start = Instant::now();
    let n = steady(&producer, quiet, "beside", rate, seconds).await?;
    let (after, _) = noisy(metrics_port).await;
    let phase_s = phase_start.elapsed().as_secs_f64();
    wait_phase(&store, &mut worker, "beside", n).await?;
    let (_, text) = noisy(metrics_port).await;
    worker.stop(Duration::from_secs(10)).await?;

    let kinds: BTreeMap<String, f64> = text
        .lines()
        .filter(|l| l.starts_with("millrace_plugin_errors_total{") && l.contains("binding=\"noisy\""))
        .filter_map(|l| {
            let kind = l.split("kind=\"").nth(1)?.split('"').next()?;
            Some((kind.to_string(), l.rsplit(' ').next()?.parse().ok()?))
        })
        .filter(|(_, n): &(String, f64)| *n > 0.0)
        .collect();
    let (alone, beside) = (percentiles(&store, "alone"), percentiles(&store, "beside"));
    let goal_ms = alone["p99_ms"].as_f64().map(|p| 2.0 * p + deadline_ms);
    let seen = lock(&worker.log);
    let r = json!({
        "rate": rate, "seconds": seconds, "backlog": backlog, "lanes": 1,
        "cpu_budget": plan["cpu_budget"], "deadline_ms": deadline_ms,
        "alone": alone, "beside": beside,
        "goal_p99_ms": goal_ms,
        "met": goal_ms.zip(beside["p99_ms"].as_f64()).map(|(g, p)| p <= g),
        "noisy_records_during": after.processed - before.processed,
        "noisy_cores_during": (after.plugin_seconds - before.plugin_seconds) / phase_s,
        "noisy_throttled_s_during": after.throttled_seconds - before.throttled_seconds,
        "noisy_queued_after": after.queued,
        "noisy_left_after": backlog as f64 - after.processed,
        "noisy_error_kinds": kinds,
        "duplicates": lock(&store).duplicates,
        "warnings": seen.warnings, "errors": seen.errors, "problems": seen.problems,
    });
    println!("{r}");
    Ok(())
}
