//! What an operator sees (SPEC §11, §12): metrics scraped during and after
//! syncs match what the APIs received; a list that falls behind is logged
//! once, turns the health endpoint 503, counts its failures in a row, and
//! recovers.

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use ometria_importer::api::Api;
use ometria_importer::config::Config;
use ometria_importer::sandbox::faults::Faults;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig};
use ometria_importer::RunMode;
use support::{
    capture_log, every_entry_synced, loopback, quit, read_json, sandbox_config, spawn_run, state_dir, wait_for_ticks,
    wait_until, Stall,
};

fn config_for(sandbox: &Sandbox, dir: &std::path::Path) -> Config {
    let mut config = sandbox_config(sandbox, dir);
    config.metrics_addr = Some(loopback());
    config.tick = Duration::from_secs(1);
    config
}

/// The address the run said it serves metrics on.
fn metrics_address(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics and /healthz on http://"))?;
    Some(line.rsplit("http://").next()?.trim_end_matches('.').to_owned())
}

async fn get(url: &str) -> (u16, String) {
    let mut answer = awc::Client::default().get(url).send().await.unwrap();
    let body = answer.body().await.unwrap();
    (answer.status().as_u16(), String::from_utf8_lossy(&body).into_owned())
}

/// Samples of a metrics page, by name with labels (`name{a="b"}`).
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse().unwrap())))
        .collect()
}

/// Scrapes `/metrics` at `address` until `ready` holds (at most 20 s).
async fn scrape_until(
    address: &str,
    what: &str,
    ready: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = samples(&get(&format!("http://{address}/metrics")).await.1);
        if ready(&m) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn metrics_match_what_the_apis_received() {
    let ms = Duration::from_millis;
    let config = SandboxConfig {
        lists: vec![("a".into(), 1200), ("b".into(), 300)],
        mailchimp: Behaviour {
            latency: ms(40),
            ..Behaviour::default()
        },
        // A backlog that never drains: its room is what was pushed.
        ometria_backlog: 20_000,
        ometria_drain_per_second: Some(0.0),
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, file) = state_dir(r#"[{"list_id": "a", "items_per_request": 50, "worker_count": 2}, {"list_id": "b"}]"#);
    let (log, buffer) = capture_log();
    let started = Utc::now();
    let daemon = spawn_run(config_for(&sandbox, dir.path()), RunMode::Go, log);
    wait_until(Duration::from_secs(10), "the metrics address", || {
        metrics_address(&buffer.contents()).is_some()
    })
    .await;
    let address = metrics_address(&buffer.contents()).unwrap();

    // During a sync: it shows as running, and records are counted as they go.
    let mut seen_running = false;
    let mut stall = Stall::new(Duration::from_secs(20));
    while !every_entry_synced(&read_json(&file)) {
        let m = samples(&get(&format!("http://{address}/metrics")).await.1);
        seen_running |= m.get("ometria_importer_syncs_running") == Some(&1.0);
        let pushed = m.get("ometria_importer_records_pushed_total").copied().unwrap_or(0.0);
        stall.check(pushed as usize, "the syncs pushing records");
        actix_rt::time::sleep(ms(50)).await;
    }
    assert!(seen_running, "no scrape saw a sync running");

    let (status, text) = get(&format!("http://{address}/metrics")).await;
    assert_eq!(status, 200);
    let m = samples(&text);
    let stats = sandbox.world().stats();
    assert_eq!(
        m["ometria_importer_records_pushed_total"],
        stats.records_accepted as f64
    );
    assert_eq!(m["ometria_importer_records_pushed_total"], 1500.0);
    assert_eq!(
        m["ometria_importer_http_requests_total{api=\"mailchimp\",status=\"200\"}"],
        stats.mailchimp_requests as f64
    );
    assert_eq!(
        m["ometria_importer_http_requests_total{api=\"ometria\",status=\"200\"}"],
        stats.ometria_requests as f64
    );
    assert_eq!(m["ometria_importer_syncs_total{result=\"succeeded\"}"], 2.0);
    assert_eq!(m["ometria_importer_syncs_running"], 0.0);
    // The backlog as the last answer read said: after 1,500 records queued,
    // or a few pushes fewer when answers to pushes sent together came back
    // out of order.
    assert_eq!(m["ometria_importer_ometria_backlog_limit"], 20_000.0);
    let remaining = m["ometria_importer_ometria_backlog_remaining"];
    assert!((18_500.0..=19_500.0).contains(&remaining), "{remaining}");
    // Per entry, as in the state file, once a tick has read it again
    // (ticks during the syncs may have come before their results).
    let m = scrape_until(&address, "a tick that read both results", |m| {
        m.contains_key("ometria_importer_list_last_sync_records{entry=\"1\",list_id=\"b\"}")
            && m.contains_key("ometria_importer_list_last_sync_records{entry=\"1\",list_id=\"a\"}")
    })
    .await;
    assert_eq!(
        m["ometria_importer_list_last_sync_records{entry=\"1\",list_id=\"a\"}"],
        1200.0
    );
    assert_eq!(
        m["ometria_importer_list_last_sync_records{entry=\"1\",list_id=\"b\"}"],
        300.0
    );
    assert_eq!(m["ometria_importer_list_behind{entry=\"1\",list_id=\"a\"}"], 0.0);
    // Its last sync started after the daemon did (the cursor keeps whole seconds).
    let lag = m["ometria_importer_list_lag_seconds{entry=\"1\",list_id=\"a\"}"];
    assert!(
        lag <= (Utc::now() - started).num_milliseconds() as f64 / 1000.0 + 1.0,
        "{lag}"
    );
    let (status, health) = get(&format!("http://{address}/healthz")).await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&health).unwrap()["status"].clone()
        ),
        (200, "ok".into())
    );

    assert_eq!(quit(dir.path(), daemon).await.succeeded, 2);
    sandbox.stop().await;
}

/// A sandbox holding one list of 100 members.
fn one_list_sandbox(list_id: &str) -> Sandbox {
    let config = SandboxConfig {
        lists: vec![(list_id.into(), 100)],
        ..SandboxConfig::default()
    };
    Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap()
}

/// An API answering every request with a 5xx.
fn every_request_failing() -> Behaviour {
    Behaviour {
        faults: Faults {
            server_error: 1.0,
            ..Faults::default()
        },
        ..Behaviour::default()
    }
}

#[actix_rt::test]
async fn a_list_that_falls_behind_is_reported_once_and_recovers() {
    let sandbox = one_list_sandbox("late");
    sandbox.world().set_behaviour(Api::Ometria, every_request_failing());
    // Behind after 2 s without a successful sync.
    let (dir, file) = state_dir(r#"[{"list_id": "late", "refresh_seconds": 1, "alert_after_seconds": 2}]"#);
    let mut config = config_for(&sandbox, dir.path());
    config.retry.attempts = 1;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(10), "the metrics address", || {
        metrics_address(&buffer.contents()).is_some()
    })
    .await;
    let address = metrics_address(&buffer.contents()).unwrap();

    wait_until(Duration::from_secs(15), "the list to fall behind", || {
        buffer.contents().contains("is behind")
    })
    .await;
    let behind_at = buffer.contents().matches("controller: checking all lists.").count();
    wait_for_ticks(&buffer, behind_at + 3).await;
    let log = buffer.contents();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("is behind"))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains(
            "ERROR |controller| controller: list \"late\" is behind: it has had no latest_timestamp since \""
        ),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("(alert after 2 s)"), "{}", errors[0]);
    let (status, health) = get(&format!("http://{address}/healthz")).await;
    assert_eq!(status, 503);
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!(health["reason"], "1 list(s) behind: \"late\"");
    let m = samples(&get(&format!("http://{address}/metrics")).await.1);
    assert_eq!(m["ometria_importer_list_behind{entry=\"1\",list_id=\"late\"}"], 1.0);
    assert!(m["ometria_importer_syncs_total{result=\"failed\"}"] >= 2.0);
    assert!(m["ometria_importer_http_requests_total{api=\"ometria\",status=\"503\"}"] >= 2.0);
    // Its failed syncs (one attempt each) are counted in a row, per entry.
    let failing = "ometria_importer_list_sync_failures_in_a_row{entry=\"1\",list_id=\"late\"}";
    scrape_until(&address, "two failures in a row", |m| {
        m.get(failing).is_some_and(|n| *n >= 2.0)
    })
    .await;

    // Ometria recovers: the next attempt succeeds and the list catches up.
    sandbox.world().set_behaviour(Api::Ometria, Behaviour::default());
    wait_until(Duration::from_secs(15), "the list to catch up", || {
        buffer.contents().contains("has caught up")
    })
    .await;
    wait_until(Duration::from_secs(5), "health", || {
        read_json(&file)[0].get("latest_timestamp").is_some()
    })
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, _) = get(&format!("http://{address}/healthz")).await;
        if status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health stayed {status}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    let m = samples(&get(&format!("http://{address}/metrics")).await.1);
    assert_eq!(m["ometria_importer_list_behind{entry=\"1\",list_id=\"late\"}"], 0.0);
    scrape_until(&address, "the failures in a row reset by the success", |m| {
        m.get(failing) == Some(&0.0)
    })
    .await;
    let log = buffer.contents();
    assert_eq!(log.matches("is behind").count(), 1, "{log}");
    assert_eq!(log.matches("has caught up").count(), 1, "{log}");
    assert!(
        log.contains("ERROR |controller| controller: list \"late\" has caught up: it last synced on \""),
        "{log}"
    );
    quit(dir.path(), daemon).await;
    sandbox.stop().await;
}

#[actix_rt::test]
async fn a_cursor_set_back_to_null_by_hand_lags_from_then_not_from_the_start() {
    // Setting latest_timestamp to null forces a LOAD: that list is not
    // behind because the daemon has run longer than its alert threshold.
    let sandbox = one_list_sandbox("reset");
    let entry = |cursor: &str| {
        format!(
            r#"[{{"list_id": "reset", "latest_timestamp": {cursor}, "refresh_seconds": 1, "alert_after_seconds": 6}}]"#
        )
    };
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S");
    let (dir, file) = state_dir(&entry(&format!("\"{now}\"")));
    let mut config = config_for(&sandbox, dir.path());
    config.retry.attempts = 1;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    // Longer than the threshold, the cursor kept fresh by a SYNC a second.
    wait_for_ticks(&buffer, 8).await;
    // From now on every push fails, so the forced LOAD does not end the lag.
    sandbox.world().set_behaviour(Api::Ometria, every_request_failing());
    std::fs::write(&file, entry("null")).unwrap();
    let edited = chrono::Utc::now();
    wait_until(Duration::from_secs(10), "the forced LOAD", || {
        buffer
            .contents()
            .contains("controller: list \"reset\" requires \"LOAD\", firing...")
    })
    .await;
    let log = buffer.contents();
    assert!(!log.contains("is behind"), "{log}");

    wait_until(Duration::from_secs(15), "the list to fall behind", || {
        buffer.contents().contains("is behind")
    })
    .await;
    let log = buffer.contents();
    let line = log.lines().find(|l| l.contains("is behind")).unwrap();
    let since = line
        .split("it has had no latest_timestamp since \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("{line}"));
    let since = support::utc(&since.replace(' ', "T"));
    // The last tick that saw a cursor, shortly before the edit.
    assert!(since > edited - chrono::Duration::seconds(3), "{line}");
    assert!(since <= edited, "{line}");
    quit(dir.path(), daemon).await;
    sandbox.stop().await;
}

#[actix_rt::test]
async fn a_metrics_address_in_use_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sandbox = Sandbox::start(
        SandboxConfig::default(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        false,
    )
    .unwrap();
    let (dir, _) = state_dir("[]");
    let mut config = config_for(&sandbox, dir.path());
    config.metrics_addr = Some(taken.local_addr().unwrap());
    let (log, _) = capture_log();
    let err = ometria_importer::importer::run(&config, RunMode::Once, ometria_importer::importer::Signals::Ignore, log)
        .await
        .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot serve metrics on IMPORTER_METRICS_ADDR={}:",
            taken.local_addr().unwrap()
        )),
        "{err}"
    );
    sandbox.stop().await;
}

/// Syncs that end while a tick reads the state file (a large one, read
/// every 100 ms here) are not started again by a view that predates their
/// results; and a tick reads the file once, however many syncs end.
#[actix_rt::test]
async fn syncs_ending_while_a_tick_reads_the_file_are_not_started_again() {
    const LISTS: usize = 300;
    let sandbox = Sandbox::start(
        SandboxConfig {
            lists: (0..LISTS).map(|i| (format!("l{i:03}"), 2)).collect(),
            ..Default::default()
        },
        loopback(),
        false,
    )
    .unwrap();
    // Several megabytes the user keeps in the file (kept verbatim): each
    // read takes long enough for syncs to end during it.
    let mut entries: Vec<Value> = (0..LISTS).map(|i| json!({"list_id": format!("l{i:03}")})).collect();
    entries[0]["notes"] = json!("x".repeat(4_000_000));
    let (dir, file) = state_dir(&serde_json::to_string(&entries).unwrap());
    let mut config = sandbox_config(&sandbox, dir.path());
    config.metrics_addr = Some(loopback());
    config.tick = Duration::from_millis(100);
    config.grace = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    // However long the syncs take here, they must keep ending.
    let mut stall = Stall::new(Duration::from_secs(30));
    loop {
        let ended = buffer.contents().matches("sync: completed").count();
        if ended >= LISTS {
            break;
        }
        stall.check(ended, "the LOADs");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    wait_until(Duration::from_secs(20), "every result written", || {
        every_entry_synced(&read_json(&file))
    })
    .await;
    let log = buffer.contents();
    let address = metrics_address(&log).unwrap();
    let m = samples(&get(&format!("http://{address}/metrics")).await.1);
    let mut fired: HashMap<&str, usize> = HashMap::new();
    for line in log.lines().filter(|l| l.contains("firing...")) {
        *fired.entry(line.split('"').nth(1).unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = fired.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "synced more than once: {twice:?}");
    assert_eq!(fired.len(), LISTS);
    let ticks = log.matches("controller: checking all lists.").count();
    assert!(ticks >= 3, "{ticks} ticks: too few to prove anything");
    // A tick comes while the last one's read is unanswered: it is skipped,
    // not piled up behind it.
    let tick_lines: Vec<bool> = log
        .lines()
        .filter(|l| l.contains("checking all lists") || l.contains("sleeping for"))
        .map(|l| l.contains("checking all lists"))
        .collect();
    assert!(
        tick_lines.windows(2).all(|w| w[0] != w[1]),
        "a tick read the file while another's read was unanswered"
    );
    // The file is read by ticks and before writes only, not whenever a
    // sync ends; results that end together are written together.
    let (reads, writes) = (
        m["ometria_importer_state_file_reads_total"],
        m["ometria_importer_state_file_writes_total"],
    );
    assert!(
        reads - writes <= ticks as f64,
        "{reads} reads, {writes} writes, {ticks} ticks"
    );
    assert!(writes < LISTS as f64, "{writes} writes");
    quit(dir.path(), daemon).await;
    sandbox.stop().await;
}
