//! When an entry syncs (SPEC §3): LOAD, SYNC, up to date, or waiting out
//! the backoff of an earlier failure.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::state::Entry;

/// The first retry of a failed entry waits this long; each further failure
/// doubles it, up to the entry's refresh interval.
pub const FIRST_RETRY_DELAY: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// No cursor: read the whole list.
    Load,
    /// Read what changed since the cursor (minus the overlap).
    Sync { cursor: DateTime<Utc> },
}

impl SyncKind {
    /// The word the log lines use, as the original importer did.
    pub fn name(&self) -> &'static str {
        match self {
            SyncKind::Load => "LOAD",
            SyncKind::Sync { .. } => "SYNC",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Due(SyncKind),
    UpToDate {
        last: DateTime<Utc>,
        next_due: DateTime<Utc>,
    },
    Running,
    BackingOff {
        failures: u32,
        retry_at: DateTime<Utc>,
    },
}

/// Failures of one entry in a row, and when it may be tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub failures: u32,
    pub retry_at: DateTime<Utc>,
}

impl Backoff {
    /// The backoff after one more failure at `failed_at`: 1, 2, 4 … minutes,
    /// capped at the refresh interval.
    pub fn after_failure(previous: Option<&Backoff>, failed_at: DateTime<Utc>, refresh: Duration) -> Backoff {
        let failures = previous.map_or(1, |b| b.failures.saturating_add(1));
        let doubled = FIRST_RETRY_DELAY.saturating_mul(1u32 << (failures - 1).min(20));
        let delay = doubled.min(refresh);
        Backoff {
            failures,
            retry_at: failed_at + delta(delay),
        }
    }
}

/// How long an entry may go without a successful sync before it is
/// behind (SPEC §11): its own `alert_after_seconds`, or three refresh
/// intervals.
pub fn alert_threshold(entry: &Entry, default_refresh: Duration) -> Duration {
    entry
        .alert_after
        .unwrap_or_else(|| refresh_of(entry, default_refresh).saturating_mul(3))
}

/// How long since the entry's last successful sync started (its trusted
/// `cursor`) — or, without one, since it has had none.
pub fn lag(cursor: Option<DateTime<Utc>>, without_cursor_since: DateTime<Utc>, now: DateTime<Utc>) -> TimeDelta {
    now - cursor.unwrap_or(without_cursor_since)
}

/// `3 h 5 min`, `12 min 3 s`, `45 s`: durations for log lines.
pub fn human(d: TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) => format!("{m} min {s} s"),
        _ => format!("{h} h {m} min"),
    }
}

/// The refresh interval that applies to `entry`.
pub fn refresh_of(entry: &Entry, default_refresh: Duration) -> Duration {
    entry.refresh.unwrap_or(default_refresh)
}

/// The entry's cursor if it can be trusted at `now`. A cursor further in
/// the future than the overlap (written by hand in local time, say, or
/// by this machine before its clock was set back) claims members that
/// have not changed yet: a SYNC from it would skip every change until
/// then, so it is no cursor at all and the entry LOADs.
pub fn trusted_cursor(entry: &Entry, now: DateTime<Utc>, overlap: Duration) -> Option<DateTime<Utc>> {
    entry.cursor.filter(|cursor| !cursor_in_future(*cursor, now, overlap))
}

/// Whether `cursor` lies further ahead of `now` than the overlap absorbs.
fn cursor_in_future(cursor: DateTime<Utc>, now: DateTime<Utc>, overlap: Duration) -> bool {
    cursor > now + delta(overlap)
}

pub fn decide(
    entry: &Entry,
    now: DateTime<Utc>,
    default_refresh: Duration,
    overlap: Duration,
    running: bool,
    backoff: Option<&Backoff>,
) -> Decision {
    if running {
        return Decision::Running;
    }
    if let Some(b) = backoff {
        if now < b.retry_at {
            return Decision::BackingOff {
                failures: b.failures,
                retry_at: b.retry_at,
            };
        }
    }
    match trusted_cursor(entry, now, overlap) {
        None => Decision::Due(SyncKind::Load),
        Some(cursor) => {
            let next_due = next_due(entry, cursor, default_refresh);
            if now >= next_due {
                Decision::Due(SyncKind::Sync { cursor })
            } else {
                Decision::UpToDate { last: cursor, next_due }
            }
        }
    }
}

/// When an entry last synced at `cursor` is due again.
fn next_due(entry: &Entry, cursor: DateTime<Utc>, default_refresh: Duration) -> DateTime<Utc> {
    cursor + delta(refresh_of(entry, default_refresh))
}

/// Since when a due entry has been due: the entries waiting for a free
/// slot start in this order (the longest waiting first, file order among
/// equals), so entries due often cannot keep one due rarely from ever
/// starting. A LOAD is due since the entry has had no cursor, a SYNC since
/// its refresh interval ran out, and after a failure not before the
/// backoff ended.
pub fn due_since(
    entry: &Entry,
    kind: SyncKind,
    without_cursor_since: DateTime<Utc>,
    default_refresh: Duration,
    backoff: Option<&Backoff>,
) -> DateTime<Utc> {
    let since = match kind {
        SyncKind::Load => without_cursor_since,
        SyncKind::Sync { cursor } => next_due(entry, cursor, default_refresh),
    };
    backoff.map_or(since, |b| since.max(b.retry_at))
}

/// std → chrono; every duration here is far below chrono's range.
pub fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EntryKey, DEFAULT_ITEMS_PER_REQUEST, DEFAULT_WORKER_COUNT};
    use chrono::TimeZone;
    use serde_json::Value;

    const HOUR: Duration = Duration::from_secs(3600);
    const OVERLAP: Duration = Duration::from_secs(300);

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2019, 10, 21, h, m, s).unwrap()
    }

    fn entry(cursor: Option<DateTime<Utc>>, refresh: Option<u64>) -> Entry {
        Entry {
            key: EntryKey {
                list_id: "a1".into(),
                rank: 0,
            },
            index: 0,
            cursor,
            cursor_raw: Value::Null,
            start_offset: 0,
            items_per_request: DEFAULT_ITEMS_PER_REQUEST,
            worker_count: DEFAULT_WORKER_COUNT,
            refresh: refresh.map(Duration::from_secs),
            alert_after: None,
            reconcile: None,
            on_delete: Default::default(),
            mapping: Default::default(),
            last_elapsed_seconds: None,
            last_total_updates: None,
        }
    }

    #[test]
    fn no_cursor_means_load() {
        assert_eq!(
            decide(&entry(None, None), at(10, 0, 0), HOUR, OVERLAP, false, None),
            Decision::Due(SyncKind::Load)
        );
    }

    #[test]
    fn sync_is_due_exactly_at_the_refresh_interval() {
        let e = entry(Some(at(9, 0, 0)), None);
        assert_eq!(
            decide(&e, at(9, 59, 59), HOUR, OVERLAP, false, None),
            Decision::UpToDate {
                last: at(9, 0, 0),
                next_due: at(10, 0, 0)
            }
        );
        assert_eq!(
            decide(&e, at(10, 0, 0), HOUR, OVERLAP, false, None),
            Decision::Due(SyncKind::Sync { cursor: at(9, 0, 0) })
        );
    }

    #[test]
    fn due_since_the_refresh_ran_out_the_entry_was_seen_or_the_backoff_ended() {
        let e = entry(Some(at(9, 0, 0)), Some(300));
        let sync = SyncKind::Sync { cursor: at(9, 0, 0) };
        assert_eq!(due_since(&e, sync, at(8, 0, 0), HOUR, None), at(9, 5, 0));
        assert_eq!(due_since(&e, SyncKind::Load, at(8, 0, 0), HOUR, None), at(8, 0, 0));
        let backoff = Backoff {
            failures: 2,
            retry_at: at(9, 7, 0),
        };
        assert_eq!(due_since(&e, sync, at(8, 0, 0), HOUR, Some(&backoff)), at(9, 7, 0));
        let early = Backoff {
            failures: 1,
            retry_at: at(9, 1, 0),
        };
        assert_eq!(due_since(&e, sync, at(8, 0, 0), HOUR, Some(&early)), at(9, 5, 0));
    }

    #[test]
    fn a_per_entry_refresh_overrides_the_default() {
        let e = entry(Some(at(9, 0, 0)), Some(300));
        assert_eq!(
            decide(&e, at(9, 5, 0), HOUR, OVERLAP, false, None),
            Decision::Due(SyncKind::Sync { cursor: at(9, 0, 0) })
        );
    }

    #[test]
    fn a_cursor_in_the_future_within_the_overlap_is_up_to_date() {
        let e = entry(Some(at(10, 5, 0)), None);
        assert_eq!(
            decide(&e, at(10, 0, 0), HOUR, OVERLAP, false, None),
            Decision::UpToDate {
                last: at(10, 5, 0),
                next_due: at(11, 5, 0)
            }
        );
    }

    #[test]
    fn a_cursor_further_in_the_future_than_the_overlap_means_load() {
        let e = entry(Some(at(10, 5, 1)), None);
        assert_eq!(
            decide(&e, at(10, 0, 0), HOUR, OVERLAP, false, None),
            Decision::Due(SyncKind::Load)
        );
        assert_eq!(trusted_cursor(&e, at(10, 0, 0), OVERLAP), None);
        assert_eq!(trusted_cursor(&e, at(10, 0, 1), OVERLAP), Some(at(10, 5, 1)));
    }

    #[test]
    fn a_running_entry_is_never_started_twice() {
        assert_eq!(
            decide(&entry(None, None), at(10, 0, 0), HOUR, OVERLAP, true, None),
            Decision::Running
        );
    }

    #[test]
    fn backoff_doubles_from_one_minute_up_to_the_refresh_interval() {
        let mut b = None;
        let mut delays = vec![];
        for _ in 0..9 {
            let next = Backoff::after_failure(b.as_ref(), at(10, 0, 0), Duration::from_secs(600));
            delays.push((next.retry_at - at(10, 0, 0)).num_seconds());
            b = Some(next);
        }
        assert_eq!(delays, [60, 120, 240, 480, 600, 600, 600, 600, 600]);
        assert_eq!(b.unwrap().failures, 9);
    }

    #[test]
    fn a_failed_entry_waits_for_its_backoff_then_is_due() {
        let b = Backoff::after_failure(None, at(10, 0, 0), HOUR);
        let e = entry(None, None);
        assert_eq!(
            decide(&e, at(10, 0, 59), HOUR, OVERLAP, false, Some(&b)),
            Decision::BackingOff {
                failures: 1,
                retry_at: at(10, 1, 0)
            }
        );
        assert_eq!(
            decide(&e, at(10, 1, 0), HOUR, OVERLAP, false, Some(&b)),
            Decision::Due(SyncKind::Load)
        );
    }

    #[test]
    fn behind_after_three_refresh_intervals_or_the_entrys_own_threshold() {
        let mut e = entry(Some(at(7, 0, 0)), Some(600));
        assert_eq!(alert_threshold(&e, HOUR), Duration::from_secs(1800));
        e.alert_after = Some(Duration::from_secs(60));
        assert_eq!(alert_threshold(&e, HOUR), Duration::from_secs(60));
        assert_eq!(alert_threshold(&entry(None, None), HOUR), Duration::from_secs(3 * 3600));
        assert_eq!(lag(e.cursor, at(1, 0, 0), at(7, 30, 0)), TimeDelta::minutes(30));
        // No cursor: the lag runs from when the entry was seen without one.
        assert_eq!(lag(None, at(1, 0, 0), at(7, 30, 0)), TimeDelta::minutes(390));
        assert_eq!(human(TimeDelta::seconds(45)), "45 s");
        assert_eq!(human(TimeDelta::seconds(723)), "12 min 3 s");
        assert_eq!(human(TimeDelta::seconds(11_100)), "3 h 5 min");
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let b = Backoff {
            failures: u32::MAX - 1,
            retry_at: at(10, 0, 0),
        };
        let next = Backoff::after_failure(Some(&b), at(10, 0, 0), HOUR);
        assert_eq!(next.retry_at, at(11, 0, 0));
    }
}
