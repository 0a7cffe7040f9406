//! A Writer pushes one batch of at most 100 contacts at a time to Ometria,
//! paced by the global request rate and with retries.

use std::rc::Rc;
use std::sync::Arc;

use actix::prelude::*;
use slog::{warn, Logger};

use super::messages::{PushBatch, StopWorker};
use crate::api::ApiError;
use crate::limits::Pacer;
use crate::ometria::{record_ids, OmetriaClient, PushOutcome};
use crate::retry::RetryPolicy;

pub struct Writer {
    pub client: OmetriaClient,
    pub pacer: Arc<Pacer>,
    pub retry: RetryPolicy,
    pub list_id: Rc<str>,
    pub log: Logger,
}

impl Actor for Writer {
    type Context = Context<Self>;
}

impl Handler<PushBatch> for Writer {
    type Result = ResponseActFuture<Self, Result<PushOutcome, ApiError>>;

    fn handle(&mut self, PushBatch(batch): PushBatch, _: &mut Context<Self>) -> Self::Result {
        let (client, pacer, retry, list_id, log) = (
            self.client.clone(),
            self.pacer.clone(),
            self.retry,
            self.list_id.clone(),
            self.log.clone(),
        );
        let work = async move {
            let outcome = retry
                .run(
                    || async {
                        pacer.wait_turn().await;
                        client.push(&batch).await
                    },
                    |e, n, wait| {
                        warn!(
                            log,
                            "sync: pushing {} records of list \"{list_id}\" failed: {e}; retry {n} in {:.1} s.",
                            batch.len(),
                            wait.as_secs_f64()
                        )
                    },
                )
                .await?;
            if outcome.rejected > 0 {
                let ids = record_ids(&batch);
                warn!(log, "sync: Ometria rejected {} of {} records of list \"{list_id}\"; the batch held ids {}.",
                    outcome.rejected, batch.len(), ids.join(","); "rejected" => outcome.rejected);
            }
            Ok(outcome)
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
