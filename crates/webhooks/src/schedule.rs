//! When to try a failed delivery again: the Svix schedule (immediately, then after 5 s, 5 min,
//! 30 min, 2 h, 5 h, 10 h and 10 h), each delay stretched by up to 20 % of jitter so that
//! deliveries that failed together do not return together; a `Retry-After` from a 429 or 503
//! answer replaces the delay when it is longer (capped at a day).

use std::time::Duration;

/// The delays before attempts 2, 3, …; attempt 1 is immediate.
pub const SCHEDULE: [Duration; 8] = [
    Duration::ZERO,
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 3600),
    Duration::from_secs(5 * 3600),
    Duration::from_secs(10 * 3600),
    Duration::from_secs(10 * 3600),
];

/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The delay after failed attempt number `attempt` (1 for the first), with `jitter` in [0, 1);
/// `None` when the schedule is used up. The schedule's first entry (immediately) is the first
/// attempt itself, so the delay after attempt n is `SCHEDULE[n]`.
pub fn delay_after(attempt: u32, jitter: f64, retry_after: Option<Duration>) -> Option<Duration> {
    let base = *SCHEDULE.get(attempt as usize)?;
    let jittered = base.mul_f64(1.0 + 0.2 * jitter.clamp(0.0, 1.0));
    Some(match retry_after {
        Some(after) if after > jittered => after.min(MAX_RETRY_AFTER),
        _ => jittered,
    })
}

/// The last delay of the schedule, used while a whole target is down (its deliveries keep being
/// tried until the target is disabled).
pub fn last_delay(jitter: f64) -> Duration {
    SCHEDULE[SCHEDULE.len() - 1].mul_f64(1.0 + 0.2 * jitter.clamp(0.0, 1.0))
}

/// A `Retry-After` value: delay seconds, or an HTTP date (relative to `now`, Unix seconds).
pub fn parse_retry_after(value: &str, now_unix: i64) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_unix(value)?;
    Some(Duration::from_secs(u64::try_from(when - now_unix).unwrap_or(0)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) to Unix seconds.
fn httpdate_unix(value: &str) -> Option<i64> {
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let (day, year): (i64, i64) = (day.parse().ok()?, year.parse().ok()?);
    let hms: Vec<i64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else { return None };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_svix_s_with_bounded_jitter() {
        assert_eq!(delay_after(1, 0.0, None), Some(Duration::from_secs(5)));
        assert_eq!(delay_after(2, 0.0, None), Some(Duration::from_secs(300)));
        assert_eq!(delay_after(7, 0.0, None), Some(Duration::from_secs(36_000)));
        assert_eq!(delay_after(8, 0.0, None), None);
        let j = delay_after(1, 0.999, None).expect("scheduled");
        assert!(j > Duration::from_secs(5) && j < Duration::from_secs(6));
        assert_eq!(
            delay_after(1, 0.0, Some(Duration::from_secs(30))),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            delay_after(2, 0.0, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            delay_after(1, 0.0, Some(Duration::from_secs(10 * 86_400))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
        // 1994-11-06T08:49:37Z is 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_777 - 60),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }
}
