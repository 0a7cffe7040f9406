//! Webhook events → SYNCs (issue 18, SPEC §15): the events of a list
//! within `IMPORTER_WEBHOOK_DEBOUNCE_SECONDS` of its first make one SYNC
//! of each of the list's entries, and the events that come after such a
//! SYNC started make one more, a debounce after the first of them: under
//! a steady stream of events a list syncs once per debounce, not back to
//! back.
//!
//! A *burst* opens with a list's first event and is *ripe* the debounce
//! after it: from then on, every entry of the list whose last successful
//! sync of this run started before the burst's last event is due. The
//! burst ends once every entry of the list has synced from after its last
//! event. An event that comes once a sync of the ripe burst has started
//! opens a new *window* of the burst: it is not ripe again until a
//! debounce after that event. An entry of the list that had not synced
//! since the events of the window before (a second entry of the list,
//! waiting for a free slot) stays due for them meanwhile: a new window
//! never takes back what a ripe one made due. A sync started after an event reads the change (its window ends
//! when it starts, and Mailchimp sends the event after the change), so
//! starting times are what count, not cursors: a cursor may be set back
//! for Mailchimp's clock, and would then never catch up with our own.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::schedule::delta;

/// The events of one list not yet answered by a sync of every entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Events in it (for the log).
    pub events: u64,
    /// Its debounce ran out: the list's entries that have not synced
    /// since `last` are due.
    pub ripe: bool,
    /// A sync of the list started once it was ripe: the next event opens
    /// a new window.
    pub answered: bool,
    /// The last event of the windows before this one that ripened: an
    /// entry whose last sync started before it is due whatever this
    /// window says.
    pub ripe_until: Option<DateTime<Utc>>,
}

/// The open bursts, by list id.
#[derive(Clone, Debug)]
pub struct Debounce {
    delay: Duration,
    bursts: HashMap<String, Burst>,
}

impl Debounce {
    pub fn new(delay: Duration) -> Debounce {
        Debounce {
            delay,
            bursts: HashMap::new(),
        }
    }

    /// An event for `list_id` came at `now`. Answers when the burst or
    /// window it opens ripens (the caller plans then: see [`Self::ripen`]),
    /// or `None` when it joins one already open.
    pub fn event(&mut self, list_id: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let window = Burst {
            first: now,
            last: now,
            events: 1,
            ripe: self.delay.is_zero(),
            answered: false,
            ripe_until: None,
        };
        match self.bursts.get_mut(list_id) {
            Some(burst) if !burst.answered => {
                burst.last = burst.last.max(now);
                burst.events += 1;
                return None;
            }
            // A sync of it started: the event opens a new window (its `last`
            // never goes back, even on a clock set back).
            Some(burst) => {
                *burst = Burst {
                    last: burst.last.max(now),
                    // `answered` is set on ripe bursts only.
                    ripe_until: Some(burst.last),
                    ..window
                }
            }
            None => {
                self.bursts.insert(list_id.to_owned(), window);
            }
        }
        Some(now + delta(self.delay))
    }

    /// The window of `list_id`'s burst opened at `opened` (the time
    /// [`Self::event`] was given) has waited its debounce, its timer
    /// fired: ripe whatever the wall clock says (it may have been set
    /// back). A timer of an older window ripens nothing.
    pub fn ripen(&mut self, list_id: &str, opened: DateTime<Utc>) {
        if let Some(burst) = self.bursts.get_mut(list_id).filter(|b| b.first == opened) {
            burst.ripe = true;
        }
    }

    /// A sync of an entry of `list_id` started: once the burst is ripe,
    /// it answers the events so far, and the next opens a new window.
    pub fn sync_started(&mut self, list_id: &str) {
        if let Some(burst) = self.bursts.get_mut(list_id).filter(|b| b.ripe) {
            burst.answered = true;
        }
    }

    /// Ripens every burst whose debounce ran out by `now`.
    pub fn ripen_due(&mut self, now: DateTime<Utc>) {
        for burst in self.bursts.values_mut() {
            burst.ripe |= now >= burst.first + delta(self.delay);
        }
    }

    /// The ripe burst an entry of `list_id` must sync for, given when its
    /// last successful sync of this run started (`None`: none did).
    pub fn wants_sync(&self, list_id: &str, synced_from: Option<DateTime<Utc>>) -> Option<&Burst> {
        let before = |t: DateTime<Utc>| synced_from.is_none_or(|s| s < t);
        self.bursts
            .get(list_id)
            .filter(|b| (b.ripe && before(b.last)) || b.ripe_until.is_some_and(before))
    }

    /// Ends the bursts every entry of whose list synced since their last
    /// event, given every entry of the state file as `(list_id, synced_from)`;
    /// answers the list ids of the bursts dropped because no entry has
    /// their list, sorted.
    pub fn settle<'a>(&mut self, entries: impl IntoIterator<Item = (&'a str, Option<DateTime<Utc>>)>) -> Vec<String> {
        // Per list: whether it has an entry, and whether one still needs a sync.
        let mut lists: HashMap<&str, bool> = HashMap::new();
        for (list_id, synced_from) in entries {
            if let Some(burst) = self.bursts.get(list_id) {
                let waiting = synced_from.is_none_or(|s| s < burst.last);
                *lists.entry(list_id).or_insert(false) |= waiting;
            }
        }
        let mut unknown = vec![];
        self.bursts.retain(|list_id, _| match lists.get(list_id.as_str()) {
            Some(&waiting) => waiting,
            None => {
                unknown.push(list_id.clone());
                false
            }
        });
        unknown.sort();
        unknown
    }

    /// [`Debounce::settle`] for the bursts of `lists` alone, given every
    /// entry of those lists: a list's webhook burst is settled without
    /// reading the entries of every other list.
    pub fn settle_lists<'a>(
        &mut self,
        lists: &[&str],
        entries: impl IntoIterator<Item = (&'a str, Option<DateTime<Utc>>)>,
    ) -> Vec<String> {
        let mut some = Debounce {
            delay: self.delay,
            bursts: lists.iter().filter_map(|l| self.bursts.remove_entry(*l)).collect(),
        };
        let unknown = some.settle(entries);
        self.bursts.extend(some.bursts);
        unknown
    }

    /// The open burst of `list_id`, if any.
    pub fn burst(&self, list_id: &str) -> Option<&Burst> {
        self.bursts.get(list_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const FIVE: Duration = Duration::from_secs(5);

    fn at(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    #[test]
    fn a_burst_is_one_sync_due_the_debounce_after_its_first_event() {
        let mut d = Debounce::new(FIVE);
        assert_eq!(d.event("a", at(0)), Some(at(5)));
        for s in 1..=4 {
            assert_eq!(d.event("a", at(s)), None, "joins the burst");
        }
        d.ripen_due(at(4));
        assert_eq!(d.wants_sync("a", None), None, "not ripe yet");
        d.ripen_due(at(5));
        let burst = *d.wants_sync("a", None).unwrap();
        assert_eq!((burst.first, burst.last, burst.events), (at(0), at(4), 5));
        // An earlier sync of this run does not cover it; one after its last event does.
        assert!(d.wants_sync("a", Some(at(3))).is_some());
        assert!(d.wants_sync("a", Some(at(5))).is_none());
        // The entry's sync started at 5: the burst ends.
        assert!(d.settle([("a", Some(at(5)))]).is_empty());
        assert_eq!(d.burst("a"), None);
        // The next event opens a new burst.
        assert_eq!(d.event("a", at(9)), Some(at(14)));
    }

    #[test]
    fn an_event_during_a_sync_makes_one_more_a_debounce_after_it() {
        let mut d = Debounce::new(FIVE);
        d.event("a", at(0));
        d.ripen("a", at(0));
        // The sync starts at 5; events come at 7 and 8, while it runs.
        d.sync_started("a");
        assert_eq!(d.event("a", at(7)), Some(at(12)), "a new window");
        assert_eq!(d.event("a", at(8)), None, "joins it");
        let burst = *d.burst("a").unwrap();
        assert_eq!(
            (burst.first, burst.last, burst.events, burst.ripe),
            (at(7), at(8), 2, false)
        );
        assert!(d.settle([("a", None)]).is_empty());
        // It ended at 9: the window is not ripe yet.
        assert!(d.settle([("a", Some(at(5)))]).is_empty());
        assert!(d.wants_sync("a", Some(at(5))).is_none());
        d.ripen_due(at(12));
        assert!(d.wants_sync("a", Some(at(5))).is_some());
        // That one started at 12: done.
        d.sync_started("a");
        d.settle([("a", Some(at(12)))]);
        assert_eq!(d.burst("a"), None);
    }

    #[test]
    fn a_steady_stream_of_events_syncs_once_per_debounce() {
        // An event every second for a minute; a sync takes 2 s and starts
        // as soon as the burst is ripe (the timer fires at its deadline).
        let mut d = Debounce::new(FIVE);
        let (mut syncs, mut running_until, mut deadline, mut synced_from) = (vec![], None, None, None);
        for s in 0..60 {
            if let Some(due) = deadline.filter(|&due| due <= at(s)) {
                d.ripen("a", due - delta(FIVE));
                deadline = None;
            }
            if running_until == Some(s) {
                running_until = None;
                d.settle([("a", synced_from)]);
            }
            if running_until.is_none() && d.wants_sync("a", synced_from).is_some() {
                d.sync_started("a");
                syncs.push(s);
                synced_from = Some(at(s));
                running_until = Some(s + 2);
            }
            if let Some(due) = d.event("a", at(s)) {
                deadline = Some(due);
            }
        }
        // Each SYNC a debounce after the first event it did not read.
        assert_eq!(syncs, [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]);
    }

    #[test]
    fn a_second_entry_waiting_for_a_slot_stays_due_while_the_first_opens_windows() {
        // Two entries of list "a", one slot; an event every second.
        let mut d = Debounce::new(FIVE);
        d.event("a", at(0));
        d.ripen("a", at(0));
        // The first entry takes the slot at 5; the second waits.
        d.sync_started("a");
        assert_eq!(d.event("a", at(6)), Some(at(11)), "a new window");
        assert!(d.wants_sync("a", Some(at(5))).is_none(), "the first waits for it");
        // The second has not synced since the events up to 0 (or at all).
        assert!(d.wants_sync("a", None).is_some());
        assert!(d.wants_sync("a", Some(at(-1))).is_some());
        // It starts at 8: not due again until the window ripens.
        d.sync_started("a");
        assert!(d.wants_sync("a", Some(at(8))).is_none());
        d.settle([("a", Some(at(5))), ("a", Some(at(8)))]);
        d.ripen("a", at(6));
        assert!(d.wants_sync("a", Some(at(5))).is_some());
        assert!(
            d.wants_sync("a", Some(at(8))).is_none(),
            "8 is after the window's last event, 6"
        );
    }

    #[test]
    fn a_ripe_burst_waiting_for_a_slot_stays_ripe_and_an_old_timer_ripens_nothing() {
        let mut d = Debounce::new(FIVE);
        d.event("a", at(0));
        d.ripen("a", at(0));
        // No slot: no sync starts; later events join the ripe burst.
        assert_eq!(d.event("a", at(6)), None);
        assert!(d.wants_sync("a", None).is_some());
        d.sync_started("a");
        assert_eq!(d.event("a", at(9)), Some(at(14)));
        d.ripen("a", at(0)); // the first window's timer, late
        assert!(d.wants_sync("a", Some(at(8))).is_none());
        d.ripen("a", at(9));
        assert!(d.wants_sync("a", Some(at(8))).is_some());
    }

    #[test]
    fn a_sync_started_for_another_reason_after_the_events_answers_them() {
        let mut d = Debounce::new(FIVE);
        d.event("a", at(0));
        // A tick found the entry due by its refresh interval at 2.
        d.settle([("a", Some(at(2)))]);
        assert_eq!(d.burst("a"), None, "no second sync");
    }

    #[test]
    fn one_lists_bursts_are_settled_alone() {
        let mut d = Debounce::new(FIVE);
        for list in ["a", "b", "gone"] {
            d.event(list, at(0));
        }
        // Only a's entries are given: b's burst is left as it is.
        assert!(d.settle_lists(&["a"], [("a", Some(at(6)))]).is_empty());
        assert_eq!(d.burst("a"), None);
        assert!(d.burst("b").is_some());
        // A list named without entries has none in the state file.
        assert_eq!(d.settle_lists(&["gone"], []), ["gone"]);
        assert!(d.burst("b").is_some());
    }

    #[test]
    fn every_entry_of_the_list_syncs() {
        let mut d = Debounce::new(FIVE);
        d.event("a", at(0));
        d.ripen_due(at(5));
        assert!(d.settle([("a", Some(at(6))), ("a", None)]).is_empty());
        assert!(d.wants_sync("a", Some(at(6))).is_none());
        assert!(d.wants_sync("a", None).is_some());
        d.settle([("a", Some(at(6))), ("a", Some(at(8)))]);
        assert_eq!(d.burst("a"), None);
    }

    #[test]
    fn bursts_of_lists_not_in_the_state_file_are_dropped_and_named() {
        let mut d = Debounce::new(FIVE);
        for list in ["z", "b", "a"] {
            d.event(list, at(0));
        }
        assert_eq!(d.settle([("a", None)]), ["b", "z"]);
        assert!(d.burst("a").is_some());
        assert_eq!((d.burst("b"), d.burst("z")), (None, None));
    }

    #[test]
    fn a_timer_ripens_a_burst_whatever_the_clock_says_and_zero_is_at_once() {
        let mut d = Debounce::new(FIVE);
        d.event("a", at(10));
        d.ripen_due(at(3)); // a clock set back
        assert!(d.wants_sync("a", None).is_none());
        d.ripen("a", at(10));
        assert!(d.wants_sync("a", None).is_some());
        d.ripen("unknown", at(10)); // nothing to ripen
        let mut now = Debounce::new(Duration::ZERO);
        assert_eq!(now.event("a", at(0)), Some(at(0)));
        assert!(now.wants_sync("a", None).is_some());
    }
}
