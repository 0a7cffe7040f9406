//! The Controller owns time and shutdown (SPEC §3, §9): each tick it asks
//! the StateKeeper for the entries, decides LOAD / SYNC / up to date, and
//! starts a ListSync per due entry while fewer than the maximum run. An
//! entry up to date whose list is due for a reconciliation (the Ledger
//! says when its list was last reconciled) gets a Reconciliation in a
//! free slot, after every LOAD and SYNC waiting. It watches the quit file
//! every second, and on a stop request lets running syncs finish within a
//! grace period before abandoning them.
//!
//! Webhook events ([`ListChanged`], issue 18) bring a list's SYNCs
//! forward: the events of a burst make one SYNC of each of its entries
//! once the debounce ran out (see [`Debounce`]), an event during a sync one
//! more after it; lists not in the state file are ignored, with one line.
//! A SYNC so brought forward is the same SYNC as any other (the backoff of
//! a failing entry holds it back as well). An `unsubscribe` with `action`
//! `delete` also starts a [`Deletion`] of the member at once for each
//! entry of its list (queued per ledger key in [`Deletions`]; looked for
//! once more after a sync of the entry that ran meanwhile).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use slog::{error, info, o, warn, Logger};
use tokio::sync::oneshot;

use super::deletion::Deletion;
use super::list_sync::{ListSync, SyncDeps, SyncJob};
use super::messages::{
    AskMappings, AskReconcileStatus, CancelSync, DeletionFinished, FindEntries, Flush, ListChanged, LoadEntries,
    ReconcileFinished, Shutdown, SyncFinished, Tick, FLUSH_TIMEOUT,
};
use super::reconciliation::Reconciliation;
use crate::state::{format_for_log, Entry, EntryKey, OnDelete};
use crate::sync::{
    alert_threshold, decide, delta, due_since, human, lag, reconcile_cap, reconcile_due, refresh_of, trusted_cursor,
    Backoff, Burst, Debounce, Decision, DeletionBatch, Deletions, SyncKind, Upcoming, MAX_QUEUED, RECONCILE_KIND,
};
use crate::webhook::{EventKind, UnsubscribeAction, WebhookEvent};

/// The quit file is looked for this often.
pub const QUIT_FILE_INTERVAL: Duration = Duration::from_secs(1);
pub const QUIT_FILE_NAME: &str = "controller.quit";
/// Above this many entries (or entries waiting for a slot), a tick logs one
/// line for the lists that are up to date (or waiting) instead of one per
/// list: thousands of lists would otherwise log thousands of lines a
/// minute that say nothing new.
pub const LISTS_LOGGED_ONE_BY_ONE: usize = 100;
/// Lists not in the state file that webhook events were ignored for are
/// each logged once, up to this many (a sender with the secret could name
/// any number).
pub const IGNORED_LISTS_LOGGED: usize = 1_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Tick until stopped.
    Go,
    /// One pass: sync what is due now, then stop.
    Once,
}

#[derive(Clone, Debug)]
pub struct ControllerSettings {
    pub mode: RunMode,
    pub tick: Duration,
    pub refresh: Duration,
    pub max_concurrent_lists: usize,
    pub grace: Duration,
    pub quit_file: PathBuf,
    /// `IMPORTER_MAX_DELETE_FRACTION`, for every reconciliation.
    pub max_delete_fraction: f64,
    /// `IMPORTER_WEBHOOK_DEBOUNCE_SECONDS`: from a list's first webhook
    /// event to its SYNC.
    pub webhook_debounce: Duration,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub succeeded: usize,
    pub failed: usize,
    /// Syncs still running when the grace period ended.
    pub abandoned: usize,
    /// Results of successful syncs the state file could not take by the
    /// end (unwritable, or unparseable since): those lists sync again.
    pub unwritten: usize,
    /// Reconciliations that succeeded, and that failed (the fraction
    /// guard's included): they are no syncs and move no cursor.
    pub reconciled: usize,
    pub reconcile_failed: usize,
    /// Members deleted in Mailchimp that the run's reconciliations handled.
    pub deleted: u64,
    /// Entries of the state file skipped as invalid at the last tick, each
    /// named by a WARNING (SPEC §2): a `once` with one is no success.
    pub invalid: usize,
}

impl RunSummary {
    /// Whether every sync and reconciliation of the run succeeded, every
    /// sync was recorded and no entry was skipped as invalid: the exit
    /// code of `once`.
    pub fn all_recorded(&self) -> bool {
        self.failed == 0
            && self.abandoned == 0
            && self.unwritten == 0
            && self.reconcile_failed == 0
            && self.invalid == 0
    }
}

struct RunningSync {
    /// The ListSync or Reconciliation, to abandon it.
    cancel: Recipient<CancelSync>,
    /// The cap of its backoff if it fails: the entry's refresh interval
    /// for a sync, its reconciliation interval for a reconciliation.
    cap: Duration,
    /// The entry's ledger key ([`Entry::ledger_key`]).
    ledger_key: String,
    /// A reconciliation rather than a sync.
    reconciling: bool,
    /// When it started: a sync answers the webhook events before then.
    started_at: DateTime<Utc>,
}

/// Work waiting for a free slot.
#[derive(Clone, Debug)]
enum Job {
    /// A sync, with the webhook events it answers when they made it due,
    /// and since when it has been due (the order of the syncs waiting).
    Sync {
        job: SyncJob,
        webhook: Option<Burst>,
        since: DateTime<Utc>,
    },
    /// A reconciliation of the entry's list (lower priority than any sync).
    Reconcile(Entry),
}

impl Job {
    fn entry(&self) -> &Entry {
        match self {
            Job::Sync { job, .. } => &job.entry,
            Job::Reconcile(entry) => entry,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Job::Sync { job, .. } => job.kind.name(),
            Job::Reconcile(_) => RECONCILE_KIND,
        }
    }
}

/// Which entries a plan decides about.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    /// Every entry, from a fresh read of the file (a tick): a line per
    /// entry, per-entry figures, reconciliations, and the waiting queue
    /// made anew.
    Tick,
    /// These entries, from the StateKeeper's view, whose time has come
    /// ([`Upcoming`]): what is due joins the queue.
    Keys(Vec<EntryKey>),
    /// Every entry of one list, from the StateKeeper's view: its webhook
    /// burst ripened.
    List(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Stopping,
    Finishing,
}

pub struct Controller {
    settings: ControllerSettings,
    deps: SyncDeps,
    log: Logger,
    running: HashMap<EntryKey, RunningSync>,
    backoff: HashMap<EntryKey, Backoff>,
    /// Due entries waiting for a free slot, the longest waiting first;
    /// reconciliations after every sync.
    waiting: VecDeque<Job>,
    /// The entries in `waiting`.
    queued: HashSet<EntryKey>,
    /// When each entry not running or waiting is next worth a look: what
    /// a slot freed between ticks starts, without planning every entry.
    upcoming: Upcoming,
    /// Failed reconciliations, apart from the syncs' backoff: a
    /// reconciliation that fails never holds an entry's SYNC back.
    reconcile_backoff: HashMap<EntryKey, Backoff>,
    /// When each list's last reconciliation of this run succeeded, in case
    /// a view of the ledger predates it.
    reconciled_at: HashMap<EntryKey, DateTime<Utc>>,
    /// Since when each entry has had no cursor to trust — since it was
    /// first seen, or since its `latest_timestamp` was set back to null by
    /// hand to force a LOAD: the lag of an entry that needs a LOAD, and
    /// the order in which such entries wait for a slot. For an entry with
    /// a cursor, the last tick that saw it.
    without_cursor_since: HashMap<EntryKey, DateTime<Utc>>,
    /// Entries behind: logged once on entering, once on leaving.
    behind: BTreeSet<EntryKey>,
    phase: Phase,
    summary: RunSummary,
    /// Syncs finished so far: tells a view that may predate a result.
    finished: u64,
    /// The value of `finished` when each entry's last sync finished.
    finished_at: HashMap<EntryKey, u64>,
    /// A tick's read of the state file has not been answered yet: the
    /// next tick does not ask again (a huge file read more slowly than the
    /// ticks come would otherwise pile the reads up).
    tick_unanswered: bool,
    /// The webhook events not yet answered by a sync of each entry of their list.
    debounce: Debounce,
    /// When each entry's last successful sync of this run started.
    synced_from: HashMap<EntryKey, DateTime<Utc>>,
    /// When the last webhook event of each list came.
    last_webhook_event: HashMap<String, DateTime<Utc>>,
    /// Lists not in the state file whose webhook events were ignored (logged once each).
    ignored_lists: HashSet<String>,
    /// Members webhooks said were deleted, waiting for or in a Deletion.
    deletions: Deletions<Entry>,
    /// The deletion queue was full and said so; cleared once it is down
    /// to half.
    deletions_overflowing: bool,
    done: Option<oneshot::Sender<RunSummary>>,
}

impl Controller {
    pub fn new(settings: ControllerSettings, deps: SyncDeps, done: oneshot::Sender<RunSummary>) -> Controller {
        let log = deps.log.clone();
        let debounce = Debounce::new(settings.webhook_debounce);
        Controller {
            settings,
            deps,
            log,
            running: HashMap::new(),
            backoff: HashMap::new(),
            waiting: VecDeque::new(),
            queued: HashSet::new(),
            upcoming: Upcoming::default(),
            reconcile_backoff: HashMap::new(),
            reconciled_at: HashMap::new(),
            phase: Phase::Running,
            summary: RunSummary::default(),
            without_cursor_since: HashMap::new(),
            behind: BTreeSet::new(),
            finished: 0,
            finished_at: HashMap::new(),
            tick_unanswered: false,
            debounce,
            synced_from: HashMap::new(),
            last_webhook_event: HashMap::new(),
            ignored_lists: HashSet::new(),
            deletions: Deletions::default(),
            deletions_overflowing: false,
            done: Some(done),
        }
    }

    /// Asks the StateKeeper for the entries of `scope`, then plans them: a
    /// tick reads and plans the whole file; a sync that ends, or a webhook
    /// burst, only the entries it concerns (issue 19: the work of one sync
    /// must not grow with the number of lists).
    ///
    /// A view asked for before a sync finished may not show that sync's
    /// result: planning leaves the entries that finished since alone (see
    /// `finished_since`) rather than start them again. (Asking anew instead
    /// never ends when syncs finish faster than the file is read.)
    fn load_and_plan(&mut self, scope: Scope, ctx: &mut Context<Self>) {
        let asked_at = self.finished;
        let tick = scope == Scope::Tick;
        let (find, list) = match scope {
            Scope::Tick => (None, None),
            Scope::Keys(keys) => (Some(FindEntries::Keys(keys)), None),
            Scope::List(list_id) => (Some(FindEntries::List(list_id.clone())), Some(list_id)),
        };
        let (state_keeper, ledger) = (self.deps.state_keeper.clone(), self.deps.ledger.clone());
        // The entries, then when their lists were last reconciled (a
        // ledger that cannot answer reconciles nothing; reconciliations are
        // planned at ticks only).
        let views = async move {
            let (entries, invalid) = match find {
                None => {
                    let loaded = state_keeper.send(LoadEntries).await?;
                    (loaded.entries, Some(loaded.invalid))
                }
                Some(find) => (state_keeper.send(find).await?, None),
            };
            let reconciled: Vec<(String, u32, String)> = entries
                .iter()
                .filter(|e| tick && e.reconcile.is_some())
                .map(|e| (e.key.list_id.clone(), e.key.rank as u32, e.ledger_key()))
                .collect();
            let statuses = match reconciled.is_empty() {
                true => vec![],
                false => ledger
                    .send(AskReconcileStatus { entries: reconciled })
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default(),
            };
            // Entries whose mapping changed since their last full read (a
            // ledger that cannot answer tells of none).
            let keys: Vec<(String, u32)> = entries
                .iter()
                .map(|e| (e.key.list_id.clone(), e.key.rank as u32))
                .collect();
            let remaps: HashSet<EntryKey> = match keys.is_empty() {
                true => HashSet::new(),
                false => match ledger.send(AskMappings { entries: keys }).await {
                    Ok(Ok(fingerprints)) if fingerprints.len() == entries.len() => entries
                        .iter()
                        .zip(fingerprints)
                        .filter(|(e, kept)| e.mapping.changed_since(*kept))
                        .map(|(e, _)| e.key.clone())
                        .collect(),
                    _ => HashSet::new(),
                },
            };
            Ok::<_, MailboxError>((entries, invalid, statuses, remaps))
        };
        let load = views
            .into_actor(self)
            .map(move |views, controller, ctx| {
                if tick {
                    controller.tick_unanswered = false;
                }
                match views {
                    Ok((entries, invalid, statuses, remaps)) => {
                        if let Some(invalid) = invalid {
                            controller.summary.invalid = invalid;
                        }
                        let statuses = statuses
                            .into_iter()
                            .map(|s| {
                                let last = s.last_reconciled.and_then(|t| DateTime::from_timestamp(t, 0));
                                let key = EntryKey {
                                    list_id: s.list_id,
                                    rank: s.rank as usize,
                                };
                                (key, (last, s.holds_members))
                            })
                            .collect();
                        controller.plan(entries, statuses, remaps, asked_at, tick, list.as_deref(), ctx)
                    }
                    Err(e) => {
                        error!(
                            controller.log,
                            "controller: the state keeper is gone ({e}): no result can be recorded any more, so the run ends."
                        );
                        controller.give_up(ctx);
                    }
                }
                if tick && controller.settings.mode == RunMode::Go && controller.phase == Phase::Running {
                    info!(
                        controller.log,
                        "controller: sleeping for {} seconds.",
                        controller.settings.tick.as_secs()
                    );
                }
            });
        ctx.spawn(load);
    }

    /// Whether the entry's last sync finished after the view asked for at
    /// `asked_at` was taken: the view may not show its result.
    fn finished_since(&self, key: &EntryKey, asked_at: u64) -> bool {
        self.finished_at.get(key).is_some_and(|&n| n > asked_at)
    }

    /// Plans what to start. A tick (`verbose`) plans every entry, logs a
    /// line per entry and makes the waiting queue anew; otherwise `entries`
    /// are some (`list`: every entry of that list) and what is due among
    /// them joins the queue. `statuses` holds, per entry, when its list's
    /// last reconciliation succeeded and whether the ledger holds its
    /// members (ticks only).
    #[allow(clippy::too_many_arguments)]
    fn plan(
        &mut self,
        entries: Vec<Entry>,
        statuses: HashMap<EntryKey, (Option<DateTime<Utc>>, bool)>,
        remaps: HashSet<EntryKey>,
        asked_at: u64,
        verbose: bool,
        list: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        let now = Utc::now();
        // Per-entry figures each tick: after every finished sync would cost
        // a pass over all entries per sync, quadratic with many lists.
        if verbose {
            self.observe(&entries, asked_at, now);
            self.settle_webhook_events(&entries, now);
        } else if let Some(list_id) = list {
            self.settle_list_events(list_id, &entries);
        }
        let mut due = vec![];
        let mut reconcile = vec![];
        // Ledger keys reconciling, or about to: one reconciliation of a set
        // of members at a time.
        let mut reconciling: HashSet<String> = self
            .running
            .values()
            .filter(|r| r.reconciling)
            .map(|r| r.ledger_key.clone())
            .collect();
        let (listed, mut up_to_date) = (entries.len(), 0);
        for entry in entries {
            let running = self.running.contains_key(&entry.key);
            if !running && self.finished_since(&entry.key, asked_at) {
                continue; // the next plan sees its result
            }
            if !verbose && self.queued.contains(&entry.key) {
                continue; // waiting already
            }
            let backoff = self.backoff.get(&entry.key);
            let webhook = self
                .debounce
                .wants_sync(&entry.key.list_id, self.synced_from.get(&entry.key).copied())
                .copied();
            let decision = match decide(&entry, now, self.settings.refresh, self.deps.overlap, running, backoff) {
                Decision::Due(SyncKind::Sync { .. }) | Decision::UpToDate { .. } if remaps.contains(&entry.key) => {
                    if verbose {
                        info!(self.entry_log(&entry.key), "controller: list {}'s mapping changed since its last full read: its next SYNC reads every member (only the records that change are pushed).", entry.key);
                    }
                    Decision::Due(SyncKind::Sync {
                        cursor: DateTime::UNIX_EPOCH,
                    })
                }
                Decision::UpToDate { last, .. } if webhook.is_some() => Decision::Due(SyncKind::Sync { cursor: last }),
                decision => decision,
            };
            match &decision {
                Decision::UpToDate { next_due, .. } => self.upcoming.set(&entry.key, *next_due),
                Decision::BackingOff { retry_at, .. } => self.upcoming.set(&entry.key, *retry_at),
                Decision::Due(_) | Decision::Running => self.upcoming.remove(&entry.key),
            }
            match decision {
                Decision::Due(kind) => {
                    let without_cursor = self.without_cursor_since.get(&entry.key).copied().unwrap_or(now);
                    let mut since = due_since(&entry, kind, without_cursor, self.settings.refresh, backoff);
                    if let Some(burst) = &webhook {
                        since = since.min(burst.first + delta(self.settings.webhook_debounce));
                    }
                    due.push(Job::Sync {
                        job: SyncJob { entry, kind },
                        webhook,
                        since,
                    });
                }
                Decision::UpToDate { .. } if verbose && self.reconcile_is_due(&entry, &statuses, &reconciling, now) => {
                    reconciling.insert(entry.ledger_key());
                    reconcile.push(Job::Reconcile(entry));
                }
                _ if !verbose => {}
                Decision::UpToDate { .. } if listed > LISTS_LOGGED_ONE_BY_ONE => up_to_date += 1,
                Decision::UpToDate { last, .. } => info!(
                    self.entry_log(&entry.key),
                    "controller: list {} up to date, last updated on \"{}\".",
                    entry.key,
                    format_for_log(last)
                ),
                Decision::Running => info!(
                    self.entry_log(&entry.key),
                    "controller: list {} is still syncing.", entry.key
                ),
                Decision::BackingOff { failures, retry_at } => info!(
                    self.entry_log(&entry.key),
                    "controller: list {} failed {failures} time(s) in a row; next attempt after \"{}\".",
                    entry.key,
                    format_for_log(retry_at)
                ),
            }
        }
        if up_to_date > 0 {
            info!(
                self.log,
                "controller: {up_to_date} of {listed} lists up to date (one line each only up to {LISTS_LOGGED_ONE_BY_ONE} entries)."
            );
        }
        // A stable sort: file order among entries due since the same moment.
        due.sort_by_key(|job| match job {
            Job::Sync { since, .. } => *since,
            Job::Reconcile(_) => DateTime::<Utc>::MAX_UTC,
        });
        if verbose {
            self.waiting = due.into_iter().chain(reconcile).collect();
            self.queued = self.waiting.iter().map(|job| job.entry().key.clone()).collect();
        } else {
            for job in due {
                self.enqueue(job);
            }
        }
        self.start_waiting(ctx);
        if verbose && self.waiting.len() > LISTS_LOGGED_ONE_BY_ONE {
            let first = &self.waiting[0];
            info!(
                self.log,
                "controller: {} lists wait for a free slot ({} syncs running); list {} (\"{}\") is next.",
                self.waiting.len(),
                self.running.len(),
                first.entry().key,
                first.name()
            );
        } else if verbose {
            for job in &self.waiting {
                info!(
                    self.entry_log(&job.entry().key),
                    "controller: list {} requires \"{}\", waiting for a free slot ({} syncs running).",
                    job.entry().key,
                    job.name(),
                    self.running.len()
                );
            }
        }
        self.finish_once_if_idle(ctx);
    }

    /// Puts a sync among those waiting, in the order of since when each
    /// has been due (before every reconciliation), unless it waits already.
    fn enqueue(&mut self, job: Job) {
        if !self.queued.insert(job.entry().key.clone()) {
            return;
        }
        match &job {
            Job::Sync { since, .. } => {
                let at = self
                    .waiting
                    .partition_point(|j| matches!(j, Job::Sync { since: s, .. } if s <= since));
                self.waiting.insert(at, job);
            }
            Job::Reconcile(_) => self.waiting.push_back(job),
        }
    }

    /// Whether the list of `entry`, up to date, is due for a reconciliation
    /// now: by its interval and the ledger's view (or this run's own, if
    /// newer), not while one of the list runs or its backoff lasts.
    fn reconcile_is_due(
        &self,
        entry: &Entry,
        statuses: &HashMap<EntryKey, (Option<DateTime<Utc>>, bool)>,
        reconciling: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> bool {
        if reconciling.contains(&entry.ledger_key()) {
            return false;
        }
        if self.reconcile_backoff.get(&entry.key).is_some_and(|b| now < b.retry_at) {
            return false;
        }
        let Some(&(last, holds_members)) = statuses.get(&entry.key) else {
            return false;
        };
        let last = last.max(self.reconciled_at.get(&entry.key).copied());
        reconcile_due(entry, last, holds_members, now)
    }

    /// Ripens the webhook bursts whose debounce ran out, ends those every
    /// entry of their list has synced since, and drops those of lists in
    /// no entry (a line per list, the first time).
    fn settle_webhook_events(&mut self, entries: &[Entry], now: DateTime<Utc>) {
        self.debounce.ripen_due(now);
        let synced = entries
            .iter()
            .map(|e| (e.key.list_id.as_str(), self.synced_from.get(&e.key).copied()));
        for list_id in self.debounce.settle(synced) {
            if self.ignored_lists.len() < IGNORED_LISTS_LOGGED && self.ignored_lists.insert(list_id.clone()) {
                info!(
                    self.log.new(o!("list_id" => list_id.clone())),
                    "controller: webhook events of list \"{}\" are ignored: no entry of the state file has it.",
                    list_id.escape_debug()
                );
            }
        }
    }

    /// [`Controller::settle_webhook_events`] for one list, given every
    /// entry of it: its burst ended once each has synced since its last
    /// event, or dropped when none is in the state file.
    fn settle_list_events(&mut self, list_id: &str, entries: &[Entry]) {
        let synced = entries
            .iter()
            .map(|e| (e.key.list_id.as_str(), self.synced_from.get(&e.key).copied()));
        for list_id in self.debounce.settle_lists(&[list_id], synced) {
            if self.ignored_lists.len() < IGNORED_LISTS_LOGGED && self.ignored_lists.insert(list_id.clone()) {
                info!(
                    self.log.new(o!("list_id" => list_id.clone())),
                    "controller: webhook events of list \"{}\" are ignored: no entry of the state file has it.",
                    list_id.escape_debug()
                );
            }
        }
    }

    /// The log of one entry's lines: JSON lines carry its `list_id`.
    fn entry_log(&self, key: &EntryKey) -> Logger {
        self.log.new(o!("list_id" => key.list_id.clone()))
    }

    /// Lag, behind, failures in a row and last-sync figures of every entry,
    /// for the metrics, the health endpoint and the falling-behind log lines
    /// (SPEC §11).
    fn observe(&mut self, entries: &[Entry], asked_at: u64, now: DateTime<Utc>) {
        let m = &self.deps.metrics;
        for gauge in [&m.list_lag_seconds, &m.list_last_sync_duration_seconds] {
            gauge.reset();
        }
        m.list_last_sync_records.reset();
        for gauge in [
            &m.list_behind,
            &m.list_sync_failures_in_a_row,
            &m.list_reconcile_failing,
            &m.list_deletions_held,
        ] {
            gauge.reset();
        }
        m.list_webhook_event_age_seconds.reset();
        let mut present = HashSet::new();
        for entry in entries {
            let key = &entry.key;
            present.insert(key.clone());
            let cursor = trusted_cursor(entry, now, self.deps.overlap);
            let without_cursor = match cursor {
                Some(_) => {
                    self.without_cursor_since.insert(key.clone(), now);
                    now
                }
                None => *self.without_cursor_since.entry(key.clone()).or_insert(now),
            };
            let lag = lag(cursor, without_cursor, now);
            let threshold = delta(alert_threshold(entry, self.settings.refresh));
            // A result the view may not show changes nothing until the next tick.
            let is_behind = if self.finished_since(key, asked_at) {
                self.behind.contains(key)
            } else {
                lag > threshold
            };
            let rank = (key.rank + 1).to_string();
            let labels = [key.list_id.as_str(), rank.as_str()];
            m.list_lag_seconds
                .with_label_values(&labels)
                .set(lag.num_milliseconds().max(0) as f64 / 1000.0);
            m.list_behind.with_label_values(&labels).set(i64::from(is_behind));
            let failures = self.backoff.get(key).map_or(0, |b| b.failures);
            m.list_sync_failures_in_a_row
                .with_label_values(&labels)
                .set(i64::from(failures));
            let reconcile = self.deps.health.reconcile_state(key);
            m.list_reconcile_failing
                .with_label_values(&labels)
                .set(i64::from(reconcile.is_some()));
            m.list_deletions_held
                .with_label_values(&labels)
                .set(i64::from(reconcile == Some(true)));
            if let Some(seconds) = entry.last_elapsed_seconds {
                m.list_last_sync_duration_seconds
                    .with_label_values(&labels)
                    .set(seconds);
            }
            if let Some(records) = entry.last_total_updates {
                m.list_last_sync_records.with_label_values(&labels).set(records as i64);
            }
            if let Some(&event) = self.last_webhook_event.get(&key.list_id) {
                m.list_webhook_event_age_seconds
                    .with_label_values(&labels)
                    .set((now - event).num_milliseconds().max(0) as f64 / 1000.0);
            }
            let since = match (cursor, entry.cursor) {
                (Some(c), _) => format!("it last synced on \"{}\"", format_for_log(c)),
                (None, None) => format!(
                    "it has had no latest_timestamp since \"{}\"",
                    format_for_log(without_cursor)
                ),
                (None, Some(future)) => format!(
                    "its latest_timestamp \"{}\" lies in the future and no LOAD has finished since \"{}\"",
                    format_for_log(future),
                    format_for_log(without_cursor)
                ),
            };
            if is_behind && self.behind.insert(key.clone()) {
                error!(
                    self.entry_log(key).new(o!("behind" => true)),
                    "controller: list {key} is behind: {since}, {} ago (alert after {}).",
                    human(lag),
                    human(threshold)
                );
            } else if !is_behind && self.behind.remove(key) {
                error!(
                    self.entry_log(key).new(o!("behind" => false)),
                    "controller: list {key} has caught up: {since}."
                );
            }
        }
        // An entry removed from the file is forgotten: added back, it is new.
        self.without_cursor_since.retain(|key, _| present.contains(key));
        self.finished_at.retain(|key, _| present.contains(key));
        self.backoff.retain(|key, _| present.contains(key));
        self.reconcile_backoff.retain(|key, _| present.contains(key));
        self.behind.retain(|key| present.contains(key));
        self.synced_from.retain(|key, _| present.contains(key));
        self.upcoming.retain(|key| present.contains(key));
        let lists: HashSet<&str> = present.iter().map(|key| key.list_id.as_str()).collect();
        self.last_webhook_event
            .retain(|list_id, _| lists.contains(list_id.as_str()));
        self.deps
            .health
            .set_behind(self.behind.iter().map(ToString::to_string).collect());
        self.deps.health.retain_failing(|key| present.contains(key));
    }

    fn start_waiting(&mut self, ctx: &mut Context<Self>) {
        while self.running.len() < self.settings.max_concurrent_lists {
            let Some(job) = self.waiting.pop_front() else { break };
            self.queued.remove(&job.entry().key);
            let (job, webhook) = match job {
                Job::Sync { job, webhook, .. } => (job, webhook),
                Job::Reconcile(entry) => {
                    self.start_reconciliation(entry, ctx);
                    continue;
                }
            };
            // A LOAD of an entry with a cursor: `decide` found it in the future.
            if let (SyncKind::Load, Some(cursor)) = (job.kind, job.entry.cursor) {
                warn!(
                    self.entry_log(&job.entry.key),
                    "controller: list {} has latest_timestamp \"{}\", in the future by more than the {} s overlap (a local time, or a clock set back?): a SYNC from it would skip the changes until then, so the whole list LOADs.",
                    job.entry.key,
                    format_for_log(cursor),
                    self.deps.overlap.as_secs()
                );
            }
            // The burst as it is now: events may have joined it since the plan.
            match webhook.and_then(|_| self.debounce.burst(&job.entry.key.list_id).copied()) {
                Some(burst) => info!(
                    self.entry_log(&job.entry.key),
                    "controller: list {} changed in Mailchimp ({} webhook event(s) since \"{}\"): requires \"{}\", firing...",
                    job.entry.key,
                    burst.events,
                    format_for_log(burst.first),
                    job.kind.name()
                ),
                None => info!(
                    self.entry_log(&job.entry.key),
                    "controller: list {} requires \"{}\", firing...",
                    job.entry.key,
                    job.kind.name()
                ),
            }
            let key = job.entry.key.clone();
            self.debounce.sync_started(&key.list_id);
            let ledger_key = job.entry.ledger_key();
            let cap = refresh_of(&job.entry, self.settings.refresh);
            let sync = ListSync::new(job, self.deps.clone(), ctx.address().recipient()).start();
            self.running.insert(
                key,
                RunningSync {
                    cancel: sync.recipient(),
                    cap,
                    ledger_key,
                    reconciling: false,
                    started_at: Utc::now(),
                },
            );
        }
    }

    fn start_reconciliation(&mut self, entry: Entry, ctx: &mut Context<Self>) {
        // The entry may have started a sync since it was planned.
        if self.running.contains_key(&entry.key) {
            return;
        }
        info!(
            self.entry_log(&entry.key),
            "controller: list {} requires \"{RECONCILE_KIND}\", firing...", entry.key
        );
        let key = entry.key.clone();
        let ledger_key = entry.ledger_key();
        let cap = reconcile_cap(&entry);
        let reconciliation = Reconciliation::new(
            entry,
            self.deps.clone(),
            self.settings.max_delete_fraction,
            ctx.address().recipient(),
        )
        .start();
        self.running.insert(
            key,
            RunningSync {
                cancel: reconciliation.recipient(),
                cap,
                ledger_key,
                reconciling: true,
                started_at: Utc::now(),
            },
        );
    }

    fn finish_once_if_idle(&mut self, ctx: &mut Context<Self>) {
        if self.settings.mode == RunMode::Once && self.running.is_empty() && self.waiting.is_empty() {
            self.finish(ctx);
        }
    }

    /// Ends the run without a summary (the run reports it as lost): with
    /// the StateKeeper gone, nothing can be recorded, and a daemon that went
    /// on would sync the same lists again and again. Running syncs are
    /// abandoned; their cursors stay.
    fn give_up(&mut self, ctx: &mut Context<Self>) {
        for (_, running) in self.running.drain() {
            running.cancel.do_send(CancelSync);
        }
        self.waiting.clear();
        self.queued.clear();
        self.phase = Phase::Finishing;
        self.done = None;
        ctx.stop();
    }

    fn abandon_running(&mut self, ctx: &mut Context<Self>) {
        let running: Vec<(EntryKey, RunningSync)> = self.running.drain().collect();
        for (key, running) in running {
            warn!(
                self.entry_log(&key),
                "controller: abandoning the sync of list {key}; its latest_timestamp is unchanged."
            );
            running.cancel.do_send(CancelSync);
            self.summary.abandoned += 1;
        }
        self.finish(ctx);
    }

    /// Lets the StateKeeper write what it can, removes the quit file, and ends the run.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.phase == Phase::Finishing {
            return;
        }
        self.phase = Phase::Finishing;
        let flush = self.deps.state_keeper.send(Flush).timeout(FLUSH_TIMEOUT).into_actor(self).map(
            |unwritten, controller, ctx| {
                match unwritten {
                    Ok(0) => {}
                    Ok(n) => {
                        error!(controller.log,
                            "controller: {n} sync result(s) could not be written to the state file; those lists will sync again.");
                        controller.summary.unwritten = n;
                    }
                    Err(e) => {
                        error!(controller.log, "controller: the state keeper did not confirm its last writes ({e}).");
                        // Any of this run's results may be among them.
                        controller.summary.unwritten = controller.summary.succeeded;
                    }
                }
                match std::fs::remove_file(&controller.settings.quit_file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => warn!(controller.log, "controller: cannot remove {}: {e}", controller.settings.quit_file.display()),
                }
                info!(controller.log, "controller: done.");
                if let Some(done) = controller.done.take() {
                    let _ = done.send(controller.summary);
                }
                ctx.stop();
            },
        );
        ctx.spawn(flush);
    }
}

impl Actor for Controller {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        info!(self.log, "controller: starting...");
        match std::fs::remove_file(&self.settings.quit_file) {
            Ok(()) => warn!(self.log, "controller: removed a quit file left from an earlier run."),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!(self.log, "controller: cannot remove the old quit file: {e}"),
        }
        ctx.run_interval(QUIT_FILE_INTERVAL, |controller, ctx| {
            if controller.settings.quit_file.exists() {
                ctx.notify(Shutdown {
                    reason: "quit file found".into(),
                    immediate: false,
                });
            }
        });
        ctx.notify(Tick);
        if self.settings.mode == RunMode::Go {
            ctx.run_interval(self.settings.tick, |_, ctx| ctx.notify(Tick));
        }
    }
}

impl Handler<Tick> for Controller {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running || self.tick_unanswered {
            return;
        }
        self.tick_unanswered = true;
        let now = Utc::now();
        self.deps.health.ticked(now.timestamp());
        self.deps
            .metrics
            .last_tick_timestamp_seconds
            .set(now.timestamp() as f64);
        info!(self.log, "controller: checking all lists.");
        self.load_and_plan(Scope::Tick, ctx);
    }
}

impl Handler<SyncFinished> for Controller {
    type Result = ();

    fn handle(&mut self, finished: SyncFinished, ctx: &mut Context<Self>) {
        let Some(running) = self.running.remove(&finished.key) else {
            return;
        };
        self.finished += 1;
        self.finished_at.insert(finished.key.clone(), self.finished);
        self.deps
            .health
            .sync_ended(&finished.key, finished.result.as_ref().err().map(String::as_str));
        match &finished.result {
            Ok(record) => {
                self.summary.succeeded += 1;
                self.backoff.remove(&finished.key);
                self.synced_from.insert(finished.key.clone(), running.started_at);
                // Due again after its refresh interval (`cap`), or at once
                // if a webhook event came while it ran.
                let again = self
                    .debounce
                    .wants_sync(&finished.key.list_id, Some(running.started_at))
                    .is_some();
                let next = match again {
                    true => Utc::now(),
                    false => record.t0 + delta(running.cap),
                };
                self.upcoming.set(&finished.key, next);
            }
            Err(_) => {
                self.summary.failed += 1;
                let next = Backoff::after_failure(self.backoff.get(&finished.key), Utc::now(), running.cap);
                info!(
                    self.entry_log(&finished.key),
                    "controller: list {} failed; next attempt after \"{}\".",
                    finished.key,
                    format_for_log(next.retry_at)
                );
                self.backoff.insert(finished.key.clone(), next);
                self.upcoming.set(&finished.key, next.retry_at);
            }
        }
        // Members deleted during the sync: it may have pushed them back.
        if self.phase == Phase::Running {
            if let Some(batch) = self.deletions.sync_ended(&running.ledger_key) {
                self.start_deletion(batch, ctx);
            }
        }
        self.slot_freed(ctx);
    }
}

impl Controller {
    /// A sync or reconciliation ended: start what waits, or finish.
    fn slot_freed(&mut self, ctx: &mut Context<Self>) {
        match (self.phase, self.settings.mode) {
            (Phase::Finishing, _) => {}
            (Phase::Stopping, _) if self.running.is_empty() && self.deletions.running() == 0 => self.finish(ctx),
            (Phase::Stopping, _) => {}
            (Phase::Running, RunMode::Once) => {
                self.start_waiting(ctx);
                self.finish_once_if_idle(ctx);
            }
            // A slot is free: the next list waiting since the tick, or
            // else whatever became due since (the entries whose time has
            // come, from the StateKeeper's view, without a line per entry
            // and without planning the others).
            (Phase::Running, RunMode::Go) => {
                self.start_waiting(ctx);
                if self.running.len() < self.settings.max_concurrent_lists {
                    let due = self.upcoming.take_due(Utc::now());
                    if !due.is_empty() {
                        self.load_and_plan(Scope::Keys(due), ctx);
                    }
                }
            }
        }
    }
}

impl Handler<ListChanged> for Controller {
    type Result = ();

    /// Notes the event; the first of a burst has the list planned once its
    /// debounce has run out.
    fn handle(&mut self, changed: ListChanged, ctx: &mut Context<Self>) {
        if self.phase != Phase::Running {
            return;
        }
        let ListChanged { event, received_at } = changed;
        self.last_webhook_event.insert(event.list_id.clone(), received_at);
        if !event.kind.changes_members() {
            return;
        }
        if event.kind
            == (EventKind::Unsubscribe {
                action: UnsubscribeAction::Delete,
            })
        {
            self.member_deleted(&event, ctx);
        }
        if self.debounce.event(&event.list_id, received_at).is_some() {
            let list_id = event.list_id;
            ctx.run_later(self.settings.webhook_debounce, move |controller, ctx| {
                controller.debounce.ripen(&list_id, received_at);
                if controller.phase == Phase::Running {
                    controller.load_and_plan(Scope::List(list_id), ctx);
                }
            });
        }
    }
}

impl Controller {
    /// A webhook said a member was deleted from a list: each entry of the
    /// list opts it out at once through the ledger (unless its
    /// `on_delete` is `"ignore"`), from the StateKeeper's current view.
    fn member_deleted(&mut self, event: &WebhookEvent, ctx: &mut Context<Self>) {
        let Some(email) = event.email.clone() else {
            self.deps
                .metrics
                .webhook_deletions
                .with_label_values(&["no_email"])
                .inc();
            warn!(
                self.log.new(o!("list_id" => event.list_id.clone())),
                "controller: a deletion from list \"{}\" came without data[email]: the ledger cannot find the contact, so the next reconciliation opts it out.",
                event.list_id.escape_debug()
            );
            return;
        };
        let list_id = event.list_id.clone();
        let view = self.deps.state_keeper.send(FindEntries::List(list_id));
        ctx.spawn(view.into_actor(self).map(move |entries, controller, ctx| {
            let Ok(entries) = entries else { return };
            if controller.phase != Phase::Running {
                return;
            }
            for entry in entries {
                if entry.on_delete == OnDelete::Ignore {
                    controller
                        .deps
                        .metrics
                        .webhook_deletions
                        .with_label_values(&["kept"])
                        .inc();
                    continue;
                }
                let ledger_key = entry.ledger_key();
                let syncing = controller
                    .running
                    .values()
                    .any(|r| !r.reconciling && r.ledger_key == ledger_key);
                let added = controller.deletions.add(&ledger_key, entry, [email.clone()], syncing);
                if added.dropped > 0 {
                    controller.deletions_dropped(added.dropped);
                }
                if let Some(batch) = added.start {
                    controller.start_deletion(batch, ctx);
                }
            }
        }));
    }

    /// Counts addresses the full deletion queue could not take, and says
    /// so once per overflow (until the queue is down to half).
    fn deletions_dropped(&mut self, dropped: usize) {
        self.deps
            .metrics
            .webhook_deletions
            .with_label_values(&["overflow"])
            .inc_by(dropped as u64);
        if !self.deletions_overflowing {
            self.deletions_overflowing = true;
            warn!(
                self.log,
                "controller: {MAX_QUEUED} deleted members wait to be opted out already; those webhooks name beyond it are left to the next reconciliation of their list (counted in webhook_deletions_total{{result=\"overflow\"}})."
            );
        }
    }

    fn start_deletion(&mut self, batch: DeletionBatch<Entry>, ctx: &mut Context<Self>) {
        Deletion::new(batch.target, batch.emails, self.deps.clone(), ctx.address().recipient()).start();
    }
}

impl Handler<DeletionFinished> for Controller {
    type Result = ();

    /// Counts what the Deletion did and starts the next of its ledger key.
    fn handle(&mut self, finished: DeletionFinished, ctx: &mut Context<Self>) {
        let counts = &self.deps.metrics.webhook_deletions;
        match &finished.result {
            Ok(tally) => {
                counts.with_label_values(&["opted_out"]).inc_by(tally.opted_out);
                counts.with_label_values(&["rejected"]).inc_by(tally.rejected);
                counts.with_label_values(&["not_in_ledger"]).inc_by(tally.not_in_ledger);
                counts.with_label_values(&["in_mailchimp"]).inc_by(tally.in_mailchimp);
                self.deps.metrics.members_deleted.inc_by(tally.opted_out);
            }
            Err(_) => counts
                .with_label_values(&["failed"])
                .inc_by(finished.emails.len() as u64),
        }
        let next = self.deletions.finished(&finished.entry.ledger_key());
        self.deletions_overflowing &= self.deletions.queued() > MAX_QUEUED / 2;
        match self.phase {
            Phase::Running => {
                if let Some(batch) = next {
                    self.start_deletion(batch, ctx);
                }
            }
            Phase::Stopping => self.slot_freed(ctx),
            Phase::Finishing => {}
        }
    }
}

impl Handler<ReconcileFinished> for Controller {
    type Result = ();

    fn handle(&mut self, finished: ReconcileFinished, ctx: &mut Context<Self>) {
        let Some(running) = self.running.remove(&finished.key) else {
            return;
        };
        self.finished += 1;
        self.finished_at.insert(finished.key.clone(), self.finished);
        match &finished.result {
            Ok(deleted) => {
                self.summary.reconciled += 1;
                self.summary.deleted += deleted;
                self.reconcile_backoff.remove(&finished.key);
                self.reconciled_at.insert(finished.key.clone(), Utc::now());
                self.deps.health.reconcile_ended(&finished.key, None);
            }
            Err(failure) => {
                self.summary.reconcile_failed += 1;
                let next = Backoff::after_failure(self.reconcile_backoff.get(&finished.key), Utc::now(), running.cap);
                info!(
                    self.entry_log(&finished.key),
                    "controller: the reconciliation of list {} failed; next attempt after \"{}\".",
                    finished.key,
                    format_for_log(next.retry_at)
                );
                self.reconcile_backoff.insert(finished.key.clone(), next);
                self.deps
                    .health
                    .reconcile_ended(&finished.key, Some((&failure.error, failure.held)));
            }
        }
        self.slot_freed(ctx);
    }
}

impl Handler<Shutdown> for Controller {
    type Result = ();

    fn handle(&mut self, shutdown: Shutdown, ctx: &mut Context<Self>) {
        match self.phase {
            Phase::Finishing => return,
            Phase::Stopping if !shutdown.immediate => return,
            Phase::Stopping => {
                info!(self.log, "controller: {}; not waiting any longer.", shutdown.reason);
                return self.abandon_running(ctx);
            }
            Phase::Running => {}
        }
        self.phase = Phase::Stopping;
        self.waiting.clear();
        self.queued.clear();
        self.deletions.clear_waiting();
        if self.running.is_empty() && self.deletions.running() == 0 {
            info!(self.log, "controller: stopping ({}).", shutdown.reason);
            return self.finish(ctx);
        }
        let grace = if shutdown.immediate {
            Duration::ZERO
        } else {
            self.settings.grace
        };
        info!(
            self.log,
            "controller: stopping ({}); waiting up to {} s for {} running sync(s) and {} running deletion(s).",
            shutdown.reason,
            grace.as_secs_f64(),
            self.running.len(),
            self.deletions.running()
        );
        ctx.run_later(grace, |controller, ctx| {
            if controller.phase == Phase::Stopping {
                controller.abandon_running(ctx);
            }
        });
    }
}
