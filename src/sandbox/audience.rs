//! The sandbox's Mailchimp data: generated audience members, kept sorted
//! by `last_changed` so a window query is two binary searches, and the live
//! mutations that change them while a sync runs.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use crate::mailchimp::subscriber_hash;

/// Every status Mailchimp knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Subscribed,
    Unsubscribed,
    Cleaned,
    Pending,
    Transactional,
    Archived,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Subscribed,
        Status::Unsubscribed,
        Status::Cleaned,
        Status::Pending,
        Status::Transactional,
        Status::Archived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Subscribed => "subscribed",
            Status::Unsubscribed => "unsubscribed",
            Status::Cleaned => "cleaned",
            Status::Pending => "pending",
            Status::Transactional => "transactional",
            Status::Archived => "archived",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub unique_email_id: String,
    pub email: String,
    pub status: Status,
    pub fname: String,
    pub lname: String,
    /// Empty for members who never opted in.
    pub timestamp_opt: String,
    /// Unix seconds.
    pub last_changed: i64,
    /// Seeds the member's bulky fields and its typed profile (see
    /// [`super::fields`]).
    pub serial: u64,
    /// Bumped by every [`Mutation::Change`]: with `serial`, seeds the
    /// member's merge fields (other than its names), tags, permissions and
    /// location, so they change when the member does.
    pub variant: u32,
}

const FIRST_NAMES: [&str; 16] = [
    "Zoë",
    "José",
    "李",
    "Ana María",
    "",
    "Ægir",
    "محمد",
    "Søren",
    "Urist",
    "Chloé",
    "Đặng",
    "O'Neil",
    "Åsa",
    "Jürgen",
    "Νίκος",
    "Emma",
];
const LAST_NAMES: [&str; 14] = [
    "Ñúñez",
    "O'Brien",
    "",
    "Müller 🚀",
    "Smith",
    "王",
    "Łukasz",
    "Dubois-Lefèvre",
    "Иванова",
    "Kowalski",
    "García",
    "McVankab",
    "Brontë",
    " ",
];

pub fn timestamp_text(unix: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string()
}

impl Member {
    /// Mailchimp's `id`, also `data[id]` in its webhooks: the MD5 of the
    /// lower-cased email ([`subscriber_hash`]).
    pub fn hash(&self) -> String {
        subscriber_hash(&self.email)
    }

    fn links(&self, list_id: &str) -> Value {
        let href = format!(
            "https://us1.api.mailchimp.com/3.0/lists/{list_id}/members/{}",
            self.hash()
        );
        let schema = "https://us1.api.mailchimp.com/schema/3.0/Definitions/Lists/Members/Response.json";
        let rels = [
            ("self", "GET"),
            ("parent", "GET"),
            ("update", "PATCH"),
            ("upsert", "PUT"),
            ("delete", "DELETE"),
            ("activity", "GET"),
            ("goals", "GET"),
            ("notes", "GET"),
        ];
        rels.iter()
            .map(|(rel, method)| json!({"rel": rel, "href": href, "method": method, "targetSchema": schema}))
            .collect()
    }

    /// One field of the member as Mailchimp's API returns it.
    pub fn field(&self, name: &str, list_id: &str) -> Option<Value> {
        Some(match name {
            "id" => json!(self.hash()),
            "email_address" => json!(self.email),
            "unique_email_id" => json!(self.unique_email_id),
            "contact_id" => json!(format!("c{}", self.hash())),
            "full_name" => json!(format!("{} {}", self.fname, self.lname).trim()),
            "web_id" => json!(self.serial * 7 + 1000),
            "email_type" => json!("html"),
            "status" => json!(self.status.as_str()),
            "consents_to_one_to_one_messaging" => json!(true),
            "merge_fields" => self.merge_fields(),
            "interests" => self.interests(),
            "stats" => json!({"avg_open_rate": (self.serial % 100) as f64 / 100.0,
                              "avg_click_rate": (self.serial % 37) as f64 / 100.0,
                              "ecommerce_data": {"total_revenue": 0, "number_of_orders": 0, "currency_code": "USD"}}),
            "ip_signup" => json!(""),
            "timestamp_signup" => json!(""),
            "ip_opt" => json!(format!("198.51.100.{}", self.serial % 250)),
            "timestamp_opt" => json!(self.timestamp_opt),
            "member_rating" => json!(self.serial % 5 + 1),
            "last_changed" => json!(timestamp_text(self.last_changed)),
            "language" => json!(self.language()),
            "vip" => json!(self.vip()),
            "email_client" => json!("Gmail"),
            "location" => self.location().to_value(),
            "marketing_permissions" => self.marketing_permissions_value(),
            "last_note" => json!({}),
            "source" => json!("API - Generic"),
            "tags_count" => json!(self.tags().len()),
            "tags" => self.tags_value(),
            "list_id" => json!(list_id),
            "_links" => self.links(list_id),
            _ => return None,
        })
    }

    pub const FIELDS: &'static [&'static str] = &[
        "id",
        "email_address",
        "unique_email_id",
        "contact_id",
        "full_name",
        "web_id",
        "email_type",
        "status",
        "consents_to_one_to_one_messaging",
        "merge_fields",
        "interests",
        "stats",
        "ip_signup",
        "timestamp_signup",
        "ip_opt",
        "timestamp_opt",
        "member_rating",
        "last_changed",
        "language",
        "vip",
        "email_client",
        "location",
        "marketing_permissions",
        "last_note",
        "source",
        "tags_count",
        "tags",
        "list_id",
        "_links",
    ];

    /// The whole member object.
    pub fn to_value(&self, list_id: &str) -> Value {
        let mut map = Map::new();
        for name in Member::FIELDS {
            if let Some(v) = self.field(name, list_id) {
                map.insert((*name).to_owned(), v);
            }
        }
        Value::Object(map)
    }
}

/// One list: its members, split by whether Mailchimp returns them by
/// default, each part sorted by `(last_changed, unique_email_id)`.
#[derive(Clone, Debug, Default)]
pub struct Audience {
    pub id: String,
    active: Vec<Member>,
    archived: Vec<Member>,
    /// Members deleted for good, in the order they were; `last_changed`
    /// is when.
    deleted: Vec<Member>,
    next_serial: u64,
    salt: u64,
    /// Member ids of 12 hex digits rather than Mailchimp's 10 (see
    /// [`Audience::generate_with`]).
    wide_ids: bool,
}

/// Above this many members in all, a sandbox's member ids get 12 hex
/// digits: with Mailchimp's 10 (40 bits), the millions of members of
/// thousands of lists would share some (about n² ÷ 2⁴¹ pairs: 3 for bench
/// scenario 12's 2.75 million), and the fake Ometria keeps one contact
/// per id. Below it, ids stay as they always were.
pub const WIDE_IDS_ABOVE: usize = 250_000;

/// Which members a query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusFilter {
    /// Mailchimp's default: everyone but archived members.
    Default,
    Only(Status),
}

fn sort_key(m: &Member) -> (i64, &str) {
    (m.last_changed, m.unique_email_id.as_str())
}

impl Audience {
    /// `size` members changed over the 30 days before `now`, deterministic
    /// for a given `seed` and list id: every status, Unicode and empty
    /// names, and runs of members sharing one `last_changed` second.
    pub fn generate(id: &str, size: usize, seed: u64, now: i64) -> Audience {
        Audience::generate_with(id, size, seed, now, false)
    }

    /// [`Audience::generate`], member ids of 12 hex digits if `wide_ids`:
    /// the same ids with two more digits in front (members added later too).
    pub fn generate_with(id: &str, size: usize, seed: u64, now: i64, wide_ids: bool) -> Audience {
        let salt = seed
            ^ id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            });
        let mut rng = fastrand::Rng::with_seed(salt);
        let span = 30 * 24 * 3600;
        let step = (2 * span / size.max(1) as i64).max(1);
        let mut t = now - span;
        let mut audience = Audience {
            id: id.to_owned(),
            salt,
            wide_ids,
            ..Audience::default()
        };
        for _ in 0..size {
            // About a third of members share the previous member's second.
            if rng.u8(0..3) != 0 {
                t += rng.i64(1..=step);
            }
            let member = audience.new_member(&mut rng, t.min(now - 60));
            audience.insert(member);
        }
        audience
    }

    /// Every member changed in the second of the oldest change, as after a
    /// bulk import: one run of ties as long as the list.
    pub fn in_one_second(mut self) -> Audience {
        let Some(second) = self.members().map(|m| m.last_changed).min() else {
            return self;
        };
        for part in [&mut self.active, &mut self.archived] {
            for m in part.iter_mut() {
                m.last_changed = second;
            }
            part.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        }
        self
    }

    fn new_member(&mut self, rng: &mut fastrand::Rng, last_changed: i64) -> Member {
        let serial = self.next_serial;
        self.next_serial += 1;
        let status = match rng.u8(0..100) {
            0..=59 => Status::Subscribed,
            60..=74 => Status::Unsubscribed,
            75..=79 => Status::Cleaned,
            80..=84 => Status::Pending,
            85..=89 => Status::Transactional,
            _ => Status::Archived,
        };
        let fname = FIRST_NAMES[rng.usize(0..FIRST_NAMES.len())];
        let lname = LAST_NAMES[rng.usize(0..LAST_NAMES.len())];
        let id = self.salt.rotate_left(17) ^ serial.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let unique_email_id = match self.wide_ids {
            true => format!("{:012x}", id & 0xffff_ffff_ffff),
            false => format!("{:010x}", id & 0xff_ffff_ffff),
        };
        Member {
            unique_email_id,
            email: format!(
                "member.{serial}.{:x}@example.{}",
                self.salt & 0xffff,
                ["com", "org", "net"][rng.usize(0..3)]
            ),
            status,
            fname: fname.to_owned(),
            lname: lname.to_owned(),
            timestamp_opt: if status == Status::Transactional {
                String::new()
            } else {
                timestamp_text(last_changed - 86_400)
            },
            last_changed,
            serial,
            variant: 0,
        }
    }

    fn part(&self, archived: bool) -> &Vec<Member> {
        if archived {
            &self.archived
        } else {
            &self.active
        }
    }

    fn insert(&mut self, member: Member) {
        let part = if member.status == Status::Archived {
            &mut self.archived
        } else {
            &mut self.active
        };
        let at = part.partition_point(|m| sort_key(m) < sort_key(&member));
        part.insert(at, member);
    }

    pub fn len(&self) -> usize {
        self.active.len() + self.archived.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.active.iter().chain(self.archived.iter())
    }

    /// Members deleted for good, each with `last_changed` set to when.
    pub fn deleted(&self) -> impl Iterator<Item = &Member> {
        self.deleted.iter()
    }

    /// The archived (or all other) members in `[since, before)`, ordered by
    /// `last_changed`: two binary searches, however long the list.
    pub fn slice(&self, archived: bool, since: Option<i64>, before: Option<i64>) -> &[Member] {
        let part = self.part(archived);
        let lo = since.map_or(0, |s| part.partition_point(|m| m.last_changed < s));
        let hi = before.map_or(part.len(), |b| part.partition_point(|m| m.last_changed < b));
        &part[lo..hi.max(lo)]
    }

    /// The members in `[since, before)` matching `status`, ordered by
    /// `last_changed` ascending.
    pub fn window(&self, status: StatusFilter, since: Option<i64>, before: Option<i64>) -> Vec<&Member> {
        let slice = self.slice(status == StatusFilter::Only(Status::Archived), since, before);
        match status {
            StatusFilter::Default | StatusFilter::Only(Status::Archived) => slice.iter().collect(),
            StatusFilter::Only(s) => slice.iter().filter(|m| m.status == s).collect(),
        }
    }

    /// Applies one mutation at `now` to a member chosen by `rng`; returns
    /// what it did (`changed <unique_email_id>`), or `None` when the list
    /// has nobody to mutate.
    pub fn mutate(&mut self, kind: Mutation, rng: &mut fastrand::Rng, now: i64) -> Option<String> {
        self.apply(kind, rng, now)
            .map(|applied| format!("{} {}", kind.as_str(), applied.member.unique_email_id))
    }

    /// [`Audience::mutate`], returning the member before and after.
    pub fn apply(&mut self, kind: Mutation, rng: &mut fastrand::Rng, now: i64) -> Option<Applied> {
        if kind == Mutation::Add {
            let member = self.new_member(rng, now);
            self.insert(member.clone());
            return Some(Applied { before: None, member });
        }
        let archived = kind == Mutation::Unarchive;
        let part = if archived { &mut self.archived } else { &mut self.active };
        if part.is_empty() {
            return None;
        }
        let mut member = part.remove(rng.usize(0..part.len()));
        let before = Some(member.clone());
        if kind != Mutation::QuietArchive {
            member.last_changed = now;
        }
        match kind {
            Mutation::Delete => {
                self.deleted.push(member.clone());
                return Some(Applied { before, member });
            }
            Mutation::Change => {
                member.fname = format!("{}·{}", FIRST_NAMES[rng.usize(0..FIRST_NAMES.len())], rng.u16(..));
                member.variant = member.variant.wrapping_add(1);
            }
            Mutation::Archive | Mutation::QuietArchive => member.status = Status::Archived,
            Mutation::Unarchive => member.status = Status::Subscribed,
            Mutation::Unsubscribe => member.status = Status::Unsubscribed,
            Mutation::Subscribe => member.status = Status::Subscribed,
            Mutation::Touch => {}
            Mutation::Add => unreachable!("handled above"),
        }
        self.insert(member.clone());
        Some(Applied { before, member })
    }
}

/// One mutation applied to one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The member before it (`None` for one added).
    pub before: Option<Member>,
    /// The member as it left it; a deleted one as it was, `last_changed`
    /// set to when.
    pub member: Member,
}

/// A change to a list, as its members and staff make them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// A name changes, and so do the member's other merge fields, tags,
    /// permissions and location (its `variant` is bumped).
    Change,
    Archive,
    Unarchive,
    Unsubscribe,
    Subscribe,
    /// Deleted for good: gone from every query.
    Delete,
    Add,
    /// Archived with its `last_changed` kept, as an API might that does not
    /// count archiving as a change. Never drawn at random: no incremental
    /// sync could see it between two syncs.
    QuietArchive,
    /// An edit the importer does not map (a tag, a merge field): only
    /// `last_changed` moves, so a sync reads the member again and the
    /// contact it makes is the one Ometria already holds (under any
    /// mapping: the member's fields stay as they were). Never drawn at
    /// random, so the random mutations' figures stay as they were.
    Touch,
}

impl Mutation {
    pub const ALL: [Mutation; 7] = [
        Mutation::Change,
        Mutation::Archive,
        Mutation::Unarchive,
        Mutation::Unsubscribe,
        Mutation::Subscribe,
        Mutation::Delete,
        Mutation::Add,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Mutation::Change => "changed",
            Mutation::Archive => "archived",
            Mutation::Unarchive => "unarchived",
            Mutation::Unsubscribe => "unsubscribed",
            Mutation::Subscribe => "subscribed",
            Mutation::Delete => "deleted",
            Mutation::Add => "added",
            Mutation::QuietArchive => "quietly archived",
            Mutation::Touch => "touched",
        }
    }

    /// `change` or `changed`, `archive` or `archived`, …
    pub fn parse(text: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| {
            let past = m.as_str();
            text == past || Some(text) == past.strip_suffix('d') || Some(text) == past.strip_suffix("ed")
        })
    }

    /// A mutation drawn with realistic weights.
    pub fn random(rng: &mut fastrand::Rng) -> Mutation {
        match rng.u8(0..100) {
            0..=34 => Mutation::Change,
            35..=49 => Mutation::Archive,
            50..=54 => Mutation::Unarchive,
            55..=69 => Mutation::Unsubscribe,
            70..=74 => Mutation::Subscribe,
            75..=84 => Mutation::Delete,
            _ => Mutation::Add,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn wide_ids_are_the_same_ids_with_two_more_digits() {
        let narrow = Audience::generate("l", 300, 1, NOW);
        let wide = Audience::generate_with("l", 300, 1, NOW, true);
        let ids = |a: &Audience| a.members().map(|m| m.unique_email_id.clone()).collect::<Vec<_>>();
        let mut narrow = ids(&narrow);
        assert!(narrow.iter().all(|n| n.len() == 10));
        let wide = ids(&wide);
        assert!(wide.iter().all(|w| w.len() == 12));
        // Ties in `last_changed` are ordered by id, so compare them as sets.
        let mut cut: Vec<String> = wide.iter().map(|w| w[2..].to_owned()).collect();
        narrow.sort();
        cut.sort();
        assert_eq!(narrow, cut);
    }

    #[test]
    fn generation_is_deterministic_and_varied() {
        let a = Audience::generate("list-a", 2000, 7, NOW);
        let b = Audience::generate("list-a", 2000, 7, NOW);
        let c = Audience::generate("list-b", 2000, 7, NOW);
        let ids = |x: &Audience| x.members().map(|m| m.unique_email_id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b));
        assert_ne!(ids(&a), ids(&c));
        assert_eq!(a.len(), 2000);
        for status in Status::ALL {
            assert!(a.members().any(|m| m.status == status), "no {status} member");
        }
        assert!(a.members().any(|m| m.fname.is_empty()));
        assert!(a.members().any(|m| !m.fname.is_ascii()));
        let all: Vec<&Member> = a.window(StatusFilter::Default, None, None);
        assert!(
            all.windows(2).any(|w| w[0].last_changed == w[1].last_changed),
            "no ties"
        );
        assert!(all.windows(2).all(|w| sort_key(w[0]) <= sort_key(w[1])));
        assert!(a.members().all(|m| m.last_changed < NOW));
        let unique: std::collections::HashSet<_> = ids(&a).into_iter().collect();
        assert_eq!(unique.len(), 2000);
    }

    #[test]
    fn windows_are_half_open_and_split_by_status() {
        let a = Audience::generate("l", 500, 1, NOW);
        let all = a.window(StatusFilter::Default, None, None);
        let archived = a.window(StatusFilter::Only(Status::Archived), None, None);
        assert_eq!(all.len() + archived.len(), 500);
        assert!(all.iter().all(|m| m.status != Status::Archived));
        let (since, before) = (all[100].last_changed, all[300].last_changed);
        let w = a.window(StatusFilter::Default, Some(since), Some(before));
        assert!(w.iter().all(|m| m.last_changed >= since && m.last_changed < before));
        let expected = all
            .iter()
            .filter(|m| m.last_changed >= since && m.last_changed < before)
            .count();
        assert_eq!(w.len(), expected);
        let subscribed = a.window(StatusFilter::Only(Status::Subscribed), None, None);
        assert!(subscribed.iter().all(|m| m.status == Status::Subscribed));
    }

    #[test]
    fn a_list_in_one_second_keeps_its_members_in_order() {
        let a = Audience::generate("l", 500, 1, NOW).in_one_second();
        let all = a.window(StatusFilter::Default, None, None);
        let second = all[0].last_changed;
        assert!(a.members().all(|m| m.last_changed == second));
        assert!(all.windows(2).all(|w| sort_key(w[0]) < sort_key(w[1])));
        assert_eq!(a.len(), 500);
        assert_eq!(
            a.window(StatusFilter::Default, Some(second), Some(second + 1)).len(),
            all.len()
        );
    }

    #[test]
    fn mutations_move_members_out_of_past_windows() {
        let mut a = Audience::generate("l", 300, 1, NOW);
        let mut rng = fastrand::Rng::with_seed(3);
        let before = a.window(StatusFilter::Default, None, Some(NOW)).len();
        assert!(a
            .mutate(Mutation::Change, &mut rng, NOW + 10)
            .unwrap()
            .starts_with("changed "));
        assert_eq!(a.window(StatusFilter::Default, None, Some(NOW)).len(), before - 1);
        assert_eq!(a.window(StatusFilter::Default, Some(NOW), None).len(), 1);
        a.mutate(Mutation::Delete, &mut rng, NOW + 11).unwrap();
        a.mutate(Mutation::Add, &mut rng, NOW + 12).unwrap();
        assert_eq!(a.len(), 300);
        let archived = a.window(StatusFilter::Only(Status::Archived), None, None).len();
        a.mutate(Mutation::Archive, &mut rng, NOW + 13).unwrap();
        assert_eq!(
            a.window(StatusFilter::Only(Status::Archived), None, None).len(),
            archived + 1
        );
        assert_eq!(Mutation::parse("archive"), Some(Mutation::Archive));
        assert_eq!(Mutation::parse("delete"), Some(Mutation::Delete));
        assert_eq!(Mutation::parse("add"), Some(Mutation::Add));
        assert_eq!(Mutation::parse("change"), Some(Mutation::Change));
        assert_eq!(Mutation::parse("nonsense"), None);
    }

    #[test]
    fn a_touched_member_moves_in_time_and_nothing_else() {
        let mut a = Audience::generate("l", 50, 1, NOW);
        let mut rng = fastrand::Rng::with_seed(5);
        let done = a.mutate(Mutation::Touch, &mut rng, NOW + 10).unwrap();
        let id = done.strip_prefix("touched ").unwrap();
        let touched = a.members().find(|m| m.unique_email_id == id).unwrap().clone();
        let fresh = Audience::generate("l", 50, 1, NOW);
        let before = fresh.members().find(|m| m.unique_email_id == id).unwrap();
        assert_eq!(touched.last_changed, NOW + 10);
        assert_eq!(
            Member {
                last_changed: before.last_changed,
                ..touched
            },
            *before
        );
    }
    #[test]
    fn the_full_member_is_bulky_json() {
        let a = Audience::generate("l", 1, 1, NOW);
        let m = a.members().next().unwrap();
        let v = m.to_value("l");
        assert_eq!(v["unique_email_id"], m.unique_email_id.as_str());
        assert_eq!(v["merge_fields"]["FNAME"], m.fname.as_str());
        assert!(serde_json::to_string(&v).unwrap().len() > 1500);
    }
}
