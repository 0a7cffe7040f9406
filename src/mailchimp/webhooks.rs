//! A list's webhooks through the Marketing API 3.0 (List webhooks:
//! `GET`/`POST /lists/{list_id}/webhooks`, `PATCH`/`DELETE
//! /lists/{list_id}/webhooks/{webhook_id}`), for the `webhooks` command
//! (issue 18), and the one webhook setting the importer wants: the member
//! events its receiver acts on, from subscribers and admins only.

use awc::http::Method;
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{null_as_default, without_bom, MailchimpClient, PATH_SEGMENT};
use crate::api::{Api, ApiError};

/// The events the importer's webhook is sent for, and whether it wants
/// each (Mailchimp's `events` object). A campaign being sent changes no
/// member, so `campaign` is off. Newer accounts also have SMS events
/// (`sms_subscribe`…); they are neither asked for nor changed.
pub const WANTED_EVENTS: [(&str, bool); 6] = [
    ("subscribe", true),
    ("unsubscribe", true),
    ("profile", true),
    ("upemail", true),
    ("cleaned", true),
    ("campaign", false),
];

/// Who may cause an event (Mailchimp's `sources` object): subscribers
/// (`user`) and people in Mailchimp's web app (`admin`), not `api`: the
/// importer's own kind of writes (and any other integration's) never come
/// back as events.
pub const WANTED_SOURCES: [(&str, bool); 3] = [("user", true), ("admin", true), ("api", false)];

/// One webhook of a list, as `GET /lists/{list_id}/webhooks` describes it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Webhook {
    /// Mailchimp's id of the webhook (`5d9a5e3f7b`).
    pub id: String,
    /// Where Mailchimp sends its events.
    #[serde(default, deserialize_with = "null_as_default")]
    pub url: String,
    /// Event name → whether it is sent (`{"subscribe": true, …}`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub events: Map<String, Value>,
    /// Source name → whether its events are sent (`{"user": true, …}`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub sources: Map<String, Value>,
}

impl Webhook {
    /// Whether its events and sources are the importer's
    /// ([`WANTED_EVENTS`], [`WANTED_SOURCES`]); a flag Mailchimp leaves
    /// out counts as off, and flags the importer has no opinion of (SMS
    /// events) are not compared.
    pub fn is_as_wanted(&self) -> bool {
        let agrees = |flags: &Map<String, Value>, wanted: &[(&str, bool)]| {
            wanted.iter().all(|(name, on)| is_on(flags, name) == *on)
        };
        agrees(&self.events, &WANTED_EVENTS) && agrees(&self.sources, &WANTED_SOURCES)
    }

    /// `events subscribe, unsubscribe; sources user, admin`: the flags that
    /// are on, in Mailchimp's order (`none` for no flag on).
    pub fn describe(&self) -> String {
        let on = |flags: &Map<String, Value>| {
            let names: Vec<&str> = flags
                .iter()
                .filter(|(_, v)| v.as_bool() == Some(true))
                .map(|(k, _)| k.as_str())
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        format!("events {}; sources {}", on(&self.events), on(&self.sources))
    }
}

fn is_on(flags: &Map<String, Value>, name: &str) -> bool {
    flags.get(name).and_then(Value::as_bool).unwrap_or(false)
}

/// The body of a webhook sending the importer's events and sources to
/// `url`, for `POST /lists/{list_id}/webhooks` and `PATCH …/{webhook_id}`:
/// `{"url": …, "events": {…}, "sources": {…}}`.
pub fn wanted_webhook(url: &str) -> Value {
    let flags = |wanted: &[(&str, bool)]| -> Map<String, Value> {
        wanted
            .iter()
            .map(|(k, on)| ((*k).to_owned(), Value::Bool(*on)))
            .collect()
    };
    json!({"url": url, "events": flags(&WANTED_EVENTS), "sources": flags(&WANTED_SOURCES)})
}

/// `{base_url}/lists/{list_id}/webhooks`, or that plus `/{webhook_id}`.
pub fn webhooks_url(base_url: &str, list_id: &str, webhook_id: Option<&str>) -> String {
    let mut url = format!(
        "{base_url}/lists/{}/webhooks",
        utf8_percent_encode(list_id, PATH_SEGMENT)
    );
    if let Some(id) = webhook_id {
        url.push('/');
        url.extend(utf8_percent_encode(id, PATH_SEGMENT));
    }
    url
}

/// Reads an answer of `GET /lists/{list_id}/webhooks`
/// (`{"webhooks": […], "list_id": …, "total_items": N}`). Errors:
/// [`ApiError::Malformed`] for a body that is not one, or that holds fewer
/// webhooks than its `total_items` (a webhook missing from it could be
/// created twice).
pub fn parse_webhooks(body: &[u8]) -> Result<Vec<Webhook>, ApiError> {
    #[derive(Deserialize)]
    struct Page {
        #[serde(default)]
        webhooks: Vec<Webhook>,
        #[serde(default)]
        total_items: u64,
    }
    let malformed = |message: String| ApiError::Malformed {
        api: Api::Mailchimp,
        message,
    };
    let page: Page = serde_json::from_slice(without_bom(body)).map_err(|e| malformed(format!("webhooks: {e}")))?;
    if (page.webhooks.len() as u64) < page.total_items {
        return Err(malformed(format!(
            "webhooks: the answer holds {} of the list's {}",
            page.webhooks.len(),
            page.total_items
        )));
    }
    Ok(page.webhooks)
}

/// What to fix when Mailchimp refuses a webhook request.
fn hint(status: u16) -> &'static str {
    match status {
        400 => "Mailchimp checks a webhook's URL with a GET when it is saved: the daemon must be running with IMPORTER_WEBHOOK_ADDR and the same IMPORTER_WEBHOOK_SECRET, reachable at that URL from the internet",
        401 => "check MAILCHIMP_APIKEY (and MAILCHIMP_BASE_URL, whose data centre must match the key)",
        403 => "this key may not manage the list's webhooks: check MAILCHIMP_APIKEY and the entry's list_id",
        404 => "check the entry's list_id in state.json: Mailchimp has no such list (or webhook) for this key",
        _ => "the request was refused; the detail above says why",
    }
}

impl MailchimpClient {
    /// Every webhook of list `list_id`. One attempt, number `attempt` of
    /// the caller's retries. Errors: as for a members read, and
    /// [`ApiError::Malformed`] (see [`parse_webhooks`]).
    pub async fn webhooks(&self, list_id: &str, attempt: u32) -> Result<Vec<Webhook>, ApiError> {
        let url = webhooks_url(&self.base_url, list_id, None);
        let (body, _) = self.call(Method::GET, url, None, hint, attempt).await?;
        parse_webhooks(&body)
    }

    /// Creates on list `list_id` a webhook to `url` with the importer's
    /// events and sources ([`wanted_webhook`]); Mailchimp first checks
    /// that `url` answers a GET. One attempt: a POST whose answer was lost
    /// may have created the webhook, so the caller does not retry it
    /// blindly. Errors: as for a members read (a 400 when the URL check
    /// failed), [`ApiError::Malformed`] for an answer that is not a webhook.
    pub async fn create_webhook(&self, list_id: &str, url: &str, attempt: u32) -> Result<Webhook, ApiError> {
        let target = webhooks_url(&self.base_url, list_id, None);
        let body = wanted_webhook(url);
        let (answer, _) = self.call(Method::POST, target, Some(&body), hint, attempt).await?;
        parse_webhook(&answer)
    }

    /// Sets webhook `webhook_id` of list `list_id` to `url` with the
    /// importer's events and sources (`PATCH`, which may be repeated).
    /// Errors: as [`Self::create_webhook`].
    pub async fn update_webhook(
        &self,
        list_id: &str,
        webhook_id: &str,
        url: &str,
        attempt: u32,
    ) -> Result<Webhook, ApiError> {
        let target = webhooks_url(&self.base_url, list_id, Some(webhook_id));
        let body = wanted_webhook(url);
        let (answer, _) = self.call(Method::PATCH, target, Some(&body), hint, attempt).await?;
        parse_webhook(&answer)
    }

    /// Deletes webhook `webhook_id` of list `list_id` (Mailchimp answers
    /// 204). Errors: as for a members read; a webhook already gone is a
    /// [`ApiError::Refused`] with status 404.
    pub async fn delete_webhook(&self, list_id: &str, webhook_id: &str, attempt: u32) -> Result<(), ApiError> {
        let target = webhooks_url(&self.base_url, list_id, Some(webhook_id));
        self.call(Method::DELETE, target, None, hint, attempt).await?;
        Ok(())
    }
}

/// One webhook, as `POST` and `PATCH` answer.
fn parse_webhook(body: &[u8]) -> Result<Webhook, ApiError> {
    serde_json::from_slice(without_bom(body)).map_err(|e| ApiError::Malformed {
        api: Api::Mailchimp,
        message: format!("webhook: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wanted_webhook_has_member_events_from_users_and_admins() {
        assert_eq!(
            wanted_webhook("https://h/webhooks/mailchimp/s"),
            json!({"url": "https://h/webhooks/mailchimp/s",
                   "events": {"subscribe": true, "unsubscribe": true, "profile": true, "upemail": true,
                              "cleaned": true, "campaign": false},
                   "sources": {"user": true, "admin": true, "api": false}})
        );
    }

    #[test]
    fn webhook_urls_escape_their_ids() {
        assert_eq!(
            webhooks_url("http://h/3.0", "a/b", None),
            "http://h/3.0/lists/a%2Fb/webhooks"
        );
        assert_eq!(
            webhooks_url("http://h/3.0", "a", Some("w?1")),
            "http://h/3.0/lists/a/webhooks/w%3F1"
        );
    }

    #[test]
    fn webhooks_are_read_and_compared_with_what_the_importer_wants() {
        let hooks = parse_webhooks(
            br#"{"webhooks": [
                {"id": "w1", "url": "https://h/x",
                 "events": {"subscribe": true, "unsubscribe": true, "profile": true, "cleaned": true,
                            "upemail": true, "campaign": false, "sms_subscribe": true},
                 "sources": {"user": true, "admin": true, "api": false}, "list_id": "a", "_links": []},
                {"id": "w2", "url": "https://h/y", "events": {"subscribe": true}, "sources": null}
            ], "list_id": "a", "total_items": 2}"#,
        )
        .unwrap();
        assert!(hooks[0].is_as_wanted(), "SMS events are not compared");
        assert!(!hooks[1].is_as_wanted());
        assert_eq!(hooks[1].describe(), "events subscribe; sources none");
        assert_eq!(
            hooks[0].describe(),
            "events subscribe, unsubscribe, profile, cleaned, upemail, sms_subscribe; sources user, admin"
        );
        let short = parse_webhooks(br#"{"webhooks": [], "total_items": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            short.contains("webhooks: the answer holds 0 of the list's 1"),
            "{short}"
        );
        assert!(parse_webhooks(br#"{"webhooks": [{"url": "x"}]}"#).is_err(), "no id");
    }
}
