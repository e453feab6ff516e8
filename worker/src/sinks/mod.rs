//! Sinks: batches of outputs in, per-item acknowledgements out. A sink knows nothing of plugins or Kafka: it
//! receives payloads with an acknowledgement handle and acknowledges each one as written or rejected with the
//! store's reason. While a store is down its queue fills up, the pipeline stops feeding it and pauses the
//! partitions behind it: memory stays bounded.
//!
//! The shape follows Vector's sinks: what is specific to a store lives in its folder (`influxdb/`,
//! `elasticsearch/`: encoding a request, sending it, reading the answer), what is common lives here once:
//! - [`retry`]: the one policy saying, from an HTTP status, whether a request is retried, split or rejected,
//!   and whether a bulk item is retried or rejected; the backoff with jitter;
//! - [`driver`]: batching (records, bytes, linger), batches in flight, applying the policy, acknowledging;
//! - [`tls`]: the one loader of a `ca_file`;
//! - [`error`]: [`SinkError`], naming the configuration key each failure is about;
//! - [`topology`]: [`Sinks::start`], every configured sink started from the configuration in one call.

mod driver;
pub mod elasticsearch;
mod error;
pub mod influxdb;
pub mod retry;
pub mod tls;
mod topology;

pub use self::driver::run;
pub use self::elasticsearch::ElasticsearchStore;
pub use self::error::{CaProblem, SinkError};
pub use self::influxdb::InfluxStore;
pub use self::retry::{Backoff, Verdict};
pub use self::topology::{Pinger, SinkTasks, Sinks, pinger};

use tokio::sync::mpsc;

/// One output to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// One line of InfluxDB line protocol, with its timestamp.
    Line(String),
    /// One document: index, id, compact JSON object body.
    Document { index: String, id: String, body: String },
}

impl Payload {
    /// Approximate bytes on the wire, for batching by size.
    pub fn len(&self) -> usize {
        match self {
            Self::Line(l) => l.len() + 1,
            Self::Document { index, id, body } => index.len() + id.len() + body.len() + 40,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What happens to an item once the store answered.
pub trait Acker: Send + 'static {
    /// Written.
    fn ok(self);
    /// Written, every one of them (the items of an answered request): one call, so that an implementation
    /// can share the work of acknowledging them.
    fn ok_all(acks: Vec<Self>)
    where
        Self: Sized,
    {
        for ack in acks {
            ack.ok();
        }
    }
    /// Refused by the store for good, with its reason.
    fn rejected(self, reason: String);
}

/// One item handed to a sink.
#[derive(Debug)]
pub struct Item<A> {
    pub payload: Payload,
    pub ack: A,
}

/// A store's verdict on one item of a request it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemResult {
    Ok,
    /// Not written now, may be later (429, 5xx of one item).
    Retry(String),
    /// Refused for good (mapping error, malformed line).
    Reject(String),
}

/// The protocol side of a sink: one request, one answer. Retrying, splitting and acknowledging are the
/// driver's, after [`retry`]'s policy.
pub trait Store: Send + Sync + 'static {
    /// The sink's name: a metric label and log field.
    fn name(&self) -> &'static str;

    /// Writes a batch in one request. `Ok`: the store answered with success, one result per payload, in order.
    /// `Err`: the request as a whole failed ([`SinkError::Status`] for an answer with an error status).
    fn write(
        &self,
        batch: &[&Payload],
    ) -> impl std::future::Future<Output = Result<Vec<ItemResult>, SinkError>> + Send;

    /// A cheap reachability check for readiness.
    fn ping(&self) -> impl std::future::Future<Output = bool> + Send;
}

/// A sink's queue: a bounded channel of chunks of items (the outputs of one record for this sink), so that a
/// record costs one hand-over, not one per output.
pub type SinkSender<A> = mpsc::Sender<Vec<Item<A>>>;
