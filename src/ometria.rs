//! Ometria Data API v2 (`POST /v2/push`) and the legacy `/record` endpoint
//! (SPEC §6): contact records, batches within Ometria's limits, and the
//! push client.

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::{self, Api, ApiError, ApiKey, Patience};
use crate::config::OmetriaApi;
use crate::limits::{Answer, Pacer};
use crate::rejected::Rejection;
use crate::telemetry::metrics::Metrics;

/// Ometria takes at most this many records per push (SPEC §6).
pub const MAX_BATCH: usize = 100;

/// Ometria takes at most 60 KB per record (SPEC §6), read here as
/// 60 × 1024 = 61,440 bytes of the record as encoded (JSON, UTF-8). The
/// larger reading of "KB": should Ometria count in thousands, the push
/// holding a record between the two is refused and split, and the record
/// found that way ([`crate::rejected::deliver`]).
pub const MAX_RECORD_BYTES: usize = 60 * 1024;

/// A push body (`[`, the records joined by `,`, `]`) is kept within this
/// many bytes, 1 MiB. Ometria publishes no body limit beyond 100 records of
/// 60 KB (about 6 MB), but what stands in front of an HTTP API often takes
/// less, and 1 MiB is the common default (nginx's `client_max_body_size`).
/// It still holds 100 records of 10 KB each; a contact mapped from
/// Mailchimp is about 300 bytes, so only batches of unusually large records
/// are cut shorter. A server that takes less answers 413, and the push is
/// split ([`crate::rejected::deliver`]).
pub const MAX_PUSH_BYTES: usize = 1024 * 1024;

/// Gathers encoded records into push batches within Ometria's limits
/// (SPEC §6): at most [`MAX_BATCH`] records whose body — `[`, the records
/// joined by `,`, `]` — is at most [`MAX_PUSH_BYTES`] bytes. A record over
/// [`MAX_RECORD_BYTES`] is handed back as a [`Rejection`] instead of
/// batched: Ometria would refuse the whole push holding it.
///
/// Records keep their order; a batch is closed when it is full or when the
/// next record would not fit, which then opens the next batch.
#[derive(Debug)]
pub struct Batcher {
    open: Vec<Bytes>,
    /// Bytes of the body `open` makes (0 while empty).
    body: usize,
    max_records: usize,
    /// The largest record taken: within the record limit, and small enough
    /// for a body of its own.
    max_record: usize,
    max_body: usize,
}

impl Default for Batcher {
    /// Ometria's limits: [`MAX_BATCH`], [`MAX_RECORD_BYTES`], [`MAX_PUSH_BYTES`].
    fn default() -> Self {
        Batcher::with_limits(MAX_BATCH, MAX_RECORD_BYTES, MAX_PUSH_BYTES)
    }
}

impl Batcher {
    /// A batcher of at most `max_records` records (at least 1) per batch,
    /// `max_record_bytes` per record and `max_body_bytes` per body. A
    /// record is refused when it is over `max_record_bytes`, or too large
    /// for a body of its own.
    pub fn with_limits(max_records: usize, max_record_bytes: usize, max_body_bytes: usize) -> Batcher {
        let max_records = max_records.max(1);
        Batcher {
            open: Vec::with_capacity(max_records),
            body: 0,
            max_records,
            max_record: max_record_bytes.min(max_body_bytes.saturating_sub(2)),
            max_body: max_body_bytes,
        }
    }

    /// Takes one record. `Ok(Some(batch))` when that closed a batch,
    /// `Ok(None)` while the batch stays open, and `Err` with the record and
    /// the reason when it is too large to send at all.
    pub fn add(&mut self, record: Bytes) -> Result<Option<Vec<Bytes>>, Rejection> {
        if record.len() > self.max_record {
            let reason = format!(
                "the record is {} bytes once encoded; Ometria takes at most {}",
                thousands(record.len()),
                thousands(self.max_record)
            );
            return Err(Rejection { record, reason });
        }
        // A record that does not fit closes the open batch and opens the
        // next; one that fits an empty batch always does (checked above).
        let closed = if !self.open.is_empty() && self.body + 1 + record.len() > self.max_body {
            self.flush()
        } else {
            None
        };
        self.body = if self.open.is_empty() {
            record.len() + 2
        } else {
            self.body + 1 + record.len()
        };
        self.open.push(record);
        // Never both: a batch just closed held at least one record, fewer
        // than `max_records`, so this record alone does not fill the next.
        if self.open.len() == self.max_records {
            return Ok(self.flush());
        }
        Ok(closed)
    }

    /// The open batch, if it holds any record: the last batch, once every
    /// record was added.
    pub fn flush(&mut self) -> Option<Vec<Bytes>> {
        if self.open.is_empty() {
            return None;
        }
        self.body = 0;
        Some(std::mem::replace(&mut self.open, Vec::with_capacity(self.max_records)))
    }
}

/// `70123` as `70,123`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// A contact record as pushed to Ometria (SPEC §5), borrowing its text
/// from the member it was mapped from and from the entry's mapping.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contact<'a> {
    #[serde(rename = "@type")]
    pub record_type: &'static str,
    /// The entry's `collection` (issue 17): Ometria keeps each source's
    /// records apart, so one source's gaps never blank another's values.
    #[serde(rename = "@collection", skip_serializing_if = "Option::is_none")]
    pub collection: Option<&'a str>,
    /// The entry's `force_optin: true` (issue 17): this source's opt-in
    /// wins over others' (a third-party source's is otherwise the lowest).
    #[serde(rename = "@force_optin", skip_serializing_if = "std::ops::Not::not")]
    pub force_optin: bool,
    pub id: &'a str,
    pub email: &'a str,
    /// `FNAME`, or what the entry's mapping reads instead (always in this
    /// place of the record, so that restating the default changes no byte).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<Cow<'a, str>>,
    /// Contact fields the entry's mapping adds (issue 17), in record order.
    #[serde(flatten)]
    pub mapped: MappedFields,
    pub marketing_optin: MarketingOptin,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// An RFC 3339 instant in UTC (see [`crate::transform::ometria_timestamp`]).
    pub timestamp_subscribed: Option<Cow<'a, str>>,
    pub properties: ContactProperties<'a>,
}

/// Fields a mapping adds to a record: `(name, value)` in record order,
/// each value already converted to what its field takes
/// ([`crate::mapping::convert`]). Serialised as keys of the record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappedFields(pub Vec<(&'static str, serde_json::Value)>);

impl Serialize for MappedFields {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarketingOptin {
    ExplicitlyOptedin,
    ExplicitlyOptedout,
    NotSpecified,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactProperties<'a> {
    /// Left out when Mailchimp gave no status.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub mailchimp_status: &'a str,
    pub mailchimp_list_id: &'a str,
    /// Properties the entry's mapping adds (issue 17), nested objects for
    /// dotted names, in record order.
    #[serde(flatten)]
    pub mapped: serde_json::Map<String, serde_json::Value>,
}

/// The legacy endpoint's record: `{id, email, status, firstname, lastname}`.
#[derive(Serialize)]
struct LegacyRecord<'a> {
    id: &'a str,
    email: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    firstname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lastname: Option<&'a str>,
}

impl<'a> From<&'a Contact<'_>> for LegacyRecord<'a> {
    fn from(c: &'a Contact<'_>) -> Self {
        LegacyRecord {
            id: c.id,
            email: c.email,
            status: c.properties.mailchimp_status,
            firstname: c.firstname.as_deref(),
            lastname: c.lastname.as_deref(),
        }
    }
}

/// Appends `contact` as the JSON record `api` takes.
///
/// The push record is written by hand: it is the hottest code of a sync,
/// and most text needs no escaping, which serde_json checks byte by byte.
/// The output is byte for byte what `serde_json::to_writer(contact)` gives.
pub fn encode(contact: &Contact, api: OmetriaApi, parsed: ParsedFrom, out: &mut Vec<u8>) {
    if api == OmetriaApi::Record {
        serde_json::to_writer(out, &LegacyRecord::from(contact)).expect("writing to memory cannot fail");
        return;
    }
    out.extend_from_slice(br#"{"@type":"#);
    text(out, contact.record_type, parsed);
    if let Some(collection) = contact.collection {
        out.extend_from_slice(br#","@collection":"#);
        text(out, collection, ParsedFrom::default());
    }
    if contact.force_optin {
        out.extend_from_slice(br#","@force_optin":true"#);
    }
    out.extend_from_slice(br#","id":"#);
    text(out, contact.id, parsed);
    out.extend_from_slice(br#","email":"#);
    text(out, contact.email, parsed);
    if let Some(name) = contact.firstname.as_deref() {
        out.extend_from_slice(br#","firstname":"#);
        text(out, name, parsed);
    }
    if let Some(name) = contact.lastname.as_deref() {
        out.extend_from_slice(br#","lastname":"#);
        text(out, name, parsed);
    }
    for (name, value) in &contact.mapped.0 {
        out.push(b',');
        text(out, name, ParsedFrom::default());
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("writing to memory cannot fail");
    }
    out.extend_from_slice(match contact.marketing_optin {
        MarketingOptin::ExplicitlyOptedin => br#","marketing_optin":"EXPLICITLY_OPTEDIN""#.as_slice(),
        MarketingOptin::ExplicitlyOptedout => br#","marketing_optin":"EXPLICITLY_OPTEDOUT""#,
        MarketingOptin::NotSpecified => br#","marketing_optin":"NOT_SPECIFIED""#,
    });
    if let Some(at) = contact.timestamp_subscribed.as_deref() {
        out.extend_from_slice(br#","timestamp_subscribed":"#);
        text(out, at, parsed);
    }
    out.extend_from_slice(br#","properties":{"#);
    if !contact.properties.mailchimp_status.is_empty() {
        out.extend_from_slice(br#""mailchimp_status":"#);
        text(out, contact.properties.mailchimp_status, parsed);
        out.push(b',');
    }
    out.extend_from_slice(br#""mailchimp_list_id":"#);
    text(out, contact.properties.mailchimp_list_id, parsed);
    for (name, value) in &contact.properties.mapped {
        out.push(b',');
        text(out, name, ParsedFrom::default());
        out.push(b':');
        serde_json::to_writer(&mut *out, value).expect("writing to memory cannot fail");
    }
    out.extend_from_slice(b"}}");
}

/// The JSON document a contact's text was parsed from, if any.
///
/// serde_json lends out a string of the document it parses only when the
/// string holds no escape sequence, and it refuses raw control characters,
/// so text lying inside the document has no `"`, `\` or control character
/// in it: [`encode`] copies such text without looking at it.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParsedFrom<'a>(pub &'a [u8]);

impl ParsedFrom<'_> {
    fn holds(&self, text: &str) -> bool {
        let document = self.0.as_ptr_range();
        let text = text.as_bytes().as_ptr_range();
        document.start <= text.start && text.end <= document.end
    }
}

/// A JSON string: copied as it is unless it holds something to escape.
fn text(out: &mut Vec<u8>, value: &str, parsed: ParsedFrom) {
    let plain = parsed.holds(value) || !value.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
    if plain {
        out.reserve(value.len() + 2);
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, value).expect("writing to memory cannot fail");
    }
}

/// The ids of encoded records, for the log.
pub fn record_ids(records: &[Bytes]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Id {
        id: String,
    }
    records
        .iter()
        .filter_map(|r| serde_json::from_slice::<Id>(r).ok())
        .map(|r| r.id)
        .collect()
}

/// How Ometria took one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub accepted: u64,
    /// Per-record bad data: retrying will not help.
    pub rejected: u64,
}

/// `{"status": "OK", "request_id": …, "accepted": N, "rejected": M}` (SPEC §6).
#[derive(Deserialize)]
struct PushAnswer {
    /// "OK" when Ometria took the push; any other value is not an answer
    /// to account records with, even with a 2xx status.
    #[serde(default)]
    status: Option<String>,
    /// Ometria's word on a `status` other than "OK".
    #[serde(default)]
    message: Option<String>,
    /// Required with "OK"; looked for only once `status` is known.
    #[serde(default)]
    accepted: Option<u64>,
    #[serde(default)]
    rejected: Option<u64>,
}

#[derive(Deserialize)]
struct RecordAnswer {
    content: u64,
}

/// Whether Ometria refused a push as a whole for what it holds (400, 413,
/// 422; SPEC §6): possibly for one record's content, so the push is split
/// to find it ([`crate::rejected::deliver`]) instead of failing.
pub fn refused_for_content(error: &ApiError) -> bool {
    matches!(
        error,
        ApiError::Refused {
            status: 400 | 413 | 422,
            ..
        }
    )
}

/// What to fix when Ometria refuses a request.
fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check OMETRIA_APIKEY",
        404 | 405 => "check OMETRIA_BASE_URL and OMETRIA_API",
        // Searched for the records refused (see `refused_for_content`); a
        // search that fails the sync says what to check instead.
        400 | 413 | 422 => "Ometria refused the push for what it holds",
        _ => "Ometria refused the batch; the detail above says why",
    }
}

#[derive(Clone)]
pub struct OmetriaClient {
    http: awc::Client,
    endpoint: Rc<str>,
    key: ApiKey,
    api: OmetriaApi,
    patience: Patience,
    metrics: Arc<Metrics>,
    /// Hears of the backlog every answer reports.
    pacer: Option<Arc<Pacer>>,
}

impl OmetriaClient {
    pub fn new(
        http: awc::Client,
        base_url: &str,
        key: ApiKey,
        api: OmetriaApi,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let base = base_url.trim_end_matches('/');
        let endpoint = match api {
            OmetriaApi::Push => format!("{base}/v2/push"),
            OmetriaApi::Record => format!("{base}/record"),
        };
        OmetriaClient {
            http,
            endpoint: endpoint.into(),
            key,
            api,
            patience: Patience::new(timeout),
            metrics,
            pacer: None,
        }
    }

    /// Tells `pacer` how Ometria answered each push, and of its backlog as
    /// each answer, success or not, reports it (see [`Backlog`]).
    pub fn reporting_backlog_to(mut self, pacer: Arc<Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Passes on how Ometria answered, with the backlog the answer
    /// reports if it does.
    fn note_answer(&self, status: u16, headers: &awc::http::header::HeaderMap) {
        let backlog = Backlog::from_headers(headers);
        if let Some(b) = backlog {
            self.metrics.ometria_backlog(b.remaining, b.limit);
        }
        if let Some(pacer) = &self.pacer {
            pacer.answered(Answer::from_status(status), backlog.map(|b| (b.remaining, b.limit)));
        }
    }

    /// The record format this client sends.
    pub fn api(&self) -> OmetriaApi {
        self.api
    }

    /// Pushes one batch (≤ [`MAX_BATCH`] records, each encoded by
    /// [`encode`], as a [`Batcher`] makes them). One attempt, number
    /// `attempt` of the caller's retries (see [`Patience`]).
    pub async fn push(&self, records: &[Bytes], attempt: u32) -> Result<PushOutcome, ApiError> {
        let timeout = self.patience.for_attempt(attempt);
        let sent = records.len() as u64;
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum::<usize>() + 2);
        body.push(b'[');
        for (i, record) in records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.push(b']');
        let request = self
            .http
            .post(&*self.endpoint)
            .timeout(timeout)
            .content_type("application/json");
        let request = match self.api {
            OmetriaApi::Push => request.insert_header(("X-Ometria-Auth", self.key.expose())),
            OmetriaApi::Record => request.insert_header(("Authorization", self.key.expose())),
        };
        let started = Instant::now();
        let exchange = async {
            let head = request.send_body(body).await;
            self.metrics
                .http_request(Api::Ometria, head.as_ref().ok().map(|r| r.status().as_u16()));
            let mut response = head.map_err(|e| ApiError::from_send(Api::Ometria, timeout, e))?;
            self.note_answer(response.status().as_u16(), response.headers());
            let answer = response
                .body()
                .limit(api::MAX_BODY_BYTES)
                .await
                .map_err(|e| ApiError::from_payload(Api::Ometria, e))?;
            if !response.status().is_success() {
                let after = api::retry_after(response.headers());
                return Err(ApiError::from_status(
                    Api::Ometria,
                    response.status(),
                    after,
                    &answer,
                    hint,
                ));
            }
            let answer = api::complete_body(Api::Ometria, response.headers(), answer)?;
            let malformed = |e: serde_json::Error| ApiError::Malformed {
                api: Api::Ometria,
                message: e.to_string(),
            };
            let outcome = match self.api {
                OmetriaApi::Push => {
                    let a: PushAnswer = serde_json::from_slice(&answer).map_err(malformed)?;
                    if let Some(status) = a.status.as_deref().filter(|s| *s != "OK") {
                        let said = a.message.as_deref().map_or(String::new(), |m| format!(": {m}"));
                        return Err(ApiError::Malformed {
                            api: Api::Ometria,
                            message: format!(
                                "HTTP {} with status {status:?} rather than \"OK\"{said}",
                                response.status().as_u16()
                            ),
                        });
                    }
                    let (Some(accepted), Some(rejected)) = (a.accepted, a.rejected) else {
                        return Err(ApiError::Malformed {
                            api: Api::Ometria,
                            message: "the answer lacks its \"accepted\" or \"rejected\" count".into(),
                        });
                    };
                    PushOutcome { accepted, rejected }
                }
                OmetriaApi::Record => {
                    let a: RecordAnswer = serde_json::from_slice(&answer).map_err(malformed)?;
                    PushOutcome {
                        accepted: a.content,
                        rejected: sent.saturating_sub(a.content),
                    }
                }
            };
            // Fewer leaves records unaccounted for; more means the counts
            // are not about this push, and would inflate the sync's totals.
            if outcome.accepted.checked_add(outcome.rejected) != Some(sent) {
                return Err(ApiError::Unaccounted {
                    sent,
                    accepted: outcome.accepted,
                    rejected: outcome.rejected,
                });
            }
            self.patience.answered_in(started.elapsed());
            Ok(outcome)
        };
        actix_rt::time::timeout(timeout, exchange)
            .await
            .unwrap_or(Err(ApiError::Timeout {
                api: Api::Ometria,
                after: timeout,
            }))
    }
}

/// Ometria's backlog as an answer reports it (SPEC §6): pushes wait in it
/// before they are processed, and a full one answers 429.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    /// Records it can still take (`X-QueueSize-Remaining`).
    pub remaining: u64,
    /// Records it holds at most (`X-QueueSize-Limit`; [`BACKLOG_LIMIT`]
    /// when absent or unreadable).
    pub limit: u64,
}

/// The size of Ometria's backlog (SPEC §6), when an answer does not say.
pub const BACKLOG_LIMIT: u64 = 50_000;

impl Backlog {
    /// The backlog an answer's headers report; `None` without a readable
    /// `X-QueueSize-Remaining` (a whole number of records).
    pub fn from_headers(headers: &awc::http::header::HeaderMap) -> Option<Backlog> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<u64>().ok();
        Some(Backlog {
            remaining: number("x-queuesize-remaining")?,
            limit: number("x-queuesize-limit").filter(|l| *l > 0).unwrap_or(BACKLOG_LIMIT),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backlog_headers_are_read_and_garbage_ignored() {
        use awc::http::header::{HeaderMap, HeaderName, HeaderValue};
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(HeaderName::from_static(name), HeaderValue::from_static(value));
            }
            Backlog::from_headers(&map)
        };
        let backlog = |remaining, limit| Some(Backlog { remaining, limit });
        assert_eq!(
            headers(&[("x-queuesize-limit", "50000"), ("x-queuesize-remaining", " 1200 ")]),
            backlog(1200, 50_000)
        );
        assert_eq!(headers(&[("x-queuesize-remaining", "0")]), backlog(0, BACKLOG_LIMIT));
        assert_eq!(
            headers(&[("x-queuesize-limit", "lots"), ("x-queuesize-remaining", "7")]),
            backlog(7, BACKLOG_LIMIT)
        );
        assert_eq!(
            headers(&[("x-queuesize-limit", "0"), ("x-queuesize-remaining", "7")]),
            backlog(7, BACKLOG_LIMIT)
        );
        for garbage in ["", "-5", "12.5", "full", "99999999999999999999999"] {
            assert_eq!(
                headers(&[("x-queuesize-limit", "50000"), ("x-queuesize-remaining", garbage)]),
                None,
                "{garbage:?}"
            );
        }
        assert_eq!(headers(&[]), None);
    }

    #[test]
    fn encoding_by_hand_is_exactly_serde_json() {
        let awkward = [
            "",
            "plain",
            "Zoë 李 🚀",
            "O'Brien",
            "quote \" and \\ back",
            "tab\tnew\nline",
            "\u{1}\u{1f}\u{7f}",
            "</script>",
        ];
        let optins = [
            MarketingOptin::ExplicitlyOptedin,
            MarketingOptin::ExplicitlyOptedout,
            MarketingOptin::NotSpecified,
        ];
        for (i, text) in awkward.iter().enumerate() {
            // A mapping's fields, collection and properties too (issue 17).
            let mapped = (i % 2 == 1).then(|| {
                vec![
                    ("phone_number", serde_json::json!(text)),
                    ("store_ids", serde_json::json!([text, 12])),
                ]
            });
            let mut properties = serde_json::Map::new();
            if i % 3 == 1 {
                properties.insert(
                    text.to_string(),
                    serde_json::json!({"nested": text, "n": 1.5, "b": false}),
                );
                properties.insert("tags".into(), serde_json::json!([text]));
            }
            let contact = Contact {
                record_type: "contact",
                collection: (i % 2 == 0).then_some(*text),
                force_optin: i % 4 == 1,
                id: text,
                email: text,
                firstname: (i % 2 == 0).then_some(Cow::Borrowed(*text)),
                lastname: (i % 3 == 0).then_some(Cow::Borrowed(*text)),
                mapped: MappedFields(mapped.unwrap_or_default()),
                marketing_optin: optins[i % 3],
                timestamp_subscribed: (i % 2 == 1).then_some(Cow::Borrowed(*text)),
                properties: ContactProperties {
                    mailchimp_status: text,
                    mailchimp_list_id: text,
                    mapped: properties,
                },
            };
            let mut ours = vec![];
            encode(&contact, OmetriaApi::Push, ParsedFrom::default(), &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&contact).unwrap()
            );
        }
    }

    /// Text serde_json lent out of the page is copied unchecked; text it
    /// unescaped (a copy outside the page) is escaped again.
    #[test]
    fn text_parsed_from_the_page_is_copied_and_unescaped_text_escaped_again() {
        let page = r#"{"total_items": 2, "members": [
            {"unique_email_id": "plain1", "email_address": "a@x.io", "status": "subscribed",
             "merge_fields": {"FNAME": "Zoë 李", "LNAME": "O'Brien"}, "timestamp_opt": "2019-10-18T22:20:23+00:00"},
            {"unique_email_id": "esc\"aped", "email_address": "b\u00e9c@x.io", "status": "pending",
             "merge_fields": {"FNAME": "tab\there\nnew", "LNAME": "\u00e9\u0001"}}
        ]}"#
        .as_bytes();
        let parsed = crate::mailchimp::MemberPage::parse(page).unwrap();
        for member in &parsed.members {
            let contact = crate::transform::member_to_contact(member, "l\"1", chrono::Utc::now())
                .unwrap()
                .contact;
            let mut ours = vec![];
            encode(&contact, OmetriaApi::Push, ParsedFrom(page), &mut ours);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&contact).unwrap()
            );
        }
        // What makes borrowed text safe: serde_json refuses raw control
        // characters in strings (a page holding one is unreadable and retried).
        assert!(crate::mailchimp::MemberPage::parse(
            b"{\"total_items\": 1, \"members\": [{\"unique_email_id\": \"a\tb\"}]}"
        )
        .is_err());
        let within = ParsedFrom(page);
        assert!(within.holds(parsed.members[0].email_address.as_deref().unwrap()));
        assert!(!within.holds(parsed.members[1].email_address.as_deref().unwrap()));
        assert!(!within.holds("a@x.io"));
    }

    /// A record of exactly `len` bytes.
    fn sized(len: usize) -> Bytes {
        let pad = len - r#"{"id":""}"#.len();
        Bytes::from(format!(r#"{{"id":"{}"}}"#, "x".repeat(pad)))
    }

    /// The body a push of `batch` sends.
    fn body_len(batch: &[Bytes]) -> usize {
        batch.iter().map(Bytes::len).sum::<usize>() + batch.len().saturating_sub(1) + 2
    }

    #[test]
    fn batches_hold_at_most_max_batch_records() {
        let mut batcher = Batcher::default();
        let mut batches = vec![];
        for _ in 0..250 {
            batches.extend(batcher.add(sized(300)).unwrap());
        }
        batches.extend(batcher.flush());
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [100, 100, 50]);
        assert_eq!(batcher.flush(), None, "nothing left open");
    }

    #[test]
    fn batches_stay_within_the_body_budget() {
        // 100 records of 20 KB would make a 2 MB body.
        let mut batcher = Batcher::default();
        let mut batches = vec![];
        for _ in 0..100 {
            batches.extend(batcher.add(sized(20 * 1024)).unwrap());
        }
        batches.extend(batcher.flush());
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [51, 49]);
        assert!(batches.iter().all(|b| body_len(b) <= MAX_PUSH_BYTES));
        assert!(body_len(&[batches[0].clone(), vec![sized(20 * 1024)]].concat()) > MAX_PUSH_BYTES);
        // A body of exactly the budget is taken; one byte more is not.
        let mut batcher = Batcher::with_limits(10, 100, 2 + 40 + 1 + 40);
        assert_eq!(batcher.add(sized(40)).unwrap(), None);
        assert_eq!(batcher.add(sized(40)).unwrap(), None);
        assert_eq!(batcher.add(sized(10)).unwrap(), Some(vec![sized(40), sized(40)]));
        let mut batcher = Batcher::with_limits(10, 100, 2 + 40 + 1 + 40);
        assert_eq!(batcher.add(sized(40)).unwrap(), None);
        assert_eq!(batcher.add(sized(41)).unwrap(), Some(vec![sized(40)]));
        assert_eq!(batcher.flush(), Some(vec![sized(41)]));
    }

    #[test]
    fn a_record_over_60_kb_is_handed_back_with_the_reason() {
        let mut batcher = Batcher::default();
        assert_eq!(batcher.add(sized(10)).unwrap(), None);
        assert_eq!(
            batcher.add(sized(MAX_RECORD_BYTES)).unwrap(),
            None,
            "the limit itself is taken"
        );
        let rejection = batcher.add(sized(70_123)).unwrap_err();
        assert_eq!(rejection.record, sized(70_123));
        assert_eq!(
            rejection.reason,
            "the record is 70,123 bytes once encoded; Ometria takes at most 61,440"
        );
        let rejection = batcher.add(sized(MAX_RECORD_BYTES + 1)).unwrap_err();
        assert_eq!(
            rejection.reason,
            "the record is 61,441 bytes once encoded; Ometria takes at most 61,440"
        );
        // The batch is not disturbed.
        assert_eq!(batcher.flush(), Some(vec![sized(10), sized(MAX_RECORD_BYTES)]));
        // Nor does a record too large for a body of its own get in.
        let mut batcher = Batcher::with_limits(10, 100, 50);
        assert!(batcher.add(sized(48)).is_ok());
        assert_eq!(
            batcher.add(sized(49)).unwrap_err().reason,
            "the record is 49 bytes once encoded; Ometria takes at most 48"
        );
    }

    #[test]
    fn a_batch_of_one_record_closes_at_once() {
        let mut batcher = Batcher::with_limits(1, 100, 1000);
        assert_eq!(batcher.add(sized(20)).unwrap(), Some(vec![sized(20)]));
        assert_eq!(batcher.add(sized(30)).unwrap(), Some(vec![sized(30)]));
        assert_eq!(batcher.flush(), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_048_576), "1,048,576");
    }

    #[test]
    fn refusals_for_content_are_told_apart() {
        let refused = |status| ApiError::Refused {
            api: Api::Ometria,
            status,
            problem: None,
            hint: hint(status),
        };
        for status in [400, 413, 422] {
            assert!(refused_for_content(&refused(status)), "{status}");
        }
        for status in [401, 403, 404, 405, 409] {
            assert!(!refused_for_content(&refused(status)), "{status}");
        }
        let throttled = ApiError::Throttled {
            api: Api::Ometria,
            status: 429,
            retry_after: None,
        };
        assert!(!refused_for_content(&throttled));
    }

    #[test]
    fn legacy_records_and_ids() {
        let contact = Contact {
            record_type: "contact",
            collection: Some("mc"),
            force_optin: true,
            id: "u1",
            email: "a@x.io",
            firstname: Some("Zoë".into()),
            lastname: None,
            mapped: MappedFields(vec![("phone_number", serde_json::json!("+4420"))]),
            marketing_optin: MarketingOptin::ExplicitlyOptedout,
            timestamp_subscribed: None,
            properties: ContactProperties {
                mailchimp_status: "cleaned",
                mailchimp_list_id: "l",
                mapped: Default::default(),
            },
        };
        let mut out = vec![];
        encode(&contact, OmetriaApi::Record, ParsedFrom::default(), &mut out);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"{"id":"u1","email":"a@x.io","status":"cleaned","firstname":"Zoë"}"#
        );
        assert_eq!(record_ids(&[Bytes::from(out), Bytes::from_static(b"{}")]), ["u1"]);
    }
}
