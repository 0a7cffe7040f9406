//! One sync end to end, in-process, against wiremock doubles of both APIs.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use ometria_importer::config::OmetriaApi;
use ometria_importer::mailchimp::MEMBER_FIELDS;
use ometria_importer::ometria::MAX_PUSH_BYTES;
use ometria_importer::{RunMode, RunSummary};
use support::*;

fn by_id(records: &[Value]) -> HashMap<String, Value> {
    let mut map = HashMap::new();
    for r in records {
        let id = r["id"].as_str().unwrap().to_string();
        assert!(map.insert(id.clone(), r.clone()).is_none(), "{id} was pushed twice");
    }
    map
}

#[actix_rt::test]
async fn a_load_pushes_every_member_exactly_once_mapped_exactly() {
    let t_start = Utc::now();
    let members = generate_members(537, t_start);
    let archived = members.iter().filter(|m| m.status == "archived").count();
    let fake = FakeMailchimp::slow(Duration::from_millis(100)).with_list("list-a", members.clone());
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(
        r#"[{"note": "mine", "list_id": "list-a", "items_per_request": 50, "worker_count": 4, "x": [1.50]}]"#,
    );
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());

    // Every member arrived once, mapped exactly.
    let expected: HashMap<String, Value> = members
        .iter()
        .map(|m| (m.id.clone(), m.expected_contact("list-a")))
        .collect();
    assert_eq!(by_id(&apis.pushed()), expected);
    // In pushes of at most 100, filled up across pages.
    let mut sizes = apis.fake_ometria.batch_sizes.lock().unwrap().clone();
    sizes.sort_unstable();
    assert_eq!(sizes, [37, 100, 100, 100, 100, 100]);

    // Pages: ceil(447 / 50) = 9 of members, ceil(90 / 50) = 2 archived; each offset read once.
    let queries = apis.mailchimp_queries().await;
    let mut pages: Vec<(bool, u64)> = queries
        .iter()
        .map(|q| (q.contains_key("status"), q["offset"].parse().unwrap()))
        .collect();
    pages.sort_unstable();
    let members_pages = (537 - archived).div_ceil(50) as u64;
    let archived_pages = archived.div_ceil(50) as u64;
    let want: Vec<(bool, u64)> = (0..members_pages)
        .map(|p| (false, p * 50))
        .chain((0..archived_pages).map(|p| (true, p * 50)))
        .collect();
    assert_eq!(pages, want);
    let before = queries[0]["before_last_changed"].clone();
    for q in &queries {
        assert_eq!(q["fields"], MEMBER_FIELDS);
        assert_eq!(
            (q["sort_field"].as_str(), q["sort_dir"].as_str()),
            ("last_changed", "ASC")
        );
        assert_eq!(q["count"], "50");
        assert_eq!(q["before_last_changed"], before, "one window for the whole sync");
        assert!(!q.contains_key("since_last_changed"), "a LOAD has no lower bound");
        if let Some(status) = q.get("status") {
            assert_eq!(status, "archived");
        }
    }
    // Pages were read concurrently: some arrived while another was still being answered.
    let arrivals = apis.fake_mailchimp.arrivals.lock().unwrap().clone();
    let overlapping = arrivals
        .windows(2)
        .filter(|w| w[1] - w[0] < Duration::from_millis(100))
        .count();
    assert!(overlapping >= 3, "pages were read one by one: {arrivals:?}");

    // T0 became the cursor; defaults not written; unknown keys, order and numbers kept.
    let t0 = before.trim_end_matches("+00:00").to_string();
    let t0_time = utc(&t0);
    assert!(t0_time <= Utc::now() && t0_time >= t_start - chrono::Duration::seconds(1));
    let state: Value = read_json(&file);
    let elapsed = state[0]["elapsed_seconds"].to_string();
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        format!(
            "[\n  {{\n    \"note\": \"mine\",\n    \"list_id\": \"list-a\",\n    \"items_per_request\": 50,\n    \"worker_count\": 4,\n    \"x\": [\n      1.50\n    ],\n    \"latest_timestamp\": \"{t0}\",\n    \"elapsed_seconds\": {elapsed},\n    \"total_updates\": 537\n  }}\n]\n"
        )
    );
    let log = buffer.contents();
    assert!(
        log.contains("INFO |controller| controller: list \"list-a\" requires \"LOAD\", firing..."),
        "{log}"
    );
    assert!(
        log.contains("INFO |list_sync| sync: starting for list \"list-a\" with 4 read/write workers..."),
        "{log}"
    );
    assert!(
        log.contains(&format!("sync: completed in {elapsed} (s) for list \"list-a\".")),
        "{log}"
    );
}

#[actix_rt::test]
async fn a_sync_reads_since_the_cursor_minus_the_overlap_and_moves_it_to_t0() {
    let base = Utc::now() - chrono::Duration::hours(2);
    let base = base - chrono::Duration::nanoseconds(base.timestamp_subsec_nanos().into());
    let members: Vec<FakeMember> = generate_members(300, base)
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.last_changed = base + chrono::Duration::seconds(i as i64);
            m
        })
        .collect();
    let cursor = base + chrono::Duration::seconds(500);
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let cursor_text = cursor.format("%Y-%m-%dT%H:%M:%S").to_string();
    let (dir, file) = state_dir(&format!(
        r#"[{{"list_id": "L", "latest_timestamp": "{cursor_text}Z"}}]"#
    ));
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());

    let since = (cursor - chrono::Duration::seconds(300))
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    let queries = apis.mailchimp_queries().await;
    assert!(!queries.is_empty());
    let before = queries[0]["before_last_changed"].clone();
    for q in &queries {
        assert_eq!(q["since_last_changed"], since);
        assert_eq!(q["before_last_changed"], before);
    }
    // Only members changed after `since` (i > 200) were sent.
    let pushed: HashSet<String> = by_id(&apis.pushed()).into_keys().collect();
    let want: HashSet<String> = members[201..].iter().map(|m| m.id.clone()).collect();
    assert_eq!(pushed, want);
    let state = read_json(&file);
    assert_eq!(state[0]["latest_timestamp"], before.trim_end_matches("+00:00"));
    assert_eq!(state[0]["total_updates"], 99);
    assert!(buffer
        .contents()
        .contains("controller: list \"L\" requires \"SYNC\", firing..."));
}

/// `start_offset` is where a LOAD's paging of members starts (for trying
/// a large list from a point): it skips neither the archived members nor
/// a SYNC's window, whose members all changed since the cursor.
#[actix_rt::test]
async fn start_offset_applies_to_a_loads_members_only() {
    let base = Utc::now() - chrono::Duration::hours(2);
    let base = base - chrono::Duration::nanoseconds(base.timestamp_subsec_nanos().into());
    let members: Vec<FakeMember> = generate_members(24, base)
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.last_changed = base + chrono::Duration::seconds(i as i64 * 10);
            m
        })
        .collect();
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    // A LOAD from offset 5: the first 5 members not archived are skipped
    // (with a warning), every archived one is read.
    let (dir, file) = state_dir(r#"[{"list_id": "L", "start_offset": 5}]"#);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    let pushed: HashSet<String> = by_id(&apis.pushed()).into_keys().collect();
    let not_archived: Vec<&FakeMember> = members.iter().filter(|m| m.status != "archived").collect();
    let mut want: HashSet<String> = not_archived[5..].iter().map(|m| m.id.clone()).collect();
    want.extend(members.iter().filter(|m| m.status == "archived").map(|m| m.id.clone()));
    assert_eq!(pushed, want);
    assert!(
        buffer
            .contents()
            .contains("has start_offset 5: this LOAD does not read its first 5 members"),
        "{}",
        buffer.contents()
    );
    // A SYNC reads its whole window, whatever start_offset says. (Without
    // the ledger, which would find those members unchanged since the LOAD.)
    apis.fake_ometria.records.lock().unwrap().clear();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("ledger.sqlite3{suffix}")));
    }
    let cursor = (base + chrono::Duration::seconds(500)).format("%Y-%m-%dT%H:%M:%S");
    std::fs::write(
        &file,
        format!(r#"[{{"list_id": "L", "start_offset": 10000, "latest_timestamp": "{cursor}"}}]"#),
    )
    .unwrap();
    let (log, _) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    let since = base + chrono::Duration::seconds(200);
    let pushed: HashSet<String> = by_id(&apis.pushed()).into_keys().collect();
    let want: HashSet<String> = members
        .iter()
        .filter(|m| m.last_changed > since)
        .map(|m| m.id.clone())
        .collect();
    assert_eq!(pushed, want);
    assert!(!want.is_empty());
}

#[actix_rt::test]
async fn a_cursor_in_the_future_beyond_the_overlap_loads_the_whole_list() {
    // Written in local time two hours ahead of UTC, say: a SYNC from it
    // would skip every change of the next two hours.
    let members = generate_members(150, Utc::now() - chrono::Duration::hours(1));
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let ahead = (Utc::now() + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M:%S");
    let (dir, file) = state_dir(&format!(r#"[{{"list_id": "L", "latest_timestamp": "{ahead}"}}]"#));
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());

    let queries = apis.mailchimp_queries().await;
    assert!(
        queries.iter().all(|q| !q.contains_key("since_last_changed")),
        "{queries:?}"
    );
    let pushed: HashSet<String> = by_id(&apis.pushed()).into_keys().collect();
    assert_eq!(pushed, members.iter().map(|m| m.id.clone()).collect::<HashSet<_>>());
    let state = read_json(&file);
    let before = queries[0]["before_last_changed"].trim_end_matches("+00:00");
    assert_eq!(state[0]["latest_timestamp"], before);
    let log = buffer.contents();
    assert!(
        log.contains("controller: list \"L\" requires \"LOAD\", firing..."),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "controller: list \"L\" has latest_timestamp \"{}\", in the future by more than the 300 s overlap",
            ahead.to_string().replace('T', " ")
        )),
        "{log}"
    );
}

#[actix_rt::test]
async fn members_without_id_or_email_are_skipped_and_counted() {
    let mut members = generate_members(10, Utc::now());
    members[2].id = String::new();
    members[7].email = String::new();
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once());
    assert_eq!(apis.pushed().len(), 8);
    assert_eq!(read_json(&file)[0]["total_updates"], 8);
    let log = buffer.contents();
    assert!(
        log.contains("(no unique_email_id) skipped: it has no unique_email_id."),
        "{log}"
    );
    assert!(
        log.contains("(unique_email_id \"u000007\") skipped: its email address is empty."),
        "{log}"
    );
    assert!(log.contains("skipped=2"), "{log}");
}

/// A sync whose every member lacks `unique_email_id` (or email) read
/// broken answers — Mailchimp gives every member both — and must not pass
/// for a sync of a list of odd members; many odd members among good ones
/// are skipped, the first ten named in the log and the rest counted.
#[actix_rt::test]
async fn members_read_without_ids_fail_the_sync_when_none_could_be_sent() {
    let mut members = generate_members(30, Utc::now());
    for m in &mut members {
        m.id = String::new();
    }
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!((summary.succeeded, summary.failed), (0, 1));
    assert_eq!(read_json(&file), json!([{"list_id": "L"}]));
    assert!(apis.pushed().is_empty());
    let log = buffer.contents();
    assert!(
        log.contains("none of the 30 members read could be sent: each lacked its unique_email_id or email_address"),
        "{log}"
    );
    assert_eq!(log.matches("skipped: it has no unique_email_id.").count(), 10, "{log}");
    assert!(log.contains("Further members this sync skips are counted"), "{log}");

    // The same members among good ones: skipped and counted, the sync passes.
    let mut mixed = generate_members(60, Utc::now());
    for m in mixed.iter_mut().step_by(2) {
        m.id = String::new();
    }
    let apis = Apis::start(FakeMailchimp::default().with_list("L", mixed), FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    assert_eq!(apis.pushed().len(), 30);
    assert!(buffer.contents().contains("skipped=30"), "{}", buffer.contents());
}

/// One member's name holding a lone UTF-16 surrogate escape (an emoji cut
/// in half) or a byte that is not UTF-8 makes the page invalid JSON, and
/// the server sends the same bytes again: the page is read with U+FFFD in
/// their place instead of failing the list on every retry.
#[actix_rt::test]
async fn a_page_with_a_lone_surrogate_or_a_stray_byte_is_read_repaired() {
    let mut members = generate_members(250, Utc::now());
    members[7].lname = "LNAME7".into();
    members[9].fname = "FNAME9".into();
    let mut page = serde_json::to_vec(&json!({
        "members": members.iter().map(FakeMember::to_json).collect::<Vec<_>>(),
        "total_items": 250,
    }))
    .unwrap();
    let mut mangle = |from: &str, to: &[u8]| {
        let at = page.windows(from.len()).position(|w| w == from.as_bytes()).unwrap();
        page.splice(at..at + from.len(), to.iter().copied());
    };
    mangle("\"LNAME7\"", b"\"Zo\\ud83d\"");
    mangle("\"FNAME9\"", b"\"Andr\xe9\"");
    let body = page.clone();
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    Mock::given(method("GET"))
        .and(query_param("offset", "0"))
        .respond_with(move |r: &wiremock::Request| {
            if r.url.query().unwrap_or("").contains("status=archived") {
                ResponseTemplate::new(200).set_body_json(json!({"members": [], "total_items": 0}))
            } else {
                ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json")
            }
        })
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": [], "total_items": 250})))
        .with_priority(2)
        .mount(&apis.mailchimp)
        .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 1000}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());
    let pushed = by_id(&apis.pushed());
    assert_eq!(pushed.len(), 250);
    assert_eq!(pushed[&members[7].id]["lastname"], "Zo\u{fffd}");
    assert_eq!(pushed[&members[9].id]["firstname"], "Andr\u{fffd}");
    assert!(read_json(&file)[0]["latest_timestamp"].is_string());
    assert!(
        buffer
            .contents()
            .contains("was not valid JSON text (a lone UTF-16 surrogate"),
        "{}",
        buffer.contents()
    );
}

/// The failing input of issue 14 and its relatives: every timestamp sent
/// is a real instant in one RFC 3339 form in UTC; the rest are left out of
/// their records, counted, and logged once per sync, not once per member.
#[actix_rt::test]
async fn only_real_instants_are_sent_in_one_form_and_the_rest_are_counted_once() {
    let cases = [
        ("0000-00-00 00:00:00", None),
        ("2021-02-30T10:00:00+00:00", None),
        ("not a date", None),
        ("2021-04-23", None),
        ("2021-04-23 14:14:46", Some("2021-04-23T14:14:46+00:00")),
        ("2021-04-23T16:14:46+02:00", Some("2021-04-23T14:14:46+00:00")),
        ("2021-04-23T14:14:46.123Z", Some("2021-04-23T14:14:46+00:00")),
        ("2019-01-02T03:04:05+00:00", Some("2019-01-02T03:04:05+00:00")),
    ];
    let mut members = generate_members(cases.len() + 2, Utc::now());
    for (member, (opt, _)) in members.iter_mut().zip(&cases) {
        member.status = "subscribed";
        member.timestamp_opt = (*opt).into();
    }
    // An unsubscribed member's bad time is not sent anyway: nothing to count.
    members[cases.len()].status = "unsubscribed";
    members[cases.len()].timestamp_opt = "0000-00-00 00:00:00".into();
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once());
    let pushed = by_id(&apis.pushed());
    assert_eq!(pushed.len(), members.len(), "no member is held back for a bad time");
    for (member, (opt, sent)) in members.iter().zip(&cases) {
        let record = &pushed[&member.id];
        assert_eq!(
            record.get("timestamp_subscribed").and_then(|t| t.as_str()),
            *sent,
            "{opt}: {record}"
        );
        assert_eq!(record["marketing_optin"], "EXPLICITLY_OPTEDIN");
    }
    assert!(read_json(&file)[0]["latest_timestamp"].is_string());
    let log = buffer.contents();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("were left out of its records"))
        .collect();
    assert_eq!(lines.len(), 1, "one line per sync, not one per member:\n{log}");
    assert!(
        lines[0].contains(
            "sync: 4 values of list \"L\" were left out of its records, Ometria would not take them: \
             timestamp_subscribed 4 (the first: \"0000-00-00 00:00:00\" of member \"u000000\")."
        ),
        "{log}"
    );
    assert!(log.contains("dropped=4"), "{log}");
}

#[actix_rt::test]
async fn rejected_records_are_named_counted_kept_and_do_not_fail_the_sync() {
    let members = generate_members(150, Utc::now());
    let bad = ["u000007", "u000042", "u000133"];
    let ometria = FakeOmetria {
        reject_ids: bad.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());
    assert_eq!(read_json(&file)[0]["total_updates"], 150);
    let log = buffer.contents();
    assert!(log.contains("rejected=3"), "{log}");
    // The log and the rejected file name exactly the rejected records.
    let logged: Vec<&str> = log.lines().filter(|l| l.contains("sync: Ometria rejected")).collect();
    let named: Vec<String> = logged
        .iter()
        .flat_map(|l| {
            l.split(": ")
                .nth(2)
                .unwrap()
                .split(" (Ometria counted it as rejected); kept in")
                .next()
                .unwrap()
                .split(", ")
        })
        .map(str::to_owned)
        .collect();
    let mut named = named;
    named.sort();
    assert_eq!(named, bad, "{log}");
    let kept = std::fs::read_to_string(dir.path().join("rejected/L.jsonl")).unwrap();
    let lines: Vec<Value> = kept.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut ids: Vec<&str> = lines.iter().map(|l| l["record"]["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, bad);
    let m = members.iter().find(|m| m.id == "u000042").unwrap();
    let line = lines.iter().find(|l| l["record"]["id"] == "u000042").unwrap();
    assert_eq!(
        (&line["list_id"], &line["record"]),
        (&json!("L"), &m.expected_contact("L"))
    );
    assert!(line["rejected_at"].is_string());
    assert_eq!(line["reason"], "Ometria counted it as rejected");
    // Every other record arrived.
    assert_eq!(by_id_allowing_repeats(&apis.pushed()).len(), 147);
}

/// The lines of a list's rejected file.
fn rejected_lines(state_dir: &std::path::Path, list_id: &str) -> Vec<Value> {
    std::fs::read_to_string(state_dir.join(format!("rejected/{list_id}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The contacts of `members` the importer must push, by id, leaving out `except`.
fn expected_except(members: &[FakeMember], except: &str) -> HashMap<String, Value> {
    members
        .iter()
        .filter(|m| m.id != except)
        .map(|m| (m.id.clone(), m.expected_contact("L")))
        .collect()
}

#[actix_rt::test]
async fn a_record_too_large_for_ometria_is_kept_aside_before_sending_and_the_list_syncs() {
    // Issue 14: one member with a 70,000-character last name among 250.
    // Ometria refuses a push holding a record over 60 KB, storing nothing.
    let mut members = generate_members(250, Utc::now());
    members[42].lname = "Ł".repeat(70_000);
    let ometria = FakeOmetria {
        refusals: Refusals {
            record_over: Some(60 * 1024),
            ..Refusals::default()
        },
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());

    // The 249 others are in Ometria, each pushed once.
    assert_eq!(by_id(&apis.pushed()), expected_except(&members, "u000042"));
    // The large one never reached Ometria, and no push was refused.
    let pushes = apis.pushes();
    assert!(pushes.iter().all(|p| p.status == 200), "{pushes:?}");
    assert!(!pushes.iter().any(|p| p.ids.iter().any(|id| id == "u000042")));
    // It is in the rejected file, with why.
    let lines = rejected_lines(dir.path(), "L");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["record"], members[42].expected_contact("L"));
    let encoded = lines[0]["record"].to_string().len();
    assert!(encoded > 140_000, "{encoded}");
    let reason = lines[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("the record is ") && reason.ends_with(" bytes once encoded; Ometria takes at most 61,440"),
        "{reason}"
    );
    // The log names it with the reason; it counts as rejected; the cursor moved.
    let log = buffer.contents();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("u000042 (the record is ") && l.contains("rejected=1")),
        "{log}"
    );
    assert!(log.contains("rejected=1 skipped=0"), "{log}");
    let state = read_json(&file);
    assert!(state[0]["latest_timestamp"].is_string(), "{state}");
    assert_eq!(state[0]["total_updates"], 250);
}

#[actix_rt::test]
async fn a_batch_refused_whole_for_one_record_is_split_and_only_that_record_is_kept_aside() {
    for status in [400, 422] {
        let members = generate_members(250, Utc::now());
        let ometria = FakeOmetria {
            refusals: Refusals {
                holding: Some((status, vec!["u000042".into()])),
                ..Refusals::default()
            },
            ..Default::default()
        };
        let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
        // One reader: batches of 100, 100 and 50 in offset order, the first holding u000042.
        let (dir, file) = state_dir(r#"[{"list_id": "L", "worker_count": 1}]"#);
        let (log, buffer) = capture_log();
        let summary = run_once(&apis.config(dir.path()), log).await;
        assert_eq!(summary, ok_once(), "{}", buffer.contents());

        // The others are written, once each (a refused push keeps nothing).
        assert_eq!(by_id(&apis.pushed()), expected_except(&members, "u000042"));
        let lines = rejected_lines(dir.path(), "L");
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["record"], members[42].expected_contact("L"));
        let reason = format!("Ometria refused a push of this record alone with HTTP {status}: {POISON_MESSAGE}");
        assert_eq!(lines[0]["reason"], reason.as_str());
        let log = buffer.contents();
        assert!(log.contains(&format!("u000042 ({reason}); kept in")), "{log}");
        let state = read_json(&file);
        assert!(state[0]["latest_timestamp"].is_string(), "{state}");
        assert_eq!(state[0]["total_updates"], 250);
        assert!(log.contains("rejected=1 skipped=0"), "{log}");

        // The cost: two pushes per halving of 100 (100 → 50 → 25 → 13 → 7
        // → 4 → 2 → 1) and the record alone once more, besides the three
        // batches.
        let pushes = apis.pushes();
        let holding = pushes.iter().filter(|p| p.ids.iter().any(|id| id == "u000042")).count();
        assert_eq!((holding, pushes.len()), (9, 3 + 15), "{pushes:?}");
        assert!(pushes.iter().all(|p| p.status == 200 || p.status == status));
    }
}

#[actix_rt::test]
async fn a_push_refused_whatever_it_holds_fails_the_sync_after_a_bounded_search() {
    // With no record ever taken, a batch of 100 gets the first six levels
    // of the split, 63 pushes; a small batch of 5 is split to single
    // records, 9 pushes, each record then pushed alone once more, 5.
    // 250 members make three batches, pushed at once by 8 Writers: at
    // most 63 pushes each.
    for (members, most) in [(100, 63), (5, 14), (250, 189)] {
        let ometria = FakeOmetria {
            refusals: Refusals {
                every_push: true,
                ..Refusals::default()
            },
            ..Default::default()
        };
        let apis = Apis::start(
            FakeMailchimp::default().with_list("L", generate_members(members, Utc::now())),
            ometria,
        )
        .await;
        let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
        let (dir, file) = state_dir(text);
        let (log, buffer) = capture_log();
        let summary = run_once(&apis.config(dir.path()), log).await;
        let log = buffer.contents();
        assert_eq!(
            summary,
            RunSummary {
                failed: 1,
                ..RunSummary::default()
            },
            "{log}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the cursor stays");
        assert!(apis.pushed().is_empty());
        assert!(
            rejected_lines(dir.path(), "L").is_empty(),
            "nothing is kept as rejected"
        );
        let pushes = apis.pushes().len();
        if members == 250 {
            assert!((63..=most).contains(&pushes), "{members} members: {pushes} pushes");
        } else {
            assert_eq!(pushes, most, "{members} members");
        }
        assert!(
            log.contains("Ometria refused the request with HTTP 400 (Payload invalid: unexpected input.): "),
            "{log}"
        );
        assert!(
            log.contains("took no record from this importer in the last hour: not a record's content; check OMETRIA_BASE_URL, OMETRIA_API and OMETRIA_APIKEY"),
            "{log}"
        );
        assert!(log.contains("latest_timestamp stays \"2001-01-01 00:00:00\""), "{log}");
    }
}

/// Ids `u000100`, `u000105`, … `u000195`: every fifth member of the second
/// batch of 100 (issue 14, F7).
fn every_fifth_of_the_second_batch() -> Vec<String> {
    (100..200).step_by(5).map(|i| format!("u{i:06}")).collect()
}

/// `members`, all subscribed, synced by one reader and writer through an
/// Ometria refusing any push holding one of `poison` (sorted): the sync
/// succeeds with every other member written and the refused ones in the
/// rejected file. Returns the pushes made and the state file's entry.
async fn sync_with_refused_records(members: usize, poison: &[String]) -> (usize, Value) {
    let mut members = generate_members(members, Utc::now());
    for m in &mut members {
        m.status = "subscribed";
    }
    let ometria = FakeOmetria {
        refusals: Refusals {
            holding: Some((400, poison.to_vec())),
            ..Refusals::default()
        },
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
    // One reader and writer: batches of 100 in offset order.
    let (dir, file) = state_dir(r#"[{"list_id": "L", "worker_count": 1}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let log = buffer.contents();
    assert_eq!(summary, ok_once(), "{log}");
    let expected: HashMap<String, Value> = members
        .iter()
        .filter(|m| !poison.contains(&m.id))
        .map(|m| (m.id.clone(), m.expected_contact("L")))
        .collect();
    assert_eq!(by_id(&apis.pushed()), expected);
    let mut kept: Vec<String> = rejected_lines(dir.path(), "L")
        .iter()
        .map(|l| l["record"]["id"].as_str().unwrap().to_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, poison);
    assert!(log.contains(&format!("rejected={} skipped=0", poison.len())), "{log}");
    (apis.pushes().len(), read_json(&file)[0].clone())
}

#[actix_rt::test]
async fn twenty_refused_records_of_one_batch_are_all_found_once_ometria_took_another() {
    // Batches are members 0–99, 100–199, 200–249; Ometria takes the first
    // before the second is searched.
    let (pushes, entry) = sync_with_refused_records(250, &every_fifth_of_the_second_batch()).await;
    assert_eq!(entry["total_updates"], 250);
    // The first and last batch once each, the second searched to the end:
    // every part holding a refused record is split, 127 pushes, and each
    // refused record is pushed alone once more, 20.
    assert_eq!(pushes, 1 + 127 + 20 + 1);
}

#[actix_rt::test]
async fn twenty_refused_records_of_a_first_runs_only_batch_are_all_found() {
    // A fresh process, nothing taken before: every fifth member of a
    // 100-member list is refused. The search finds them without evidence
    // from elsewhere (at most 31 per batch are always found).
    let mut poison: Vec<String> = (0..100).step_by(5).map(|i| format!("u{i:06}")).collect();
    poison.sort();
    let (_, entry) = sync_with_refused_records(100, &poison).await;
    assert!(entry["latest_timestamp"].is_string());
}

#[actix_rt::test]
async fn records_all_counted_as_rejected_fail_the_sync_when_ometria_took_none() {
    // Ometria answers every push 200 {"status": "OK", "accepted": 0,
    // "rejected": N} (issue 14, F3): nothing is in Ometria.
    let members = generate_members(250, Utc::now());
    let ometria = FakeOmetria {
        reject_ids: members.iter().map(|m| m.id.clone()).collect(),
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), ometria).await;
    let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
    let (dir, file) = state_dir(text);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let log = buffer.contents();
    assert_eq!(summary.failed, 1, "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the cursor stays");
    // The sync fails at the first answer that makes the records turned
    // down outnumber those taken, not after every batch was pushed.
    assert!(
        log.contains("Ometria turned down 100 records of this sync (counted them as rejected or refused them) and took only 0: more than it took"),
        "{log}"
    );
    assert!(log.contains("latest_timestamp stays \"2001-01-01 00:00:00\""), "{log}");
    assert!(!log.contains("sync: completed"), "{log}");
    // One push per batch: an answer counting every record needs no search.
    assert!(apis.pushes().len() <= 3, "{} pushes", apis.pushes().len());
    // Ometria's answers named them rejected, so they are in the file.
    let kept = rejected_lines(dir.path(), "L").len();
    assert!((100..=250).contains(&kept), "{kept} kept");
}

/// A few records turned down in a sync whose others Ometria took are
/// those records' content, and are kept; most of a sync's turned down
/// fails it, whatever Ometria took before: an endpoint that starts
/// refusing everything must not have the list kept aside and its cursor
/// moved.
#[actix_rt::test]
async fn a_sync_whose_records_ometria_mostly_turns_down_fails() {
    let members = generate_members(250, Utc::now());
    let ometria = FakeOmetria {
        reject_ids: members[..150].iter().map(|m| m.id.clone()).collect(),
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "worker_count": 1}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary.failed, 1, "{}", buffer.contents());
    assert!(read_json(&file)[0].get("latest_timestamp").is_none());
    assert!(
        buffer
            .contents()
            .contains("Ometria turned down 100 records of this sync"),
        "{}",
        buffer.contents()
    );
    // Ten of 250 turned down: kept as rejected, the sync succeeds.
    let ometria = FakeOmetria {
        reject_ids: members[..10].iter().map(|m| m.id.clone()).collect(),
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), ometria).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, _) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    assert_eq!(by_id_allowing_repeats(&apis.pushed()).len(), 240);
    assert_eq!(rejected_lines(dir.path(), "L").len(), 10);
}

/// A member of list "P" changed a minute ago whose record Ometria refuses
/// in any push holding it, and the double refusing it.
fn refused_member() -> (FakeMember, FakeOmetria) {
    let mut member = generate_members(1, Utc::now()).remove(0);
    member.id = "p000001".into();
    member.last_changed = Utc::now() - chrono::Duration::seconds(60);
    let ometria = FakeOmetria {
        refusals: Refusals {
            holding: Some((422, vec![member.id.clone()])),
            ..Refusals::default()
        },
        ..Default::default()
    };
    (member, ometria)
}

#[actix_rt::test]
async fn a_sync_whose_only_record_is_refused_fails_unless_ometria_took_a_record_within_the_hour() {
    // A SYNC window holding one member, whose record Ometria refuses alone
    // (issue 14, F8). Alone in a fresh process, nothing shows that Ometria
    // takes records at all: the sync fails, nothing is kept.
    let (member, ometria) = refused_member();
    let apis = Apis::start(FakeMailchimp::default().with_list("P", vec![member.clone()]), ometria).await;
    let text = format!(
        r#"[{{"list_id": "P", "latest_timestamp": "{}", "refresh_seconds": 60}}]"#,
        cursor_minutes_ago(2)
    );
    let (dir, file) = state_dir(&text);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let log = buffer.contents();
    assert_eq!(summary.failed, 1, "{log}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    assert!(
        log.contains(&format!("({POISON_MESSAGE}): every record of the batch was refused, alone or together, and Ometria took no record from this importer in the last hour")),
        "{log}"
    );
    assert!(rejected_lines(dir.path(), "P").is_empty());
    assert_eq!(apis.pushes().len(), 2, "the record, alone, twice");

    // The same sync in a daemon that has just loaded another list: Ometria
    // takes records, so this one is the record's fault. It is kept aside
    // and the sync succeeds.
    let members = generate_members(40, Utc::now());
    let fake_mailchimp = FakeMailchimp::default()
        .with_list("P", vec![member])
        .with_list("good", members);
    let (_, ometria) = refused_member();
    let apis = Apis::start(fake_mailchimp, ometria).await;
    let text = format!(
        r#"[{{"list_id": "P", "latest_timestamp": "{}"}}, {{"list_id": "good"}}]"#,
        cursor_now()
    );
    let (dir, file) = state_dir(&text);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(20), "the LOAD of good", || {
        read_json(&file)[1].get("latest_timestamp").is_some()
    })
    .await;
    let mut state = read_json(&file);
    state[0]["latest_timestamp"] = json!(cursor_minutes_ago(2));
    state[0]["refresh_seconds"] = json!(60);
    let edited = dir.path().join("state.json.edit");
    std::fs::write(&edited, state.to_string()).unwrap();
    std::fs::rename(&edited, &file).unwrap();
    wait_until(Duration::from_secs(20), "the SYNC of P", || {
        buffer.contents().contains("sync: completed") && buffer.contents().contains("for list \"P\".")
    })
    .await;
    let summary = quit(dir.path(), daemon).await;
    let log = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (2, 0), "{log}");
    let lines = rejected_lines(dir.path(), "P");
    assert_eq!(lines.len(), 1, "{log}");
    assert_eq!(lines[0]["record"]["id"], "p000001");
    assert_eq!(
        lines[0]["reason"],
        format!("Ometria refused a push of this record alone with HTTP 422: {POISON_MESSAGE}").as_str()
    );
    let state = read_json(&file);
    assert_eq!(state[0]["total_updates"], 1, "{log}");
    assert_ne!(state[0]["latest_timestamp"], json!(cursor_minutes_ago(2)));
}

#[actix_rt::test]
async fn rejected_records_that_cannot_be_kept_fail_the_sync() {
    // Issue 14, F4: `<state dir>/rejected` is a regular file. A record
    // Ometria refuses, or one too large to send, is then neither in
    // Ometria nor in the file: not accounted for.
    for too_large in [false, true] {
        let mut members = generate_members(250, Utc::now());
        let refusals = if too_large {
            members[137].lname = "x".repeat(70_000);
            Refusals::default()
        } else {
            Refusals {
                holding: Some((400, vec!["u000137".into()])),
                ..Refusals::default()
            }
        };
        let ometria = FakeOmetria {
            refusals,
            ..Default::default()
        };
        let apis = Apis::start(FakeMailchimp::default().with_list("L", members), ometria).await;
        let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
        let (dir, file) = state_dir(text);
        std::fs::write(dir.path().join("rejected"), "not a folder").unwrap();
        let (log, buffer) = capture_log();
        let summary = run_once(&apis.config(dir.path()), log).await;
        let log = buffer.contents();
        assert_eq!(summary.failed, 1, "{log}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "the cursor stays");
        let path = dir.path().join("rejected").join("L.jsonl");
        assert!(
            log.lines().any(|l| l.contains("ERROR")
                && l.contains("sync: failed after")
                && l.contains("u000137 (")
                && l.contains(&format!("; they could not be kept in {}: ", path.display()))
                && l.contains("they fail the sync: make ")
                && l.contains("latest_timestamp stays \"2001-01-01 00:00:00\"")),
            "{log}"
        );
        assert!(!log.contains("sync: completed"), "{log}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("rejected")).unwrap(),
            "not a folder"
        );
    }
}

#[actix_rt::test]
async fn a_push_too_large_for_the_server_is_split_and_every_record_arrives() {
    let members = generate_members(250, Utc::now());
    // A batch of 100 contacts is about 30 KB, half of one about 15 KB.
    let limit = 20_000;
    let ometria = FakeOmetria {
        refusals: Refusals {
            body_over: Some(limit),
            ..Refusals::default()
        },
        ..Default::default()
    };
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members.clone()), ometria).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());
    assert_eq!(by_id(&apis.pushed()), expected_except(&members, ""));
    assert!(rejected_lines(dir.path(), "L").is_empty());
    let pushes = apis.pushes();
    assert!(pushes.iter().any(|p| p.status == 413), "{pushes:?}");
    assert!(pushes.iter().all(|p| (p.status == 200) == (p.body_bytes <= limit)));
    assert_eq!(read_json(&file)[0]["total_updates"], 250);
}

#[actix_rt::test]
async fn push_bodies_stay_within_the_byte_budget() {
    // 100 records of about 20 KB each would make a 2 MB body.
    let mut members = generate_members(100, Utc::now());
    for m in &mut members {
        m.lname = "x".repeat(20 * 1024);
    }
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());
    assert_eq!(by_id(&apis.pushed()), expected_except(&members, ""));
    let sizes: Vec<usize> = apis.pushes().iter().map(|p| p.body_bytes).collect();
    assert!(sizes.len() >= 2, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= MAX_PUSH_BYTES), "{sizes:?}");
    assert!(rejected_lines(dir.path(), "L").is_empty());
}

/// Records by id; the search for rejected records re-sends some.
fn by_id_allowing_repeats(records: &[Value]) -> HashMap<String, Value> {
    records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[actix_rt::test]
async fn a_failing_push_leaves_the_cursor_and_the_daemon_running() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(30, Utc::now())),
        FakeOmetria {
            fail_with: Some(500),
            ..Default::default()
        },
    )
    .await;
    let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
    let (dir, file) = state_dir(text);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);

    wait_until(Duration::from_secs(10), "the sync to fail", || {
        buffer.contents().contains("sync: failed")
    })
    .await;
    // Ticks go on; the failed entry waits for its backoff instead of retrying every tick.
    wait_for_ticks(&buffer, 3).await;
    assert!(!daemon.is_finished(), "the daemon stopped");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    let log = buffer.contents();
    assert!(
        log.contains("Ometria failed with HTTP 500 (Internal Server Error: try later)"),
        "{log}"
    );
    assert!(log.contains("latest_timestamp stays \"2001-01-01 00:00:00\""), "{log}");
    assert!(
        log.contains("controller: list \"L\" failed 1 time(s) in a row; next attempt after"),
        "{log}"
    );
    assert_eq!(
        log.matches("controller: list \"L\" requires \"SYNC\", firing...")
            .count(),
        1,
        "{log}"
    );

    let summary = quit(dir.path(), daemon).await;
    assert_eq!(
        summary,
        RunSummary {
            failed: 1,
            ..RunSummary::default()
        }
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    // Ometria never answered well: its push got the plain 2 attempts,
    // however well Mailchimp answered the same sync.
    assert_eq!(apis.ometria.received_requests().await.unwrap().len(), 2);
}

#[actix_rt::test]
async fn an_unknown_list_fails_with_mailchimps_words_and_what_to_fix() {
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "nope"}]"#);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!(summary.failed, 1);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), r#"[{"list_id": "nope"}]"#);
    let log = buffer.contents();
    assert!(
        log.contains("Mailchimp refused the request with HTTP 404 (Resource Not Found: The requested resource could not be found.): check the entry's list_id in state.json"),
        "{log}"
    );
    // Refusals are not retried.
    let requests = apis.mailchimp_queries().await.len();
    assert!(
        (1..=3).contains(&requests),
        "no retries, only the first pages: got {requests}"
    );
}

#[actix_rt::test]
async fn at_most_max_concurrent_lists_sync_at_once() {
    let now = Utc::now();
    let fake = FakeMailchimp::slow(Duration::from_millis(30))
        .with_list("A", generate_members(120, now))
        .with_list("B", generate_members(120, now))
        .with_list("C", generate_members(120, now));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(
        r#"[{"list_id": "A", "items_per_request": 20}, {"list_id": "B", "items_per_request": 20}, {"list_id": "C", "items_per_request": 20}]"#,
    );
    let mut config = apis.config(dir.path());
    config.max_concurrent_lists = 1;
    let (log, _) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary.succeeded, 3);
    // One list at a time: each list's requests form one block, in file order.
    let requests = apis.mailchimp.received_requests().await.unwrap();
    let mut order: Vec<String> = requests
        .iter()
        .map(|r| r.url.path_segments().unwrap().nth(2).unwrap().to_string())
        .collect();
    order.dedup();
    assert_eq!(order, ["A", "B", "C"]);
    assert_eq!(apis.pushed().len(), 360);
    let state = read_json(&file);
    assert!((0..3).all(|i| state[i]["total_updates"] == 120));
}

/// Entries due often cannot keep one due rarely from ever starting: those
/// waiting for a free slot start in the order they became due.
#[actix_rt::test]
async fn an_entry_due_again_at_once_does_not_starve_one_waiting_behind_it() {
    let now = Utc::now();
    // A sync of A takes longer than its refresh interval: A is due again
    // the moment it ends, and comes first in the file.
    let fake = FakeMailchimp::slow(Duration::from_millis(1500))
        .with_list("A", generate_members(5, now))
        .with_list("B", generate_members(5, now));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(
        r#"[{"list_id": "A", "refresh_seconds": 1, "latest_timestamp": "2019-10-18T22:20:23"}, {"list_id": "B"}]"#,
    );
    let mut config = apis.config(dir.path());
    config.max_concurrent_lists = 1;
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(20), "the LOAD of B", || {
        read_json(&file)[1].get("latest_timestamp").is_some()
    })
    .await;
    quit(dir.path(), daemon).await;
    let log = buffer.contents();
    let fired: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("firing..."))
        .map(|l| if l.contains("\"A\"") { "A" } else { "B" })
        .collect();
    // A had waited since 2019, B since the daemon started, A since its
    // first sync's refresh ran out.
    assert_eq!(fired[..2], ["A", "B"], "{log}");
}

#[actix_rt::test]
async fn an_entry_never_syncs_twice_at_once() {
    let fake = FakeMailchimp::slow(Duration::from_millis(1500)).with_list("L", generate_members(5, Utc::now()));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(10), "a tick during the sync", || {
        buffer.contents().contains("controller: list \"L\" is still syncing.")
    })
    .await;
    wait_until(Duration::from_secs(10), "the sync", || {
        read_json(&file)[0].get("latest_timestamp").is_some()
    })
    .await;
    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary.succeeded, 1);
    let firsts = apis
        .mailchimp_queries()
        .await
        .iter()
        .filter(|q| q["offset"] == "0" && !q.contains_key("status"))
        .count();
    assert_eq!(firsts, 1, "the list was started twice");
}

#[actix_rt::test]
async fn the_legacy_record_endpoint() {
    let members = generate_members(12, Utc::now());
    let mailchimp = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(FakeMailchimp::default().with_list("L", members.clone()))
        .mount(&mailchimp)
        .await;
    let ometria = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/record"))
        .and(header("authorization", OMETRIA_KEY))
        .respond_with(|r: &wiremock::Request| {
            let n = serde_json::from_slice::<Vec<Value>>(&r.body).unwrap().len();
            ResponseTemplate::new(201).set_body_json(json!({"status": "OK", "content": n}))
        })
        .mount(&ometria)
        .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let apis = Apis {
        mailchimp,
        ometria,
        fake_mailchimp: FakeMailchimp::default(),
        fake_ometria: FakeOmetria::default(),
    };
    let mut config = apis.config(dir.path());
    config.ometria_api = OmetriaApi::Record;
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary, ok_once(), "{}", buffer.contents());
    let bodies = apis.ometria.received_requests().await.unwrap();
    let records: Vec<Value> = serde_json::from_slice(&bodies[0].body).unwrap();
    assert_eq!(records.len(), 12);
    let m = &members[0];
    assert_eq!(
        records.iter().find(|r| r["id"] == m.id.as_str()).unwrap(),
        &json!({"id": m.id, "email": m.email, "status": m.status, "firstname": m.fname, "lastname": m.lname})
    );
    assert_eq!(read_json(&file)[0]["total_updates"], 12);
}

#[actix_rt::test]
async fn long_syncs_log_their_progress() {
    let fake = FakeMailchimp::slow(Duration::from_millis(150)).with_list("L", generate_members(200, Utc::now()));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L", "items_per_request": 10, "worker_count": 2}]"#);
    let mut config = apis.config(dir.path());
    config.progress_interval = Duration::from_millis(200);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log).await, ok_once());
    let log = buffer.contents();
    let progress: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("sync: list \"L\" progress: "))
        .collect();
    assert!(progress.len() >= 2, "{log}");
    // e.g. `sync: list "L" progress: 40/200 records written, 152 records/s, ETA 1 s.`
    let last = progress.last().unwrap();
    assert!(
        last.contains("/200 records written, ") && last.contains(" records/s, ETA "),
        "{last}"
    );
}

#[actix_rt::test]
async fn every_request_has_a_client_timeout() {
    let fake = FakeMailchimp::slow(Duration::from_secs(20)).with_list("L", generate_members(5, Utc::now()));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.http_timeout = Duration::from_millis(300);
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary.failed, 1);
    let log = buffer.contents();
    assert!(
        log.contains("Mailchimp did not answer within 0.3 s; retry 1 in"),
        "{log}"
    );
    assert!(log.contains("sync: failed after"), "{log}");
}

/// A hung connection is given up after a quarter of the timeout, not all
/// of it, and the retry gets longer: the page and the push still arrive.
#[actix_rt::test]
async fn a_hung_request_is_retried_after_a_quarter_of_the_timeout() {
    let members = generate_members(30, Utc::now());
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), FakeOmetria::default()).await;
    let hung = ResponseTemplate::new(503).set_delay(Duration::from_secs(60));
    for (server, verb) in [(&apis.mailchimp, "GET"), (&apis.ometria, "POST")] {
        Mock::given(method(verb))
            .respond_with(hung.clone())
            .up_to_n_times(1)
            .with_priority(1)
            .mount(server)
            .await;
    }
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.http_timeout = Duration::from_secs(8);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    assert_eq!(by_id(&apis.pushed()).len(), 30);
    assert_eq!(read_json(&file)[0]["total_updates"], 30);
    let log = buffer.contents();
    for api in ["Mailchimp", "Ometria"] {
        assert!(
            log.contains(&format!("{api} did not answer within 2 s; retry 1 in")),
            "{log}"
        );
    }
}

#[actix_rt::test]
async fn passing_failures_are_retried_and_nothing_is_lost() {
    let members = generate_members(250, Utc::now());
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", members.clone()),
        FakeOmetria::default(),
    )
    .await;
    // The first answer of each API is a passing failure.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "0"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&apis.ometria)
        .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.retry.attempts = 3;
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    assert_eq!(by_id(&apis.pushed()).len(), 250);
    assert_eq!(read_json(&file)[0]["total_updates"], 250);
    let log = buffer.contents();
    assert!(log.contains("Mailchimp failed with HTTP 503; retry 1 in"), "{log}");
    assert!(
        log.contains("Ometria is throttling requests (HTTP 429); retry 1 in"),
        "{log}"
    );
}

/// An answer whose counts do not add up to the batch — short, too many,
/// or with a `status` other than "OK" — is retried (writes are idempotent
/// by id): the records it leaves unaccounted for are sent again rather
/// than the whole sync thrown away, and counts that are not about the push
/// never reach the sync's totals.
#[actix_rt::test]
async fn a_push_answer_that_does_not_add_up_is_retried() {
    for (body, said) in [
        (
            json!({"status": "OK", "request_id": "r", "accepted": 1, "rejected": 0}),
            "Ometria accounted for 1 accepted and 0 rejected records of ",
        ),
        (
            json!({"status": "OK", "request_id": "r", "accepted": 1000, "rejected": 0}),
            "Ometria accounted for 1000 accepted and 0 rejected records of ",
        ),
        (
            json!({"status": "OK", "request_id": "r", "accepted": u64::MAX, "rejected": 1}),
            "rejected records of ",
        ),
        (
            json!({"status": "ERROR", "message": "Backend unavailable", "accepted": 100, "rejected": 0}),
            "Ometria sent an unreadable answer: HTTP 200 with status \"ERROR\" rather than \"OK\": Backend unavailable",
        ),
    ] {
        let apis = Apis::start(
            FakeMailchimp::default().with_list("L", generate_members(250, Utc::now())),
            FakeOmetria::default(),
        )
        .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&apis.ometria)
            .await;
        let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
        let (log, buffer) = capture_log();
        assert_eq!(
            run_once(&apis.config(dir.path()), log).await,
            ok_once(),
            "{body}: {}",
            buffer.contents()
        );
        assert_eq!(by_id(&apis.pushed()).len(), 250, "{body}");
        assert_eq!(read_json(&file)[0]["total_updates"], 250, "{body}");
        let log = buffer.contents();
        assert!(log.contains("records=250 rejected=0"), "{body}: {log}");
        assert!(log.contains(said), "{body}: {log}");
        assert!(log.contains("; retry 1 in"), "{body}: {log}");
    }
}

/// An answer that never adds up fails the sync once the push's attempts
/// are spent: its records are not accounted for, so the cursor stays.
#[actix_rt::test]
async fn a_push_answer_that_never_adds_up_fails_the_sync() {
    for body in [
        json!({"status": "OK", "request_id": "r", "accepted": 1000, "rejected": 0}),
        json!({"status": "ERROR", "message": "Backend unavailable"}),
    ] {
        let apis = Apis::start(
            FakeMailchimp::default().with_list("L", generate_members(30, Utc::now())),
            FakeOmetria::default(),
        )
        .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
            .with_priority(1)
            .mount(&apis.ometria)
            .await;
        let text = r#"[{"list_id": "L", "latest_timestamp": "2001-01-01T00:00:00"}]"#;
        let (dir, file) = state_dir(text);
        let (log, buffer) = capture_log();
        let summary = run_once(&apis.config(dir.path()), log).await;
        let log = buffer.contents();
        assert_eq!(summary.failed, 1, "{body}: {log}");
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "{body}: the cursor stays"
        );
        assert!(
            log.contains("latest_timestamp stays \"2001-01-01 00:00:00\""),
            "{body}: {log}"
        );
        // The config's 2 attempts, then the sync fails.
        assert_eq!(
            apis.ometria.received_requests().await.unwrap().len(),
            2,
            "{body}: {log}"
        );
    }
}

/// Issue 14, F10: answers that take every push but always report a full
/// backlog (`X-QueueSize-Remaining: 0`). A push taken is evidence of room:
/// about one push a second, where the header alone made it one every 30 s,
/// with one WARNING rather than silence.
#[actix_rt::test]
async fn a_backlog_header_stuck_at_0_while_every_push_is_taken_costs_a_second_a_push() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(400, Utc::now())),
        FakeOmetria {
            backlog_headers: Some((0, 50_000)),
            ..Default::default()
        },
    )
    .await;
    // One writer: the pushes go one after the other (4 of them).
    let (dir, file) = state_dir(r#"[{"list_id": "L", "worker_count": 1}]"#);
    let (log, buffer) = capture_log();
    let started = std::time::Instant::now();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let took = started.elapsed();
    let log = buffer.contents();
    assert_eq!(summary, ok_once(), "{log}");
    assert_eq!(read_json(&file)[0]["total_updates"], 400);
    let arrivals = apis.fake_ometria.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4);
    for pair in arrivals.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(990),
            "{:?}",
            pair[1] - pair[0]
        );
    }
    // 3 s of holds; at 30 s a push it was a minute and a half.
    assert!(took < Duration::from_secs(30), "{took:?}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("Ometria's backlog")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(
        warnings[0].contains("WARN")
            && warnings[0].contains("ometria: Ometria's backlog is filling: 0 of 50000 records of room left; pushes of every list slow down until it drains."),
        "{log}"
    );
}

#[actix_rt::test]
async fn mailchimp_requests_in_flight_stay_under_the_global_cap() {
    let now = Utc::now();
    let delay = Duration::from_millis(60);
    let fake = FakeMailchimp::slow(delay)
        .with_list("A", generate_members(300, now))
        .with_list("B", generate_members(300, now))
        .with_list("C", generate_members(300, now));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(
        r#"[{"list_id": "A", "items_per_request": 25}, {"list_id": "B", "items_per_request": 25}, {"list_id": "C", "items_per_request": 25}]"#,
    );
    let mut config = apis.config(dir.path());
    config.mailchimp_max_connections = 3;
    let (log, _) = capture_log();
    assert_eq!(run_once(&config, log).await.succeeded, 3);
    assert_eq!(apis.pushed().len(), 900);
    // Requests that arrived within one answer's delay were in flight together.
    let arrivals = apis.fake_mailchimp.arrivals.lock().unwrap().clone();
    let in_flight = most_within(&arrivals, delay);
    assert!(in_flight <= 3, "{in_flight} Mailchimp requests in flight at once");
    assert!(in_flight >= 2, "the lists were not read concurrently");
}

#[actix_rt::test]
async fn ometria_requests_are_paced_across_lists() {
    let now = Utc::now();
    let fake = FakeMailchimp::default()
        .with_list("A", generate_members(1000, now))
        .with_list("B", generate_members(1000, now));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "A"}, {"list_id": "B"}]"#);
    let mut config = apis.config(dir.path());
    config.ometria_max_requests_per_second = Some(10.0);
    let (log, _) = capture_log();
    assert_eq!(run_once(&config, log).await.succeeded, 2);
    assert_eq!(apis.pushed().len(), 2000);
    let arrivals = apis.fake_ometria.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 20);
    // Starts are spaced 101 ms apart; arrival times jitter (more on a busy
    // machine), so a one-second window may catch one or two more at its
    // edges, never a burst (without pacing: all 20).
    let most = most_within(&arrivals, Duration::from_secs(1));
    assert!(most <= 13, "{most} pushes within one second");
    let span = *arrivals.last().unwrap() - arrivals[0];
    assert!(
        span >= Duration::from_millis(1850),
        "20 pushes in {span:?}: faster than 10 per second"
    );
}

#[actix_rt::test]
async fn a_member_leaving_the_window_mid_sweep_costs_no_other_member() {
    let members = generate_members(200, Utc::now());
    let fake = FakeMailchimp {
        change_first_member_at: Some(4),
        ..FakeMailchimp::slow(Duration::from_millis(20))
    }
    .with_list("L", members.clone());
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, _) = state_dir(r#"[{"list_id": "L", "items_per_request": 10, "worker_count": 2}]"#);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&apis.config(dir.path()), log).await, ok_once());
    // The member that changed belongs to the next sync; every other one is
    // here (some twice: the second sweep re-sends, harmlessly).
    let pushed: HashSet<String> = apis
        .pushed()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let missing: Vec<&str> = members[1..]
        .iter()
        .map(|m| m.id.as_str())
        .filter(|id| !pushed.contains(*id))
        .collect();
    assert!(missing.is_empty(), "lost {missing:?}");
    assert!(
        buffer.contents().contains("reading them again (sweep 2)"),
        "{}",
        buffer.contents()
    );
}

#[actix_rt::test]
async fn a_failing_entry_backs_off_while_the_others_sync() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("good", generate_members(40, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "nope"}, {"list_id": "good"}]"#);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_for_ticks(&buffer, 3).await;
    let summary = quit(dir.path(), daemon).await;
    assert_eq!((summary.succeeded, summary.failed), (1, 1));
    let state = read_json(&file);
    assert!(state[0].get("latest_timestamp").is_none());
    assert_eq!(state[1]["total_updates"], 40);
    let log = buffer.contents();
    assert_eq!(
        log.matches("controller: list \"nope\" requires \"LOAD\", firing...")
            .count(),
        1,
        "{log}"
    );
    assert!(
        log.contains("controller: list \"nope\" failed 1 time(s) in a row; next attempt after"),
        "{log}"
    );
    let nope = apis
        .mailchimp
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path().contains("/nope/"))
        .count();
    assert!((1..=3).contains(&nope), "{nope} requests for the failing list");
}

/// A logger that panics on the line containing `message` (standing for a
/// bug in the actor that logs it) and passes every other line on.
struct PanicsOn {
    message: &'static str,
    inner: slog::Logger,
}

impl slog::Drain for PanicsOn {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if record.msg().to_string().contains(self.message) {
            panic!("a bug while logging {:?}", self.message);
        }
        slog::Drain::log(&self.inner, record, values)
    }
}

/// A `once` run in the background, which must end within 10 s whatever
/// panicked inside it.
async fn once_despite_the_panic(
    config: ometria_importer::config::Config,
    log: slog::Logger,
) -> Result<RunSummary, ometria_importer::importer::RunError> {
    actix_rt::time::timeout(Duration::from_secs(10), spawn_run(config, RunMode::Once, log))
        .await
        .expect("the run ends")
        .expect("the run itself does not panic")
}

fn panicking_on(message: &'static str) -> (slog::Logger, ometria_importer::telemetry::log::SharedBuffer) {
    let (inner, buffer) = capture_log();
    (slog::Logger::root(PanicsOn { message, inner }, slog::o!()), buffer)
}

/// A Controller that dies must not pass for a run that succeeded: `once`
/// would exit 0 having synced nothing.
#[actix_rt::test]
async fn a_run_whose_controller_dies_is_an_error_not_a_success() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(10, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _file) = state_dir(r#"[{"list_id": "L"}]"#);
    let (log, _) = panicking_on("controller: starting");
    let ended = once_despite_the_panic(apis.config(dir.path()), log).await;
    assert!(
        matches!(ended, Err(ometria_importer::importer::RunError::ControllerLost)),
        "{ended:?}"
    );
}

/// Without its StateKeeper no result can be recorded: the run ends as lost
/// (exit code 1) rather than wait, or sync the same lists, for ever.
#[actix_rt::test]
async fn a_run_whose_state_keeper_dies_ends_as_lost() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(10, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    // The second entry's warning is the StateKeeper's first line.
    let (dir, _file) = state_dir(r#"[{"list_id": "L"}, {"list_id": 5}]"#);
    let (log, buffer) = panicking_on("state: ");
    let ended = once_despite_the_panic(apis.config(dir.path()), log).await;
    assert!(
        matches!(ended, Err(ometria_importer::importer::RunError::ControllerLost)),
        "{ended:?}"
    );
    assert!(
        buffer.contents().contains("controller: the state keeper is gone"),
        "{}",
        buffer.contents()
    );
}

/// A sync that dies is a failed sync: its cursor stays, the Controller
/// hears of it (so `once` ends instead of waiting for ever, and `go` tries
/// the list again after its backoff), and the other lists go on.
#[actix_rt::test]
async fn a_sync_that_dies_fails_its_entry_and_the_run_goes_on() {
    let apis = Apis::start(
        FakeMailchimp::default()
            .with_list("L", generate_members(10, Utc::now()))
            .with_list("M", generate_members(10, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}, {"list_id": "M"}]"#);
    let (log, buffer) = panicking_on("sync: starting for list \"L\"");
    let summary = once_despite_the_panic(apis.config(dir.path()), log)
        .await
        .expect("the run starts");
    assert_eq!((summary.succeeded, summary.failed), (1, 1), "{}", buffer.contents());
    let state = read_json(&file);
    assert!(state[0].get("latest_timestamp").is_none(), "{state}");
    assert_eq!(state[1]["total_updates"], 10);
    assert!(
        buffer
            .contents()
            .contains("controller: list \"L\" failed; next attempt after"),
        "{}",
        buffer.contents()
    );
}

/// A Fetcher that dies fails its sync, with the cursor kept.
#[actix_rt::test]
async fn a_fetcher_that_dies_fails_its_sync() {
    let apis = Apis::start(
        FakeMailchimp::default().with_list("L", generate_members(10, Utc::now())),
        FakeOmetria::default(),
    )
    .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    // The Fetcher's line about the request it retries.
    let (log, buffer) = panicking_on("of list \"L\" at offset 0 failed: Mailchimp failed with HTTP 503");
    let summary = once_despite_the_panic(apis.config(dir.path()), log)
        .await
        .expect("the run starts");
    assert_eq!((summary.succeeded, summary.failed), (0, 1), "{}", buffer.contents());
    assert!(read_json(&file)[0].get("latest_timestamp").is_none());
    assert!(
        buffer.contents().contains("a Fetcher stopped unexpectedly"),
        "{}",
        buffer.contents()
    );
}

/// Removing an entry forgets it: added back, it is tried at the next tick
/// rather than after the backoff its old failures earned.
#[actix_rt::test]
async fn an_entry_removed_and_added_back_does_not_keep_its_backoff() {
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "nope"}]"#);
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let fired = || {
        buffer
            .contents()
            .matches("controller: list \"nope\" requires \"LOAD\", firing...")
            .count()
    };
    wait_until(Duration::from_secs(10), "the entry backing off", || {
        buffer
            .contents()
            .contains("controller: list \"nope\" failed 1 time(s) in a row")
    })
    .await;
    std::fs::write(&file, "[]\n").unwrap();
    let ticks = buffer.contents().matches("controller: checking all lists.").count();
    wait_for_ticks(&buffer, ticks + 2).await;
    std::fs::write(&file, "[{\"list_id\": \"nope\"}]\n").unwrap();
    wait_until(Duration::from_secs(10), "the entry added back tried again", || {
        fired() == 2
    })
    .await;
    quit(dir.path(), daemon).await;
    assert_eq!(fired(), 2, "{}", buffer.contents());
}

/// Many syncs finishing at once: the Controller must never plan with a view
/// of the state file that predates a result, or it LOADs a list again.
#[actix_rt::test]
async fn lists_finishing_together_are_loaded_once() {
    let now = Utc::now();
    let mut fake = FakeMailchimp::default();
    let ids: Vec<String> = (0..12).map(|i| format!("l{i}")).collect();
    for id in &ids {
        fake = fake.with_list(id, generate_members(30, now));
    }
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries: Vec<Value> = ids.iter().map(|id| json!({"list_id": id})).collect();
    let (dir, file) = state_dir(&serde_json::to_string(&entries).unwrap());
    let mut config = apis.config(dir.path());
    config.tick = Duration::from_secs(1);
    config.max_concurrent_lists = 6;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(10), "every list synced", || {
        every_entry_synced(&read_json(&file))
    })
    .await;
    wait_for_ticks(&buffer, 2).await;
    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary.succeeded, 12, "{}", buffer.contents());
    for id in &ids {
        let fired = buffer
            .contents()
            .matches(&format!("list \"{id}\" requires \"LOAD\", firing..."))
            .count();
        assert_eq!(fired, 1, "{id} was loaded {fired} times");
    }
}

/// Pushes 1000 records with 4 writers at 8 pushes per second while the
/// first push is answered 429 (with this `Retry-After`); returns when each
/// accepted push arrived, counted from the 429.
async fn arrivals_after_a_429(retry_after: Option<&'static str>) -> Vec<Duration> {
    let members = generate_members(1000, Utc::now());
    let apis = Apis::start(FakeMailchimp::default().with_list("L", members), FakeOmetria::default()).await;
    let throttled_at = Arc::new(Mutex::new(None));
    let record = throttled_at.clone();
    Mock::given(method("POST"))
        .respond_with(move |_: &wiremock::Request| {
            *record.lock().unwrap() = Some(std::time::Instant::now());
            let answer = ResponseTemplate::new(429);
            match retry_after {
                Some(after) => answer.insert_header("retry-after", after),
                None => answer,
            }
        })
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&apis.ometria)
        .await;
    let (dir, _) = state_dir(r#"[{"list_id": "L", "worker_count": 4}]"#);
    let mut config = apis.config(dir.path());
    // Paced: where the 429 is read within the 126 ms to the next start,
    // only the first push is in flight when it comes.
    config.ometria_max_requests_per_second = Some(8.0);
    let (log, buffer) = capture_log();
    assert_eq!(run_once(&config, log).await, ok_once(), "{}", buffer.contents());
    assert_eq!(by_id(&apis.pushed()).len(), 1000);
    let throttled_at = throttled_at.lock().unwrap().expect("the first push was throttled");
    let arrivals = apis.fake_ometria.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 10);
    arrivals.iter().map(|a| a.duration_since(throttled_at)).collect()
}

/// A 429 with `Retry-After` holds every Writer off, not only the one that
/// got it: no push starts before it has passed. Only pushes the other 3
/// Writers had under way when the importer read the 429 may arrive before
/// (none where the answer comes back within the 126 ms to the next start;
/// on a slow machine, some); unheld, about 7 would.
#[actix_rt::test]
async fn retry_after_holds_every_writer_off() {
    let arrivals = arrivals_after_a_429(Some("1")).await;
    let early = arrivals.iter().filter(|a| **a < Duration::from_secs(1)).count();
    assert!(
        early <= 3,
        "{early} pushes arrived within the Retry-After: {arrivals:?}"
    );
}

/// Without `Retry-After` only the throttled push backs off: the others go on.
#[actix_rt::test]
async fn a_429_without_retry_after_holds_only_its_own_push() {
    let arrivals = arrivals_after_a_429(None).await;
    assert!(arrivals.iter().any(|a| *a < Duration::from_millis(300)), "{arrivals:?}");
}
