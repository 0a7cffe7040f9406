//! One Mailchimp audience webhook, parsed (issue 18, SPEC §15).
//!
//! Mailchimp posts each event as `application/x-www-form-urlencoded`:
//! `type`, `fired_at` and the event's `data[…]`, nested names spelled
//! with brackets (`data[merges][FNAME]`). Mailchimp's "Sync audience data
//! with webhooks" guide gives these forms (its sample values):
//!
//! | `type` | `data[…]` |
//! |---|---|
//! | `subscribe` | `id`, `list_id`, `email`, `email_type`, `merges[…]`, `ip_opt`, `ip_signup` |
//! | `unsubscribe` | as `subscribe`, plus `action` (`unsub` or `delete`), `reason`, `campaign_id` |
//! | `profile` | as `subscribe` |
//! | `upemail` | `list_id`, `new_id`, `new_email`, `old_email` |
//! | `cleaned` | `list_id`, `campaign_id`, `reason` (`hard`, `abuse`), `email` |
//! | `campaign` | `id` (the campaign's), `subject`, `status`, `reason`, `list_id` |
//!
//! `data[id]` is the member's id in Mailchimp's API (the MD5 hash of the
//! lower-cased address, its "subscriber hash"), not its `unique_email_id`.
//!
//! Only `type` and `data[list_id]` are required: deliveries are known to
//! lack fields (an `unsubscribe` without `action` is an unsubscribe, not a
//! delete), and what an event says is never taken as the member's state —
//! the SYNC it brings forward reads the member from Mailchimp.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};

/// Bodies longer than this are refused before they are read whole: a real
/// event is a few hundred bytes, a few KiB with many merge fields.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A list id longer than this is no Mailchimp list id (they are 10
/// characters): refused rather than carried into logs and maps.
const MAX_LIST_ID_CHARS: usize = 100;

/// An address longer than this is no address (RFC 5321 caps a path at
/// 256 octets, 254 once its angle brackets are off): refused rather than
/// queued, looked up and logged.
pub const MAX_EMAIL_BYTES: usize = 254;

/// What happened, by the event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Subscribe,
    Unsubscribe {
        action: UnsubscribeAction,
    },
    Profile,
    /// The member's address changed (`upemail`).
    UpEmail,
    /// The address bounced hard or reported abuse, and left the audience.
    Cleaned,
    /// A campaign's sending status changed: no member changed.
    Campaign,
}

/// What an `unsubscribe` did to the member (`data[action]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnsubscribeAction {
    /// Unsubscribed, still in the audience: `unsub`, and any other value
    /// or none (Mailchimp sometimes leaves `action` out).
    Unsub,
    /// Deleted from the audience: no SYNC can see the member any more.
    Delete,
}

impl EventKind {
    /// The `type` Mailchimp sends, also the `type` label of the metrics.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Subscribe => "subscribe",
            EventKind::Unsubscribe { .. } => "unsubscribe",
            EventKind::Profile => "profile",
            EventKind::UpEmail => "upemail",
            EventKind::Cleaned => "cleaned",
            EventKind::Campaign => "campaign",
        }
    }

    /// Whether a member of the list may have changed, so that the list's
    /// entries are worth a SYNC: every kind but `campaign`.
    pub fn changes_members(&self) -> bool {
        !matches!(self, EventKind::Campaign)
    }
}

/// One event, as far as the importer uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookEvent {
    pub kind: EventKind,
    /// `data[list_id]`: never empty.
    pub list_id: String,
    /// `fired_at` (Mailchimp writes `2009-03-26 21:35:57`, in UTC), if sent.
    pub fired_at: Option<DateTime<Utc>>,
    /// The member's id in Mailchimp's API (its subscriber hash):
    /// `data[id]`, or `data[new_id]` for `upemail`; `None` for `campaign`
    /// (its `data[id]` is the campaign's) and `cleaned`, or when not sent.
    pub member_id: Option<String>,
    /// The member's address: `data[email]`, or `data[new_email]` for
    /// `upemail`; `None` for `campaign`, or when not sent.
    pub email: Option<String>,
    /// `data[old_email]` of an `upemail`.
    pub old_email: Option<String>,
    /// `data[reason]` (`manual`, `abuse`, `hard`…), if sent.
    pub reason: Option<String>,
    /// `data[merges][…]`, nested names joined with dots (`ADDRESS.city`).
    pub merges: BTreeMap<String, String>,
}

/// Why a body is not an event the importer takes; answered 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is over {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the body is not a form: {0}")]
    Malformed(String),
    #[error("the form has no \"type\"")]
    NoType,
    /// The type sent is not repeated here: a sender's text is no label.
    #[error("\"type\" is not one of subscribe, unsubscribe, profile, upemail, cleaned, campaign")]
    UnknownType,
    #[error("the form has no \"data[list_id]\"")]
    NoListId,
    #[error("\"data[list_id]\" is not a list id (empty, over {MAX_LIST_ID_CHARS} characters, or holding control characters)")]
    BadListId,
    #[error("\"fired_at\" is not a time like 2009-03-26 21:35:57")]
    BadFiredAt,
    /// The field's name, not its value.
    #[error("\"{0}\" is not an email address (over {MAX_EMAIL_BYTES} bytes, or holding control characters)")]
    BadEmail(&'static str),
}

impl WebhookError {
    /// The `result` label of the metrics.
    pub fn result(&self) -> &'static str {
        match self {
            WebhookError::TooLarge => "too_large",
            WebhookError::UnknownType => "unknown_type",
            _ => "malformed",
        }
    }
}

impl WebhookEvent {
    /// Parses one form body: its fields in any order, unknown ones
    /// ignored. Errors: not UTF-8 once decoded, a field given twice with
    /// different values, no `type` or an unknown one, no usable
    /// `data[list_id]`, a `fired_at` that is no time.
    pub fn parse(body: &[u8]) -> Result<WebhookEvent, WebhookError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(WebhookError::TooLarge);
        }
        let fields = Form::parse(body)?;
        let kind = match fields.get("type").ok_or(WebhookError::NoType)? {
            "subscribe" => EventKind::Subscribe,
            "unsubscribe" => EventKind::Unsubscribe {
                action: match fields.get("data[action]") {
                    Some("delete") => UnsubscribeAction::Delete,
                    _ => UnsubscribeAction::Unsub,
                },
            },
            "profile" => EventKind::Profile,
            "upemail" => EventKind::UpEmail,
            "cleaned" => EventKind::Cleaned,
            "campaign" => EventKind::Campaign,
            "" => return Err(WebhookError::NoType),
            _ => return Err(WebhookError::UnknownType),
        };
        let list_id = fields.get("data[list_id]").ok_or(WebhookError::NoListId)?;
        if list_id.is_empty() || list_id.chars().count() > MAX_LIST_ID_CHARS || list_id.chars().any(char::is_control) {
            return Err(WebhookError::BadListId);
        }
        let fired_at = match fields.get("fired_at") {
            None | Some("") => None,
            Some(text) => Some(parse_fired_at(text).ok_or(WebhookError::BadFiredAt)?),
        };
        let given = |name: &str| fields.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
        let address = |name: &'static str| match given(name) {
            Some(email) if email.len() > MAX_EMAIL_BYTES || email.chars().any(char::is_control) => {
                Err(WebhookError::BadEmail(name))
            }
            email => Ok(email),
        };
        let (member_id, email) = match kind {
            EventKind::UpEmail => (given("data[new_id]"), address("data[new_email]")?),
            EventKind::Campaign => (None, None),
            EventKind::Cleaned => (None, address("data[email]")?),
            _ => (given("data[id]"), address("data[email]")?),
        };
        let merges = fields
            .pairs
            .iter()
            .filter_map(|(name, value)| {
                let path = name.strip_prefix("data[merges][")?.strip_suffix(']')?;
                Some((path.replace("][", "."), value.clone()))
            })
            .collect();
        Ok(WebhookEvent {
            kind,
            list_id: list_id.to_owned(),
            fired_at,
            member_id,
            email,
            old_email: match kind {
                EventKind::UpEmail => address("data[old_email]")?,
                _ => None,
            },
            reason: given("data[reason]"),
            merges,
        })
    }
}

/// `2009-03-26 21:35:57` (Mailchimp's, in UTC), or RFC 3339.
fn parse_fired_at(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S")
        .map(|t| t.and_utc())
        .ok()
        .or_else(|| {
            DateTime::parse_from_rfc3339(text.trim())
                .ok()
                .map(|t| t.with_timezone(&Utc))
        })
}

/// The decoded name-value pairs of a form, in order.
struct Form {
    pairs: Vec<(String, String)>,
}

impl Form {
    /// `a=1&b=2`: `+` is a space, `%XX` a byte; the bytes must be UTF-8
    /// (the `form_urlencoded` crate would replace what is not, silently).
    fn parse(body: &[u8]) -> Result<Form, WebhookError> {
        let text = std::str::from_utf8(body).map_err(|_| WebhookError::Malformed("it is not UTF-8".into()))?;
        let mut pairs: Vec<(String, String)> = vec![];
        for part in text.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            let (name, value) = (decode(name)?, decode(value)?);
            if name.is_empty() {
                return Err(WebhookError::Malformed("a field has no name".into()));
            }
            match pairs.iter().find(|(n, _)| *n == name) {
                Some((_, v)) if *v == value => {}
                Some(_) => {
                    return Err(WebhookError::Malformed(format!(
                        "\"{}\" is given twice with different values",
                        name.escape_debug()
                    )))
                }
                None => pairs.push((name, value)),
            }
        }
        Ok(Form { pairs })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn decode(text: &str) -> Result<String, WebhookError> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| WebhookError::Malformed("a percent-encoded value is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The samples of Mailchimp's guide, one per type, as Mailchimp
    /// encodes them.
    const SUBSCRIBE: &str = "type=subscribe&fired_at=2009-03-26+21%3A35%3A57&data%5Bid%5D=8a25ff1d98\
        &data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html\
        &data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp\
        &data%5Bmerges%5D%5BLNAME%5D=API&data%5Bmerges%5D%5BINTERESTS%5D=Group1%2CGroup2\
        &data%5Bip_opt%5D=10.20.10.30&data%5Bip_signup%5D=10.20.10.30";
    const UNSUBSCRIBE: &str = "type=unsubscribe&fired_at=2009-03-26+21%3A40%3A57&data%5Baction%5D=unsub\
        &data%5Breason%5D=manual&data%5Bid%5D=8a25ff1d98&data%5Blist_id%5D=a6b5da1054\
        &data%5Bemail%5D=api%2Bunsub%40mailchimp.com&data%5Bemail_type%5D=html\
        &data%5Bmerges%5D%5BEMAIL%5D=api%2Bunsub%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp\
        &data%5Bip_opt%5D=10.20.10.30&data%5Bcampaign_id%5D=cb398d21d2";
    const PROFILE: &str = "type=profile&fired_at=2009-03-26+21%3A31%3A21&data%5Bid%5D=8a25ff1d98\
        &data%5Blist_id%5D=a6b5da1054&data%5Bemail%5D=api%40mailchimp.com&data%5Bemail_type%5D=html\
        &data%5Bmerges%5D%5BEMAIL%5D=api%40mailchimp.com&data%5Bmerges%5D%5BFNAME%5D=Mailchimp\
        &data%5Bmerges%5D%5BADDRESS%5D%5Bcity%5D=Atlanta&data%5Bip_opt%5D=10.20.10.30";
    const UPEMAIL: &str = "type=upemail&fired_at=2009-03-26+22%3A15%3A09&data%5Blist_id%5D=a6b5da1054\
        &data%5Bnew_id%5D=51da8c3259&data%5Bnew_email%5D=api%2Bnew%40mailchimp.com\
        &data%5Bold_email%5D=api%2Bold%40mailchimp.com";
    const CLEANED: &str = "type=cleaned&fired_at=2009-03-26+22%3A01%3A00&data%5Blist_id%5D=a6b5da1054\
        &data%5Bcampaign_id%5D=4fjk2ma9xd&data%5Breason%5D=hard&data%5Bemail%5D=api%2Bcleaned%40mailchimp.com";
    const CAMPAIGN: &str = "type=campaign&fired_at=2009-03-26+21%3A31%3A21&data%5Bid%5D=5aa2102003\
        &data%5Bsubject%5D=Test+Campaign+Subject&data%5Bstatus%5D=sent&data%5Breason%5D=\
        &data%5Blist_id%5D=a6b5da1054";

    fn parse(body: &str) -> Result<WebhookEvent, WebhookError> {
        WebhookEvent::parse(body.as_bytes())
    }

    /// `body` without the field `name` (encoded as Mailchimp does).
    fn without(body: &str, name: &str) -> String {
        let encoded = name.replace('[', "%5B").replace(']', "%5D");
        body.split('&')
            .filter(|p| !p.starts_with(&format!("{encoded}=")))
            .collect::<Vec<_>>()
            .join("&")
    }

    fn at(text: &str) -> Option<DateTime<Utc>> {
        Some(
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                .unwrap()
                .and_utc(),
        )
    }

    #[test]
    fn subscribe() {
        let event = parse(SUBSCRIBE).unwrap();
        assert_eq!(event.kind, EventKind::Subscribe);
        assert_eq!(event.list_id, "a6b5da1054");
        assert_eq!(event.fired_at, at("2009-03-26 21:35:57"));
        assert_eq!(event.member_id.as_deref(), Some("8a25ff1d98"));
        assert_eq!(event.email.as_deref(), Some("api@mailchimp.com"));
        assert_eq!(event.merges["FNAME"], "Mailchimp");
        assert_eq!(event.merges["INTERESTS"], "Group1,Group2");
        assert_eq!((event.old_email, event.reason), (None, None));
        assert!(event.kind.changes_members());
    }

    #[test]
    fn unsubscribe_is_an_unsub_unless_its_action_says_delete() {
        let event = parse(UNSUBSCRIBE).unwrap();
        assert_eq!(
            event.kind,
            EventKind::Unsubscribe {
                action: UnsubscribeAction::Unsub
            }
        );
        assert_eq!(event.member_id.as_deref(), Some("8a25ff1d98"));
        assert_eq!(event.email.as_deref(), Some("api+unsub@mailchimp.com"));
        assert_eq!(event.reason.as_deref(), Some("manual"));
        let delete = UNSUBSCRIBE.replace("action%5D=unsub", "action%5D=delete");
        assert_eq!(
            parse(&delete).unwrap().kind,
            EventKind::Unsubscribe {
                action: UnsubscribeAction::Delete
            }
        );
        // No action, an empty one or one unknown: an unsubscribe, never a delete.
        for body in [
            without(UNSUBSCRIBE, "data[action]"),
            UNSUBSCRIBE.replace("action%5D=unsub", "action%5D="),
            UNSUBSCRIBE.replace("action%5D=unsub", "action%5D=archive"),
            UNSUBSCRIBE.replace("action%5D=unsub", "action%5D=DELETE"),
        ] {
            assert_eq!(
                parse(&body).unwrap().kind,
                EventKind::Unsubscribe {
                    action: UnsubscribeAction::Unsub
                },
                "{body}"
            );
        }
        // A delete without the member's id still names its address, and the reverse.
        let event = parse(&without(&delete, "data[id]")).unwrap();
        assert_eq!(
            (event.member_id, event.email.as_deref()),
            (None, Some("api+unsub@mailchimp.com"))
        );
        let event = parse(&without(&delete, "data[email]")).unwrap();
        assert_eq!((event.member_id.as_deref(), event.email), (Some("8a25ff1d98"), None));
    }

    #[test]
    fn profile_keeps_nested_merge_fields() {
        let event = parse(PROFILE).unwrap();
        assert_eq!(event.kind, EventKind::Profile);
        assert_eq!(event.member_id.as_deref(), Some("8a25ff1d98"));
        assert_eq!(event.merges["ADDRESS.city"], "Atlanta");
        assert_eq!(event.merges.len(), 3);
    }

    #[test]
    fn upemail_names_the_member_by_its_new_id_and_address() {
        let event = parse(UPEMAIL).unwrap();
        assert_eq!(event.kind, EventKind::UpEmail);
        assert_eq!(event.member_id.as_deref(), Some("51da8c3259"));
        assert_eq!(event.email.as_deref(), Some("api+new@mailchimp.com"));
        assert_eq!(event.old_email.as_deref(), Some("api+old@mailchimp.com"));
        let event = parse(&without(&without(UPEMAIL, "data[new_id]"), "data[old_email]")).unwrap();
        assert_eq!((event.member_id, event.old_email), (None, None));
    }

    #[test]
    fn cleaned_has_an_address_and_a_reason_but_no_member_id() {
        let event = parse(CLEANED).unwrap();
        assert_eq!(event.kind, EventKind::Cleaned);
        assert_eq!(event.member_id, None);
        assert_eq!(event.email.as_deref(), Some("api+cleaned@mailchimp.com"));
        assert_eq!(event.reason.as_deref(), Some("hard"));
        let event = parse(&without(CLEANED, "data[reason]")).unwrap();
        assert_eq!(event.reason, None);
    }

    #[test]
    fn a_campaign_names_no_member_and_changes_none() {
        let event = parse(CAMPAIGN).unwrap();
        assert_eq!(event.kind, EventKind::Campaign);
        assert_eq!((event.member_id, event.email), (None, None));
        assert_eq!(event.reason, None, "an empty reason is none");
        assert!(!event.kind.changes_members());
    }

    #[test]
    fn only_the_type_and_the_list_id_are_required() {
        for body in [SUBSCRIBE, UNSUBSCRIBE, PROFILE, UPEMAIL, CLEANED, CAMPAIGN] {
            let kind = parse(body).unwrap().kind;
            let bare = format!("type={}&data%5Blist_id%5D=a6b5da1054", kind.name());
            let event = parse(&bare).unwrap();
            assert_eq!(event.kind.name(), kind.name());
            assert_eq!(event.list_id, "a6b5da1054");
            assert_eq!((event.fired_at, event.member_id, event.email), (None, None, None));
            assert_eq!(parse(&without(body, "type")), Err(WebhookError::NoType), "{body}");
            assert_eq!(
                parse(&without(body, "data[list_id]")),
                Err(WebhookError::NoListId),
                "{body}"
            );
            assert_eq!(parse(&without(body, "fired_at")).unwrap().fired_at, None);
        }
    }

    #[test]
    fn unknown_types_and_malformed_forms_are_refused_with_a_reason() {
        let list = "&data%5Blist_id%5D=a6b5da1054";
        assert_eq!(parse(&format!("type=open{list}")), Err(WebhookError::UnknownType));
        assert_eq!(parse(&format!("type=Subscribe{list}")), Err(WebhookError::UnknownType));
        assert_eq!(parse(&format!("type={list}")), Err(WebhookError::NoType));
        assert_eq!(parse(""), Err(WebhookError::NoType));
        assert_eq!(parse("{\"type\": \"subscribe\"}"), Err(WebhookError::NoType));
        assert_eq!(parse("type=subscribe&data%5Blist_id%5D="), Err(WebhookError::BadListId));
        assert_eq!(
            parse("type=subscribe&data%5Blist_id%5D=a%0Ab"),
            Err(WebhookError::BadListId)
        );
        let long = format!("type=subscribe&data%5Blist_id%5D={}", "a".repeat(101));
        assert_eq!(parse(&long), Err(WebhookError::BadListId));
        assert_eq!(
            parse(&format!("type=subscribe&fired_at=yesterday{list}")),
            Err(WebhookError::BadFiredAt)
        );
        let malformed = |body: &[u8]| match WebhookEvent::parse(body) {
            Err(WebhookError::Malformed(reason)) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(malformed(b"type=subscribe&data%5Blist_id%5D=\xff"), "it is not UTF-8");
        assert_eq!(
            malformed(b"type=subscribe&data%5Blist_id%5D=%FF"),
            "a percent-encoded value is not UTF-8"
        );
        assert_eq!(malformed(b"=x&type=subscribe"), "a field has no name");
        assert_eq!(
            malformed(format!("type=subscribe&type=cleaned{list}").as_bytes()),
            "\"type\" is given twice with different values"
        );
        // The same field twice with one value is harmless.
        assert!(parse(&format!("type=subscribe&type=subscribe{list}")).is_ok());
        let huge = format!("{SUBSCRIBE}&pad={}", "x".repeat(MAX_BODY_BYTES));
        assert_eq!(parse(&huge), Err(WebhookError::TooLarge));
        // The reasons never repeat what the sender wrote as a type.
        assert!(!WebhookError::UnknownType.to_string().contains("open"));
        assert_eq!(
            [
                WebhookError::TooLarge.result(),
                WebhookError::UnknownType.result(),
                WebhookError::NoListId.result()
            ],
            ["too_large", "unknown_type", "malformed"]
        );
    }

    #[test]
    fn an_address_over_254_bytes_or_with_control_characters_is_refused() {
        let list = "&data%5Blist_id%5D=a6b5da1054";
        let local = "a".repeat(MAX_EMAIL_BYTES - "@x.io".len());
        let longest = format!("type=unsubscribe&data%5Baction%5D=delete&data%5Bemail%5D={local}%40x.io{list}");
        assert_eq!(parse(&longest).unwrap().email.unwrap().len(), MAX_EMAIL_BYTES);
        let over = format!("type=unsubscribe&data%5Bemail%5D=a{local}%40x.io{list}");
        assert_eq!(parse(&over), Err(WebhookError::BadEmail("data[email]")));
        let cleaned = format!("type=cleaned&data%5Bemail%5D=a%0Ab%40x.io{list}");
        assert_eq!(parse(&cleaned), Err(WebhookError::BadEmail("data[email]")));
        for field in ["new_email", "old_email"] {
            let upemail = format!("type=upemail&data%5B{field}%5D=a{local}%40x.io{list}");
            let name = if field == "new_email" {
                "data[new_email]"
            } else {
                "data[old_email]"
            };
            assert_eq!(parse(&upemail), Err(WebhookError::BadEmail(name)));
        }
        // The reason names the field, never the value.
        let reason = WebhookError::BadEmail("data[email]").to_string();
        assert_eq!(
            reason,
            "\"data[email]\" is not an email address (over 254 bytes, or holding control characters)"
        );
        assert_eq!(WebhookError::BadEmail("data[email]").result(), "malformed");
    }

    #[test]
    fn fired_at_in_rfc_3339_is_taken_too() {
        let event = parse("type=profile&fired_at=2009-03-26T21%3A35%3A57Z&data%5Blist_id%5D=x").unwrap();
        assert_eq!(event.fired_at, at("2009-03-26 21:35:57"));
    }
}
