//! Human-readable validity periods ("24 hours", "1 Stunde und 30 Minuten") for the message text.

use std::time::Duration;

/// Units in one language: singular and plural of day, hour, minute, and the word for "and".
struct Units {
    day: (&'static str, &'static str),
    hour: (&'static str, &'static str),
    minute: (&'static str, &'static str),
    and: &'static str,
}

const EN: Units = Units {
    day: ("day", "days"),
    hour: ("hour", "hours"),
    minute: ("minute", "minutes"),
    and: "and",
};

const DE: Units = Units {
    day: ("Tag", "Tage"),
    hour: ("Stunde", "Stunden"),
    minute: ("Minute", "Minuten"),
    and: "und",
};

/// Formats how long a code stays valid, in `language` (`de`, or English for anything else).
///
/// Periods under two days are given in hours and minutes (`24 hours`, `1 hour and 30 minutes`),
/// longer ones in days and hours (`3 days`, `2 days and 6 hours`); partial minutes round up, and
/// anything under a minute reads as one minute.
pub fn format_expiry(expires_in: Duration, language: &str) -> String {
    let units = if language == "de" || language.starts_with("de-") {
        &DE
    } else {
        &EN
    };
    let minutes = expires_in.as_secs().div_ceil(60).max(1);
    let parts: Vec<(u64, (&str, &str))> = if minutes < 48 * 60 {
        vec![(minutes / 60, units.hour), (minutes % 60, units.minute)]
    } else {
        let hours = minutes.div_ceil(60);
        vec![(hours / 24, units.day), (hours % 24, units.hour)]
    };
    let words: Vec<String> = parts
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, (one, many))| format!("{n} {}", if n == 1 { one } else { many }))
        .collect();
    words.join(&format!(" {} ", units.and))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: u64) -> Duration {
        Duration::from_secs(h * 3600)
    }

    #[test]
    fn english() {
        assert_eq!(format_expiry(hours(24), "en"), "24 hours");
        assert_eq!(format_expiry(hours(1), "en"), "1 hour");
        assert_eq!(
            format_expiry(Duration::from_secs(90 * 60), "en"),
            "1 hour and 30 minutes"
        );
        assert_eq!(format_expiry(Duration::from_secs(600), "en"), "10 minutes");
        assert_eq!(format_expiry(Duration::from_secs(61), "en"), "2 minutes");
        assert_eq!(format_expiry(Duration::ZERO, "en"), "1 minute");
        assert_eq!(format_expiry(hours(72), "en"), "3 days");
        assert_eq!(format_expiry(hours(54), "en"), "2 days and 6 hours");
        assert_eq!(format_expiry(hours(24), "fr"), "24 hours");
    }

    #[test]
    fn german() {
        assert_eq!(format_expiry(hours(24), "de"), "24 Stunden");
        assert_eq!(format_expiry(hours(1), "de-CH"), "1 Stunde");
        assert_eq!(
            format_expiry(Duration::from_secs(90 * 60), "de"),
            "1 Stunde und 30 Minuten"
        );
        assert_eq!(format_expiry(Duration::from_secs(60), "de"), "1 Minute");
        assert_eq!(format_expiry(hours(49), "de"), "2 Tage und 1 Stunde");
        assert_eq!(format_expiry(hours(24 * 7), "de"), "7 Tage");
    }
}
