//! Times as people write them, through one date crate (`jiff`): RFC 3339 in
//! (`stream tail --from`, `replay --since/--until`, the index API's
//! `since`), RFC 3339 out, and the civil date of a key template.

use jiff::{Timestamp, civil::DateTime, tz::TimeZone};

/// An RFC 3339 time in milliseconds since the Unix epoch:
/// `2026-12-05T08:00:00Z`, with a fraction, with an offset (`+02:00`), or
/// with none at all (then UTC); a space may stand for the `T`.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    // RFC 3339 offsets run to ±23:59; jiff takes up to ±25:59:59.
    if offset_hours(s).is_some_and(|h| h > 23) {
        return None;
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(t.as_millisecond());
    }
    let local = s.parse::<DateTime>().ok()?;
    let t = local.to_zoned(TimeZone::UTC).ok()?.timestamp();
    Some(t.as_millisecond())
}

/// The hours of a trailing `±HH:MM` or `±HHMM` offset after a time of day.
fn offset_hours(s: &str) -> Option<u32> {
    let b = s.as_bytes();
    let at = match b.len() {
        n if n >= 6 && b[n - 3] == b':' && matches!(b[n - 6], b'+' | b'-') => n - 5,
        n if n >= 5 && matches!(b[n - 5], b'+' | b'-') => n - 4,
        _ => return None,
    };
    // Only after the time of day (`T` or a space): not a date's `-`.
    if !s[..at].contains(['T', 't', ' ']) {
        return None;
    }
    s.get(at..at + 2)?.parse().ok()
}

/// `ms` as RFC 3339 in UTC with milliseconds: `2026-12-05T08:00:00.000Z`.
pub fn format_ms(ms: i64) -> String {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => format!("{t:.3}"),
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

/// The UTC civil date and time of `ms`: (year, month, day, hour, minute,
/// second). Outside jiff's range (years -9999 to 9999), the nearest end.
pub fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32) {
    let t = Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let d = t.to_zoned(TimeZone::UTC).datetime();
    (
        i64::from(d.year()),
        d.month() as u32,
        d.day() as u32,
        d.hour() as u32,
        d.minute() as u32,
        d.second() as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_and_without_zones() {
        let z = parse_rfc3339_ms("2026-12-05T08:00:00Z");
        assert_eq!(z, Some(1_796_457_600_000));
        assert_eq!(parse_rfc3339_ms("2026-12-05T10:00:00+02:00"), z);
        assert_eq!(parse_rfc3339_ms("2026-12-05T08:00:00"), z, "no zone: UTC");
        assert_eq!(
            parse_rfc3339_ms("2026-12-05 08:00:00.250Z"),
            z.map(|z| z + 250)
        );
        for bad in [
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-12-05T25:00:00Z",
            "",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad}");
        }
        assert_eq!(format_ms(1_796_457_600_250), "2026-12-05T08:00:00.250Z");
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400_000), (2000, 2, 29, 0, 0, 0));
        assert_eq!(civil(-1), (1969, 12, 31, 23, 59, 59));
    }
}
