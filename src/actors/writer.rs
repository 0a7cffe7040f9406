//! A Writer pushes one batch of at most 100 contacts at a time to Ometria,
//! paced by the global request rate and with retries. When Ometria rejects
//! records, or refuses the batch for what one of them holds, it finds which
//! (see [`crate::rejected`]) and keeps them in the list's rejected file.
//! Its answer says which records of the batch Ometria accepted, for the
//! member ledger.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use slog::{warn, Logger};

use super::list_sync::SyncDeps;
use super::messages::{PushBatch, Pushed, StopWorker};
use crate::api::{Api, ApiError};
use crate::limits::Pacer;
use crate::ometria::OmetriaClient;
use crate::rejected::{deliver, Evidence, RejectedLog, Unkept};
use crate::retry::{Outcomes, RetryPolicy};
use crate::telemetry::metrics::Metrics;

pub struct Writer {
    pub client: OmetriaClient,
    pub pacer: Arc<Pacer>,
    pub retry: RetryPolicy,
    /// How Ometria answered this sync's requests so far, shared by its workers.
    pub outcomes: Outcomes,
    /// Whether Ometria takes records, as this sync sees it; each push it
    /// takes a record of is noted here (and for the whole process).
    pub evidence: Evidence,
    pub list_id: Rc<str>,
    pub rejected_log: RejectedLog,
    pub metrics: Arc<Metrics>,
    pub log: Logger,
}

impl Writer {
    /// A Writer of its own for work outside a sync's pool (a
    /// reconciliation's or a deletion's opt-outs): the global limits and
    /// retries of `deps`, outcomes of its own, records of list `list_id`.
    pub fn alone(deps: &SyncDeps, list_id: Rc<str>, log: Logger) -> Writer {
        Writer {
            client: deps.ometria.clone(),
            pacer: deps.limits.ometria.clone(),
            retry: deps.retry,
            outcomes: Outcomes::default(),
            evidence: Evidence::new(deps.limits.ometria_took.clone()),
            list_id,
            rejected_log: deps.rejected_log.clone(),
            metrics: Arc::clone(&deps.metrics),
            log,
        }
    }
}

impl Actor for Writer {
    type Context = Context<Self>;
}

/// Why a Writer could not account for a batch.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A push failed for good.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Records Ometria would not take could not be kept in their file.
    #[error(transparent)]
    Unkept(#[from] Unkept),
}

impl Handler<PushBatch> for Writer {
    type Result = ResponseActFuture<Self, Result<Pushed, WriteError>>;

    fn handle(&mut self, PushBatch(batch): PushBatch, _: &mut Context<Self>) -> Self::Result {
        let metrics = self.metrics.clone();
        let (client, pacer, retry, outcomes, evidence, list_id, rejected_log, log) = (
            self.client.clone(),
            self.pacer.clone(),
            self.retry,
            self.outcomes.clone(),
            self.evidence.clone(),
            self.list_id.clone(),
            self.rejected_log.clone(),
            self.log.clone(),
        );
        let work = async move {
            let answer_lost = Rc::new(Cell::new(false));
            // One push of `records`, paced and retried.
            let push = |records: Vec<Bytes>| {
                let answer_lost = answer_lost.clone();
                let (client, pacer, outcomes, evidence, list_id, log, metrics) = (
                    client.clone(),
                    pacer.clone(),
                    outcomes.clone(),
                    evidence.clone(),
                    list_id.clone(),
                    log.clone(),
                    metrics.clone(),
                );
                async move {
                    let outcome = retry
                        .run(
                            &outcomes,
                            |attempt| {
                                let (pacer, client, records) = (&pacer, &client, &records);
                                async move {
                                    pacer.wait_turn().await;
                                    // A backlog full for long: stop retrying (the
                                    // first attempt still learns whether it is).
                                    if attempt > 1 {
                                        pacer.may_retry()?;
                                    }
                                    client.push(records, attempt).await
                                }
                            },
                            |e, n, wait| {
                                metrics.retry(Api::Ometria);
                                if e.may_have_landed() {
                                    answer_lost.set(true);
                                }
                                // Retry-After speaks for the account, not for this one
                                // request: nobody pushes before it has passed.
                                if let ApiError::Throttled {
                                    retry_after: Some(after),
                                    ..
                                } = e
                                {
                                    pacer.hold(*after);
                                }
                                warn!(
                                    log,
                                    "sync: pushing {} records of list \"{list_id}\" failed: {e}; retry {n} in {:.1} s.",
                                    records.len(),
                                    wait.as_secs_f64()
                                )
                            },
                        )
                        .await?;
                    evidence.note(&outcome);
                    Ok(outcome)
                }
            };
            let delivery = deliver(&batch, &push, || evidence.holds()).await?;
            let what = format!(
                "Ometria rejected {} of {} records of list \"{list_id}\"",
                delivery.rejected.len(),
                batch.len()
            );
            rejected_log.keep(&list_id, &delivery.rejected, &what, &log)?;
            Ok(Pushed {
                accepted: delivery.accepted(&batch),
                outcome: delivery.outcome,
                answer_lost: answer_lost.get(),
            })
        };
        Box::pin(work.into_actor(self))
    }
}

impl Handler<StopWorker> for Writer {
    type Result = ();

    fn handle(&mut self, _: StopWorker, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
