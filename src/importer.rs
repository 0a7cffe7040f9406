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
use crate::telemetry::server::TelemetryServer;

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
/// whose folder it cannot write), a metrics address it cannot listen on —
/// or when the Controller ends without a summary.
pub async fn run(config: &Config, mode: RunMode, signals: Signals, log: Logger) -> Result<RunSummary, RunError> {
    let file = StateFile::in_dir(&config.state_dir);
    let document = file.load()?;
    file.check_writable()?;
    let lock = file.lock()?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(config.tick));
    let telemetry = match config.metrics_addr {
        Some(addr) => Some(
            TelemetryServer::start(addr, metrics.clone(), health.clone())
                .map_err(|source| RunError::Metrics { addr, source })?,
        ),
        None => None,
    };
    if let Some(server) = &telemetry {
        info!(
            log,
            "controller: serving /metrics and /healthz on http://{}.",
            server.addr()
        );
    }
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
    let (keeper_log, keeper_metrics) = (log.clone(), metrics.clone());
    let state_keeper = StateKeeper::start_in_arbiter(&state_thread.handle(), move |_| {
        StateKeeper::new(file, document, keeper_metrics, keeper_log)
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
    };
    let (done, finished) = oneshot::channel();
    let controller = Controller::new(settings, deps, done).start();
    if signals == Signals::Handle {
        forward_signals(controller.recipient(), log);
    }
    let summary = finished.await.map_err(|_| RunError::ControllerLost);
    // Every sync's last ledger messages (its history row) are handled
    // before the run returns and the process may exit.
    let _ = actix_rt::time::timeout(FLUSH_TIMEOUT, ledger.send(Drain)).await;
    state_thread.stop();
    drop(lock);
    if let Some(server) = telemetry {
        server.stop().await;
    }
    summary
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
