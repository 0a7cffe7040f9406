//! Which members deleted in Mailchimp a webhook named are opted out next
//! (issue 18, SPEC §15): the queue the Controller keeps of them, one per
//! ledger key ([`crate::state::Entry::ledger_key`]).
//!
//! One Deletion runs per ledger key at a time, with at most
//! [`DELETION_BATCH`] addresses (one push); addresses that come while it
//! runs wait for the next, so a burst of deletions costs a push per
//! hundred members, not one each. An address is queued once however many
//! events name it (Mailchimp retries and duplicates deliveries).
//!
//! A deletion that comes while a sync of the same ledger key runs is opted
//! out at once *and* once more after that sync: the sync may have read the
//! member before it was deleted and push it back, subscribed, after the
//! opt-out. The second look finds the member in the ledger only if the
//! sync did push it.
//!
//! At most [`MAX_QUEUED`] addresses wait, over all ledger keys: the
//! addresses named beyond it are dropped (the caller counts and logs
//! them), and the reconciliation opts those members out instead — a
//! flood of events, however many, holds a bounded memory.

use std::collections::{BTreeSet, HashMap};

/// Addresses one Deletion handles at most: one push of Ometria's largest
/// batch (100 records).
pub const DELETION_BATCH: usize = 100;

/// Addresses waiting at most, over all ledger keys (those to look for
/// again after a sync counted too): 10,000 addresses of at most 254
/// bytes are a few MiB, a hundred pushes of work.
pub const MAX_QUEUED: usize = 10_000;

/// Addresses of one ledger key waiting for a Deletion.
struct Queue<T> {
    /// What a Deletion of them needs (the newest entry the events came for).
    target: T,
    /// Lower-cased (ASCII), as the ledger compares them.
    waiting: BTreeSet<String>,
    /// To queue again once the running sync of the ledger key ends.
    after_sync: BTreeSet<String>,
    /// A Deletion of this key runs.
    running: bool,
}

/// The addresses to opt out now: a Deletion's work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionBatch<T> {
    pub target: T,
    /// At most [`DELETION_BATCH`], lower-cased (ASCII), sorted.
    pub emails: Vec<String>,
}

/// What [`Deletions::add`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Added<T> {
    /// The batch to start now, if no Deletion of the key runs.
    pub start: Option<DeletionBatch<T>>,
    /// Addresses not queued: [`MAX_QUEUED`] wait already.
    pub dropped: usize,
}

/// The queues, by ledger key. `T` is what a Deletion needs (the entry).
pub struct Deletions<T> {
    queues: HashMap<String, Queue<T>>,
    /// Addresses in every queue's `waiting` and `after_sync`.
    queued: usize,
}

impl<T: Clone> Default for Deletions<T> {
    fn default() -> Self {
        Deletions {
            queues: HashMap::new(),
            queued: 0,
        }
    }
}

impl<T: Clone> Deletions<T> {
    /// Webhooks named `emails` deleted under ledger key `key` (for
    /// `target`); `syncing`: a sync of the key runs now. Answers the batch
    /// to start now, if no Deletion of the key runs, and how many
    /// addresses were dropped for want of room.
    pub fn add(&mut self, key: &str, target: T, emails: impl IntoIterator<Item = String>, syncing: bool) -> Added<T> {
        let queue = self.queues.entry(key.to_owned()).or_insert_with(|| Queue {
            target: target.clone(),
            waiting: BTreeSet::new(),
            after_sync: BTreeSet::new(),
            running: false,
        });
        queue.target = target;
        let mut dropped = 0;
        for email in emails {
            let email = email.to_ascii_lowercase();
            let room = MAX_QUEUED - self.queued;
            let new = usize::from(!queue.waiting.contains(&email))
                + usize::from(syncing && !queue.after_sync.contains(&email));
            if new > room {
                dropped += 1;
                continue;
            }
            self.queued += new;
            if syncing {
                queue.after_sync.insert(email.clone());
            }
            queue.waiting.insert(email);
        }
        Added {
            start: self.next(key),
            dropped,
        }
    }

    /// Addresses waiting, over all ledger keys (at most [`MAX_QUEUED`]).
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// A sync of ledger key `key` ended: what was deleted during it is
    /// looked for once more. Answers the batch to start now, if any.
    pub fn sync_ended(&mut self, key: &str) -> Option<DeletionBatch<T>> {
        let queue = self.queues.get_mut(key)?;
        for email in std::mem::take(&mut queue.after_sync) {
            // Counted once it is in both; it may have left `waiting` since.
            if !queue.waiting.insert(email) {
                self.queued -= 1;
            }
        }
        self.next(key)
    }

    /// The Deletion of ledger key `key` ended: the next batch, if
    /// addresses came meanwhile.
    pub fn finished(&mut self, key: &str) -> Option<DeletionBatch<T>> {
        if let Some(queue) = self.queues.get_mut(key) {
            queue.running = false;
        }
        self.next(key)
    }

    /// Deletions running.
    pub fn running(&self) -> usize {
        self.queues.values().filter(|q| q.running).count()
    }

    /// Forgets what waits (the daemon stops: the reconciliation is the net).
    pub fn clear_waiting(&mut self) {
        self.queues.retain(|_, q| q.running);
        for queue in self.queues.values_mut() {
            queue.waiting.clear();
            queue.after_sync.clear();
        }
        self.queued = 0;
    }

    fn next(&mut self, key: &str) -> Option<DeletionBatch<T>> {
        let queue = self.queues.get_mut(key)?;
        if queue.running || queue.waiting.is_empty() {
            if !queue.running && queue.after_sync.is_empty() {
                self.queues.remove(key);
            }
            return None;
        }
        let mut emails = Vec::with_capacity(DELETION_BATCH.min(queue.waiting.len()));
        while emails.len() < DELETION_BATCH {
            let Some(email) = queue.waiting.pop_first() else { break };
            self.queued -= 1;
            emails.push(email);
        }
        queue.running = true;
        Some(DeletionBatch {
            target: queue.target.clone(),
            emails,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emails(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_deletion_starts_at_once_and_those_that_come_meanwhile_wait_for_it_once_each() {
        let mut d = Deletions::default();
        let first = d.add("L", 1, emails(&["A@x.io"]), false).start.unwrap();
        assert_eq!(first.emails, ["a@x.io"]);
        assert_eq!(d.running(), 1);
        // Duplicates and case variants while it runs: one address.
        assert_eq!(d.add("L", 2, emails(&["b@x.io", "B@X.IO"]), false).start, None);
        assert_eq!(d.add("L", 2, emails(&["b@x.io"]), false).start, None);
        // Another ledger key does not wait.
        assert_eq!(
            d.add("M", 9, emails(&["c@x.io"]), false).start.unwrap().emails,
            ["c@x.io"]
        );
        let next = d.finished("L").unwrap();
        assert_eq!((next.target, next.emails), (2, emails(&["b@x.io"])));
        assert_eq!(d.finished("L"), None);
        assert_eq!(d.finished("M"), None);
        assert_eq!(d.running(), 0);
        assert!(d.queues.is_empty());
    }

    #[test]
    fn a_burst_is_one_push_per_hundred_addresses() {
        let mut d = Deletions::default();
        d.add("L", (), emails(&["first@x.io"]), false).start.unwrap();
        let burst: Vec<String> = (0..250).map(|i| format!("m{i:03}@x.io")).collect();
        assert_eq!(d.add("L", (), burst, false).start, None);
        let sizes: Vec<usize> = std::iter::from_fn(|| d.finished("L").map(|b| b.emails.len())).collect();
        assert_eq!(sizes, [DELETION_BATCH, DELETION_BATCH, 50]);
    }

    #[test]
    fn a_deletion_during_a_sync_is_looked_for_again_after_it() {
        let mut d = Deletions::default();
        assert_eq!(
            d.add("L", (), emails(&["a@x.io"]), true).start.unwrap().emails,
            ["a@x.io"]
        );
        assert_eq!(d.finished("L"), None);
        // The sync ends: the address is looked for once more.
        assert_eq!(d.sync_ended("L").unwrap().emails, ["a@x.io"]);
        assert_eq!(d.finished("L"), None);
        assert_eq!(d.sync_ended("L"), None);
        // Not during a sync: once.
        d.add("L", (), emails(&["b@x.io"]), false).start.unwrap();
        assert_eq!(d.finished("L"), None);
        assert_eq!(d.sync_ended("L"), None);
    }

    #[test]
    fn a_flood_is_bounded_and_what_is_dropped_is_counted() {
        let mut d = Deletions::default();
        let flood: Vec<String> = (0..MAX_QUEUED + 50).map(|i| format!("m{i:05}@x.io")).collect();
        // The queue takes MAX_QUEUED; the first hundred start at once.
        let added = d.add("L", (), flood.clone(), false);
        assert_eq!(added.start.unwrap().emails.len(), DELETION_BATCH);
        assert_eq!((added.dropped, d.queued()), (50, MAX_QUEUED - DELETION_BATCH));
        let refill: Vec<String> = (0..DELETION_BATCH).map(|i| format!("r{i:03}@x.io")).collect();
        assert_eq!(d.add("L", (), refill, false).dropped, 0);
        // Full: new addresses are dropped, those queued already cost nothing.
        let more = d.add("M", (), emails(&["new@x.io", "other@x.io"]), false);
        assert_eq!((more.start, more.dropped), (None, 2));
        let again = d.add("L", (), flood[DELETION_BATCH..DELETION_BATCH + 3].to_vec(), false);
        assert_eq!((again.start, again.dropped), (None, 0));
        // Room again once a batch is taken.
        assert_eq!(d.finished("L").unwrap().emails.len(), DELETION_BATCH);
        assert_eq!(d.queued(), MAX_QUEUED - DELETION_BATCH);
        let after = d.add("M", (), emails(&["new@x.io"]), true);
        assert_eq!((after.start.unwrap().emails, after.dropped), (emails(&["new@x.io"]), 0));
        // Looked for again after the sync: counted until then.
        assert_eq!(d.queued(), MAX_QUEUED - DELETION_BATCH + 1);
        assert_eq!(d.finished("M"), None);
        assert_eq!(d.sync_ended("M").unwrap().emails, ["new@x.io"]);
        assert_eq!(d.queued(), MAX_QUEUED - DELETION_BATCH);
        d.clear_waiting();
        assert_eq!(d.queued(), 0);
    }

    #[test]
    fn stopping_forgets_what_waits_but_not_what_runs() {
        let mut d = Deletions::default();
        d.add("L", (), emails(&["a@x.io"]), true).start.unwrap();
        d.add("L", (), emails(&["b@x.io"]), false);
        d.clear_waiting();
        assert_eq!(d.running(), 1);
        assert_eq!(d.finished("L"), None);
        assert_eq!(d.running(), 0);
    }
}
