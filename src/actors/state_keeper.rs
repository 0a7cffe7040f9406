//! The StateKeeper: the only writer of `state.json`.
//!
//! Every read goes through it (so the Controller always sees results that
//! are not on disk yet), and every write is a re-read, a patch of the
//! owned fields of one entry, and an atomic replace. When the file cannot
//! be read or written, results wait in memory and are written as soon as
//! it can be; nothing is written meanwhile.

use std::time::Duration;

use actix::prelude::*;
use slog::{error, info, warn, Logger};

use super::messages::{Flush, LoadEntries, SyncFinished};
use crate::state::{format_timestamp, PatchOutcome, StateDocument, StateFile, SyncRecord};

/// How often results held in memory are retried.
const PENDING_RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub struct StateKeeper {
    file: StateFile,
    log: Logger,
    /// The last good document, with `pending` applied.
    view: StateDocument,
    /// Results not written yet, oldest first.
    pending: Vec<SyncRecord>,
    /// The last read/write problem logged, so each is logged once.
    problem: Option<String>,
    /// The entry warnings last logged.
    warnings: Vec<String>,
}

impl StateKeeper {
    /// Starts from a document the caller already read successfully.
    pub fn new(file: StateFile, document: StateDocument, log: Logger) -> StateKeeper {
        let mut keeper = StateKeeper {
            file,
            log,
            view: document,
            pending: vec![],
            problem: None,
            warnings: vec![],
        };
        keeper.log_warnings();
        keeper
    }

    /// Re-reads the file (writing pending results first); if it cannot be
    /// read, the last good view stands.
    fn refresh(&mut self) {
        if !self.pending.is_empty() {
            self.write_pending();
            return;
        }
        match self.file.load() {
            Ok(doc) => {
                self.view = doc;
                self.recovered();
                self.log_warnings();
            }
            Err(e) => {
                self.report(e.to_string());
            }
        }
    }

    /// Writes every pending result in one patch, or keeps them all.
    fn write_pending(&mut self) {
        let records = self.pending.clone();
        let written = self.file.patch(|doc| {
            let outcomes: Vec<PatchOutcome> = records.iter().map(|r| doc.apply(r)).collect();
            (outcomes, doc.clone())
        });
        match written {
            Ok((outcomes, doc)) => {
                self.pending.clear();
                self.view = doc;
                self.recovered();
                self.log_warnings();
                for (record, outcome) in records.iter().zip(outcomes) {
                    self.log_outcome(record, outcome);
                }
            }
            Err(e) => {
                self.report(e.to_string());
            }
        }
    }

    fn log_outcome(&self, record: &SyncRecord, outcome: PatchOutcome) {
        match outcome {
            PatchOutcome::Applied => {}
            PatchOutcome::CursorEditedByUser { current } => {
                warn!(
                self.log,
                "state: latest_timestamp of list {} was edited by hand during its sync; keeping {} instead of \"{}\".",
                record.key, current, format_timestamp(record.t0)
            )
            }
            PatchOutcome::EntryGone => warn!(
                self.log,
                "state: list {} was removed from the state file during its sync; its result is dropped.", record.key
            ),
        }
    }

    fn report(&mut self, problem: String) {
        if self.problem.as_ref() != Some(&problem) {
            let waiting = match self.pending.len() {
                0 => String::new(),
                n => format!(" {n} sync result(s) wait in memory until it can be written."),
            };
            error!(
                self.log,
                "state: {problem}; keeping the last good view, nothing is written.{waiting}"
            );
            self.problem = Some(problem);
        }
    }

    fn recovered(&mut self) {
        if self.problem.take().is_some() {
            info!(self.log, "state: {} is readable again.", self.file.path().display());
        }
    }

    fn log_warnings(&mut self) {
        let warnings: Vec<String> = self.view.entries().warnings.iter().map(ToString::to_string).collect();
        if warnings != self.warnings {
            for w in &warnings {
                warn!(self.log, "state: {w}");
            }
            self.warnings = warnings;
        }
    }
}

impl Actor for StateKeeper {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(PENDING_RETRY_INTERVAL, |keeper, _| {
            if !keeper.pending.is_empty() {
                keeper.write_pending();
            }
        });
    }
}

impl Handler<LoadEntries> for StateKeeper {
    type Result = MessageResult<LoadEntries>;

    fn handle(&mut self, _: LoadEntries, _: &mut Context<Self>) -> Self::Result {
        self.refresh();
        MessageResult(self.view.entries().entries)
    }
}

impl Handler<SyncFinished> for StateKeeper {
    type Result = ();

    fn handle(&mut self, finished: SyncFinished, _: &mut Context<Self>) {
        let Ok(record) = finished.result else { return };
        // The view shows the result at once, written or not, so the
        // Controller never re-syncs an entry whose result waits in memory.
        self.view.apply(&record);
        self.pending.push(record);
        self.write_pending();
    }
}

impl Handler<Flush> for StateKeeper {
    type Result = usize;

    fn handle(&mut self, _: Flush, _: &mut Context<Self>) -> usize {
        if !self.pending.is_empty() {
            self.write_pending();
        }
        self.pending.len()
    }
}
