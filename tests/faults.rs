//! The fault matrix (SPEC §6): each fault alone at a high rate, then all
//! of them mixed, on both APIs. Every record must end up in Ometria, the
//! cursor must move only after a successful sync, and no record may be
//! written more often than the retries explain.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use ometria_importer::retry::RetryPolicy;
use ometria_importer::sandbox::faults::Faults;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig};
use support::{capture_log, every_entry_synced, read_json, run_once, sandbox_config, state_dir};

const ENTRIES: &str = r#"[{"list_id": "a", "items_per_request": 20, "worker_count": 4}, {"list_id": "b", "items_per_request": 20, "worker_count": 4}]"#;

fn faulty(faults: Faults, seed: u64) -> SandboxConfig {
    let faults = Faults {
        hang_for: Duration::from_millis(600),
        throttle_burst: 3,
        ..faults
    };
    let behaviour = Behaviour {
        latency: Duration::from_millis(1),
        jitter: Duration::from_millis(1),
        faults,
    };
    SandboxConfig {
        seed,
        lists: vec![("a".into(), 700), ("b".into(), 500)],
        mailchimp: behaviour,
        ometria: behaviour,
        workers: 2,
        ..SandboxConfig::default()
    }
}

/// What one scenario of the matrix did.
struct Outcome {
    runs: u32,
    faults: u64,
}

/// Syncs both lists (as many `once` runs as it takes, at most five),
/// checking the state file after every run, then checks Ometria.
async fn sync_through(name: &str, faults: Faults, seed: u64, attempts: u32, max_runs: u32) -> Outcome {
    let sandbox = Sandbox::start(faulty(faults, seed), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, file) = state_dir(ENTRIES);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.http_timeout = Duration::from_millis(300);
    config.retry = RetryPolicy {
        attempts: 10,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(100),
    };
    config.retry.attempts = attempts;
    let (log, buffer) = capture_log();
    let mut runs = 0;
    let mut explained = 0;
    loop {
        runs += 1;
        let (before, logged) = (read_json(&file), buffer.contents().len());
        let accepted = sandbox.world().stats().records_accepted;
        let summary = run_once(&config, log.clone()).await;
        let (after, this_run) = (read_json(&file), buffer.contents()[logged..].to_owned());
        for (i, list) in ["a", "b"].iter().enumerate() {
            let cursor = |state: &Value| state[i].get("latest_timestamp").cloned();
            if this_run.contains(&format!("for list \"{list}\": ")) {
                assert_eq!(
                    cursor(&after),
                    cursor(&before),
                    "{name}: the cursor of a failed sync moved"
                );
            } else if this_run.contains(&format!("for list \"{list}\".")) {
                assert!(
                    cursor(&after).is_some_and(|c| c.is_string()),
                    "{name}: a successful sync left no cursor"
                );
            }
        }
        if summary.failed > 0 {
            // A failed sync is done again from the start: what it wrote is written again.
            explained += sandbox.world().stats().records_accepted - accepted;
        }
        if every_entry_synced(&after) {
            break;
        }
        assert!(summary.failed > 0, "{name}: an entry neither synced nor failed");
        assert!(
            runs < max_runs,
            "{name}: still not synced after {runs} runs\n{}",
            buffer.contents()
        );
    }
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{name}: {verification:?}");
    let stats = sandbox.world().stats();
    let (contacts, writes) = sandbox.world().ometria_writes();
    assert_eq!(contacts, 1200, "{name}");
    // A record is written again only when Ometria took a push whose answer
    // never arrived, or when the sync that sent it failed and ran again.
    assert!(
        writes <= 1200 + stats.records_in_cut_answers + explained,
        "{name}: {writes} writes; {stats:?}"
    );
    if explained == 0 {
        assert_eq!(writes, 1200 + stats.records_in_cut_answers, "{name}: {stats:?}");
    }
    let faults = stats.faults_injected.values().sum();
    assert!(faults > 0, "{name}: no fault was injected");
    sandbox.stop().await;
    Outcome { runs, faults }
}

#[actix_rt::test]
async fn every_fault_alone_at_a_high_rate() {
    let rate = 0.25;
    let each: [(&str, Faults); 6] = [
        (
            "5xx",
            Faults {
                server_error: rate,
                ..Faults::default()
            },
        ),
        (
            "429 bursts",
            Faults {
                throttle: rate / 2.0,
                ..Faults::default()
            },
        ),
        (
            "403 without body",
            Faults {
                forbidden: rate,
                ..Faults::default()
            },
        ),
        (
            "hung requests",
            Faults {
                hang: rate / 2.0,
                ..Faults::default()
            },
        ),
        (
            "dropped connections",
            Faults {
                drop: rate,
                ..Faults::default()
            },
        ),
        (
            "truncated bodies",
            Faults {
                truncate: rate,
                ..Faults::default()
            },
        ),
    ];
    for (seed, (name, faults)) in each.into_iter().enumerate() {
        let outcome = sync_through(name, faults, seed as u64 + 1, 10, 5).await;
        eprintln!(
            "{name}: {} faults, {} run(s), 0 records lost",
            outcome.faults, outcome.runs
        );
    }
}

#[actix_rt::test]
async fn all_faults_mixed_at_a_high_rate() {
    let mut injected = 0;
    for seed in 1..=3 {
        let outcome = sync_through("mixed", Faults::all(0.05), seed, 10, 5).await;
        injected += outcome.faults;
        eprintln!(
            "mixed, seed {seed}: {} faults, {} run(s), 0 records lost",
            outcome.faults, outcome.runs
        );
    }
    assert!(injected >= 30, "only {injected} faults");
}

/// Without retries, syncs fail: their cursors stay, and a later run syncs
/// what they could not.
#[actix_rt::test]
async fn failed_syncs_keep_their_cursor_and_a_later_run_completes_them() {
    let mut runs = 0;
    for seed in 1..=3 {
        runs += sync_through("no retries", Faults::all(0.003), seed, 1, 40).await.runs;
    }
    eprintln!("no retries: {runs} runs for 3 seeds, failed syncs kept their cursor, 0 records lost");
    assert!(runs > 3, "no sync failed: the scenario proves nothing");
}

/// A long sync (about 1,400 requests, one worker of each kind) where one
/// request in six fails: 3 attempts run out for one request in 200, so
/// nearly every such sync would fail somewhere and start again from
/// nothing. Once the sync has shown that the APIs work, a request gets
/// 4 × 3 attempts, and the sync completes.
#[actix_rt::test]
async fn a_long_sync_where_the_apis_work_outlasts_its_unlucky_requests() {
    let faults = Faults {
        server_error: 0.17,
        ..Faults::default()
    };
    let config = SandboxConfig {
        lists: vec![("long".into(), 10_000)],
        ..faulty(faults, 1)
    };
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, file) = state_dir(r#"[{"list_id": "long", "items_per_request": 10, "worker_count": 1}]"#);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.retry = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(2),
        cap: Duration::from_millis(20),
    };
    let (log, buffer) = capture_log();
    // The start and the end of a sync, where few requests run, may still
    // run out of attempts now and then: three runs at most.
    let mut runs = 0;
    while read_json(&file)[0].get("latest_timestamp").is_none() {
        runs += 1;
        assert!(runs <= 3, "not synced in 3 runs\n{}", buffer.contents());
        run_once(&config, log.clone()).await;
    }
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    let stats = sandbox.world().stats();
    let faults: u64 = stats.faults_injected.values().sum();
    eprintln!("one request in six failing, 3 attempts: synced in {runs} run(s), {faults} faults, 0 records lost");
    sandbox.stop().await;
}
