//! The commands: sync, test, compare and monitor, over the pipeline
//! list → filter → map → plan → copy → record → report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::Command;
use crate::copy::Copier;
use crate::listing::{self, ListStats, SourceError, SourceSpec};
use crate::mapping::collisions;
use crate::metadata::github::GitHubStore;
use crate::metadata::local::LocalStore;
use crate::metadata::record::{Outcome, TagRecord};
use crate::metadata::render::Renderer;
use crate::metadata::{MetadataStore, Recorder, StoreError};
use crate::oci::http::{Access, Clients, Endpoint, HttpRegistry, RetryPolicy};
use crate::oci::manifest::is_index;
use crate::oci::{ManifestRef, Registry};
use crate::plan::{self, Candidate, Plan, TargetHead};
use crate::progress::Progress;
use crate::reference::Namespace;
use crate::report::{self, Report};
use crate::run::{self, RunOptions, StopFlag};
use crate::settings::{Insecure, Settings, Side};

/// Why a run could not do its work (the exit code follows from the variant).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration found wrong once the sources were listed (exit 2).
    #[error("{0}")]
    Config(String),
    /// A source, the target or the metadata store is unusable (exit 3).
    #[error("{0}")]
    Fatal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        AppError::Fatal(e.to_string())
    }
}

impl From<SourceError> for AppError {
    fn from(e: SourceError) -> Self {
        match e {
            SourceError::List(e) => AppError::Fatal(e.to_string()),
            SourceError::Mapping(e) => AppError::Config(e.to_string()),
        }
    }
}

/// The outcome of a command that ran to the end.
pub struct Finished {
    /// The report.
    pub report: Report,
}

impl Finished {
    /// 0 when nothing failed, 1 when some tags failed.
    pub fn exit_code(&self) -> u8 {
        if self.report.totals.failed > 0 { 1 } else { 0 }
    }
}

/// Every registry a run talks to, sharing one connection pool.
struct Registries {
    sources: Vec<Arc<HttpRegistry>>,
    target: Arc<HttpRegistry>,
    retry: RetryPolicy,
}

/// The HTTP clients of a run (see `Clients`); `verify: false` only for
/// `--insecure-registry https://HOST`.
fn http_clients(settings: &Settings, verify: bool) -> Result<Clients, AppError> {
    Ok(Clients {
        requests: http_client(settings, verify, true)?,
        uploads: http_client(settings, verify, false)?,
    })
}

/// One HTTP client; `idle_timeout` adds `--http-timeout` as a read timeout.
fn http_client(
    settings: &Settings,
    verify: bool,
    idle_timeout: bool,
) -> Result<reqwest::Client, AppError> {
    let mut builder = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(!verify)
        .user_agent(concat!("gcrsync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.http_timeout)
        .tcp_keepalive(settings.http_timeout)
        .pool_max_idle_per_host(settings.limits.tags + settings.limits.queries);
    if idle_timeout {
        builder = builder.read_timeout(settings.http_timeout);
    }
    if let Some(proxy) = &settings.proxy {
        let proxy =
            reqwest::Proxy::all(proxy).map_err(|e| AppError::Config(format!("--proxy: {e}")))?;
        builder = builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_env()));
    }
    if let Some(pem) = &settings.ca_cert {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| AppError::Config(format!("--ca-cert: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| AppError::Fatal(format!("cannot set up HTTP: {e}")))
}

impl Registries {
    /// One client per registry over the shared pool `http` (or `unverified` for
    /// `--insecure-registry https://HOST`).
    fn new(settings: &Settings, http: &Clients) -> Result<Self, AppError> {
        let retry = RetryPolicy {
            retries: settings.retries,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        };
        let unverified = match settings
            .insecure
            .iter()
            .any(|(_, m)| *m == Insecure::UnverifiedTls)
        {
            true => Some(http_clients(settings, false)?),
            false => None,
        };
        let registry = |ns: &Namespace, access, side| -> Result<Arc<HttpRegistry>, AppError> {
            let mode = settings.insecure_mode(&ns.registry);
            let endpoint = Endpoint {
                host: ns.registry.clone(),
                plain_http: mode == Some(Insecure::PlainHttp),
                login: settings
                    .login_for(&ns.registry, side)
                    .map_err(AppError::Fatal)?,
                access,
            };
            let client = match (mode, &unverified) {
                (Some(Insecure::UnverifiedTls), Some(client)) => client.clone(),
                _ => http.clone(),
            };
            Ok(Arc::new(HttpRegistry::new(endpoint, client, retry)))
        };
        let sources = settings
            .sources
            .iter()
            .map(|ns| registry(ns, Access::Pull, Side::Source))
            .collect::<Result<_, _>>()?;
        let target = registry(&settings.target, Access::Push, Side::Target)?;
        Ok(Registries {
            sources,
            target,
            retry,
        })
    }
}

fn recorder<M: MetadataStore>(settings: &Settings, store: M) -> Result<Recorder<M>, AppError> {
    let renderer = Renderer::new(
        settings.readme_template.as_ref(),
        settings.changelog_template.as_ref(),
    )
    .map_err(|e| AppError::Config(e.to_string()))?;
    let pairs = settings
        .sources
        .iter()
        .map(|s| (s.clone(), settings.target.clone()))
        .collect();
    Ok(Recorder::new(
        store,
        &settings.metadata_path,
        renderer,
        pairs,
        settings.timezone.clone(),
    ))
}

/// Lists every source; fails on a listing error or on two images mapping to one target.
async fn list_all(
    settings: &Settings,
    registries: &Registries,
) -> Result<(Vec<Candidate>, Vec<ListStats>), AppError> {
    let mut candidates = Vec::new();
    let mut stats = Vec::new();
    for (index, namespace) in settings.sources.iter().enumerate() {
        let spec = SourceSpec {
            index,
            namespace,
            images: settings.images.as_deref(),
            target: &settings.target,
            shard: settings.shard,
        };
        let registry = registries.sources[index].as_ref();
        if settings.actions.is_some() {
            print!(
                "{}",
                crate::actions::group(&format!("gcrsync: listing {namespace}"))
            );
        }
        let (listed, stat) = listing::list_source(
            registry,
            &spec,
            &settings.filters,
            &settings.mapper,
            settings.limits.queries,
        )
        .await?;
        tracing::info!(
            "{namespace}: {} images, {} tags listed, {} filtered out",
            stat.images,
            stat.tags,
            stat.filtered()
        );
        if settings.actions.is_some() {
            print!("{}", crate::actions::END_GROUP);
        }
        candidates.extend(listed);
        stats.push(stat);
    }
    let mapped: Vec<_> = candidates
        .iter()
        .map(|c| {
            (
                format!("{}/{}", settings.sources[c.source], c.image),
                c.target.clone(),
            )
        })
        .collect();
    let clashes = collisions(&mapped);
    if !clashes.is_empty() {
        let lines: Vec<String> = clashes
            .iter()
            .map(|(t, s)| format!("{} ← {}", t, s.join(", ")))
            .collect();
        return Err(AppError::Config(format!(
            "--name-template maps several source images to one target repository; include {{{{ namespace }}}} or {{{{ registry }}}} in the template:\n  {}",
            lines.join("\n  ")
        )));
    }
    Ok((candidates, stats))
}

/// Lists, loads the records, checks the target where needed, and plans.
async fn make_plan<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
) -> Result<(Plan, Vec<ListStats>), AppError> {
    let records = recorder.load_all().await?;
    let (candidates, stats) = list_all(settings, registries).await?;
    let to_check = plan::needs_target_check(&candidates, &records);
    let heads = listing::target_heads(
        registries.target.as_ref(),
        &to_check,
        settings.limits.queries,
    )
    .await
    .map_err(|e| AppError::Fatal(e.to_string()))?;
    Ok((
        plan::plan(&candidates, &records, &heads, settings.budget),
        stats,
    ))
}

fn names(settings: &Settings) -> Vec<(String, String)> {
    settings
        .sources
        .iter()
        .map(|s| (s.to_string(), settings.target.to_string()))
        .collect()
}

/// Runs the configured command against the configured metadata store.
pub async fn run(settings: Settings, stop: StopFlag) -> Result<Finished, AppError> {
    let started = Instant::now();
    let http = http_clients(&settings, true)?;
    let registries = Registries::new(&settings, &http)?;
    match &settings.github {
        Some(config) => {
            let writes =
                matches!(settings.command, Command::Sync | Command::Compare) && !settings.dry_run;
            let store = GitHubStore::connect(config, http.requests, writes).await?;
            tracing::info!("metadata: {} branch {}", config.repo, store.branch());
            let recorder = recorder(&settings, store)?;
            command(&settings, &registries, &recorder, started, stop).await
        }
        None => {
            let recorder = recorder(&settings, LocalStore::new(settings.metadata_dir.clone()))?;
            command(&settings, &registries, &recorder, started, stop).await
        }
    }
}

async fn command<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
    started: Instant,
    stop: StopFlag,
) -> Result<Finished, AppError> {
    match &settings.command {
        Command::Sync => sync(settings, registries, recorder, started, &stop).await,
        Command::Test => {
            let (plan, stats) = make_plan(settings, registries, recorder).await?;
            for step in plan.copy.iter().chain(&plan.adopt) {
                let c = &step.candidate;
                let why = match &step.previous {
                    Some(p) => format!("moved from {}", p.short()),
                    None => format!("{:?}", step.reason).to_lowercase(),
                };
                println!(
                    "{}:{} → {}:{} ({why})",
                    c.source_repo, c.tag, c.target, c.tag
                );
            }
            Ok(Finished {
                report: report::build("test", &names(settings), &stats, &plan, None),
            })
        }
        Command::Compare => compare(settings, registries, recorder).await,
        Command::Monitor { .. } => monitor(settings, registries, recorder, &stop).await,
    }
}

async fn sync<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
    started: Instant,
    stop: &StopFlag,
) -> Result<Finished, AppError> {
    let (mut plan, stats) = make_plan(settings, registries, recorder).await?;
    let quotas: Vec<Option<u64>> = registries.sources.iter().map(|s| s.pull_quota()).collect();
    let over_quota = plan::fit_quotas(&mut plan, &quotas);
    if over_quota > 0 {
        tracing::warn!(
            "the source's pull quota (RateLimit-Remaining) does not cover the plan: copying what fits, {over_quota} tags left pending"
        );
    }
    tracing::info!(
        "plan: {} to copy, {} to adopt, {} over budget",
        plan.copy.len(),
        plan.adopt.len(),
        plan.pending.len()
    );
    let copier = Arc::new(Copier::new(
        registries.target.clone(),
        settings.limits.transfers,
        registries.retry,
    ));
    let options = RunOptions {
        concurrency: settings.limits.tags,
        deadline: settings.deadline.map(|d| started + d),
        commit_every: settings.commit_every,
    };
    let progress = Progress::new(plan.copy.len(), settings.verbosity >= 0);
    let result = run::execute(
        &plan,
        &registries.sources,
        copier,
        recorder,
        &options,
        stop,
        &progress,
    )
    .await?;
    progress.finish();
    Ok(Finished {
        report: report::build("sync", &names(settings), &stats, &plan, Some(&result)),
    })
}

/// HEADs every mapped tag on the target and records what is there (and drops what is not).
async fn compare<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
) -> Result<Finished, AppError> {
    let records = recorder.load_all().await?;
    let (candidates, stats) = list_all(settings, registries).await?;
    let all: Vec<&Candidate> = candidates.iter().collect();
    let heads = listing::target_heads(registries.target.as_ref(), &all, settings.limits.queries)
        .await
        .map_err(|e| AppError::Fatal(e.to_string()))?;
    let at = crate::metadata::record::now_utc();
    let mut outcomes = Vec::new();
    for c in &candidates {
        let key = (c.source, c.image.clone(), c.tag.clone());
        let (image, tag) = (c.image.to_string(), c.tag.to_string());
        match heads.get(&key).cloned().flatten() {
            Some(TargetHead { digest, media_type }) => {
                // Only an index or list has platforms to read; other manifests are not fetched.
                let platforms = if is_index(&media_type) {
                    let reference = ManifestRef::Digest(digest.clone());
                    let manifest = registries
                        .target
                        .get_manifest(&c.target.path, &reference)
                        .await;
                    manifest
                        .ok()
                        .and_then(|m| m.contents().ok())
                        .map(|c| c.platforms())
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                let record = TagRecord {
                    digest: Some(digest),
                    media_type,
                    platforms,
                    synced_at: at.clone(),
                };
                let target = c.target.to_string();
                outcomes.push((
                    c.source,
                    Outcome::Synced {
                        image,
                        tag,
                        target,
                        record,
                        previous: None,
                        copied: false,
                    },
                ));
            }
            None if records[c.source].digest(&image, &tag).is_some() => {
                outcomes.push((c.source, Outcome::Missing { image, tag }));
            }
            None => {}
        }
    }
    let unchanged: Vec<usize> = settings.sources.iter().map(|_| 0).collect();
    let plan = Plan {
        unchanged,
        ..Plan::default()
    };
    let mut result = run::RunResult::default();
    if settings.dry_run {
        for (_, outcome) in &outcomes {
            println!("{}", serde_json::to_string(outcome).unwrap_or_default());
        }
    } else {
        for chunk in outcomes.chunks(settings.commit_every) {
            if let Some(commit) = recorder.commit(chunk, jiff::Timestamp::now()).await? {
                result.commits.push(commit);
            }
        }
    }
    result.outcomes = outcomes;
    Ok(Finished {
        report: report::build("compare", &names(settings), &stats, &plan, Some(&result)),
    })
}

/// Prints pending counts per namespace, `--count` times every `--interval`.
async fn monitor<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
    stop: &StopFlag,
) -> Result<Finished, AppError> {
    let mut round = 0;
    loop {
        let (plan, stats) = make_plan(settings, registries, recorder).await?;
        let report = report::build("monitor", &names(settings), &stats, &plan, None);
        for s in &report.sources {
            println!(
                "{} → {}: {} pending, {} unchanged",
                s.source,
                s.target,
                s.counts.pending + s.counts.adopted,
                s.counts.unchanged
            );
        }
        round += 1;
        if (settings.monitor_count != 0 && round >= settings.monitor_count)
            || stop.load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(Finished { report });
        }
        tokio::time::sleep(settings.monitor_interval).await;
    }
}
