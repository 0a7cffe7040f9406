//! A member's value as the Ometria field it is mapped to takes it (issue
//! 17). Pure functions: a value is sent converted, left out because it is
//! empty, or dropped — never sent malformed, never failing its record.
//!
//! By target (Ometria Data API v2 contact record, SPEC §6):
//! - text fields (`prefix`, `firstname`, `middlename`, `lastname`,
//!   `customer_id`): text as given, a number as its text (`42` → `"42"`),
//!   `true`/`false` as text; an object or array is dropped.
//! - `phone_number`: E.164 (ITU-T E.164 §6: `+`, a country code, at most
//!   15 digits in all). Spaces, `-`, `.`, `(`, `)` and `/` are taken out, a
//!   UK-style `(0)` after the country code too, and an international `00`
//!   prefix becomes `+` (`(+44)` is taken as `+44`). Only the form is
//!   checked, not that the number exists; a number without its country code (`(555)
//!   123-4567`, a Mailchimp "US" phone field) cannot be made E.164 and is
//!   dropped.
//! - `date_of_birth`: a real date `YYYY-MM-DD` from 1900 to the sync's day
//!   (Mailchimp's `date` fields read so); a Mailchimp `birthday` (`MM/DD`,
//!   no year) is dropped — map it to a property instead.
//! - `gender`: `m` or `f` (as Ometria's profiles show it), from `m`,
//!   `male`, `man`, `f`, `female` or `woman` in any case; else dropped.
//! - `country_id`: ISO 3166-1 alpha-2, upper case, from an alpha-2 or
//!   alpha-3 code or an English country name (the `celes` crate's table);
//!   else dropped. Mailchimp's address `country` and
//!   `location.country_code` are alpha-2 already.
//! - `timezone`: an IANA time zone name (`Europe/London`, the `chrono-tz`
//!   crate's table), as given; else dropped.
//! - `timestamp_acquired`, `timestamp_unsubscribed`: instants as
//!   `timestamp_subscribed` is sent ([`ometria_timestamp`]).
//! - `store_ids`: a list of text (a single value becomes a list of one; an
//!   empty list is sent, as the member's whole set).
//! - `properties.*`: as given — text, numbers exactly as Mailchimp wrote
//!   them, `true`/`false`, objects and lists — except: an `ADDRESS` merge
//!   field becomes an object of its non-empty parts (`addr1`, `addr2`,
//!   `city`, `state`, `zip`, `country`); `tags` becomes the list of tag
//!   names; `marketing_permissions` becomes an object from each
//!   permission's text to whether it is enabled (an element without its
//!   name, or text and state, is left out of the set).
//!
//! Empty is not dropped, it is left out: an absent value, `null`, `""`,
//! an unset address (`""`, or every part `""`). `tags` and
//! `marketing_permissions` are a member's whole set and are sent even when
//! empty (`[]`, `{}`), so that removing the last tag reaches Ometria.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};

use super::{ContactField, SourcePath, Target};
use crate::transform::ometria_timestamp;

/// What became of one mapped value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Converted {
    /// Sent as this value.
    Sent(Value),
    /// Nothing to send: absent or empty. Not counted.
    Empty,
    /// There is a value, and the field cannot take it: left out, counted.
    Dropped,
}

/// The parts of a Mailchimp `address` merge field (Marketing API 3.0,
/// Merge fields: `addr1`, `addr2`, `city`, `state`, `zip`, `country`).
pub const ADDRESS_PARTS: [&str; 6] = ["addr1", "addr2", "city", "state", "zip", "country"];

/// E.164 numbers hold at most 15 digits; 7 is the shortest in use
/// (country code and subscriber number together).
const E164_DIGITS: std::ops::RangeInclusive<usize> = 7..=15;

/// The earliest `date_of_birth` taken.
const EARLIEST_BIRTH_YEAR: i32 = 1900;

/// `value`, read at `source` of a member, as `target` takes it, for a sync
/// that started at `now`.
pub fn convert(target: &Target, source: &SourcePath, value: Option<&Value>, now: DateTime<Utc>) -> Converted {
    let Some(value) = value.filter(|v| !empty(v)) else {
        return match (target, special(source)) {
            // A member's whole set, sent even when empty.
            (Target::Property(_), Some(Special::Tags)) if value.is_some() => Converted::Sent(Value::Array(vec![])),
            (Target::Property(_), Some(Special::Permissions)) if value.is_some() => {
                Converted::Sent(Value::Object(Map::new()))
            }
            _ => Converted::Empty,
        };
    };
    match target {
        Target::Contact(field) => contact_field(*field, value, now),
        Target::Property(_) => property(source, value),
    }
}

/// `null` or `""`.
fn empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Special {
    Tags,
    Permissions,
}

fn special(source: &SourcePath) -> Option<Special> {
    match source.parts() {
        [one] if one == "tags" => Some(Special::Tags),
        [one] if one == "marketing_permissions" => Some(Special::Permissions),
        _ => None,
    }
}

fn contact_field(field: ContactField, value: &Value, now: DateTime<Utc>) -> Converted {
    use ContactField::*;
    let converted = match field {
        Prefix | Firstname | Middlename | Lastname | CustomerId => text(value).map(Value::String),
        PhoneNumber => text(value).and_then(|t| e164(&t)).map(Value::String),
        DateOfBirth => value.as_str().and_then(|t| date_of_birth(t, now)).map(Value::String),
        Gender => value.as_str().and_then(gender).map(|g| Value::String(g.into())),
        CountryId => value.as_str().and_then(country_id).map(|c| Value::String(c.into())),
        Timezone => value.as_str().and_then(timezone).map(|t| Value::String(t.into())),
        StoreIds => return store_ids(value),
        TimestampAcquired | TimestampUnsubscribed => value
            .as_str()
            .and_then(|t| ometria_timestamp(t, now))
            .map(|t| Value::String(t.into_owned())),
    };
    converted.map_or(Converted::Dropped, Converted::Sent)
}

/// A scalar as text: text as given, a number as written, `true`/`false`.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `text` as an E.164 number (`+442079460958`), if it is one written with
/// its country code.
pub fn e164(text: &str) -> Option<String> {
    let text = text.trim();
    // `(+44) 20 …`: the country code in parentheses.
    let unbracketed = text
        .strip_prefix("(+")
        .map(|rest| format!("+{}", rest.replacen(')', " ", 1)));
    let text = unbracketed.as_deref().unwrap_or(text);
    let rest = text
        .strip_prefix('+')
        .or_else(|| text.strip_prefix("00"))?
        // `+44 (0)20 …`: the trunk prefix written beside the country code.
        .replacen("(0)", "", 1);
    let mut digits = String::with_capacity(16);
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '-' | '.' | '(' | ')' | '/' => {}
            c if c.is_whitespace() => {}
            _ => return None,
        }
    }
    (E164_DIGITS.contains(&digits.len()) && !digits.starts_with('0')).then(|| format!("+{digits}"))
}

/// `YYYY-MM-DD`, a real date from [`EARLIEST_BIRTH_YEAR`] to `now`'s day.
pub fn date_of_birth(text: &str, now: DateTime<Utc>) -> Option<String> {
    let shaped = text.len() == 10
        && text.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().filter(|_| shaped)?;
    let year = chrono::Datelike::year(&date);
    (year >= EARLIEST_BIRTH_YEAR && date <= now.date_naive()).then(|| text.to_owned())
}

fn gender(text: &str) -> Option<&'static str> {
    match text.trim().to_lowercase().as_str() {
        "m" | "male" | "man" => Some("m"),
        "f" | "female" | "woman" => Some("f"),
        _ => None,
    }
}

/// ISO 3166-1 alpha-2 for an alpha-2 or alpha-3 code or an English name.
pub fn country_id(text: &str) -> Option<&'static str> {
    let text = text.trim();
    let alphabetic = text.chars().all(|c| c.is_alphabetic());
    let country = match text.len() {
        2 if alphabetic => celes::Country::from_alpha2(text.to_ascii_lowercase()).ok(),
        3 if alphabetic => celes::Country::from_alpha3(text.to_ascii_lowercase()).ok(),
        _ => None,
    };
    let country = country.or_else(|| {
        if text.chars().any(|c| c.is_ascii_digit()) {
            return None; // a numeric code is not what a person writes
        }
        // ISO's own "Korea, Republic of" is also tried as "Republic of Korea".
        let reordered = text.split_once(',').map(|(a, b)| format!("{b} {a}"));
        [Some(text.to_owned()), reordered]
            .into_iter()
            .flatten()
            .find_map(|name| {
                let name = letters(&name);
                celes::Country::from_alias(&name)
                    .or_else(|_| celes::Country::from_name(&name))
                    .ok()
            })
    })?;
    Some(country.alpha2)
}

/// A name's letters, lower case, without accents (`Côte d'Ivoire` →
/// `cotedivoire`): how the country table writes names.
fn letters(name: &str) -> String {
    use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};
    name.nfkd()
        .filter(|c| c.is_alphabetic() && !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

fn timezone(text: &str) -> Option<&str> {
    chrono_tz::Tz::from_str(text).ok().map(|_| text)
}

fn store_ids(value: &Value) -> Converted {
    let ids: Option<Vec<Value>> = match value {
        Value::Array(items) => items
            .iter()
            .filter(|v| !empty(v))
            .map(|v| match v {
                Value::String(_) | Value::Number(_) => text(v).map(Value::String),
                _ => None,
            })
            .collect(),
        Value::String(_) | Value::Number(_) => text(value).map(|t| vec![Value::String(t)]),
        _ => None,
    };
    // A list is the member's whole set: sent even when empty, as tags are.
    ids.map_or(Converted::Dropped, |ids| Converted::Sent(Value::Array(ids)))
}

fn property(source: &SourcePath, value: &Value) -> Converted {
    match (special(source), value) {
        // An element without its name (or text and state) is left out,
        // the rest of the member's set sent: one odd tag never keeps the
        // others stale in Ometria.
        (Some(Special::Tags), Value::Array(tags)) => Converted::Sent(Value::Array(
            tags.iter()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .filter(|n| !n.is_empty())
                .map(|n| Value::String(n.into()))
                .collect(),
        )),
        (Some(Special::Permissions), Value::Array(permissions)) => {
            let mut map = Map::new();
            for p in permissions {
                if let (Some(text), Some(enabled)) = (
                    p.get("text").and_then(Value::as_str),
                    p.get("enabled").and_then(Value::as_bool),
                ) {
                    map.insert(text.to_owned(), Value::Bool(enabled));
                }
            }
            Converted::Sent(Value::Object(map))
        }
        (Some(_), _) => Converted::Dropped,
        // A number Ometria could not hold as a double (`1e400`) is no value.
        (None, value) if !finite_numbers(value) => Converted::Dropped,
        (None, Value::Object(parts)) if source.merge_tag().is_some() && source.parts().len() == 2 => address(parts),
        (None, value) => Converted::Sent(value.clone()),
    }
}

/// Whether every number in `value` is a finite double (JSON numbers, as
/// Ometria reads them); serde_json keeps them as written, of any size.
fn finite_numbers(value: &Value) -> bool {
    match value {
        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
        Value::Array(items) => items.iter().all(finite_numbers),
        Value::Object(map) => map.values().all(finite_numbers),
        _ => true,
    }
}

/// An `address` merge field's non-empty parts, in Mailchimp's order.
fn address(parts: &Map<String, Value>) -> Converted {
    if !parts.keys().any(|k| ADDRESS_PARTS.contains(&k.as_str())) {
        // Not an address: a merge field holding some other object.
        return Converted::Sent(Value::Object(parts.clone()));
    }
    let mut kept = Map::new();
    for part in ADDRESS_PARTS {
        match parts.get(part) {
            Some(Value::String(s)) if !s.is_empty() => {
                kept.insert(part.into(), Value::String(s.clone()));
            }
            Some(Value::Number(n)) => {
                kept.insert(part.into(), Value::String(n.to_string()));
            }
            _ => {}
        }
    }
    if kept.is_empty() {
        Converted::Empty
    } else {
        Converted::Sent(Value::Object(kept))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() // 2023-11-14
    }

    fn run(target: &str, source: &str, value: Value) -> Converted {
        let target = Target::parse(target).unwrap();
        let source = SourcePath::parse(source).unwrap();
        convert(&target, &source, Some(&value), now())
    }

    fn sent(v: Value) -> Converted {
        Converted::Sent(v)
    }

    #[test]
    fn empty_forms_are_left_out_not_dropped() {
        for target in [
            "firstname",
            "phone_number",
            "date_of_birth",
            "gender",
            "country_id",
            "timezone",
            "store_ids",
            "timestamp_acquired",
            "properties.x",
        ] {
            for value in [json!(null), json!("")] {
                assert_eq!(
                    run(target, "merge_fields.X", value.clone()),
                    Converted::Empty,
                    "{target} {value}"
                );
            }
            let t = Target::parse(target).unwrap();
            let s = SourcePath::parse("merge_fields.X").unwrap();
            assert_eq!(convert(&t, &s, None, now()), Converted::Empty, "{target} absent");
        }
        // An unset ADDRESS is "" (above) or an object of empty parts.
        let unset = json!({"addr1": "", "addr2": "", "city": "", "state": "", "zip": "", "country": ""});
        assert_eq!(
            run("properties.address", "merge_fields.ADDRESS", unset),
            Converted::Empty
        );
        assert_eq!(run("properties.n", "merge_fields.LOYALTY", json!("")), Converted::Empty);
        assert_eq!(run("store_ids", "tags.name", json!([])), sent(json!([])));
    }

    #[test]
    fn text_and_numbers_go_to_text_fields() {
        assert_eq!(run("firstname", "merge_fields.FIRST", json!("Zoë")), sent(json!("Zoë")));
        assert_eq!(run("firstname", "merge_fields.FIRST", json!(" ")), sent(json!(" ")));
        assert_eq!(run("customer_id", "merge_fields.CID", json!(42)), sent(json!("42")));
        let precise: Value = serde_json::from_str("12.50").unwrap();
        assert_eq!(run("customer_id", "merge_fields.CID", precise), sent(json!("12.50")));
        assert_eq!(run("prefix", "vip", json!(true)), sent(json!("true")));
        assert_eq!(
            run("middlename", "merge_fields.ADDRESS", json!({"city": "Leeds"})),
            Converted::Dropped
        );
        assert_eq!(
            run("lastname", "tags", json!([{"id": 1, "name": "a"}])),
            Converted::Dropped
        );
    }

    #[test]
    fn phone_numbers_become_e164_or_are_dropped() {
        for (phone, e164) in [
            ("+44 20 7946 0958", Some("+442079460958")),
            ("+44 (0)20 7946 0958", Some("+442079460958")),
            ("0044 20 7946 0958", Some("+442079460958")),
            ("+1 (555) 123-4567", Some("+15551234567")),
            ("+1.555.123.4567", Some("+15551234567")),
            ("  +33 1 23 45 67 89 ", Some("+33123456789")),
            ("+491701234567", Some("+491701234567")),
            ("(+44) 20 7946 0958", Some("+442079460958")),
            ("+44\u{202f}20\u{2009}7946\t0958", Some("+442079460958")),
            ("(555) 123-4567", None),
            ("555-123-4567", None),
            ("07911 123456", None),
            ("+0 555 123", None),
            ("+44 20 7946 0958 ext 12", None),
            ("+44 20 7946 0958 x12", None),
            ("+123456", None),
            ("+1234567890123456", None),
            ("call me", None),
            ("+", None),
        ] {
            let expected = e164.map_or(Converted::Dropped, |e| sent(json!(e)));
            assert_eq!(
                run("phone_number", "merge_fields.PHONE", json!(phone)),
                expected,
                "{phone}"
            );
        }
        assert_eq!(
            run("phone_number", "merge_fields.PHONE", json!(447911123456u64)),
            Converted::Dropped
        );
    }

    #[test]
    fn dates_of_birth_are_real_dates_with_a_year() {
        for (date, ok) in [
            ("1984-04-22", true),
            ("2000-02-29", true),
            ("1900-01-01", true),
            ("2023-11-14", true),
            ("2023-11-15", false),
            ("1899-12-31", false),
            ("2001-02-29", false),
            ("1984-13-01", false),
            ("0000-00-00", false),
            ("04/22", false),
            ("04/22/1984", false),
            ("1984-4-22", false),
            ("1984-04-22T00:00:00", false),
            ("yesterday", false),
        ] {
            let expected = if ok { sent(json!(date)) } else { Converted::Dropped };
            assert_eq!(
                run("date_of_birth", "merge_fields.DOB", json!(date)),
                expected,
                "{date}"
            );
        }
        // A birthday has no year: only into a property, as given.
        assert_eq!(
            run("date_of_birth", "merge_fields.BIRTHDAY", json!("04/22")),
            Converted::Dropped
        );
        assert_eq!(
            run("properties.birthday", "merge_fields.BIRTHDAY", json!("04/22")),
            sent(json!("04/22"))
        );
        assert_eq!(
            run("date_of_birth", "merge_fields.DOB", json!(19840422)),
            Converted::Dropped
        );
    }

    #[test]
    fn genders_countries_and_time_zones() {
        for (g, out) in [
            ("M", Some("m")),
            ("female", Some("f")),
            (" Woman ", Some("f")),
            ("x", None),
            ("", None),
        ] {
            let expected = match (g, out) {
                ("", _) => Converted::Empty,
                (_, Some(o)) => sent(json!(o)),
                (_, None) => Converted::Dropped,
            };
            assert_eq!(run("gender", "merge_fields.GENDER", json!(g)), expected, "{g}");
        }
        for (c, out) in [
            ("GB", Some("GB")),
            ("gb", Some("GB")),
            (" us ", Some("US")),
            ("DEU", Some("DE")),
            ("fra", Some("FR")),
            ("United Kingdom", Some("GB")),
            ("united states", Some("US")),
            ("Germany", Some("DE")),
            ("Côte d'Ivoire", Some("CI")),
            ("Curaçao", Some("CW")),
            ("Réunion", Some("RE")),
            ("Korea, Republic of", Some("KR")),
            ("XX", None),
            ("UKK", None),
            ("826", None),
            ("Atlantis", None),
        ] {
            let expected = out.map_or(Converted::Dropped, |o| sent(json!(o)));
            assert_eq!(
                run("country_id", "merge_fields.ADDRESS.country", json!(c)),
                expected,
                "{c}"
            );
        }
        assert_eq!(
            run("timezone", "location.timezone", json!("Europe/London")),
            sent(json!("Europe/London"))
        );
        assert_eq!(
            run("timezone", "location.timezone", json!("Mars/Olympus")),
            Converted::Dropped
        );
        assert_eq!(run("timezone", "location.gmtoff", json!(0)), Converted::Dropped);
    }

    #[test]
    fn timestamps_are_instants_as_timestamp_subscribed_is() {
        assert_eq!(
            run(
                "timestamp_acquired",
                "timestamp_signup",
                json!("2019-10-18T22:20:23+00:00")
            ),
            sent(json!("2019-10-18T22:20:23+00:00"))
        );
        assert_eq!(
            run("timestamp_acquired", "timestamp_signup", json!("2019-10-18 22:20:23")),
            sent(json!("2019-10-18T22:20:23+00:00"))
        );
        assert_eq!(
            run("timestamp_unsubscribed", "last_changed", json!("0000-00-00 00:00:00")),
            Converted::Dropped
        );
    }

    #[test]
    fn properties_keep_types_and_reshape_addresses_tags_and_permissions() {
        let loyalty: Value = serde_json::from_str("1200.50").unwrap();
        assert_eq!(
            run("properties.loyalty", "merge_fields.LOYALTY", loyalty.clone()),
            sent(loyalty)
        );
        assert_eq!(run("properties.vip", "vip", json!(false)), sent(json!(false)));
        assert_eq!(
            run("properties.web", "merge_fields.WEBSITE", json!("https://x.io")),
            sent(json!("https://x.io"))
        );
        assert_eq!(
            run(
                "properties.address",
                "merge_fields.ADDRESS",
                json!({"addr1": "1 High St", "addr2": "", "city": "Leeds", "state": "", "zip": "LS1 1AA", "country": "GB"})
            ),
            sent(json!({"addr1": "1 High St", "city": "Leeds", "zip": "LS1 1AA", "country": "GB"}))
        );
        assert_eq!(
            run(
                "properties.tags",
                "tags",
                json!([{"id": 1, "name": "VIP"}, {"id": 2, "name": "2024"}])
            ),
            sent(json!(["VIP", "2024"]))
        );
        assert_eq!(run("properties.tags", "tags", json!([])), sent(json!([])));
        // A tag without a name, or with an empty one, is left out.
        assert_eq!(
            run(
                "properties.tags",
                "tags",
                json!([{"name": ""}, {"id": 3}, {"name": "A"}])
            ),
            sent(json!(["A"]))
        );
        // A number no double holds is dropped, alone or inside a value.
        for huge in ["1e400", "-1e400", r#"{"points": 1e400}"#, "[1, 1e999]"] {
            let value: Value = serde_json::from_str(huge).unwrap();
            assert_eq!(
                run("properties.x", "merge_fields.X", value),
                Converted::Dropped,
                "{huge}"
            );
        }
        let big: Value = serde_json::from_str("12345678901234567890123").unwrap();
        assert_eq!(run("properties.x", "merge_fields.X", big.clone()), sent(big));
        assert_eq!(run("properties.tags", "tags.name", json!(["a"])), sent(json!(["a"])));
        assert_eq!(
            run(
                "properties.consent",
                "marketing_permissions",
                json!([{"marketing_permission_id": "a1", "text": "Email", "enabled": true},
                       {"marketing_permission_id": "b2", "text": "Direct Mail", "enabled": false}])
            ),
            sent(json!({"Email": true, "Direct Mail": false}))
        );
        assert_eq!(
            run("properties.consent", "marketing_permissions", json!([])),
            sent(json!({}))
        );
        assert_eq!(
            run("properties.consent", "marketing_permissions", json!("yes")),
            Converted::Dropped
        );
        let interests = json!({"9143cf3bd1": true, "3a2a927344": false});
        assert_eq!(
            run("properties.interests", "interests", interests.clone()),
            sent(interests)
        );
        // The whole set, even when Mailchimp sends it as null.
        let t = Target::parse("properties.tags").unwrap();
        let s = SourcePath::parse("tags").unwrap();
        assert_eq!(convert(&t, &s, Some(&Value::Null), now()), sent(json!([])));
        assert_eq!(convert(&t, &s, None, now()), Converted::Empty);
    }

    #[test]
    fn store_ids_are_lists_of_text() {
        assert_eq!(run("store_ids", "merge_fields.STORE", json!("uk")), sent(json!(["uk"])));
        assert_eq!(run("store_ids", "merge_fields.STORE", json!(12)), sent(json!(["12"])));
        assert_eq!(
            run("store_ids", "tags.name", json!(["a", "", "b"])),
            sent(json!(["a", "b"]))
        );
        assert_eq!(run("store_ids", "tags", json!([{"id": 1}])), Converted::Dropped);
    }
}
