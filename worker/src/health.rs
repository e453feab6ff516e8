//! The worker's liveness, shared by the pipeline's supervisor (which records a failure) and `/healthz`
//! (which reports it). A leaf module so that both can use it without depending on each other.

use std::sync::{Arc, Mutex};

/// Whether every stage of the worker still runs. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The first failure, for good.
    failure: Mutex<Option<String>>,
    notify: tokio::sync::Notify,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failure (the first one is kept) and wakes whoever waits in [`Health::failed`].
    pub fn fail(&self, reason: String) {
        {
            let mut f = self
                .inner
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if f.is_none() {
                tracing::error!(%reason, "the worker is unhealthy");
                *f = Some(reason);
            }
        }
        self.inner.notify.notify_waiters();
        self.inner.notify.notify_one();
    }

    /// The failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.inner
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Resolves once a failure is recorded.
    pub async fn failed(&self) -> String {
        loop {
            let notified = self.inner.notify.notified();
            if let Some(f) = self.failure() {
                return f;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_failure_is_kept_and_wakes_the_waiter() {
        let h = Health::new();
        assert_eq!(h.failure(), None);
        let waiter = tokio::spawn({
            let h = h.clone();
            async move { h.failed().await }
        });
        tokio::task::yield_now().await;
        h.fail("lane 0 panicked".into());
        h.fail("later".into());
        assert_eq!(waiter.await.unwrap(), "lane 0 panicked");
        assert_eq!(h.failure().as_deref(), Some("lane 0 panicked"));
    }
}
