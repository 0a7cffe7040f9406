//! The sandbox's Mailchimp sends audience webhooks (issue 18): each
//! announced mutation reaches a receiver on 127.0.0.1 in Mailchimp's form
//! encoding, read back by the importer's own parser; late, doubled and
//! action-less deliveries come at their fractions, failed ones are retried
//! and a 410 stops them; and, end to end, a change reaches Ometria through
//! the daemon's webhook receiver long before polling would, with its
//! latency measured by the sandbox.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use ometria_importer::config::WebhookListen;
use ometria_importer::sandbox::audience::Mutation;
use ometria_importer::sandbox::webhooks::WebhookSending;
use ometria_importer::sandbox::{Sandbox, SandboxConfig, World};
use ometria_importer::webhook::{EventKind, UnsubscribeAction, WebhookEvent};
use ometria_importer::RunMode;
use support::{capture_log, loopback, quit, run_once, sandbox_config, spawn_run, state_dir, wait_until};

/// A receiver double answering `status` to every event.
async fn receiver(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

/// The events the receiver got: (Content-Type, body), in arrival order.
async fn received(server: &MockServer) -> Vec<(String, String)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| {
            let content_type = r
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (content_type, String::from_utf8(r.body).unwrap())
        })
        .collect()
}

/// A sandbox of one list `l` of `members`, sending to `server`'s root as `sending` says.
fn sandbox_sending(members: usize, seed: u64, sending: Option<WebhookSending>) -> Sandbox {
    let config = SandboxConfig {
        seed,
        lists: vec![("l".into(), members)],
        webhook: sending,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, loopback(), false).unwrap()
}

/// Waits until every queued event's delivery has ended.
async fn delivered(world: &World, limit: Duration) {
    wait_until(limit, "every webhook delivered", || {
        world.stats().webhooks_in_flight == 0
    })
    .await;
}

/// An event's `type`, and its action as the receiver reads it.
fn kind_of(event: &WebhookEvent) -> (&'static str, &'static str) {
    match event.kind {
        EventKind::Unsubscribe {
            action: UnsubscribeAction::Unsub,
        } => ("unsubscribe", "unsub"),
        EventKind::Unsubscribe {
            action: UnsubscribeAction::Delete,
        } => ("unsubscribe", "delete"),
        other => (other.name(), ""),
    }
}

#[actix_rt::test]
async fn each_announced_mutation_is_posted_in_mailchimps_form() {
    let server = receiver(200).await;
    let sandbox = sandbox_sending(300, 1, Some(WebhookSending::to(&format!("{}/hook", server.uri()))));
    let world = sandbox.world();
    let mutations = [
        Mutation::Change,
        Mutation::Subscribe,
        Mutation::Add,
        Mutation::Unarchive,
        Mutation::Unsubscribe,
        Mutation::Archive,
        Mutation::Delete,
        // Not announced.
        Mutation::Touch,
        Mutation::QuietArchive,
    ];
    for mutation in mutations {
        assert_eq!(world.mutate("l", mutation, 1).len(), 1, "{mutation:?}");
    }
    delivered(world, Duration::from_secs(30)).await;
    let bodies = received(&server).await;
    assert_eq!(bodies.len(), 7, "{bodies:?}");

    // The members' ids and addresses in the sandbox's Mailchimp (archived
    // ones too), the deleted one aside.
    let mut ids: HashMap<String, String> = HashMap::new();
    for status in ["", "&status=archived"] {
        let url = format!(
            "{}/lists/l/members?count=1000&fields=members.id,members.email_address{status}",
            sandbox.mailchimp_url()
        );
        let mut answer = awc::Client::default()
            .get(url)
            .basic_auth("any", &world.config.mailchimp_key)
            .send()
            .await
            .unwrap();
        let page: Value = answer.json().limit(1 << 24).await.unwrap();
        for m in page["members"].as_array().unwrap() {
            ids.insert(
                m["email_address"].as_str().unwrap().into(),
                m["id"].as_str().unwrap().into(),
            );
        }
    }
    assert_eq!(ids.len(), 300, "the list as it is now: 300 - 1 deleted + 1 added");

    let mut kinds = vec![];
    for (content_type, body) in &bodies {
        assert_eq!(content_type, "application/x-www-form-urlencoded");
        assert!(body.starts_with("type="), "{body}");
        assert!(
            body.contains("&data%5Blist_id%5D=l&"),
            "brackets encoded as Mailchimp does: {body}"
        );
        let event = WebhookEvent::parse(body.as_bytes()).unwrap();
        assert_eq!(event.list_id, "l");
        let email = event.email.clone().unwrap();
        let id = event.member_id.clone().unwrap();
        assert_eq!(id.len(), 32);
        if kind_of(&event) != ("unsubscribe", "delete") {
            assert_eq!(ids.get(&email), Some(&id), "data[id] is the member's id in the API");
        }
        let fired = event.fired_at.unwrap().timestamp();
        assert!((fired - chrono::Utc::now().timestamp()).abs() < 600, "{fired}");
        assert_eq!(event.merges["EMAIL"], email);
        kinds.push(kind_of(&event));
    }
    kinds.sort();
    let mut expected = vec![
        ("profile", ""),
        ("subscribe", ""),
        ("subscribe", ""),
        ("subscribe", ""),
        ("unsubscribe", "unsub"),
        ("unsubscribe", "unsub"),
        ("unsubscribe", "delete"),
    ];
    expected.sort();
    assert_eq!(kinds, expected);
    let stats = world.stats();
    assert_eq!(
        (stats.webhooks_sent, stats.webhooks_failed, stats.webhooks_retried),
        (7, 0, 0)
    );
    assert_eq!(
        (
            stats.webhooks_late,
            stats.webhooks_duplicated,
            stats.webhooks_without_action
        ),
        (0, 0, 0)
    );
    sandbox.stop().await;
}

/// The stats and the receiver's bodies after 200 deletions (`unsubscribe`
/// events, each of a member of its own) with faults.
async fn unsubscribes_with_faults(seed: u64) -> (ometria_importer::sandbox::StatsSnapshot, Vec<String>, Duration) {
    let server = receiver(200).await;
    let late_by = Duration::from_millis(400);
    let sending = WebhookSending {
        late: 0.2,
        late_by,
        twice: 0.3,
        without_action: 0.5,
        ..WebhookSending::to(&server.uri())
    };
    let sandbox = sandbox_sending(1000, seed, Some(sending));
    let world = sandbox.world().clone();
    let started = Instant::now();
    assert_eq!(world.mutate("l", Mutation::Delete, 200).len(), 200);
    delivered(&world, Duration::from_secs(60)).await;
    let took = started.elapsed();
    let bodies: Vec<String> = received(&server).await.into_iter().map(|(_, b)| b).collect();
    let stats = world.stats();
    sandbox.stop().await;
    (stats, bodies, took)
}

#[actix_rt::test]
async fn late_doubled_and_actionless_events_come_at_their_fractions() {
    // Fractions of 200 events, drawn from the seed: within 0.1 of those asked for.
    let (stats, bodies, took) = unsubscribes_with_faults(7).await;
    let near = |n: u64, fraction: f64| (n as f64 / 200.0 - fraction).abs() < 0.1;
    assert!(near(stats.webhooks_late, 0.2), "{stats:?}");
    assert!(near(stats.webhooks_duplicated, 0.3), "{stats:?}");
    assert!(near(stats.webhooks_without_action, 0.5), "{stats:?}");
    // What the receiver got agrees: each doubled event twice, the same body.
    assert_eq!(bodies.len() as u64, 200 + stats.webhooks_duplicated);
    assert_eq!(stats.webhooks_sent, bodies.len() as u64);
    let mut copies: HashMap<&str, u64> = HashMap::new();
    for body in &bodies {
        *copies.entry(body).or_default() += 1;
    }
    assert_eq!(copies.len(), 200);
    assert_eq!(
        copies.values().filter(|n| **n == 2).count() as u64,
        stats.webhooks_duplicated
    );
    let actionless = copies.keys().filter(|b| !b.contains("data%5Baction%5D")).count() as u64;
    assert_eq!(actionless, stats.webhooks_without_action);
    // A delete without its action is read as an unsubscribe.
    for body in copies.keys() {
        let action = match body.contains("data%5Baction%5D=delete") {
            true => UnsubscribeAction::Delete,
            false => UnsubscribeAction::Unsub,
        };
        assert_eq!(
            WebhookEvent::parse(body.as_bytes()).unwrap().kind,
            EventKind::Unsubscribe { action }
        );
    }
    // The late ones waited at least half of late_by.
    assert!(took >= Duration::from_millis(200), "{took:?}");
    // The same seed, the same faults.
    let (again, _, _) = unsubscribes_with_faults(7).await;
    assert_eq!(
        (
            again.webhooks_late,
            again.webhooks_duplicated,
            again.webhooks_without_action
        ),
        (
            stats.webhooks_late,
            stats.webhooks_duplicated,
            stats.webhooks_without_action
        )
    );
}

#[actix_rt::test]
async fn failed_deliveries_are_retried_and_a_410_stops_them() {
    let quick = |url: &str| WebhookSending {
        retry_after: Duration::from_millis(20),
        ..WebhookSending::to(url)
    };
    // Twice 503, then taken: three attempts, one event.
    let flaky = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&flaky)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(2)
        .mount(&flaky)
        .await;
    let sandbox = sandbox_sending(100, 1, Some(quick(&flaky.uri())));
    let world = sandbox.world().clone();
    world.mutate("l", Mutation::Change, 1);
    delivered(&world, Duration::from_secs(30)).await;
    let stats = world.stats();
    assert_eq!(
        (stats.webhooks_sent, stats.webhooks_retried, stats.webhooks_failed),
        (1, 2, 0)
    );
    let bodies = received(&flaky).await;
    assert_eq!(bodies.len(), 3);
    assert!(bodies.iter().all(|b| *b == bodies[0]), "the same event each time");

    // Nobody listening: every attempt fails, then the event is given up.
    let closed = std::net::TcpListener::bind(loopback()).unwrap().local_addr().unwrap();
    world.send_webhooks(Some(WebhookSending {
        attempts: 3,
        ..quick(&format!("http://{closed}/hook"))
    }));
    world.mutate("l", Mutation::Change, 1);
    delivered(&world, Duration::from_secs(30)).await;
    let stats = world.stats();
    assert_eq!(
        (stats.webhooks_sent, stats.webhooks_retried, stats.webhooks_failed),
        (1, 4, 1)
    );

    // 410 Gone: no retry, and no more events to that receiver.
    let gone = receiver(410).await;
    world.send_webhooks(Some(quick(&gone.uri())));
    world.mutate("l", Mutation::Change, 1);
    delivered(&world, Duration::from_secs(30)).await;
    let stats = world.stats();
    assert!(stats.webhooks_gone);
    assert_eq!((stats.webhooks_retried, stats.webhooks_failed), (4, 2));
    world.mutate("l", Mutation::Subscribe, 3);
    delivered(&world, Duration::from_secs(30)).await;
    assert_eq!(received(&gone).await.len(), 1);
    assert_eq!(world.stats().webhooks_failed, 2, "nothing queued once gone");
    // Told to send again, it does.
    world.send_webhooks(Some(quick(&flaky.uri())));
    world.mutate("l", Mutation::Subscribe, 1);
    delivered(&world, Duration::from_secs(30)).await;
    assert_eq!(world.stats().webhooks_sent, 2);
    sandbox.stop().await;
}

/// POSTs to a sandbox control endpoint; its JSON answer.
async fn control_post(url: &str) -> Value {
    let mut answer = awc::Client::default().post(url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().await.unwrap()
}

async fn control_get(url: &str) -> Value {
    let mut answer = awc::Client::default().get(url).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    answer.json().limit(1 << 24).await.unwrap()
}

#[actix_rt::test]
async fn a_change_reaches_ometria_through_the_webhook_receiver_long_before_polling() {
    let sandbox = sandbox_sending(400, 3, None);
    let base = format!("http://{}", sandbox.addr());
    let (dir, _) = state_dir(r#"[{"list_id": "l"}]"#);
    let (log, buffer) = capture_log();
    // The LOAD; then the list is up to date for the refresh interval, an hour.
    let mut config = sandbox_config(&sandbox, dir.path());
    assert_eq!(run_once(&config, log.clone()).await.succeeded, 1);
    assert_eq!(config.refresh, Duration::from_secs(3600));
    let secret = "sandbox-hooks-0123456789";
    config.webhooks = Some(WebhookListen {
        addr: loopback(),
        secret: secret.parse().unwrap(),
    });
    config.webhook_debounce = Duration::from_secs(1);
    let daemon = spawn_run(config, RunMode::Go, log);
    let marker = "receiving Mailchimp webhooks on http://";
    wait_until(Duration::from_secs(20), "the webhook receiver", || {
        buffer.contents().contains(marker)
    })
    .await;
    let contents = buffer.contents();
    let line = contents.lines().find(|l| l.contains(marker)).unwrap();
    let receiver = line.split("http://").nth(1).unwrap().split('/').next().unwrap();
    sandbox.world().send_webhooks(Some(WebhookSending::to(&format!(
        "http://{receiver}/webhooks/mailchimp/{secret}"
    ))));

    // Four changes through the sandbox's own control endpoint, each one
    // a contact shows (an unsubscribe may pick a member already
    // unsubscribed); the deletion no SYNC can see.
    let mut changed = vec![];
    for kind in ["change", "archive", "add", "delete"] {
        let answer = control_post(&format!("{base}/_sandbox/mutate?list_id=l&kind={kind}&count=1")).await;
        let applied = answer["applied"][0].as_str().unwrap().to_owned();
        changed.push(applied.rsplit(' ').next().unwrap().to_owned());
    }
    let world = sandbox.world().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(world.latency().pending == 0 && world.verify(&["l".into()], None).ok) {
        assert!(
            Instant::now() < deadline,
            "the changes are not in Ometria: {:?} {:?} {:?}\n{}",
            world.latency(),
            world.stats(),
            world.verify(&["l".into()], None),
            buffer.contents()
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    // What Ometria holds for each: the member as it is now.
    let contact = |id: &str| world.ometria_contact(id).unwrap().0;
    let renamed = contact(&changed[0]);
    assert!(renamed["firstname"].as_str().unwrap().contains('·'), "{renamed}");
    let archived = contact(&changed[1]);
    assert_eq!(archived["marketing_optin"], "EXPLICITLY_OPTEDOUT");
    assert_eq!(archived["properties"]["mailchimp_status"], "archived");
    let added = contact(&changed[2]);
    assert_eq!(added["id"], changed[2].as_str());
    // Opted out at once: no reconciliation ran (the LOAD was the last full read).
    let deleted = contact(&changed[3]);
    assert_eq!(deleted["marketing_optin"], "EXPLICITLY_OPTEDOUT", "{deleted}");
    assert_eq!(deleted["properties"]["mailchimp_status"], "deleted");
    // Through the webhook receiver: its SYNC, not a poll.
    let log = buffer.contents();
    assert!(log.contains("controller: list \"l\" changed in Mailchimp ("), "{log}");
    let stats = world.stats();
    assert_eq!((stats.webhooks_sent, stats.webhooks_failed), (4, 0));
    assert!(!log.contains("reconcile: starting"), "{log}");
    assert!(
        log.contains("delete: opted out 1 member(s) deleted from list \"l\" in Mailchimp, at once on its webhook"),
        "{log}"
    );

    // The latency the sandbox measured, over HTTP too.
    let latency = control_get(&format!("{base}/_sandbox/latency")).await;
    assert_eq!(latency["count"], 4, "{latency}");
    assert_eq!(latency["pending"], 0);
    let (p50, max) = (
        latency["p50_seconds"].as_f64().unwrap(),
        latency["max_seconds"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= max, "{latency}");
    quit(dir.path(), daemon).await;
    sandbox.stop().await;
}
