//! Health (SPEC §12): healthy when the controller ticked within two tick
//! intervals and no list is behind. Entries whose last sync failed are
//! listed with their error, whatever the status (a failing list turns it
//! 503 once it is behind). Shared by the Controller, which updates it,
//! and the HTTP endpoint and `health` command, which read it.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use crate::state::EntryKey;

/// Entries behind named in the `reason` text, and listed in `behind`.
const NAMED_IN_REASON: usize = 10;
const LISTED_IN_BEHIND: usize = 100;

pub struct Health {
    tick: Duration,
    /// Unix time of the last tick (0 before the first).
    last_tick: AtomicI64,
    /// Entries behind, as the log names them.
    behind: Mutex<Vec<String>>,
    /// Entries whose last sync failed, with why.
    failing: Mutex<BTreeMap<EntryKey, String>>,
    /// Entries whose last reconciliation failed: why, and whether the
    /// fraction guard held its deletions back.
    reconcile_failing: Mutex<BTreeMap<EntryKey, (String, bool)>>,
}

impl Health {
    pub fn new(tick: Duration) -> Health {
        Health {
            tick,
            last_tick: AtomicI64::new(0),
            behind: Mutex::new(vec![]),
            failing: Mutex::new(BTreeMap::new()),
            reconcile_failing: Mutex::new(BTreeMap::new()),
        }
    }

    fn reconcile_failing(&self) -> std::sync::MutexGuard<'_, BTreeMap<EntryKey, (String, bool)>> {
        self.reconcile_failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last reconciliation of `entry` failed with `error`, `held` when
    /// the fraction guard stopped it (or, `None`, it succeeded). A held
    /// reconciliation turns the status 503 until one succeeds: it does not
    /// mend by itself, an operator must look.
    pub fn reconcile_ended(&self, entry: &EntryKey, failure: Option<(&str, bool)>) {
        match failure {
            Some((error, held)) => self.reconcile_failing().insert(entry.clone(), (error.to_owned(), held)),
            None => self.reconcile_failing().remove(entry),
        };
    }

    /// Whether the last reconciliation of `entry` failed, and whether it
    /// was held back by the fraction guard.
    pub fn reconcile_state(&self, entry: &EntryKey) -> Option<bool> {
        self.reconcile_failing().get(entry).map(|(_, held)| *held)
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, BTreeMap<EntryKey, String>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last sync of `entry` failed with `error` (or, `None`, succeeded).
    pub fn sync_ended(&self, entry: &EntryKey, error: Option<&str>) {
        match error {
            Some(error) => self.failing().insert(entry.clone(), error.to_owned()),
            None => self.failing().remove(entry),
        };
    }

    /// Forgets the failures of entries no longer in the state file.
    pub fn retain_failing(&self, present: impl Fn(&EntryKey) -> bool) {
        self.failing().retain(|key, _| present(key));
        self.reconcile_failing().retain(|key, _| present(key));
    }

    pub fn ticked(&self, at: i64) {
        self.last_tick.store(at, Ordering::Relaxed);
    }

    pub fn set_behind(&self, entries: Vec<String>) {
        *self.behind.lock().unwrap_or_else(|e| e.into_inner()) = entries;
    }

    /// The HTTP status and JSON body `/healthz` answers at `now` (Unix
    /// time); with failing entries, the body also holds `failing_count`
    /// and `failing`: the first hundred, `{"entry": …, "error": …}`.
    pub fn report(&self, now: i64) -> (u16, serde_json::Value) {
        let (status, mut body) = self.status(now);
        let failing = self.failing();
        if !failing.is_empty() {
            let listed: Vec<_> = failing
                .iter()
                .take(LISTED_IN_BEHIND)
                .map(|(key, error)| json!({"entry": key.to_string(), "error": error}))
                .collect();
            body["failing_count"] = json!(failing.len());
            body["failing"] = json!(listed);
        }
        let reconciling = self.reconcile_failing();
        if !reconciling.is_empty() {
            let listed: Vec<_> = reconciling
                .iter()
                .take(LISTED_IN_BEHIND)
                .map(|(key, (error, held))| json!({"entry": key.to_string(), "error": error, "deletions_held": held}))
                .collect();
            body["reconcile_failing_count"] = json!(reconciling.len());
            body["reconcile_failing"] = json!(listed);
        }
        (status, body)
    }

    fn status(&self, now: i64) -> (u16, serde_json::Value) {
        let last = self.last_tick.load(Ordering::Relaxed);
        let allowed = 2 * self.tick.as_secs().max(1) as i64;
        if last == 0 || now - last > allowed {
            let reason = if last == 0 {
                "the controller has not checked the lists yet".to_owned()
            } else {
                format!(
                    "the controller last checked the lists {} s ago (more than two ticks)",
                    now - last
                )
            };
            return (503, json!({"status": "unhealthy", "reason": reason}));
        }
        let held: Vec<String> = self
            .reconcile_failing()
            .iter()
            .filter(|(_, (_, held))| *held)
            .map(|(key, _)| key.to_string())
            .collect();
        let behind = self.behind.lock().unwrap_or_else(|e| e.into_inner());
        if behind.is_empty() && !held.is_empty() {
            let named = held[..held.len().min(NAMED_IN_REASON)].join(", ");
            let more = match held.len() {
                n if n > NAMED_IN_REASON => format!(" and {} more", n - NAMED_IN_REASON),
                _ => String::new(),
            };
            let reason = format!(
                "{} list(s) with deletions held back (more members gone than IMPORTER_MAX_DELETE_FRACTION allows): {named}{more}",
                held.len()
            );
            return (503, json!({"status": "unhealthy", "reason": reason}));
        }
        if !behind.is_empty() {
            // Thousands of lists behind (Ometria down) would make an answer
            // of megabytes: the first few are named, all are counted.
            let named = behind[..behind.len().min(NAMED_IN_REASON)].join(", ");
            let reason = match behind.len() {
                n if n > NAMED_IN_REASON => format!("{n} list(s) behind: {named} and {} more", n - NAMED_IN_REASON),
                n => format!("{n} list(s) behind: {named}"),
            };
            let listed = &behind[..behind.len().min(LISTED_IN_BEHIND)];
            return (
                503,
                json!({"status": "unhealthy", "reason": reason, "behind_count": behind.len(), "behind": listed}),
            );
        }
        (200, json!({"status": "ok"}))
    }
}

/// A plain HTTP/1.0 GET: the status and the body. For the `health`
/// command and the benchmark, which run without an actix system.
pub fn http_get(address: &str, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no answer"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status in the answer"))?;
    Ok((status, body.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_when_ticking_and_nothing_is_behind() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.report(1000).0, 503);
        h.ticked(1000);
        assert_eq!(h.report(1100), (200, json!({"status": "ok"})));
        assert_eq!(h.report(1121).0, 503, "more than two ticks without a check");
        h.set_behind(vec!["\"a1\"".into()]);
        let (status, body) = h.report(1010);
        assert_eq!(status, 503);
        assert_eq!(body["reason"], "1 list(s) behind: \"a1\"");
        let many: Vec<String> = (0..250).map(|i| format!("\"l{i}\"")).collect();
        h.set_behind(many);
        let (status, body) = h.report(1010);
        assert_eq!(status, 503);
        assert_eq!(
            body["reason"],
            "250 list(s) behind: \"l0\", \"l1\", \"l2\", \"l3\", \"l4\", \"l5\", \"l6\", \"l7\", \"l8\", \"l9\" and 240 more"
        );
        assert_eq!(body["behind_count"], 250);
        assert_eq!(body["behind"].as_array().unwrap().len(), 100);
        h.set_behind(vec![]);
        assert_eq!(h.report(1010).0, 200);
    }

    #[test]
    fn a_reconciliation_held_back_by_the_guard_turns_the_status_unhealthy_until_one_succeeds() {
        let h = Health::new(Duration::from_secs(60));
        h.ticked(1000);
        let a = EntryKey {
            list_id: "a".into(),
            rank: 0,
        };
        let b = EntryKey {
            list_id: "b".into(),
            rank: 0,
        };
        h.reconcile_ended(&b, Some(("its members could not be read completely: …", false)));
        let (status, body) = h.report(1010);
        assert_eq!(status, 200, "a failed read is retried, as a sync's");
        assert_eq!(body["reconcile_failing_count"], 1);
        h.reconcile_ended(&a, Some(("900 of the 1000 members …", true)));
        let (status, body) = h.report(1010);
        assert_eq!(status, 503);
        assert_eq!(
            body["reason"],
            "1 list(s) with deletions held back (more members gone than IMPORTER_MAX_DELETE_FRACTION allows): \"a\""
        );
        assert_eq!(
            body["reconcile_failing"][0],
            json!({"entry": "\"a\"", "error": "900 of the 1000 members …", "deletions_held": true})
        );
        assert_eq!(h.reconcile_state(&a), Some(true));
        h.reconcile_ended(&a, None);
        assert_eq!(h.report(1010).0, 200);
        assert_eq!(h.reconcile_state(&a), None);
    }

    #[test]
    fn entries_whose_last_sync_failed_are_listed_with_their_error() {
        let h = Health::new(Duration::from_secs(60));
        h.ticked(1000);
        let key = |list_id: &str, rank| EntryKey {
            list_id: list_id.into(),
            rank,
        };
        let (a, b) = (key("a", 0), key("b", 1));
        h.sync_ended(&a, Some("its members could not be read completely: …"));
        h.sync_ended(&b, Some("Ometria refused the request"));
        let (status, body) = h.report(1010);
        assert_eq!(status, 200, "failing is not behind");
        assert_eq!(body["failing_count"], 2);
        assert_eq!(
            body["failing"][0],
            json!({"entry": "\"a\"", "error": "its members could not be read completely: …"})
        );
        assert_eq!(body["failing"][1]["entry"], "\"b\" (#2)");
        h.sync_ended(&a, None);
        h.retain_failing(|key| key.list_id != "b");
        assert_eq!(h.report(1010), (200, json!({"status": "ok"})));
    }
}
