//! Many lists (issue 19): syncs that end one by one are written to the
//! state file in few writes (one per window, `IMPORTER_STATE_WRITE_SECONDS`),
//! none is lost, `once` writes every result before it exits, and a list
//! that became due since the tick starts when a slot frees without every
//! entry being planned again. The window itself, hand edits made while it
//! is open and unreadable files are in `src/actors/state_keeper.rs`.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig};
use ometria_importer::RunMode;
use support::{
    capture_log, every_entry_synced, loopback, quit, read_json, run_once, sandbox_config, spawn_run, state_dir,
    wait_until, Stall,
};

const LISTS: usize = 200;

/// 200 small lists whose answers take 0–20 ms each (Ometria's 0–10 ms), so
/// that syncs end one by one rather than in bursts.
fn sandbox() -> Sandbox {
    let ms = Duration::from_millis;
    let config = SandboxConfig {
        lists: (0..LISTS).map(|i| (format!("l{i:03}"), 3)).collect(),
        mailchimp: Behaviour {
            latency: ms(10),
            jitter: ms(10),
            ..Behaviour::default()
        },
        mailchimp_max_connections: 0,
        ometria: Behaviour {
            latency: ms(5),
            jitter: ms(5),
            ..Behaviour::default()
        },
        workers: 2,
        ..SandboxConfig::default()
    };
    Sandbox::start(config, loopback(), false).unwrap()
}

/// The state file of the 200 lists, each with a key of the user's first.
fn entries() -> Vec<Value> {
    (0..LISTS)
        .map(|i| json!({"note": format!("mine {i}"), "list_id": format!("l{i:03}"), "worker_count": 2}))
        .collect()
}

/// The address the run said it serves metrics on.
fn metrics_address(log: &str) -> Option<String> {
    let line = log
        .lines()
        .find(|l| l.contains("serving /metrics and /healthz on http://"))?;
    Some(line.rsplit("http://").next()?.trim_end_matches('.').to_owned())
}

/// Samples of a metrics page, by name with labels.
async fn metrics(address: &str) -> HashMap<String, f64> {
    let mut answer = awc::Client::default()
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap();
    let body = answer.body().limit(64 * 1024 * 1024).await.unwrap();
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').map(|(k, v)| (k.to_owned(), v.parse().unwrap())))
        .collect()
}

/// One pass of `go` over the 200 lists with this write window, until
/// every entry has its cursor in the file: the writes of `state.json`
/// meanwhile, how long it took, and the file's text.
async fn pass(sandbox: &Sandbox, window: Duration) -> (f64, Duration, String) {
    let (dir, file) = state_dir(&serde_json::to_string_pretty(&entries()).unwrap());
    let mut config = sandbox_config(sandbox, dir.path());
    config.metrics_addr = Some(loopback());
    config.state_write_window = window;
    let (log, buffer) = capture_log();
    let started = Instant::now();
    let daemon = spawn_run(config, RunMode::Go, log);
    // However long the syncs take here, they must keep ending.
    let mut stall = Stall::new(Duration::from_secs(30));
    loop {
        let ended = buffer.contents().matches("sync: completed").count();
        if ended >= LISTS {
            break;
        }
        stall.check(ended, "the LOADs");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    wait_until(Duration::from_secs(30), "every result written", || {
        every_entry_synced(&read_json(&file))
    })
    .await;
    let elapsed = started.elapsed();
    let address = metrics_address(&buffer.contents()).unwrap();
    let writes = metrics(&address).await["ometria_importer_state_file_writes_total"];
    let summary = quit(dir.path(), daemon).await;
    assert_eq!(summary.succeeded, LISTS, "{}", buffer.contents());
    assert_eq!(summary.unwritten, 0);
    (writes, elapsed, std::fs::read_to_string(&file).unwrap())
}

/// Syncs that end one by one (with a window of 0, nearly a write each)
/// are written in one write per window: the writes follow the pass's
/// duration, not its number of lists, and every result is in the file,
/// the user's keys where they were.
#[actix_rt::test]
async fn many_syncs_ending_one_by_one_make_few_writes_and_lose_no_result() {
    let sandbox = sandbox();
    // The premise: written at once, these syncs take a write each, or nearly.
    let (at_once, _, _) = pass(&sandbox, Duration::ZERO).await;
    assert!(
        at_once >= (LISTS / 4) as f64,
        "the syncs did not end one by one: {at_once} writes for {LISTS} results"
    );
    let window = Duration::from_secs(1);
    let (writes, elapsed, text) = pass(&sandbox, window).await;
    eprintln!("{LISTS} syncs ending one by one in {elapsed:?}: {at_once} writes at once, {writes} with a window of {window:?}");
    // One write per window that closed, the last one's included.
    let windows = (elapsed.as_secs_f64() / window.as_secs_f64()).ceil() + 1.0;
    assert!(writes <= windows, "{writes} writes in {elapsed:?}");
    assert!(writes < (LISTS / 4) as f64, "{writes} writes for {LISTS} results");

    // Every result, written as the state file is written, keys in place.
    let state: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(text, format!("{}\n", serde_json::to_string_pretty(&state).unwrap()));
    let sizes: HashMap<String, usize> = sandbox
        .world()
        .list_sizes()
        .into_iter()
        .map(|(id, members, archived)| (id, members + archived))
        .collect();
    for (i, entry) in state.as_array().unwrap().iter().enumerate() {
        let keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "note",
                "list_id",
                "worker_count",
                "latest_timestamp",
                "elapsed_seconds",
                "total_updates"
            ],
            "{entry}"
        );
        assert_eq!(entry["note"], format!("mine {i}"));
        let cursor = entry["latest_timestamp"].as_str().unwrap();
        assert!(
            chrono::NaiveDateTime::parse_from_str(cursor, "%Y-%m-%dT%H:%M:%S").is_ok(),
            "{cursor}"
        );
        let records = entry["total_updates"].as_u64().unwrap() as usize;
        let id = entry["list_id"].as_str().unwrap();
        assert!(records > 0 && records <= sizes[id], "{entry}");
    }
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    sandbox.stop().await;
}

/// `once` ends with every result in the file, however long the window:
/// the last write does not wait for it.
#[actix_rt::test]
async fn once_writes_every_result_before_it_exits() {
    let sandbox = sandbox();
    let (dir, file) = state_dir(&serde_json::to_string(&entries()[..30]).unwrap());
    let mut config = sandbox_config(&sandbox, dir.path());
    config.state_write_window = Duration::from_secs(60);
    let (log, buffer) = capture_log();
    let started = Instant::now();
    let summary = run_once(&config, log).await;
    assert_eq!((summary.succeeded, summary.unwritten), (30, 0), "{}", buffer.contents());
    assert!(summary.all_recorded());
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "once waited for the window"
    );
    assert!(every_entry_synced(&read_json(&file)));
    sandbox.stop().await;
}

/// When a sync ends and no list waits for its slot, a list that became
/// due since the tick starts at once, not at the next tick (a minute
/// away), from the entries whose time has come rather than a plan of
/// every entry.
#[actix_rt::test]
async fn a_list_due_since_the_tick_starts_when_a_slot_frees() {
    let ms = Duration::from_millis;
    let config = SandboxConfig {
        // A: done at once, due again a second later; B: a hundred pages
        // read one at a time, 20 ms each, so longer than that second.
        lists: vec![("A".into(), 3), ("B".into(), 1000)],
        mailchimp: Behaviour {
            latency: ms(20),
            ..Behaviour::default()
        },
        mailchimp_max_connections: 0,
        workers: 2,
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, loopback(), false).unwrap();
    let (dir, file) = state_dir(
        r#"[{"list_id": "A", "refresh_seconds": 1},
            {"list_id": "B", "items_per_request": 10, "worker_count": 1}]"#,
    );
    let mut config = sandbox_config(&sandbox, dir.path());
    config.max_concurrent_lists = 2;
    let (log, buffer) = capture_log();
    let daemon = spawn_run(config, RunMode::Go, log);
    wait_until(Duration::from_secs(60), "the SYNC of A", || {
        buffer
            .contents()
            .contains("controller: list \"A\" requires \"SYNC\", firing...")
    })
    .await;
    let log = buffer.contents();
    assert_eq!(log.matches("controller: checking all lists.").count(), 1, "{log}");
    // It started when a sync ended — B's LOAD, whose slot it took, or,
    // on a machine slow enough that A's own LOAD took over its second,
    // that one — and not at a tick.
    let lines: Vec<&str> = log.lines().collect();
    let a_again = lines
        .iter()
        .position(|l| l.contains("list \"A\" requires \"SYNC\""))
        .unwrap();
    let done_before: Vec<&&str> = lines[..a_again]
        .iter()
        .filter(|l| l.contains("sync: completed"))
        .collect();
    assert!(!done_before.is_empty(), "{log}");
    wait_until(Duration::from_secs(30), "B's cursor", || {
        every_entry_synced(&read_json(&file))
    })
    .await;
    quit(dir.path(), daemon).await;
    sandbox.stop().await;
}
