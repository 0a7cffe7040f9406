//! Test doubles of both APIs on wiremock (127.0.0.1 only), generated
//! members, and helpers to run the importer in-process or as a binary.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Map, Value};
use wiremock::matchers::{basic_auth, header, method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use ometria_importer::api::ApiKey;
use ometria_importer::config::Config;
use ometria_importer::importer::RunError;
use ometria_importer::importer::{run, Signals};
use ometria_importer::mailchimp::subscriber_hash;
use ometria_importer::retry::RetryPolicy;
use ometria_importer::sandbox::projection::FieldTree;
use ometria_importer::sandbox::{Sandbox, DEFAULT_MAILCHIMP_KEY, DEFAULT_OMETRIA_KEY};
use ometria_importer::telemetry::log::{logger, SharedBuffer};
use ometria_importer::{RunMode, RunSummary};

pub const MAILCHIMP_KEY: &str = "mc0123456789secret-us9";
pub const OMETRIA_KEY: &str = "om-9876543210-secret";

/// A Mailchimp member as the real API sends it (more than we ask for).
#[derive(Clone, Debug)]
pub struct FakeMember {
    pub id: String,
    pub email: String,
    pub status: &'static str,
    pub fname: String,
    pub lname: String,
    pub timestamp_opt: String,
    pub last_changed: DateTime<Utc>,
    /// More merge fields (`PHONE`, `ADDRESS`, `BIRTHDAY`…), over the
    /// default ones of [`FakeMember::to_json`].
    pub merge_fields: Map<String, Value>,
    /// More of the member (`tags`, `vip`, `location`…), over the fields
    /// [`FakeMember::to_json`] writes.
    pub extra: Map<String, Value>,
}

impl FakeMember {
    pub fn to_json(&self) -> Value {
        let mut member = json!({
            "id": format!("hash-{}", self.id),
            "email_address": self.email,
            "unique_email_id": self.id,
            "status": self.status,
            "merge_fields": {"FNAME": self.fname, "LNAME": self.lname, "ADDRESS": "", "PHONE": ""},
            "stats": {"avg_open_rate": 0.25, "avg_click_rate": 0.1},
            "timestamp_opt": self.timestamp_opt,
            "last_changed": self.last_changed.to_rfc3339(),
            "list_id": "ignored",
            "tags": [],
        });
        let merge_fields = member["merge_fields"].as_object_mut().unwrap();
        merge_fields.extend(self.merge_fields.clone());
        member.as_object_mut().unwrap().extend(self.extra.clone());
        member
    }

    /// The member with merge field `tag` holding `value`.
    pub fn with_merge_field(mut self, tag: &str, value: Value) -> Self {
        self.merge_fields.insert(tag.into(), value);
        self
    }

    /// The member with its field `name` holding `value` (`tags`, `vip`…).
    pub fn with(mut self, name: &str, value: Value) -> Self {
        self.extra.insert(name.into(), value);
        self
    }

    /// The contact the importer must push for this member.
    pub fn expected_contact(&self, list_id: &str) -> Value {
        let optin = match self.status {
            "subscribed" => "EXPLICITLY_OPTEDIN",
            "unsubscribed" | "cleaned" | "archived" => "EXPLICITLY_OPTEDOUT",
            _ => "NOT_SPECIFIED",
        };
        let mut c = json!({"@type": "contact", "id": self.id, "email": self.email, "marketing_optin": optin,
            "properties": {"mailchimp_status": self.status, "mailchimp_list_id": list_id}});
        if !self.fname.is_empty() {
            c["firstname"] = json!(self.fname);
        }
        if !self.lname.is_empty() {
            c["lastname"] = json!(self.lname);
        }
        if self.status == "subscribed" {
            c["timestamp_subscribed"] = json!(self.timestamp_opt);
        }
        c
    }
}

/// `n` members changed over the hours before `until`, some sharing a
/// second, with every status, Unicode and empty names.
pub fn generate_members(n: usize, until: DateTime<Utc>) -> Vec<FakeMember> {
    const STATUSES: [&str; 6] = [
        "subscribed",
        "subscribed",
        "unsubscribed",
        "cleaned",
        "pending",
        "archived",
    ];
    const FIRST: [&str; 5] = ["Zoë", "", "李", "Ana María", "Urist"];
    const LAST: [&str; 4] = ["Ñúñez", "O'Brien", "", "Müller 🚀"];
    (0..n)
        .map(|i| FakeMember {
            id: format!("u{i:06}"),
            email: format!("member{i}@example.com"),
            status: STATUSES[i % STATUSES.len()],
            fname: FIRST[i % FIRST.len()].to_string(),
            lname: LAST[i % LAST.len()].to_string(),
            timestamp_opt: "2019-01-02T03:04:05+00:00".into(),
            // Two members per second, ending an hour before `until`.
            last_changed: until - chrono::Duration::seconds(3600 + (n - i) as i64 / 2),
            merge_fields: Map::new(),
            extra: Map::new(),
        })
        .collect()
}

/// `n` subscribed members, one per second, ending two hours ago.
pub fn subscribed(n: usize) -> Vec<FakeMember> {
    let until = Utc::now() - chrono::Duration::hours(2);
    let until = until - chrono::Duration::nanoseconds(until.timestamp_subsec_nanos().into());
    generate_members(n, Utc::now())
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| {
            m.status = "subscribed";
            m.last_changed = until - chrono::Duration::seconds((n - i) as i64);
            m
        })
        .collect()
}

/// Changes a list's members, given the request's `before_last_changed`.
pub type Mutation = fn(&mut [FakeMember], Option<DateTime<Utc>>);

/// Changes a page's records before they are sent, given the list's members.
pub type PageEdit = fn(&[FakeMember], &mut [Value]);

/// `GET /3.0/lists/{id}/members` over shared member lists, with the
/// filters, sort and paging the importer relies on.
#[derive(Clone, Default)]
pub struct FakeMailchimp {
    pub lists: Arc<Mutex<HashMap<String, Vec<FakeMember>>>>,
    /// Arrival time of every request, to see concurrency.
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
    pub delay: Duration,
    /// On this request (1-based), the first member changes after every
    /// window: all behind it shift one place.
    pub change_first_member_at: Option<usize>,
    /// On this request (1-based), the list's members are changed by this,
    /// given the request's `before_last_changed`.
    pub mutate_at: Option<(usize, Mutation)>,
    /// Applied to every page before it is sent (a proxy, a broken server):
    /// the list's members and the page's records.
    pub edit: Option<PageEdit>,
    /// `status=archived` dropped (a proxy): every pass gets the default members.
    pub ignores_status: bool,
    /// Mailchimp's clock this far from ours: its answers' `Date` header.
    pub clock_offset: Option<chrono::Duration>,
    /// Answer with only what the request's `fields` names, as Mailchimp
    /// does (off: every member whole, whatever was asked).
    pub applies_fields: bool,
}

impl FakeMailchimp {
    /// Answers every page after `delay`.
    pub fn slow(delay: Duration) -> Self {
        FakeMailchimp {
            delay,
            ..Default::default()
        }
    }

    pub fn with_list(self, list_id: &str, members: Vec<FakeMember>) -> Self {
        self.lists.lock().unwrap().insert(list_id.into(), members);
        self
    }
}

fn query(request: &Request) -> HashMap<String, String> {
    request
        .url
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn problem(status: u16, title: &str, detail: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/problem+json")
        .set_body_json(
            json!({"type": "https://mailchimp.com/developer/marketing/docs/errors/", "title": title,
               "status": status, "detail": detail, "instance": "x"}),
        )
}

impl Respond for FakeMailchimp {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let served = {
            let mut arrivals = self.arrivals.lock().unwrap();
            arrivals.push(Instant::now());
            arrivals.len()
        };
        let list_id = request.url.path_segments().unwrap().nth(2).unwrap().to_string();
        let q = query(request);
        let mut lists = self.lists.lock().unwrap();
        if self.change_first_member_at == Some(served) {
            if let Some(first) = lists.get_mut(&list_id).and_then(|m| m.first_mut()) {
                first.last_changed = Utc::now() + chrono::Duration::hours(1);
            }
        }
        let time = |name: &str| {
            q.get(name)
                .map(|t| DateTime::parse_from_rfc3339(t).unwrap().with_timezone(&Utc))
        };
        let (since, before) = (time("since_last_changed"), time("before_last_changed"));
        if let Some((_, mutate)) = self.mutate_at.filter(|(at, _)| *at == served) {
            if let Some(members) = lists.get_mut(&list_id) {
                mutate(members, before);
            }
        }
        let Some(members) = lists.get(&list_id) else {
            return problem(404, "Resource Not Found", "The requested resource could not be found.");
        };
        let archived = !self.ignores_status && q.get("status").map(String::as_str) == Some("archived");
        let mut selected: Vec<&FakeMember> = members
            .iter()
            .filter(|m| (m.status == "archived") == archived)
            .filter(|m| since.is_none_or(|s| m.last_changed > s))
            .filter(|m| before.is_none_or(|b| m.last_changed < b))
            .collect();
        assert_eq!(q.get("sort_field").map(String::as_str), Some("last_changed"));
        selected.sort_by_key(|m| (m.last_changed, m.id.clone()));
        let offset: usize = q.get("offset").map_or(0, |o| o.parse().unwrap());
        let count: usize = q.get("count").map_or(10, |c| c.parse().unwrap());
        let mut page: Vec<Value> = selected.iter().skip(offset).take(count).map(|m| m.to_json()).collect();
        if let Some(edit) = self.edit {
            edit(members, &mut page);
        }
        let mut body = json!({"members": page, "list_id": list_id, "total_items": selected.len(), "_links": []});
        if let Some(fields) = q.get("fields").filter(|_| self.applies_fields) {
            FieldTree::parse(fields).keep(&mut body);
        }
        let answer = ResponseTemplate::new(200).set_body_json(body).set_delay(self.delay);
        match self.clock_offset {
            Some(offset) => answer.insert_header(
                "date",
                (Utc::now() + offset).format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
            ),
            None => answer,
        }
    }
}

/// `POST /v2/push`, keeping every record received, in order.
#[derive(Clone, Default)]
pub struct FakeOmetria {
    pub records: Arc<Mutex<Vec<Value>>>,
    pub batch_sizes: Arc<Mutex<Vec<usize>>>,
    pub arrivals: Arc<Mutex<Vec<Instant>>>,
    /// Answer this status instead of accepting.
    pub fail_with: Option<u16>,
    /// Reject the records with these ids (they are not kept).
    pub reject_ids: Vec<String>,
    /// Refuse whole pushes, as Ometria does, for what they hold.
    pub refusals: Refusals,
    /// Every push that got past `fail_with`, refused or taken, in arrival order.
    pub pushes: Arc<Mutex<Vec<Push>>>,
    /// Report this backlog, `(remaining, limit)`, in every answer
    /// (`X-QueueSize-Remaining`, `X-QueueSize-Limit`), whatever it holds.
    pub backlog_headers: Option<(u64, u64)>,
}

/// Pushes Ometria refuses as a whole, answering `{"status": "ERROR",
/// "message": …}` and keeping nothing of them. Checked in this order.
#[derive(Clone, Debug, Default)]
pub struct Refusals {
    /// 413 for a body longer than this many bytes.
    pub body_over: Option<usize>,
    /// 400 for every push: a request Ometria cannot read at all.
    pub every_push: bool,
    /// 400 "Payload invalid: Record is too large." for a push holding a
    /// record longer than this many bytes (as JSON).
    pub record_over: Option<usize>,
    /// This status, with [`POISON_MESSAGE`], for a push holding a record
    /// with one of these ids.
    pub holding: Option<(u16, Vec<String>)>,
}

/// What the double answers a push holding a record of [`Refusals::holding`].
pub const POISON_MESSAGE: &str = "Payload invalid: lastname must not contain control characters.";

impl Refusals {
    /// The status and message to refuse `batch` (sent as `body_bytes`) with, if any.
    fn refuse(&self, body_bytes: usize, batch: &[Value]) -> Option<(u16, &'static str)> {
        if self.body_over.is_some_and(|max| body_bytes > max) {
            return Some((413, "Payload too large."));
        }
        if self.every_push {
            return Some((400, "Payload invalid: unexpected input."));
        }
        if let Some(max) = self.record_over {
            if batch.iter().any(|r| r.to_string().len() > max) {
                return Some((400, "Payload invalid: Record is too large."));
            }
        }
        if let Some((status, ids)) = &self.holding {
            if batch.iter().any(|r| ids.iter().any(|id| r["id"] == id.as_str())) {
                return Some((*status, POISON_MESSAGE));
            }
        }
        None
    }
}

/// One push as the double saw it.
#[derive(Clone, Debug)]
pub struct Push {
    pub body_bytes: usize,
    pub ids: Vec<String>,
    /// What the double answered.
    pub status: u16,
}

impl Respond for FakeOmetria {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        if let Some(status) = self.fail_with {
            return problem(status, "Internal Server Error", "try later");
        }
        let batch: Vec<Value> = serde_json::from_slice(&request.body).unwrap();
        let refusal = self.refusals.refuse(request.body.len(), &batch);
        self.pushes.lock().unwrap().push(Push {
            body_bytes: request.body.len(),
            ids: batch
                .iter()
                .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
                .collect(),
            status: refusal.map_or(200, |(status, _)| status),
        });
        if let Some((status, message)) = refusal {
            return ResponseTemplate::new(status).set_body_json(json!({"status": "ERROR", "message": message}));
        }
        let n = batch.len();
        self.batch_sizes.lock().unwrap().push(n);
        let (refused, kept): (Vec<Value>, Vec<Value>) = batch
            .into_iter()
            .partition(|r| self.reject_ids.iter().any(|id| r["id"] == id.as_str()));
        self.records.lock().unwrap().extend(kept);
        let rejected = refused.len() as u64;
        let answer = ResponseTemplate::new(200).set_body_json(
            json!({"status": "OK", "request_id": "req-1", "accepted": n as u64 - rejected, "rejected": rejected}),
        );
        match self.backlog_headers {
            Some((remaining, limit)) => answer
                .insert_header("X-QueueSize-Remaining", remaining.to_string())
                .insert_header("X-QueueSize-Limit", limit.to_string()),
            None => answer,
        }
    }
}

/// `GET /3.0/lists/{id}/members/{subscriber_hash}` over the members of a
/// [`FakeMailchimp`]: the member whose lower-cased address hashes to it, or
/// 404 as Mailchimp answers for a member deleted or never there.
struct MemberByHash(FakeMailchimp);

impl Respond for MemberByHash {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut segments = request.url.path_segments().unwrap();
        let (list_id, hash) = (segments.nth(2).unwrap(), segments.nth(1).unwrap());
        let lists = self.0.lists.lock().unwrap();
        let member = lists
            .get(list_id)
            .and_then(|members| members.iter().find(|m| subscriber_hash(&m.email) == hash));
        match member {
            Some(m) => ResponseTemplate::new(200).set_body_json(json!({"status": m.status})),
            None => problem(404, "Resource Not Found", "The requested resource could not be found."),
        }
    }
}

pub struct Apis {
    pub mailchimp: MockServer,
    pub ometria: MockServer,
    pub fake_mailchimp: FakeMailchimp,
    pub fake_ometria: FakeOmetria,
}

impl Apis {
    pub async fn start(fake_mailchimp: FakeMailchimp, fake_ometria: FakeOmetria) -> Apis {
        let mailchimp = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/3\.0/lists/[^/]+/members$"))
            .and(basic_auth("ometria-importer", MAILCHIMP_KEY))
            .respond_with(fake_mailchimp.clone())
            .mount(&mailchimp)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(r"^/3\.0/lists/[^/]+/members/[0-9a-f]{32}$"))
            .and(basic_auth("ometria-importer", MAILCHIMP_KEY))
            .respond_with(MemberByHash(fake_mailchimp.clone()))
            .mount(&mailchimp)
            .await;
        let ometria = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/v2/push"))
            .and(header("x-ometria-auth", OMETRIA_KEY))
            .and(header("content-type", "application/json"))
            .respond_with(fake_ometria.clone())
            .mount(&ometria)
            .await;
        Apis {
            mailchimp,
            ometria,
            fake_mailchimp,
            fake_ometria,
        }
    }

    pub fn mailchimp_url(&self) -> String {
        format!("{}/3.0", self.mailchimp.uri())
    }

    pub fn config(&self, state_dir: &Path) -> Config {
        let mut config = Config::new(
            &self.mailchimp_url(),
            MAILCHIMP_KEY.parse::<ApiKey>().unwrap(),
            &self.ometria.uri(),
            OMETRIA_KEY.parse::<ApiKey>().unwrap(),
            state_dir,
        );
        config.ometria_max_requests_per_second = None;
        config.retry = RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        };
        config
    }

    pub fn pushed(&self) -> Vec<Value> {
        self.fake_ometria.records.lock().unwrap().clone()
    }

    /// Every push Ometria saw (see [`FakeOmetria::pushes`]).
    pub fn pushes(&self) -> Vec<Push> {
        self.fake_ometria.pushes.lock().unwrap().clone()
    }

    /// Waits until the first request reaches Mailchimp: a sync is under way.
    pub async fn first_mailchimp_request(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.mailchimp.received_requests().await.unwrap_or_default().is_empty() {
            assert!(Instant::now() < deadline, "no request reached Mailchimp");
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Query strings of every request for a page of members, in arrival order.
    pub async fn mailchimp_queries(&self) -> Vec<HashMap<String, String>> {
        self.mailchimp
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| r.url.path().ends_with("/members"))
            .map(query)
            .collect()
    }

    /// Paths of every request for one member by subscriber hash.
    pub async fn member_lookups(&self) -> Vec<String> {
        self.mailchimp
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter(|r| !r.url.path().ends_with("/members"))
            .map(|r| r.url.path().to_owned())
            .collect()
    }
}

/// A state folder holding `state.json` with `content`.
pub fn state_dir(content: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    std::fs::write(&file, content).unwrap();
    (dir, file)
}

pub fn read_json(file: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
}

pub fn capture_log() -> (slog::Logger, SharedBuffer) {
    let buffer = SharedBuffer::default();
    (
        logger(ometria_importer::config::LogFormat::Text, buffer.clone()),
        buffer,
    )
}

/// The most `arrivals` (sorted) within any window of length `window`.
pub fn most_within(arrivals: &[Instant], window: Duration) -> usize {
    let mut most = 0;
    for (i, start) in arrivals.iter().enumerate() {
        most = most.max(arrivals[i..].iter().take_while(|&&t| t - *start < window).count());
    }
    most
}

/// Waits (at most 15 s) until the log shows `count` ticks of the controller.
pub async fn wait_for_ticks(log: &SharedBuffer, count: usize) {
    wait_until(Duration::from_secs(15), &format!("{count} ticks"), || {
        log.contents().matches("controller: checking all lists.").count() >= count
    })
    .await;
}

/// Polls `condition` every 20 ms until it holds, or panics after `limit`.
pub async fn wait_until(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A deadline that moves on whenever a long job makes progress: waiting
/// for the job fails when it stops advancing, not because the machine is
/// slow.
pub struct Stall {
    limit: Duration,
    progress: usize,
    since: Instant,
}

impl Stall {
    /// Fails once nothing moved for `limit`.
    pub fn new(limit: Duration) -> Stall {
        Stall {
            limit,
            progress: 0,
            since: Instant::now(),
        }
    }

    /// Notes `progress` (a count that only grows); panics if it has not
    /// grown for the limit.
    pub fn check(&mut self, progress: usize, what: &str) {
        if progress > self.progress {
            (self.progress, self.since) = (progress, Instant::now());
        }
        assert!(
            self.since.elapsed() < self.limit,
            "{what}: stuck at {progress} for {:?}",
            self.limit
        );
    }
}

/// A `latest_timestamp` of now, as the state file writes it: keeps an
/// entry up to date for its refresh interval (an hour by default).
pub fn cursor_now() -> String {
    cursor_minutes_ago(0)
}

/// A `latest_timestamp` `minutes` ago, as the state file writes it.
pub fn cursor_minutes_ago(minutes: i64) -> String {
    (Utc::now() - chrono::Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

/// What `once` returns when its one entry synced.
pub fn ok_once() -> RunSummary {
    RunSummary {
        succeeded: 1,
        ..RunSummary::default()
    }
}

/// Whether every entry of the state file `state` has a `latest_timestamp`.
pub fn every_entry_synced(state: &Value) -> bool {
    state
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e.get("latest_timestamp").is_some())
}

pub fn utc(text: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").unwrap())
}

/// One `once` pass in the foreground; panics if it cannot start.
pub async fn run_once(config: &Config, log: slog::Logger) -> RunSummary {
    run(config, RunMode::Once, Signals::Ignore, log)
        .await
        .expect("the run starts")
}

/// Runs the importer in the background of the test's actix system.
pub fn spawn_run(
    config: Config,
    mode: RunMode,
    log: slog::Logger,
) -> actix_rt::task::JoinHandle<Result<RunSummary, RunError>> {
    actix_rt::spawn(async move { run(&config, mode, Signals::Ignore, log).await })
}

/// Touches the quit file and waits (at most 5 s) for the run to end.
pub async fn quit(state_dir: &Path, run: actix_rt::task::JoinHandle<Result<RunSummary, RunError>>) -> RunSummary {
    std::fs::write(state_dir.join("controller.quit"), "").unwrap();
    actix_rt::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("stopped in time")
        .unwrap()
        .unwrap()
}

/// Port 0 on 127.0.0.1: servers in tests listen there only.
pub fn loopback() -> std::net::SocketAddr {
    std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))
}

/// The importer pointed at `sandbox` with its default keys, Ometria unlimited.
pub fn sandbox_config(sandbox: &Sandbox, state_dir: &Path) -> Config {
    let key = |k: &str| k.parse::<ApiKey>().unwrap();
    let mut config = Config::new(
        &sandbox.mailchimp_url(),
        key(DEFAULT_MAILCHIMP_KEY),
        &sandbox.ometria_url(),
        key(DEFAULT_OMETRIA_KEY),
        state_dir,
    );
    config.ometria_max_requests_per_second = None;
    config
}

/// The importer binary with the test keys on `state_dir`, Ometria
/// unpaced, pointed at `apis` if given; output captured.
pub fn importer_command(state_dir: &Path, apis: Option<&Apis>) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ometria-importer"));
    cmd.env_clear()
        .env("IMPORTER_STATE_DIR", state_dir)
        .env("MAILCHIMP_APIKEY", MAILCHIMP_KEY)
        .env("OMETRIA_APIKEY", OMETRIA_KEY)
        .env("OMETRIA_MAX_REQUESTS_PER_SECOND", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(apis) = apis {
        cmd.env("MAILCHIMP_BASE_URL", apis.mailchimp_url())
            .env("OMETRIA_BASE_URL", apis.ometria.uri());
    }
    cmd
}

/// Waits for the child to exit, polling; kills it after `limit`.
pub async fn exit_within(mut child: std::process::Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!(
                "the importer did not stop within {limit:?}: {:?}",
                child.wait_with_output().unwrap()
            );
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    child.wait_with_output().unwrap()
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The ledger of `dir` holding `members` under `ledger_key` (a list id, or
/// `<list_id>` U+001F `<collection>`), accepted a minute ago with hashes no
/// record has: each is pushed again if read.
pub fn seed_ledger(dir: &Path, ledger_key: &str, members: &[FakeMember]) {
    use ometria_importer::ledger::{record_hash, Accepted, LedgerStore};
    let now = Utc::now().timestamp();
    let (mut ledger, _) = LedgerStore::open(dir, now).unwrap();
    let accepted: Vec<Accepted> = members
        .iter()
        .map(|m| Accepted {
            member_id: m.id.clone(),
            hash: record_hash(m.id.as_bytes()),
            email: m.email.clone(),
            status: m.status.into(),
        })
        .collect();
    ledger.record_accepted(ledger_key, now - 60, &accepted).unwrap();
}
