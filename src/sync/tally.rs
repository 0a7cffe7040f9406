//! What one sync did, counted as it goes: the figures of its log lines,
//! the values it left out of records, and the rule that tells a few
//! refused records from an endpoint refusing everything (issue 14).

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::transform::DroppedValue;

/// Records Ometria may turn down in a sync that it took fewer records of:
/// beyond that, and beyond what it took, the refusal is no record's own.
pub const TURNED_DOWN_VOUCHED: u64 = 10;

/// What one sync did, for its log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    pub pages: u64,
    /// Members read from Mailchimp.
    pub read: u64,
    /// Members the mapping could not send.
    pub skipped: u64,
    pub accepted: u64,
    /// Records not pushed: equal to what Ometria last accepted (the member
    /// ledger), or to a record of this sync batched and not yet answered.
    pub unchanged: u64,
    pub rejected: u64,
    /// Of those rejected, records never sent (too large).
    pub unsent: u64,
    /// Values left out of records (Ometria would not take them).
    pub dropped: u64,
}

impl SyncCounts {
    /// Why the records Ometria turned down (counted as rejected, or refused
    /// alone) cannot be their own content: more than a few of them, and
    /// more than Ometria took in this sync. Old evidence that Ometria takes
    /// records vouches for a few refused records, never for most of a
    /// sync's: an endpoint that starts refusing everything must fail the
    /// sync, not have the list's records kept aside and the cursor moved.
    pub fn turned_down_too_many(&self) -> Option<String> {
        let c = self;
        let turned_down = c.rejected.saturating_sub(c.unsent);
        (turned_down > TURNED_DOWN_VOUCHED && turned_down > c.accepted).then(|| {
            format!(
                "Ometria turned down {turned_down} records of this sync (counted them as rejected or refused them) \
                 and took only {}: more than it took, which is not a few records' content; check \
                 OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY, and the rejected file for Ometria's reasons",
                c.accepted
            )
        })
    }
}

/// Values left out of one sync's records, by Ometria field: how many, and
/// the first one seen with its member's id, for the one log line a sync
/// gives them (issue 14, part 3).
#[derive(Debug, Default)]
pub struct DroppedValues(BTreeMap<Cow<'static, str>, (u64, String, String)>);

impl DroppedValues {
    /// Counts `value`, left out of the record of member `id`.
    pub fn add(&mut self, value: DroppedValue, id: &str) {
        let entry = self
            .0
            .entry(value.field)
            .or_insert_with(|| (0, value.value, id.to_owned()));
        entry.0 += 1;
    }

    /// `timestamp_subscribed 3 (the first: "0000-00-00 00:00:00" of member "u1")`, …
    pub fn describe(&self) -> String {
        let fields: Vec<String> = self
            .0
            .iter()
            .map(|(field, (n, value, id))| format!("{field} {n} (the first: {value:?} of member \"{id}\")"))
            .collect();
        fields.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_refused_records_are_their_own_but_most_of_a_sync_is_not() {
        let counts = |accepted, rejected, unsent| SyncCounts {
            accepted,
            rejected,
            unsent,
            ..SyncCounts::default()
        };
        assert_eq!(counts(0, TURNED_DOWN_VOUCHED, 0).turned_down_too_many(), None);
        assert_eq!(counts(50, 40, 0).turned_down_too_many(), None);
        // Records too large to send were never turned down by Ometria.
        assert_eq!(counts(0, 500, 500).turned_down_too_many(), None);
        let reason = counts(5, 11, 0).turned_down_too_many().unwrap();
        assert!(
            reason.contains("turned down 11 records") && reason.contains("took only 5"),
            "{reason}"
        );
        assert!(counts(100, 120, 10).turned_down_too_many().is_some());
    }

    #[test]
    fn dropped_values_are_counted_per_field_with_the_first_seen() {
        let mut dropped = DroppedValues::default();
        let value = |field: &'static str, value: &str| DroppedValue {
            field: field.into(),
            value: value.to_owned(),
        };
        dropped.add(value("timestamp_subscribed", "0000-00-00 00:00:00"), "u1");
        dropped.add(value("timestamp_subscribed", "2021-02-30"), "u2");
        dropped.add(value("email", "nope"), "u3");
        assert_eq!(
            dropped.describe(),
            "email 1 (the first: \"nope\" of member \"u3\"), \
             timestamp_subscribed 2 (the first: \"0000-00-00 00:00:00\" of member \"u1\")"
        );
    }
}
