//! A Reconciliation looks for the members of one entry's list that were
//! deleted in Mailchimp (issue 16, "Deleted members"), start to finish.
//!
//! It reads only the ids of the list's members — the default pass and
//! `status=archived`, [`crate::mailchimp::MEMBER_ID_FIELDS`], 1,000 a page, every member
//! changed before its start `T0` — through the same [`SweepPlan`] and
//! checks as a sync, and tells the Ledger a page at a time which members
//! it saw (stamp `T0`). Members that left that window while it was read
//! (they changed after `T0`) are then read from the windows after it
//! ([`tail_window`]), until one holds nobody or [`MAX_TAIL_READS`] were
//! read. Nothing is mapped or pushed while it reads.
//!
//! Then the members the ledger holds, accepted before `T0`, that it did
//! not see are Mailchimp's deletions. More of them than
//! `IMPORTER_MAX_DELETE_FRACTION` of the ledger's members of the list
//! fails it with nothing done ([`check_deletions`]). Otherwise they are
//! paged out of the ledger [`UNSEEN_PAGE`] at a time: with `on_delete`
//! `"optout"` each page is pushed as opted-out contacts through a Writer
//! and those Ometria accepted leave the ledger; with `"ignore"` they only
//! leave the ledger. It never touches `state.json`: it sends its end to
//! the Controller alone, and one row to the run history.

use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use slog::{error, info, o, warn, Logger};

use super::list_sync::SyncDeps;
use super::messages::{
    CancelSync, CountMembers, CountUnseen, EndRun, MarkSeen, PushBatch, Pushed, ReconcileFailure, ReconcileFinished,
    RemoveMembers, StartRun, StopWorker, Unseen,
};
use super::writer::Writer;
use crate::api::{Api, ApiError};
use crate::ledger::{LedgerMember, RunEnd, RunStart};
use crate::mailchimp::with_page;
use crate::retry::Outcomes;
use crate::state::{format_for_log, Entry, OnDelete};
use crate::sync::{
    check_deletions, start_time, tail_window, Bounds, MemberKey, PageRequest, PageVerdict, Pass, SweepPlan, Why,
    Window, MAX_TAIL_READS, RECONCILE_COUNT, RECONCILE_KIND, UNSEEN_PAGE,
};
use crate::transform::{deleted_records, ometria_id};

/// One page of ids, read and already marked seen in the ledger.
struct IdPage {
    request: PageRequest,
    total_items: u64,
    keys: Vec<MemberKey>,
    /// Its members without a usable `unique_email_id` (missing, empty, or
    /// one a sync would not send: see [`ometria_id`]).
    unidentified: u64,
    /// Mailchimp's clock when it answered (its `Date` header).
    answered_at: Option<DateTime<Utc>>,
}

/// Why a page could not be had: Mailchimp's error, or the ledger's.
type ReadError = String;

pub struct Reconciliation {
    entry: Entry,
    deps: SyncDeps,
    max_delete_fraction: f64,
    controller: Recipient<ReconcileFinished>,
    log: Logger,
    t0: DateTime<Utc>,
    /// `T0` as unix seconds: the ledger's stamp of the members seen, and
    /// the bound of the members it may find deleted (accepted before it).
    stamp: i64,
    started: Instant,
    /// The window being read: members changed before `T0` first, then the tails.
    window: Window,
    plan: SweepPlan,
    /// Tail windows started so far.
    tails: u32,
    /// Members the pages of the current window held.
    read_in_window: u64,
    /// Members the first window's pages said it held and its last reads
    /// did not find ([`SweepPlan::shortfall`]), and the distinct members
    /// the tails read: every one of the former must be among the latter.
    shortfall: u64,
    tail_members: u64,
    /// Members read without a usable `unique_email_id`: any of them may be
    /// a member the ledger holds, so none can be found deleted.
    unidentified: u64,
    /// The latest `Date` Mailchimp answered with: a tail ends no earlier,
    /// so members changed by a Mailchimp clock ahead of ours are seen.
    mailchimp_clock: Option<DateTime<Utc>>,
    /// Reads in flight, and how many may be.
    reading: usize,
    readers: usize,
    /// How Mailchimp answered this reconciliation so far.
    outcomes: Outcomes,
    members_read: u64,
    pages: u64,
    /// This reconciliation's row in the run history, if the ledger gave one.
    run_id: Option<i64>,
    writer: Option<Addr<Writer>>,
    /// Members found deleted and handled (opted out and forgotten, or only
    /// forgotten with `on_delete: "ignore"`).
    deleted: u64,
    pushed: u64,
    rejected: u64,
    finished: bool,
    /// Counted in `syncs_running` (from `started` until dropped).
    counted_running: bool,
}

impl Reconciliation {
    /// A reconciliation of `entry`'s list that finds at most
    /// `max_delete_fraction` of its ledger members deleted, reporting to
    /// `controller`.
    pub fn new(
        entry: Entry,
        deps: SyncDeps,
        max_delete_fraction: f64,
        controller: Recipient<ReconcileFinished>,
    ) -> Reconciliation {
        let t0 = start_time(Utc::now());
        let window = Window {
            since: None,
            before: t0,
        };
        let plan = id_plan(&window, 2);
        let log = deps.log.new(o!("list_id" => entry.key.list_id.clone()));
        let readers = entry.worker_count as usize;
        Reconciliation {
            entry,
            deps,
            max_delete_fraction,
            controller,
            log,
            t0,
            stamp: t0.timestamp(),
            started: Instant::now(),
            window,
            plan,
            tails: 0,
            read_in_window: 0,
            shortfall: 0,
            tail_members: 0,
            unidentified: 0,
            mailchimp_clock: None,
            reading: 0,
            readers,
            outcomes: Outcomes::default(),
            members_read: 0,
            pages: 0,
            run_id: None,
            writer: None,
            deleted: 0,
            pushed: 0,
            rejected: 0,
            finished: false,
            counted_running: false,
        }
    }

    fn list_id(&self) -> &str {
        &self.entry.key.list_id
    }

    /// Hands out reads while readers are free; once the window is read,
    /// reads the next tail or goes on to the ledger.
    fn dispatch_reads(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        while self.reading < self.readers {
            let Some(request) = self.plan.next_request() else { break };
            self.reading += 1;
            self.read(request, ctx);
        }
        if self.reading > 0 || !self.plan.is_complete() {
            return;
        }
        if self.tails == 0 {
            self.shortfall = self.plan.shortfall();
        } else {
            self.tail_members += self.plan.members_read();
        }
        // The first window, and a tail that still held members, leave a
        // window after them where members that changed meanwhile went.
        let tail_wanted = self.tails == 0 || self.read_in_window > 0;
        if tail_wanted && self.tails < MAX_TAIL_READS {
            self.tails += 1;
            let now = Utc::now().max(self.mailchimp_clock.unwrap_or_default());
            let (since, before) = tail_window(self.window.before.timestamp(), now);
            self.window = Window {
                since: DateTime::from_timestamp(since, 0),
                before,
            };
            self.plan = id_plan(&self.window, 1);
            self.read_in_window = 0;
            return self.dispatch_reads(ctx);
        }
        self.weigh(ctx);
    }

    fn read(&mut self, request: PageRequest, ctx: &mut Context<Self>) {
        let (client, limit, retry, outcomes, ledger, metrics, log) = (
            self.deps.mailchimp.clone(),
            self.deps.limits.mailchimp.clone(),
            self.deps.retry,
            self.outcomes.clone(),
            self.deps.ledger.clone(),
            self.deps.metrics.clone(),
            self.log.clone(),
        );
        let (list_id, window, stamp) = (self.entry.key.list_id.clone(), self.window, self.stamp);
        let ledger_key = self.entry.ledger_key();
        let work = async move {
            let page = retry
                .run(
                    &outcomes,
                    |attempt| {
                        let (client, limit, list_id) = (&client, &limit, &list_id);
                        async move {
                            let (body, answered_at) = {
                                let _connection = limit.acquire().await;
                                client.member_ids_page(list_id, &window, request, attempt).await?
                            };
                            read_ids(&body, request, answered_at)
                        }
                    },
                    |e, n, wait| {
                        metrics.retry(Api::Mailchimp);
                        warn!(
                            log,
                            "reconcile: reading the ids of the {} of list \"{list_id}\" at offset {} failed: {e}; retry {n} in {:.1} s.",
                            request.pass.name(),
                            request.offset,
                            wait.as_secs_f64()
                        )
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let ids: Vec<String> = page
                .keys
                .iter()
                .filter(|k| usable_id(&k.id))
                .map(|k| k.id.clone())
                .collect();
            if !ids.is_empty() {
                ledger
                    .send(MarkSeen {
                        list_id: ledger_key,
                        stamp,
                        ids,
                    })
                    .await
                    .map_err(|e| format!("the ledger stopped ({e})"))?
                    .map_err(|e| format!("the ledger could not note the members seen: {e}"))?;
            }
            Ok::<IdPage, ReadError>(page)
        };
        ctx.spawn(work.into_actor(self).map(|page, this, ctx| {
            this.reading -= 1;
            match page {
                Ok(page) => this.on_page(page, ctx),
                Err(e) => this.fail(e, false, ctx),
            }
        }));
    }

    fn on_page(&mut self, page: IdPage, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.pages += 1;
        self.members_read += page.keys.len() as u64;
        self.read_in_window += page.keys.len() as u64;
        self.unidentified += page.unidentified;
        self.mailchimp_clock = self.mailchimp_clock.max(page.answered_at);
        let (verdict, _) = self.plan.page_read(page.request, page.total_items, &page.keys);
        let key = &self.entry.key;
        match verdict {
            PageVerdict::Continue => {}
            PageVerdict::Resweep { pass, why, .. } | PageVerdict::Keyset { pass, why } => {
                self.count_fault(&why);
                warn!(
                    self.log,
                    "reconcile: the ids of the {} of list {key} did not add up ({}); reading them again.",
                    pass.name(),
                    describe(&why)
                );
            }
            PageVerdict::Unstable { pass, reason, fault } => {
                if let Some(fault) = fault {
                    self.count_fault(&Why::Fault(fault));
                }
                return self.fail(
                    format!("the ids of its {} could not be read completely: {reason}", pass.name()),
                    false,
                    ctx,
                );
            }
        }
        self.dispatch_reads(ctx);
    }

    fn count_fault(&self, why: &Why) {
        if let Why::Fault(fault) = why {
            self.deps.metrics.paging_faults.with_label_values(&[fault.kind()]).inc();
        }
    }

    /// Every window was read: how many members the ledger holds that
    /// Mailchimp did not return, against the guard.
    fn weigh(&mut self, ctx: &mut Context<Self>) {
        let (ledger, list_id, stamp) = (self.deps.ledger.clone(), self.entry.ledger_key(), self.stamp);
        let counts = async move {
            let members = ledger
                .send(CountMembers {
                    list_id: list_id.clone(),
                })
                .await;
            let unseen = ledger
                .send(CountUnseen {
                    list_id,
                    stamp,
                    before: stamp,
                })
                .await;
            match (members, unseen) {
                (Ok(Ok(members)), Ok(Ok(unseen))) => Ok((members, unseen)),
                (Ok(Err(e)), _) | (_, Ok(Err(e))) => Err(format!("the ledger could not count the members: {e}")),
                (Err(e), _) | (_, Err(e)) => Err(format!("the ledger stopped ({e})")),
            }
        };
        ctx.spawn(counts.into_actor(self).map(|counts, this, ctx| match counts {
            Err(e) => this.fail(e, false, ctx),
            Ok((_, 0)) => this.succeed(ctx),
            Ok((members, unseen)) => match this.distrust() {
                Some(e) => this.fail(e, false, ctx),
                None => match check_deletions(unseen, members, this.max_delete_fraction) {
                    Err(e) => this.fail(e, true, ctx),
                    Ok(()) => {
                        info!(this.log, "reconcile: {unseen} of the {members} members of list {} the ledger holds are no longer in Mailchimp; {}.",
                            this.entry.key,
                            match this.entry.on_delete {
                                OnDelete::OptOut => "opting them out",
                                OnDelete::Ignore => "forgetting them (on_delete is \"ignore\")",
                            });
                        this.next_unseen(String::new(), ctx)
                    }
                },
            },
        }));
    }

    /// Why the members not seen cannot be taken as deleted, though the
    /// reads added up: members came without a usable id (any of them may
    /// be one the ledger holds), or the first window's last reads returned
    /// fewer members than its pages ever said it held, more than the tails
    /// found changed since `T0` (hidden by a server or proxy, or deleted
    /// meanwhile). Only asked when some are not seen: otherwise nobody is
    /// opted out, and the reconciliation succeeds.
    fn distrust(&self) -> Option<String> {
        if self.shortfall > self.tail_members {
            return Some(format!(
                "Mailchimp's answers did not add up: its pages said the list held {} more members than its last \
                 reads of them returned, and only {} changed since the reconciliation started (members deleted \
                 meanwhile, or a server or proxy answering some requests with fewer members than others)",
                self.shortfall, self.tail_members
            ));
        }
        (self.unidentified > 0).then(|| {
            format!(
                "{} members read came without a usable unique_email_id (missing, empty, or with a space, a control \
                 or an invisible character): any of them may be a member the ledger holds, so none can be taken \
                 as deleted (the list's syncs name them in a WARNING)",
                self.unidentified
            )
        })
    }

    /// Handles the next page of unseen members after `after_id`.
    fn next_unseen(&mut self, after_id: String, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        let ask = Unseen {
            list_id: self.entry.ledger_key(),
            stamp: self.stamp,
            before: self.stamp,
            after_id,
            limit: UNSEEN_PAGE,
        };
        let page = self.deps.ledger.send(ask);
        ctx.spawn(page.into_actor(self).map(|page, this, ctx| match page {
            Ok(Ok(members)) if members.is_empty() => this.succeed(ctx),
            Ok(Ok(members)) => match this.entry.on_delete {
                OnDelete::Ignore => this.forget(members, ctx),
                OnDelete::OptOut => this.opt_out(members, ctx),
            },
            Ok(Err(e)) => this.fail(
                format!("the ledger could not list the members not seen: {e}"),
                false,
                ctx,
            ),
            Err(e) => this.fail(format!("the ledger stopped ({e})"), false, ctx),
        }));
    }

    /// Pushes one page of deleted members as opted out; those Ometria took
    /// leave the ledger.
    fn opt_out(&mut self, members: Vec<LedgerMember>, ctx: &mut Context<Self>) {
        let records = deleted_records(&members, self.list_id(), &self.entry.mapping, self.deps.ometria.api());
        let writer = self.writer(ctx);
        let push = writer.send(PushBatch(records));
        ctx.spawn(push.into_actor(self).map(move |answer, this, ctx| match answer {
            Ok(Ok(pushed)) => this.on_pushed(members, pushed, ctx),
            Ok(Err(e)) => this.fail(e.to_string(), false, ctx),
            Err(e) => this.fail(format!("a Writer stopped unexpectedly ({e})"), false, ctx),
        }));
    }

    /// Members Ometria took as opted out leave the ledger; those it
    /// rejected (in the rejected file) stay, and the next reconciliation
    /// opts them out again.
    fn on_pushed(&mut self, members: Vec<LedgerMember>, pushed: Pushed, ctx: &mut Context<Self>) {
        let outcome = pushed.outcome;
        self.pushed += outcome.accepted;
        self.rejected += outcome.rejected;
        self.deps.metrics.records_pushed.inc_by(outcome.accepted);
        self.deps.metrics.records_rejected.inc_by(outcome.rejected);
        let last = members.last().map(|m| m.member_id.clone()).unwrap_or_default();
        let taken: Vec<LedgerMember> = members
            .into_iter()
            .zip(pushed.accepted)
            .filter_map(|(member, accepted)| accepted.then_some(member))
            .collect();
        self.remove(taken, last, ctx);
    }

    /// `on_delete: "ignore"`: the members only leave the ledger.
    fn forget(&mut self, members: Vec<LedgerMember>, ctx: &mut Context<Self>) {
        let last = members.last().map(|m| m.member_id.clone()).unwrap_or_default();
        self.remove(members, last, ctx);
    }

    fn remove(&mut self, members: Vec<LedgerMember>, last: String, ctx: &mut Context<Self>) {
        let n = members.len() as u64;
        let remove = self.deps.ledger.send(RemoveMembers {
            list_id: self.entry.ledger_key(),
            ids: members.into_iter().map(|m| m.member_id).collect(),
        });
        ctx.spawn(remove.into_actor(self).map(move |removed, this, ctx| match removed {
            Ok(Ok(())) => {
                this.deleted += n;
                this.deps.metrics.members_deleted.inc_by(n);
                this.next_unseen(last, ctx);
            }
            Ok(Err(e)) => this.fail(
                format!("the ledger could not forget the deleted members: {e}"),
                false,
                ctx,
            ),
            Err(e) => this.fail(format!("the ledger stopped ({e})"), false, ctx),
        }));
    }

    /// The Writer of this reconciliation, started on first use.
    fn writer(&mut self, _: &mut Context<Self>) -> Addr<Writer> {
        if let Some(writer) = &self.writer {
            return writer.clone();
        }
        let writer = Writer::alone(&self.deps, self.list_id().into(), self.log.clone()).start();
        self.writer = Some(writer.clone());
        writer
    }

    fn run_end(&self, result: &str, error: Option<String>) -> RunEnd {
        RunEnd {
            duration_seconds: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            members_read: self.members_read,
            pushed: self.pushed,
            rejected: self.rejected,
            deleted: self.deleted,
            result: result.into(),
            error,
            ..RunEnd::default()
        }
    }

    fn succeed(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        info!(self.log, "reconcile: completed in {:.1} (s) for list {}.", self.started.elapsed().as_secs_f64(), self.entry.key;
            "read" => self.members_read, "deleted" => self.deleted, "records" => self.pushed + self.rejected,
            "rejected" => self.rejected, "pages" => self.pages, "on_delete" => self.entry.on_delete.as_str());
        self.deps
            .metrics
            .reconciliations
            .with_label_values(&["succeeded"])
            .inc();
        let end = self.run_end("succeeded", None);
        self.end(end, Ok(self.deleted), ctx);
    }

    /// Fails the reconciliation: nothing more is opted out. `held`: the
    /// fraction guard stopped it.
    fn fail(&mut self, error: String, held: bool, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let done = match self.deleted {
            0 => "nothing was opted out".to_owned(),
            n => format!("{n} deleted member(s) were handled before it stopped"),
        };
        error!(self.log, "reconcile: failed after {:.1} (s) for list {}: {error}; {done}; latest_timestamp is not a reconciliation's to move.",
            self.started.elapsed().as_secs_f64(), self.entry.key; "deletions_held" => held);
        self.deps.metrics.reconciliations.with_label_values(&["failed"]).inc();
        let end = self.run_end("failed", Some(error.clone()));
        self.end(end, Err(ReconcileFailure { error, held }), ctx);
    }

    /// Completes the history row, then tells the Controller (so that its
    /// next look at the ledger sees this reconciliation), and stops.
    fn end(&mut self, end: RunEnd, result: Result<u64, ReconcileFailure>, ctx: &mut Context<Self>) {
        let finished = ReconcileFinished {
            key: self.entry.key.clone(),
            result,
        };
        let controller = self.controller.clone();
        let recorded = self.run_id.map(|id| self.deps.ledger.send(EndRun { id, end }));
        let report = async move {
            if let Some(recorded) = recorded {
                let _ = recorded.await;
            }
            controller.do_send(finished);
        };
        ctx.wait(report.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

/// The paging plan of one window of ids: both passes, 1,000 a page, the
/// members pass reading `blind_pages` before it knows `total_items`.
fn id_plan(window: &Window, blind_pages: u32) -> SweepPlan {
    SweepPlan::new(0, RECONCILE_COUNT, &[(Pass::Members, blind_pages), (Pass::Archived, 1)])
        .within(Bounds {
            since: window.since.map(|t| t.timestamp()),
            before: Some(window.before.timestamp()),
        })
        // Every page is of one size: a page of another checks each pass,
        // so that members hidden from that size are not opted out.
        .checking_every_pass()
}

/// Why a window is read again, for the log.
fn describe(why: &Why) -> String {
    match why {
        Why::Changed => "the list changed while it was read".into(),
        Why::Moved { members } => format!("{members} members were read both as archived and as not"),
        Why::Reordered => "members sharing one second came back in another order".into(),
        Why::Fault(fault) => fault.to_string(),
    }
}

/// The ids of one page (and what the paging checks need), read repaired
/// if only a member's text keeps it from parsing, as a sync's pages are.
fn read_ids(body: &[u8], request: PageRequest, answered_at: Option<DateTime<Utc>>) -> Result<IdPage, ApiError> {
    with_page(body, |page, _, _| {
        let keys: Vec<MemberKey> = page.members.iter().map(|member| member.key()).collect();
        Ok(IdPage {
            request,
            total_items: page.total_items,
            unidentified: keys.iter().filter(|k| !usable_id(&k.id)).count() as u64,
            keys,
            answered_at,
        })
    })
}

/// Whether `id`, a page member's key, is a `unique_email_id` a sync would
/// have sent (and the ledger could hold): not missing (a key made of the
/// address, `email:…`) and valid for Ometria ([`ometria_id`]).
fn usable_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with("email:") && ometria_id(id).is_ok()
}

impl Actor for Reconciliation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.deps.metrics.syncs_running.inc();
        self.counted_running = true;
        info!(self.log, "reconcile: starting for list {} with {} readers...", self.entry.key, self.readers;
            "mode" => RECONCILE_KIND, "window" => format!("before \"{}\"", format_for_log(self.t0)));
        let start = RunStart {
            list_id: self.list_id().to_owned(),
            rank: self.entry.key.rank as u32,
            kind: RECONCILE_KIND.into(),
            t0: self.stamp,
            started_at: self.stamp,
        };
        // The history row first, so that the end always has one to complete.
        let row = self.deps.ledger.send(StartRun(start));
        ctx.wait(row.into_actor(self).map(|row, this, ctx| {
            match row {
                Ok(Ok(id)) => this.run_id = Some(id),
                Ok(Err(e)) => warn!(this.log, "reconcile: no history row for list {}: {e}.", this.entry.key),
                Err(e) => warn!(
                    this.log,
                    "reconcile: no history row for list {}: the ledger stopped ({e}).", this.entry.key
                ),
            }
            this.dispatch_reads(ctx);
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(writer) = &self.writer {
            writer.do_send(StopWorker);
        }
    }
}

/// A reconciliation that ends without a word — its actor dropped by a
/// panic — is reported as failed, so that the Controller does not wait
/// for it for ever.
impl Drop for Reconciliation {
    fn drop(&mut self) {
        if self.counted_running {
            self.deps.metrics.syncs_running.dec();
        }
        if !self.finished {
            self.deps.metrics.reconciliations.with_label_values(&["failed"]).inc();
            self.controller.do_send(ReconcileFinished {
                key: self.entry.key.clone(),
                result: Err(ReconcileFailure {
                    error: "the reconciliation stopped unexpectedly (an internal error; the panic message above says where)"
                        .into(),
                    held: false,
                }),
            });
        }
    }
}

impl Handler<CancelSync> for Reconciliation {
    type Result = ();

    fn handle(&mut self, _: CancelSync, ctx: &mut Context<Self>) {
        if !self.finished {
            self.finished = true;
            self.deps
                .metrics
                .reconciliations
                .with_label_values(&["abandoned"])
                .inc();
            if let Some(id) = self.run_id {
                self.deps.ledger.do_send(EndRun {
                    id,
                    end: self.run_end("abandoned", None),
                });
            }
        }
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::usable_id;

    #[test]
    fn only_an_id_a_sync_would_send_is_usable() {
        assert!(usable_id("8a25ff1d98"));
        for id in [
            "",
            "email:a@x.io",
            " 8a25ff1d98",
            "8a25ff1d98\n",
            "8a25\u{200b}ff1d98",
            "8a25\u{fffd}",
        ] {
            assert!(!usable_id(id), "{id:?}");
        }
    }
}
