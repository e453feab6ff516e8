//! Acknowledgements that cannot be forgotten, against a real Kafka-protocol broker: a share of a record that
//! a stage drops without acknowledging dead-letters the record as `unacknowledged` (counted), and the
//! partition's committable offset moves on past it instead of stalling forever.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use millrace_tests::config::{Binding, TestConfig};
use millrace_tests::{e2e, eventually, unique};
use millrace_worker::metrics::Metrics;
use millrace_worker::pipeline::ack::{Fallback, InFlight, Origin, RecordData};
use millrace_worker::pipeline::dead_letter::DeadLetters;
use millrace_worker::pipeline::offsets::PartitionTracker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_acknowledgement_dead_letters_the_record_and_the_partition_moves_on() -> Result<()> {
    let source = unique("acks-src");
    let dlq_topic = unique("acks-dlq");
    let config = TestConfig::new()
        .binding(Binding::topic(&source).plugin("127.0.0.1:1/x/y:v1"))
        .influxdb_url("http://127.0.0.1:1", "x")
        .parse()?;
    let metrics = Metrics::new()?;
    metrics.initialize(&[]);
    let dlq = DeadLetters::new(
        &config.kafka,
        &dlq_topic,
        metrics.clone(),
        tokio::runtime::Handle::current(),
        millrace_worker::health::Health::new(),
    )?;
    let fallback: Arc<dyn Fallback> = Arc::new(dlq.clone());
    let tracker = PartitionTracker::new(&source, 0);
    let origin = Origin::new(tracker.clone(), None, fallback.clone());
    let take = |offset: i64| {
        InFlight::begin(
            origin.clone(),
            offset,
            RecordData {
                timestamp_ms: Some(1_700_000_000_000 + offset),
                key: Some(b"k".to_vec()),
                value: Some(format!("{{\"rid\":{offset}}}").into_bytes()),
                headers: vec![("origin".into(), Some(b"e2e".to_vec()))],
            },
        )
    };
    // Record 0 has one output queued to a "sink" that forgets it; record 1 finishes normally.
    let first = take(0);
    let output = first.split();
    first.finish();
    take(1).finish();
    assert_eq!(tracker.committable(), Some(0), "record 0 waits for its output");
    drop(output);

    let t = tracker.clone();
    eventually(
        Duration::from_secs(30),
        "the partition to move past the record",
        || {
            let t = t.clone();
            async move { (t.committable() == Some(2)).then_some(()) }
        },
    )
    .await;
    let letters = e2e::dead_letters(&dlq_topic, 1).await?;
    let (kind, topic, offset, kept_header) = letters.get(&0).expect("record 0 was dead-lettered");
    assert_eq!(kind, "unacknowledged");
    assert_eq!(topic, &source);
    assert_eq!(*offset, 0);
    assert!(kept_header, "the original headers are kept");
    let text = metrics.render();
    assert!(
        text.contains("millrace_acks_dropped_total{outcome=\"dead_lettered\"} 1"),
        "{text}"
    );
    assert!(text.contains("millrace_dead_letters_total{kind=\"unacknowledged\"} 1"));
    dlq.flush(Duration::from_secs(5));
    Ok(())
}
