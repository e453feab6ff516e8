//! Reading a successful `_bulk` answer: one item per document sent, in order, each with its status and, when
//! it failed, the store's error; the shared policy makes each a result (`<status> <type>: <reason>` when
//! retried or rejected). An answer that cannot be matched to what was sent is an error: the batch is retried.
//!
//! Most answers report no failure at all (`"errors": false`, which Elasticsearch and OpenSearch send with every
//! answer): those are only counted, not built item by item (building every item's object was 2% of the
//! worker's CPU in the pipeline benchmark); any other answer is read in full.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

use crate::sinks::ItemResult;
use crate::sinks::retry;

#[derive(Debug, Deserialize)]
struct BulkAnswer {
    /// One object per action: `{"index": {"status": 201, ...}}`.
    items: Vec<Map<String, Value>>,
}

/// The first look at an answer: whether any item failed, and how many items there are.
#[derive(Debug, Deserialize)]
struct Summary {
    errors: Option<bool>,
    items: Vec<IgnoredAny>,
}

/// Sets the results of the `sent` positions from the answer `text`; fails when it is not a bulk answer for them.
pub(super) fn read(text: &str, sent: &[usize], results: &mut [ItemResult]) -> Result<(), String> {
    let summary: Summary = serde_json::from_str(text).map_err(|e| format!("not a bulk answer: {e}"))?;
    if summary.items.len() != sent.len() {
        return Err(format!(
            "{} items for {} documents",
            summary.items.len(),
            sent.len()
        ));
    }
    if summary.errors == Some(false) {
        for &i in sent {
            if let Some(r) = results.get_mut(i) {
                *r = ItemResult::Ok;
            }
        }
        return Ok(());
    }
    let answer: BulkAnswer = serde_json::from_str(text).map_err(|e| format!("not a bulk answer: {e}"))?;
    for (&i, item) in sent.iter().zip(&answer.items) {
        if let Some(r) = results.get_mut(i) {
            *r = item_result(item);
        }
    }
    Ok(())
}

/// The result of one item: its action's status and error, through the policy. A `create` answered 409 found
/// the document there already: a redelivered record's, written the first time; it is done.
fn item_result(item: &Map<String, Value>) -> ItemResult {
    let Some((action, op)) = item.iter().next() else {
        return ItemResult::Retry("an empty item in the bulk answer".into());
    };
    let status = op["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(0);
    if action == "create" && status == 409 {
        return ItemResult::Ok;
    }
    retry::item_result(status, || match &op["error"] {
        Value::Object(e) => format!(
            "{status} {}: {}",
            e.get("type").and_then(Value::as_str).unwrap_or("error"),
            e.get("reason").and_then(Value::as_str).unwrap_or("")
        ),
        Value::Null => format!("status {status}"),
        other => format!("{status} {other}"),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn results(answer: Value, sent: &[usize], n: usize) -> Result<Vec<ItemResult>, String> {
        let mut results = vec![ItemResult::Ok; n];
        read(&answer.to_string(), sent, &mut results)?;
        Ok(results)
    }

    #[test]
    fn bulk_items_are_classified() {
        let answer = json!({"took": 3, "errors": true, "items": [
            {"index": {"_index": "i", "_id": "1", "status": 201}},
            {"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "queue full"}}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse field [n]"}}},
            {"index": {"status": 503, "error": "unavailable_shards"}},
            {"create": {"status": 409}},
            {"index": {}},
            {"index": {"status": 409, "error": {"type": "version_conflict_engine_exception", "reason": "v"}}},
            {"index": {"status": 403, "error": {"type": "cluster_block_exception", "reason": "index [i] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block]"}}},
            {"index": {"status": 404, "error": {"type": "index_not_found_exception", "reason": "no such index [i]"}}},
        ]});
        let r = results(answer, &[0, 1, 2, 4, 5, 6, 7, 8, 9], 10).unwrap();
        assert_eq!(r[0], ItemResult::Ok);
        assert_eq!(
            r[1],
            ItemResult::Retry("429 es_rejected_execution_exception: queue full".into())
        );
        assert_eq!(
            r[2],
            ItemResult::Reject("400 mapper_parsing_exception: failed to parse field [n]".into())
        );
        assert_eq!(r[3], ItemResult::Ok, "not sent: left as it was");
        assert_eq!(r[4], ItemResult::Retry("503 \"unavailable_shards\"".into()));
        assert_eq!(
            r[5],
            ItemResult::Ok,
            "a create that found its document: a redelivery, done"
        );
        assert_eq!(r[6], ItemResult::Retry("status 0".into()), "no status: retried");
        assert!(matches!(&r[7], ItemResult::Reject(m) if m.starts_with("409 version_conflict")));
        assert!(
            matches!(&r[8], ItemResult::Retry(m) if m.contains("flood-stage")),
            "a cluster block is retried, not dead-lettered: {:?}",
            r[8]
        );
        assert!(matches!(&r[9], ItemResult::Retry(m) if m.starts_with("404 index_not_found")));
    }

    #[test]
    fn answers_that_do_not_match_what_was_sent_are_errors() {
        let one = json!({"items": [{"index": {"status": 201}}]});
        assert!(
            results(one.clone(), &[0, 1], 2)
                .unwrap_err()
                .contains("1 items for 2")
        );
        assert!(results(json!({"error": "x"}), &[0], 1).is_err());
        let mut r = vec![ItemResult::Ok];
        assert!(read("<html>", &[0], &mut r).is_err());
        assert_eq!(results(one, &[0], 1).unwrap(), [ItemResult::Ok]);
    }

    #[test]
    fn an_answer_without_errors_marks_every_sent_item_written_and_is_still_counted() {
        let ok = json!({"took": 1, "errors": false, "items": [
            {"index": {"_index": "i", "_id": "1", "status": 201, "_shards": {"total": 2}}},
            {"create": {"status": 201}},
        ]});
        let mut r = vec![ItemResult::Retry("before".into()); 3];
        read(&ok.to_string(), &[0, 2], &mut r).unwrap();
        assert_eq!(
            r,
            [ItemResult::Ok, ItemResult::Retry("before".into()), ItemResult::Ok]
        );
        assert!(
            results(ok, &[0, 1, 2], 3).unwrap_err().contains("2 items for 3"),
            "the count is checked on this path too"
        );
        // `errors: true` (or no `errors` at all) reads every item.
        let mixed = json!({"errors": true, "items": [
            {"index": {"status": 201}},
            {"index": {"status": 400, "error": {"type": "mapper_parsing_exception", "reason": "r"}}},
        ]});
        let r = results(mixed, &[0, 1], 2).unwrap();
        assert_eq!(r[0], ItemResult::Ok);
        assert!(matches!(&r[1], ItemResult::Reject(m) if m.starts_with("400 mapper")));
    }
}
