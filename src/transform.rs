//! Mailchimp member → Ometria contact (SPEC §5, issue 14). A pure function.
//!
//! Every value sent meets Ometria's contract for its field, or is not sent:
//! - `timestamp_subscribed` is a real instant after 1970-01-01T00:00:00Z
//!   and no later than a day after the sync started, written in one RFC
//!   3339 form, UTC, whole seconds (`2019-10-18T22:20:23+00:00`, the form
//!   Mailchimp itself writes). Offsets are converted, fractions dropped,
//!   and a time without an offset is read as UTC. Anything else — MySQL's
//!   `0000-00-00 00:00:00`, `2021-02-30`, a bare date, text — is left out
//!   of the record and reported as a [`DroppedValue`].
//! - `email` is an address by the rule of [`ometria_email`] (RFC 5321/5322
//!   as a dot-atom, UTF-8 allowed, nothing invisible or unreadable). A
//!   member without one cannot be sent: it is skipped, as one without
//!   `unique_email_id` is.
//! - `id` is the member's `unique_email_id` exactly as Mailchimp holds it,
//!   so it must have been read exactly (see [`ometria_id`]): one that
//!   holds U+FFFD, whitespace, a control or an invisible character would
//!   write to another contact, and its member is skipped.
//! - `properties.mailchimp_status` is left out when Mailchimp gave no status.
//! - Names, status and list id are text, sent exactly (JSON escapes what
//!   needs it); `marketing_optin` is one of its three values by construction.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::config::OmetriaApi;
use crate::ledger::LedgerMember;
use crate::mailchimp::Member;
use crate::mapping::{convert, ContactField, Converted, Mapping, Target};
use crate::ometria::{encode, Contact, ContactProperties, MappedFields, MarketingOptin, ParsedFrom};
use crate::state::parse_timestamp;

/// Why a member cannot be sent. Each is counted (`skipped=`) and named in
/// the log with this text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NoUniqueEmailId,
    /// Its `unique_email_id` holds U+FFFD: text the page's repair could
    /// not read (a lone surrogate escape, bytes that are not UTF-8).
    UnreadableUniqueEmailId,
    /// Its `unique_email_id` holds whitespace, a control or an invisible
    /// character (see [`ometria_id`]).
    BadUniqueEmailId,
    NoEmail,
    /// Its email holds U+FFFD: what was sent in its place is a guess.
    UnreadableEmail,
    /// Its email is not an address Ometria takes (see [`ometria_email`]).
    BadEmail,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NoUniqueEmailId => "it has no unique_email_id",
            SkipReason::UnreadableUniqueEmailId => {
                "its unique_email_id could not be read (U+FFFD stands in it for text that was not valid \
                 in Mailchimp's answer), and a guessed id would write to another contact"
            }
            SkipReason::BadUniqueEmailId => {
                "its unique_email_id holds whitespace, a control character or an invisible one, \
                 and would write to another contact"
            }
            SkipReason::NoEmail => "its email address is empty",
            SkipReason::UnreadableEmail => {
                "its email address could not be read (U+FFFD stands in it for text that was not valid \
                 in Mailchimp's answer), and a guessed address is not the member's"
            }
            SkipReason::BadEmail => "its email address is not one Ometria takes",
        })
    }
}

/// A value of a member that does not meet Ometria's contract for the
/// field it maps to, and so was left out of the contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedValue {
    /// The Ometria field, e.g. `timestamp_subscribed` or `properties.birthday`.
    pub field: Cow<'static, str>,
    /// The value as Mailchimp sent it (at most 100 characters of it).
    pub value: String,
}

/// A member mapped: its contact, and the values left out of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped<'a> {
    pub contact: Contact<'a>,
    pub dropped: Vec<DroppedValue>,
}

/// Email addresses longer than this (bytes) are not sent (RFC 5321's path limit).
const MAX_EMAIL_BYTES: usize = 254;

/// The longest local part of an address, in bytes (RFC 5321 §4.5.3.1.1).
const MAX_LOCAL_BYTES: usize = 64;

/// The longest label of a domain name (RFC 1035 §2.3.4; characters here,
/// for the labels of internationalised domains).
const MAX_LABEL_CHARS: usize = 63;

/// The earliest subscription time taken: anything at or before the Unix
/// epoch is a placeholder for "unknown" (`0000-00-00`, `0001-01-01`, `0`).
const EARLIEST: i64 = 0;

/// How far past the sync's start a subscription time may lie (clock skew).
const LATEST_AHEAD: i64 = 86_400;

/// `text` as the instant Ometria takes: UTC, whole seconds, in the form
/// `YYYY-MM-DDTHH:MM:SS+00:00`, borrowed when it is already so written.
/// `None` if it is not a real instant between the Unix epoch (excluded)
/// and a day after `now`.
pub fn ometria_timestamp(text: &str, now: DateTime<Utc>) -> Option<Cow<'_, str>> {
    let at = parse_timestamp(text)?;
    let seconds = at.timestamp();
    if seconds <= EARLIEST || seconds > now.timestamp() + LATEST_AHEAD {
        return None;
    }
    let canonical = DateTime::<Utc>::from_timestamp(seconds, 0)?
        .format("%Y-%m-%dT%H:%M:%S+00:00")
        .to_string();
    Some(if canonical == text {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(canonical)
    })
}

/// `text` as an email address Ometria takes, without the white space
/// around it; `None` if it is not one.
///
/// Ometria documents no rule for a contact's `email` beyond a string in
/// UTF-8 (Data API v2 reference, <https://docs.ometria.com/apis/data_api_v2/>;
/// the contact pages of <https://support.ometria.com> show only examples),
/// so the rule is mail's own, for an address a mailbox can have:
/// - one `@`; a local part of at most 64 bytes (RFC 5321 §4.5.3.1.1) that
///   is a dot-atom (RFC 5322 §3.4.1, §3.2.3): runs of atext — ASCII
///   letters, digits and ``!#$%&'*+-/=?^_`{|}~``, or any other non-ASCII
///   character (RFC 6531 §3.3) — joined by single dots, no dot first or
///   last. A quoted local part (`"a b"@x.io`) is not taken;
/// - a domain of at least two labels joined by single dots (RFC 5321
///   §4.1.2 `Domain`), each of 1 to 63 letters, digits and hyphens,
///   neither first nor last a hyphen (RFC 1123 §2.1; RFC 5890 §2.3.2.1
///   for the labels of internationalised domains, whose letters and
///   digits are any [`char::is_alphanumeric`]); the last label (the
///   top-level domain) not all digits (RFC 3696 §2), so no address
///   literal nor bare IP address;
/// - nowhere whitespace, a control character, an invisible one (see
///   [`invisible`]) or U+FFFD, which stands for text that could not be
///   read;
/// - at most 254 bytes in all (RFC 5321 §4.5.3.1.3's path of 256, less
///   its angle brackets).
///
/// So `a..b@x.io`, `.a@x.io`, `a.@x.io`, `a@x..io`, `a@-x.io`, `a@x-.io`,
/// `a@b_c.io`, `a@x.io` followed by U+200B, `a@x` and `a@1.2.3.4` are
/// refused; `o'brien+tag@sub.example.co.uk`, `A.B-2@x-y.example` and
/// `zoë.李@例え.jp` are taken.
pub fn ometria_email(text: &str) -> Option<&str> {
    let email = text.trim();
    let (local, domain) = email.split_once('@')?;
    let readable = !email
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c) || c == REPLACEMENT);
    (readable && email.len() <= MAX_EMAIL_BYTES && dot_atom(local) && hostname(domain)).then_some(email)
}

/// RFC 5322 §3.4.1's dot-atom local part, with RFC 6531's UTF-8.
fn dot_atom(local: &str) -> bool {
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    local.len() <= MAX_LOCAL_BYTES && local.split('.').all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// A domain of two or more labels (RFC 1123 §2.1, RFC 5890 §2.3.2.1), its
/// top-level domain not all digits.
fn hostname(domain: &str) -> bool {
    let label = |label: &str| {
        (1..=MAX_LABEL_CHARS).contains(&label.chars().count())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c == '-' || c.is_alphanumeric())
    };
    let labels: Vec<&str> = domain.split('.').collect();
    let tld = labels.last().copied().unwrap_or_default();
    labels.len() >= 2 && labels.iter().all(|l| label(l)) && !tld.chars().all(|c| c.is_ascii_digit())
}

/// `text` as an id Ometria may be sent for a contact: as it came, when it
/// holds no whitespace, control, invisible character (see [`invisible`])
/// nor U+FFFD. Ometria writes by id, so an id that is not exactly the
/// member's — one read repaired, with U+FFFD for what could not be read,
/// or one a stray space or U+200B makes another string — would write to
/// another contact. Mailchimp's own `unique_email_id`s are ten hex digits.
///
/// Errors: [`SkipReason::UnreadableUniqueEmailId`] for U+FFFD,
/// [`SkipReason::BadUniqueEmailId`] for the others.
pub fn ometria_id(text: &str) -> Result<&str, SkipReason> {
    if text.contains(REPLACEMENT) {
        Err(SkipReason::UnreadableUniqueEmailId)
    } else if text
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || invisible(c))
    {
        Err(SkipReason::BadUniqueEmailId)
    } else {
        Ok(text)
    }
}

/// U+FFFD REPLACEMENT CHARACTER: what a lenient reader puts where text
/// could not be read (see `crate::mailchimp::repair`).
const REPLACEMENT: char = '\u{fffd}';

/// Characters that show nothing, or nothing of their own, but make a
/// string another: Unicode's format characters (general category Cf:
/// U+00AD SOFT HYPHEN, U+200B–U+200F ZERO WIDTH SPACE to RIGHT-TO-LEFT
/// MARK, U+202A–U+202E, U+2060–U+206F WORD JOINER…, U+FEFF ZERO WIDTH
/// NO-BREAK SPACE, the Arabic, Syriac and Mongolian ones, tags), the
/// other Default_Ignorable_Code_Points (U+034F, U+115F, U+1160, U+17B4,
/// U+17B5, U+3164, U+FFA0, the variation selectors), and noncharacters
/// (U+FDD0–U+FDEF and the last two of every plane).
/// `char::is_whitespace` and `char::is_control` count none of them.
pub fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FDD0}'..='\u{FDEF}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    ) || (c as u32 & 0xFFFE) == 0xFFFE
}

pub fn marketing_optin(status: &str) -> MarketingOptin {
    match status {
        "subscribed" => MarketingOptin::ExplicitlyOptedin,
        "unsubscribed" | "cleaned" | "archived" => MarketingOptin::ExplicitlyOptedout,
        _ => MarketingOptin::NotSpecified,
    }
}

/// Maps one member of list `list_id` with SPEC §5's mapping alone; see
/// [`map_member`].
pub fn member_to_contact<'a>(
    member: &'a Member<'_>,
    list_id: &'a str,
    now: DateTime<Utc>,
) -> Result<Mapped<'a>, SkipReason> {
    map_member(member, None, &DEFAULT_MAPPING, list_id, now)
}

/// SPEC §5's mapping alone.
static DEFAULT_MAPPING: Mapping = Mapping {
    fields: std::collections::BTreeMap::new(),
    collection: None,
    force_optin: false,
    name: None,
};

/// Maps one member of list `list_id` for a sync that started at `now`,
/// with the entry's `mapping` (issue 17). `raw` is the member as Mailchimp
/// sent it, which the mapped paths are read from (needed only when
/// [`Mapping::reads_more`]). Empty names are omitted; the subscription
/// time is sent for subscribed members only, and only if it is a real
/// instant (see the module doc); each mapped value is converted
/// ([`crate::mapping::convert`]), left out when empty, and reported as a
/// [`DroppedValue`] when its field cannot take it.
///
/// Errors: the member cannot be sent at all (no id or none read exactly,
/// no usable email); see [`SkipReason`].
pub fn map_member<'a>(
    member: &'a Member<'_>,
    raw: Option<&Value>,
    mapping: &'a Mapping,
    list_id: &'a str,
    now: DateTime<Utc>,
) -> Result<Mapped<'a>, SkipReason> {
    let id = non_empty(&member.unique_email_id).ok_or(SkipReason::NoUniqueEmailId)?;
    let id = ometria_id(id)?;
    let email = non_empty(&member.email_address).ok_or(SkipReason::NoEmail)?;
    if email.contains(REPLACEMENT) {
        return Err(SkipReason::UnreadableEmail);
    }
    let email = ometria_email(email).ok_or(SkipReason::BadEmail)?;
    let status = member.status.as_deref().unwrap_or_default();
    let mut dropped = vec![];
    let timestamp_subscribed = match present(&member.timestamp_opt) {
        Some(opt) if status == "subscribed" => {
            let at = ometria_timestamp(opt, now);
            if at.is_none() {
                dropped.push(DroppedValue {
                    field: Cow::Borrowed("timestamp_subscribed"),
                    value: opt.chars().take(100).collect(),
                });
            }
            at
        }
        _ => None,
    };
    let mut fields = vec![];
    let mut properties = Map::new();
    let mut firstname = present(&member.merge_fields.FNAME)
        .filter(|_| mapping.default_name(ContactField::Firstname))
        .map(Cow::Borrowed);
    let mut lastname = present(&member.merge_fields.LNAME)
        .filter(|_| mapping.default_name(ContactField::Lastname))
        .map(Cow::Borrowed);
    if raw.is_none() {
        // The member could not be read whole (see `crate::mailchimp::raw_members`).
        for (target, _) in mapping.rules() {
            dropped.push(DroppedValue {
                field: Cow::Owned(target.label()),
                value: "(the member could not be read whole: nested too deeply)".into(),
            });
        }
    }
    if let Some(raw) = raw {
        for (target, source) in mapping.rules() {
            let value = source.find(raw);
            match convert(target, source, value.as_ref(), now) {
                // A mapped name goes where the default one does.
                Converted::Sent(Value::String(name)) if *target == Target::Contact(ContactField::Firstname) => {
                    firstname = Some(Cow::Owned(name))
                }
                Converted::Sent(Value::String(name)) if *target == Target::Contact(ContactField::Lastname) => {
                    lastname = Some(Cow::Owned(name))
                }
                Converted::Sent(value) => match target {
                    Target::Contact(field) => fields.push((field.name(), value)),
                    Target::Property(path) => insert_property(&mut properties, path, value),
                },
                Converted::Empty => {}
                Converted::Dropped => dropped.push(DroppedValue {
                    field: Cow::Owned(target.label()),
                    value: shown(value.as_ref()),
                }),
            }
        }
    }
    Ok(Mapped {
        contact: Contact {
            record_type: "contact",
            collection: mapping.collection.as_deref(),
            force_optin: mapping.force_optin,
            id,
            email,
            firstname,
            lastname,
            mapped: MappedFields(fields),
            marketing_optin: marketing_optin(status),
            timestamp_subscribed,
            properties: ContactProperties {
                mailchimp_status: status,
                mailchimp_list_id: list_id,
                mapped: properties,
            },
        },
        dropped,
    })
}

/// Takes mapped values out of `contact`, the largest first, until its
/// record (as `encoded_len` measures it) fits in `max_bytes` — Ometria's
/// 60 KB (SPEC §6) — so that the record is still sent, without them. The
/// values are those `mapping` added: its contact fields (a mapped
/// `firstname` or `lastname` included) and each of its properties, one by
/// one. Nothing is taken when taking them all would not make the record
/// fit (a default name too large, say): such a record is too large
/// whatever the mapping, and is kept aside as rejected whole. Returns what
/// was taken.
pub fn fit_mapped(
    contact: &mut Contact,
    mapping: &Mapping,
    max_bytes: usize,
    encoded_len: impl Fn(&Contact) -> usize,
) -> Vec<DroppedValue> {
    let size = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
    let len = encoded_len(contact);
    if len <= max_bytes {
        return vec![];
    }
    // Every mapped value, with its size and where it is.
    let mut values: Vec<(usize, Target)> = vec![];
    for (target, _) in mapping.rules() {
        let bytes = match target {
            Target::Contact(ContactField::Firstname) if !mapping.default_name(ContactField::Firstname) => {
                contact.firstname.as_ref().map(|n| n.len())
            }
            Target::Contact(ContactField::Lastname) if !mapping.default_name(ContactField::Lastname) => {
                contact.lastname.as_ref().map(|n| n.len())
            }
            Target::Contact(field) => contact
                .mapped
                .0
                .iter()
                .find(|(name, _)| *name == field.name())
                .map(|(_, v)| size(v)),
            Target::Property(path) => property_at(&contact.properties.mapped, path).map(size),
        };
        if let Some(bytes) = bytes {
            values.push((bytes, target.clone()));
        }
    }
    let all: usize = values
        .iter()
        .map(|(bytes, target)| bytes + target.label().len() + 4)
        .sum();
    if len.saturating_sub(all) > max_bytes {
        return vec![];
    }
    values.sort_by_key(|v| std::cmp::Reverse(v.0));
    let mut dropped = vec![];
    for (bytes, target) in values {
        match &target {
            Target::Contact(ContactField::Firstname) => contact.firstname = None,
            Target::Contact(ContactField::Lastname) => contact.lastname = None,
            Target::Contact(field) => contact.mapped.0.retain(|(name, _)| *name != field.name()),
            Target::Property(path) => remove_property(&mut contact.properties.mapped, path),
        }
        dropped.push(DroppedValue {
            field: Cow::Owned(target.label()),
            value: format!("({bytes} bytes: too large for Ometria's 60 KB record)"),
        });
        if encoded_len(contact) <= max_bytes {
            break;
        }
    }
    dropped
}

/// The value at `path` in `properties`.
fn property_at<'v>(properties: &'v Map<String, Value>, path: &[String]) -> Option<&'v Value> {
    let (last, parents) = path.split_last()?;
    let mut object = properties;
    for name in parents {
        object = object.get(name)?.as_object()?;
    }
    object.get(last)
}

/// Takes the value at `path` out of `properties`, and the objects on the
/// way that it leaves empty.
fn remove_property(properties: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        properties.shift_remove(first);
        return;
    }
    if let Some(Value::Object(inner)) = properties.get_mut(first) {
        remove_property(inner, rest);
        if inner.is_empty() {
            properties.shift_remove(first);
        }
    }
}

/// Puts `value` at `path` in `properties`, making the objects on the way.
/// Paths are checked not to nest in one another ([`Mapping`]), so an
/// object on the way is never a value already sent.
fn insert_property(properties: &mut Map<String, Value>, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut object = properties;
    for name in parents {
        let next = object.entry(name.clone()).or_insert_with(|| Value::Object(Map::new()));
        match next {
            Value::Object(map) => object = map,
            _ => return,
        }
    }
    object.insert(last.clone(), value);
}

/// A value as Mailchimp sent it, for the log: text as it is, anything else
/// as JSON, at most 100 characters.
fn shown(value: Option<&Value>) -> String {
    let text = match value {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    text.chars().take(100).collect()
}

/// `properties.mailchimp_status` of a member deleted in Mailchimp.
pub const DELETED_STATUS: &str = "deleted";

/// The contact pushed for a member of list `list_id` that Mailchimp no
/// longer returns (issue 16): opted out, `mailchimp_status: "deleted"`,
/// with the id and email Ometria last accepted for it (from the ledger),
/// in the entry's `@collection` and with its `@force_optin` (issue 17), so
/// that the opt-out lands on the contact the syncs wrote.
pub fn deleted_contact<'a>(id: &'a str, email: &'a str, list_id: &'a str, mapping: &'a Mapping) -> Contact<'a> {
    Contact {
        record_type: "contact",
        collection: mapping.collection.as_deref(),
        force_optin: mapping.force_optin,
        id,
        email,
        firstname: None,
        lastname: None,
        mapped: MappedFields::default(),
        marketing_optin: MarketingOptin::ExplicitlyOptedout,
        timestamp_subscribed: None,
        properties: ContactProperties {
            mailchimp_status: DELETED_STATUS,
            mailchimp_list_id: list_id,
            mapped: Map::new(),
        },
    }
}

/// The push records of `members` (from the ledger) deleted from list
/// `list_id` in Mailchimp, one [`deleted_contact`] each, as slices of one
/// buffer, as a page of a sync. A page of 100 such records (ids, emails of
/// at most 254 bytes) is far within Ometria's 100 records and 1 MiB a push.
pub fn deleted_records(members: &[LedgerMember], list_id: &str, mapping: &Mapping, api: OmetriaApi) -> Vec<Bytes> {
    let mut buffer = Vec::with_capacity(members.len() * 200);
    let mut ends = Vec::with_capacity(members.len());
    for m in members {
        encode(
            &deleted_contact(&m.member_id, &m.email, list_id, mapping),
            api,
            ParsedFrom::default(),
            &mut buffer,
        );
        ends.push(buffer.len());
    }
    let buffer = Bytes::from(buffer);
    let mut start = 0;
    ends.into_iter()
        .map(|end| {
            let record = buffer.slice(start..end);
            start = end;
            record
        })
        .collect()
}

/// `None` for absent or empty text; the text exactly as sent otherwise
/// (a name of spaces is still a name).
fn present<'a>(text: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
    text.as_deref().filter(|t| !t.is_empty())
}

/// `None` for absent, empty or whitespace-only text: no id or address to send.
fn non_empty<'a>(text: &'a Option<Cow<'_, str>>) -> Option<&'a str> {
    text.as_deref().filter(|t| !t.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mailchimp::MergeFields;
    use serde_json::json;

    #[test]
    fn a_deleted_member_is_encoded_opted_out_like_any_record() {
        let mut out = vec![];
        let contact = deleted_contact("u1", "a@x.io", "L1", &DEFAULT_MAPPING);
        crate::ometria::encode(&contact, crate::config::OmetriaApi::Push, Default::default(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"@type":"contact","id":"u1","email":"a@x.io","marketing_optin":"EXPLICITLY_OPTEDOUT","properties":{"mailchimp_status":"deleted","mailchimp_list_id":"L1"}}"#
        );
        assert_eq!(
            serde_json::to_value(&contact).unwrap()["properties"]["mailchimp_status"],
            "deleted"
        );
    }

    /// When the syncs of these tests start.
    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn member(status: &str) -> Member<'_> {
        Member {
            unique_email_id: Some("8a25ff1d98".into()),
            email_address: Some("urist.mcvankab@example.com".into()),
            status: Some(status.into()),
            merge_fields: MergeFields {
                FNAME: Some("Urist".into()),
                LNAME: Some("McVankab".into()),
            },
            timestamp_opt: Some("2019-10-18T22:20:23+00:00".into()),
            last_changed: Some("2019-10-19T08:00:00+00:00".into()),
        }
    }

    #[test]
    fn a_subscribed_member_maps_exactly() {
        let m = member("subscribed");
        let contact = member_to_contact(&m, "1a2d7ebf82", now()).unwrap().contact;
        assert_eq!(
            serde_json::to_value(&contact).unwrap(),
            json!({"@type": "contact", "id": "8a25ff1d98", "email": "urist.mcvankab@example.com",
                   "firstname": "Urist", "lastname": "McVankab", "marketing_optin": "EXPLICITLY_OPTEDIN",
                   "timestamp_subscribed": "2019-10-18T22:20:23+00:00",
                   "properties": {"mailchimp_status": "subscribed", "mailchimp_list_id": "1a2d7ebf82"}})
        );
        // Field order as the contract shows it.
        assert!(serde_json::to_string(&contact)
            .unwrap()
            .starts_with(r#"{"@type":"contact","id":"8a25ff1d98","email""#));
    }

    #[test]
    fn every_status_maps_to_its_optin() {
        for (status, optin, subscribed_at) in [
            ("subscribed", "EXPLICITLY_OPTEDIN", true),
            ("unsubscribed", "EXPLICITLY_OPTEDOUT", false),
            ("cleaned", "EXPLICITLY_OPTEDOUT", false),
            ("archived", "EXPLICITLY_OPTEDOUT", false),
            ("pending", "NOT_SPECIFIED", false),
            ("transactional", "NOT_SPECIFIED", false),
            ("something-new", "NOT_SPECIFIED", false),
        ] {
            let m = member(status);
            let v = serde_json::to_value(member_to_contact(&m, "l", now()).unwrap().contact).unwrap();
            assert_eq!(v["marketing_optin"], optin, "{status}");
            assert_eq!(v["properties"]["mailchimp_status"], status);
            assert_eq!(v.get("timestamp_subscribed").is_some(), subscribed_at, "{status}");
        }
    }

    #[test]
    fn empty_names_are_omitted_and_unicode_is_kept() {
        let mut m = member("subscribed");
        m.merge_fields = MergeFields {
            FNAME: Some("".into()),
            LNAME: None,
        };
        let v = serde_json::to_value(member_to_contact(&m, "l", now()).unwrap().contact).unwrap();
        assert!(v.get("firstname").is_none() && v.get("lastname").is_none());

        // Only empty is empty: spaces and padding are sent exactly.
        let mut m = member("subscribed");
        m.merge_fields = MergeFields {
            FNAME: Some(" ".into()),
            LNAME: Some(" Ann ".into()),
        };
        let v = serde_json::to_value(member_to_contact(&m, "l", now()).unwrap().contact).unwrap();
        assert_eq!((&v["firstname"], &v["lastname"]), (&json!(" "), &json!(" Ann ")));

        let mut m = member("subscribed");
        m.merge_fields = MergeFields {
            FNAME: Some("Zoë 李".into()),
            LNAME: Some("Ñúñez 🚀".into()),
        };
        let text = serde_json::to_string(&member_to_contact(&m, "l", now()).unwrap().contact).unwrap();
        assert!(text.contains(r#""firstname":"Zoë 李","lastname":"Ñúñez 🚀""#), "{text}");
    }

    #[test]
    fn members_without_id_or_email_are_skipped() {
        let mut m = member("subscribed");
        m.unique_email_id = None;
        assert_eq!(member_to_contact(&m, "l", now()), Err(SkipReason::NoUniqueEmailId));
        let mut m = member("subscribed");
        m.email_address = Some(" ".into());
        assert_eq!(member_to_contact(&m, "l", now()), Err(SkipReason::NoEmail));
        assert_eq!(
            member_to_contact(&Member::default(), "l", now()),
            Err(SkipReason::NoUniqueEmailId)
        );
    }

    /// The failing input of issue 14 and its relatives: only real instants
    /// are sent, always in one form; the rest is left out and reported.
    #[test]
    fn subscription_times_are_real_instants_in_one_form_or_left_out() {
        for (opt, sent) in [
            ("2019-10-18T22:20:23+00:00", Some("2019-10-18T22:20:23+00:00")),
            ("2019-10-18T22:20:23Z", Some("2019-10-18T22:20:23+00:00")),
            ("2019-10-19T00:20:23+02:00", Some("2019-10-18T22:20:23+00:00")),
            ("2019-10-18T20:20:23.999-02:00", Some("2019-10-18T22:20:23+00:00")),
            ("2019-10-18t22:20:23z", Some("2019-10-18T22:20:23+00:00")),
            ("2021-04-23 14:14:46", Some("2021-04-23T14:14:46+00:00")),
            ("2021-04-23T14:14:46", Some("2021-04-23T14:14:46+00:00")),
            ("2021-04-23 14:14:46.5+0100", Some("2021-04-23T13:14:46+00:00")),
            ("2016-12-31T23:59:60Z", Some("2016-12-31T23:59:59+00:00")),
            ("0000-00-00 00:00:00", None),
            ("0001-01-01T00:00:00Z", None),
            ("1970-01-01T00:00:00+00:00", None),
            ("2021-02-30T10:00:00+00:00", None),
            ("2021-13-01T10:00:00+00:00", None),
            ("2021-04-23T25:00:00+00:00", None),
            ("2021-04-23", None),
            ("14:14:46", None),
            ("yesterday", None),
            ("1619187286", None),
            ("2021-04-23T14:14:46+25:00", None),
            ("9999-12-31T23:59:59+00:00", None),
            ("2023-11-14T22:13:20+00:00", Some("2023-11-14T22:13:20+00:00")),
        ] {
            let mut m = member("subscribed");
            m.timestamp_opt = Some(opt.into());
            let mapped = member_to_contact(&m, "l", now()).unwrap();
            let v = serde_json::to_value(&mapped.contact).unwrap();
            assert_eq!(v.get("timestamp_subscribed").and_then(|t| t.as_str()), sent, "{opt}");
            let dropped = sent.is_none().then(|| DroppedValue {
                field: "timestamp_subscribed".into(),
                value: opt.into(),
            });
            assert_eq!(mapped.dropped, dropped.into_iter().collect::<Vec<_>>(), "{opt}");
        }
        // Up to a day ahead of the sync's start (clock skew), no further.
        let mut m = member("subscribed");
        m.timestamp_opt = Some("2023-11-15T22:13:20+00:00".into());
        assert!(member_to_contact(&m, "l", now())
            .unwrap()
            .contact
            .timestamp_subscribed
            .is_some());
        m.timestamp_opt = Some("2023-11-15T22:13:21+00:00".into());
        assert!(member_to_contact(&m, "l", now())
            .unwrap()
            .contact
            .timestamp_subscribed
            .is_none());
        // Already in its form: sent as it came, not copied.
        let m = member("subscribed");
        let mapped = member_to_contact(&m, "l", now()).unwrap();
        assert!(matches!(mapped.contact.timestamp_subscribed, Some(Cow::Borrowed(_))));
        // Empty, or on a member not subscribed, is simply not sent.
        let mut m = member("subscribed");
        m.timestamp_opt = Some("".into());
        assert_eq!(member_to_contact(&m, "l", now()).unwrap().dropped, []);
        let mut m = member("unsubscribed");
        m.timestamp_opt = Some("0000-00-00 00:00:00".into());
        assert_eq!(member_to_contact(&m, "l", now()).unwrap().dropped, []);
    }

    /// Ometria's `email` (see [`ometria_email`]): the addresses the
    /// breaker found sent malformed, the shapes already refused, and the
    /// valid relatives of each, which must still be sent.
    #[test]
    fn only_email_addresses_ometria_takes_are_sent() {
        let long_local = format!("{}@x.io", "a".repeat(64));
        let longer_local = format!("{}@x.io", "a".repeat(65));
        let long_label = format!("a@{}.io", "b".repeat(63));
        let longer_label = format!("a@{}.io", "b".repeat(64));
        // 254 bytes in all, then 255: labels of 60, local part of 60.
        let label = "d".repeat(60);
        let at_254 = format!("{}@{label}.{label}.{label}.{}.io", "a".repeat(60), "e".repeat(7));
        let at_255 = format!("{}@{label}.{label}.{label}.{}.io", "a".repeat(60), "e".repeat(8));
        assert_eq!((at_254.len(), at_255.len()), (254, 255));
        let taken = [
            "a@x.io",
            "member0@example.com",
            "o'brien+tag@sub.example.co.uk",
            "first.last@mail.example.com",
            "UPPER.Case@Example.COM",
            "a-b@x-y.example",
            "a1@b2.c3",
            "123@456.example",
            "a@x--y.io",
            "!#$%&'*+-/=?^_`{|}~@x.io",
            "zoë.李@例え.jp",
            "müller@bücher.de",
            "a@xn--bcher-kva.de",
            long_local.as_str(),
            long_label.as_str(),
            at_254.as_str(),
        ];
        for email in taken {
            assert_eq!(ometria_email(email), Some(email), "{email:?}");
        }
        assert_eq!(ometria_email("  a@x.io "), Some("a@x.io"));
        let refused = [
            // The breaker's: an empty domain label, a label starting with a
            // hyphen, a ZERO WIDTH SPACE, `_` in the domain, a label ending
            // with a hyphen, dots doubled, first or last in the local part.
            "member0@example..com",
            "member1@-example.com",
            "member2@example.com\u{200b}",
            "a@b_c.com",
            "a@b.c-",
            "a..b@c.com",
            ".a@b.com",
            "a.@b.com",
            // Their relatives.
            "a@example.com.",
            "a@.example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@exa!mple.com",
            "a@1.2.3.4",
            "a@example.123",
            "a@[1.2.3.4]",
            "\"a b\"@x.io",
            "a@x.io\u{200c}",
            "a\u{200d}b@x.io",
            "\u{feff}a@x.io",
            "a\u{ad}b@x.io",
            "a@ex\u{2060}ample.com",
            "a@ex\u{3164}ample.com",
            "a\u{fffd}@x.io",
            "a@x\u{fffd}.io",
            "a\u{a0}b@x.io",
            "a@x\u{85}.io",
            longer_local.as_str(),
            longer_label.as_str(),
            at_255.as_str(),
            // Refused before, refused still.
            "no-at-sign",
            "@x.io",
            "a@",
            "a@b@c",
            "a b@x.io",
            "<a@example.com>",
            "a@b",
            "a@.io",
            "a@x.",
            "a,b@x.io",
            "a@x.io\u{0}",
            "a(b)@x.io",
            "a@x;y.io",
            "a\\b@x.io",
            "a:b@x.io",
        ];
        for email in refused {
            assert_eq!(ometria_email(email), None, "{email:?}");
        }
        // Through the mapping: not sent, and why.
        for (email, reason) in [
            ("member0@example..com", SkipReason::BadEmail),
            ("member2@example.com\u{200b}", SkipReason::BadEmail),
            ("member3\u{fffd}@example.com", SkipReason::UnreadableEmail),
            ("   ", SkipReason::NoEmail),
        ] {
            let mut m = member("subscribed");
            m.email_address = Some(email.into());
            assert_eq!(member_to_contact(&m, "l", now()), Err(reason), "{email:?}");
        }
        let mut m = member("subscribed");
        m.email_address = Some(" o'brien+tag@sub.example.co.uk ".into());
        let mapped = member_to_contact(&m, "l", now()).unwrap();
        assert_eq!(mapped.contact.email, "o'brien+tag@sub.example.co.uk");
    }

    /// An id read repaired, or made another string by a space or an
    /// invisible character, would write to another contact: not sent.
    #[test]
    fn only_ids_read_exactly_are_sent() {
        for (id, sent) in [
            ("8a25ff1d98", Ok("8a25ff1d98")),
            ("u000001", Ok("u000001")),
            ("ID-with_punct.1", Ok("ID-with_punct.1")),
            ("u\u{fffd}x", Err(SkipReason::UnreadableUniqueEmailId)),
            ("\u{fffd}", Err(SkipReason::UnreadableUniqueEmailId)),
            ("u x", Err(SkipReason::BadUniqueEmailId)),
            (" u1", Err(SkipReason::BadUniqueEmailId)),
            ("u1\n", Err(SkipReason::BadUniqueEmailId)),
            ("u\u{0}1", Err(SkipReason::BadUniqueEmailId)),
            ("u1\u{200b}", Err(SkipReason::BadUniqueEmailId)),
            ("\u{feff}u1", Err(SkipReason::BadUniqueEmailId)),
            ("u\u{a0}1", Err(SkipReason::BadUniqueEmailId)),
            ("   ", Err(SkipReason::NoUniqueEmailId)),
            ("", Err(SkipReason::NoUniqueEmailId)),
        ] {
            let mut m = member("subscribed");
            m.unique_email_id = Some(id.into());
            let mapped = member_to_contact(&m, "l", now()).map(|m| m.contact.id);
            assert_eq!(mapped, sent, "{id:?}");
        }
        // Names may keep U+FFFD: a name read repaired is still the name.
        let mut m = member("subscribed");
        m.merge_fields.FNAME = Some("Zo\u{fffd}".into());
        let contact = member_to_contact(&m, "l", now()).unwrap().contact;
        assert_eq!(contact.firstname.as_deref(), Some("Zo\u{fffd}"));
    }

    /// Issue 17: a mapping adds converted fields and properties, may take
    /// over or out the name fields, tags every record with its collection
    /// and force_optin, and reports what it drops by target.
    #[test]
    fn a_mapping_adds_converted_fields_and_reports_what_it_drops() {
        let mut mapping = Mapping::default();
        mapping
            .overlay(
                json!({"fields": {
                    "phone_number": "merge_fields.PHONE", "country_id": "merge_fields.ADDRESS.country",
                    "date_of_birth": "merge_fields.BIRTHDAY", "properties.birthday": "merge_fields.BIRTHDAY",
                    "properties.address": "merge_fields.ADDRESS", "properties.shop.tags": "tags",
                    "properties.shop.points": "merge_fields.LOYALTY", "firstname": "merge_fields.NICK",
                    "lastname": null},
                    "collection": "mailchimp_uk", "force_optin": true})
                .as_object()
                .unwrap(),
            )
            .unwrap();
        let raw: Value = serde_json::from_str(
            r#"{"unique_email_id": "8a25ff1d98", "merge_fields": {"FNAME": "Urist", "LNAME": "McVankab",
                "NICK": "Uri", "PHONE": "+44 (0)20 7946 0958", "BIRTHDAY": "04/22", "LOYALTY": 1200.50,
                "ADDRESS": {"addr1": "1 High St", "addr2": "", "city": "Leeds", "state": "", "zip": "LS1", "country": "GB"}},
                "tags": [{"id": 7, "name": "VIP"}]}"#,
        )
        .unwrap();
        let m = member("subscribed");
        let mapped = map_member(&m, Some(&raw), &mapping, "L1", now()).unwrap();
        let mut record = vec![];
        crate::ometria::encode(
            &mapped.contact,
            crate::config::OmetriaApi::Push,
            Default::default(),
            &mut record,
        );
        assert_eq!(
            String::from_utf8(record).unwrap(),
            r#"{"@type":"contact","@collection":"mailchimp_uk","@force_optin":true,"id":"8a25ff1d98","email":"urist.mcvankab@example.com","firstname":"Uri","phone_number":"+442079460958","country_id":"GB","marketing_optin":"EXPLICITLY_OPTEDIN","timestamp_subscribed":"2019-10-18T22:20:23+00:00","properties":{"mailchimp_status":"subscribed","mailchimp_list_id":"L1","address":{"addr1":"1 High St","city":"Leeds","zip":"LS1","country":"GB"},"birthday":"04/22","shop":{"points":1200.50,"tags":["VIP"]}}}"#
        );
        assert_eq!(
            mapped.dropped,
            [DroppedValue {
                field: "date_of_birth".into(),
                value: "04/22".into()
            }]
        );
        // A mapped name goes where the default one goes: the record's bytes
        // do not depend on which of the two names is mapped.
        let mut only_first = Mapping::default();
        only_first
            .overlay(
                json!({"fields": {"firstname": "merge_fields.NICK"}})
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        let mapped = map_member(&m, Some(&raw), &only_first, "L1", now()).unwrap();
        let text = serde_json::to_string(&mapped.contact).unwrap();
        assert!(
            text.contains(
                r#""email":"urist.mcvankab@example.com","firstname":"Uri","lastname":"McVankab","marketing_optin""#
            ),
            "{text}"
        );
        // The deleted member's opt-out lands in the same collection.
        let deleted = deleted_contact("u1", "a@x.io", "L1", &mapping);
        assert_eq!((deleted.collection, deleted.force_optin), (Some("mailchimp_uk"), true));
    }

    #[test]
    fn invisible_characters_are_told_apart_from_letters() {
        for c in [
            '\u{ad}', '\u{200b}', '\u{200c}', '\u{200d}', '\u{200e}', '\u{2060}', '\u{2064}', '\u{feff}',
        ] {
            assert!(invisible(c), "{c:?}");
            assert!(
                !c.is_whitespace() && !c.is_alphanumeric(),
                "{c:?}: the std checks miss it"
            );
        }
        for c in [
            '\u{3164}',
            '\u{115f}',
            '\u{fe0f}',
            '\u{e0041}',
            '\u{fdd0}',
            '\u{fffe}',
            '\u{1ffff}',
        ] {
            assert!(invisible(c), "{c:?}");
        }
        for c in ['a', 'Z', '0', '-', 'é', '李', 'え', '\u{fffd}', ' '] {
            assert!(!invisible(c), "{c:?}");
        }
    }
}
