//! Mailchimp member → Ometria contact (SPEC §5). A pure function.

use std::borrow::Cow;
use std::fmt;

use crate::mailchimp::Member;
use crate::ometria::{Contact, ContactProperties, MarketingOptin};

/// Why a member cannot be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NoUniqueEmailId,
    NoEmail,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SkipReason::NoUniqueEmailId => "it has no unique_email_id",
            SkipReason::NoEmail => "its email address is empty",
        })
    }
}

pub fn marketing_optin(status: &str) -> MarketingOptin {
    match status {
        "subscribed" => MarketingOptin::ExplicitlyOptedin,
        "unsubscribed" | "cleaned" | "archived" => MarketingOptin::ExplicitlyOptedout,
        _ => MarketingOptin::NotSpecified,
    }
}

/// Maps one member of list `list_id`. Empty names are omitted; the
/// subscription time is sent for subscribed members only.
pub fn member_to_contact<'a>(member: &'a Member<'_>, list_id: &'a str) -> Result<Contact<'a>, SkipReason> {
    let id = non_empty(&member.unique_email_id).ok_or(SkipReason::NoUniqueEmailId)?;
    let email = non_empty(&member.email_address).ok_or(SkipReason::NoEmail)?;
    let status = member.status.as_deref().unwrap_or_default();
    let subscribed = status == "subscribed";
    Ok(Contact {
        record_type: "contact",
        id,
        email,
        firstname: present(&member.merge_fields.FNAME),
        lastname: present(&member.merge_fields.LNAME),
        marketing_optin: marketing_optin(status),
        timestamp_subscribed: if subscribed {
            present(&member.timestamp_opt)
        } else {
            None
        },
        properties: ContactProperties {
            mailchimp_status: status,
            mailchimp_list_id: list_id,
        },
    })
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
        let contact = member_to_contact(&m, "1a2d7ebf82").unwrap();
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
            let v = serde_json::to_value(member_to_contact(&m, "l").unwrap()).unwrap();
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
        let v = serde_json::to_value(member_to_contact(&m, "l").unwrap()).unwrap();
        assert!(v.get("firstname").is_none() && v.get("lastname").is_none());

        // Only empty is empty: spaces and padding are sent exactly.
        let mut m = member("subscribed");
        m.merge_fields = MergeFields {
            FNAME: Some(" ".into()),
            LNAME: Some(" Ann ".into()),
        };
        let v = serde_json::to_value(member_to_contact(&m, "l").unwrap()).unwrap();
        assert_eq!((&v["firstname"], &v["lastname"]), (&json!(" "), &json!(" Ann ")));

        let mut m = member("subscribed");
        m.merge_fields = MergeFields {
            FNAME: Some("Zoë 李".into()),
            LNAME: Some("Ñúñez 🚀".into()),
        };
        let text = serde_json::to_string(&member_to_contact(&m, "l").unwrap()).unwrap();
        assert!(text.contains(r#""firstname":"Zoë 李","lastname":"Ñúñez 🚀""#), "{text}");
    }

    #[test]
    fn members_without_id_or_email_are_skipped() {
        let mut m = member("subscribed");
        m.unique_email_id = None;
        assert_eq!(member_to_contact(&m, "l"), Err(SkipReason::NoUniqueEmailId));
        let mut m = member("subscribed");
        m.email_address = Some(" ".into());
        assert_eq!(member_to_contact(&m, "l"), Err(SkipReason::NoEmail));
        assert_eq!(
            member_to_contact(&Member::default(), "l"),
            Err(SkipReason::NoUniqueEmailId)
        );
    }
}
