//! Topic ids (KIP-516): the broker's identifier of one incarnation of a topic. A topic deleted and created
//! again keeps its name and restarts its offsets at 0, but gets a new id; default document ids carry it so
//! the new topic's records never overwrite the old topic's documents (`router::default_document_id`).
//!
//! rust-rdkafka does not expose topic ids, so this module asks librdkafka's Admin API (`DescribeTopics`,
//! librdkafka >= 2.3) directly through `rdkafka-sys`, on the consumer's own client handle. It is the only
//! unsafe code of the worker: every handle it creates is destroyed by a guard, and nothing it returns
//! borrows librdkafka memory.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::time::{Duration, Instant};

use base64::Engine as _;
use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};

/// What the broker said of one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicId {
    /// The topic's id, in Kafka's own text form (URL-safe base64 without padding, as `kafka-topics.sh
    /// --describe` prints it).
    Id(String),
    /// The broker does not assign topic ids (it answered with the all-zero id).
    NotReported,
}

/// Why a lookup gave no answer for a topic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("the topic id lookup failed: {0}")]
    Request(String),
    #[error("the topic id lookup got no answer within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused to describe the topic: {0}")]
    Topic(String),
}

/// Asks the cluster for the ids of `topics` through `client` (any client: the consumer's own handle is
/// used, so no second connection is opened). Topics the broker did not describe are missing from the map.
pub fn describe<C: ClientContext>(
    client: &Client<C>,
    topics: &[&str],
    timeout: Duration,
) -> Result<HashMap<String, Result<TopicId, LookupError>>, LookupError> {
    let names: Vec<CString> = topics.iter().filter_map(|t| CString::new(*t).ok()).collect();
    let mut ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
    let rk = client.native_ptr();
    // SAFETY: `rk` is the live handle of `client`, borrowed for the whole call. Each object created below is
    // owned by a guard that destroys it exactly once, after every pointer derived from it is last used:
    // the collection and options are copied by `DescribeTopics`; the result's descriptions belong to the
    // event, which outlives the loop that reads them; the strings read are copied into owned `String`s.
    unsafe {
        let collection = Guard(
            rd::rd_kafka_TopicCollection_of_topic_names(ptrs.as_mut_ptr(), ptrs.len()),
            rd::rd_kafka_TopicCollection_destroy,
        );
        let options = Guard(
            rd::rd_kafka_AdminOptions_new(rk, rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBETOPICS),
            rd::rd_kafka_AdminOptions_destroy,
        );
        let mut errstr = [0 as c_char; 256];
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        rd::rd_kafka_AdminOptions_set_request_timeout(options.0, ms, errstr.as_mut_ptr(), errstr.len());
        let queue = Guard(rd::rd_kafka_queue_new(rk), rd::rd_kafka_queue_destroy);
        rd::rd_kafka_DescribeTopics(rk, collection.0, options.0, queue.0);
        let deadline = Instant::now() + timeout + Duration::from_millis(500);
        let event = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(LookupError::Timeout(timeout));
            }
            let ev = rd::rd_kafka_queue_poll(queue.0, i32::try_from(left.as_millis()).unwrap_or(i32::MAX));
            if ev.is_null() {
                continue;
            }
            let ev = Guard(ev, rd::rd_kafka_event_destroy);
            if rd::rd_kafka_event_type(ev.0) == rd::RD_KAFKA_EVENT_DESCRIBETOPICS_RESULT {
                break ev;
            }
        };
        if rd::rd_kafka_event_error(event.0) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(LookupError::Request(text(rd::rd_kafka_event_error_string(
                event.0,
            ))));
        }
        let result = rd::rd_kafka_event_DescribeTopics_result(event.0);
        if result.is_null() {
            return Err(LookupError::Request("no DescribeTopics result".into()));
        }
        let mut n = 0usize;
        let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut n);
        let mut out = HashMap::new();
        if descriptions.is_null() {
            return Ok(out);
        }
        for &d in std::slice::from_raw_parts(descriptions, n) {
            if d.is_null() {
                continue;
            }
            let name = text(rd::rd_kafka_TopicDescription_name(d));
            let error = rd::rd_kafka_TopicDescription_error(d);
            if !error.is_null()
                && rd::rd_kafka_error_code(error) != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            {
                let reason = text(rd::rd_kafka_error_string(error));
                out.insert(name, Err(LookupError::Topic(reason)));
                continue;
            }
            let id = rd::rd_kafka_TopicDescription_topic_id(d);
            let answer = if id.is_null() {
                TopicId::NotReported
            } else {
                from_bits(
                    rd::rd_kafka_Uuid_most_significant_bits(id),
                    rd::rd_kafka_Uuid_least_significant_bits(id),
                )
            };
            out.insert(name, Ok(answer));
        }
        Ok(out)
    }
}

/// A topic id from its two halves, as Kafka prints it; the all-zero id means the broker has none.
fn from_bits(most: i64, least: i64) -> TopicId {
    if most == 0 && least == 0 {
        return TopicId::NotReported;
    }
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&most.to_be_bytes());
    bytes[8..].copy_from_slice(&least.to_be_bytes());
    TopicId::Id(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// A C string librdkafka owns, copied.
///
/// # Safety
/// `p` is null or a NUL-terminated string valid for the call.
unsafe fn text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the caller's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Destroys a librdkafka object when dropped.
struct Guard<T>(*mut T, unsafe extern "C" fn(*mut T));

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from the matching constructor and is destroyed only here.
            unsafe { (self.1)(self.0) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{TopicId, from_bits};

    #[test]
    fn ids_print_as_kafka_prints_them() {
        // librdkafka printed this id for a topic of tansu (checked with the confluent-kafka binding).
        assert_eq!(
            from_bits(0x01a2_4610_8738_7290, 0x8704_79e8_12b4_b25bu64 as i64),
            TopicId::Id("AaJGEIc4cpCHBHnoErSyWw".into())
        );
        assert_eq!(from_bits(0, 0), TopicId::NotReported);
    }
}
