//! When each entry is next worth a look (issue 19): the time it becomes
//! due by its refresh interval, or its backoff ends, as the last plan or
//! the end of its last sync told. A sync that ends with no list waiting
//! for its slot plans only the entries whose time has come, not every
//! entry of the file, so that the work of one sync does not grow with
//! the number of lists.
//!
//! A time is a hint, not a decision: the entries taken are decided again
//! from the state file's current view, and one not due yet is given its
//! time anew.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use crate::state::EntryKey;

/// At most one time per entry, earliest first.
#[derive(Clone, Debug, Default)]
pub struct Upcoming {
    by_time: BTreeSet<(DateTime<Utc>, EntryKey)>,
    by_key: HashMap<EntryKey, DateTime<Utc>>,
}

impl Upcoming {
    /// The entry is next worth a look at `at` (instead of any time it had).
    pub fn set(&mut self, key: &EntryKey, at: DateTime<Utc>) {
        match self.by_key.get_mut(key) {
            Some(old) if *old == at => {}
            Some(old) => {
                self.by_time.remove(&(*old, key.clone()));
                *old = at;
                self.by_time.insert((at, key.clone()));
            }
            None => {
                self.by_key.insert(key.clone(), at);
                self.by_time.insert((at, key.clone()));
            }
        }
    }

    /// Forgets the entry's time (it runs, or waits for a slot: its end
    /// gives it a new one).
    pub fn remove(&mut self, key: &EntryKey) {
        if let Some(at) = self.by_key.remove(key) {
            self.by_time.remove(&(at, key.clone()));
        }
    }

    /// Takes the entries whose time is `now` or earlier, earliest first.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<EntryKey> {
        let mut due = vec![];
        while let Some((at, _)) = self.by_time.first() {
            if *at > now {
                break;
            }
            let (_, key) = self.by_time.pop_first().expect("a first element");
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// Keeps only the entries `keep` says are still in the state file.
    pub fn retain(&mut self, keep: impl Fn(&EntryKey) -> bool) {
        self.by_time.retain(|(_, key)| keep(key));
        self.by_key.retain(|key, _| keep(key));
    }

    /// Entries with a time.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn key(list_id: &str) -> EntryKey {
        EntryKey {
            list_id: list_id.into(),
            rank: 0,
        }
    }

    fn at(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, s).unwrap()
    }

    #[test]
    fn entries_come_out_when_their_time_has_come_earliest_first() {
        let mut u = Upcoming::default();
        u.set(&key("c"), at(30));
        u.set(&key("a"), at(10));
        u.set(&key("b"), at(20));
        assert_eq!(u.take_due(at(5)), Vec::<EntryKey>::new());
        assert_eq!(u.take_due(at(20)), [key("a"), key("b")]);
        assert_eq!(u.len(), 1);
        assert_eq!(u.take_due(at(20)), Vec::<EntryKey>::new(), "taken once");
        assert_eq!(u.take_due(at(59)), [key("c")]);
        assert!(u.is_empty());
    }

    #[test]
    fn an_entry_has_one_time_the_last_given() {
        let mut u = Upcoming::default();
        u.set(&key("a"), at(10));
        u.set(&key("a"), at(40));
        u.set(&key("a"), at(40));
        assert_eq!(u.len(), 1);
        assert_eq!(u.take_due(at(30)), Vec::<EntryKey>::new());
        u.set(&key("a"), at(5));
        assert_eq!(u.take_due(at(30)), [key("a")]);
        u.set(&key("b"), at(1));
        u.remove(&key("b"));
        u.remove(&key("b"));
        assert_eq!(u.take_due(at(59)), Vec::<EntryKey>::new());
    }

    #[test]
    fn entries_gone_from_the_file_are_forgotten() {
        let mut u = Upcoming::default();
        u.set(&key("a"), at(1));
        u.set(&key("b"), at(2));
        u.retain(|k| k.list_id == "b");
        assert_eq!(u.take_due(at(59)), [key("b")]);
        assert!(u.is_empty());
    }
}
