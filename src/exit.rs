//! Every way a run can end, and the one table from which its exit code comes (SPEC §8).
//!
//! Errors stay typed from where they happen up to here: [`Failure`] carries the
//! underlying error, and [`Failure::exit`] is the only place that decides a code.

use std::path::PathBuf;

use crate::listing::ListError;
use crate::mapping::MappingError;
use crate::metadata::StoreError;
use crate::metadata::render::RenderError;
use crate::reference::Repository;
use crate::report::Report;
use crate::settings::ConfigError;

/// The exit codes of SPEC §8, ordered by severity (a later failure can only raise one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Everything planned was done (or nothing was to do).
    Success = 0,
    /// Some tags failed (copies, or deletions `--prune` asked for), or a signal stopped
    /// the run.
    Failed = 1,
    /// Configuration or usage error, found before (or instead of) any copy.
    Config = 2,
    /// The run could not go on: credentials refused at a registry root, a namespace that
    /// cannot be listed at all, an unusable metadata store, the report not written.
    Fatal = 3,
}

impl Exit {
    /// The code of a run that got as far as a report.
    pub fn of_report(report: &Report) -> Exit {
        if report.error.is_some() {
            Exit::Fatal
        } else if report.totals.failed > 0
            || report.stopped.as_deref() == Some("signal")
            // `--prune` refused by the target or by `--prune-max`, or a deletion failed.
            || report.prune.as_ref().is_some_and(|p| p.failed())
        {
            Exit::Failed
        } else {
            Exit::Success
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit as u8)
    }
}

/// Why a run could not do its work (or could not finish reporting it).
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The working directory's `.env` does not parse.
    #[error(".env: {0}; fix the line or remove the file")]
    DotEnv(#[source] dotenvy::Error),
    /// An option has a bad value.
    #[error(transparent)]
    Settings(#[from] ConfigError),
    /// `--report` is in a directory that does not exist.
    #[error(
        "--report {}: the directory {} does not exist; create it or choose another path (GCRSYNC_REPORT)",
        path.display(), dir.display()
    )]
    ReportNoDirectory {
        /// The path given.
        path: PathBuf,
        /// Its missing directory.
        dir: PathBuf,
    },
    /// `--report` names a directory.
    #[error("--report {} is a directory; give a file path (GCRSYNC_REPORT)", .0.display())]
    ReportIsDirectory(PathBuf),
    /// A listed name does not map through `--name-template`.
    #[error(transparent)]
    Mapping(#[from] MappingError),
    /// Several source images map to one target repository.
    #[error(
        "--name-template maps several source images to one target repository (checked across every --shard); include {{{{ namespace }}}} or {{{{ registry }}}} in the template:\n  {}",
        .0.iter().map(|(t, s)| format!("{} ← {}", t, s.join(", "))).collect::<Vec<_>>().join("\n  ")
    )]
    Collisions(Vec<(Repository, Vec<String>)>),
    /// A README or CHANGELOG template cannot be used.
    #[error(transparent)]
    Template(#[from] RenderError),
    /// The HTTP clients cannot be built from `--proxy`, `--ca-cert`, ...
    #[error("{0}")]
    HttpSetup(String),
    /// A login cannot be prepared (e.g. the GCP key cannot sign).
    #[error("{0}")]
    Login(String),
    /// A source namespace, or the target, cannot be listed at all.
    #[error(transparent)]
    List(Box<ListError>),
    /// The metadata store is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A configuration file is wrong (every error, each with its line).
    #[error(transparent)]
    ConfigFile(#[from] crate::settings::file::FileErrors),
    /// `generate-docs` failed, or (`--check`) found the docs out of date.
    #[error(transparent)]
    Docs(#[from] crate::docs::DocsError),
    /// The async runtime does not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// The run ended, but `--report` could not be written.
    #[error("the run ended with exit {}, but its report could not be written: {detail}", *.exit as u8)]
    ReportWrite {
        /// The code the run would have had.
        exit: Exit,
        /// Why.
        detail: String,
    },
    /// `gcrsync serve` cannot start: the address is taken, the cache directory unusable.
    #[error("serve: {0}")]
    Serve(String),
    /// The GitHub Actions outputs or summary could not be written.
    #[error("writing the GitHub Actions outputs: {0}")]
    Outputs(String),
}

impl Failure {
    /// The exit-code table: every failure's code is decided here and nowhere else.
    pub fn exit(&self) -> Exit {
        match self {
            Failure::DotEnv(_)
            | Failure::Settings(_)
            | Failure::ReportNoDirectory { .. }
            | Failure::ReportIsDirectory(_)
            | Failure::Mapping(_)
            | Failure::Collisions(_)
            | Failure::Template(_)
            | Failure::HttpSetup(_)
            | Failure::ConfigFile(_)
            | Failure::Docs(_) => Exit::Config,
            Failure::Login(_)
            | Failure::List(_)
            | Failure::Store(_)
            | Failure::Runtime(_)
            | Failure::ReportWrite { .. }
            | Failure::Serve(_)
            | Failure::Outputs(_) => Exit::Fatal,
        }
    }
}

impl From<crate::settings::LoadError> for Failure {
    fn from(e: crate::settings::LoadError) -> Self {
        match e {
            crate::settings::LoadError::Option(e) => Failure::Settings(e),
            crate::settings::LoadError::File(e) => Failure::ConfigFile(e),
        }
    }
}

impl From<ListError> for Failure {
    fn from(e: ListError) -> Self {
        Failure::List(Box::new(e))
    }
}

impl From<crate::listing::SourceError> for Failure {
    fn from(e: crate::listing::SourceError) -> Self {
        match e {
            crate::listing::SourceError::List(e) => e.into(),
            crate::listing::SourceError::Mapping(e) => Failure::Mapping(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_ordered_by_severity() {
        assert!(Exit::Success < Exit::Failed && Exit::Failed < Exit::Config);
        assert!(Exit::Config < Exit::Fatal);
        assert_eq!(Exit::Failed.max(Exit::Fatal), Exit::Fatal);
        let runtime = Failure::Runtime(std::io::Error::other("no threads"));
        assert_eq!(runtime.exit() as u8, 3);
        assert_eq!(Failure::HttpSetup("--proxy".into()).exit() as u8, 2);
    }
}
