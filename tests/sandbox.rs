//! The sandbox: its fake APIs keep the contracts, and the importer run
//! against it stays inside the global limits and leaves Ometria equal to
//! Mailchimp.

mod support;

use std::time::Duration;

use serde_json::{json, Value};

use ometria_importer::api::Api;
use ometria_importer::sandbox::faults::Faults;
use ometria_importer::sandbox::ometria::RunWrites;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig, DEFAULT_MAILCHIMP_KEY, DEFAULT_OMETRIA_KEY};
use ometria_importer::RunMode;
use support::{capture_log, loopback, run_once, sandbox_config, spawn_run, state_dir, Stall};

async fn get(url: &str, auth: Option<(&str, &str)>) -> (u16, Value) {
    let mut request = awc::Client::default().get(url);
    if let Some((user, key)) = auth {
        request = request.basic_auth(user, key);
    }
    let mut answer = request.send().await.unwrap();
    let body = answer.body().limit(1 << 26).await.unwrap();
    (
        answer.status().as_u16(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

async fn push(url: &str, key: &str, body: &Value) -> (u16, Option<String>, Value) {
    let mut answer = awc::Client::default()
        .post(format!("{url}/v2/push"))
        .insert_header(("X-Ometria-Auth", key))
        .send_json(body)
        .await
        .unwrap();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = answer.body().await.unwrap();
    (
        answer.status().as_u16(),
        retry_after,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

fn contact(id: &str) -> Value {
    json!({"@type": "contact", "id": id, "email": format!("{id}@example.com"), "marketing_optin": "NOT_SPECIFIED",
           "properties": {"mailchimp_status": "pending", "mailchimp_list_id": "l"}})
}

#[actix_rt::test]
async fn the_importer_stays_inside_the_limits_and_leaves_ometria_equal_to_mailchimp() {
    let ms = Duration::from_millis;
    let config = SandboxConfig {
        lists: (1..=4).map(|i| (format!("list-{i}"), 1500)).collect(),
        mailchimp: Behaviour {
            latency: ms(15),
            jitter: ms(10),
            ..Behaviour::default()
        },
        mailchimp_max_connections: 10,
        ometria: Behaviour {
            latency: ms(5),
            jitter: ms(5),
            ..Behaviour::default()
        },
        ometria_requests_per_second: Some(25.0),
        workers: 2,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let entries: Vec<Value> = (1..=4).map(|i| json!({"list_id": format!("list-{i}")})).collect();
    let (dir, file) = state_dir(&serde_json::to_string(&entries).unwrap());
    let mut config = sandbox_config(&sandbox, dir.path());
    config.ometria_max_requests_per_second = Some(25.0);
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary.succeeded, 4, "{}", buffer.contents());

    let stats = sandbox.world().stats();
    assert!(stats.mailchimp_max_in_flight <= 10, "{stats:?}");
    assert!(
        stats.mailchimp_max_in_flight >= 8,
        "the lists were not read concurrently: {stats:?}"
    );
    assert_eq!(
        (stats.mailchimp_throttled, stats.ometria_throttled),
        (0, 0),
        "429s in steady state: {stats:?}"
    );
    // 25 per second, evenly spaced; arrivals jitter a little at the edges.
    assert!(stats.ometria_max_per_second <= 28, "{stats:?}");
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    assert_eq!(verification.lists.iter().map(|l| l.matching).sum::<usize>(), 6000);
    let state: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert!(state.iter().all(|e| e["total_updates"] == 1500));
    sandbox.stop().await;
}

/// A backlog that fills (SPEC §6): pushing at 20 per second (2,000
/// records/s) into 4,000 records of backlog draining 800 records/s, the
/// importer slows down as the room shrinks instead of meeting 429s (pacing
/// as configured throughout, it met 32), and every record arrives. The
/// backlog starts draining once it is half full, so that it fills however
/// slowly this machine pushes.
#[actix_rt::test]
async fn a_filling_backlog_slows_the_importer_down_instead_of_meeting_429s() {
    let config = SandboxConfig {
        lists: vec![("b".into(), 9000)],
        ometria_backlog: 4000,
        ometria_drain_per_second: Some(0.0),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let (dir, _) = state_dir(r#"[{"list_id": "b"}]"#);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.ometria_max_requests_per_second = Some(20.0);
    let (log, buffer) = capture_log();
    let run = spawn_run(config, RunMode::Once, log);
    let mut stall = Stall::new(Duration::from_secs(20));
    loop {
        let stats = sandbox.world().stats();
        if stats.ometria_backlog_least_remaining < 2000 {
            break;
        }
        stall.check(stats.records_accepted as usize, "the backlog filling");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    sandbox.world().set_ometria_drain(Some(800.0));
    let summary = run.await.unwrap().unwrap();
    assert_eq!(summary.succeeded, 1, "{}", buffer.contents());
    let stats = sandbox.world().stats();
    assert!(stats.ometria_backlog_full <= 2, "{stats:?}");
    // One WARNING when it started slowing down, not one per push.
    let log = buffer.contents();
    assert_eq!(
        log.matches("ometria: Ometria's backlog is filling: ").count(),
        1,
        "{log}"
    );
    assert!(
        log.matches("ometria: Ometria's backlog has room again").count() <= 1,
        "{log}"
    );
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    sandbox.stop().await;
}

#[actix_rt::test]
async fn the_fake_mailchimp_keeps_the_contract() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 250)],
        mailchimp_max_connections: 2,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let base = format!("{}/lists/l/members", sandbox.mailchimp_url());
    let auth = Some(("any", DEFAULT_MAILCHIMP_KEY));

    let (status, body) = get(&format!("{base}?count=10"), Some(("any", "wrong-key"))).await;
    assert_eq!((status, body["title"].as_str()), (401, Some("API Key Invalid")));
    let (status, body) = get(&format!("{base}?count=1001"), auth).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("at most 1000"), "{body}");
    let (status, _) = get(&format!("{}/lists/nope/members", sandbox.mailchimp_url()), auth).await;
    assert_eq!(status, 404);

    let (status, page) = get(
        &format!("{base}?count=100&offset=200&fields=members.unique_email_id,total_items"),
        auth,
    )
    .await;
    assert_eq!(status, 200);
    let total = page["total_items"].as_u64().unwrap();
    let archived = sandbox.world().list_sizes()[0].2 as u64;
    assert_eq!(total, 250 - archived, "archived members are not returned by default");
    assert_eq!(page["members"].as_array().unwrap().len() as u64, total - 200);
    assert_eq!(page["members"][0].as_object().unwrap().len(), 1, "projection");
    let (_, page) = get(
        &format!("{base}?count=1000&status=archived&fields=members.status,total_items"),
        auth,
    )
    .await;
    assert_eq!(page["total_items"].as_u64().unwrap(), archived);
    assert!(page["members"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["status"] == "archived"));
    let (_, full) = get(&format!("{base}?count=1"), auth).await;
    assert!(
        full["members"][0]["_links"].as_array().unwrap().len() >= 8,
        "unprojected members are bulky"
    );
    sandbox.stop().await;
}

#[actix_rt::test]
async fn the_fake_mailchimp_serves_the_lists_merge_fields() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 20)],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let base = format!("{}/lists/l/merge-fields", sandbox.mailchimp_url());
    let auth = Some(("any", DEFAULT_MAILCHIMP_KEY));

    let (status, body) = get(&base, Some(("any", "wrong-key"))).await;
    assert_eq!((status, body["title"].as_str()), (401, Some("API Key Invalid")));
    let (status, body) = get(&format!("{}/lists/nope/merge-fields", sandbox.mailchimp_url()), auth).await;
    assert_eq!((status, body["title"].as_str()), (404, Some("Resource Not Found")));
    let (status, _) = get(&format!("{base}?count=1001"), auth).await;
    assert_eq!(status, 400);

    let (status, page) = get(&format!("{base}?count=1000"), auth).await;
    assert_eq!(status, 200);
    assert_eq!(
        (page["list_id"].as_str(), page["total_items"].as_u64()),
        (Some("l"), Some(11))
    );
    let by_tag = |tag: &str| {
        page["merge_fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["tag"] == tag)
            .unwrap()
            .clone()
    };
    assert_eq!(by_tag("PHONE")["type"], "phone");
    assert_eq!(by_tag("BIRTHDAY")["options"]["date_format"], "MM/DD");
    assert_eq!(by_tag("JOINED")["options"]["date_format"], "YYYY-MM-DD");
    assert_eq!(by_tag("PLAN")["options"]["choices"], json!(["Free", "Pro", "Business"]));
    assert_eq!(by_tag("LOYALTY")["list_id"], "l");
    // Every member's merge fields are the list's.
    let (_, members) = get(
        &format!(
            "{}/lists/l/members?count=1&fields=members.merge_fields",
            sandbox.mailchimp_url()
        ),
        auth,
    )
    .await;
    let tags: Vec<Value> = page["merge_fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tag"].clone())
        .collect();
    let held: Vec<Value> = members["members"][0]["merge_fields"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| json!(k))
        .collect();
    assert_eq!(held, tags);

    let (_, page) = get(&format!("{base}?offset=10&fields=merge_fields.tag"), auth).await;
    assert_eq!(page, json!({"merge_fields": [{"tag": "SIZE"}]}));
    assert_eq!(sandbox.world().stats().mailchimp_requests, 6);
    sandbox.stop().await;
}

#[actix_rt::test]
async fn the_fake_mailchimp_answers_429_above_its_connection_cap() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 50)],
        mailchimp: Behaviour {
            latency: Duration::from_millis(300),
            ..Behaviour::default()
        },
        mailchimp_max_connections: 2,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let url = format!("{}/lists/l/members?count=5", sandbox.mailchimp_url());
    let auth = Some(("any", DEFAULT_MAILCHIMP_KEY));
    let answers = futures_util::future::join_all((0..4).map(|_| get(&url, auth))).await;
    let mut statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429, 429]);
    assert_eq!(sandbox.world().stats().mailchimp_throttled, 2);
    sandbox.stop().await;
}

#[actix_rt::test]
async fn the_fake_ometria_keeps_the_contract() {
    let config = SandboxConfig {
        ometria_requests_per_second: Some(2.0),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let url = sandbox.ometria_url();

    let (status, _, _) = push(&url, "wrong", &json!([contact("a")])).await;
    assert_eq!(status, 401);
    let too_many: Vec<Value> = (0..101).map(|i| contact(&format!("c{i}"))).collect();
    let (status, _, body) = push(&url, DEFAULT_OMETRIA_KEY, &json!(too_many)).await;
    assert_eq!((status, body["title"].as_str()), (400, Some("Too Many Records")));
    let mut bad = contact("b");
    bad["email"] = json!("not an email");
    let (status, _, body) = push(&url, DEFAULT_OMETRIA_KEY, &json!([contact("a"), bad])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["status"].as_str(),
            body["accepted"].as_u64(),
            body["rejected"].as_u64()
        ),
        (Some("OK"), Some(1), Some(1))
    );
    assert!(body["request_id"].is_string());
    let (stored, writes) = sandbox.world().ometria_contact("a").unwrap();
    assert_eq!((stored, writes), (contact("a"), 1));
    assert!(
        sandbox.world().ometria_contact("b").is_none(),
        "rejected records are not stored"
    );
    // Two requests (the 400 and the 200) emptied the bucket of two.
    let (status, retry_after, _) = push(&url, DEFAULT_OMETRIA_KEY, &json!([contact("a")])).await;
    assert_eq!((status, retry_after.as_deref()), (429, Some("1")));
    assert_eq!(sandbox.world().stats().ometria_throttled, 1);
    sandbox.stop().await;
}

/// Ometria's backlog (SPEC §6): every push answer carries its size and
/// the room left; a push that does not fit is refused whole with a 429.
#[actix_rt::test]
async fn the_fake_ometria_answers_with_its_backlog_and_429_when_it_is_full() {
    let config = SandboxConfig {
        ometria_backlog: 250,
        ometria_drain_per_second: Some(0.0),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let batch: Vec<Value> = (0..100).map(|i| contact(&format!("c{i}"))).collect();
    let mut answers = vec![];
    for _ in 0..3 {
        let answer = awc::Client::default()
            .post(format!("{}/v2/push", sandbox.ometria_url()))
            .insert_header(("X-Ometria-Auth", DEFAULT_OMETRIA_KEY))
            .send_json(&batch)
            .await
            .unwrap();
        let header = |name: &str| answer.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
        answers.push((
            answer.status().as_u16(),
            header("x-queuesize-limit"),
            header("x-queuesize-remaining"),
            header("retry-after"),
        ));
    }
    let some = |n: &str| Some(n.to_owned());
    assert_eq!(
        answers,
        [
            (200, some("250"), some("150"), None),
            (200, some("250"), some("50"), None),
            (429, some("250"), some("50"), None),
        ]
    );
    let stats = sandbox.world().stats();
    assert_eq!(
        (
            stats.ometria_backlog_full,
            stats.ometria_backlog_least_remaining,
            stats.records_accepted
        ),
        (1, 50, 200)
    );
    sandbox.stop().await;
}

/// `/_run/{run}/v2/push` is `/v2/push`, with what each run's pushes did
/// counted for it: stored, stored under a cut answer, hung.
#[actix_rt::test]
async fn pushes_sent_for_a_run_are_counted_for_it() {
    let sandbox = Sandbox::start(SandboxConfig::default(), loopback(), false).unwrap();
    let url = sandbox.ometria_url();
    let (status, _, _) = push(
        &format!("{url}/_run/r1"),
        DEFAULT_OMETRIA_KEY,
        &json!([contact("a"), contact("b")]),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = push(&url, DEFAULT_OMETRIA_KEY, &json!([contact("a")])).await;
    assert_eq!(status, 200);
    let ometria = |faults| Behaviour {
        faults,
        ..Behaviour::default()
    };
    sandbox.world().set_behaviour(
        Api::Ometria,
        ometria(Faults {
            truncate: 1.0,
            ..Faults::default()
        }),
    );
    let mut cut = awc::Client::default()
        .post(format!("{url}/_run/r2/v2/push"))
        .insert_header(("X-Ometria-Auth", DEFAULT_OMETRIA_KEY))
        .send_json(&json!([contact("c"), contact("d"), contact("e")]))
        .await
        .unwrap();
    let announced: usize = cut
        .headers()
        .get("content-length")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cut.body().await.map_or(0, |b| b.len()) < announced, "the answer is cut");
    sandbox.world().set_behaviour(
        Api::Ometria,
        ometria(Faults {
            hang: 1.0,
            hang_for: Duration::from_millis(10),
            ..Faults::default()
        }),
    );
    let (status, _, _) = push(
        &format!("{url}/_run/r2"),
        DEFAULT_OMETRIA_KEY,
        &json!([contact("f"), contact("g")]),
    )
    .await;
    assert_eq!(status, 504);
    let writes = sandbox.world().ometria_writes_by_run();
    assert_eq!((writes.contacts, writes.writes), (5, 6));
    let run = |records_accepted, records_in_cut_answers, records_in_hung_pushes| RunWrites {
        records_accepted,
        records_in_cut_answers,
        records_in_hung_pushes,
    };
    assert_eq!(
        writes.runs.into_iter().collect::<Vec<_>>(),
        [("r1".to_owned(), run(2, 0, 0)), ("r2".to_owned(), run(3, 3, 2))]
    );
    sandbox.stop().await;
}

#[actix_rt::test]
async fn the_fake_ometria_refuses_a_push_too_large_as_ometria_does() {
    let config = SandboxConfig {
        ometria_max_body_bytes: 100_000,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let url = sandbox.ometria_url();
    // A record over 60 KB: the whole push is refused, nothing of it stored.
    let mut large = contact("large");
    large["lastname"] = json!("x".repeat(61 * 1024));
    let (status, _, body) = push(&url, DEFAULT_OMETRIA_KEY, &json!([contact("a"), large])).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"status": "ERROR", "message": "Payload invalid: Record is too large."})
        )
    );
    assert!(sandbox.world().ometria_contact("a").is_none());
    // A body over the configured size: 413, nothing stored; half of it fits.
    let many: Vec<Value> = (0..100)
        .map(|i| {
            let mut c = contact(&format!("c{i}"));
            c["lastname"] = json!("y".repeat(1000));
            c
        })
        .collect();
    assert!(json!(many).to_string().len() > 100_000);
    let (status, _, body) = push(&url, DEFAULT_OMETRIA_KEY, &json!(many)).await;
    assert_eq!(
        (status, body),
        (413, json!({"status": "ERROR", "message": "Payload too large."}))
    );
    assert!(sandbox.world().ometria_contact("c0").is_none());
    let (status, _, _) = push(&url, DEFAULT_OMETRIA_KEY, &json!(many[..50])).await;
    assert_eq!(status, 200);
    assert!(sandbox.world().ometria_contact("c0").is_some());
    sandbox.stop().await;
}

#[actix_rt::test]
async fn injected_faults_reach_the_client() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 10)],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let url = format!("{}/lists/l/members?count=5", sandbox.mailchimp_url());
    for (faults, expect) in [
        (
            Faults {
                server_error: 1.0,
                ..Faults::default()
            },
            Some(503),
        ),
        (
            Faults {
                throttle: 1.0,
                throttle_burst: 1,
                ..Faults::default()
            },
            Some(429),
        ),
        (
            Faults {
                truncate: 1.0,
                ..Faults::default()
            },
            None,
        ),
        (
            Faults {
                drop: 1.0,
                ..Faults::default()
            },
            None,
        ),
    ] {
        sandbox.world().set_behaviour(
            Api::Mailchimp,
            Behaviour {
                faults,
                ..Behaviour::default()
            },
        );
        let request = awc::Client::default()
            .get(&url)
            .basic_auth("any", DEFAULT_MAILCHIMP_KEY);
        match (request.send().await, expect) {
            (Ok(answer), Some(status)) => assert_eq!(answer.status().as_u16(), status),
            // A dropped connection: no answer at all.
            (Err(_), None) => {}
            // A truncated answer: fewer bytes than announced.
            (Ok(mut answer), None) => {
                let announced: usize = answer
                    .headers()
                    .get("content-length")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let received = answer.body().await.map_or(0, |b| b.len());
                assert!(received < announced, "{faults:?}: {received} of {announced}");
            }
            (Err(e), Some(_)) => panic!("{faults:?}: {e}"),
        }
    }
    let injected = sandbox.world().stats().faults_injected;
    assert_eq!(
        injected["server_error"] + injected["throttle"] + injected["truncate"] + injected["drop"],
        4
    );
    sandbox.stop().await;
}

#[actix_rt::test]
async fn control_endpoints_inspect_and_mutate() {
    let config = SandboxConfig {
        lists: vec![("l".into(), 30)],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let base = format!("http://{}/_sandbox", sandbox.addr());
    assert_eq!(get(&format!("{base}/health"), None).await, (200, json!({"ok": true})));
    let (_, lists) = get(&format!("{base}/lists"), None).await;
    assert_eq!(lists[0]["list_id"], "l");
    let (_, verify) = get(&format!("{base}/verify"), None).await;
    assert_eq!(verify["ok"], false, "nothing was pushed yet");
    assert_eq!(verify["lists"][0]["missing_count"], 30);

    let mut answer = awc::Client::default()
        .post(format!("{base}/mutate?list_id=l&kind=add&count=3"))
        .send()
        .await
        .unwrap();
    let applied: Value = answer.json().await.unwrap();
    assert_eq!(applied["applied"].as_array().unwrap().len(), 3);
    let (_, lists) = get(&format!("{base}/lists"), None).await;
    assert_eq!(
        lists[0]["members"].as_u64().unwrap() + lists[0]["archived"].as_u64().unwrap(),
        33
    );
    let (_, stats) = get(&format!("{base}/stats"), None).await;
    assert_eq!(stats["mutations"], 3);
    sandbox.stop().await;
}

#[actix_rt::test]
async fn faults_at_a_moderate_rate_cost_no_record() {
    let ms = Duration::from_millis;
    // Hung requests outlast a first attempt's 1 s (a quarter of the 4 s
    // timeout), unless answers are so slow that the importer waits longer.
    let faults = Faults {
        hang_for: ms(2000),
        throttle_burst: 2,
        ..Faults::all(0.02)
    };
    let config = SandboxConfig {
        lists: vec![("a".into(), 1200), ("b".into(), 800)],
        mailchimp: Behaviour {
            latency: ms(2),
            jitter: ms(2),
            faults,
        },
        ometria: Behaviour {
            latency: ms(2),
            jitter: ms(2),
            faults,
        },
        seed: 7,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let (dir, _) =
        state_dir(r#"[{"list_id": "a", "items_per_request": 20}, {"list_id": "b", "items_per_request": 20}]"#);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.http_timeout = ms(4000);
    config.retry = ometria_importer::retry::RetryPolicy {
        attempts: 8,
        base: ms(10),
        cap: ms(200),
    };
    config.ometria_max_requests_per_second = None;
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log).await;
    assert_eq!(summary.succeeded, 2, "{}", buffer.contents());
    let stats = sandbox.world().stats();
    assert!(stats.faults_injected.values().sum::<u64>() >= 8, "{stats:?}");
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    sandbox.stop().await;
}

/// Issue 17 end to end: lists with mappings — one entry's own, and a
/// shared one from mappings.json named by two entries, one of them taking
/// a field out and adding its own — arrive in Ometria with every mapped
/// field right, as the sandbox's own oracle (written from what it
/// generated, not from the importer's conversion) expects; and after some
/// members change, a SYNC brings them level again.
#[actix_rt::test]
async fn lists_with_mappings_arrive_with_every_mapped_field_right() {
    use ometria_importer::sandbox::verify::resolve_mapping;
    use std::collections::BTreeMap;
    let config = SandboxConfig {
        lists: vec![("own".into(), 900), ("shared-a".into(), 700), ("shared-b".into(), 500)],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let named = json!({"shop": {"fields": {
        "phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country",
        "properties.birthday": "merge_fields.BIRTHDAY", "properties.tags": "tags",
        "properties.loyalty": "merge_fields.LOYALTY", "timezone": "location.timezone"},
        "collection": "mailchimp", "force_optin": true}});
    let entries = json!([
        {"list_id": "own", "fields": {
            "date_of_birth": "merge_fields.JOINED", "properties.address": "merge_fields.ADDRESS",
            "properties.consent": "marketing_permissions", "properties.interests": "interests",
            "properties.web": "merge_fields.WEBSITE", "properties.plan": "merge_fields.PLAN",
            "properties.size": "merge_fields.SIZE", "properties.zip": "merge_fields.ZIP",
            "properties.vip": "vip", "properties.language": "language", "customer_id": "merge_fields.LOYALTY",
            "country_id": "location.country_code", "store_ids": "tags.name", "firstname": "merge_fields.LNAME"}},
        {"list_id": "shared-a", "mapping": "shop"},
        {"list_id": "shared-b", "mapping": "shop", "collection": "mailchimp_b",
         "fields": {"timezone": null, "lastname": null, "properties.joined": "merge_fields.JOINED"}}
    ]);
    let (dir, file) = state_dir(&serde_json::to_string(&entries).unwrap());
    std::fs::write(dir.path().join("mappings.json"), named.to_string()).unwrap();
    let mappings: BTreeMap<String, Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["list_id"].as_str().unwrap().to_owned(),
                resolve_mapping(&named, e).unwrap(),
            )
        })
        .collect();
    let config = sandbox_config(&sandbox, dir.path());
    let (log, buffer) = capture_log();
    let summary = run_once(&config, log.clone()).await;
    assert_eq!(summary.succeeded, 3, "{}", buffer.contents());
    let verification = sandbox.world().verify_mapped(&mappings, None);
    assert!(verification.ok, "{verification:#?}");
    assert_eq!(verification.lists.iter().map(|l| l.matching).sum::<usize>(), 2100);
    // Values the fields cannot take were dropped and counted, never sent.
    assert!(
        buffer.contents().contains("were left out of its records"),
        "{}",
        buffer.contents()
    );

    // Members change (merge fields, tags, status…); a SYNC brings Ometria level.
    for list in ["own", "shared-a", "shared-b"] {
        sandbox
            .world()
            .mutate(list, ometria_importer::sandbox::audience::Mutation::Change, 40);
    }
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    for entry in state.as_array_mut().unwrap() {
        entry["latest_timestamp"] = json!("2000-01-01T00:00:00");
    }
    std::fs::write(&file, serde_json::to_string_pretty(&state).unwrap()).unwrap();
    // A sync reads what changed before the second it starts in.
    let changed_at = chrono::Utc::now().timestamp();
    support::wait_until(Duration::from_secs(3), "the next second", || {
        chrono::Utc::now().timestamp() > changed_at
    })
    .await;
    let summary = run_once(&config, log).await;
    assert_eq!(summary.succeeded, 3, "{}", buffer.contents());
    let verification = sandbox.world().verify_mapped(&mappings, None);
    assert!(verification.ok, "{verification:#?}");
    sandbox.stop().await;
}
