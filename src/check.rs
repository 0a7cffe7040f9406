//! `check`: validates the environment, the state file and `mappings.json`,
//! and prints what the next tick would do for each entry, and what its
//! mapping does (issue 17). Only with `--online` does it call an API: one
//! page of one member of each list, from Mailchimp, and the merge fields of
//! each list an entry maps merge fields of, to compare with the mappings.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use crate::api::{http_client, ApiError};
use crate::config::{Config, OmetriaApi, Settings};
use crate::mailchimp::{page_total_items, MailchimpClient, MergeField, MEMBER_FIELDS};
use crate::retry::{Outcomes, RetryPolicy};
use crate::state::{format_for_log, StateFile};
use crate::sync::{decide, Decision, PageRequest, Pass, SyncKind, Window};
use crate::telemetry::metrics::Metrics;

pub mod mapping;

/// Exit codes: 0 all good, 1 a setting, an entry or `mappings.json` needs
/// fixing (or, with `online`, Mailchimp refused a list or its merge
/// fields), 2 the state file cannot be used at all. Warnings (a mapping
/// `OMETRIA_API=record` does not send, a merge field a mapping cannot
/// read) leave the exit code 0.
pub fn run(settings: &Settings, online: bool, now: DateTime<Utc>, out: &mut dyn Write) -> io::Result<u8> {
    let mut problems = 0;
    let mut warnings = 0;
    // The daemon's settings, the webhook receiver's included when
    // IMPORTER_WEBHOOK_ADDR turns it on.
    let config = match settings.resolve_daemon() {
        Ok(config) => {
            writeln!(out, "ok: Mailchimp at {}", config.mailchimp_base_url)?;
            writeln!(
                out,
                "ok: Ometria at {} ({:?} API)",
                config.ometria_base_url, config.ometria_api
            )?;
            Some(config)
        }
        Err(errors) => {
            for e in &errors {
                writeln!(out, "error: {e}")?;
            }
            problems += errors.len();
            None
        }
    };
    let file = StateFile::in_dir(&settings.state_dir);
    let document = match file.load() {
        Ok(d) => d,
        Err(e) => {
            writeln!(out, "error: {e}")?;
            return Ok(2);
        }
    };
    if let Err(e) = file.check_writable() {
        writeln!(out, "error: {e}")?;
        return Ok(2);
    }
    let scan = document.entries();
    writeln!(
        out,
        "ok: {} holds {} {}, {} valid",
        file.path().display(),
        document.len(),
        if document.len() == 1 { "entry" } else { "entries" },
        scan.entries.len()
    )?;
    for w in &scan.warnings {
        let level = if w.skips_entry() { "error" } else { "warning" };
        writeln!(out, "{level}: {w}")?;
        problems += usize::from(w.skips_entry());
        warnings += usize::from(!w.skips_entry());
    }
    // Checked whole, even the mappings no entry names yet.
    for problem in document.mappings().problems() {
        writeln!(out, "error: {problem}")?;
        problems += 1;
    }
    let refresh = std::time::Duration::from_secs(settings.refresh_seconds);
    let overlap_std = std::time::Duration::from_secs(settings.overlap_seconds);
    // Entries of one list sending different records to the same contacts
    // (the same collection, or none): each sync of one pushes again what
    // the other pushed, and Ometria holds whichever came last.
    let mut by_ledger_key: std::collections::BTreeMap<String, Vec<&crate::state::Entry>> = Default::default();
    for entry in &scan.entries {
        by_ledger_key.entry(entry.ledger_key()).or_default().push(entry);
    }
    for entries in by_ledger_key.values() {
        let first = entries[0].mapping.fingerprint();
        if entries.iter().any(|e| e.mapping.fingerprint() != first) {
            warnings += 1;
            let keys: Vec<String> = entries.iter().map(|e| e.key.to_string()).collect();
            writeln!(
                out,
                "warning: entries {} map one list differently into the same Ometria contacts (the same collection, or none): each sync of one pushes again what the other pushed, and Ometria keeps whichever came last; give them the same mapping, or each its own \"collection\"",
                keys.join(" and ")
            )?;
        }
    }
    // Read from the ledger, a local file: what the daemon will find there.
    let remapped = crate::plan::remapped_entries(&settings.state_dir, &scan.entries);
    for entry in &scan.entries {
        let plan = match decide(entry, now, refresh, overlap_std, false, None) {
            Decision::Due(SyncKind::Sync { .. }) | Decision::UpToDate { .. } if remapped.contains(&entry.key) => {
                "SYNC of every member (its mapping is not the one its last full read used, or the ledger has none; only the records that change are pushed)"
                    .to_string()
            }
            Decision::Due(SyncKind::Load) => match entry.cursor {
                None => "LOAD (no latest_timestamp: the whole list)".to_string(),
                Some(cursor) => {
                    warnings += 1;
                    writeln!(
                        out,
                        "warning: list {}: latest_timestamp \"{}\" is in the future by more than the {} s overlap (a local time, or a clock set back?); the whole list will LOAD",
                        entry.key,
                        format_for_log(cursor),
                        settings.overlap_seconds
                    )?;
                    "LOAD (latest_timestamp in the future: the whole list)".to_string()
                }
            },
            Decision::Due(SyncKind::Sync { cursor }) => {
                match Window::new(SyncKind::Sync { cursor }, now, overlap_std).since {
                    Some(since) => format!(
                        "SYNC (members changed since \"{}\", i.e. the last sync minus the overlap)",
                        format_for_log(since)
                    ),
                    None => "SYNC (every member: latest_timestamp minus the overlap is before 1970)".to_string(),
                }
            }
            Decision::UpToDate { last, next_due } => format!(
                "up to date (last updated on \"{}\"; next SYNC due at \"{}\")",
                format_for_log(last),
                format_for_log(next_due)
            ),
            Decision::Running | Decision::BackingOff { .. } => unreachable!("check has no running syncs"),
        };
        writeln!(
            out,
            "list {}: {plan}; {} per page, {} workers{}",
            entry.key,
            entry.items_per_request,
            entry.worker_count,
            if entry.start_offset > 0 {
                format!(", from offset {}", entry.start_offset)
            } else {
                String::new()
            }
        )?;
        if !entry.mapping.is_default() {
            let named = entry
                .mapping
                .name
                .as_deref()
                .and_then(|name| document.mappings().get(name).ok());
            writeln!(out, "list {}: {}", entry.key, mapping::describe(&entry.mapping, named))?;
            if settings.ometria_api == OmetriaApi::Record {
                writeln!(
                    out,
                    "warning: {}",
                    mapping::record_api_warning(&entry.key, &entry.mapping)
                )?;
                warnings += 1;
            }
        }
    }
    if online {
        match &config {
            Some(config) => {
                let mut list_ids: Vec<&str> = scan.entries.iter().map(|e| e.key.list_id.as_str()).collect();
                list_ids.sort_unstable();
                list_ids.dedup();
                // Lists whose entries read merge fields: their merge fields are read too.
                let mapped: BTreeSet<&str> = scan
                    .entries
                    .iter()
                    .filter(|e| !e.mapping.merge_tags().is_empty())
                    .map(|e| e.key.list_id.as_str())
                    .collect();
                // Each list is asked for what its (first) entry's sync asks for.
                let mut projections: std::collections::HashMap<&str, String> = Default::default();
                for e in &scan.entries {
                    projections
                        .entry(e.key.list_id.as_str())
                        .or_insert_with(|| e.mapping.projection());
                }
                let answers =
                    actix_rt::System::new().block_on(ask_mailchimp(config, &list_ids, &projections, &mapped, now));
                for (list_id, answer) in list_ids.iter().zip(answers) {
                    match answer.members {
                        Ok(total) => writeln!(
                            out,
                            "ok: Mailchimp lets the key read list \"{list_id}\": {total} member(s), archived ones aside"
                        )?,
                        Err(e) => {
                            writeln!(out, "error: list \"{list_id}\": {e}")?;
                            problems += 1;
                        }
                    }
                    match answer.merge_fields {
                        None => {}
                        Some(Err(e)) => {
                            writeln!(out, "error: list \"{list_id}\": reading its merge fields: {e}")?;
                            problems += 1;
                        }
                        Some(Ok(fields)) => {
                            let tags: Vec<&str> = fields.iter().map(|f| f.tag.as_str()).collect();
                            writeln!(
                                out,
                                "ok: list \"{list_id}\" has {} merge field(s): {}",
                                fields.len(),
                                tags.join(", ")
                            )?;
                            for entry in scan.entries.iter().filter(|e| e.key.list_id == *list_id) {
                                for w in mapping::merge_field_warnings(&entry.key, &entry.mapping, &fields) {
                                    writeln!(out, "warning: {w}")?;
                                    warnings += 1;
                                }
                            }
                        }
                    }
                }
                writeln!(
                    out,
                    "note: Ometria was not called (it has no request that only tries a key); the first push shows whether OMETRIA_APIKEY works."
                )?;
            }
            None => writeln!(out, "online check skipped: fix the settings above first.")?,
        }
    }
    if problems > 0 {
        writeln!(out, "{problems} problem(s) to fix.")?;
        return Ok(1);
    }
    match warnings {
        0 => writeln!(out, "all good.")?,
        n => writeln!(out, "all good, but for {n} warning(s) above.")?,
    }
    Ok(0)
}

/// What Mailchimp said of one list.
struct ListAnswer {
    /// The list's `total_items` (archived members aside).
    members: Result<u64, ApiError>,
    /// Its merge fields, asked for only when an entry of the list maps
    /// merge fields and the members read succeeded (a list Mailchimp
    /// refuses is one error, not two).
    merge_fields: Option<Result<Vec<MergeField>, ApiError>>,
}

/// Reads one member of each list, as a sync would (same request, same
/// retries of passing failures, at most `MAILCHIMP_MAX_CONNECTIONS` at a
/// time): each list's `total_items`, or why Mailchimp would not tell; then,
/// the same way, the merge fields of the lists in `mapped` it could read.
async fn ask_mailchimp(
    config: &Config,
    list_ids: &[&str],
    projections: &std::collections::HashMap<&str, String>,
    mapped: &BTreeSet<&str>,
    now: DateTime<Utc>,
) -> Vec<ListAnswer> {
    let client = MailchimpClient::new(
        http_client(config.http_timeout),
        &config.mailchimp_base_url,
        config.mailchimp_key.clone(),
        config.http_timeout,
        Arc::new(Metrics::new()),
    );
    let window = Window {
        since: None,
        before: now,
    };
    let request = PageRequest {
        pass: Pass::Members,
        offset: 0,
        count: 1,
        since: None,
        before: None,
        keyed: false,
        recount: false,
    };
    let policy = RetryPolicy {
        attempts: config.retry.attempts.min(3),
        ..config.retry
    };
    let outcomes = Outcomes::default();
    let connections = config.mailchimp_max_connections.max(1);
    let (client, window, policy, outcomes) = (&client, &window, &policy, &outcomes);
    let members: Vec<Result<u64, ApiError>> = stream::iter(list_ids.iter().map(|list_id| async move {
        let fields = projections.get(list_id).map_or(MEMBER_FIELDS, String::as_str);
        let attempt = |attempt| async move {
            let (body, _) = client.members_page(list_id, window, request, fields, attempt).await?;
            page_total_items(&body)
        };
        policy.run(outcomes, attempt, |_, _, _| {}).await
    }))
    .buffered(connections)
    .collect()
    .await;
    let wanted: Vec<&str> = list_ids
        .iter()
        .zip(&members)
        .filter(|(id, read)| read.is_ok() && mapped.contains(*id))
        .map(|(id, _)| *id)
        .collect();
    let fields: Vec<Result<Vec<MergeField>, ApiError>> = stream::iter(wanted.iter().map(|list_id| async move {
        let attempt = |attempt| client.merge_fields(list_id, attempt);
        policy.run(outcomes, attempt, |_, _, _| {}).await
    }))
    .buffered(connections)
    .collect()
    .await;
    let mut fields: HashMap<&str, _> = wanted.into_iter().zip(fields).collect();
    list_ids
        .iter()
        .zip(members)
        .map(|(id, members)| ListAnswer {
            members,
            merge_fields: fields.remove(id),
        })
        .collect()
}
