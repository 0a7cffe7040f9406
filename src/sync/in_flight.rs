//! The records of one sync that were batched and whose push is not yet
//! settled (issue 16): a member read twice within one sync (a pass read
//! again, the keyset fallback) is pushed once.
//!
//! The member ledger answers for records Ometria accepted; these are the
//! records it cannot answer for yet. A record equal (same id, same hash)
//! to one held here is unchanged: not pushed again.
//!
//! A record leaves once its push is answered and its `RecordAccepted` is
//! answered too — and only after every ledger lookup sent before that
//! moment is answered: such a lookup may have been read by the ledger
//! before the record was written, and its "changed" must still be caught
//! here. Lookups sent later see the write (the ledger answers one message
//! at a time). So what is held is bounded by the batches in flight plus
//! the few lookups under way, never by the list's size.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// See the module doc. Ids are `unique_email_id`s; hashes are
/// [`crate::ledger::record_hash`]es of the encoded records.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Id → hash of the record last batched with that id.
    records: HashMap<String, u64>,
    /// The ticket the next lookup gets.
    next_ticket: u64,
    /// Tickets of lookups sent and not yet answered.
    lookups: BTreeSet<u64>,
    /// Settled records, each group with the first ticket not sent before
    /// it settled: they leave once no earlier lookup is pending.
    settled: VecDeque<(u64, Vec<(String, u64)>)>,
}

impl InFlight {
    /// Whether a record of member `id` with `hash` was batched in this
    /// sync and is not yet settled.
    pub fn holds(&self, id: &str, hash: u64) -> bool {
        self.records.get(id) == Some(&hash)
    }

    /// A record of member `id` with `hash` was batched.
    pub fn batched(&mut self, id: String, hash: u64) {
        self.records.insert(id, hash);
    }

    /// A lookup is being sent; returns its ticket for [`Self::lookup_answered`].
    pub fn lookup_sent(&mut self) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.lookups.insert(ticket);
        ticket
    }

    /// The lookup `ticket` was answered (or failed).
    pub fn lookup_answered(&mut self, ticket: u64) {
        self.lookups.remove(&ticket);
        self.release();
    }

    /// These records' push was answered, and what the ledger was told of
    /// it too (or it had nothing to be told: rejected records).
    pub fn settled(&mut self, records: Vec<(String, u64)>) {
        self.settled.push_back((self.next_ticket, records));
        self.release();
    }

    /// Records held (batched, or settled and waiting for earlier lookups).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn release(&mut self) {
        let oldest_pending = self.lookups.first().copied().unwrap_or(u64::MAX);
        while let Some((barrier, _)) = self.settled.front() {
            if *barrier > oldest_pending {
                break;
            }
            let (_, records) = self.settled.pop_front().expect("checked");
            for (id, hash) in records {
                // A newer record of the member may have been batched since.
                if self.records.get(&id) == Some(&hash) {
                    self.records.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_held_from_batched_until_settled() {
        let mut f = InFlight::default();
        f.batched("a".into(), 1);
        assert!(f.holds("a", 1));
        assert!(!f.holds("a", 2), "a changed record is not the one in flight");
        assert!(!f.holds("b", 1));
        f.settled(vec![("a".into(), 1)]);
        assert!(!f.holds("a", 1));
        assert!(f.is_empty());
    }

    #[test]
    fn a_settled_record_stays_until_every_lookup_sent_before_is_answered() {
        let mut f = InFlight::default();
        f.batched("a".into(), 1);
        let early = f.lookup_sent();
        f.settled(vec![("a".into(), 1)]);
        // A lookup sent after the ledger was told sees the write.
        let late = f.lookup_sent();
        assert!(f.holds("a", 1), "the early lookup may not have seen the write");
        f.lookup_answered(late);
        assert!(f.holds("a", 1));
        f.lookup_answered(early);
        assert!(!f.holds("a", 1));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_newer_record_of_a_member_outlives_the_older_one() {
        let mut f = InFlight::default();
        f.batched("a".into(), 1);
        f.batched("a".into(), 2);
        f.settled(vec![("a".into(), 1)]);
        assert!(f.holds("a", 2));
        f.settled(vec![("a".into(), 2)]);
        assert!(f.is_empty());
    }
}
