//! The member ledger (issue 16) end to end: only what changed is pushed,
//! what Ometria accepted is recorded as soon as it is answered, members
//! read twice in one sync are pushed once, the run history, `history` and
//! `forget`, and a ledger deleted or unreadable.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, Request, Respond, ResponseTemplate};

use ometria_importer::ledger::{LedgerStore, LEDGER_FILE_NAME};
use ometria_importer::RunSummary;
use support::*;

/// How many records of each id Ometria received.
fn counts(records: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for r in records {
        *counts.entry(r["id"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    counts
}

/// The figure `name=N` of the last completion line of the log.
fn completion_figure(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rfind(|l| l.contains("sync: completed in"))
        .unwrap_or_else(|| panic!("no completion line\n{log}"));
    line.split_whitespace()
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
        .parse()
        .unwrap()
}

/// Sets every entry's `latest_timestamp` to null: the next run is a LOAD.
fn force_load(file: &Path) {
    let mut state = read_json(file);
    for entry in state.as_array_mut().unwrap() {
        entry["latest_timestamp"] = Value::Null;
    }
    std::fs::write(file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
}

fn history(dir: &Path) -> Vec<ometria_importer::ledger::RunRow> {
    LedgerStore::open_read_only(dir).unwrap().history(None, 100).unwrap()
}

#[actix_rt::test]
async fn a_forced_reload_of_an_unchanged_list_pushes_nothing_and_counts_every_member_unchanged() {
    let members = generate_members(537, Utc::now());
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 50, "worker_count": 4}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    assert_eq!(apis.pushed().len(), 537);
    assert_eq!(completion_figure(&buffer.contents(), "unchanged"), 0);

    force_load(&file);
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    assert_eq!(apis.pushed().len(), 537, "the re-LOAD pushed records");
    assert_eq!(apis.pushes().len(), 6, "the re-LOAD made pushes");
    let text = buffer.contents();
    assert_eq!(completion_figure(&text, "unchanged"), 537);
    assert_eq!(completion_figure(&text, "records"), 0);
    // The state file says what the sync pushed: nothing.
    assert_eq!(read_json(&file)[0]["total_updates"], 0);

    // The history, newest first.
    let rows = history(dir.path());
    assert_eq!(rows.len(), 2);
    let (second, first) = (rows[0].end.as_ref().unwrap(), rows[1].end.as_ref().unwrap());
    assert_eq!(
        (first.members_read, first.pushed, first.unchanged, first.result.as_str()),
        (537, 537, 0, "succeeded")
    );
    assert_eq!(
        (
            second.members_read,
            second.pushed,
            second.unchanged,
            second.result.as_str()
        ),
        (537, 0, 537, "succeeded")
    );
    assert_eq!((rows[0].start.kind.as_str(), rows[0].start.rank), ("LOAD", 0));
}

#[actix_rt::test]
async fn a_member_changed_between_two_runs_is_pushed_and_the_others_are_not() {
    let members = generate_members(300, Utc::now());
    let fake = FakeMailchimp::default().with_list("L", members);
    let apis = Apis::start(fake.clone(), FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 100, "worker_count": 2}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once());
    assert_eq!(apis.pushed().len(), 300);

    {
        let mut lists = fake.lists.lock().unwrap();
        let list = lists.get_mut("L").unwrap();
        for i in [3, 150, 299] {
            list[i].fname = format!("Changed {i}");
        }
    }
    force_load(&file);
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    let again: Vec<Value> = apis.pushed()[300..].to_vec();
    let mut ids: Vec<&str> = again.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["u000003", "u000150", "u000299"]);
    assert!(again
        .iter()
        .all(|r| r["firstname"].as_str().unwrap().starts_with("Changed ")));
    assert_eq!(completion_figure(&buffer.contents(), "unchanged"), 297);
}

/// Ometria double that takes the first `ok` pushes and answers 500 to the
/// rest while `failing` holds; then takes every push.
struct FailAfter {
    inner: FakeOmetria,
    ok: usize,
    served: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

impl Respond for FailAfter {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.failing.load(Ordering::SeqCst) && self.served.fetch_add(1, Ordering::SeqCst) >= self.ok {
            return ResponseTemplate::new(500);
        }
        self.inner.respond(request)
    }
}

#[actix_rt::test]
async fn a_load_failed_part_way_pushes_only_the_rest_when_run_again() {
    let members = generate_members(1000, Utc::now());
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), FakeOmetria::default()).await;
    let failing = Arc::new(AtomicBool::new(true));
    Mock::given(method("POST"))
        .and(path("/v2/push"))
        .respond_with(FailAfter {
            inner: apis.fake_ometria.clone(),
            ok: 6,
            served: Arc::default(),
            failing: failing.clone(),
        })
        .with_priority(1)
        .mount(&apis.ometria)
        .await;
    // One Writer: no push answered after the sync failed goes unrecorded.
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 100, "worker_count": 1}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log.clone()).await;
    assert_eq!(summary.failed, 1, "{}", buffer.contents());
    assert!(read_json(&file)[0].get("latest_timestamp").is_none());
    let first = apis.pushed().len();
    assert_eq!(first, 600);
    assert_eq!(
        LedgerStore::open_read_only(dir.path())
            .unwrap()
            .count_members("L")
            .unwrap(),
        600,
        "every push accepted was recorded before `once` returned"
    );
    let rows = history(dir.path());
    let failed = rows[0].end.as_ref().unwrap();
    assert_eq!((failed.result.as_str(), failed.pushed), ("failed", 600));
    assert!(failed.error.as_deref().unwrap().contains("500"), "{failed:?}");

    failing.store(false, Ordering::SeqCst);
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    let pushed = apis.pushed();
    assert_eq!(pushed.len() - first, 400, "only the rest was pushed");
    let counts = counts(&pushed);
    assert_eq!(counts.len(), 1000);
    assert!(counts.values().all(|n| *n == 1));
    assert_eq!(completion_figure(&buffer.contents(), "unchanged"), 600);
}

#[actix_rt::test]
async fn members_read_twice_within_one_sync_are_pushed_once() {
    let members = generate_members(200, Utc::now());
    let fake = FakeMailchimp {
        change_first_member_at: Some(4),
        ..FakeMailchimp::slow(Duration::from_millis(20))
    }
    .with_list("L", members);
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L", "items_per_request": 10, "worker_count": 2}]"#);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    let text = buffer.contents();
    assert!(text.contains("reading them again (sweep 2)"), "{text}");
    let counts = counts(&apis.pushed());
    let twice: Vec<&String> = counts.iter().filter(|(_, n)| **n > 1).map(|(id, _)| id).collect();
    assert!(twice.is_empty(), "pushed twice: {twice:?}");
    assert!(counts.len() >= 199, "{}", counts.len());
    // The second sweep read members the first had pushed: unchanged.
    assert!(completion_figure(&text, "unchanged") > 0, "{text}");
    assert_eq!(
        completion_figure(&text, "unchanged") + completion_figure(&text, "records"),
        completion_figure(&text, "read")
    );
}

#[actix_rt::test]
async fn a_deleted_ledger_has_everything_pushed_once_again() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(250, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("{LEDGER_FILE_NAME}{suffix}")));
    }
    force_load(&file);
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    let counts = counts(&apis.pushed());
    assert_eq!(counts.len(), 250);
    assert!(counts.values().all(|n| *n == 2));
    assert_eq!(history(dir.path()).len(), 1, "a new ledger, a new history");
}

#[actix_rt::test]
async fn a_ledger_of_garbage_is_moved_aside_and_the_sync_pushes_everything() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(120, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let garbage = vec![0x5Au8; 8192];
    std::fs::write(dir.path().join(LEDGER_FILE_NAME), &garbage).unwrap();
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    assert_eq!(counts(&apis.pushed()).len(), 120);
    let text = buffer.contents();
    let error = text
        .lines()
        .find(|l| l.contains(" ERROR ") && l.contains("could not be read; moved it to"))
        .unwrap_or_else(|| panic!("no ERROR line\n{text}"));
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ledger.sqlite3.unreadable-") && !n.ends_with("-wal") && !n.ends_with("-shm"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(error.contains(&aside[0]), "{error}");
    assert_eq!(std::fs::read(dir.path().join(&aside[0])).unwrap(), garbage);
    // The new ledger holds what this sync pushed.
    let ledger = LedgerStore::open_read_only(dir.path()).unwrap();
    assert_eq!(ledger.count_members("L").unwrap(), 120);
}

#[actix_rt::test]
async fn history_prints_the_syncs_newest_first_and_forget_has_a_list_pushed_again() {
    let apis = Apis::start(
        FakeMailchimp::default()
            .with_list("L", generate_members(80, Utc::now()))
            .with_list("M", generate_members(30, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}, {"list_id": "M"}]"#);

    // No ledger yet: said, exit 1.
    let out = importer_command(dir.path(), Some(&apis))
        .arg("history")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("there is no ledger at "),
        "{}",
        text(&out.stderr)
    );

    let once = || {
        let out = importer_command(dir.path(), Some(&apis)).arg("once").output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    };
    once();
    force_load(&file);
    once();

    let out = importer_command(dir.path(), Some(&apis))
        .args(["history", "--list", "L"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert_eq!(
        lines[0],
        [
            "started",
            "(UTC)",
            "list",
            "kind",
            "result",
            "seconds",
            "read",
            "pushed",
            "unchanged",
            "rejected",
            "skipped",
            "deleted"
        ]
    );
    // Newest first: the re-LOAD pushed nothing.
    assert_eq!(lines[1][1..4], ["L", "LOAD", "succeeded"], "{table}");
    assert_eq!(lines[1][5..], ["80", "0", "80", "0", "0", "0"], "{table}");
    assert_eq!(lines[2][5..], ["80", "80", "0", "0", "0", "0"], "{table}");

    let out = importer_command(dir.path(), Some(&apis))
        .args(["history", "--json", "--limit", "3"])
        .output()
        .unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["result"] == "succeeded" && r["kind"] == "LOAD"));

    // forget: the list's next sync pushes every member again.
    let out = importer_command(dir.path(), Some(&apis))
        .args(["forget", "--list", "L"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Forgot 80 members of list \"L\""),
        "{}",
        text(&out.stdout)
    );
    force_load(&file);
    let before = apis.pushed().len();
    once();
    let again = &apis.pushed()[before..];
    assert_eq!(counts(again).len(), 80, "L pushed again, M not");
    assert!(again.iter().all(|r| r["properties"]["mailchimp_list_id"] == "L"));
}

/// A push whose first answer was lost (a 503: Ometria may have stored it
/// and may still apply it later, over a newer push) is taken on retry:
/// its members are recorded, but not taken as unchanged until a push of
/// theirs is taken long after — a re-LOAD pushes them again, and only
/// them, as the overlap every SYNC re-reads used to repair late writes.
#[actix_rt::test]
async fn members_of_a_push_whose_answer_was_lost_are_pushed_again() {
    let members = generate_members(250, Utc::now());
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), FakeOmetria::default()).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&apis.ometria)
        .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 50, "worker_count": 1}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    let first_push: Vec<String> = apis.pushes()[0].ids.clone();
    assert_eq!((apis.pushed().len(), first_push.len()), (250, 100));

    force_load(&file);
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    let again: Vec<String> = apis.pushed()[250..]
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(again, first_push, "{}", buffer.contents());
    assert_eq!(completion_figure(&buffer.contents(), "unchanged"), 150);
}

/// Issue 17: an entry whose mapping changed since its last full read reads
/// every member at its next sync — even with a cursor that is up to date —
/// and pushes only the members whose record changed; once read with the
/// new mapping, the entry is up to date again.
#[actix_rt::test]
async fn a_changed_mapping_reads_every_member_once_and_pushes_only_the_records_it_changes() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(300, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 100}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    assert_eq!(apis.pushed().len(), 300);

    // Up to date, and unchanged: nothing is read.
    let queries = apis.mailchimp_queries().await.len();
    assert_eq!(run_once(&config, log.clone()).await, RunSummary::default());
    assert_eq!(apis.mailchimp_queries().await.len(), queries);

    // One in five members has no first name: their records stay the same.
    let mut state = read_json(&file);
    state[0]["fields"] = serde_json::json!({"properties.first": "merge_fields.FNAME"});
    std::fs::write(&file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    assert_eq!(run_once(&config, log.clone()).await, ok_once(), "{}", buffer.contents());
    let asked = apis.mailchimp_queries().await;
    assert!(asked.len() > queries, "the changed mapping read nothing");
    for q in &asked[queries..] {
        assert!(
            !q.contains_key("since_last_changed"),
            "not every member was read: {q:?}"
        );
        assert!(q["fields"].contains("members.merge_fields.FNAME"), "{q:?}");
    }
    let again = &apis.pushed()[300..];
    assert_eq!(again.len(), 240, "only the records the mapping changed");
    assert!(again
        .iter()
        .all(|r| r["properties"]["first"].as_str().is_some_and(|f| !f.is_empty())));
    let text = buffer.contents();
    assert!(text.contains("mapping changed since its last full read"), "{text}");
    assert_eq!(completion_figure(&text, "unchanged"), 60);
    let row = &history(dir.path())[0];
    assert_eq!(
        (row.start.kind.as_str(), row.end.as_ref().unwrap().members_read),
        ("SYNC", 300)
    );
    assert_eq!(read_json(&file)[0]["total_updates"], 240, "the sync was recorded");

    // Read with the new mapping: up to date again.
    let queries = apis.mailchimp_queries().await.len();
    assert_eq!(run_once(&config, log).await, RunSummary::default());
    assert_eq!(apis.mailchimp_queries().await.len(), queries);
    assert_eq!(apis.pushed().len(), 540);
}
