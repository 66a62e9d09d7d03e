//! `resolve`: every option, its variable and its fallbacks, checked and turned into
//! [`Settings`].

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::images_from::ImagesFrom;
use super::transport::{CaBundle, ProxyUrl, insecure_registry, note_scheme};
use super::{
    ActionsEnv, ConfigError, Credentials, DockerConfig, GcpKey, GitHubConfig, Insecure, Limits,
    LogFormat, Logins, Settings, SourceSettings, bad,
};
use crate::cli::{Cli, Command, Options};
use crate::filter::Filters;
use crate::mapping::NameMapper;
use crate::reference::{Namespace, RegistryHost, RepoPath, Scheme};

/// GitHub Actions' files and links, when `GITHUB_ACTIONS=true`.
fn actions_env(
    env: &impl Fn(&str) -> Option<String>,
    github: Option<&GitHubConfig>,
) -> Option<ActionsEnv> {
    if env("GITHUB_ACTIONS").as_deref() != Some("true") {
        return None;
    }
    let server = env("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    Some(ActionsEnv {
        output: env("GITHUB_OUTPUT").map(PathBuf::from),
        summary: env("GITHUB_STEP_SUMMARY").map(PathBuf::from),
        repo_url: github.map(|g| format!("{}/{}", server.trim_end_matches('/'), g.repo)),
    })
}

/// `--gcp-credentials` (JSON text or a path), else `GOOGLE_APPLICATION_CREDENTIALS` (a path).
pub(super) fn gcp_key(
    option: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<GcpKey>, ConfigError> {
    let given = match (option, env("GOOGLE_APPLICATION_CREDENTIALS")) {
        (Some(text), _) => text.to_string(),
        (None, Some(path)) => path,
        (None, None) => return Ok(None),
    };
    let json = if given.trim_start().starts_with('{') {
        given
    } else {
        let path = given.trim();
        std::fs::read_to_string(path).map_err(|e| {
            bad(
                "gcp-credentials",
                format!("cannot read the key file {path}: {e}"),
            )
        })?
    };
    GcpKey::parse(&json)
        .map(Some)
        .map_err(|why| bad("gcp-credentials", why))
}

/// Parses `45m`, `1h30m`, `30s`, or a number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let parsed: jiff::SignedDuration = text.parse().ok()?;
    Duration::try_from(parsed).ok()
}

pub(super) fn duration(flag: &'static str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration(text).ok_or_else(|| {
        bad(
            flag,
            format!("{text:?} is not a duration; write e.g. 30s, 45m or 1h30m"),
        )
    })
}

pub(super) fn positive(flag: &'static str, value: i64, max: i64) -> Result<usize, ConfigError> {
    if value < 1 || value > max {
        return Err(bad(
            flag,
            format!("{value} is out of range; give a number from 1 to {max}"),
        ));
    }
    Ok(value as usize)
}

fn regex(flag: &'static str, pattern: &Option<String>) -> Result<Option<Regex>, ConfigError> {
    pattern
        .as_deref()
        .map(|p| Regex::new(p).map_err(|e| bad(flag, format!("invalid regex: {e}"))))
        .transpose()
}

pub(super) fn credentials(
    flag: &'static str,
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<Credentials>, ConfigError> {
    match (user, password) {
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (None, None) => Ok(None),
        _ => Err(bad(
            flag,
            "give both the user name and the password, or neither",
        )),
    }
}

fn shard(text: &str) -> Result<(u64, u64), ConfigError> {
    let parsed = text
        .split_once('/')
        .and_then(|(k, n)| Some((k.trim().parse::<u64>().ok()?, n.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((k, n)) if n >= 1 && (1..=n).contains(&k) => Ok((k - 1, n)),
        _ => Err(bad(
            "shard",
            format!("{text:?} is not K/N with 1 <= K <= N, e.g. 2/4"),
        )),
    }
}

/// `NAME <EMAIL>`.
fn author(text: &str) -> Result<(String, String), ConfigError> {
    let parsed = text
        .trim()
        .strip_suffix('>')
        .and_then(|t| t.split_once('<'));
    match parsed {
        Some((name, email)) if !name.trim().is_empty() && email.contains('@') => {
            Ok((name.trim().into(), email.trim().into()))
        }
        _ => Err(bad(
            "commit-author",
            format!("{text:?} is not NAME <EMAIL>"),
        )),
    }
}

/// The GitHub store: `--github-repo`, or `GITHUB_REPOSITORY` when a token is available
/// (as in GitHub Actions); otherwise the local directory.
fn github(
    o: &crate::cli::Options,
    env: &impl Fn(&str) -> Option<String>,
    deadline: Option<Duration>,
) -> Result<Option<GitHubConfig>, ConfigError> {
    let token = o.github_token.clone().or_else(|| env("GITHUB_TOKEN"));
    let repo = match (&o.github_repo, &token) {
        (Some(repo), _) => repo.clone(),
        (None, Some(_)) => match env("GITHUB_REPOSITORY") {
            Some(repo) => repo,
            None => return Ok(None),
        },
        (None, None) => return Ok(None),
    };
    let valid = repo.split_once('/').is_some_and(|(o, n)| {
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        ok(o) && ok(n)
    });
    if !valid {
        return Err(bad("github-repo", format!("{repo:?} is not OWNER/NAME")));
    }
    let token = token.ok_or_else(|| {
        bad(
            "github-token",
            format!(
                "no token for {repo}; set GITHUB_TOKEN or --github-token (needs contents: write)"
            ),
        )
    })?;
    let api_url = o
        .github_api_url
        .clone()
        .or_else(|| env("GITHUB_API_URL"))
        .unwrap_or_else(|| "https://api.github.com".into());
    if !(api_url.starts_with("https://") || api_url.starts_with("http://")) {
        return Err(bad(
            "github-api-url",
            format!("{api_url:?} is not an http(s) URL"),
        ));
    }
    let (mut author_name, mut author_email) = author(&o.commit_author)?;
    author_name = o.githubuser.clone().unwrap_or(author_name);
    author_email = o.githubemail.clone().unwrap_or(author_email);
    Ok(Some(GitHubConfig {
        api_url: api_url.trim_end_matches('/').to_string(),
        repo,
        token,
        branch: o.github_branch.clone(),
        create_branch: o.github_create_branch,
        author_name,
        author_email,
        // --retries governs GitHub calls too; rate-limit waits end within --deadline.
        retries: o.retries.clamp(0, 20) as usize,
        deadline,
    }))
}

/// Resolves `cli` (no config file); `env` looks up the fallback variables
/// (`DOCKER_USERNAME`, ...). Every `--source` gets the same target, filters and logins.
pub fn resolve(cli: Cli, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let mut schemes = Vec::new();
    let sources = sources(&cli.options, &env, &mut schemes)?;
    if sources.is_empty() {
        return Err(bad(
            "source",
            "no source given; e.g. --source gcr.io/google-containers",
        ));
    }
    run(cli, &env, sources, schemes)
}

/// `--insecure-registry`, parsed.
fn insecure(o: &Options) -> Result<Vec<(RegistryHost, Insecure)>, ConfigError> {
    o.insecure_registry
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| insecure_registry(h.trim()))
        .collect()
}

/// The logins `o` gives: the sides' options (and `DOCKER_*` for the target), the GCP key,
/// docker's config.json.
fn logins(o: &Options, env: &impl Fn(&str) -> Option<String>) -> Result<Logins, ConfigError> {
    Ok(Logins {
        source: credentials(
            "source-username",
            o.source_username.clone(),
            o.source_password.clone(),
        )?,
        target: credentials(
            "target-username",
            o.target_username.clone().or_else(|| env("DOCKER_USERNAME")),
            o.target_password.clone().or_else(|| env("DOCKER_PASSWORD")),
        )?,
        gcp_key: gcp_key(o.gcp_credentials.as_deref(), env)?,
        gcp_key_own: false,
        docker_config: docker_config(o, env)?,
    })
}

/// docker's config.json: `--docker-config`, `DOCKER_CONFIG`, else `~/.docker` (absent: none).
pub(super) fn docker_config(
    o: &Options,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<DockerConfig, ConfigError> {
    let dir = o
        .docker_config
        .clone()
        .or_else(|| env("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".docker")));
    match dir {
        Some(dir) => DockerConfig::load(&dir).map_err(|e| bad("docker-config", e.to_string())),
        None => Ok(DockerConfig::default()),
    }
}

/// `--proxy` and `--ca-cert`, parsed: the upstream network of a run and of `serve`.
pub(super) fn network(o: &Options) -> Result<(Option<ProxyUrl>, Option<CaBundle>), ConfigError> {
    let proxy = o
        .proxy
        .as_deref()
        .map(|p| ProxyUrl::parse(p).map_err(|why| bad("proxy", why)))
        .transpose()?;
    let ca_cert = o
        .ca_cert
        .as_ref()
        .map(|p| {
            let pem = std::fs::read(p)
                .map_err(|e| bad("ca-cert", format!("cannot read {}: {e}", p.display())))?;
            CaBundle::from_pem(&pem)
                .map_err(|why| bad("ca-cert", format!("{}: {why}", p.display())))
        })
        .transpose()?;
    Ok((proxy, ca_cert))
}

/// The sources `o` names (`--source`, seed `--namespace`), each with the target, images,
/// filters, mapping and logins of `o`; the schemes written before them go to `schemes`.
pub(super) fn sources(
    o: &Options,
    env: &impl Fn(&str) -> Option<String>,
    schemes: &mut Vec<(RegistryHost, Scheme)>,
) -> Result<Vec<SourceSettings>, ConfigError> {
    let insecure = insecure(o)?;
    let mut namespaces = Vec::new();
    let seed_sources = o.namespace.iter().map(|ns| format!("gcr.io/{}", ns.trim()));
    for text in o
        .source
        .iter()
        .flat_map(|s| s.lines())
        .map(str::to_string)
        .chain(seed_sources)
    {
        if text.trim().is_empty() {
            continue;
        }
        let (ns, scheme) =
            Namespace::parse_with_scheme(&text).map_err(|e| bad("source", format!("{e}")))?;
        note_scheme(schemes, &insecure, "source", &ns, scheme)?;
        if !namespaces.contains(&ns) {
            namespaces.push(ns);
        }
    }
    if namespaces.is_empty() {
        return Ok(Vec::new());
    }
    let target_text = o
        .target
        .clone()
        .ok_or_else(|| bad("target", "no target given; e.g. --target docker.io/myuser"))?;
    let (target, scheme) =
        Namespace::parse_with_scheme(&target_text).map_err(|e| bad("target", format!("{e}")))?;
    note_scheme(schemes, &insecure, "target", &target, scheme)?;
    if namespaces.contains(&target) {
        return Err(bad(
            "target",
            format!("{target} is also a source; mirror into another namespace"),
        ));
    }
    let images = if o.images.is_empty() {
        None
    } else {
        let parsed: Result<Vec<RepoPath>, _> = o.images.iter().map(|i| i.trim().parse()).collect();
        Some(parsed.map_err(|e| bad("images", format!("{e}")))?)
    };
    let listed = images_from_text(o)?;
    let legacy = match o.filter_preset.as_deref() {
        None => false,
        Some("legacy") => true,
        Some(other) => {
            return Err(bad(
                "filter-preset",
                format!("unknown preset {other:?}; the only preset is `legacy`"),
            ));
        }
    };
    let filters = Filters {
        include_images: regex("include-images", &o.include_images)?,
        exclude_images: regex("exclude-images", &o.exclude_images)?,
        include_tags: regex("include-tags", &o.include_tags)?,
        exclude_tags: regex("exclude-tags", &o.exclude_tags)?,
        legacy,
        latest: o
            .latest
            .map(|n| positive("latest", n, 100_000))
            .transpose()?,
    };
    let logins = logins(o, env)?;
    let platforms: Option<crate::platforms::PlatformSet> = o
        .platforms
        .as_deref()
        .map(|p| p.parse().map_err(|e: String| bad("platforms", e)))
        .transpose()?;
    let referrers: crate::referrers::Choice = o
        .referrers
        .parse()
        .map_err(|e: String| bad("referrers", e))?;
    let referrers_recheck = match o.referrers_recheck.trim() {
        "off" | "never" => None,
        text => Some(duration("referrers-recheck", text)?).filter(|d| !d.is_zero()),
    };
    namespaces
        .into_iter()
        .map(|namespace| {
            let mut images = images.clone();
            let mut filters = filters.clone();
            if let Some((path, text)) = &listed {
                // Listed by name (no catalog walk), and only tags of these names are HEADed;
                // each source takes only the lines under it.
                let listed = super::images_from::parse_for(text, &namespace)
                    .map_err(|e| bad("images-from", format!("{}: {e}", path.display())))?;
                let all = images.get_or_insert_with(Vec::new);
                for image in listed.images(&namespace) {
                    if !all.contains(&image) {
                        all.push(image);
                    }
                }
                if filters.include_tags.is_none() {
                    filters.include_tags =
                        regex("include-tags", &Some(listed.tags_regex(&namespace)))?;
                }
            }
            Ok(SourceSettings {
                namespace,
                images,
                target: target.clone(),
                mapper: NameMapper::new(&o.name_template, &o.flatten_separator)
                    .map_err(|e| bad("name-template", e.to_string()))?,
                filters,
                platforms: platforms.clone(),
                referrers: referrers.clone(),
                referrers_recheck,
                share: None,
                logins: logins.clone(),
            })
        })
        .collect()
}

/// `--images-from FILE`: its path and text.
fn images_from_text(o: &Options) -> Result<Option<(&std::path::Path, String)>, ConfigError> {
    o.images_from
        .as_deref()
        .map(|p| {
            std::fs::read_to_string(p)
                .map(|text| (p, text))
                .map_err(|e| bad("images-from", format!("cannot read {}: {e}", p.display())))
        })
        .transpose()
}

/// `--images-from FILE` read and kept to the images under `sources`: at least one line
/// must lie under one of them.
fn images_from(o: &Options, sources: &[Namespace]) -> Result<Option<ImagesFrom>, ConfigError> {
    images_from_text(o)?
        .map(|(path, text)| {
            super::images_from::parse(&text, sources)
                .map_err(|e| bad("images-from", format!("{}: {e}", path.display())))
        })
        .transpose()
}

/// `--process-count`: `None` for -1 (no limit).
pub(super) fn budget(process_count: i64) -> Result<Option<usize>, ConfigError> {
    match process_count {
        -1 => Ok(None),
        n => positive("process-count", n, 1_000_000).map(Some),
    }
}

/// The run-wide settings of `cli`, around `sources` (resolved from the same options, or
/// from each source of a config file).
pub(super) fn run(
    cli: Cli,
    env: &impl Fn(&str) -> Option<String>,
    sources: Vec<SourceSettings>,
    schemes: Vec<(RegistryHost, Scheme)>,
) -> Result<Settings, ConfigError> {
    let o = cli.options;
    let deadline = o
        .deadline
        .as_deref()
        .map(|d| duration("deadline", d))
        .transpose()?;
    let github = github(&o, env, deadline)?;
    let command = match (cli.command.unwrap_or(Command::Sync), o.dry_run) {
        (Command::Sync, true) => Command::Test,
        (command, _) => command,
    };
    let insecure = insecure(&o)?;
    let budget = budget(o.process_count)?;
    let tags = positive("process-limit", o.process_limit, 256)?;
    let limits = Limits {
        tags,
        transfers: tags,
        queries: positive("query-limit", o.query_limit, 1024)?,
    };
    let retries = if (0..=20).contains(&o.retries) {
        o.retries as usize
    } else {
        return Err(bad(
            "retries",
            format!("{} is out of range; give a number from 0 to 20", o.retries),
        ));
    };
    let (proxy, ca_cert) = network(&o)?;
    let timezone = jiff::tz::TimeZone::get(&o.timezone).map_err(|_| {
        bad(
            "timezone",
            format!(
                "unknown time zone {:?}; give an IANA name such as UTC or Asia/Shanghai",
                o.timezone
            ),
        )
    })?;
    for (flag, path) in [
        ("readme-template", &o.readme_template),
        ("image-template", &o.image_template),
        ("changelog-template", &o.changelog_template),
    ] {
        if let Some(p) = path.as_ref().filter(|p| !p.is_file()) {
            return Err(bad(flag, format!("{} is not a readable file", p.display())));
        }
    }
    let log_format = match o.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(bad("log-format", format!("{other:?} is not text or json"))),
    };
    let (monitor_interval, monitor_count) = match &command {
        Command::Monitor { interval, count } => (duration("interval", interval)?, *count),
        _ => (Duration::ZERO, 1),
    };
    Ok(Settings {
        command,
        images_from: {
            let namespaces: Vec<Namespace> = sources.iter().map(|s| s.namespace.clone()).collect();
            images_from(&o, &namespaces)?
        },
        sources,
        // Under Actions a report is always written, so the step's outputs have one; a
        // config file's `report:` key still chooses where (it is below the variables).
        report: o.report.or_else(|| {
            (env("GITHUB_ACTIONS").as_deref() == Some("true")).then(|| {
                PathBuf::from(env("RUNNER_TEMP").unwrap_or_else(|| "/tmp".into()))
                    .join("gcrsync-report.json")
            })
        }),
        actions: actions_env(env, github.as_ref()),
        github,
        metadata_dir: o.metadata_dir,
        metadata_path: o.metadata_path,
        budget,
        limits,
        deadline,
        commit_every: positive("commit-every", o.commit_every, 1_000_000)?,
        http_timeout: duration("http-timeout", &o.http_timeout)?,
        retries,
        config: o.config,
        proxy,
        insecure,
        schemes,
        ca_cert,
        shard: shard(&o.shard)?,
        timezone,
        readme_template: o.readme_template,
        image_template: o.image_template,
        changelog_template: o.changelog_template,
        prune: o.prune,
        prune_max: positive("prune-max", o.prune_max, 1_000_000)?,
        dry_run: o.dry_run,
        log_format,
        // GitHub's "re-run with debug logging" sets RUNNER_DEBUG=1: debug logs, even if quiet.
        verbosity: match env("RUNNER_DEBUG").as_deref() {
            Some("1") => (o.verbose.min(3) as i8).max(1),
            _ => o.verbose.min(3) as i8 - i8::from(o.quiet),
        },
        monitor_interval,
        monitor_count,
    })
}
