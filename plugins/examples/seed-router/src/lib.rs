//! `seed-router`: the seed design's logic with the SDK.
//!
//! - `{"type":"metric","source":S,"unit":U,"value":V[,"timestamp":ms]}` -> InfluxDB point
//!   `env_metrics,source=S,unit=U value=V [ts]`
//! - `{"type":"log","service":S,...}` -> the record, as a document in index `S-logs-daily`
//! - anything else -> rejected (dead-letter topic) with the reason.

use std::borrow::Cow;

use millrace_plugin_sdk::{Output, Point, Record, Reject, plugin};
use serde::Deserialize;

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    source: Option<Cow<'a, str>>,
    #[serde(borrow)]
    unit: Option<Cow<'a, str>>,
    value: Option<f64>,
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    timestamp: Option<i64>,
}

/// Routes one record: metrics to InfluxDB, logs to Elasticsearch, anything else to the dead-letter topic.
pub fn route(record: &Record<'_>, out: &mut Output) -> Result<(), Reject> {
    let msg: Incoming = record.json()?;
    match msg.kind.as_deref() {
        Some("metric") => {
            let source = msg.source.ok_or("metric without `source`")?;
            let value = msg.value.ok_or("metric without a numeric `value`")?;
            let unit = msg.unit.as_deref().unwrap_or("none");
            let mut point = Point::new("env_metrics")
                .tag("source", &source)
                .tag("unit", unit)
                .field("value", value);
            if let Some(ts) = msg.timestamp {
                point = point.timestamp_ms(ts);
            }
            out.point(&point);
            Ok(())
        }
        Some("log") => {
            let service = msg.service.ok_or("log without `service`")?;
            if service.is_empty()
                || !service
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Reject::new(format!(
                    "service name `{service}` is not usable in an index name"
                )));
            }
            let index = format!("{}-logs-daily", service.to_ascii_lowercase());
            out.document_json(&index, record.value().unwrap_or_default(), None);
            Ok(())
        }
        Some(other) => Err(Reject::new(format!("unknown record type `{other}`"))),
        None => Err(Reject::new("record without `type`")),
    }
}

plugin!(route);

#[cfg(test)]
mod tests {
    use super::*;
    use millrace_plugin_sdk::testing::{TestRecord, run};

    #[test]
    fn metrics_become_points() {
        let o = run(
            route,
            &TestRecord::json(
                r#"{"type":"metric","source":"sensor 1","unit":"C","value":21.5,"timestamp":1700000000123}"#,
            ),
        );
        assert_eq!(
            o.points,
            [r"env_metrics,source=sensor\ 1,unit=C value=21.5 1700000000123000000"]
        );
        assert!(o.documents.is_empty() && o.rejected.is_none());
        let o = run(
            route,
            &TestRecord::json(r#"{"type":"metric","source":"s","value":3}"#),
        );
        assert_eq!(o.points, ["env_metrics,source=s,unit=none value=3"]);
    }

    #[test]
    fn logs_become_documents_in_the_service_index() {
        let body = r#"{"type":"log","service":"Checkout","level":"error","message":"boom"}"#;
        let o = run(route, &TestRecord::json(body));
        assert_eq!(o.documents.len(), 1);
        assert_eq!(o.documents[0].index, "checkout-logs-daily");
        assert_eq!(o.documents[0].body, body);
        assert_eq!(o.documents[0].id, None);
    }

    #[test]
    fn everything_else_is_rejected_with_a_reason() {
        for (input, reason) in [
            (r#"{"type":"trace"}"#, "unknown record type `trace`"),
            (r#"{"value":1}"#, "record without `type`"),
            (r#"{"type":"metric","value":1}"#, "metric without `source`"),
            (
                r#"{"type":"log","service":"a/b"}"#,
                "service name `a/b` is not usable in an index name",
            ),
        ] {
            assert_eq!(
                run(route, &TestRecord::json(input)).rejected.as_deref(),
                Some(reason)
            );
        }
        let o = run(route, &TestRecord::json("{not json"));
        assert!(o.rejected.unwrap().starts_with("invalid JSON"));
    }
}
