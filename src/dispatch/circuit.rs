//! The per-Webhook circuit breaker: opens when too many recent attempts failed, then lets one
//! probe through after `openFor` to decide whether to close again.
//!
//! The breaker is pure: it takes the current [`Instant`] as an argument, so tests move time by hand.

use std::time::{Duration, Instant};

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
    /// The documented defaults (README, "Webhook"): open at ≥70% failures over ≥10 attempts in 5 minutes, probe after 30 s.
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

    /// Whether a delivery may be sent now. Once the open period is over, exactly one caller gets
    /// `true`, the probe, until its outcome is recorded.
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
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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
    fn defaults_match_the_webhook_api_defaults() {
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
        assert_eq!(breaker.state(t0), CircuitState::Closed);
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
        assert_eq!(breaker.state(until + Duration::from_secs(60)), CircuitState::HalfOpen);
    }

    #[test]
    fn probe_success_closes_and_clears_the_window() {
        let t0 = Instant::now();
        let mut breaker = opened(t0);
        let t1 = t0 + Duration::from_secs(30);
        assert!(breaker.allow(t1));
        assert_eq!(breaker.record(true, t1), Some(Transition::Closed));
        assert_eq!(breaker.state(t1), CircuitState::Closed);
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
        assert_eq!(breaker.state(t0 + MS), CircuitState::Open { until: t0 + Duration::from_secs(30) });
        // Half-open without a probe out: still nothing to decide on.
        assert_eq!(breaker.record(true, t0 + Duration::from_secs(31)), None);
        assert_eq!(breaker.state(t0 + Duration::from_secs(31)), CircuitState::HalfOpen);
    }
}
