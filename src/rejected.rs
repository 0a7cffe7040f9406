//! Records Ometria rejected (SPEC §6): which ones they were, why, and the
//! file they are kept in, `<state dir>/rejected/<list_id>.jsonl`.
//!
//! A push answer only counts rejected records. To name them, the batch is
//! split in halves and one half pushed again: its answer counts its own
//! rejected records, and the rest are in the other half, which is searched
//! without a push of its own; down to single records. Re-sending is
//! harmless because Ometria writes by id. It costs about log2(100) ≈ 7
//! pushes per rejected record, paid only when a batch has one.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use slog::{error, warn, Logger};

use crate::api::ApiError;
use crate::ometria::{record_ids, PushOutcome};

/// A record kept out of Ometria, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The record, as encoded for Ometria.
    pub record: Bytes,
    /// Why, for an operator: Ometria's own message when it gave one.
    pub reason: String,
}

/// The reason given for records Ometria took but counted as rejected: its
/// answer says no more.
pub const COUNTED_AS_REJECTED: &str = "Ometria counted it as rejected";

/// The records of `batch` that Ometria rejects, found by pushing halves
/// again. `rejected` is how many the whole batch's answer reported; the
/// search stops once that many are found.
pub async fn isolate<F, Fut>(batch: &[Bytes], rejected: u64, mut push: F) -> Result<Vec<Bytes>, ApiError>
where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: Future<Output = Result<PushOutcome, ApiError>>,
{
    let mut found = vec![];
    // Parts of the batch, each with how many of its records were rejected.
    let mut parts: Vec<(&[Bytes], u64)> = vec![(batch, rejected)];
    while let Some((part, rejected)) = parts.pop() {
        if rejected == 0 {
            continue;
        }
        if rejected as usize >= part.len() {
            found.extend_from_slice(part);
            continue;
        }
        let (first, second) = part.split_at(part.len() / 2);
        let in_first = push(first.to_vec()).await?.rejected.min(first.len() as u64);
        parts.push((second, rejected.saturating_sub(in_first)));
        parts.push((first, in_first));
    }
    Ok(found)
}

/// The ids of `rejections` with their reasons, for the log: ids sharing a
/// reason are listed together, `u1, u2 (reason); u3 (other reason)`.
pub fn describe(rejections: &[Rejection]) -> String {
    let mut groups: Vec<(&str, Vec<String>)> = vec![];
    for r in rejections {
        let id = record_ids(std::slice::from_ref(&r.record))
            .pop()
            .unwrap_or_else(|| "(a record without an id)".into());
        match groups.iter_mut().find(|(reason, _)| *reason == r.reason) {
            Some((_, ids)) => ids.push(id),
            None => groups.push((&r.reason, vec![id])),
        }
    }
    groups
        .iter()
        .map(|(reason, ids)| format!("{} ({reason})", ids.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a list's rejected records go.
#[derive(Clone, Debug)]
pub struct RejectedLog {
    dir: PathBuf,
}

impl RejectedLog {
    pub fn in_state_dir(state_dir: &Path) -> RejectedLog {
        RejectedLog {
            dir: state_dir.join("rejected"),
        }
    }

    /// `<dir>/<list_id>.jsonl`, with anything but letters, digits, `-` and
    /// `_` in the list id written as `%XX`.
    pub fn file_for(&self, list_id: &str) -> PathBuf {
        let mut name = String::new();
        for b in list_id.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                name.push(b as char);
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        self.dir.join(format!("{name}.jsonl"))
    }

    /// Appends one line per record, `{"rejected_at": …, "list_id": …,
    /// "reason": …, "record": {…}}` (`rejected_at` in the state file's
    /// format), to the list's file, creating it and its folder if need be.
    /// Returns the file's path.
    pub fn append(&self, list_id: &str, rejections: &[Rejection], at: DateTime<Utc>) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.file_for(list_id);
        let mut lines = Vec::new();
        let at = crate::state::format_timestamp(at);
        let list_id = serde_json::Value::from(list_id);
        for r in rejections {
            lines.extend_from_slice(
                format!(
                    r#"{{"rejected_at":"{at}","list_id":{list_id},"reason":{},"record":"#,
                    serde_json::Value::from(r.reason.as_str())
                )
                .as_bytes(),
            );
            lines.extend_from_slice(&r.record);
            lines.extend_from_slice(b"}\n");
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(&lines)?;
        Ok(path)
    }

    /// Keeps `rejections` in the list's file and logs them by id and
    /// reason: a WARNING, or an ERROR if the file could not be written.
    /// `what` opens the line, e.g. `Ometria rejected 2 of 100 records of
    /// list "L"`.
    pub fn keep(&self, list_id: &str, rejections: &[Rejection], what: &str, log: &Logger) {
        if rejections.is_empty() {
            return;
        }
        let (named, n) = (describe(rejections), rejections.len());
        match self.append(list_id, rejections, Utc::now()) {
            Ok(path) => warn!(log, "sync: {what}: {named}; kept in {}.", path.display(); "rejected" => n),
            Err(e) => error!(log, "sync: {what}: {named}; they could not be kept in {}: {e}",
                self.file_for(list_id).display(); "rejected" => n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn batch(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!(r#"{{"id":"r{i}"}}"#))).collect()
    }

    /// A push that rejects the records in `bad`, counting its calls.
    fn pusher<'a>(
        bad: &'a [usize],
        calls: &'a RefCell<u32>,
    ) -> impl FnMut(Vec<Bytes>) -> std::future::Ready<Result<PushOutcome, ApiError>> + 'a {
        move |part: Vec<Bytes>| {
            *calls.borrow_mut() += 1;
            let rejected = part
                .iter()
                .filter(|r| bad.iter().any(|b| r[..] == *format!(r#"{{"id":"r{b}"}}"#).as_bytes()))
                .count() as u64;
            std::future::ready(Ok(PushOutcome {
                accepted: part.len() as u64 - rejected,
                rejected,
            }))
        }
    }

    #[actix_rt::test]
    async fn bisection_names_exactly_the_rejected_records() {
        for bad in [
            vec![0],
            vec![99],
            vec![3, 57],
            vec![10, 11, 12],
            (0..100).step_by(7).collect::<Vec<_>>(),
        ] {
            let calls = RefCell::new(0);
            let all = batch(100);
            let found = isolate(&all, bad.len() as u64, pusher(&bad, &calls)).await.unwrap();
            let mut ids: Vec<usize> = found
                .iter()
                .map(|r| {
                    std::str::from_utf8(r)
                        .unwrap()
                        .trim_start_matches(r#"{"id":"r"#)
                        .trim_end_matches(r#""}"#)
                        .parse()
                        .unwrap()
                })
                .collect();
            ids.sort_unstable();
            assert_eq!(ids, bad);
            if bad.len() == 1 {
                assert!(*calls.borrow() <= 7, "{} pushes for one record", calls.borrow());
            }
        }
    }

    #[actix_rt::test]
    async fn nothing_to_find_costs_nothing() {
        let calls = RefCell::new(0);
        assert!(isolate(&batch(100), 0, pusher(&[], &calls)).await.unwrap().is_empty());
        assert_eq!(*calls.borrow(), 0);
        // A single record, or a batch rejected whole, needs no search either.
        assert_eq!(isolate(&batch(1), 1, pusher(&[0], &calls)).await.unwrap().len(), 1);
        assert_eq!(
            isolate(&batch(3), 3, pusher(&[0, 1, 2], &calls)).await.unwrap().len(),
            3
        );
        assert_eq!(*calls.borrow(), 0);
    }

    #[test]
    fn log_lines_name_each_id_with_its_reason() {
        let r = |i: usize, reason: &str| Rejection {
            record: batch(10)[i].clone(),
            reason: reason.into(),
        };
        assert_eq!(describe(&[r(1, "a"), r(2, "b"), r(3, "a")]), "r1, r3 (a); r2 (b)");
        assert_eq!(
            describe(&[Rejection {
                record: Bytes::from_static(b"{}"),
                reason: "x".into()
            }]),
            "(a record without an id) (x)"
        );
    }

    #[test]
    fn rejected_records_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = RejectedLog::in_state_dir(dir.path());
        assert_eq!(log.file_for("a/b c"), dir.path().join("rejected/a%2Fb%20c.jsonl"));
        let at = DateTime::from_timestamp(1_571_437_223, 0).unwrap();
        let rejection = |i: usize, reason: &str| Rejection {
            record: batch(2)[i].clone(),
            reason: reason.into(),
        };
        log.append("l1", &[rejection(0, COUNTED_AS_REJECTED)], at).unwrap();
        let path = log
            .append("l1", &[rejection(1, "HTTP 400: \"quoted\" text")], at)
            .unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "{\"rejected_at\":\"2019-10-18T22:20:23\",\"list_id\":\"l1\",\"reason\":\"Ometria counted it as rejected\",\"record\":{\"id\":\"r0\"}}\n\
             {\"rejected_at\":\"2019-10-18T22:20:23\",\"list_id\":\"l1\",\"reason\":\"HTTP 400: \\\"quoted\\\" text\",\"record\":{\"id\":\"r1\"}}\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
