//! The run's report: counts per source, failed tags and repositories, commits; as JSON (`--report`) and as
//! a readable summary on stderr.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::listing::ListStats;
use crate::metadata::record::Outcome;
use crate::plan::{Plan, Step};
use crate::run::RunResult;

/// Counts of one source (or of all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Tags listed.
    pub listed: usize,
    /// Tags removed by filters.
    pub filtered: usize,
    /// Tags already mirrored with the listed digest (nothing sent for them).
    pub unchanged: usize,
    /// New tags copied.
    pub copied: usize,
    /// Moved tags re-copied.
    pub moved: usize,
    /// Tags found on the target and recorded without copying.
    pub adopted: usize,
    /// Tags that cannot be mirrored verbatim (schema 1, unknown types): not errors.
    pub skipped: usize,
    /// Tags whose copy failed.
    pub failed: usize,
    /// Tags still to copy (budget, deadline, signal; or, for `test`, the whole plan).
    pub pending: usize,
    /// Unchanged tags whose referrers were read again (`--referrers-recheck`, or a
    /// listing that showed their referrer tags changed); for `test`, would be.
    pub referrers_reread: usize,
    /// New referrers found by those re-reads, and copied.
    pub referrers_added: usize,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.listed += o.listed;
        self.filtered += o.filtered;
        self.unchanged += o.unchanged;
        self.copied += o.copied;
        self.moved += o.moved;
        self.adopted += o.adopted;
        self.skipped += o.skipped;
        self.failed += o.failed;
        self.pending += o.pending;
        self.referrers_reread += o.referrers_reread;
        self.referrers_added += o.referrers_added;
    }
}

/// One source's line.
#[derive(Debug, Serialize)]
pub struct SourceReport {
    /// Source namespace.
    pub source: String,
    /// Target namespace.
    pub target: String,
    /// Its counts.
    #[serde(flatten)]
    pub counts: Counts,
    /// Tags removed, by the option that removed them.
    pub removed: BTreeMap<&'static str, usize>,
    /// Images removed by an image filter (never listed), by option.
    pub images_removed: BTreeMap<&'static str, usize>,
    /// Platforms `--platforms` left out of the indexes copied in this run: tags per platform.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped_platforms: BTreeMap<String, usize>,
}

/// A failed tag and why.
#[derive(Debug, Serialize)]
pub struct FailedTag {
    /// Source namespace.
    pub source: String,
    /// Image and tag.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// The error.
    pub error: String,
}

/// A tag found uncopyable in this run.
#[derive(Debug, Serialize)]
pub struct SkippedTag {
    /// Source namespace.
    pub source: String,
    /// Image name.
    pub image: String,
    /// Tag.
    pub tag: String,
    /// The source digest judged.
    pub digest: String,
    /// Why it cannot be mirrored.
    pub reason: String,
}

/// A repository that could not be listed, and why (the registry's status and message).
#[derive(Debug, Serialize)]
pub struct FailedRepository {
    /// Source namespace.
    pub source: String,
    /// Image (repository relative to the namespace).
    pub image: String,
    /// The error.
    pub error: String,
}

/// The whole report.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The command run.
    pub command: String,
    /// Per source.
    pub sources: Vec<SourceReport>,
    /// Sums.
    pub totals: Counts,
    /// Failed tags.
    pub failed: Vec<FailedTag>,
    /// Tags found uncopyable in this run; those skipped in earlier runs are only counted
    /// (each namespace's `images.json` lists them all under `skipped`).
    pub skipped: Vec<SkippedTag>,
    /// Repositories that could not be listed: their tags were not seen, their records kept.
    pub failed_repositories: Vec<FailedRepository>,
    /// Commit messages (and ids where the store has them).
    pub commits: Vec<String>,
    /// The last metadata commit, where the store has commits.
    pub commit_sha: Option<String>,
    /// Why the run stopped starting copies early, if it did.
    pub stopped: Option<String>,
    /// What ended the run before its end (exit 2 or 3), if anything did; what was
    /// committed before it is in `commits`.
    pub error: Option<String>,
    /// Tags copied or adopted whose commit a signal cut short: on the target, not in the
    /// records; the next run adopts them.
    pub unrecorded: usize,
    /// For `test`: every tag the plan would copy or adopt, in order.
    pub plan: Option<Vec<Step>>,
    /// Upstream deletions seen in this run, and what `--prune` did (or, for `test`, would
    /// do) about them; absent when there were none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<crate::deletions::delete::PruneReport>,
}

/// Builds the report of a plan (and of its run, for `sync`).
pub fn build(
    command: &str,
    names: &[(String, String)],
    stats: &[ListStats],
    plan: &Plan,
    run: Option<&RunResult>,
) -> Report {
    let mut per: Vec<Counts> = stats
        .iter()
        .zip(&plan.unchanged)
        .enumerate()
        .map(|(i, (s, &unchanged))| Counts {
            listed: s.tags,
            filtered: s.filtered(),
            unchanged,
            skipped: plan.still_skipped.get(i).copied().unwrap_or(0),
            ..Counts::default()
        })
        .collect();
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    if run.is_none() {
        for s in &plan.skip {
            let c = &s.candidate;
            per[c.source].skipped += 1;
            skipped.push(SkippedTag {
                source: names[c.source].0.clone(),
                image: c.image.to_string(),
                tag: c.tag.to_string(),
                digest: c.digest.to_string(),
                reason: s.reason.clone(),
            });
        }
    }
    let mut failed_repositories = Vec::new();
    for (source, stat) in stats.iter().enumerate() {
        let name = &names[source].0;
        for f in &stat.failures {
            per[source].failed += 1;
            match &f.tag {
                Some(tag) => failed.push(FailedTag {
                    source: name.clone(),
                    image: f.image.to_string(),
                    tag: tag.to_string(),
                    error: f.error.clone(),
                }),
                None => failed_repositories.push(FailedRepository {
                    source: name.clone(),
                    image: f.image.to_string(),
                    error: f.error.clone(),
                }),
            }
        }
    }
    let not_started: &[Step] = run.map_or(&[], |r| &r.not_started);
    let pending_steps: Box<dyn Iterator<Item = &Step>> = match run {
        Some(_) => Box::new(plan.pending.iter().chain(not_started)),
        None => Box::new(plan.copy.iter().chain(&plan.pending)),
    };
    for step in pending_steps {
        per[step.candidate.source].pending += 1;
    }
    if run.is_none() {
        plan.adopt
            .iter()
            .for_each(|step| per[step.candidate.source].adopted += 1);
    }
    for (source, synced) in run.map_or(&[][..], |r| &r.synced).iter().enumerate() {
        let counts = &mut per[source];
        counts.copied += synced.copied;
        counts.moved += synced.moved;
        counts.adopted += synced.adopted;
    }
    for (source, outcome) in run.map_or(&[][..], |r| &r.outcomes) {
        let counts = &mut per[*source];
        match outcome {
            Outcome::Synced { copied: false, .. } => counts.adopted += 1,
            Outcome::Synced {
                previous: Some(_), ..
            } => counts.moved += 1,
            Outcome::Synced { .. } => counts.copied += 1,
            Outcome::Missing { .. }
            | Outcome::Referrers { .. }
            | Outcome::ReferrersChecked { .. }
            | Outcome::Forgotten { .. }
            | Outcome::DeletedUpstream { .. }
            | Outcome::BackUpstream { .. }
            | Outcome::Pruned { .. } => {}
            Outcome::Skipped {
                image,
                tag,
                digest,
                reason,
                ..
            } => {
                counts.skipped += 1;
                skipped.push(SkippedTag {
                    source: names[*source].0.clone(),
                    image: image.clone(),
                    tag: tag.clone(),
                    digest: digest.to_string(),
                    reason: reason.clone(),
                });
            }
            Outcome::Failed {
                image, tag, error, ..
            } => {
                counts.failed += 1;
                let source = names[*source].0.clone();
                failed.push(FailedTag {
                    source,
                    image: image.clone(),
                    tag: tag.clone(),
                    error: error.clone(),
                });
            }
        }
    }
    match run {
        Some(run) => {
            for (source, rechecked) in run.rechecked.iter().enumerate() {
                per[source].referrers_reread += rechecked.read;
                per[source].referrers_added += rechecked.added;
            }
            for (source, image, tag, error) in &run.referrer_failures {
                per[*source].failed += 1;
                failed.push(FailedTag {
                    source: names[*source].0.clone(),
                    image: image.clone(),
                    tag: tag.clone(),
                    error: format!("its referrers were not read again: {error}"),
                });
            }
        }
        None => plan
            .recheck
            .iter()
            .for_each(|r| per[r.candidate.source].referrers_reread += 1),
    }
    let mut dropped: Vec<BTreeMap<String, usize>> = vec![BTreeMap::new(); names.len()];
    for (source, platforms) in run.map_or(&[][..], |r| &r.dropped_platforms) {
        for platform in platforms {
            *dropped[*source].entry(platform.clone()).or_default() += 1;
        }
    }
    let mut totals = Counts::default();
    per.iter().for_each(|c| totals.add(c));
    let sources = names
        .iter()
        .zip(per)
        .zip(stats)
        .zip(dropped)
        .map(
            |((((source, target), counts), stat), dropped)| SourceReport {
                source: source.clone(),
                target: target.clone(),
                counts,
                removed: stat.removed.clone(),
                images_removed: stat.images_removed.clone(),
                dropped_platforms: dropped,
            },
        )
        .collect();
    let commits = run.map_or(Vec::new(), |r| {
        r.commits
            .iter()
            .map(|c| {
                c.id.as_ref()
                    .map_or(c.message.clone(), |id| format!("{id} {}", c.message))
            })
            .collect()
    });
    let plan_steps = run
        .is_none()
        .then(|| plan.copy.iter().chain(&plan.adopt).cloned().collect());
    Report {
        command: command.to_string(),
        sources,
        totals,
        failed,
        skipped,
        failed_repositories,
        commits,
        commit_sha: run.and_then(|r| r.commits.iter().rev().find_map(|c| c.id.clone())),
        stopped: run.and_then(|r| r.stopped.map(str::to_string)),
        error: run.and_then(|r| r.fatal.clone()),
        unrecorded: run.map_or(0, |r| r.unrecorded),
        plan: plan_steps,
        prune: None,
    }
}

impl Report {
    /// The report of a run that ended before it had a plan (zero counts), so that every
    /// ending still writes `--report` and the Actions outputs.
    pub fn empty(command: &str, names: &[(String, String)]) -> Report {
        Report {
            command: command.to_string(),
            sources: names
                .iter()
                .map(|(source, target)| SourceReport {
                    source: source.clone(),
                    target: target.clone(),
                    counts: Counts::default(),
                    removed: BTreeMap::new(),
                    images_removed: BTreeMap::new(),
                    dropped_platforms: BTreeMap::new(),
                })
                .collect(),
            totals: Counts::default(),
            failed: Vec::new(),
            skipped: Vec::new(),
            failed_repositories: Vec::new(),
            commits: Vec::new(),
            commit_sha: None,
            stopped: None,
            error: None,
            unrecorded: 0,
            plan: None,
            prune: None,
        }
    }

    /// The human summary printed to stderr at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for s in &self.sources {
            let c = &s.counts;
            out.push_str(&format!(
                "{} → {}: {} listed, {} filtered, {} unchanged, {} copied, {} moved, {} adopted, {} skipped, {} failed, {} pending\n",
                s.source, s.target, c.listed, c.filtered, c.unchanged, c.copied, c.moved, c.adopted, c.skipped, c.failed, c.pending
            ));
            if c.referrers_reread > 0 {
                out.push_str(&format!(
                    "  referrers read again for {} unchanged tags: {} new\n",
                    c.referrers_reread, c.referrers_added
                ));
            }
            if !s.removed.is_empty() {
                let by: Vec<String> = s
                    .removed
                    .iter()
                    .map(|(filter, n)| format!("--{filter} removed {n}"))
                    .collect();
                out.push_str(&format!("  filtered: {}\n", by.join(", ")));
            }
            if !s.images_removed.is_empty() {
                let by: Vec<String> = s
                    .images_removed
                    .iter()
                    .map(|(filter, n)| format!("--{filter} removed {n}"))
                    .collect();
                out.push_str(&format!("  images never listed: {}\n", by.join(", ")));
            }
            if !s.dropped_platforms.is_empty() {
                let by: Vec<String> = s
                    .dropped_platforms
                    .iter()
                    .map(|(platform, n)| format!("{platform} ({n} tags)"))
                    .collect();
                out.push_str(&format!(
                    "  platforms not mirrored (--platforms): {}\n",
                    by.join(", ")
                ));
            }
        }
        if let Some(error) = &self.error {
            out.push_str(&format!("stopped: {error}\n"));
            if !self.commits.is_empty() {
                out.push_str(&format!(
                    "  committed before that: {} commit(s), the last {}\n",
                    self.commits.len(),
                    self.commit_sha.as_deref().unwrap_or("(local store)")
                ));
            }
        }
        if self.unrecorded > 0 {
            out.push_str(&format!(
                "not recorded: {} tag(s) copied or adopted, whose commit the signal cut short; the next run adopts them\n",
                self.unrecorded
            ));
        }
        if let Some(why) = &self.stopped {
            out.push_str(&format!(
                "stopped starting copies early ({why}); the rest is pending for the next run\n"
            ));
        }
        for s in &self.skipped {
            out.push_str(&format!(
                "skipped: {}/{}:{}: {}\n",
                s.source, s.image, s.tag, s.reason
            ));
        }
        if let Some(prune) = &self.prune {
            out.push_str(&prune.summary());
        }
        for f in &self.failed_repositories {
            out.push_str(&format!(
                "failed: repository {}/{} could not be listed: {}\n",
                f.source, f.image, f.error
            ));
        }
        for f in &self.failed {
            out.push_str(&format!(
                "failed: {}/{}:{}: {}\n",
                f.source, f.image, f.tag, f.error
            ));
        }
        out
    }
}
