//! The cursor's text forms: what the state file accepts, what it is written
//! as, and how Mailchimp wants it in a query string.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parses a timestamp as users write it in `state.json`: `2019-10-18T22:20:23`
/// (UTC), optionally with fractional seconds, `Z` or a `±HH:MM` offset; a
/// space instead of the `T` is accepted too, as in the log lines.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Some(t.and_utc());
        }
    }
    None
}

/// The state file's form: `YYYY-MM-DDTHH:MM:SS`, UTC, whole seconds.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// The form the log lines use: `YYYY-MM-DD HH:MM:SS`.
pub fn format_for_log(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// Mailchimp's query-string form: ISO 8601 with an explicit offset
/// (`2019-10-18T22:20:23+00:00`); the caller URL-encodes it.
pub fn format_for_mailchimp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn accepts_every_documented_form() {
        let want = utc(2019, 10, 18, 22, 20, 23);
        for text in [
            "2019-10-18T22:20:23",
            "2019-10-18T22:20:23Z",
            "2019-10-18T22:20:23+00:00",
            "2019-10-19T00:20:23+02:00",
            "2019-10-18T20:20:23-02:00",
            "2019-10-18 22:20:23",
            " 2019-10-18T22:20:23 ",
            "2019-10-18T22:20:23+0000",
        ] {
            assert_eq!(parse_timestamp(text), Some(want), "{text}");
        }
        let fractional = parse_timestamp("2019-10-18T22:20:23.75").unwrap();
        assert_eq!(fractional.timestamp_millis(), want.timestamp_millis() + 750);
        assert_eq!(
            parse_timestamp("2019-10-18T22:20:23.5Z").unwrap().timestamp_millis(),
            want.timestamp_millis() + 500
        );
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for text in ["", "yesterday", "2019-10-18", "2019-13-18T22:20:23", "22:20:23"] {
            assert_eq!(parse_timestamp(text), None, "{text}");
        }
    }

    #[test]
    fn formats() {
        let t = utc(2019, 10, 18, 22, 20, 23);
        assert_eq!(format_timestamp(t), "2019-10-18T22:20:23");
        assert_eq!(format_for_log(t), "2019-10-18 22:20:23");
        assert_eq!(format_for_mailchimp(t), "2019-10-18T22:20:23+00:00");
    }
}
