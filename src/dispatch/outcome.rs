//! What one delivery attempt's result means for the message: delivered, retried (and after
//! which step), dead-lettered (and why), or the endpoint is gone. Pure, so every rule the
//! README's "Webhook" section gives for a delivery's answer is unit-tested.

use std::time::{Duration, SystemTime};

use crate::versions::RenderError;

/// How an attempt ended, as the HTTP client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// The endpoint answered with this status (and maybe a `Retry-After`).
    Status { code: u16, retry_after: Option<Duration> },
    /// No answer within the timeout.
    Timeout,
    /// Could not connect or the connection broke.
    Connection,
    /// The egress guard refused every address of the endpoint.
    Refused,
}

/// Why a message went to the dead-letter queue: the `x-sluice-reason` header and the
/// `reason` label of `sluice_dead_lettered_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// A 4xx (other than 408, 410 and 429) or a redirect: retrying cannot help.
    NonRetryableStatus,
    /// Every step of the retry schedule was used.
    RetriesExhausted,
    /// The egress guard refused the endpoint's addresses.
    EgressRefused,
    /// The payload does not satisfy its own version's schema (or is not JSON).
    SchemaInvalid,
    /// A version change did not apply, or its result does not satisfy the target's schema.
    ConversionFailed,
    /// The payload's version is unknown to the policy, or older than the Subscription's.
    VersionUnavailable,
    /// Not JSON, on a topic with an event catalog or a version policy.
    UnsupportedContentType,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NonRetryableStatus => "non-retryable-status",
            Self::RetriesExhausted => "retries-exhausted",
            Self::EgressRefused => "egress-refused",
            Self::SchemaInvalid => "schema-invalid",
            Self::ConversionFailed => "conversion-failed",
            Self::VersionUnavailable => "version-unavailable",
            Self::UnsupportedContentType => "unsupported-content-type",
        }
    }

    /// Why a message that could not be rendered is dead-lettered.
    pub fn of(error: &RenderError) -> Self {
        match error {
            RenderError::SchemaInvalid(_) => Self::SchemaInvalid,
            RenderError::ConversionFailed(_) => Self::ConversionFailed,
            RenderError::VersionUnavailable(_) => Self::VersionUnavailable,
            RenderError::UnsupportedContentType(_) => Self::UnsupportedContentType,
        }
    }
}

/// What to do with the message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Re-publish to the retry queue of this step (0-based index into the schedule).
    Retry {
        step: usize,
    },
    DeadLetter(DeadLetterReason),
    /// 410 Gone: the Webhook is disabled; the message stays in the queue.
    Gone,
}

/// Judges an attempt. `attempt` counts this one (1 for the first delivery); `last_step` is the
/// retry step (0-based) the message last waited in, if any; `schedule` is the Subscription's
/// retry delays. A retry goes to the step after both the attempts made and the last step used
/// (a `Retry-After` may have skipped ahead), or further down the schedule when the endpoint
/// asked for more time than that step waits, but never past the last step.
pub fn judge(result: &Attempt, attempt: u32, last_step: Option<usize>, schedule: &[Duration]) -> Verdict {
    let retry_after = match result {
        Attempt::Status { code: 200..=299, .. } => return Verdict::Delivered,
        Attempt::Status { code: 410, .. } => return Verdict::Gone,
        Attempt::Status { code: 408 | 429 | 500..=599, retry_after } => *retry_after,
        Attempt::Status { .. } => return Verdict::DeadLetter(DeadLetterReason::NonRetryableStatus),
        Attempt::Refused => return Verdict::DeadLetter(DeadLetterReason::EgressRefused),
        Attempt::Timeout | Attempt::Connection => None,
    };
    let by_attempts = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    let next = last_step.map_or(by_attempts, |last| by_attempts.max(last.saturating_add(1)));
    if next >= schedule.len() {
        return Verdict::DeadLetter(DeadLetterReason::RetriesExhausted);
    }
    let step = match retry_after {
        Some(wanted) => (next..schedule.len()).find(|&s| schedule[s] >= wanted).unwrap_or(schedule.len() - 1),
        None => next,
    };
    Verdict::Retry { step }
}

/// Parses a `Retry-After` value: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date format RFC 9110 requires
/// senders to use.
fn httpdate(value: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else { return None };
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        .iter()
        .position(|m| m == month)?;
    let (day, year): (u64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<u64> = time.split(':').map(str::parse).collect::<Result<_, _>>().ok()?;
    let [h, m, s] = hms.as_slice() else { return None };
    let days = days_from_civil(year, u32::try_from(month).ok()? + 1, u32::try_from(day).ok()?);
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + m * 60 + s;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The `status_class` label of an attempt: `2xx` … `5xx`, `timeout`, `connection`, `refused`.
pub fn status_class(result: &Attempt) -> &'static str {
    match result {
        Attempt::Status { code, .. } => match code {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        },
        Attempt::Timeout => "timeout",
        Attempt::Connection => "connection",
        Attempt::Refused => "refused",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Attempt {
        Attempt::Status { code, retry_after: None }
    }

    fn secs(v: &[u64]) -> Vec<Duration> {
        v.iter().copied().map(Duration::from_secs).collect()
    }

    #[test]
    fn only_2xx_is_success_and_410_disables() {
        let schedule = secs(&[5, 300]);
        for code in [200, 201, 204, 299] {
            assert_eq!(judge(&status(code), 1, None, &schedule), Verdict::Delivered);
        }
        assert_eq!(judge(&status(410), 1, None, &schedule), Verdict::Gone);
        for code in [301, 302, 400, 401, 403, 404, 422] {
            assert_eq!(
                judge(&status(code), 1, None, &schedule),
                Verdict::DeadLetter(DeadLetterReason::NonRetryableStatus),
                "{code}"
            );
        }
    }

    #[test]
    fn transient_failures_walk_the_schedule_then_dead_letter() {
        let schedule = secs(&[5, 300, 1800]);
        for result in [status(500), status(502), status(503), status(504), status(429), Attempt::Timeout] {
            assert_eq!(judge(&result, 1, None, &schedule), Verdict::Retry { step: 0 });
            assert_eq!(judge(&result, 3, None, &schedule), Verdict::Retry { step: 2 });
            assert_eq!(judge(&result, 4, None, &schedule), Verdict::DeadLetter(DeadLetterReason::RetriesExhausted));
        }
        assert_eq!(judge(&status(500), 1, None, &[]), Verdict::DeadLetter(DeadLetterReason::RetriesExhausted));
        assert_eq!(judge(&Attempt::Refused, 1, None, &schedule), Verdict::DeadLetter(DeadLetterReason::EgressRefused));
    }

    #[test]
    fn retry_after_picks_a_later_step_within_the_schedule() {
        let schedule = secs(&[5, 300, 1800]);
        let asked = |s| Attempt::Status { code: 429, retry_after: Some(Duration::from_secs(s)) };
        assert_eq!(judge(&asked(1), 1, None, &schedule), Verdict::Retry { step: 0 });
        assert_eq!(judge(&asked(60), 1, None, &schedule), Verdict::Retry { step: 1 });
        assert_eq!(judge(&asked(86_400), 1, None, &schedule), Verdict::Retry { step: 2 });
        assert_eq!(judge(&asked(60), 3, None, &schedule), Verdict::Retry { step: 2 });
    }

    #[test]
    fn after_retry_after_skipped_ahead_the_ladder_goes_on_from_the_step_it_used() {
        let schedule = secs(&[5, 300, 1800, 7200]);
        // First attempt: 429 asking for a minute moves the message to step 2 (300 s).
        let asked = Attempt::Status { code: 429, retry_after: Some(Duration::from_secs(60)) };
        assert_eq!(judge(&asked, 1, None, &schedule), Verdict::Retry { step: 1 });
        // Its next failure continues from there (step 3), not back at step 2 by the attempt count.
        assert_eq!(judge(&status(503), 2, Some(1), &schedule), Verdict::Retry { step: 2 });
        assert_eq!(judge(&status(503), 3, Some(2), &schedule), Verdict::Retry { step: 3 });
        assert_eq!(judge(&status(503), 4, Some(3), &schedule), Verdict::DeadLetter(DeadLetterReason::RetriesExhausted));
        // A skip to the last step leaves nothing after it.
        let late = Attempt::Status { code: 503, retry_after: Some(Duration::from_secs(86_400)) };
        assert_eq!(judge(&late, 1, None, &schedule), Verdict::Retry { step: 3 });
        assert_eq!(judge(&status(503), 2, Some(3), &schedule), Verdict::DeadLetter(DeadLetterReason::RetriesExhausted));
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn render_failures_keep_their_reason() {
        for (error, reason) in [
            (RenderError::SchemaInvalid(String::new()), "schema-invalid"),
            (RenderError::ConversionFailed(String::new()), "conversion-failed"),
            (RenderError::VersionUnavailable(String::new()), "version-unavailable"),
            (RenderError::UnsupportedContentType(String::new()), "unsupported-content-type"),
        ] {
            assert_eq!(DeadLetterReason::of(&error).as_str(), reason);
        }
    }

    #[test]
    fn status_classes_are_bounded() {
        assert_eq!(status_class(&status(204)), "2xx");
        assert_eq!(status_class(&status(503)), "5xx");
        assert_eq!(status_class(&Attempt::Timeout), "timeout");
    }
}
