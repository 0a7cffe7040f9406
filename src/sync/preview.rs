//! What the next sync of an entry would send (`plan`, issue 17), counted
//! record by record as a planning ListSync reads its pages: pure, so that
//! the rules below are tested without a runtime.
//!
//! A record is *new* when Ometria has taken no record of that member from
//! this list (the ledger does not hold it), *unchanged* when it is the
//! record Ometria last accepted (not pushed, by the ledger's rule), and
//! *changed* otherwise. New and changed records would be pushed, unless too
//! large for Ometria (60 KB), which a sync keeps aside as rejected without
//! sending. Of those pushed, a record *opts in* when it sends
//! `EXPLICITLY_OPTEDIN` and Ometria last took something else from this
//! list for the member (or nothing: a first push that subscribes can fire
//! a welcome campaign), and *opts out* likewise with `EXPLICITLY_OPTEDOUT`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::ledger::Previous;
use crate::ometria::{MarketingOptin, MAX_RECORD_BYTES};
use crate::transform::marketing_optin;

/// What the next sync of one entry would do. Serialised as `plan --json`
/// prints it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EntryPlan {
    pub list_id: String,
    /// The entry's position among the entries with its list id (0-based).
    pub rank: usize,
    /// `LOAD` or `SYNC`.
    pub kind: String,
    /// The window read: members changed since (SYNC) and before, UTC.
    pub since: Option<String>,
    pub before: String,
    /// Whether records were compared with a ledger (without one, every
    /// record counts as new).
    pub ledger: bool,
    /// Members read from Mailchimp (each once, archived ones included).
    pub members_read: u64,
    /// Records that would be pushed: `new` + `changed`.
    pub would_push: u64,
    pub new: u64,
    pub changed: u64,
    /// Records equal to what Ometria last accepted: not pushed.
    pub unchanged: u64,
    /// Of those pushed, records that opt the contact in or out.
    pub would_opt_in: u64,
    pub would_opt_out: u64,
    /// Records over Ometria's 60 KB: kept aside as rejected, never sent.
    pub too_large: u64,
    /// Members the mapping cannot send, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Values left out of records (their field cannot take them), by field.
    pub dropped: BTreeMap<String, u64>,
    /// The first records that would be pushed, as they would be sent.
    pub samples: Vec<Value>,
}

impl EntryPlan {
    /// Counts one record read, with what the ledger holds for its member
    /// (`None`: nothing, or no ledger) and Mailchimp's `status`; keeps it
    /// as a sample while there are fewer than `samples`.
    pub fn add(&mut self, record: &[u8], status: &str, previous: Option<&Previous>, samples: usize) {
        if previous.is_some_and(|p| p.unchanged) {
            self.unchanged += 1;
            return;
        }
        if record.len() > MAX_RECORD_BYTES {
            self.too_large += 1;
            return;
        }
        self.would_push += 1;
        match previous {
            None => self.new += 1,
            Some(_) => self.changed += 1,
        }
        let before = previous.map(|p| marketing_optin(&p.status));
        match marketing_optin(status) {
            MarketingOptin::ExplicitlyOptedin if before != Some(MarketingOptin::ExplicitlyOptedin) => {
                self.would_opt_in += 1
            }
            MarketingOptin::ExplicitlyOptedout if before != Some(MarketingOptin::ExplicitlyOptedout) => {
                self.would_opt_out += 1
            }
            _ => {}
        }
        if self.samples.len() < samples {
            if let Ok(value) = serde_json::from_slice(record) {
                self.samples.push(value);
            }
        }
    }

    /// Counts a member the mapping cannot send.
    pub fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_default() += 1;
    }

    /// Counts a value left out of a record.
    pub fn drop_value(&mut self, field: &str) {
        *self.dropped.entry(field.to_owned()).or_default() += 1;
    }

    /// The plan as a few lines of text for `plan`'s report.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        let since = self
            .since
            .as_ref()
            .map_or(String::new(), |s| format!(" changed since \"{s}\""));
        let entry = if self.rank == 0 {
            format!("\"{}\"", self.list_id)
        } else {
            format!("\"{}\" (#{})", self.list_id, self.rank + 1)
        };
        out.push_str(&format!(
            "list {entry}: {} of the members{since} before \"{}\"\n",
            self.kind, self.before
        ));
        out.push_str(&format!("  members read:   {}\n", self.members_read));
        let compared = if self.ledger {
            ""
        } else {
            " (no ledger to compare with: every record counts as new)"
        };
        out.push_str(&format!(
            "  would push:     {} ({} new, {} changed){compared}\n",
            self.would_push, self.new, self.changed
        ));
        out.push_str(&format!("  unchanged:      {} (not pushed)\n", self.unchanged));
        out.push_str(&format!(
            "  would opt in:   {}\n  would opt out:  {}\n",
            self.would_opt_in, self.would_opt_out
        ));
        if self.too_large > 0 {
            out.push_str(&format!(
                "  too large:      {} (over Ometria's 60 KB; kept in the rejected file, not sent)\n",
                self.too_large
            ));
        }
        out.push_str(&format!(
            "  values dropped: {}{}\n",
            self.dropped.values().sum::<u64>(),
            by_name(&self.dropped)
        ));
        out.push_str(&format!(
            "  skipped:        {}{}\n",
            self.skipped.values().sum::<u64>(),
            by_name(&self.skipped)
        ));
        for (i, sample) in self.samples.iter().enumerate() {
            out.push_str(&format!("  record {}: {sample}\n", i + 1));
        }
        out
    }
}

/// ` (a 2, b 1)`, or nothing for none.
fn by_name(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts.iter().map(|(name, n)| format!("{name} {n}")).collect();
    format!(" ({})", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn previous(unchanged: bool, status: &str) -> Previous {
        Previous {
            unchanged,
            status: status.into(),
        }
    }

    #[test]
    fn records_are_new_changed_or_unchanged_and_opt_in_or_out() {
        let mut plan = EntryPlan::default();
        let record = br#"{"id":"u1"}"#;
        plan.add(record, "subscribed", None, 2);
        plan.add(record, "unsubscribed", None, 2);
        plan.add(record, "subscribed", Some(&previous(true, "subscribed")), 2);
        plan.add(record, "subscribed", Some(&previous(false, "subscribed")), 2);
        plan.add(record, "subscribed", Some(&previous(false, "pending")), 2);
        plan.add(record, "cleaned", Some(&previous(false, "unsubscribed")), 2);
        plan.add(record, "archived", Some(&previous(false, "subscribed")), 2);
        plan.add(record, "pending", None, 2);
        assert_eq!((plan.would_push, plan.new, plan.changed, plan.unchanged), (7, 3, 4, 1));
        // In: the new subscribed one and pending → subscribed; out: the new
        // unsubscribed one and subscribed → archived (cleaned was out already).
        assert_eq!((plan.would_opt_in, plan.would_opt_out), (2, 2));
        assert_eq!(plan.samples.len(), 2);
        assert_eq!(plan.samples[0]["id"], "u1");
    }

    #[test]
    fn records_too_large_are_counted_apart() {
        let mut plan = EntryPlan::default();
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        plan.add(&big, "subscribed", None, 5);
        assert_eq!((plan.would_push, plan.too_large, plan.would_opt_in), (0, 1, 0));
        assert!(plan.samples.is_empty());
    }

    #[test]
    fn the_report_names_what_it_counts() {
        let mut plan = EntryPlan {
            list_id: "L1".into(),
            kind: "SYNC".into(),
            since: Some("2026-11-30 10:00:00".into()),
            before: "2026-12-01 10:00:00".into(),
            members_read: 3,
            ..EntryPlan::default()
        };
        plan.add(br#"{"id":"u1"}"#, "subscribed", None, 1);
        plan.drop_value("phone_number");
        plan.drop_value("phone_number");
        plan.skip("its email address is empty");
        let text = plan.describe();
        assert!(
            text.starts_with("list \"L1\": SYNC of the members changed since \"2026-11-30 10:00:00\""),
            "{text}"
        );
        assert!(
            text.contains("would push:     1 (1 new, 0 changed) (no ledger"),
            "{text}"
        );
        assert!(text.contains("values dropped: 2 (phone_number 2)"), "{text}");
        assert!(
            text.contains("skipped:        1 (its email address is empty 1)"),
            "{text}"
        );
        assert!(text.contains("record 1: {\"id\":\"u1\"}"), "{text}");
    }
}
