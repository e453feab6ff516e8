//! A binding's CPU budget as a token bucket: credit (nanoseconds of plugin time) refills at `cores` nanoseconds
//! per nanosecond of wall time, up to one second's worth; every record's plugin time is charged, from any lane.
//! A binding whose credit is spent is throttled: its partitions pause until the credit is back above zero, so a
//! client can use its budget in bursts but not more than it on average.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Burst a budget allows: this much wall time's worth of credit.
const BURST: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct CpuBudget {
    /// Cores: credit per unit of wall time.
    cores: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Credit in nanoseconds of plugin time (negative: in debt).
    credit: f64,
    refilled: Instant,
}

impl CpuBudget {
    pub fn new(cores: f64) -> Self {
        Self::starting_at(cores, Instant::now())
    }

    fn starting_at(cores: f64, now: Instant) -> Self {
        Self {
            cores,
            state: Mutex::new(Bucket {
                credit: cores * BURST.as_nanos() as f64,
                refilled: now,
            }),
        }
    }

    fn with_bucket<T>(&self, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        let mut b = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(b.refilled).as_nanos() as f64;
        let cap = self.cores * BURST.as_nanos() as f64;
        b.credit = (b.credit + elapsed * self.cores).min(cap);
        // A thread that read the clock before another took the lock must not move the refill time back:
        // the interval between would be credited twice.
        b.refilled = b.refilled.max(now);
        f(&mut b)
    }

    /// Charges a record's plugin time.
    pub fn charge(&self, cost: Duration) {
        self.charge_at(cost, Instant::now());
    }

    fn charge_at(&self, cost: Duration, now: Instant) {
        self.with_bucket(now, |b| b.credit -= cost.as_nanos() as f64);
    }

    /// Whether the credit is spent (the binding is to be throttled).
    pub fn is_spent(&self) -> bool {
        self.is_spent_at(Instant::now())
    }

    fn is_spent_at(&self, now: Instant) -> bool {
        self.with_bucket(now, |b| b.credit < 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_allows_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let b = CpuBudget::starting_at(0.5, t0);
        // A burst of up to half a second of plugin time passes at once.
        b.charge_at(Duration::from_millis(400), t0);
        assert!(!b.is_spent_at(t0));
        b.charge_at(Duration::from_millis(200), t0);
        assert!(b.is_spent_at(t0), "600 ms spent of a 500 ms burst");
        // 100 ms of debt refills at half a core: 200 ms of wall time.
        assert!(b.is_spent_at(t0 + Duration::from_millis(150)));
        assert!(!b.is_spent_at(t0 + Duration::from_millis(250)));
        // Idle time does not build credit beyond the burst.
        let later = t0 + Duration::from_secs(60);
        b.charge_at(Duration::from_millis(501), later);
        assert!(b.is_spent_at(later));
    }

    #[test]
    fn a_lane_that_read_the_clock_earlier_does_not_credit_an_interval_twice() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let b = CpuBudget::starting_at(1.0, t0);
        b.charge_at(ms(1_200), t0); // a 1 s burst, 1.2 s spent: 200 ms of debt
        b.charge_at(Duration::ZERO, t0 + ms(100)); // 100 ms refilled: 100 ms of debt
        // A lane that read the clock at t0 and took the lock only now.
        b.charge_at(Duration::ZERO, t0);
        assert!(
            b.is_spent_at(t0 + ms(150)),
            "50 ms of debt left: the first 100 ms were credited once"
        );
        assert!(!b.is_spent_at(t0 + ms(201)));
    }
}
