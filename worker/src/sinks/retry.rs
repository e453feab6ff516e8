//! The one retry policy of every sink, and the backoff between retries. Both stores answer over HTTP, so one
//! table decides, from a status, what becomes of a whole request, and of an item of a bulk answer.
//!
//! | whole request                              | verdict  |
//! | ---                                        | ---      |
//! | 2xx                                        | ok (a bulk answer is then read item by item) |
//! | 400, 413, 422 about the items sent         | `Split`  |
//! | 400, 413, 422 about the request itself     | `Retry`  |
//! | 408, 429, 5xx                              | `Retry`  |
//! | 401, 403, 404                              | `Retry`  |
//! | no answer (connection, TLS, timeout), or an unreadable one | `Retry` |
//! | anything else                              | `Reject` |
//!
//! - `Split`: a bad line (InfluxDB), a bad document or a proxy's body limit (Elasticsearch). The batch is halved
//!   until the bad items are alone, instead of rejecting the outputs of many clients with them; a single item
//!   is rejected with the store's message.
//! - `Retry` on 408, 429, 5xx and no answer: the store is busy or down; the same request may succeed later.
//! - `Retry` on 401, 403, 404, and on a 400 about the request itself (InfluxDB: a missing or invalid
//!   parameter, not a line): a configuration problem (credentials, database, bucket, a read-only or flood-stage
//!   cluster block) an operator fixes; the data is kept, partitions pause, metrics and logs say why.
//! - `Reject`: retrying cannot help; every item is dead-lettered with the store's message.
//!
//! | bulk item               | result   |
//! | ---                     | ---      |
//! | 2xx                     | ok       |
//! | 409 of a `create` (data streams): the document is there already (a redelivery) | ok |
//! | 408, 429, 5xx, 0 (no status) | `Retry` |
//! | 401, 403 (a cluster block: read-only index, flood stage), 404 (index missing, auto-creation off) | `Retry` |
//! | anything else           | `Reject` with `<status> <type>: <reason>` |
//!
//! Retries have no limit: nothing is dropped. A store's `Retry-After` (seconds or an HTTP date, up to
//! [`MAX_RETRY_AFTER`]) is honoured: the retry waits at least that long.

use std::time::Duration;

use super::{ItemResult, SinkError};

/// What becomes of a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Written.
    Ok,
    /// Send the same request again, after a backoff.
    Retry,
    /// Send each half of the batch on its own; a single item is rejected.
    Split,
    /// Reject every item with the store's message.
    Reject,
}

/// The longest `Retry-After` honoured (a store asking for more is asked again then).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The verdict on a request the store answered with `status`.
pub fn status_verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Ok,
        400 | 413 | 422 => Verdict::Split,
        408 | 429 | 500..=599 => Verdict::Retry,
        401 | 403 | 404 => Verdict::Retry,
        _ => Verdict::Reject,
    }
}

/// The verdict on a request that failed as a whole.
pub fn request_verdict(error: &SinkError) -> Verdict {
    match error {
        SinkError::Status {
            status, about_items, ..
        } => match status_verdict(*status) {
            // A success reported as a failure is a bug; sending again loses nothing.
            Verdict::Ok => Verdict::Retry,
            // About the request, not the items: no split can fix it.
            Verdict::Split if !about_items => Verdict::Retry,
            v => v,
        },
        SinkError::Transport { .. } | SinkError::Response { .. } => Verdict::Retry,
        // Configuration errors: no request was sent, and sending one will not fix them.
        SinkError::Ca { .. } | SinkError::Url { .. } | SinkError::Client { .. } => Verdict::Reject,
    }
}

/// The result of one item of a bulk answer, from its status; `reason` (`<status> <type>: <reason>`) is only
/// built for a failed item.
pub fn item_result(status: u16, reason: impl FnOnce() -> String) -> ItemResult {
    match status {
        200..=299 => ItemResult::Ok,
        0 | 408 | 429 | 500..=599 | 401 | 403 | 404 => ItemResult::Retry(reason()),
        _ => ItemResult::Reject(reason()),
    }
}

/// The delay before retrying a failed request: the backoff's, or longer when the store said so.
pub fn retry_delay(error: &SinkError, backoff: &mut Backoff) -> Duration {
    let step = backoff.next_delay();
    match error {
        SinkError::Status {
            retry_after: Some(after),
            ..
        } => step.max((*after).min(MAX_RETRY_AFTER)),
        _ => step,
    }
}

/// Exponential backoff with jitter: each delay is uniformly random between half and all of the current step,
/// which doubles up to the cap. Jitter keeps many workers that failed together from retrying together.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
    /// A small non-cryptographic generator (wyrand), seeded per backoff from the thread's generator.
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            next: initial,
            initial,
            max,
            rng: fastrand::Rng::new(),
        }
    }

    /// The next delay; the step then doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        step.mul_f64(0.5 + self.rng.f64() / 2.0)
    }

    /// Back to the initial step, after a success.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_requests_follow_the_table() {
        for s in [200, 201, 204, 299] {
            assert_eq!(status_verdict(s), Verdict::Ok, "{s}");
        }
        for s in [400, 413, 422] {
            assert_eq!(status_verdict(s), Verdict::Split, "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 599, 401, 403, 404] {
            assert_eq!(status_verdict(s), Verdict::Retry, "{s}");
        }
        for s in [0, 100, 301, 304, 402, 405, 409, 410, 415, 451, 600] {
            assert_eq!(status_verdict(s), Verdict::Reject, "{s}");
        }
    }

    #[test]
    fn failed_requests_without_an_answer_are_retried() {
        let transport = SinkError::Transport {
            key: "sinks.influxdb",
            endpoint: "x".into(),
            message: "refused".into(),
        };
        assert_eq!(request_verdict(&transport), Verdict::Retry);
        let unreadable = SinkError::Response {
            key: "sinks.elasticsearch",
            endpoint: "_bulk".into(),
            message: "EOF".into(),
        };
        assert_eq!(request_verdict(&unreadable), Verdict::Retry);
        let status = |status| SinkError::Status {
            key: "sinks.influxdb",
            endpoint: "x".into(),
            status,
            message: String::new(),
            retry_after: None,
            about_items: true,
        };
        assert_eq!(request_verdict(&status(413)), Verdict::Split);
        assert_eq!(request_verdict(&status(405)), Verdict::Reject);
        assert_eq!(request_verdict(&status(204)), Verdict::Retry);
        let about_request = SinkError::Status {
            key: "sinks.influxdb",
            endpoint: "x".into(),
            status: 400,
            message: "database is required".into(),
            retry_after: None,
            about_items: false,
        };
        assert_eq!(
            request_verdict(&about_request),
            Verdict::Retry,
            "a 400 about the request is not split into rejections of every item"
        );
    }

    #[test]
    fn a_stores_retry_after_is_honoured_up_to_a_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let asked = |after| SinkError::Status {
            key: "sinks.elasticsearch",
            endpoint: "_bulk".into(),
            status: 429,
            message: String::new(),
            retry_after: after,
            about_items: true,
        };
        assert!(retry_delay(&asked(None), &mut b) <= Duration::from_millis(200));
        assert_eq!(
            retry_delay(&asked(Some(Duration::from_secs(7))), &mut b),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(&asked(Some(Duration::from_secs(86_400))), &mut b),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn bulk_items_follow_the_table() {
        let r = || "r".to_string();
        assert_eq!(item_result(201, r), ItemResult::Ok);
        for s in [0, 408, 429, 500, 503, 401, 403, 404] {
            assert_eq!(item_result(s, r), ItemResult::Retry("r".into()), "{s}");
        }
        for s in [400, 409, 413] {
            assert_eq!(item_result(s, r), ItemResult::Reject("r".into()), "{s}");
        }
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[7] >= Duration::from_millis(500) && delays[7] <= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn backoffs_started_together_do_not_retry_together() {
        let delays: Vec<Duration> = (0..16)
            .map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_delay())
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]), "{delays:?}");
    }
}
