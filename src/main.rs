//! The `gcrsync` binary: environment and options in, one exit code out (SPEC §8).

use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches};
use gcrsync::app;
use gcrsync::cli::{Cli, Command, ConfigAction};
use gcrsync::exit::{Exit, Failure};
use gcrsync::report::Report;
use gcrsync::run::StopFlag;
use gcrsync::settings::{self, Given, LogFormat};

/// Variables that GitHub Actions and CI templates pass empty when unset: empty means unset.
fn is_ours(name: &str) -> bool {
    name.starts_with("GCRSYNC_") || matches!(name, "DOCKER_USERNAME" | "DOCKER_PASSWORD")
}

/// Loads `.env` (never overriding the real environment) and drops empty values; returns
/// the names `.env` set (for `config show`). Runs before any thread exists, which is what
/// makes changing the environment sound.
fn prepare_environment() -> Result<HashSet<String>, Failure> {
    let mut from_dotenv = HashSet::new();
    // Only the working directory's .env (dotenv() would also search parent directories).
    match dotenvy::from_path_iter(".env") {
        Ok(items) => {
            for item in items {
                let (name, value) = item.map_err(Failure::DotEnv)?;
                if std::env::var_os(&name).is_none() {
                    // SAFETY: called from `main` before the runtime or any other thread starts.
                    unsafe { std::env::set_var(&name, value) };
                    from_dotenv.insert(name);
                }
            }
        }
        Err(e) if e.not_found() => {}
        Err(e) => return Err(Failure::DotEnv(e)),
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
    Ok(from_dotenv)
}

fn init_logging(verbosity: i8, log_format: LogFormat) {
    let default = match verbosity {
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
    match log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.without_time().init(),
    }
}

/// SIGINT/SIGTERM (Actions sends SIGINT on cancel, SIGTERM 7.5 s later, then kills):
/// the first stops the run, which commits what finished and reports; a second exits at once.
fn watch_signals(stop: StopFlag) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut int =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok();
        for round in 0.. {
            let next = async {
                match (term.as_mut(), int.as_mut()) {
                    (Some(t), Some(i)) => {
                        tokio::select! {
                            _ = t.recv() => {}
                            _ = i.recv() => {}
                        }
                    }
                    _ => std::future::pending().await,
                }
            };
            next.await;
            if round == 0 {
                tracing::warn!(
                    "signal received: cancelling the running copies, committing what finished (a second signal exits at once)"
                );
                stop.cancel();
            } else {
                eprintln!("error: second signal: exiting now, without committing or reporting");
                std::process::exit(Exit::Failed as i32);
            }
        }
    });
}

fn write_report(path: &std::path::Path, report: &gcrsync::report::Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("--report {}", path.display()))
}

/// `--report` must be writable: a missing directory is found before anything is copied.
fn check_report_path(path: &std::path::Path) -> Result<(), Failure> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    match parent {
        Some(dir) if !dir.is_dir() => Err(Failure::ReportNoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }),
        _ if path.is_dir() => Err(Failure::ReportIsDirectory(path.to_path_buf())),
        _ => Ok(()),
    }
}

/// Every ending, success or not, writes the report, the summary and the Actions outputs.
fn finish(
    report: &Report,
    exit: Exit,
    report_path: Option<&std::path::Path>,
    actions: Option<&gcrsync::actions::ActionsEnv>,
) -> ExitCode {
    let mut exit = exit;
    if let Some(path) = report_path
        && let Err(e) = write_report(path, report)
    {
        exit = exit.max(fail(Failure::ReportWrite {
            exit,
            detail: format!("{e:#}"),
        }));
    }
    if let Some(actions) = actions
        && let Err(e) = actions.finish(report, report_path)
    {
        exit = exit.max(fail(Failure::Outputs(e.to_string())));
    }
    exit.into()
}

/// Prints `failure` and gives its code.
fn fail(failure: Failure) -> Exit {
    eprintln!("error: {failure}");
    failure.exit()
}

/// `gcrsync serve`: runs until SIGTERM/SIGINT; exit 0 after draining.
fn serve(cli: Cli, given: &Given) -> ExitCode {
    let (settings, note) = match settings::load_serve(cli, given, env) {
        Ok(loaded) => loaded,
        Err(e) => return fail(e.into()).into(),
    };
    if env("GITHUB_ACTIONS").as_deref() == Some("true") {
        // Before anything else is printed, as for sync.
        let secrets = settings.secrets();
        print!(
            "{}",
            gcrsync::actions::mask_commands(secrets.iter().map(String::as_str))
        );
    }
    init_logging(settings.verbosity, settings.log_format);
    if let Some(note) = note {
        tracing::warn!("{note}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(Failure::Runtime(e)).into(),
    };
    match runtime.block_on(gcrsync::serve::run(settings)) {
        Ok(()) => Exit::Success.into(),
        Err(e) => fail(e).into(),
    }
}

/// A variable, empty meaning unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `config check FILE` and `config show`: settings only, no network.
fn config_command(action: &ConfigAction, cli: Cli, given: &Given) -> ExitCode {
    match action {
        ConfigAction::Check { file } => {
            let mut cli = cli;
            cli.options.config = Some(file.clone());
            match settings::load(cli, given, env, true) {
                Ok((settings, _)) => {
                    eprintln!(
                        "{}: valid ({} sources)",
                        file.display(),
                        settings.sources.len()
                    );
                    Exit::Success.into()
                }
                Err(e) => fail(e.into()).into(),
            }
        }
        ConfigAction::Show => match settings::load(cli, given, env, true) {
            Ok((settings, description)) => {
                print!("{}", settings::show(&settings, &description, env));
                Exit::Success.into()
            }
            Err(e) => fail(e.into()).into(),
        },
    }
}

fn main() -> ExitCode {
    let dotenv = match prepare_environment() {
        Ok(names) => names,
        Err(e) => return fail(e).into(),
    };
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = Given::new(&cli, &matches, &dotenv);
    if let Some(Command::Config { action }) = &cli.command {
        let action = action.clone();
        return config_command(&action, cli, &given);
    }
    if let Some(Command::GenerateDocs { check, root }) = &cli.command {
        return match gcrsync::docs::generate(root, *check) {
            Ok(changed) => {
                for file in changed {
                    eprintln!("updated {file}");
                }
                Exit::Success.into()
            }
            Err(e) => fail(e.into()).into(),
        };
    }
    if let Some(Command::Serve(_)) = &cli.command {
        return serve(cli, &given);
    }
    let settings = match settings::load(cli, &given, env, false) {
        Ok((s, _)) => s,
        Err(e) => return fail(e.into()).into(),
    };
    if settings.actions.is_some() {
        // Before anything else is printed, so no later line can show a secret.
        let secrets = settings.secrets();
        print!(
            "{}",
            gcrsync::actions::mask_commands(secrets.iter().map(String::as_str))
        );
    }
    if let Some(path) = &settings.report
        && let Err(e) = check_report_path(path)
    {
        return fail(e).into();
    }
    init_logging(settings.verbosity, settings.log_format);
    tracing::debug!(
        "gcrsync {} {:?}: debug logs on (-v, or RUNNER_DEBUG=1 from a re-run with debug logging)",
        env!("CARGO_PKG_VERSION"),
        settings.command
    );
    let actions = settings.actions.clone();
    let report_path = settings.report.clone();
    let blank = app::blank_report(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(Failure::Runtime(e)).into(),
    };
    let outcome = runtime.block_on(async {
        let stop = StopFlag::new();
        watch_signals(stop.clone());
        app::run(settings, stop).await
    });
    // In-flight work was cancelled; do not wait for blocking tasks to wind down.
    runtime.shutdown_background();
    let (report, exit) = match outcome {
        Ok(finished) => {
            let exit = finished.exit();
            eprint!("{}", finished.report.summary());
            (finished.report, exit)
        }
        Err(e) => {
            let mut report = blank;
            report.error = Some(e.to_string());
            (report, fail(e))
        }
    };
    finish(&report, exit, report_path.as_deref(), actions.as_ref())
}
