//! The `history` and `forget` commands (issue 16): what the importer did
//! to each list, read from the run history in `<state dir>/ledger.sqlite3`,
//! and forgetting what Ometria accepted for one list.
//!
//! Both open the ledger themselves, beside a running daemon: `history`
//! reads only (WAL lets it read while the daemon writes); `forget` deletes
//! one list's members in one transaction, taking turns with the daemon
//! through SQLite's locks (a 10 s busy timeout).

use std::io::{self, Write};
use std::path::Path;

use chrono::DateTime;
use serde_json::{json, Value};

use crate::config::{ForgetArgs, HistoryArgs};
use crate::ledger::{LedgerStore, RunRow, LEDGER_FILE_NAME};
use crate::state::format_timestamp;

/// Exit code when there is no ledger to read, or it cannot be read.
pub const EXIT_NO_LEDGER: u8 = 1;

/// `history`: prints the newest `args.limit` runs (of `args.list_id` only,
/// if given), newest first, as a table or with `--json` as one JSON array.
/// Returns the exit code: 0, or [`EXIT_NO_LEDGER`] (with a message on
/// `err`) when `<state_dir>/ledger.sqlite3` is missing or unreadable.
pub fn history(state_dir: &Path, args: &HistoryArgs, out: &mut impl Write, err: &mut impl Write) -> io::Result<u8> {
    let path = state_dir.join(LEDGER_FILE_NAME);
    if !path.exists() {
        writeln!(
            err,
            "history: there is no ledger at {}: the importer writes one there at its first sync (is IMPORTER_STATE_DIR the daemon's?).",
            path.display()
        )?;
        return Ok(EXIT_NO_LEDGER);
    }
    let rows = match LedgerStore::open_read_only(state_dir).and_then(|l| l.history(args.list_id.as_deref(), args.limit))
    {
        Ok(rows) => rows,
        Err(e) => {
            writeln!(err, "history: cannot read the run history: {e}")?;
            return Ok(EXIT_NO_LEDGER);
        }
    };
    if args.json {
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&as_json(&rows)).expect("JSON values")
        )?;
    } else if rows.is_empty() {
        let which = args
            .list_id
            .as_ref()
            .map_or(String::new(), |l| format!(" of list \"{l}\""));
        writeln!(out, "No syncs{which} in the history of {}.", path.display())?;
    } else {
        write!(out, "{}", table(&rows))?;
    }
    Ok(0)
}

/// `forget --list ID`: forgets every member of the list in the ledger, so
/// that its next sync pushes them all again; prints how many. Returns the
/// exit code: 0, or [`EXIT_NO_LEDGER`] (with a message on `err`) when
/// there is no ledger or it cannot be written.
pub fn forget(state_dir: &Path, args: &ForgetArgs, out: &mut impl Write, err: &mut impl Write) -> io::Result<u8> {
    let path = state_dir.join(LEDGER_FILE_NAME);
    if !path.exists() {
        writeln!(
            err,
            "forget: there is no ledger at {}: nothing to forget (with no ledger, every list's next sync pushes all its members).",
            path.display()
        )?;
        return Ok(EXIT_NO_LEDGER);
    }
    match LedgerStore::open_existing(state_dir).and_then(|mut l| l.forget_list(&args.list_id)) {
        Ok(n) => {
            writeln!(
                out,
                "Forgot {n} members of list \"{}\": its next sync pushes every member it reads. Set the entry's latest_timestamp to null for that sync to read the whole list.",
                args.list_id
            )?;
            Ok(0)
        }
        Err(e) => {
            writeln!(err, "forget: {e}")?;
            Ok(EXIT_NO_LEDGER)
        }
    }
}

/// Unix seconds as the state file writes times (`YYYY-MM-DDTHH:MM:SS`, UTC).
fn when(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).map_or_else(|| unix.to_string(), format_timestamp)
}

/// The entry as the log names it: `L`, or `L#2` for the second entry of `L`.
fn entry(row: &RunRow) -> String {
    match row.start.rank {
        0 => row.start.list_id.clone(),
        rank => format!("{}#{}", row.start.list_id, rank + 1),
    }
}

/// One line per run under a header, columns aligned; a run's error on
/// the line below it.
pub fn table(rows: &[RunRow]) -> String {
    let header = [
        "started (UTC)",
        "list",
        "kind",
        "result",
        "seconds",
        "read",
        "pushed",
        "unchanged",
        "rejected",
        "skipped",
        "deleted",
    ];
    let lines: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut line = vec![when(row.start.started_at), entry(row), row.start.kind.clone()];
            match &row.end {
                Some(end) => {
                    line.push(end.result.clone());
                    line.push(format!("{:.1}", end.duration_seconds));
                    for n in [
                        end.members_read,
                        end.pushed,
                        end.unchanged,
                        end.rejected,
                        end.skipped,
                        end.deleted,
                    ] {
                        line.push(n.to_string());
                    }
                }
                None => {
                    line.push("running".into());
                    line.extend(std::iter::repeat_n("-".to_owned(), 7));
                }
            }
            line
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // Text columns left, figures right.
    let format = |cells: &[&str]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if i < 4 {
                text.push_str(&format!("{cell:<width$}", width = widths[i]));
            } else {
                text.push_str(&format!("{cell:>width$}", width = widths[i]));
            }
        }
        text.trim_end().to_owned() + "\n"
    };
    let mut text = format(&header);
    for (row, line) in rows.iter().zip(&lines) {
        let cells: Vec<&str> = line.iter().map(String::as_str).collect();
        text.push_str(&format(&cells));
        if let Some(error) = row.end.as_ref().and_then(|e| e.error.as_deref()) {
            text.push_str(&format!("  error: {error}\n"));
        }
    }
    text
}

/// The runs as JSON objects, newest first; the figures of a run still
/// going are `null`.
pub fn as_json(rows: &[RunRow]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                let end = row.end.as_ref();
                json!({
                    "id": row.id,
                    "list_id": row.start.list_id,
                    "rank": row.start.rank,
                    "kind": row.start.kind,
                    "t0": when(row.start.t0),
                    "started_at": when(row.start.started_at),
                    "result": end.map_or("running", |e| e.result.as_str()),
                    "duration_seconds": end.map(|e| (e.duration_seconds * 10.0).round() / 10.0),
                    "members_read": end.map(|e| e.members_read),
                    "pushed": end.map(|e| e.pushed),
                    "unchanged": end.map(|e| e.unchanged),
                    "rejected": end.map(|e| e.rejected),
                    "skipped": end.map(|e| e.skipped),
                    "deleted": end.map(|e| e.deleted),
                    "error": end.and_then(|e| e.error.clone()),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{RunEnd, RunStart};

    fn row(id: i64, list: &str, rank: u32, end: Option<RunEnd>) -> RunRow {
        RunRow {
            id,
            start: RunStart {
                list_id: list.into(),
                rank,
                kind: "LOAD".into(),
                t0: 1_700_000_000,
                started_at: 1_700_000_001,
            },
            end,
        }
    }

    fn ended(result: &str, error: Option<&str>) -> RunEnd {
        RunEnd {
            duration_seconds: 12.34,
            members_read: 1000,
            pushed: 990,
            unchanged: 7,
            rejected: 2,
            skipped: 1,
            deleted: 0,
            result: result.into(),
            error: error.map(Into::into),
        }
    }

    #[test]
    fn the_table_aligns_runs_under_a_header_with_errors_below() {
        let rows = [
            row(3, "L", 1, None),
            row(2, "L", 0, Some(ended("failed", Some("Mailchimp said no")))),
            row(1, "list-b", 0, Some(ended("succeeded", None))),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "started (UTC)        list    kind  result     seconds  read  pushed  unchanged  rejected  skipped  deleted",
                "2023-11-14T22:13:21  L#2     LOAD  running          -     -       -          -         -        -        -",
                "2023-11-14T22:13:21  L       LOAD  failed        12.3  1000     990          7         2        1        0",
                "  error: Mailchimp said no",
                "2023-11-14T22:13:21  list-b  LOAD  succeeded     12.3  1000     990          7         2        1        0",
            ]
        );
    }

    #[test]
    fn json_gives_every_figure_and_null_for_a_run_still_going() {
        let value = as_json(&[row(2, "L", 0, None), row(1, "L", 0, Some(ended("succeeded", None)))]);
        assert_eq!(value[0]["result"], "running");
        assert_eq!(value[0]["pushed"], Value::Null);
        assert_eq!(
            value[1],
            json!({"id": 1, "list_id": "L", "rank": 0, "kind": "LOAD", "t0": "2023-11-14T22:13:20",
                   "started_at": "2023-11-14T22:13:21", "result": "succeeded", "duration_seconds": 12.3,
                   "members_read": 1000, "pushed": 990, "unchanged": 7, "rejected": 2, "skipped": 1,
                   "deleted": 0, "error": null})
        );
    }

    #[test]
    fn a_missing_ledger_is_said_and_exits_1() {
        let dir = tempfile::tempdir().unwrap();
        let (mut out, mut err) = (vec![], vec![]);
        let args = HistoryArgs {
            list_id: None,
            limit: 20,
            json: false,
        };
        assert_eq!(history(dir.path(), &args, &mut out, &mut err).unwrap(), EXIT_NO_LEDGER);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("there is no ledger at ") && err.contains("ledger.sqlite3"),
            "{err}"
        );
        assert!(out.is_empty());
        let forget_args = ForgetArgs { list_id: "L".into() };
        let mut err = vec![];
        assert_eq!(
            forget(dir.path(), &forget_args, &mut out, &mut err).unwrap(),
            EXIT_NO_LEDGER
        );
        assert!(!dir.path().join(LEDGER_FILE_NAME).exists(), "forget creates no ledger");
    }

    #[test]
    fn forget_says_how_many_members_it_forgot() {
        let dir = tempfile::tempdir().unwrap();
        let (mut ledger, _) = LedgerStore::open(dir.path(), 0).unwrap();
        let member = |id: &str| crate::ledger::Accepted {
            member_id: id.into(),
            hash: 1,
            email: format!("{id}@example.com"),
            status: "subscribed".into(),
        };
        ledger.record_accepted("L", 1, &[member("a"), member("b")]).unwrap();
        ledger.record_accepted("M", 1, &[member("a")]).unwrap();
        let (mut out, mut err) = (vec![], vec![]);
        let args = ForgetArgs { list_id: "L".into() };
        assert_eq!(forget(dir.path(), &args, &mut out, &mut err).unwrap(), 0);
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("Forgot 2 members of list \"L\""), "{out}");
        assert_eq!(ledger.count_members("L").unwrap(), 0);
        assert_eq!(ledger.count_members("M").unwrap(), 1);
    }
}
