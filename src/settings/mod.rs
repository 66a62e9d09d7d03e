//! Settings: the parsed options resolved once into validated, typed values (exit 2 on any
//! bad value, before any network call). The bottom layer: it reads the options and the
//! environment, and depends on nothing in the pipeline (no `actions`, `report`,
//! `metadata`, `oci`, `copy`, `run` or `listing`); `app::connect` turns it into clients.

mod credentials;
mod docker_config;
pub mod file;
pub mod images_from;
pub mod layers;
mod load;
mod outside;
mod resolve;
pub mod serve;
mod show;
#[cfg(test)]
mod tests;
mod transport;

use std::path::PathBuf;
use std::time::Duration;

pub use credentials::{Credentials, GcpKey};
pub use docker_config::{DockerConfig, DockerConfigError, DockerLogin};
pub use layers::{Given, Origin};
pub use load::{Described, Description, LoadError, load, load_serve};
pub use outside::{ActionsEnv, GitHubConfig};
pub use resolve::{parse_duration, resolve};
pub use show::show;
pub use transport::{CaBundle, Insecure, ProxyUrl, Transport, transport};

use crate::cli::Command;
use crate::filter::Filters;
use crate::mapping::NameMapper;
use crate::reference::{Namespace, RegistryHost, RepoPath, Scheme};

/// A bad option value: names the flag and its variable, and says what is expected.
#[derive(Debug, thiserror::Error)]
#[error("--{flag} (GCRSYNC_{}): {message}", flag.to_ascii_uppercase().replace('-', "_"))]
pub struct ConfigError {
    /// The flag, without dashes.
    pub flag: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn bad(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
    }
}

/// Concurrency limits of a run, declared here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Tags copied at once (`--process-limit`).
    pub tags: usize,
    /// Blob transfers at once across all tags; as many as tags, since one transfer keeps
    /// one connection to each side busy.
    pub transfers: usize,
    /// Listing and HEAD requests at once (`--query-limit`).
    pub queries: usize,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The logins a source's registries are reached with, as the options give them (the
/// source's own, from a config file, or the run's flags and variables).
#[derive(Debug, Clone, Default)]
pub struct Logins {
    /// Source credentials given as options.
    pub source: Option<Credentials>,
    /// Target credentials given as options.
    pub target: Option<Credentials>,
    /// A GCP service-account key.
    pub gcp_key: Option<GcpKey>,
    /// The source's own entry in a config file names the key, so it goes to that source's
    /// registry even when it is not Google's (otherwise only to Google's, or to the run's
    /// only source registry).
    pub gcp_key_own: bool,
    /// Logins from docker's config.json.
    pub docker_config: DockerConfig,
}

/// One source of the run with everything that may differ between sources: its target,
/// images, filters, name mapping, budget share and logins. Without a config file every
/// `--source` gets the same ones.
pub struct SourceSettings {
    /// The source namespace.
    pub namespace: Namespace,
    /// `images`: explicit image list.
    pub images: Option<Vec<RepoPath>>,
    /// Its target namespace.
    pub target: Namespace,
    /// Compiled `name-template`.
    pub mapper: NameMapper,
    /// Compiled filters.
    pub filters: Filters,
    /// `platforms`: the platforms of multi-arch images to copy (`None`: all, verbatim).
    pub platforms: Option<crate::platforms::PlatformSet>,
    /// `referrers`: which referrers are copied with each image.
    pub referrers: crate::referrers::Choice,
    /// `referrers-recheck`: how often an unchanged tag's referrers are read again
    /// (`None`: only when the listing shows its referrer tags changed).
    pub referrers_recheck: Option<Duration>,
    /// Its own `process-count` (a source entry of a config file): the most it copies in a
    /// run; `None`: a fair share of the run's budget.
    pub share: Option<usize>,
    /// Its logins.
    pub logins: Logins,
}

/// Everything a run needs, validated.
pub struct Settings {
    /// The command.
    pub command: Command,
    /// The sources, each with its target, filters, mapping, share and logins.
    pub sources: Vec<SourceSettings>,
    /// `--images-from`: exactly these image tags.
    pub images_from: Option<images_from::ImagesFrom>,
    /// Set when running in GitHub Actions.
    pub actions: Option<ActionsEnv>,
    /// The GitHub repository metadata is committed to; `None`: `metadata_dir`.
    pub github: Option<GitHubConfig>,
    /// Local metadata directory.
    pub metadata_dir: PathBuf,
    /// Layout prefix inside the store.
    pub metadata_path: String,
    /// Max tags copied in the run, over every source (`None`: no limit).
    pub budget: Option<usize>,
    /// Concurrency.
    pub limits: Limits,
    /// Stop starting copies after this long.
    pub deadline: Option<Duration>,
    /// Tags per commit.
    pub commit_every: usize,
    /// Connect/idle timeout.
    pub http_timeout: Duration,
    /// Retries per request.
    pub retries: usize,
    /// The config file the run was read from.
    pub config: Option<PathBuf>,
    /// `--proxy`, parsed.
    pub proxy: Option<ProxyUrl>,
    /// Registries reached without TLS verification (`--insecure-registry`).
    pub insecure: Vec<(RegistryHost, Insecure)>,
    /// Schemes written before `--source`/`--target` registries (`http://`, `https://`).
    pub schemes: Vec<(RegistryHost, Scheme)>,
    /// `--ca-cert`, parsed: the certificates trusted besides the system roots.
    pub ca_cert: Option<CaBundle>,
    /// Shard `K-1` of `N`.
    pub shard: (u64, u64),
    /// CHANGELOG time zone.
    pub timezone: jiff::tz::TimeZone,
    /// README template override.
    pub readme_template: Option<PathBuf>,
    /// Image page template override.
    pub image_template: Option<PathBuf>,
    /// CHANGELOG template override.
    pub changelog_template: Option<PathBuf>,
    /// `--prune`: delete from the target the tags deleted upstream.
    pub prune: bool,
    /// `--prune-max`: the most tags one run prunes.
    pub prune_max: usize,
    /// Plan only.
    pub dry_run: bool,
    /// JSON report path.
    pub report: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// -v count minus -q.
    pub verbosity: i8,
    /// `monitor --interval`.
    pub monitor_interval: Duration,
    /// `monitor --count` (0 = forever).
    pub monitor_count: u64,
}

impl Settings {
    /// How `host` is reached: `None` for verified HTTPS.
    pub fn insecure_mode(&self, host: &RegistryHost) -> Option<Insecure> {
        self.insecure
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, mode)| *mode)
    }

    /// How `host` is spoken to (see [`transport`]).
    pub fn transport(&self, host: &RegistryHost) -> Transport {
        let scheme = self
            .schemes
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, s)| *s);
        transport(host, self.insecure_mode(host), scheme)
    }
}

impl Settings {
    /// Every secret value of the run, for masking in CI logs.
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self.github.iter().map(|g| g.token.clone()).collect();
        for logins in self.sources.iter().map(|s| &s.logins) {
            let passwords = [&logins.source, &logins.target].into_iter().flatten();
            secrets.extend(passwords.map(|c| c.password.clone()));
            secrets.extend(logins.gcp_key.iter().flat_map(|k| k.secrets()));
            secrets.extend(logins.docker_config.passwords());
        }
        secrets.extend(proxy_secrets(self.proxy.as_ref()));
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

/// A proxy URL's password, as written and as the URL encodes it (sync's and serve's).
pub(crate) fn proxy_secrets(proxy: Option<&ProxyUrl>) -> Vec<String> {
    match proxy.and_then(|p| p.url().password()) {
        Some(password) => vec![password.to_string(), percent_decoded(password)],
        None => Vec::new(),
    }
}

/// `%XX` escapes decoded (a URL's password as the user wrote it). form_urlencoded is the
/// decoder `url` exposes; its `+` means a space, so a literal `+` is escaped first.
fn percent_decoded(text: &str) -> String {
    let pair = format!("p={}", text.replace('+', "%2B"));
    url::form_urlencoded::parse(pair.as_bytes())
        .next()
        .map_or_else(String::new, |(_, v)| v.into_owned())
}
