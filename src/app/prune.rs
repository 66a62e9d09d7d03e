//! Upstream deletions in a run: the marks the listing made, what `--prune` plans, and the
//! deletions themselves (one target client at a time; a target that refuses deletes is
//! not asked again).

use std::collections::HashMap;

use super::connect::Registries;
use crate::deletions::delete::{Deleted, PruneReport, PruneTag, child_of, delete_step, pruned};
use crate::deletions::{PrunePlan, PruneStep, plan_prune};
use crate::exit::Failure;
use crate::metadata::record::{NamespaceRecord, Outcome, now_utc};
use crate::metadata::{Committed, MetadataStore, Recorder};
use crate::reference::RepoPath;
use crate::settings::Settings;

/// The listing's marks, and the deletions `--prune` would make with them applied.
pub(super) struct Upstream {
    /// `DeletedUpstream` and `BackUpstream` outcomes, by source index.
    pub(super) marks: Vec<(usize, Outcome)>,
    /// What `--prune` deletes (computed whether or not it is on, for `test`).
    plan: PrunePlan,
}

impl Upstream {
    /// Applies `marks` to the run's copy of the records (the store gets them with the
    /// listing's commit) and plans the pruning over them.
    pub(super) fn new(marks: Vec<(usize, Outcome)>, records: &mut [NamespaceRecord]) -> Self {
        for (source, mark) in &marks {
            records[*source].apply([mark]);
        }
        Upstream {
            plan: plan_prune(records),
            marks,
        }
    }

    /// The report of the marks and the held tags; `None` when there is nothing to tell.
    fn report(&self, settings: &Settings) -> PruneReport {
        let source = |s: usize| settings.sources[s].namespace.to_string();
        let entry = |s: usize, image: &str, tag: &str, detail: Option<String>| PruneTag {
            source: source(s),
            image: image.to_string(),
            tag: tag.to_string(),
            detail,
        };
        let mut report = PruneReport::default();
        for (s, mark) in &self.marks {
            match mark {
                Outcome::DeletedUpstream { image, tag, .. } => {
                    report.removed_upstream.push(entry(*s, image, tag, None))
                }
                Outcome::BackUpstream { image, tag } => {
                    report.back_upstream.push(entry(*s, image, tag, None))
                }
                _ => {}
            }
        }
        if settings.prune {
            for held in &self.plan.held {
                let detail = Some(held.hold.to_string());
                report
                    .held
                    .push(entry(held.source, &held.image, &held.tag, detail));
            }
        }
        report
    }

    /// `gcrsync test`: prints the marks and what `--prune` would delete, and reports them.
    pub(super) fn show(&self, settings: &Settings) -> Option<PruneReport> {
        let mut report = self.report(settings);
        for t in &report.removed_upstream {
            println!(
                "{}/{}:{} (removed upstream: mark)",
                t.source, t.image, t.tag
            );
        }
        for t in &report.back_upstream {
            println!("{}/{}:{} (back upstream: unmark)", t.source, t.image, t.tag);
        }
        let waiting = self.plan.tags();
        if !settings.prune {
            if waiting > 0 {
                println!(
                    "{waiting} tag(s) removed upstream are still in the mirror; --prune deletes them"
                );
            }
        } else if let Some(error) = self.over_max(settings) {
            println!("prune: {error}");
            report.error = Some(error);
        } else {
            for step in &self.plan.delete {
                for tag in &step.tags {
                    println!(
                        "{}:{tag} (prune: delete {} from the target)",
                        step.target,
                        step.digest.short()
                    );
                    let name = settings.sources[step.source].namespace.to_string();
                    report.pruned.push(PruneTag {
                        source: name,
                        image: step.image.clone(),
                        tag: tag.clone(),
                        detail: None,
                    });
                }
            }
            for t in &report.held {
                let detail = t.detail.as_deref().unwrap_or_default();
                println!("{}/{}:{} (prune: kept, {detail})", t.source, t.image, t.tag);
            }
        }
        (!report.is_empty()).then_some(report)
    }

    /// Why `--prune-max` refuses this plan, if it does.
    fn over_max(&self, settings: &Settings) -> Option<String> {
        let tags = self.plan.tags();
        (tags > settings.prune_max).then(|| {
            format!(
                "{tags} tags are to be pruned, more than --prune-max {} (GCRSYNC_PRUNE_MAX) allows; nothing was deleted. Check the source listing (the report's prune.removed_upstream, each namespace's README), then raise --prune-max to at least {tags} to let it through",
                settings.prune_max
            )
        })
    }

    /// `--prune`: deletes the planned tags from their targets and records them as pruned
    /// (one commit). Refusals and failures are reported, never fatal.
    pub(super) async fn prune<M: MetadataStore>(
        &self,
        settings: &Settings,
        registries: &Registries,
        recorder: &Recorder<M>,
    ) -> Result<(Option<Committed>, Option<PruneReport>), Failure> {
        let mut report = self.report(settings);
        if !settings.prune || self.plan.delete.is_empty() {
            return Ok((None, (!report.is_empty()).then_some(report)));
        }
        if let Some(error) = self.over_max(settings) {
            tracing::error!("{error}");
            report.error = Some(error);
            return Ok((None, Some(report)));
        }
        let at = now_utc();
        let mut outcomes = Vec::new();
        // The first refusal of each target client, which the rest of its steps share.
        let mut refused: HashMap<usize, String> = HashMap::new();
        // Live indexes read to guard their children: index digest → children.
        let mut read = HashMap::new();
        for step in &self.plan.delete {
            let source = settings.sources[step.source].namespace.to_string();
            let tag_entry = |tag: &str, detail: Option<String>| PruneTag {
                source: source.clone(),
                image: step.image.clone(),
                tag: tag.to_string(),
                detail,
            };
            let client = registries.target_of[step.source];
            if let Some(why) = refused.get(&client) {
                let detail = format!("not asked: the target refused a deletion before ({why})");
                let tags = step.tags.iter();
                report
                    .refused
                    .extend(tags.map(|t| tag_entry(t, Some(detail.clone()))));
                continue;
            }
            let Some(repo) = target_path(settings, step) else {
                let detail = format!(
                    "recorded at {}, outside the target {}; delete it there by hand",
                    step.target, settings.sources[step.source].target
                );
                let tags = step.tags.iter();
                report
                    .held
                    .extend(tags.map(|t| tag_entry(t, Some(detail.clone()))));
                continue;
            };
            let target = registries.target(step.source);
            let hold = match child_of(target.as_ref(), &repo, step, &mut read).await {
                Ok(Some(index)) => Some((
                    &mut report.held,
                    format!(
                        "a child of the index of {index}, which is still upstream; deleting it would break that index"
                    ),
                )),
                Ok(None) => None,
                Err(why) => Some((&mut report.failed, why)),
            };
            if let Some((list, why)) = hold {
                list.extend(step.tags.iter().map(|t| tag_entry(t, Some(why.clone()))));
                continue;
            }
            let done = delete_step(target.as_ref(), &repo, step).await;
            for (tag, why) in done.moved {
                report.held.push(tag_entry(&tag, Some(why)));
            }
            match done.deleted {
                Deleted::Pruned(tags) => {
                    for tag in tags {
                        tracing::info!("pruned {}:{tag} ({})", step.target, step.digest.short());
                        outcomes.push((step.source, pruned(step, &tag, &at)));
                        report.pruned.push(tag_entry(&tag, None));
                    }
                }
                Deleted::Refused(why) => {
                    tracing::warn!(
                        "{}: the target refuses deletes ({why}); --prune deletes nothing there (enable deletes on the registry, give credentials allowed to delete, or drop --prune)",
                        step.target
                    );
                    let tags = step.tags.iter();
                    report
                        .refused
                        .extend(tags.map(|t| tag_entry(t, Some(why.clone()))));
                    refused.insert(client, why);
                }
                Deleted::Failed(why) => {
                    tracing::error!("{}@{}: {why}", step.target, step.digest.short());
                    let tags = step.tags.iter();
                    report
                        .failed
                        .extend(tags.map(|t| tag_entry(t, Some(why.clone()))));
                }
            }
        }
        let commit = recorder.commit(&outcomes, jiff::Timestamp::now()).await?;
        Ok((commit, Some(report)))
    }
}

/// The repository path of a step's recorded target on its source's target registry, or
/// `None` when it was recorded on another registry (a changed `--target`).
fn target_path(settings: &Settings, step: &PruneStep) -> Option<RepoPath> {
    let registry = settings.sources[step.source].target.registry.to_string();
    let path = step.target.strip_prefix(&registry)?.strip_prefix('/')?;
    path.parse().ok()
}
