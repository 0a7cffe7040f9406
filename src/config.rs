//! Settings from the environment and flags (SPEC §7). Every variable is
//! also a flag; API keys are redacted wherever they could be printed.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::ApiKey;
use crate::mailchimp;
use crate::retry::RetryPolicy;
pub use crate::webhook::WebhookSecret;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OmetriaApi {
    /// Data API v2: `POST /v2/push`.
    Push,
    /// The legacy endpoint the original importer used: `POST /record`.
    Record,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event, as the original importer wrote them.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "ometria-importer",
    version,
    about = "Keeps Ometria contacts in sync with Mailchimp audience members.",
    after_help = "Every option can also be set through the environment variable named in [env: …]."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub settings: Settings,
}

impl Cli {
    /// Parses the flags and the environment, or exits. A bad value taken
    /// from an environment variable is named by that variable (clap names
    /// the flag, which the user did not write), with exit code 2.
    pub fn parse_or_exit() -> Cli {
        Cli::try_parse().unwrap_or_else(|e| {
            if let Some(message) = bad_env_value(&e, |name| std::env::var(name).ok()) {
                eprintln!("error: {message}");
                std::process::exit(2);
            }
            e.exit()
        })
    }
}

/// `IMPORTER_TICK_SECONDS="0" is not valid: …` when the value clap refused
/// came from an environment variable (as `env` reads them).
fn bad_env_value(e: &clap::Error, env: impl Fn(&str) -> Option<String>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    if !matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) =
        (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
    else {
        return None;
    };
    let long = arg.strip_prefix("--")?.split(' ').next()?;
    let command = Cli::command();
    let argument = command.get_arguments().find(|a| a.get_long() == Some(long))?;
    let variable = argument.get_env()?.to_str()?;
    if env(variable).as_deref() != Some(value.as_str()) {
        return None; // the flag's value
    }
    let why = match (e.get(ContextKind::ValidValue), std::error::Error::source(e)) {
        (Some(ContextValue::Strings(valid)), _) => format!("expected one of {}", valid.join(", ")),
        (_, Some(source)) => source.to_string(),
        _ => return None,
    };
    if argument.is_hide_env_values_set() {
        return Some(format!("{variable} is not valid: {why}")); // a secret
    }
    Some(format!("{variable}=\"{value}\" is not valid: {why}"))
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the daemon: every tick, sync the lists that are due, until stopped.
    Go,
    /// One controller pass: sync every due list, wait; exit 0 if all succeeded, 1 if not.
    Once,
    /// Validate the environment and the state file; print what the next tick would do.
    Check(CheckArgs),
    /// The whole importer against built-in fake APIs with generated lists; no keys needed.
    Demo(DemoArgs),
    /// Serve only the fake Mailchimp and Ometria APIs, until stopped.
    Sandbox(Box<SandboxArgs>),
    /// Run the benchmark scenarios against a sandbox in another process; print figures.
    Bench(BenchArgs),
    /// Ask a running importer's /healthz (at IMPORTER_METRICS_ADDR); exit 0 if healthy.
    Health,
    /// Print the run history kept in the ledger, newest first (works while `go` runs).
    History(HistoryArgs),
    /// Forget what Ometria accepted for one list, so that its next sync pushes every member again.
    Forget(ForgetArgs),
    /// Show what the next sync of each due entry (or of one list) would push; pushes and writes nothing.
    Plan(PlanArgs),
    /// Register, list or remove the Mailchimp webhook of each list of the state file.
    Webhooks(WebhooksArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct CheckArgs {
    /// Also ask Mailchimp whether the key may read each list (one member of each is read; Ometria is not called).
    #[arg(long)]
    pub online: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct HistoryArgs {
    /// Only the syncs of this list id.
    #[arg(long = "list")]
    pub list_id: Option<String>,
    /// How many syncs to print, newest first.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct PlanArgs {
    /// Plan this list's entries, due or not (as their next sync would read), instead of the due ones.
    #[arg(long = "list")]
    pub list_id: Option<String>,
    /// Sample records to print per entry (as they would be pushed).
    #[arg(long, default_value_t = 3)]
    pub limit: usize,
    /// One JSON array instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct WebhooksArgs {
    #[command(subcommand)]
    pub action: WebhooksAction,
}

#[derive(Subcommand, Debug, Clone, PartialEq)]
pub enum WebhooksAction {
    /// Create the webhook <URL>/webhooks/mailchimp/<IMPORTER_WEBHOOK_SECRET> on each list (or update its events and sources); one that is as wanted is left as it is.
    Register(WebhookUrlArgs),
    /// Print each list's webhooks, their URLs without secrets, passwords or query values.
    List,
    /// Delete the webhook <URL>/webhooks/mailchimp/<IMPORTER_WEBHOOK_SECRET> from each list.
    Remove(WebhookUrlArgs),
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct WebhookUrlArgs {
    /// The public base URL the daemon's webhook receiver is reached at, e.g. https://importer.example.com (https://, or http:// for 127.0.0.1 or localhost).
    #[arg(long)]
    pub url: String,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct ForgetArgs {
    /// The list id whose members the ledger forgets.
    #[arg(long = "list")]
    pub list_id: String,
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct DemoArgs {
    /// Keep running while members change, to watch incremental syncs (Ctrl+C stops).
    #[arg(long)]
    pub follow: bool,
    /// How many lists to generate.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub lists: u64,
    /// Members of the largest list (the others are smaller).
    #[arg(long, default_value_t = 12_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    pub members: u64,
    /// Seeds the generated lists.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// With --follow: seconds between two polling syncs of a list [default: 15; with --webhooks 3600, the importer's own default].
    #[arg(long = "every", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub every_seconds: Option<u64>,
    /// With --follow: the sandbox's Mailchimp also sends webhooks to the importer's receiver (on 127.0.0.1, a free port, a generated secret), and the demo prints how long changes take to reach Ometria.
    #[arg(long, requires = "follow")]
    pub webhooks: bool,
}

impl DemoArgs {
    /// Seconds between two polling syncs of a list with --follow.
    pub fn every(&self) -> u64 {
        self.every_seconds.unwrap_or(if self.webhooks { 3600 } else { 15 })
    }
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct SandboxArgs {
    /// Port to serve on; 0 picks a free one.
    #[arg(long, default_value_t = 8900)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: std::net::IpAddr,
    /// Lists to generate: `ID:SIZE`, `COUNTxSIZE` or `COUNTxMIN-MAX` (named list-0001…, sizes from MIN to MAX drawn from the list's number), comma-separated.
    #[arg(long, default_value = "sandbox-list:10000", value_parser = parse_lists)]
    pub lists: ListSpec,
    /// Seeds members, latency jitter, faults and mutations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 0)]
    pub mailchimp_latency_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub mailchimp_jitter_ms: u64,
    /// Simultaneous Mailchimp requests per key before 429s; 0 = no cap.
    #[arg(long, default_value_t = 10)]
    pub connection_cap: usize,
    #[arg(long, default_value_t = 0)]
    pub ometria_latency_ms: u64,
    #[arg(long, default_value_t = 0)]
    pub ometria_jitter_ms: u64,
    /// Ometria requests per second per key (token bucket); 0 = unlimited.
    #[arg(long, default_value_t = 8.0, value_parser = parse_rate)]
    pub ometria_rate: f64,
    /// Records Ometria's backlog holds; a push that does not fit is answered 429.
    #[arg(long, default_value_t = crate::sandbox::DEFAULT_OMETRIA_BACKLOG,
          value_parser = clap::value_parser!(u64).range(100..))]
    pub ometria_backlog: u64,
    /// Records per second Ometria's backlog drains; 0 = at once (it never fills).
    #[arg(long, default_value_t = 0.0, value_parser = parse_drain)]
    pub ometria_drain: f64,
    /// Probability per request of each fault (5xx, 429 burst, hang, drop, truncation, body-less 403), both APIs.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// How long a hung request hangs.
    #[arg(long, default_value_t = 150)]
    pub hang_seconds: u64,
    /// Random changes to the lists per second.
    #[arg(long, default_value_t = 0.0)]
    pub mutations_per_second: f64,
    /// Return members sharing one last_changed second in a new order on every request.
    #[arg(long)]
    pub shuffle_ties: bool,
    /// Every member of a list last changed in one second (a bulk import).
    #[arg(long)]
    pub same_second: bool,
    /// Break Mailchimp's paging as a broken server or proxy would, to see the importer's checks.
    #[arg(long, value_enum)]
    pub paging_bug: Option<crate::sandbox::mailchimp::PagingBug>,
    /// Server threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    #[arg(long, default_value = crate::sandbox::DEFAULT_MAILCHIMP_KEY)]
    pub mailchimp_key: String,
    #[arg(long, default_value = crate::sandbox::DEFAULT_OMETRIA_KEY)]
    pub ometria_key: String,
    /// Post Mailchimp's audience webhook for each change to this URL, e.g. http://127.0.0.1:9899/webhooks/mailchimp/<secret> [default: none].
    #[arg(long, value_parser = parse_webhook_url)]
    pub webhook_url: Option<String>,
    /// Fraction of webhook events sent late (0-1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub webhook_late: f64,
    /// How late a late webhook event is: between half of this and all of it, in seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub webhook_late_seconds: u64,
    /// Fraction of webhook events sent twice (0-1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub webhook_twice: f64,
    /// Fraction of unsubscribe webhook events sent without data[action] (0-1).
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub webhook_no_action: f64,
}

/// A share of events in [0, 1]: `0`, `0.05`, `1`.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "\"{text}\" is not a fraction of events: give a number from 0 to 1, e.g. 0.05"
        )),
    }
}

/// A URL the sandbox can post webhooks to: absolute http(s), with a host.
fn parse_webhook_url(text: &str) -> Result<String, String> {
    let bad = |why: &str| format!("\"{text}\" is not a webhook URL: {why}");
    let uri: awc::http::Uri = text.trim().parse().map_err(|_| bad("it is not a URL"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("it must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(text.trim().to_owned())
}

#[derive(Args, Debug, Clone, PartialEq)]
pub struct BenchArgs {
    /// Scenarios to run (1-12); 1-11 by default (12, up to 50,000 lists, only when asked).
    #[arg(long = "scenario", value_parser = clap::value_parser!(u8).range(1..=12))]
    pub scenarios: Vec<u8>,
    /// Runs of each scenario; the one with the median wall time is shown.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub repeat: u32,
}

/// Lists to generate: ids and sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListSpec(pub Vec<(String, usize)>);

fn parse_lists(text: &str) -> Result<ListSpec, String> {
    let mut lists = vec![];
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let bad = || format!("\"{item}\" is not ID:SIZE, COUNTxSIZE or COUNTxMIN-MAX");
        if let Some((id, size)) = item.split_once(':') {
            lists.push((id.to_owned(), size.parse().map_err(|_| bad())?));
        } else if let Some((count, size)) = item.split_once('x') {
            let count: usize = count.parse().map_err(|_| bad())?;
            let (low, high): (usize, usize) = match size.split_once('-') {
                Some((low, high)) => (low.parse().map_err(|_| bad())?, high.parse().map_err(|_| bad())?),
                None => {
                    let size = size.parse().map_err(|_| bad())?;
                    (size, size)
                }
            };
            if low > high {
                return Err(bad());
            }
            let first = lists.len();
            lists.extend((first..first + count).map(|i| (format!("list-{:04}", i + 1), spread_size(i, low, high))));
        } else {
            return Err(bad());
        }
    }
    Ok(ListSpec(lists))
}

/// The size of the `n`th list of a `COUNTxMIN-MAX` spec: from `low` to
/// `high`, drawn from `n` alone (splitmix64), so every run has the same lists.
fn spread_size(n: usize, low: usize, high: usize) -> usize {
    let mut z = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    low + (z % (high - low + 1) as u64) as usize
}

impl SandboxArgs {
    pub fn sandbox_config(&self) -> crate::sandbox::SandboxConfig {
        use crate::sandbox::webhooks::WebhookSending;
        use crate::sandbox::{faults::Faults, Behaviour, SandboxConfig};
        let ms = Duration::from_millis;
        let faults = Faults {
            hang_for: Duration::from_secs(self.hang_seconds),
            ..Faults::all(self.fault_rate)
        };
        SandboxConfig {
            seed: self.seed,
            lists: self.lists.0.clone(),
            mailchimp_key: self.mailchimp_key.clone(),
            ometria_key: self.ometria_key.clone(),
            mailchimp: Behaviour {
                latency: ms(self.mailchimp_latency_ms),
                jitter: ms(self.mailchimp_jitter_ms),
                faults,
            },
            mailchimp_max_connections: self.connection_cap,
            ometria: Behaviour {
                latency: ms(self.ometria_latency_ms),
                jitter: ms(self.ometria_jitter_ms),
                faults,
            },
            ometria_requests_per_second: (self.ometria_rate > 0.0).then_some(self.ometria_rate),
            ometria_backlog: self.ometria_backlog,
            ometria_drain_per_second: (self.ometria_drain > 0.0).then_some(self.ometria_drain),
            mutations_per_second: self.mutations_per_second,
            shuffle_ties: self.shuffle_ties,
            same_second: self.same_second,
            paging_bug: self.paging_bug,
            workers: self.workers,
            webhook: self.webhook_url.as_deref().map(|url| WebhookSending {
                late: self.webhook_late,
                late_by: Duration::from_secs(self.webhook_late_seconds),
                twice: self.webhook_twice,
                without_action: self.webhook_no_action,
                ..WebhookSending::to(url)
            }),
            ..SandboxConfig::default()
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct Settings {
    /// Mailchimp API key; its data centre is the part after the last '-'.
    #[arg(long, env = "MAILCHIMP_APIKEY", hide_env_values = true, global = true)]
    pub mailchimp_apikey: Option<ApiKey>,
    /// Ometria API key.
    #[arg(long, env = "OMETRIA_APIKEY", hide_env_values = true, global = true)]
    pub ometria_apikey: Option<ApiKey>,
    /// Mailchimp API root [default: https://<dc>.api.mailchimp.com/3.0].
    #[arg(long, env = "MAILCHIMP_BASE_URL", global = true)]
    pub mailchimp_base_url: Option<String>,
    /// Ometria API root.
    #[arg(long, env = "OMETRIA_BASE_URL", default_value = DEFAULT_OMETRIA_BASE_URL, global = true)]
    pub ometria_base_url: String,
    /// Which Ometria endpoint to write to.
    #[arg(long, env = "OMETRIA_API", value_enum, default_value_t = OmetriaApi::Push, global = true)]
    pub ometria_api: OmetriaApi,
    /// Folder holding state.json, the quit file, the rejected records and ledger.sqlite3.
    #[arg(long, env = "IMPORTER_STATE_DIR", default_value = "./state", global = true)]
    pub state_dir: PathBuf,
    /// Seconds between two checks of the state file.
    #[arg(long, env = "IMPORTER_TICK_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400), global = true)]
    pub tick_seconds: u64,
    /// Default refresh interval of an entry, in seconds.
    #[arg(long, env = "IMPORTER_REFRESH_SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_622_400), global = true)]
    pub refresh_seconds: u64,
    /// Syncs running at once, across all lists.
    #[arg(long, env = "IMPORTER_MAX_CONCURRENT_LISTS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=10_000), global = true)]
    pub max_concurrent_lists: u64,
    /// Mailchimp requests in flight at once, across all lists (Mailchimp allows 10 per key).
    #[arg(long, env = "MAILCHIMP_MAX_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000), global = true)]
    pub mailchimp_max_connections: u64,
    /// Ometria requests per second, across all lists; 0 = unlimited.
    #[arg(long, env = "OMETRIA_MAX_REQUESTS_PER_SECOND", default_value_t = 8.0, value_parser = parse_rate, global = true)]
    pub ometria_max_requests_per_second: f64,
    /// Log format.
    #[arg(long, env = "IMPORTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Serve /metrics and /healthz on this address, e.g. 0.0.0.0:9898; empty or "off": nowhere [default: off].
    #[arg(long, env = "IMPORTER_METRICS_ADDR", global = true)]
    pub metrics_addr: Option<MetricsAddr>,
    /// A SYNC re-reads this many seconds before the cursor (clock skew).
    #[arg(long, env = "IMPORTER_OVERLAP_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400), global = true)]
    pub overlap_seconds: u64,
    /// On stop, seconds running syncs get to finish before they are abandoned.
    #[arg(long, env = "IMPORTER_GRACE_SECONDS", default_value_t = 8, value_parser = clap::value_parser!(u64).range(0..=3_600), global = true)]
    pub grace_seconds: u64,
    /// Client timeout of every HTTP request, in seconds (Mailchimp itself gives up after 120 s); a first attempt gets a quarter of it, each retry twice as long as the one before.
    #[arg(long, env = "IMPORTER_HTTP_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600), global = true)]
    pub http_timeout_seconds: u64,
    /// Attempts of a request, the first included, before a passing failure (429, 5xx, timeout…) fails the sync; 4 × as many once one in five of the sync's requests to that API got through.
    #[arg(long, env = "IMPORTER_RETRY_ATTEMPTS", default_value_t = crate::retry::DEFAULT_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..=20), global = true)]
    pub retry_attempts: u32,
    /// A reconciliation that would mark more than this fraction of a list's members in the ledger as deleted in Mailchimp does nothing, fails and raises the list's alert; (0, 1].
    #[arg(long, env = "IMPORTER_MAX_DELETE_FRACTION", default_value_t = DEFAULT_MAX_DELETE_FRACTION, value_parser = parse_fraction, global = true)]
    pub max_delete_fraction: f64,
    /// Receive Mailchimp's webhooks on this address (`go` only), at /webhooks/mailchimp/<IMPORTER_WEBHOOK_SECRET>; IMPORTER_METRICS_ADDR's own serves both; empty or "off": nowhere [default: off].
    #[arg(long, env = "IMPORTER_WEBHOOK_ADDR", global = true)]
    pub webhook_addr: Option<MetricsAddr>,
    /// The secret last segment of the webhook URL: at least 16 of A-Z a-z 0-9 - . _ ~ (e.g. `openssl rand -hex 16`); required by `go` with IMPORTER_WEBHOOK_ADDR and by `webhooks register|remove`, checked by `check` with IMPORTER_WEBHOOK_ADDR, ignored by the rest; empty: unset.
    #[arg(long, env = "IMPORTER_WEBHOOK_SECRET", hide_env_values = true, global = true)]
    pub webhook_secret: Option<WebhookSecretSetting>,
    /// Seconds from a list's first webhook event to its SYNC; the events in between make that one SYNC.
    #[arg(long, env = "IMPORTER_WEBHOOK_DEBOUNCE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3_600), global = true)]
    pub webhook_debounce_seconds: u64,
    /// Seconds a finished sync's result waits to be written to state.json with those that end meanwhile (one write for all); a crash loses at most this long of results, whose lists sync again; 0 = at once.
    #[arg(long, env = "IMPORTER_STATE_WRITE_SECONDS", default_value_t = 1, value_parser = clap::value_parser!(u64).range(0..=60), global = true)]
    pub state_write_seconds: u64,
}

/// `IMPORTER_MAX_DELETE_FRACTION`'s default: 5 % of a list (issue 16).
pub const DEFAULT_MAX_DELETE_FRACTION: f64 = 0.05;

/// A fraction in (0, 1]: `0.05`, `1`.
fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!(
            "\"{text}\" is not a fraction of a list: give a number above 0 and at most 1, e.g. 0.05"
        )),
    }
}

pub const DEFAULT_OMETRIA_BASE_URL: &str = "https://api.ometria.com";

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "\"{text}\" is not a rate: give requests per second, e.g. 8 or 0.5 (0 = unlimited)"
        )),
    }
}

fn parse_drain(text: &str) -> Result<f64, String> {
    parse_rate(text)
        .map_err(|_| format!("\"{text}\" is not a drain rate: give records per second, e.g. 500 (0 = at once)"))
}

/// `IMPORTER_METRICS_ADDR`: an address, or empty / `off` for none (so a
/// container can turn off what its image turns on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsAddr(pub Option<std::net::SocketAddr>);

impl FromStr for MetricsAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "" | "off" => Ok(MetricsAddr(None)),
            text => text
                .parse()
                .map(|a| MetricsAddr(Some(a)))
                .map_err(|_| format!("\"{text}\" is not an address like 0.0.0.0:9898 (or empty / \"off\" for none)")),
        }
    }
}

/// `IMPORTER_WEBHOOK_SECRET` as it was given, trimmed and not yet checked:
/// only the commands that use the secret check it
/// ([`Settings::checked_webhook_secret`]), so that a placeholder left in
/// an env file stops nothing else. Never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecretSetting(String);

impl WebhookSecretSetting {
    /// The secret, checked: `Ok(None)` when the setting is empty or blank,
    /// which means unset (an env file's `IMPORTER_WEBHOOK_SECRET=`);
    /// [`ConfigError::BadWebhookSecret`] when it is not a usable secret,
    /// never repeating it.
    pub fn check(&self) -> Result<Option<WebhookSecret>, ConfigError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        self.0
            .parse()
            .map(Some)
            .map_err(|why| ConfigError::BadWebhookSecret { why })
    }
}

impl FromStr for WebhookSecretSetting {
    type Err = std::convert::Infallible;
    /// Any text: it is checked where it is used.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(WebhookSecretSetting(s.trim().to_owned()))
    }
}

impl std::fmt::Debug for WebhookSecretSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecretSetting(<redacted>)")
    }
}

/// A setting that cannot work, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set: export it (or pass --{flag}) with your {what} API key")]
    MissingKey {
        var: &'static str,
        flag: &'static str,
        what: &'static str,
    },
    #[error(
        "MAILCHIMP_APIKEY does not end in a data centre such as \"-us9\": \
         check the key, or set MAILCHIMP_BASE_URL"
    )]
    NoDataCentre,
    #[error("{var}=\"{value}\" is not usable: {reason}")]
    BadUrl {
        var: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "IMPORTER_WEBHOOK_ADDR is set but IMPORTER_WEBHOOK_SECRET is not: export it (or pass --webhook-secret) \
         with at least 16 random characters, e.g. `openssl rand -hex 16`; it is the last segment of the URL \
         Mailchimp posts to"
    )]
    NoWebhookSecret,
    /// A webhook secret a command needs is not one (the value itself is
    /// never in `why`).
    #[error("IMPORTER_WEBHOOK_SECRET is not valid: {why}")]
    BadWebhookSecret { why: String },
}

/// Where Mailchimp's webhooks are received (`IMPORTER_WEBHOOK_ADDR`), and
/// the secret of their path.
#[derive(Clone, Debug)]
pub struct WebhookListen {
    pub addr: std::net::SocketAddr,
    pub secret: WebhookSecret,
}

/// Validated settings of a run.
#[derive(Clone, Debug)]
pub struct Config {
    pub mailchimp_base_url: String,
    pub mailchimp_key: ApiKey,
    pub ometria_base_url: String,
    pub ometria_key: ApiKey,
    pub ometria_api: OmetriaApi,
    pub state_dir: PathBuf,
    pub tick: Duration,
    pub refresh: Duration,
    pub max_concurrent_lists: usize,
    pub mailchimp_max_connections: usize,
    /// `None` = unlimited.
    pub ometria_max_requests_per_second: Option<f64>,
    pub log_format: LogFormat,
    /// Where /metrics and /healthz are served; `None` = nowhere.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub overlap: Duration,
    pub grace: Duration,
    pub http_timeout: Duration,
    /// Retries of each request (tests also shorten the waits).
    pub retry: RetryPolicy,
    /// How often a long sync logs its progress (not a setting either).
    pub progress_interval: Duration,
    /// The largest fraction of a list's ledger members one reconciliation
    /// may find deleted in Mailchimp, in (0, 1]; above it, it does nothing.
    pub max_delete_fraction: f64,
    /// Where webhooks are received; `None` = nowhere (always, but from
    /// [`Settings::resolve_daemon`]).
    pub webhooks: Option<WebhookListen>,
    /// From a list's first webhook event to its SYNC.
    pub webhook_debounce: Duration,
    /// How long a finished sync's result waits to be written to
    /// `state.json` with those that end meanwhile
    /// (`IMPORTER_STATE_WRITE_SECONDS`, issue 19).
    pub state_write_window: Duration,
}

impl Config {
    /// A configuration with every default, for the given endpoints.
    pub fn new(
        mailchimp_base_url: &str,
        mailchimp_key: ApiKey,
        ometria_base_url: &str,
        ometria_key: ApiKey,
        state_dir: impl Into<PathBuf>,
    ) -> Config {
        Config {
            mailchimp_base_url: trim_url(mailchimp_base_url),
            mailchimp_key,
            ometria_base_url: trim_url(ometria_base_url),
            ometria_key,
            ometria_api: OmetriaApi::Push,
            state_dir: state_dir.into(),
            tick: Duration::from_secs(60),
            refresh: Duration::from_secs(3600),
            max_concurrent_lists: 4,
            mailchimp_max_connections: 10,
            ometria_max_requests_per_second: Some(8.0),
            log_format: LogFormat::Text,
            metrics_addr: None,
            overlap: crate::sync::DEFAULT_OVERLAP,
            grace: Duration::from_secs(8),
            http_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
            progress_interval: Duration::from_secs(10),
            max_delete_fraction: DEFAULT_MAX_DELETE_FRACTION,
            webhooks: None,
            webhook_debounce: Duration::from_secs(5),
            state_write_window: crate::actors::state_keeper::DEFAULT_WRITE_WINDOW,
        }
    }
}

impl Settings {
    /// The webhook secret, checked: `Ok(None)` when
    /// `IMPORTER_WEBHOOK_SECRET` is unset, empty or blank. For the
    /// commands that use it: `go` with the receiver on, and `webhooks`.
    pub fn checked_webhook_secret(&self) -> Result<Option<WebhookSecret>, ConfigError> {
        self.webhook_secret
            .as_ref()
            .map_or(Ok(None), WebhookSecretSetting::check)
    }

    /// The webhook receiver `go` runs: `None` when `IMPORTER_WEBHOOK_ADDR`
    /// is unset, empty or `off` (the secret is then not looked at);
    /// otherwise its address and the checked secret, which must be set.
    pub fn webhook_receiver(&self) -> Result<Option<WebhookListen>, ConfigError> {
        let Some(addr) = self.webhook_addr.and_then(|a| a.0) else {
            return Ok(None);
        };
        match self.checked_webhook_secret()? {
            Some(secret) => Ok(Some(WebhookListen { addr, secret })),
            None => Err(ConfigError::NoWebhookSecret),
        }
    }

    /// Every problem with these settings for `go`: those of
    /// [`Self::resolve`], and the webhook receiver's
    /// ([`Self::webhook_receiver`]), which only `go` runs.
    pub fn resolve_daemon(&self) -> Result<Config, Vec<ConfigError>> {
        match (self.resolve(), self.webhook_receiver()) {
            (Ok(config), Ok(webhooks)) => Ok(Config { webhooks, ..config }),
            (Ok(_), Err(e)) => Err(vec![e]),
            (Err(errors), Ok(_)) => Err(errors),
            (Err(mut errors), Err(e)) => {
                errors.push(e);
                Err(errors)
            }
        }
    }

    /// Every problem with these settings for a run that talks to the APIs
    /// and receives no webhooks (`once`, `plan`, `webhooks`…): the webhook
    /// settings are not looked at, and [`Config::webhooks`] is `None`.
    pub fn resolve(&self) -> Result<Config, Vec<ConfigError>> {
        let mut errors = vec![];
        let mailchimp_key = self.mailchimp_apikey.clone();
        let ometria_key = self.ometria_apikey.clone();
        if mailchimp_key.is_none() {
            errors.push(ConfigError::MissingKey {
                var: "MAILCHIMP_APIKEY",
                flag: "mailchimp-apikey",
                what: "Mailchimp",
            });
        }
        if ometria_key.is_none() {
            errors.push(ConfigError::MissingKey {
                var: "OMETRIA_APIKEY",
                flag: "ometria-apikey",
                what: "Ometria",
            });
        }
        let mailchimp_base_url = match (&self.mailchimp_base_url, &mailchimp_key) {
            (Some(url), _) => check_url("MAILCHIMP_BASE_URL", url).map_err(|e| errors.push(e)).ok(),
            (None, Some(key)) => mailchimp::base_url_for_key(key)
                .ok_or(ConfigError::NoDataCentre)
                .map_err(|e| errors.push(e))
                .ok(),
            (None, None) => None,
        };
        let ometria_base_url = check_url("OMETRIA_BASE_URL", &self.ometria_base_url)
            .map_err(|e| errors.push(e))
            .ok();
        if !errors.is_empty() {
            return Err(errors);
        }
        let (Some(mailchimp_key), Some(ometria_key), Some(mailchimp_base_url), Some(ometria_base_url)) =
            (mailchimp_key, ometria_key, mailchimp_base_url, ometria_base_url)
        else {
            return Err(errors);
        };
        let rate = self.ometria_max_requests_per_second;
        Ok(Config {
            ometria_api: self.ometria_api,
            tick: Duration::from_secs(self.tick_seconds),
            refresh: Duration::from_secs(self.refresh_seconds),
            max_concurrent_lists: self.max_concurrent_lists as usize,
            mailchimp_max_connections: self.mailchimp_max_connections as usize,
            ometria_max_requests_per_second: (rate > 0.0).then_some(rate),
            log_format: self.log_format,
            metrics_addr: self.metrics_addr.and_then(|m| m.0),
            overlap: Duration::from_secs(self.overlap_seconds),
            grace: Duration::from_secs(self.grace_seconds),
            http_timeout: Duration::from_secs(self.http_timeout_seconds),
            retry: RetryPolicy {
                attempts: self.retry_attempts,
                ..RetryPolicy::default()
            },
            max_delete_fraction: self.max_delete_fraction,
            webhook_debounce: Duration::from_secs(self.webhook_debounce_seconds),
            state_write_window: Duration::from_secs(self.state_write_seconds),
            ..Config::new(
                &mailchimp_base_url,
                mailchimp_key,
                &ometria_base_url,
                ometria_key,
                &self.state_dir,
            )
        })
    }
}

fn trim_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// An API root must be an absolute http(s) URL without query or fragment.
fn check_url(var: &'static str, value: &str) -> Result<String, ConfigError> {
    let bad = |reason| ConfigError::BadUrl {
        var,
        value: value.to_owned(),
        reason,
    };
    let url = trim_url(value);
    let uri: awc::http::Uri = url.parse().map_err(|_| bad("it is not a URL"))?;
    match uri.scheme_str() {
        Some("https") | Some("http") => {}
        _ => return Err(bad("it must start with https:// (or http:// for a local test server)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(bad("it must not carry a query or fragment"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let mut argv = vec!["ometria-importer", "go"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().settings
    }

    #[test]
    fn a_bad_value_from_the_environment_is_named_by_its_variable() {
        let refused = |args: &[&str]| {
            let mut argv = vec!["ometria-importer"];
            argv.extend_from_slice(args);
            argv.push("check");
            Cli::try_parse_from(argv).unwrap_err()
        };
        let only = |name: &'static str, value: &'static str| move |n: &str| (n == name).then(|| value.to_owned());
        let e = refused(&["--tick-seconds", "0"]);
        assert_eq!(
            bad_env_value(&e, only("IMPORTER_TICK_SECONDS", "0")).as_deref(),
            Some("IMPORTER_TICK_SECONDS=\"0\" is not valid: 0 is not in 1..=86400")
        );
        // Given as a flag: clap's own message, which names the flag.
        assert_eq!(bad_env_value(&e, |_| None), None);
        let e = refused(&["--ometria-api", "pull"]);
        assert_eq!(
            bad_env_value(&e, only("OMETRIA_API", "pull")).as_deref(),
            Some("OMETRIA_API=\"pull\" is not valid: expected one of push, record")
        );
        // A key's value is never repeated, whatever it is.
        let e = refused(&["--mailchimp-apikey", " "]);
        assert_eq!(
            bad_env_value(&e, only("MAILCHIMP_APIKEY", " ")).as_deref(),
            Some("MAILCHIMP_APIKEY is not valid: the API key is empty")
        );
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let key: ApiKey = "0123456789abcdef-us9".parse().unwrap();
        let s = settings(&[
            "--mailchimp-apikey",
            "0123456789abcdef-us9",
            "--ometria-apikey",
            "om-secret-key",
        ]);
        let config = s.resolve().unwrap();
        for text in [format!("{key:?}"), format!("{s:?}"), format!("{config:?}")] {
            assert!(!text.contains("0123456789abcdef"), "{text}");
            assert!(!text.contains("om-secret-key"), "{text}");
        }
    }

    #[test]
    fn the_data_centre_comes_from_the_key() {
        let s = settings(&["--mailchimp-apikey", "abc-def-us9", "--ometria-apikey", "k"]);
        let config = s.resolve().unwrap();
        assert_eq!(config.mailchimp_base_url, "https://us9.api.mailchimp.com/3.0");
        assert_eq!(config.ometria_base_url, "https://api.ometria.com");
    }

    #[test]
    fn base_urls_override_and_lose_their_trailing_slash() {
        let s = settings(&[
            "--mailchimp-apikey",
            "nodc",
            "--ometria-apikey",
            "k",
            "--mailchimp-base-url",
            "http://127.0.0.1:9/3.0/",
            "--ometria-base-url",
            "http://127.0.0.1:8/",
        ]);
        let config = s.resolve().unwrap();
        assert_eq!(config.mailchimp_base_url, "http://127.0.0.1:9/3.0");
        assert_eq!(config.ometria_base_url, "http://127.0.0.1:8");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = settings(&["--ometria-base-url", "ftp://x"]).resolve().unwrap_err();
        let messages: Vec<_> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages, [
            "MAILCHIMP_APIKEY is not set: export it (or pass --mailchimp-apikey) with your Mailchimp API key",
            "OMETRIA_APIKEY is not set: export it (or pass --ometria-apikey) with your Ometria API key",
            "OMETRIA_BASE_URL=\"ftp://x\" is not usable: it must start with https:// (or http:// for a local test server)",
        ]);
        let errors = settings(&["--mailchimp-apikey", "nodc", "--ometria-apikey", "k"])
            .resolve()
            .unwrap_err();
        assert_eq!(errors, [ConfigError::NoDataCentre]);
    }

    #[test]
    fn defaults_match_the_spec() {
        let config = settings(&["--mailchimp-apikey", "a-us1", "--ometria-apikey", "k"])
            .resolve()
            .unwrap();
        assert_eq!(config.tick, Duration::from_secs(60));
        assert_eq!(config.refresh, Duration::from_secs(3600));
        assert_eq!(config.max_concurrent_lists, 4);
        assert_eq!(config.mailchimp_max_connections, 10);
        assert_eq!(config.ometria_max_requests_per_second, Some(8.0));
        assert_eq!(config.ometria_api, OmetriaApi::Push);
        assert_eq!(config.state_dir, PathBuf::from("./state"));
        assert_eq!(config.grace, Duration::from_secs(8));
        assert_eq!(config.retry.attempts, 8);
    }

    #[test]
    fn retry_attempts_are_a_setting_within_bounds() {
        let keys = ["--mailchimp-apikey", "a-us1", "--ometria-apikey", "k"];
        let config = settings(&[&keys[..], &["--retry-attempts", "3"]].concat())
            .resolve()
            .unwrap();
        assert_eq!(config.retry.attempts, 3);
        for bad in ["0", "21", "many"] {
            let err = Cli::try_parse_from(["x", "go", "--retry-attempts", bad]).unwrap_err();
            assert!(err.to_string().contains("retry-attempts"), "{err}");
        }
    }

    #[test]
    fn the_delete_fraction_is_a_setting_in_zero_to_one() {
        let keys = ["--mailchimp-apikey", "a-us1", "--ometria-apikey", "k"];
        assert_eq!(settings(&keys).resolve().unwrap().max_delete_fraction, 0.05);
        let config = settings(&[&keys[..], &["--max-delete-fraction", "1"]].concat())
            .resolve()
            .unwrap();
        assert_eq!(config.max_delete_fraction, 1.0);
        for bad in ["0", "1.5", "-0.1", "NaN", "some"] {
            let flag = format!("--max-delete-fraction={bad}");
            let err = Cli::try_parse_from(["x", "go", flag.as_str()]).unwrap_err();
            assert!(err.to_string().contains("is not a fraction of a list"), "{err}");
        }
    }

    #[test]
    fn the_metrics_address_can_be_turned_off() {
        let addr = |v: &str| Cli::try_parse_from(["x", "go", "--metrics-addr", v]).map(|c| c.settings.metrics_addr);
        assert_eq!(
            addr("127.0.0.1:9898").unwrap(),
            Some(MetricsAddr(Some("127.0.0.1:9898".parse().unwrap())))
        );
        assert_eq!(addr("off").unwrap(), Some(MetricsAddr(None)));
        assert_eq!(addr("").unwrap(), Some(MetricsAddr(None)));
        assert!(addr("9898")
            .unwrap_err()
            .to_string()
            .contains("is not an address like 0.0.0.0:9898"));
    }

    #[test]
    fn webhooks_are_off_by_default_and_need_a_long_secret() {
        let keys = ["--mailchimp-apikey", "a-us1", "--ometria-apikey", "k"];
        let config = settings(&keys).resolve_daemon().unwrap();
        assert!(config.webhooks.is_none());
        assert_eq!(config.webhook_debounce, Duration::from_secs(5));
        let secret = "s3cret-0123456789";
        let on = settings(
            &[
                &keys[..],
                &["--webhook-addr", "127.0.0.1:9899", "--webhook-secret", secret],
                &["--webhook-debounce-seconds", "0"],
            ]
            .concat(),
        );
        let config = on.resolve_daemon().unwrap();
        let webhooks = config.webhooks.as_ref().unwrap();
        assert_eq!(webhooks.addr, "127.0.0.1:9899".parse().unwrap());
        assert_eq!(webhooks.secret.expose(), secret);
        assert_eq!(config.webhook_debounce, Duration::ZERO);
        assert!(!format!("{config:?}").contains(secret), "{config:?}");
        assert!(!format!("{on:?}").contains(secret), "{on:?}");
        // Only `go` receives webhooks.
        assert!(on.resolve().unwrap().webhooks.is_none());
        // "off" turns it off; an address without a secret is an error that names both.
        let off = settings(&[&keys[..], &["--webhook-addr", "off"]].concat());
        assert!(off.resolve_daemon().unwrap().webhooks.is_none());
        let errors = settings(&[&keys[..], &["--webhook-addr", "127.0.0.1:9899"]].concat())
            .resolve_daemon()
            .unwrap_err();
        assert_eq!(errors, [ConfigError::NoWebhookSecret]);
        let message = errors[0].to_string();
        assert!(
            message.starts_with("IMPORTER_WEBHOOK_ADDR is set but IMPORTER_WEBHOOK_SECRET is not"),
            "{message}"
        );
        // With the keys' problems too, all of them.
        let errors = settings(&["--webhook-addr", "127.0.0.1:9899"])
            .resolve_daemon()
            .unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert_eq!(errors[2], ConfigError::NoWebhookSecret);
    }

    #[test]
    fn an_empty_webhook_secret_is_unset_and_a_bad_one_stops_only_what_uses_it() {
        let keys = ["--mailchimp-apikey", "a-us1", "--ometria-apikey", "k"];
        let addr = ["--webhook-addr", "127.0.0.1:9899"];
        for empty in ["", "  ", "\t"] {
            let s = settings(&[&keys[..], &["--webhook-secret", empty]].concat());
            assert_eq!(s.checked_webhook_secret(), Ok(None), "{empty:?}");
            assert!(s.resolve_daemon().unwrap().webhooks.is_none());
            let with_addr = settings(&[&keys[..], &addr[..], &["--webhook-secret", empty]].concat());
            assert_eq!(with_addr.resolve_daemon().unwrap_err(), [ConfigError::NoWebhookSecret]);
        }
        // A placeholder or a short secret parses: only its users refuse it.
        for bad in ["<your webhook secret>", "short/secret", "tooShort"] {
            let s = settings(&[&keys[..], &["--webhook-secret", bad]].concat());
            assert!(s.resolve().is_ok(), "{bad}");
            assert!(s.resolve_daemon().unwrap().webhooks.is_none(), "no address: {bad}");
            let e = s.checked_webhook_secret().unwrap_err();
            assert!(matches!(e, ConfigError::BadWebhookSecret { .. }), "{e:?}");
            let with_addr = settings(&[&keys[..], &addr[..], &["--webhook-secret", bad]].concat());
            let errors = with_addr.resolve_daemon().unwrap_err();
            assert_eq!(errors, std::slice::from_ref(&e));
            let message = e.to_string();
            assert!(
                message.starts_with("IMPORTER_WEBHOOK_SECRET is not valid: "),
                "{message}"
            );
            assert!(!message.contains(bad), "never repeated: {message}");
            assert!(!format!("{s:?}").contains(bad), "{s:?}");
        }
        let e = settings(&["--webhook-secret", "tooShort"])
            .checked_webhook_secret()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "IMPORTER_WEBHOOK_SECRET is not valid: it has 8 characters, fewer than 16 (e.g. `openssl rand -hex 16`)"
        );
        // Surrounding blanks (an env file's) are not part of it.
        let s = settings(&["--webhook-secret", " s3cret-0123456789 "]);
        assert_eq!(
            s.checked_webhook_secret().unwrap().unwrap().expose(),
            "s3cret-0123456789"
        );
        for bad in ["3601", "-1", "soon"] {
            let flag = format!("--webhook-debounce-seconds={bad}");
            let err = Cli::try_parse_from(["x", "go", flag.as_str()]).unwrap_err();
            assert!(err.to_string().contains("webhook-debounce-seconds"), "{err}");
        }
    }

    #[test]
    fn list_specs() {
        assert_eq!(
            parse_lists("a:10, b:20").unwrap(),
            ListSpec(vec![("a".into(), 10), ("b".into(), 20)])
        );
        assert_eq!(
            parse_lists("2x5").unwrap(),
            ListSpec(vec![("list-0001".into(), 5), ("list-0002".into(), 5)])
        );
        assert_eq!(
            parse_lists("a:ten").unwrap_err(),
            "\"a:ten\" is not ID:SIZE, COUNTxSIZE or COUNTxMIN-MAX"
        );
        let spread = parse_lists("1000x10-100").unwrap().0;
        assert_eq!(spread.len(), 1000);
        assert!(spread.iter().all(|(_, size)| (10..=100).contains(size)));
        let mean = spread.iter().map(|(_, size)| size).sum::<usize>() as f64 / 1000.0;
        assert!((50.0..60.0).contains(&mean), "{mean}");
        assert_eq!(
            spread,
            parse_lists("1000x10-100").unwrap().0,
            "the same lists every time"
        );
        assert!(parse_lists("3x100-10").is_err());
        let cli =
            Cli::try_parse_from(["x", "sandbox", "--port", "0", "--lists", "3x100", "--ometria-rate", "0"]).unwrap();
        let Command::Sandbox(args) = cli.command else {
            panic!("not sandbox")
        };
        let config = args.sandbox_config();
        assert_eq!(config.lists.len(), 3);
        assert_eq!(config.ometria_requests_per_second, None);
        assert_eq!(
            (config.ometria_backlog, config.ometria_drain_per_second),
            (50_000, None)
        );
        let cli = Cli::try_parse_from(["x", "sandbox", "--ometria-backlog", "5000", "--ometria-drain", "500"]).unwrap();
        let Command::Sandbox(args) = cli.command else {
            panic!("not sandbox")
        };
        let config = args.sandbox_config();
        assert_eq!(
            (config.ometria_backlog, config.ometria_drain_per_second),
            (5000, Some(500.0))
        );
        assert!(Cli::try_parse_from(["x", "sandbox", "--ometria-backlog", "99"]).is_err());
    }

    #[test]
    fn the_sandbox_sends_webhooks_when_given_a_url() {
        let sandbox = |args: &[&str]| match Cli::try_parse_from([&["x", "sandbox"], args].concat()) {
            Ok(Cli {
                command: Command::Sandbox(args),
                ..
            }) => Ok(args.sandbox_config()),
            Ok(_) => panic!("not sandbox"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(sandbox(&[]).unwrap().webhook, None);
        let url = "http://127.0.0.1:9899/webhooks/mailchimp/0123456789abcdef";
        let config = sandbox(&[
            "--webhook-url",
            url,
            "--webhook-late",
            "0.1",
            "--webhook-late-seconds",
            "4",
            "--webhook-twice",
            "1",
            "--webhook-no-action",
            "0.5",
        ])
        .unwrap();
        let sending = config.webhook.unwrap();
        assert_eq!(sending.url, url);
        assert_eq!(
            (sending.late, sending.late_by, sending.twice, sending.without_action),
            (0.1, Duration::from_secs(4), 1.0, 0.5)
        );
        assert_eq!(sending.attempts, 4, "Mailchimp's first attempt and three retries");
        let defaults = sandbox(&["--webhook-url", url]).unwrap().webhook.unwrap();
        assert_eq!(defaults, crate::sandbox::webhooks::WebhookSending::to(url));
        for (flag, value, says) in [
            ("--webhook-url", "ftp://x/y", "must start with http:// or https://"),
            ("--webhook-url", "/webhooks/mailchimp/x", "must start with http://"),
            ("--webhook-late", "1.5", "is not a fraction of events"),
            ("--webhook-twice=-0.1", "", "is not a fraction of events"),
            ("--webhook-late-seconds", "0", "webhook-late-seconds"),
        ] {
            let args: Vec<&str> = [flag, value].into_iter().filter(|a| !a.is_empty()).collect();
            let err = sandbox(&args).unwrap_err();
            assert!(err.contains(says), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn zero_rate_means_unlimited_and_nonsense_is_refused() {
        let config = settings(&[
            "--mailchimp-apikey",
            "a-us1",
            "--ometria-apikey",
            "k",
            "--ometria-max-requests-per-second",
            "0",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.ometria_max_requests_per_second, None);
        let err = Cli::try_parse_from(["x", "go", "--ometria-max-requests-per-second", "fast"]).unwrap_err();
        assert!(err.to_string().contains("is not a rate"), "{err}");
        let err = Cli::try_parse_from(["x", "go", "--tick-seconds", "0"]).unwrap_err();
        assert!(err.to_string().contains("tick-seconds"), "{err}");
    }
}
