//! Stage 3 of the pipeline, the router: each output of an accepted record is checked against its binding's
//! allowed indices and measurements, given its deterministic id (documents: `topic-partition-offset-n`, so a
//! redelivered record overwrites itself) or its default timestamp (points without one get the record's), and
//! queued to its sinks with one share of the record each. Outputs not allowed, or for a store that is not
//! configured, dead-letter the record as `output_not_allowed`; the allowed ones are still written.

use millrace_runtime::Output;

use super::ack::Share;
use super::lane::BindingMetrics;
use crate::bindings::Binding;
use crate::kinds::DeadLetterKind;
use crate::sinks::{Item, Payload, SinkSender};

/// Where outputs go: every configured InfluxDB sink gets every point; documents go to Elasticsearch.
#[derive(Clone, Debug)]
pub(super) struct Router {
    pub(super) points: Vec<SinkSender<Share>>,
    pub(super) documents: Option<SinkSender<Share>>,
}

impl Router {
    /// Routes `outputs` of the record `share` belongs to; the caller then finishes its own share.
    pub(super) fn route(&self, binding: &Binding, share: &Share, outputs: Vec<Output>, bm: &BindingMetrics) {
        let rec = share.record();
        // One chunk per sink: index 0.. for the InfluxDB sinks, then the Elasticsearch sink.
        let n_sinks = self.points.len() + 1;
        let mut chunks: Vec<Vec<Item<Share>>> = (0..n_sinks).map(|_| Vec::new()).collect();
        let mut refused: Vec<String> = Vec::new();
        let default_ts_ns = rec
            .timestamp_ms
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            })
            .saturating_mul(1_000_000);
        for (i, output) in outputs.into_iter().enumerate() {
            match output {
                Output::Point(p) => {
                    bm.points.inc();
                    if !binding.config.allows_measurement(p.measurement()) {
                        refused.push(format!(
                            "output {i}: measurement `{}` is not allowed",
                            p.measurement()
                        ));
                    } else if self.points.is_empty() {
                        refused.push(format!("output {i}: a point, and no InfluxDB sink is configured"));
                    } else {
                        let line = p.line_with_default_timestamp(default_ts_ns);
                        let last = self.points.len() - 1;
                        for chunk in chunks.iter_mut().take(last) {
                            chunk.push(Item {
                                payload: Payload::Line(line.clone()),
                                ack: share.split(),
                            });
                        }
                        chunks[last].push(Item {
                            payload: Payload::Line(line),
                            ack: share.split(),
                        });
                    }
                }
                Output::Document(d) => {
                    bm.documents.inc();
                    if !binding.config.allows_index(d.index()) {
                        refused.push(format!("output {i}: index `{}` is not allowed", d.index()));
                    } else if self.documents.is_some() {
                        let id = d.id().map_or_else(
                            || format!("{}-{}-{}-{i}", rec.topic, rec.partition, rec.offset),
                            str::to_string,
                        );
                        let (index, body, _) = d.into_parts();
                        chunks[n_sinks - 1].push(Item {
                            payload: Payload::Document { index, id, body },
                            ack: share.split(),
                        });
                    } else {
                        refused.push(format!(
                            "output {i}: a document, and no Elasticsearch sink is configured"
                        ));
                    }
                }
            }
        }
        for (k, chunk) in chunks.into_iter().enumerate() {
            if chunk.is_empty() {
                continue;
            }
            let sender = if k < self.points.len() {
                &self.points[k]
            } else {
                match &self.documents {
                    Some(s) => s,
                    None => continue,
                }
            };
            // Blocks while the sink's queue is full: backpressure, and the partition pauses behind it.
            if let Err(e) = sender.blocking_send(chunk) {
                // The sink is gone: the chunk's shares are dropped, which dead-letters the record visibly
                // (or leaves it for redelivery when the pipeline is stopping).
                tracing::warn!(error = %e, "sink queue closed");
            }
        }
        if !refused.is_empty() {
            share
                .split()
                .dead_letter(DeadLetterKind::OutputNotAllowed, refused.join("; "));
        }
    }
}
