//! The paging plan of one sync: which pages to read, in what order, and
//! whether what was read can be trusted.
//!
//! Each pass (members, then archived members) first reads its first page
//! or two — before `total_items` is known — then hands out every other
//! offset to whichever Fetcher is free, so pages are read concurrently. A
//! second page read blind keeps the connections busy while a sync starts;
//! it is wasted only on a pass that fits in one page.
//!
//! Offset paging over a window that shrinks while it is read skips members
//! (everything behind a member that leaves shifts one place). The window
//! only ever shrinks during a sync — a member that changes gets a
//! `last_changed` after `T0` — so a `total_items` that differs between
//! pages, or a page shorter than its offset implies, is a certain sign.
//! A pass that saw one is swept again; a sweep that sees none read every
//! member still in the window. Members that left are changed after `T0`
//! and belong to the next sync.
//!
//! Whatever the server did, a sweep is trusted only when its pages pass
//! the checks of [`super::checks`] (at most `count` members, in
//! `last_changed` order, within the window, no member read twice) and the
//! distinct members it read are as many as `total_items` says. A server
//! that breaks them — a proxy dropping `offset`, a sort ignored — has its
//! pass swept again like a changed window, then read as a keyset sweep;
//! if that does not add up either, the sync fails and says what the
//! server did.
//!
//! Members sharing one `last_changed` second may come back in another
//! order from one request to the next (SQL promises no order among ties).
//! A run of ties that straddles two pages can then hold a member twice and
//! miss another with no change of `total_items`. Each sweep folds the runs
//! at its page edges together in offset order; an id read twice within one
//! run is the sign, and the pass is swept again like a changed window.
//!
//! A list that changes all the time may never give a clean concurrent
//! sweep. After [`OFFSET_SWEEPS`] of them the pass falls back to a keyset
//! sweep, one page at a time: each page asks for the members changed since
//! one second before the last `last_changed` seen, so members leaving the
//! window no longer move what is left to read. Members seen before are
//! recognised by id. Keyset pages are as large as Mailchimp allows, so
//! runs of ties shorter than that are read whole, in one answer, whatever
//! their order. A keyset page shorter than its `total_items` implies is
//! asked for again (with a `count` of what came, in case something caps
//! pages) at most [`KEYSET_REREADS`] times; when the walk ends, one more
//! request counts the window, and the distinct members read must be at
//! least as many.
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

use super::checks::{check_page, Bounds, PagingFault};

/// Concurrent sweeps of a pass before it falls back to a keyset sweep.
pub const OFFSET_SWEEPS: u32 = 2;

/// Members per keyset page: Mailchimp's largest `count`.
pub const KEYSET_COUNT: u32 = 1000;

/// How many times over the pages of a run of ties longer than a keyset
/// page may be read before the sweep gives up. One suffices for ties in a
/// stable order; in a new order on every request, a member is missed by
/// all of them with a chance below (1 - 1/pages)^(30 × pages) < e^-30.
pub const RUN_ROUNDS: u64 = 30;

/// How many times a keyset sweep asks again for a page shorter than its
/// `total_items` implies before it gives up.
pub const KEYSET_REREADS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    /// Every member Mailchimp returns by default (all but archived).
    Members,
    /// `status=archived`: sent as opted out.
    Archived,
}

impl Pass {
    pub fn name(self) -> &'static str {
        match self {
            Pass::Members => "members",
            Pass::Archived => "archived members",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub pass: Pass,
    pub offset: u64,
    pub count: u32,
    /// A keyset page: members changed since this second (unix time)
    /// instead of since the window's start; `None` for the window's.
    pub since: Option<i64>,
    /// Members changed before this second (unix time) only, if it comes
    /// before the window's end; `None` for the window's end.
    pub before: Option<i64>,
    /// Whether the reader must report each member's `last_changed` and id.
    pub keyed: bool,
    /// Asked only for its `total_items`: the window's size at the end of a
    /// keyset sweep, which the members read must add up to.
    pub recount: bool,
}

/// Why a pass is read again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// The window changed while it was read (`total_items` moved): members
    /// may have shifted past the readers.
    Changed,
    /// Mailchimp returned members sharing one second in a different order
    /// from one page to the next.
    Reordered,
    /// The pages broke a rule that holds whatever the list did.
    Fault(PagingFault),
}

/// What the plan makes of a page just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageVerdict {
    Continue,
    /// The pass's sweep cannot be trusted: it starts over.
    Resweep {
        pass: Pass,
        sweep: u32,
        why: Why,
    },
    /// The pass's sweeps could not be trusted: it goes on as a keyset sweep.
    Keyset {
        pass: Pass,
        why: Why,
    },
    /// The pass cannot be completed; the sync fails (cursor kept). `fault`
    /// is what the server did wrong, if that is the reason.
    Unstable {
        pass: Pass,
        reason: String,
        fault: Option<PagingFault>,
    },
}

/// A member of a page: when it last changed (unix seconds), its id, and
/// whether its status is `archived` (`None` when the page did not say).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberKey {
    pub last_changed: Option<i64>,
    pub id: String,
    pub archived: Option<bool>,
}

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
struct OffsetSweep {
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
    /// A member was read twice within one run of ties.
    reordered: bool,
    /// The rule the pages broke that says most about the server, if any.
    fault: Option<PagingFault>,
}

#[derive(Clone, Debug)]
struct KeysetSweep {
    /// Members per page.
    count: u32,
    /// The latest `last_changed` read so far.
    anchor: Option<i64>,
    /// Where the next page starts among the members since `anchor - 1`.
    offset: u64,
    /// Ids read with a `last_changed` of `anchor - 1` or later: pages ask
    /// for nothing older (and are checked to hold nothing older).
    seen: HashMap<String, i64>,
    /// Distinct members read in this sweep (members without an id count
    /// once per read).
    distinct: u64,
    /// The run of ties at `anchor`, while it is read with its own query.
    run: Option<RunCover>,
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
    page_limit: u64,
    /// `total_items` when the sweep began, which the page limit is set from.
    base_total: u64,
    /// Short pages asked for again.
    rereads: u32,
    /// The walk reached the end: the window is counted once more.
    recount: Recount,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Recount {
    #[default]
    NotYet,
    Due,
    InFlight,
}

/// A run of members sharing one second longer than a page, read with the
/// walk's query bounded to before the next second.
#[derive(Clone, Debug, Default)]
struct RunCover {
    second: i64,
    /// `total_items` of the run's query; when it changes, counting starts over.
    total: Option<u64>,
    /// Ids read since `total` was last set.
    covered: HashSet<String>,
    /// How many of them changed in `second` or before (not after).
    covered_upto: u64,
    /// Members without an id, per offset read since `total` was last set:
    /// all of them, and those changed in `second` or before.
    keyless: BTreeMap<u64, (u64, u64)>,
    /// The offset of the next page to hand out: the pages are read
    /// concurrently, round after round.
    next: u64,
    pages: u64,
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

#[derive(Clone, Debug)]
enum Mode {
    Offset(OffsetSweep),
    Keyset(KeysetSweep),
}

#[derive(Clone, Debug)]
struct PassPlan {
    pass: Pass,
    /// Where its paging starts.
    start: u64,
    /// Pages it may read before `total_items` is known.
    blind_pages: u32,
    sweep: u32,
    mode: Mode,
    done: bool,
    /// Whether a change seen in another pass has had this one read again.
    reopened: bool,
}

#[derive(Clone, Debug)]
pub struct SweepPlan {
    count: u32,
    /// Members per page of a keyset sweep.
    keyset_count: u32,
    /// The sync's window, which every member read must lie in.
    bounds: Bounds,
    passes: Vec<PassPlan>,
}

impl OffsetSweep {
    fn new(start: u64) -> OffsetSweep {
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
            reordered: false,
            fault: None,
        }
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

/// Pages a keyset sweep of a window of `total` members in pages of `count`
/// may read before it gives up: generous, since every page may be read
/// again a few times within runs of ties.
fn page_limit(total: u64, count: u32) -> u64 {
    4 * (total / u64::from(count.max(1)) + 1) + 100
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

impl KeysetSweep {
    /// A keyset sweep of pages of `count` from `start`, of a window that
    /// held `total` members when it began.
    fn new(count: u32, start: u64, total: u64) -> KeysetSweep {
        KeysetSweep {
            page_limit: page_limit(total, count),
            base_total: total,
            count,
            anchor: None,
            offset: start,
            seen: HashMap::new(),
            distinct: 0,
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
                 seeing each of them: the list kept changing, or Mailchimp returned them in a \
                 different order on every request",
                run.pages
            ));
        }
        Ok(shifted)
    }
}

/// What [`SweepPlan::keyset_page_read`] concluded.
struct KeysetRead {
    verdict: PageVerdict,
    fresh: Vec<bool>,
    /// The window shrank under the walk.
    shifted: bool,
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
    /// `passes`: each pass and how many pages it reads before it knows
    /// its `total_items` (at least one). The members pass pages from
    /// `start_offset`, the archived pass from 0. Members may come from any
    /// time until [`Self::within`] says which.
    pub fn new(start_offset: u64, count: u32, passes: &[(Pass, u32)]) -> SweepPlan {
        let passes = passes
            .iter()
            .map(|&(pass, blind_pages)| {
                let start = if pass == Pass::Members { start_offset } else { 0 };
                PassPlan {
                    pass,
                    start,
                    blind_pages: blind_pages.max(1),
                    sweep: 0,
                    mode: Mode::Offset(OffsetSweep::new(start)),
                    done: false,
                    reopened: false,
                }
            })
            .collect();
        SweepPlan {
            count,
            keyset_count: KEYSET_COUNT.max(count),
            bounds: Bounds::default(),
            passes,
        }
    }

    /// The plan of a sync whose window is `bounds` (unix seconds, both
    /// inclusive): a member read from outside it shows a server that
    /// ignores the window asked for.
    pub fn within(self, bounds: Bounds) -> SweepPlan {
        SweepPlan { bounds, ..self }
    }

    /// The next page to read, if one may be read now. `None` while every
    /// pass waits for a page it needs first, or when everything was handed out.
    pub fn next_request(&mut self) -> Option<PageRequest> {
        let count = self.count;
        for p in self.passes.iter_mut().filter(|p| !p.done) {
            let start = p.start;
            let request = |offset, since, keyed| PageRequest {
                pass: p.pass,
                offset,
                count,
                since,
                before: None,
                keyed,
                recount: false,
            };
            match &mut p.mode {
                Mode::Offset(o) => {
                    let may_read = !o.condemned()
                        && match o.total {
                            None => o.handed_out_blind < p.blind_pages,
                            Some(total) => o.next < sweep_end(start, count.into(), total),
                        };
                    if !may_read {
                        continue;
                    }
                    if o.total.is_none() {
                        o.handed_out_blind += 1;
                    }
                    let offset = o.next;
                    o.next = o.next.saturating_add(count.into());
                    o.in_flight += 1;
                    return Some(request(offset, None, false));
                }
                Mode::Keyset(k) => {
                    let since = k.anchor.map(|a| a - 1);
                    let keyset_count = k.count;
                    if k.recount != Recount::NotYet {
                        // The walk is over; once every page is in, count the window.
                        if k.recount == Recount::InFlight || k.run_in_flight > 0 || k.in_flight {
                            continue;
                        }
                        k.recount = Recount::InFlight;
                        return Some(PageRequest {
                            count: 1,
                            recount: true,
                            ..request(start, None, true)
                        });
                    }
                    let (offset, before) = match &mut k.run {
                        // A run's pages are read concurrently, a round at a time.
                        Some(run) => {
                            let round_over = run.total.is_some_and(|t| run.next >= t);
                            // Its first page alone, to learn the total; each
                            // round starts when the last one is in.
                            if (run.total.is_none() || round_over) && k.run_in_flight > 0 {
                                continue;
                            }
                            let offset = if round_over { 0 } else { run.next };
                            run.next = offset.saturating_add(keyset_count.into());
                            k.run_in_flight += 1;
                            (offset, Some(run.second + 1))
                        }
                        None if k.in_flight => continue,
                        None => {
                            k.in_flight = true;
                            (k.offset, None)
                        }
                    };
                    return Some(PageRequest {
                        count: keyset_count,
                        before,
                        ..request(offset, since, true)
                    });
                }
            }
        }
        None
    }

    /// Records a page read for `request` that reported `total_items` and
    /// held `members`, in the order they came. Returns the verdict and, per
    /// member, whether it is new to the pass's sweep: only new members are
    /// sent, so a member read twice is pushed once.
    pub fn page_read(
        &mut self,
        request: PageRequest,
        total_items: u64,
        members: &[MemberKey],
    ) -> (PageVerdict, Vec<bool>) {
        if request.keyed {
            let read = self.keyset_page_read(request, total_items, members);
            if read.shifted {
                self.reopen_others(request.pass);
            }
            return (read.verdict, read.fresh);
        }
        let (verdict, fresh) = self.offset_page_read(request, total_items, members);
        if let PageVerdict::Resweep { why, .. } | PageVerdict::Keyset { why, .. } = &verdict {
            // A short page may be a change the total did not show yet.
            if matches!(why, Why::Changed | Why::Fault(PagingFault::Short { .. })) {
                self.reopen_others(request.pass);
            }
        }
        (verdict, fresh)
    }

    /// A member that left one pass's window may have entered another's
    /// (archived or unarchived, perhaps without a new `last_changed`), so
    /// passes already read are read again — once per sync: on a list that
    /// never stops changing, passes re-opening each other would never end.
    fn reopen_others(&mut self, pass: Pass) {
        for other in self
            .passes
            .iter_mut()
            .filter(|p| p.pass != pass && p.done && !p.reopened)
        {
            other.done = false;
            other.reopened = true;
            other.mode = Mode::Offset(OffsetSweep::new(other.start));
        }
    }

    fn offset_page_read(
        &mut self,
        request: PageRequest,
        total_items: u64,
        members: &[MemberKey],
    ) -> (PageVerdict, Vec<bool>) {
        let bounds = self.bounds;
        let count = u64::from(self.count);
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
            // Implied by the length of every page and no member read twice;
            // checked all the same, it costs nothing.
            let expected = total.saturating_sub(start);
            if o.returned == expected {
                p.done = true;
                return (PageVerdict::Continue, fresh);
            }
            o.fault = Some(PagingFault::Miscount {
                read: o.returned,
                total: expected,
            });
        }
        let why = match (o.changed, o.reordered, o.fault.take()) {
            (true, _, _) => Why::Changed,
            (false, true, _) => Why::Reordered,
            (false, false, fault) => Why::Fault(fault.expect("a sweep not trusted has a reason")),
        };
        p.sweep += 1;
        if p.sweep < OFFSET_SWEEPS {
            p.mode = Mode::Offset(OffsetSweep::new(start));
            return (
                PageVerdict::Resweep {
                    pass: p.pass,
                    sweep: p.sweep,
                    why,
                },
                fresh,
            );
        }
        p.mode = Mode::Keyset(KeysetSweep::new(self.keyset_count, start, total_items));
        (PageVerdict::Keyset { pass: p.pass, why }, fresh)
    }

    /// Records a keyset page (see [`Self::page_read`]).
    fn keyset_page_read(&mut self, request: PageRequest, total_items: u64, members: &[MemberKey]) -> KeysetRead {
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
            // The window's size now: every member in it was in it when the
            // walk began (it only shrinks), so every one of them was read.
            let fresh = vec![false; members.len()];
            let expected = total_items.saturating_sub(start);
            if k.distinct < expected {
                let fault = PagingFault::Miscount {
                    read: k.distinct,
                    total: expected,
                };
                return unstable(fault.to_string(), Some(fault));
            }
            p.done = true;
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
        let keyless = members.iter().filter(|m| m.id.is_empty()).count();
        k.distinct += (fresh.iter().filter(|f| **f).count() + keyless) as u64;
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

    pub fn is_complete(&self) -> bool {
        self.passes.iter().all(|p| p.done)
    }

    /// Members the current sweeps will read, once every pass knows its
    /// total; unknown while a pass goes one page at a time.
    pub fn expected_members(&self) -> Option<u64> {
        self.passes
            .iter()
            .map(|p| match &p.mode {
                Mode::Offset(o) => o.total.map(|t| t.saturating_sub(p.start)),
                Mode::Keyset(_) => None,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pass: Pass, offset: u64, count: u32) -> PageRequest {
        PageRequest {
            pass,
            offset,
            count,
            since: None,
            before: None,
            keyed: false,
            recount: false,
        }
    }

    /// Reads a page of `n` members at `r`'s offset: ids and seconds
    /// follow the offset, as in a list of one member per second.
    fn read_n(plan: &mut SweepPlan, r: PageRequest, total: u64, n: u64) -> PageVerdict {
        let members: Vec<MemberKey> = (r.offset..r.offset + n)
            .map(|i| key(i as i64, &format!("m{i}")))
            .collect();
        plan.page_read(r, total, &members).0
    }

    fn drain(plan: &mut SweepPlan) -> Vec<PageRequest> {
        std::iter::from_fn(|| plan.next_request()).collect()
    }

    #[test]
    fn first_pages_alone_then_every_offset_once() {
        let mut plan = SweepPlan::new(0, 100, &[(Pass::Members, 1), (Pass::Archived, 1)]);
        assert_eq!(
            drain(&mut plan),
            [req(Pass::Members, 0, 100), req(Pass::Archived, 0, 100)]
        );
        assert_eq!(
            read_n(&mut plan, req(Pass::Members, 0, 100), 450, 100),
            PageVerdict::Continue
        );
        let offsets: Vec<_> = drain(&mut plan).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [100, 200, 300, 400]);
        for (o, n) in [(100, 100), (300, 100), (400, 50), (200, 100)] {
            assert_eq!(
                read_n(&mut plan, req(Pass::Members, o, 100), 450, n),
                PageVerdict::Continue
            );
        }
        assert!(!plan.is_complete());
        assert_eq!(
            read_n(&mut plan, req(Pass::Archived, 0, 100), 3, 3),
            PageVerdict::Continue
        );
        assert!(plan.is_complete());
        assert_eq!(plan.expected_members(), Some(453));
        assert_eq!(plan.next_request(), None);
    }

    #[test]
    fn start_offset_is_where_paging_begins() {
        let mut plan = SweepPlan::new(250, 100, &[(Pass::Members, 1)]);
        assert_eq!(plan.next_request(), Some(req(Pass::Members, 250, 100)));
        read_n(&mut plan, req(Pass::Members, 250, 100), 420, 100);
        let offsets: Vec<_> = drain(&mut plan).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [350]);
        read_n(&mut plan, req(Pass::Members, 350, 100), 420, 70);
        assert!(plan.is_complete());
        assert_eq!(plan.expected_members(), Some(170));
    }

    #[test]
    fn empty_lists_and_offsets_past_the_end_finish_after_one_page() {
        let mut plan = SweepPlan::new(0, 100, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 100), 0, 0);
        assert!(plan.is_complete());
        let mut plan = SweepPlan::new(500, 100, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 500, 100), 20, 0);
        assert!(plan.is_complete());
    }

    #[test]
    fn blind_pages_are_read_before_the_total_is_known() {
        let mut plan = SweepPlan::new(0, 100, &[(Pass::Members, 2), (Pass::Archived, 1)]);
        assert_eq!(
            drain(&mut plan),
            [
                req(Pass::Members, 0, 100),
                req(Pass::Members, 100, 100),
                req(Pass::Archived, 0, 100)
            ]
        );
        // The second page answers first; the rest follows from its total.
        assert_eq!(
            read_n(&mut plan, req(Pass::Members, 100, 100), 250, 100),
            PageVerdict::Continue
        );
        assert_eq!(drain(&mut plan), [req(Pass::Members, 200, 100)]);
        read_n(&mut plan, req(Pass::Members, 0, 100), 250, 100);
        read_n(&mut plan, req(Pass::Members, 200, 100), 250, 50);
        // A blind page past the end is empty, and that is no change.
        assert_eq!(
            read_n(&mut plan, req(Pass::Archived, 0, 100), 7, 7),
            PageVerdict::Continue
        );
        assert!(plan.is_complete());

        let mut small = SweepPlan::new(0, 100, &[(Pass::Members, 2)]);
        drain(&mut small);
        assert_eq!(
            read_n(&mut small, req(Pass::Members, 0, 100), 40, 40),
            PageVerdict::Continue
        );
        assert_eq!(
            read_n(&mut small, req(Pass::Members, 100, 100), 40, 0),
            PageVerdict::Continue
        );
        assert!(small.is_complete());
    }

    #[test]
    fn a_changed_total_sweeps_the_pass_again() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 10), 25, 10);
        drain(&mut plan);
        // A member left the window: the later pages report one fewer.
        read_n(&mut plan, req(Pass::Members, 10, 10), 24, 10);
        assert_eq!(
            read_n(&mut plan, req(Pass::Members, 20, 10), 24, 4),
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Changed
            }
        );
        assert_eq!(drain(&mut plan), [req(Pass::Members, 0, 10)]);
        read_n(&mut plan, req(Pass::Members, 0, 10), 24, 10);
        assert_eq!(drain(&mut plan).len(), 2);
        read_n(&mut plan, req(Pass::Members, 10, 10), 24, 10);
        read_n(&mut plan, req(Pass::Members, 20, 10), 24, 4);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_change_in_one_pass_reads_the_other_again_if_it_was_done() {
        // A member archived mid-sweep leaves the members' window; the
        // archived pass, already read, may not have seen it arrive.
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1), (Pass::Archived, 1)]);
        drain(&mut plan);
        read_n(&mut plan, req(Pass::Archived, 0, 10), 3, 3);
        read_n(&mut plan, req(Pass::Members, 0, 10), 18, 10);
        assert_eq!(drain(&mut plan), [req(Pass::Members, 10, 10)]);
        assert!(matches!(
            read_n(&mut plan, req(Pass::Members, 10, 10), 17, 7),
            PageVerdict::Resweep { .. }
        ));
        assert_eq!(
            drain(&mut plan),
            [req(Pass::Members, 0, 10), req(Pass::Archived, 0, 10)]
        );
        read_n(&mut plan, req(Pass::Archived, 0, 10), 4, 4);
        read_n(&mut plan, req(Pass::Members, 0, 10), 17, 10);
        drain(&mut plan);
        read_n(&mut plan, req(Pass::Members, 10, 10), 17, 7);
        assert!(plan.is_complete());

        // Once per sync: a list that never stops changing must still end.
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1), (Pass::Archived, 1)]);
        drain(&mut plan);
        read_n(&mut plan, req(Pass::Archived, 0, 10), 3, 3);
        read_n(&mut plan, req(Pass::Members, 0, 10), 8, 7);
        assert_eq!(
            drain(&mut plan),
            [req(Pass::Members, 0, 10), req(Pass::Archived, 0, 10)]
        );
        read_n(&mut plan, req(Pass::Archived, 0, 10), 4, 4);
        read_n(&mut plan, req(Pass::Members, 0, 10), 6, 5);
        assert_eq!(drain(&mut plan).len(), 1, "the keyset sweep of the members alone");
    }

    #[test]
    fn a_shift_under_a_keyset_walk_reads_the_other_pass_again() {
        let mut plan = SweepPlan::new(0, 2, &[(Pass::Members, 1), (Pass::Archived, 1)]);
        let mut keyset = KeysetSweep::new(2, 0, 1000);
        keyset.anchor = Some(5);
        keyset.run = Some(RunCover {
            second: 5,
            total: Some(5),
            next: 2,
            ..RunCover::default()
        });
        plan.passes[0].mode = Mode::Keyset(keyset);
        plan.passes[1].done = true;
        let run = drain(&mut plan)[0];
        assert_eq!((run.since, run.before, run.offset), (Some(4), Some(6), 2));
        plan.page_read(run, 4, &[key(5, "c"), key(5, "d")]);
        assert!(drain(&mut plan).contains(&req(Pass::Archived, 0, 2)));
    }

    #[test]
    fn a_short_page_is_read_again_and_said_to_be_a_fault_unless_the_total_moved() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 10), 15, 10);
        drain(&mut plan);
        assert_eq!(
            read_n(&mut plan, req(Pass::Members, 10, 10), 15, 4),
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Fault(PagingFault::Short {
                    offset: 10,
                    returned: 4,
                    expected: 5,
                    asked: 1
                })
            }
        );
        // With the total moved, a short page is what the change explains.
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 10), 15, 10);
        drain(&mut plan);
        assert!(matches!(
            read_n(&mut plan, req(Pass::Members, 10, 10), 14, 3),
            PageVerdict::Resweep { why: Why::Changed, .. }
        ));
    }

    /// A last page that would end exactly at `total_items` is followed by
    /// one more, which must come back empty: otherwise the total
    /// understated the window and members past it were never asked for.
    #[test]
    fn a_window_ending_at_a_page_edge_is_checked_one_page_further() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 10), 20, 10);
        assert_eq!(
            drain(&mut plan),
            [req(Pass::Members, 10, 10), req(Pass::Members, 20, 10)]
        );
        read_n(&mut plan, req(Pass::Members, 10, 10), 20, 10);
        assert!(!plan.is_complete(), "the page past the end is still out");
        read_n(&mut plan, req(Pass::Members, 20, 10), 20, 0);
        assert!(plan.is_complete());

        // Members past what total_items said: the sweep is not trusted.
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        read_n(&mut plan, req(Pass::Members, 0, 10), 20, 10);
        drain(&mut plan);
        read_n(&mut plan, req(Pass::Members, 10, 10), 20, 10);
        assert_eq!(
            read_n(&mut plan, req(Pass::Members, 20, 10), 20, 3),
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Fault(PagingFault::Overfull {
                    offset: 20,
                    returned: 3,
                    expected: 0
                })
            }
        );
    }

    #[test]
    fn a_window_that_keeps_changing_falls_back_to_a_keyset_sweep() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        let mut verdicts = vec![];
        for sweep in 0..OFFSET_SWEEPS as u64 {
            plan.next_request();
            read_n(&mut plan, req(Pass::Members, 0, 10), 15 - sweep, 10);
            drain(&mut plan);
            verdicts.push(read_n(&mut plan, req(Pass::Members, 10, 10), 14 - sweep, 4 - sweep));
        }
        assert_eq!(
            verdicts,
            [
                PageVerdict::Resweep {
                    pass: Pass::Members,
                    sweep: 1,
                    why: Why::Changed
                },
                PageVerdict::Keyset {
                    pass: Pass::Members,
                    why: Why::Changed
                }
            ]
        );
        // One keyed page at a time, from the window's start.
        let first = PageRequest {
            pass: Pass::Members,
            offset: 0,
            count: KEYSET_COUNT,
            since: None,
            before: None,
            keyed: true,
            recount: false,
        };
        assert_eq!(drain(&mut plan), [first]);
    }

    fn key(changed: i64, id: &str) -> MemberKey {
        MemberKey {
            last_changed: Some(changed),
            id: id.into(),
            archived: None,
        }
    }

    fn keyset_plan(count: u32) -> SweepPlan {
        let mut plan = SweepPlan::new(0, count, &[(Pass::Members, 1)]);
        plan.passes[0].mode = Mode::Keyset(KeysetSweep::new(count, 0, 1000));
        plan
    }

    /// Answers the request that counts the window at the end of a keyset
    /// walk: it holds `total` members now.
    fn recount(plan: &mut SweepPlan, total: u64) -> PageVerdict {
        let r = plan.next_request().expect("the window is counted");
        assert!(r.recount && r.keyed && r.count == 1, "{r:?}");
        assert_eq!((r.since, r.before), (None, None));
        plan.page_read(r, total, &[]).0
    }

    #[test]
    fn a_keyset_sweep_continues_from_a_second_before_the_last_change() {
        let mut plan = keyset_plan(3);
        let r = drain(&mut plan);
        assert_eq!((r.len(), r[0].since, r[0].offset), (1, None, 0));
        let (v, fresh) = plan.page_read(r[0], 9, &[key(10, "a"), key(11, "b"), key(12, "c")]);
        assert_eq!((v, fresh), (PageVerdict::Continue, vec![true, true, true]));
        let r = drain(&mut plan);
        assert_eq!((r[0].since, r[0].offset), (Some(11), 0));
        // The answer repeats b and c (since is inclusive here); only d is new.
        let (_, fresh) = plan.page_read(r[0], 7, &[key(11, "b"), key(12, "c"), key(13, "d")]);
        assert_eq!(fresh, [false, false, true]);
        let r = drain(&mut plan);
        assert_eq!(r[0].since, Some(12));
        let (_, fresh) = plan.page_read(r[0], 2, &[key(13, "d"), key(14, "e")]);
        assert_eq!(fresh, [false, true]);
        assert!(!plan.is_complete(), "the window is counted first");
        assert_eq!(recount(&mut plan, 5), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    /// Reads `page` for the next request, which must be for `since`,
    /// `before` and `offset`; returns which members were new.
    fn expect_read(
        plan: &mut SweepPlan,
        (since, before, offset): (Option<i64>, Option<i64>, u64),
        total: u64,
        page: &[MemberKey],
    ) -> Vec<bool> {
        let r = plan.next_request().expect("a request");
        assert_eq!((r.since, r.before, r.offset), (since, before, offset));
        if before.is_none() {
            assert_eq!(plan.next_request(), None, "one page of the walk at a time");
        }
        let (verdict, fresh) = plan.page_read(r, total, page);
        assert_eq!(verdict, PageVerdict::Continue);
        fresh
    }

    #[test]
    fn a_run_of_ties_longer_than_a_page_is_read_with_its_own_query() {
        // a b c d changed in second 5, e in 6, f in 7; `since` inclusive.
        let mut plan = keyset_plan(2);
        expect_read(&mut plan, (None, None, 0), 6, &[key(5, "a"), key(5, "b")]);
        let fresh = expect_read(&mut plan, (Some(4), None, 0), 6, &[key(5, "a"), key(5, "b")]);
        assert_eq!(fresh, [false, false], "no progress: a run longer than a page");
        // The run's own query, bounded to second 5, page by page.
        expect_read(&mut plan, (Some(4), Some(6), 0), 4, &[key(5, "a"), key(5, "b")]);
        let fresh = expect_read(&mut plan, (Some(4), Some(6), 2), 4, &[key(5, "c"), key(5, "d")]);
        assert_eq!(fresh, [true, true]);
        // 4 of 4 seen: the walk goes on one member before the run's end.
        let fresh = expect_read(&mut plan, (Some(4), None, 3), 6, &[key(5, "d"), key(6, "e")]);
        assert_eq!(fresh, [false, true]);
        expect_read(&mut plan, (Some(5), None, 0), 2, &[key(6, "e"), key(7, "f")]);
        expect_read(&mut plan, (Some(6), None, 0), 1, &[key(7, "f")]);
        assert_eq!(recount(&mut plan, 6), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_run_in_a_new_order_on_every_request_is_read_until_every_member_was_seen() {
        let mut plan = keyset_plan(2);
        expect_read(&mut plan, (None, None, 0), 5, &[key(5, "a"), key(5, "b")]);
        expect_read(&mut plan, (Some(4), None, 0), 5, &[key(5, "b"), key(5, "a")]);
        expect_read(&mut plan, (Some(4), Some(6), 0), 4, &[key(5, "a"), key(5, "b")]);
        expect_read(&mut plan, (Some(4), Some(6), 2), 4, &[key(5, "a"), key(5, "c")]);
        // Three of four seen: round again.
        expect_read(&mut plan, (Some(4), Some(6), 0), 4, &[key(5, "c"), key(5, "b")]);
        // d left the window. Any id read before might be the one that left,
        // so the count starts over: a alone, then b and c.
        expect_read(&mut plan, (Some(4), Some(6), 2), 3, &[key(5, "a")]);
        expect_read(&mut plan, (Some(4), Some(6), 0), 3, &[key(5, "b"), key(5, "c")]);
        // a, b and c: the run is covered; the walk resumes at offset 2.
        let fresh = expect_read(&mut plan, (Some(4), None, 2), 4, &[key(5, "b"), key(9, "z")]);
        assert_eq!(fresh, [false, true]);
        expect_read(&mut plan, (Some(8), None, 0), 1, &[key(9, "z")]);
        assert_eq!(recount(&mut plan, 4), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    /// `n` members changed in `second`, named `{prefix}0`, `{prefix}1`…
    fn run_of(second: i64, prefix: &str, n: usize) -> Vec<MemberKey> {
        (0..n).map(|i| key(second, &format!("{prefix}{i}"))).collect()
    }

    /// A page of the members of `keys` at `at`, in that order.
    fn pick(keys: &[MemberKey], at: &[usize]) -> Vec<MemberKey> {
        at.iter().map(|&i| keys[i].clone()).collect()
    }

    #[test]
    fn a_runs_pages_are_read_concurrently_a_round_at_a_time() {
        let mut plan = keyset_plan(2);
        let run = run_of(5, "m", 6);
        let page = |at: [usize; 2]| pick(&run, &at);
        expect_read(&mut plan, (None, None, 0), 7, &page([0, 1]));
        expect_read(&mut plan, (Some(4), None, 0), 7, &page([0, 1]));
        // The run's first page alone, for its total; then the rest at once.
        expect_read(&mut plan, (Some(4), Some(6), 0), 6, &page([0, 1]));
        let offsets = |round: &[PageRequest]| round.iter().map(|r| r.offset).collect::<Vec<_>>();
        let round = drain(&mut plan);
        assert_eq!(offsets(&round), [2, 4]);
        plan.page_read(round[1], 6, &page([0, 2]));
        assert_eq!(drain(&mut plan), [], "the next round waits for this one");
        plan.page_read(round[0], 6, &page([2, 3]));
        // m5 not seen yet: round again.
        let round = drain(&mut plan);
        assert_eq!(offsets(&round), [0, 2, 4]);
        plan.page_read(round[1], 6, &page([5, 4]));
        // Covered: the walk resumes while the rest of the round is out, and
        // those pages only bring their members.
        let resume = plan.next_request().expect("the walk goes on");
        assert_eq!((resume.since, resume.before, resume.offset), (Some(4), None, 5));
        let (verdict, fresh) = plan.page_read(round[0], 6, &page([1, 0]));
        assert_eq!((verdict, fresh), (PageVerdict::Continue, vec![false, false]));
        plan.page_read(round[2], 6, &page([3, 2]));
        let (_, fresh) = plan.page_read(resume, 7, &[run[5].clone(), key(9, "z")]);
        assert_eq!(fresh, [false, true]);
        expect_read(&mut plan, (Some(8), None, 0), 1, &[key(9, "z")]);
        assert_eq!(recount(&mut plan, 7), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_late_page_of_one_run_does_not_count_for_the_next() {
        // m0..m3 changed in second 5, n0..n3 in 7, z in 9.
        let mut plan = keyset_plan(2);
        let (m, n) = (run_of(5, "m", 4), run_of(7, "n", 4));
        let two = |keys: &[MemberKey], a: usize, b: usize| pick(keys, &[a, b]);
        expect_read(&mut plan, (None, None, 0), 9, &two(&m, 0, 1));
        expect_read(&mut plan, (Some(4), None, 0), 9, &two(&m, 0, 1));
        expect_read(&mut plan, (Some(4), Some(6), 0), 4, &two(&m, 0, 1));
        expect_read(&mut plan, (Some(4), Some(6), 2), 4, &two(&m, 0, 2));
        let round = drain(&mut plan);
        plan.page_read(round[0], 4, &two(&m, 3, 1));
        // The run at 5 is covered with its page at offset 2 still out.
        expect_read(&mut plan, (Some(4), None, 3), 9, &[m[2].clone(), n[0].clone()]);
        expect_read(&mut plan, (Some(6), None, 0), 5, &two(&n, 0, 1));
        assert_eq!(drain(&mut plan), [], "the run at 7 waits for the late page");
        // Its members are sent again (the walk forgot them when it moved
        // on); it says nothing about the run at 7, whose pages are all read.
        let (verdict, _) = plan.page_read(round[1], 4, &two(&m, 1, 0));
        assert_eq!(verdict, PageVerdict::Continue);
        expect_read(&mut plan, (Some(6), Some(8), 0), 4, &two(&n, 0, 1));
        let fresh = expect_read(&mut plan, (Some(6), Some(8), 2), 4, &two(&n, 2, 3));
        assert_eq!(fresh, [true, true]);
        expect_read(&mut plan, (Some(6), None, 3), 5, &[n[3].clone(), key(9, "z")]);
        expect_read(&mut plan, (Some(8), None, 0), 1, &[key(9, "z")]);
        assert_eq!(recount(&mut plan, 9), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_walk_resumed_past_the_run_steps_back() {
        // a b c d in second 5, e f g in 6; count 4 steps back one member.
        let mut plan = keyset_plan(4);
        let run = [key(5, "a"), key(5, "b"), key(5, "c"), key(5, "d")];
        expect_read(&mut plan, (None, None, 0), 7, &run);
        expect_read(&mut plan, (Some(4), None, 0), 7, &run);
        expect_read(&mut plan, (Some(4), Some(6), 0), 4, &run);
        // b and c left after the run was covered: offset 3 is now past e.
        let r = drain(&mut plan)[0];
        assert_eq!((r.before, r.offset), (None, 3));
        let read = plan.keyset_page_read(r, 5, &[key(6, "f"), key(6, "g")]);
        assert_eq!((read.fresh, read.shifted), (vec![true, true], true));
        // One back, still past the run; then two more back.
        let fresh = expect_read(
            &mut plan,
            (Some(4), None, 2),
            5,
            &[key(6, "e"), key(6, "f"), key(6, "g")],
        );
        assert_eq!(fresh, [true, false, false]);
        assert!(
            !plan.is_complete(),
            "e was found, but the page did not start in the run"
        );
        expect_read(
            &mut plan,
            (Some(4), None, 0),
            5,
            &[key(5, "a"), key(5, "d"), key(6, "e"), key(6, "f")],
        );
        expect_read(
            &mut plan,
            (Some(5), None, 0),
            3,
            &[key(6, "e"), key(6, "f"), key(6, "g")],
        );
        assert_eq!(recount(&mut plan, 5), PageVerdict::Continue);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_keyset_sweep_without_timestamps_or_without_end_gives_up() {
        let mut plan = keyset_plan(2);
        let r = drain(&mut plan)[0];
        let (v, _) = plan.page_read(
            r,
            5,
            &[
                MemberKey {
                    last_changed: None,
                    id: "a".into(),
                    archived: None,
                },
                key(1, "b"),
            ],
        );
        assert!(matches!(v, PageVerdict::Unstable { .. }));
        // An API that does not sort: a walk by last_changed would skip b.
        let mut plan = keyset_plan(3);
        let r = drain(&mut plan)[0];
        let (v, _) = plan.page_read(r, 5, &[key(5, "a"), key(3, "b"), key(6, "c")]);
        assert!(
            matches!(&v, PageVerdict::Unstable { reason, .. } if reason.contains("out of last_changed order")),
            "{v:?}"
        );
        let mut plan = keyset_plan(1);
        if let Mode::Keyset(k) = &mut plan.passes[0].mode {
            k.page_limit = 3;
        }
        let mut last = PageVerdict::Continue;
        for i in 0..4 {
            let r = drain(&mut plan)[0];
            last = plan.page_read(r, 100, &[key(i, &i.to_string())]).0;
        }
        assert!(matches!(last, PageVerdict::Unstable { .. }), "{last:?}");
        // A run whose pages never show all of its members.
        let mut plan = keyset_plan(2);
        let run = [key(5, "a"), key(5, "b")];
        expect_read(&mut plan, (None, None, 0), 9, &run);
        expect_read(&mut plan, (Some(4), None, 0), 9, &run);
        let mut pages = 0;
        let last = 'read: loop {
            for r in drain(&mut plan) {
                assert_eq!(r.before, Some(6));
                pages += 1;
                match plan.page_read(r, 4, &run).0 {
                    PageVerdict::Continue => {}
                    v => break 'read v,
                }
            }
        };
        assert!(matches!(last, PageVerdict::Unstable { .. }), "{last:?}");
        assert_eq!(pages, RUN_ROUNDS * 3 + 1);
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
        let edges = PageEdges::of(&run_of(7, "m", 3));
        assert!(edges.whole && edges.lead.len() == 3 && edges.trail.is_empty());
        let edges = PageEdges::of(&keys(&[(0, "m0"), (1, "m1")]));
        assert_eq!((edges.lead.len(), edges.trail.len()), (1, 1));
        assert_eq!(PageEdges::of(&[]), PageEdges::default());
    }

    /// Members with these seconds and ids.
    fn keys(page: &[(i64, &str)]) -> Vec<MemberKey> {
        page.iter().map(|(c, id)| key(*c, id)).collect()
    }

    #[test]
    fn a_member_read_twice_within_a_run_of_ties_sweeps_the_pass_again() {
        // Ties at second 5 span three pages; the third repeats "b" (and so
        // missed someone) although total_items never changed.
        let pages = [[(4, "a"), (5, "b")], [(5, "c"), (5, "d")], [(5, "b"), (6, "f")]];
        let mut plan = SweepPlan::new(0, 2, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 0, 2), 6, &keys(&pages[0]));
        let rest = drain(&mut plan);
        assert_eq!(rest.len(), 3, "two pages, and one past the end");
        assert_eq!(plan.page_read(rest[2], 6, &[]).0, PageVerdict::Continue);
        // Answers in any order: the edges are folded in offset order.
        assert_eq!(plan.page_read(rest[1], 6, &keys(&pages[2])).0, PageVerdict::Continue);
        assert_eq!(
            plan.page_read(rest[0], 6, &keys(&pages[1])).0,
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Reordered
            }
        );
        // The same ties in one order throughout are a clean sweep.
        let mut plan = SweepPlan::new(0, 2, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 0, 2), 6, &keys(&pages[0]));
        let rest = drain(&mut plan);
        plan.page_read(rest[2], 6, &[]);
        plan.page_read(rest[1], 6, &keys(&[(5, "e"), (6, "f")]));
        plan.page_read(rest[0], 6, &keys(&pages[1]));
        assert!(plan.is_complete());
    }

    /// Whether a member changed in second `c` is in `r`'s window, for a
    /// Mailchimp whose `since` and `before` bounds are inclusive or not.
    fn in_query(c: i64, r: &PageRequest, (since_inclusive, before_inclusive): (bool, bool)) -> bool {
        let after = r.since.is_none_or(|s| c > s || (since_inclusive && c == s));
        let before = r.before.is_none_or(|b| c < b || (before_inclusive && c == b));
        after && before
    }

    /// The page `r` asks for out of `window`, and the window's size.
    fn page_of(window: &[&(i64, String)], r: &PageRequest) -> (Vec<MemberKey>, u64) {
        let page = window
            .iter()
            .skip(r.offset as usize)
            .take(r.count as usize)
            .map(|(c, id)| key(*c, id))
            .collect();
        (page, window.len() as u64)
    }

    /// Drives `plan` to its end, answering its requests in random order
    /// with `answer` (the page for a request, and the window's size then).
    /// Returns the ids read — of keyed pages, those the plan found new —
    /// and why the plan gave up, if it did.
    fn drive(
        plan: &mut SweepPlan,
        seed: u64,
        rng: &mut fastrand::Rng,
        mut answer: impl FnMut(&PageRequest, &mut fastrand::Rng) -> (Vec<MemberKey>, u64),
    ) -> (HashSet<String>, Option<String>) {
        let mut read = HashSet::new();
        let mut queue: Vec<PageRequest> = vec![];
        let mut steps = 0;
        while !plan.is_complete() {
            queue.extend(std::iter::from_fn(|| plan.next_request()));
            assert!(!queue.is_empty(), "seed {seed}: stuck");
            steps += 1;
            assert!(steps < 10_000, "seed {seed}: does not end");
            let r = queue.remove(rng.usize(0..queue.len()));
            let (page, total) = answer(&r, rng);
            let (verdict, fresh) = plan.page_read(r, total, &page);
            read.extend(page.iter().zip(fresh).filter(|(_, f)| *f).map(|(m, _)| m.id.clone()));
            match verdict {
                // Nothing of that pass is out then; the other pass goes on.
                PageVerdict::Resweep { pass, .. } | PageVerdict::Keyset { pass, .. } => {
                    queue.retain(|q| q.pass != pass)
                }
                PageVerdict::Unstable { reason, .. } => return (read, Some(reason)),
                PageVerdict::Continue => {}
            }
        }
        (read, None)
    }

    /// Mailchimp ordering ties differently on every request (as SQL may),
    /// with keyset pages as small as two members so that runs of ties are
    /// longer than a page: every member is read.
    #[test]
    fn ties_in_a_new_order_on_every_request_never_lose_a_member() {
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let count = rng.u32(1..6);
            let bounds = (rng.bool(), rng.bool());
            let mut t = 0;
            let list: Vec<(i64, String)> = (0..rng.usize(0..60))
                .map(|i| {
                    t += i64::from(rng.u8(0..3) == 0);
                    (t, format!("m{i}"))
                })
                .collect();
            let mut plan = SweepPlan::new(0, count, &[(Pass::Members, 1 + (seed % 3) as u32)]);
            if seed % 2 == 0 {
                plan.keyset_count = count.max(2);
            }
            let (read, failed) = drive(&mut plan, seed, &mut rng, |r, rng| {
                let mut window: Vec<&(i64, String)> = list.iter().filter(|(c, _)| in_query(*c, r, bounds)).collect();
                rng.shuffle(&mut window);
                window.sort_by_key(|(c, _)| *c);
                page_of(&window, r)
            });
            assert_eq!(failed, None, "seed {seed}: gave up");
            for (_, id) in &list {
                assert!(read.contains(id), "seed {seed}: {id} lost");
            }
        }
    }

    /// A model of Mailchimp: members sorted by last_changed (ties by id, or
    /// in a new order on every request), bounds that are inclusive or
    /// exclusive, and members leaving the window (several at once) between
    /// any two pages. Whatever happens, no member that stays is lost: the
    /// sweep reads every one, or (only with shuffled ties) gives up.
    #[test]
    fn no_member_that_stays_is_lost_whatever_leaves_meanwhile() {
        let mut gave_up = 0;
        for seed in 0..300u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let bounds = (rng.bool(), rng.bool());
            let shuffled = seed % 3 == 0;
            let count = rng.u32(1..6);
            // Runs of ties of one to about eight members on average.
            let spread = rng.u8(1..9);
            let mut t = 0;
            let mut list: Vec<(i64, String)> = (0..rng.usize(0..60))
                .map(|i| {
                    t += i64::from(rng.u8(0..spread) == 0);
                    (t, format!("m{i}"))
                })
                .collect();
            let start = list.clone();
            let mut removed = HashSet::new();
            let mut plan = SweepPlan::new(0, count, &[(Pass::Members, 1 + (seed % 3) as u32)]);
            if seed % 2 == 0 {
                plan.keyset_count = count.max(2);
            }
            let (read, failed) = drive(&mut plan, seed, &mut rng, |r, rng| {
                // Now and then one to three members leave at once, often
                // from before the page asked for, where leaving moves it.
                let leaving = if rng.u8(0..4) == 0 { rng.usize(1..4) } else { 0 };
                for _ in 0..leaving {
                    let ahead: Vec<usize> = (0..list.len())
                        .filter(|&i| in_query(list[i].0, r, bounds))
                        .take(r.offset as usize)
                        .collect();
                    let at = match ahead.len() {
                        0 if list.is_empty() => break,
                        n if n > 0 && rng.bool() => ahead[rng.usize(0..n)],
                        _ => rng.usize(0..list.len()),
                    };
                    removed.insert(list.remove(at).1);
                }
                let mut window: Vec<&(i64, String)> = list.iter().filter(|(c, _)| in_query(*c, r, bounds)).collect();
                if shuffled {
                    rng.shuffle(&mut window);
                    window.sort_by_key(|(c, _)| *c);
                }
                page_of(&window, r)
            });
            if let Some(reason) = failed {
                // Ties in a new order on every request while members keep
                // leaving may never be read in full: that sync fails (loudly).
                assert!(shuffled, "seed {seed}: gave up: {reason}");
                gave_up += 1;
                continue;
            }
            for (_, id) in start.iter().filter(|(_, id)| !removed.contains(id)) {
                assert!(
                    read.contains(id),
                    "seed {seed}: {id} lost (bounds inclusive: {bounds:?})"
                );
            }
        }
        assert!(gave_up < 10, "{gave_up} of 100 shuffled lists never read in full");
    }

    /// The failing input of issue 14: a proxy drops `offset`, so every page
    /// holds the first members again while `total_items` says there are
    /// more. Once that shows, the sweep is not trusted: no more of its
    /// pages are asked for or sent, and it is read again.
    #[test]
    fn members_read_again_at_another_offset_are_not_new_and_the_sweep_is_not_trusted() {
        let mut plan = SweepPlan::new(0, 3, &[(Pass::Members, 2)]);
        let same = keys(&[(1, "u1"), (2, "u2"), (3, "u3")]);
        let blind = drain(&mut plan);
        assert_eq!(blind.len(), 2, "offsets 0 and 3, before the total is known");
        assert_eq!(
            plan.page_read(blind[0], 30, &same),
            (PageVerdict::Continue, vec![true; 3])
        );
        let rest = drain(&mut plan);
        assert_eq!(rest.len(), 9, "offsets 6 to 27, and 30 past the end");
        assert_eq!(
            plan.page_read(blind[1], 30, &same),
            (PageVerdict::Continue, vec![false; 3])
        );
        assert_eq!(plan.next_request(), None, "nothing more of a sweep read again");
        for r in &rest[1..] {
            assert_eq!(plan.page_read(*r, 30, &same), (PageVerdict::Continue, vec![false; 3]));
        }
        let (verdict, fresh) = plan.page_read(rest[0], 30, &same);
        assert_eq!(fresh, [false; 3]);
        assert_eq!(
            verdict,
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Fault(PagingFault::Repeated { id: "u1".into() })
            }
        );
    }

    #[test]
    fn a_member_outside_the_window_asked_for_is_a_fault() {
        let bounds = Bounds {
            since: Some(10),
            before: Some(20),
        };
        let mut plan = SweepPlan::new(0, 5, &[(Pass::Members, 1)]).within(bounds);
        let r = plan.next_request().unwrap();
        let (verdict, _) = plan.page_read(r, 2, &keys(&[(9, "a"), (12, "b")]));
        assert_eq!(
            verdict,
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1,
                why: Why::Fault(PagingFault::OutsideWindow { offset: 0, second: 9 })
            }
        );
    }

    #[test]
    fn a_keyset_page_shorter_than_its_total_is_asked_again_with_the_count_that_came() {
        let mut plan = keyset_plan(10);
        let page = keys(&[(1, "a"), (2, "b"), (3, "c")]);
        let r = plan.next_request().unwrap();
        assert_eq!((r.offset, r.count), (0, 10));
        // Three of the seven total_items says are there: something caps pages.
        assert_eq!(plan.page_read(r, 7, &page), (PageVerdict::Continue, vec![true; 3]));
        let again = plan.next_request().unwrap();
        assert_eq!((again.since, again.offset, again.count), (None, 0, 3));
        plan.page_read(again, 7, &page);
        let next = plan.next_request().unwrap();
        assert_eq!((next.since, next.offset, next.count), (Some(2), 0, 3));
        plan.page_read(next, 5, &keys(&[(3, "c"), (4, "d"), (5, "e")]));
        expect_read(&mut plan, (Some(4), None, 0), 3, &keys(&[(5, "e"), (6, "f"), (7, "g")]));
        expect_read(&mut plan, (Some(6), None, 0), 2, &keys(&[(7, "g"), (8, "h")]));
        assert_eq!(recount(&mut plan, 8), PageVerdict::Continue);
        assert!(plan.is_complete());

        // A page that stays short fails the pass after a few asks.
        let mut plan = keyset_plan(10);
        let mut last = PageVerdict::Continue;
        for _ in 0..=KEYSET_REREADS {
            let r = plan.next_request().unwrap();
            last = plan.page_read(r, 7, &[]).0;
        }
        assert!(
            matches!(
                &last,
                PageVerdict::Unstable {
                    fault: Some(PagingFault::Short { expected: 7, .. }),
                    ..
                }
            ),
            "{last:?}"
        );
    }

    #[test]
    fn a_keyset_walk_that_read_fewer_members_than_the_window_holds_fails() {
        let mut plan = keyset_plan(10);
        expect_read(&mut plan, (None, None, 0), 3, &keys(&[(1, "a"), (2, "b"), (3, "c")]));
        let verdict = recount(&mut plan, 5);
        assert!(
            matches!(&verdict, PageVerdict::Unstable { fault: Some(PagingFault::Miscount { read: 3, total: 5 }), reason, .. }
                if reason.contains("3 distinct members where Mailchimp's total_items says 5")),
            "{verdict:?}"
        );
        assert!(!plan.is_complete());
    }

    /// Ways a server (or a proxy in front of it) breaks the paging contract.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Broken {
        /// Every page starts at the window's first member.
        IgnoresOffset,
        /// Pages start this many members early.
        Overlaps(usize),
        /// Pages start one member late.
        SkipsAtEdges,
        /// Pages end one member early.
        DropsLast,
        /// Pages hold at most this many members.
        CapsCount(usize),
        /// Pages hold Mailchimp's default of 10 whatever `count` says.
        IgnoresCount,
        /// Members in a new random order on every request.
        IgnoresSort,
        /// Members by id, not by last_changed, in the same order every time.
        SortsById,
        /// `since_last_changed` is not applied.
        IgnoresSince,
        /// `before_last_changed` is not applied.
        IgnoresBefore,
        /// `total_items` says this many more (or fewer) than the window holds.
        MiscountsBy(i64),
        /// `total_items` grows by one with every answer.
        TotalGrows,
        /// `total_items` counts the whole list, whatever the window asked.
        TotalOfTheList,
        /// `status=archived` is not applied: the archived pass gets everyone.
        IgnoresStatus,
    }

    /// Whatever a server does wrong, a sweep never ends as complete with
    /// a member of the window unread: it reads every one, or gives up.
    /// Where the fault leaves a way through (offset or count dropped,
    /// overlapping pages, a total too low), the keyset sweep finds it.
    #[test]
    fn a_server_that_breaks_paging_never_passes_for_a_complete_read() {
        let kinds = [
            Broken::IgnoresOffset,
            Broken::Overlaps(1),
            Broken::Overlaps(3),
            Broken::SkipsAtEdges,
            Broken::DropsLast,
            Broken::CapsCount(3),
            Broken::IgnoresCount,
            Broken::IgnoresSort,
            Broken::SortsById,
            Broken::IgnoresSince,
            Broken::IgnoresBefore,
            Broken::MiscountsBy(5),
            Broken::MiscountsBy(-5),
            Broken::TotalGrows,
            Broken::TotalOfTheList,
            Broken::IgnoresStatus,
        ];
        for broken in kinds {
            let (mut completed, mut gave_up, mut requests) = (0, 0, 0);
            for seed in 0..200u64 {
                let mut rng = fastrand::Rng::with_seed(seed);
                let count = rng.u32(2..12);
                let spread = rng.u8(1..4);
                let mut t = 100;
                // The window is [since, before]: members outside it exist too.
                let list: Vec<(i64, String)> = (0..rng.usize(30..120))
                    .map(|i| {
                        t += i64::from(rng.u8(0..spread) == 0);
                        (t, format!("m{i}"))
                    })
                    .collect();
                let (since, before) = (list[5].0, list[list.len() - 6].0);
                let in_window: Vec<&String> = list
                    .iter()
                    .filter(|(c, _)| (since..=before).contains(c))
                    .map(|(_, id)| id)
                    .collect();
                let sync = seed % 2 == 0;
                let bounds = Bounds {
                    since: sync.then_some(since),
                    before: Some(before),
                };
                // Every fifth member is archived; the archived pass is read too.
                let archived = |id: &str| id[1..].parse::<u32>().unwrap() % 5 == 0;
                let mut plan = SweepPlan::new(0, count, &[(Pass::Members, 1 + (seed % 3) as u32), (Pass::Archived, 1)])
                    .within(bounds);
                let mut answers = 0;
                let (read, failed) = drive(&mut plan, seed, &mut rng, |r, rng| {
                    answers += 1;
                    let since = if broken == Broken::IgnoresSince {
                        None
                    } else {
                        r.since.or(bounds.since)
                    };
                    let before = match (broken, r.before) {
                        (Broken::IgnoresBefore, _) => None,
                        (_, Some(b)) => Some(b.min(before + 1)),
                        (_, None) => Some(before + 1),
                    };
                    let pass_of = |id: &str| {
                        broken == Broken::IgnoresStatus && r.pass == Pass::Archived
                            || archived(id) == (r.pass == Pass::Archived)
                    };
                    let mut window: Vec<&(i64, String)> = list
                        .iter()
                        .filter(|(c, id)| pass_of(id) && since.is_none_or(|s| *c >= s) && before.is_none_or(|b| *c < b))
                        .collect();
                    let whole = list.iter().filter(|(_, id)| pass_of(id)).count() as i64;
                    match broken {
                        Broken::IgnoresSort => rng.shuffle(&mut window),
                        Broken::SortsById => window.sort_by_key(|(_, id)| id[1..].parse::<u32>().unwrap() % 7),
                        _ => {}
                    }
                    let total = window.len() as i64;
                    let (offset, count) = (r.offset as usize, r.count as usize);
                    let (skip, take) = match broken {
                        Broken::IgnoresOffset => (0, count),
                        Broken::Overlaps(k) => (offset.saturating_sub(k), count),
                        Broken::SkipsAtEdges => (offset + 1, count),
                        Broken::DropsLast => (offset, count - 1),
                        Broken::CapsCount(cap) => (offset, count.min(cap)),
                        Broken::IgnoresCount => (offset, 10),
                        _ => (offset, count),
                    };
                    let page = window
                        .iter()
                        .skip(skip)
                        .take(take)
                        .map(|(c, id)| MemberKey {
                            archived: Some(archived(id)),
                            ..key(*c, id)
                        })
                        .collect();
                    let reported = match broken {
                        Broken::MiscountsBy(d) => (total + d).max(0),
                        Broken::TotalGrows => total + answers,
                        Broken::TotalOfTheList => whole,
                        _ => total,
                    };
                    (page, reported as u64)
                });
                // Whatever the server says, a pass ends after a number of
                // requests bounded by the members it holds.
                requests = requests.max(answers);
                assert!(
                    answers < 60 * list.len() as i64 + 200,
                    "{broken:?}, seed {seed}: {answers} requests for {} members",
                    list.len()
                );
                match failed {
                    Some(_) => gave_up += 1,
                    None => {
                        completed += 1;
                        for id in &in_window {
                            assert!(read.contains(*id), "{broken:?}, seed {seed}: {id} unread, yet complete");
                        }
                    }
                }
            }
            eprintln!("{broken:?}: {completed} read in full, {gave_up} gave up, {requests} requests at most");
            if matches!(
                broken,
                Broken::IgnoresOffset
                    | Broken::Overlaps(_)
                    | Broken::CapsCount(_)
                    | Broken::IgnoresCount
                    | Broken::MiscountsBy(-5)
            ) {
                assert!(completed > 100, "{broken:?}: only {completed} of 200 recovered");
            }
        }
    }
}
