//! Records Ometria rejected (SPEC §6): which ones they were, and the file
//! they are kept in, `<state dir>/rejected/<list_id>.jsonl`.
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

use crate::api::ApiError;
use crate::ometria::PushOutcome;

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

    /// Appends one line per record: `{"rejected_at": …, "list_id": …, "record": {…}}`.
    pub fn append(&self, list_id: &str, records: &[Bytes], at: DateTime<Utc>) -> io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.file_for(list_id);
        let mut lines = Vec::new();
        let at = crate::state::format_timestamp(at);
        for record in records {
            lines.extend_from_slice(
                format!(
                    r#"{{"rejected_at":"{at}","list_id":{},"record":"#,
                    serde_json::Value::from(list_id)
                )
                .as_bytes(),
            );
            lines.extend_from_slice(record);
            lines.extend_from_slice(b"}\n");
        }
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        file.write_all(&lines)?;
        Ok(path)
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
    fn rejected_records_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = RejectedLog::in_state_dir(dir.path());
        assert_eq!(log.file_for("a/b c"), dir.path().join("rejected/a%2Fb%20c.jsonl"));
        let at = DateTime::from_timestamp(1_571_437_223, 0).unwrap();
        log.append("l1", &batch(2)[..1], at).unwrap();
        let path = log.append("l1", &batch(2)[1..], at).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text,
            "{\"rejected_at\":\"2019-10-18T22:20:23\",\"list_id\":\"l1\",\"record\":{\"id\":\"r0\"}}\n\
             {\"rejected_at\":\"2019-10-18T22:20:23\",\"list_id\":\"l1\",\"record\":{\"id\":\"r1\"}}\n"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).unwrap();
        }
    }
}
