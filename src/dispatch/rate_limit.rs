//! The per-Webhook rate limit: a token bucket shared by a dispatcher replica's delivery tasks.
//!
//! The bucket is pure: it takes the current [`Instant`] as an argument, so tests move time by
//! hand. [`RateLimiter`] reads tokio's clock, so a paused test runtime drives it as well. Waiting
//! for a token is not a delivery attempt and never uses up a retry (README, "Webhook").

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// One token, in units of bucket credit. Credit grows by `per_second` units each nanosecond, so
/// refills and waits are exact integer arithmetic, whatever the rate.
const TOKEN: i128 = 1_000_000_000;

/// A token bucket: holds at most `burst` tokens, refills at `per_second` tokens a second, starts
/// full.
///
/// [`TokenBucket::reserve`] may take a token on credit: each reservation holds its place in line,
/// so concurrent waiters queue up behind each other instead of stampeding for the next token.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: u32,
    capacity: i128,
    credit: i128,
    refilled_at: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket. Zero for either parameter is read as one (the Webhook API admits neither).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let capacity = i128::from(burst.max(1)) * TOKEN;
        Self { per_second: per_second.max(1), capacity, credit: capacity, refilled_at: None }
    }

    /// Takes a token if one is available; otherwise takes nothing and says how long until one is.
    #[cfg(test)]
    fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.credit >= TOKEN {
            self.credit -= TOKEN;
            Ok(())
        } else {
            Err(self.time_to_earn(TOKEN - self.credit))
        }
    }

    /// Takes a token, on credit if need be, and says how long the caller must wait before using it
    /// (zero when one was available).
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.credit -= TOKEN;
        if self.credit >= 0 { Duration::ZERO } else { self.time_to_earn(-self.credit) }
    }

    /// Gives back a reserved token its waiter never used.
    fn refund(&mut self) {
        self.credit = (self.credit + TOKEN).min(self.capacity);
    }

    fn refill(&mut self, now: Instant) {
        let Some(last) = self.refilled_at else {
            self.refilled_at = Some(now);
            return;
        };
        // A clock read before `last` (a racing caller) adds nothing and does not move `last` back.
        if now > last {
            let earned = now.duration_since(last).as_nanos().saturating_mul(u128::from(self.per_second));
            let earned = i128::try_from(earned).unwrap_or(i128::MAX);
            self.credit = self.credit.saturating_add(earned).min(self.capacity);
            self.refilled_at = Some(now);
        }
    }

    /// How long until `credit` more units have been earned, rounded up to the nanosecond.
    fn time_to_earn(&self, credit: i128) -> Duration {
        let rate = i128::from(self.per_second);
        let nanos = (credit + rate - 1) / rate;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// The rate limit shared by a dispatcher replica's delivery tasks (the limit is per replica).
#[derive(Debug, Default)]
pub struct RateLimiter {
    /// `None`: no limit.
    bucket: Option<Mutex<TokenBucket>>,
}

impl RateLimiter {
    /// At most `burst` requests at once and `per_second` a second after that.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self { bucket: Some(Mutex::new(TokenBucket::new(per_second, burst))) }
    }

    /// No limit: [`RateLimiter::acquire`] returns at once.
    pub fn unlimited() -> Self {
        Self { bucket: None }
    }

    /// Waits until the caller may send one request. Callers are served in the order they asked;
    /// one that is cancelled while waiting gives its token back.
    pub async fn acquire(&self) {
        let Some(bucket) = &self.bucket else { return };
        let wait = lock(bucket).reserve(tokio::time::Instant::now().into_std());
        if wait.is_zero() {
            return;
        }
        let refund = RefundOnDrop(Some(bucket));
        tokio::time::sleep(wait).await;
        refund.disarm();
    }
}

/// Returns a reserved token to the bucket unless the wait for it completed.
struct RefundOnDrop<'a>(Option<&'a Mutex<TokenBucket>>);

impl RefundOnDrop<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RefundOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(bucket) = self.0 {
            lock(bucket).refund();
        }
    }
}

fn lock(bucket: &Mutex<TokenBucket>) -> MutexGuard<'_, TokenBucket> {
    // Nothing panics while the lock is held, so even a poisoned bucket holds a sound value.
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_full_bucket_allows_exactly_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(5, 5);
        for _ in 0..5 {
            assert_eq!(bucket.try_take(t0), Ok(()));
        }
        assert_eq!(bucket.try_take(t0), Err(200 * MS));
    }

    #[test]
    fn refill_is_proportional_to_elapsed_time() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 10);
        while bucket.try_take(t0).is_ok() {}
        let t1 = t0 + 350 * MS;
        for _ in 0..3 {
            assert_eq!(bucket.try_take(t1), Ok(()));
        }
        assert_eq!(bucket.try_take(t1), Err(50 * MS));
    }

    #[test]
    fn waits_are_exact_when_the_rate_does_not_divide_a_second() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(3, 1);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_nanos(333_333_334)));
        assert_eq!(bucket.try_take(t0 + Duration::from_nanos(333_333_333)), Err(Duration::from_nanos(1)));
        assert_eq!(bucket.try_take(t0 + Duration::from_nanos(333_333_334)), Ok(()));
    }

    #[test]
    fn refill_stops_at_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, 4);
        assert_eq!(bucket.try_take(t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        let taken = std::iter::from_fn(|| bucket.try_take(later).ok()).count();
        assert_eq!(taken, 4);
    }

    #[test]
    fn a_clock_read_out_of_order_earns_nothing() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 1);
        assert_eq!(bucket.try_take(t0 + 100 * MS), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(100 * MS));
        assert_eq!(bucket.try_take(t0 + 200 * MS), Ok(()));
    }

    #[test]
    fn zero_rate_and_burst_read_as_one() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(0, 0);
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(1)));
    }

    #[test]
    fn reservations_queue_up_one_interval_apart() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(10, 2);
        let waits: Vec<_> = (0..5).map(|_| bucket.reserve(t0)).collect();
        assert_eq!(waits, [Duration::ZERO, Duration::ZERO, 100 * MS, 200 * MS, 300 * MS]);
        // A plain take waits behind the queue too.
        assert_eq!(bucket.try_take(t0), Err(400 * MS));
        assert_eq!(bucket.try_take(t0 + 400 * MS), Ok(()));
    }

    #[test]
    fn a_refunded_reservation_frees_its_place() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1, 1);
        assert_eq!(bucket.reserve(t0), Duration::ZERO);
        assert_eq!(bucket.reserve(t0), Duration::from_secs(1));
        bucket.refund();
        assert_eq!(bucket.reserve(t0), Duration::from_secs(1));
        // Refunds never fill the bucket beyond its burst.
        bucket.refund();
        bucket.refund();
        bucket.refund();
        assert_eq!(bucket.try_take(t0), Ok(()));
        assert_eq!(bucket.try_take(t0), Err(Duration::from_secs(1)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_acquires_stay_within_the_rate() {
        const RATE: u32 = 100;
        const BURST: u32 = 5;
        const TASKS: u32 = 25;
        let t0 = Instant::now();
        let limiter = Arc::new(RateLimiter::new(RATE, BURST));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                tokio::spawn(async move {
                    limiter.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut granted = Vec::new();
        for task in tasks {
            granted.push(task.await.unwrap());
        }
        granted.sort();
        // By any moment t, at most burst + rate * t requests have been let through.
        for (k, at) in (1..=TASKS).zip(&granted) {
            let earliest = Duration::from_secs(1) * k.saturating_sub(BURST) / RATE;
            assert!(*at - t0 >= earliest, "request {k} let through after {:?}, before {earliest:?}", *at - t0);
        }
        // And they queued rather than backing off: the last one waited about 20 intervals.
        assert!(granted[granted.len() - 1] - t0 < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_cancelled_acquire_gives_its_token_back() {
        let limiter = RateLimiter::new(1, 1);
        limiter.acquire().await;
        assert!(tokio::time::timeout(10 * MS, limiter.acquire()).await.is_err());
        let bucket = limiter.bucket.as_ref().unwrap();
        let wait = lock(bucket).reserve(Instant::now());
        assert!(wait <= Duration::from_secs(1), "waited {wait:?}: the cancelled reservation was kept");
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::unlimited();
        assert!(limiter.bucket.is_none());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            limiter.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
