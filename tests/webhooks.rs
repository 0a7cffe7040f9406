//! The webhook receiver in a running daemon (issue 18, SPEC §15): the URL
//! check, the secret, bad bodies, and events bringing a list's SYNC
//! forward — one SYNC for a burst, one more for an event during a sync,
//! nothing for a list in no entry.

mod support;

use std::time::{Duration, Instant};

use awc::http::StatusCode;

use ometria_importer::config::{Config, WebhookListen};
use ometria_importer::telemetry::log::SharedBuffer;
use ometria_importer::RunMode;
use support::{
    capture_log, cursor_now, loopback, quit, spawn_run, state_dir, subscribed, wait_for_ticks, wait_until, Apis,
    FakeMailchimp, FakeOmetria,
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
        "ometria_importer_webhook_events_total{result=\"malformed\",type=\"unknown\"} 4",
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
