//! The time window one sync reads (SPEC §4): everything changed before the
//! sync's start `T0`, and for a SYNC only what changed since the cursor
//! minus an overlap.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};

use super::schedule::{delta, SyncKind};

/// Re-read this much before the cursor: absorbs clock skew between us and
/// Mailchimp. Re-sending a record is harmless (Ometria writes are by id).
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub since: Option<DateTime<Utc>>,
    pub before: DateTime<Utc>,
}

impl Window {
    /// The window of a sync of `kind` starting at `t0`. A SYNC whose
    /// cursor minus `overlap` falls before the Unix epoch (a cursor set by
    /// hand to `0001-01-01T00:00:00`, say) has no lower bound: no member
    /// changed before then, and Mailchimp is not asked for year 0.
    pub fn new(kind: SyncKind, t0: DateTime<Utc>, overlap: Duration) -> Window {
        let since = match kind {
            SyncKind::Load => None,
            SyncKind::Sync { cursor } => cursor
                .checked_sub_signed(delta(overlap))
                .filter(|since| since.timestamp() > 0),
        };
        Window { since, before: t0 }
    }
}

/// `T0` for a sync starting at `now`: whole seconds, because the cursor is
/// written with whole seconds and must equal `before_last_changed`.
pub fn start_time(now: DateTime<Utc>) -> DateTime<Utc> {
    now.with_nanosecond(0).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn load_has_no_lower_bound_and_sync_subtracts_the_overlap() {
        let t0 = Utc.with_ymd_and_hms(2019, 10, 21, 10, 51, 16).unwrap();
        let cursor = Utc.with_ymd_and_hms(2019, 10, 21, 9, 50, 54).unwrap();
        assert_eq!(
            Window::new(SyncKind::Load, t0, DEFAULT_OVERLAP),
            Window {
                since: None,
                before: t0
            }
        );
        let w = Window::new(SyncKind::Sync { cursor }, t0, DEFAULT_OVERLAP);
        assert_eq!(w.since, Some(Utc.with_ymd_and_hms(2019, 10, 21, 9, 45, 54).unwrap()));
        assert_eq!(w.before, t0);
    }

    #[test]
    fn a_cursor_before_the_epoch_reads_from_the_beginning() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
        for cursor in [
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 4, 0).unwrap(),
        ] {
            let w = Window::new(SyncKind::Sync { cursor }, t0, DEFAULT_OVERLAP);
            assert_eq!(w.since, None, "{cursor}");
        }
    }

    #[test]
    fn t0_is_whole_seconds() {
        let now = Utc.timestamp_millis_opt(1_571_655_076_987).unwrap();
        assert_eq!(start_time(now).timestamp_millis(), 1_571_655_076_000);
    }
}
