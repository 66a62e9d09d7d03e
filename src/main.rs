//! The `gcrsync` binary: environment and options in, one exit code out (SPEC §8).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;
use clap::Parser;
use gcrsync::app::{self, AppError};
use gcrsync::cli::Cli;
use gcrsync::settings::{self, LogFormat, Settings};

const EXIT_CONFIG: u8 = 2;
const EXIT_FATAL: u8 = 3;

/// Variables that GitHub Actions and CI templates pass empty when unset: empty means unset.
fn is_ours(name: &str) -> bool {
    name.starts_with("GCRSYNC_") || matches!(name, "DOCKER_USERNAME" | "DOCKER_PASSWORD")
}

/// Loads `.env` (never overriding the real environment) and drops empty values. Runs
/// before any thread exists, which is what makes changing the environment sound.
fn prepare_environment() -> Result<(), String> {
    // Only the working directory's .env (dotenv() would also search parent directories).
    match dotenvy::from_path(".env") {
        Ok(_) => {}
        Err(e) if e.not_found() => {}
        Err(e) => return Err(format!(".env: {e}; fix the line or remove the file")),
    }
    let empty: Vec<String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
        .filter(|(k, v)| v.is_empty() && is_ours(k))
        .map(|(k, _)| k)
        .collect();
    for name in empty {
        // SAFETY: called from `main` before the runtime or any other thread starts.
        unsafe { std::env::remove_var(name) };
    }
    Ok(())
}

fn init_logging(settings: &Settings) {
    let default = match settings.verbosity {
        i8::MIN..=-1 => "warn",
        0 => "gcrsync=info,warn",
        1 => "gcrsync=debug,info",
        _ => "trace",
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().init(),
    }
}

/// SIGINT/SIGTERM: stop starting copies; the run finishes, records and exits.
fn watch_signals(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        tracing::warn!(
            "signal received: starting no new copies; finishing and recording the running ones"
        );
        stop.store(true, Ordering::SeqCst);
    });
}

fn write_report(path: &std::path::Path, report: &gcrsync::report::Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("--report {}", path.display()))
}

fn main() -> ExitCode {
    if let Err(e) = prepare_environment() {
        eprintln!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let cli = Cli::try_parse().unwrap_or_else(|e| e.exit());
    let settings = match settings::resolve(cli, |name| {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if settings.actions.is_some() {
        // Before anything else is printed, so no later line can show a secret.
        let secrets = settings.secrets();
        print!(
            "{}",
            gcrsync::actions::mask_commands(secrets.iter().map(String::as_str))
        );
    }
    init_logging(&settings);
    tracing::debug!(
        "gcrsync {} {:?}: debug logs on (-v, or RUNNER_DEBUG=1 from a re-run with debug logging)",
        env!("CARGO_PKG_VERSION"),
        settings.command
    );
    let actions = settings.actions.clone();
    let report_path = settings.report.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FATAL);
        }
    };
    let outcome = runtime.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        watch_signals(stop.clone());
        app::run(settings, stop).await
    });
    match outcome {
        Ok(finished) => {
            eprint!("{}", finished.report.summary());
            if let Some(path) = &report_path
                && let Err(e) = write_report(path, &finished.report)
            {
                eprintln!("error: {e:#}");
                return ExitCode::from(EXIT_FATAL);
            }
            if let Some(actions) = &actions
                && let Err(e) = actions.finish(&finished.report, report_path.as_deref())
            {
                eprintln!("error: writing the GitHub Actions outputs: {e}");
                return ExitCode::from(EXIT_FATAL);
            }
            ExitCode::from(finished.exit_code())
        }
        Err(AppError::Config(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(AppError::Fatal(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FATAL)
        }
    }
}
