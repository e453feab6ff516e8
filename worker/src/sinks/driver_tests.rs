//! The driver against an in-process fake store: splitting isolates bad items, retries end in success, rejected
//! items are acknowledged with the store's reason, the number of batches in flight is bounded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::sinks::SinkError;

/// Acknowledgements seen, by line: `Ok(())` written, `Err(reason)` rejected.
type Acks = Arc<Mutex<Vec<(String, Result<(), String>)>>>;

#[derive(Debug)]
struct TestAck {
    line: String,
    acks: Acks,
}

impl Acker for TestAck {
    fn ok(self) {
        self.acks.lock().unwrap().push((self.line, Ok(())));
    }

    fn rejected(self, reason: String) {
        self.acks.lock().unwrap().push((self.line, Err(reason)));
    }
}

/// A store that answers from rules: whole-request failures first, then lines it refuses as a whole request
/// (400), then per-item verdicts.
#[derive(Default)]
struct FakeStore {
    /// Whole-request failures to answer, in order, before anything else.
    failures: Mutex<Vec<SinkError>>,
    /// A request holding one of these lines is answered 400 as a whole (InfluxDB: a bad line).
    bad_lines: HashSet<String>,
    /// Items rejected in a successful answer (Elasticsearch: a mapping error).
    rejected_items: HashSet<String>,
    /// Items answered `Retry` this many times before `Ok`.
    busy_items: Mutex<HashMap<String, usize>>,
    /// How long a request takes.
    latency: Duration,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

impl Store for FakeStore {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn write(&self, batch: &[&Payload]) -> Result<Vec<ItemResult>, SinkError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.latency).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(e) = self.failures.lock().unwrap().pop() {
            return Err(e);
        }
        let lines: Vec<&str> = batch
            .iter()
            .map(|p| match p {
                Payload::Line(l) => l.as_str(),
                Payload::Document { .. } => unreachable!(),
            })
            .collect();
        if let Some(bad) = lines.iter().find(|l| self.bad_lines.contains(**l)) {
            return Err(SinkError::Status {
                key: "sinks.fake",
                endpoint: "http://fake/write".into(),
                status: 400,
                message: format!("unable to parse '{bad}'"),
            });
        }
        let mut busy = self.busy_items.lock().unwrap();
        Ok(lines
            .iter()
            .map(|l| {
                if self.rejected_items.contains(*l) {
                    return ItemResult::Reject(format!("400 mapper_parsing_exception: {l}"));
                }
                match busy.get_mut(*l) {
                    Some(n) if *n > 0 => {
                        *n -= 1;
                        ItemResult::Retry("429 es_rejected_execution_exception: queue full".into())
                    }
                    _ => ItemResult::Ok,
                }
            })
            .collect())
    }

    async fn ping(&self) -> bool {
        true
    }
}

fn batching(max_records: usize, concurrency: usize) -> BatchingConfig {
    BatchingConfig {
        max_records,
        max_bytes: 1 << 20,
        linger: Duration::from_millis(5),
        retry_initial_backoff: Duration::from_millis(1),
        retry_max_backoff: Duration::from_millis(4),
        concurrency,
    }
}

/// Runs the driver over `n` lines `l0..`, one chunk each; returns each line's acknowledgements and the metrics.
async fn drive(
    store: Arc<FakeStore>,
    n: usize,
    batching: BatchingConfig,
) -> (BTreeMap<String, Vec<Result<(), String>>>, Metrics) {
    let metrics = Metrics::new().unwrap();
    let acks: Acks = Arc::default();
    let (tx, rx) = mpsc::channel(n.max(1));
    for i in 0..n {
        let line = format!("l{i}");
        let ack = TestAck {
            line: line.clone(),
            acks: acks.clone(),
        };
        tx.send(vec![Item {
            payload: Payload::Line(line),
            ack,
        }])
        .await
        .unwrap();
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), run(store, rx, batching, metrics.clone()))
        .await
        .expect("the driver finishes once its queue is closed and drained");
    let mut by_line: BTreeMap<String, Vec<Result<(), String>>> = BTreeMap::new();
    for (line, r) in acks.lock().unwrap().drain(..) {
        by_line.entry(line).or_default().push(r);
    }
    assert_eq!(by_line.len(), n, "every item is acknowledged");
    assert!(
        by_line.values().all(|v| v.len() == 1),
        "exactly once: {by_line:?}"
    );
    (by_line, metrics)
}

fn status(status: u16) -> SinkError {
    SinkError::Status {
        key: "sinks.fake",
        endpoint: "http://fake/write".into(),
        status,
        message: "no".into(),
    }
}

#[tokio::test]
async fn a_split_isolates_the_bad_items_and_writes_the_rest() {
    let store = Arc::new(FakeStore {
        bad_lines: ["l7", "l42", "l43"].map(String::from).into(),
        ..FakeStore::default()
    });
    let (acks, _) = drive(store.clone(), 100, batching(1000, 1)).await;
    for (line, r) in &acks {
        match line.as_str() {
            "l7" | "l42" | "l43" => assert_eq!(
                r[0],
                Err(format!(
                    "http://fake/write answered 400: unable to parse '{line}'"
                ))
            ),
            _ => assert_eq!(r[0], Ok(()), "{line}"),
        }
    }
    let requests = store.requests.load(Ordering::SeqCst);
    assert!(requests < 60, "halving, not one request per item: {requests}");
}

#[tokio::test]
async fn a_single_item_refused_as_a_whole_is_rejected_with_the_store_message() {
    let store = Arc::new(FakeStore {
        bad_lines: ["l0"].map(String::from).into(),
        ..FakeStore::default()
    });
    let (acks, _) = drive(store.clone(), 1, batching(1000, 1)).await;
    assert_eq!(
        acks["l0"][0],
        Err("http://fake/write answered 400: unable to parse 'l0'".into())
    );
    assert_eq!(store.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn failed_requests_are_retried_until_they_succeed() {
    let down = SinkError::Transport {
        key: "sinks.fake",
        endpoint: "http://fake/write".into(),
        message: "connection refused".into(),
    };
    let store = Arc::new(FakeStore {
        failures: Mutex::new(vec![status(401), status(429), down, status(503)]),
        ..FakeStore::default()
    });
    let (acks, metrics) = drive(store.clone(), 10, batching(1000, 1)).await;
    assert!(acks.values().all(|r| r[0].is_ok()), "{acks:?}");
    assert_eq!(store.requests.load(Ordering::SeqCst), 5);
    assert_eq!(metrics.sink_retries.with_label_values(&["fake"]).get(), 4);
    assert_eq!(metrics.sink_up.with_label_values(&["fake"]).get(), 1);
    assert_eq!(metrics.sink_items.with_label_values(&["fake", "ok"]).get(), 10);
}

#[tokio::test]
async fn items_are_acknowledged_with_the_store_reason_and_busy_ones_retried() {
    let store = Arc::new(FakeStore {
        rejected_items: ["l3"].map(String::from).into(),
        busy_items: Mutex::new([("l5".to_string(), 3)].into()),
        ..FakeStore::default()
    });
    let (acks, metrics) = drive(store.clone(), 8, batching(1000, 1)).await;
    assert_eq!(acks["l3"][0], Err("400 mapper_parsing_exception: l3".into()));
    assert_eq!(acks["l5"][0], Ok(()));
    assert_eq!(
        store.requests.load(Ordering::SeqCst),
        4,
        "one, then l5 alone three times"
    );
    assert_eq!(
        metrics.sink_items.with_label_values(&["fake", "rejected"]).get(),
        1
    );
    assert_eq!(metrics.sink_items.with_label_values(&["fake", "ok"]).get(), 7);
}

#[tokio::test]
async fn a_request_rejected_as_a_whole_rejects_every_item_with_the_reason() {
    let store = Arc::new(FakeStore {
        failures: Mutex::new(vec![status(405)]),
        ..FakeStore::default()
    });
    let (acks, _) = drive(store, 4, batching(1000, 1)).await;
    assert!(
        acks.values()
            .all(|r| r[0] == Err("http://fake/write answered 405: no".into())),
        "{acks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_are_bounded_by_concurrency() {
    let store = Arc::new(FakeStore {
        latency: Duration::from_millis(50),
        ..FakeStore::default()
    });
    let (acks, metrics) = drive(store.clone(), 24, batching(2, 3)).await;
    assert!(acks.values().all(|r| r[0].is_ok()));
    assert_eq!(store.max_in_flight.load(Ordering::SeqCst), 3);
    assert_eq!(
        store.requests.load(Ordering::SeqCst),
        12,
        "batches of max_records"
    );
    assert_eq!(
        metrics
            .sink_batch_records
            .with_label_values(&["fake"])
            .get_sample_count(),
        12
    );
}
