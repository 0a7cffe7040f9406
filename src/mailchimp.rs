//! Mailchimp Marketing API 3.0: list members, read page by page (SPEC §6),
//! a list's merge fields, which `check --online` compares with the
//! entries' mappings (issue 17), and a list's webhooks, which the
//! `webhooks` command manages ([`webhooks`], issue 18).

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

use crate::api::{self, Api, ApiError, ApiKey, Patience};
use crate::state::{format_for_mailchimp, parse_timestamp};
use crate::sync::{MemberKey, PageRequest, Pass, Window};
use crate::telemetry::metrics::Metrics;

mod repair;
pub mod webhooks;

pub use repair::{repair, Repaired, Repairs};

/// Only what the mapping needs, plus `last_changed` and `total_items`.
pub const MEMBER_FIELDS: &str = "members.unique_email_id,members.email_address,members.status,\
members.merge_fields.FNAME,members.merge_fields.LNAME,members.timestamp_opt,members.last_changed,total_items";

/// What a reconciliation reads (issue 16): the members' ids, and what the
/// paging checks need (`last_changed` for the order and window, `status`
/// for the archived pass, `total_items` for the counts).
pub const MEMBER_ID_FIELDS: &str = "members.unique_email_id,members.last_changed,members.status,total_items";

/// Everything but RFC 3986 unreserved characters is escaped in the list id.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `https://<dc>.api.mailchimp.com/3.0` for a key ending in `-<dc>`.
pub fn base_url_for_key(key: &ApiKey) -> Option<String> {
    let (_, dc) = key.expose().rsplit_once('-')?;
    let valid = !dc.is_empty() && dc.bytes().all(|b| b.is_ascii_alphanumeric());
    valid.then(|| format!("https://{}.api.mailchimp.com/3.0", dc.to_ascii_lowercase()))
}

/// One page of `GET /lists/{list_id}/members`, borrowing its text from
/// the answer's body: reading a member allocates only for escaped text.
#[derive(Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MemberPage<'a> {
    #[serde(default, borrow)]
    pub members: Vec<Member<'a>>,
    pub total_items: u64,
}

impl MemberPage<'_> {
    /// Reads a page as it came; a UTF-8 byte-order mark before it is
    /// ignored (RFC 8259 §8.1 lets a reader do so). A page refused here may
    /// still be read once [`repair`]ed.
    ///
    /// Errors: [`ApiError::Malformed`] with serde_json's words, for a body
    /// that is not JSON or not a members page (no `total_items`, a name
    /// repeated in a member).
    pub fn parse(body: &[u8]) -> Result<MemberPage<'_>, ApiError> {
        serde_json::from_slice(without_bom(body)).map_err(|e| ApiError::Malformed {
            api: Api::Mailchimp,
            message: format!("members page: {e}"),
        })
    }
}

/// The `total_items` of a members page read as a sync reads it: as it
/// came, or once [`repair`]ed (a lone surrogate, bytes that are not UTF-8,
/// a name repeated), so that `check --online` does not call a list broken
/// that syncs.
///
/// Errors: [`ApiError::Malformed`] for a page no repair makes readable.
pub fn page_total_items(body: &[u8]) -> Result<u64, ApiError> {
    with_page(body, |page, _, _| Ok(page.total_items))
}

/// Reads a members page and hands it to `read`, with the body its text
/// borrows from and what was repaired: the body as it came, or — when only
/// a lone surrogate, a stray byte, a raw control character or a repeated
/// name keeps it from parsing — repaired ([`repair`]), as the server would
/// send the same bytes again. Parsed once on the usual path. Errors: the
/// page is not JSON a repair can mend, or `read`'s own.
pub fn with_page<T>(
    body: &[u8],
    read: impl for<'a> FnOnce(MemberPage<'a>, &'a [u8], &Repairs) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    match MemberPage::parse(body) {
        Ok(page) => read(page, body, &Repairs::default()),
        Err(e) => {
            let repaired = repair(body).ok_or(e)?;
            let page = MemberPage::parse(&repaired.body)?;
            read(page, &repaired.body, &repaired.repairs)
        }
    }
}

/// The members of a page as Mailchimp sent them, every field kept, for a
/// mapping that reads more than [`Member`] does (issue 17), in the page's
/// order. The page was read as a [`MemberPage`] first, so it parses; a
/// member too deeply nested to read whole (serde_json stops at 128 levels)
/// is `None`, and only its mapped values are lost, not the page.
/// Errors: [`ApiError::Malformed`] should the page not parse.
pub fn raw_members(body: &[u8]) -> Result<Vec<Option<serde_json::Value>>, ApiError> {
    #[derive(Deserialize)]
    struct Members<'a> {
        #[serde(default, borrow)]
        members: Vec<&'a serde_json::value::RawValue>,
    }
    let page = serde_json::from_slice::<Members>(without_bom(body)).map_err(|e| ApiError::Malformed {
        api: Api::Mailchimp,
        message: format!("members page: {e}"),
    })?;
    Ok(page
        .members
        .into_iter()
        .map(|raw| serde_json::from_str(raw.get()).ok())
        .collect())
}

/// `body` without the UTF-8 byte-order mark (EF BB BF) it may start with.
fn without_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

impl Member<'_> {
    /// The member as the paging checks see it: when it last changed (unix
    /// seconds), its id and whether it is archived. Members are told apart
    /// by `unique_email_id`, or by email without one (such members are not
    /// sent, but a run of ties still counts them); `""` with neither.
    pub fn key(&self) -> MemberKey {
        let id = match (self.unique_email_id.as_deref(), self.email_address.as_deref()) {
            (Some(id), _) if !id.is_empty() => id.to_owned(),
            (_, Some(email)) if !email.is_empty() => format!("email:{email}"),
            _ => String::new(),
        };
        MemberKey {
            last_changed: self
                .last_changed
                .as_deref()
                .and_then(parse_timestamp)
                .map(|t| t.timestamp()),
            id,
            archived: self.status.as_deref().map(|s| s == "archived"),
        }
    }
}

/// A list member, as far as the mapping cares. Every field is optional and
/// lenient, so that one odd member never fails a whole page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct Member<'a> {
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub unique_email_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub email_address: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub status: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_merge_fields")]
    pub merge_fields: MergeFields<'a>,
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub timestamp_opt: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub last_changed: Option<Cow<'a, str>>,
}

#[allow(non_snake_case)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MergeFields<'a> {
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub FNAME: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "lenient_text")]
    pub LNAME: Option<Cow<'a, str>>,
}

/// The key under which serde_json, with its `arbitrary_precision` feature
/// (Cargo.toml), hands a number to a visitor as a map: the number's text.
const ARBITRARY_PRECISION_NUMBER: &str = "$serde_json::private::Number";

/// A string, a number as written or `true`/`false` as text (as a mapped
/// text field takes them, docs/mapping.md), or `None` for anything else.
fn lenient_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct Text;
    impl<'de> Visitor<'de> for Text {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_string())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(if v { "true" } else { "false" })))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // A number other than an integer of 64 bits comes as a map of
            // one entry under serde_json's arbitrary-precision token, the
            // number as written (`1.5`, `1e3`, `99999999999999999999`);
            // anything else is an object, which is no text.
            let mut number = None;
            let mut first = true;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if first && key == ARBITRARY_PRECISION_NUMBER {
                    number = Some(Cow::Owned(map.next_value::<String>()?));
                } else {
                    map.next_value::<IgnoredAny>()?;
                    number = None;
                }
                first = false;
            }
            Ok(number)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }
    }
    d.deserialize_any(Text)
}

/// Merge fields as an object; anything else (null, `[]`) reads as empty.
fn lenient_merge_fields<'de, D: Deserializer<'de>>(d: D) -> Result<MergeFields<'de>, D::Error> {
    struct Fields;
    impl<'de> Visitor<'de> for Fields {
        type Value = MergeFields<'de>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            MergeFields::deserialize(de::value::MapAccessDeserializer::new(map))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(MergeFields::default())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(MergeFields::default())
        }
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(MergeFields::default())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(MergeFields::default())
        }
    }
    d.deserialize_any(Fields)
}

/// The URL of one page of one pass over `window`, with SPEC §5's projection.
pub fn members_url(base_url: &str, list_id: &str, window: &Window, page: PageRequest) -> String {
    projected_members_url(base_url, list_id, window, page, MEMBER_FIELDS)
}

/// The URL of one page of one pass over `window`, asking for `fields`
/// ([`MEMBER_FIELDS`] or [`MEMBER_ID_FIELDS`]).
pub fn projected_members_url(
    base_url: &str,
    list_id: &str,
    window: &Window,
    page: PageRequest,
    fields: &str,
) -> String {
    let before = page
        .before
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .filter(|t| *t < window.before)
        .unwrap_or(window.before);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("fields", fields)
        .append_pair("count", &page.count.to_string())
        .append_pair("offset", &page.offset.to_string())
        .append_pair("sort_field", "last_changed")
        .append_pair("sort_dir", "ASC")
        .append_pair("before_last_changed", &format_for_mailchimp(before));
    let since = match page.since {
        Some(t) => chrono::DateTime::from_timestamp(t, 0),
        None => window.since,
    };
    if let Some(since) = since {
        query.append_pair("since_last_changed", &format_for_mailchimp(since));
    }
    if page.pass == Pass::Archived {
        query.append_pair("status", "archived");
    }
    format!(
        "{base_url}/lists/{}/members?{}",
        utf8_percent_encode(list_id, PATH_SEGMENT),
        query.finish()
    )
}

/// A member's id in Mailchimp's API, its "subscriber hash": the MD5 of
/// the lower-cased address, in lower-case hex (Marketing API 3.0, List
/// members: "The MD5 hash of the lowercase version of the list member's
/// email address"). Webhooks send it as `data[id]`.
pub fn subscriber_hash(email: &str) -> String {
    use md5::{Digest, Md5};
    hex_lower(&Md5::digest(email.trim().to_lowercase().as_bytes()))
}

fn hex_lower(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// The URL of one member of a list by address, asking for its status only.
pub fn member_url(base_url: &str, list_id: &str, email: &str) -> String {
    format!(
        "{base_url}/lists/{}/members/{}?fields=status",
        utf8_percent_encode(list_id, PATH_SEGMENT),
        subscriber_hash(email)
    )
}

/// At most this many merge fields are asked for, Mailchimp's largest
/// `count`: far more than a list may have.
pub const MAX_MERGE_FIELDS: u32 = 1000;

/// The URL of a list's merge fields, asking only for what `check --online`
/// compares with a mapping.
pub fn merge_fields_url(base_url: &str, list_id: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("count", &MAX_MERGE_FIELDS.to_string())
        .append_pair(
            "fields",
            "merge_fields.tag,merge_fields.type,merge_fields.options,total_items",
        )
        .finish();
    format!(
        "{base_url}/lists/{}/merge-fields?{query}",
        utf8_percent_encode(list_id, PATH_SEGMENT)
    )
}

/// One merge field of a list (Marketing API 3.0, List merge fields), as
/// far as a mapping cares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MergeField {
    /// The tag a member's `merge_fields` holds its value under (`PHONE`).
    pub tag: String,
    /// `text`, `number`, `address`, `phone`, `date`, `url`, `imageurl`,
    /// `radio`, `dropdown`, `birthday` or `zip`.
    #[serde(rename = "type", default)]
    pub field_type: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: MergeFieldOptions,
}

/// The options of a merge field that tell how its values read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct MergeFieldOptions {
    /// A `phone` field's format: `US` (numbers written `(555) 123-4567`,
    /// no country code) or international.
    #[serde(default, deserialize_with = "lenient_string")]
    pub phone_format: Option<String>,
    /// A `date` or `birthday` field's format as shown to subscribers
    /// (`MM/DD/YYYY`, `DD/MM`…).
    #[serde(default, deserialize_with = "lenient_string")]
    pub date_format: Option<String>,
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(lenient_text(d)?.map(Cow::into_owned))
}

/// Reads an answer of `GET /lists/{list_id}/merge-fields`. Errors:
/// [`ApiError::Malformed`] for a body that is not one, or that holds fewer
/// merge fields than its `total_items` (the comparison needs them all).
pub fn parse_merge_fields(body: &[u8]) -> Result<Vec<MergeField>, ApiError> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        merge_fields: Vec<MergeField>,
        total_items: u64,
    }
    let malformed = |message: String| ApiError::Malformed {
        api: Api::Mailchimp,
        message,
    };
    let page: Page = serde_json::from_slice(without_bom(body)).map_err(|e| malformed(format!("merge fields: {e}")))?;
    if (page.merge_fields.len() as u64) < page.total_items {
        return Err(malformed(format!(
            "merge fields: the answer holds {} of the list's {}",
            page.merge_fields.len(),
            page.total_items
        )));
    }
    Ok(page.merge_fields)
}

/// What to fix when Mailchimp refuses a request.
fn hint(status: u16) -> &'static str {
    match status {
        401 => "check MAILCHIMP_APIKEY (and MAILCHIMP_BASE_URL, whose data centre must match the key)",
        403 => "this key may not read the list: check MAILCHIMP_APIKEY and the entry's list_id",
        404 => "check the entry's list_id in state.json: Mailchimp has no such list for this key",
        _ => "the request was refused; the detail above says why",
    }
}

#[derive(Clone)]
pub struct MailchimpClient {
    http: awc::Client,
    base_url: Rc<str>,
    key: ApiKey,
    patience: Patience,
    metrics: Arc<Metrics>,
}

impl MailchimpClient {
    pub fn new(http: awc::Client, base_url: &str, key: ApiKey, timeout: Duration, metrics: Arc<Metrics>) -> Self {
        MailchimpClient {
            http,
            base_url: base_url.trim_end_matches('/').into(),
            key,
            patience: Patience::new(timeout),
            metrics,
        }
    }

    /// Reads one page's body (parse it with [`MemberPage::parse`]) and
    /// Mailchimp's clock when it answered (its `Date` header, whole
    /// seconds; `None` without a readable one), asking for `fields` (the
    /// entry's [`crate::mapping::Mapping::projection`]; [`MEMBER_FIELDS`]
    /// for SPEC §5's mapping). One attempt, number `attempt` of the
    /// caller's retries (see [`Patience`]).
    pub async fn members_page(
        &self,
        list_id: &str,
        window: &Window,
        page: PageRequest,
        fields: &str,
        attempt: u32,
    ) -> Result<(Bytes, Option<DateTime<Utc>>), ApiError> {
        self.projected_page(list_id, window, page, fields, attempt).await
    }

    /// [`Self::members_page`] with only the members' ids and what the
    /// paging checks need ([`MEMBER_ID_FIELDS`]): a reconciliation's read.
    pub async fn member_ids_page(
        &self,
        list_id: &str,
        window: &Window,
        page: PageRequest,
        attempt: u32,
    ) -> Result<(Bytes, Option<DateTime<Utc>>), ApiError> {
        self.projected_page(list_id, window, page, MEMBER_ID_FIELDS, attempt)
            .await
    }

    async fn projected_page(
        &self,
        list_id: &str,
        window: &Window,
        page: PageRequest,
        fields: &str,
        attempt: u32,
    ) -> Result<(Bytes, Option<DateTime<Utc>>), ApiError> {
        let url = projected_members_url(&self.base_url, list_id, window, page, fields);
        self.get(url, attempt).await
    }

    /// The merge fields of list `list_id` (Marketing API 3.0, List merge
    /// fields: `GET /lists/{list_id}/merge-fields`), their tag, type and
    /// options only, in Mailchimp's order; for `check --online` (issue 17).
    /// One attempt, number `attempt` of the caller's retries, with the
    /// members read's authentication and timeouts.
    ///
    /// Errors: those of a members read (a refusal names what to fix), and
    /// [`ApiError::Malformed`] for an answer that is not a merge-fields
    /// page or holds fewer fields than its `total_items`.
    pub async fn merge_fields(&self, list_id: &str, attempt: u32) -> Result<Vec<MergeField>, ApiError> {
        let (body, _) = self.get(merge_fields_url(&self.base_url, list_id), attempt).await?;
        parse_merge_fields(&body)
    }

    /// Whether list `list_id` holds a member of address `email` (Marketing
    /// API 3.0, List members: `GET /lists/{list_id}/members/{subscriber_hash}`):
    /// its `status` (`subscribed`, `archived`…), or `None` when Mailchimp
    /// answers 404 — deleted, or never there. What a deletion webhook says
    /// is checked with this before a member is opted out: the event may be
    /// late (the address added again since) or not Mailchimp's at all.
    /// One attempt, number `attempt` of the caller's retries.
    ///
    /// Errors: those of a members read but the 404, and
    /// [`ApiError::Malformed`] for an answer without a `status`.
    pub async fn member_status(&self, list_id: &str, email: &str, attempt: u32) -> Result<Option<String>, ApiError> {
        #[derive(serde::Deserialize)]
        struct Status {
            status: String,
        }
        match self.get(member_url(&self.base_url, list_id, email), attempt).await {
            Ok((body, _)) => serde_json::from_slice::<Status>(&body)
                .map(|s| Some(s.status))
                .map_err(|e| ApiError::Malformed {
                    api: Api::Mailchimp,
                    message: format!("a member's answer has no status ({e})"),
                }),
            Err(ApiError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One GET of `url`: the body and Mailchimp's clock when it answered.
    async fn get(&self, url: String, attempt: u32) -> Result<(Bytes, Option<DateTime<Utc>>), ApiError> {
        self.call(awc::http::Method::GET, url, None, hint, attempt).await
    }

    /// One request of `method` to `url`, with `body` as JSON if given:
    /// the answer's body and Mailchimp's clock when it answered. Attempt
    /// number `attempt` of the caller's retries (see [`Patience`]); a
    /// refusal's message says what to fix as `hint` tells for its status.
    async fn call(
        &self,
        method: awc::http::Method,
        url: String,
        body: Option<&serde_json::Value>,
        hint: fn(u16) -> &'static str,
        attempt: u32,
    ) -> Result<(Bytes, Option<DateTime<Utc>>), ApiError> {
        let timeout = self.patience.for_attempt(attempt);
        let request = self
            .http
            .request(method, url)
            .basic_auth("ometria-importer", self.key.expose())
            .timeout(timeout);
        let started = Instant::now();
        let read = async {
            let head = match body {
                Some(body) => request.send_json(body).await,
                None => request.send().await,
            };
            self.metrics
                .http_request(Api::Mailchimp, head.as_ref().ok().map(|r| r.status().as_u16()));
            let mut response = head.map_err(|e| ApiError::from_send(Api::Mailchimp, timeout, e))?;
            let body = response
                .body()
                .limit(api::MAX_BODY_BYTES)
                .await
                .map_err(|e| ApiError::from_payload(Api::Mailchimp, e))?;
            if !response.status().is_success() {
                let after = api::retry_after(response.headers());
                return Err(ApiError::from_status(
                    Api::Mailchimp,
                    response.status(),
                    after,
                    &body,
                    hint,
                ));
            }
            let body = api::complete_body(Api::Mailchimp, response.headers(), body)?;
            self.patience.answered_in(started.elapsed());
            Ok((body, server_time(response.headers())))
        };
        // The request timeout covers the answer's head; this covers its body too.
        actix_rt::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(ApiError::Timeout {
                api: Api::Mailchimp,
                after: timeout,
            }))
    }
}

/// The time an answer's `Date` header gives (RFC 9110 §6.6.1: the
/// server's clock when it answered, IMF-fixdate such as `Tue, 01 Dec 2026
/// 03:22:11 GMT`), if it has a readable one.
pub fn server_time(headers: &awc::http::header::HeaderMap) -> Option<DateTime<Utc>> {
    let text = headers.get(awc::http::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(text).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_member_is_found_by_the_md5_of_its_lower_cased_address() {
        // Mailchimp's own example (Marketing API, "Methods for subscriber hashes").
        assert_eq!(
            subscriber_hash("urist.mcvankab@freddiesjokes.com"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
        assert_eq!(
            subscriber_hash(" Urist.McVankab@FreddiesJokes.COM"),
            "62eeb292278cc15f5817cb78f7790b08"
        );
        assert_eq!(
            member_url(
                "https://us9.api.mailchimp.com/3.0",
                "a b",
                "urist.mcvankab@freddiesjokes.com"
            ),
            "https://us9.api.mailchimp.com/3.0/lists/a%20b/members/62eeb292278cc15f5817cb78f7790b08?fields=status"
        );
    }

    #[test]
    fn the_date_header_gives_the_servers_clock() {
        let mut headers = awc::http::header::HeaderMap::new();
        assert_eq!(server_time(&headers), None);
        headers.insert(
            awc::http::header::DATE,
            "Tue, 01 Dec 2026 03:22:11 GMT".parse().unwrap(),
        );
        assert_eq!(
            server_time(&headers),
            Some(Utc.with_ymd_and_hms(2026, 12, 1, 3, 22, 11).unwrap())
        );
        headers.insert(awc::http::header::DATE, "yesterday".parse().unwrap());
        assert_eq!(server_time(&headers), None);
    }

    #[test]
    fn data_centre_is_the_part_after_the_last_dash() {
        let key = |k: &str| k.parse::<ApiKey>().unwrap();
        assert_eq!(
            base_url_for_key(&key("abc123-us9")).as_deref(),
            Some("https://us9.api.mailchimp.com/3.0")
        );
        assert_eq!(
            base_url_for_key(&key("a-b-US19")).as_deref(),
            Some("https://us19.api.mailchimp.com/3.0")
        );
        assert_eq!(base_url_for_key(&key("abc123")), None);
        assert_eq!(base_url_for_key(&key("abc123-")), None);
        assert_eq!(base_url_for_key(&key("abc-evil.com/x")), None);
    }

    #[test]
    fn the_url_carries_projection_sort_window_and_pass() {
        let window = Window {
            since: Some(Utc.with_ymd_and_hms(2019, 10, 18, 22, 15, 23).unwrap()),
            before: Utc.with_ymd_and_hms(2019, 10, 21, 10, 51, 16).unwrap(),
        };
        let url = members_url(
            "https://us9.api.mailchimp.com/3.0",
            "1a2d7ebf82",
            &window,
            PageRequest {
                pass: Pass::Archived,
                offset: 200,
                count: 100,
                since: None,
                before: None,
                keyed: false,
                recount: false,
            },
        );
        assert_eq!(
            url,
            "https://us9.api.mailchimp.com/3.0/lists/1a2d7ebf82/members?fields=members.unique_email_id%2Cmembers.email_address%2Cmembers.status%2Cmembers.merge_fields.FNAME%2Cmembers.merge_fields.LNAME%2Cmembers.timestamp_opt%2Cmembers.last_changed%2Ctotal_items&count=100&offset=200&sort_field=last_changed&sort_dir=ASC&before_last_changed=2019-10-21T10%3A51%3A16%2B00%3A00&since_last_changed=2019-10-18T22%3A15%3A23%2B00%3A00&status=archived"
        );
        let load = Window { since: None, ..window };
        let url = members_url(
            "http://h/3.0",
            "a/b?-_.~",
            &load,
            PageRequest {
                pass: Pass::Members,
                offset: 0,
                count: 1000,
                since: Some(1_571_437_223),
                before: Some(1_571_437_225),
                keyed: true,
                recount: false,
            },
        );
        assert!(url.starts_with("http://h/3.0/lists/a%2Fb%3F-_.~/members?"), "{url}");
        // A keyset page brings its own lower bound, even to a LOAD.
        assert!(
            url.contains("&since_last_changed=2019-10-18T22%3A20%3A23%2B00%3A00"),
            "{url}"
        );
        assert!(!url.contains("status="), "{url}");
        // A run's query ends before the window does; never after it.
        assert!(
            url.contains("&before_last_changed=2019-10-18T22%3A20%3A25%2B00%3A00"),
            "{url}"
        );
        let late = PageRequest {
            pass: Pass::Members,
            offset: 0,
            count: 1000,
            since: None,
            before: Some(window.before.timestamp() + 1),
            keyed: true,
            recount: false,
        };
        let url = members_url("http://h/3.0", "a", &window, late);
        assert!(
            url.contains("&before_last_changed=2019-10-21T10%3A51%3A16%2B00%3A00"),
            "{url}"
        );
    }

    #[test]
    fn a_reconciliation_asks_for_ids_only() {
        let window = Window {
            since: None,
            before: Utc.with_ymd_and_hms(2019, 10, 21, 10, 51, 16).unwrap(),
        };
        let page = PageRequest {
            pass: Pass::Members,
            offset: 0,
            count: 1000,
            since: None,
            before: None,
            keyed: true,
            recount: false,
        };
        let url = projected_members_url("http://h/3.0", "a", &window, page, MEMBER_ID_FIELDS);
        assert_eq!(
            url,
            "http://h/3.0/lists/a/members?fields=members.unique_email_id%2Cmembers.last_changed%2Cmembers.status%2Ctotal_items&count=1000&offset=0&sort_field=last_changed&sort_dir=ASC&before_last_changed=2019-10-21T10%3A51%3A16%2B00%3A00"
        );
    }

    #[test]
    fn odd_members_do_not_fail_the_page() {
        let page = MemberPage::parse(
            br#"{"members": [
                {"unique_email_id": "u1", "email_address": "a@x.io", "status": "subscribed",
                 "merge_fields": {"FNAME": "Zo\u00eb", "LNAME": 42, "EXTRA": {"x": 1}}, "stats": {"avg_open_rate": 0.5}},
                {"unique_email_id": null, "email_address": ["x"], "merge_fields": []},
                {}
            ], "total_items": 3, "_links": []}"#,
        )
        .unwrap();
        assert!(
            matches!(page.members[0].email_address, Some(Cow::Borrowed(_))),
            "no copy of plain text"
        );
        assert_eq!(page.total_items, 3);
        assert_eq!(page.members[0].merge_fields.FNAME.as_deref(), Some("Zoë"));
        assert_eq!(page.members[0].merge_fields.LNAME.as_deref(), Some("42"));
        assert_eq!(page.members[1], Member::default());
        assert_eq!(page.members[2], Member::default());
    }

    #[test]
    fn a_name_of_any_scalar_form_is_read_as_its_text() {
        for (written, text) in [
            ("42", Some("42")),
            ("-7", Some("-7")),
            ("1.5", Some("1.5")),
            ("1200.50", Some("1200.50")),
            ("1e3", Some("1e+3")),
            ("99999999999999999999999", Some("99999999999999999999999")),
            ("true", Some("true")),
            ("false", Some("false")),
            (r#""Zo\u00eb""#, Some("Zoë")),
            ("null", None),
            (r#"{"a": 1}"#, None),
            (r#"{"$serde_json::private::Number": "1", "b": 2}"#, None),
            ("[1]", None),
        ] {
            let body = format!(
                r#"{{"members": [{{"merge_fields": {{"FNAME": {written}, "LNAME": "x"}}}}], "total_items": 1}}"#
            );
            let page = MemberPage::parse(body.as_bytes()).unwrap();
            let fields = &page.members[0].merge_fields;
            assert_eq!(fields.FNAME.as_deref(), text, "{written}");
            assert_eq!(fields.LNAME.as_deref(), Some("x"), "{written}");
        }
    }

    #[test]
    fn merge_fields_are_asked_for_and_read_leniently() {
        assert_eq!(
            merge_fields_url("http://h/3.0", "a/b"),
            "http://h/3.0/lists/a%2Fb/merge-fields?count=1000&fields=merge_fields.tag%2Cmerge_fields.type%2Cmerge_fields.options%2Ctotal_items"
        );
        let fields = parse_merge_fields(
            br#"{"merge_fields": [
                {"tag": "PHONE", "type": "phone", "options": {"phone_format": "US"}},
                {"tag": "BIRTHDAY", "type": "birthday", "options": {"date_format": "MM/DD", "size": 25}},
                {"tag": "FNAME", "type": "text", "options": null},
                {"tag": "X", "type": "text"}
            ], "total_items": 4}"#,
        )
        .unwrap();
        assert_eq!(fields.len(), 4);
        assert_eq!(
            (fields[0].tag.as_str(), fields[0].field_type.as_str()),
            ("PHONE", "phone")
        );
        assert_eq!(fields[0].options.phone_format.as_deref(), Some("US"));
        assert_eq!(fields[1].options.date_format.as_deref(), Some("MM/DD"));
        assert_eq!(fields[2].options, MergeFieldOptions::default());
        let short = parse_merge_fields(br#"{"merge_fields": [], "total_items": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("merge fields: the answer holds 0 of the list's 2"),
            "{short}"
        );
        let broken = parse_merge_fields(br#"{"merge_fields": 3}"#).unwrap_err().to_string();
        assert!(
            broken.contains("Mailchimp sent an unreadable answer: merge fields:"),
            "{broken}"
        );
    }

    #[test]
    fn a_page_without_total_items_is_an_error() {
        assert!(MemberPage::parse(br#"{"members": []}"#).is_err());
        assert!(MemberPage::parse(br#"{"members": [{"unique_email_id": "a"#).is_err());
    }

    /// Serde's derived readers refuse a member or a page that repeats a
    /// name; [`repair`] makes it readable with each name's last value.
    #[test]
    fn a_page_repeating_names_is_read_repaired_with_the_last_values() {
        let body = br#"{"members": [
            {"unique_email_id": "u1", "unique_email_id": "u1", "email_address": "a@x.io",
             "status": "subscribed", "status": "unsubscribed",
             "merge_fields": {"FNAME": "Old", "LNAME": "Old"}, "merge_fields": {"FNAME": "A", "FNAME": "B"}},
            {"unique_email_id": "u2", "email_address": "b@x.io"}
        ], "total_items": 9, "total_items": 2}"#;
        let refused = MemberPage::parse(body).unwrap_err().to_string();
        assert!(refused.contains("duplicate field"), "{refused}");
        let fixed = repair(body).unwrap();
        assert_eq!(fixed.repairs.repeated_name.as_deref(), Some("unique_email_id"));
        let page = MemberPage::parse(&fixed.body).unwrap();
        assert_eq!(page.total_items, 2);
        let m = &page.members[0];
        assert_eq!(m.unique_email_id.as_deref(), Some("u1"));
        assert_eq!(m.status.as_deref(), Some("unsubscribed"));
        assert_eq!(m.merge_fields.FNAME.as_deref(), Some("B"));
        assert_eq!(m.merge_fields.LNAME, None);
        assert_eq!(page.members[1].unique_email_id.as_deref(), Some("u2"));
    }

    #[test]
    fn a_byte_order_mark_before_a_page_is_ignored() {
        let page = MemberPage::parse(b"\xEF\xBB\xBF{\"members\": [{\"unique_email_id\": \"u1\"}], \"total_items\": 1}")
            .unwrap();
        assert_eq!(page.members[0].unique_email_id.as_deref(), Some("u1"));
        // Only one, and only at the start.
        assert!(MemberPage::parse(b"\xEF\xBB\xBF\xEF\xBB\xBF{\"total_items\": 0}").is_err());
        assert!(MemberPage::parse(b" \xEF\xBB\xBF{\"total_items\": 0}").is_err());
    }

    #[test]
    fn the_total_of_a_page_is_read_as_a_sync_reads_it() {
        assert_eq!(page_total_items(br#"{"members": [], "total_items": 7}"#).unwrap(), 7);
        let repeated = br#"{"members": [{"status": "a", "status": "b"}], "total_items": 7}"#;
        assert!(MemberPage::parse(repeated).is_err());
        assert_eq!(page_total_items(repeated).unwrap(), 7);
        assert_eq!(
            page_total_items(b"{\"members\": [{\"n\": \"\xe9\"}], \"total_items\": 7}").unwrap(),
            7
        );
        assert_eq!(page_total_items(b"\xEF\xBB\xBF{\"total_items\": 7}").unwrap(), 7);
        let broken = page_total_items(br#"{"members": []"#).unwrap_err().to_string();
        assert!(broken.contains("members page"), "{broken}");
    }
}
