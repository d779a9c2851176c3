//! The per-Webhook delivery limits: the token-bucket rate limit and the circuit breaker.
//!
//! Both cores are pure: they take the current [`Instant`] as an argument, so tests move time by
//! hand. [`RateLimiter`] shares a bucket between delivery tasks and reads tokio's clock, so a paused
//! test runtime drives it as well. Waiting for a token is not a delivery attempt and never uses up
//! a retry (DESIGN.md §3).

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::api::webhook::CircuitState as StatusCircuitState;

// === rate limit ===

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
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
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

    /// Whether a limit applies.
    pub fn is_limited(&self) -> bool {
        self.bucket.is_some()
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

// === circuit breaker ===

/// Circuit breaker settings (the Webhook's `spec.circuitBreaker`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Open when at least this share of the attempts in the window failed (0.01–1).
    pub failure_ratio: f64,
    /// Attempts the window must hold before the ratio counts.
    pub min_attempts: u32,
    /// How far back attempts count.
    pub window: Duration,
    /// How long the circuit stays open before one probe is let through.
    pub open_for: Duration,
}

impl Default for Settings {
    /// DESIGN.md §3: open at ≥70% failures over ≥10 attempts in 5 minutes, probe after 30 s.
    fn default() -> Self {
        Self {
            failure_ratio: 0.7,
            min_attempts: 10,
            window: Duration::from_secs(300),
            open_for: Duration::from_secs(30),
        }
    }
}

/// Where a circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Deliveries flow.
    Closed,
    /// Nothing is sent before `until`; the dispatcher stops consuming.
    Open {
        /// When the open period ends and a probe may go.
        until: Instant,
    },
    /// The open period is over: one probe decides whether the circuit closes.
    HalfOpen,
}

impl From<CircuitState> for StatusCircuitState {
    fn from(state: CircuitState) -> Self {
        match state {
            CircuitState::Closed => Self::Closed,
            CircuitState::Open { .. } => Self::Open,
            CircuitState::HalfOpen => Self::HalfOpen,
        }
    }
}

/// A change of circuit state, reported once, by the [`CircuitBreaker::record`] call that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Too many failures in the window: the circuit opened.
    Opened,
    /// The probe failed: the circuit stays open for another `open_for`. It never closed in
    /// between, so this is the same outage going on.
    Reopened,
    /// The probe succeeded: the circuit closed.
    Closed,
}

impl Transition {
    /// PascalCase reason for Events and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Opened => "CircuitOpened",
            Self::Reopened => "CircuitProbeFailed",
            Self::Closed => "CircuitClosed",
        }
    }
}

/// Number of time buckets the window is cut into: memory stays fixed whatever the traffic, and
/// an attempt leaves the window within one bucket (1/60 of it) of its age reaching the window.
const BUCKETS: u32 = 60;

/// Attempts recorded during one bucket-wide slice of time, `epoch` slices after the origin.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    successes: u32,
    failures: u32,
}

/// The sliding window: a ring of [`BUCKETS`] buckets.
#[derive(Debug, Clone)]
struct Window {
    bucket_width: Duration,
    origin: Option<Instant>,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    fn new(window: Duration) -> Self {
        let bucket_width = (window / BUCKETS).max(Duration::from_nanos(1));
        Self { bucket_width, origin: None, buckets: [Bucket::default(); BUCKETS as usize] }
    }

    fn epoch(&self, origin: Instant, now: Instant) -> u64 {
        let slices = now.saturating_duration_since(origin).as_nanos() / self.bucket_width.as_nanos();
        u64::try_from(slices).unwrap_or(u64::MAX)
    }

    fn add(&mut self, success: bool, now: Instant) {
        let origin = *self.origin.get_or_insert(now);
        let epoch = self.epoch(origin, now);
        let bucket = &mut self.buckets[ring_index(epoch)];
        if bucket.epoch != epoch {
            *bucket = Bucket { epoch, ..Bucket::default() };
        }
        if success {
            bucket.successes = bucket.successes.saturating_add(1);
        } else {
            bucket.failures = bucket.failures.saturating_add(1);
        }
    }

    /// (attempts, failures) in the window ending at `now`.
    fn counts(&self, now: Instant) -> (u32, u32) {
        let Some(origin) = self.origin else { return (0, 0) };
        let current = self.epoch(origin, now);
        self.buckets.iter().filter(|b| b.epoch <= current && current - b.epoch < u64::from(BUCKETS)).fold(
            (0, 0),
            |(attempts, failures), b| {
                (attempts.saturating_add(b.successes).saturating_add(b.failures), failures.saturating_add(b.failures))
            },
        )
    }

    fn clear(&mut self) {
        self.origin = None;
        self.buckets = [Bucket::default(); BUCKETS as usize];
    }
}

fn ring_index(epoch: u64) -> usize {
    // The remainder is below BUCKETS, so it always fits.
    usize::try_from(epoch % u64::from(BUCKETS)).unwrap_or(0)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A Webhook's circuit breaker: opens when too many recent attempts failed, then lets one probe
/// through after `open_for` to decide whether to close again.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    settings: Settings,
    window: Window,
    phase: Phase,
}

impl CircuitBreaker {
    /// A closed circuit with an empty window.
    pub fn new(settings: Settings) -> Self {
        Self { window: Window::new(settings.window), settings, phase: Phase::Closed }
    }

    /// Where the circuit stands at `now`.
    pub fn state(&self, now: Instant) -> CircuitState {
        match self.phase {
            Phase::Closed => CircuitState::Closed,
            Phase::Open { until } if now < until => CircuitState::Open { until },
            Phase::Open { .. } | Phase::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether the circuit is anything but closed: open, or half-open while it probes (the
    /// `sluice_circuit_open` gauge).
    pub fn is_open(&self) -> bool {
        self.phase != Phase::Closed
    }

    /// Whether a delivery may be sent now. Once the open period is over, exactly one caller gets
    /// `true`, the probe, until it is recorded or released.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Closed => true,
            Phase::Open { until } if now < until => false,
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => {
                self.phase = Phase::HalfOpen { probing: true };
                true
            }
            Phase::HalfOpen { probing: true } => false,
        }
    }

    /// Gives the probe slot back when the probe was never sent (e.g. its message went straight to
    /// the dead-letter queue), so the next caller of [`CircuitBreaker::allow`] probes instead.
    pub fn release_probe(&mut self) {
        if self.phase == (Phase::HalfOpen { probing: true }) {
            self.phase = Phase::HalfOpen { probing: false };
        }
    }

    /// Records the outcome of a delivery attempt and reports the transition it caused, if any.
    ///
    /// While half-open, the first outcome recorded is taken as the probe's. Outcomes recorded while
    /// open (attempts sent before the circuit opened) are ignored.
    pub fn record(&mut self, success: bool, now: Instant) -> Option<Transition> {
        match self.phase {
            Phase::Closed => {
                self.window.add(success, now);
                (!success && self.too_many_failures(now)).then(|| {
                    self.open(now);
                    Transition::Opened
                })
            }
            Phase::HalfOpen { probing: true } if success => {
                self.phase = Phase::Closed;
                self.window.clear();
                Some(Transition::Closed)
            }
            Phase::HalfOpen { probing: true } => {
                self.open(now);
                Some(Transition::Reopened)
            }
            Phase::Open { .. } | Phase::HalfOpen { probing: false } => None,
        }
    }

    fn too_many_failures(&self, now: Instant) -> bool {
        let (attempts, failures) = self.window.counts(now);
        // Dividing (rather than multiplying the ratio) is exact at the threshold: 7/10 >= 0.7.
        attempts >= self.settings.min_attempts
            && failures > 0
            && f64::from(failures) / f64::from(attempts) >= self.settings.failure_ratio
    }

    fn open(&mut self, now: Instant) {
        // An open period too long to represent probes at once rather than panicking.
        self.phase = Phase::Open { until: now.checked_add(self.settings.open_for).unwrap_or(now) };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    // --- token bucket ---

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
        assert!(!limiter.is_limited());
        let t0 = Instant::now();
        for _ in 0..10_000 {
            limiter.acquire().await;
        }
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    // --- circuit breaker ---

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(Settings {
            failure_ratio: 0.7,
            min_attempts: 10,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
        })
    }

    fn record_all(breaker: &mut CircuitBreaker, outcomes: &[bool], now: Instant) -> Vec<Transition> {
        outcomes.iter().filter_map(|&success| breaker.record(success, now)).collect()
    }

    /// A breaker opened at `t0`, so half-open from `t0 + 30s`.
    fn opened(t0: Instant) -> CircuitBreaker {
        let mut breaker = breaker();
        assert_eq!(record_all(&mut breaker, &[false; 10], t0), [Transition::Opened]);
        breaker
    }

    #[test]
    fn defaults_follow_the_design() {
        let s = Settings::default();
        assert_eq!((s.failure_ratio, s.min_attempts), (0.7, 10));
        assert_eq!((s.window, s.open_for), (Duration::from_secs(300), Duration::from_secs(30)));
    }

    #[test]
    fn does_not_open_below_min_attempts() {
        let t0 = Instant::now();
        let mut breaker = breaker();
        assert_eq!(record_all(&mut breaker, &[false; 9], t0), []);
        assert_eq!(breaker.state(t0), CircuitState::Closed);
        assert!(breaker.allow(t0));
        assert!(!breaker.is_open());
    }

    #[test]
    fn opens_at_exactly_the_failure_ratio() {
        let t0 = Instant::now();
        let mut below = breaker();
        let six_of_ten = [[true; 4].as_slice(), &[false; 6]].concat();
        assert_eq!(record_all(&mut below, &six_of_ten, t0), []);

        let mut at = breaker();
        assert_eq!(record_all(&mut at, &[true; 3], t0), []);
        assert_eq!(record_all(&mut at, &[false; 6], t0), [], "9 attempts are not enough");
        assert_eq!(at.record(false, t0), Some(Transition::Opened), "7 of 10 failed");
        assert_eq!(at.state(t0), CircuitState::Open { until: t0 + Duration::from_secs(30) });
        assert!(at.is_open());
        assert!(!at.allow(t0));
    }

    #[test]
    fn opening_is_reported_once() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(record_all(&mut breaker, &[false, true, false], t0 + MS), []);
        assert_eq!(breaker.state(t0 + MS), CircuitState::Open { until: t0 + Duration::from_secs(30) });
    }

    #[test]
    fn old_failures_slide_out_of_the_window() {
        let t0 = Instant::now();
        let mut still_in = breaker();
        assert_eq!(record_all(&mut still_in, &[false; 9], t0), []);
        let just_inside = t0 + Duration::from_nanos(59_999_999_999);
        assert_eq!(still_in.record(false, just_inside), Some(Transition::Opened));

        let mut slid_out = breaker();
        assert_eq!(record_all(&mut slid_out, &[false; 9], t0), []);
        let t1 = t0 + Duration::from_secs(60);
        assert_eq!(record_all(&mut slid_out, &[false; 9], t1), [], "the first nine are 60s old");
        assert_eq!(slid_out.record(false, t1), Some(Transition::Opened));
    }

    #[test]
    fn half_open_allows_one_probe_at_a_time() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let until = t0 + Duration::from_secs(30);
        assert!(!breaker.allow(t0 + Duration::from_nanos(29_999_999_999)));
        assert_eq!(breaker.state(until), CircuitState::HalfOpen);
        assert!(breaker.allow(until));
        assert!(!breaker.allow(until));
        assert!(!breaker.allow(until + Duration::from_secs(60)));
        assert!(breaker.is_open());

        breaker.release_probe();
        assert!(breaker.allow(until), "a released probe slot goes to the next caller");
        assert!(!breaker.allow(until));
    }

    #[test]
    fn probe_success_closes_and_clears_the_window() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + Duration::from_secs(30);
        assert!(breaker.allow(t1));
        assert_eq!(breaker.record(true, t1), Some(Transition::Closed));
        assert_eq!(breaker.state(t1), CircuitState::Closed);
        assert!(!breaker.is_open());
        // The ten failures that opened it are forgotten: nine more are below min_attempts.
        assert_eq!(record_all(&mut breaker, &[false; 9], t1), []);
    }

    #[test]
    fn probe_failure_reopens_for_another_period() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + Duration::from_secs(45);
        assert!(breaker.allow(t1));
        assert_eq!(breaker.record(false, t1), Some(Transition::Reopened));
        assert_eq!(breaker.state(t1), CircuitState::Open { until: t1 + Duration::from_secs(30) });
        assert!(!breaker.allow(t1 + Duration::from_secs(29)));
        assert!(breaker.allow(t1 + Duration::from_secs(30)));
    }

    #[test]
    fn outcomes_recorded_while_open_are_ignored() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        assert_eq!(record_all(&mut breaker, &[true; 20], t0 + MS), []);
        assert!(breaker.is_open());
        // Half-open without a probe out: still nothing to decide on.
        assert_eq!(breaker.record(true, t0 + Duration::from_secs(31)), None);
        assert_eq!(breaker.state(t0 + Duration::from_secs(31)), CircuitState::HalfOpen);
    }

    #[test]
    fn states_map_to_the_webhook_status() {
        let t0 = Instant::now();
        assert_eq!(StatusCircuitState::from(CircuitState::Closed), StatusCircuitState::Closed);
        assert_eq!(StatusCircuitState::from(CircuitState::Open { until: t0 }), StatusCircuitState::Open);
        assert_eq!(StatusCircuitState::from(CircuitState::HalfOpen), StatusCircuitState::HalfOpen);
        assert_eq!(Transition::Opened.reason(), "CircuitOpened");
    }
}
