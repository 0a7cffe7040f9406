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
//! - `email` is an address: text around one `@`, with no space, control
//!   character or any of `<>()[]\,;:"`, a domain with a dot inside it,
//!   at most 254 bytes (surrounding spaces are trimmed). A member without
//!   one cannot be sent: it is skipped, as one without `unique_email_id` is.
//! - `properties.mailchimp_status` is left out when Mailchimp gave no status.
//! - Names, status and list id are text, sent exactly (JSON escapes what
//!   needs it); `marketing_optin` is one of its three values by construction.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};

use crate::mailchimp::Member;
use crate::ometria::{Contact, ContactProperties, MarketingOptin};
use crate::state::parse_timestamp;

/// Why a member cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NoUniqueEmailId,
    NoEmail,
    /// Its email is not an address Ometria takes.
    BadEmail,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NoUniqueEmailId => "it has no unique_email_id",
            SkipReason::NoEmail => "its email address is empty",
            SkipReason::BadEmail => "its email address is not one Ometria takes",
        })
    }
}

/// A value of a member that does not meet Ometria's contract for the
/// field it maps to, and so was left out of the contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedValue {
    /// The Ometria field, e.g. `timestamp_subscribed`.
    pub field: &'static str,
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

/// `text` as an email address Ometria takes (see the module doc), trimmed.
pub fn ometria_email(text: &str) -> Option<&str> {
    let email = text.trim();
    let (local, domain) = email.split_once('@')?;
    let plain = |part: &str| {
        !part.is_empty()
            && !part
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>()[]\\,;:\"@".contains(c))
    };
    let dotted = domain.trim_matches('.').contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
    (plain(local) && plain(domain) && dotted && email.len() <= MAX_EMAIL_BYTES).then_some(email)
}

pub fn marketing_optin(status: &str) -> MarketingOptin {
    match status {
        "subscribed" => MarketingOptin::ExplicitlyOptedin,
        "unsubscribed" | "cleaned" | "archived" => MarketingOptin::ExplicitlyOptedout,
        _ => MarketingOptin::NotSpecified,
    }
}

/// Maps one member of list `list_id` for a sync that started at `now`.
/// Empty names are omitted; the subscription time is sent for subscribed
/// members only, and only if it is a real instant (see the module doc).
///
/// Errors: the member cannot be sent at all (no id, no usable email).
pub fn member_to_contact<'a>(
    member: &'a Member<'_>,
    list_id: &'a str,
    now: DateTime<Utc>,
) -> Result<Mapped<'a>, SkipReason> {
    let id = non_empty(&member.unique_email_id).ok_or(SkipReason::NoUniqueEmailId)?;
    let email = non_empty(&member.email_address).ok_or(SkipReason::NoEmail)?;
    let email = ometria_email(email).ok_or(SkipReason::BadEmail)?;
    let status = member.status.as_deref().unwrap_or_default();
    let mut dropped = vec![];
    let timestamp_subscribed = match present(&member.timestamp_opt) {
        Some(opt) if status == "subscribed" => {
            let at = ometria_timestamp(opt, now);
            if at.is_none() {
                dropped.push(DroppedValue {
                    field: "timestamp_subscribed",
                    value: opt.chars().take(100).collect(),
                });
            }
            at
        }
        _ => None,
    };
    Ok(Mapped {
        contact: Contact {
            record_type: "contact",
            id,
            email,
            firstname: present(&member.merge_fields.FNAME),
            lastname: present(&member.merge_fields.LNAME),
            marketing_optin: marketing_optin(status),
            timestamp_subscribed,
            properties: ContactProperties {
                mailchimp_status: status,
                mailchimp_list_id: list_id,
            },
        },
        dropped,
    })
}

/// `properties.mailchimp_status` of a member deleted in Mailchimp.
pub const DELETED_STATUS: &str = "deleted";

/// The contact pushed for a member of list `list_id` that Mailchimp no
/// longer returns (issue 16): opted out, `mailchimp_status: "deleted"`,
/// with the id and email Ometria last accepted for it (from the ledger).
pub fn deleted_contact<'a>(id: &'a str, email: &'a str, list_id: &'a str) -> Contact<'a> {
    Contact {
        record_type: "contact",
        id,
        email,
        firstname: None,
        lastname: None,
        marketing_optin: MarketingOptin::ExplicitlyOptedout,
        timestamp_subscribed: None,
        properties: ContactProperties {
            mailchimp_status: DELETED_STATUS,
            mailchimp_list_id: list_id,
        },
    }
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
        let contact = deleted_contact("u1", "a@x.io", "L1");
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
                field: "timestamp_subscribed",
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

    #[test]
    fn only_email_addresses_ometria_takes_are_sent() {
        for (email, sent) in [
            ("a@x.io", Some("a@x.io")),
            ("  a@x.io ", Some("a@x.io")),
            ("zoë.李@例え.jp", Some("zoë.李@例え.jp")),
            ("no-at-sign", None),
            ("@x.io", None),
            ("a@", None),
            ("a@b@c", None),
            ("a b@x.io", None),
            ("<a@example.com>", None),
            ("a@b", None),
            ("a@.io", None),
            ("a@x.", None),
            ("a,b@x.io", None),
            ("o'brien+tag@sub.example.co.uk", Some("o'brien+tag@sub.example.co.uk")),
            ("a@x.io\u{0}", None),
        ] {
            let mut m = member("subscribed");
            m.email_address = Some(email.into());
            let mapped = member_to_contact(&m, "l", now());
            match sent {
                Some(sent) => assert_eq!(mapped.unwrap().contact.email, sent),
                None => assert_eq!(mapped, Err(SkipReason::BadEmail), "{email:?}"),
            }
        }
        let mut m = member("subscribed");
        let long = format!("{}@x.io", "a".repeat(250));
        m.email_address = Some(long.as_str().into());
        assert_eq!(member_to_contact(&m, "l", now()), Err(SkipReason::BadEmail));
    }
}
