//! The fake `GET /3.0/lists/{list_id}/members`: Basic auth, the
//! simultaneous-connection cap, `count`/`offset`, the `last_changed`
//! window, `status`, sorting and projection, with problem+json errors;
//! and `GET /3.0/lists/{list_id}/merge-fields`, the list's merge-field
//! definitions, behind the same auth, cap and faults.

use std::collections::HashMap;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::json;

use super::audience::{timestamp_text, Audience, Member, Status, StatusFilter};
use super::faults::{cut_short, Fault};
use super::fields::MERGE_FIELDS;
use super::projection::FieldTree;
use super::{problem, World};
use crate::api::Api;
use crate::state::parse_timestamp;

pub const MAX_COUNT: usize = 1000;
const JSON: &str = "application/json; charset=utf-8";

/// Whether the request carries Basic auth with `key` as its password.
fn authorised(req: &HttpRequest, key: &str) -> bool {
    let Some(value) = req.headers().get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let text = String::from_utf8_lossy(&decoded);
    text.split_once(':').is_some_and(|(_, password)| password == key)
}

/// A members query, validated.
#[derive(Debug, PartialEq)]
struct Query {
    count: usize,
    offset: usize,
    fields: FieldTree,
    exclude: Option<FieldTree>,
    status: StatusFilter,
    since: Option<i64>,
    before: Option<i64>,
    sort_field: Option<String>,
    descending: bool,
}

fn parse_query(text: &str) -> Result<Query, String> {
    let q: HashMap<String, String> = form_urlencoded::parse(text.as_bytes()).into_owned().collect();
    let number = |name: &str, default: usize| -> Result<usize, String> {
        q.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("{name}: \"{v}\" is not a whole number"))
        })
    };
    let time = |name: &str| -> Result<Option<i64>, String> {
        q.get(name)
            .map(|v| {
                parse_timestamp(v)
                    .map(|t| t.timestamp())
                    .ok_or(format!("{name}: \"{v}\" is not an ISO 8601 time"))
            })
            .transpose()
    };
    let count = number("count", 10)?;
    if count > MAX_COUNT {
        return Err(format!("count: must be at most {MAX_COUNT}, got {count}"));
    }
    let status = match q.get("status") {
        None => StatusFilter::Default,
        Some(s) => StatusFilter::Only(Status::parse(s).ok_or(format!("status: \"{s}\" is not a member status"))?),
    };
    let sort_field = q.get("sort_field").cloned();
    if let Some(f) = &sort_field {
        if !["last_changed", "timestamp_opt", "timestamp_signup"].contains(&f.as_str()) {
            return Err(format!(
                "sort_field: \"{f}\" is not one of timestamp_opt, timestamp_signup, last_changed"
            ));
        }
    }
    let descending = match q.get("sort_dir").map(String::as_str) {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(format!("sort_dir: \"{other}\" is not ASC or DESC")),
    };
    Ok(Query {
        count,
        offset: number("offset", 0)?,
        fields: q.get("fields").map(|f| FieldTree::parse(f)).unwrap_or_default(),
        exclude: q.get("exclude_fields").map(|f| FieldTree::parse(f)),
        status,
        since: time("since_last_changed")?,
        before: time("before_last_changed")?,
        sort_field,
        descending,
    })
}

/// A member serialised straight from the model, with only the fields of
/// `tree` (all of them when `None`): no intermediate JSON values for the
/// fields the importer asks for.
struct Projected<'a> {
    member: &'a Member,
    list_id: &'a str,
    tree: Option<&'a FieldTree>,
}

impl Serialize for Projected<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Some(tree) = self.tree.filter(|t| !t.is_whole()) else {
            return self.member.to_value(self.list_id).serialize(s);
        };
        let m = self.member;
        let mut map = s.serialize_map(None)?;
        for (name, sub) in &tree.0 {
            match name.as_str() {
                "email_address" => map.serialize_entry(name, &m.email)?,
                "unique_email_id" => map.serialize_entry(name, &m.unique_email_id)?,
                "status" => map.serialize_entry(name, m.status.as_str())?,
                "timestamp_opt" => map.serialize_entry(name, &m.timestamp_opt)?,
                "last_changed" => map.serialize_entry(name, &timestamp_text(m.last_changed))?,
                "merge_fields" => map.serialize_entry(name, &MergeFields { member: m, tree: sub })?,
                _ => {
                    if let Some(mut v) = m.field(name, self.list_id) {
                        sub.keep(&mut v);
                        map.serialize_entry(name, &v)?;
                    }
                }
            }
        }
        map.end()
    }
}

struct MergeFields<'a> {
    member: &'a Member,
    tree: &'a FieldTree,
}

impl Serialize for MergeFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.member;
        let mut map = s.serialize_map(None)?;
        for def in &MERGE_FIELDS {
            let tag = def.tag;
            let sub = if self.tree.is_whole() {
                self.tree
            } else {
                match self.tree.get(tag) {
                    Some(sub) => sub,
                    None => continue,
                }
            };
            match tag {
                // The importer's own fields, straight from the model.
                "FNAME" => map.serialize_entry(tag, &m.fname)?,
                "LNAME" => map.serialize_entry(tag, &m.lname)?,
                _ => {
                    if let Some(mut v) = m.merge_field(tag) {
                        sub.keep(&mut v);
                        map.serialize_entry(tag, &v)?;
                    }
                }
            }
        }
        map.end()
    }
}

/// The page root: `members`, `list_id`, `total_items`, `_links`.
struct Page<'a> {
    audience: &'a Audience,
    members: Vec<&'a Member>,
    total: usize,
    fields: &'a FieldTree,
}

impl Serialize for Page<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let wants = |name: &str| self.fields.is_whole() || self.fields.get(name).is_some();
        let id = self.audience.id.as_str();
        let mut map = s.serialize_map(None)?;
        if wants("members") {
            let tree = self.fields.get("members");
            let members: Vec<Projected> = self
                .members
                .iter()
                .map(|&member| Projected {
                    member,
                    list_id: id,
                    tree,
                })
                .collect();
            map.serialize_entry("members", &members)?;
        }
        if wants("list_id") {
            map.serialize_entry("list_id", id)?;
        }
        if wants("total_items") {
            map.serialize_entry("total_items", &self.total)?;
        }
        if wants("_links") {
            let href = format!("https://us1.api.mailchimp.com/3.0/lists/{id}/members");
            map.serialize_entry("_links", &[json!({"rel": "self", "method": "GET", "href": href})])?;
        }
        map.end()
    }
}

/// What a broken server, or a proxy in front of Mailchimp, does to the
/// importer's members queries (`--paging-bug`): the failures users of the
/// API have reported, for the importer's paging checks (issue 14).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PagingBug {
    /// `offset` is dropped: every page starts at the window's first member.
    IgnoresOffset,
    /// Pages start five members early, overlapping the page before.
    OverlapsPages,
    /// Pages start one member late: the member at each page edge is skipped.
    SkipsAtEdges,
    /// Pages end one member early: every page is short.
    ShortPages,
    /// `sort_field`/`sort_dir` are dropped: a new order on every request.
    IgnoresSort,
    /// `count` is dropped: pages hold Mailchimp's default of 10.
    IgnoresCount,
    /// `status` is dropped: the archived pass gets the members Mailchimp
    /// returns by default, and archived members are never returned.
    IgnoresStatus,
    /// A cache serves a stale, empty first page: every request for the
    /// members (not archived) at offset 0 gets no members and
    /// `total_items` 0; the others reach Mailchimp.
    StaleFirstPage,
    /// Requests with `count` 1 or 1000 are served short, consistently: they
    /// see only the oldest two thirds of the window, `total_items` included.
    HidesForCounts,
}

impl PagingBug {
    /// The positions a page asked for at `offset` with `count` covers instead.
    fn positions(self, offset: usize, count: usize) -> (usize, usize) {
        match self {
            PagingBug::IgnoresOffset => (0, count),
            PagingBug::OverlapsPages => (offset.saturating_sub(5), count),
            PagingBug::SkipsAtEdges => (offset + 1, count),
            PagingBug::ShortPages => (offset, count.saturating_sub(1)),
            PagingBug::IgnoresCount => (offset, 10),
            PagingBug::IgnoresSort
            | PagingBug::IgnoresStatus
            | PagingBug::StaleFirstPage
            | PagingBug::HidesForCounts => (offset, count),
        }
    }

    /// How many of a window of `len` members a request sees: all of them,
    /// or fewer under a bug that serves some requests short.
    fn visible(self, query: &Query, len: usize) -> usize {
        match self {
            PagingBug::StaleFirstPage if query.offset == 0 && query.status == StatusFilter::Default => 0,
            PagingBug::HidesForCounts if query.count == 1 || query.count >= 1000 => len * 2 / 3,
            _ => len,
        }
    }
}

/// Positions `offset..offset + count` of `slice` after shuffling every run
/// of members sharing one `last_changed` second that they touch.
fn shuffled<'a>(slice: &'a [Member], offset: usize, count: usize, rng: &mut fastrand::Rng) -> Vec<&'a Member> {
    let (lo, hi) = (offset.min(slice.len()), offset.saturating_add(count).min(slice.len()));
    if lo == hi {
        return vec![];
    }
    let (mut a, mut b) = (lo, hi);
    while a > 0 && slice[a - 1].last_changed == slice[lo].last_changed {
        a -= 1;
    }
    while b < slice.len() && slice[b].last_changed == slice[hi - 1].last_changed {
        b += 1;
    }
    let mut span: Vec<&Member> = slice[a..b].iter().collect();
    let mut i = 0;
    while i < span.len() {
        let run = span[i..]
            .iter()
            .take_while(|m| m.last_changed == span[i].last_changed)
            .count();
        rng.shuffle(&mut span[i..i + run]);
        i += run;
    }
    span.drain(lo - a..hi - a).collect()
}

/// The page for `query`, projected, as JSON; `ties` shuffles the order of
/// members sharing a second (ascending `last_changed` queries only), and
/// `bug` breaks the paging of those queries (drawing on `ties` for
/// [`PagingBug::IgnoresSort`]).
fn page(audience: &Audience, query: &Query, ties: Option<&mut fastrand::Rng>, bug: Option<PagingBug>) -> Vec<u8> {
    let by_last_changed = !matches!(query.sort_field.as_deref(), Some("timestamp_opt"));
    let (total, members): (usize, Vec<&Member>) = match query.status {
        // The importer's queries: a page straight out of the sorted list.
        StatusFilter::Default | StatusFilter::Only(Status::Archived) if by_last_changed => {
            let archived = query.status != StatusFilter::Default && bug != Some(PagingBug::IgnoresStatus);
            let slice = audience.slice(archived, query.since, query.before);
            let slice = &slice[..bug.map_or(slice.len(), |b| b.visible(query, slice.len()))];
            let (offset, count) = bug.map_or((query.offset, query.count), |b| b.positions(query.offset, query.count));
            let page = match ties {
                _ if query.descending => slice.iter().rev().skip(offset).take(count).collect(),
                Some(rng) if bug == Some(PagingBug::IgnoresSort) => {
                    let mut all: Vec<&Member> = slice.iter().collect();
                    rng.shuffle(&mut all);
                    all.into_iter().skip(offset).take(count).collect()
                }
                Some(rng) => shuffled(slice, offset, count, rng),
                None => slice.iter().skip(offset).take(count).collect(),
            };
            (slice.len(), page)
        }
        _ => {
            let mut selected = audience.window(query.status, query.since, query.before);
            if !by_last_changed {
                selected.sort_by(|a, b| a.timestamp_opt.cmp(&b.timestamp_opt));
            }
            if query.descending {
                selected.reverse();
            }
            (
                selected.len(),
                selected.into_iter().skip(query.offset).take(query.count).collect(),
            )
        }
    };
    let page = Page {
        audience,
        members,
        total,
        fields: &query.fields,
    };
    match &query.exclude {
        None => serde_json::to_vec(&page),
        Some(exclude) => {
            let mut root = serde_json::to_value(&page).expect("pages serialise");
            exclude.remove(&mut root);
            serde_json::to_vec(&root)
        }
    }
    .expect("pages serialise")
}

/// What every Mailchimp endpoint does around its answer: counts the
/// request, checks Basic auth and the simultaneous-connection cap, draws
/// latency and faults; `body` makes the answer's JSON (or an error) while
/// the connection's slot is held.
async fn answer(
    req: &HttpRequest,
    world: &World,
    body: impl FnOnce(&World) -> Result<Vec<u8>, Refusal>,
) -> HttpResponse {
    world
        .stats
        .mailchimp_requests
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if !authorised(req, &world.config.mailchimp_key) {
        return problem(
            401,
            "API Key Invalid",
            "Your API key may be invalid, or you've attempted to access the wrong datacenter.",
        );
    }
    let Some(_slot) = world.mailchimp_slot() else {
        return problem(
            429,
            "Too Many Requests",
            &format!(
                "You have exceeded the limit of {} simultaneous connections.",
                world.config.mailchimp_max_connections
            ),
        );
    };
    let (fault, latency, hang_for) = world.roll(Api::Mailchimp);
    match fault {
        Some(Fault::Forbidden) => return HttpResponse::Forbidden().finish(),
        Some(Fault::Throttle) => {
            return problem(
                429,
                "Too Many Requests",
                "You have exceeded the limit of 10 simultaneous connections.",
            )
        }
        Some(Fault::Hang) => {
            actix_rt::time::sleep(hang_for).await;
            return problem(504, "Gateway Timeout", "The request took too long.");
        }
        _ => {}
    }
    actix_rt::time::sleep(latency).await;
    if fault == Some(Fault::ServerError) {
        return problem(503, "Service Unavailable", "Please try again later.");
    }
    let body = match body(world) {
        Ok(body) => body,
        Err(refusal) => return refusal.response(),
    };
    match fault {
        Some(Fault::Drop) => cut_short(JSON, body, 0),
        Some(Fault::Truncate) => {
            let half = body.len() / 2;
            cut_short(JSON, body, half)
        }
        _ => HttpResponse::Ok().content_type(JSON).body(body),
    }
}

/// Why an endpoint refuses a request it was ready to answer.
enum Refusal {
    /// A query parameter Mailchimp would refuse: 400.
    Invalid(String),
    /// No such list: 404.
    NotFound,
}

impl Refusal {
    fn response(self) -> HttpResponse {
        match self {
            Refusal::Invalid(detail) => problem(400, "Invalid Resource", &detail),
            Refusal::NotFound => problem(404, "Resource Not Found", "The requested resource could not be found."),
        }
    }
}

/// `GET /3.0/lists/{list_id}/members`.
pub async fn members(req: HttpRequest, world: web::Data<World>, list_id: web::Path<String>) -> HttpResponse {
    answer(&req, &world, |world| {
        let query = parse_query(req.query_string()).map_err(Refusal::Invalid)?;
        let lists = world.lists();
        let audience = lists.get(list_id.as_str()).ok_or(Refusal::NotFound)?;
        let bug = world.config.paging_bug;
        let shuffles = world.config.shuffle_ties || bug == Some(PagingBug::IgnoresSort);
        let mut rng = shuffles.then(|| world.tie_rng());
        Ok(page(audience, &query, rng.as_deref_mut(), bug))
    })
    .await
}

/// `GET /3.0/lists/{list_id}/members/{subscriber_hash}`: the member whose
/// address hashes to it (its `id`), projected by `fields` as Mailchimp
/// does; 404 for a member deleted or never there, as for an unknown list.
/// The deletion webhooks' check ([`crate::mailchimp::MailchimpClient::member_status`]).
/// A scan of the list: the sandbox's lists are small enough.
pub async fn member(req: HttpRequest, world: web::Data<World>, path: web::Path<(String, String)>) -> HttpResponse {
    let (list_id, hash) = path.into_inner();
    answer(&req, &world, |world| {
        let query = parse_query(req.query_string()).map_err(Refusal::Invalid)?;
        let lists = world.lists();
        let audience = lists.get(list_id.as_str()).ok_or(Refusal::NotFound)?;
        let member = audience.members().find(|m| m.hash() == hash).ok_or(Refusal::NotFound)?;
        let mut root = member.to_value(&list_id);
        query.fields.keep(&mut root);
        if let Some(exclude) = &query.exclude {
            exclude.remove(&mut root);
        }
        Ok(serde_json::to_vec(&root).expect("members serialise"))
    })
    .await
}

/// The merge-fields page for `query` (its `count`, `offset`, `fields` and
/// `exclude_fields`), as JSON.
fn merge_fields_page(list_id: &str, query: &Query) -> Vec<u8> {
    let definitions: Vec<serde_json::Value> = MERGE_FIELDS
        .iter()
        .skip(query.offset)
        .take(query.count)
        .map(|d| d.to_value(list_id))
        .collect();
    let href = format!("https://us1.api.mailchimp.com/3.0/lists/{list_id}/merge-fields");
    let mut root = json!({
        "merge_fields": definitions,
        "list_id": list_id,
        "total_items": MERGE_FIELDS.len(),
        "_links": [{"rel": "self", "method": "GET", "href": href}],
    });
    query.fields.keep(&mut root);
    if let Some(exclude) = &query.exclude {
        exclude.remove(&mut root);
    }
    serde_json::to_vec(&root).expect("pages serialise")
}

/// `GET /3.0/lists/{list_id}/merge-fields`: the list's merge fields, each
/// with its real type and options, paged and projected as Mailchimp does.
pub async fn merge_fields(req: HttpRequest, world: web::Data<World>, list_id: web::Path<String>) -> HttpResponse {
    answer(&req, &world, |world| {
        let query = parse_query(req.query_string()).map_err(Refusal::Invalid)?;
        if !world.lists().contains_key(list_id.as_str()) {
            return Err(Refusal::NotFound);
        }
        Ok(merge_fields_page(&list_id, &query))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn queries_are_validated_like_mailchimp() {
        assert!(parse_query("count=1001").unwrap_err().contains("at most 1000"));
        assert!(parse_query("count=x").unwrap_err().contains("not a whole number"));
        assert!(parse_query("status=gone").unwrap_err().contains("not a member status"));
        assert!(parse_query("sort_dir=UP").unwrap_err().contains("ASC or DESC"));
        assert!(parse_query("since_last_changed=yesterday")
            .unwrap_err()
            .contains("ISO 8601"));
        let q =
            parse_query("count=1000&offset=20&status=archived&before_last_changed=2019-10-18T22%3A20%3A23%2B00%3A00")
                .unwrap();
        assert_eq!(
            (q.count, q.offset, q.status),
            (1000, 20, StatusFilter::Only(Status::Archived))
        );
        assert_eq!(q.before, Some(1_571_437_223));
    }

    #[test]
    fn pages_are_windowed_sorted_paged_and_projected() {
        let audience = Audience::generate("l", 300, 1, NOW);
        let all = audience.window(StatusFilter::Default, None, None);
        let before = all[200].last_changed;
        let expected: Vec<&str> = all
            .iter()
            .filter(|m| m.last_changed < before)
            .map(|m| m.unique_email_id.as_str())
            .skip(50)
            .take(100)
            .collect();
        let q = parse_query(&format!(
            "count=100&offset=50&sort_field=last_changed&sort_dir=ASC&before_last_changed={}&fields=members.unique_email_id,members.merge_fields.FNAME,total_items",
            timestamp_text(before).replace('+', "%2B")
        ))
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&page(&audience, &q, None, None)).unwrap();
        let ids: Vec<&str> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["unique_email_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, expected);
        assert_eq!(v["total_items"], all.iter().filter(|m| m.last_changed < before).count());
        let first = v["members"][0].as_object().unwrap();
        assert_eq!(first.keys().collect::<Vec<_>>(), ["merge_fields", "unique_email_id"]);
        assert_eq!(first["merge_fields"]["FNAME"], all[50].fname.as_str());
        assert_eq!(first["merge_fields"].as_object().unwrap().len(), 1);
        assert!(v.get("_links").is_none() && v.get("list_id").is_none());
    }

    #[test]
    fn unprojected_pages_are_bulky_and_exclude_fields_works() {
        let audience = Audience::generate("l", 20, 1, NOW);
        let page = |q: &str| -> serde_json::Value {
            serde_json::from_slice(&page(&audience, &parse_query(q).unwrap(), None, None)).unwrap()
        };
        let full = page("count=10");
        assert_eq!(full["members"].as_array().unwrap().len(), 10);
        assert!(serde_json::to_string(&full).unwrap().len() > 15_000);
        let slim = page("count=10&exclude_fields=members._links,_links");
        assert!(slim["members"][0].get("_links").is_none() && slim.get("_links").is_none());
        assert!(slim["members"][0].get("stats").is_some());
        let desc = page("count=1&sort_field=last_changed&sort_dir=DESC&fields=members.last_changed");
        let newest = audience
            .window(StatusFilter::Default, None, None)
            .last()
            .unwrap()
            .last_changed;
        assert_eq!(desc["members"][0]["last_changed"], timestamp_text(newest));
    }

    #[test]
    fn deep_paths_project_merge_fields_location_and_tags() {
        let audience = Audience::generate("l", 200, 2, NOW);
        let q = parse_query(
            "count=200&fields=members.unique_email_id,members.merge_fields.ADDRESS.country,\
             members.merge_fields.PHONE,members.location.country_code,members.tags.name,total_items",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&page(&audience, &q, None, None)).unwrap();
        let members = v["members"].as_array().unwrap();
        let all = audience.window(StatusFilter::Default, None, None);
        assert_eq!(members.len(), all.len());
        let mut seen_address = false;
        for (got, m) in members.iter().zip(&all) {
            assert_eq!(
                got.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["location", "merge_fields", "tags", "unique_email_id"]
            );
            let mf = got["merge_fields"].as_object().unwrap();
            assert_eq!(mf.keys().collect::<Vec<_>>(), ["ADDRESS", "PHONE"]);
            assert_eq!(mf["PHONE"], m.phone().text());
            match m.merge_field("ADDRESS").unwrap() {
                // An unset address is "", whatever the path into it.
                serde_json::Value::String(s) => assert_eq!(mf["ADDRESS"], s),
                address => {
                    seen_address = true;
                    assert_eq!(mf["ADDRESS"], json!({"country": address["country"]}));
                }
            }
            assert_eq!(
                got["location"],
                json!({"country_code": m.location().to_value()["country_code"]})
            );
            let names: Vec<serde_json::Value> = m.tags().iter().map(|t| json!({"name": t.name})).collect();
            assert_eq!(got["tags"], json!(names));
        }
        assert!(seen_address);
        // A whole member's tags, and the whole merge fields.
        let q = parse_query("count=5&fields=members.tags,members.merge_fields").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&page(&audience, &q, None, None)).unwrap();
        for (got, m) in v["members"].as_array().unwrap().iter().zip(&all) {
            assert_eq!(got["tags"], m.tags_value());
            assert_eq!(got["merge_fields"], m.merge_fields());
        }
    }

    #[test]
    fn merge_fields_are_paged_and_projected() {
        let page = |q: &str| -> serde_json::Value {
            serde_json::from_slice(&merge_fields_page("l", &parse_query(q).unwrap())).unwrap()
        };
        let first = page("");
        assert_eq!(first["total_items"], MERGE_FIELDS.len());
        assert_eq!(first["list_id"], "l");
        let defs = first["merge_fields"].as_array().unwrap();
        assert_eq!(defs.len(), 10, "Mailchimp's default count");
        assert_eq!(defs[0]["tag"], "FNAME");
        for key in [
            "merge_id",
            "tag",
            "name",
            "type",
            "required",
            "default_value",
            "public",
            "display_order",
            "options",
            "help_text",
            "list_id",
        ] {
            assert!(defs[2].get(key).is_some(), "no {key}");
        }
        assert_eq!(defs[2]["type"], "address");
        let rest = page("count=100&offset=9");
        let tags: Vec<&str> = rest["merge_fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["tag"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["PLAN", "SIZE"]);
        assert_eq!(
            rest["merge_fields"][1]["options"]["choices"],
            json!(["S", "M", "L", "XL"])
        );
        let slim = page("count=100&fields=merge_fields.tag,merge_fields.type,total_items");
        assert_eq!(slim.as_object().unwrap().len(), 2);
        assert_eq!(slim["merge_fields"][5], json!({"tag": "JOINED", "type": "date"}));
        let types: Vec<&str> = slim["merge_fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["type"].as_str().unwrap())
            .collect();
        for t in [
            "text", "number", "address", "phone", "date", "birthday", "zip", "url", "dropdown", "radio",
        ] {
            assert!(types.contains(&t), "no {t}");
        }
        let excluded = page("exclude_fields=_links,merge_fields.options");
        assert!(excluded.get("_links").is_none());
        assert!(excluded["merge_fields"][0].get("options").is_none());
        assert!(parse_query("count=1001").is_err());
    }

    #[test]
    fn paging_bugs_break_what_they_say() {
        let audience = Audience::generate("l", 60, 1, NOW);
        let all: Vec<&str> = audience
            .slice(false, None, None)
            .iter()
            .map(|m| m.unique_email_id.as_str())
            .collect();
        let ids = |bug: PagingBug, offset: usize, count: usize| -> Vec<String> {
            let q = parse_query(&format!(
                "count={count}&offset={offset}&sort_field=last_changed&sort_dir=ASC&fields=members.unique_email_id,total_items"
            ))
            .unwrap();
            let mut rng = fastrand::Rng::with_seed(3);
            let rng = (bug == PagingBug::IgnoresSort).then_some(&mut rng);
            let v: serde_json::Value = serde_json::from_slice(&page(&audience, &q, rng, Some(bug))).unwrap();
            assert_eq!(v["total_items"], all.len(), "{bug:?}: the total is the window's");
            v["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["unique_email_id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(PagingBug::IgnoresOffset, 20, 5), all[0..5]);
        assert_eq!(ids(PagingBug::OverlapsPages, 20, 10), all[15..25]);
        assert_eq!(ids(PagingBug::SkipsAtEdges, 20, 5), all[21..26]);
        assert_eq!(ids(PagingBug::ShortPages, 20, 5), all[20..24]);
        assert_eq!(ids(PagingBug::IgnoresCount, 20, 25), all[20..30]);
        let shuffled = ids(PagingBug::IgnoresSort, 0, 60);
        assert_ne!(shuffled, all, "a new order");
        let mut sorted = shuffled.clone();
        sorted.sort();
        let mut expected: Vec<String> = all.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(sorted, expected, "the same members");
    }

    #[test]
    fn shuffled_ties_change_order_but_never_seconds() {
        let audience = Audience::generate("l", 400, 3, NOW);
        let all = audience.slice(false, None, None);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut reordered = false;
        for offset in (0..all.len()).step_by(7) {
            let page = shuffled(all, offset, 9, &mut rng);
            let plain: Vec<&Member> = all.iter().skip(offset).take(9).collect();
            let seconds = |p: &[&Member]| p.iter().map(|m| m.last_changed).collect::<Vec<_>>();
            assert_eq!(seconds(&page), seconds(&plain), "offset {offset}");
            reordered |= page
                .iter()
                .zip(&plain)
                .any(|(a, b)| a.unique_email_id != b.unique_email_id);
        }
        assert!(reordered, "some run of ties came back in another order");
        assert!(shuffled(all, all.len(), 9, &mut rng).is_empty());
    }
}
