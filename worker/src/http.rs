//! The observability endpoints: `/metrics` (Prometheus text format), `/healthz` (the process is alive) and
//! `/readyz` (the worker joined its consumer group and every store answers).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::WorkerError;
use crate::metrics::Metrics;
use crate::pipeline::Readiness;
/// Moved to the sinks; re-exported for the readiness inputs that name it here.
pub use crate::sinks::Pinger;

#[derive(Clone, Debug)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
}

async fn metrics_handler(State(s): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    // A worker without bindings has nothing to join; it is ready to receive some.
    let idle = s.readiness.table.snapshot().is_empty();
    if !idle && !s.readiness.joined.load(Ordering::Acquire) {
        problems.push("not yet in the consumer group".to_string());
    }
    for (name, ping) in &s.readiness.stores {
        let ok = tokio::time::timeout(Duration::from_secs(2), ping.ping())
            .await
            .unwrap_or(false);
        if !ok {
            problems.push(format!("{name} unreachable"));
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", problems.join(", ")),
        )
    }
}

/// Binds the address and serves in the background; the handle stops it.
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    readiness: Readiness,
) -> Result<tokio::task::JoinHandle<()>, WorkerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| WorkerError::Io {
            what: format!("binding the metrics endpoint {addr}"),
            source,
        })?;
    let local = listener.local_addr().ok();
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, readiness });
    tracing::info!(address = ?local, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}
