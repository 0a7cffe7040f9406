//! The webhook receiver (issue 18): `GET` and `POST` on
//! `/webhooks/mailchimp/{secret}`. An HTTP handler, not an actor: it
//! checks the secret, reads and parses the form, tells the Controller
//! ([`ListChanged`]) and answers at once — it never waits for a sync, so
//! Mailchimp (which gives up after 10 s) always hears back in time.
//!
//! Answers: a wrong or missing secret 404 with no body, as for any path
//! the server does not serve; `GET` (and `HEAD`) 200, Mailchimp's check
//! of the URL when the webhook is created; `POST` 200 for an event taken,
//! 400 with the reason for a body over [`MAX_BODY_BYTES`], an unknown type
//! or a malformed form; 408 for a body not read whole within
//! [`BODY_TIMEOUT`] (the connection is closed: a sender that trickles a
//! body holds a connection for that long at most); other methods 405.
//! Every request with the right secret, and every wrong one, is counted in
//! `webhook_events_total`.

use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use slog::{warn, Logger};

use super::{WebhookError, WebhookEvent, WebhookSecret, MAX_BODY_BYTES};
use crate::actors::messages::ListChanged;
use crate::telemetry::metrics::Metrics;

/// The receiver's path, before the secret.
pub const PATH_PREFIX: &str = "/webhooks/mailchimp/";

/// The `type` label of a request whose event could not be read.
const UNKNOWN_TYPE: &str = "unknown";

/// A body not read whole this long after its headers is refused (408):
/// Mailchimp gives up on a delivery after 10 s, so a slower body is no
/// delivery of its.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handler needs: shared by the server's workers.
pub struct WebhookReceiver {
    secret: WebhookSecret,
    controller: Recipient<ListChanged>,
    metrics: Arc<Metrics>,
    log: Logger,
    body_timeout: Duration,
}

impl WebhookReceiver {
    pub fn new(
        secret: WebhookSecret,
        controller: Recipient<ListChanged>,
        metrics: Arc<Metrics>,
        log: Logger,
    ) -> WebhookReceiver {
        WebhookReceiver {
            secret,
            controller,
            metrics,
            log,
            body_timeout: BODY_TIMEOUT,
        }
    }

    /// The same receiver with another body timeout than [`BODY_TIMEOUT`]
    /// (tests).
    pub fn with_body_timeout(mut self, timeout: Duration) -> WebhookReceiver {
        self.body_timeout = timeout;
        self
    }

    /// Adds the receiver's route to an app (see `telemetry::server`).
    pub fn configure(receiver: web::Data<WebhookReceiver>) -> impl FnOnce(&mut web::ServiceConfig) {
        move |config| {
            config
                .app_data(receiver)
                .service(web::resource(format!("{PATH_PREFIX}{{secret}}")).to(receive));
        }
    }

    fn count(&self, kind: &str, result: &str) {
        self.metrics.webhook_events.with_label_values(&[kind, result]).inc();
    }

    /// Counts, logs and answers a refused body.
    fn refuse(&self, error: WebhookError) -> HttpResponse {
        self.count(UNKNOWN_TYPE, error.result());
        warn!(self.log, "webhooks: refused an event: {error}.");
        HttpResponse::BadRequest()
            .content_type("text/plain; charset=utf-8")
            .body(format!("{error}\n"))
    }
}

async fn receive(request: HttpRequest, payload: web::Payload, receiver: web::Data<WebhookReceiver>) -> HttpResponse {
    let secret = request.match_info().get("secret").unwrap_or_default();
    if !receiver.secret.matches(secret) {
        receiver.count(UNKNOWN_TYPE, "wrong_secret");
        // As any path the server does not serve: nothing tells the path exists.
        return HttpResponse::new(StatusCode::NOT_FOUND);
    }
    match *request.method() {
        Method::GET | Method::HEAD => return HttpResponse::Ok().finish(),
        Method::POST => {}
        _ => {
            return HttpResponse::MethodNotAllowed()
                .insert_header((header::ALLOW, "GET, HEAD, POST"))
                .finish()
        }
    }
    let body = match actix_web::rt::time::timeout(receiver.body_timeout, read_body(&request, payload)).await {
        Ok(Ok(body)) => body,
        Ok(Err(error)) => return receiver.refuse(error),
        Err(_) => {
            receiver.count(UNKNOWN_TYPE, "timeout");
            warn!(
                receiver.log,
                "webhooks: refused an event: its body did not come whole within {} s.",
                receiver.body_timeout.as_secs_f64()
            );
            return HttpResponse::RequestTimeout()
                .insert_header((header::CONNECTION, "close"))
                .content_type("text/plain; charset=utf-8")
                .body(format!(
                    "the body did not come whole within {} s\n",
                    receiver.body_timeout.as_secs_f64()
                ));
        }
    };
    let event = match WebhookEvent::parse(&body) {
        Ok(event) => event,
        Err(error) => return receiver.refuse(error),
    };
    receiver.count(event.kind.name(), "accepted");
    receiver.controller.do_send(ListChanged {
        event,
        received_at: chrono::Utc::now(),
    });
    HttpResponse::Ok().finish()
}

/// The body, refused as soon as it is known to be over the limit (by its
/// `Content-Length`, or by what came).
async fn read_body(request: &HttpRequest, mut payload: web::Payload) -> Result<web::BytesMut, WebhookError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(WebhookError::TooLarge);
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| WebhookError::Malformed(format!("the body could not be read ({e})")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(WebhookError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
