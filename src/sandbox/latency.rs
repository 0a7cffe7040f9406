//! Change → Ometria latency (issue 18): how long a change made in the
//! sandbox's Mailchimp takes to reach its Ometria. Each mutation that
//! changes a member's contact notes the member as *pending*, with the
//! time and what Ometria must then hold; the first push of that contact
//! whose content shows the change (or, for a deleted member, an opt-out
//! as deleted: [`deleted_contact_is_right`]) ends the wait, and its
//! latency is recorded, once.
//!
//! A member changed again while pending keeps the time of its first
//! change and waits for its latest content: the latency is that of the
//! oldest change Ometria does not show yet. The content compared is SPEC
//! §5's — `email`, `firstname`, `lastname`, `marketing_optin` and
//! `properties.mailchimp_status` — so fields a mapping adds are not
//! waited for, and a mapping that sends other names keeps its members
//! pending.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::audience::Member;
use super::verify::{deleted_contact_is_right, expected_contact};

/// Members pending at once, at most: beyond, new changes are not timed
/// (and counted as `untracked`), so that a sandbox changing lists no
/// importer reads keeps its memory.
pub const MAX_PENDING: usize = 100_000;

/// Latencies kept, at most: the oldest are dropped first (about 8 MB).
pub const MAX_SAMPLES: usize = 1_000_000;

/// The fields of a contact that show a change (SPEC §5).
const SHOWN_BY: [&str; 4] = ["email", "firstname", "lastname", "marketing_optin"];

/// What Ometria must hold for a pending member's change to have arrived.
#[derive(Clone, Debug, PartialEq)]
pub enum Expected {
    /// A contact with these values of `email`, `firstname`, `lastname`,
    /// `marketing_optin` (`Null`: the field absent) and
    /// `properties.mailchimp_status`, in that order.
    Contact(Box<[Value; 5]>),
    /// The member was deleted: opted out as deleted.
    Deleted,
}

impl Expected {
    /// What a push must show for `member` of `list_id` as it is now.
    pub fn contact(member: &Member, list_id: &str) -> Expected {
        let contact = expected_contact(member, list_id);
        let [email, firstname, lastname, optin] = SHOWN_BY.map(|k| contact.get(k).cloned().unwrap_or(Value::Null));
        let status = contact["properties"]["mailchimp_status"].clone();
        Expected::Contact(Box::new([email, firstname, lastname, optin, status]))
    }

    /// Whether the pushed `record` shows it.
    pub fn shown_by(&self, record: &Value) -> bool {
        match self {
            Expected::Deleted => deleted_contact_is_right(record),
            Expected::Contact(values) => {
                SHOWN_BY
                    .iter()
                    .zip(values.iter())
                    .all(|(k, v)| record.get(k).unwrap_or(&Value::Null) == v)
                    && record["properties"]["mailchimp_status"] == values[4]
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Pending {
    since: Instant,
    expected: Expected,
}

/// The pending members (by contact id) and the latencies recorded.
#[derive(Debug, Default)]
pub struct Latency {
    pending: HashMap<String, Pending>,
    /// Seconds, in the order they were recorded.
    samples: Vec<f64>,
    /// Latencies recorded in all, dropped ones included.
    count: u64,
    untracked: u64,
}

/// `GET /_sandbox/latency`: the latencies recorded so far, in seconds.
/// The figures are `None` (`null`) until one is recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySnapshot {
    /// Changes that reached Ometria (each member's wait counted once).
    pub count: u64,
    /// Members changed whose change Ometria does not show yet.
    pub pending: u64,
    /// Of those, deleted members (they reach Ometria by a reconciliation,
    /// or at once by a webhook's delete path).
    pub pending_deleted: u64,
    /// Changes not timed because [`MAX_PENDING`] were pending.
    pub untracked: u64,
    /// Median, 95th percentile (nearest rank) and maximum of the latencies
    /// kept ([`MAX_SAMPLES`] most recent).
    pub p50_seconds: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Age of the oldest pending change.
    pub oldest_pending_seconds: Option<f64>,
}

impl Latency {
    /// Whether any member is pending: if not, pushes need no look.
    pub fn is_waiting(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The member `id` changed at `at`; Ometria must come to show `expected`.
    pub fn changed(&mut self, id: &str, expected: Expected, at: Instant) {
        if let Some(pending) = self.pending.get_mut(id) {
            pending.expected = expected;
        } else if self.pending.len() >= MAX_PENDING {
            self.untracked += 1;
        } else {
            self.pending.insert(id.to_owned(), Pending { since: at, expected });
        }
    }

    /// The member `id` is as Ometria shows it (a change undone before it
    /// was pushed): it waits no longer, and no latency is recorded.
    pub fn settled(&mut self, id: &str) {
        self.pending.remove(id);
    }

    /// Ometria took `record` (contact `id`) at `at`: records the latency of
    /// the member's change if the record shows it. Returns it, if so.
    pub fn pushed(&mut self, id: &str, record: &Value, at: Instant) -> Option<Duration> {
        let pending = self.pending.get(id)?;
        if !pending.expected.shown_by(record) {
            return None;
        }
        let latency = at.saturating_duration_since(pending.since);
        self.pending.remove(id);
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.remove(0);
        }
        self.samples.push(latency.as_secs_f64());
        self.count += 1;
        Some(latency)
    }

    /// The figures now.
    pub fn snapshot(&self, now: Instant) -> LatencySnapshot {
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        LatencySnapshot {
            count: self.count,
            pending: self.pending.len() as u64,
            pending_deleted: self
                .pending
                .values()
                .filter(|p| p.expected == Expected::Deleted)
                .count() as u64,
            untracked: self.untracked,
            p50_seconds: percentile(&sorted, 0.50),
            p95_seconds: percentile(&sorted, 0.95),
            max_seconds: sorted.last().copied(),
            oldest_pending_seconds: self
                .pending
                .values()
                .map(|p| now.saturating_duration_since(p.since).as_secs_f64())
                .max_by(f64::total_cmp),
        }
    }
}

/// The nearest-rank percentile `p` (in (0, 1]) of `sorted`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::audience::{Audience, Mutation, Status};

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(10.0));
        assert_eq!(percentile(&sorted, 0.95), Some(19.0));
        assert_eq!(percentile(&sorted, 1.0), Some(20.0));
        assert_eq!(percentile(&[3.0], 0.5), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn a_change_is_timed_once_by_the_first_push_that_shows_it() {
        let mut audience = Audience::generate("l", 50, 1, NOW);
        let mut rng = fastrand::Rng::with_seed(2);
        let before = audience.members().next().unwrap().clone();
        let changed = audience.apply(Mutation::Change, &mut rng, NOW + 1).unwrap().member;
        let id = changed.unique_email_id.clone();
        let t0 = Instant::now();
        let mut latency = Latency::default();
        assert!(!latency.is_waiting());
        latency.changed(&id, Expected::contact(&changed, "l"), t0);
        assert!(latency.is_waiting());

        // The contact as it was: not the change.
        let old = Member {
            fname: "before".into(),
            ..changed.clone()
        };
        let s = Duration::from_secs;
        assert_eq!(latency.pushed(&id, &expected_contact(&old, "l"), t0 + s(1)), None);
        // Another member's push: nothing.
        let other = expected_contact(&before, "l");
        assert_eq!(latency.pushed(&before.unique_email_id, &other, t0 + s(1)), None);
        // The change, with fields a mapping adds: timed once.
        let mut record = expected_contact(&changed, "l");
        record["phone_number"] = "+441234567890".into();
        record["properties"]["plan"] = "gold".into();
        assert_eq!(latency.pushed(&id, &record, t0 + s(3)), Some(s(3)));
        assert_eq!(latency.pushed(&id, &record, t0 + s(4)), None);
        let snapshot = latency.snapshot(t0 + s(5));
        assert_eq!((snapshot.count, snapshot.pending), (1, 0));
        assert_eq!(snapshot.p50_seconds, Some(3.0));
        assert_eq!(snapshot.max_seconds, Some(3.0));
        assert_eq!(snapshot.oldest_pending_seconds, None);
    }

    #[test]
    fn a_member_changed_again_waits_from_its_first_change_for_its_last() {
        let mut audience = Audience::generate("l", 50, 1, NOW);
        let mut rng = fastrand::Rng::with_seed(2);
        let first = audience.apply(Mutation::Change, &mut rng, NOW + 1).unwrap().member;
        let id = first.unique_email_id.clone();
        let unsubscribed = Member {
            status: Status::Unsubscribed,
            ..first.clone()
        };
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut latency = Latency::default();
        latency.changed(&id, Expected::contact(&first, "l"), t0);
        latency.changed(&id, Expected::contact(&unsubscribed, "l"), t0 + s(2));
        assert_eq!(latency.pushed(&id, &expected_contact(&first, "l"), t0 + s(3)), None);
        assert_eq!(
            latency.pushed(&id, &expected_contact(&unsubscribed, "l"), t0 + s(4)),
            Some(s(4))
        );
    }

    #[test]
    fn a_change_undone_before_its_push_waits_no_longer() {
        let mut latency = Latency::default();
        let t0 = Instant::now();
        latency.changed("a", Expected::Deleted, t0);
        latency.settled("a");
        latency.settled("never-changed");
        let snapshot = latency.snapshot(t0);
        assert_eq!((snapshot.count, snapshot.pending, snapshot.p50_seconds), (0, 0, None));
    }

    #[test]
    fn a_deleted_member_waits_for_an_opt_out_as_deleted() {
        let mut audience = Audience::generate("l", 50, 1, NOW);
        let mut rng = fastrand::Rng::with_seed(2);
        let gone = audience.apply(Mutation::Delete, &mut rng, NOW + 1).unwrap().member;
        let id = gone.unique_email_id.clone();
        let t0 = Instant::now();
        let mut latency = Latency::default();
        latency.changed(&id, Expected::Deleted, t0);
        let snapshot = latency.snapshot(t0 + Duration::from_secs(7));
        assert_eq!((snapshot.pending, snapshot.pending_deleted), (1, 1));
        assert_eq!(snapshot.oldest_pending_seconds, Some(7.0));
        assert_eq!(latency.pushed(&id, &expected_contact(&gone, "l"), t0), None);
        let mut opted_out = expected_contact(&gone, "l");
        opted_out["marketing_optin"] = "EXPLICITLY_OPTEDOUT".into();
        opted_out["properties"]["mailchimp_status"] = "deleted".into();
        assert!(latency.pushed(&id, &opted_out, t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn beyond_the_cap_changes_are_counted_not_timed() {
        let mut latency = Latency::default();
        let t0 = Instant::now();
        for i in 0..MAX_PENDING + 3 {
            latency.changed(&i.to_string(), Expected::Deleted, t0);
        }
        let snapshot = latency.snapshot(t0);
        assert_eq!((snapshot.pending, snapshot.untracked), (MAX_PENDING as u64, 3));
    }
}
