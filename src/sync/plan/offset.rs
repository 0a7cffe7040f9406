//! The concurrent sweep of one pass: every offset is handed out to
//! whichever Fetcher is free; the pages' edges are folded together in
//! offset order to catch ties read in a new order, members repeated from
//! one page to the next and a sort not kept; and a sweep is trusted only
//! when its pages add up to its `total_items` (see the [plan](super)).

use std::collections::{BTreeMap, HashSet};

use super::super::checks::{check_page, DistinctIds, PagingFault};
use super::{CheckPage, KeysetSweep, MemberKey, Mode, PageRequest, PageVerdict, Pass, SweepPlan, Why, OFFSET_SWEEPS};

/// The ids of an offset page's members that share their `last_changed`
/// second with its first member (`lead`) or with its last (`trail`): the
/// only members that a reordering of ties can move to another page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageEdges {
    first: Option<i64>,
    lead: Vec<String>,
    last: Option<i64>,
    trail: Vec<String>,
    /// Every member shares one second (all of them are in `lead`).
    whole: bool,
    /// The first and the last `last_changed` on the page that are known.
    low: Option<i64>,
    high: Option<i64>,
    /// Every id on the page, to find members of one page on the next.
    ids: Vec<String>,
}

impl PageEdges {
    /// The edges of a page of `members`, in the order they came.
    pub fn of(members: &[MemberKey]) -> PageEdges {
        let Some(head) = members.first() else {
            return PageEdges::default();
        };
        let low = members.iter().find_map(|m| m.last_changed);
        let high = members.iter().rev().find_map(|m| m.last_changed);
        let ids = members
            .iter()
            .map(|m| m.id.clone())
            .filter(|id| !id.is_empty())
            .collect();
        let first = head.last_changed;
        let end = members.iter().take_while(|m| m.last_changed == first).count();
        let lead = members[..end].iter().map(|m| m.id.clone()).collect();
        if end == members.len() {
            return PageEdges {
                first,
                lead,
                last: first,
                trail: vec![],
                whole: true,
                low,
                high,
                ids,
            };
        }
        let last = members[members.len() - 1].last_changed;
        let trail = members[end..]
            .iter()
            .rev()
            .take_while(|m| m.last_changed == last)
            .map(|m| m.id.clone())
            .collect();
        PageEdges {
            first,
            lead,
            last,
            trail,
            whole: false,
            low,
            high,
            ids,
        }
    }
}

/// The run of ties that the pages folded so far end with.
#[derive(Clone, Debug)]
struct TieRun {
    second: Option<i64>,
    ids: HashSet<String>,
}

#[derive(Clone, Debug)]
pub(super) struct OffsetSweep {
    /// The next offset to hand out (valid once `total` is known).
    next: u64,
    /// `total_items` from this sweep's first page.
    total: Option<u64>,
    /// Pages handed out in this sweep before `total_items` was known.
    handed_out_blind: u32,
    in_flight: u32,
    changed: bool,
    /// Edges of pages read but not folded yet, by offset.
    edges: BTreeMap<u64, PageEdges>,
    /// The offset of the next page to fold.
    folded: u64,
    run: Option<TieRun>,
    /// The latest `last_changed` of the pages folded so far.
    high: Option<i64>,
    /// The ids of the last page folded.
    last_ids: HashSet<String>,
    /// Members returned by the pages of this sweep.
    returned: u64,
    /// The members returned, for their distinct count.
    distinct: DistinctIds,
    /// A member was read twice within one run of ties.
    reordered: bool,
    /// The rule the pages broke that says most about the server, if any.
    fault: Option<PagingFault>,
}

impl OffsetSweep {
    pub(super) fn new(start: u64, distinct: DistinctIds) -> OffsetSweep {
        OffsetSweep {
            next: start,
            total: None,
            handed_out_blind: 0,
            in_flight: 0,
            changed: false,
            edges: BTreeMap::new(),
            folded: start,
            run: None,
            high: None,
            last_ids: HashSet::new(),
            returned: 0,
            distinct,
            reordered: false,
            fault: None,
        }
    }

    /// `total_items` as this sweep's first page said.
    pub(super) fn total(&self) -> Option<u64> {
        self.total
    }

    /// The offset of the next page of a pass paging from `start` in pages
    /// of `count`, reading up to `blind_pages` before `total_items` is
    /// known; `None` while no page may be asked for (the total is awaited,
    /// every page was handed out, or the sweep is condemned).
    pub(super) fn next_offset(&mut self, start: u64, count: u32, blind_pages: u32) -> Option<u64> {
        let may_read = !self.condemned()
            && match self.total {
                None => self.handed_out_blind < blind_pages,
                Some(total) => self.next < sweep_end(start, count.into(), total),
            };
        if !may_read {
            return None;
        }
        if self.total.is_none() {
            self.handed_out_blind += 1;
        }
        let offset = self.next;
        self.next = self.next.saturating_add(count.into());
        self.in_flight += 1;
        Some(offset)
    }

    /// Whether the sweep is known not to be trusted: it is read again, so
    /// its pages still to come are not asked for, and those in flight are
    /// not sent (their members are read again).
    fn condemned(&self) -> bool {
        self.reordered || self.fault.is_some()
    }

    /// Folds the edges of the pages read so far, in offset order, into the
    /// run of ties they end with; an id met twice within a run means the
    /// ties were ordered differently by two pages. A page starting before
    /// the last one ended means the sort was not kept, and one holding a
    /// member of the page before, with a second of its own, that paging
    /// repeats members. With the sort kept, a member read twice in a sweep
    /// is always caught here, with memory for two pages and one run only.
    fn fold(&mut self, count: u64) {
        while let Some(mut page) = self.edges.remove(&self.folded) {
            let offset = self.folded;
            self.folded += count;
            let tied_over = |id: &String| self.run.as_ref().is_some_and(|run| run.ids.contains(id));
            if let Some(id) = page.ids.iter().find(|id| self.last_ids.contains(*id) && !tied_over(id)) {
                PagingFault::note(&mut self.fault, PagingFault::Repeated { id: id.clone() });
            }
            if page.low.is_some_and(|low| self.high.is_some_and(|high| low < high)) {
                PagingFault::note(&mut self.fault, PagingFault::OutOfOrder { offset });
            }
            self.high = self.high.max(page.high);
            self.last_ids = std::mem::take(&mut page.ids).into_iter().collect();
            if page.lead.is_empty() {
                self.run = None;
                continue;
            }
            if let Some(run) = self.run.as_mut().filter(|run| run.second == page.first) {
                for id in page.lead.iter().filter(|id| !id.is_empty()) {
                    if !run.ids.insert(id.clone()) {
                        self.reordered = true;
                    }
                }
                if page.whole {
                    continue;
                }
            }
            let (second, ids) = if page.whole {
                (page.first, page.lead)
            } else {
                (page.last, page.trail)
            };
            self.run = Some(TieRun {
                second,
                ids: ids.into_iter().filter(|id| !id.is_empty()).collect(),
            });
        }
    }
}

/// Where an offset sweep stops handing out pages: past `total`, and one
/// page further when the last page would end exactly at `total` — that
/// page must come back empty, or `total_items` understated the window
/// (a short last page shows it by itself: it would hold more).
fn sweep_end(start: u64, count: u64, total: u64) -> u64 {
    if total.saturating_sub(start) % count.max(1) == 0 {
        total + 1
    } else {
        total
    }
}

impl SweepPlan {
    /// Records a page of an offset sweep (see [`Self::page_read`]).
    pub(super) fn offset_page_read(
        &mut self,
        request: PageRequest,
        total_items: u64,
        members: &[MemberKey],
    ) -> (PageVerdict, Vec<bool>) {
        let bounds = self.bounds;
        let count = u64::from(self.count);
        let hasher = self.hasher.clone();
        let checks_every_pass = self.checks_every_pass;
        let Some(p) = self.passes.iter_mut().find(|p| p.pass == request.pass) else {
            return (PageVerdict::Continue, vec![]);
        };
        let start = p.start;
        let Mode::Offset(o) = &mut p.mode else {
            // A page of a sweep given up since: its members are new if unseen.
            return (PageVerdict::Continue, vec![true; members.len()]);
        };
        o.in_flight = o.in_flight.saturating_sub(1);
        match o.total {
            None => o.total = Some(total_items),
            Some(total) if total != total_items => o.changed = true,
            Some(_) => {}
        }
        let returned = members.len() as u64;
        let expected = count.min(total_items.saturating_sub(request.offset));
        if returned < expected {
            // Explained if the total moved in this sweep; a server fault if not.
            PagingFault::note(
                &mut o.fault,
                PagingFault::Short {
                    offset: request.offset,
                    returned,
                    expected,
                    asked: 1,
                },
            );
        } else if returned > expected && returned <= count {
            // More than the window holds by its own count: the total is
            // not to be trusted, and members past it may be unread.
            PagingFault::note(
                &mut o.fault,
                PagingFault::Overfull {
                    offset: request.offset,
                    returned,
                    expected,
                },
            );
        }
        if let Err(fault) = check_page(
            members,
            request.offset,
            self.count,
            bounds,
            request.pass == Pass::Archived,
        ) {
            PagingFault::note(&mut o.fault, fault);
        }
        o.returned += returned;
        for m in members {
            o.distinct.add(&m.id);
        }
        o.edges.insert(request.offset, PageEdges::of(members));
        o.fold(count);
        // A sweep known to be read again sends nothing more; a member twice
        // on one page is sent once.
        let condemned = o.condemned();
        let mut on_page = HashSet::new();
        let fresh: Vec<bool> = members
            .iter()
            .map(|m| !condemned && (m.id.is_empty() || on_page.insert(m.id.as_str())))
            .collect();
        let all_read =
            o.in_flight == 0 && (o.condemned() || o.total.is_some_and(|t| o.next >= sweep_end(start, count, t)));
        if !all_read {
            return (PageVerdict::Continue, fresh);
        }
        let total = o.total.unwrap_or(total_items);
        if !o.changed && !o.condemned() {
            // Every page as long as the total says, and as many different
            // members as that: a member read twice pages apart (with a new
            // `last_changed`, so no other check sees it) leaves one unread.
            let expected = total.saturating_sub(start);
            let distinct = o.distinct.count();
            if o.returned == expected && distinct == expected {
                p.read = Some(std::mem::take(&mut o.distinct));
                match checks_every_pass {
                    true => p.check = CheckPage::Due { found: expected },
                    false => p.done = true,
                }
                return (PageVerdict::Continue, fresh);
            }
            o.fault = Some(if o.returned == expected {
                PagingFault::Duplicated {
                    returned: o.returned,
                    distinct,
                }
            } else {
                PagingFault::Miscount {
                    read: o.returned,
                    total: expected,
                }
            });
        }
        let why = match (o.changed, o.reordered, o.fault.take()) {
            (true, _, _) => Why::Changed,
            (false, true, _) => Why::Reordered,
            (false, false, fault) => Why::Fault(fault.expect("a sweep not trusted has a reason")),
        };
        p.sweep += 1;
        if p.sweep < OFFSET_SWEEPS {
            p.mode = Mode::Offset(OffsetSweep::new(start, DistinctIds::with_hasher(hasher)));
            return (
                PageVerdict::Resweep {
                    pass: p.pass,
                    sweep: p.sweep,
                    why,
                },
                fresh,
            );
        }
        p.mode = Mode::Keyset(KeysetSweep::new(
            self.keyset_count,
            start,
            total_items,
            DistinctIds::with_hasher(hasher),
        ));
        (PageVerdict::Keyset { pass: p.pass, why }, fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Members with these seconds and ids.
    fn keys(page: &[(i64, &str)]) -> Vec<MemberKey> {
        page.iter()
            .map(|(c, id)| MemberKey {
                last_changed: Some(*c),
                id: (*id).into(),
                archived: None,
            })
            .collect()
    }

    #[test]
    fn page_edges_hold_the_runs_of_ties_at_both_ends() {
        let edges = PageEdges::of(&keys(&[(1, "a"), (1, "b"), (2, "c"), (3, "d"), (3, "e")]));
        assert_eq!(
            (edges.first, edges.lead, edges.last, edges.trail, edges.whole),
            (
                Some(1),
                vec!["a".into(), "b".into()],
                Some(3),
                vec!["e".into(), "d".into()],
                false
            )
        );
        assert_eq!((edges.low, edges.high), (Some(1), Some(3)));
        let edges = PageEdges::of(&keys(&[(7, "m0"), (7, "m1"), (7, "m2")]));
        assert!(edges.whole && edges.lead.len() == 3 && edges.trail.is_empty());
        let edges = PageEdges::of(&keys(&[(0, "m0"), (1, "m1")]));
        assert_eq!((edges.lead.len(), edges.trail.len()), (1, 1));
        assert_eq!(PageEdges::of(&[]), PageEdges::default());
    }
}
