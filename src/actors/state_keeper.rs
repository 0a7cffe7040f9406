//! The StateKeeper: the only writer of `state.json`.
//!
//! Every read goes through it (so the Controller always sees results that
//! are not on disk yet), and every write is a re-read, a patch of the
//! owned fields of the entries whose syncs ended, and an atomic replace.
//!
//! Writes are coalesced (issue 19): a result opens a window
//! (`IMPORTER_STATE_WRITE_SECONDS`, a second by default) and every result
//! that ends within it goes out in the one write that closes it, so the
//! writes of a pass follow its duration, not its number of lists (each
//! write reads and writes the whole file). A tick writes what waits
//! before it reads, and [`Flush`] at the end of a run writes everything.
//! A crash loses at most one window of results: their cursors did not
//! move, so those lists sync again. When the file cannot be read or
//! written, results wait in memory and are tried again every second;
//! nothing is written meanwhile.
//!
//! A write re-reads the file, and parses it again only if it changed
//! since this process last read or wrote it (a hand edit): otherwise the
//! view, which already holds the results, is what the patch would give
//! ([`Fingerprint`]), and a tick's read of an unchanged file is as cheap.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use slog::{error, info, warn, Logger};

use super::messages::{FindEntries, Flush, LoadEntries, LoadedEntries, SyncFinished};
use crate::state::{format_timestamp, Entry, Fingerprint, PatchOutcome, StateDocument, StateFile, SyncRecord};
use crate::telemetry::metrics::Metrics;

/// How often results held in memory are tried again while the file
/// cannot be read or written.
const PENDING_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How long results wait to be written together by default
/// (`IMPORTER_STATE_WRITE_SECONDS`).
pub const DEFAULT_WRITE_WINDOW: Duration = Duration::from_secs(1);

pub struct StateKeeper {
    file: StateFile,
    metrics: Arc<Metrics>,
    log: Logger,
    /// The last good document, with `pending` applied.
    view: StateDocument,
    /// The text of the file `view` was read from or written as, before
    /// `pending` was applied; `None` until the first read or write.
    known: Option<Fingerprint>,
    /// Results not written yet, oldest first, with what applying each to
    /// the view did.
    pending: Vec<(SyncRecord, PatchOutcome)>,
    /// The last read/write problem logged, so each is logged once.
    problem: Option<String>,
    /// The entry warnings last logged.
    warnings: Vec<String>,
    /// How long a result waits for others to be written with it.
    window: Duration,
    /// A `WritePending` is on its way: the window of the pending results is open.
    write_due: bool,
}

impl StateKeeper {
    /// Starts from a document the caller already read successfully;
    /// results are written [`DEFAULT_WRITE_WINDOW`] after the first of them
    /// (see [`StateKeeper::with_write_window`]).
    pub fn new(file: StateFile, document: StateDocument, metrics: Arc<Metrics>, log: Logger) -> StateKeeper {
        let mut keeper = StateKeeper {
            file,
            metrics,
            log,
            view: document,
            known: None,
            pending: vec![],
            problem: None,
            warnings: vec![],
            window: DEFAULT_WRITE_WINDOW,
            write_due: false,
        };
        keeper.log_warnings();
        keeper
    }

    /// Results are written `window` after the first of them, together with
    /// every one that came meanwhile; zero writes each as soon as the
    /// results already sent have arrived.
    pub fn with_write_window(mut self, window: Duration) -> StateKeeper {
        self.window = window;
        self
    }

    /// Re-reads the file (writing pending results first); if it cannot be
    /// read, the last good view stands. A file as this process last read
    /// or wrote it is not parsed again.
    fn refresh(&mut self) {
        if !self.pending.is_empty() {
            self.write_pending();
            return;
        }
        self.metrics.state_file_reads.inc();
        if let Some(known) = self.known {
            match self.file.holds(known) {
                Ok(true) => return self.recovered(),
                Ok(false) => {}
                Err(e) => return self.report(e.to_string()),
            }
        }
        match self.file.load_fingerprinted() {
            Ok((doc, text)) => {
                self.view = doc;
                self.known = Some(text);
                self.recovered();
                self.log_warnings();
            }
            Err(e) => {
                self.report(e.to_string());
            }
        }
    }

    /// Writes every pending result in one write, or keeps them all. If the
    /// file is as this process last read or wrote it, the view (which holds
    /// the results) is written as it is; otherwise the file is parsed again
    /// and the results patched into it, so that a hand edit wins.
    fn write_pending(&mut self) {
        self.metrics.state_file_reads.inc();
        if let Some(known) = self.known {
            match self.file.replace_known(known, &self.view.render()) {
                Ok(Some(text)) => {
                    self.metrics.state_file_writes.inc();
                    self.known = Some(text);
                    self.recovered();
                    for (record, outcome) in std::mem::take(&mut self.pending) {
                        self.log_outcome(&record, outcome);
                    }
                    return;
                }
                Ok(None) => {} // changed by hand since: patched below
                Err(e) => return self.report(e.to_string()),
            }
        }
        let records: Vec<SyncRecord> = self.pending.iter().map(|(record, _)| record.clone()).collect();
        let written = self
            .file
            .patch(|doc| records.iter().map(|r| doc.apply(r)).collect::<Vec<PatchOutcome>>());
        match written {
            Ok(patched) => {
                if patched.document.changes() > 0 {
                    self.metrics.state_file_writes.inc();
                }
                self.pending.clear();
                self.view = patched.document;
                self.known = Some(patched.text);
                self.recovered();
                self.log_warnings();
                for (record, outcome) in records.iter().zip(patched.result) {
                    self.log_outcome(record, outcome);
                }
            }
            Err(e) => {
                self.report(e.to_string());
            }
        }
    }

    /// Has the pending results written `after` from now, unless a write is
    /// already on its way (it takes them too).
    fn schedule_write(&mut self, after: Duration, ctx: &mut Context<Self>) {
        if self.write_due {
            return;
        }
        self.write_due = true;
        if after.is_zero() {
            // After the results already in the mailbox: one write for
            // syncs that end together.
            ctx.notify(WritePending);
        } else {
            ctx.notify_later(WritePending, after);
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
}

impl Handler<LoadEntries> for StateKeeper {
    type Result = MessageResult<LoadEntries>;

    fn handle(&mut self, _: LoadEntries, ctx: &mut Context<Self>) -> Self::Result {
        self.refresh();
        if !self.pending.is_empty() {
            self.schedule_write(PENDING_RETRY_INTERVAL, ctx);
        }
        let scan = self.view.entries();
        MessageResult(LoadedEntries {
            invalid: scan.warnings.iter().filter(|w| w.skips_entry()).count(),
            entries: scan.entries,
        })
    }
}

impl Handler<FindEntries> for StateKeeper {
    type Result = MessageResult<FindEntries>;

    fn handle(&mut self, find: FindEntries, _: &mut Context<Self>) -> Self::Result {
        let entries: Vec<Entry> = match find {
            FindEntries::Keys(keys) => keys.iter().filter_map(|key| self.view.entry(key)).collect(),
            FindEntries::List(list_id) => self.view.entries_of_list(&list_id),
        };
        MessageResult(entries)
    }
}

impl Handler<SyncFinished> for StateKeeper {
    type Result = ();

    fn handle(&mut self, finished: SyncFinished, ctx: &mut Context<Self>) {
        let Ok(record) = finished.result else { return };
        // The view shows the result at once, written or not, so the
        // Controller never re-syncs an entry whose result waits in memory.
        let outcome = self.view.apply(&record);
        self.pending.push((record, outcome));
        self.schedule_write(self.window, ctx);
    }
}

/// StateKeeper → itself: write the results that came in.
#[derive(Message)]
#[rtype(result = "()")]
struct WritePending;

impl Handler<WritePending> for StateKeeper {
    type Result = ();

    fn handle(&mut self, _: WritePending, ctx: &mut Context<Self>) {
        self.write_due = false;
        if !self.pending.is_empty() {
            self.write_pending();
        }
        if !self.pending.is_empty() {
            self.schedule_write(PENDING_RETRY_INTERVAL, ctx);
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
    use chrono::{DateTime, SubsecRound, Utc};
    use serde_json::{json, Value};
    use slog::{o, Discard};

    fn key(i: usize) -> EntryKey {
        EntryKey {
            list_id: format!("l{i}"),
            rank: 0,
        }
    }

    /// The result of a successful sync of `l{i}`, its cursor null at its start.
    fn finished(i: usize, t0: DateTime<Utc>) -> SyncFinished {
        SyncFinished {
            key: key(i),
            result: Ok(SyncRecord {
                key: key(i),
                cursor_at_start: Value::Null,
                t0,
                elapsed: Duration::from_secs(1),
                total_updates: i as u64,
            }),
        }
    }

    /// A state file of `n` entries `l0`, `l1`… and a keeper of it with
    /// this window; the keeper, its metrics and the file's path.
    fn keeper(
        dir: &std::path::Path,
        n: usize,
        window: Duration,
    ) -> (Addr<StateKeeper>, Arc<Metrics>, std::path::PathBuf) {
        let path = dir.join("state.json");
        let entries: Vec<String> = (0..n)
            .map(|i| format!(r#"{{"list_id": "l{i}", "note": {i}}}"#))
            .collect();
        std::fs::write(&path, format!("[{}]", entries.join(", "))).unwrap();
        let file = StateFile::in_dir(dir);
        let document = file.load().unwrap();
        let metrics = Arc::new(Metrics::new());
        let keeper = StateKeeper::new(file, document, metrics.clone(), Logger::root(Discard, o!()))
            .with_write_window(window)
            .start();
        (keeper, metrics, path)
    }

    /// Lets the keeper handle what came due (a window that closed under
    /// paused time) before the test looks: a few round trips of a message
    /// that costs nothing.
    async fn settle(keeper: &Addr<StateKeeper>) {
        for _ in 0..3 {
            keeper.send(FindEntries::Keys(vec![])).await.unwrap();
        }
    }

    fn read(path: &std::path::Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[actix_rt::test]
    async fn results_that_come_in_together_are_written_together() {
        let dir = tempfile::tempdir().unwrap();
        let (keeper, metrics, path) = keeper(dir.path(), 30, Duration::ZERO);
        let t0 = Utc::now().trunc_subsecs(0);
        for i in 0..30 {
            keeper.do_send(finished(i, t0));
        }
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        assert_eq!(metrics.state_file_writes.get(), 1);
        let written = read(&path);
        assert!((0..30).all(|i| written[i]["total_updates"] == i), "{written}");
    }

    /// Results that end one by one within a window go out in the one write
    /// that closes it, not a write each (issue 19).
    #[actix_rt::test]
    async fn results_ending_one_by_one_within_a_window_are_written_once() {
        tokio::time::pause();
        let dir = tempfile::tempdir().unwrap();
        let (keeper, metrics, path) = keeper(dir.path(), 30, Duration::from_secs(1));
        let before = std::fs::read(&path).unwrap();
        let t0 = Utc::now().trunc_subsecs(0);
        // Ten results 90 ms apart: all within the window the first opened.
        for i in 0..10 {
            keeper.send(finished(i, t0)).await.unwrap();
            tokio::time::advance(Duration::from_millis(90)).await;
        }
        assert_eq!(metrics.state_file_writes.get(), 0, "written before the window closed");
        assert_eq!(std::fs::read(&path).unwrap(), before);
        settle(&keeper).await;
        assert_eq!(metrics.state_file_writes.get(), 0, "written before the window closed");
        tokio::time::advance(Duration::from_millis(200)).await;
        settle(&keeper).await;
        assert_eq!(metrics.state_file_writes.get(), 1, "one write when the window closed");
        let state = read(&path);
        assert!((0..10).all(|i| state[i]["total_updates"] == i), "{state}");
        assert!((10..30).all(|i| state[i].get("latest_timestamp").is_none()), "{state}");
        // The next result opens the next window.
        keeper.send(finished(10, t0)).await.unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        settle(&keeper).await;
        assert_eq!(metrics.state_file_writes.get(), 2);
        assert_eq!(read(&path)[10]["total_updates"], 10);
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        assert_eq!(metrics.state_file_writes.get(), 2, "nothing was left to write");
    }

    /// The Controller plans with results not yet written: the view serves
    /// them at once, by key, by list and at a tick (which writes them first).
    #[actix_rt::test]
    async fn results_waiting_for_their_write_are_served_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (keeper, metrics, path) = keeper(dir.path(), 3, Duration::from_secs(3600));
        let t0 = Utc::now().trunc_subsecs(0);
        keeper.send(finished(1, t0)).await.unwrap();
        let found = keeper
            .send(FindEntries::Keys(vec![key(2), key(1), key(7)]))
            .await
            .unwrap();
        let cursors: Vec<(String, Option<DateTime<Utc>>)> =
            found.into_iter().map(|e| (e.key.list_id, e.cursor)).collect();
        assert_eq!(cursors, [("l2".to_owned(), None), ("l1".to_owned(), Some(t0))]);
        let of_list = keeper.send(FindEntries::List("l1".into())).await.unwrap();
        assert_eq!(of_list[0].last_total_updates, Some(1));
        assert_eq!(metrics.state_file_writes.get(), 0);
        assert!(read(&path)[1].get("latest_timestamp").is_none());
        // A tick writes what waits, then answers from the file.
        let all = keeper.send(LoadEntries).await.unwrap().entries;
        assert_eq!(all[1].cursor, Some(t0));
        assert_eq!(metrics.state_file_writes.get(), 1);
        assert_eq!(read(&path)[1]["total_updates"], 1);
    }

    /// A hand edit made while a result waits for its window wins as it
    /// does against a write at once: the write re-reads the file and
    /// patches only the importer's fields of that entry.
    #[actix_rt::test]
    async fn a_hand_edit_made_while_a_result_waits_wins() {
        let dir = tempfile::tempdir().unwrap();
        let (keeper, metrics, path) = keeper(dir.path(), 3, Duration::from_secs(3600));
        let t0 = Utc::now().trunc_subsecs(0);
        // A first write: the keeper knows the file as it wrote it.
        keeper.send(finished(2, t0)).await.unwrap();
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        let written = std::fs::read(&path).unwrap();
        keeper.send(finished(0, t0)).await.unwrap();
        keeper.send(finished(1, t0)).await.unwrap();
        // The user sets l0's cursor, adds a key to l1 and an entry, and
        // saves as editors do (a new file renamed over).
        let mut edited = read(&path);
        edited[0]["latest_timestamp"] = json!("2020-01-01T00:00:00");
        edited[1]["mine"] = json!(true);
        edited.as_array_mut().unwrap().push(json!({"list_id": "new"}));
        std::fs::write(dir.path().join("edit.tmp"), serde_json::to_vec(&edited).unwrap()).unwrap();
        std::fs::rename(dir.path().join("edit.tmp"), &path).unwrap();
        assert_eq!(metrics.state_file_writes.get(), 1);
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        assert_eq!(metrics.state_file_writes.get(), 2);
        let state = read(&path);
        assert_eq!(
            state[0]["latest_timestamp"], "2020-01-01T00:00:00",
            "the user's cursor wins"
        );
        assert_eq!(state[0]["total_updates"], 0);
        assert_eq!(state[1]["mine"], true);
        assert_eq!(state[1]["latest_timestamp"], format_timestamp(t0));
        assert_eq!(state[2]["total_updates"], 2);
        assert_eq!(state[3], json!({"list_id": "new"}));
        // Not edited again: the next write starts from what the keeper wrote.
        keeper
            .send(finished(1, t0 + chrono::Duration::seconds(5)))
            .await
            .unwrap();
        assert_eq!(keeper.send(Flush).await.unwrap(), 0);
        let state = read(&path);
        assert_eq!(state[0]["latest_timestamp"], "2020-01-01T00:00:00");
        assert_eq!(state[1]["mine"], true);
        assert_eq!(state[3], json!({"list_id": "new"}));
        assert_ne!(std::fs::read(&path).unwrap(), written);
    }

    /// Results that wait while the file cannot be read are all written
    /// once it can, without a tick asking.
    #[actix_rt::test]
    async fn results_wait_while_the_file_is_unreadable_then_are_written() {
        tokio::time::pause();
        let dir = tempfile::tempdir().unwrap();
        let (keeper, metrics, path) = keeper(dir.path(), 2, Duration::from_secs(1));
        let good = std::fs::read(&path).unwrap();
        std::fs::write(&path, "[{\"list_id\": ").unwrap();
        let t0 = Utc::now().trunc_subsecs(0);
        keeper.send(finished(0, t0)).await.unwrap();
        for _ in 0..3 {
            tokio::time::advance(Duration::from_millis(1100)).await;
            settle(&keeper).await;
        }
        assert_eq!(metrics.state_file_writes.get(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "[{\"list_id\": ");
        std::fs::write(&path, good).unwrap();
        tokio::time::advance(Duration::from_millis(1100)).await;
        settle(&keeper).await;
        assert_eq!(metrics.state_file_writes.get(), 1);
        assert_eq!(read(&path)[0]["latest_timestamp"], format_timestamp(t0));
    }
}
