//! The daemon's HTTP endpoints: `GET /metrics` and `GET /healthz` on
//! `IMPORTER_METRICS_ADDR`, and the webhook receiver on
//! `IMPORTER_WEBHOOK_ADDR`. Two addresses are two servers; one address
//! given to both (port 0 excepted: each then gets a port of its own)
//! is one server serving all three paths, so a deployment may expose a
//! single port.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::health::Health;
use super::metrics::Metrics;
use crate::webhook::receiver::WebhookReceiver;

/// Connections one address serves at once; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 512;

/// What one address serves.
#[derive(Clone, Default)]
pub struct Services {
    /// `/metrics` and `/healthz`.
    pub telemetry: Option<(Arc<Metrics>, Arc<Health>)>,
    /// `/webhooks/mailchimp/{secret}`.
    pub webhooks: Option<Arc<WebhookReceiver>>,
}

pub struct Endpoint {
    handle: ServerHandle,
    addr: SocketAddr,
}

impl Endpoint {
    /// Serves `services` on `addr` (port 0 = any). Must be called inside
    /// an actix system.
    pub fn start(addr: SocketAddr, services: Services) -> std::io::Result<Endpoint> {
        let telemetry = services
            .telemetry
            .map(|(metrics, health)| (web::Data::from(metrics), web::Data::from(health)));
        let webhooks = services.webhooks.map(web::Data::from);
        let server = HttpServer::new(move || {
            let mut app = App::new();
            if let Some((metrics, health)) = &telemetry {
                app = app
                    .app_data(metrics.clone())
                    .app_data(health.clone())
                    .route("/metrics", web::get().to(render_metrics))
                    .route("/healthz", web::get().to(render_health));
            }
            if let Some(receiver) = &webhooks {
                app = app.configure(WebhookReceiver::configure(receiver.clone()));
            }
            app
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        // Connections open at once, at most: a sender holding many open
        // (a chunked body left hanging stays open after its 408) takes
        // these, never the descriptors the syncs need.
        .max_connections(MAX_CONNECTIONS)
        .bind(addr)?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(Endpoint { handle, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

async fn render_metrics(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(metrics.render())
}

async fn render_health(health: web::Data<Health>) -> HttpResponse {
    let (status, body) = health.report(chrono::Utc::now().timestamp());
    let code =
        actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::SERVICE_UNAVAILABLE);
    HttpResponse::build(code).json(body)
}
