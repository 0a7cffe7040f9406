//! Ometria Data API v2 (`POST /v2/push`) and the legacy `/record` endpoint
//! (SPEC §6): contact records and the push client.

use std::rc::Rc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::api::{self, Api, ApiError};
use crate::config::{ApiKey, OmetriaApi};

/// Ometria takes at most this many records per push.
pub const MAX_BATCH: usize = 100;

/// A contact record as pushed to Ometria (SPEC §5).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Contact {
    #[serde(rename = "@type")]
    pub record_type: &'static str,
    pub id: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lastname: Option<String>,
    pub marketing_optin: MarketingOptin,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp_subscribed: Option<String>,
    pub properties: ContactProperties,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MarketingOptin {
    ExplicitlyOptedin,
    ExplicitlyOptedout,
    NotSpecified,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContactProperties {
    pub mailchimp_status: String,
    pub mailchimp_list_id: String,
}

/// The legacy endpoint's record: `{id, email, status, firstname, lastname}`.
#[derive(Serialize)]
struct LegacyRecord<'a> {
    id: &'a str,
    email: &'a str,
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    firstname: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lastname: Option<&'a str>,
}

impl<'a> From<&'a Contact> for LegacyRecord<'a> {
    fn from(c: &'a Contact) -> Self {
        LegacyRecord {
            id: &c.id,
            email: &c.email,
            status: &c.properties.mailchimp_status,
            firstname: c.firstname.as_deref(),
            lastname: c.lastname.as_deref(),
        }
    }
}

/// How Ometria took one batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    pub accepted: u64,
    /// Per-record bad data: retrying will not help.
    pub rejected: u64,
}

#[derive(Deserialize)]
struct PushAnswer {
    accepted: u64,
    rejected: u64,
}

#[derive(Deserialize)]
struct RecordAnswer {
    content: u64,
}

/// What to fix when Ometria refuses a request.
fn hint(status: u16) -> &'static str {
    match status {
        401 | 403 => "check OMETRIA_APIKEY",
        404 | 405 => "check OMETRIA_BASE_URL and OMETRIA_API",
        _ => "Ometria refused the batch; the detail above says why",
    }
}

#[derive(Clone)]
pub struct OmetriaClient {
    http: awc::Client,
    endpoint: Rc<str>,
    key: ApiKey,
    api: OmetriaApi,
    timeout: Duration,
}

impl OmetriaClient {
    pub fn new(http: awc::Client, base_url: &str, key: ApiKey, api: OmetriaApi, timeout: Duration) -> Self {
        let base = base_url.trim_end_matches('/');
        let endpoint = match api {
            OmetriaApi::Push => format!("{base}/v2/push"),
            OmetriaApi::Record => format!("{base}/record"),
        };
        OmetriaClient {
            http,
            endpoint: endpoint.into(),
            key,
            api,
            timeout,
        }
    }

    /// Pushes one batch (≤ [`MAX_BATCH`] records). One attempt: retries
    /// are the caller's.
    pub async fn push(&self, contacts: &[Contact]) -> Result<PushOutcome, ApiError> {
        let sent = contacts.len() as u64;
        let body = match self.api {
            OmetriaApi::Push => serde_json::to_vec(contacts),
            OmetriaApi::Record => serde_json::to_vec(&contacts.iter().map(LegacyRecord::from).collect::<Vec<_>>()),
        }
        .expect("records always serialise");
        let request = self
            .http
            .post(&*self.endpoint)
            .timeout(self.timeout)
            .content_type("application/json");
        let request = match self.api {
            OmetriaApi::Push => request.insert_header(("X-Ometria-Auth", self.key.expose())),
            OmetriaApi::Record => request.insert_header(("Authorization", self.key.expose())),
        };
        let exchange = async {
            let mut response = request
                .send_body(body)
                .await
                .map_err(|e| ApiError::from_send(Api::Ometria, self.timeout, e))?;
            let answer = response
                .body()
                .limit(api::MAX_BODY_BYTES)
                .await
                .map_err(|e| ApiError::from_payload(Api::Ometria, e))?;
            if !response.status().is_success() {
                let after = api::retry_after(response.headers());
                return Err(ApiError::from_status(
                    Api::Ometria,
                    response.status(),
                    after,
                    &answer,
                    hint,
                ));
            }
            let malformed = |e: serde_json::Error| ApiError::Malformed {
                api: Api::Ometria,
                message: e.to_string(),
            };
            let outcome = match self.api {
                OmetriaApi::Push => {
                    let a: PushAnswer = serde_json::from_slice(&answer).map_err(malformed)?;
                    PushOutcome {
                        accepted: a.accepted,
                        rejected: a.rejected,
                    }
                }
                OmetriaApi::Record => {
                    let a: RecordAnswer = serde_json::from_slice(&answer).map_err(malformed)?;
                    PushOutcome {
                        accepted: a.content,
                        rejected: sent.saturating_sub(a.content),
                    }
                }
            };
            // Fewer means records nobody accounted for; more is odd but loses nothing.
            if outcome.accepted + outcome.rejected < sent {
                return Err(ApiError::Unaccounted {
                    sent,
                    accepted: outcome.accepted,
                    rejected: outcome.rejected,
                });
            }
            Ok(outcome)
        };
        actix_rt::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(ApiError::Timeout {
                api: Api::Ometria,
                after: self.timeout,
            }))
    }
}
