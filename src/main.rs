//! The command line: `go`, `once`, `check`, `demo`, `sandbox`, `bench`,
//! `health`, `history`, `forget`, `plan`, `webhooks`, `version`.

use std::io;
use std::process::ExitCode;

use slog::error;

use ometria_importer::config::{Cli, Command};
use ometria_importer::importer::{self, Signals};
use ometria_importer::sandbox::Sandbox;
use ometria_importer::telemetry::health::http_get;
use ometria_importer::telemetry::log::logger;
use ometria_importer::{bench, check, demo, history, plan, webhook_setup, RunMode};

/// Exit code for a setting or state file that must be fixed first.
const EXIT_FIX_FIRST: u8 = 2;

/// `health`: the answer of the running importer's /healthz, for Docker's
/// HEALTHCHECK (the image has no curl).
fn health(settings: &ometria_importer::config::Settings) -> ExitCode {
    let Some(mut addr) = settings.metrics_addr.and_then(|m| m.0) else {
        eprintln!("health: IMPORTER_METRICS_ADDR is not set, so there is no health endpoint to ask");
        return ExitCode::from(EXIT_FIX_FIRST);
    };
    if addr.ip().is_unspecified() {
        // Listening everywhere: ask it here.
        addr.set_ip(if addr.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    match http_get(&addr.to_string(), "/healthz", std::time::Duration::from_secs(5)) {
        Ok((status, body)) => {
            println!("{}", body.trim());
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!("{{\"status\": \"unreachable\", \"reason\": \"{addr}: {e}\"}}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    let log = logger(cli.settings.log_format, io::stderr());
    let mode = match cli.command {
        Command::Version => {
            println!("ometria-importer {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Check(args) => {
            return match check::run(&cli.settings, args.online, chrono::Utc::now(), &mut io::stdout()) {
                Ok(code) => ExitCode::from(code),
                Err(_) => ExitCode::from(EXIT_FIX_FIRST),
            };
        }
        Command::Demo(args) => {
            let system = actix_rt::System::new();
            return match system.block_on(demo::run(&args, log.clone(), &mut io::stdout())) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    error!(log, "demo: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Sandbox(args) => {
            let system = actix_rt::System::new();
            let served = system.block_on(async {
                let address = std::net::SocketAddr::new(args.bind, args.port);
                let mut sandbox = Sandbox::start(args.sandbox_config(), address, true)?;
                print!("{}", sandbox.describe());
                io::Write::flush(&mut io::stdout())?;
                sandbox.wait().await;
                io::Result::Ok(())
            });
            return match served {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!(log, "sandbox: cannot serve on {}:{}: {e}", args.bind, args.port);
                    ExitCode::from(EXIT_FIX_FIRST)
                }
            };
        }
        Command::Bench(args) => {
            return match bench::run(&args.scenarios, args.repeat, &mut io::stdout()) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    error!(log, "bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Health => return health(&cli.settings),
        Command::History(args) => {
            let shown = history::history(&cli.settings.state_dir, &args, &mut io::stdout(), &mut io::stderr());
            return ExitCode::from(shown.unwrap_or(history::EXIT_NO_LEDGER));
        }
        Command::Forget(args) => {
            let done = history::forget(&cli.settings.state_dir, &args, &mut io::stdout(), &mut io::stderr());
            return ExitCode::from(done.unwrap_or(history::EXIT_NO_LEDGER));
        }
        Command::Plan(args) => {
            return match plan::run(&cli.settings, &args, &mut io::stdout(), &mut io::stderr(), log.clone()) {
                Ok(code) => ExitCode::from(code),
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Webhooks(args) => {
            return match webhook_setup::run(&cli.settings, &args, &mut io::stdout()) {
                Ok(code) => ExitCode::from(code),
                Err(_) => ExitCode::FAILURE,
            };
        }
        Command::Go => RunMode::Go,
        Command::Once => RunMode::Once,
    };
    // Only `go` receives webhooks: the rest never look at their settings.
    let resolved = match mode {
        RunMode::Go => cli.settings.resolve_daemon(),
        RunMode::Once => cli.settings.resolve(),
    };
    let config = match resolved {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                error!(log, "controller: {e}");
            }
            return ExitCode::from(EXIT_FIX_FIRST);
        }
    };
    let system = actix_rt::System::new();
    match system.block_on(importer::run(&config, mode, Signals::Handle, log.clone())) {
        Ok(summary) if mode == RunMode::Once && !summary.all_recorded() => {
            if summary.invalid > 0 {
                let (entries, were, they_are) = match summary.invalid {
                    1 => ("entry", "was", "it is"),
                    _ => ("entries", "were", "they are"),
                };
                error!(log, "controller: {} {entries} of the state file {were} skipped as invalid (the WARNING lines above say what to fix): `once` exits 1 until {they_are} fixed.",
                    summary.invalid);
            }
            ExitCode::FAILURE
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            error!(log, "controller: {e}");
            if e.fix_first() {
                ExitCode::from(EXIT_FIX_FIRST)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
