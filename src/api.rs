//! What the two HTTP APIs have in common: the client, problem+json error
//! bodies, and the error type of a request, whose message names the API
//! and says what to fix.

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use awc::error::{PayloadError, SendRequestError};
use awc::http::StatusCode;
use bytes::Bytes;
use serde::Deserialize;

/// Largest answer body read; a page of 1000 unprojected members is ~10 MB.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// A `Retry-After` longer than this is not waited for inside a sync.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    Mailchimp,
    Ometria,
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Api::Mailchimp => "Mailchimp",
            Api::Ometria => "Ometria",
        })
    }
}

/// The HTTP client both APIs use: HTTPS with certificate verification
/// against the Mozilla roots, and a timeout on every request.
pub fn http_client(timeout: Duration) -> awc::Client {
    awc::Client::builder()
        .timeout(timeout)
        .add_default_header((
            awc::http::header::USER_AGENT,
            concat!("ometria-importer/", env!("CARGO_PKG_VERSION")),
        ))
        .finish()
}

/// How long one attempt of a request may take before it is abandoned and
/// retried. An answer normally comes in seconds, so the first attempt gets
/// a quarter of the configured timeout (at least a second, and at least
/// eight times the slowest recent answer, so an API that is slow but
/// working is not cut off), and each retry twice as long as the one
/// before, up to the whole timeout: a hung connection costs a quarter of
/// the timeout instead of all of it.
///
/// One per API client, shared by its clones (all on the one system thread).
#[derive(Clone, Debug)]
pub struct Patience {
    limit: Duration,
    /// The slowest recent answer, decaying by 1 % with every answer.
    slowest: Rc<Cell<Duration>>,
}

impl Patience {
    pub fn new(limit: Duration) -> Self {
        Patience {
            limit,
            slowest: Rc::default(),
        }
    }

    /// The time attempt number `attempt` (1 = the first) may take.
    pub fn for_attempt(&self, attempt: u32) -> Duration {
        let first = (self.limit / 4)
            .max(Duration::from_secs(1))
            .max(self.slowest.get().saturating_mul(8));
        first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.limit)
    }

    /// Notes how long a complete answer took.
    pub fn answered_in(&self, took: Duration) {
        self.slowest.set(self.slowest.get().mul_f64(0.99).max(took));
    }
}

/// What an error body says: the `title` and `detail` of an RFC 7807
/// problem document, as Mailchimp sends (SPEC §6).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Problem {
    pub title: Option<String>,
    pub detail: Option<String>,
}

/// The fields an error body may say something in.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    /// Ometria's errors: `{"status": "ERROR", "message": "…"}`.
    #[serde(default)]
    message: Option<String>,
}

impl Problem {
    /// Reads an error body: a problem document; or Ometria's
    /// `{"status": "ERROR", "message": "…"}`, whose message becomes the
    /// detail; or else its first 200 characters as text. `None` for an
    /// empty body.
    pub fn from_body(body: &[u8]) -> Option<Problem> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if let Ok(b) = serde_json::from_slice::<ErrorBody>(body) {
            if b.title.is_some() || b.detail.is_some() {
                return Some(Problem {
                    title: b.title,
                    detail: b.detail,
                });
            }
            if let Some(message) = b.message {
                return Some(Problem {
                    title: None,
                    detail: Some(message),
                });
            }
        }
        let text = String::from_utf8_lossy(body);
        let snippet: String = text.trim().chars().take(200).collect();
        Some(Problem {
            title: None,
            detail: Some(snippet),
        })
    }
}

impl fmt::Display for Problem {
    /// `title: detail`, or whichever of the two it has.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.title, &self.detail) {
            (Some(t), Some(d)) => write!(f, "{t}: {d}"),
            (Some(t), None) => write!(f, "{t}"),
            (None, Some(d)) => write!(f, "{d}"),
            (None, None) => Ok(()),
        }
    }
}

/// ` (title: detail)`, or nothing when the body said nothing.
struct Summary<'a>(&'a Option<Problem>);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(p) if p.title.is_some() || p.detail.is_some() => write!(f, " ({p})"),
            _ => Ok(()),
        }
    }
}

/// One failed request. Messages never contain a key.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal retrying cannot fix (bad key, unknown list, bad request).
    #[error("{api} refused the request with HTTP {status}{}: {hint}", Summary(.problem))]
    Refused {
        api: Api,
        status: u16,
        problem: Option<Problem>,
        hint: &'static str,
    },
    /// 429, or Mailchimp's body-less 403.
    #[error("{api} is throttling requests (HTTP {status})")]
    Throttled {
        api: Api,
        status: u16,
        retry_after: Option<Duration>,
    },
    /// 5xx, or 408.
    #[error("{api} failed with HTTP {status}{}", Summary(.problem))]
    Unavailable {
        api: Api,
        status: u16,
        problem: Option<Problem>,
    },
    #[error("{api} did not answer within {} s", .after.as_secs_f64())]
    Timeout { api: Api, after: Duration },
    #[error("{api} connection failed: {message}")]
    Connection { api: Api, message: String },
    /// A body that is cut short or is not the JSON expected.
    #[error("{api} sent an unreadable answer: {message}")]
    Malformed { api: Api, message: String },
    /// Ometria's answers have said for [`crate::limits::BACKLOG_GIVE_UP`],
    /// without a break, that its backlog is full: a retry is not made.
    #[error(
        "Ometria's backlog has been full for {} min (every answer a 429 or reporting no room for a push, none taking one): it is not draining what it was sent, so this push is given up and the sync fails, to be retried later; check Ometria's status",
        .full_for.as_secs() / 60
    )]
    BacklogFull { full_for: Duration },
    /// A push answer whose `accepted` + `rejected` is not the number of
    /// records sent (fewer, or more).
    #[error("Ometria accounted for {accepted} accepted and {rejected} rejected records of {sent} sent")]
    Unaccounted { sent: u64, accepted: u64, rejected: u64 },
}

impl ApiError {
    /// The error for a non-success answer. `hint` says what to fix when
    /// retrying will not help.
    pub fn from_status(
        api: Api,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        hint: impl Fn(u16) -> &'static str,
    ) -> ApiError {
        let code = status.as_u16();
        let problem = Problem::from_body(body);
        let mailchimp_throttle = api == Api::Mailchimp && code == 403 && problem.is_none();
        if code == 429 || mailchimp_throttle {
            ApiError::Throttled {
                api,
                status: code,
                retry_after,
            }
        } else if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            // 408: the server (or a proxy) gave up waiting for the request;
            // HTTP says it may be sent again.
            ApiError::Unavailable {
                api,
                status: code,
                problem,
            }
        } else {
            ApiError::Refused {
                api,
                status: code,
                problem,
                hint: hint(code),
            }
        }
    }

    pub fn from_send(api: Api, timeout: Duration, e: SendRequestError) -> ApiError {
        match e {
            SendRequestError::Timeout => ApiError::Timeout { api, after: timeout },
            other => ApiError::Connection {
                api,
                message: other.to_string(),
            },
        }
    }

    pub fn from_payload(api: Api, e: PayloadError) -> ApiError {
        ApiError::Malformed {
            api,
            message: format!("the answer was cut short ({e})"),
        }
    }
}

/// The body, unless it is shorter than its `Content-Length` said: a
/// connection that closed early must not pass for a complete answer.
pub fn complete_body(api: Api, headers: &awc::http::header::HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let announced = headers
        .get(awc::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    match announced {
        Some(n) if body.len() < n => Err(ApiError::Malformed {
            api,
            message: format!("the answer was cut short ({} of {n} bytes)", body.len()),
        }),
        _ => Ok(body),
    }
}

/// `Retry-After` in seconds or as an HTTP date.
pub fn retry_after(headers: &awc::http::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(awc::http::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    // Not HTTP's form, but some servers and proxies send "1.5".
    if let Some(secs) = value.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0) {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

impl ApiError {
    /// Whether the request may have been carried out although its answer
    /// was lost or unusable: a timeout, a dropped connection, a 5xx, an
    /// answer that could not be read or did not add up. Refusals (4xx,
    /// 429) and a full backlog were not.
    pub fn may_have_landed(&self) -> bool {
        matches!(
            self,
            ApiError::Unavailable { .. }
                | ApiError::Timeout { .. }
                | ApiError::Connection { .. }
                | ApiError::Malformed { .. }
                | ApiError::Unaccounted { .. }
        )
    }
}

/// An API key (Mailchimp's or Ometria's). Its `Debug` never shows the key, and it has no `Display`,
/// so it cannot end up in a log line or an error message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// The key itself, for the one place that needs it: an HTTP header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim();
        if key.is_empty() {
            return Err("the API key is empty".into());
        }
        Ok(ApiKey(key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(_: u16) -> &'static str {
        "check the key"
    }

    #[test]
    fn patience_starts_at_a_quarter_and_doubles_up_to_the_timeout() {
        let secs = Duration::from_secs;
        let p = Patience::new(secs(60));
        let steps: Vec<_> = (1..=5).map(|n| p.for_attempt(n)).collect();
        assert_eq!(steps, [secs(15), secs(30), secs(60), secs(60), secs(60)]);
        // Never less than a second, never more than the timeout.
        assert_eq!(Patience::new(secs(2)).for_attempt(1), secs(1));
        assert_eq!(
            Patience::new(Duration::from_millis(500)).for_attempt(1),
            Duration::from_millis(500)
        );
        // A slow answer buys the next requests time; it is forgotten slowly.
        p.answered_in(secs(3));
        assert_eq!(p.for_attempt(1), secs(24));
        p.answered_in(Duration::from_millis(10));
        assert_eq!(p.for_attempt(1), secs(3).mul_f64(0.99).saturating_mul(8));
        for _ in 0..400 {
            p.answered_in(Duration::from_millis(10));
        }
        assert_eq!(p.for_attempt(1), secs(15));
        // Shared by clones, as the clients are.
        p.clone().answered_in(secs(10));
        assert_eq!(p.for_attempt(1), secs(60));
    }

    #[test]
    fn problem_bodies_are_surfaced() {
        let body = br#"{"type":"https://mailchimp.com/developer/marketing/docs/errors/","title":"API Key Invalid","status":401,"detail":"Your API key may be invalid, or you've attempted to access the wrong datacenter.","instance":"x"}"#;
        let e = ApiError::from_status(Api::Mailchimp, StatusCode::UNAUTHORIZED, None, body, hint);
        assert_eq!(
            e.to_string(),
            "Mailchimp refused the request with HTTP 401 (API Key Invalid: Your API key may be invalid, or you've attempted to access the wrong datacenter.): check the key"
        );
    }

    #[test]
    fn ometria_error_bodies_are_surfaced() {
        let body = br#"{"status":"ERROR","message":"Payload invalid: Record is too large."}"#;
        let e = ApiError::from_status(Api::Ometria, StatusCode::BAD_REQUEST, None, body, hint);
        assert_eq!(
            e.to_string(),
            "Ometria refused the request with HTTP 400 (Payload invalid: Record is too large.): check the key"
        );
        let ApiError::Refused { problem: Some(p), .. } = e else {
            panic!("{e:?}")
        };
        assert_eq!(p.to_string(), "Payload invalid: Record is too large.");
        // A body with neither title, detail nor message is kept as text.
        assert_eq!(
            Problem::from_body(br#"{"status":"ERROR"}"#).unwrap().to_string(),
            r#"{"status":"ERROR"}"#
        );
        assert_eq!(Problem::from_body(b" \n"), None);
    }

    #[test]
    fn throttling_is_recognised() {
        let e = ApiError::from_status(
            Api::Mailchimp,
            StatusCode::FORBIDDEN,
            Some(Duration::from_secs(3)),
            b"",
            hint,
        );
        assert!(matches!(
            e,
            ApiError::Throttled {
                status: 403,
                retry_after: Some(_),
                ..
            }
        ));
        // A 403 with a body is a real refusal.
        let e = ApiError::from_status(
            Api::Mailchimp,
            StatusCode::FORBIDDEN,
            None,
            br#"{"title":"Forbidden"}"#,
            hint,
        );
        assert!(matches!(e, ApiError::Refused { status: 403, .. }));
        // Ometria's 403 is never throttling.
        let e = ApiError::from_status(Api::Ometria, StatusCode::FORBIDDEN, None, b"", hint);
        assert!(matches!(
            e,
            ApiError::Refused {
                status: 403,
                problem: None,
                ..
            }
        ));
        let e = ApiError::from_status(Api::Ometria, StatusCode::TOO_MANY_REQUESTS, None, b"slow down", hint);
        assert_eq!(e.to_string(), "Ometria is throttling requests (HTTP 429)");
    }

    #[test]
    fn server_errors_keep_plain_text_bodies() {
        let e = ApiError::from_status(
            Api::Ometria,
            StatusCode::BAD_GATEWAY,
            None,
            b"<html>upstream</html>",
            hint,
        );
        assert_eq!(e.to_string(), "Ometria failed with HTTP 502 (<html>upstream</html>)");
    }

    #[test]
    fn a_request_timeout_is_passing_like_a_server_error() {
        for api in [Api::Mailchimp, Api::Ometria] {
            let e = ApiError::from_status(api, StatusCode::REQUEST_TIMEOUT, None, b"", hint);
            assert!(matches!(e, ApiError::Unavailable { status: 408, .. }), "{e}");
        }
    }

    #[test]
    fn a_body_shorter_than_announced_is_malformed() {
        let mut headers = awc::http::header::HeaderMap::new();
        headers.insert(awc::http::header::CONTENT_LENGTH, "10".parse().unwrap());
        let short = complete_body(Api::Ometria, &headers, Bytes::from_static(b"{\"a\":")).unwrap_err();
        assert_eq!(
            short.to_string(),
            "Ometria sent an unreadable answer: the answer was cut short (5 of 10 bytes)"
        );
        assert!(complete_body(Api::Ometria, &headers, Bytes::from_static(b"0123456789")).is_ok());
        assert!(complete_body(Api::Ometria, &Default::default(), Bytes::new()).is_ok());
    }

    #[test]
    fn retry_after_in_seconds_fractions_and_as_a_date() {
        let mut headers = awc::http::header::HeaderMap::new();
        headers.insert(awc::http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            awc::http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(awc::http::header::RETRY_AFTER, "1.5".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        for unusable in ["soon", "-2", "NaN", "inf"] {
            headers.insert(awc::http::header::RETRY_AFTER, unusable.parse().unwrap());
            assert_eq!(retry_after(&headers), None, "{unusable}");
        }
    }
}
