//! What Ometria must receive for a mapped field (issue 17), worked out on
//! its own from what the sandbox knows it generated: the E.164 number from
//! the country code and national digits it drew (not from the text
//! Mailchimp shows), the ISO code from the country it chose, the date from
//! the date. A path it knows no type for falls back on the contract's
//! generic rules, written here again, apart from the importer's, with the
//! sandbox's own ISO 3166-1 and IANA tables (`data/`).
//!
//! The contract, in short: empty forms (absent, `null`, `""`, an address of
//! empty parts) are never sent; text fields take strings, numbers as their
//! JSON text and booleans; `phone_number` is E.164; `date_of_birth` an
//! exact, real, past `YYYY-MM-DD` from 1900 on; `gender` `m`/`f`;
//! `country_id` ISO alpha-2; `timezone` an IANA name; timestamps an instant
//! after 1970 in `YYYY-MM-DDTHH:MM:SS+00:00`; `store_ids` a list of text;
//! `properties.*` scalars as given, an address as its non-empty parts,
//! `tags` as their names, `marketing_permissions` as {text: enabled}.

use std::sync::OnceLock;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde_json::{json, Map, Value};

use super::audience::{timestamp_text, Member};
use super::fields::{Address, AddressField, Country, Location, Permission, Phone, Tag};

/// What an Ometria field takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `firstname`, `lastname`, `middlename`, `prefix`, `customer_id`, and
    /// any other top-level field this oracle has no rule for.
    Text,
    /// `phone_number`: E.164.
    Phone,
    /// `date_of_birth`: `YYYY-MM-DD`.
    DateOfBirth,
    /// `gender`: `m` or `f`.
    Gender,
    /// `country_id`: ISO 3166-1 alpha-2.
    Country,
    /// `timezone`: an IANA name.
    Timezone,
    /// `timestamp_acquired`, `timestamp_unsubscribed`, `timestamp_subscribed`.
    Instant,
    /// `store_ids`: a list of text.
    StoreIds,
    /// `properties.<name>`: any JSON.
    Property,
}

impl Kind {
    /// The kind of an Ometria target (`phone_number`, `properties.x.y`, …).
    pub fn of(target: &str) -> Kind {
        match target {
            "phone_number" => Kind::Phone,
            "date_of_birth" => Kind::DateOfBirth,
            "gender" => Kind::Gender,
            "country_id" => Kind::Country,
            "timezone" => Kind::Timezone,
            "timestamp_acquired" | "timestamp_unsubscribed" | "timestamp_subscribed" => Kind::Instant,
            "store_ids" => Kind::StoreIds,
            t if t.starts_with("properties.") => Kind::Property,
            _ => Kind::Text,
        }
    }
}

/// A member's value at a path, with what the sandbox knows of its type.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// Nothing there, or an empty form.
    Absent,
    Text(String),
    /// A JSON number's text, as Mailchimp wrote it.
    Number(String),
    Bool(bool),
    Phone(Phone),
    Address(Address),
    Country(&'static Country),
    Birthday(u32, u32),
    Date(NaiveDate),
    /// Unix seconds.
    Instant(i64),
    Timezone(&'static str),
    Tags(Vec<Tag>),
    Permissions(Vec<Permission>),
    /// No typed knowledge: the JSON Mailchimp returns there.
    Json(Value),
}

fn text_source(text: &str) -> Source {
    if text.is_empty() {
        Source::Absent
    } else {
        Source::Text(text.to_owned())
    }
}

/// Follows `path` (dots) from `value`: objects by key; through an array,
/// each element's value, collected. `None` where nothing is there.
pub fn walk(value: &Value, path: &[&str]) -> Option<Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(value.clone());
    };
    match value {
        Value::Object(map) => walk(map.get(*first)?, rest),
        Value::Array(items) => Some(Value::Array(items.iter().filter_map(|v| walk(v, path)).collect())),
        _ => None,
    }
}

/// What the sandbox knows of `member`'s value at `path` in `list_id`.
pub fn source(member: &Member, list_id: &str, path: &str) -> Source {
    if let Some(part) = path.strip_prefix("merge_fields.ADDRESS.") {
        return match member.address() {
            AddressField::Set(a) if part == "country" => Source::Country(a.country),
            AddressField::Set(a) => match a.parts().iter().find(|(k, _)| *k == part) {
                Some((_, v)) => text_source(v),
                None => Source::Absent,
            },
            AddressField::Blank | AddressField::Unset => Source::Absent,
        };
    }
    let location = || member.location();
    match path {
        "email_address" => text_source(&member.email),
        "unique_email_id" => text_source(&member.unique_email_id),
        "status" => text_source(member.status.as_str()),
        "list_id" => text_source(list_id),
        "language" => text_source(member.language()),
        "vip" => Source::Bool(member.vip()),
        "last_changed" => Source::Instant(member.last_changed),
        "timestamp_opt" => match DateTime::parse_from_rfc3339(&member.timestamp_opt) {
            Ok(t) => Source::Instant(t.timestamp()),
            Err(_) => Source::Absent,
        },
        "merge_fields.FNAME" => text_source(&member.fname),
        "merge_fields.LNAME" => text_source(&member.lname),
        "merge_fields.PHONE" => match member.phone() {
            Phone::Empty => Source::Absent,
            phone => Source::Phone(phone),
        },
        "merge_fields.ADDRESS" => match member.address() {
            AddressField::Set(a) => Source::Address(a),
            AddressField::Blank | AddressField::Unset => Source::Absent,
        },
        "merge_fields.BIRTHDAY" => member
            .birthday()
            .map_or(Source::Absent, |(m, d)| Source::Birthday(m, d)),
        "merge_fields.JOINED" => member.joined().map_or(Source::Absent, Source::Date),
        "merge_fields.LOYALTY" => member.loyalty().map_or(Source::Absent, |l| Source::Number(l.text())),
        "merge_fields.WEBSITE" => member.website().map_or(Source::Absent, Source::Text),
        "merge_fields.ZIP" => text_source(member.zip().unwrap_or_default()),
        "merge_fields.PLAN" => text_source(member.plan().unwrap_or_default()),
        "merge_fields.SIZE" => text_source(member.size().unwrap_or_default()),
        "tags" => Source::Tags(member.tags()),
        "tags.name" => Source::Json(member.tags().iter().map(|t| json!(t.name)).collect()),
        "tags.id" => Source::Json(member.tags().iter().map(|t| json!(t.id)).collect()),
        "marketing_permissions" => Source::Permissions(member.marketing_permissions()),
        "location.country_code" => match location() {
            Location::In(c) => Source::Country(c),
            Location::Unknown => Source::Absent,
        },
        "location.timezone" => match location() {
            Location::In(c) => Source::Timezone(c.timezone),
            Location::Unknown => Source::Absent,
        },
        "location.region" => match location() {
            Location::In(c) => text_source(c.region),
            Location::Unknown => Source::Absent,
        },
        _ => {
            let parts: Vec<&str> = path.split('.').collect();
            member
                .field(parts[0], list_id)
                .and_then(|v| walk(&v, &parts[1..]))
                .map_or(Source::Absent, Source::Json)
        }
    }
}

/// What Ometria must receive for `target` mapped from `path` of `member`
/// in `list_id` at `now` (unix seconds), or `None` when nothing is sent.
pub fn expected_field(member: &Member, list_id: &str, target: &str, path: &str, now: i64) -> Option<Value> {
    convert(Kind::of(target), source(member, list_id, path), now)
}

/// `source` converted for a field of `kind`: typed rules where the sandbox
/// knows the type, the generic rules on its JSON otherwise.
pub fn convert(kind: Kind, source: Source, now: i64) -> Option<Value> {
    let text = |t: String| generic(kind, &Value::String(t), now);
    match (kind, source) {
        (_, Source::Absent) => None,
        (Kind::Phone, Source::Phone(phone)) => match phone {
            Phone::International { country, national, .. } => {
                Some(json!(format!("+{}{national}", country.calling_code)))
            }
            Phone::Empty | Phone::WithExtension { .. } | Phone::UsLocal { .. } => None,
        },
        (_, Source::Phone(phone)) => text(phone.text()),
        (Kind::Property, Source::Address(a)) => Some(Value::Object(
            a.parts()
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect(),
        )),
        (_, Source::Address(_)) => None,
        (Kind::Country, Source::Country(c)) => Some(json!(c.alpha2)),
        (_, Source::Country(c)) => text(c.alpha2.to_owned()),
        (Kind::DateOfBirth, Source::Birthday(..)) => None,
        (_, Source::Birthday(m, d)) => text(format!("{m:02}/{d:02}")),
        (Kind::DateOfBirth, Source::Date(d)) => {
            let today = DateTime::from_timestamp(now, 0).unwrap_or_default().date_naive();
            (d.year() >= 1900 && d <= today).then(|| json!(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())))
        }
        (Kind::Instant, Source::Date(_)) => None,
        (_, Source::Date(d)) => text(format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())),
        (Kind::Instant, Source::Instant(t)) => (t > 0 && t <= now + 86_400).then(|| json!(timestamp_text(t))),
        (Kind::DateOfBirth, Source::Instant(_)) => None,
        (_, Source::Instant(t)) => text(timestamp_text(t)),
        (Kind::Timezone, Source::Timezone(z)) => Some(json!(z)),
        (_, Source::Timezone(z)) => text(z.to_owned()),
        (Kind::Property, Source::Tags(tags)) => Some(tags.iter().map(|t| json!(t.name)).collect()),
        (_, Source::Tags(tags)) => generic(
            kind,
            &tags.iter().map(|t| json!({"id": t.id, "name": t.name})).collect(),
            now,
        ),
        (Kind::Property, Source::Permissions(p)) => Some(Value::Object(
            p.iter().map(|p| (p.text.to_owned(), json!(p.enabled))).collect(),
        )),
        (_, Source::Permissions(p)) => generic(
            kind,
            &p.iter()
                .map(|p| json!({"marketing_permission_id": p.id, "text": p.text, "enabled": p.enabled}))
                .collect(),
            now,
        ),
        (_, Source::Text(t)) => text(t),
        (_, Source::Number(n)) => generic(kind, &serde_json::from_str(&n).unwrap_or(Value::Null), now),
        (_, Source::Bool(b)) => generic(kind, &json!(b), now),
        (_, Source::Json(v)) => generic(kind, &v, now),
    }
}

const ADDRESS_PARTS: [&str; 6] = ["addr1", "addr2", "city", "state", "zip", "country"];

/// Whether `map` is a Mailchimp address: `addr1` and nothing but address
/// parts.
fn is_address(map: &Map<String, Value>) -> bool {
    map.contains_key("addr1") && map.keys().all(|k| ADDRESS_PARTS.contains(&k.as_str()))
}

/// Absent, `null`, `""`, or an address whose parts are all `""`.
pub fn is_empty_form(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(map) => is_address(map) && map.values().all(|v| v == ""),
        _ => false,
    }
}

/// A scalar as text: strings as given, numbers as their JSON text,
/// booleans `true`/`false`; `None` for anything else or an empty form.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The contract's rules for a value the sandbox knows no type of.
pub fn generic(kind: Kind, value: &Value, now: i64) -> Option<Value> {
    if is_empty_form(value) {
        return None;
    }
    let text = value.as_str();
    match kind {
        Kind::Text => scalar_text(value).map(Value::String),
        Kind::Phone => text.and_then(e164).map(Value::String),
        Kind::DateOfBirth => text.and_then(|t| date_of_birth(t, now)).map(Value::String),
        Kind::Gender => text.and_then(gender).map(Value::from),
        Kind::Country => text.and_then(country_alpha2).map(Value::from),
        Kind::Timezone => text.filter(|t| is_timezone(t)).map(Value::from),
        Kind::Instant => text.and_then(|t| instant(t, now)).map(Value::String),
        Kind::StoreIds => match value {
            Value::Array(items) => Some(items.iter().filter_map(scalar_text).collect()),
            other => scalar_text(other).map(|t| json!([t])),
        },
        Kind::Property => Some(match value {
            Value::Object(map) if is_address(map) => Value::Object(
                map.iter()
                    .filter(|(_, v)| v.as_str().is_some_and(|s| !s.is_empty()))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            other => other.clone(),
        }),
    }
}

/// `text` as E.164: without spaces, `-`, `.`, `(`, `)`, `/`; a leading
/// `00` read as `+`; then `+` and 7–15 digits, the first not 0.
pub fn e164(text: &str) -> Option<String> {
    let bare: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '/'))
        .collect();
    let digits = bare.strip_prefix('+').or_else(|| bare.strip_prefix("00"))?;
    let ok = (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    ok.then(|| format!("+{digits}"))
}

/// `text` if it is exactly `YYYY-MM-DD`, a real date from 1900 on and not
/// after the day of `now`.
pub fn date_of_birth(text: &str, now: i64) -> Option<String> {
    let b = text.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return None;
    }
    let number = |r: std::ops::Range<usize>| text[r].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(number(0..4)? as i32, number(5..7)?, number(8..10)?)?;
    let today = DateTime::from_timestamp(now, 0)?.date_naive();
    (date.year() >= 1900 && date <= today).then(|| text.to_owned())
}

/// `m` or `f` for the words of either, in any case.
pub fn gender(text: &str) -> Option<&'static str> {
    match text.to_lowercase().as_str() {
        "m" | "male" | "man" => Some("m"),
        "f" | "female" | "woman" => Some("f"),
        _ => None,
    }
}

/// An instant after 1970 and at most a day after `now`, in the form
/// `YYYY-MM-DDTHH:MM:SS+00:00`: RFC 3339, or without an offset (UTC).
pub fn instant(text: &str, now: i64) -> Option<String> {
    let text = text.trim();
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .map(|t| t.and_utc())
        })?;
    let t = at.timestamp();
    (t > 0 && t <= now + 86_400).then(|| timestamp_text(t))
}

/// One row of ISO 3166-1: alpha-2, alpha-3, English names.
struct IsoCountry {
    alpha2: &'static str,
    alpha3: &'static str,
    names: Vec<&'static str>,
}

fn iso_countries() -> &'static [IsoCountry] {
    static TABLE: OnceLock<Vec<IsoCountry>> = OnceLock::new();
    TABLE.get_or_init(|| {
        include_str!("data/iso3166.tsv")
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|line| {
                let mut cols = line.split('\t');
                IsoCountry {
                    alpha2: cols.next().unwrap_or_default(),
                    alpha3: cols.next().unwrap_or_default(),
                    names: cols.collect(),
                }
            })
            .collect()
    })
}

/// `text` as an ISO 3166-1 alpha-2 code: an alpha-2 or alpha-3 code in
/// any case, or an English name of the country.
pub fn country_alpha2(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    iso_countries()
        .iter()
        .find(|c| {
            c.alpha2.eq_ignore_ascii_case(text)
                || c.alpha3.eq_ignore_ascii_case(text)
                || c.names.iter().any(|n| n.to_lowercase() == lower)
        })
        .map(|c| c.alpha2)
}

/// Whether `text` is an IANA time zone name (a zone or a link), exactly.
pub fn is_timezone(text: &str) -> bool {
    include_str!("data/timezones.txt")
        .lines()
        .any(|l| !l.starts_with('#') && l == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::audience::{Audience, Status};
    use crate::sandbox::fields::{Loyalty, PhoneStyle, COUNTRIES};

    /// 2023-11-14T22:13:20Z.
    const NOW: i64 = 1_700_000_000;

    fn members() -> Vec<Member> {
        Audience::generate("oracle", 3000, 5, NOW).members().cloned().collect()
    }

    fn field(m: &Member, target: &str, path: &str) -> Option<Value> {
        expected_field(m, "L", target, path, NOW)
    }

    #[test]
    fn phones_are_e164_from_the_drawn_digits_and_us_format_is_dropped() {
        let all = members();
        let mut seen = [0; 4];
        for m in &all {
            let got = field(m, "phone_number", "merge_fields.PHONE");
            match m.phone() {
                Phone::International { country, national, .. } => {
                    seen[0] += 1;
                    assert_eq!(got, Some(json!(format!("+{}{}", country.calling_code, national))));
                    // The generic rule, run on the text, agrees.
                    assert_eq!(
                        e164(&m.phone().text()),
                        Some(format!("+{}{}", country.calling_code, national))
                    );
                }
                Phone::UsLocal { .. } => {
                    seen[1] += 1;
                    assert_eq!(got, None, "{}", m.phone().text());
                }
                Phone::WithExtension { .. } => {
                    seen[2] += 1;
                    assert_eq!(got, None);
                }
                Phone::Empty => {
                    seen[3] += 1;
                    assert_eq!(got, None);
                    assert_eq!(field(m, "properties.phone", "merge_fields.PHONE"), None);
                }
            }
            // As text or a property, the phone is sent as Mailchimp holds it.
            if m.phone() != Phone::Empty {
                assert_eq!(
                    field(m, "properties.phone", "merge_fields.PHONE"),
                    Some(json!(m.phone().text()))
                );
            }
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        let gb = &COUNTRIES[0];
        let p = |style| Phone::International {
            country: gb,
            national: "2079460123".into(),
            style,
        };
        assert_eq!(p(PhoneStyle::Spaced).text(), "+44 20 7946 0123");
        assert_eq!(p(PhoneStyle::DoubleZero).text(), "0044 20 7946 0123");
        for style in [
            PhoneStyle::Dashes,
            PhoneStyle::Dots,
            PhoneStyle::AreaInParens,
            PhoneStyle::Slash,
        ] {
            assert_eq!(
                convert(Kind::Phone, Source::Phone(p(style)), NOW),
                Some(json!("+442079460123"))
            );
        }
        let us = Phone::UsLocal {
            digits: "5551234567".into(),
            parens: true,
        };
        assert_eq!(us.text(), "(555) 123-4567");
        assert_eq!(convert(Kind::Phone, Source::Phone(us), NOW), None);
    }

    #[test]
    fn the_generic_phone_rule() {
        assert_eq!(e164("+44 (20) 7946-0123").as_deref(), Some("+442079460123"));
        assert_eq!(e164("0044 20/7946.0123").as_deref(), Some("+442079460123"));
        assert_eq!(e164("(555) 123-4567"), None);
        assert_eq!(e164("+0 123 4567"), None);
        assert_eq!(e164("+123456"), None, "six digits");
        assert_eq!(e164("+1234567").as_deref(), Some("+1234567"));
        assert_eq!(e164("+1234567890123456"), None, "sixteen digits");
        assert_eq!(e164("+44 20 7946 0123 ext. 5"), None);
        assert_eq!(generic(Kind::Phone, &json!(442079460123u64), NOW), None);
    }

    #[test]
    fn addresses_are_their_non_empty_parts_and_their_empty_forms_nothing() {
        let all = members();
        let mut kinds = [0; 3];
        for m in &all {
            let got = field(m, "properties.address", "merge_fields.ADDRESS");
            let country = field(m, "country_id", "merge_fields.ADDRESS.country");
            match m.address() {
                AddressField::Unset => {
                    kinds[0] += 1;
                    assert_eq!(m.merge_field("ADDRESS"), Some(json!("")));
                    assert_eq!((got, country), (None, None));
                }
                AddressField::Blank => {
                    kinds[1] += 1;
                    assert_eq!((got, country), (None, None));
                    assert!(generic(Kind::Property, &m.merge_field("ADDRESS").unwrap(), NOW).is_none());
                }
                AddressField::Set(a) => {
                    kinds[2] += 1;
                    let got = got.unwrap();
                    assert_eq!(got["addr1"], a.addr1.as_str());
                    assert_eq!(got["country"], a.country.alpha2);
                    assert_eq!(got.get("addr2").is_some(), !a.addr2.is_empty());
                    assert_eq!(got.get("state").is_some(), !a.state.is_empty());
                    assert_eq!(country, Some(json!(a.country.alpha2)));
                    assert_eq!(
                        field(m, "properties.city", "merge_fields.ADDRESS.city"),
                        Some(json!(a.city))
                    );
                    // The generic rule on Mailchimp's JSON agrees.
                    assert_eq!(
                        generic(Kind::Property, &m.merge_field("ADDRESS").unwrap(), NOW),
                        Some(got)
                    );
                }
            }
            // An object is no text.
            assert_eq!(field(m, "firstname", "merge_fields.ADDRESS"), None);
        }
        assert!(kinds.iter().all(|n| *n > 0), "{kinds:?}");
    }

    #[test]
    fn dates_birthdays_and_timestamps() {
        let all = members();
        for m in &all {
            let dob = field(m, "date_of_birth", "merge_fields.JOINED");
            match m.joined() {
                None => assert_eq!(dob, None),
                Some(d) if d.year() < 1900 || d.year() >= 2090 => assert_eq!(dob, None, "{d}"),
                Some(d) => assert_eq!(dob, Some(json!(d.format("%Y-%m-%d").to_string()))),
            }
            // A birthday is no date of birth, but a property as given.
            assert_eq!(field(m, "date_of_birth", "merge_fields.BIRTHDAY"), None);
            let birthday = field(m, "properties.birthday", "merge_fields.BIRTHDAY");
            assert_eq!(birthday, m.birthday().map(|(mm, dd)| json!(format!("{mm:02}/{dd:02}"))));
            // A bare date is no instant.
            assert_eq!(field(m, "timestamp_acquired", "merge_fields.JOINED"), None);
            let opt = field(m, "timestamp_acquired", "timestamp_opt");
            assert_eq!(opt.is_some(), m.status != Status::Transactional);
            if let Some(opt) = opt {
                assert_eq!(opt, m.timestamp_opt.as_str());
            }
            assert_eq!(
                field(m, "timestamp_unsubscribed", "last_changed"),
                Some(json!(timestamp_text(m.last_changed)))
            );
        }
        assert_eq!(date_of_birth("1990-02-28", NOW).as_deref(), Some("1990-02-28"));
        assert_eq!(date_of_birth("1900-01-01", NOW).as_deref(), Some("1900-01-01"));
        assert_eq!(date_of_birth("2023-11-14", NOW).as_deref(), Some("2023-11-14"));
        for bad in [
            "1899-12-31",
            "2023-11-15",
            "1990-02-30",
            "1990-2-28",
            "03/04",
            "1990-02-28T00:00:00",
            "",
        ] {
            assert_eq!(date_of_birth(bad, NOW), None, "{bad}");
        }
        assert_eq!(
            instant("2019-10-18T22:20:23.5+02:00", NOW).as_deref(),
            Some("2019-10-18T20:20:23+00:00")
        );
        assert_eq!(
            instant("2019-10-18 22:20:23", NOW).as_deref(),
            Some("2019-10-18T22:20:23+00:00")
        );
        for bad in [
            "1970-01-01T00:00:00+00:00",
            "2019-10-18",
            "0000-00-00 00:00:00",
            "2030-01-01T00:00:00Z",
        ] {
            assert_eq!(instant(bad, NOW), None, "{bad}");
        }
    }

    #[test]
    fn numbers_text_and_their_empty_forms() {
        let all = members();
        for m in &all {
            let loyalty = field(m, "properties.loyalty", "merge_fields.LOYALTY");
            let as_text = field(m, "customer_id", "merge_fields.LOYALTY");
            match m.loyalty() {
                None => assert_eq!((loyalty, as_text), (None, None)),
                Some(l) => {
                    // Exactly as Mailchimp wrote the number.
                    assert_eq!(loyalty.unwrap().to_string(), l.text());
                    assert_eq!(as_text, Some(json!(l.text())));
                }
            }
            for (tag, value) in [("WEBSITE", m.website()), ("ZIP", m.zip().map(String::from))] {
                let path = format!("merge_fields.{tag}");
                assert_eq!(field(m, "properties.x", &path), value.clone().map(Value::from));
                assert_eq!(field(m, "middlename", &path), value.map(Value::from));
            }
            assert_eq!(field(m, "prefix", "merge_fields.PLAN"), m.plan().map(Value::from));
            assert_eq!(
                field(m, "properties.size", "merge_fields.SIZE"),
                m.size().map(Value::from)
            );
            assert_eq!(field(m, "firstname", "merge_fields.FNAME"), text_value(&m.fname));
            assert_eq!(field(m, "properties.vip", "vip"), Some(json!(m.vip())));
            assert_eq!(field(m, "customer_id", "vip"), Some(json!(m.vip().to_string())));
            assert_eq!(field(m, "properties.x", "merge_fields.NOPE"), None);
        }
        assert!(all.iter().any(|m| m.loyalty().is_none()));
        let n = |t: &str| generic(Kind::Text, &serde_json::from_str(t).unwrap(), NOW);
        assert_eq!(n("42"), Some(json!("42")));
        assert_eq!(n("12.50"), Some(json!("12.50")));
        assert_eq!(n("true"), Some(json!("true")));
        assert_eq!(
            (n("null"), n("\"\""), n("{\"a\":1}"), n("[1]")),
            (None, None, None, None)
        );
        assert_eq!(
            convert(
                Kind::Property,
                Source::Number(
                    Loyalty {
                        whole: 7,
                        hundredths: 5
                    }
                    .text()
                ),
                NOW
            )
            .unwrap()
            .to_string(),
            "7.05"
        );
    }

    fn text_value(text: &str) -> Option<Value> {
        (!text.is_empty()).then(|| json!(text))
    }

    #[test]
    fn tags_permissions_and_other_objects() {
        let all = members();
        for m in &all {
            let names: Vec<&str> = m.tags().iter().map(|t| t.name).collect();
            // Always sent, `[]` when none.
            assert_eq!(field(m, "properties.tags", "tags"), Some(json!(names)));
            assert_eq!(field(m, "properties.tags", "tags.name"), Some(json!(names)));
            assert_eq!(field(m, "store_ids", "tags.name"), Some(json!(names)));
            assert_eq!(field(m, "firstname", "tags"), None);
            let perms = field(m, "properties.permissions", "marketing_permissions").unwrap();
            let perms = perms.as_object().unwrap();
            assert_eq!(perms.len(), m.marketing_permissions().len());
            for p in m.marketing_permissions() {
                assert_eq!(perms[p.text], p.enabled);
            }
            assert_eq!(field(m, "properties.interests", "interests"), Some(m.interests()));
            assert_eq!(
                field(m, "properties.location", "location"),
                Some(m.location().to_value())
            );
            match m.location() {
                Location::Unknown => {
                    assert_eq!(field(m, "country_id", "location.country_code"), None);
                    assert_eq!(field(m, "timezone", "location.timezone"), None);
                }
                Location::In(c) => {
                    assert_eq!(field(m, "country_id", "location.country_code"), Some(json!(c.alpha2)));
                    assert_eq!(field(m, "timezone", "location.timezone"), Some(json!(c.timezone)));
                    assert!(is_timezone(c.timezone));
                }
            }
        }
        assert!(all.iter().any(|m| m.tags().is_empty()));
        assert!(all.iter().any(|m| m.marketing_permissions().is_empty()));
        assert_eq!(
            field(&all[0], "properties.permissions", "marketing_permissions.text"),
            Some(json!(all[0]
                .marketing_permissions()
                .iter()
                .map(|p| p.text)
                .collect::<Vec<_>>()))
        );
    }

    #[test]
    fn countries_genders_and_time_zones_by_the_generic_rules() {
        for c in &COUNTRIES {
            assert_eq!(country_alpha2(c.alpha2), Some(c.alpha2));
            assert_eq!(country_alpha2(c.alpha3), Some(c.alpha2));
            assert_eq!(country_alpha2(c.name), Some(c.alpha2));
            assert!(is_timezone(c.timezone));
        }
        assert_eq!(country_alpha2("gb"), Some("GB"));
        assert_eq!(country_alpha2("deu"), Some("DE"));
        assert_eq!(country_alpha2("united states of america"), Some("US"));
        assert_eq!(country_alpha2("fr"), Some("FR"));
        assert_eq!(country_alpha2("en"), None);
        assert_eq!(country_alpha2("UK"), None);
        assert_eq!(country_alpha2(""), None);
        assert_eq!(gender("Male"), Some("m"));
        assert_eq!(gender("WOMAN"), Some("f"));
        assert_eq!(gender("f"), Some("f"));
        assert_eq!(gender("other"), None);
        assert!(is_timezone("America/Argentina/Buenos_Aires"));
        assert!(!is_timezone("europe/london"));
        assert!(!is_timezone("Mars/Olympus"));
        // Text mapped to typed fields falls through the generic rules.
        let m = &members()[0];
        let lang = field(m, "country_id", "language");
        assert_eq!(lang, (m.language() == "fr").then(|| json!("FR")));
        assert_eq!(field(m, "gender", "merge_fields.FNAME"), None);
        assert_eq!(field(m, "timezone", "merge_fields.FNAME"), None);
        assert_eq!(generic(Kind::StoreIds, &json!("shop-1"), NOW), Some(json!(["shop-1"])));
        assert_eq!(
            generic(Kind::StoreIds, &json!([1, "a", {"x": 1}, ""]), NOW),
            Some(json!(["1", "a"]))
        );
    }

    #[test]
    fn paths_collect_through_arrays() {
        let v = json!({"tags": [{"id": 1, "name": "a"}, {"id": 2}], "x": {"y": "z"}});
        assert_eq!(walk(&v, &["tags", "name"]), Some(json!(["a"])));
        assert_eq!(walk(&v, &["x", "y"]), Some(json!("z")));
        assert_eq!(walk(&v, &["x", "y", "w"]), None);
        assert_eq!(walk(&v, &["nope"]), None);
    }
}
