//! A ListSync is one sync of one entry, start to finish (SPEC §4).
//!
//! It owns the paging plan, hands page offsets to idle Fetchers, gathers
//! the mapped contacts into batches within Ometria's limits (a record too
//! large to send is kept as rejected instead), and hands batches to idle
//! Writers. Fetchers only get work while the queue of ready batches is
//! short, so a slow Ometria slows the reading instead of filling memory.
//! The sync succeeds when every page was read and every batch accounted
//! for; then it sends one `SyncFinished` with the new cursor `T0`.
//!
//! The member ledger (issue 16): each page's new records are looked up
//! (one `LookUpUnchanged` per page, answered on the Ledger's own thread
//! while the Fetchers read on); a record equal to what Ometria last
//! accepted, or to a record of this sync still in flight
//! ([`InFlight`]), is counted `unchanged` and not pushed. Each push answer
//! tells the Ledger at once which records Ometria accepted, and the sync
//! succeeds only once the Ledger has answered every one of those. A
//! ledger that fails is a cache missing: one WARNING, and records are
//! pushed. The run history gets a row when the sync starts and its
//! figures when it ends.
//!
//! Planning (`plan`, issue 17): the same reads, checks and mapping, with
//! no Writer: each record is compared with what the ledger holds (read
//! only) and counted in an [`EntryPlan`] instead of pushed, and the plan
//! goes to the Planner. Nothing is pushed, and neither the state file, the
//! ledger nor the rejected file is written.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use slog::{error, info, o, warn, Logger};

use super::fetcher::Fetcher;
use super::ledger::Ledger;
use super::messages::{
    CancelSync, EndRun, FetchPage, FetchedPage, LookUpPrevious, LookUpUnchanged, MarkUncertain, PlanFinished,
    PushBatch, Pushed, RecordAccepted, RecordMapping, StartRun, StopWorker, SyncFinished,
};
use super::state_keeper::StateKeeper;
use super::writer::{WriteError, Writer};
use crate::ledger::{record_hash, Accepted, RunEnd, RunStart};
use crate::limits::Limits;
use crate::mailchimp::MailchimpClient;
use crate::ometria::{Batcher, OmetriaClient};
use crate::rejected::{Evidence, RejectedLog, Rejection, EVIDENCE_WINDOW};
use crate::retry::{Outcomes, RetryPolicy};
use crate::state::{format_for_log, Entry, SyncRecord};
use crate::sync::{
    start_time, Bounds, DroppedValues, EntryPlan, InFlight, PageVerdict, Pass, SweepPlan, SyncCounts, SyncKind, Why,
    Window,
};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;
use crate::transform::SkipReason;

/// How far behind ours Mailchimp's clock may be for a sync to end its
/// window on Mailchimp's clock; beyond, the clocks are taken as wrong and
/// the sync fails.
const MAX_CLOCK_BEHIND: TimeDelta = TimeDelta::hours(1);

/// How far behind `T0` a `Date` header may be and still be taken as
/// Mailchimp's clock having reached it: `Date` has whole seconds, and
/// servers write it from a clock they refresh about once a second.
const CLOCK_TOLERANCE: TimeDelta = TimeDelta::seconds(1);

/// How many times one sync moves its window to Mailchimp's clock.
const MAX_REPLANS: u32 = 3;

/// Skipped members a sync names in its log; the rest are counted.
const SKIPPED_NAMED: u64 = 10;

/// Ready batches per Writer before Fetchers wait.
const QUEUE_BATCHES_PER_WRITER: usize = 2;

/// What every sync needs, shared by all of them.
#[derive(Clone)]
pub struct SyncDeps {
    pub mailchimp: MailchimpClient,
    pub ometria: OmetriaClient,
    pub limits: Limits,
    pub retry: RetryPolicy,
    pub overlap: Duration,
    /// Long syncs log their progress this often.
    pub progress_interval: Duration,
    pub rejected_log: RejectedLog,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    pub state_keeper: Addr<StateKeeper>,
    /// The member ledger (`ledger.sqlite3`), on a thread of its own.
    pub ledger: Addr<Ledger>,
    pub log: Logger,
}

/// The entry to sync and how.
#[derive(Clone, Debug)]
pub struct SyncJob {
    pub entry: Entry,
    pub kind: SyncKind,
}

/// A batch ready to push, with what the ledger keeps of each record.
struct ReadyBatch {
    records: Vec<Bytes>,
    /// Beside each record: its member id, hash, email and status.
    members: Vec<Accepted>,
}

/// Where this sync's row of the run history stands.
enum RunRow {
    /// `StartRun` sent, not yet answered.
    Starting,
    /// The row's id.
    Started(i64),
    /// The sync ended before `StartRun` was answered: `EndRun` goes out
    /// with the answer.
    EndedEarly(RunEnd),
    /// Ended, or the ledger could not add the row.
    Closed,
}

/// Where a ListSync's result goes.
enum Reporting {
    /// A sync: its result to the StateKeeper and the Controller.
    Sync(Recipient<SyncFinished>),
    /// A plan: what would be pushed, counted, to the Planner.
    Plan {
        planner: Recipient<PlanFinished>,
        plan: Box<EntryPlan>,
        /// Records kept as samples.
        samples: usize,
    },
}

pub struct ListSync {
    job: SyncJob,
    deps: SyncDeps,
    reporting: Reporting,
    log: Logger,
    t0: DateTime<Utc>,
    started: Instant,
    window: Window,
    plan: SweepPlan,
    fetchers: Vec<Addr<Fetcher>>,
    idle_fetchers: Vec<usize>,
    writers: Vec<Addr<Writer>>,
    idle_writers: Vec<usize>,
    /// Records not yet making up a full batch.
    batcher: Batcher,
    /// What the ledger keeps of each record in the batcher's open batch, in order.
    open_members: VecDeque<Accepted>,
    /// Full batches waiting for a Writer.
    ready: VecDeque<ReadyBatch>,
    /// Records batched whose push is not settled (read twice, pushed once).
    in_flight: InFlight,
    /// Pages whose records wait for the Ledger's lookup.
    lookups_pending: usize,
    /// `RecordAccepted` messages not yet answered: the sync succeeds only after.
    records_pending: usize,
    /// Whether this sync has logged its one WARNING about the ledger.
    ledger_warned: Rc<Cell<bool>>,
    run_row: Rc<RefCell<RunRow>>,
    counts: SyncCounts,
    /// Members skipped for lack of `unique_email_id` or email.
    skipped_for_missing_fields: u64,
    dropped: DroppedValues,
    /// Why records too large to send could not be kept in the rejected
    /// file: the sync fails at the next push answered, or at its end.
    unkept: Option<String>,
    finished: bool,
    /// Counted in `syncs_running` (from `started` until dropped).
    counted_running: bool,
    /// Times the window was moved to Mailchimp's clock.
    replans: u32,
}

impl ListSync {
    pub fn new(job: SyncJob, deps: SyncDeps, controller: Recipient<SyncFinished>) -> ListSync {
        ListSync::with(job, deps, Reporting::Sync(controller))
    }

    /// A planning ListSync (see the module doc): reads as the sync of
    /// `job` would and sends `planner` an [`EntryPlan`] with at most
    /// `samples` sample records. `deps.ledger` should be read only.
    pub fn planning(job: SyncJob, deps: SyncDeps, planner: Recipient<PlanFinished>, samples: usize) -> ListSync {
        let plan = Box::new(EntryPlan {
            list_id: job.entry.key.list_id.clone(),
            rank: job.entry.key.rank,
            kind: job.kind.name().into(),
            ledger: true,
            ..EntryPlan::default()
        });
        let sync = ListSync::with(job, deps, Reporting::Plan { planner, plan, samples });
        *sync.run_row.borrow_mut() = RunRow::Closed;
        sync
    }

    fn planning_mode(&self) -> bool {
        matches!(self.reporting, Reporting::Plan { .. })
    }

    fn with(job: SyncJob, deps: SyncDeps, reporting: Reporting) -> ListSync {
        // On this machine's clock; moved to Mailchimp's if that is behind
        // (see `on_mailchimp_clock`).
        let t0 = start_time(Utc::now());
        let window = Window::new(job.kind, t0, deps.overlap);
        let plan = sweep_plan(&job, &window);
        let log = deps.log.new(o!("list_id" => job.entry.key.list_id.clone()));
        ListSync {
            job,
            deps,
            reporting,
            log,
            t0,
            started: Instant::now(),
            window,
            plan,
            fetchers: vec![],
            idle_fetchers: vec![],
            writers: vec![],
            idle_writers: vec![],
            batcher: Batcher::default(),
            open_members: VecDeque::new(),
            ready: VecDeque::new(),
            in_flight: InFlight::default(),
            lookups_pending: 0,
            records_pending: 0,
            ledger_warned: Rc::new(Cell::new(false)),
            run_row: Rc::new(RefCell::new(RunRow::Starting)),
            counts: SyncCounts::default(),
            skipped_for_missing_fields: 0,
            dropped: DroppedValues::default(),
            unkept: None,
            finished: false,
            counted_running: false,
            replans: 0,
        }
    }

    fn queue_capacity(&self) -> usize {
        if self.planning_mode() {
            // Nothing is batched: the reading is bound by its lookups.
            return self.fetchers.len() * QUEUE_BATCHES_PER_WRITER;
        }
        self.writers.len() * QUEUE_BATCHES_PER_WRITER
    }

    /// Gives work to every idle worker that can have some, and finishes
    /// the sync when nothing is left.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        // Pages waiting for their lookup count against the reading: a slow
        // ledger slows the reads instead of filling memory.
        while self.ready.len() < self.queue_capacity()
            && self.lookups_pending < self.fetchers.len()
            && !self.idle_fetchers.is_empty()
        {
            let Some(request) = self.plan.next_request() else { break };
            let worker = self.idle_fetchers.pop().expect("checked non-empty");
            self.fetch(
                worker,
                FetchPage {
                    request,
                    window: self.window,
                },
                ctx,
            );
        }
        let reading = self.idle_fetchers.len() < self.fetchers.len() || self.lookups_pending > 0;
        if !reading && self.plan.is_complete() {
            if let Some(batch) = self.batcher.flush() {
                self.close_batch(batch);
            }
        }
        while !self.ready.is_empty() && !self.idle_writers.is_empty() {
            let batch = self.ready.pop_front().expect("checked non-empty");
            let worker = self.idle_writers.pop().expect("checked non-empty");
            self.push(worker, batch, ctx);
        }
        let writing = self.idle_writers.len() < self.writers.len() || self.records_pending > 0;
        let run_started = !matches!(*self.run_row.borrow(), RunRow::Starting);
        if !reading && !writing && self.plan.is_complete() && self.ready.is_empty() && run_started {
            self.succeed(ctx);
        }
    }

    fn fetch(&mut self, worker: usize, message: FetchPage, ctx: &mut Context<Self>) {
        let answer = self.fetchers[worker]
            .send(message)
            .into_actor(self)
            .map(move |answer, sync, ctx| {
                sync.idle_fetchers.push(worker);
                match answer {
                    Ok(Ok(page)) => sync.on_page(page, ctx),
                    Ok(Err(e)) => sync.fail(e.to_string(), ctx),
                    Err(e) => sync.fail(format!("a Fetcher stopped unexpectedly ({e})"), ctx),
                }
            });
        ctx.spawn(answer);
    }

    fn push(&mut self, worker: usize, batch: ReadyBatch, ctx: &mut Context<Self>) {
        let ReadyBatch { records, members } = batch;
        let answer = self.writers[worker]
            .send(PushBatch(records))
            .into_actor(self)
            .map(move |answer, sync, ctx| {
                sync.idle_writers.push(worker);
                match answer {
                    Ok(Ok(pushed)) => sync.on_pushed(members, pushed, ctx),
                    Ok(Err(e)) => {
                        if matches!(&e, WriteError::Api(api) if api.may_have_landed()) {
                            sync.mark_uncertain(&members);
                        }
                        sync.fail(e.to_string(), ctx)
                    }
                    Err(e) => sync.fail(format!("a Writer stopped unexpectedly ({e})"), ctx),
                }
            });
        ctx.spawn(answer);
    }

    /// Whether the window must end earlier, on Mailchimp's clock: the
    /// sweep's rule that the window only shrinks while it is read (every
    /// member that changes meanwhile leaves it) holds only if Mailchimp's
    /// clock has reached `T0` — else a member changed or added during the
    /// read gets a `last_changed` inside the window, which can shift an
    /// unchanged member past the readers with `total_items` unchanged. So
    /// an answer whose `Date` is more than [`CLOCK_TOLERANCE`] before `T0`
    /// starts the read over with `T0` at that `Date` (the cursor is then on
    /// Mailchimp's clock, which the next SYNC's `since_last_changed` is
    /// compared with). Returns `Err` for a clock so far behind that it is
    /// more likely wrong than Mailchimp's.
    fn on_mailchimp_clock(&mut self, server: DateTime<Utc>) -> Result<bool, String> {
        if server + CLOCK_TOLERANCE >= self.t0 {
            return Ok(false);
        }
        let behind = (self.t0 - server).num_seconds();
        if behind > MAX_CLOCK_BEHIND.num_seconds() || self.replans >= MAX_REPLANS {
            return Err(format!(
                "Mailchimp's clock (its Date header: {}) is {behind} s behind this machine's ({}); \
                 a window ending on this machine's clock could grow while it is read: set this machine's \
                 clock right (NTP)",
                format_for_log(server),
                format_for_log(self.t0)
            ));
        }
        self.replans += 1;
        let t0 = start_time(server);
        warn!(self.log, "sync: Mailchimp's clock is {behind} s behind this machine's: list {} is read again up to \"{}\" on Mailchimp's clock, so that no member changed meanwhile lands in the window.",
            self.job.entry.key, format_for_log(t0); "behind_seconds" => behind);
        self.t0 = t0;
        self.window = Window::new(self.job.kind, t0, self.deps.overlap);
        self.plan = sweep_plan(&self.job, &self.window);
        Ok(true)
    }

    fn on_page(&mut self, page: FetchedPage, ctx: &mut Context<Self>) {
        if page.window != self.window {
            // Read before the window was moved to Mailchimp's clock: read again.
            return self.dispatch(ctx);
        }
        if let Some(server) = page.server_time {
            match self.on_mailchimp_clock(server) {
                Ok(false) => {}
                Ok(true) => return self.dispatch(ctx),
                Err(reason) => return self.fail(reason, ctx),
            }
        }
        self.counts.pages += 1;
        self.counts.read += page.keys.len() as u64;
        if page.repairs.text {
            warn!(self.log, "sync: the page of list {} at offset {} was not valid JSON text (a lone UTF-16 surrogate, bytes that are not UTF-8, or a raw control character in a string); it was read with U+FFFD in place of what could not be read.",
                self.job.entry.key, page.request.offset);
        }
        if let Some(name) = &page.repairs.repeated_name {
            warn!(self.log, "sync: the page of list {} at offset {} repeats the name {name:?} within one object; each repeated name was read with its last value, as JSON.parse and Python's json read it.",
                self.job.entry.key, page.request.offset);
        }
        // Only members new to the sweep are sent: one read twice is pushed once.
        let (verdict, fresh) = self.plan.page_read(page.request, page.total_items, &page.keys);
        for (position, value) in page.dropped {
            if fresh.get(position) == Some(&true) {
                self.deps
                    .metrics
                    .values_dropped
                    .with_label_values(&[&value.field])
                    .inc();
                self.counts.dropped += 1;
                if let Reporting::Plan { plan, .. } = &mut self.reporting {
                    plan.drop_value(&value.field);
                }
                self.dropped.add(value, &page.keys[position].id);
            }
        }
        let mut records = Vec::with_capacity(page.records.len());
        let facts = page.facts.into_iter().chain(std::iter::repeat_with(Default::default));
        for (position, ((record, facts), new)) in page.records.into_iter().zip(facts).zip(fresh).enumerate() {
            match (record, new) {
                (Ok(record), true) => {
                    let member = Accepted {
                        member_id: page.keys[position].id.clone(),
                        hash: record_hash(&record),
                        email: facts.email,
                        status: facts.status,
                    };
                    records.push((record, member));
                }
                (Err(reason), true) => {
                    let offset = page.request.offset + position as u64;
                    self.skip(reason, offset, &page.keys[position].id);
                }
                (_, false) => {}
            }
        }
        let key = &self.job.entry.key;
        match verdict {
            PageVerdict::Continue => {}
            PageVerdict::Resweep { pass, sweep, why } => {
                self.count_fault(&why);
                warn!(
                    self.log,
                    "sync: {}; reading them again (sweep {}).",
                    why_again(key, pass, &why),
                    sweep + 1
                )
            }
            PageVerdict::Keyset { pass, why } => {
                self.count_fault(&why);
                warn!(
                    self.log,
                    "sync: {}; reading them again one page at a time, by last_changed.",
                    why_again(key, pass, &why)
                )
            }
            PageVerdict::Unstable { pass, reason, fault } => {
                if let Some(fault) = fault {
                    self.count_fault(&Why::Fault(fault));
                }
                return self.fail(
                    format!("its {} could not be read completely: {reason}", pass.name()),
                    ctx,
                );
            }
        }
        self.look_up(records, ctx);
        self.dispatch(ctx);
    }

    /// Asks the Ledger which of one page's `records` equal what Ometria
    /// last accepted; batches the others when it answers. Records equal to
    /// one still in flight are unchanged without asking.
    fn look_up(&mut self, records: Vec<(Bytes, Accepted)>, ctx: &mut Context<Self>) {
        if self.planning_mode() {
            return self.preview(records, ctx);
        }
        let (held, records): (Vec<_>, Vec<_>) = records
            .into_iter()
            .partition(|(_, m)| self.in_flight.holds(&m.member_id, m.hash));
        self.count_unchanged(held.len() as u64);
        if records.is_empty() {
            return;
        }
        let ticket = self.in_flight.lookup_sent();
        self.lookups_pending += 1;
        let message = LookUpUnchanged {
            list_id: self.job.entry.ledger_key(),
            records: records.iter().map(|(_, m)| (m.member_id.clone(), m.hash)).collect(),
        };
        let answer = self
            .deps
            .ledger
            .send(message)
            .into_actor(self)
            .map(move |answer, sync, ctx| {
                sync.lookups_pending -= 1;
                if sync.finished {
                    return;
                }
                let known = match answer {
                    Ok(Ok(known)) if known.len() == records.len() => known,
                    Ok(Ok(known)) => {
                        sync.ledger_trouble(
                            "look records up",
                            &format!("{} answers for {} records", known.len(), records.len()),
                        );
                        vec![false; records.len()]
                    }
                    Ok(Err(e)) => {
                        sync.ledger_trouble("look records up", &e);
                        vec![false; records.len()]
                    }
                    Err(e) => {
                        sync.ledger_trouble("look records up", &e);
                        vec![false; records.len()]
                    }
                };
                // Checked again now: a record of another page may have been
                // batched since, or settled after this lookup was read.
                let (unchanged, changed): (Vec<_>, Vec<_>) = records
                    .into_iter()
                    .zip(known)
                    .partition(|((_, m), same)| *same || sync.in_flight.holds(&m.member_id, m.hash));
                sync.count_unchanged(unchanged.len() as u64);
                sync.batch(changed.into_iter().map(|(record, _)| record).collect());
                sync.in_flight.lookup_answered(ticket);
                sync.dispatch(ctx);
            });
        ctx.spawn(answer);
    }

    /// Planning: asks the Ledger what Ometria last accepted for each of
    /// one page's `records`, and counts what the sync would do with them.
    /// Without a ledger, every record is new.
    fn preview(&mut self, records: Vec<(Bytes, Accepted)>, ctx: &mut Context<Self>) {
        if records.is_empty() {
            return;
        }
        self.lookups_pending += 1;
        let message = LookUpPrevious {
            list_id: self.job.entry.ledger_key(),
            records: records.iter().map(|(_, m)| (m.member_id.clone(), m.hash)).collect(),
        };
        let answer = self
            .deps
            .ledger
            .send(message)
            .into_actor(self)
            .map(move |answer, sync, ctx| {
                sync.lookups_pending -= 1;
                if sync.finished {
                    return;
                }
                let previous = match answer {
                    Ok(Ok(previous)) if previous.len() == records.len() => Some(previous),
                    _ => None,
                };
                let Reporting::Plan { plan, samples, .. } = &mut sync.reporting else {
                    return;
                };
                plan.ledger &= previous.is_some();
                let previous = previous.unwrap_or_else(|| vec![None; records.len()]);
                let mut unchanged = 0;
                for ((record, member), previous) in records.iter().zip(&previous) {
                    unchanged += u64::from(previous.as_ref().is_some_and(|p| p.unchanged));
                    plan.add(record, &member.status, previous.as_ref(), *samples);
                }
                sync.counts.unchanged += unchanged;
                sync.dispatch(ctx);
            });
        ctx.spawn(answer);
    }

    fn count_unchanged(&mut self, n: u64) {
        self.counts.unchanged += n;
        self.deps.metrics.records_unchanged.inc_by(n);
    }

    /// Adds records to the open batch; full batches join the queue.
    fn batch(&mut self, records: Vec<(Bytes, Accepted)>) {
        let mut unsendable = vec![];
        for (record, member) in records {
            match self.batcher.add(record) {
                Ok(full) => {
                    self.in_flight.batched(member.member_id.clone(), member.hash);
                    self.open_members.push_back(member);
                    if let Some(batch) = full {
                        self.close_batch(batch);
                    }
                }
                Err(rejection) => unsendable.push(rejection),
            }
        }
        self.reject_unsendable(&unsendable);
    }

    /// Queues a batch the batcher closed, with its records' members: the
    /// first `batch.len()` of the open ones (a batch closed because the
    /// next record did not fit leaves that record's member behind).
    fn close_batch(&mut self, batch: Vec<Bytes>) {
        let members = self.open_members.drain(..batch.len()).collect();
        self.ready.push_back(ReadyBatch {
            records: batch,
            members,
        });
    }

    /// One WARNING per sync for a ledger that failed.
    fn ledger_trouble(&self, what: &str, e: &dyn std::fmt::Display) {
        ledger_trouble(&self.ledger_warned, &self.log, &self.job.entry.key, what, e);
    }

    /// Tells the Ledger that pushes of `members` may still be applied by
    /// Ometria later ([`crate::ledger::LATE_WRITE_SECONDS`]).
    fn mark_uncertain(&self, members: &[Accepted]) {
        if members.is_empty() {
            return;
        }
        self.deps.ledger.do_send(MarkUncertain {
            list_id: self.job.entry.ledger_key(),
            now: Utc::now().timestamp(),
            ids: members.iter().map(|m| m.member_id.clone()).collect(),
        });
    }

    /// Tells the Ledger what Ometria accepted; the records settle when it answers.
    fn record(&mut self, accepted: Vec<Accepted>, ctx: &mut Context<Self>) {
        let keys: Vec<(String, u64)> = accepted.iter().map(|m| (m.member_id.clone(), m.hash)).collect();
        self.records_pending += 1;
        let message = RecordAccepted {
            list_id: self.job.entry.ledger_key(),
            now: Utc::now().timestamp(),
            records: accepted,
        };
        let answer = self
            .deps
            .ledger
            .send(message)
            .into_actor(self)
            .map(move |answer, sync, ctx| {
                sync.records_pending -= 1;
                match answer {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => sync.ledger_trouble("record what Ometria accepted", &e),
                    Err(e) => sync.ledger_trouble("record what Ometria accepted", &e),
                }
                sync.in_flight.settled(keys);
                sync.dispatch(ctx);
            });
        ctx.spawn(answer);
    }

    /// Keeps records too large to send in the rejected file, and counts
    /// them; notes why if they could not be kept (see `unkept`).
    fn reject_unsendable(&mut self, rejections: &[Rejection]) {
        if rejections.is_empty() {
            return;
        }
        let list_id = &self.job.entry.key.list_id;
        let what = format!("{} records of list \"{list_id}\" cannot be sent", rejections.len());
        if let Err(e) = self.deps.rejected_log.keep(list_id, rejections, &what, &self.log) {
            self.unkept.get_or_insert(e.to_string());
        }
        let n = rejections.len() as u64;
        self.counts.rejected += n;
        self.counts.unsent += n;
        self.deps.metrics.records_rejected.inc_by(n);
    }

    fn on_pushed(&mut self, members: Vec<Accepted>, pushed: Pushed, ctx: &mut Context<Self>) {
        if let Some(reason) = self.unkept.take() {
            return self.fail(reason, ctx);
        }
        let outcome = pushed.outcome;
        // Recorded now, before the next answer is counted: a sync killed
        // later keeps what Ometria took.
        let mut accepted = Vec::with_capacity(members.len());
        let mut settled = vec![];
        let mask = pushed.accepted.into_iter().chain(std::iter::repeat(false));
        for (member, taken) in members.into_iter().zip(mask) {
            if taken {
                accepted.push(member);
            } else {
                settled.push((member.member_id, member.hash));
            }
        }
        self.in_flight.settled(settled);
        let uncertain: Vec<Accepted> = if pushed.answer_lost { accepted.clone() } else { vec![] };
        if !accepted.is_empty() {
            self.record(accepted, ctx);
        }
        // After the record, in the Ledger's mailbox: a lost answer's push
        // may still land over a newer one.
        self.mark_uncertain(&uncertain);
        self.counts.accepted += outcome.accepted;
        self.counts.rejected += outcome.rejected;
        self.deps.metrics.records_pushed.inc_by(outcome.accepted);
        self.deps.metrics.records_rejected.inc_by(outcome.rejected);
        if let Some(reason) = self.counts.turned_down_too_many() {
            return self.fail(reason, ctx);
        }
        self.dispatch(ctx);
    }

    /// Counts a rule of paging the server broke (`paging_faults_total`).
    fn count_fault(&self, why: &Why) {
        if let Why::Fault(fault) = why {
            self.deps.metrics.paging_faults.with_label_values(&[fault.kind()]).inc();
        }
    }

    /// A member the mapping could not send (SPEC §5): counted, and named
    /// in the log for the first [`SKIPPED_NAMED`] of a sync.
    fn skip(&mut self, reason: SkipReason, offset: u64, id: &str) {
        self.counts.skipped += 1;
        if let Reporting::Plan { plan, .. } = &mut self.reporting {
            plan.skip(&reason.to_string());
        }
        self.deps.metrics.records_skipped.inc();
        if matches!(reason, SkipReason::NoUniqueEmailId | SkipReason::NoEmail) {
            self.skipped_for_missing_fields += 1;
        }
        if self.counts.skipped <= SKIPPED_NAMED {
            let who = match id {
                "" => "no unique_email_id".to_owned(),
                id if id.starts_with("email:") => "no unique_email_id".to_owned(),
                // Escaped: an id skipped for a control character is named, not obeyed.
                id => format!("unique_email_id {id:?}"),
            };
            let more = if self.counts.skipped == SKIPPED_NAMED {
                " Further members this sync skips are counted (skipped= on its last line), not named."
            } else {
                ""
            };
            warn!(self.log, "sync: member at offset {offset} of list {} ({who}) skipped: {reason}.{more}",
                self.job.entry.key; "skipped" => self.counts.skipped);
        }
    }

    fn count_end(&self, result: &str) {
        self.deps.metrics.syncs.with_label_values(&[result]).inc();
    }

    fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// One line for every value left out of this sync's records.
    fn log_dropped(&self) {
        if self.counts.dropped > 0 {
            let who = if self.planning_mode() { "plan" } else { "sync" };
            warn!(self.log, "{who}: {} values of list {} were left out of its records, Ometria would not take them: {}.",
                self.counts.dropped, self.job.entry.key, self.dropped.describe(); "dropped" => self.counts.dropped);
        }
    }

    fn succeed(&mut self, ctx: &mut Context<Self>) {
        if let Some(reason) = self.unkept.take() {
            return self.fail(reason, ctx);
        }
        let c = self.counts;
        if c.accepted + c.rejected + c.unchanged == 0 && c.skipped > 0 && self.skipped_for_missing_fields == c.skipped {
            // Mailchimp gives every member both: answers without them for
            // every member read are broken, not a list of odd members.
            return self.fail(
                format!(
                    "none of the {} members read could be sent: each lacked its unique_email_id or \
                     email_address, which Mailchimp gives every member (something between us and \
                     Mailchimp may be changing the fields parameter)",
                    c.skipped
                ),
                ctx,
            );
        }
        // Records Ometria answered for, every one rejected or refused, with
        // no record taken by this sync nor, within the hour, by any other:
        // a request Ometria cannot read, not their content (issue 14).
        if let Some(reason) = self.counts.turned_down_too_many() {
            return self.fail(reason, ctx);
        }
        let turned_down = c.rejected.saturating_sub(c.unsent);
        let took_any = c.accepted > 0 || self.deps.limits.ometria_took.within(EVIDENCE_WINDOW, Utc::now());
        if turned_down > 0 && !took_any {
            return self.fail(
                format!(
                    "Ometria took none of the {turned_down} records it was sent (it counted them as rejected or refused them), and took no record from this importer in the last hour: not the records' content; check OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY"
                ),
                ctx,
            );
        }
        self.finished = true;
        let elapsed = self.elapsed();
        self.log_dropped();
        if self.planning_mode() {
            info!(self.log, "plan: read list {} in {:.1} (s).", self.job.entry.key, elapsed.as_secs_f64();
                "read" => c.read, "unchanged" => c.unchanged, "skipped" => c.skipped, "dropped" => c.dropped);
        } else {
            info!(self.log, "sync: completed in {:.1} (s) for list {}.", elapsed.as_secs_f64(), self.job.entry.key;
                "read" => c.read, "records" => c.accepted + c.rejected, "rejected" => c.rejected,
                "skipped" => c.skipped, "unchanged" => c.unchanged, "dropped" => c.dropped, "pages" => c.pages);
        }
        let record = SyncRecord {
            key: self.job.entry.key.clone(),
            cursor_at_start: self.job.entry.cursor_raw.clone(),
            t0: self.t0,
            elapsed,
            total_updates: c.accepted + c.rejected,
        };
        if self.window.since.is_none() && !self.planning_mode() {
            // Every member was read with this mapping (issue 17).
            self.deps.ledger.do_send(RecordMapping {
                list_id: self.job.entry.key.list_id.clone(),
                rank: self.job.entry.key.rank as u32,
                fingerprint: self.job.entry.mapping.fingerprint(),
                now: Utc::now().timestamp(),
            });
        }
        self.count_end("succeeded");
        self.close_run("succeeded", None);
        self.report(Ok(record));
        ctx.stop();
    }

    fn fail(&mut self, reason: String, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.log_dropped();
        let cursor = self
            .job
            .entry
            .cursor
            .map_or("null (full LOAD)".into(), |c| format!("\"{}\"", format_for_log(c)));
        if self.planning_mode() {
            error!(
                self.log,
                "plan: reading list {} failed after {:.1} (s): {reason}.",
                self.job.entry.key,
                self.elapsed().as_secs_f64()
            );
        } else {
            error!(
                self.log,
                "sync: failed after {:.1} (s) for list {}: {reason}; latest_timestamp stays {cursor}.",
                self.elapsed().as_secs_f64(),
                self.job.entry.key
            );
        }
        self.count_end("failed");
        self.close_run("failed", Some(reason.clone()));
        self.report(Err(reason));
        ctx.stop();
    }

    /// Ends this sync's row of the run history (see [`RunRow`]).
    fn close_run(&self, result: &str, error: Option<String>) {
        let c = self.counts;
        let end = RunEnd {
            duration_seconds: self.elapsed().as_secs_f64(),
            members_read: c.read,
            pushed: c.accepted,
            unchanged: c.unchanged,
            rejected: c.rejected,
            skipped: c.skipped,
            deleted: 0,
            result: result.into(),
            error,
        };
        let mut row = self.run_row.borrow_mut();
        match std::mem::replace(&mut *row, RunRow::Closed) {
            RunRow::Started(id) => self.deps.ledger.do_send(EndRun { id, end }),
            RunRow::Starting => *row = RunRow::EndedEarly(end),
            RunRow::EndedEarly(earlier) => *row = RunRow::EndedEarly(earlier),
            RunRow::Closed => {}
        }
    }

    /// Adds this sync's row to the run history; dispatching waits for it
    /// only to succeed (see [`RunRow`]).
    fn open_run(&self, ctx: &mut Context<Self>) {
        let key = &self.job.entry.key;
        let request = self.deps.ledger.send(StartRun(RunStart {
            list_id: key.list_id.clone(),
            rank: key.rank as u32,
            kind: self.job.kind.name().into(),
            t0: self.t0.timestamp(),
            started_at: Utc::now().timestamp(),
        }));
        let (row, ledger, warned, log, key) = (
            self.run_row.clone(),
            self.deps.ledger.clone(),
            self.ledger_warned.clone(),
            self.log.clone(),
            key.clone(),
        );
        let (tell, told) = tokio::sync::oneshot::channel::<()>();
        // Not the actor's own future: a sync that ends first still gets its row ended.
        actix_rt::spawn(async move {
            let id = match request.await {
                Ok(Ok(id)) => Some(id),
                Ok(Err(e)) => {
                    ledger_trouble(&warned, &log, &key, "add this sync to the run history", &e);
                    None
                }
                Err(e) => {
                    ledger_trouble(&warned, &log, &key, "add this sync to the run history", &e);
                    None
                }
            };
            let mut row = row.borrow_mut();
            match (std::mem::replace(&mut *row, RunRow::Closed), id) {
                (RunRow::Starting, Some(id)) => *row = RunRow::Started(id),
                (RunRow::EndedEarly(end), Some(id)) => ledger.do_send(EndRun { id, end }),
                _ => {}
            }
            drop(row);
            let _ = tell.send(());
        });
        ctx.spawn(told.into_actor(self).map(|_, sync, ctx| sync.dispatch(ctx)));
    }

    fn report(&mut self, result: Result<SyncRecord, String>) {
        let key = self.job.entry.key.clone();
        let (read, window) = (self.counts.read, self.window);
        match &mut self.reporting {
            Reporting::Sync(controller) => {
                let finished = SyncFinished { key, result };
                // The StateKeeper first: the Controller's next read must see the result.
                self.deps.state_keeper.do_send(finished.clone());
                controller.do_send(finished);
            }
            Reporting::Plan { planner, plan, .. } => {
                let result = result.map(|_| {
                    let mut plan = std::mem::take(&mut **plan);
                    plan.members_read = read;
                    plan.since = window.since.map(format_for_log);
                    plan.before = format_for_log(window.before);
                    plan
                });
                planner.do_send(PlanFinished { key, result });
            }
        }
    }

    fn log_progress(&self) {
        let written = self.counts.accepted + self.counts.rejected;
        let unchanged = self.counts.unchanged;
        let seconds = self.elapsed().as_secs_f64().max(0.001);
        let rate = (written + unchanged) as f64 / seconds;
        let (total, eta) = match self.plan.expected_members() {
            Some(total) => {
                let left = total.saturating_sub(written + unchanged + self.counts.skipped);
                let eta = if rate > 0.0 {
                    format!("{:.0} s", left as f64 / rate)
                } else {
                    "unknown".into()
                };
                (total.to_string(), eta)
            }
            None => ("?".into(), "unknown".into()),
        };
        info!(self.log, "sync: list {} progress: {written}/{total} records written, {unchanged} unchanged, {rate:.0} records/s, ETA {eta}.",
            self.job.entry.key; "records" => written, "unchanged" => unchanged);
    }
}

/// Logs the one WARNING of a sync whose ledger failed (`warned` says
/// whether it was logged): the ledger is a cache, so records are pushed.
fn ledger_trouble(
    warned: &Cell<bool>,
    log: &Logger,
    key: &impl std::fmt::Display,
    what: &str,
    e: &dyn std::fmt::Display,
) {
    if !warned.replace(true) {
        warn!(log, "sync: the ledger could not {what} for list {key}: {e}; this sync pushes every record it cannot look up and its next sync may push again what it could not record (the ledger is a cache: nothing is skipped).");
    }
}

/// Where the members pass of `job` pages from: `start_offset` for a LOAD
/// (the field is for trying a large list from a point), 0 for a SYNC,
/// whose window is the members changed since its cursor: skipping some of
/// those would lose them.
/// The paging plan of `job` over `window`. A LOAD reads most lists' second
/// page blind; a SYNC window is usually one page, and a blind second page
/// would be wasted.
fn sweep_plan(job: &SyncJob, window: &Window) -> SweepPlan {
    let blind_pages = if job.kind == SyncKind::Load { 2 } else { 1 };
    SweepPlan::new(
        start_offset(job),
        job.entry.items_per_request,
        &[(Pass::Members, blind_pages), (Pass::Archived, 1)],
    )
    .within(Bounds {
        since: window.since.map(|t| t.timestamp()),
        before: Some(window.before.timestamp()),
    })
}

fn start_offset(job: &SyncJob) -> u64 {
    match job.kind {
        SyncKind::Load => job.entry.start_offset,
        SyncKind::Sync { .. } => 0,
    }
}

/// Why a pass is read again, for the log.
fn why_again(key: &impl std::fmt::Display, pass: Pass, why: &Why) -> String {
    match why {
        Why::Reordered => format!(
            "Mailchimp returned members of list {key} sharing one last_changed second in a different order from one page to the next, so some of its {} may have been missed",
            pass.name()
        ),
        Why::Moved { members } => format!(
            "{members} members of list {key} were read both as archived and as not (archived or unarchived while the list was read), so others may have moved past the readers"
        ),
        Why::Changed => format!(
            "list {key} changed while its {} were read, so some may have shifted past the readers",
            pass.name()
        ),
        Why::Fault(fault) => format!(
            "reading the {} of list {key}, {fault}, so some may have been missed",
            pass.name()
        ),
    }
}

impl Actor for ListSync {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.deps.metrics.syncs_running.inc();
        self.counted_running = true;
        let entry = &self.job.entry;
        let workers = entry.worker_count as usize;
        let since = self
            .window
            .since
            .map_or(String::new(), |s| format!(", changed since \"{}\"", format_for_log(s)));
        if self.planning_mode() {
            info!(self.log, "plan: reading list {} as its next {} would, with {workers} readers; nothing is pushed or written...",
                entry.key, self.job.kind.name(); "window" => format!("before \"{}\"{since}", format_for_log(self.t0)));
        } else {
            info!(self.log, "sync: starting for list {} with {workers} read/write workers...", entry.key;
                "mode" => self.job.kind.name(), "window" => format!("before \"{}\"{since}", format_for_log(self.t0)));
        }
        let skipped = start_offset(&self.job);
        if skipped > 0 {
            warn!(self.log, "sync: list {} has start_offset {skipped}: this LOAD does not read its first {skipped} members, and its cursor moves past them.",
                entry.key; "start_offset" => skipped);
        }
        let list_id: Rc<str> = entry.key.list_id.as_str().into();
        let fields: Rc<str> = entry.mapping.projection().into();
        // How each API has answered this sync so far.
        let (mailchimp, ometria) = (Outcomes::default(), Outcomes::default());
        let evidence = Evidence::new(self.deps.limits.ometria_took.clone());
        let planning = self.planning_mode();
        for i in 0..workers {
            self.fetchers.push(
                Fetcher {
                    client: self.deps.mailchimp.clone(),
                    limit: self.deps.limits.mailchimp.clone(),
                    retry: self.deps.retry,
                    outcomes: mailchimp.clone(),
                    list_id: list_id.clone(),
                    mapping: entry.mapping.clone(),
                    fields: fields.clone(),
                    api: self.deps.ometria.api(),
                    metrics: self.deps.metrics.clone(),
                    log: self.log.clone(),
                }
                .start(),
            );
            self.idle_fetchers.push(i);
            if planning {
                continue; // nothing is pushed
            }
            self.writers.push(
                Writer {
                    client: self.deps.ometria.clone(),
                    pacer: self.deps.limits.ometria.clone(),
                    retry: self.deps.retry,
                    outcomes: ometria.clone(),
                    evidence: evidence.clone(),
                    list_id: list_id.clone(),
                    rejected_log: self.deps.rejected_log.clone(),
                    metrics: self.deps.metrics.clone(),
                    log: self.log.clone(),
                }
                .start(),
            );
            self.idle_writers.push(i);
        }
        ctx.run_interval(self.deps.progress_interval, |sync, _| sync.log_progress());
        if !planning {
            self.open_run(ctx);
        }
        self.dispatch(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        for f in &self.fetchers {
            f.do_send(StopWorker);
        }
        for w in &self.writers {
            w.do_send(StopWorker);
        }
    }
}

/// A sync that ends without a word — its actor dropped by a panic, a bug —
/// is reported as failed, so that the Controller does not wait for it for
/// ever and its cursor stays where it was. Nothing is logged here: a
/// logger that panicked could not be asked again (Rust prints the panic).
impl Drop for ListSync {
    fn drop(&mut self) {
        if self.counted_running {
            self.deps.metrics.syncs_running.dec();
        }
        if !self.finished {
            self.count_end("failed");
            let reason = "the sync stopped unexpectedly (an internal error; the panic message above says where)";
            self.close_run("failed", Some(reason.into()));
            self.report(Err(reason.into()));
        }
    }
}

impl Handler<CancelSync> for ListSync {
    type Result = ();

    fn handle(&mut self, _: CancelSync, ctx: &mut Context<Self>) {
        if !self.finished {
            self.count_end("abandoned");
            self.close_run("abandoned", Some("stopped before it ended".into()));
        }
        self.finished = true;
        ctx.stop();
    }
}
