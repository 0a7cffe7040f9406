//! `demo`: the real importer against the sandbox, no keys needed. Starts
//! the fake APIs on 127.0.0.1 with generated lists, runs the controller
//! until every list has synced, checks that Ometria holds exactly what
//! Mailchimp holds, and prints a summary. `--follow` then keeps changing
//! members and shows each incremental sync and its check.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde_json::Value;
use slog::Logger;

use crate::api::ApiKey;
use crate::config::{Config, DemoArgs};
use crate::importer::{self, Signals};
use crate::sandbox::{Behaviour, Sandbox, SandboxConfig};
use crate::state::{parse_timestamp, StateFile, STATE_FILE_NAME};
use crate::RunMode;

/// How often the demo looks at the state file.
const POLL: Duration = Duration::from_millis(250);
/// Changes per second to the lists in `--follow` mode.
const FOLLOW_MUTATIONS_PER_SECOND: f64 = 3.0;

/// The lists: the first has `members`, the others fewer.
fn demo_lists(args: &DemoArgs) -> Vec<(String, usize)> {
    let n = args.lists as usize;
    (0..n)
        .map(|i| {
            (
                format!("demo-list-{}", i + 1),
                (args.members as usize * (n - i)).div_ceil(n),
            )
        })
        .collect()
}

/// Realistic conditions: Mailchimp's 10 connections and ~60 ms answers,
/// Ometria's 8 requests per second.
fn sandbox_config(args: &DemoArgs) -> SandboxConfig {
    let ms = Duration::from_millis;
    SandboxConfig {
        seed: args.seed,
        lists: demo_lists(args),
        mailchimp: Behaviour {
            latency: ms(60),
            jitter: ms(30),
            ..Behaviour::default()
        },
        mailchimp_max_connections: 10,
        ometria: Behaviour {
            latency: ms(40),
            jitter: ms(20),
            ..Behaviour::default()
        },
        ometria_requests_per_second: Some(8.0),
        workers: 2,
        ..SandboxConfig::default()
    }
}

/// Entries of the state file, as read now.
fn entries(file: &StateFile) -> Vec<Value> {
    std::fs::read_to_string(file.path())
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<Value>>(&text).ok())
        .unwrap_or_default()
}

fn synced(entry: &Value) -> bool {
    entry.get("latest_timestamp").is_some_and(Value::is_string)
}

/// Runs the demo; `Ok(true)` when every list synced and Ometria matches.
pub async fn run(args: &DemoArgs, log: Logger, out: &mut dyn Write) -> io::Result<bool> {
    let config = sandbox_config(args);
    let total: usize = config.lists.iter().map(|(_, n)| n).sum();
    let (mailchimp_key, ometria_key) = (config.mailchimp_key.clone(), config.ometria_key.clone());
    let lists: Vec<String> = config.lists.iter().map(|(id, _)| id.clone()).collect();
    let sandbox = Sandbox::start(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), false)?;
    let dir = tempfile::Builder::new().prefix("ometria-demo-").tempdir()?;
    let state: Vec<Value> = lists.iter().map(|id| serde_json::json!({"list_id": id})).collect();
    std::fs::write(
        dir.path().join(STATE_FILE_NAME),
        serde_json::to_string_pretty(&state)? + "\n",
    )?;
    writeln!(
        out,
        "demo: fake Mailchimp at {} (10 connections, ~60 ms) and Ometria at {} (8 requests/s)",
        sandbox.mailchimp_url(),
        sandbox.ometria_url()
    )?;
    writeln!(
        out,
        "demo: {} lists, {total} generated members; state file {}",
        lists.len(),
        dir.path().join(STATE_FILE_NAME).display()
    )?;
    writeln!(
        out,
        "demo: at 100 records per push and 8 pushes/s this takes about {} s…",
        total / 800 + 2
    )?;
    out.flush()?;

    let key = |k: &str| k.parse::<ApiKey>().expect("sandbox keys are not empty");
    let mut importer_config = Config::new(
        &sandbox.mailchimp_url(),
        key(&mailchimp_key),
        &sandbox.ometria_url(),
        key(&ometria_key),
        dir.path(),
    );
    if args.follow {
        importer_config.refresh = Duration::from_secs(args.every_seconds);
        importer_config.tick = Duration::from_secs((args.every_seconds / 3).clamp(1, 5));
    }
    let file = StateFile::in_dir(dir.path());
    let daemon =
        actix_rt::spawn(async move { importer::run(&importer_config, RunMode::Go, Signals::Handle, log).await });

    // Each list's LOAD as its entry first shows it: with --follow, a list
    // that loaded early may have synced again before the last one loads.
    let mut loads: Vec<Option<(u64, f64)>> = vec![];
    loop {
        let now = entries(&file);
        loads.resize(now.len(), None);
        for (load, entry) in loads.iter_mut().zip(&now) {
            if load.is_none() && synced(entry) {
                let records = entry["total_updates"].as_u64().unwrap_or(0);
                *load = Some((records, entry["elapsed_seconds"].as_f64().unwrap_or(0.0)));
            }
        }
        if daemon.is_finished() || now.iter().all(synced) {
            break;
        }
        actix_rt::time::sleep(POLL).await;
    }
    let loaded = entries(&file);
    let all_synced = !loaded.is_empty() && loaded.iter().all(synced);
    let verification = sandbox.world().verify(&[], None);
    writeln!(
        out,
        "\n  {:<14} {:>9} {:>9} {:>10}",
        "list", "records", "seconds", "records/s"
    )?;
    for (entry, load) in loaded.iter().zip(&loads) {
        let (records, seconds) = load.unwrap_or((0, 0.0));
        let rate = if seconds > 0.0 { records as f64 / seconds } else { 0.0 };
        writeln!(
            out,
            "  {:<14} {records:>9} {seconds:>9.1} {rate:>10.0}",
            entry["list_id"].as_str().unwrap_or("?")
        )?;
    }
    let members: usize = verification.lists.iter().map(|l| l.members).sum();
    let matching: usize = verification.lists.iter().map(|l| l.matching).sum();
    let ok = all_synced && verification.ok;
    writeln!(
        out,
        "\ndemo: {matching} of {members} Mailchimp members (archived included) are in Ometria exactly: {}",
        if verification.ok { "verified" } else { "MISMATCH" }
    )?;
    for list in verification.lists.iter().filter(|l| l.matching != l.members) {
        writeln!(
            out,
            "demo: {}: {} missing (e.g. {:?}), {} different",
            list.list_id, list.missing_count, list.missing, list.mismatched_count
        )?;
    }
    out.flush()?;

    if args.follow && ok {
        follow(&sandbox, &file, &daemon, Duration::from_secs(args.every_seconds), out).await?;
    } else if !daemon.is_finished() {
        std::fs::write(dir.path().join(crate::actors::controller::QUIT_FILE_NAME), "")?;
    }
    let _ = daemon.await;
    sandbox.stop().await;
    Ok(ok)
}

/// Changes members all the time and reports each sync with a check of
/// everything changed before its start, until the importer is stopped.
async fn follow(
    sandbox: &Sandbox,
    file: &StateFile,
    daemon: &actix_rt::task::JoinHandle<Result<crate::RunSummary, crate::importer::RunError>>,
    every: Duration,
    out: &mut dyn Write,
) -> io::Result<()> {
    writeln!(
        out,
        "\ndemo: following; members change {FOLLOW_MUTATIONS_PER_SECOND} times a second and lists re-sync every {} s (Ctrl+C stops)",
        every.as_secs()
    )?;
    out.flush()?;
    let world = sandbox.world().clone();
    let mutator = actix_rt::spawn(async move {
        let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / FOLLOW_MUTATIONS_PER_SECOND));
        loop {
            tick.tick().await;
            world.mutate_randomly();
        }
    });
    let mut seen: Vec<Value> = entries(file);
    while !daemon.is_finished() {
        actix_rt::time::sleep(POLL).await;
        let now = entries(file);
        for entry in now.iter().filter(|e| !seen.contains(e)) {
            let list_id = entry["list_id"].as_str().unwrap_or_default().to_owned();
            let t0 = entry["latest_timestamp"].as_str().and_then(parse_timestamp);
            let check = sandbox
                .world()
                .verify(std::slice::from_ref(&list_id), t0.map(|t| t.timestamp()));
            let list = check.lists.first();
            writeln!(
                out,
                "demo: {list_id}: SYNC of {} records in {} s; members changed before {}: {} of {} match{}",
                entry["total_updates"],
                entry["elapsed_seconds"],
                entry["latest_timestamp"].as_str().unwrap_or("?"),
                list.map_or(0, |l| l.matching),
                list.map_or(0, |l| l.members),
                if check.ok { "" } else { " — MISMATCH" }
            )?;
            out.flush()?;
        }
        if !now.is_empty() {
            seen = now;
        }
    }
    mutator.abort();
    Ok(())
}
