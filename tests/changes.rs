//! Lists that change while they are read (SPEC §4): members changed,
//! archived, unarchived, unsubscribed, deleted and added during a LOAD and
//! during a SYNC, across seeds. After the next sync, Ometria must hold
//! exactly what Mailchimp holds.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ometria_importer::config::Config;
use ometria_importer::importer::{run, Signals};
use ometria_importer::sandbox::audience::Mutation;
use ometria_importer::sandbox::{Behaviour, Sandbox, SandboxConfig, DEFAULT_OMETRIA_KEY};
use ometria_importer::RunMode;
use support::{capture_log, read_json, sandbox_config, state_dir, wait_until};

/// Runs `once` until a sync ran (the cursor must be a second old before a
/// SYNC is due); returns whether it succeeded.
async fn next_sync(config: &Config, log: &slog::Logger) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let summary = run(config, RunMode::Once, Signals::Ignore, log.clone()).await.unwrap();
        if summary.succeeded + summary.failed > 0 {
            return summary.failed == 0;
        }
        assert!(Instant::now() < deadline, "no sync became due");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Returns once the clock's second is past the current one. A sync reads
/// members changed before the second it started in (`before_last_changed`
/// = T0); a member changed in that very second waits for the sync after.
async fn second_turned() {
    let now = chrono::Utc::now().timestamp();
    wait_until(Duration::from_secs(3), "the next second", || {
        chrono::Utc::now().timestamp() > now
    })
    .await;
}

#[actix_rt::test]
async fn ometria_equals_mailchimp_after_syncs_that_ran_while_members_changed() {
    let mut fell_back = 0;
    for seed in 1..=5u64 {
        let config = SandboxConfig {
            seed,
            lists: vec![("busy".into(), 2500)],
            mailchimp: Behaviour {
                latency: Duration::from_millis(3),
                jitter: Duration::from_millis(3),
                ..Behaviour::default()
            },
            mutations_per_second: 300.0,
            ..SandboxConfig::default()
        };
        let mut sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
        let (dir, file) = state_dir(r#"[{"list_id": "busy", "items_per_request": 40, "worker_count": 4}]"#);
        let mut config = sandbox_config(&sandbox, dir.path());
        config.refresh = Duration::from_secs(1);
        let (log, buffer) = capture_log();

        assert!(
            next_sync(&config, &log).await,
            "seed {seed}: the LOAD failed\n{}",
            buffer.contents()
        );
        let after_load = read_json(&file)[0]["latest_timestamp"].clone();
        assert!(
            next_sync(&config, &log).await,
            "seed {seed}: the SYNC failed\n{}",
            buffer.contents()
        );
        assert_ne!(read_json(&file)[0]["latest_timestamp"], after_load);
        assert!(buffer.contents().contains("requires \"SYNC\""));

        sandbox.stop_mutations();
        second_turned().await;
        assert!(next_sync(&config, &log).await, "seed {seed}: the last SYNC failed");
        let verification = sandbox.world().verify(&[], None);
        assert!(verification.ok, "seed {seed}: {verification:?}");
        let stats = sandbox.world().stats();
        // How many changes land during the syncs depends on how fast the
        // machine reads: a handful suffice to move members under the
        // readers, and the keyset fallback asserted below shows they did.
        assert!(
            stats.mutations > 20,
            "seed {seed}: too calm to prove anything ({} changes)",
            stats.mutations
        );
        let keyset = buffer.contents().contains("one page at a time, by last_changed");
        fell_back += usize::from(keyset);
        eprintln!(
            "seed {seed}: {} changes during the syncs, keyset fallback: {keyset}, {} members match, 0 lost",
            stats.mutations, verification.lists[0].matching
        );
        sandbox.stop().await;
    }
    assert!(fell_back > 0, "no seed exercised the keyset fallback");
}

/// One LOAD of the sandbox's single list through `entry` (a state file
/// entry); asserts that it succeeded, moved the cursor and left Ometria
/// equal to Mailchimp. Returns the log and how many members match.
async fn load_shuffled(seed: u64, config: SandboxConfig, entry: &str) -> (String, usize) {
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, file) = state_dir(&format!("[{entry}]"));
    let config = sandbox_config(&sandbox, dir.path());
    let (log, buffer) = capture_log();
    assert!(next_sync(&config, &log).await, "seed {seed}: {}", buffer.contents());
    assert!(read_json(&file)[0]["latest_timestamp"].is_string());
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "seed {seed}: {verification:?}");
    sandbox.stop().await;
    (buffer.contents(), verification.lists[0].matching)
}

/// Ties in `last_changed` returned in a new order on every request (SQL
/// promises no order among them): pages of 7 cut through many runs of
/// ties, and still no member is missed.
#[actix_rt::test]
async fn ties_returned_in_a_new_order_on_every_request_lose_no_member() {
    for seed in 1..=3u64 {
        let config = SandboxConfig {
            seed,
            lists: vec![("ties".into(), 1500)],
            shuffle_ties: true,
            ..SandboxConfig::default()
        };
        let entry = r#"{"list_id": "ties", "items_per_request": 7, "worker_count": 4}"#;
        let (log, _) = load_shuffled(seed, config, entry).await;
        assert!(
            log.contains("in a different order from one page to the next"),
            "seed {seed}: the reordering went unnoticed"
        );
    }
}

/// A bulk import: 2,600 members changed in one second, more than the
/// largest page, in a new order on every request. The run is read with a
/// query of its own until every member was seen, and the sync completes.
#[actix_rt::test]
async fn a_run_of_ties_longer_than_the_largest_page_in_a_new_order_loses_no_member() {
    for seed in 1..=2u64 {
        let config = SandboxConfig {
            seed,
            lists: vec![("bulk".into(), 2600)],
            shuffle_ties: true,
            same_second: true,
            ..SandboxConfig::default()
        };
        let entry = r#"{"list_id": "bulk", "items_per_request": 500, "worker_count": 4}"#;
        let (log, matching) = load_shuffled(seed, config, entry).await;
        assert_eq!(matching, 2600);
        assert!(log.contains("one page at a time"), "seed {seed}: no keyset sweep");
    }
}

/// Members archived mid-sync with their `last_changed` kept (an API that
/// does not count archiving as a change) move from the members' window to
/// the archived pass's after that pass was read: it is read again, and
/// Ometria gets them as archived.
#[actix_rt::test]
async fn members_archived_quietly_mid_sync_arrive_as_archived() {
    // 300 members, 39 of them archived: one page of 50.
    let config = SandboxConfig {
        lists: vec![("quiet".into(), 300)],
        mailchimp: Behaviour {
            latency: Duration::from_millis(300),
            ..Behaviour::default()
        },
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, _) = state_dir(r#"[{"list_id": "quiet", "items_per_request": 50, "worker_count": 3}]"#);
    let config = sandbox_config(&sandbox, dir.path());
    let (log, buffer) = capture_log();
    let run = actix_rt::spawn({
        let log = log.clone();
        async move { next_sync(&config, &log).await }
    });
    // Three Fetchers ask for two pages of members and the only page of
    // archived members; each asks for another page once it has its
    // answer, so a sixth request means all three were answered.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sandbox.world().stats().mailchimp_requests < 6 {
        assert!(Instant::now() < deadline, "the sync did not start");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
    let quiet = sandbox.world().mutate("quiet", Mutation::QuietArchive, 5);
    assert_eq!(quiet.len(), 5);
    assert!(run.await.unwrap(), "{}", buffer.contents());
    let log = buffer.contents();
    assert!(log.contains("changed while its members were read"), "{log}");
    let verification = sandbox.world().verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    sandbox.stop().await;
}

/// A stale write that reaches Ometria unseen by the importer (not one of
/// its pushes whose answer was lost: those are pushed again, see
/// tests/ledger.rs) — after the next sync pushed a newer version of the
/// same members. The ledger holds the newer version as accepted, so the
/// next SYNC, reading its window again from `latest_timestamp` − overlap,
/// finds those members unchanged; `forget` makes it push them again.
#[actix_rt::test]
async fn a_push_applied_after_a_newer_one_is_repaired_by_a_sync_after_forget() {
    let config = SandboxConfig {
        lists: vec![("late".into(), 500)],
        ..SandboxConfig::default()
    };
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false).unwrap();
    let (dir, _) = state_dir(r#"[{"list_id": "late", "items_per_request": 100, "worker_count": 2}]"#);
    let mut config = sandbox_config(&sandbox, dir.path());
    config.refresh = Duration::from_secs(1);
    let (log, buffer) = capture_log();
    assert!(next_sync(&config, &log).await, "the LOAD failed\n{}", buffer.contents());

    // What the LOAD pushed for five members, who then change.
    let world = sandbox.world();
    let changed = world.mutate("late", Mutation::Change, 5);
    let stale: Vec<_> = changed
        .iter()
        .filter_map(|done| world.ometria_contact(done.trim_start_matches("changed ")))
        .map(|(contact, _)| contact)
        .collect();
    assert!(!stale.is_empty(), "{changed:?}");
    second_turned().await;
    assert!(next_sync(&config, &log).await, "the SYNC failed\n{}", buffer.contents());
    assert!(world.verify(&[], None).ok);

    // The LOAD's old push lands now.
    let answer = awc::Client::default()
        .post(format!("{}/v2/push", sandbox.ometria_url()))
        .insert_header(("X-Ometria-Auth", DEFAULT_OMETRIA_KEY))
        .send_json(&stale)
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let verification = world.verify(&[], None);
    assert_eq!(
        verification.lists[0].members - verification.lists[0].matching,
        stale.len()
    );

    second_turned().await;
    assert!(next_sync(&config, &log).await, "the SYNC failed\n{}", buffer.contents());
    let verification = world.verify(&[], None);
    assert_eq!(
        verification.lists[0].members - verification.lists[0].matching,
        stale.len(),
        "the ledger says those members are unchanged"
    );

    let mut ledger = ometria_importer::ledger::LedgerStore::open_existing(dir.path()).unwrap();
    assert_eq!(ledger.forget_list("late").unwrap(), 500);
    second_turned().await;
    assert!(
        next_sync(&config, &log).await,
        "the last SYNC failed\n{}",
        buffer.contents()
    );
    let verification = world.verify(&[], None);
    assert!(verification.ok, "{verification:?}");
    sandbox.stop().await;
}
