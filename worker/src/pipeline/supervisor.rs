//! The pipeline's threads, watched. The poll thread and the lanes are plain OS threads (a lane runs plugins,
//! which block); a thread that exits or panics while the pipeline is not stopping makes the worker unhealthy:
//! `/healthz` fails with the reason, `millrace_stage_up{stage}` drops to 0, and `run()` drains what it can and
//! returns an error, so the process exits non-zero and its orchestrator restarts it. Nothing consumes silently
//! less than it should.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::WorkerError;
use crate::health::Health;
use crate::metrics::Metrics;

/// Starts and watches the pipeline's threads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    health: Health,
    metrics: Metrics,
    /// Set when the pipeline stops on purpose: threads exiting is expected from then on.
    stopping: Arc<AtomicBool>,
}

/// Reports its thread's end when dropped: at the end of the thread's function, or while a panic unwinds it.
struct Watch {
    supervisor: Supervisor,
    stage: &'static str,
    name: String,
}

impl Drop for Watch {
    fn drop(&mut self) {
        if self.supervisor.stopping.load(Ordering::Acquire) {
            return;
        }
        let how = if std::thread::panicking() {
            "panicked"
        } else {
            "exited"
        };
        self.supervisor
            .metrics
            .stage_up
            .with_label_values(&[self.stage])
            .set(0);
        self.supervisor
            .health
            .fail(format!("{} thread `{}` {how}", self.stage, self.name));
    }
}

impl Supervisor {
    pub fn new(health: Health, metrics: Metrics) -> Self {
        Self {
            health,
            metrics,
            stopping: Arc::default(),
        }
    }

    /// Starts a watched thread of `stage` (`poll`, `lane`).
    pub fn spawn<F>(
        &self,
        stage: &'static str,
        name: String,
        f: F,
    ) -> Result<std::thread::JoinHandle<()>, WorkerError>
    where
        F: FnOnce() + Send + 'static,
    {
        let watch = Watch {
            supervisor: self.clone(),
            stage,
            name: name.clone(),
        };
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let _watch = watch;
                f();
            })
            .map_err(|source| WorkerError::Io {
                what: format!("starting thread {name}"),
                source,
            })
    }

    /// The pipeline stops on purpose: threads that exit from now on are not failures.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    pub fn health(&self) -> &Health {
        &self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_that_panics_or_exits_makes_the_worker_unhealthy_unless_it_is_stopping() {
        let metrics = Metrics::new().unwrap();
        metrics.initialize(&[]);
        let s = Supervisor::new(Health::new(), metrics.clone());
        let t = s
            .spawn("lane", "millrace-lane-0".into(), || panic!("a bug"))
            .unwrap();
        assert!(t.join().is_err());
        assert_eq!(
            s.health().failure().as_deref(),
            Some("lane thread `millrace-lane-0` panicked")
        );
        assert_eq!(metrics.stage_up.with_label_values(&["lane"]).get(), 0);

        let s = Supervisor::new(Health::new(), metrics.clone());
        s.spawn("poll", "millrace-poll".into(), || {})
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(
            s.health().failure().as_deref(),
            Some("poll thread `millrace-poll` exited")
        );

        let s = Supervisor::new(Health::new(), metrics);
        s.stopping();
        s.spawn("lane", "millrace-lane-1".into(), || {})
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(s.health().failure(), None, "expected at shutdown");
    }
}
