//! The keyset sweep of one pass. A list that changes all the time may
//! never give a clean concurrent sweep. After [`OFFSET_SWEEPS`] of them the pass falls back to a keyset
//! sweep, one page at a time: each page asks for the members changed since
//! one second before the last `last_changed` seen, so members leaving the
//! window no longer move what is left to read. Members seen before are
//! recognised by id. Keyset pages are as large as Mailchimp allows, so
//! runs of ties shorter than that are read whole, in one answer, whatever
//! their order. A keyset page shorter than its `total_items` implies is
//! asked for again (with a `count` of what came, in case something caps
//! pages) at most [`KEYSET_REREADS`] times; when the walk ends, one more
//! request counts the window, and the distinct members read must be at
//! least as many; then a page of another shape must not say the window
//! holds more (the plan's check page).
//!
//! A run longer than a page gets a query of its own, bounded to its second
//! by `before_last_changed`, whose pages are read concurrently — round
//! after round if the order of the ties changes between requests — until
//! the ids read since its `total_items` last changed are as many as that
//! total: then every member of the run was seen (the window only shrinks,
//! so no id read since then can have been replaced). The walk goes on at
//! the offset the run ends at, a few members early: a page that starts
//! past the run shows that members left meanwhile, and the walk steps
//! back. A run that is never covered within [`RUN_ROUNDS`] reads of its
//! pages fails the sync.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::super::checks::{check_page, Bounds, DistinctIds, PagingFault};
use super::{CheckPage, MemberKey, Mode, PageRequest, PageVerdict, Pass, SweepPlan, KEYSET_REREADS, RUN_ROUNDS};

#[derive(Clone, Debug)]
pub(super) struct KeysetSweep {
    /// Members per page.
    count: u32,
    /// The latest `last_changed` read so far.
    pub(super) anchor: Option<i64>,
    /// Where the next page starts among the members since `anchor - 1`.
    offset: u64,
    /// Ids read with a `last_changed` of `anchor - 1` or later: pages ask
    /// for nothing older (and are checked to hold nothing older).
    seen: HashMap<String, i64>,
    /// The members read in this sweep, for their distinct count.
    distinct: DistinctIds,
    /// The run of ties at `anchor`, while it is read with its own query.
    pub(super) run: Option<RunCover>,
    /// The run just covered, while the walk checks it resumed before its end.
    resume: Option<Resume>,
    /// The second of the last run covered.
    last_run: Option<i64>,
    /// Whether the walk's page is being read.
    in_flight: bool,
    /// Pages of runs being read.
    run_in_flight: u32,
    /// Pages read, other than a run's.
    pages: u64,
    /// Pages after which the sweep gives up (it is not converging).
    pub(super) page_limit: u64,
    /// `total_items` when the sweep began, which the page limit is set from.
    base_total: u64,
    /// Short pages asked for again.
    rereads: u32,
    /// The walk reached the end: the window is counted once more.
    recount: Recount,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Recount {
    #[default]
    NotYet,
    Due,
    InFlight,
}

/// A run of members sharing one second longer than a page, read with the
/// walk's query bounded to before the next second.
#[derive(Clone, Debug, Default)]
pub(super) struct RunCover {
    pub(super) second: i64,
    /// `total_items` of the run's query; when it changes, counting starts over.
    pub(super) total: Option<u64>,
    /// Ids read since `total` was last set.
    pub(super) covered: HashSet<String>,
    /// How many of them changed in `second` or before (not after).
    pub(super) covered_upto: u64,
    /// Members without an id, per offset read since `total` was last set:
    /// all of them, and those changed in `second` or before.
    pub(super) keyless: BTreeMap<u64, (u64, u64)>,
    /// The offset of the next page to hand out: the pages are read
    /// concurrently, round after round.
    pub(super) next: u64,
    pub(super) pages: u64,
}

/// The walk after a run of ties at `second`: each page overlaps the run
/// (or the page before) by `overlap` members; one that starts past the
/// run shows that members left, and the walk steps `back`.
#[derive(Clone, Copy, Debug)]
struct Resume {
    second: i64,
    overlap: u64,
    back: u64,
}

/// Pages a keyset sweep of a window of `total` members in pages of `count`
/// may read before it gives up: generous, since every page may be read
/// again a few times within runs of ties.
fn page_limit(total: u64, count: u32) -> u64 {
    4 * (total / u64::from(count.max(1)) + 1) + 100
}

impl KeysetSweep {
    /// A keyset sweep of pages of `count` from `start`, of a window that
    /// held `total` members when it began.
    pub(super) fn new(count: u32, start: u64, total: u64, distinct: DistinctIds) -> KeysetSweep {
        KeysetSweep {
            page_limit: page_limit(total, count),
            base_total: total,
            count,
            anchor: None,
            offset: start,
            seen: HashMap::new(),
            distinct,
            run: None,
            resume: None,
            last_run: None,
            in_flight: false,
            run_in_flight: 0,
            pages: 0,
            rereads: 0,
            recount: Recount::NotYet,
        }
    }

    /// The next request of this sweep, made from `base` (the pass, its
    /// start offset and its page size): the walk's page, a page of the run
    /// being covered, or the final recount once every page is in; `None`
    /// while the sweep waits for a page.
    pub(super) fn next_request(&mut self, base: PageRequest) -> Option<PageRequest> {
        let keyed = PageRequest { keyed: true, ..base };
        if self.recount != Recount::NotYet {
            // The walk is over; once every page is in, count the window.
            if self.recount == Recount::InFlight || self.run_in_flight > 0 || self.in_flight {
                return None;
            }
            self.recount = Recount::InFlight;
            return Some(PageRequest {
                count: 1,
                recount: true,
                ..keyed
            });
        }
        let count = self.count;
        let (offset, before) = match &mut self.run {
            // A run's pages are read concurrently, a round at a time.
            Some(run) => {
                let round_over = run.total.is_some_and(|t| run.next >= t);
                // Its first page alone, to learn the total; each round
                // starts when the last one is in.
                if (run.total.is_none() || round_over) && self.run_in_flight > 0 {
                    return None;
                }
                let offset = if round_over { 0 } else { run.next };
                run.next = offset.saturating_add(count.into());
                self.run_in_flight += 1;
                (offset, Some(run.second + 1))
            }
            None if self.in_flight => return None,
            None => {
                self.in_flight = true;
                (self.offset, None)
            }
        };
        Some(PageRequest {
            offset,
            count,
            since: self.anchor.map(|a| a - 1),
            before,
            ..keyed
        })
    }

    /// Records a page of the run's own query. Returns whether the run's
    /// total changed (members left the window), or why it cannot be read.
    fn run_page_read(&mut self, offset: u64, total_items: u64, members: &[MemberKey]) -> Result<bool, String> {
        let count = u64::from(self.count);
        let Some(run) = self.run.as_mut() else {
            return Ok(false);
        };
        run.pages += 1;
        let shifted = run.total.is_some_and(|t| t != total_items);
        if run.total != Some(total_items) {
            *run = RunCover {
                second: run.second,
                total: Some(total_items),
                next: run.next,
                pages: run.pages,
                ..RunCover::default()
            };
        }
        let mut keyless = (0, 0);
        for m in members {
            let upto = u64::from(m.last_changed.is_some_and(|c| c <= run.second));
            if m.id.is_empty() {
                keyless.0 += 1;
                keyless.1 += upto;
            } else if run.covered.insert(m.id.clone()) {
                run.covered_upto += upto;
            }
        }
        run.keyless.insert(offset, keyless);
        let mut offsets = (0..total_items).step_by(count as usize);
        let round_read = offsets.all(|o| run.keyless.contains_key(&o));
        let in_window = || run.keyless.range(..total_items).map(|(_, k)| *k);
        let keyless_all: u64 = in_window().map(|k| k.0).sum();
        if round_read && run.covered.len() as u64 + keyless_all >= total_items {
            // Every member of the run was seen: the walk goes on where the
            // members after the run start, a few early to check it.
            let upto = run.covered_upto + in_window().map(|k| k.1).sum::<u64>();
            let overlap = (count / 10).min(count.saturating_sub(1)).max(1);
            self.offset = upto.saturating_sub(overlap);
            self.resume = Some(Resume {
                second: run.second,
                overlap,
                back: overlap,
            });
            self.last_run = Some(run.second);
            self.run = None;
        } else if run.pages > RUN_ROUNDS * (total_items / count + 1) {
            return Err(format!(
                "{total_items} members changed in one second were read {} pages over without \
                 seeing each of them: the list kept changing, Mailchimp returned them in a \
                 different order on every request, or something between us and it drops the offset parameter",
                run.pages
            ));
        }
        Ok(shifted)
    }
}

/// What [`SweepPlan::keyset_page_read`] concluded.
pub(super) struct KeysetRead {
    pub(super) verdict: PageVerdict,
    pub(super) fresh: Vec<bool>,
    /// The window shrank under the walk.
    pub(super) shifted: bool,
}

impl KeysetRead {
    fn go_on(fresh: Vec<bool>, shifted: bool) -> KeysetRead {
        KeysetRead {
            verdict: PageVerdict::Continue,
            fresh,
            shifted,
        }
    }
}

impl SweepPlan {
    /// Records a keyset page (see [`Self::page_read`]).
    pub(super) fn keyset_page_read(
        &mut self,
        request: PageRequest,
        total_items: u64,
        members: &[MemberKey],
    ) -> KeysetRead {
        let window = self.bounds;
        let Some(p) = self.passes.iter_mut().find(|p| p.pass == request.pass) else {
            return KeysetRead::go_on(vec![], false);
        };
        let start = p.start;
        let Mode::Keyset(k) = &mut p.mode else {
            return KeysetRead::go_on(vec![false; members.len()], false);
        };
        let pass = p.pass;
        let unstable = |reason: String, fault: Option<PagingFault>| KeysetRead {
            verdict: PageVerdict::Unstable { pass, reason, fault },
            fresh: vec![],
            shifted: false,
        };
        if request.recount {
            let fresh = vec![false; members.len()];
            let told = total_items.saturating_sub(start);
            // The window's size now: every member in it was in it when the
            // walk began (it only shrinks), so every one of them was read.
            let distinct = k.distinct.count();
            if distinct < told {
                let fault = PagingFault::Miscount {
                    read: distinct,
                    total: told,
                };
                return unstable(fault.to_string(), Some(fault));
            }
            // Then a page of another shape checks that count.
            p.read = Some(std::mem::take(&mut k.distinct));
            p.check = CheckPage::Due { found: told };
            return KeysetRead::go_on(fresh, false);
        }
        if request.before.is_some() {
            k.run_in_flight = k.run_in_flight.saturating_sub(1);
        } else {
            k.in_flight = false;
        }
        if request.before.is_none() {
            k.pages += 1;
            if k.pages > k.page_limit {
                return unstable(
                    format!(
                        "a one-by-one sweep read {} pages without reaching the end: the list kept changing, \
                         or Mailchimp's pages do not add up",
                        k.page_limit
                    ),
                    None,
                );
            }
        }
        let bounds = Bounds {
            since: request.since.or(window.since),
            before: match (request.before, window.before) {
                (Some(b), Some(w)) => Some(b.min(w)),
                (b, w) => b.or(w),
            },
        };
        if let Err(fault) = check_page(members, request.offset, request.count, bounds, pass == Pass::Archived) {
            return unstable(fault.to_string(), Some(fault));
        }
        if members.iter().any(|m| m.last_changed.is_none()) {
            return unstable("Mailchimp sent members without last_changed".into(), None);
        }
        let newest = members.last().and_then(|m| m.last_changed);
        // Members with no id are not sent anyway; they only move the key on.
        let fresh: Vec<bool> = members
            .iter()
            .map(|m| {
                !m.id.is_empty()
                    && k.seen
                        .insert(m.id.clone(), m.last_changed.unwrap_or_default())
                        .is_none()
            })
            .collect();
        for m in members {
            k.distinct.add(&m.id);
        }
        let count = u64::from(k.count);
        if request.before.is_some() {
            // A page of a run covered already (read concurrently with the
            // last one) only brings its members.
            if k.run.as_ref().is_none_or(|run| request.before != Some(run.second + 1)) {
                return KeysetRead::go_on(fresh, false);
            }
            // Shorter than the run's own total says: counts against the
            // same few asks as the walk's short pages.
            let expected = total_items.saturating_sub(request.offset).min(count);
            let returned = members.len() as u64;
            if returned < expected {
                k.rereads += 1;
                if k.rereads > KEYSET_REREADS {
                    let fault = PagingFault::Short {
                        offset: request.offset,
                        returned,
                        expected,
                        asked: k.rereads,
                    };
                    return unstable(fault.to_string(), Some(fault));
                }
            }
            return match k.run_page_read(request.offset, total_items, members) {
                Ok(shifted) => KeysetRead::go_on(fresh, shifted),
                Err(reason) => unstable(reason, None),
            };
        }
        if let Some(resume) = k.resume {
            let first = members.first().and_then(|m| m.last_changed);
            if request.offset > 0 && first.is_none_or(|c| c > resume.second) {
                // Members of the run (or before it) left the window since
                // it was covered: this page may start past members that
                // follow the run. Step back until a page starts in the run.
                k.offset = request.offset.saturating_sub(resume.back);
                k.resume = Some(Resume {
                    back: resume.back.saturating_mul(2),
                    ..resume
                });
                return KeysetRead::go_on(fresh, true);
            }
            if members.len() as u64 == count && newest <= Some(resume.second) {
                // Still within the run (the walk stepped back far): on to
                // the next page, which overlaps this one to show it follows.
                k.offset = request.offset + count - resume.overlap;
                k.resume = Some(Resume {
                    back: resume.overlap,
                    ..resume
                });
                return KeysetRead::go_on(fresh, false);
            }
            k.resume = None;
        }
        let returned = members.len() as u64;
        if returned < count {
            let expected = total_items.saturating_sub(request.offset).min(count);
            if returned < expected {
                // Shorter than its own total says: asked again, with the
                // count that came (something may cap pages), a few times.
                if k.rereads >= KEYSET_REREADS {
                    let fault = PagingFault::Short {
                        offset: request.offset,
                        returned,
                        expected,
                        asked: k.rereads + 1,
                    };
                    return unstable(fault.to_string(), Some(fault));
                }
                k.rereads += 1;
                if returned > 0 {
                    // Smaller pages: more of them may be needed.
                    k.count = returned as u32;
                    k.page_limit = k.page_limit.max(page_limit(k.base_total, k.count));
                }
                return KeysetRead::go_on(fresh, false);
            }
            k.recount = Recount::Due;
        } else if newest > k.anchor {
            let anchor = newest.expect("a full page has members");
            k.anchor = Some(anchor);
            k.seen.retain(|_, changed| *changed >= anchor - 1);
            k.offset = 0;
        } else {
            // A full page and no later second: the members since `anchor - 1`
            // up to `anchor` are more than a page. Read them on their own.
            let second = k.anchor.expect("an anchor is set by the first full page");
            if k.last_run == Some(second) {
                return unstable(
                    format!(
                        "Mailchimp's answers do not add up: after every member changed in one second \
                         ({second}) was read, more of them came"
                    ),
                    None,
                );
            }
            k.run = Some(RunCover {
                second,
                ..RunCover::default()
            });
        }
        KeysetRead::go_on(fresh, false)
    }
}
