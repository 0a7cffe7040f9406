//! What every members page must satisfy, whatever the server did (issue 14,
//! SPEC §4): the sweeps of [`super::SweepPlan`] trust a pass only when its
//! pages pass these checks and its reads add up.
//!
//! A proxy that drops `offset` or `count`, or a server that ignores the
//! sort or the window, answers with pages that parse and look plausible.
//! Each such fault breaks one of these rules:
//! - a page holds at most `count` members;
//! - under `sort_field=last_changed&sort_dir=ASC`, `last_changed` never
//!   goes backwards within a page or from one page to the next;
//! - every member changed within the window asked for
//!   (`since_last_changed`, `before_last_changed`; both taken as
//!   inclusive, since APIs differ on that);
//! - a member is read once per sweep: one read at two offsets of a sweep,
//!   with no change of the window to explain it, shows broken paging;
//! - a page is as long as `total_items` says it should be;
//! - at the end of a sweep, the distinct members read are as many as
//!   `total_items` says the window holds.
//!
//! This module checks one page; the plan checks what spans pages.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasher;

use super::plan::MemberKey;

/// The window a page was asked for, in unix seconds; both bounds inclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bounds {
    pub since: Option<i64>,
    pub before: Option<i64>,
}

impl Bounds {
    fn holds(&self, second: i64) -> bool {
        self.since.is_none_or(|s| second >= s) && self.before.is_none_or(|b| second <= b)
    }
}

/// What Mailchimp (or a proxy in front of it) did that its paging contract
/// does not allow. The text says what it did, for the log and the error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PagingFault {
    /// More members than the `count` asked for.
    Oversized { offset: u64, returned: u64, count: u32 },
    /// `last_changed` went backwards at or after this offset.
    OutOfOrder { offset: u64 },
    /// A member changed at `second`, outside the window asked for.
    OutsideWindow { offset: u64, second: i64 },
    /// The member `id` came back twice within one sweep while the window
    /// did not change.
    Repeated { id: String },
    /// A sweep read `read` distinct members where `total_items` said the
    /// window holds `total`.
    Miscount { read: u64, total: u64 },
    /// A sweep's pages held as many members as `total_items` says, but
    /// only `distinct` different ones: a member came back at two offsets
    /// (pages apart, with a `last_changed` of its own at each), so another
    /// was not read.
    Duplicated { returned: u64, distinct: u64 },
    /// A page of `returned` members where `total_items` said `expected`
    /// were there; `asked` pages of the sweep came back short in all.
    Short {
        offset: u64,
        returned: u64,
        expected: u64,
        asked: u32,
    },
    /// A page of `returned` members where `total_items` said only
    /// `expected` were left: the total understates the window.
    Overfull { offset: u64, returned: u64, expected: u64 },
    /// The member `id`, whose status is not `archived` (or not given), in
    /// an answer to `status=archived`.
    NotArchived { id: String },
    /// After a pass's reads found `found` members, a page of another shape
    /// (`count`, at `offset`) said the window holds `told`, more: the pass's
    /// requests were answered with fewer members than others, as a window
    /// that only shrinks cannot explain.
    Disagreeing {
        found: u64,
        told: u64,
        offset: u64,
        count: u32,
    },
}

impl PagingFault {
    /// Keeps in `slot` the fault that says most about what the server did:
    /// a member read twice says more than the disorder it also causes.
    pub fn note(slot: &mut Option<PagingFault>, fault: PagingFault) {
        if slot.as_ref().is_none_or(|kept| fault.rank() > kept.rank()) {
            *slot = Some(fault);
        }
    }

    fn rank(&self) -> u8 {
        match self {
            PagingFault::Miscount { .. } | PagingFault::Duplicated { .. } | PagingFault::Disagreeing { .. } => 0,
            PagingFault::Short { .. } | PagingFault::Overfull { .. } => 1,
            PagingFault::OutOfOrder { .. } => 2,
            PagingFault::OutsideWindow { .. } => 3,
            PagingFault::Repeated { .. } => 4,
            PagingFault::Oversized { .. } | PagingFault::NotArchived { .. } => 5,
        }
    }

    /// The label of this kind of fault in the `paging_faults_total` metric.
    pub fn kind(&self) -> &'static str {
        match self {
            PagingFault::Oversized { .. } => "oversized_page",
            PagingFault::OutOfOrder { .. } => "out_of_order",
            PagingFault::OutsideWindow { .. } => "outside_window",
            PagingFault::Repeated { .. } => "repeated_member",
            PagingFault::Miscount { .. } => "miscount",
            PagingFault::Duplicated { .. } => "repeated_member",
            PagingFault::Short { .. } => "short_page",
            PagingFault::Overfull { .. } => "overfull_page",
            PagingFault::NotArchived { .. } => "not_archived",
            PagingFault::Disagreeing { .. } => "disagreeing_pages",
        }
    }
}

impl fmt::Display for PagingFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PagingFault::Oversized {
                offset,
                returned,
                count,
            } => write!(
                f,
                "Mailchimp returned {returned} members at offset {offset} for count={count} \
                 (something between us and Mailchimp may be dropping the count parameter)"
            ),
            PagingFault::OutOfOrder { offset } => write!(
                f,
                "Mailchimp returned members out of last_changed order at offset {offset} although \
                 sort_field=last_changed and sort_dir=ASC were asked for"
            ),
            PagingFault::OutsideWindow { offset, second } => write!(
                f,
                "Mailchimp returned a member at offset {offset} changed at {}, outside the \
                 since_last_changed/before_last_changed window asked for",
                chrono::DateTime::from_timestamp(*second, 0).map_or(second.to_string(), |t| t.to_rfc3339())
            ),
            PagingFault::NotArchived { id } => write!(
                f,
                "Mailchimp returned member \"{id}\", which does not say it is archived, when asked for status=archived \
                 (something between us and Mailchimp may be dropping the status parameter, so archived \
                 members would never be read)"
            ),
            PagingFault::Repeated { id } => write!(
                f,
                "Mailchimp returned member \"{id}\" at two offsets of one sweep while the list did not \
                 change (something between us and Mailchimp may be dropping the offset parameter)"
            ),
            PagingFault::Disagreeing {
                found,
                told,
                offset,
                count,
            } => write!(
                f,
                "Mailchimp (or something between us and it: a cache serving stale pages, say) answers some \
                 requests with fewer members than others: the pass's reads found {found} members, but a page \
                 asked for with count={count} at offset {offset} afterwards said the window holds {told}"
            ),
            PagingFault::Miscount { read, total } => write!(
                f,
                "the pages held {read} distinct members where Mailchimp's total_items says {total}"
            ),
            PagingFault::Duplicated { returned, distinct } => write!(
                f,
                "the pages held {returned} members, as Mailchimp's total_items says, but only {distinct} \
                 different ones: a member came back at two offsets of one sweep (it changed while the list \
                 was read, or something between us and Mailchimp repeats members)"
            ),
            PagingFault::Short {
                offset,
                returned,
                expected,
                asked,
            } => {
                write!(
                    f,
                    "Mailchimp returned {returned} members at offset {offset} where its total_items says \
                     {expected} were there"
                )?;
                if *asked > 1 {
                    write!(f, " ({asked} pages short in all)")?;
                }
                Ok(())
            }
            PagingFault::Overfull {
                offset,
                returned,
                expected,
            } => write!(
                f,
                "Mailchimp returned {returned} members at offset {offset} where its total_items says \
                 only {expected} were left"
            ),
        }
    }
}

/// The members one sweep read, told apart without keeping their ids: a
/// 64-bit hash of each id read (keyed at random per sweep, so a collision,
/// one chance in 2^65 / n² or so, is not repeated by the next sweep),
/// counted once the sweep is over. Memory: 8 bytes per member read; a
/// member read twice, pages apart and with a new `last_changed` each time,
/// is invisible to every check that looks at one page or its neighbours,
/// and only an exact count of distinct ids shows it (issue 14, part 1).
/// Members without an id count once per read.
#[derive(Clone, Debug, Default)]
pub struct DistinctIds {
    hasher: RandomState,
    hashes: Vec<u64>,
    /// How many of `hashes` are sorted and free of repeats.
    settled: usize,
    keyless: u64,
}

impl DistinctIds {
    /// An empty count hashing ids with `hasher`: counts made with one
    /// hasher can be compared ([`Self::common`]).
    pub fn with_hasher(hasher: RandomState) -> DistinctIds {
        DistinctIds {
            hasher,
            ..DistinctIds::default()
        }
    }

    /// How many ids both counts hold (both made with one hasher).
    pub fn common(&mut self, other: &mut DistinctIds) -> u64 {
        self.count();
        other.count();
        let (mut a, mut b, mut both) = (self.hashes.iter().peekable(), other.hashes.iter().peekable(), 0);
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            match x.cmp(y) {
                std::cmp::Ordering::Less => {
                    a.next();
                }
                std::cmp::Ordering::Greater => {
                    b.next();
                }
                std::cmp::Ordering::Equal => {
                    both += 1;
                    a.next();
                    b.next();
                }
            }
        }
        both
    }

    /// Counts a member read with this id (`""` for none).
    pub fn add(&mut self, id: &str) {
        if id.is_empty() {
            self.keyless += 1;
        } else {
            self.hashes.push(self.hasher.hash_one(id));
        }
    }

    /// The distinct members read so far.
    pub fn count(&mut self) -> u64 {
        if self.settled < self.hashes.len() {
            self.hashes.sort_unstable();
            self.hashes.dedup();
            self.settled = self.hashes.len();
        }
        self.hashes.len() as u64 + self.keyless
    }
}

/// Checks one page, as its members came (`offset` is where it starts):
/// at most `count` members, no id twice, only archived members when
/// `archived` (the page answers `status=archived`), in `last_changed`
/// order, within `bounds`. Members without `last_changed` are not ordered
/// or bounded. In the archived pass every member must say it is archived:
/// one without a status cannot show that the `status` parameter was kept.
pub fn check_page(
    members: &[MemberKey],
    offset: u64,
    count: u32,
    bounds: Bounds,
    archived: bool,
) -> Result<(), PagingFault> {
    if members.len() as u64 > u64::from(count) {
        return Err(PagingFault::Oversized {
            offset,
            returned: members.len() as u64,
            count,
        });
    }
    if members.len() > 1 {
        let mut ids = HashSet::with_capacity(members.len());
        if let Some(m) = members.iter().find(|m| !m.id.is_empty() && !ids.insert(m.id.as_str())) {
            return Err(PagingFault::Repeated { id: m.id.clone() });
        }
    }
    if archived {
        if let Some(m) = members.iter().find(|m| m.archived != Some(true)) {
            return Err(PagingFault::NotArchived { id: m.id.clone() });
        }
    }
    let mut newest = None;
    for (i, m) in members.iter().enumerate() {
        let Some(second) = m.last_changed else { continue };
        let at = offset + i as u64;
        if newest.is_some_and(|n| second < n) {
            return Err(PagingFault::OutOfOrder { offset: at });
        }
        newest = Some(second);
        if !bounds.holds(second) {
            return Err(PagingFault::OutsideWindow { offset: at, second });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(second: i64, id: &str) -> MemberKey {
        MemberKey {
            last_changed: Some(second),
            id: id.into(),
            archived: None,
        }
    }

    #[test]
    fn a_page_in_order_within_its_window_passes() {
        let page = [key(5, "a"), key(5, "b"), key(7, "c")];
        let bounds = Bounds {
            since: Some(5),
            before: Some(7),
        };
        assert_eq!(check_page(&page, 0, 3, bounds, false), Ok(()));
        assert_eq!(check_page(&[], 40, 3, bounds, false), Ok(()));
        // A member without last_changed is neither ordered nor bounded.
        let mut odd = page.to_vec();
        odd.insert(
            1,
            MemberKey {
                last_changed: None,
                id: "x".into(),
                archived: None,
            },
        );
        assert_eq!(check_page(&odd, 0, 4, bounds, false), Ok(()));
    }

    #[test]
    fn each_rule_names_what_the_server_did() {
        let bounds = Bounds {
            since: Some(5),
            before: Some(9),
        };
        let page = [key(5, "a"), key(6, "b"), key(7, "c")];
        assert_eq!(
            check_page(&page, 10, 2, bounds, false),
            Err(PagingFault::Oversized {
                offset: 10,
                returned: 3,
                count: 2
            })
        );
        assert_eq!(
            check_page(&[key(6, "a"), key(5, "b")], 10, 2, bounds, false),
            Err(PagingFault::OutOfOrder { offset: 11 })
        );
        assert_eq!(
            check_page(&[key(4, "a")], 3, 2, bounds, false),
            Err(PagingFault::OutsideWindow { offset: 3, second: 4 })
        );
        assert_eq!(
            check_page(&[key(9, "a"), key(10, "b")], 0, 2, bounds, false),
            Err(PagingFault::OutsideWindow { offset: 1, second: 10 })
        );
        assert_eq!(
            check_page(&[key(6, "a"), key(6, "a")], 0, 2, bounds, false),
            Err(PagingFault::Repeated { id: "a".into() })
        );
        // A page of the archived pass holding a member that is not archived.
        let mut subscribed = key(6, "s");
        subscribed.archived = Some(false);
        let mut archived = key(6, "r");
        archived.archived = Some(true);
        assert_eq!(
            check_page(&[archived.clone(), subscribed.clone()], 0, 2, bounds, false),
            Ok(())
        );
        let mut archived_too = key(7, "a");
        archived_too.archived = Some(true);
        assert_eq!(
            check_page(&[archived.clone(), archived_too], 0, 2, bounds, true),
            Ok(())
        );
        // One that does not say its status cannot show the status parameter was kept.
        assert_eq!(
            check_page(&[archived.clone(), key(7, "n")], 0, 2, bounds, true),
            Err(PagingFault::NotArchived { id: "n".into() })
        );
        assert_eq!(
            check_page(&[archived, subscribed], 0, 2, bounds, true),
            Err(PagingFault::NotArchived { id: "s".into() })
        );
        // A member twice on one page says more than the disorder it makes.
        assert_eq!(
            check_page(&[key(6, "a"), key(7, "b"), key(6, "a")], 0, 3, bounds, false),
            Err(PagingFault::Repeated { id: "a".into() })
        );
        let text = PagingFault::Repeated { id: "u7".into() }.to_string();
        assert!(
            text.contains("\"u7\" at two offsets") && text.contains("offset parameter"),
            "{text}"
        );
        assert!(PagingFault::Oversized {
            offset: 0,
            returned: 5,
            count: 2
        }
        .to_string()
        .contains("5 members at offset 0 for count=2"));
    }

    #[test]
    fn distinct_ids_count_each_id_once_and_each_keyless_read() {
        let mut ids = DistinctIds::default();
        for id in ["a", "b", "a", "", "c", ""] {
            ids.add(id);
        }
        assert_eq!(ids.count(), 5);
        ids.add("b");
        ids.add("d");
        assert_eq!(ids.count(), 6);
        assert_eq!(ids.count(), 6);
    }
}
