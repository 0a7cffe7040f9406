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

/// Sweeps of one pass before the sync gives up and fails (cursor kept).
pub const MAX_SWEEPS: u32 = 4;

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
            Pass::Archived => "archived",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub pass: Pass,
    pub offset: u64,
    pub count: u32,
}

/// What the plan makes of a page just read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageVerdict {
    Continue,
    /// The window changed during this pass's sweep: it starts over.
    Resweep {
        pass: Pass,
        sweep: u32,
    },
    /// The window kept changing for [`MAX_SWEEPS`] sweeps.
    Unstable {
        pass: Pass,
    },
}

#[derive(Clone, Debug)]
struct PassPlan {
    pass: Pass,
    /// The next offset to hand out (valid once `total` is known).
    next: u64,
    /// `total_items` from this sweep's first page.
    total: Option<u64>,
    /// Pages it may read before `total_items` is known.
    blind_pages: u32,
    /// Pages handed out in this sweep before `total_items` was known.
    handed_out_blind: u32,
    in_flight: u32,
    changed: bool,
    sweep: u32,
    done: bool,
}

#[derive(Clone, Debug)]
pub struct SweepPlan {
    start: u64,
    count: u32,
    passes: Vec<PassPlan>,
}

impl SweepPlan {
    /// `passes`: each pass and how many pages it reads before it knows
    /// its `total_items` (at least one).
    pub fn new(start_offset: u64, count: u32, passes: &[(Pass, u32)]) -> SweepPlan {
        let passes = passes
            .iter()
            .map(|&(pass, blind_pages)| PassPlan {
                pass,
                next: start_offset,
                total: None,
                blind_pages: blind_pages.max(1),
                handed_out_blind: 0,
                in_flight: 0,
                changed: false,
                sweep: 0,
                done: false,
            })
            .collect();
        SweepPlan {
            start: start_offset,
            count,
            passes,
        }
    }

    /// The next page to read, if one may be read now. `None` while every
    /// pass waits for its first page, or when everything was handed out.
    pub fn next_request(&mut self) -> Option<PageRequest> {
        let count = self.count;
        for p in self.passes.iter_mut().filter(|p| !p.done) {
            let may_read = match p.total {
                None => p.handed_out_blind < p.blind_pages,
                Some(total) => p.next < total,
            };
            if !may_read {
                continue;
            }
            if p.total.is_none() {
                p.handed_out_blind += 1;
            }
            let offset = p.next;
            p.next = p.next.saturating_add(count.into());
            p.in_flight += 1;
            return Some(PageRequest {
                pass: p.pass,
                offset,
                count,
            });
        }
        None
    }

    /// Records a page read for `request` that reported `total_items` and
    /// held `returned` members.
    pub fn page_read(&mut self, request: PageRequest, total_items: u64, returned: u64) -> PageVerdict {
        let start = self.start;
        let count = u64::from(self.count);
        let Some(p) = self.passes.iter_mut().find(|p| p.pass == request.pass) else {
            return PageVerdict::Continue;
        };
        p.in_flight = p.in_flight.saturating_sub(1);
        match p.total {
            None => p.total = Some(total_items),
            Some(total) if total != total_items => p.changed = true,
            Some(_) => {}
        }
        if returned != count.min(total_items.saturating_sub(request.offset)) {
            p.changed = true;
        }
        let all_read = p.in_flight == 0 && p.total.is_some_and(|t| p.next >= t);
        if !all_read {
            return PageVerdict::Continue;
        }
        if !p.changed {
            p.done = true;
            return PageVerdict::Continue;
        }
        if p.sweep + 1 >= MAX_SWEEPS {
            return PageVerdict::Unstable { pass: p.pass };
        }
        p.sweep += 1;
        p.next = start;
        p.total = None;
        p.handed_out_blind = 0;
        p.changed = false;
        PageVerdict::Resweep {
            pass: p.pass,
            sweep: p.sweep,
        }
    }

    pub fn is_complete(&self) -> bool {
        self.passes.iter().all(|p| p.done)
    }

    /// Members the current sweeps will read, once every pass knows its total.
    pub fn expected_members(&self) -> Option<u64> {
        self.passes
            .iter()
            .map(|p| p.total.map(|t| t.saturating_sub(self.start)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pass: Pass, offset: u64, count: u32) -> PageRequest {
        PageRequest { pass, offset, count }
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
            plan.page_read(req(Pass::Members, 0, 100), 450, 100),
            PageVerdict::Continue
        );
        let offsets: Vec<_> = drain(&mut plan).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [100, 200, 300, 400]);
        for (o, n) in [(100, 100), (300, 100), (400, 50), (200, 100)] {
            assert_eq!(
                plan.page_read(req(Pass::Members, o, 100), 450, n),
                PageVerdict::Continue
            );
        }
        assert!(!plan.is_complete());
        assert_eq!(plan.page_read(req(Pass::Archived, 0, 100), 3, 3), PageVerdict::Continue);
        assert!(plan.is_complete());
        assert_eq!(plan.expected_members(), Some(453));
        assert_eq!(plan.next_request(), None);
    }

    #[test]
    fn start_offset_is_where_paging_begins() {
        let mut plan = SweepPlan::new(250, 100, &[(Pass::Members, 1)]);
        assert_eq!(plan.next_request(), Some(req(Pass::Members, 250, 100)));
        plan.page_read(req(Pass::Members, 250, 100), 420, 100);
        let offsets: Vec<_> = drain(&mut plan).iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [350]);
        plan.page_read(req(Pass::Members, 350, 100), 420, 70);
        assert!(plan.is_complete());
        assert_eq!(plan.expected_members(), Some(170));
    }

    #[test]
    fn empty_lists_and_offsets_past_the_end_finish_after_one_page() {
        let mut plan = SweepPlan::new(0, 100, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 0, 100), 0, 0);
        assert!(plan.is_complete());
        let mut plan = SweepPlan::new(500, 100, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 500, 100), 20, 0);
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
            plan.page_read(req(Pass::Members, 100, 100), 250, 100),
            PageVerdict::Continue
        );
        assert_eq!(drain(&mut plan), [req(Pass::Members, 200, 100)]);
        plan.page_read(req(Pass::Members, 0, 100), 250, 100);
        plan.page_read(req(Pass::Members, 200, 100), 250, 50);
        // A blind page past the end is empty, and that is no change.
        assert_eq!(plan.page_read(req(Pass::Archived, 0, 100), 7, 7), PageVerdict::Continue);
        assert!(plan.is_complete());

        let mut small = SweepPlan::new(0, 100, &[(Pass::Members, 2)]);
        drain(&mut small);
        assert_eq!(
            small.page_read(req(Pass::Members, 0, 100), 40, 40),
            PageVerdict::Continue
        );
        assert_eq!(
            small.page_read(req(Pass::Members, 100, 100), 40, 0),
            PageVerdict::Continue
        );
        assert!(small.is_complete());
    }

    #[test]
    fn a_changed_total_sweeps_the_pass_again() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 0, 10), 25, 10);
        drain(&mut plan);
        // A member left the window: the later pages report one fewer.
        plan.page_read(req(Pass::Members, 10, 10), 24, 10);
        assert_eq!(
            plan.page_read(req(Pass::Members, 20, 10), 24, 4),
            PageVerdict::Resweep {
                pass: Pass::Members,
                sweep: 1
            }
        );
        assert_eq!(drain(&mut plan), [req(Pass::Members, 0, 10)]);
        plan.page_read(req(Pass::Members, 0, 10), 24, 10);
        assert_eq!(drain(&mut plan).len(), 2);
        plan.page_read(req(Pass::Members, 10, 10), 24, 10);
        plan.page_read(req(Pass::Members, 20, 10), 24, 4);
        assert!(plan.is_complete());
    }

    #[test]
    fn a_short_page_is_a_change_too() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        plan.next_request();
        plan.page_read(req(Pass::Members, 0, 10), 20, 10);
        drain(&mut plan);
        assert!(matches!(
            plan.page_read(req(Pass::Members, 10, 10), 20, 9),
            PageVerdict::Resweep { .. }
        ));
    }

    #[test]
    fn a_window_that_never_settles_gives_up() {
        let mut plan = SweepPlan::new(0, 10, &[(Pass::Members, 1)]);
        let mut verdict = PageVerdict::Continue;
        for sweep in 0..MAX_SWEEPS as u64 {
            plan.next_request();
            verdict = plan.page_read(req(Pass::Members, 0, 10), 15 - sweep, 10);
            drain(&mut plan);
            if verdict == PageVerdict::Continue {
                verdict = plan.page_read(req(Pass::Members, 10, 10), 14 - sweep, 4 - sweep);
            }
        }
        assert_eq!(verdict, PageVerdict::Unstable { pass: Pass::Members });
        assert!(!plan.is_complete());
    }
}
