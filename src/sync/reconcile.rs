//! Pure rules of a reconciliation (issue 16, "Deleted members"): when one
//! is due, which windows it reads, and the guard that keeps a broken read
//! from opting out an audience.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::delta;
use crate::state::Entry;

/// Members per page of a reconciliation's read: Mailchimp's largest `count`.
pub const RECONCILE_COUNT: u32 = 1000;

/// Members of the ledger not seen, looked up and opted out this many at a
/// time (one push each): never the whole list in memory.
pub const UNSEEN_PAGE: u32 = 100;

/// Windows read after the first to catch members that changed while the
/// reconciliation read (see [`tail_window`]).
pub const MAX_TAIL_READS: u32 = 3;

/// The run history's kind of a reconciliation.
pub const RECONCILE_KIND: &str = "RECONCILE";

/// Whether `entry`'s list is due for a reconciliation at `now`: it has
/// `reconcile_seconds` (not 0), and either its last successful
/// reconciliation started at least that long ago, or there is none and
/// the ledger holds members of the list (a list whose members the ledger
/// does not hold has nothing to reconcile).
pub fn reconcile_due(
    entry: &Entry,
    last_reconciled: Option<DateTime<Utc>>,
    holds_members: bool,
    now: DateTime<Utc>,
) -> bool {
    let Some(every) = entry.reconcile else {
        return false;
    };
    match last_reconciled {
        Some(last) => now >= last + delta(every),
        None => holds_members,
    }
}

/// The window of the read after one that covered members changed before
/// `before` (unix seconds), starting at `now`: `(since, before)`, the
/// members changed since one second early (Mailchimp's bounds may exclude
/// that second) up to the end of `now`'s second (a member that changed in
/// it has that second as its `last_changed`), so that a member that
/// changed while the previous window was read — and so left it — is still
/// seen. Reading one twice is harmless: it only marks members seen.
pub fn tail_window(before: i64, now: DateTime<Utc>) -> (i64, DateTime<Utc>) {
    let end = super::start_time(now) + chrono::TimeDelta::seconds(1);
    (before - 1, end)
}

/// The fraction guard: `Err` with what an operator must know when more
/// than `max_fraction` of the `members` the ledger holds for a list were
/// not seen (`unseen`): a broken proxy's empty answer must never opt a
/// whole audience out.
pub fn check_deletions(unseen: u64, members: u64, max_fraction: f64) -> Result<(), String> {
    if (unseen as f64) <= max_fraction * members as f64 {
        return Ok(());
    }
    let share = if members == 0 {
        100.0
    } else {
        unseen as f64 * 100.0 / members as f64
    };
    Err(format!(
        "{unseen} of the {members} members the ledger holds ({share:.1} %) were not returned by Mailchimp, \
         more than IMPORTER_MAX_DELETE_FRACTION={max_fraction} allows; nothing was opted out. If they were \
         really deleted, raise IMPORTER_MAX_DELETE_FRACTION for one run (or set the entry's on_delete to \
         \"ignore\"); otherwise check what stands between the importer and Mailchimp"
    ))
}

/// How long a reconciliation that failed waits before it is tried again:
/// as a sync's backoff, capped at its own interval.
pub fn reconcile_cap(entry: &Entry) -> Duration {
    entry.reconcile.unwrap_or(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EntryKey, OnDelete, DEFAULT_ITEMS_PER_REQUEST, DEFAULT_WORKER_COUNT};
    use chrono::TimeZone;
    use serde_json::Value;

    fn entry(reconcile: Option<u64>) -> Entry {
        Entry {
            key: EntryKey {
                list_id: "a1".into(),
                rank: 0,
            },
            index: 0,
            cursor: None,
            cursor_raw: Value::Null,
            start_offset: 0,
            items_per_request: DEFAULT_ITEMS_PER_REQUEST,
            worker_count: DEFAULT_WORKER_COUNT,
            refresh: None,
            alert_after: None,
            reconcile: reconcile.map(Duration::from_secs),
            on_delete: OnDelete::OptOut,
            mapping: Default::default(),
            last_elapsed_seconds: None,
            last_total_updates: None,
        }
    }

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, h, m, 0).unwrap()
    }

    #[test]
    fn due_once_its_interval_has_passed_since_the_last_success() {
        let daily = entry(Some(3600));
        assert!(!reconcile_due(&daily, Some(at(9, 0)), true, at(9, 59)));
        assert!(reconcile_due(&daily, Some(at(9, 0)), true, at(10, 0)));
        // Never reconciled: due as soon as the ledger holds members.
        assert!(reconcile_due(&daily, None, true, at(9, 0)));
        assert!(!reconcile_due(&daily, None, false, at(9, 0)));
    }

    #[test]
    fn zero_turns_it_off() {
        let off = entry(None);
        assert!(!reconcile_due(&off, None, true, at(9, 0)));
        assert!(!reconcile_due(&off, Some(at(0, 0)), true, at(23, 0)));
    }

    #[test]
    fn the_guard_lets_a_few_through_and_stops_more_than_the_fraction() {
        assert_eq!(check_deletions(0, 0, 0.05), Ok(()));
        assert_eq!(check_deletions(5, 100, 0.05), Ok(()));
        let error = check_deletions(6, 100, 0.05).unwrap_err();
        assert!(
            error.starts_with("6 of the 100 members the ledger holds (6.0 %) were not returned by Mailchimp, more than IMPORTER_MAX_DELETE_FRACTION=0.05 allows; nothing was opted out."),
            "{error}"
        );
        // An empty answer: every member unseen.
        assert!(check_deletions(1000, 1000, 0.05).is_err());
        assert_eq!(check_deletions(1000, 1000, 1.0), Ok(()));
    }

    #[test]
    fn a_tail_window_starts_a_second_before_the_last_one_ended() {
        let now = at(9, 0) + chrono::TimeDelta::milliseconds(300);
        assert_eq!(tail_window(1_000, now), (999, at(9, 0) + chrono::TimeDelta::seconds(1)));
    }
}
