//! `plan` (issue 17): what the next sync of each due entry (or of the
//! entries of one list) would send, before it sends it — a first push
//! cannot be taken back, and a subscription can fire a welcome campaign.
//!
//! It reads Mailchimp exactly as the sync would (same window, projection,
//! paging checks and mapping, through planning ListSyncs run by the
//! [`Planner`]), compares each record with what the ledger holds, and
//! prints per entry the members read, the records that would be pushed
//! (new, changed), unchanged, opted in and out, values dropped, members
//! skipped, and a few sample records. It writes nothing: no push, no
//! state-file change, no ledger change (the ledger is opened read only, and
//! not created), no rejected file; it takes no lock, so it runs beside `go`.

use std::collections::HashSet;
use std::io::{self, Write};
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use slog::Logger;
use tokio::sync::oneshot;

use crate::actors::ledger::Ledger;
use crate::actors::list_sync::SyncJob;
use crate::actors::planner::{PlanResult, Planner};
use crate::actors::state_keeper::StateKeeper;
use crate::config::{PlanArgs, Settings};
use crate::ledger::{LedgerStore, LEDGER_FILE_NAME};
use crate::state::{Entry, EntryKey, StateFile};
use crate::sync::{decide, Decision, SyncKind};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;

/// Exit code for settings or a state file to fix first.
pub const EXIT_FIX_FIRST: u8 = 2;

/// `plan`: prints what the next syncs would send. Returns the exit code:
/// 0 when every planned entry could be read, 1 when one could not (or
/// `--list` names no entry), [`EXIT_FIX_FIRST`] for settings or a state
/// file that must be fixed first.
/// With `--json`, stdout holds only the JSON: errors go to `err`.
pub fn run(
    settings: &Settings,
    args: &PlanArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
    log: Logger,
) -> io::Result<u8> {
    let say: &mut dyn Write = if args.json { err } else { &mut *out };
    // A plan pushes nothing: the Ometria key is not needed.
    let mut settings = settings.clone();
    if settings.ometria_apikey.is_none() {
        settings.ometria_apikey = Some("plan-pushes-nothing".parse().expect("any text is a key"));
    }
    let config = match settings.resolve() {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                writeln!(say, "error: {e}")?;
            }
            return Ok(EXIT_FIX_FIRST);
        }
    };
    let file = StateFile::in_dir(&config.state_dir);
    let document = match file.load() {
        Ok(document) => document,
        Err(e) => {
            writeln!(say, "error: {e}")?;
            return Ok(EXIT_FIX_FIRST);
        }
    };
    let scan = document.entries();
    for w in scan.warnings.iter().filter(|w| w.skips_entry()) {
        writeln!(say, "skipped: {w}")?;
    }
    let remaps = remapped_entries(&config.state_dir, &scan.entries);
    let jobs = jobs(&scan.entries, &remaps, args.list_id.as_deref(), Utc::now(), &settings);
    if jobs.is_empty() {
        match &args.list_id {
            Some(list_id) => {
                writeln!(say, "plan: state.json has no valid entry for list \"{list_id}\".")?;
                if args.json {
                    writeln!(out, "[]")?;
                }
                return Ok(1);
            }
            None => {
                if !args.json {
                    writeln!(
                        out,
                        "plan: no entry is due now; `plan --list <list_id>` shows what a list's next sync would send."
                    )?;
                } else {
                    writeln!(out, "[]")?;
                }
                return Ok(0);
            }
        }
    }
    let results = actix_rt::System::new().block_on(plan(&config, document, file, jobs, args.limit, log));
    report(&results, args.json, out)?;
    Ok(u8::from(results.iter().any(|(_, r)| r.is_err())))
}

/// The entries whose mapping changed since their last full read, as the
/// Controller finds them: by the ledger, read only; without a ledger (the
/// daemon would start an empty one), every entry with a mapping of its own.
/// A ledger that cannot be read tells of none (the daemon's would not either).
pub fn remapped_entries(state_dir: &std::path::Path, entries: &[Entry]) -> HashSet<EntryKey> {
    let keys: Vec<(String, u32)> = entries
        .iter()
        .map(|e| (e.key.list_id.clone(), e.key.rank as u32))
        .collect();
    let kept = if state_dir.join(LEDGER_FILE_NAME).exists() {
        LedgerStore::open_read_only(state_dir).and_then(|l| l.mapping_fingerprints(&keys))
    } else {
        Ok(vec![None; keys.len()])
    };
    match kept {
        Ok(kept) => entries
            .iter()
            .zip(kept)
            .filter(|(e, kept)| e.mapping.changed_since(*kept))
            .map(|(e, _)| e.key.clone())
            .collect(),
        Err(_) => HashSet::new(),
    }
}

/// The entries to plan, with the kind of their next sync: the due ones,
/// or every entry of `list_id` — a LOAD without a cursor, else the SYNC
/// that will come when it is due (a LOAD if its cursor is in the future).
/// An entry in `remaps` reads every member, as the Controller has it do.
fn jobs(
    entries: &[Entry],
    remaps: &HashSet<EntryKey>,
    list_id: Option<&str>,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Vec<SyncJob> {
    let refresh = std::time::Duration::from_secs(settings.refresh_seconds);
    let overlap = std::time::Duration::from_secs(settings.overlap_seconds);
    entries
        .iter()
        .filter(|e| list_id.is_none_or(|id| e.key.list_id == id))
        .filter_map(|entry| {
            let kind = match (decide(entry, now, refresh, overlap, false, None), list_id) {
                (Decision::Due(SyncKind::Sync { .. }) | Decision::UpToDate { .. }, _)
                    if remaps.contains(&entry.key) =>
                {
                    SyncKind::Sync {
                        cursor: DateTime::UNIX_EPOCH,
                    }
                }
                (Decision::Due(kind), _) => kind,
                (_, None) => return None,
                (_, Some(_)) => match entry.cursor {
                    Some(cursor) => SyncKind::Sync { cursor },
                    None => SyncKind::Load,
                },
            };
            Some(SyncJob {
                entry: entry.clone(),
                kind,
            })
        })
        .collect()
}

/// Runs the planning ListSyncs; what every sync needs, except that the
/// ledger only reads and no Writer is ever started.
async fn plan(
    config: &crate::config::Config,
    document: crate::state::StateDocument,
    file: StateFile,
    jobs: Vec<SyncJob>,
    samples: usize,
    log: Logger,
) -> Vec<PlanResult> {
    let metrics = Arc::new(Metrics::new());
    // Never sent a result by a planning ListSync: nothing is written.
    let state_keeper = StateKeeper::new(file, document, metrics.clone(), log.clone()).start();
    let deps = crate::importer::sync_deps(
        config,
        metrics,
        Arc::new(Health::new(config.tick)),
        state_keeper,
        Ledger::start_read_only(config.state_dir.clone()),
        log,
    );
    let (done, results) = oneshot::channel();
    Planner::new(jobs, deps, config.max_concurrent_lists, samples, done).start();
    results.await.unwrap_or_default()
}

/// Prints the plans, as text or as one JSON array.
fn report(results: &[PlanResult], json: bool, out: &mut dyn Write) -> io::Result<()> {
    if json {
        let entries: Vec<Value> = results
            .iter()
            .map(|(key, result)| match result {
                Ok(plan) => serde_json::to_value(plan).expect("a plan serialises"),
                Err(e) => json!({"list_id": key.list_id, "rank": key.rank, "error": e}),
            })
            .collect();
        return writeln!(out, "{}", serde_json::to_string_pretty(&entries).expect("JSON values"));
    }
    for (key, result) in results {
        match result {
            Ok(plan) => write!(out, "{}", plan.describe())?,
            Err(e) => writeln!(out, "list {key}: could not be read: {e}")?,
        }
    }
    let (read, push): (u64, u64) = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .fold((0, 0), |(r, p), plan| (r + plan.members_read, p + plan.would_push));
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    writeln!(
        out,
        "plan: {} {} planned, {read} members read, {push} records would be pushed{}; nothing was pushed or written.",
        results.len(),
        if results.len() == 1 { "entry" } else { "entries" },
        if failed > 0 {
            format!(", {failed} could not be read")
        } else {
            String::new()
        }
    )
}
