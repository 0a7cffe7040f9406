//! Fake Mailchimp and Ometria APIs on one local HTTP server, faithful to
//! the contracts the importer relies on (SPEC §6), for `demo`, `bench` and
//! tests; `ometria-importer sandbox` serves them on their own.
//!
//! - [`audience`]: generated members and live mutations.
//! - [`mailchimp`]: `GET /3.0/lists/{id}/members` and `…/merge-fields`.
//! - [`fields`]: the members' typed merge fields, tags, permissions and
//!   location, drawn on demand.
//! - [`ometria`]: `POST /v2/push` and the legacy `POST /record`, also
//!   under `/_run/{run}/`, counted per run.
//! - [`faults`]: injected 5xx, 429 bursts, hangs, drops, truncations.
//! - [`projection`]: `fields` / `exclude_fields`.
//! - [`verify`]: does Ometria hold what Mailchimp holds?
//! - [`oracle`]: what a mapped field must be sent as (issue 17), from the
//!   sandbox's own knowledge of what it generated.
//! - [`control`]: `/_sandbox/…` endpoints to inspect and steer it over HTTP.
//! - [`webhooks`]: Mailchimp's audience webhooks for its mutations, sent
//!   to a URL, with late, doubled and action-less deliveries on demand.
//! - [`latency`]: how long each change takes to reach the fake Ometria.

pub mod audience;
pub mod control;
pub mod faults;
pub mod fields;
pub mod latency;
pub mod mailchimp;
pub mod ometria;
pub mod oracle;
pub mod projection;
pub mod verify;
pub mod webhooks;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;
use serde_json::json;

use crate::api::Api;
use audience::{Applied, Audience, Member, Mutation};
use faults::{Fault, FaultDice, Faults};
use latency::{Expected, Latency, LatencySnapshot};
use ometria::{Backlog, OmetriaStore, TokenBucket};
use webhooks::{Outgoing, WebhookSending};

pub const DEFAULT_MAILCHIMP_KEY: &str = "sandbox0mailchimp0key-us1";
pub const DEFAULT_OMETRIA_KEY: &str = "sandbox-ometria-key";
/// Records Ometria's backlog holds (SPEC §6).
pub const DEFAULT_OMETRIA_BACKLOG: u64 = 50_000;

/// Latency and faults of one API.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Behaviour {
    pub latency: Duration,
    /// Each answer takes `latency ± jitter`, uniformly.
    pub jitter: Duration,
    pub faults: Faults,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SandboxConfig {
    /// Seeds member generation, latency jitter, faults and mutations.
    pub seed: u64,
    /// List ids and their sizes.
    pub lists: Vec<(String, usize)>,
    pub mailchimp_key: String,
    pub ometria_key: String,
    pub mailchimp: Behaviour,
    /// Simultaneous Mailchimp requests per key before 429s; 0 = no cap.
    pub mailchimp_max_connections: usize,
    pub ometria: Behaviour,
    /// Ometria's token bucket per key; `None` = unlimited.
    pub ometria_requests_per_second: Option<f64>,
    /// Push bodies longer than this (bytes) are refused with 413. The
    /// default, 64 MiB, is what the server reads at most.
    pub ometria_max_body_bytes: usize,
    /// Records Ometria's backlog holds: a push that does not fit is
    /// answered 429.
    pub ometria_backlog: u64,
    /// Records per second the backlog drains; `None` = at once, so it
    /// never fills; `Some(0.0)` = never.
    pub ometria_drain_per_second: Option<f64>,
    /// Random changes to the lists while they are read; 0 = none.
    pub mutations_per_second: f64,
    /// Members sharing one `last_changed` second come back in a new order
    /// on every request, as SQL may return ties.
    pub shuffle_ties: bool,
    /// Every member of a list last changed in one second, as a bulk import
    /// leaves them.
    pub same_second: bool,
    /// A broken server or proxy in front of Mailchimp, if any.
    pub paging_bug: Option<mailchimp::PagingBug>,
    /// Server threads.
    pub workers: usize,
    /// Where Mailchimp's audience webhooks for the mutations go, if
    /// anywhere ([`World::send_webhooks`] changes it while running).
    pub webhook: Option<WebhookSending>,
}

/// The longest request body the sandbox reads.
const MAX_REQUEST_BODY_BYTES: usize = 64 * 1024 * 1024;

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            seed: 1,
            lists: vec![],
            mailchimp_key: DEFAULT_MAILCHIMP_KEY.into(),
            ometria_key: DEFAULT_OMETRIA_KEY.into(),
            mailchimp: Behaviour::default(),
            mailchimp_max_connections: 10,
            ometria: Behaviour::default(),
            ometria_requests_per_second: None,
            ometria_max_body_bytes: MAX_REQUEST_BODY_BYTES,
            ometria_backlog: DEFAULT_OMETRIA_BACKLOG,
            ometria_drain_per_second: None,
            mutations_per_second: 0.0,
            shuffle_ties: false,
            same_second: false,
            paging_bug: None,
            workers: 1,
            webhook: None,
        }
    }
}

/// Counters of what the sandbox saw.
#[derive(Default)]
pub struct Stats {
    mailchimp_requests: AtomicU64,
    mailchimp_throttled: AtomicU64,
    mailchimp_in_flight: AtomicUsize,
    mailchimp_max_in_flight: AtomicUsize,
    mailchimp_busy_micros: AtomicU64,
    ometria_requests: AtomicU64,
    ometria_throttled: AtomicU64,
    ometria_backlog_full: AtomicU64,
    ometria_backlog_least_remaining: AtomicU64,
    ometria_max_per_second: AtomicUsize,
    ometria_recent: Mutex<VecDeque<Instant>>,
    records_accepted: AtomicU64,
    records_rejected: AtomicU64,
    records_in_cut_answers: AtomicU64,
    faults: [AtomicU64; 6],
    mutations: AtomicU64,
    webhooks_sent: AtomicU64,
    webhooks_failed: AtomicU64,
    webhooks_retried: AtomicU64,
    webhooks_late: AtomicU64,
    webhooks_duplicated: AtomicU64,
    webhooks_without_action: AtomicU64,
    webhooks_in_flight: AtomicU64,
    webhooks_gone: AtomicBool,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    pub mailchimp_requests: u64,
    /// 429s for going over the simultaneous-connection cap.
    pub mailchimp_throttled: u64,
    pub mailchimp_max_in_flight: usize,
    /// Time Mailchimp requests were in flight, summed over requests: divided
    /// by a run's wall time, the average number in flight.
    pub mailchimp_busy_seconds: f64,
    pub ometria_requests: u64,
    /// 429s for going over the request rate.
    pub ometria_throttled: u64,
    /// 429s for a push that did not fit in the backlog.
    #[serde(default)]
    pub ometria_backlog_full: u64,
    /// The least room in the backlog any push's answer reported (records).
    #[serde(default)]
    pub ometria_backlog_least_remaining: u64,
    /// Most Ometria requests admitted within any one second.
    pub ometria_max_per_second: usize,
    pub records_accepted: u64,
    pub records_rejected: u64,
    /// Records stored by pushes whose answer was then dropped or cut: the
    /// client cannot know they were taken, and sends them again.
    pub records_in_cut_answers: u64,
    pub faults_injected: HashMap<String, u64>,
    pub mutations: u64,
    /// Webhook deliveries the receiver answered 2xx (a doubled event's
    /// two copies count twice).
    #[serde(default)]
    pub webhooks_sent: u64,
    /// Deliveries given up: every attempt failed, or the receiver answered
    /// 410 (or had before).
    #[serde(default)]
    pub webhooks_failed: u64,
    /// Attempts that failed and were tried again.
    #[serde(default)]
    pub webhooks_retried: u64,
    /// Events sent late, twice, and (`unsubscribe`s) without `data[action]`,
    /// as drawn ([`WebhookSending`]).
    #[serde(default)]
    pub webhooks_late: u64,
    #[serde(default)]
    pub webhooks_duplicated: u64,
    #[serde(default)]
    pub webhooks_without_action: u64,
    /// Events queued, waiting to be late or being delivered.
    #[serde(default)]
    pub webhooks_in_flight: u64,
    /// The receiver answered 410 Gone: no more events are sent to it.
    #[serde(default)]
    pub webhooks_gone: bool,
}

/// Holds one of Mailchimp's simultaneous-connection slots.
pub struct ConnectionSlot<'a> {
    stats: &'a Stats,
    since: Instant,
    counted: bool,
}

impl Drop for ConnectionSlot<'_> {
    fn drop(&mut self) {
        self.stats.mailchimp_in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.counted {
            let micros = self.since.elapsed().as_micros() as u64;
            self.stats.mailchimp_busy_micros.fetch_add(micros, Ordering::Relaxed);
        }
    }
}

/// Everything the sandbox holds, shared by its server threads.
pub struct World {
    pub config: SandboxConfig,
    lists: Mutex<HashMap<String, Audience>>,
    store: Mutex<OmetriaStore>,
    stats: Stats,
    mailchimp: Mutex<(Behaviour, FaultDice)>,
    ometria: Mutex<(Behaviour, FaultDice)>,
    bucket: Mutex<Option<TokenBucket>>,
    backlog: Mutex<Backlog>,
    mutation_rng: Mutex<fastrand::Rng>,
    tie_rng: Mutex<fastrand::Rng>,
    latency: Mutex<Latency>,
    webhook: Mutex<Option<WebhookSending>>,
    /// Draws which events go wrong (late, twice, without action).
    webhook_rng: Mutex<fastrand::Rng>,
    webhook_queue: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// Taken by [`Sandbox::start`], whose task delivers the events.
    webhook_events: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Outgoing>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

impl World {
    pub fn new(config: SandboxConfig) -> World {
        let now = now_seconds();
        let wide_ids = config.lists.iter().map(|(_, size)| size).sum::<usize>() > audience::WIDE_IDS_ABOVE;
        let lists = config
            .lists
            .iter()
            .map(|(id, size)| {
                let audience = Audience::generate_with(id, *size, config.seed, now, wide_ids);
                let audience = if config.same_second {
                    audience.in_one_second()
                } else {
                    audience
                };
                (id.clone(), audience)
            })
            .collect();
        let stats = Stats::default();
        stats
            .ometria_backlog_least_remaining
            .store(config.ometria_backlog, Ordering::Relaxed);
        let (webhook_queue, webhook_events) = tokio::sync::mpsc::unbounded_channel();
        World {
            lists: Mutex::new(lists),
            store: Mutex::new(OmetriaStore::default()),
            stats,
            mailchimp: Mutex::new((config.mailchimp, FaultDice::new(config.seed ^ 0x6d61_696c))),
            ometria: Mutex::new((config.ometria, FaultDice::new(config.seed ^ 0x6f6d_6574))),
            bucket: Mutex::new(config.ometria_requests_per_second.map(TokenBucket::new)),
            backlog: Mutex::new(Backlog::new(config.ometria_backlog, config.ometria_drain_per_second)),
            mutation_rng: Mutex::new(fastrand::Rng::with_seed(config.seed ^ 0x6d75_7461)),
            tie_rng: Mutex::new(fastrand::Rng::with_seed(config.seed ^ 0x7469_6573)),
            latency: Mutex::new(Latency::default()),
            webhook: Mutex::new(config.webhook.clone()),
            webhook_rng: Mutex::new(fastrand::Rng::with_seed(config.seed ^ 0x686f_6f6b)),
            webhook_queue,
            webhook_events: Mutex::new(Some(webhook_events)),
            config,
        }
    }

    /// The dice for [`SandboxConfig::shuffle_ties`].
    pub(crate) fn tie_rng(&self) -> MutexGuard<'_, fastrand::Rng> {
        lock(&self.tie_rng)
    }

    /// Changes an API's latency and faults while the sandbox runs.
    pub fn set_behaviour(&self, api: Api, behaviour: Behaviour) {
        let dice = match api {
            Api::Mailchimp => &self.mailchimp,
            Api::Ometria => &self.ometria,
        };
        lock(dice).0 = behaviour;
    }

    /// Changes how fast Ometria's backlog drains, from now on (see
    /// [`SandboxConfig::ometria_drain_per_second`]).
    pub fn set_ometria_drain(&self, per_second: Option<f64>) {
        lock(&self.backlog).set_drain(per_second, Instant::now());
    }

    /// The fault (if any) and latency of the next request to `api`.
    fn roll(&self, api: Api) -> (Option<Fault>, Duration, Duration) {
        let mut guard = lock(match api {
            Api::Mailchimp => &self.mailchimp,
            Api::Ometria => &self.ometria,
        });
        let (behaviour, dice) = &mut *guard;
        let fault = dice.roll(&behaviour.faults);
        if let Some(f) = fault {
            self.stats.faults[Fault::ALL.iter().position(|x| *x == f).unwrap_or(0)].fetch_add(1, Ordering::Relaxed);
        }
        let latency = dice.latency(behaviour.latency, behaviour.jitter);
        (fault, latency, behaviour.faults.hang_for)
    }

    /// A Mailchimp connection slot, or `None` over the cap.
    fn mailchimp_slot(&self) -> Option<ConnectionSlot<'_>> {
        let n = self.stats.mailchimp_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut slot = ConnectionSlot {
            stats: &self.stats,
            since: Instant::now(),
            counted: false,
        };
        let cap = self.config.mailchimp_max_connections;
        if cap > 0 && n > cap {
            self.stats.mailchimp_throttled.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.stats.mailchimp_max_in_flight.fetch_max(n, Ordering::SeqCst);
        slot.counted = true;
        Some(slot)
    }

    /// Admits an Ometria request, or says how long to wait.
    fn admit_ometria(&self) -> Result<(), Duration> {
        if let Some(bucket) = lock(&self.bucket).as_mut() {
            if let Err(wait) = bucket.take(Instant::now()) {
                self.stats.ometria_throttled.fetch_add(1, Ordering::Relaxed);
                return Err(wait);
            }
        }
        let now = Instant::now();
        let mut recent = lock(&self.stats.ometria_recent);
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            recent.pop_front();
        }
        self.stats
            .ometria_max_per_second
            .fetch_max(recent.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Queues a push of `records` in Ometria's backlog, or counts a push
    /// that does not fit.
    fn queue(&self, records: u64) -> bool {
        let fits = lock(&self.backlog).offer(records, Instant::now());
        if !fits {
            self.stats.ometria_backlog_full.fetch_add(1, Ordering::Relaxed);
        }
        fits
    }

    /// Room left in Ometria's backlog now, and its size (records).
    fn backlog_room(&self) -> (u64, u64) {
        let mut backlog = lock(&self.backlog);
        let remaining = backlog.remaining(Instant::now());
        self.stats
            .ometria_backlog_least_remaining
            .fetch_min(remaining, Ordering::Relaxed);
        (remaining, backlog.limit())
    }

    pub fn stats(&self) -> StatsSnapshot {
        let s = &self.stats;
        StatsSnapshot {
            mailchimp_requests: s.mailchimp_requests.load(Ordering::Relaxed),
            mailchimp_throttled: s.mailchimp_throttled.load(Ordering::Relaxed),
            mailchimp_max_in_flight: s.mailchimp_max_in_flight.load(Ordering::Relaxed),
            mailchimp_busy_seconds: s.mailchimp_busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
            ometria_requests: s.ometria_requests.load(Ordering::Relaxed),
            ometria_throttled: s.ometria_throttled.load(Ordering::Relaxed),
            ometria_backlog_full: s.ometria_backlog_full.load(Ordering::Relaxed),
            ometria_backlog_least_remaining: s.ometria_backlog_least_remaining.load(Ordering::Relaxed),
            ometria_max_per_second: s.ometria_max_per_second.load(Ordering::Relaxed),
            records_accepted: s.records_accepted.load(Ordering::Relaxed),
            records_rejected: s.records_rejected.load(Ordering::Relaxed),
            records_in_cut_answers: s.records_in_cut_answers.load(Ordering::Relaxed),
            faults_injected: Fault::ALL
                .iter()
                .zip(&s.faults)
                .map(|(f, n)| (f.name().to_owned(), n.load(Ordering::Relaxed)))
                .collect(),
            mutations: s.mutations.load(Ordering::Relaxed),
            webhooks_sent: s.webhooks_sent.load(Ordering::Relaxed),
            webhooks_failed: s.webhooks_failed.load(Ordering::Relaxed),
            webhooks_retried: s.webhooks_retried.load(Ordering::Relaxed),
            webhooks_late: s.webhooks_late.load(Ordering::Relaxed),
            webhooks_duplicated: s.webhooks_duplicated.load(Ordering::Relaxed),
            webhooks_without_action: s.webhooks_without_action.load(Ordering::Relaxed),
            webhooks_in_flight: s.webhooks_in_flight.load(Ordering::SeqCst),
            webhooks_gone: s.webhooks_gone.load(Ordering::SeqCst),
        }
    }

    /// Sends Mailchimp's webhooks for the mutations from now on as
    /// `sending` says, or none (`None`); a receiver that answered 410 is
    /// sent to again.
    pub fn send_webhooks(&self, sending: Option<WebhookSending>) {
        *lock(&self.webhook) = sending;
        self.stats.webhooks_gone.store(false, Ordering::SeqCst);
    }

    /// The change → Ometria latencies so far ([`latency`]).
    pub fn latency(&self) -> LatencySnapshot {
        lock(&self.latency).snapshot(Instant::now())
    }

    /// Ometria took the contact `id` (its JSON text `record`): ends the
    /// member's wait if it shows its change.
    fn contact_taken(&self, id: &str, record: &str, at: Instant) {
        let mut latency = lock(&self.latency);
        if latency.is_waiting() {
            if let Ok(record) = serde_json::from_str::<serde_json::Value>(record) {
                latency.pushed(id, &record, at);
            }
        }
    }

    /// Whether any change waits for Ometria: if not, pushes need no look.
    fn awaiting_contacts(&self) -> bool {
        lock(&self.latency).is_waiting()
    }

    /// Queues the events announcing `mutation` of `members` of `list_id`,
    /// if webhooks are sent; never waits for their delivery.
    fn announce(&self, list_id: &str, mutation: Mutation, members: &[Member], now: i64) {
        let Some(sending) = lock(&self.webhook).clone() else {
            return;
        };
        let Some(announcement) = webhooks::announced(mutation) else {
            return;
        };
        if self.stats.webhooks_gone.load(Ordering::SeqCst) {
            return;
        }
        let mut rng = lock(&self.webhook_rng);
        for member in members {
            let delivery = webhooks::plan(&mut rng, &sending, announcement.action.is_some());
            let Some(body) = webhooks::event_form(mutation, member, list_id, now, delivery.without_action) else {
                continue;
            };
            let s = &self.stats;
            for (happens, counter) in [
                (delivery.late_by.is_some(), &s.webhooks_late),
                (delivery.twice, &s.webhooks_duplicated),
                (delivery.without_action, &s.webhooks_without_action),
            ] {
                if happens {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
            s.webhooks_in_flight.fetch_add(1, Ordering::SeqCst);
            let event = Outgoing {
                body,
                sending: sending.clone(),
                delivery,
            };
            if self.webhook_queue.send(event).is_err() {
                s.webhooks_in_flight.fetch_sub(1, Ordering::SeqCst);
                s.webhooks_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Applies `count` mutations of `kind` to `list_id` now; what each did
    /// (`changed <unique_email_id>`). Each changed contact waits for
    /// Ometria from now ([`World::latency`]), and each mutation Mailchimp
    /// announces is queued as a webhook if they are sent.
    pub fn mutate(&self, list_id: &str, kind: Mutation, count: usize) -> Vec<String> {
        let now = now_seconds();
        let done: Vec<Member> = {
            let mut lists = lock(&self.lists);
            let Some(audience) = lists.get_mut(list_id) else {
                return vec![];
            };
            let mut rng = lock(&self.mutation_rng);
            let done: Vec<Applied> = (0..count).filter_map(|_| audience.apply(kind, &mut rng, now)).collect();
            // Noted under the lists' lock: no sync can read the change, and
            // no push can show it, before its wait starts.
            let at = Instant::now();
            let mut latency = lock(&self.latency);
            for Applied { before, member } in &done {
                let expected = match kind {
                    Mutation::Delete => Expected::Deleted,
                    _ => Expected::contact(member, list_id),
                };
                // A touch, or an unsubscribe of a member already
                // unsubscribed, changes no contact: nothing more to wait for.
                if before.as_ref().map(|b| Expected::contact(b, list_id)) == Some(expected.clone()) {
                    continue;
                }
                let id = member.unique_email_id.as_str();
                // A change undone before it was pushed: Ometria shows the member.
                let shown = self
                    .ometria_contact(id)
                    .is_some_and(|(record, _)| expected.shown_by(&record));
                match shown {
                    true => latency.settled(id),
                    false => latency.changed(id, expected, at),
                }
            }
            drop(latency);
            done.into_iter().map(|applied| applied.member).collect()
        };
        self.stats.mutations.fetch_add(done.len() as u64, Ordering::Relaxed);
        self.announce(list_id, kind, &done, now);
        done.iter()
            .map(|m| format!("{} {}", kind.as_str(), m.unique_email_id))
            .collect()
    }

    /// One mutation of a random kind to a random list.
    pub fn mutate_randomly(&self) -> Option<String> {
        let (list_id, kind) = {
            let mut rng = lock(&self.mutation_rng);
            let ids: Vec<String> = lock(&self.lists).keys().cloned().collect();
            if ids.is_empty() {
                return None;
            }
            (ids[rng.usize(0..ids.len())].clone(), Mutation::random(&mut rng))
        };
        self.mutate(&list_id, kind, 1).pop()
    }

    /// Sizes of the lists: (id, members by default, archived).
    pub fn list_sizes(&self) -> Vec<(String, usize, usize)> {
        let lists = lock(&self.lists);
        let mut sizes: Vec<_> = lists
            .values()
            .map(|a| {
                let archived = a
                    .window(audience::StatusFilter::Only(audience::Status::Archived), None, None)
                    .len();
                (a.id.clone(), a.len() - archived, archived)
            })
            .collect();
        sizes.sort();
        sizes
    }

    fn lists(&self) -> MutexGuard<'_, HashMap<String, Audience>> {
        lock(&self.lists)
    }

    fn store(&self) -> MutexGuard<'_, OmetriaStore> {
        lock(&self.store)
    }
}

/// A problem+json answer, as both APIs send with their errors.
pub fn problem(status: u16, title: &str, detail: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(code)
        .content_type("application/problem+json")
        .json(json!({
            "type": "https://mailchimp.com/developer/marketing/docs/errors/",
            "title": title, "status": status, "detail": detail, "instance": "sandbox"
        }))
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/3.0/lists/{list_id}/members", web::get().to(mailchimp::members))
        .route(
            "/3.0/lists/{list_id}/members/{subscriber_hash}",
            web::get().to(mailchimp::member),
        )
        .route(
            "/3.0/lists/{list_id}/merge-fields",
            web::get().to(mailchimp::merge_fields),
        )
        .route("/v2/push", web::post().to(ometria::push))
        .route("/record", web::post().to(ometria::record))
        .route("/_run/{run}/v2/push", web::post().to(ometria::push))
        .route("/_run/{run}/record", web::post().to(ometria::record))
        .configure(control::routes)
        .default_service(web::to(|| async {
            problem(404, "Resource Not Found", "The requested resource could not be found.")
        }));
}

/// A running sandbox.
pub struct Sandbox {
    world: Arc<World>,
    addr: SocketAddr,
    server: ServerHandle,
    stopped: Option<tokio::sync::oneshot::Receiver<()>>,
    mutator: Option<actix_rt::task::JoinHandle<()>>,
    /// Delivers the webhooks ([`webhooks::dispatch`]).
    dispatcher: Option<actix_rt::task::JoinHandle<()>>,
}

impl Sandbox {
    /// Serves the sandbox on `bind` (port 0 = any free port). Must be called
    /// inside an actix system. `signals`: stop on SIGINT/SIGTERM by itself.
    pub fn start(config: SandboxConfig, bind: SocketAddr, signals: bool) -> std::io::Result<Sandbox> {
        let workers = config.workers.max(1);
        let mutations_per_second = config.mutations_per_second;
        let world = Arc::new(World::new(config));
        let data = web::Data::from(world.clone());
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(MAX_REQUEST_BODY_BYTES))
                .configure(routes)
        })
        .workers(workers)
        .shutdown_timeout(1);
        if !signals {
            server = server.disable_signals();
        }
        let server = server.bind(bind)?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        let (stopped_tx, stopped) = tokio::sync::oneshot::channel();
        actix_rt::spawn(async move {
            let _ = server.await;
            let _ = stopped_tx.send(());
        });
        let mutator = (mutations_per_second > 0.0).then(|| {
            let world = world.clone();
            actix_rt::spawn(async move {
                let mut tick = actix_rt::time::interval(Duration::from_secs_f64(1.0 / mutations_per_second));
                loop {
                    tick.tick().await;
                    world.mutate_randomly();
                }
            })
        });
        let dispatcher = lock(&world.webhook_events)
            .take()
            .map(|events| actix_rt::spawn(webhooks::dispatch(events, world.clone())));
        Ok(Sandbox {
            world,
            addr,
            server: handle,
            stopped: Some(stopped),
            mutator,
            dispatcher,
        })
    }

    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What `MAILCHIMP_BASE_URL` should be.
    pub fn mailchimp_url(&self) -> String {
        format!("http://{}/3.0", self.addr)
    }

    /// What `OMETRIA_BASE_URL` should be.
    pub fn ometria_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the random mutations (`mutations_per_second`).
    pub fn stop_mutations(&mut self) {
        if let Some(m) = self.mutator.take() {
            m.abort();
        }
    }

    /// What to tell a user of the standalone sandbox: where it is, how to
    /// point the importer at it, what it holds.
    pub fn describe(&self) -> String {
        let config = &self.world.config;
        let mut text = format!(
            "sandbox: serving on http://{addr}\n\
             MAILCHIMP_BASE_URL=http://{addr}/3.0\nMAILCHIMP_APIKEY={}\n\
             OMETRIA_BASE_URL=http://{addr}\nOMETRIA_APIKEY={}\n",
            config.mailchimp_key,
            config.ometria_key,
            addr = self.addr
        );
        for (id, members, archived) in self.world.list_sizes() {
            text += &format!("list {id}: {members} members and {archived} archived\n");
        }
        if let Some(sending) = &config.webhook {
            // The URL's last segment is the receiver's secret: not shown.
            let shown = sending.url.rsplit_once('/').map_or("?", |(base, _)| base);
            text += &format!("webhooks: each announced change is posted to {shown}/<secret>\n");
        }
        text += &format!(
            "inspect: http://{}/_sandbox/stats, /_sandbox/verify, /_sandbox/lists, /_sandbox/latency\n",
            self.addr
        );
        text
    }

    /// Stops serving and sending webhooks; waits for the server to close.
    pub async fn stop(mut self) {
        self.stop_mutations();
        if let Some(dispatcher) = self.dispatcher.take() {
            dispatcher.abort();
        }
        self.server.stop(false).await;
    }

    /// Waits until the server stops by itself (on a signal).
    pub async fn wait(&mut self) {
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audience::Status;

    /// A world of one list `l` of one subscribed member, Ometria holding its contact.
    fn one_subscribed_member() -> (World, Member) {
        for seed in 1.. {
            let world = World::new(SandboxConfig {
                seed,
                lists: vec![("l".into(), 1)],
                ..SandboxConfig::default()
            });
            let member = world.lists()["l"].members().next().cloned().expect("one member");
            if member.status == Status::Subscribed {
                let contact = verify::expected_contact(&member, "l").to_string();
                world.store().contacts.insert(
                    member.unique_email_id.clone(),
                    ometria::Stored {
                        json: contact.into(),
                        writes: 1,
                    },
                );
                return (world, member);
            }
        }
        unreachable!("some seed makes a subscribed member")
    }

    #[test]
    fn a_sandbox_of_millions_of_members_has_wide_ids() {
        let world = |lists: Vec<(String, usize)>| {
            World::new(SandboxConfig {
                lists,
                ..SandboxConfig::default()
            })
        };
        let id_of = |w: &World, list: &str| w.lists()[list].members().next().unwrap().unique_email_id.clone();
        let small = world(vec![("a".into(), 10)]);
        let large = world(vec![("a".into(), 10), ("b".into(), audience::WIDE_IDS_ABOVE)]);
        assert_eq!(id_of(&small, "a").len(), 10);
        assert_eq!(id_of(&large, "a").len(), 12);
    }

    #[test]
    fn a_change_waits_until_a_later_change_undoes_it_and_a_touch_changes_nothing() {
        let (world, member) = one_subscribed_member();
        world.mutate("l", Mutation::Touch, 1);
        assert_eq!(world.latency().pending, 0, "a touch shows nothing new");
        world.mutate("l", Mutation::Unsubscribe, 1);
        assert_eq!(world.latency().pending, 1);
        world.mutate("l", Mutation::Touch, 1);
        world.mutate("l", Mutation::Unsubscribe, 1);
        assert_eq!(world.latency().pending, 1, "still waiting for the first change");
        // Subscribed again: as Ometria holds it, so no longer waiting.
        world.mutate("l", Mutation::Subscribe, 1);
        let latency = world.latency();
        assert_eq!((latency.pending, latency.count), (0, 0));
        // A push showing a change ends its wait, once.
        world.mutate("l", Mutation::Change, 1);
        assert_eq!(world.latency().pending, 1);
        let now = world.lists()["l"].members().next().cloned().unwrap();
        assert_eq!(now.unique_email_id, member.unique_email_id);
        let record = verify::expected_contact(&now, "l").to_string();
        world.contact_taken(&now.unique_email_id, &record, Instant::now());
        world.contact_taken(&now.unique_email_id, &record, Instant::now());
        let latency = world.latency();
        assert_eq!((latency.pending, latency.count), (0, 1));
    }
}
