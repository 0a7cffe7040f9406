//! The webhook receiver in a running daemon (issue 18, SPEC §15): the URL
//! check, the secret, bad bodies, and events bringing a list's SYNC
//! forward — one SYNC for a burst, one more for an event during a sync,
//! nothing for a list in no entry — and deletions opted out at once
//! through the ledger, without any sync.

mod support;

use std::time::{Duration, Instant};

use awc::http::StatusCode;
use serde_json::{json, Value};

use ometria_importer::actors::messages::ListChanged;
use ometria_importer::config::{Config, WebhookListen};
use ometria_importer::ledger::LedgerStore;
use ometria_importer::telemetry::log::SharedBuffer;
use ometria_importer::RunMode;
use support::{
    capture_log, cursor_now, loopback, quit, seed_ledger, spawn_run, state_dir, subscribed, wait_for_ticks, wait_until,
    Apis, FakeMailchimp, FakeMember, FakeOmetria,
};

const SECRET: &str = "wh-0123456789abcdef";

/// An event of `list_id` as Mailchimp encodes it.
fn event(kind: &str, list_id: &str) -> String {
    format!(
        "type={kind}&fired_at=2024-05-01+10%3A00%3A00&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D={list_id}\
         &data%5Bemail%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Ana"
    )
}

fn with_webhooks(mut config: Config) -> Config {
    config.webhooks = Some(WebhookListen {
        addr: loopback(),
        secret: SECRET.parse().unwrap(),
    });
    config.webhook_debounce = Duration::from_secs(1);
    config
}

/// The address after `http://` on the first log line containing `marker`.
fn address_after(log: &str, marker: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(marker))?;
    let rest = line.split("http://").nth(1)?;
    Some(rest.split('/').next()?.trim_end_matches('.').to_owned())
}

/// Waits for the run to say where it receives webhooks: `http://host:port`.
async fn webhook_base(log: &SharedBuffer) -> String {
    let marker = "receiving Mailchimp webhooks on http://";
    wait_until(Duration::from_secs(10), "the webhook address", || {
        address_after(&log.contents(), marker).is_some()
    })
    .await;
    format!("http://{}", address_after(&log.contents(), marker).unwrap())
}

async fn request(method: &str, url: &str, body: Option<String>) -> (StatusCode, String) {
    let client = awc::Client::default();
    let request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "PUT" => client.put(url),
        other => panic!("{other}"),
    };
    let mut answer = match body {
        Some(body) => {
            request
                .content_type("application/x-www-form-urlencoded")
                .send_body(body)
                .await
        }
        None => request.send().await,
    }
    .unwrap();
    let body = answer.body().limit(1 << 20).await.unwrap();
    (answer.status(), String::from_utf8_lossy(&body).into_owned())
}

async fn post(base: &str, body: String) -> StatusCode {
    request("POST", &format!("{base}/webhooks/mailchimp/{SECRET}"), Some(body))
        .await
        .0
}

/// How many times the log says a SYNC of `list_id` fired for webhook events.
fn webhook_syncs(log: &str, list_id: &str) -> usize {
    let marker = format!("controller: list \"{list_id}\" changed in Mailchimp (");
    log.lines().filter(|l| l.contains(&marker)).count()
}

/// How many syncs of `list_id` the log says completed.
fn completed(log: &str, list_id: &str) -> usize {
    let list = format!("for list \"{list_id}\".");
    log.lines()
        .filter(|l| l.contains("sync: completed in") && l.contains(&list))
        .count()
}

/// Two lists up to date for an hour, their members in the double.
async fn two_lists_up_to_date(mailchimp: FakeMailchimp) -> (Apis, tempfile::TempDir) {
    let apis = Apis::start(
        mailchimp.with_list("a", subscribed(3)).with_list("b", subscribed(2)),
        FakeOmetria::default(),
    )
    .await;
    let now = cursor_now();
    let (dir, _) = state_dir(&format!(
        r#"[{{"list_id": "a", "latest_timestamp": "{now}"}}, {{"list_id": "b", "latest_timestamp": "{now}"}}]"#
    ));
    (apis, dir)
}

#[actix_rt::test]
async fn the_url_check_the_secret_and_bad_bodies() {
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::default()).await;
    let mut config = with_webhooks(apis.config(dir.path()));
    config.metrics_addr = Some(loopback());
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    let url = format!("{base}/webhooks/mailchimp/{SECRET}");

    // Mailchimp's check of the URL.
    assert_eq!(request("GET", &url, None).await, (StatusCode::OK, String::new()));
    // A wrong or missing secret: 404 with nothing said, as any unknown path.
    let unknown = request("GET", &format!("{base}/nothing-here"), None).await;
    assert_eq!(unknown, (StatusCode::NOT_FOUND, String::new()));
    for wrong in [
        format!("{base}/webhooks/mailchimp/wh-0123456789abcdeF"),
        format!("{base}/webhooks/mailchimp/wh-0123456789abcde"),
        format!("{base}/webhooks/mailchimp/"),
        format!("{base}/webhooks/mailchimp"),
        format!("{url}/more"),
    ] {
        for method in ["GET", "POST"] {
            let body = (method == "POST").then(|| event("subscribe", "a"));
            assert_eq!(request(method, &wrong, body).await, unknown, "{method} {wrong}");
        }
    }
    // Other methods with the right secret.
    assert_eq!(request("PUT", &url, None).await.0, StatusCode::METHOD_NOT_ALLOWED);
    // Bad bodies: 400 with the reason.
    let too_large = format!("{}&pad={}", event("subscribe", "a"), "x".repeat(64 * 1024));
    for (body, reason) in [
        (too_large, "the body is over 65536 bytes"),
        (event("open", "a"), "\"type\" is not one of"),
        ("data%5Blist_id%5D=a".to_owned(), "the form has no \"type\""),
        ("type=subscribe".to_owned(), "the form has no \"data[list_id]\""),
        (String::new(), "the form has no \"type\""),
        ("type=subscribe&data%5Blist_id%5D=%FF".to_owned(), "not UTF-8"),
        (
            format!(
                "type=unsubscribe&data%5Baction%5D=delete&data%5Blist_id%5D=a&data%5Bemail%5D={}%40x.io",
                "a".repeat(250)
            ),
            "\"data[email]\" is not an email address (over 254 bytes",
        ),
    ] {
        let (status, text) = request("POST", &url, Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
        assert!(text.contains(reason), "{text} lacks {reason}");
    }
    // A good one, and the daemon still answers.
    assert_eq!(post(&base, event("profile", "a")).await, StatusCode::OK);
    assert_eq!(request("GET", &url, None).await.0, StatusCode::OK);

    // Every request is counted; the secret is in no log line.
    let metrics = address_after(&buffer.contents(), "serving /metrics and /healthz on http://").unwrap();
    assert_ne!(metrics, base.trim_start_matches("http://"), "two servers on port 0");
    let (_, text) = request("GET", &format!("http://{metrics}/metrics"), None).await;
    for line in [
        "ometria_importer_webhook_events_total{result=\"accepted\",type=\"profile\"} 1",
        "ometria_importer_webhook_events_total{result=\"too_large\",type=\"unknown\"} 1",
        "ometria_importer_webhook_events_total{result=\"unknown_type\",type=\"unknown\"} 1",
        "ometria_importer_webhook_events_total{result=\"malformed\",type=\"unknown\"} 5",
        // Two wrong secrets, twice each (paths without one are no webhook).
        "ometria_importer_webhook_events_total{result=\"wrong_secret\",type=\"unknown\"} 4",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    let summary = quit(dir.path(), daemon).await;
    assert!(!buffer.contents().contains(SECRET), "{}", buffer.contents());
    assert_eq!(summary.failed, 0);
}

#[actix_rt::test]
async fn one_address_serves_metrics_and_webhooks() {
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::default()).await;
    let port = std::net::TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    let mut config = with_webhooks(apis.config(dir.path()));
    config.metrics_addr = Some(port);
    config.webhooks.as_mut().unwrap().addr = port;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(10), "the endpoint", || {
        buffer.contents().contains("<IMPORTER_WEBHOOK_SECRET> too.")
    })
    .await;
    let base = format!("http://{port}");
    assert_eq!(
        request("GET", &format!("{base}/webhooks/mailchimp/{SECRET}"), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(post(&base, event("subscribe", "a")).await, StatusCode::OK);
    let (status, text) = request("GET", &format!("{base}/metrics"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("ometria_importer_webhook_events_total{result=\"accepted\",type=\"subscribe\"} 1"));
    quit(dir.path(), daemon).await;
}

#[actix_rt::test]
async fn a_burst_of_events_is_one_sync_long_before_the_refresh_interval() {
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::default()).await;
    let mut config = with_webhooks(apis.config(dir.path()));
    config.metrics_addr = Some(loopback());
    // Ticks every second (the lists stay up to date for an hour): the
    // time since each list's last event shows soon after it.
    config.tick = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    wait_for_ticks(&buffer, 1).await;
    wait_until(Duration::from_secs(10), "the first tick's plan", || {
        buffer.contents().contains("controller: list \"b\" up to date")
    })
    .await;
    assert!(apis.mailchimp_queries().await.is_empty(), "both lists are up to date");

    // Ten events within the debounce (a second): one SYNC of "a".
    let sent = Instant::now();
    for kind in ["subscribe", "profile", "unsubscribe", "upemail", "cleaned"].repeat(2) {
        assert_eq!(post(&base, event(kind, "a")).await, StatusCode::OK);
    }
    wait_until(Duration::from_secs(15), "the SYNC of \"a\"", || {
        completed(&buffer.contents(), "a") == 1
    })
    .await;
    assert!(
        sent.elapsed() < Duration::from_secs(15),
        "the refresh interval is an hour"
    );
    let queries = apis.mailchimp_queries().await;
    assert!(!queries.is_empty());
    for q in &queries {
        assert!(q.contains_key("since_last_changed"), "a SYNC, not a LOAD: {q:?}");
    }
    let log = buffer.contents();
    assert_eq!(webhook_syncs(&log, "a"), 1, "{log}");
    assert!(
        log.contains("controller: list \"a\" changed in Mailchimp (10 webhook event(s) since"),
        "{log}"
    );
    assert_eq!(webhook_syncs(&log, "b"), 0);

    // A campaign changes no member: no sync. An event of list "b" after it
    // is planned with everything due: had "a" been due again, it would
    // have started by the time "b" is done.
    assert_eq!(post(&base, event("campaign", "a")).await, StatusCode::OK);
    assert_eq!(post(&base, event("subscribe", "b")).await, StatusCode::OK);
    wait_until(Duration::from_secs(15), "the SYNC of \"b\"", || {
        completed(&buffer.contents(), "b") == 1
    })
    .await;
    let log = buffer.contents();
    assert_eq!((webhook_syncs(&log, "a"), webhook_syncs(&log, "b")), (1, 1), "{log}");
    assert_eq!(completed(&log, "a"), 1);

    // The time since each list's last event shows at the next tick.
    let metrics = address_after(&log, "serving /metrics and /healthz on http://").unwrap();
    let ticks = log.matches("controller: checking all lists.").count();
    // A tick logs its line only once the one before it planned (observed).
    wait_for_ticks(&buffer, ticks + 2).await;
    let (_, text) = request("GET", &format!("http://{metrics}/metrics"), None).await;
    let age = |list_id: &str| {
        let name = format!("ometria_importer_list_webhook_event_age_seconds{{entry=\"1\",list_id=\"{list_id}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .map(|v| v.parse::<f64>().unwrap())
    };
    let (a, b) = (age("a").expect("a's age"), age("b").expect("b's age"));
    assert!((0.0..30.0).contains(&a) && (0.0..30.0).contains(&b), "{a} {b}");
    assert!(
        a + 0.01 >= b,
        "the campaign event of \"a\" came before \"b\"'s: {a} {b}"
    );
    quit(dir.path(), daemon).await;
}

#[actix_rt::test]
async fn an_event_during_a_sync_makes_one_more_after_it() {
    // Every page takes 400 ms: a SYNC lasts long enough to send an event during it.
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::slow(Duration::from_millis(400))).await;
    let config = with_webhooks(apis.config(dir.path()));
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    wait_for_ticks(&buffer, 1).await;
    assert_eq!(post(&base, event("subscribe", "a")).await, StatusCode::OK);
    apis.first_mailchimp_request().await;
    assert_eq!(completed(&buffer.contents(), "a"), 0, "the sync runs");
    assert_eq!(post(&base, event("profile", "a")).await, StatusCode::OK);
    wait_until(Duration::from_secs(20), "a second SYNC of \"a\"", || {
        completed(&buffer.contents(), "a") == 2
    })
    .await;
    let log = buffer.contents();
    assert_eq!(webhook_syncs(&log, "a"), 2, "{log}");
    quit(dir.path(), daemon).await;
}

#[actix_rt::test]
async fn a_steady_stream_of_events_syncs_once_per_debounce() {
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::default()).await;
    let config = with_webhooks(apis.config(dir.path()));
    let debounce = config.webhook_debounce;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    wait_for_ticks(&buffer, 1).await;
    // An event every 50 ms for four debounces: each SYNC is a debounce
    // after the first event it did not read, never right after the last.
    let (started, mut sent) = (Instant::now(), 0);
    while started.elapsed() < debounce * 4 {
        assert_eq!(post(&base, event("profile", "a")).await, StatusCode::OK);
        sent += 1;
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let streamed = started.elapsed();
    // Every event is answered, the last ones too, each by the SYNC of its
    // own window: the counts of the SYNC lines add up to the events sent.
    wait_until(Duration::from_secs(20), "a SYNC for every event", || {
        let log = buffer.contents();
        event_counts(&log, "a").iter().sum::<u64>() == sent && completed(&log, "a") == webhook_syncs(&log, "a")
    })
    .await;
    let log = buffer.contents();
    let syncs = webhook_syncs(&log, "a");
    let most = (streamed.as_secs_f64() / debounce.as_secs_f64()).ceil() as usize + 1;
    assert!(
        syncs <= most,
        "{syncs} SYNCs for {sent} events in {streamed:?}, at most {most}: {log}"
    );
    quit(dir.path(), daemon).await;
}

/// The event counts of the SYNC lines of `list_id`, in order.
fn event_counts(log: &str, list_id: &str) -> Vec<u64> {
    let marker = format!("controller: list \"{list_id}\" changed in Mailchimp (");
    log.lines()
        .filter_map(|l| l.split(&marker).nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

#[actix_rt::test]
async fn events_of_a_list_in_no_entry_are_ignored_with_one_line() {
    let (apis, dir) = two_lists_up_to_date(FakeMailchimp::default()).await;
    let config = with_webhooks(apis.config(dir.path()));
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    let ignored = "controller: webhook events of list \"elsewhere\" are ignored: no entry of the state file has it.";
    assert_eq!(post(&base, event("subscribe", "elsewhere")).await, StatusCode::OK);
    wait_until(Duration::from_secs(10), "the line", || {
        buffer.contents().contains(ignored)
    })
    .await;
    assert_eq!(post(&base, event("profile", "elsewhere")).await, StatusCode::OK);
    // Planned with the second burst: "b"'s sync comes after it.
    assert_eq!(post(&base, event("subscribe", "b")).await, StatusCode::OK);
    wait_until(Duration::from_secs(15), "the SYNC of \"b\"", || {
        completed(&buffer.contents(), "b") == 1
    })
    .await;
    let log = buffer.contents();
    assert_eq!(log.matches(ignored).count(), 1, "{log}");
    let queries = apis.mailchimp_queries().await;
    assert!(queries.iter().all(|q| !q.is_empty()));
    assert_eq!(webhook_syncs(&log, "a"), 0);
    quit(dir.path(), daemon).await;
}

/// An `unsubscribe` of `email` from `list_id` as Mailchimp encodes it,
/// with `action` if given (Mailchimp sometimes leaves it out).
fn unsubscribe(list_id: &str, email: Option<&str>, action: Option<&str>) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("type", "unsubscribe")
        .append_pair("fired_at", "2024-05-01 10:00:00")
        .append_pair("data[id]", "8a25ff1d98")
        .append_pair("data[list_id]", list_id)
        .append_pair("data[reason]", "manual");
    if let Some(email) = email {
        form.append_pair("data[email]", email);
    }
    if let Some(action) = action {
        form.append_pair("data[action]", action);
    }
    form.finish()
}

/// The opted-out record of a member deleted from `list_id`.
fn opted_out(m: &FakeMember, list_id: &str) -> Value {
    json!({"@type": "contact", "id": m.id, "email": m.email, "marketing_optin": "EXPLICITLY_OPTEDOUT",
           "properties": {"mailchimp_status": "deleted", "mailchimp_list_id": list_id}})
}

/// The value of one sample of `/metrics`, 0 when absent.
async fn sample(metrics: &str, name: &str) -> f64 {
    let (_, text) = request("GET", &format!("http://{metrics}/metrics"), None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

fn deletions(result: &str) -> String {
    format!("ometria_importer_webhook_deletions_total{{result=\"{result}\"}}")
}

#[actix_rt::test]
async fn a_deleted_member_is_opted_out_at_once_without_any_sync() {
    let (a, b) = (subscribed(4), subscribed(2));
    // a[1] was deleted in Mailchimp; the ledger still holds it.
    let mut in_mailchimp = a.clone();
    in_mailchimp.remove(1);
    let apis = Apis::start(
        FakeMailchimp::default()
            .with_list("a", in_mailchimp)
            .with_list("b", b.clone()),
        FakeOmetria::default(),
    )
    .await;
    let now = cursor_now();
    let (dir, _) = state_dir(&format!(
        r#"[{{"list_id": "a", "latest_timestamp": "{now}", "reconcile_seconds": 0}},
            {{"list_id": "b", "latest_timestamp": "{now}", "reconcile_seconds": 0, "on_delete": "ignore"}}]"#
    ));
    seed_ledger(dir.path(), "a", &a);
    seed_ledger(dir.path(), "b", &b);
    let mut config = with_webhooks(apis.config(dir.path()));
    // No SYNC for the events within the test: only the deletion path acts.
    config.webhook_debounce = Duration::from_secs(3600);
    config.metrics_addr = Some(loopback());
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    wait_for_ticks(&buffer, 1).await;
    let metrics = address_after(&buffer.contents(), "serving /metrics and /healthz on http://").unwrap();

    // The address in another case than the ledger's: the same member.
    let shouted = a[1].email.to_uppercase();
    assert_eq!(
        post(&base, unsubscribe("a", Some(&shouted), Some("delete"))).await,
        StatusCode::OK
    );
    wait_until(Duration::from_secs(15), "the opt-out", || !apis.pushed().is_empty()).await;
    assert_eq!(apis.pushed(), [opted_out(&a[1], "a")]);

    // Mailchimp delivers it twice; an address the ledger never held; no
    // address at all; a list whose on_delete is "ignore"; an unsubscribe
    // without action (an unsubscribe, for the SYNC to read); a deletion of
    // a member Mailchimp still holds (late, or not Mailchimp's).
    for body in [
        unsubscribe("a", Some(&a[3].email), Some("delete")),
        unsubscribe("a", Some(&a[1].email), Some("delete")),
        unsubscribe("a", Some("nobody@example.com"), Some("delete")),
        unsubscribe("a", None, Some("delete")),
        unsubscribe("b", Some(&b[0].email), Some("delete")),
        unsubscribe("a", Some(&a[2].email), None),
        unsubscribe("a", Some(&a[0].email), Some("unsub")),
    ] {
        assert_eq!(post(&base, body).await, StatusCode::OK);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let counts = (
            sample(&metrics, &deletions("not_in_ledger")).await,
            sample(&metrics, &deletions("no_email")).await,
            sample(&metrics, &deletions("kept")).await,
            sample(&metrics, &deletions("in_mailchimp")).await,
        );
        if counts == (2.0, 1.0, 1.0, 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "deletions counted: {counts:?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sample(&metrics, &deletions("opted_out")).await, 1.0);
    assert_eq!(apis.pushed().len(), 1, "one opt-out: {:?}", apis.pushed());
    assert!(
        apis.mailchimp_queries().await.is_empty(),
        "no sync ran: {}",
        buffer.contents()
    );
    quit(dir.path(), daemon).await;

    let ledger = LedgerStore::open_read_only(dir.path()).unwrap();
    let held = |list: &str, m: &FakeMember| ledger.members_by_email(list, &[&m.email]).unwrap().len();
    assert_eq!(
        (held("a", &a[0]), held("a", &a[1]), held("a", &a[2]), held("a", &a[3])),
        (1, 0, 1, 1)
    );
    assert_eq!((held("b", &b[0]), held("b", &b[1])), (1, 1), "on_delete \"ignore\"");
    let rows = ledger.history(None, 10).unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (start, end) = (&rows[0].start, rows[0].end.as_ref().unwrap());
    assert_eq!((start.list_id.as_str(), start.kind.as_str()), ("a", "DELETE"));
    assert_eq!((end.result.as_str(), end.pushed, end.deleted), ("succeeded", 1, 1));
}

#[actix_rt::test]
async fn a_member_deleted_during_a_sync_that_pushes_it_back_ends_opted_out() {
    // A SYNC of every member (its cursor is older than they are), each
    // page taking 400 ms: the deletion comes while it reads.
    let a = subscribed(3);
    let apis = Apis::start(
        FakeMailchimp::slow(Duration::from_millis(400)).with_list("a", a.clone()),
        FakeOmetria::default(),
    )
    .await;
    let (dir, _) = state_dir(&format!(
        r#"[{{"list_id": "a", "latest_timestamp": "{}", "reconcile_seconds": 0}}]"#,
        support::cursor_minutes_ago(300)
    ));
    seed_ledger(dir.path(), "a", &a);
    let mut config = with_webhooks(apis.config(dir.path()));
    config.webhook_debounce = Duration::from_secs(3600);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    let base = webhook_base(&buffer).await;
    apis.first_mailchimp_request().await;
    // Deleted in Mailchimp after the sync's read started.
    apis.fake_mailchimp
        .lists
        .lock()
        .unwrap()
        .get_mut("a")
        .unwrap()
        .remove(0);
    assert_eq!(
        post(&base, unsubscribe("a", Some(&a[0].email), Some("delete"))).await,
        StatusCode::OK
    );
    wait_until(Duration::from_secs(20), "the SYNC", || {
        completed(&buffer.contents(), "a") == 1
    })
    .await;
    // Whatever the order of the opt-out and the sync's push of the member,
    // the last word Ometria has of it is the opt-out.
    let last_of = |id: &str| apis.pushed().into_iter().rfind(|r| r["id"] == id);
    wait_until(Duration::from_secs(15), "the member opted out last", || {
        last_of(&a[0].id) == Some(opted_out(&a[0], "a"))
    })
    .await;
    quit(dir.path(), daemon).await;
    let ledger = LedgerStore::open_read_only(dir.path()).unwrap();
    assert!(ledger.members_by_email("a", &[&a[0].email]).unwrap().is_empty());
    assert_eq!(ledger.members_by_email("a", &[&a[1].email]).unwrap().len(), 1);
    assert_eq!(last_of(&a[1].id).unwrap()["marketing_optin"], "EXPLICITLY_OPTEDIN");
}

/// Takes the events a receiver sends on, for a receiver served alone.
struct Taken(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl actix::Actor for Taken {
    type Context = actix::Context<Self>;
}

impl actix::Handler<ListChanged> for Taken {
    type Result = ();
    fn handle(&mut self, changed: ListChanged, _: &mut Self::Context) {
        self.0.lock().unwrap().push(changed.event.list_id);
    }
}

/// Sends `head` then `body` on a new connection, holds it open, and reads
/// what the server answers until it closes the connection (or 20 s pass).
async fn raw_exchange(addr: std::net::SocketAddr, head: String, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut answer = vec![];
    let read = actix_rt::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection stayed open: {}",
        String::from_utf8_lossy(&answer)
    );
    String::from_utf8_lossy(&answer).into_owned()
}

#[actix_rt::test]
async fn a_body_that_trickles_is_refused_and_its_connection_closed() {
    use actix::Actor;
    use ometria_importer::telemetry::metrics::Metrics;
    use ometria_importer::telemetry::server::{Endpoint, Services};
    use ometria_importer::webhook::receiver::WebhookReceiver;
    let taken = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let metrics = std::sync::Arc::new(Metrics::new());
    let (log, _buffer) = capture_log();
    let receiver = WebhookReceiver::new(
        SECRET.parse().unwrap(),
        Taken(taken.clone()).start().recipient(),
        metrics.clone(),
        log,
    )
    .with_body_timeout(Duration::from_millis(300));
    let services = Services {
        telemetry: None,
        webhooks: Some(std::sync::Arc::new(receiver)),
    };
    let endpoint = Endpoint::start(loopback(), services).unwrap();
    let path = format!("/webhooks/mailchimp/{SECRET}");
    let head = |length: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n{length}\r\n\r\n"
        )
    };

    // Ten bytes of a hundred, then nothing: 408, and the connection closed.
    let answer = raw_exchange(endpoint.addr(), head("Content-Length: 100"), b"type=subsc").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("the body did not come whole within 0.3 s"), "{answer}");

    // A chunked body over the limit is too large, as one with a length.
    let mut chunked = vec![];
    for _ in 0..17 {
        chunked.extend_from_slice(format!("1000\r\n{}\r\n", "x".repeat(0x1000)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(
        endpoint.addr(),
        head("Transfer-Encoding: chunked\r\nConnection: close"),
        &chunked,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("the body is over 65536 bytes"), "{answer}");

    // A whole event on a connection of its own is taken.
    let body = event("profile", "a");
    let answer = raw_exchange(
        endpoint.addr(),
        head(&format!("Content-Length: {}\r\nConnection: close", body.len())),
        body.as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_until(Duration::from_secs(10), "the event", || {
        taken.lock().unwrap().len() == 1
    })
    .await;
    let text = metrics.render();
    for line in [
        "ometria_importer_webhook_events_total{result=\"timeout\",type=\"unknown\"} 1",
        "ometria_importer_webhook_events_total{result=\"too_large\",type=\"unknown\"} 1",
        "ometria_importer_webhook_events_total{result=\"accepted\",type=\"profile\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    endpoint.stop().await;
}
