//! Flux durations: what the CRD pattern `^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$` admits
//! (`1m30s`, `500ms`, `1.5h`), parsed to `std::time::Duration`, and written back the way
//! Go's `time.Duration.String()` does (`1h30m0s`, `10m0s`, `500ms`).

use std::time::Duration;

/// Why a string is not a Flux duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty string.
    #[error("empty duration; write a number and a unit, e.g. \"5m\"")]
    Empty,
    /// Not of the form number+unit, repeated.
    #[error(
        "{value:?} is not a duration: {detail}; write numbers with units ms, s, m or h, e.g. \"1m30s\""
    )]
    Invalid {
        /// The rejected input.
        value: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Larger than this program can represent.
    #[error("{0:?} is too large a duration")]
    Overflow(String),
}

impl DurationError {
    /// What is wrong and the fix, without repeating the value (for messages that already
    /// show it).
    pub fn explanation(&self) -> String {
        match self {
            DurationError::Empty => "is empty; write a number and a unit, e.g. \"5m\"".into(),
            DurationError::Invalid { detail, .. } => format!(
                "is not a duration: {detail}; write numbers with units ms, s, m or h, e.g. \"1m30s\""
            ),
            DurationError::Overflow(_) => "is too large a duration".into(),
        }
    }
}

/// Parses a Flux duration (`1m30s`, `500ms`, `1.5h`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = |detail: &str| DurationError::Invalid {
        value: s.to_string(),
        detail: detail.to_string(),
    };
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_nanos: u128 = 0;
    while i < bytes.len() {
        let start = i;
        // The number's value, None once it overflows (reported after the unit is read).
        let mut int: Option<u128> = Some(0);
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            let digit = u128::from(bytes[i] - b'0');
            int = int.and_then(|n| n.checked_mul(10)?.checked_add(digit));
            i += 1;
        }
        if i == start {
            return Err(invalid(&format!(
                "expected a digit at position {}, found {:?}",
                i,
                s[i..].chars().next().unwrap_or(' ')
            )));
        }
        let int_part = &s[start..i];
        let mut frac_part = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fstart = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == fstart {
                return Err(invalid("a decimal point must be followed by digits"));
            }
            frac_part = &s[fstart..i];
        }
        let unit_nanos: u128 = if s[i..].starts_with("ms") {
            i += 2;
            1_000_000
        } else if s[i..].starts_with('s') {
            i += 1;
            1_000_000_000
        } else if s[i..].starts_with('m') {
            i += 1;
            60_000_000_000
        } else if s[i..].starts_with('h') {
            i += 1;
            3_600_000_000_000
        } else if i == bytes.len() {
            return Err(invalid(&format!("the number {int_part:?} has no unit")));
        } else {
            return Err(invalid(&format!(
                "unknown unit at position {i} (units are ms, s, m, h)"
            )));
        };
        let int = int.ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        let mut part = int
            .checked_mul(unit_nanos)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
        // Fractions: only the first 18 digits matter below a nanosecond.
        let frac_digits = &frac_part.as_bytes()[..frac_part.len().min(18)];
        if !frac_digits.is_empty() {
            // At most 18 digits: no overflow.
            let frac = frac_digits
                .iter()
                .fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
            let scale = 10u128.pow(frac_digits.len() as u32);
            part += frac * unit_nanos / scale;
        }
        total_nanos = total_nanos
            .checked_add(part)
            .ok_or_else(|| DurationError::Overflow(s.to_string()))?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(s.to_string()))?;
    Ok(Duration::new(secs, (total_nanos % 1_000_000_000) as u32))
}

/// True when a duration text uses the `h` unit (no other unit has an `h`), which Flux's
/// `spec.timeout` pattern does not allow.
pub fn uses_hours(s: &str) -> bool {
    s.bytes().any(|b| b == b'h')
}

/// Writes a duration as Go does: `0s`, `500ms`, `1.5s`, `10m0s`, `1h30m0s`.
pub fn format_duration(d: Duration) -> String {
    format_go(d, true)
}

/// Writes a duration compactly and without the `h` unit (Flux's `spec.timeout` pattern
/// has none): `2h` becomes `120m`, 90.5 s `1m30.5s`, half a second `500ms`.
pub fn format_duration_without_hours(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos < 1_000_000_000 {
        return format_go(d, false);
    }
    let mins = d.as_secs() / 60;
    let rest = nanos - mins as u128 * 60_000_000_000;
    let mut out = String::new();
    if mins > 0 {
        out.push_str(&format!("{mins}m"));
    }
    if rest > 0 {
        out.push_str(&frac(rest, 1_000_000_000));
        out.push('s');
    }
    out
}

fn format_go(d: Duration, hours: bool) -> String {
    // `hours == false` is used only below one second, where both forms agree.
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000_000_000 {
        // Below one second Go picks the largest unit that keeps an integer part.
        return if nanos >= 1_000_000 {
            format!("{}ms", frac(nanos, 1_000_000))
        } else if nanos >= 1_000 {
            format!("{}µs", frac(nanos, 1_000))
        } else {
            format!("{nanos}ns")
        };
    }
    let total_secs = d.as_secs();
    let sub = d.subsec_nanos() as u128;
    let secs = total_secs % 60;
    let total_mins = total_secs / 60;
    let mut out = String::new();
    if hours {
        let h = total_mins / 60;
        let m = total_mins % 60;
        if h > 0 {
            out.push_str(&format!("{h}h"));
        }
        if h > 0 || m > 0 {
            out.push_str(&format!("{m}m"));
        }
    } else if total_mins > 0 {
        out.push_str(&format!("{total_mins}m"));
    }
    out.push_str(&frac(secs as u128 * 1_000_000_000 + sub, 1_000_000_000));
    out.push('s');
    out
}

/// `value / unit` as a decimal with trailing zeros removed.
fn frac(value: u128, unit: u128) -> String {
    let int = value / unit;
    let rem = value % unit;
    if rem == 0 {
        return int.to_string();
    }
    let width = unit.to_string().len() - 1;
    let digits = format!("{rem:0width$}");
    format!("{int}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_flux_accepts() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h0m0s").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0.5s").unwrap(), Duration::from_millis(500));
        // Fraction digits past the 18th are below a nanosecond and ignored.
        assert_eq!(
            parse_duration("0.1234567891234567899999s").unwrap(),
            Duration::from_nanos(123_456_789)
        );
        assert_eq!(
            parse_duration("18446744073s").unwrap(),
            Duration::from_secs(18_446_744_073)
        );
    }

    #[test]
    fn too_large_numbers_are_reported_after_the_unit() {
        let huge = "9".repeat(40);
        assert!(matches!(
            parse_duration(&format!("{huge}s")),
            Err(DurationError::Overflow(_))
        ));
        // 41 digits overflow the u128 the number is accumulated in.
        assert!(matches!(
            parse_duration(&format!("{huge}0h")),
            Err(DurationError::Overflow(_))
        ));
        // The unit is checked first: a missing or unknown one is what gets reported.
        assert!(matches!(
            parse_duration(&format!("{huge}x")),
            Err(DurationError::Invalid { .. })
        ));
        assert!(matches!(
            parse_duration(&huge),
            Err(DurationError::Invalid { .. })
        ));
    }

    #[test]
    fn refuses_what_the_crd_pattern_refuses() {
        for bad in [
            "", "10", "5 m", "-1m", "1d", "m", "1.m", "1m30", "1us", "abc",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn errors_name_the_value_and_the_fix() {
        let msg = parse_duration("10").unwrap_err().to_string();
        assert!(
            msg.contains("\"10\"") && msg.contains("no unit") && msg.contains("1m30s"),
            "{msg}"
        );
    }

    #[test]
    fn formats_as_go_does() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m0s");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m0s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(format_duration(Duration::from_secs(59)), "59s");
    }

    #[test]
    fn formats_without_hours_for_timeouts() {
        assert_eq!(
            format_duration_without_hours(Duration::from_secs(7200)),
            "120m"
        );
        assert_eq!(
            format_duration_without_hours(Duration::from_secs(5430)),
            "90m30s"
        );
        assert_eq!(
            format_duration_without_hours(Duration::from_millis(90500)),
            "1m30.5s"
        );
        assert_eq!(
            format_duration_without_hours(Duration::from_millis(500)),
            "500ms"
        );
        let back = parse_duration(&format_duration_without_hours(Duration::from_secs(7200)));
        assert_eq!(back.unwrap(), Duration::from_secs(7200));
    }
}
