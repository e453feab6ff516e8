//! The `_bulk` request body, built in one place: per document an action line serialized by serde (so that any
//! index or id, with quotes, backslashes, control characters or any unicode, is valid JSON) and the document,
//! which is already one line of compact JSON. Nothing is escaped by hand.

use serde::Serialize;

use crate::sinks::{ItemResult, Payload};

/// `{"index":{"_index":..,"_id":..}}`, or `{"create":{...}}` for a data stream.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Action<'a> {
    Index(Target<'a>),
    Create(Target<'a>),
}

#[derive(Debug, Serialize)]
struct Target<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

/// A `_bulk` body for a batch.
#[derive(Debug)]
pub(super) struct Bulk {
    /// NDJSON: action and document lines, each ended by a newline.
    pub body: Vec<u8>,
    /// Positions in the batch of the documents in the body, in order: the answer's items map to them.
    pub sent: Vec<usize>,
    /// One result per payload of the batch: `Ok` for those sent (until the answer says otherwise), `Reject`
    /// for those that cannot be sent.
    pub results: Vec<ItemResult>,
}

/// Whether `index` matches one of the data stream globs (`*` matches any run of characters).
pub(super) fn is_data_stream(globs: &[String], index: &str) -> bool {
    globs.iter().any(|g| glob_matches(g.as_bytes(), index.as_bytes()))
}

fn glob_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| glob_matches(rest, &name[i..])),
        Some((c, rest)) => name.first() == Some(c) && glob_matches(rest, &name[1..]),
    }
}

/// Encodes the documents of `batch`; a point (misrouted) or a body that is not one line is rejected, not sent.
/// Documents of indices matching `data_streams` are written with `create`.
pub(super) fn encode(batch: &[&Payload], data_streams: &[String]) -> Result<Bulk, serde_json::Error> {
    let mut body = Vec::with_capacity(batch.iter().map(|p| p.len()).sum());
    let mut sent = Vec::with_capacity(batch.len());
    let mut results = vec![ItemResult::Ok; batch.len()];
    // The documents of a batch mostly share their index: its glob match is kept for the next document.
    let mut last: Option<(&str, bool)> = None;
    for (i, p) in batch.iter().enumerate() {
        match p {
            Payload::Document { index, id, body: doc } => {
                if doc.is_empty() || memchr::memchr2(b'\n', b'\r', doc.as_bytes()).is_some() {
                    results[i] = ItemResult::Reject("the document is not one line of JSON".into());
                    continue;
                }
                let stream = match last {
                    Some((name, stream)) if name == index.as_str() => stream,
                    _ => {
                        let stream = is_data_stream(data_streams, index);
                        last = Some((index, stream));
                        stream
                    }
                };
                let target = Target { index, id };
                let action = if stream {
                    Action::Create(target)
                } else {
                    Action::Index(target)
                };
                serde_json::to_writer(&mut body, &action)?;
                body.push(b'\n');
                body.extend_from_slice(doc.as_bytes());
                body.push(b'\n');
                sent.push(i);
            }
            Payload::Line(_) => results[i] = ItemResult::Reject("a point was routed to Elasticsearch".into()),
        }
    }
    Ok(Bulk { body, sent, results })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn doc(index: &str, id: &str, body: &str) -> Payload {
        Payload::Document {
            index: index.into(),
            id: id.into(),
            body: body.into(),
        }
    }

    fn encode_plain(batch: &[&Payload]) -> Result<Bulk, serde_json::Error> {
        encode(batch, &[])
    }

    #[test]
    fn data_streams_are_written_with_create_and_other_indices_with_index() {
        let globs = ["logs-*-*".to_string(), "events".to_string()];
        // Runs of one index and changes between them: each document gets its own index's action.
        let payloads = [
            doc("logs-app-default", "1", "{}"),
            doc("logs-app", "2", "{}"),
            doc("logs-app", "2b", "{}"),
            doc("events", "3", "{}"),
            doc("events", "3b", "{}"),
            doc("events-x", "4", "{}"),
            doc("logs-app-default", "5", "{}"),
            doc("logs-app-default", "6", "{}"),
        ];
        let bulk = encode(&payloads.iter().collect::<Vec<_>>(), &globs).unwrap();
        let actions: Vec<String> = lines(&bulk.body)
            .iter()
            .step_by(2)
            .map(|a| a.as_object().unwrap().keys().next().unwrap().clone())
            .collect();
        assert_eq!(
            actions,
            [
                "create", "index", "index", "create", "create", "index", "create", "create"
            ]
        );
        assert!(is_data_stream(&globs, "logs-a-b-c"));
        assert!(!is_data_stream(&globs, "xlogs-a-b"));
    }

    /// The body's lines, each parsed back with serde_json.
    fn lines(body: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(body).unwrap();
        assert!(text.ends_with('\n'), "NDJSON ends with a newline");
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn any_index_and_id_round_trip_through_the_action_line() {
        let awkward = [
            ("logs", "plain"),
            ("quo\"te", "back\\slash"),
            ("ctl\u{0}\u{1}\u{1f}", "tab\tnew\nline\rcr"),
            ("ünïcödé-日本語", "emoji-🦀-\u{2028}\u{2029}"),
            ("", "\u{7f}\u{ffff}"),
            ("{\"index\":{}}", "\"}}\n{\"delete\":{\"_id\":\"x\"}}"),
        ];
        let payloads: Vec<Payload> = awkward
            .iter()
            .map(|(index, id)| doc(index, id, r#"{"msg":"a \"quoted\" \\ line\u0000"}"#))
            .collect();
        let refs: Vec<&Payload> = payloads.iter().collect();
        let bulk = encode_plain(&refs).unwrap();
        assert_eq!(bulk.sent, (0..awkward.len()).collect::<Vec<_>>());
        assert!(bulk.results.iter().all(|r| *r == ItemResult::Ok));
        let lines = lines(&bulk.body);
        assert_eq!(
            lines.len(),
            2 * awkward.len(),
            "one action and one document line each"
        );
        for (pair, (index, id)) in lines.chunks(2).zip(awkward) {
            assert_eq!(pair[0], json!({"index": {"_index": index, "_id": id}}));
            assert_eq!(pair[1], json!({"msg": "a \"quoted\" \\ line\u{0}"}));
        }
    }

    #[test]
    fn documents_are_sent_as_given() {
        let d = r#"{"b":1,"a":[true,null,"é"],"n":1.5e3}"#;
        let payloads = [doc("i", "1", d)];
        let bulk = encode_plain(&payloads.iter().collect::<Vec<_>>()).unwrap();
        let text = String::from_utf8(bulk.body).unwrap();
        assert_eq!(
            text,
            format!("{{\"index\":{{\"_index\":\"i\",\"_id\":\"1\"}}}}\n{d}\n")
        );
    }

    #[test]
    fn what_cannot_be_sent_is_rejected_and_left_out() {
        let payloads = [
            doc("i", "1", "{}"),
            Payload::Line("cpu value=1".into()),
            doc("i", "2", "{\n\"pretty\": true\n}"),
            doc("i", "3", "{\"ok\":1}"),
            doc("i", "4", "{\"a\":\"x\"}\r"),
            doc("i", "5", ""),
        ];
        let bulk = encode_plain(&payloads.iter().collect::<Vec<_>>()).unwrap();
        assert_eq!(bulk.sent, [0, 3]);
        assert!(matches!(&bulk.results[1], ItemResult::Reject(r) if r.contains("point")));
        for rejected in [2, 4, 5] {
            assert!(matches!(&bulk.results[rejected], ItemResult::Reject(r) if r.contains("one line")));
        }
        let lines = lines(&bulk.body);
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[2]["index"]["_id"], "3");
    }

    #[test]
    fn an_empty_batch_is_an_empty_body() {
        let bulk = encode_plain(&[]).unwrap();
        assert!(bulk.body.is_empty() && bulk.sent.is_empty() && bulk.results.is_empty());
    }
}
