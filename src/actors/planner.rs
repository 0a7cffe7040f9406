//! The Planner runs `plan` (issue 17): a planning ListSync per entry to
//! plan, at most `concurrent` at once (as the Controller caps syncs), and
//! hands back every entry's plan, in the order asked, once all are done.
//! It pushes nothing and writes nothing (see [`ListSync::planning`]).

use std::collections::VecDeque;

use actix::prelude::*;
use tokio::sync::oneshot;

use super::list_sync::{ListSync, SyncDeps, SyncJob};
use super::messages::PlanFinished;
use crate::state::EntryKey;
use crate::sync::EntryPlan;

/// One entry's plan, or why its reads failed.
pub type PlanResult = (EntryKey, Result<EntryPlan, String>);

pub struct Planner {
    deps: SyncDeps,
    /// Entries not started yet, in order.
    waiting: VecDeque<SyncJob>,
    /// The order asked for, for the answer.
    order: Vec<EntryKey>,
    running: usize,
    concurrent: usize,
    samples: usize,
    results: Vec<PlanResult>,
    done: Option<oneshot::Sender<Vec<PlanResult>>>,
}

impl Planner {
    /// Plans `jobs`, `concurrent` at a time (at least one), keeping up to
    /// `samples` sample records each; `done` gets the plans in `jobs`' order.
    pub fn new(
        jobs: Vec<SyncJob>,
        deps: SyncDeps,
        concurrent: usize,
        samples: usize,
        done: oneshot::Sender<Vec<PlanResult>>,
    ) -> Planner {
        Planner {
            deps,
            order: jobs.iter().map(|j| j.entry.key.clone()).collect(),
            waiting: jobs.into(),
            running: 0,
            concurrent: concurrent.max(1),
            samples,
            results: vec![],
            done: Some(done),
        }
    }

    fn start_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.running < self.concurrent {
            let Some(job) = self.waiting.pop_front() else { break };
            self.running += 1;
            ListSync::planning(job, self.deps.clone(), ctx.address().recipient(), self.samples).start();
        }
        if self.running == 0 && self.waiting.is_empty() {
            let mut results = std::mem::take(&mut self.results);
            results.sort_by_key(|(key, _)| self.order.iter().position(|k| k == key));
            if let Some(done) = self.done.take() {
                let _ = done.send(results);
            }
            ctx.stop();
        }
    }
}

impl Actor for Planner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.start_waiting(ctx);
    }
}

impl Handler<PlanFinished> for Planner {
    type Result = ();

    fn handle(&mut self, finished: PlanFinished, ctx: &mut Context<Self>) {
        self.running -= 1;
        self.results.push((finished.key, finished.result));
        self.start_waiting(ctx);
    }
}
