//! Durations as operators write them, in the configuration file and on the command line:
//! `30s`, `10m`, `1h`, `7d`, `1h30m`, `59m 58s` (what `block list` prints), or a bare
//! number of seconds (what the `*_seconds` keys and `--save-interval` always took).
//! Read with jiff's friendly format, a day being 24 hours.

use std::time::Duration;

use jiff::{Span, SpanRelativeTo};

/// The forms accepted, for error messages.
pub const FORMS: &str = "like 30s, 10m, 1h, 7d or 59m 58s (a bare number is seconds)";

/// The longest duration accepted anywhere: far beyond any ban worth giving, and still an
/// expiry the kernel holds in nanoseconds.
pub const LONGEST: Duration = Duration::from_secs(100 * 365 * 86_400);

/// `text` as a duration from zero to [`LONGEST`]; the error says what is accepted.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let refuse = || format!("{text:?} is not a duration: write one {FORMS}");
    let duration = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(text.parse().map_err(|_| refuse())?)
    } else {
        let span: Span = text.parse().map_err(|_| refuse())?;
        let signed = span
            .to_duration(SpanRelativeTo::days_are_24_hours())
            .map_err(|_| refuse())?;
        if signed.is_negative() {
            return Err(format!("{text:?} is negative: write a duration {FORMS}"));
        }
        Duration::try_from(signed).map_err(|_| refuse())?
    };
    if duration > LONGEST {
        return Err(format!(
            "{text:?} is too long: at most {} (100 years)",
            format(LONGEST)
        ));
    }
    Ok(duration)
}

/// `3d 4h`, `59m 58s`, `12s`: the two largest units, whole seconds (a remainder below
/// them is dropped), in a form [`parse`] reads back.
pub fn format(duration: Duration) -> String {
    let units = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let parts: Vec<String> = units
        .iter()
        .scan(duration.as_secs(), |left, &(size, name)| {
            let n = *left / size;
            *left %= size;
            Some((n, name))
        })
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, name)| format!("{n}{name}"))
        .collect();
    if parts.is_empty() {
        "0s".to_string()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(text: &str) -> Option<u64> {
        parse(text).map(|d| d.as_secs()).ok()
    }

    #[test]
    fn the_forms_operators_write_parse() {
        assert_eq!(secs("30s"), Some(30));
        assert_eq!(secs("10m"), Some(600));
        assert_eq!(secs("1h"), Some(3600));
        assert_eq!(secs("7d"), Some(7 * 86_400));
        assert_eq!(secs("1h30m"), Some(5400));
        assert_eq!(secs("1h 30m"), Some(5400));
        assert_eq!(secs("59m 58s"), Some(3598));
        assert_eq!(secs("3d 4h"), Some(3 * 86_400 + 4 * 3600));
        assert_eq!(secs(" 2d12h "), Some(216_000));
        assert_eq!(secs("1 hour"), Some(3600));
        assert_eq!(secs("2 minutes 5 seconds"), Some(125));
        assert_eq!(secs("1w"), Some(7 * 86_400));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        // Bare numbers are seconds, as the `*_seconds` keys and `--save-interval` took.
        assert_eq!(secs("10"), Some(10));
        assert_eq!(secs("0"), Some(0));
        assert_eq!(secs("0s"), Some(0));
        assert_eq!(secs("100y"), None);
    }

    #[test]
    fn what_is_not_a_duration_is_refused_saying_what_is() {
        for bad in [
            "",
            "s",
            "1x",
            "h1",
            "10 20",
            "1 month",
            "1y",
            "-1h",
            "1h-",
            "99999999999999999999",
            "99999999999999999999d",
            "36501d",
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.starts_with(&format!("{:?}", bad.trim())), "{error}");
            assert!(
                error.contains("like 30s") || error.contains("at most"),
                "{error}"
            );
        }
        assert!(parse("-1h").unwrap_err().contains("negative"));
    }

    #[test]
    fn durations_format_in_two_units() {
        let format_secs = |s| format(Duration::from_secs(s));
        assert_eq!(format_secs(0), "0s");
        assert_eq!(format_secs(12), "12s");
        assert_eq!(format_secs(3598), "59m 58s");
        assert_eq!(format_secs(3600), "1h");
        assert_eq!(format_secs(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(format(Duration::from_millis(59_999)), "59s");
    }

    /// What `block list` prints is what `--ttl` and the file read back: the same
    /// duration when it has two units or fewer, and always the same text again.
    #[test]
    fn printed_durations_read_back() {
        let mut seconds: Vec<u64> = vec![0, 1, 59, 60, 61, 3598, 3600, 3661, 86_399, 86_400];
        seconds.extend([90_061, 7 * 86_400 + 1, 365 * 86_400 + 3600]);
        seconds.extend((0..2000).map(|i| i * 7919 % 1_000_000));
        for secs in seconds {
            let printed = format(Duration::from_secs(secs));
            let read = parse(&printed).unwrap_or_else(|e| panic!("{secs}: {e}"));
            assert_eq!(format(read), printed, "{secs}");
            assert!(read.as_secs() <= secs, "{secs} read back as {read:?}");
            if secs < 3600 {
                // Minutes and seconds: all of it is printed.
                assert_eq!(read.as_secs(), secs, "{printed}");
            }
        }
    }
}
