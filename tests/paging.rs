//! A Mailchimp whose paging is broken (issue 14): a proxy that drops
//! `offset` or `count`, pages that overlap or skip a member at their
//! edges, short pages, the sort ignored. Whatever it does, a sync ends
//! with every member in Ometria, or fails with its cursor kept and says
//! what the server did — never a success with a member missing.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use wiremock::matchers::{method, query_param};
use wiremock::{Mock, ResponseTemplate};

use ometria_importer::sandbox::mailchimp::PagingBug;
use ometria_importer::sandbox::{Sandbox, SandboxConfig};
use ometria_importer::RunMode;
use support::{
    capture_log, generate_members, loopback, quit, read_json, run_once, sandbox_config, spawn_run, state_dir,
    subscribed, wait_until, Apis, FakeMailchimp, FakeMember, FakeOmetria,
};

/// What became of a list synced through a broken Mailchimp.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Synced, and Ometria holds exactly what Mailchimp holds.
    Synced,
    /// Failed with the cursor kept; the error says what the server did.
    Failed,
}

async fn sync_through(bug: PagingBug, seed: u64, size: usize) -> (End, String) {
    let config = SandboxConfig {
        seed,
        lists: vec![("p".into(), size)],
        paging_bug: Some(bug),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let entries = r#"[{"list_id": "p", "items_per_request": 50, "worker_count": 4}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&sandbox_config(&sandbox, dir.path()), log).await;
    let text = buffer.contents();
    let end = if summary.failed == 0 {
        assert_eq!(summary.succeeded, 1, "{bug:?}: {summary:?}");
        let verification = sandbox.world().verify(&[], None);
        assert!(
            verification.ok,
            "{bug:?}: synced with members missing: {verification:?}\n{text}"
        );
        assert!(read_json(&file)[0]["latest_timestamp"].is_string());
        End::Synced
    } else {
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            entries,
            "{bug:?}: the state file of a failed sync changed"
        );
        assert!(
            text.contains("sync: failed after") && text.contains("could not be read completely: Mailchimp"),
            "{bug:?}: the failure does not say what Mailchimp did:\n{text}"
        );
        End::Failed
    };
    sandbox.stop().await;
    (end, text)
}

#[actix_rt::test]
async fn a_broken_mailchimp_never_lets_a_sync_pass_with_a_member_missing() {
    // Where the fault leaves a way through, the keyset sweep finds it;
    // where it does not, the sync fails loudly.
    let expected = [
        (PagingBug::IgnoresOffset, End::Synced, "at two offsets of one sweep"),
        (PagingBug::OverlapsPages, End::Synced, "at two offsets of one sweep"),
        (
            PagingBug::IgnoresCount,
            End::Synced,
            "Mailchimp returned 10 members at offset 0 where its total_items says 50 were there",
        ),
        (PagingBug::SkipsAtEdges, End::Failed, "(5 pages short in all)"),
        (PagingBug::ShortPages, End::Failed, "(5 pages short in all)"),
        (PagingBug::IgnoresSort, End::Failed, "out of last_changed order"),
        (PagingBug::IgnoresStatus, End::Failed, "dropping the status parameter"),
        // Every request for offset 0 answered empty: the keyset walk, which
        // starts there, reads nothing, and a page of another shape says so.
        (
            PagingBug::StaleFirstPage,
            End::Failed,
            "answers some requests with fewer members than others: the pass's reads found 0 members, but a page asked for with count=50 at offset 1 afterwards said the window holds",
        ),
        // Requests of count 1 or 1000 served short: the sweeps of 50 are not.
        (PagingBug::HidesForCounts, End::Synced, "sync: completed"),
    ];
    for (bug, end, says) in expected {
        for seed in 1..=2 {
            let (got, log) = sync_through(bug, seed, 1234).await;
            assert_eq!(got, end, "{bug:?}, seed {seed}:\n{log}");
            assert!(log.contains(says), "{bug:?}, seed {seed}: no \"{says}\" in\n{log}");
            eprintln!("{bug:?}, seed {seed}: {got:?}");
        }
    }
}

/// Pages of 10 whatever `count` asks, on a list large enough that the
/// keyset sweep needs many more pages than it would at 1,000 a page.
#[actix_rt::test]
async fn a_proxy_dropping_count_on_a_large_list_still_syncs_it() {
    let (end, log) = sync_through(PagingBug::IgnoresCount, 3, 6000).await;
    assert_eq!(end, End::Synced, "{log}");
}

/// A Mailchimp double that answers every members request with the same
/// 100 members and `total_items: 5000`, whatever it was asked.
async fn static_mailchimp() -> Apis {
    let apis = Apis::start(FakeMailchimp::default(), FakeOmetria::default()).await;
    let first_hundred: Vec<_> = generate_members(100, Utc::now())
        .iter()
        .map(FakeMember::to_json)
        .collect();
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"members": first_hundred, "total_items": 5000})))
        .with_priority(2)
        .mount(&apis.mailchimp)
        .await;
    // It keeps `status=archived`: this list has no archived members.
    Mock::given(method("GET"))
        .and(query_param("status", "archived"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"members": [], "total_items": 0})))
        .with_priority(1)
        .mount(&apis.mailchimp)
        .await;
    apis
}

/// Samples of a metrics page, by name with labels (`name{a="b"}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse().unwrap())))
        .collect()
}

async fn get(url: &str) -> (u16, String) {
    let mut answer = awc::Client::default().get(url).send().await.unwrap();
    let body = answer.body().await.unwrap();
    (answer.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// What the server did shows in the metrics (a counter per kind of
/// fault) and in the health endpoint (the entry and its error), not only
/// in the log; the cursor stays and the entry backs off.
#[actix_rt::test]
async fn pages_that_do_not_add_up_show_in_metrics_and_health() {
    let apis = static_mailchimp().await;
    let (dir, file) = state_dir(r#"[{"list_id": "L"}]"#);
    let mut config = apis.config(dir.path());
    config.metrics_addr = Some(loopback());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(20), "the sync to fail", || {
        buffer
            .contents()
            .contains("controller: list \"L\" failed; next attempt after")
    })
    .await;
    let text = buffer.contents();
    let address = text
        .lines()
        .find_map(|l| l.split("serving /metrics and /healthz on http://").nth(1))
        .expect("the metrics address")
        .trim_end_matches('.')
        .to_owned();
    let metrics = samples(&get(&format!("http://{address}/metrics")).await.1);
    let faults = |kind: &str| {
        metrics
            .get(&format!("ometria_importer_paging_faults_total{{kind=\"{kind}\"}}"))
            .copied()
            .unwrap_or(0.0)
    };
    assert!(faults("repeated_member") >= 1.0, "{metrics:?}");
    assert!(faults("outside_window") + faults("short_page") >= 1.0, "{metrics:?}");
    assert_eq!(
        metrics.get("ometria_importer_syncs_total{result=\"failed\"}"),
        Some(&1.0)
    );
    let (status, body) = get(&format!("http://{address}/healthz")).await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200, "failing is not yet behind: {body}");
    assert_eq!(body["failing_count"], 1, "{body}");
    assert_eq!(body["failing"][0]["entry"], "\"L\"");
    let error = body["failing"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("its members could not be read completely: Mailchimp"),
        "{error}"
    );
    let summary = quit(dir.path(), daemon).await;
    assert_eq!((summary.succeeded, summary.failed), (0, 1));
    assert_eq!(read_json(&file), json!([{"list_id": "L"}]));
}

/// The ids Ometria received.
fn pushed_ids(apis: &Apis) -> std::collections::HashSet<String> {
    apis.pushed()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A stale copy of member 20 (a caching proxy, a replica behind) stands
/// where member 150 should be, with 150's `last_changed`, on every
/// request: every page is as long as `total_items` says, in order and
/// within the window, but the sweep read 249 different members of 250.
/// No way of reading shows member 150, so the sync fails, cursor kept.
#[actix_rt::test]
async fn a_member_repeated_pages_apart_with_a_new_last_changed_fails_the_sync() {
    fn stale_copy(members: &[FakeMember], page: &mut [serde_json::Value]) {
        for record in page.iter_mut() {
            if record["unique_email_id"] == members[150].id.as_str() {
                let last_changed = record["last_changed"].clone();
                *record = members[20].to_json();
                record["last_changed"] = last_changed;
            }
        }
    }
    let members = subscribed(250);
    let fake = FakeMailchimp {
        edit: Some(stale_copy),
        ..FakeMailchimp::default()
    }
    .with_list("L", members.clone());
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L", "items_per_request": 50, "worker_count": 4}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (0, 1), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), entries);
    assert!(
        text.contains("but only 249 different ones") && text.contains("member \"u000020\" at two offsets"),
        "the log does not say what the server did:\n{text}"
    );
    assert!(!pushed_ids(&apis).contains(&members[150].id));
}

/// Mailchimp's clock 20 s behind ours (the skew the overlap absorbs):
/// member 20 changes during the sweep and its new `last_changed` is
/// still inside the window, so it moves to the end without changing
/// `total_items`; the member at the next page edge shifts onto a page
/// already read. The sweep's distinct count shows it, the pass is read
/// again, and every member reaches Ometria.
#[actix_rt::test]
async fn a_member_changed_mid_sweep_under_clock_skew_costs_no_other_member() {
    fn change_member_20(members: &mut [FakeMember], before: Option<chrono::DateTime<Utc>>) {
        members[20].lname = "Changed".into();
        members[20].last_changed = before.expect("a window's end") - chrono::Duration::seconds(20);
    }
    let members = subscribed(250);
    let fake = FakeMailchimp {
        mutate_at: Some((3, change_member_20)),
        ..FakeMailchimp::default()
    }
    .with_list("L", members.clone());
    let lists = fake.lists.clone();
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L", "items_per_request": 50, "worker_count": 1}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (1, 0), "{text}");
    assert!(text.contains("but only 249 different ones"), "{text}");
    let pushed = pushed_ids(&apis);
    let now = lists.lock().unwrap()["L"].clone();
    let missing: Vec<&str> = now
        .iter()
        .filter(|m| !pushed.contains(&m.id))
        .map(|m| m.id.as_str())
        .collect();
    assert!(missing.is_empty(), "{missing:?} never sent:\n{text}");
    let last = apis.pushed().into_iter().rev().find(|r| r["id"] == now[20].id.as_str());
    assert_eq!(last.unwrap()["lastname"], "Changed");
    assert!(read_json(&file)[0]["latest_timestamp"].is_string());
}

/// A proxy drops `status=archived` in front of a Mailchimp whose members
/// come without `status`: the archived pass cannot show that it holds
/// only archived members, so it is not trusted — no member is pushed as
/// archived, and the sync fails with its cursor kept.
#[actix_rt::test]
async fn an_archived_pass_of_members_without_a_status_is_not_taken_on_trust() {
    fn drop_status(_: &[FakeMember], page: &mut [serde_json::Value]) {
        for record in page.iter_mut() {
            record.as_object_mut().unwrap().remove("status");
        }
    }
    let mut members = subscribed(20);
    for m in members.iter_mut().skip(15) {
        m.status = "archived";
    }
    let fake = FakeMailchimp {
        edit: Some(drop_status),
        ignores_status: true,
        ..FakeMailchimp::default()
    }
    .with_list("L", members.clone());
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L"}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (0, 1), "{text}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), entries);
    assert!(text.contains("which does not say it is archived"), "{text}");
    let opted_out = apis
        .pushed()
        .iter()
        .filter(|r| r["marketing_optin"] == "EXPLICITLY_OPTEDOUT")
        .count();
    assert_eq!(opted_out, 0);
}

/// Mailchimp's clock 20 s behind ours (its `Date` header says so): during
/// a LOAD, the first member is deleted and a member is added, stamped
/// with Mailchimp's clock. On our clock the new member would land inside
/// the window, `total_items` would not move, and the member shifted past
/// the readers would be lost; on Mailchimp's, the window shrinks and the
/// sweep sees it.
#[actix_rt::test]
async fn a_member_deleted_and_another_added_under_clock_skew_costs_no_other_member() {
    fn delete_first_add_one(members: &mut [FakeMember], _: Option<chrono::DateTime<Utc>>) {
        // Deleted: it leaves every window. Added: changed now on Mailchimp's clock.
        members[0].status = "gone";
        let last = members.len() - 1;
        members[last].status = "subscribed";
        members[last].last_changed = Utc::now() - chrono::Duration::seconds(20);
    }
    let mut members = subscribed(36);
    members[35].status = "not yet";
    let fake = FakeMailchimp {
        mutate_at: Some((4, delete_first_add_one)),
        clock_offset: Some(chrono::Duration::seconds(-20)),
        ..FakeMailchimp::default()
    }
    .with_list("L", members);
    let lists = fake.lists.clone();
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L", "items_per_request": 10, "worker_count": 1}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (1, 0), "{text}");
    assert!(
        text.contains("Mailchimp's clock is 20 s behind this machine's"),
        "{text}"
    );
    // Every member in the window; the one added after T0 (on Mailchimp's
    // clock) belongs to the next SYNC.
    let pushed = pushed_ids(&apis);
    let now = lists.lock().unwrap()["L"].clone();
    let missing: Vec<&str> = now[..35]
        .iter()
        .filter(|m| m.status == "subscribed" && !pushed.contains(&m.id))
        .map(|m| m.id.as_str())
        .collect();
    assert!(missing.is_empty(), "{missing:?} never sent:\n{text}");
    // The cursor is on Mailchimp's clock.
    let cursor = support::utc(read_json(&file)[0]["latest_timestamp"].as_str().unwrap());
    let behind = Utc::now() - cursor;
    assert!(behind >= chrono::Duration::seconds(19), "{cursor}");
}

/// Mailchimp's clock 10 minutes behind ours, more than the overlap: the
/// cursor is kept on Mailchimp's clock, so a member changed after the
/// LOAD (stamped by Mailchimp) is in the next SYNC's window.
#[actix_rt::test]
async fn a_mailchimp_clock_behind_ours_by_more_than_the_overlap_loses_no_change() {
    fn change_u10(members: &mut [FakeMember], _: Option<chrono::DateTime<Utc>>) {
        members[10].fname = "Changed".into();
        members[10].last_changed = Utc::now() - chrono::Duration::seconds(600);
    }
    let members = subscribed(30);
    let offset = chrono::Duration::seconds(-600);
    let fake = FakeMailchimp {
        clock_offset: Some(offset),
        ..FakeMailchimp::default()
    }
    .with_list("L", members);
    let lists = fake.lists.clone();
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let (dir, file) = state_dir(r#"[{"list_id": "L", "items_per_request": 10}]"#);
    let mut config = apis.config(dir.path());
    config.refresh = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    assert_eq!(
        run_once(&config, log.clone()).await.succeeded,
        1,
        "{}",
        buffer.contents()
    );
    let after_load = read_json(&file)[0]["latest_timestamp"].clone();
    // A change on Mailchimp's clock, a few seconds after the LOAD.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while support::utc(after_load.as_str().unwrap()) + chrono::Duration::seconds(2) > Utc::now() + offset {
        assert!(std::time::Instant::now() < deadline, "the clock did not move");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    change_u10(&mut lists.lock().unwrap().get_mut("L").unwrap()[..], None);
    let (id, changed) = {
        let lists = lists.lock().unwrap();
        (lists["L"][10].id.clone(), lists["L"][10].last_changed)
    };
    // The SYNC starts once Mailchimp's clock is past the change's second.
    while (Utc::now() + offset).timestamp() <= changed.timestamp() {
        assert!(std::time::Instant::now() < deadline, "the clock did not move");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(run_once(&config, log).await.succeeded, 1, "{}", buffer.contents());
    let last = apis
        .pushed()
        .into_iter()
        .rev()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(last["firstname"], "Changed", "{}", buffer.contents());
}

/// A `Date` more than an hour behind ours is more likely a wrong clock
/// than Mailchimp's: the sync fails and says so, cursor kept.
#[actix_rt::test]
async fn a_mailchimp_clock_hours_behind_fails_the_sync() {
    let fake = FakeMailchimp {
        clock_offset: Some(chrono::Duration::hours(-3)),
        ..FakeMailchimp::default()
    }
    .with_list("L", subscribed(5));
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L"}]"#;
    let (dir, file) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (0, 1), "{text}");
    assert!(
        text.contains("behind this machine's") && text.contains("(NTP)"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), entries);
}

/// Mid-LOAD, one member is archived and an archived one unarchived, both
/// keeping their `last_changed` (an API may): neither pass's total moves,
/// and the unarchived member lands in a part of the members pass already
/// read. The member read in both passes shows the move; both passes are
/// read again and every member reaches Ometria as it is now.
#[actix_rt::test]
async fn an_archive_and_an_unarchive_keeping_last_changed_lose_no_member() {
    fn swap(members: &mut [FakeMember], _: Option<chrono::DateTime<Utc>>) {
        members[1].status = "archived";
        members[37].status = "subscribed";
    }
    let mut members = subscribed(40);
    for m in &mut members[35..] {
        m.status = "archived";
    }
    let fake = FakeMailchimp {
        mutate_at: Some((4, swap)),
        ..FakeMailchimp::default()
    }
    .with_list("L", members);
    let lists = fake.lists.clone();
    let apis = Apis::start(fake, FakeOmetria::default()).await;
    let entries = r#"[{"list_id": "L", "items_per_request": 10, "worker_count": 1}]"#;
    let (dir, _) = state_dir(entries);
    let (log, buffer) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    let text = buffer.contents();
    assert_eq!((summary.succeeded, summary.failed), (1, 0), "{text}");
    assert!(text.contains("were read both as archived and as not"), "{text}");
    let last: HashMap<String, serde_json::Value> = apis
        .pushed()
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r))
        .collect();
    let now = lists.lock().unwrap()["L"].clone();
    for m in &now {
        let status = &last
            .get(&m.id)
            .unwrap_or_else(|| panic!("{} never sent:\n{text}", m.id))["properties"]["mailchimp_status"];
        assert_eq!(status, m.status, "{}:\n{text}", m.id);
    }
}
