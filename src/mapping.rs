//! An entry's mapping (issue 17, SPEC §14): which values of a Mailchimp
//! member go to which fields of its Ometria contact, beyond the default
//! mapping of SPEC §5, and the `@collection` and `@force_optin` of its
//! records.
//!
//! Written in the state file's entry, or once in `mappings.json` beside it
//! and named by many entries (see [`named`]):
//!
//! ```json
//! {"list_id": "1a2d7ebf82", "mapping": "shop", "collection": "mailchimp_uk",
//!  "fields": {"phone_number": "merge_fields.PHONE", "properties.tags": "tags"}}
//! ```
//!
//! - `fields` maps a target — an Ometria contact field ([`ContactField`])
//!   or `properties.<name>` (nested with dots) — to a path in the member
//!   (`merge_fields.ADDRESS.country`, `tags`, `location.country_code`…;
//!   the first name must be a member field Mailchimp returns, see
//!   [`MEMBER_ROOTS`]). `null` takes a target out (the default `firstname`
//!   or `lastname`, or one a named mapping gave).
//! - `collection` is sent as `@collection` on every record of the entry;
//!   `force_optin: true` sends `@force_optin: true`.
//!
//! A mapping is validated when the state file is read: an unknown target,
//! a malformed path or a value of the wrong type skips the entry with a
//! warning naming the entry and the key. Values are converted per target
//! by [`convert`]; the fields of the member the mapping reads make the
//! `fields` projection of its requests ([`Mapping::projection`]).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

pub mod convert;
pub mod named;

pub use convert::{convert, Converted};
pub use named::{NamedMappings, MAPPINGS_FILE_NAME};

/// An Ometria contact field a mapping may write (Ometria Data API v2,
/// contact record; SPEC §6). `id`, `email`, `marketing_optin` and
/// `timestamp_subscribed` are the importer's own (SPEC §5) and cannot be
/// mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContactField {
    Prefix,
    Firstname,
    Middlename,
    Lastname,
    PhoneNumber,
    DateOfBirth,
    Gender,
    CountryId,
    Timezone,
    CustomerId,
    StoreIds,
    TimestampAcquired,
    TimestampUnsubscribed,
}

impl ContactField {
    /// Every mappable field, in the order they are written in a record.
    pub const ALL: [ContactField; 13] = [
        ContactField::Prefix,
        ContactField::Firstname,
        ContactField::Middlename,
        ContactField::Lastname,
        ContactField::PhoneNumber,
        ContactField::DateOfBirth,
        ContactField::Gender,
        ContactField::CountryId,
        ContactField::Timezone,
        ContactField::CustomerId,
        ContactField::StoreIds,
        ContactField::TimestampAcquired,
        ContactField::TimestampUnsubscribed,
    ];

    /// The field's name in an Ometria record.
    pub fn name(self) -> &'static str {
        match self {
            ContactField::Prefix => "prefix",
            ContactField::Firstname => "firstname",
            ContactField::Middlename => "middlename",
            ContactField::Lastname => "lastname",
            ContactField::PhoneNumber => "phone_number",
            ContactField::DateOfBirth => "date_of_birth",
            ContactField::Gender => "gender",
            ContactField::CountryId => "country_id",
            ContactField::Timezone => "timezone",
            ContactField::CustomerId => "customer_id",
            ContactField::StoreIds => "store_ids",
            ContactField::TimestampAcquired => "timestamp_acquired",
            ContactField::TimestampUnsubscribed => "timestamp_unsubscribed",
        }
    }

    fn from_name(name: &str) -> Option<ContactField> {
        ContactField::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Contact fields the importer writes itself (SPEC §5): not mappable.
const OWNED_FIELDS: [&str; 7] = [
    "id",
    "email",
    "marketing_optin",
    "timestamp_subscribed",
    "@type",
    "@collection",
    "@force_optin",
];

/// Properties the importer writes itself (SPEC §5): not mappable.
const OWNED_PROPERTIES: [&str; 2] = ["mailchimp_status", "mailchimp_list_id"];

/// Where a mapped value goes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Contact(ContactField),
    /// `properties.a.b` as `["a", "b"]`.
    Property(Vec<String>),
}

impl Target {
    /// Reads a target as written in `fields` (`phone_number`,
    /// `properties.birthday`). Errors: what is wrong, for the warning.
    pub fn parse(text: &str) -> Result<Target, String> {
        if let Some(rest) = text.strip_prefix("properties.") {
            let path: Vec<String> = rest.split('.').map(str::to_owned).collect();
            if path.iter().any(|p| p.trim().is_empty()) {
                return Err(format!(
                    "{text:?} is not a property path: write properties.<name>, nested with single dots"
                ));
            }
            // `properties.mailchimp_status.x` too: the record would hold the name twice.
            if OWNED_PROPERTIES.contains(&path[0].as_str()) {
                return Err(format!(
                    "{text:?} is written by the importer itself (docs/sync.md#mapping) and cannot be mapped; \
                     send the value under another field or a properties.<name> of your own"
                ));
            }
            return Ok(Target::Property(path));
        }
        if let Some(field) = ContactField::from_name(text) {
            return Ok(Target::Contact(field));
        }
        if OWNED_FIELDS.contains(&text) {
            return Err(format!(
                "{text:?} is written by the importer itself (docs/sync.md#mapping) and cannot be mapped; \
                     send the value under another field or a properties.<name> of your own"
            ));
        }
        let known: Vec<&str> = ContactField::ALL.iter().map(|f| f.name()).collect();
        Err(format!(
            "{text:?} is not an Ometria contact field; map to one of {} or to properties.<name>",
            known.join(", ")
        ))
    }

    /// The name counted when a value for it is dropped (`phone_number`,
    /// `properties.birthday`).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Contact(field) => f.write_str(field.name()),
            Target::Property(path) => write!(f, "properties.{}", path.join(".")),
        }
    }
}

/// The member fields Mailchimp's `GET /lists/{list_id}/members` returns
/// (Marketing API 3.0, List members): the first name of a source path.
pub const MEMBER_ROOTS: [&str; 31] = [
    "email_address",
    "unique_email_id",
    "contact_id",
    "full_name",
    "web_id",
    "email_type",
    "status",
    "unsubscribe_reason",
    "consents_to_one_to_one_messaging",
    "sms_phone_number",
    "sms_subscription_status",
    "sms_subscription_last_updated",
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
];

/// A path in a Mailchimp member: `merge_fields.ADDRESS.country` as
/// `["merge_fields", "ADDRESS", "country"]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePath(Vec<String>);

impl SourcePath {
    /// Reads a path as written in `fields`. Names are letters, digits and
    /// `_` (merge tags, interest ids, field names); the first is one of
    /// [`MEMBER_ROOTS`]; `merge_fields` must name a merge tag.
    /// Errors: what is wrong, for the warning.
    pub fn parse(text: &str) -> Result<SourcePath, String> {
        let parts: Vec<&str> = text.split('.').collect();
        let malformed = parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
        if malformed {
            return Err(format!(
                "{text:?} is not a member path: names of letters, digits and _ joined by single dots, \
                 e.g. \"merge_fields.PHONE\" or \"location.country_code\""
            ));
        }
        if !MEMBER_ROOTS.contains(&parts[0]) {
            return Err(format!(
                "{text:?} does not start with a field of a Mailchimp member ({:?} is not one; \
                 merge fields are \"merge_fields.<TAG>\")",
                parts[0]
            ));
        }
        if parts == ["merge_fields"] {
            return Err(format!(
                "{text:?} names all merge fields at once: name one, e.g. \"merge_fields.PHONE\""
            ));
        }
        Ok(SourcePath(parts.into_iter().map(str::to_owned).collect()))
    }

    pub fn parts(&self) -> &[String] {
        &self.0
    }

    /// The merge tag the path reads (`PHONE` of `merge_fields.PHONE`), if any.
    pub fn merge_tag(&self) -> Option<&str> {
        match self.0.as_slice() {
            [root, tag, ..] if root == "merge_fields" => Some(tag),
            _ => None,
        }
    }

    /// The value at this path in `member` (a member object as Mailchimp
    /// sent it): objects are walked by name; through an array, each
    /// element's value is collected (`tags.name` → the tags' names).
    /// `None` when a name is missing.
    pub fn find(&self, member: &Value) -> Option<Value> {
        find(member, &self.0)
    }
}

fn find(value: &Value, path: &[String]) -> Option<Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value.clone());
    };
    match value {
        Value::Object(map) => find(map.get(first)?, rest),
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(|v| find(v, path)).collect())),
        _ => None,
    }
}

impl fmt::Display for SourcePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// The default mapping's name fields (SPEC §5).
const DEFAULT_NAMES: [(ContactField, &str); 2] =
    [(ContactField::Firstname, "FNAME"), (ContactField::Lastname, "LNAME")];

/// One entry's mapping, resolved: its named mapping (if any) with the
/// entry's own keys over it. [`Mapping::default`] is SPEC §5's mapping
/// alone, and gives records byte for byte as before mappings existed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Mapped targets, in record order (contact fields, then properties by
    /// name), whatever order they were written in: a mapping rewritten in
    /// another order gives the same records, and the ledger pushes nobody.
    /// `None`: the target is taken out (only meaningful for the default
    /// `firstname` and `lastname`).
    pub fields: BTreeMap<Target, Option<SourcePath>>,
    /// `@collection` of every record.
    pub collection: Option<String>,
    /// `@force_optin: true` on every record.
    pub force_optin: bool,
    /// The named mapping it started from, for messages.
    pub name: Option<String>,
}

/// [`Mapping::fingerprint`] of SPEC §5's mapping alone: what the ledger
/// takes for an entry it holds none for (a ledger written before mappings).
pub const DEFAULT_FINGERPRINT: u64 = 0;

/// The keys of an entry (or of a named mapping) that make its mapping.
pub const FIELD_FIELDS: &str = "fields";
pub const FIELD_COLLECTION: &str = "collection";
pub const FIELD_FORCE_OPTIN: &str = "force_optin";
pub const FIELD_MAPPING: &str = "mapping";

/// The most fields a mapping may set: each is a path in the `fields`
/// query parameter of every members request, and a URL of a few
/// kilobytes is what servers and proxies take.
pub const MAX_FIELDS: usize = 100;

/// The longest `@collection` taken (Ometria documents none; a source name
/// is a word or two).
const MAX_COLLECTION_CHARS: usize = 200;

/// A problem with a mapping: the key it is under and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappingError {
    /// `fields`, `collection`, `force_optin` or `mapping`.
    pub field: &'static str,
    pub problem: String,
}

impl Mapping {
    /// Applies the mapping keys of `object` (an entry, or a named mapping)
    /// over `self`: `fields` targets one by one, `collection` and
    /// `force_optin` as a whole. Errors: the first key that is wrong.
    pub fn overlay(&mut self, object: &Map<String, Value>) -> Result<(), MappingError> {
        let error = |field, problem| MappingError { field, problem };
        match object.get(FIELD_FIELDS) {
            None | Some(Value::Null) => {}
            Some(Value::Object(fields)) => {
                // Every wrong target at once, so that one round of fixes does.
                let mut problems = vec![];
                for (target, source) in fields {
                    let target = match Target::parse(target) {
                        Ok(target) => target,
                        Err(p) => {
                            problems.push(p);
                            continue;
                        }
                    };
                    let source = match source {
                        Value::Null => None,
                        Value::String(path) => match SourcePath::parse(path) {
                            Ok(path) => Some(path),
                            Err(p) => {
                                problems.push(format!("{target}: {p}"));
                                continue;
                            }
                        },
                        other => {
                            problems.push(format!(
                                "{target}: must be a member path like \"merge_fields.PHONE\" (a string) or null, found {}",
                                crate::state::describe(other)
                            ));
                            continue;
                        }
                    };
                    // Restating the default is the default: same records, same fingerprint.
                    if let Target::Contact(field) = target {
                        if source.is_some() && source == self.default_source(field) {
                            self.fields.remove(&target);
                            continue;
                        }
                    }
                    self.fields.insert(target, source);
                }
                match problems.len() {
                    0 => {}
                    1 => return Err(error(FIELD_FIELDS, problems.remove(0))),
                    n => {
                        let listed: Vec<String> = problems
                            .iter()
                            .enumerate()
                            .map(|(i, p)| format!("({}) {p}", i + 1))
                            .collect();
                        return Err(error(FIELD_FIELDS, format!("{n} problems: {}", listed.join(" "))));
                    }
                }
                self.check_nesting().map_err(|p| error(FIELD_FIELDS, p))?;
                if self.fields.len() > MAX_FIELDS {
                    return Err(error(
                        FIELD_FIELDS,
                        format!(
                            "maps {} fields, and at most {MAX_FIELDS} may be mapped (each is asked of Mailchimp in every request's URL)",
                            self.fields.len()
                        ),
                    ));
                }
            }
            Some(other) => {
                return Err(error(
                    FIELD_FIELDS,
                    format!(
                        "must be an object like {{\"phone_number\": \"merge_fields.PHONE\"}}, found {}",
                        crate::state::describe(other)
                    ),
                ))
            }
        }
        match object.get(FIELD_COLLECTION) {
            None => {}
            Some(Value::Null) => self.collection = None,
            Some(Value::String(c))
                if !c.trim().is_empty()
                    && c.trim() == c
                    && c.chars().count() <= MAX_COLLECTION_CHARS
                    && !c.chars().any(char::is_control) =>
            {
                self.collection = Some(c.clone())
            }
            Some(other) => {
                return Err(error(
                    FIELD_COLLECTION,
                    format!(
                        "must be a collection name (a non-empty string of at most {MAX_COLLECTION_CHARS} characters, \
                         no spaces around it, no control characters) or null, found {}",
                        crate::state::describe(other)
                    ),
                ))
            }
        }
        match object.get(FIELD_FORCE_OPTIN) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => self.force_optin = *b,
            Some(other) => {
                return Err(error(
                    FIELD_FORCE_OPTIN,
                    format!("must be true or false, found {}", crate::state::describe(other)),
                ))
            }
        }
        Ok(())
    }

    /// A property cannot be both a value and an object holding another
    /// (`properties.a` and `properties.a.b`).
    fn check_nesting(&self) -> Result<(), String> {
        let properties: Vec<&Vec<String>> = self
            .fields
            .iter()
            .filter(|(_, s)| s.is_some())
            .filter_map(|(t, _)| match t {
                Target::Property(p) => Some(p),
                Target::Contact(_) => None,
            })
            .collect();
        for a in &properties {
            for b in &properties {
                if a.len() < b.len() && b.starts_with(a) {
                    return Err(format!(
                        "properties.{} and properties.{} cannot both be mapped: the first would be a value and an object at once",
                        a.join("."),
                        b.join(".")
                    ));
                }
            }
        }
        Ok(())
    }

    /// A stable 64-bit fingerprint of what the mapping sends (its rules,
    /// collection and force_optin; not its name nor the order written):
    /// the ledger keeps the one of each entry's last full read, and an
    /// entry whose mapping no longer has it reads every member again at
    /// its next sync (see `crate::ledger`). SPEC §5's mapping alone has
    /// [`DEFAULT_FINGERPRINT`].
    pub fn fingerprint(&self) -> u64 {
        if self.is_default_records() {
            return DEFAULT_FINGERPRINT;
        }
        let rules: Vec<String> = self
            .fields
            .iter()
            .map(|(t, s)| format!("{t}<-{}", s.as_ref().map_or(String::from("null"), ToString::to_string)))
            .collect();
        let text = format!(
            "{}|{}|{}",
            rules.join(","),
            self.collection.as_deref().unwrap_or(""),
            self.force_optin
        );
        crate::ledger::record_hash(text.as_bytes())
    }

    /// Whether an entry with this mapping must read every member at its
    /// next sync: the ledger `kept` another fingerprint from its last full
    /// read (none kept: [`DEFAULT_FINGERPRINT`], a ledger from before
    /// mappings). The Controller, `plan` and `check` all decide so.
    pub fn changed_since(&self, kept: Option<u64>) -> bool {
        kept.unwrap_or(DEFAULT_FINGERPRINT) != self.fingerprint()
    }

    /// Whether records are SPEC §5's (whatever the mapping is called).
    fn is_default_records(&self) -> bool {
        self.fields.is_empty() && self.collection.is_none() && !self.force_optin
    }

    /// Whether this is SPEC §5's mapping alone.
    pub fn is_default(&self) -> bool {
        *self == Mapping::default()
    }

    /// The default mapping's source of `field` (`FNAME` for `firstname`,
    /// `LNAME` for `lastname`), if it has one.
    fn default_source(&self, field: ContactField) -> Option<SourcePath> {
        DEFAULT_NAMES
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, tag)| SourcePath(vec!["merge_fields".into(), (*tag).into()]))
    }

    /// Where `firstname` or `lastname` comes from: the default merge tag,
    /// the mapped path, or nowhere (`None`, taken out).
    fn name_source(&self, field: ContactField) -> Option<SourcePath> {
        match self.fields.get(&Target::Contact(field)) {
            Some(source) => source.clone(),
            None => DEFAULT_NAMES
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, tag)| SourcePath(vec!["merge_fields".into(), (*tag).into()])),
        }
    }

    /// Whether the default `firstname` (`lastname`) stands: read from
    /// `FNAME` (`LNAME`) by the typed member reader.
    pub fn default_name(&self, field: ContactField) -> bool {
        !self.fields.contains_key(&Target::Contact(field))
    }

    /// The mapped targets and where they read, in record order, without
    /// the ones taken out.
    pub fn rules(&self) -> impl Iterator<Item = (&Target, &SourcePath)> {
        self.fields.iter().filter_map(|(t, s)| s.as_ref().map(|s| (t, s)))
    }

    /// Whether a record needs more of the member than the typed reader
    /// takes (see [`crate::mailchimp::Member`]).
    pub fn reads_more(&self) -> bool {
        self.rules().next().is_some()
    }

    /// The `fields` query parameter of a sync's members requests: what
    /// SPEC §5's mapping reads (less the name fields taken over), each
    /// mapped path, and what the paging checks need (`last_changed`,
    /// `status`, `total_items`). Mailchimp takes dots into sub-objects.
    pub fn projection(&self) -> String {
        let mut paths: Vec<String> = ["unique_email_id", "email_address", "status"]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        for (field, _) in DEFAULT_NAMES {
            if let (true, Some(source)) = (self.default_name(field), self.name_source(field)) {
                paths.push(source.to_string());
            }
        }
        paths.push("timestamp_opt".into());
        paths.push("last_changed".into());
        // A value asked for whole and by a part (`merge_fields.ADDRESS` and
        // `merge_fields.ADDRESS.country`) may come back as the part alone
        // (Mailchimp does not say): ask for the whole only.
        let covers = |whole: &str, part: &str| {
            part.strip_prefix(whole)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        };
        for (_, source) in self.rules() {
            let path = source.to_string();
            if !paths.iter().any(|p| covers(p, &path)) {
                paths.retain(|p| !covers(&path, p));
                paths.push(path);
            }
        }
        let mut fields: Vec<String> = paths.into_iter().map(|p| format!("members.{p}")).collect();
        fields.push("total_items".into());
        fields.join(",")
    }

    /// The merge tags the mapped targets read, with their target, for
    /// `check --online`'s comparison with the list's merge fields (the
    /// default `FNAME` and `LNAME` are not asked about: a list without them
    /// simply has no names to send).
    pub fn merge_tags(&self) -> Vec<(String, &str)> {
        let mut tags = vec![];
        for (target, source) in self.rules() {
            if let Some(tag) = source.merge_tag() {
                tags.push((target.to_string(), tag));
            }
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(value: Value) -> Result<Mapping, MappingError> {
        let mut m = Mapping::default();
        m.overlay(value.as_object().unwrap())?;
        Ok(m)
    }

    #[test]
    fn the_issue_example_reads() {
        let m = mapping(json!({"fields": {"phone_number": "merge_fields.PHONE",
            "country_id": "merge_fields.ADDRESS.country", "properties.birthday": "merge_fields.BIRTHDAY",
            "properties.tags": "tags", "properties.loyalty": "merge_fields.LOYALTY"},
            "collection": "mailchimp", "force_optin": true}))
        .unwrap();
        let rules: Vec<String> = m.rules().map(|(t, s)| format!("{t}<-{s}")).collect();
        assert_eq!(
            rules,
            [
                "phone_number<-merge_fields.PHONE",
                "country_id<-merge_fields.ADDRESS.country",
                "properties.birthday<-merge_fields.BIRTHDAY",
                "properties.loyalty<-merge_fields.LOYALTY",
                "properties.tags<-tags"
            ]
        );
        assert_eq!(m.collection.as_deref(), Some("mailchimp"));
        assert!(m.force_optin);
        assert_eq!(
            m.projection(),
            "members.unique_email_id,members.email_address,members.status,members.merge_fields.FNAME,\
             members.merge_fields.LNAME,members.timestamp_opt,members.last_changed,members.merge_fields.PHONE,\
             members.merge_fields.ADDRESS.country,members.merge_fields.BIRTHDAY,members.merge_fields.LOYALTY,\
             members.tags,total_items"
        );
    }

    #[test]
    fn the_default_projection_is_the_default_mappings() {
        assert_eq!(Mapping::default().projection(), crate::mailchimp::MEMBER_FIELDS);
        assert!(Mapping::default().is_default() && !Mapping::default().reads_more());
    }

    #[test]
    fn name_fields_taken_over_or_out_are_not_asked_for() {
        let m = mapping(json!({"fields": {"firstname": "merge_fields.FIRST", "lastname": null}})).unwrap();
        let projection = m.projection();
        assert!(projection.contains("members.merge_fields.FIRST,"), "{projection}");
        assert!(
            !projection.contains("FNAME") && !projection.contains("LNAME"),
            "{projection}"
        );
        assert!(!m.default_name(ContactField::Firstname) && !m.default_name(ContactField::Lastname));
        assert_eq!(m.rules().count(), 1);
    }

    #[test]
    fn fingerprints_change_with_what_is_sent_only() {
        let fp = |v: Value| mapping(v).unwrap().fingerprint();
        assert_eq!(Mapping::default().fingerprint(), DEFAULT_FINGERPRINT);
        assert_eq!(fp(json!({"fields": {}, "force_optin": false})), DEFAULT_FINGERPRINT);
        let a = fp(json!({"fields": {"phone_number": "merge_fields.PHONE", "properties.a": "vip"}}));
        assert_eq!(
            a,
            fp(json!({"fields": {"properties.a": "vip", "phone_number": "merge_fields.PHONE"}}))
        );
        assert_ne!(a, DEFAULT_FINGERPRINT);
        assert_ne!(
            a,
            fp(json!({"fields": {"phone_number": "merge_fields.PHONE2", "properties.a": "vip"}}))
        );
        assert_ne!(
            a,
            fp(json!({"fields": {"phone_number": "merge_fields.PHONE", "properties.a": "vip"}, "collection": "c"}))
        );
        assert_ne!(
            a,
            fp(json!({"fields": {"phone_number": "merge_fields.PHONE", "properties.a": "vip"}, "force_optin": true}))
        );
        assert_ne!(DEFAULT_FINGERPRINT, fp(json!({"fields": {"lastname": null}})));
    }

    #[test]
    fn a_value_read_whole_and_by_a_part_is_asked_for_whole() {
        let m = mapping(json!({"fields": {"country_id": "merge_fields.ADDRESS.country",
            "properties.address": "merge_fields.ADDRESS", "properties.tag_names": "tags.name",
            "properties.tags": "tags", "properties.addr": "merge_fields.ADDRESS2"}}))
        .unwrap();
        let projection = m.projection();
        let mapped: Vec<&str> = projection.split(',').skip(7).collect();
        assert_eq!(
            mapped,
            [
                "members.merge_fields.ADDRESS2",
                "members.merge_fields.ADDRESS",
                "members.tags",
                "total_items"
            ],
            "{projection}"
        );
    }

    /// The breaker's: restating a default name is the default mapping, and
    /// pushes nobody again.
    #[test]
    fn restating_the_default_names_is_the_default() {
        let m =
            mapping(json!({"fields": {"firstname": "merge_fields.FNAME", "lastname": "merge_fields.LNAME"}})).unwrap();
        assert!(m.is_default(), "{m:?}");
        assert_eq!(m.fingerprint(), DEFAULT_FINGERPRINT);
        // Over a named mapping that took it elsewhere, it brings the default back.
        let mut m = mapping(json!({"fields": {"firstname": "merge_fields.NICK"}})).unwrap();
        m.overlay(
            json!({"fields": {"firstname": "merge_fields.FNAME"}})
                .as_object()
                .unwrap(),
        )
        .unwrap();
        assert!(m.is_default());
    }

    #[test]
    fn order_written_does_not_matter() {
        let a = mapping(json!({"fields": {"properties.b": "vip", "phone_number": "merge_fields.PHONE", "properties.a": "language"}})).unwrap();
        let b = mapping(json!({"fields": {"properties.a": "language", "properties.b": "vip", "phone_number": "merge_fields.PHONE"}})).unwrap();
        assert_eq!(a, b);
    }

    /// `check`'s errors: each names the key and says what to write.
    #[test]
    fn bad_mappings_say_what_is_wrong() {
        for (value, field, needle) in [
            (
                json!({"fields": {"phone": "merge_fields.PHONE"}}),
                "fields",
                "\"phone\" is not an Ometria contact field",
            ),
            (
                json!({"fields": {"email": "merge_fields.EMAIL2"}}),
                "fields",
                "written by the importer itself",
            ),
            (
                json!({"fields": {"marketing_optin": "status"}}),
                "fields",
                "written by the importer itself",
            ),
            (
                json!({"fields": {"properties.mailchimp_status": "status"}}),
                "fields",
                "written by the importer itself",
            ),
            (
                json!({"fields": {"properties.mailchimp_list_id.x": "status"}}),
                "fields",
                "written by the importer itself",
            ),
            (
                json!({"fields": {"properties.": "status"}}),
                "fields",
                "is not a property path",
            ),
            (
                json!({"fields": {"properties.a..b": "status"}}),
                "fields",
                "is not a property path",
            ),
            (
                json!({"fields": {"phone_number": "merge_fields..PHONE"}}),
                "fields",
                "phone_number: \"merge_fields..PHONE\" is not a member path",
            ),
            (
                json!({"fields": {"phone_number": "merge_fields.PHONE "}}),
                "fields",
                "is not a member path",
            ),
            (
                json!({"fields": {"phone_number": ""}}),
                "fields",
                "is not a member path",
            ),
            (
                json!({"fields": {"phone_number": "merge_field.PHONE"}}),
                "fields",
                "\"merge_field\" is not one",
            ),
            (
                json!({"fields": {"phone_number": "merge_fields"}}),
                "fields",
                "name one",
            ),
            (
                json!({"fields": {"phone_number": 5}}),
                "fields",
                "phone_number: must be a member path",
            ),
            (
                json!({"fields": {"phone_number": ["merge_fields.PHONE"]}}),
                "fields",
                "found an array",
            ),
            (json!({"fields": ["phone_number"]}), "fields", "must be an object"),
            (
                json!({"fields": {"properties.a": "vip", "properties.a.b": "language"}}),
                "fields",
                "cannot both be mapped",
            ),
            (json!({"collection": ""}), "collection", "must be a collection name"),
            (json!({"collection": 3}), "collection", "found 3"),
            (json!({"collection": " uk "}), "collection", "no spaces around it"),
            (json!({"collection": "uk\nde"}), "collection", "no control characters"),
            (
                json!({"force_optin": "yes"}),
                "force_optin",
                "must be true or false, found the text \"yes\"",
            ),
            (json!({"force_optin": 1}), "force_optin", "found 1"),
            (
                json!({"fields": (0..101).map(|i| (format!("properties.p{i}"), json!("vip"))).collect::<Map<String, Value>>()}),
                "fields",
                "maps 101 fields, and at most 100 may be mapped",
            ),
        ] {
            let e = mapping(value.clone()).unwrap_err();
            assert_eq!(e.field, field, "{value}");
            assert!(e.problem.contains(needle), "{value}: {}", e.problem);
        }
    }

    /// The walkthrough's: every wrong target of `fields` is named at once.
    #[test]
    fn every_wrong_field_is_named_at_once() {
        let e = mapping(json!({"fields": {"phone": "merge_fields.PHONE", "email": "x",
            "gender": "merge fields", "country_id": "merge_fields.ADDRESS.country"}}))
        .unwrap_err();
        assert!(
            e.problem
                .starts_with("3 problems: (1) \"phone\" is not an Ometria contact field"),
            "{}",
            e.problem
        );
        assert!(
            e.problem.contains(" (2) \"email\" is written by the importer"),
            "{}",
            e.problem
        );
        assert!(
            e.problem.contains(" (3) gender: \"merge fields\" is not a member path"),
            "{}",
            e.problem
        );
    }

    #[test]
    fn paths_walk_objects_and_arrays() {
        let member = json!({"merge_fields": {"ADDRESS": {"country": "GB"}, "PHONE": ""},
            "tags": [{"id": 1, "name": "vip"}, {"id": 2, "name": "new"}], "vip": false});
        let path = |p: &str| SourcePath::parse(p).unwrap();
        assert_eq!(path("merge_fields.ADDRESS.country").find(&member), Some(json!("GB")));
        assert_eq!(path("tags.name").find(&member), Some(json!(["vip", "new"])));
        assert_eq!(path("vip").find(&member), Some(json!(false)));
        assert_eq!(path("merge_fields.NOPE").find(&member), None);
        assert_eq!(path("merge_fields.PHONE.x").find(&member), None);
        assert_eq!(path("merge_fields.PHONE").merge_tag(), Some("PHONE"));
        assert_eq!(path("tags").merge_tag(), None);
    }
}
