//! The state file while the importer runs (SPEC §2): hand edits during a
//! sync, entries sharing a list id, invalid entries, an unparseable file.

mod support;

use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use ometria_importer::RunMode;
use support::*;

/// A list whose pages take `delay` to answer, so a test can act mid-sync.
async fn slow_apis(delay: Duration) -> Apis {
    let fake = FakeMailchimp::slow(delay).with_list("L", generate_members(40, Utc::now()));
    Apis::start(fake, FakeOmetria::default()).await
}

#[actix_rt::test]
async fn a_cursor_edited_by_hand_during_the_sync_wins() {
    let apis = slow_apis(Duration::from_millis(400)).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    let once = spawn_run(config, RunMode::Once, log);
    apis.first_mailchimp_request().await;
    std::fs::write(
        &file,
        r#"[{"list_id": "L", "latest_timestamp": "2001-02-03T04:05:06", "mine": 1}]"#,
    )
    .unwrap();
    let summary = once.await.unwrap().unwrap();
    assert_eq!(summary.succeeded, 1);
    let state = read_json(&file);
    assert_eq!(state[0]["latest_timestamp"], "2001-02-03T04:05:06");
    assert_eq!(state[0]["mine"], 1);
    assert_eq!(state[0]["total_updates"], 40, "the other results are still written");
    let log = buffer.contents();
    assert!(
        log.contains("state: latest_timestamp of list \"L\" was edited by hand during its sync; keeping \"2001-02-03T04:05:06\" instead of"),
        "{log}"
    );
}

#[actix_rt::test]
async fn an_entry_removed_during_its_sync_is_not_resurrected() {
    let apis = slow_apis(Duration::from_millis(400)).await;
    let up_to_date = cursor_now();
    let (dir, file) = state_dir(&format!(
        r#"[{{"list_id": "L"}}, {{"list_id": "M", "latest_timestamp": "{up_to_date}"}}]"#
    ));
    let config = apis.config(dir.path());
    let (log, buffer) = capture_log();
    let once = spawn_run(config, RunMode::Once, log);
    apis.first_mailchimp_request().await;
    let edited = format!("[\n    {{\"list_id\": \"M\", \"latest_timestamp\": \"{up_to_date}\"}}\n]");
    std::fs::write(&file, &edited).unwrap();
    let summary = once.await.unwrap().unwrap();
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        edited,
        "the file must be left byte for byte"
    );
    assert!(buffer
        .contents()
        .contains("state: list \"L\" was removed from the state file during its sync; its result is dropped."));
}

/// One line per list up to date, as the original logged, up to 100
/// entries; one line for them all above that.
#[actix_rt::test]
async fn many_lists_up_to_date_are_logged_in_one_line() {
    let apis = slow_apis(Duration::ZERO).await;
    let recent = cursor_minutes_ago(5);
    for (entries, lines, summary) in [(100, 100, None), (101, 0, Some("101 of 101 lists"))] {
        let state: Vec<serde_json::Value> = (0..entries)
            .map(|i| json!({"list_id": format!("L{i}"), "latest_timestamp": recent}))
            .collect();
        let (dir, _) = state_dir(&serde_json::to_string(&state).unwrap());
        let (log, buffer) = capture_log();
        let summary_of_run = run_once(&apis.config(dir.path()), log).await;
        assert_eq!(summary_of_run.succeeded + summary_of_run.failed, 0);
        let log = buffer.contents();
        assert_eq!(log.matches("up to date, last updated on").count(), lines, "{log}");
        let summaries: Vec<&str> = log.lines().filter(|l| l.contains("lists up to date")).collect();
        match summary {
            None => assert!(summaries.is_empty(), "{log}"),
            Some(figures) => {
                let line = format!("controller: {figures} up to date (one line each only up to 100 entries).");
                assert!(summaries.len() == 1 && summaries[0].ends_with(&line), "{log}")
            }
        }
    }
}

/// Likewise the lists waiting for a free slot, above 100 of them.
#[actix_rt::test]
async fn many_lists_waiting_for_a_slot_are_logged_in_one_line() {
    let apis = slow_apis(Duration::ZERO).await;
    for (entries, lines) in [(101, 100), (102, 0)] {
        // Unknown lists: each sync fails at its first request.
        let state: Vec<serde_json::Value> = (0..entries).map(|i| json!({"list_id": format!("gone{i}")})).collect();
        let (dir, _) = state_dir(&serde_json::to_string(&state).unwrap());
        let mut config = apis.config(dir.path());
        config.max_concurrent_lists = 1;
        let (log, buffer) = capture_log();
        assert_eq!(run_once(&config, log).await.failed, entries);
        let log = buffer.contents();
        assert_eq!(log.matches("waiting for a free slot (").count(), lines, "{log}");
        let summaries = log
            .matches("controller: 101 lists wait for a free slot (1 syncs running); list \"gone1\" (\"LOAD\") is next.")
            .count();
        assert_eq!(summaries, usize::from(lines == 0), "{log}");
    }
}

#[actix_rt::test]
async fn entries_sharing_a_list_id_are_synced_and_tracked_separately() {
    let apis = slow_apis(Duration::ZERO).await;
    let recent = cursor_minutes_ago(5);
    let (dir, file) = state_dir(&format!(
        r#"[{{"list_id": "L", "latest_timestamp": "{recent}"}}, {{"list_id": "L", "items_per_request": 7, "worker_count": 2}}]"#
    ));
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary.succeeded, 1);
    // Only the second entry was due, and its own parameters were used.
    assert!(apis.mailchimp_queries().await.iter().all(|q| q["count"] == "7"));
    let state = read_json(&file);
    assert_eq!(state[0], json!({"list_id": "L", "latest_timestamp": recent}));
    assert_eq!(state[1]["total_updates"], 40);
    assert!(state[1]["latest_timestamp"].is_string());
    let log = buffer.contents();
    assert!(
        log.contains("controller: list \"L\" up to date, last updated on"),
        "{log}"
    );
    assert!(
        log.contains("controller: list \"L\" (#2) requires \"LOAD\", firing..."),
        "{log}"
    );
}

#[actix_rt::test]
async fn invalid_entries_are_skipped_with_a_warning_and_kept_in_the_file() {
    let apis = slow_apis(Duration::ZERO).await;
    let (dir, file) = state_dir(
        r#"[{"worker_count": 2}, {"list_id": "L", "items_per_request": 5000}, {"list_id": "L", "when": "x"}]"#,
    );
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary.succeeded, 1);
    // The valid entry synced; `once` still exits 1 for the two skipped.
    assert_eq!(summary.invalid, 2);
    assert!(!summary.all_recorded());
    let state = read_json(&file);
    assert_eq!(state[0], json!({"worker_count": 2}));
    assert_eq!(state[1], json!({"list_id": "L", "items_per_request": 5000}));
    assert_eq!(state[2]["total_updates"], 40);
    let log = buffer.contents();
    assert!(log.contains("WARNING |state_keeper| state: entry at index 0, field \"list_id\": is missing (it is required); entry skipped until it is fixed"), "{log}");
    assert!(log.contains("state: entry at index 1 (list_id \"L\"), field \"items_per_request\": must be a whole number from 1 to 1000, found 5000; entry skipped until it is fixed"), "{log}");
}

#[actix_rt::test]
async fn an_unparseable_file_is_left_alone_and_the_result_waits_until_it_parses() {
    let apis = slow_apis(Duration::from_millis(300)).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    apis.first_mailchimp_request().await;
    // An editor is half-way through saving.
    let half_saved = "[\n  {\"list_id\": \"L\",\n";
    std::fs::write(&file, half_saved).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the sync to end and its write to be refused",
        || {
            let log = buffer.contents();
            log.contains("sync: completed") && log.contains("is not valid JSON at line 3, column 0")
        },
    )
    .await;
    // Ticks keep coming; nothing is written, and the list is not synced again.
    wait_for_ticks(&buffer, 3).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), half_saved);
    assert!(buffer
        .contents()
        .contains("1 sync result(s) wait in memory until it can be written."));

    let up_to_date = cursor_now();
    std::fs::write(
        &file,
        format!(r#"[{{"list_id": "L", "saved": true}}, {{"list_id": "new", "latest_timestamp": "{up_to_date}"}}]"#),
    )
    .unwrap();
    wait_until(Duration::from_secs(5), "the pending result to be written", || {
        read_json(&file)[0].get("latest_timestamp").is_some()
    })
    .await;
    let state = read_json(&file);
    assert_eq!(state[0]["saved"], true);
    assert_eq!(state[0]["total_updates"], 40);
    assert_eq!(state[1], json!({"list_id": "new", "latest_timestamp": up_to_date}));

    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary.succeeded, 1, "synced once only");
    assert!(buffer.contents().contains("is readable again."));
}

#[actix_rt::test]
async fn a_stop_abandons_a_sync_after_the_grace_period_without_touching_its_cursor() {
    let apis = slow_apis(Duration::from_secs(30)).await;
    let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
    let (dir, file) = state_dir(text);
    let mut config = apis.config(dir.path());
    config.grace = Duration::from_millis(300);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    apis.first_mailchimp_request().await;
    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary.abandoned, 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(
        !dir.path().join("controller.quit").exists(),
        "the quit file must be removed"
    );
    let log = buffer.contents();
    assert!(
        log.contains("controller: stopping (quit file found); waiting up to 0.3 s for 1 running sync(s) and 0 running deletion(s)."),
        "{log}"
    );
    assert!(
        log.contains("controller: abandoning the sync of list \"L\"; its latest_timestamp is unchanged."),
        "{log}"
    );
    assert!(log.trim_end().ends_with("controller: done."), "{log}");
}

/// Every kind of bad input, and exactly what the operator is told.
#[test]
fn bad_inputs_and_their_exact_messages() {
    use ometria_importer::state::StateFile;
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::in_dir(dir.path());
    let path = file.path().display().to_string();
    let whole_file: &[(&[u8], String)] = &[
        (b"", format!("state file {path} is not valid JSON at line 1, column 0: EOF while parsing a value")),
        (b"[", format!("state file {path} is not valid JSON at line 1, column 1: EOF while parsing a list")),
        (b"[{\"list_id\": \"a\",}]", format!("state file {path} is not valid JSON at line 1, column 18: trailing comma")),
        (b"[{\"list_id\": \"a\"}] x", format!("state file {path} is not valid JSON at line 1, column 20: trailing characters")),
        (b"{\"list_id\": \"a\"}", format!("state file {path} is not a JSON array of entries like [{{\"list_id\": \"…\"}}]: it holds an object")),
        (b"\"a\"", format!("state file {path} is not a JSON array of entries like [{{\"list_id\": \"…\"}}]: it holds the text \"a\"")),
        (b"[\n{\"list_id\": \"\xff\"}]", format!("state file {path} is not valid JSON at line 2, column 14: invalid UTF-8")),
    ];
    for (bytes, message) in whole_file {
        std::fs::write(file.path(), bytes).unwrap();
        assert_eq!(
            &file.load().unwrap_err().to_string(),
            message,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
    std::fs::remove_file(file.path()).unwrap();
    assert_eq!(
        file.load().unwrap_err().to_string(),
        format!("state file {path} does not exist: create it with a JSON array of entries, e.g. [{{\"list_id\": \"<your Mailchimp list id>\"}}]")
    );

    let entries: &[(&str, &str)] = &[
        ("42", "entry at index 0: must be an object like {\"list_id\": \"…\"}, found 42; entry skipped until it is fixed"),
        ("{\"note\": 1}", "entry at index 0, field \"list_id\": is missing (it is required); entry skipped until it is fixed"),
        ("{\"list_id\": null}", "entry at index 0, field \"list_id\": must be a string, found null; entry skipped until it is fixed"),
        ("{\"list_id\": \"\"}", "entry at index 0, field \"list_id\": must not be empty; entry skipped until it is fixed"),
        ("{\"list_id\": \"a \"}", "entry at index 0 (list_id \"a \"), field \"list_id\": has spaces around it; remove them; entry skipped until it is fixed"),
        ("{\"list_id\": \"a\", \"start_offset\": \"10\"}", "entry at index 0 (list_id \"a\"), field \"start_offset\": must be a whole number ≥ 0, found the text \"10\"; entry skipped until it is fixed"),
        ("{\"list_id\": \"a\", \"items_per_request\": 0}", "entry at index 0 (list_id \"a\"), field \"items_per_request\": must be a whole number from 1 to 1000, found 0; entry skipped until it is fixed"),
        ("{\"list_id\": \"a\", \"worker_count\": 1.5}", "entry at index 0 (list_id \"a\"), field \"worker_count\": must be a whole number from 1 to 64, found 1.5; entry skipped until it is fixed"),
        ("{\"list_id\": \"a\", \"refresh_seconds\": -5}", "entry at index 0 (list_id \"a\"), field \"refresh_seconds\": must be a whole number from 1 to 31622400, found -5; entry skipped until it is fixed"),
        ("{\"list_id\": \"a\", \"latest_timestamp\": \"soon\"}", "entry at index 0 (list_id \"a\"), field \"latest_timestamp\": \"soon\" is not a timestamp like \"2019-10-18T22:20:23\"; treated as null (full LOAD)"),
        ("{\"list_id\": \"a\", \"latest_timestamp\": false}", "entry at index 0 (list_id \"a\"), field \"latest_timestamp\": must be a timestamp string like \"2019-10-18T22:20:23\" or null, found false; treated as null (full LOAD)"),
        ("{\"list_id\": \"a\", \"total_updates\": \"many\"}", "entry at index 0 (list_id \"a\"), field \"total_updates\": must be a non-negative number, found the text \"many\"; it will be overwritten by the next successful sync"),
    ];
    for (entry, message) in entries {
        std::fs::write(file.path(), format!("[{entry}]")).unwrap();
        let warnings: Vec<String> = file
            .load()
            .unwrap()
            .entries()
            .warnings
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(warnings, [message.to_string()], "{entry}");
    }
}
