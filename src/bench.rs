//! `bench`: the benchmark scenarios of BENCHMARKS.md. Each runs this binary
//! twice — `sandbox` in one process, `once` (or `go`) in another — so the
//! importer's own CPU time and peak memory are measured apart (`wait4(2)`),
//! and compares the wall time with the floor the configured limits allow.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::sandbox::audience::Mutation;
use crate::sandbox::{DEFAULT_MAILCHIMP_KEY, DEFAULT_OMETRIA_KEY};
use crate::telemetry::health::http_get;

/// The best wall time a run's limits allow.
#[derive(Clone, Copy, Debug)]
enum Floor {
    /// Every page takes `latency`, `parallel` at a time.
    Pages {
        latency: Duration,
        parallel: f64,
    },
    /// Ometria takes `per_second` records a second.
    Records {
        per_second: f64,
    },
    None,
}

struct Scenario {
    name: &'static str,
    /// `--lists` for the sandbox.
    lists: &'static str,
    sandbox: &'static [&'static str],
    importer: &'static [(&'static str, &'static str)],
    floor: Floor,
    /// The daemon (`go`, stopped once every entry has its cursor) rather
    /// than `once`.
    daemon: bool,
    /// Scenario 12: the daemon's end is told from its log rather than by
    /// reading the state file over and over (megabytes at 50,000 lists),
    /// and its writes of `state.json` are read from `/metrics` once every
    /// entry has its cursor.
    count_writes: bool,
    /// Run `once` a first time, then set every `latest_timestamp` to null
    /// and measure the second run: a re-LOAD of lists that did not change,
    /// which the member ledger answers without pushing.
    reload: bool,
    /// Run `once` a first time (a LOAD), then make a reconciliation due
    /// (`reconcile_seconds` 1, a second later) and measure the second run:
    /// the reconciliation of lists the LOAD left unchanged.
    reconcile: bool,
    /// Changes to the list per second while the run measured reads it (0 =
    /// none); then, the changes stopped, one more `once` (a SYNC) must
    /// bring Ometria level with Mailchimp. Scenarios with changes have one
    /// list.
    mutations_per_second: f64,
    /// Keys of a mapping (issue 17) every entry gets, as JSON; the run is
    /// verified field by field by the sandbox's oracle.
    mapping: Option<&'static str>,
    /// Scenario 11: the list LOADed by `once`, then `go` runs while
    /// [`LATENCY_CHANGES`] changes are made, and the run measured is how
    /// long each takes to reach Ometria ([`measure_latency`]).
    latency: Option<LatencyMode>,
}

/// How the daemon of scenario 11 learns of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LatencyMode {
    /// The sandbox's Mailchimp posts a webhook for each change to the
    /// daemon's receiver (`IMPORTER_WEBHOOK_ADDR`, debounce 5 s by
    /// default); polling at the default hour, so it plays no part.
    Webhooks,
    /// No webhooks; a SYNC every `refresh_seconds` (ticks every second).
    Polling { refresh_seconds: u64 },
}

/// Scenario 11's changes, made at [`LATENCY_CHANGES_PER_SECOND`].
const LATENCY_CHANGES: usize = 300;
const LATENCY_CHANGES_PER_SECOND: f64 = 2.0;
/// Scenario 11's polling interval, the short one measured; the default
/// hour's figures are derived from it.
const LATENCY_POLLING_SECONDS: u64 = 30;
/// The kinds of scenario 11's changes, taken in turn: every kind a member
/// change can be that the sandbox announces by webhook and a SYNC reads.
/// With webhooks, [`Mutation::Delete`] joins them (see [`latency_mix`]).
const LATENCY_MIX: &[Mutation] = &[
    Mutation::Change,
    Mutation::Change,
    Mutation::Change,
    Mutation::Unsubscribe,
    Mutation::Subscribe,
    Mutation::Archive,
    Mutation::Unarchive,
    Mutation::Add,
];

/// Scenario 10's mapping: the issue's example and more, over every kind of
/// generated merge field.
const BENCH_MAPPING: &str = r#"{"collection": "mailchimp", "force_optin": true, "fields": {
    "phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country",
    "date_of_birth": "merge_fields.JOINED", "timezone": "location.timezone",
    "properties.birthday": "merge_fields.BIRTHDAY", "properties.tags": "tags",
    "properties.loyalty": "merge_fields.LOYALTY", "properties.address": "merge_fields.ADDRESS",
    "properties.consent": "marketing_permissions", "properties.plan": "merge_fields.PLAN"}}"#;

/// The scenarios `bench` runs when none is named: scenario 12 (many lists,
/// up to 50,000, several minutes) only when asked for.
pub const DEFAULT_SCENARIOS: std::ops::RangeInclusive<u8> = 1..=11;

/// Every scenario runs the importer with the defaults of a state entry.
const ITEMS_PER_REQUEST: u64 = 100;
const WORKER_COUNT: u64 = 8;

/// No latency and no limits, on either side.
fn unlimited(name: &'static str, lists: &'static str) -> Scenario {
    Scenario {
        name,
        lists,
        sandbox: FAST_SANDBOX,
        importer: NO_LIMITS,
        floor: Floor::None,
        daemon: false,
        count_writes: false,
        reload: false,
        reconcile: false,
        mutations_per_second: 0.0,
        mapping: None,
        latency: None,
    }
}

const NO_LIMITS: &[(&str, &str)] = &[
    ("OMETRIA_MAX_REQUESTS_PER_SECOND", "0"),
    ("MAILCHIMP_MAX_CONNECTIONS", "1000"),
];
const FAST_SANDBOX: &[&str] = &["--connection-cap", "0", "--ometria-rate", "0"];

fn scenarios(number: u8) -> Vec<Scenario> {
    let ms = Duration::from_millis;
    match number {
        1 => vec![Scenario {
            name: "1 read-bound",
            lists: "read-bound:200000",
            sandbox: &[
                "--mailchimp-latency-ms",
                "50",
                "--connection-cap",
                "10",
                "--ometria-rate",
                "0",
            ],
            importer: &[("OMETRIA_MAX_REQUESTS_PER_SECOND", "0")],
            floor: Floor::Pages {
                latency: ms(50),
                parallel: 8.0,
            },
            daemon: false,
            count_writes: false,
            reload: false,
            reconcile: false,
            mutations_per_second: 0.0,
            mapping: None,
            latency: None,
        }],
        2 => vec![Scenario {
            name: "2 rate-bound",
            lists: "rate-a:10000,rate-b:10000",
            sandbox: &[
                "--mailchimp-latency-ms",
                "20",
                "--connection-cap",
                "10",
                "--ometria-rate",
                "8",
            ],
            importer: &[
                ("OMETRIA_MAX_REQUESTS_PER_SECOND", "8"),
                ("MAILCHIMP_MAX_CONNECTIONS", "10"),
            ],
            floor: Floor::Records { per_second: 800.0 },
            daemon: false,
            count_writes: false,
            reload: false,
            reconcile: false,
            mutations_per_second: 0.0,
            mapping: None,
            latency: None,
        }],
        3 => vec![unlimited("3 cpu", "cpu:200000")],
        4 => vec![
            unlimited("4 memory 100k", "memory:100000"),
            unlimited("4 memory 1M", "memory:1000000"),
        ],
        7 => vec![Scenario {
            name: "7 unchanged reload",
            lists: "reload:200000",
            reload: true,
            reconcile: false,
            ..scenarios(1).pop().expect("scenario 1")
        }],
        6 => vec![Scenario {
            daemon: true,
            ..unlimited("6 5000 lists go", "5000x100")
        }],
        9 => vec![Scenario {
            reconcile: true,
            ..unlimited("9 reconcile 1M", "reconcile:1000000")
        }],
        10 => vec![Scenario {
            mapping: Some(BENCH_MAPPING),
            ..unlimited("10 cpu mapped", "mapped:200000")
        }],
        11 => {
            // Scenario 2's limits, Ometria's rate included; a 5,000-member
            // list LOADs in about 7 s.
            let latency = |name, mode| Scenario {
                name,
                lists: "latency:5000",
                floor: Floor::None,
                latency: Some(mode),
                ..scenarios(2).pop().expect("scenario 2")
            };
            vec![
                latency("11 latency webhooks", LatencyMode::Webhooks),
                latency(
                    "11 latency polling",
                    LatencyMode::Polling {
                        refresh_seconds: LATENCY_POLLING_SECONDS,
                    },
                ),
            ]
        }
        12 => {
            // Answers that take time (20 ms ± 10 on both APIs), so that
            // syncs end one by one; 16 lists at once and no connection
            // cap, so that 50,000 lists take minutes rather than an hour.
            let many = |name, lists| Scenario {
                name,
                lists,
                sandbox: &[
                    "--mailchimp-latency-ms",
                    "20",
                    "--mailchimp-jitter-ms",
                    "10",
                    "--ometria-latency-ms",
                    "20",
                    "--ometria-jitter-ms",
                    "10",
                    "--connection-cap",
                    "0",
                    "--ometria-rate",
                    "0",
                ],
                importer: &[
                    ("OMETRIA_MAX_REQUESTS_PER_SECOND", "0"),
                    ("MAILCHIMP_MAX_CONNECTIONS", "100"),
                    ("IMPORTER_MAX_CONCURRENT_LISTS", "16"),
                ],
                daemon: true,
                count_writes: true,
                ..unlimited(name, lists)
            };
            vec![
                many("12 1,000 lists", "1000x10-100"),
                many("12 10,000 lists", "10000x10-100"),
                many("12 50,000 lists", "50000x10-100"),
            ]
        }
        8 => vec![Scenario {
            name: "8 mutations",
            lists: "mutating:20000",
            // Scenario 2's limits: a LOAD as long as Ometria's rate makes
            // it, about 25 s, so that 2,000 changes land while it reads.
            importer: &[
                ("OMETRIA_MAX_REQUESTS_PER_SECOND", "8"),
                ("MAILCHIMP_MAX_CONNECTIONS", "10"),
                // The SYNC after the LOAD is due at once.
                ("IMPORTER_REFRESH_SECONDS", "1"),
            ],
            floor: Floor::None,
            mutations_per_second: 80.0,
            ..scenarios(2).pop().expect("scenario 2")
        }],
        _ => vec![Scenario {
            name: "5 many lists",
            lists: "500x1000",
            sandbox: &[
                "--mailchimp-latency-ms",
                "20",
                "--connection-cap",
                "10",
                "--ometria-rate",
                "0",
            ],
            importer: &[
                ("OMETRIA_MAX_REQUESTS_PER_SECOND", "0"),
                ("MAILCHIMP_MAX_CONNECTIONS", "10"),
            ],
            // min(10 connections, 4 lists × 8 workers)
            floor: Floor::Pages {
                latency: ms(20),
                parallel: 10.0,
            },
            daemon: false,
            count_writes: false,
            reload: false,
            reconcile: false,
            mutations_per_second: 0.0,
            mapping: None,
            latency: None,
        }],
    }
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    /// Members the importer read (every member of the sandbox's lists).
    records: u64,
    /// Records it pushed (the state file's `total_updates`): all of them,
    /// but for a re-LOAD the ledger answers.
    pushed: u64,
    pages: u64,
    wall: Duration,
    cpu: Duration,
    peak_rss_kib: u64,
    floor: Option<Duration>,
    /// Mailchimp requests in flight on average, as the sandbox saw them.
    in_flight: f64,
    /// `ledger.sqlite3` and its `-wal` after the run, bytes.
    ledger_bytes: u64,
    /// For a scenario with changes, what they cost in pushes.
    changes: Option<Changes>,
    /// For scenario 11, how long the changes took to reach Ometria.
    latency: Option<LatencyFigures>,
    /// For scenario 12, the lists and the writes of `state.json` until
    /// every entry had its cursor.
    lists: Option<ListFigures>,
    verified: bool,
}

/// Scenario 12's figures beside the row: what one list costs.
#[derive(Debug)]
struct ListFigures {
    lists: u64,
    /// `state_file_writes_total` once every entry had its cursor.
    state_writes: u64,
}

impl ListFigures {
    /// The line printed under the run's row.
    fn describe(&self, f: &Figures) -> String {
        let lists = self.lists.max(1) as f64;
        format!(
            "{} lists: CPU per list {:.2} ms, peak RSS {:.1} MiB, {} writes of state.json in {:.1} s ({:.2} a second, one per {:.0} lists)",
            self.lists,
            f.cpu.as_secs_f64() * 1e3 / lists,
            f.peak_rss_kib as f64 / 1024.0,
            self.state_writes,
            f.wall.as_secs_f64(),
            self.state_writes as f64 / f.wall.as_secs_f64(),
            lists / self.state_writes.max(1) as f64
        )
    }
}

/// Change → Ometria latencies of one run of scenario 11, as the sandbox
/// measured them (`/_sandbox/latency`), in seconds.
#[derive(Debug)]
struct LatencyFigures {
    mode: LatencyMode,
    /// Changes timed (a member changed again before Ometria showed its
    /// first change is timed once, from the first).
    count: u64,
    p50: f64,
    p95: f64,
    max: f64,
    /// The daemon's SYNCs during the run, their mean duration, and the
    /// mean time from the start of one to the start of the next (from its
    /// log, to the second).
    syncs: usize,
    mean_sync: f64,
    mean_period: Option<f64>,
}

impl LatencyFigures {
    /// What polling every `period` seconds implies when a change waits for
    /// the next SYNC to start (uniformly over the period), then for that
    /// SYNC to push it (`mean_sync`): p50, p95 and max.
    fn polling_model(period: f64, mean_sync: f64) -> (f64, f64, f64) {
        (0.5 * period + mean_sync, 0.95 * period + mean_sync, period + mean_sync)
    }

    /// The line printed under the run's row.
    fn describe(&self) -> String {
        let measured = format!(
            "change → Ometria over {} changes: p50 {:.1} s, p95 {:.1} s, max {:.1} s; {} SYNCs of {:.2} s on average",
            self.count, self.p50, self.p95, self.max, self.syncs, self.mean_sync
        );
        match self.mode {
            LatencyMode::Webhooks => format!("{measured} (target p95 ≤ 10 s)"),
            LatencyMode::Polling { refresh_seconds } => {
                let period = self.mean_period.unwrap_or(refresh_seconds as f64);
                let model = Self::polling_model(period, self.mean_sync);
                // A SYNC starts at the first tick once the refresh interval
                // has passed since the last one started: every 3600 s, or
                // a tick (60 s by default) more when the cursor, written
                // to the second, lands in the second after the tick's.
                let default = Self::polling_model(3600.0, self.mean_sync);
                format!(
                    "{measured}, one every {period:.1} s; the model (the next SYNC uniform over that period, plus a SYNC): \
                     p50 {:.1} s, p95 {:.1} s, max {:.1} s; DERIVED for the default IMPORTER_REFRESH_SECONDS=3600, \
                     not run: p50 {:.0} s, p95 {:.0} s, max {:.0}-{:.0} s",
                    model.0,
                    model.1,
                    model.2,
                    default.0,
                    default.1,
                    default.2,
                    default.2 + 60.0
                )
            }
        }
    }
}

/// The SYNCs a daemon's log (text format) tells of: how many, their mean
/// duration, and the mean time between two starts, in seconds.
fn syncs_in_log(log: &str) -> (usize, f64, Option<f64>) {
    let durations: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split("sync: completed in ").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let starts: Vec<i64> = log
        .lines()
        .filter(|l| l.contains("sync: starting for list"))
        .filter_map(|l| {
            let time = chrono::NaiveDateTime::parse_from_str(l.get(..19)?, "%Y-%m-%d %H:%M:%S").ok()?;
            Some(time.and_utc().timestamp())
        })
        .collect();
    let period = match (starts.first(), starts.last()) {
        (Some(first), Some(last)) if starts.len() > 1 => Some((last - first) as f64 / (starts.len() - 1) as f64),
        _ => None,
    };
    let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    (durations.len(), mean, period)
}

/// Pushes under changes: records Ometria stored (the sandbox's
/// `records_accepted`), during the LOAD measured and during the SYNC
/// after it.
#[derive(Debug)]
struct Changes {
    /// The list's members (archived included) when the LOAD started.
    members: u64,
    /// Changes the sandbox applied while the LOAD ran.
    mutations: u64,
    load_pushed: u64,
    sync_pushed: u64,
}

impl Changes {
    /// Records pushed by the LOAD per member: at most 1.00 if no member is
    /// pushed twice, whatever changes.
    fn load_per_member(&self) -> f64 {
        self.load_pushed as f64 / self.members.max(1) as f64
    }

    /// Records pushed by the LOAD and the SYNC per member: each change can
    /// cost one push more (a member changed after it was pushed, or
    /// added), so up to 1 + mutations ÷ members.
    fn both_per_member(&self) -> f64 {
        (self.load_pushed + self.sync_pushed) as f64 / self.members.max(1) as f64
    }
}

/// Runs the scenarios and prints a table; `Ok(false)` if a run failed or
/// its check found Ometria different from Mailchimp.
pub fn run(numbers: &[u8], repeat: u32, out: &mut dyn Write) -> io::Result<bool> {
    let exe = std::env::current_exe()?;
    let numbers: Vec<u8> = if numbers.is_empty() {
        DEFAULT_SCENARIOS.collect()
    } else {
        numbers.to_vec()
    };
    writeln!(
        out,
        "{:<18} {:>8} {:>8} {:>6} {:>8} {:>8} {:>6} {:>9} {:>10} {:>9} {:>9} {:>8} {:>10}",
        "scenario",
        "records",
        "pushed",
        "pages",
        "wall s",
        "floor s",
        "ratio",
        "in-flight",
        "records/s",
        "cpu s",
        "µs/rec",
        "RSS MiB",
        "ledger MiB"
    )?;
    let mut all_good = true;
    for scenario in numbers.iter().flat_map(|n| scenarios(*n)) {
        let runs: io::Result<Vec<Figures>> = (0..repeat).map(|_| measure(&exe, &scenario)).collect();
        let mut runs = match runs {
            Ok(runs) => runs,
            Err(e) => {
                writeln!(out, "{:<18} failed: {e}", scenario.name)?;
                all_good = false;
                continue;
            }
        };
        runs.sort_by_key(|f| f.wall);
        all_good &= runs.iter().all(|f| f.verified);
        // Pushes per member over every run, lowest to highest.
        let spread = |per_member: fn(&Changes) -> f64| {
            let all: Vec<f64> = runs.iter().filter_map(|f| f.changes.as_ref().map(per_member)).collect();
            let (low, high) = all
                .iter()
                .fold((f64::MAX, f64::MIN), |(l, h), x| (l.min(*x), h.max(*x)));
            format!("{low:.3}-{high:.3} over {} run(s)", all.len())
        };
        let spreads = (spread(Changes::load_per_member), spread(Changes::both_per_member));
        let f = runs.swap_remove(runs.len() / 2);
        let (floor, ratio) = match f.floor {
            Some(floor) => (
                format!("{:.2}", floor.as_secs_f64()),
                format!("{:.2}", floor.as_secs_f64() / f.wall.as_secs_f64()),
            ),
            None => ("-".into(), "-".into()),
        };
        writeln!(
            out,
            "{:<18} {:>8} {:>8} {:>6} {:>8.2} {floor:>8} {ratio:>6} {:>9.1} {:>10.0} {:>9.2} {:>9.2} {:>8.1} {:>10.1}{}",
            scenario.name,
            f.records,
            f.pushed,
            f.pages,
            f.wall.as_secs_f64(),
            f.in_flight,
            f.records as f64 / f.wall.as_secs_f64(),
            f.cpu.as_secs_f64(),
            f.cpu.as_secs_f64() * 1e6 / f.records.max(1) as f64,
            f.peak_rss_kib as f64 / 1024.0,
            f.ledger_bytes as f64 / (1024.0 * 1024.0),
            if f.verified { "" } else { "  NOT VERIFIED" }
        )?;
        if let Some(l) = &f.latency {
            writeln!(out, "{:<18} {}", "", l.describe())?;
        }
        if let Some(l) = &f.lists {
            writeln!(out, "{:<18} {}", "", l.describe(&f))?;
        }
        if let Some(c) = &f.changes {
            writeln!(
                out,
                "{:<18} pushes per member: LOAD {:.3} ({}; target ≤ 1.05), LOAD + SYNC {:.3} ({}); {} + {} records for {} members, {} changes during the LOAD, so at most {:.3}",
                "",
                c.load_per_member(),
                spreads.0,
                c.both_per_member(),
                spreads.1,
                c.load_pushed,
                c.sync_pushed,
                c.members,
                c.mutations,
                1.0 + c.mutations as f64 / c.members.max(1) as f64
            )?;
        }
        out.flush()?;
    }
    Ok(all_good)
}

/// Kills the sandbox however `measure` ends.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ometria-importer sandbox` for `scenario` with `extra` flags;
/// the process (killed when dropped) and the address it serves on.
fn start_sandbox(exe: &Path, scenario: &Scenario, extra: &[String]) -> io::Result<(Reaper, String)> {
    let mut sandbox = Command::new(exe)
        .args(["sandbox", "--port", "0", "--workers", "2", "--lists", scenario.lists])
        .args(scenario.sandbox)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = sandbox.stdout.take().expect("piped");
    let sandbox = Reaper(sandbox);
    let mut lines = BufReader::new(stdout).lines();
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("sandbox: serving on http://").map(str::to_owned))
        .ok_or_else(|| io::Error::other("the sandbox did not start"))?;
    // The rest of what it prints (a line per list) is read too: a sandbox
    // writing to a closed pipe would die.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((sandbox, address))
}

fn measure(exe: &Path, scenario: &Scenario) -> io::Result<Figures> {
    if let Some(mode) = scenario.latency {
        return measure_latency(exe, scenario, mode);
    }
    let (sandbox, address) = start_sandbox(exe, scenario, &[])?;

    let sizes: Vec<Value> = serde_json::from_str(&control(&address, "/_sandbox/lists")?)?;
    let ipr = ITEMS_PER_REQUEST;
    // Requests the contract needs: each pass reads at least one page.
    let pages: u64 = sizes
        .iter()
        .map(|l| {
            let n = |k: &str| l[k].as_u64().unwrap_or(0);
            n("members").div_ceil(ipr).max(1) + n("archived").div_ceil(ipr).max(1)
        })
        .sum();
    let members: u64 = sizes
        .iter()
        .map(|l| l["members"].as_u64().unwrap_or(0) + l["archived"].as_u64().unwrap_or(0))
        .sum();

    let dir = tempfile::Builder::new().prefix("ometria-bench-").tempdir()?;
    let mapping: Value = match scenario.mapping {
        Some(text) => serde_json::from_str(text)?,
        None => serde_json::json!({}),
    };
    let entries: Vec<Value> = sizes
        .iter()
        .map(|l| {
            let mut entry =
                serde_json::json!({"list_id": l["list_id"], "items_per_request": ipr, "worker_count": WORKER_COUNT});
            for (key, value) in mapping.as_object().into_iter().flatten() {
                entry[key] = value.clone();
            }
            entry
        })
        .collect();
    std::fs::write(dir.path().join("state.json"), serde_json::to_vec_pretty(&entries)?)?;
    if scenario.reload || scenario.reconcile {
        // The first LOAD fills the ledger; the run measured is the second.
        let (code, _) = wait_with_usage(importer(exe, &address, dir.path(), scenario, "once")?)?;
        if code != 0 {
            return Err(io::Error::other(format!("the first LOAD exited with {code}")));
        }
        let state: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.path().join("state.json"))?)?;
        let entries: Vec<Value> = state
            .into_iter()
            .map(|mut e| {
                if scenario.reload {
                    e["latest_timestamp"] = Value::Null;
                } else {
                    e["reconcile_seconds"] = Value::from(1);
                }
                e
            })
            .collect();
        std::fs::write(dir.path().join("state.json"), serde_json::to_vec_pretty(&entries)?)?;
        if scenario.reconcile {
            // Due once the LOAD started over a second ago (its whole seconds).
            std::thread::sleep(Duration::from_secs(2));
        }
    }
    let before = sandbox_stats(&address)?;
    let busy_before = before["mailchimp_busy_seconds"].as_f64().unwrap_or(0.0);
    let started = Instant::now();
    let command = if scenario.daemon { "go" } else { "once" };
    let metrics_addr = match scenario.count_writes {
        // A free port on 127.0.0.1, freed for the importer to bind.
        true => Some(format!(
            "127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
        )),
        false => None,
    };
    let mut importer = importer_command(exe, &address, dir.path(), scenario, command)?;
    if let Some(addr) = &metrics_addr {
        importer.env("IMPORTER_METRICS_ADDR", addr);
    }
    let importer = importer.spawn()?;
    let mutator = (scenario.mutations_per_second > 0.0).then(|| {
        let list_id = sizes[0]["list_id"].as_str().unwrap_or_default();
        Mutator::start(&address, list_id, scenario.mutations_per_second)
    });
    let mut wall = None;
    let mut state_writes = None;
    if scenario.daemon {
        // Until every entry has its cursor; then the quit file stops it.
        let deadline = started + Duration::from_secs(600);
        let mut completed = LogCount::new(dir.path().join("importer.log"), "sync: completed in ");
        loop {
            // With many lists, the log says when the file is worth reading.
            let ready = !scenario.count_writes || completed.count()? >= sizes.len() as u64;
            if ready && every_entry_synced(&dir.path().join("state.json")) {
                break;
            }
            if Instant::now() > deadline {
                std::fs::write(dir.path().join("controller.quit"), "")?;
                let _ = wait_with_usage(importer);
                return Err(io::Error::other("not every entry synced within 600 s"));
            }
            let pause = if scenario.count_writes { 200 } else { 50 };
            std::thread::sleep(Duration::from_millis(pause));
        }
        wall = Some(started.elapsed());
        if let Some(addr) = &metrics_addr {
            let metrics = match http_get(addr, "/metrics", Duration::from_secs(60))? {
                (200, body) => body,
                (status, _) => return Err(io::Error::other(format!("/metrics answered {status}"))),
            };
            state_writes = Some(
                metric(&metrics, "ometria_importer_state_file_writes_total")
                    .ok_or_else(|| io::Error::other("no ometria_importer_state_file_writes_total in /metrics"))?,
            );
        }
        std::fs::write(dir.path().join("controller.quit"), "")?;
    }
    let (code, usage) = wait_with_usage(importer)?;
    let wall = wall.unwrap_or_else(|| started.elapsed());
    let mutations_stopped = mutator.map(Mutator::stop).transpose()?;
    if code != 0 {
        return Err(exited(code, dir.path()));
    }
    let after = sandbox_stats(&address)?;
    let busy = after["mailchimp_busy_seconds"].as_f64().unwrap_or(0.0) - busy_before;
    let state_file = dir.path().join("state.json");
    let state: Vec<Value> = serde_json::from_slice(&std::fs::read(&state_file)?)?;
    let pushed = if scenario.reconcile {
        // A reconciliation writes no state: what Ometria took meanwhile.
        let accepted = |stats: &Value| stats["records_accepted"].as_u64().unwrap_or(0);
        accepted(&after) - accepted(&before)
    } else {
        state.iter().map(|e| e["total_updates"].as_u64().unwrap_or(0)).sum()
    };
    let changes = match mutations_stopped {
        Some(stopped_at) => {
            let accepted = |stats: &Value| stats["records_accepted"].as_u64().unwrap_or(0);
            let mutations = |stats: &Value| stats["mutations"].as_u64().unwrap_or(0);
            converge(exe, &address, dir.path(), scenario, stopped_at)?;
            let last = sandbox_stats(&address)?;
            Some(Changes {
                members,
                mutations: mutations(&after) - mutations(&before),
                load_pushed: accepted(&after) - accepted(&before),
                sync_pushed: accepted(&last) - accepted(&after),
            })
        }
        None => None,
    };
    let verification: Value = if scenario.mapping.is_some() {
        let body = serde_json::json!({"entries": entries});
        serde_json::from_str(&control_post_json(&address, "/_sandbox/verify", &body)?)?
    } else {
        serde_json::from_str(&control(&address, "/_sandbox/verify")?)?
    };
    drop(sandbox);
    let ledger_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(dir.path().join(format!("ledger.sqlite3{suffix}"))).ok())
        .map(|m| m.len())
        .sum();
    let floor = match scenario.floor {
        Floor::Pages { latency, parallel } => Some(latency.mul_f64(pages as f64 / parallel)),
        Floor::Records { per_second } => Some(Duration::from_secs_f64(members as f64 / per_second)),
        Floor::None => None,
    };
    Ok(Figures {
        records: members,
        pushed,
        pages,
        wall,
        cpu: usage.0,
        peak_rss_kib: usage.1,
        floor,
        in_flight: busy / wall.as_secs_f64(),
        ledger_bytes,
        changes,
        latency: None,
        lists: state_writes.map(|state_writes| ListFigures {
            lists: sizes.len() as u64,
            state_writes,
        }),
        verified: verification["ok"] == Value::Bool(true),
    })
}

/// The state file of `sizes` (the sandbox's `/_sandbox/lists`), as every
/// scenario without a mapping writes it.
fn plain_entries(sizes: &[Value]) -> Vec<Value> {
    sizes
        .iter()
        .map(|l| serde_json::json!({"list_id": l["list_id"], "items_per_request": ITEMS_PER_REQUEST, "worker_count": WORKER_COUNT}))
        .collect()
}

/// Scenario 11's changes in `mode`: [`LATENCY_MIX`], and with webhooks a
/// deletion every ninth change, opted out at once on its webhook. Polling
/// alone leaves deletions to the reconciliation (a day by default), so
/// they are not in its mix.
fn latency_mix(mode: LatencyMode) -> Vec<Mutation> {
    let mut mix = LATENCY_MIX.to_vec();
    if mode == LatencyMode::Webhooks {
        mix.push(Mutation::Delete);
    }
    mix
}

/// Scenario 11: LOADs the list with `once`, starts `go` (with the webhook
/// receiver, or polling every few seconds), makes [`LATENCY_CHANGES`]
/// changes of the kinds of [`latency_mix`] at a steady rate, waits until
/// Ometria shows every one (at most two minutes after the last), stops
/// the daemon and verifies. Measured: the latencies (the sandbox's), and
/// the daemon's CPU and memory from its start to its stop.
fn measure_latency(exe: &Path, scenario: &Scenario, mode: LatencyMode) -> io::Result<Figures> {
    let receiver = match mode {
        LatencyMode::Webhooks => {
            // A free port on 127.0.0.1, freed for the daemon to bind.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let secret = format!("{:032x}", fastrand::u128(..));
            Some((format!("127.0.0.1:{port}"), secret))
        }
        LatencyMode::Polling { .. } => None,
    };
    let extra: Vec<String> = match &receiver {
        Some((addr, secret)) => vec![
            "--webhook-url".into(),
            format!("http://{addr}{}{secret}", crate::webhook::receiver::PATH_PREFIX),
        ],
        None => vec![],
    };
    let (sandbox, address) = start_sandbox(exe, scenario, &extra)?;
    let sizes: Vec<Value> = serde_json::from_str(&control(&address, "/_sandbox/lists")?)?;
    let list_id = sizes
        .first()
        .and_then(|l| l["list_id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let dir = tempfile::Builder::new().prefix("ometria-bench-").tempdir()?;
    std::fs::write(
        dir.path().join("state.json"),
        serde_json::to_vec_pretty(&plain_entries(&sizes))?,
    )?;
    let (code, _) = wait_with_usage(importer(exe, &address, dir.path(), scenario, "once")?)?;
    if code != 0 {
        return Err(exited(code, dir.path()));
    }

    let mut daemon = importer_command(exe, &address, dir.path(), scenario, "go")?;
    match (&receiver, mode) {
        (Some((addr, secret)), _) => {
            daemon
                .env("IMPORTER_WEBHOOK_ADDR", addr)
                .env("IMPORTER_WEBHOOK_SECRET", secret);
        }
        (None, LatencyMode::Polling { refresh_seconds }) => {
            daemon
                .env("IMPORTER_REFRESH_SECONDS", refresh_seconds.to_string())
                .env("IMPORTER_TICK_SECONDS", "1");
        }
        (None, LatencyMode::Webhooks) => {}
    }
    let daemon = daemon.spawn()?;
    if let Some((addr, secret)) = &receiver {
        // Mailchimp's own check of the URL: the receiver answers.
        let path = format!("{}{secret}", crate::webhook::receiver::PATH_PREFIX);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(http_get(addr, &path, Duration::from_secs(5)), Ok((200, _))) {
            if Instant::now() > deadline {
                std::fs::write(dir.path().join("controller.quit"), "")?;
                let _ = wait_with_usage(daemon);
                return Err(io::Error::other("the webhook receiver did not answer within 60 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let log_before = std::fs::read_to_string(dir.path().join("importer.log"))?.len();
    let before = sandbox_stats(&address)?;
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / LATENCY_CHANGES_PER_SECOND);
    for (i, kind) in latency_mix(mode).iter().cycle().take(LATENCY_CHANGES).enumerate() {
        let path = format!("/_sandbox/mutate?list_id={list_id}&count=1&kind={}", kind.as_str());
        match control_post(&address, &path)? {
            200 => {}
            status => return Err(io::Error::other(format!("/_sandbox/mutate answered {status}"))),
        }
        if let Some(wait) = (started + period.mul_f64(i as f64 + 1.0)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let latency = loop {
        let latency: Value = serde_json::from_str(&control(&address, "/_sandbox/latency")?)?;
        if latency["pending"].as_u64() == Some(0) {
            break latency;
        }
        if Instant::now() > deadline {
            std::fs::write(dir.path().join("controller.quit"), "")?;
            let _ = wait_with_usage(daemon);
            return Err(io::Error::other(format!(
                "changes still not in Ometria 120 s after the last: {latency}"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let wall = started.elapsed();
    let after = sandbox_stats(&address)?;
    std::fs::write(dir.path().join("controller.quit"), "")?;
    let (code, usage) = wait_with_usage(daemon)?;
    if code != 0 {
        return Err(exited(code, dir.path()));
    }
    let verification: Value = serde_json::from_str(&control(&address, "/_sandbox/verify")?)?;
    drop(sandbox);
    let log = std::fs::read_to_string(dir.path().join("importer.log"))?;
    let (syncs, mean_sync, mean_period) = syncs_in_log(log.get(log_before..).unwrap_or_default());
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let busy = after["mailchimp_busy_seconds"].as_f64().unwrap_or(0.0)
        - before["mailchimp_busy_seconds"].as_f64().unwrap_or(0.0);
    let seconds = |k: &str| latency[k].as_f64().unwrap_or(f64::NAN);
    let ledger_bytes = ["", "-wal"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(dir.path().join(format!("ledger.sqlite3{suffix}"))).ok())
        .map(|m| m.len())
        .sum();
    Ok(Figures {
        records: LATENCY_CHANGES as u64,
        pushed: delta("records_accepted"),
        pages: delta("mailchimp_requests"),
        wall,
        cpu: usage.0,
        peak_rss_kib: usage.1,
        floor: None,
        in_flight: busy / wall.as_secs_f64(),
        ledger_bytes,
        changes: None,
        lists: None,
        latency: Some(LatencyFigures {
            mode,
            count: latency["count"].as_u64().unwrap_or(0),
            p50: seconds("p50_seconds"),
            p95: seconds("p95_seconds"),
            max: seconds("max_seconds"),
            syncs,
            mean_sync,
            mean_period,
        }),
        verified: verification["ok"] == Value::Bool(true),
    })
}

/// Starts the importer's `command` on the state folder `dir` against the
/// sandbox at `address`, its log in `dir/importer.log` (appended).
fn importer(exe: &Path, address: &str, dir: &Path, scenario: &Scenario, command: &str) -> io::Result<Child> {
    importer_command(exe, address, dir, scenario, command)?.spawn()
}

/// [`importer`], not started yet.
fn importer_command(exe: &Path, address: &str, dir: &Path, scenario: &Scenario, command: &str) -> io::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("importer.log"))?;
    let mut importer = Command::new(exe);
    importer
        .arg(command)
        .env_clear()
        .env("MAILCHIMP_APIKEY", DEFAULT_MAILCHIMP_KEY)
        .env("OMETRIA_APIKEY", DEFAULT_OMETRIA_KEY)
        .env("MAILCHIMP_BASE_URL", format!("http://{address}/3.0"))
        .env("OMETRIA_BASE_URL", format!("http://{address}"))
        .env("IMPORTER_STATE_DIR", dir)
        .envs(scenario.importer.iter().copied())
        .stdout(Stdio::null())
        .stderr(log);
    Ok(importer)
}

/// The sandbox's counters (`/_sandbox/stats`).
fn sandbox_stats(address: &str) -> io::Result<Value> {
    Ok(serde_json::from_str(&control(address, "/_sandbox/stats")?)?)
}

/// The error for an importer that exited with `code`, with the last lines
/// of its log.
fn exited(code: i32, dir: &Path) -> io::Error {
    let log = std::fs::read_to_string(dir.join("importer.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(5).collect();
    io::Error::other(format!("the importer exited with {code}: {}", tail.join(" | ")))
}

/// After changes stopped at `stopped_at` (unix seconds): runs `once` until
/// a SYNC of the state file's entries ran (their `latest_timestamp`
/// moved), starting in a later second than the last change, so that it
/// reads every change (a sync reads what changed before the second it
/// started in).
fn converge(exe: &Path, address: &str, dir: &Path, scenario: &Scenario, stopped_at: u64) -> io::Result<()> {
    while unix_seconds() <= stopped_at {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cursors = || -> io::Result<Vec<Value>> {
        let entries: Vec<Value> = serde_json::from_slice(&std::fs::read(dir.join("state.json"))?)?;
        Ok(entries.into_iter().map(|e| e["latest_timestamp"].clone()).collect())
    };
    let before = cursors()?;
    for _ in 0..20 {
        let (code, _) = wait_with_usage(importer(exe, address, dir, scenario, "once")?)?;
        if code != 0 {
            return Err(exited(code, dir));
        }
        if cursors()?.iter().zip(&before).all(|(now, then)| now != then) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(io::Error::other("no SYNC ran after the changes stopped"))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Changes one sandbox list at a steady rate from a thread of its own,
/// through `POST /_sandbox/mutate`, each change of a kind drawn as the
/// sandbox's own `--mutations-per-second` draws it ([`Mutation::random`]:
/// names changed, archived, unarchived, unsubscribed, subscribed, deleted,
/// added). Driven from here rather than by that option so that the
/// changes stop when the LOAD ends and the SYNC after it reads a list at
/// rest.
struct Mutator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Mutator {
    fn start(address: &str, list_id: &str, per_second: f64) -> Mutator {
        let stop = Arc::new(AtomicBool::new(false));
        let (address, path) = (
            address.to_owned(),
            format!("/_sandbox/mutate?list_id={list_id}&count=1"),
        );
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(1);
            let period = Duration::from_secs_f64(1.0 / per_second);
            let mut next = Instant::now();
            while !stopping.load(Ordering::Relaxed) {
                let kind = Mutation::random(&mut rng).as_str();
                match control_post(&address, &format!("{path}&kind={kind}"))? {
                    200 => {}
                    status => return Err(io::Error::other(format!("/_sandbox/mutate answered {status}"))),
                }
                next += period;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(())
        });
        Mutator {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the changes; the unix second the last one was made in.
    fn stop(mut self) -> io::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("stopped once");
        thread
            .join()
            .map_err(|_| io::Error::other("the mutator thread panicked"))??;
        Ok(unix_seconds())
    }
}

impl Drop for Mutator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Posts an empty body to a sandbox control endpoint; the answer's status.
fn control_post(address: &str, path: &str) -> io::Result<u16> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status in the answer"))
}

/// POSTs `body` as JSON to the sandbox; its answer's body.
fn control_post_json(address: &str, path: &str, body: &Value) -> io::Result<String> {
    let body = serde_json::to_vec(body)?;
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(&body)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.split_whitespace().nth(1) == Some("200") => Ok(body.to_owned()),
        _ => Err(io::Error::other(format!(
            "{path} answered: {}",
            answer.lines().next().unwrap_or("")
        ))),
    }
}

/// Counts the lines of a growing log that hold a text, reading only what
/// was added since the last count.
struct LogCount {
    path: std::path::PathBuf,
    needle: &'static str,
    offset: u64,
    /// The end of the last line read may not be written in full yet.
    partial: String,
    count: u64,
}

impl LogCount {
    fn new(path: std::path::PathBuf, needle: &'static str) -> LogCount {
        // What an earlier run wrote to the log is not counted.
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        LogCount {
            path,
            needle,
            offset,
            partial: String::new(),
            count: 0,
        }
    }

    /// The lines holding the text so far.
    fn count(&mut self) -> io::Result<u64> {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.offset))?;
        let mut added = Vec::new();
        file.read_to_end(&mut added)?;
        self.offset += added.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&added));
        let complete = self.partial.rfind('\n').map_or(0, |end| end + 1);
        self.count += self.partial[..complete]
            .lines()
            .filter(|l| l.contains(self.needle))
            .count() as u64;
        self.partial.drain(..complete);
        Ok(self.count)
    }
}

/// The value of an unlabelled counter or gauge in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Whether every entry of the state file has a `latest_timestamp`.
fn every_entry_synced(path: &Path) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    serde_json::from_slice::<Vec<Value>>(&bytes)
        .is_ok_and(|entries| entries.iter().all(|e| e["latest_timestamp"].is_string()))
}

/// Exit code, CPU time (user + system) and peak RSS in KiB of `child`.
fn wait_with_usage(child: Child) -> io::Result<(i32, (Duration, u64))> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: wait4 writes a plain C struct we own; the child is ours and
    // not waited for elsewhere (`child` is dropped without waiting).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    drop(child);
    if reaped != pid {
        return Err(io::Error::last_os_error());
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((
        code,
        (time(usage.ru_utime) + time(usage.ru_stime), usage.ru_maxrss as u64),
    ))
}

/// The body of a sandbox control endpoint.
fn control(address: &str, path: &str) -> io::Result<String> {
    match http_get(address, path, Duration::from_secs(300))? {
        (200, body) => Ok(body),
        (status, body) => Err(io::Error::other(format!("{path} answered {status}: {body}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_and_log_lines_are_counted() {
        let page = "# HELP ometria_importer_state_file_writes_total Writes.\n# TYPE ometria_importer_state_file_writes_total counter\nometria_importer_state_file_writes_total 42\nometria_importer_state_file_writes_total_other 7\n";
        assert_eq!(metric(page, "ometria_importer_state_file_writes_total"), Some(42));
        assert_eq!(metric(page, "ometria_importer_nothing"), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("importer.log");
        std::fs::write(&path, "sync: completed in 1 (earlier run)\n").unwrap();
        let mut count = LogCount::new(path.clone(), "sync: completed in ");
        let mut log = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        log.write_all(b"a\nsync: completed in 0.1\nsync: compl").unwrap();
        assert_eq!(count.count().unwrap(), 1, "half a line is not counted yet");
        log.write_all(b"eted in 0.2\nb\n").unwrap();
        assert_eq!(count.count().unwrap(), 2);
        assert_eq!(count.count().unwrap(), 2);
    }

    #[test]
    fn scenario_12_is_run_only_when_asked() {
        let names: Vec<&str> = scenarios(12).iter().map(|s| s.name).collect();
        assert_eq!(names, ["12 1,000 lists", "12 10,000 lists", "12 50,000 lists"]);
        assert!(DEFAULT_SCENARIOS.end() < &12);
    }

    #[test]
    fn syncs_are_read_from_the_daemons_log() {
        let log = "\
2026-12-01 08:10:00 INFO |list_sync| sync: starting for list \"l\" with 8 read/write workers... mode=SYNC
2026-12-01 08:10:01 INFO |list_sync| sync: completed in 0.4 (s) for list \"l\". read=65 records=10
2026-12-01 08:10:31 INFO |controller| controller: list \"l\" requires \"SYNC\", firing...
2026-12-01 08:10:31 INFO |list_sync| sync: starting for list \"l\" with 8 read/write workers... mode=SYNC
2026-12-01 08:10:31 INFO |list_sync| sync: completed in 0.2 (s) for list \"l\". read=65 records=10
2026-12-01 08:11:02 INFO |list_sync| sync: starting for list \"l\" with 8 read/write workers... mode=SYNC
2026-12-01 08:11:02 INFO |list_sync| sync: completed in 0.3 (s) for list \"l\". read=65 records=10
";
        let (syncs, mean, period) = syncs_in_log(log);
        assert_eq!(syncs, 3);
        assert!((mean - 0.3).abs() < 1e-9, "{mean}");
        assert_eq!(period, Some(31.0));
        assert_eq!(syncs_in_log(""), (0, 0.0, None));
    }

    #[test]
    fn polling_waits_for_the_next_sync_uniformly() {
        assert_eq!(LatencyFigures::polling_model(3600.0, 1.0), (1801.0, 3421.0, 3601.0));
        let figures = LatencyFigures {
            mode: LatencyMode::Polling { refresh_seconds: 30 },
            count: 300,
            p50: 16.0,
            p95: 29.0,
            max: 31.0,
            syncs: 5,
            mean_sync: 1.0,
            mean_period: Some(30.0),
        };
        let line = figures.describe();
        assert!(line.contains("one every 30.0 s"), "{line}");
        assert!(line.contains("p50 16.0 s, p95 29.5 s, max 31.0 s"), "{line}");
        assert!(line.contains("DERIVED for the default IMPORTER_REFRESH_SECONDS=3600, not run: p50 1801 s, p95 3421 s, max 3601-3661 s"), "{line}");
    }

    #[test]
    fn scenario_11_changes_are_all_announced_by_webhook() {
        use crate::sandbox::webhooks::announced;
        assert!(LATENCY_MIX.iter().all(|m| announced(*m).is_some()));
        let names: Vec<&str> = scenarios(11).iter().map(|s| s.name).collect();
        assert_eq!(names, ["11 latency webhooks", "11 latency polling"]);
        // Each kind is one the sandbox's mutate endpoint takes by name.
        assert!(LATENCY_MIX.iter().all(|m| Mutation::parse(m.as_str()) == Some(*m)));
    }
}
