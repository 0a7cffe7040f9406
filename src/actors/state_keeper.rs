//! The StateKeeper: the only writer of `state.json`.
//!
//! Every read goes through it (so the Controller always sees results that
//! are not on disk yet), and every write is a re-read, a patch of the
//! owned fields of one entry, and an atomic replace. When the file cannot
//! be read or written, results wait in memory and are written as soon as
//! it can be; nothing is written meanwhile.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{error, info, warn, Logger};

use super::messages::{Flush, LoadEntries, SyncFinished};
use crate::state::{format_timestamp, PatchOutcome, StateDocument, StateFile, SyncRecord};
use crate::telemetry::metrics::Metrics;

/// How often results held in memory are retried.
const PENDING_RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub struct StateKeeper {
    file: StateFile,
    metrics: Arc<Metrics>,
    log: Logger,
    /// The last good document, with `pending` applied.
    view: StateDocument,
    /// Results not written yet, oldest first.
    pending: Vec<SyncRecord>,
    /// The last read/write problem logged, so each is logged once.
    problem: Option<String>,
    /// The entry warnings last logged.
    warnings: Vec<String>,
    /// A `WritePending` is on its way.
    write_due: bool,
}

impl StateKeeper {
    /// Starts from a document the caller already read successfully.
    pub fn new(file: StateFile, document: StateDocument, metrics: Arc<Metrics>, log: Logger) -> StateKeeper {
        let mut keeper = StateKeeper {
            file,
            metrics,
            log,
            view: document,
            pending: vec![],
            problem: None,
            warnings: vec![],
            write_due: false,
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
        self.metrics.state_file_reads.inc();
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
        self.metrics.state_file_reads.inc();
        let written = self.file.patch(|doc| {
            let outcomes: Vec<PatchOutcome> = records.iter().map(|r| doc.apply(r)).collect();
            (outcomes, doc.clone())
        });
        match written {
            Ok((outcomes, doc)) => {
                self.metrics.state_file_writes.inc();
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

    fn handle(&mut self, LoadEntries { reread }: LoadEntries, _: &mut Context<Self>) -> Self::Result {
        if reread {
            self.refresh();
        }
        MessageResult(self.view.entries().entries)
    }
}

impl Handler<SyncFinished> for StateKeeper {
    type Result = ();

    fn handle(&mut self, finished: SyncFinished, ctx: &mut Context<Self>) {
        let Ok(record) = finished.result else { return };
        // The view shows the result at once, written or not, so the
        // Controller never re-syncs an entry whose result waits in memory.
        self.view.apply(&record);
        self.pending.push(record);
        // Written once the results already in the mailbox are in too: one
        // write for many syncs that end together, not one each (a write
        // reads, patches and replaces the whole file).
        if !self.write_due {
            self.write_due = true;
            ctx.notify(WritePending);
        }
    }
}

/// StateKeeper → itself: write the results that came in.
#[derive(Message)]
#[rtype(result = "()")]
struct WritePending;

impl Handler<WritePending> for StateKeeper {
    type Result = ();

    fn handle(&mut self, _: WritePending, _: &mut Context<Self>) {
        self.write_due = false;
        if !self.pending.is_empty() {
            self.write_pending();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EntryKey, StateFile};
    use chrono::{SubsecRound, Utc};
    use serde_json::Value;
    use slog::{o, Discard};

    #[actix_rt::test]
    async fn results_that_come_in_together_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let entries: Vec<String> = (0..30).map(|i| format!(r#"{{"list_id": "l{i}"}}"#)).collect();
        std::fs::write(&path, format!("[{}]", entries.join(", "))).unwrap();
        let file = StateFile::in_dir(dir.path());
        let document = file.load().unwrap();
        let metrics = Arc::new(Metrics::new());
        let keeper = StateKeeper::new(file, document, metrics.clone(), Logger::root(Discard, o!())).start();
        let t0 = Utc::now().trunc_subsecs(0);
        for i in 0..30 {
            let key = EntryKey {
                list_id: format!("l{i}"),
                rank: 0,
            };
            let record = SyncRecord {
                key: key.clone(),
                cursor_at_start: Value::Null,
                t0,
                elapsed: Duration::from_secs(1),
                total_updates: i,
            };
            keeper.do_send(SyncFinished {
                key,
                result: Ok(record),
            });
        }
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        assert_eq!(metrics.state_file_writes.get(), 1);
        let written: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert!((0..30).all(|i| written[i]["total_updates"] == i), "{written}");
    }
}
