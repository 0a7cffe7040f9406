//! `check`: validates the environment and the state file, and prints what
//! the next tick would do for each entry, without calling either API.

use std::io::{self, Write};

use chrono::{DateTime, Utc};

use crate::config::Settings;
use crate::state::{format_for_log, Consequence, StateFile};
use crate::sync::{decide, delta, Decision, SyncKind};

/// Exit codes: 0 all good, 1 a setting or an entry needs fixing, 2 the
/// state file cannot be used at all.
pub fn run(settings: &Settings, now: DateTime<Utc>, out: &mut dyn Write) -> io::Result<u8> {
    let mut problems = 0;
    let mut warnings = 0;
    match settings.resolve() {
        Ok(config) => {
            writeln!(out, "ok: Mailchimp at {}", config.mailchimp_base_url)?;
            writeln!(
                out,
                "ok: Ometria at {} ({:?} API)",
                config.ometria_base_url, config.ometria_api
            )?;
        }
        Err(errors) => {
            for e in &errors {
                writeln!(out, "error: {e}")?;
            }
            problems += errors.len();
        }
    }
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
        let level = if w.consequence == Consequence::Skipped {
            "error"
        } else {
            "warning"
        };
        writeln!(out, "{level}: {w}")?;
        problems += usize::from(w.consequence == Consequence::Skipped);
        warnings += usize::from(w.consequence != Consequence::Skipped);
    }
    let refresh = std::time::Duration::from_secs(settings.refresh_seconds);
    let overlap_std = std::time::Duration::from_secs(settings.overlap_seconds);
    let overlap = delta(overlap_std);
    for entry in &scan.entries {
        let plan = match decide(entry, now, refresh, overlap_std, false, None) {
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
            Decision::Due(SyncKind::Sync { cursor }) => format!(
                "SYNC (members changed since \"{}\", i.e. the last sync minus the overlap)",
                format_for_log(cursor - overlap)
            ),
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
