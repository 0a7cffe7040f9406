//! One run of the importer: read the state file, start the actors, wire
//! the stop signals, and wait until the Controller says it is done.

use std::sync::Arc;

use actix::prelude::*;
use slog::{info, warn, Logger};
use tokio::sync::oneshot;

use crate::actors::controller::{Controller, ControllerSettings, RunMode, RunSummary, QUIT_FILE_NAME};
use crate::actors::ledger::Ledger;
use crate::actors::list_sync::SyncDeps;
use crate::actors::messages::{Drain, Shutdown, FLUSH_TIMEOUT};
use crate::actors::state_keeper::StateKeeper;
use crate::api::http_client;
use crate::config::Config;
use crate::limits::Limits;
use crate::mailchimp::MailchimpClient;
use crate::ometria::OmetriaClient;
use crate::rejected::RejectedLog;
use crate::state::{StateFile, StateFileError};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::server::{Endpoint, Services};
use crate::webhook::receiver::{WebhookReceiver, PATH_PREFIX};

/// Whether the run listens to SIGINT and SIGTERM itself (the binary does;
/// tests running in-process do not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signals {
    Handle,
    Ignore,
}

/// Why a run could not start, or ended without its summary.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    State(#[from] StateFileError),
    #[error("cannot serve metrics on IMPORTER_METRICS_ADDR={addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot receive webhooks on IMPORTER_WEBHOOK_ADDR={addr}: {source}")]
    Webhooks {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// Not a start error: the Controller went away without saying how the
    /// run ended, so nothing may be taken as having succeeded.
    #[error(
        "the controller stopped without finishing its run (an internal error); syncs still running were \
         abandoned and their cursors left alone"
    )]
    ControllerLost,
}

impl RunError {
    /// Whether the operator must fix something before a run can start.
    pub fn fix_first(&self) -> bool {
        !matches!(self, RunError::ControllerLost)
    }
}

/// Runs the importer until it stops. Must be called inside an actix
/// system. Fails when it cannot start — a state file it cannot read (or
/// whose folder it cannot write), a metrics or webhook address it cannot
/// listen on — or when the Controller ends without a summary. Webhooks are
/// received in `go` only: `once` ends before a debounce would.
pub async fn run(config: &Config, mode: RunMode, signals: Signals, log: Logger) -> Result<RunSummary, RunError> {
    let file = StateFile::in_dir(&config.state_dir);
    let document = file.load()?;
    file.check_writable()?;
    let lock = file.lock()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(config.tick));
    // The Controller's address before it starts, for the webhook receiver.
    let controller_context = Context::<Controller>::new();
    let receiver = match (&config.webhooks, mode) {
        (Some(webhooks), RunMode::Go) => Some((
            webhooks.addr,
            Arc::new(WebhookReceiver::new(
                webhooks.secret.clone(),
                controller_context.address().recipient(),
                metrics.clone(),
                log.clone(),
            )),
        )),
        _ => None,
    };
    let endpoints = start_endpoints(config.metrics_addr, (metrics.clone(), health.clone()), receiver, &log).await?;
    let stale = file.remove_stale_temp_files();
    if stale > 0 {
        info!(
            log,
            "controller: removed {stale} temporary file(s) an interrupted run left beside the state file."
        );
    }
    // The StateKeeper's file I/O (with fsync) gets a thread of its own, so
    // it never stalls the HTTP work on this one.
    let state_thread = Arbiter::new();
    let (keeper_log, keeper_metrics, write_window) = (log.clone(), metrics.clone(), config.state_write_window);
    let state_keeper = StateKeeper::start_in_arbiter(&state_thread.handle(), move |_| {
        StateKeeper::new(file, document, keeper_metrics, keeper_log).with_write_window(write_window)
    });
    let ledger = Ledger::start_on_own_thread(config.state_dir.clone(), chrono::Utc::now().timestamp(), log.clone());
    let deps = sync_deps(config, metrics, health, state_keeper, ledger.clone(), log.clone());
    let settings = ControllerSettings {
        mode,
        tick: config.tick,
        refresh: config.refresh,
        max_concurrent_lists: config.max_concurrent_lists,
        grace: config.grace,
        quit_file: config.state_dir.join(QUIT_FILE_NAME),
        max_delete_fraction: config.max_delete_fraction,
        webhook_debounce: config.webhook_debounce,
    };
    let (done, finished) = oneshot::channel();
    let controller = controller_context.run(Controller::new(settings, deps, done));
    if signals == Signals::Handle {
        forward_signals(controller.recipient(), log);
    }
    let summary = finished.await.map_err(|_| RunError::ControllerLost);
    // Every sync's last ledger messages (its history row) are handled
    // before the run returns and the process may exit.
    let _ = actix_rt::time::timeout(FLUSH_TIMEOUT, ledger.send(Drain)).await;
    state_thread.stop();
    drop(lock);
    for endpoint in endpoints {
        endpoint.stop().await;
    }
    summary
}

/// Starts the metrics endpoint and the webhook receiver: one server if
/// both have one address (not port 0), else one each. Logs where each
/// listens (never the secret).
async fn start_endpoints(
    metrics_addr: Option<std::net::SocketAddr>,
    telemetry: (Arc<Metrics>, Arc<Health>),
    webhooks: Option<(std::net::SocketAddr, Arc<WebhookReceiver>)>,
    log: &Logger,
) -> Result<Vec<Endpoint>, RunError> {
    let shared = match (metrics_addr, &webhooks) {
        (Some(m), Some((w, _))) => m == *w && m.port() != 0,
        _ => false,
    };
    let mut endpoints = vec![];
    if let Some(addr) = metrics_addr {
        let services = Services {
            telemetry: Some(telemetry),
            webhooks: webhooks.as_ref().filter(|_| shared).map(|(_, r)| r.clone()),
        };
        let endpoint = Endpoint::start(addr, services).map_err(|source| RunError::Metrics { addr, source })?;
        info!(
            log,
            "controller: serving /metrics and /healthz on http://{}.",
            endpoint.addr()
        );
        if shared {
            info!(
                log,
                "controller: receiving Mailchimp webhooks on http://{}{PATH_PREFIX}<IMPORTER_WEBHOOK_SECRET> too.",
                endpoint.addr()
            );
        }
        endpoints.push(endpoint);
    }
    if let Some((addr, receiver)) = webhooks.filter(|_| !shared) {
        let services = Services {
            telemetry: None,
            webhooks: Some(receiver),
        };
        let endpoint = match Endpoint::start(addr, services) {
            Ok(endpoint) => endpoint,
            Err(source) => {
                for endpoint in endpoints {
                    endpoint.stop().await;
                }
                return Err(RunError::Webhooks { addr, source });
            }
        };
        info!(
            log,
            "controller: receiving Mailchimp webhooks on http://{}{PATH_PREFIX}<IMPORTER_WEBHOOK_SECRET>.",
            endpoint.addr()
        );
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// What every sync of a run needs (`go`, `once`, `plan`): both clients
/// on one HTTP client, the global limits (Ometria's backlog reported to
/// its pacer), and the actors given.
pub fn sync_deps(
    config: &Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    state_keeper: Addr<StateKeeper>,
    ledger: Addr<Ledger>,
    log: Logger,
) -> SyncDeps {
    let http = http_client(config.http_timeout);
    let limits = Limits::new(
        config.mailchimp_max_connections,
        config.ometria_max_requests_per_second,
        &log,
    );
    SyncDeps {
        mailchimp: MailchimpClient::new(
            http.clone(),
            &config.mailchimp_base_url,
            config.mailchimp_key.clone(),
            config.http_timeout,
            metrics.clone(),
        ),
        ometria: OmetriaClient::new(
            http,
            &config.ometria_base_url,
            config.ometria_key.clone(),
            config.ometria_api,
            config.http_timeout,
            metrics.clone(),
        )
        .reporting_backlog_to(limits.ometria.clone()),
        limits,
        retry: config.retry,
        progress_interval: config.progress_interval,
        rejected_log: RejectedLog::in_state_dir(&config.state_dir),
        overlap: config.overlap,
        state_keeper,
        ledger,
        metrics,
        health,
        log,
    }
}

/// SIGINT and SIGTERM ask the Controller to stop; a second one asks it
/// not to wait for running syncs.
fn forward_signals(controller: Recipient<Shutdown>, log: Logger) {
    use actix_rt::signal::unix::{signal, SignalKind};
    use std::cell::Cell;
    use std::rc::Rc;

    let received = Rc::new(Cell::new(0u32));
    for (kind, name) in [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
    ] {
        let mut stream = match signal(kind) {
            Ok(s) => s,
            Err(e) => {
                warn!(log, "controller: cannot listen to {name}: {e}");
                continue;
            }
        };
        let (controller, received) = (controller.clone(), received.clone());
        actix_rt::spawn(async move {
            while stream.recv().await.is_some() {
                received.set(received.get() + 1);
                let immediate = received.get() > 1;
                controller.do_send(Shutdown {
                    reason: format!("{name} received"),
                    immediate,
                });
            }
        });
    }
}
