//! The fake Ometria: `POST /v2/push` (and the legacy `POST /record`) with
//! key checks, a token-bucket rate limit, at most 100 records per push,
//! a push refused whole when it holds a record over 60 KB (400) or its
//! body is over a configured size (413), per-record validation counted as
//! rejected, records stored by id (last write wins), and the backlog
//! pushes wait in before Ometria processes them (`X-QueueSize-Limit`,
//! `X-QueueSize-Remaining`, 429 when full).
//!
//! `/_run/{run}/v2/push` and `/_run/{run}/record` are the same endpoints,
//! with what they take counted per `run` ([`RunWrites`]): a test points
//! each run of the importer at its own, and knows which run sent a push
//! even when it lands after that run has ended.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use actix_web::http::header::HeaderName;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::faults::{cut_short, Fault};
use super::{problem, World};
use crate::api::Api;
use crate::ometria::MAX_RECORD_BYTES;
use crate::state::parse_timestamp;

pub const MAX_RECORDS: usize = 100;
const JSON: &str = "application/json";

/// A record as stored: its JSON text and how often it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub json: Box<str>,
    pub writes: u32,
}

#[derive(Debug, Default)]
pub struct OmetriaStore {
    /// Contacts pushed through `/v2/push`, by id.
    pub contacts: HashMap<String, Stored>,
    /// Records posted to the legacy `/record`, by id.
    pub legacy: HashMap<String, Stored>,
    /// What the pushes sent under `/_run/{run}/…` did, by run. Kept with
    /// the records, under one lock, so that a snapshot of both agrees.
    pub runs: HashMap<String, RunWrites>,
    pushes: u64,
}

/// What Ometria did with the pushes of one run (sent to `/_run/{run}/…`),
/// whenever they arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunWrites {
    /// Records stored.
    pub records_accepted: u64,
    /// Records stored by pushes whose answer was then dropped or cut.
    pub records_in_cut_answers: u64,
    /// Records of pushes that hung (an injected fault): none of them was
    /// stored, and the answer, a 504, came only after `hang_for`.
    pub records_in_hung_pushes: u64,
}

impl OmetriaStore {
    fn put(map: &mut HashMap<String, Stored>, id: &str, record: &str) {
        let json: Box<str> = record.into();
        map.entry(id.to_owned())
            .and_modify(|s| {
                s.json = json.clone();
                s.writes += 1;
            })
            .or_insert(Stored { json, writes: 1 });
    }
}

/// Requests per second with a burst of one second's worth.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    pub fn new(rate: f64) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: None,
        }
    }

    /// Takes a token, or says how long until one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if let Some(last) = self.last {
            self.tokens = (self.tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.capacity);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// The records Ometria has received but not processed yet (SPEC §6: at
/// most 50,000, drained at a rate of its own). Only a count: the records
/// themselves are stored at once.
#[derive(Debug)]
pub struct Backlog {
    limit: u64,
    drain_per_second: Option<f64>,
    queued: f64,
    last: Option<Instant>,
}

impl Backlog {
    /// A backlog of `limit` records drained at `drain_per_second` records
    /// per second (`None`: at once, so it never fills).
    pub fn new(limit: u64, drain_per_second: Option<f64>) -> Backlog {
        Backlog {
            limit,
            drain_per_second,
            queued: 0.0,
            last: None,
        }
    }

    fn drain(&mut self, now: Instant) {
        match self.drain_per_second {
            None => self.queued = 0.0,
            Some(rate) => {
                if let Some(last) = self.last {
                    self.queued = (self.queued - now.duration_since(last).as_secs_f64() * rate).max(0.0);
                }
            }
        }
        self.last = Some(now);
    }

    /// Drains at `drain_per_second` from `now` on (see [`Backlog::new`]).
    pub fn set_drain(&mut self, drain_per_second: Option<f64>, now: Instant) {
        self.drain(now);
        self.drain_per_second = drain_per_second;
    }

    /// Records it can still take now.
    pub fn remaining(&mut self, now: Instant) -> u64 {
        self.drain(now);
        self.limit.saturating_sub(self.queued.ceil() as u64)
    }

    /// Queues `records`, or refuses them all when they do not fit.
    pub fn offer(&mut self, records: u64, now: Instant) -> bool {
        let fits = records <= self.remaining(now);
        if fits {
            self.queued += records as f64;
        }
        fits
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The fields of a pushed contact that Ometria checks, borrowed from the
/// request body: validating a record allocates next to nothing.
#[derive(Deserialize)]
struct ContactView<'a> {
    #[serde(rename = "@type", borrow)]
    record_type: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    email: Cow<'a, str>,
    // Names and properties are read only to check their types.
    #[allow(dead_code)]
    #[serde(default, borrow)]
    firstname: Option<Cow<'a, str>>,
    #[allow(dead_code)]
    #[serde(default, borrow)]
    lastname: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    marketing_optin: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    timestamp_subscribed: Option<Cow<'a, str>>,
    #[allow(dead_code)]
    #[serde(default)]
    properties: Option<HashMap<Cow<'a, str>, IgnoredAny>>,
}

/// Why Ometria would refuse this contact (its JSON text), if it would.
pub fn contact_problem(record: &str) -> Option<&'static str> {
    let Ok(c) = serde_json::from_str::<ContactView>(record) else {
        return Some("a contact needs @type, id and email as text, names as text and properties as an object");
    };
    if c.record_type != "contact" {
        return Some("@type must be \"contact\"");
    }
    if c.id.is_empty() {
        return Some("id is required");
    }
    if !c.email.contains('@') || c.email.chars().any(char::is_whitespace) {
        return Some("email is not an email address");
    }
    match c.marketing_optin.as_deref() {
        None | Some("EXPLICITLY_OPTEDIN" | "EXPLICITLY_OPTEDOUT" | "NOT_SPECIFIED") => {}
        Some(_) => return Some("marketing_optin is not a known value"),
    }
    if c.timestamp_subscribed.is_some_and(|t| parse_timestamp(&t).is_none()) {
        return Some("timestamp_subscribed is not a time");
    }
    None
}

/// The `@type` and `id` of a record, if it has them as text.
#[derive(Deserialize)]
struct Identity<'a> {
    #[serde(rename = "@type", default, borrow)]
    record_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

/// A request [`admit`] answered itself, storing nothing.
struct Turned {
    answer: HttpResponse,
    /// It hung (an injected fault) before the answer.
    hung: bool,
}

impl From<HttpResponse> for Turned {
    fn from(answer: HttpResponse) -> Self {
        Turned { answer, hung: false }
    }
}

/// The run a request was sent for (`/_run/{run}/…`), if any.
fn run_of(req: &HttpRequest) -> Option<&str> {
    req.match_info().get("run")
}

/// Key, rate limit, faults and latency: what every write goes through.
/// `Err` is the answer to send instead of processing the request.
async fn admit(req: &HttpRequest, world: &World, auth_header: &str) -> Result<Option<Fault>, Turned> {
    world.stats.ometria_requests.fetch_add(1, Ordering::Relaxed);
    let key = req.headers().get(auth_header).and_then(|v| v.to_str().ok());
    if key != Some(world.config.ometria_key.as_str()) {
        return Err(problem(401, "Unauthorized", "Missing or invalid API key.").into());
    }
    if let Err(wait) = world.admit_ometria() {
        let mut answer = problem(429, "Too Many Requests", "Rate limit exceeded; slow down.");
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        answer
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, seconds.into());
        return Err(answer.into());
    }
    let (fault, latency, hang_for) = world.roll(Api::Ometria);
    match fault {
        Some(Fault::Throttle | Fault::Forbidden) => {
            let mut answer = problem(429, "Too Many Requests", "Backlog full; slow down.");
            answer
                .headers_mut()
                .insert(actix_web::http::header::RETRY_AFTER, 1u64.into());
            return Err(answer.into());
        }
        Some(Fault::Hang) => {
            actix_rt::time::sleep(hang_for).await;
            return Err(Turned {
                answer: problem(504, "Gateway Timeout", "The request took too long."),
                hung: true,
            });
        }
        _ => {}
    }
    actix_rt::time::sleep(latency).await;
    if fault == Some(Fault::ServerError) {
        return Err(problem(503, "Service Unavailable", "Please try again later.").into());
    }
    Ok(fault)
}

/// The answer to a request `admit` turned away; a hung push is counted
/// for its run.
fn turned_away(req: &HttpRequest, body: &[u8], world: &World, turned: Turned) -> HttpResponse {
    if let (true, Some(run)) = (turned.hung, run_of(req)) {
        let records = batch(body).map_or(0, |r| r.len() as u64);
        world
            .store()
            .runs
            .entry(run.to_owned())
            .or_default()
            .records_in_hung_pushes += records;
    }
    turned.answer
}

/// Counts what a push of `run` stored, under the store's lock.
fn count_for_run(store: &mut OmetriaStore, run: Option<&str>, accepted: u64, fault: Option<Fault>) {
    let Some(run) = run else { return };
    let counts = store.runs.entry(run.to_owned()).or_default();
    counts.records_accepted += accepted;
    if matches!(fault, Some(Fault::Drop | Fault::Truncate)) {
        counts.records_in_cut_answers += accepted;
    }
}

/// The batch of records in `body` (each as its JSON text), or the 400 to answer.
fn batch(body: &[u8]) -> Result<Vec<&RawValue>, Box<HttpResponse>> {
    let records: Vec<&RawValue> = serde_json::from_slice(body).map_err(|e| {
        problem(
            400,
            "Invalid JSON",
            &format!("the body must be a JSON array of records: {e}"),
        )
    })?;
    if records.len() > MAX_RECORDS {
        return Err(Box::new(problem(
            400,
            "Too Many Records",
            &format!("at most {MAX_RECORDS} records per request, got {}", records.len()),
        )));
    }
    Ok(records)
}

/// An error as Ometria answers it: `{"status": "ERROR", "message": …}`.
fn ometria_error(status: u16, message: &str) -> HttpResponse {
    let code = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    HttpResponse::build(code)
        .content_type(JSON)
        .json(json!({"status": "ERROR", "message": message}))
}

/// The answer, possibly cut short by a fault (after the work was done).
fn answer(fault: Option<Fault>, status: actix_web::http::StatusCode, body: Value) -> HttpResponse {
    let bytes = body.to_string().into_bytes();
    match fault {
        Some(Fault::Drop) => cut_short(JSON, bytes, 0),
        Some(Fault::Truncate) => {
            let half = bytes.len() / 2;
            cut_short(JSON, bytes, half)
        }
        _ => HttpResponse::build(status).content_type(JSON).body(bytes),
    }
}

/// `POST /v2/push`. Every answer past the key check says how much room
/// the backlog has left, as Ometria's do.
pub async fn push(req: HttpRequest, body: web::Bytes, world: web::Data<World>) -> HttpResponse {
    let mut answer = take_push(&req, &body, &world).await;
    if answer.status() != actix_web::http::StatusCode::UNAUTHORIZED {
        let (remaining, limit) = world.backlog_room();
        let headers = answer.headers_mut();
        headers.insert(HeaderName::from_static("x-queuesize-limit"), limit.into());
        headers.insert(HeaderName::from_static("x-queuesize-remaining"), remaining.into());
    }
    answer
}

async fn take_push(req: &HttpRequest, body: &[u8], world: &World) -> HttpResponse {
    let fault = match admit(req, world, "x-ometria-auth").await {
        Ok(f) => f,
        Err(turned) => return turned_away(req, body, world, turned),
    };
    if body.len() > world.config.ometria_max_body_bytes {
        return ometria_error(413, "Payload too large.");
    }
    let records = match batch(body) {
        Ok(r) => r,
        Err(answer) => return *answer,
    };
    // Ometria's limit per record (SPEC §6); the whole push is refused, and
    // nothing of it stored.
    if records.iter().any(|r| r.get().len() > MAX_RECORD_BYTES) {
        return ometria_error(400, "Payload invalid: Record is too large.");
    }
    let identities: Vec<Identity> = records
        .iter()
        .map(|r| {
            serde_json::from_str(r.get()).unwrap_or(Identity {
                record_type: None,
                id: None,
            })
        })
        .collect();
    if identities
        .windows(2)
        .any(|w| w[0].record_type.is_some() && w[1].record_type.is_some() && w[0].record_type != w[1].record_type)
    {
        return problem(
            400,
            "Mixed Records",
            "all records of one request must have the same @type",
        );
    }
    if !world.queue(records.len() as u64) {
        // No Retry-After: only the headers say when there will be room.
        return problem(
            429,
            "Too Many Requests",
            "The backlog is full; slow down until X-QueueSize-Remaining rises.",
        );
    }
    let (mut accepted, mut rejected) = (0u64, 0u64);
    // Which records were stored, when a change waits for Ometria (the
    // latency of each is taken once the store is released).
    let timing = world.awaiting_contacts();
    let mut taken: Vec<usize> = vec![];
    let request_id = {
        let mut store = world.store();
        for (i, (record, identity)) in records.iter().zip(&identities).enumerate() {
            match (&identity.id, contact_problem(record.get())) {
                (Some(id), None) => {
                    OmetriaStore::put(&mut store.contacts, id, record.get());
                    accepted += 1;
                    if timing {
                        taken.push(i);
                    }
                }
                _ => rejected += 1,
            }
        }
        store.pushes += 1;
        count_for_run(&mut store, run_of(req), accepted, fault);
        format!("sandbox-{:08}", store.pushes)
    };
    let now = Instant::now();
    for i in taken {
        if let Some(id) = &identities[i].id {
            world.contact_taken(id, records[i].get(), now);
        }
    }
    world.stats.records_accepted.fetch_add(accepted, Ordering::Relaxed);
    world.stats.records_rejected.fetch_add(rejected, Ordering::Relaxed);
    if matches!(fault, Some(Fault::Drop | Fault::Truncate)) {
        world
            .stats
            .records_in_cut_answers
            .fetch_add(accepted, Ordering::Relaxed);
    }
    answer(
        fault,
        actix_web::http::StatusCode::OK,
        json!({"status": "OK", "request_id": request_id, "accepted": accepted, "rejected": rejected}),
    )
}

pub async fn record(req: HttpRequest, body: web::Bytes, world: web::Data<World>) -> HttpResponse {
    let fault = match admit(&req, &world, "authorization").await {
        Ok(f) => f,
        Err(turned) => return turned_away(&req, &body, &world, turned),
    };
    let records = match batch(&body) {
        Ok(r) => r,
        Err(answer) => return *answer,
    };
    let mut accepted = 0u64;
    {
        let mut store = world.store();
        for record in &records {
            #[derive(Deserialize)]
            struct Legacy<'a> {
                #[serde(borrow)]
                id: Cow<'a, str>,
                #[serde(borrow)]
                email: Cow<'a, str>,
            }
            if let Ok(r) = serde_json::from_str::<Legacy>(record.get()) {
                if !r.id.is_empty() && r.email.contains('@') {
                    OmetriaStore::put(&mut store.legacy, &r.id, record.get());
                    accepted += 1;
                }
            }
        }
        count_for_run(&mut store, run_of(&req), accepted, fault);
    }
    world.stats.records_accepted.fetch_add(accepted, Ordering::Relaxed);
    world
        .stats
        .records_rejected
        .fetch_add(records.len() as u64 - accepted, Ordering::Relaxed);
    answer(
        fault,
        actix_web::http::StatusCode::CREATED,
        json!({"status": "OK", "content": accepted}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_second_of_burst_then_the_rate() {
        let mut bucket = TokenBucket::new(8.0);
        let t0 = Instant::now();
        assert!((0..8).all(|_| bucket.take(t0).is_ok()));
        let wait = bucket.take(t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(125));
        assert!(bucket.take(t0 + Duration::from_millis(125)).is_ok());
        assert!(bucket.take(t0 + Duration::from_millis(130)).is_err());
    }

    #[test]
    fn the_backlog_drains_at_its_rate_and_refuses_what_does_not_fit() {
        let t0 = Instant::now();
        let mut backlog = Backlog::new(250, Some(100.0));
        assert!(backlog.offer(100, t0));
        assert!(backlog.offer(100, t0));
        assert_eq!(backlog.remaining(t0), 50);
        assert!(!backlog.offer(100, t0), "a push that does not fit is refused whole");
        assert_eq!(backlog.remaining(t0), 50);
        assert_eq!(backlog.remaining(t0 + Duration::from_millis(500)), 100);
        assert!(backlog.offer(100, t0 + Duration::from_millis(500)));
        assert_eq!(backlog.remaining(t0 + Duration::from_secs(10)), 250);
        let mut at_once = Backlog::new(250, None);
        assert!((0..10).all(|_| at_once.offer(100, t0)));
        assert_eq!(at_once.remaining(t0), 250);
        // A backlog that does not drain until it is told to.
        let mut stuck = Backlog::new(250, Some(0.0));
        assert!(stuck.offer(200, t0));
        assert_eq!(stuck.remaining(t0 + Duration::from_secs(10)), 50);
        stuck.set_drain(Some(100.0), t0 + Duration::from_secs(10));
        assert_eq!(stuck.remaining(t0 + Duration::from_secs(11)), 150);
    }

    #[test]
    fn contacts_are_validated() {
        let good = json!({"@type": "contact", "id": "a", "email": "a@x.io", "marketing_optin": "NOT_SPECIFIED",
                          "timestamp_subscribed": "2019-10-18T22:20:23+00:00", "properties": {}});
        assert_eq!(contact_problem(&good.to_string()), None);
        let shape = "a contact needs @type, id and email as text, names as text and properties as an object";
        for (field, value, why) in [
            ("@type", json!("order"), "@type must be \"contact\""),
            ("id", json!(""), "id is required"),
            ("email", json!("nobody"), "email is not an email address"),
            ("firstname", json!(3), shape),
            ("marketing_optin", json!("YES"), "marketing_optin is not a known value"),
            (
                "timestamp_subscribed",
                json!("soon"),
                "timestamp_subscribed is not a time",
            ),
            ("properties", json!([]), shape),
            ("email", json!(null), shape),
        ] {
            let mut bad = good.clone();
            bad[field] = value;
            assert_eq!(contact_problem(&bad.to_string()), Some(why), "{field}");
        }
    }
}
