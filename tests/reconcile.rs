//! Deleted members (issue 16): a reconciliation reads the ids of a list's
//! members and opts out those the ledger holds that Mailchimp no longer
//! returns — unless its reads do not add up or too many vanished.
//!
//! Until syncs record what Ometria accepted, each test fills the ledger
//! itself (`LedgerStore::record_accepted`), as a LOAD would.

mod support;

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use ometria_importer::ledger::LedgerStore;
use ometria_importer::{RunMode, RunSummary};
use support::*;

const LIST: &str = "L1";

/// `n` subscribed members, changed over the hours before now.
fn members(n: usize) -> Vec<FakeMember> {
    generate_members(n, Utc::now())
        .into_iter()
        .map(|m| FakeMember {
            status: "subscribed",
            ..m
        })
        .collect()
}

fn ledger_count(dir: &Path) -> u64 {
    LedgerStore::open_read_only(dir).unwrap().count_members(LIST).unwrap()
}

/// An entry synced just now (up to date), with `extra` fields.
fn state_with(extra: Value) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut entry = json!({"list_id": LIST, "latest_timestamp": cursor_now()});
    entry
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    state_dir(&serde_json::to_string_pretty(&json!([entry])).unwrap())
}

/// The opted-out record of a deleted member.
fn opted_out(m: &FakeMember) -> Value {
    json!({"@type": "contact", "id": m.id, "email": m.email, "marketing_optin": "EXPLICITLY_OPTEDOUT",
           "properties": {"mailchimp_status": "deleted", "mailchimp_list_id": LIST}})
}

#[actix_rt::test]
async fn a_member_deleted_in_mailchimp_is_opted_out_and_leaves_the_ledger() {
    let all = members(100);
    let (kept, gone) = all.split_at(97);
    let apis = Apis::start(
        FakeMailchimp::default().with_list(LIST, kept.to_vec()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let before = std::fs::read(&file).unwrap();
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!(
        (summary.reconciled, summary.reconcile_failed, summary.deleted),
        (1, 0, 3)
    );
    assert!(summary.all_recorded());
    assert_eq!(summary.succeeded, 0, "no sync was due");
    let expected: Vec<Value> = gone.iter().map(opted_out).collect();
    assert_eq!(apis.pushed(), expected);
    assert_eq!(ledger_count(dir.path()), 97);
    // The cursor is never a reconciliation's: not one byte of the file moved.
    assert_eq!(std::fs::read(&file).unwrap(), before);
    // Only ids, 1,000 a page, every member changed before T0; each pass
    // read in full is checked by one page of another size, past its end.
    let queries = apis.mailchimp_queries().await;
    assert!(!queries.is_empty());
    for q in &queries {
        assert_eq!(
            q["fields"],
            "members.unique_email_id,members.last_changed,members.status,total_items"
        );
        assert!(q["count"] == "1000" || q["count"] == "100", "{q:?}");
        assert!(q.contains_key("before_last_changed"), "{q:?}");
    }
    let checks: Vec<(Option<&str>, &str)> = queries
        .iter()
        .filter(|q| q["count"] == "100" && !q.contains_key("since_last_changed"))
        .map(|q| (q.get("status").map(String::as_str), q["offset"].as_str()))
        .collect();
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert!(
        checks.contains(&(None, "97")) && checks.contains(&(Some("archived"), "1")),
        "{checks:?}"
    );
    assert!(queries.iter().any(|q| !q.contains_key("since_last_changed")));
    assert!(queries
        .iter()
        .any(|q| q.get("status").map(String::as_str) == Some("archived")));
    let text = buffer.contents();
    assert!(
        text.contains("controller: list \"L1\" requires \"RECONCILE\", firing..."),
        "{text}"
    );
    assert!(text.contains("reconcile: completed in"), "{text}");
    assert!(text.contains("deleted=3"), "{text}");
    // One history row, of kind RECONCILE.
    let rows = LedgerStore::open_read_only(dir.path())
        .unwrap()
        .history(Some(LIST), 10)
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].start.kind, "RECONCILE");
    let end = rows[0].end.as_ref().expect("ended");
    assert_eq!(
        (end.result.as_str(), end.deleted, end.pushed, end.members_read),
        ("succeeded", 3, 3, 97)
    );

    // Reconciled within its interval: the next pass reads nothing.
    let requests = apis.mailchimp_queries().await.len();
    let (log, _) = capture_log();
    let summary = run_once(&apis.config(dir.path()), log).await;
    assert_eq!((summary.reconciled, summary.deleted), (0, 0));
    assert_eq!(apis.mailchimp_queries().await.len(), requests);
}

#[actix_rt::test]
async fn with_on_delete_ignore_deleted_members_only_leave_the_ledger() {
    let all = members(100);
    let apis = Apis::start(
        FakeMailchimp::default().with_list(LIST, all[..98].to_vec()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _) = state_with(json!({"on_delete": "ignore"}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, _) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!((summary.reconciled, summary.deleted), (1, 2));
    assert_eq!(apis.pushed(), Vec::<Value>::new());
    assert_eq!(apis.pushes().len(), 0);
    assert_eq!(ledger_count(dir.path()), 98);
}

#[actix_rt::test]
async fn reconcile_seconds_zero_never_reconciles() {
    let all = members(10);
    let apis = Apis::start(FakeMailchimp::default().with_list(LIST, vec![]), FakeOmetria::default()).await;
    let (dir, _) = state_with(json!({"reconcile_seconds": 0}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, _) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!((summary.reconciled, summary.reconcile_failed), (0, 0));
    assert!(apis.mailchimp_queries().await.is_empty());
    assert_eq!(ledger_count(dir.path()), 10);
    assert!(LedgerStore::open_read_only(dir.path())
        .unwrap()
        .history(None, 10)
        .unwrap()
        .is_empty());
}

#[actix_rt::test]
async fn a_member_that_changes_while_the_ids_are_read_is_not_taken_for_deleted() {
    let all = members(100);
    let mut mailchimp = FakeMailchimp::default().with_list(LIST, all[..97].to_vec());
    // Before the first page is served, member 5 changes: it leaves the
    // window before T0, into the one read after it.
    mailchimp.mutate_at = Some((1, |members, _| members[5].last_changed = Utc::now()));
    let apis = Apis::start(mailchimp, FakeOmetria::default()).await;
    let (dir, _) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, _) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!((summary.reconciled, summary.deleted), (1, 3));
    let ids: Vec<Value> = apis.pushed().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(all[97].id), json!(all[98].id), json!(all[99].id)]);
    assert_eq!(ledger_count(dir.path()), 97);
    let tails = apis
        .mailchimp_queries()
        .await
        .iter()
        .filter(|q| q.contains_key("since_last_changed"))
        .count();
    assert!(tails >= 2, "the window after T0 was read, both passes");
}

/// A proxy that answers every members request with no members, saying
/// the list holds `total_items` (or nothing, with `None`).
#[derive(Clone)]
struct EmptyAnswers {
    total_items: Option<u64>,
}

impl Respond for EmptyAnswers {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json(json!({"members": [], "total_items": self.total_items.unwrap_or(0)}))
    }
}

/// The APIs with `mailchimp` answering every members request.
async fn apis_behind(mailchimp: impl Respond + 'static) -> Apis {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/3\.0/lists/[^/]+/members$"))
        .respond_with(mailchimp)
        .mount(&server)
        .await;
    let fake_ometria = FakeOmetria::default();
    let ometria = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(fake_ometria.clone())
        .mount(&ometria)
        .await;
    Apis {
        mailchimp: server,
        ometria,
        fake_mailchimp: FakeMailchimp::default(),
        fake_ometria,
    }
}

/// Runs `go` with `/healthz` served until the reconciliation of `LIST`
/// failed and a tick reported it; answers the health report, the metrics
/// and the log, then stops.
async fn go_until_reconciliation_fails(apis: &Apis, dir: &Path) -> (u16, Value, String, String) {
    let mut config = apis.config(dir);
    config.metrics_addr = Some(loopback());
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let run = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(20), "the reconciliation to fail", || {
        buffer.contents().contains("reconcile: failed")
    })
    .await;
    let addr = {
        let text = buffer.contents();
        let start = text.find("/healthz on http://").unwrap() + "/healthz on http://".len();
        text[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .trim_end_matches('.')
            .to_owned()
    };
    let mut metrics = String::new();
    wait_until(
        Duration::from_secs(20),
        "a tick to report the failing reconciliation",
        || {
            metrics = ometria_importer::telemetry::health::http_get(&addr, "/metrics", Duration::from_secs(5))
                .map(|(_, body)| body)
                .unwrap_or_default();
            metrics.contains("ometria_importer_list_reconcile_failing{entry=\"1\",list_id=\"L1\"} 1")
        },
    )
    .await;
    let (status, body) =
        ometria_importer::telemetry::health::http_get(&addr, "/healthz", Duration::from_secs(5)).unwrap();
    quit(dir, run).await;
    (status, serde_json::from_str(&body).unwrap(), metrics, buffer.contents())
}

#[actix_rt::test]
async fn an_empty_answer_from_a_proxy_opts_nobody_out_and_raises_the_alert() {
    let all = members(100);
    // Pages empty while total_items says 100: the reads do not add up.
    let apis = apis_behind(EmptyAnswers { total_items: Some(100) }).await;
    let (dir, file) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let before = std::fs::read(&file).unwrap();
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!(
        (summary.reconciled, summary.reconcile_failed, summary.deleted),
        (0, 1, 0)
    );
    assert!(!summary.all_recorded(), "once exits 1");
    assert_eq!(apis.pushes().len(), 0);
    assert_eq!(ledger_count(dir.path()), 100);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let text = buffer.contents();
    assert!(text.contains("reconcile: failed"), "{text}");
    assert!(text.contains("nothing was opted out"), "{text}");
    let rows = LedgerStore::open_read_only(dir.path())
        .unwrap()
        .history(Some(LIST), 10)
        .unwrap();
    let end = rows[0].end.as_ref().unwrap();
    assert_eq!(
        (rows[0].start.kind.as_str(), end.result.as_str()),
        ("RECONCILE", "failed")
    );
    assert!(
        end.error.as_deref().unwrap().contains("could not be read completely"),
        "{end:?}"
    );

    // An empty list, as a proxy answering nothing would show it: the reads
    // add up, and the fraction guard holds the deletions back.
    let apis = apis_behind(EmptyAnswers { total_items: None }).await;
    let (status, health, metrics, text) = go_until_reconciliation_fails(&apis, dir.path()).await;
    assert_eq!(apis.pushes().len(), 0);
    assert_eq!(ledger_count(dir.path()), 100);
    assert!(
        text.contains("100 of the 100 members the ledger holds (100.0 %) were not returned by Mailchimp"),
        "{text}"
    );
    assert_eq!(status, 503, "{health}");
    assert!(
        health["reason"].as_str().unwrap().contains("deletions held back"),
        "{health}"
    );
    assert_eq!(health["reconcile_failing"][0]["deletions_held"], true);
    assert!(
        metrics.contains("ometria_importer_list_deletions_held{entry=\"1\",list_id=\"L1\"} 1"),
        "{metrics}"
    );
}

#[actix_rt::test]
async fn a_list_where_a_tenth_vanished_has_nobody_opted_out() {
    let all = members(100);
    let apis = Apis::start(
        FakeMailchimp::default().with_list(LIST, all[..90].to_vec()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, file) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let before = std::fs::read(&file).unwrap();
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!((summary.reconcile_failed, summary.deleted), (1, 0));
    assert_eq!(apis.pushes().len(), 0);
    assert_eq!(ledger_count(dir.path()), 100);
    assert_eq!(std::fs::read(&file).unwrap(), before);
    let text = buffer.contents();
    assert!(
        text.contains("10 of the 100 members the ledger holds (10.0 %) were not returned by Mailchimp, more than IMPORTER_MAX_DELETE_FRACTION=0.05 allows; nothing was opted out."),
        "{text}"
    );
    assert!(text.contains("deletions_held=true"), "{text}");

    // The operator who knows they were deleted raises the fraction.
    let mut config = apis.config(dir.path());
    config.max_delete_fraction = 0.2;
    let (log, _) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!((summary.reconciled, summary.deleted), (1, 10));
    assert_eq!(apis.pushed().len(), 10);
    assert_eq!(ledger_count(dir.path()), 90);
    let rows = LedgerStore::open_read_only(dir.path())
        .unwrap()
        .history(Some(LIST), 10)
        .unwrap();
    let results: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r.start.kind.as_str(), r.end.as_ref().unwrap().result.as_str()))
        .collect();
    assert_eq!(results, [("RECONCILE", "succeeded"), ("RECONCILE", "failed")]);
}

/// That the run's reconciliation failed, opted nobody out and left the
/// ledger's `members` members, saying `why`.
fn assert_nobody_opted_out(summary: &RunSummary, apis: &Apis, dir: &Path, members: u64, text: &str, why: &str) {
    assert_eq!(
        (summary.reconciled, summary.reconcile_failed, summary.deleted),
        (0, 1, 0),
        "{text}"
    );
    assert_eq!(apis.pushes().len(), 0, "nobody opted out");
    assert_eq!(ledger_count(dir), members);
    assert!(text.contains(why), "{text}");
}

/// A server (or proxy) that drops or mangles the `unique_email_id` of the
/// members at page places 10, 20, 30 and 40, each in one way.
fn mangle_ids(_: &[FakeMember], page: &mut [Value]) {
    for (at, member) in page.iter_mut().enumerate() {
        let id = member["unique_email_id"].as_str().unwrap_or_default().to_owned();
        match at {
            10 => drop(member.as_object_mut().unwrap().remove("unique_email_id")),
            20 => member["unique_email_id"] = Value::Null,
            30 => member["unique_email_id"] = json!(""),
            40 => member["unique_email_id"] = json!(format!(" {id}")),
            _ => {}
        }
    }
}

#[actix_rt::test]
async fn members_read_without_a_usable_id_have_nobody_opted_out() {
    // Three members really deleted; four live ones come back without an
    // id the ledger could know them by: any of them may be one it holds.
    // Seven of 200 is within the fraction guard, so it is not what stops it.
    let all = members(200);
    let mut mailchimp = FakeMailchimp::default().with_list(LIST, all[..197].to_vec());
    mailchimp.edit = Some(mangle_ids);
    let apis = Apis::start(mailchimp, FakeOmetria::default()).await;
    let (dir, _) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    let why = "4 members read came without a usable unique_email_id (missing, empty, or with a space, a control or an invisible character): any of them may be a member the ledger holds, so none can be taken as deleted (the list's syncs name them in a WARNING); nothing was opted out";
    assert_nobody_opted_out(&summary, &apis, dir.path(), 200, &buffer.contents(), why);
}

#[actix_rt::test]
async fn members_changed_by_a_mailchimp_clock_ahead_of_ours_are_not_taken_for_deleted() {
    // Mailchimp's clock is two minutes ahead: two members it changed a
    // minute ago, by its clock, have a `last_changed` ahead of ours.
    let all = members(100);
    let mut live = all[..97].to_vec();
    for m in &mut live[40..42] {
        m.last_changed = Utc::now() + chrono::Duration::seconds(60);
    }
    let mut mailchimp = FakeMailchimp::default().with_list(LIST, live);
    mailchimp.clock_offset = Some(chrono::Duration::seconds(120));
    let apis = Apis::start(mailchimp, FakeOmetria::default()).await;
    let (dir, _) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    assert_eq!((summary.reconciled, summary.deleted), (1, 3), "{}", buffer.contents());
    let ids: Vec<Value> = apis.pushed().iter().map(|r| r["id"].clone()).collect();
    assert_eq!(ids, [json!(all[97].id), json!(all[98].id), json!(all[99].id)]);
    assert_eq!(ledger_count(dir.path()), 97);
}

/// A cache serving a stale first page: every request for the default
/// pass's window starting within its first 1,000 members gets no members
/// and `total_items` 0; the others reach Mailchimp.
#[derive(Clone)]
struct StaleFirstPage(FakeMailchimp);

impl Respond for StaleFirstPage {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let q: std::collections::HashMap<_, _> = request.url.query_pairs().into_owned().collect();
        let first = q.get("offset").is_none_or(|o| o.parse::<u64>().unwrap() < 1000);
        if first && !q.contains_key("status") && !q.contains_key("since_last_changed") {
            return ResponseTemplate::new(200).set_body_json(json!({"members": [], "total_items": 0}));
        }
        self.0.respond(request)
    }
}

#[actix_rt::test]
async fn members_a_stale_first_page_hides_are_not_taken_for_deleted() {
    // 2,500 members, 3 deleted; the window looks empty to every request
    // starting in its first 1,000 members — the keyset walk, its recount
    // and the page that checks it alike — while later pages say 2,500.
    // The guard is raised so that it is not what stops it.
    let all = members(2503);
    let apis = apis_behind(StaleFirstPage(
        FakeMailchimp::default().with_list(LIST, all[..2500].to_vec()),
    ))
    .await;
    let (dir, _) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let mut config = apis.config(dir.path());
    config.max_delete_fraction = 0.9;
    let (log, buffer) = capture_log();

    let summary = run_once(&config, log).await;

    let why = "Mailchimp's answers did not add up: its pages said the list held 2500 more members than its last reads of them returned, and only 0 changed since the reconciliation started (members deleted meanwhile, or a server or proxy answering some requests with fewer members than others); nothing was opted out";
    assert_nobody_opted_out(&summary, &apis, dir.path(), 2503, &buffer.contents(), why);
}

/// A server (or proxy) serving every request of `count` 1 or 1,000 short,
/// consistently: those see only the oldest 97 % of the window,
/// `total_items` included. Requests of another size see it all.
#[derive(Clone)]
struct ShortForCounts(FakeMailchimp);

impl Respond for ShortForCounts {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let q: std::collections::HashMap<_, _> = request.url.query_pairs().into_owned().collect();
        let time = |name: &str| {
            q.get(name)
                .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc))
        };
        let (since, before) = (time("since_last_changed"), time("before_last_changed"));
        let archived = q.get("status").map(String::as_str) == Some("archived");
        let lists = self.0.lists.lock().unwrap();
        let mut window: Vec<&FakeMember> = lists[LIST]
            .iter()
            .filter(|m| (m.status == "archived") == archived)
            .filter(|m| since.is_none_or(|s| m.last_changed > s) && before.is_none_or(|b| m.last_changed < b))
            .collect();
        window.sort_by_key(|m| (m.last_changed, m.id.clone()));
        let count: usize = q["count"].parse().unwrap();
        if count == 1 || count == 1000 {
            window.truncate(window.len() * 97 / 100);
        }
        let offset: usize = q["offset"].parse().unwrap();
        let page: Vec<Value> = window.iter().skip(offset).take(count).map(|m| m.to_json()).collect();
        ResponseTemplate::new(200).set_body_json(json!({"members": page, "total_items": window.len()}))
    }
}

#[actix_rt::test]
async fn members_hidden_from_every_page_of_the_reconciliations_size_are_not_taken_for_deleted() {
    // 200 members, 3 deleted; pages of 1,000 hide the newest 3 % of the
    // rest consistently, so nine would look deleted, within the guard.
    let all = members(203);
    let apis = apis_behind(ShortForCounts(
        FakeMailchimp::default().with_list(LIST, all[..200].to_vec()),
    ))
    .await;
    let (dir, _) = state_with(json!({}));
    seed_ledger(dir.path(), LIST, &all);
    let (log, buffer) = capture_log();

    let summary = run_once(&apis.config(dir.path()), log).await;

    let why = "answers some requests with fewer members than others: the pass's reads found 194 members, but a page asked for with count=100 at offset 194 afterwards said the window holds 200";
    assert_nobody_opted_out(&summary, &apis, dir.path(), 203, &buffer.contents(), why);
}
