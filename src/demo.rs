//! `demo`: the real importer against the sandbox, no keys needed. Starts
//! the fake APIs on 127.0.0.1 with generated lists, runs the controller
//! until every list has synced (its LOAD), checks that Ometria holds
//! exactly what Mailchimp holds, and prints a summary.
//!
//! Then it shows what the ledger is for: it changes a few members of each
//! list, touches a few (only `last_changed` moves) and deletes a few, runs
//! the importer again — a SYNC of each list, then its reconciliation — and
//! prints, from the ledger's run history, what was pushed, left unchanged,
//! skipped and opted out, before checking Ometria again, deleted members
//! included. `--follow` instead keeps changing members after the LOAD and
//! shows each incremental sync and its check; with `--webhooks` the
//! importer also receives the sandbox's Mailchimp webhooks (on 127.0.0.1,
//! a free port, a generated secret), so each change brings its list's
//! SYNC forward, and the demo prints how long changes take to reach
//! Ometria (the sandbox's [`crate::sandbox::latency`]).

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use slog::Logger;

use crate::actors::controller::RunSummary;
use crate::api::ApiKey;
use crate::config::{Config, DemoArgs, WebhookListen};
use crate::importer::{self, Signals};
use crate::ledger::{LedgerStore, RunRow};
use crate::sandbox::audience::Mutation;
use crate::sandbox::webhooks::WebhookSending;
use crate::sandbox::{now_seconds, Behaviour, Sandbox, SandboxConfig};
use crate::state::{parse_timestamp, StateFile, STATE_FILE_NAME};
use crate::sync::RECONCILE_KIND;
use crate::RunMode;

/// How often the demo looks at the state file.
const POLL: Duration = Duration::from_millis(250);
/// Changes per second to the lists in `--follow` mode.
const FOLLOW_MUTATIONS_PER_SECOND: f64 = 3.0;
/// How often `--follow --webhooks` prints the change → Ometria latency.
const LATENCY_REPORT: Duration = Duration::from_secs(10);
/// The second round's `reconcile_seconds`: the LOAD, a full read, started
/// longer ago than this, so each list is due for a reconciliation as soon
/// as its SYNC is done.
const SECOND_ROUND_RECONCILE_SECONDS: u64 = 1;
/// The second round's refresh interval for its SYNCs: every LOAD started
/// longer ago than this, so each list is due for a SYNC at once.
const SECOND_ROUND_REFRESH: Duration = Duration::from_secs(1);
/// The second round's `alert_after_seconds`: by default a list is behind
/// after three refresh intervals, which [`SECOND_ROUND_REFRESH`] would
/// make 3 s.
const SECOND_ROUND_ALERT_AFTER_SECONDS: u64 = 3600;

/// How many members of a list of `members` the second round changes (and
/// as many it touches), and how many it deletes: a few, and deletions
/// well below `IMPORTER_MAX_DELETE_FRACTION`'s default 5 %, so the
/// reconciliation's guard lets them through.
fn second_round_changes(members: usize) -> (usize, usize) {
    ((members / 100).clamp(1, 25), (members / 200).min(10))
}

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
    let base_config = Config::new(
        &sandbox.mailchimp_url(),
        key(&mailchimp_key),
        &sandbox.ometria_url(),
        key(&ometria_key),
        dir.path(),
    );
    let mut importer_config = base_config.clone();
    if args.follow {
        importer_config.refresh = Duration::from_secs(args.every());
        importer_config.tick = Duration::from_secs((args.every() / 3).clamp(1, 5));
    }
    let webhook_url = match args.follow && args.webhooks {
        true => {
            let listen = webhook_listen()?;
            let url = format!(
                "http://{}{}{}",
                listen.addr,
                crate::webhook::receiver::PATH_PREFIX,
                listen.secret.expose()
            );
            importer_config.webhooks = Some(listen);
            Some(url)
        }
        false => None,
    };
    let file = StateFile::in_dir(dir.path());
    let daemon_log = log.clone();
    let daemon =
        actix_rt::spawn(async move { importer::run(&importer_config, RunMode::Go, Signals::Handle, daemon_log).await });

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
        if let Some(url) = &webhook_url {
            sandbox.world().send_webhooks(Some(WebhookSending::to(url)));
        }
        let every = Duration::from_secs(args.every());
        follow(&sandbox, &file, &daemon, every, webhook_url.is_some(), out).await?;
    } else if !daemon.is_finished() {
        std::fs::write(dir.path().join(crate::actors::controller::QUIT_FILE_NAME), "")?;
    }
    let _ = daemon.await;
    let ok = match ok && !args.follow {
        true => second_round(&sandbox, &base_config, &log, out).await?,
        false => ok,
    };
    sandbox.stop().await;
    Ok(ok)
}

/// Where the demo's importer receives webhooks: a free port on 127.0.0.1
/// (asked of the system, then freed for the importer to bind: nothing
/// else on the machine is expected to take it in between) and a secret
/// of 32 random hex digits.
fn webhook_listen() -> io::Result<WebhookListen> {
    let addr = std::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.local_addr()?;
    let secret = format!("{:032x}", fastrand::u128(..))
        .parse()
        .map_err(|e: String| io::Error::other(e))?;
    Ok(WebhookListen { addr, secret })
}

/// The change → Ometria latency line of `--follow --webhooks`.
fn latency_line(sandbox: &Sandbox) -> String {
    let l = sandbox.world().latency();
    let seconds = |s: Option<f64>| s.map_or("-".to_owned(), |s| format!("{s:.1} s"));
    format!(
        "demo: change → Ometria: {} changes arrived, p50 {}, p95 {}, max {}; {} waiting ({} deleted members among them)",
        l.count,
        seconds(l.p50_seconds),
        seconds(l.p95_seconds),
        seconds(l.max_seconds),
        l.pending,
        l.pending_deleted
    )
}

/// What the second round did to one list, and what the importer did
/// about it (from the ledger's run history).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ListRound {
    /// Members whose contact changed (a new first name).
    changed: usize,
    /// Members only touched, not also changed: their contact is the one
    /// Ometria holds.
    touched: usize,
    deleted: usize,
    /// The SYNC's figures.
    read: u64,
    pushed: u64,
    unchanged: u64,
    skipped: u64,
    rejected: u64,
    /// The RECONCILE's members opted out as deleted.
    opted_out: u64,
}

/// The id in a mutation's report (`changed <id>`).
fn mutated_id(report: &str) -> String {
    report.rsplit(' ').next().unwrap_or_default().to_owned()
}

/// The newest run id of the ledger's history in `dir` (0 if none).
fn newest_run(dir: &Path) -> u64 {
    LedgerStore::open_read_only(dir)
        .and_then(|ledger| ledger.history(None, 1))
        .ok()
        .and_then(|rows| rows.first().map(|row| row.id as u64))
        .unwrap_or(0)
}

/// The runs of the history in `dir` after run `after`, oldest first.
fn runs_after(dir: &Path, after: u64) -> io::Result<Vec<RunRow>> {
    let ledger = LedgerStore::open_read_only(dir).map_err(io::Error::other)?;
    let mut rows = ledger.history(None, u32::MAX).map_err(io::Error::other)?;
    rows.retain(|row| row.id as u64 > after);
    rows.reverse();
    Ok(rows)
}

/// One `once` run of the importer with `config`; its summary, or `None`
/// (said on `out`) if it could not run.
async fn run_once(config: &Config, log: &Logger, what: &str, out: &mut dyn Write) -> io::Result<Option<RunSummary>> {
    match importer::run(config, RunMode::Once, Signals::Handle, log.clone()).await {
        Ok(summary) => Ok(Some(summary)),
        Err(e) => {
            writeln!(out, "demo: the {what} run failed: {e}")?;
            Ok(None)
        }
    }
}

/// The second round, after every list's LOAD: changes, touches and deletes
/// a few members of each list, runs the importer once for the SYNCs and
/// once for the reconciliations, prints what they did per list and in
/// total, and checks Ometria, deleted members included. `Ok(true)` when
/// every run succeeded, every deleted member was opted out and Ometria
/// matches.
async fn second_round(sandbox: &Sandbox, base: &Config, log: &Logger, out: &mut dyn Write) -> io::Result<bool> {
    let dir = base.state_dir.as_path();
    let world = sandbox.world();
    let mut rounds: Vec<(String, ListRound)> = vec![];
    // Deleted first, so that no change or touch picks a deleted member.
    for (list_id, members) in &world.config.lists {
        let (changes, deletions) = second_round_changes(*members);
        let deleted = world.mutate(list_id, Mutation::Delete, deletions).len();
        let changed: BTreeSet<String> = world
            .mutate(list_id, Mutation::Change, changes)
            .iter()
            .map(|r| mutated_id(r))
            .collect();
        let touched: BTreeSet<String> = world
            .mutate(list_id, Mutation::Touch, changes)
            .iter()
            .map(|r| mutated_id(r))
            .collect();
        let round = ListRound {
            changed: changed.len(),
            touched: touched.difference(&changed).count(),
            deleted,
            ..ListRound::default()
        };
        rounds.push((list_id.clone(), round));
    }
    let mutated_at = now_seconds();
    let (changed, touched, deleted) = rounds.iter().fold((0, 0, 0), |(c, t, d), (_, r)| {
        (c + r.changed, t + r.touched, d + r.deleted)
    });
    writeln!(
        out,
        "\ndemo: then {changed} members changed, {touched} were touched (their last_changed moved, not their \
         contact) and {deleted} were deleted in Mailchimp; syncing each list again, then reconciling it…"
    )?;
    out.flush()?;

    // Each list is due for a reconciliation once it is up to date, and not
    // behind for the SYNC run's short refresh interval.
    let file = StateFile::in_dir(dir);
    let mut state = entries(&file);
    for entry in &mut state {
        entry["reconcile_seconds"] = serde_json::json!(SECOND_ROUND_RECONCILE_SECONDS);
        entry["alert_after_seconds"] = serde_json::json!(SECOND_ROUND_ALERT_AFTER_SECONDS);
    }
    std::fs::write(file.path(), serde_json::to_string_pretty(&state)? + "\n")?;
    // A SYNC reads what changed before its start, in whole seconds: it
    // starts in a second after the one the members changed in.
    while now_seconds() <= mutated_at {
        let into_second = chrono::Utc::now().timestamp_subsec_nanos();
        actix_rt::time::sleep(Duration::from_nanos(u64::from(
            1_000_000_000 - into_second.min(999_999_999),
        )))
        .await;
    }

    let before = newest_run(dir);
    let syncing = Config {
        refresh: SECOND_ROUND_REFRESH,
        ..base.clone()
    };
    let Some(syncs) = run_once(&syncing, log, "SYNC", out).await? else {
        return Ok(false);
    };
    let Some(reconciliations) = run_once(base, log, "reconciliation", out).await? else {
        return Ok(false);
    };
    let index: HashMap<String, usize> = rounds.iter().enumerate().map(|(i, (id, _))| (id.clone(), i)).collect();
    for row in runs_after(dir, before)? {
        let (Some(&i), Some(end)) = (index.get(&row.start.list_id), &row.end) else {
            continue;
        };
        let round = &mut rounds[i].1;
        if row.start.kind == RECONCILE_KIND {
            round.opted_out += end.deleted;
        } else {
            round.read += end.members_read;
            round.pushed += end.pushed;
            round.unchanged += end.unchanged;
            round.skipped += end.skipped;
            round.rejected += end.rejected;
        }
    }

    writeln!(
        out,
        "\n  {:<14} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>9} {:>7} {:>9}",
        "list", "changed", "touched", "deleted", "read", "pushed", "unchanged", "skipped", "opted out"
    )?;
    let mut total = ListRound::default();
    let mut row = |name: &str, r: &ListRound| {
        writeln!(
            out,
            "  {name:<14} {:>7} {:>7} {:>7} | {:>6} {:>6} {:>9} {:>7} {:>9}",
            r.changed, r.touched, r.deleted, r.read, r.pushed, r.unchanged, r.skipped, r.opted_out
        )
    };
    for (list_id, r) in &rounds {
        row(list_id, r)?;
        total.changed += r.changed;
        total.touched += r.touched;
        total.deleted += r.deleted;
        total.read += r.read;
        total.pushed += r.pushed;
        total.unchanged += r.unchanged;
        total.skipped += r.skipped;
        total.rejected += r.rejected;
        total.opted_out += r.opted_out;
    }
    row("total", &total)?;
    writeln!(
        out,
        "\ndemo: the SYNCs read {} records and pushed {} ({} unchanged since Ometria accepted them, {} skipped, \
         {} rejected); the reconciliations opted out {} of the {} deleted members",
        total.read, total.pushed, total.unchanged, total.skipped, total.rejected, total.opted_out, total.deleted
    )?;

    let verification = world.verify_with_deletions(&[], None, Some(mutated_at + 1));
    let members: usize = verification.lists.iter().map(|l| l.members).sum();
    let matching: usize = verification.lists.iter().map(|l| l.matching).sum();
    let gone: usize = verification.lists.iter().map(|l| l.deleted).sum();
    let lists = rounds.len();
    let runs_ok = syncs.all_recorded()
        && syncs.succeeded == lists
        && reconciliations.all_recorded()
        && reconciliations.reconciled == lists;
    let ok = runs_ok && verification.ok && total.opted_out == total.deleted as u64;
    writeln!(
        out,
        "demo: {matching} of {members} right in Ometria — the {} Mailchimp members (archived included) exactly, \
         the {gone} deleted ones opted out: {}",
        members - gone,
        if verification.ok { "verified" } else { "MISMATCH" }
    )?;
    for list in verification.lists.iter().filter(|l| l.matching != l.members) {
        writeln!(
            out,
            "demo: {}: {} missing (e.g. {:?}), {} different (e.g. {:?})",
            list.list_id,
            list.missing_count,
            list.missing,
            list.mismatched_count,
            list.mismatched.iter().map(|m| &m.id).collect::<Vec<_>>()
        )?;
    }
    if !runs_ok {
        writeln!(
            out,
            "demo: of {lists} lists, {} synced and {} were reconciled ({} SYNCs and {} reconciliations failed)",
            syncs.succeeded,
            reconciliations.reconciled,
            syncs.failed + syncs.abandoned,
            reconciliations.reconcile_failed
        )?;
    }
    out.flush()?;
    Ok(ok)
}

/// Changes members all the time and reports each sync with a check of
/// everything changed before its start, until the importer is stopped;
/// with `webhooks`, also the change → Ometria latency every
/// [`LATENCY_REPORT`].
async fn follow(
    sandbox: &Sandbox,
    file: &StateFile,
    daemon: &actix_rt::task::JoinHandle<Result<crate::RunSummary, crate::importer::RunError>>,
    every: Duration,
    webhooks: bool,
    out: &mut dyn Write,
) -> io::Result<()> {
    if webhooks {
        writeln!(
            out,
            "\ndemo: following; members change {FOLLOW_MUTATIONS_PER_SECOND} times a second, the fake Mailchimp posts a \
             webhook for each to the importer, which syncs the list a few seconds later; polling re-syncs every {} s \
             (Ctrl+C stops)",
            every.as_secs()
        )?;
    } else {
        writeln!(
            out,
            "\ndemo: following; members change {FOLLOW_MUTATIONS_PER_SECOND} times a second and lists re-sync every {} s (Ctrl+C stops)",
            every.as_secs()
        )?;
    }
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
    let mut reported = std::time::Instant::now();
    while !daemon.is_finished() {
        actix_rt::time::sleep(POLL).await;
        if webhooks && reported.elapsed() >= LATENCY_REPORT {
            reported = std::time::Instant::now();
            writeln!(out, "{}", latency_line(sandbox))?;
            out.flush()?;
        }
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
    if webhooks {
        writeln!(out, "{}", latency_line(sandbox))?;
    }
    Ok(())
}
