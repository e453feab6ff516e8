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
    /// Lines written (answered `Ok`), in the order the store took them.
    written: Mutex<Vec<String>>,
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
                retry_after: None,
                about_items: true,
            });
        }
        let mut busy = self.busy_items.lock().unwrap();
        let mut written = self.written.lock().unwrap();
        Ok(lines
            .iter()
            .map(|l| {
                let r = self.item(&mut busy, l);
                if r == ItemResult::Ok {
                    written.push(l.to_string());
                }
                r
            })
            .collect())
    }

    async fn ping(&self) -> bool {
        true
    }
}

impl FakeStore {
    /// The verdict on one item of a request answered with success.
    fn item(&self, busy: &mut HashMap<String, usize>, l: &str) -> ItemResult {
        if self.rejected_items.contains(l) {
            return ItemResult::Reject(format!("400 mapper_parsing_exception: {l}"));
        }
        match busy.get_mut(l) {
            Some(n) if *n > 0 => {
                *n -= 1;
                ItemResult::Retry("429 es_rejected_execution_exception: queue full".into())
            }
            _ => ItemResult::Ok,
        }
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
        retry_after: None,
        about_items: true,
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
    // Each of the 3 writers sends its items in batches of 2: 12 requests, one more per writer with an odd
    // number of items.
    let requests = store.requests.load(Ordering::SeqCst);
    assert!(
        (12..=15).contains(&requests),
        "batches of max_records: {requests}"
    );
    assert_eq!(
        metrics
            .sink_batch_records
            .with_label_values(&["fake"])
            .get_sample_count(),
        requests as u64
    );
}

/// Sends each chunk of lines on its own, waiting past the linger between them (so that each is its own batch),
/// and returns once the driver finished.
/// Sends `chunks` 30 ms apart and returns the acknowledgements, in the order given.
async fn drive_chunks(
    store: Arc<FakeStore>,
    chunks: &[&[&str]],
    batching: BatchingConfig,
) -> Vec<(String, Result<(), String>)> {
    let metrics = Metrics::new().unwrap();
    let acks: Acks = Arc::default();
    let (tx, rx) = mpsc::channel(16);
    let driver = tokio::spawn(run(store, rx, batching, metrics));
    for chunk in chunks {
        let items = chunk
            .iter()
            .map(|l| Item {
                payload: Payload::Line(l.to_string()),
                ack: TestAck {
                    line: l.to_string(),
                    acks: acks.clone(),
                },
            })
            .collect();
        tx.send(items).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    drop(tx);
    tokio::time::timeout(Duration::from_secs(20), driver)
        .await
        .expect("the driver finishes")
        .unwrap();
    acks.lock().unwrap().clone()
}

/// The writes of key `m,s=a` in the order the store took them: the last one must be the latest record's.
fn writes_of_key(store: &FakeStore) -> Vec<String> {
    let written = store.written.lock().unwrap();
    written
        .iter()
        .filter(|l| l.starts_with("m,s=a "))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_one_key_land_in_order_also_when_the_first_is_retried() {
    // Two records write the same point (series and timestamp); the first one's batch is retried twice.
    let first = "m,s=a v=1 1700000000000000000";
    let second = "m,s=a v=2 1700000000000000000";
    for concurrency in [1, 4, 16] {
        let store = Arc::new(FakeStore {
            busy_items: Mutex::new([(first.to_string(), 2)].into()),
            ..FakeStore::default()
        });
        let mut b = batching(1000, concurrency);
        b.retry_initial_backoff = Duration::from_millis(40);
        b.retry_max_backoff = Duration::from_millis(80);
        // Usually two batches; on a busy machine the 30 ms apart may still make one (next test).
        let acks = drive_chunks(store.clone(), &[&[first, "x v=1 1"], &[second, "y v=1 2"]], b).await;
        let of_key = writes_of_key(&store);
        assert!(
            of_key.first().map(String::as_str) == Some(first) || of_key.len() == 3,
            "concurrency {concurrency}: {of_key:?}"
        );
        assert_eq!(
            of_key.last().map(String::as_str),
            Some(second),
            "concurrency {concurrency}: the later write lands last ({of_key:?})"
        );
        assert_eq!(acks.len(), 4, "each item acknowledged once: {acks:?}");
        assert!(acks.iter().all(|(_, r)| r.is_ok()), "{acks:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_write_in_the_same_batch_as_a_retried_one_goes_again_after_it() {
    // One batch holds two writes of one point; the store takes the second and asks for the first again (as
    // Elasticsearch answers one `_bulk` item 429 beside its successors).
    let first = "m,s=a v=1 1700000000000000000";
    let second = "m,s=a v=2 1700000000000000000";
    for concurrency in [1, 4] {
        let store = Arc::new(FakeStore {
            busy_items: Mutex::new([(first.to_string(), 1)].into()),
            ..FakeStore::default()
        });
        let mut b = batching(1000, concurrency);
        b.retry_initial_backoff = Duration::from_millis(1);
        let acks = drive_chunks(store.clone(), &[&[first, "x v=1 1", second, "y v=1 2"]], b).await;
        assert_eq!(
            writes_of_key(&store),
            [second, first, second],
            "concurrency {concurrency}: the second write went again after the first's retry"
        );
        let written = store.written.lock().unwrap().clone();
        assert_eq!(
            written
                .iter()
                .filter(|l| l.starts_with("x ") || l.starts_with("y "))
                .count(),
            2,
            "other keys are not written again: {written:?}"
        );
        let mut acked: Vec<&str> = acks.iter().map(|(l, _)| l.as_str()).collect();
        acked.sort_unstable();
        assert_eq!(
            acked,
            [first, second, "x v=1 1", "y v=1 2"],
            "each acknowledged once"
        );
        assert!(acks.iter().all(|(_, r)| r.is_ok()), "{acks:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stores_retry_after_is_waited_for() {
    let mut busy = status(503);
    if let SinkError::Status { retry_after, .. } = &mut busy {
        *retry_after = Some(Duration::from_secs(10));
    }
    let store = Arc::new(FakeStore {
        failures: Mutex::new(vec![busy]),
        ..FakeStore::default()
    });
    let started = tokio::time::Instant::now();
    let (acks, _) = drive(store.clone(), 3, batching(1000, 1)).await;
    assert!(acks.values().all(|r| r[0].is_ok()));
    assert!(
        started.elapsed() >= Duration::from_secs(10),
        "retried after the store's Retry-After, not the 1-4 ms backoff: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_400_about_the_request_is_retried_not_split_into_rejections() {
    let mut about_request = status(400);
    if let SinkError::Status { about_items, .. } = &mut about_request {
        *about_items = false;
    }
    let store = Arc::new(FakeStore {
        failures: Mutex::new(vec![about_request]),
        ..FakeStore::default()
    });
    let (acks, _) = drive(store.clone(), 6, batching(1000, 1)).await;
    assert!(acks.values().all(|r| r[0].is_ok()), "{acks:?}");
    assert_eq!(store.requests.load(Ordering::SeqCst), 2, "retried whole, once");
}
