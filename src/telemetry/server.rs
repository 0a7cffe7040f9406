//! The HTTP endpoint of `IMPORTER_METRICS_ADDR`: `GET /metrics` and
//! `GET /healthz`.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::health::Health;
use super::metrics::Metrics;

pub struct TelemetryServer {
    handle: ServerHandle,
    addr: SocketAddr,
}

impl TelemetryServer {
    /// Serves on `addr` (port 0 = any). Must be called inside an actix system.
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>, health: Arc<Health>) -> std::io::Result<TelemetryServer> {
        let (metrics, health) = (web::Data::from(metrics), web::Data::from(health));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(metrics.clone())
                .app_data(health.clone())
                .route("/metrics", web::get().to(render_metrics))
                .route("/healthz", web::get().to(render_health))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)?;
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(TelemetryServer { handle, addr })
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
