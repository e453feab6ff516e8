//! The observability endpoints: `/metrics` (Prometheus text format), `/healthz` (every pipeline thread is
//! alive: 503 with the reason once one died) and `/readyz` (the worker joined its consumer group and every store
//! answers).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::WorkerError;
use crate::bindings::BindingTable;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::sinks::Pinger;

/// Readiness inputs for `/readyz`.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// Set once the first assignment (possibly empty) arrived: the worker is in the group.
    pub joined: Arc<std::sync::atomic::AtomicBool>,
    pub table: Arc<BindingTable>,
    pub stores: Vec<(&'static str, Pinger)>,
}

#[derive(Clone, Debug)]
struct AppState {
    metrics: Metrics,
    readiness: Readiness,
    health: Health,
}

async fn metrics_handler(State(s): State<AppState>) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    match s.health.failure() {
        None => (StatusCode::OK, "ok\n".into()),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {reason}\n")),
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, String) {
    let mut problems = Vec::new();
    // A worker without bindings has nothing to join; it is ready to receive some.
    if !s.readiness.table.is_loaded() {
        problems.push("bindings still loading".to_string());
    }
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
    health: Health,
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
        .with_state(AppState {
            metrics,
            readiness,
            health,
        });
    tracing::info!(address = ?local, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::supervisor::Supervisor;

    /// A lane thread that dies turns `/healthz` from 200 into 503 naming it, over real HTTP.
    #[tokio::test]
    async fn a_dead_lane_makes_healthz_fail() {
        let metrics = Metrics::new().unwrap();
        let health = Health::new();
        let readiness = Readiness {
            joined: Arc::default(),
            table: BindingTable::new(Vec::new()),
            stores: Vec::new(),
        };
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = std::net::TcpListener::bind(addr).unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let server = serve(addr, metrics.clone(), readiness, health.clone())
            .await
            .unwrap();
        let url = format!("http://{addr}/healthz");
        let get = || async { reqwest::get(&url).await.unwrap() };
        let ok = get().await;
        assert_eq!(ok.status(), 200);

        let supervisor = Supervisor::new(health.clone(), metrics.clone());
        let lane = supervisor
            .spawn("lane", "millrace-lane-3".into(), || panic!("a bug in a lane"))
            .unwrap();
        assert!(lane.join().is_err());
        let bad = get().await;
        assert_eq!(bad.status(), 503);
        let text = bad.text().await.unwrap();
        assert!(
            text.contains("millrace-lane-3") && text.contains("panicked"),
            "{text}"
        );
        assert!(metrics.render().contains("millrace_stage_up{stage=\"lane\"} 0"));
        server.abort();
    }
}
