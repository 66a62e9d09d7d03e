//! The commands: sync, test, compare and monitor, over the pipeline
//! list → filter → map → plan → copy → record → report.

mod compare;
mod connect;
mod prune;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use compare::compare;
use connect::{Registries, http_clients, recorder};

use crate::cli::Command;
use crate::copy::Copier;
use crate::exit::{Exit, Failure};
use crate::listing::{self, ListStats, SourceSpec};
use crate::mapping::collisions;
use crate::metadata::github::GitHubStore;
use crate::metadata::local::LocalStore;
use crate::metadata::record::{NamespaceRecord, Outcome, now_utc};
use crate::metadata::{Committed, MetadataStore, Recorder};
use crate::oci::Registry;
use crate::oci::any::AnyRegistry;
use crate::plan::{self, Candidate, Plan, Reason};
use crate::platforms::PlatformSet;
use crate::progress::Progress;
use crate::referrers::Choice;
use crate::referrers::recheck::{self, Schedule};
use crate::report::{self, Report};
use crate::run::{self, RunOptions, StopFlag};
use crate::settings::Settings;

/// The outcome of a command that got as far as a report.
pub struct Finished {
    /// The report.
    pub report: Report,
}

impl Finished {
    /// Its exit code (see [`Exit::of_report`]).
    pub fn exit(&self) -> Exit {
        Exit::of_report(&self.report)
    }
}

/// What [`list_all`] found.
struct Listings {
    /// The tags to plan.
    candidates: Vec<Candidate>,
    /// Per source.
    stats: Vec<ListStats>,
    /// Upstream deletions (and returns) each listing vouches for, by source.
    marks: Vec<(usize, Outcome)>,
    /// Per source, the tags dropped while listing as mirrored already (with `settle`).
    unchanged: Vec<usize>,
    /// Per source, its referrers re-read schedule (with `settle`).
    schedules: Vec<Schedule>,
    /// When the listing began (RFC 3339, UTC).
    began: String,
}

/// Lists every source; fails when a namespace cannot be listed at all, or when two images
/// map to one target repository (checked over every shard's images, before any target
/// request). Repositories and tags that cannot be listed are failures in the stats.
/// Also gives the upstream deletions each listing vouches for. `settle`: candidates the
/// records show mirrored as listed are counted per source, not returned.
async fn list_all<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    records: &[NamespaceRecord],
    recorder: &Recorder<M>,
    settle: bool,
) -> Result<Listings, Failure> {
    let began = jiff::Timestamp::now();
    // Off for `compare` (it reads no referrers) and under `referrers: none`.
    let every: Vec<_> = settings
        .sources
        .iter()
        .map(|s| {
            s.referrers_recheck
                .filter(|_| settle && s.referrers != Choice::None)
        })
        .collect();
    let schedules = recheck::schedules(records, &every, began);
    let mut marks = Vec::new();
    let mut unchanged = Vec::new();
    let mut listed_by = Vec::new();
    let mut candidates = Vec::new();
    let mut stats = Vec::new();
    let mut mapped = Vec::new();
    for (index, source) in settings.sources.iter().enumerate() {
        let namespace = &source.namespace;
        let spec = SourceSpec {
            index,
            namespace,
            images: source.images.as_deref(),
            target: &source.target,
            shard: settings.shard,
            listed_before: records.get(index).and_then(|r| r.listed_by),
            settled: None,
        };
        let (record, chosen) = (records.get(index), source.platforms.as_ref());
        let images_from = settings.images_from.as_ref();
        let window = schedules.get(index).and_then(|s| s.window);
        let rereads = settle && source.referrers != Choice::None;
        // A tag whose referrers are due stays, to be read again.
        let settled = move |c: &Candidate| {
            record.is_some_and(|r| {
                plan::unchanged(c, r, chosen)
                    && !(rereads && recheck::due_for(c, r, window.as_ref()).is_some())
            }) && images_from.is_none_or(|listed| listed.contains(namespace, &c.image, &c.tag))
        };
        let spec = SourceSpec {
            settled: settle.then_some(&settled as &listing::Settled<'_>),
            ..spec
        };
        let registry = registries.sources[index].as_ref();
        if settings.actions.is_some() {
            print!(
                "{}",
                crate::actions::group(&format!("gcrsync: listing {namespace}"))
            );
        }
        let mut listing = listing::list_source(
            registry,
            &spec,
            &source.filters,
            &source.mapper,
            settings.limits.queries,
        )
        .await?;
        if let Some(record) = records.get(index) {
            // Judged now, so the listing's tags are dropped before the next source's.
            let seen = std::mem::take(&mut listing.seen);
            let scope = |image: &str| listing::in_scope(&spec, &source.filters, image);
            let at = now_utc();
            let found = crate::deletions::upstream_marks(record, &seen, scope, &at);
            marks.extend(found.into_iter().map(|m| (index, m)));
        }
        let stat = listing.stats;
        tracing::info!(
            "{namespace}: {} images, {} tags listed, {} filtered out, {} images not listed (filters), {} failed",
            stat.images,
            stat.tags,
            stat.filtered(),
            stat.images_removed.values().sum::<usize>(),
            stat.failures.len()
        );
        if settings.actions.is_some() {
            print!("{}", crate::actions::END_GROUP);
        }
        // Moved, not copied, when it is the first: at 15,000 tags a copy was 3.5 MB more.
        if candidates.is_empty() {
            candidates = listing.candidates;
        } else {
            candidates.extend(listing.candidates);
        }
        listed_by.push(listing.listed_by);
        unchanged.push(listing.unchanged);
        stats.push(stat);
        mapped.extend(
            listing
                .mapped
                .into_iter()
                .map(|(image, target)| (format!("{namespace}/{image}"), target)),
        );
    }
    if let Some(listed) = &settings.images_from {
        // `--images-from` names image:tag pairs; the listing kept their names and tags.
        candidates.retain(|c: &Candidate| {
            listed.contains(&settings.sources[c.source].namespace, &c.image, &c.tag)
        });
    }
    recorder.listed(listed_by);
    let clashes = collisions(&mapped);
    if !clashes.is_empty() {
        return Err(Failure::Collisions(clashes));
    }
    Ok(Listings {
        candidates,
        stats,
        marks,
        unchanged,
        schedules,
        began: began.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    })
}

/// Lists, loads the records, checks the target where needed, and plans. A tag whose
/// target HEAD fails is left out of the plan and counted as failed.
async fn make_plan<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
) -> Result<(Plan, Vec<ListStats>, prune::Upstream), Failure> {
    let mut records = recorder.load_all().await?;
    let Listings {
        candidates,
        mut stats,
        marks,
        unchanged,
        schedules,
        began,
    } = list_all(settings, registries, &records, recorder, true).await?;
    let upstream = prune::Upstream::new(marks, &mut records);
    let to_check = plan::needs_target_check(&candidates, &records);
    let checked = target_heads(registries, &to_check, settings.limits.queries).await?;
    let mut unknown = HashSet::new();
    for (source, failed) in checked.failures {
        unknown.insert((source, failed.image.clone(), failed.tag.clone()));
        stats[source].failures.push(failed);
    }
    let candidates: Vec<Candidate> = candidates
        .into_iter()
        .filter(|c| !unknown.contains(&(c.source, c.image.clone(), Some(c.tag.clone()))))
        .collect();
    let chosen: Vec<Option<PlatformSet>> = settings
        .sources
        .iter()
        .map(|s| s.platforms.clone())
        .collect();
    let is_unchanged = |c: &Candidate, r: &NamespaceRecord| {
        plan::unchanged(c, r, chosen.get(c.source).and_then(Option::as_ref))
    };
    let (recheck, recheck_through) = {
        let rereads = |c: &Candidate, r: &NamespaceRecord| {
            settings.sources[c.source].referrers != Choice::None && is_unchanged(c, r)
        };
        recheck::plan_rechecks(&candidates, &records, &schedules, rereads, &began)
    };
    let mut plan = plan::plan_platforms(candidates, &records, &checked.heads, None, &chosen);
    plan.recheck = recheck;
    plan.recheck_through = recheck_through;
    for (count, settled) in plan.unchanged.iter_mut().zip(unchanged) {
        *count += settled;
    }
    let caps: Vec<Option<usize>> = settings.sources.iter().map(|s| s.share).collect();
    plan::share(&mut plan, settings.budget, &caps);
    Ok((plan, stats, upstream))
}

/// What each source's target serves for `candidates`: one pass per target client.
async fn target_heads(
    registries: &Registries,
    candidates: &[&Candidate],
    queries: usize,
) -> Result<listing::TargetHeads, Failure> {
    let mut all = listing::TargetHeads::default();
    for (index, target) in registries.targets.iter().enumerate() {
        let mine: Vec<&Candidate> = candidates
            .iter()
            .copied()
            .filter(|c| registries.target_of[c.source] == index)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let checked = listing::target_heads(target.as_ref(), &mine, queries).await?;
        all.heads.extend(checked.heads);
        all.failures.extend(checked.failures);
    }
    Ok(all)
}

/// The report of a run that ends before it has one (an error): zero counts per source.
pub fn blank_report(settings: &Settings) -> Report {
    let command = match settings.command {
        Command::Sync => "sync",
        Command::Test => "test",
        Command::Compare => "compare",
        Command::Monitor { .. } => "monitor",
        Command::Config { .. } => "config",
        Command::GenerateDocs { .. } => "generate-docs",
        Command::Serve(_) => "serve",
    };
    Report::empty(command, &names(settings))
}

/// Records the tags that could not be listed or HEADed as failed (never as synced), so
/// they go last next run, and the upstream deletions the listing saw (`marks`); failed
/// repositories are reported only (see `report`).
async fn record_listing_failures<M: MetadataStore>(
    stats: &[ListStats],
    marks: &[(usize, Outcome)],
    recorder: &Recorder<M>,
) -> Result<Option<Committed>, Failure> {
    let at = now_utc();
    let mut outcomes: Vec<(usize, Outcome)> = stats
        .iter()
        .enumerate()
        .flat_map(|(source, stat)| {
            let at = at.clone();
            stat.failures.iter().filter_map(move |f| {
                let tag = f.tag.as_ref()?;
                let failed = Outcome::Failed {
                    image: f.image.to_string(),
                    tag: tag.to_string(),
                    error: f.error.clone(),
                    at: at.clone(),
                };
                Some((source, failed))
            })
        })
        .collect();
    outcomes.extend_from_slice(marks);
    Ok(recorder.commit(&outcomes, jiff::Timestamp::now()).await?)
}

fn names(settings: &Settings) -> Vec<(String, String)> {
    settings
        .sources
        .iter()
        .map(|s| (s.namespace.to_string(), s.target.to_string()))
        .collect()
}

/// Runs the configured command against the configured metadata store.
pub async fn run(settings: Settings, stop: StopFlag) -> Result<Finished, Failure> {
    let started = Instant::now();
    let http = http_clients(&settings, true)?;
    let registries = Registries::new(&settings, &http)?;
    match &settings.github {
        Some(config) => {
            let writes =
                matches!(settings.command, Command::Sync | Command::Compare) && !settings.dry_run;
            let client = http.general().map_err(Failure::HttpSetup)?;
            let store = GitHubStore::connect(config, client, writes).await?;
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
) -> Result<Finished, Failure> {
    match &settings.command {
        Command::Sync => sync(settings, registries, recorder, started, &stop).await,
        Command::Test => {
            let Some((plan, stats, upstream)) =
                until_stopped(&stop, make_plan(settings, registries, recorder)).await?
            else {
                return Ok(stopped_before_planning("test", settings));
            };
            for step in plan.copy.iter().chain(&plan.adopt) {
                let c = &step.candidate;
                let why = match (&step.retarget_from, &step.previous) {
                    (Some(from), _) if step.reason == Reason::Adopt => {
                        format!("retarget from {from}, already there: adopt")
                    }
                    (Some(from), _) => format!("retarget from {from}"),
                    (None, Some(p)) => format!("moved from {}", p.short()),
                    (None, None) => format!("{:?}", step.reason).to_lowercase(),
                };
                println!(
                    "{}:{} → {}:{} ({why})",
                    c.source_repo, c.tag, c.target, c.tag
                );
            }
            for recheck in &plan.recheck {
                let c = &recheck.candidate;
                let why = format!("{:?}", recheck.why).to_lowercase();
                println!("{}:{} referrers read again ({why})", c.source_repo, c.tag);
            }
            let mut report = report::build("test", &names(settings), &stats, &plan, None);
            report.prune = upstream.show(settings);
            Ok(Finished { report })
        }
        Command::Compare => {
            match until_stopped(&stop, compare(settings, registries, recorder)).await? {
                Some(finished) => Ok(finished),
                None => Ok(stopped_before_planning("compare", settings)),
            }
        }
        Command::Monitor { .. } => monitor(settings, registries, recorder, &stop).await,
        // `main` runs these before any settings exist; nothing to do against registries.
        Command::Config { .. } | Command::GenerateDocs { .. } | Command::Serve(_) => Ok(Finished {
            report: Report::empty("maintenance", &names(settings)),
        }),
    }
}

async fn sync<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
    started: Instant,
    stop: &StopFlag,
) -> Result<Finished, Failure> {
    let Some((mut plan, stats, upstream)) =
        until_stopped(stop, make_plan(settings, registries, recorder)).await?
    else {
        return Ok(stopped_before_planning("sync", settings));
    };
    // A signal here leaves the failures to be reported only (they are listed again).
    let recorded = record_listing_failures(&stats, &upstream.marks, recorder);
    let listing_commit = until_stopped(stop, recorded).await?.flatten();
    // Before the copies, so that a deadline they reach never starves it: a few requests.
    let pruning = until_stopped(stop, upstream.prune(settings, registries, recorder)).await?;
    let (prune_commit, prune_report) = pruning.unwrap_or_default();
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
    // One copier per target client and platform choice, so blob deduplication spans the
    // sources sharing them.
    type Shared = (usize, Option<PlatformSet>, Choice);
    let mut shared: Vec<(Shared, Arc<Copier<AnyRegistry>>)> = Vec::new();
    let mut copiers = Vec::new();
    for (source, &t) in settings.sources.iter().zip(&registries.target_of) {
        let key = (t, source.platforms.clone(), source.referrers.clone());
        let copier = match shared.iter().find(|(k, _)| *k == key) {
            Some((_, copier)) => copier.clone(),
            None => {
                let copier = Arc::new(
                    Copier::new(
                        registries.targets[t].clone(),
                        settings.limits.transfers,
                        registries.retry,
                    )
                    .with_platforms(key.1.clone())
                    .with_referrers(key.2.clone()),
                );
                shared.push((key, copier.clone()));
                copier
            }
        };
        copiers.push(copier);
    }
    let options = RunOptions {
        concurrency: settings.limits.tags,
        deadline: settings.deadline.map(|d| started + d),
        commit_every: settings.commit_every,
    };
    let progress = Progress::new(plan.copy.len(), settings.verbosity >= 0);
    let mut result = run::execute(
        &mut plan,
        &registries.sources,
        &copiers,
        recorder,
        &options,
        stop,
        &progress,
    )
    .await;
    progress.finish();
    result
        .commits
        .splice(0..0, listing_commit.into_iter().chain(prune_commit));
    let mut report = report::build("sync", &names(settings), &stats, &plan, Some(&result));
    report.prune = prune_report;
    Ok(Finished { report })
}

/// Prints pending counts per namespace, `--count` times every `--interval`.
async fn monitor<M: MetadataStore>(
    settings: &Settings,
    registries: &Registries,
    recorder: &Recorder<M>,
    stop: &StopFlag,
) -> Result<Finished, Failure> {
    let mut round = 0;
    loop {
        let Some((plan, stats, _)) =
            until_stopped(stop, make_plan(settings, registries, recorder)).await?
        else {
            return Ok(stopped_before_planning("monitor", settings));
        };
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
        if settings.monitor_count != 0 && round >= settings.monitor_count {
            return Ok(Finished { report });
        }
        // A signal ends the wait at once, not at the next round.
        tokio::select! {
            _ = stop.cancelled() => return Ok(Finished { report }),
            _ = tokio::time::sleep(settings.monitor_interval) => {}
        }
    }
}

/// Runs `work` unless a signal comes first: listing a large namespace takes a while, and
/// Actions kills the step 10 s after its SIGINT.
async fn until_stopped<T>(
    stop: &StopFlag,
    work: impl std::future::Future<Output = Result<T, Failure>>,
) -> Result<Option<T>, Failure> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => Ok(None),
        done = work => done.map(Some),
    }
}

/// The report of a run stopped by a signal before it copied or recorded anything (while
/// listing, or during `compare`, which keeps any commit it made before).
fn stopped_before_planning(command: &str, settings: &Settings) -> Finished {
    let mut report = Report::empty(command, &names(settings));
    report.stopped = Some("signal".to_string());
    Finished { report }
}
