//! Records Ometria will not take (SPEC §6): which ones they are, why, and
//! the file they are kept in, `<state dir>/rejected/<list_id>.jsonl`.
//!
//! Ometria turns a record down in one of two ways. It may take the push
//! and count the record as rejected: the answer does not name it, so the
//! batch is split in halves and one half pushed again: its answer counts
//! its own rejected records, and the rest are in the other half, which is
//! searched without a push of its own; down to single records
//! ([`isolate`]). It costs about log2(100) ≈ 7 pushes per rejected record.
//!
//! Or it may refuse the whole push (400, 413, 422) for what one record
//! holds, storing nothing. Then both halves are pushed, level by level,
//! until the parts refused are single records, each pushed alone once more
//! so that a passing refusal costs no good record ([`deliver`]): about two
//! pushes per halving, 16 for one such record in a batch of 100, while the
//! other parts are written.
//!
//! A refusal that every record gets, alone or together, is no record's
//! content but a request Ometria cannot read (a wrong endpoint, a proxy in
//! the way). What tells the two apart is [`Evidence`] that Ometria takes
//! records: without it a search gives up after a few pushes, records
//! refused alone are not kept, and the sync fails.
//!
//! Both searches are paid only when a batch has such a record, and
//! re-sending is harmless because Ometria writes by id.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use slog::{warn, Logger};

use crate::api::ApiError;
use crate::limits::LastTaken;
use crate::ometria::{record_ids, refused_for_content, PushOutcome};

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

/// How many pushes of a refused batch and its parts, breadth first, may
/// all be refused before a search without [`Evidence`] gives up: the first
/// six levels of halving (1 + 2 + 4 + 8 + 16 + 32). A batch holding at
/// most 31 records Ometria refuses is always searched to the end, since
/// one of the 32 parts of the sixth level holds none of them and is taken:
/// evidence. So a first run, with nothing taken yet, is not blocked by a
/// few bad records among its only batch; an endpoint refusing everything
/// costs 63 pushes per batch in flight before the sync fails.
/// With evidence, a search goes on to the end: at most 2n − 1 pushes for
/// n records, however many are refused, and one more per record refused
/// alone.
pub const REFUSED_PUSHES_WITHOUT_EVIDENCE: u32 = 63;

/// How long a record Ometria took, anywhere in the process, stays evidence
/// that it takes records (see [`Evidence`]).
pub const EVIDENCE_WINDOW: Duration = Duration::from_secs(3600);

/// Evidence that Ometria takes records, as one sync sees it: a push of the
/// sync was answered with at least one record accepted, or a push of any
/// list of this process was within [`EVIDENCE_WINDOW`] ([`LastTaken`]).
/// An answer that counts every record as rejected is not evidence.
///
/// Shared by the sync's Writers; clones share it.
#[derive(Clone, Debug)]
pub struct Evidence {
    /// A push of this sync had a record accepted.
    sync: Rc<Cell<bool>>,
    process: LastTaken,
}

impl Evidence {
    /// A sync's evidence, none of its own yet, with the process's.
    pub fn new(process: LastTaken) -> Evidence {
        Evidence {
            sync: Rc::default(),
            process,
        }
    }

    /// Notes how Ometria answered a push of the sync: with a record
    /// accepted, for this sync and for the whole process.
    pub fn note(&self, outcome: &PushOutcome) {
        if outcome.accepted > 0 {
            self.sync.set(true);
            self.process.note(Utc::now());
        }
    }

    /// Whether there is evidence now.
    pub fn holds(&self) -> bool {
        self.sync.get() || self.process.within(EVIDENCE_WINDOW, Utc::now())
    }
}

/// What to fix when a search gives up without evidence.
const SEARCH_GAVE_UP: &str = "the batch and the first 14 parts of it tried were all refused, and Ometria took no record from this importer in the last hour: not a record's content; check OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY";

/// What to fix when every record was refused, alone or together, without evidence.
const EVERY_RECORD_REFUSED: &str = "every record of the batch was refused, alone or together, and Ometria took no record from this importer in the last hour: not a record's content; check OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY";

/// `e`, a refusal, saying what to fix when it is not a record's content.
fn not_a_record(e: ApiError, hint: &'static str) -> ApiError {
    match e {
        ApiError::Refused {
            api, status, problem, ..
        } => ApiError::Refused {
            api,
            status,
            problem,
            hint,
        },
        other => other,
    }
}

/// How a batch went in the end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Ometria's counts, summed over the pushes that settled each part
    /// (records refused alone count as rejected).
    pub outcome: PushOutcome,
    /// The records Ometria would not take, each with why.
    pub rejected: Vec<Rejection>,
    /// Pushes made (not counting retries of one push).
    pub pushes: u32,
}

impl Delivery {
    /// Which records of `batch` (the batch this delivery is of, in its
    /// order) Ometria accepted: every one but those in [`Self::rejected`],
    /// matched by their bytes, each rejection once. The member ledger
    /// records these as soon as the answer is in (issue 16).
    pub fn accepted(&self, batch: &[Bytes]) -> Vec<bool> {
        let mut accepted = vec![true; batch.len()];
        for rejection in &self.rejected {
            let found = batch
                .iter()
                .zip(accepted.iter())
                .position(|(record, taken)| *taken && *record == rejection.record);
            if let Some(i) = found {
                accepted[i] = false;
            }
        }
        accepted
    }
}

/// Pushes `batch` with `push` (one push, retried as it sees fit), and finds
/// the records Ometria will not take.
///
/// A push refused for its content ([`refused_for_content`]: 400, 413, 422)
/// is split in halves, and both pushed, breadth first, so that the parts
/// without a bad record are taken early; a single record refused is
/// pushed alone once more, after the other parts, and kept aside with
/// Ometria's message if refused again. A part taken with `rejected > 0` is
/// searched by [`isolate`].
///
/// `evidence()` says whether there is [`Evidence`] from elsewhere that
/// Ometria takes records; a part of this batch taken with a record
/// accepted is evidence too.
///
/// Errors: any other failure of a push, as it is (401, 403, 404, 405, or
/// passing failures `push` gave up on). A refusal for content, with what
/// to fix, when there is no evidence and either the first
/// [`REFUSED_PUSHES_WITHOUT_EVIDENCE`] pushes were all refused, or records
/// were refused alone (then it is not a record's content).
pub async fn deliver<F, Fut>(batch: &[Bytes], mut push: F, evidence: impl Fn() -> bool) -> Result<Delivery, ApiError>
where
    F: FnMut(Vec<Bytes>) -> Fut,
    Fut: Future<Output = Result<PushOutcome, ApiError>>,
{
    let mut pushes = 0;
    let mut counted = |records: Vec<Bytes>| {
        pushes += 1;
        push(records)
    };
    let mut delivery = Delivery::default();
    // A part of this batch was taken with a record accepted.
    let mut taken = false;
    let mut refused_alone = vec![];
    let mut last_refusal = None;
    let mut made = 0;
    // Each part, and whether it is a record already refused alone once.
    let mut parts = VecDeque::from([(batch, false)]);
    while let Some((part, refused_once)) = parts.pop_front() {
        made += 1;
        match counted(part.to_vec()).await {
            Ok(outcome) => {
                taken |= outcome.accepted > 0;
                // Counts are Ometria's word: never trusted not to overflow.
                delivery.outcome.accepted = delivery.outcome.accepted.saturating_add(outcome.accepted);
                delivery.outcome.rejected = delivery.outcome.rejected.saturating_add(outcome.rejected);
                if outcome.rejected > 0 {
                    let found = isolate(part, outcome.rejected, &mut counted).await?;
                    delivery.rejected.extend(found.into_iter().map(|record| Rejection {
                        record,
                        reason: COUNTED_AS_REJECTED.into(),
                    }));
                }
            }
            Err(e) if refused_for_content(&e) => {
                if made >= REFUSED_PUSHES_WITHOUT_EVIDENCE && !taken && !evidence() {
                    return Err(not_a_record(e, SEARCH_GAVE_UP));
                }
                match part {
                    // Pushed alone once more, after the other parts, before
                    // it is kept aside: a passing refusal must not cost a
                    // good record.
                    [_] if !refused_once => parts.push_back((part, true)),
                    [record] => refused_alone.push(Rejection {
                        record: record.clone(),
                        reason: refusal_reason(&e),
                    }),
                    _ => {
                        let (first, second) = part.split_at(part.len() / 2);
                        parts.push_back((first, false));
                        parts.push_back((second, false));
                    }
                }
                last_refusal = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(e) = last_refusal.filter(|_| !refused_alone.is_empty()) {
        if !taken && !evidence() {
            return Err(not_a_record(e, EVERY_RECORD_REFUSED));
        }
    }
    delivery.outcome.rejected = delivery.outcome.rejected.saturating_add(refused_alone.len() as u64);
    delivery.rejected.extend(refused_alone);
    delivery.pushes = pushes;
    Ok(delivery)
}

/// Why a record refused alone was: Ometria's status and message.
fn refusal_reason(e: &ApiError) -> String {
    match e {
        ApiError::Refused {
            status,
            problem: Some(p),
            ..
        } if p.title.is_some() || p.detail.is_some() => {
            format!("Ometria refused a push of this record alone with HTTP {status}: {p}")
        }
        ApiError::Refused { status, .. } => {
            format!("Ometria refused a push of this record alone with HTTP {status}")
        }
        other => other.to_string(),
    }
}

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
    /// reason, as a WARNING. `what` opens the line, e.g. `Ometria rejected
    /// 2 of 100 records of list "L"`.
    ///
    /// Errors: the file could not be written. The records are then neither
    /// in Ometria nor in the file, so the sync that has them must fail
    /// (issue 14): nothing is logged here, the error says it all.
    pub fn keep(&self, list_id: &str, rejections: &[Rejection], what: &str, log: &Logger) -> Result<(), Unkept> {
        if rejections.is_empty() {
            return Ok(());
        }
        let (named, n) = (describe(rejections), rejections.len());
        match self.append(list_id, rejections, Utc::now()) {
            Ok(path) => {
                warn!(log, "sync: {what}: {named}; kept in {}.", path.display(); "rejected" => n);
                Ok(())
            }
            Err(source) => Err(Unkept {
                what: format!("{what}: {named}"),
                path: self.file_for(list_id),
                dir: self.dir.clone(),
                source,
            }),
        }
    }
}

/// Rejected records that could not be kept in their file: neither in
/// Ometria nor recorded, they are not accounted for, and fail the sync.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what}; they could not be kept in {}: {source}; being neither in Ometria nor in that file, they fail the sync: make {} a folder the importer can write",
    .path.display(),
    .dir.display()
)]
pub struct Unkept {
    /// Which records, and why Ometria would not take them.
    what: String,
    path: PathBuf,
    /// The folder of rejected files.
    dir: PathBuf,
    source: io::Error,
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

    /// A push that refuses, with `status` and Ometria's error, any part
    /// holding a record in `poison`, and else takes it, counting the
    /// records in `counted` as rejected. Counts its calls.
    fn refusing<'a>(
        status: u16,
        poison: &'a [usize],
        counted: &'a [usize],
        calls: &'a RefCell<u32>,
    ) -> impl FnMut(Vec<Bytes>) -> std::future::Ready<Result<PushOutcome, ApiError>> + 'a {
        move |part: Vec<Bytes>| {
            *calls.borrow_mut() += 1;
            let holds = |ids: &[usize]| {
                part.iter()
                    .filter(|r| ids.iter().any(|b| r[..] == *format!(r#"{{"id":"r{b}"}}"#).as_bytes()))
                    .count() as u64
            };
            std::future::ready(if holds(poison) > 0 {
                Err(ApiError::from_status(
                    crate::api::Api::Ometria,
                    awc::http::StatusCode::from_u16(status).unwrap(),
                    None,
                    br#"{"status":"ERROR","message":"Payload invalid: lastname is not text."}"#,
                    |_| "",
                ))
            } else {
                let rejected = holds(counted);
                Ok(PushOutcome {
                    accepted: part.len() as u64 - rejected,
                    rejected,
                })
            })
        }
    }

    fn ids(rejections: &[Rejection]) -> Vec<usize> {
        let mut ids: Vec<usize> = record_ids(&rejections.iter().map(|r| r.record.clone()).collect::<Vec<_>>())
            .iter()
            .map(|id| id[1..].parse().unwrap())
            .collect();
        ids.sort_unstable();
        ids
    }

    #[actix_rt::test]
    async fn the_records_accepted_are_the_batch_minus_those_rejected_or_refused() {
        let calls = RefCell::new(0);
        let all = batch(10);
        let d = deliver(&all, refusing(400, &[2], &[7], &calls), || true).await.unwrap();
        let accepted = d.accepted(&all);
        let not: Vec<usize> = (0..10).filter(|i| !accepted[*i]).collect();
        assert_eq!(not, [2, 7]);
        // Two records of the same bytes, one of them rejected: one stays accepted.
        let twice = vec![all[0].clone(), all[0].clone()];
        let d = Delivery {
            rejected: vec![Rejection {
                record: all[0].clone(),
                reason: COUNTED_AS_REJECTED.into(),
            }],
            ..Delivery::default()
        };
        assert_eq!(d.accepted(&twice), [false, true]);
    }

    #[actix_rt::test]
    async fn a_batch_refused_for_one_record_is_split_breadth_first_to_find_it() {
        for status in [400, 413, 422] {
            let calls = RefCell::new(0);
            let d = deliver(&batch(100), refusing(status, &[42], &[], &calls), || false)
                .await
                .unwrap();
            assert_eq!(
                d.outcome,
                PushOutcome {
                    accepted: 99,
                    rejected: 1
                }
            );
            assert_eq!(ids(&d.rejected), [42]);
            assert_eq!(
                d.rejected[0].reason,
                format!("Ometria refused a push of this record alone with HTTP {status}: Payload invalid: lastname is not text.")
            );
            // The whole batch, then two parts per halving: 100 → 50 → 25 →
            // 13 → 7 → 4 → 2 → 1; then the record alone once more.
            assert_eq!((d.pushes, *calls.borrow()), (16, 16));
        }
        // Wherever the record is, at most 2 pushes per halving, and one more.
        for at in 0..100 {
            let calls = RefCell::new(0);
            let d = deliver(&batch(100), refusing(400, &[at], &[], &calls), || false)
                .await
                .unwrap();
            assert_eq!(ids(&d.rejected), [at]);
            assert!(d.pushes <= 16, "{} pushes for record {at}", d.pushes);
        }
    }

    #[actix_rt::test]
    async fn a_record_refused_alone_once_is_pushed_alone_again_before_it_is_kept_aside() {
        // Ometria refuses any push holding record 42, and the first push
        // of record 41 alone (a passing refusal; the split of 100 reaches
        // [41, 42], then each alone): 41 is written, not lost.
        let glitched = RefCell::new(false);
        let calls = RefCell::new(0);
        let mut refuse = refusing(400, &[42], &[], &calls);
        let push = |part: Vec<Bytes>| {
            let alone_41 = part.len() == 1 && part[0][..] == *br#"{"id":"r41"}"#;
            if alone_41 && !glitched.replace(true) {
                return std::future::ready(Err(ApiError::from_status(
                    crate::api::Api::Ometria,
                    awc::http::StatusCode::BAD_REQUEST,
                    None,
                    b"",
                    |_| "",
                )));
            }
            refuse(part)
        };
        let d = deliver(&batch(100), push, || true).await.unwrap();
        assert!(*glitched.borrow(), "41 was never pushed alone");
        assert_eq!(ids(&d.rejected), [42]);
        assert_eq!(
            d.outcome,
            PushOutcome {
                accepted: 99,
                rejected: 1
            }
        );
    }

    #[actix_rt::test]
    async fn several_refused_records_and_counted_ones_are_all_found() {
        let calls = RefCell::new(0);
        let poison = [0, 1, 50, 99];
        let counted = [10, 70];
        let d = deliver(&batch(100), refusing(422, &poison, &counted, &calls), || false)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), [0, 1, 10, 50, 70, 99]);
        assert_eq!(
            d.outcome,
            PushOutcome {
                accepted: 94,
                rejected: 6
            }
        );
        for r in &d.rejected {
            let id = ids(std::slice::from_ref(r))[0];
            if counted.contains(&id) {
                assert_eq!(r.reason, COUNTED_AS_REJECTED);
            } else {
                assert!(r.reason.contains("HTTP 422: Payload invalid"), "{}", r.reason);
            }
        }
        assert_eq!(d.pushes, *calls.borrow());
        // Fifteen refused records spread over every part are found given
        // evidence (below: without it, eight such make the search give up).
        let spread: Vec<usize> = (0..15).map(|i| i * 100 / 16).collect();
        let d = deliver(&batch(100), refusing(400, &spread, &[], &calls), || true)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), spread);
    }

    #[actix_rt::test]
    async fn a_batch_taken_at_once_costs_one_push() {
        let calls = RefCell::new(0);
        let d = deliver(&batch(100), refusing(400, &[], &[], &calls), || false)
            .await
            .unwrap();
        assert_eq!((d.outcome.accepted, d.rejected.len(), d.pushes), (100, 0, 1));
        // Counted rejections go through `isolate`.
        let d = deliver(&batch(100), refusing(400, &[], &[7], &calls), || false)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), [7]);
        assert_eq!(d.rejected[0].reason, COUNTED_AS_REJECTED);
        assert!(d.pushes <= 1 + 7, "{}", d.pushes);
    }

    /// Whether `e` is Ometria's 400 with the double's message and `hint`.
    fn refused_with(e: &ApiError, hint: &str) -> bool {
        matches!(e, ApiError::Refused { status: 400, hint: h, .. } if *h == hint)
            && e.to_string().contains("(Payload invalid: lastname is not text.): ")
    }

    #[actix_rt::test]
    async fn without_evidence_a_search_refused_throughout_gives_up_after_63_pushes() {
        let calls = RefCell::new(0);
        let all: Vec<usize> = (0..100).collect();
        let e = deliver(&batch(100), refusing(400, &all, &[], &calls), || false)
            .await
            .unwrap_err();
        assert!(refused_with(&e, SEARCH_GAVE_UP), "{e}");
        assert!(
            e.to_string()
                .contains("check OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY"),
            "{e}"
        );
        assert_eq!(*calls.borrow(), REFUSED_PUSHES_WITHOUT_EVIDENCE);
        // Thirty-two refused records, one in each part of the sixth level,
        // look the same: the search gives up.
        *calls.borrow_mut() = 0;
        let parts: Vec<usize> = (0..32).map(|i| i * 100 / 32).collect();
        let e = deliver(&batch(100), refusing(400, &parts, &[], &calls), || false)
            .await
            .unwrap_err();
        assert!(refused_with(&e, SEARCH_GAVE_UP), "{e}");
        assert_eq!(*calls.borrow(), REFUSED_PUSHES_WITHOUT_EVIDENCE);
        // Thirty-one are always found: a part of the sixth level holds none
        // and is taken, which is evidence. So are eight, and every fifth
        // record of a batch (20).
        for refused in [
            (0..31).map(|i| i * 100 / 32).collect::<Vec<_>>(),
            (40..71).collect(),
            (0..8).map(|i| i * 100 / 8).collect(),
            (0..100).step_by(5).collect(),
        ] {
            let d = deliver(&batch(100), refusing(400, &refused, &[], &calls), || false)
                .await
                .unwrap();
            assert_eq!(ids(&d.rejected), refused);
            assert_eq!(d.outcome.accepted, 100 - refused.len() as u64);
        }
    }

    #[actix_rt::test]
    async fn with_evidence_a_search_goes_on_to_the_end_and_finds_every_refused_record() {
        let calls = RefCell::new(0);
        // Every fifth record (issue 14: 20 in a batch of 100).
        let fifths: Vec<usize> = (0..100).step_by(5).collect();
        let d = deliver(&batch(100), refusing(400, &fifths, &[], &calls), || true)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), fifths);
        assert_eq!(
            d.outcome,
            PushOutcome {
                accepted: 80,
                rejected: 20
            }
        );
        assert_eq!(
            d.pushes,
            127 + 20,
            "every part holding one is split, each record pushed alone twice"
        );
        // Every record refused alone: the whole tree, 2n − 1 pushes, and n.
        let all: Vec<usize> = (0..100).collect();
        let d = deliver(&batch(100), refusing(400, &all, &[], &calls), || true)
            .await
            .unwrap();
        assert_eq!((ids(&d.rejected), d.outcome.accepted, d.pushes), (all.clone(), 0, 299));
        // Evidence that comes during the search (another Writer's push
        // taken) lets it go on.
        *calls.borrow_mut() = 0;
        let eight: Vec<usize> = (0..8).map(|i| i * 100 / 8).collect();
        let d = deliver(&batch(100), refusing(400, &eight, &[], &calls), || *calls.borrow() > 10)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), eight);
    }

    #[actix_rt::test]
    async fn records_refused_alone_are_kept_only_with_evidence() {
        let calls = RefCell::new(0);
        let all: Vec<usize> = (0..5).collect();
        let e = deliver(&batch(5), refusing(400, &all, &[], &calls), || false)
            .await
            .unwrap_err();
        assert!(refused_with(&e, EVERY_RECORD_REFUSED), "{e}");
        assert_eq!(*calls.borrow(), 9 + 5, "2n − 1 pushes, and each record alone once more");
        // One record alone: refused, and no evidence.
        assert!(deliver(&batch(1), refusing(400, &[0], &[], &calls), || false)
            .await
            .is_err());
        // An answer counting every record rejected is no evidence either.
        let e = deliver(&batch(2), refusing(400, &[0], &[1], &calls), || false)
            .await
            .unwrap_err();
        assert!(refused_with(&e, EVERY_RECORD_REFUSED), "{e}");
        // With evidence, a record refused alone is the record's fault.
        let d = deliver(&batch(1), refusing(400, &[0], &[], &calls), || true)
            .await
            .unwrap();
        assert_eq!((ids(&d.rejected), d.outcome.rejected, d.pushes), (vec![0], 1, 2));
        let d = deliver(&batch(5), refusing(400, &all, &[], &calls), || true)
            .await
            .unwrap();
        assert_eq!(ids(&d.rejected), all);
        // A part of the batch taken is evidence of its own.
        let d = deliver(&batch(5), refusing(400, &[3], &[], &calls), || false)
            .await
            .unwrap();
        assert_eq!((ids(&d.rejected), d.outcome.accepted), (vec![3], 4));
    }

    #[test]
    fn evidence_is_an_accepted_record_of_the_sync_or_of_the_process_within_the_hour() {
        let process = LastTaken::default();
        let (a, b) = (Evidence::new(process.clone()), Evidence::new(process.clone()));
        assert!(!a.holds());
        a.note(&PushOutcome {
            accepted: 0,
            rejected: 100,
        });
        assert!(!a.holds(), "every record rejected is no evidence");
        a.note(&PushOutcome {
            accepted: 1,
            rejected: 99,
        });
        assert!(a.holds() && b.holds(), "the other sync sees it through the process");
        // An hour later, only the sync that had a record taken still holds it.
        let process = LastTaken::default();
        process.note(Utc::now() - chrono::Duration::seconds(3601));
        let (a, b) = (Evidence::new(process.clone()), Evidence::new(process));
        assert!(!a.holds());
        a.sync.set(true);
        assert!(a.holds() && !b.holds());
    }

    #[actix_rt::test]
    async fn other_failures_end_the_search_at_once() {
        let calls = RefCell::new(0);
        let e = deliver(&batch(100), refusing(401, &[3], &[], &calls), || true)
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Refused { status: 401, .. }));
        assert_eq!(*calls.borrow(), 1);
        // A passing failure the push gave up on, in the middle of a search.
        let calls = RefCell::new(0);
        let mut inner = refusing(400, &[3], &[], &calls);
        let e = deliver(
            &batch(100),
            |part: Vec<Bytes>| {
                if part.len() == 25 {
                    std::future::ready(Err(ApiError::Timeout {
                        api: crate::api::Api::Ometria,
                        after: std::time::Duration::from_secs(1),
                    }))
                } else {
                    inner(part)
                }
            },
            || true,
        )
        .await
        .unwrap_err();
        assert!(matches!(e, ApiError::Timeout { .. }), "{e}");
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

    #[test]
    fn records_that_cannot_be_kept_are_an_error_naming_them_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rejected"), "not a folder").unwrap();
        let log = RejectedLog::in_state_dir(dir.path());
        let quiet = Logger::root(slog::Discard, slog::o!());
        let rejection = Rejection {
            record: batch(1)[0].clone(),
            reason: COUNTED_AS_REJECTED.into(),
        };
        assert!(log.keep("l1", &[], "nothing", &quiet).is_ok(), "nothing to keep");
        let e = log
            .keep(
                "l1",
                &[rejection],
                "Ometria rejected 1 of 3 records of list \"l1\"",
                &quiet,
            )
            .unwrap_err()
            .to_string();
        let file = dir.path().join("rejected").join("l1.jsonl");
        assert!(
            e.starts_with(&format!(
                "Ometria rejected 1 of 3 records of list \"l1\": r0 (Ometria counted it as rejected); they could not be kept in {}: ",
                file.display()
            )),
            "{e}"
        );
        assert!(
            e.ends_with(&format!(
                "; being neither in Ometria nor in that file, they fail the sync: make {} a folder the importer can write",
                dir.path().join("rejected").display()
            )),
            "{e}"
        );
    }
}
