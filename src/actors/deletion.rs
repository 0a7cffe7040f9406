//! A Deletion opts out, at once, members that a webhook said were deleted
//! from one entry's list in Mailchimp (`unsubscribe` with `action`
//! `delete`; issue 18, SPEC §15). No SYNC can see a deleted member, and the
//! next reconciliation may be a day away: meanwhile Ometria would go on
//! mailing someone who asked to be forgotten.
//!
//! The event names the member by address (`data[email]`) and subscriber
//! hash (`data[id]`), not by the `unique_email_id` that is its contact id
//! in Ometria, so the ledger finds the contact by address. An event is
//! not the member's state (it may be late, the address added again since,
//! and Mailchimp signs nothing), so each member found is first looked up
//! in Mailchimp ([`crate::mailchimp::MailchimpClient::member_status`]):
//! one Mailchimp still holds, whatever its status, is left to the SYNC
//! the same event brought forward. Those Mailchimp no longer holds
//! are pushed opted out, exactly as a reconciliation opts out a deleted
//! member ([`deleted_records`]: `mailchimp_status: "deleted"`, the entry's
//! `@collection` and `@force_optin`); those Ometria took leave the ledger,
//! and the push is one row of the run history (kind `DELETE`). A member
//! the ledger does not hold was never pushed by this importer (or the
//! ledger was deleted since): there is no contact id to opt out, and the
//! event changes nothing. One that could not be opted out (Mailchimp or
//! Ometria refused or was unreachable past the retries) stays in the ledger for the next
//! reconciliation: the webhook only brings an opt-out forward, it is never
//! the only way one happens.
//!
//! At most [`DELETION_BATCH`](crate::sync::DELETION_BATCH) addresses a Deletion (one push); the
//! Controller runs one Deletion per ledger key at a time and keeps the
//! addresses that come meanwhile for the next.

use std::time::Instant;

use actix::prelude::*;
use chrono::Utc;
use slog::{info, o, warn, Logger};

use super::list_sync::SyncDeps;
use super::messages::{
    DeletionFinished, DeletionTally, EndRun, FindMembersByEmail, PushBatch, Pushed, RemoveMembers, StartRun, StopWorker,
};
use super::writer::Writer;
use crate::api::{Api, ApiError};
use crate::ledger::{LedgerMember, RunEnd, RunStart};
use crate::retry::Outcomes;
use crate::state::Entry;
use crate::transform::deleted_records;

/// The history kind of a Deletion's row.
pub const DELETE_KIND: &str = "DELETE";

pub struct Deletion {
    entry: Entry,
    /// The addresses the webhooks named, at most [`DELETION_BATCH`](crate::sync::DELETION_BATCH).
    emails: Vec<String>,
    deps: SyncDeps,
    controller: Recipient<DeletionFinished>,
    log: Logger,
    started: Instant,
    run_id: Option<i64>,
    writer: Option<Addr<Writer>>,
    tally: DeletionTally,
    finished: bool,
}

impl Deletion {
    /// A Deletion of the members of `entry`'s list with the addresses
    /// `emails` (at most [`DELETION_BATCH`](crate::sync::DELETION_BATCH)), reporting to `controller`.
    pub fn new(entry: Entry, emails: Vec<String>, deps: SyncDeps, controller: Recipient<DeletionFinished>) -> Deletion {
        let log = deps.log.new(o!("list_id" => entry.key.list_id.clone()));
        Deletion {
            entry,
            emails,
            deps,
            controller,
            log,
            started: Instant::now(),
            run_id: None,
            writer: None,
            tally: DeletionTally::default(),
            finished: false,
        }
    }

    fn found(&mut self, members: Vec<LedgerMember>, ctx: &mut Context<Self>) {
        self.tally.not_in_ledger = self.emails.len().saturating_sub(members.len()) as u64;
        if members.is_empty() {
            info!(self.log, "delete: the ledger holds none of the {} member(s) deleted from list {} (never pushed, or pushed before the ledger was): nothing to opt out.",
                self.emails.len(), self.entry.key);
            return self.succeed(ctx);
        }
        let (client, limit, retry, log, list_id) = (
            self.deps.mailchimp.clone(),
            self.deps.limits.mailchimp.clone(),
            self.deps.retry,
            self.log.clone(),
            self.entry.key.list_id.clone(),
        );
        let outcomes = Outcomes::default();
        let metrics = self.deps.metrics.clone();
        // Every member at once: the connection limit shared with the syncs paces them.
        let lookups = members.into_iter().map(move |member| {
            let (client, limit, log, list_id, outcomes, metrics) = (
                client.clone(),
                limit.clone(),
                log.clone(),
                list_id.clone(),
                outcomes.clone(),
                metrics.clone(),
            );
            async move {
                let status = retry
                    .run(
                        &outcomes,
                        |attempt| {
                            let (client, limit, list_id, email) = (&client, &limit, &list_id, &member.email);
                            async move {
                                let _connection = limit.acquire().await;
                                client.member_status(list_id, email, attempt).await
                            }
                        },
                        |e, n, wait| {
                            metrics.retry(Api::Mailchimp);
                            warn!(log, "delete: looking a deleted member up in list \"{list_id}\" failed: {e}; retry {n} in {:.1} s.", wait.as_secs_f64())
                        },
                    )
                    .await?;
                Ok::<_, ApiError>((member, status))
            }
        });
        let checked = futures_util::future::join_all(lookups);
        ctx.spawn(checked.into_actor(self).map(|checked, this, ctx| {
            match checked.into_iter().collect::<Result<Vec<_>, ApiError>>() {
                Ok(checked) => this.checked(checked, ctx),
                Err(e) => this.fail(format!("Mailchimp could not say whether they are gone: {e}"), ctx),
            }
        }));
    }

    /// Members Mailchimp still holds are left to the SYNC; the others are
    /// pushed opted out.
    fn checked(&mut self, checked: Vec<(LedgerMember, Option<String>)>, ctx: &mut Context<Self>) {
        let (gone, held): (Vec<_>, Vec<_>) = checked.into_iter().partition(|(_, status)| status.is_none());
        self.tally.in_mailchimp = held.len() as u64;
        for (member, status) in &held {
            info!(self.log, "delete: a webhook said member \"{}\" was deleted from list {}, but Mailchimp holds it ({}): not opted out here; the SYNC reads it.",
                member.member_id, self.entry.key, status.as_deref().unwrap_or_default());
        }
        let members: Vec<LedgerMember> = gone.into_iter().map(|(member, _)| member).collect();
        if members.is_empty() {
            return self.succeed(ctx);
        }
        let now = Utc::now().timestamp();
        let start = RunStart {
            list_id: self.entry.key.list_id.clone(),
            rank: self.entry.key.rank as u32,
            kind: DELETE_KIND.into(),
            t0: now,
            started_at: now,
        };
        let row = self.deps.ledger.send(StartRun(start));
        ctx.wait(row.into_actor(self).map(|row, this, _| match row {
            Ok(Ok(id)) => this.run_id = Some(id),
            Ok(Err(e)) => warn!(this.log, "delete: no history row for list {}: {e}.", this.entry.key),
            Err(e) => warn!(
                this.log,
                "delete: no history row for list {}: the ledger stopped ({e}).", this.entry.key
            ),
        }));
        let records = deleted_records(
            &members,
            &self.entry.key.list_id,
            &self.entry.mapping,
            self.deps.ometria.api(),
        );
        let writer = Writer::alone(&self.deps, self.entry.key.list_id.as_str().into(), self.log.clone()).start();
        self.writer = Some(writer.clone());
        let push = writer.send(PushBatch(records));
        ctx.spawn(push.into_actor(self).map(move |answer, this, ctx| match answer {
            Ok(Ok(pushed)) => this.on_pushed(members, pushed, ctx),
            Ok(Err(e)) => this.fail(e.to_string(), ctx),
            Err(e) => this.fail(format!("its Writer stopped unexpectedly ({e})"), ctx),
        }));
    }

    /// Members Ometria took as opted out leave the ledger; those it
    /// rejected (kept in the rejected file) stay for the reconciliation.
    fn on_pushed(&mut self, members: Vec<LedgerMember>, pushed: Pushed, ctx: &mut Context<Self>) {
        let outcome = pushed.outcome;
        self.deps.metrics.records_pushed.inc_by(outcome.accepted);
        self.deps.metrics.records_rejected.inc_by(outcome.rejected);
        let taken: Vec<String> = members
            .into_iter()
            .zip(pushed.accepted)
            .filter_map(|(member, accepted)| accepted.then_some(member.member_id))
            .collect();
        self.tally.opted_out = taken.len() as u64;
        self.tally.rejected = outcome.rejected;
        let remove = self.deps.ledger.send(RemoveMembers {
            list_id: self.entry.ledger_key(),
            ids: taken,
        });
        ctx.spawn(remove.into_actor(self).map(|removed, this, ctx| match removed {
            Ok(Ok(())) => this.succeed(ctx),
            // Opted out, still in the ledger: the reconciliation opts them out once more.
            Ok(Err(e)) => this.fail(format!("the ledger could not forget the members opted out: {e}"), ctx),
            Err(e) => this.fail(format!("the ledger stopped ({e})"), ctx),
        }));
    }

    fn run_end(&self, result: &str, error: Option<String>) -> RunEnd {
        RunEnd {
            duration_seconds: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            pushed: self.tally.opted_out,
            rejected: self.tally.rejected,
            deleted: self.tally.opted_out,
            result: result.into(),
            error,
            ..RunEnd::default()
        }
    }

    fn succeed(&mut self, ctx: &mut Context<Self>) {
        if self.tally.opted_out > 0 || self.tally.rejected > 0 {
            info!(self.log, "delete: opted out {} member(s) deleted from list {} in Mailchimp, at once on its webhook; {} rejected by Ometria (left to the reconciliation); {} not in the ledger; {} still in Mailchimp.",
                self.tally.opted_out, self.entry.key, self.tally.rejected, self.tally.not_in_ledger, self.tally.in_mailchimp);
        }
        self.end("succeeded", Ok(self.tally), ctx);
    }

    fn fail(&mut self, error: String, ctx: &mut Context<Self>) {
        warn!(self.log, "delete: could not opt out the member(s) deleted from list {} in Mailchimp: {error}; they stay in the ledger, and the next reconciliation opts them out.", self.entry.key);
        self.end("failed", Err(error), ctx);
    }

    /// Completes the history row, tells the Controller, and stops.
    fn end(&mut self, result: &str, outcome: Result<DeletionTally, String>, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        let recorded = self.run_id.map(|id| {
            self.deps.ledger.send(EndRun {
                id,
                end: self.run_end(result, outcome.as_ref().err().cloned()),
            })
        });
        let finished = DeletionFinished {
            entry: self.entry.clone(),
            emails: std::mem::take(&mut self.emails),
            result: outcome,
        };
        let controller = self.controller.clone();
        let report = async move {
            if let Some(recorded) = recorded {
                let _ = recorded.await;
            }
            controller.do_send(finished);
        };
        ctx.wait(report.into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

impl Actor for Deletion {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let find = self.deps.ledger.send(FindMembersByEmail {
            list_id: self.entry.ledger_key(),
            emails: self.emails.clone(),
        });
        ctx.spawn(find.into_actor(self).map(|found, this, ctx| match found {
            Ok(Ok(members)) => this.found(members, ctx),
            Ok(Err(e)) => this.fail(format!("the ledger could not look the members up: {e}"), ctx),
            Err(e) => this.fail(format!("the ledger stopped ({e})"), ctx),
        }));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Some(writer) = &self.writer {
            writer.do_send(StopWorker);
        }
    }
}

/// A Deletion that ends without a word (its actor dropped by a panic, or
/// by the system stopping) is reported as failed, so that the Controller
/// does not wait for it for ever.
impl Drop for Deletion {
    fn drop(&mut self) {
        if !self.finished {
            self.controller.do_send(DeletionFinished {
                entry: self.entry.clone(),
                emails: std::mem::take(&mut self.emails),
                result: Err("the deletion stopped unexpectedly".into()),
            });
        }
    }
}
