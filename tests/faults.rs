//! The fault matrix (SPEC §6): each fault alone at a high rate, then all
//! of them mixed, on both APIs. Every record must end up in Ometria, the
//! cursor must move only after a successful sync, and no record may be
//! written more often than the retries explain.

mod support;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;

use ometria_importer::config::Config;
use ometria_importer::retry::RetryPolicy;
use ometria_importer::sandbox::faults::Faults;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig, DEFAULT_OMETRIA_KEY};
use ometria_importer::telemetry::log::SharedBuffer;
use support::{capture_log, every_entry_synced, read_json, run_once, sandbox_config, state_dir};

const ENTRIES: &str = r#"[{"list_id": "a", "items_per_request": 20, "worker_count": 4}, {"list_id": "b", "items_per_request": 20, "worker_count": 4}]"#;

/// The client timeout of the runs: a first attempt gets a quarter of it,
/// 1 s, or 8 × the slowest recent answer if that is longer (the importer's
/// own allowance for an API that is slow, or a machine that is).
const HTTP_TIMEOUT: Duration = Duration::from_secs(4);

/// Longer than a first attempt waits (1 s) while answers take their 1-2
/// ms, so hung requests are abandoned by the client; on a machine so slow
/// that the importer waits longer, they end in the 504 instead, retried
/// all the same.
const HANG: Duration = Duration::from_secs(2);

fn faulty(faults: Faults, seed: u64) -> SandboxConfig {
    let faults = Faults {
        hang_for: HANG,
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
    /// Writes beyond one per contact.
    rewrites: u64,
    /// Of those, the writes of failed runs.
    by_failed_runs: u64,
}

/// What one `once` run did, as its log tells. Its pushes went to
/// `/_run/{tag}/v2/push`, so the sandbox counts what they stored for it,
/// even what lands after the run ended (a push whose client gave up,
/// or whose sync failed and stopped its Writers, may still be stored).
struct Run {
    tag: String,
    /// Some sync of the run failed: it is done again from the start, and
    /// what it wrote is written again.
    failed: bool,
    /// Lists whose sync succeeded.
    synced: Vec<String>,
    /// Records those syncs found unchanged in the ledger (pushed by an
    /// earlier run, even one that failed) and did not push.
    unchanged: u64,
    /// Records in the pushes that were retried for want of an answer:
    /// timed out, connection failed, answer cut short or unreadable.
    /// Ometria may have stored them all the same.
    unanswered: u64,
    /// Records in the pushes that were retried after a 504, the sandbox's
    /// answer to a push it hung and did not store.
    answered_504: u64,
}

impl Run {
    /// Runs `once` with its pushes sent for `tag`.
    async fn once(
        tag: &str,
        sandbox: &Sandbox,
        config: &mut Config,
        log: &slog::Logger,
        buffer: &SharedBuffer,
    ) -> (Run, String) {
        config.ometria_base_url = format!("{}/_run/{tag}", sandbox.ometria_url());
        let logged = buffer.contents().len();
        let summary = run_once(config, log.clone()).await;
        let this_run = buffer.contents()[logged..].to_owned();
        let synced = this_run
            .lines()
            .filter_map(|l| l.split("sync: completed in ").nth(1))
            .filter_map(|l| l.split("for list \"").nth(1)?.split('"').next())
            .map(str::to_owned)
            .collect();
        let unchanged = this_run
            .lines()
            .filter(|l| l.contains("sync: completed in "))
            .filter_map(|l| l.split(" unchanged=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
            .sum();
        let (mut unanswered, mut answered_504) = (0, 0);
        for retry in this_run.lines().filter_map(|l| l.split("sync: pushing ").nth(1)) {
            let (records, rest) = retry.split_once(" records of list ").expect("a retry line");
            let records: u64 = records.parse().expect("a record count");
            let error = rest.split_once(" failed: ").expect("a retry line").1;
            if [
                "Ometria did not answer within",
                "Ometria connection failed",
                "Ometria sent an unreadable answer",
            ]
            .iter()
            .any(|e| error.starts_with(e))
            {
                unanswered += records;
            } else if error.starts_with("Ometria failed with HTTP 504") {
                answered_504 += records;
            }
        }
        let run = Run {
            tag: tag.to_owned(),
            failed: summary.failed > 0,
            synced,
            unchanged,
            unanswered,
            answered_504,
        };
        (run, this_run)
    }
}

/// Every write Ometria holds has a reason: a run that synced its lists
/// wrote once each member the ledger did not hold unchanged, and again only for a push Ometria took whose
/// answer never came (the importer retried it); a failed run is done
/// again, so its writes are all explained. Writes are counted by the run
/// that sent them, whenever they land. `Err` says what is unexplained.
fn check_writes(runs: &[Run], sandbox: &Sandbox) -> Result<(), String> {
    let world = sandbox.world();
    let sizes: HashMap<String, u64> = world
        .list_sizes()
        .into_iter()
        .map(|(id, members, archived)| (id, (members + archived) as u64))
        .collect();
    let writes = world.ometria_writes_by_run();
    let by_runs: u64 = writes.runs.values().map(|w| w.records_accepted).sum();
    if writes.writes != by_runs {
        return Err(format!("{} writes, {by_runs} by the runs: {writes:?}", writes.writes));
    }
    for run in runs.iter().filter(|r| !r.failed) {
        let w = writes.runs.get(&run.tag).copied().unwrap_or_default();
        let members: u64 = run.synced.iter().map(|l| sizes[l]).sum::<u64>() - run.unchanged;
        // At least: every member, and every record of a push whose answer
        // the sandbox cut. At most: every member, and every record of a
        // push left without an answer, but for those the sandbox hung
        // (stored nothing) that were not answered with their 504 after all.
        let least = members + w.records_in_cut_answers;
        let most = members + run.unanswered + run.answered_504;
        if w.records_accepted < least || w.records_accepted + w.records_in_hung_pushes > most {
            return Err(format!(
                "run {} wrote {} records (and hung {}) for the {members} members of {:?}: \
                 at least {least} and at most {most} in all are explained; {w:?}",
                run.tag, w.records_accepted, w.records_in_hung_pushes, run.synced
            ));
        }
    }
    Ok(())
}

/// Syncs both lists (as many `once` runs as it takes, at most
/// `max_runs`), checking the state file after every run, then checks
/// Ometria and what was written.
async fn sync_through(name: &str, faults: Faults, seed: u64, attempts: u32, max_runs: u32) -> Outcome {
    let sandbox = Sandbox::start(faulty(faults, seed), SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, file) = state_dir(ENTRIES);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.http_timeout = HTTP_TIMEOUT;
    config.retry = RetryPolicy {
        attempts: 10,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(100),
    };
    config.retry.attempts = attempts;
    let (log, buffer) = capture_log();
    let mut runs = vec![];
    loop {
        let before = read_json(&file);
        let (run, this_run) = Run::once(&format!("{}", runs.len() + 1), &sandbox, &mut config, &log, &buffer).await;
        let after = read_json(&file);
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
        let failed = run.failed;
        runs.push(run);
        if every_entry_synced(&after) {
            break;
        }
        assert!(failed, "{name}: an entry neither synced nor failed");
        assert!(
            runs.len() < max_runs as usize,
            "{name}: still not synced after {} runs\n{}",
            runs.len(),
            buffer.contents()
        );
    }
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{name}: {verification:?}");
    assert_eq!(sandbox.world().ometria_writes().0, 1200, "{name}");
    if let Err(unexplained) = check_writes(&runs, &sandbox) {
        panic!("{name}: {unexplained}; {:?}", sandbox.world().stats());
    }
    let faults = sandbox.world().stats().faults_injected.values().sum();
    assert!(faults > 0, "{name}: no fault was injected");
    let writes = sandbox.world().ometria_writes_by_run();
    let by_failed_runs = runs
        .iter()
        .filter(|r| r.failed)
        .filter_map(|r| writes.runs.get(&r.tag))
        .map(|w| w.records_accepted)
        .sum();
    sandbox.stop().await;
    Outcome {
        runs: runs.len() as u32,
        faults,
        rewrites: writes.writes - 1200,
        by_failed_runs,
    }
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
            "{name}: {} faults, {} run(s), 0 records lost, {} rewrites explained ({} by failed runs)",
            outcome.faults, outcome.runs, outcome.rewrites, outcome.by_failed_runs
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
            "mixed, seed {seed}: {} faults, {} run(s), 0 records lost, {} rewrites explained ({} by failed runs)",
            outcome.faults, outcome.runs, outcome.rewrites, outcome.by_failed_runs
        );
    }
    assert!(injected >= 30, "only {injected} faults");
}

/// Without retries, syncs fail: their cursors stay, and a later run syncs
/// what they could not.
#[actix_rt::test]
async fn failed_syncs_keep_their_cursor_and_a_later_run_completes_them() {
    let (mut runs, mut rewrites) = (0, 0);
    for seed in 1..=3 {
        let outcome = sync_through("no retries", Faults::all(0.003), seed, 1, 40).await;
        runs += outcome.runs;
        rewrites += outcome.rewrites;
    }
    eprintln!(
        "no retries: {runs} runs for 3 seeds, failed syncs kept their cursor, 0 records lost, \
         {rewrites} rewrites, all by failed runs"
    );
    assert!(runs > 3, "no sync failed: the scenario proves nothing");
}

/// The check of writes is no formality: a batch written twice for no
/// reason is caught. One run syncs both lists without a fault; then the
/// sandbox gets 100 of their records again for that run, as it would from
/// a sync that pushed a batch twice.
#[actix_rt::test]
async fn a_batch_written_twice_for_no_reason_is_caught() {
    let sandbox = Sandbox::start(
        faulty(Faults::default(), 1),
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        false,
    )
    .unwrap();
    let (dir, _) = state_dir(ENTRIES);
    let mut config = sandbox_config(&sandbox, dir.path());
    let (log, buffer) = capture_log();
    let (run, this_run) = Run::once("1", &sandbox, &mut config, &log, &buffer).await;
    assert_eq!(run.synced.len(), 2, "{this_run}");
    let runs = [run];
    assert_eq!(check_writes(&runs, &sandbox), Ok(()));
    let batch: Vec<Value> = sandbox.world().ometria_contacts().into_iter().take(100).collect();
    let answer = awc::Client::default()
        .post(format!("{}/_run/1/v2/push", sandbox.ometria_url()))
        .insert_header(("X-Ometria-Auth", DEFAULT_OMETRIA_KEY))
        .send_json(&batch)
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let unexplained = check_writes(&runs, &sandbox).unwrap_err();
    assert!(
        unexplained.starts_with("run 1 wrote 1300 records (and hung 0) for the 1200 members"),
        "{unexplained}"
    );
    sandbox.stop().await;
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
