//! The plan: which listed tags to copy, adopt or leave, in what order, within the budget.
//! A pure function of the listing, the records and the target HEADs (SPEC §4.2).

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::Serialize;

mod share;
pub use share::share;

use crate::metadata::record::NamespaceRecord;
use crate::oci::manifest::skip_reason;
use crate::platforms::{PlatformSet, rechosen, skipped_by_other_choice};
use crate::reference::{Digest, RepoPath, Repository, Tag};

/// A listed, filtered and mapped source tag with its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Index of its source in the settings (and of its record).
    pub source: usize,
    /// Image name relative to the source namespace.
    pub image: RepoPath,
    /// Its full repository path at the source.
    pub source_repo: RepoPath,
    /// The tag.
    pub tag: Tag,
    /// The source manifest digest.
    pub digest: Digest,
    /// Upload time at the source, where the listing tells it (ms since the epoch).
    pub uploaded_ms: Option<i64>,
    /// The target repository it maps to.
    pub target: Repository,
    /// The manifest media type, where the listing (gcr) or the source HEAD told it; the
    /// usual ones shared by every candidate (`media_type`), not one string per tag.
    #[serde(skip)]
    pub media_type: Option<std::sync::Arc<str>>,
    /// The referrer tags of its repository (`sha256-<hex>[.sig|.att|.sbom]`), as listed:
    /// where its referrers are found without the referrers API. Shared per repository.
    #[serde(skip)]
    pub referrer_tags: std::sync::Arc<[crate::referrers::ListedTag]>,
}

pub use crate::oci::manifest::shared_media_type as media_type;

/// The key of a target HEAD result.
pub type TargetKey = (usize, RepoPath, Tag);

/// What the target serves under a candidate's tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHead {
    /// Its manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
}

/// Why a tag is in the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Never recorded, not on the target.
    New,
    /// Recorded with another digest: the tag moved at the source.
    Moved,
    /// Recorded without a digest (imported from a seed list) and not matching the target.
    Unverified,
    /// Not recorded, but the target already holds this digest: record without copying.
    /// Also a re-targeted tag (see [`Step::retarget_from`]) the new target already holds.
    Adopt,
    /// Recorded at another target repository than the current mapping gives (changed
    /// `--name-template`, `--flatten-separator` or `--target`), and not there: copied.
    Retarget,
    /// Unchanged upstream, but mirrored under another `--platforms` choice: copied again.
    Platforms,
}

/// One tag to act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The tag.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Why.
    pub reason: Reason,
    /// The recorded digest it replaces, when it moved.
    pub previous: Option<Digest>,
    /// Whether it failed on the last run (such tags go last).
    pub failed_before: bool,
    /// For an adopted tag: the media type the target serves.
    pub media_type: Option<String>,
    /// For a re-targeted tag (copied or adopted): the target repository it was recorded at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retarget_from: Option<String>,
}

/// What a run will do.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Tags to copy, in order, within `--process-count`.
    pub copy: Vec<Step>,
    /// Tags to record without copying.
    pub adopt: Vec<Step>,
    /// Tags that need copying but exceed the budget: left for the next run.
    pub pending: Vec<Step>,
    /// Tags already mirrored with the listed digest, per source.
    pub unchanged: Vec<usize>,
    /// Tags the listing shows cannot be mirrored verbatim: recorded as skipped, unfetched.
    pub skip: Vec<Skipping>,
    /// Tags recorded as skipped at the listed digest, per source: nothing is sent for them.
    pub still_skipped: Vec<usize>,
    /// Unchanged tags (counted in `unchanged`) whose referrers are read again this run.
    pub recheck: Vec<Recheck>,
    /// Per source, what to record as `referrers_checked_through` once every re-read of
    /// that source is done (`None`: the schedule stays where it is).
    #[serde(skip)]
    pub recheck_through: Vec<Option<String>>,
}

/// An unchanged tag whose referrers are read again (see `referrers::recheck`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recheck {
    /// The tag.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Why now.
    pub why: crate::referrers::recheck::Why,
    /// The referrers recorded already (not copied again).
    #[serde(skip)]
    pub known: Vec<Digest>,
    /// The target's digest of the tag, when it is an index: its children's referrers
    /// are read too.
    #[serde(skip)]
    pub index: Option<Digest>,
}

/// A tag to record as skipped without any request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipping {
    /// The tag.
    #[serde(flatten)]
    pub candidate: Candidate,
    /// Why it cannot be mirrored.
    pub reason: String,
}

/// A candidate's skip verdict before any request: already skipped at this digest
/// (`Some(None)`), or newly uncopyable by its listed media type (`Some(Some(reason))`).
/// A skip for want of a chosen platform holds only under the choice that made it.
fn skip_verdict(
    c: &Candidate,
    record: &NamespaceRecord,
    chosen: Option<&PlatformSet>,
) -> Option<Option<String>> {
    let key = format!("{}:{}", c.image, c.tag);
    let same_choice = record
        .skipped
        .get(&key)
        .is_none_or(|s| !skipped_by_other_choice(&s.reason, chosen));
    if record.skipped_at(c.image.as_str(), c.tag.as_str(), &c.digest) && same_choice {
        return Some(None);
    }
    let reason = c.media_type.as_deref().and_then(skip_reason)?;
    Some(Some(reason))
}

/// The target repository a candidate's record names, when it is not the one the current
/// mapping gives: the tag must be re-targeted.
fn recorded_elsewhere<'r>(c: &Candidate, record: &'r NamespaceRecord) -> Option<&'r str> {
    let image = record.images.get(c.image.as_str())?;
    image.tags.get(c.tag.as_str())?;
    (image.target != c.target.to_string()).then_some(image.target.as_str())
}

/// Whether the records show `c` mirrored as listed, so that the plan only counts it as
/// unchanged (pure; the same test as [`plan_platforms`]'s): the listing drops such a
/// candidate as soon as it is made, so that a no-op does not hold one per tag (issue 14).
pub fn unchanged(c: &Candidate, record: &NamespaceRecord, chosen: Option<&PlatformSet>) -> bool {
    let (image, tag) = (c.image.as_str(), c.tag.as_str());
    matches!(record.digest(image, tag), Some(Some(d)) if *d == c.digest)
        && skip_verdict(c, record, chosen).is_none()
        && recorded_elsewhere(c, record).is_none()
        && record.images[image]
            .tags
            .get(tag)
            .is_some_and(|t| !rechosen(&t.media_type, &t.platforms, &t.dropped_platforms, chosen))
}

/// The candidates whose state on the target must be known before planning: those
/// without a record, recorded without a digest, or recorded at another target.
pub fn needs_target_check<'a>(
    candidates: &'a [Candidate],
    records: &[NamespaceRecord],
) -> Vec<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| {
            let record = &records[c.source];
            let verified = matches!(
                record.digest(c.image.as_str(), c.tag.as_str()),
                Some(Some(_))
            );
            !verified || recorded_elsewhere(c, record).is_some()
        })
        // Any skip at this digest spares the check (one under another `--platforms` is
        // judged again by a copy, which needs no target state).
        .filter(|c| {
            let record = &records[c.source];
            !record.skipped_at(c.image.as_str(), c.tag.as_str(), &c.digest)
                && skip_verdict(c, record, None).is_none()
        })
        .collect()
}

/// Decides each candidate's fate. `target_heads` holds what the target serves for each
/// candidate returned by [`needs_target_check`] that it holds (a checked tag not in it is
/// absent). `budget`: `None` = no limit.
/// The candidates move into the plan's steps: at 15,000 tags a copy of each was most of
/// the run's peak memory.
pub fn plan(
    candidates: impl IntoIterator<Item = Candidate>,
    records: &[NamespaceRecord],
    target_heads: &HashMap<TargetKey, TargetHead>,
    budget: Option<usize>,
) -> Plan {
    plan_platforms(candidates, records, target_heads, budget, &[])
}

/// [`plan`] under each source's `platforms` (`chosen[source]`; `None` or missing: every
/// platform): a tag mirrored under another choice of platforms is copied again (seen from
/// its record, without a request).
pub fn plan_platforms(
    candidates: impl IntoIterator<Item = Candidate>,
    records: &[NamespaceRecord],
    target_heads: &HashMap<TargetKey, TargetHead>,
    budget: Option<usize>,
    chosen: &[Option<PlatformSet>],
) -> Plan {
    let mut plan = Plan {
        unchanged: vec![0; records.len()],
        still_skipped: vec![0; records.len()],
        ..Plan::default()
    };
    let candidates = candidates.into_iter();
    // Most candidates that reach the plan are copied: sized once, not grown by doubling.
    let mut to_copy = Vec::with_capacity(candidates.size_hint().0);
    for c in candidates {
        let record = &records[c.source];
        let chosen = chosen.get(c.source).and_then(Option::as_ref);
        match skip_verdict(&c, record, chosen) {
            Some(None) => {
                plan.still_skipped[c.source] += 1;
                continue;
            }
            Some(Some(reason)) => {
                plan.skip.push(Skipping {
                    candidate: c,
                    reason,
                });
                continue;
            }
            None => {}
        }
        let (image, tag) = (c.image.as_str(), c.tag.as_str());
        let key = (c.source, c.image.clone(), c.tag.clone());
        let on_target = target_heads
            .get(&key)
            .filter(|h| h.digest == c.digest)
            .cloned();
        let recorded = record.digest(image, tag);
        let elsewhere = match recorded {
            Some(Some(_)) => recorded_elsewhere(&c, record),
            _ => None,
        };
        let (reason, previous) = match recorded {
            Some(Some(d)) if elsewhere.is_some() => {
                let moved = (*d != c.digest).then(|| d.clone());
                match on_target {
                    Some(_) => (Reason::Adopt, moved),
                    None => (Reason::Retarget, moved),
                }
            }
            Some(Some(d)) if *d == c.digest => {
                let tag = &record.images[image].tags[tag];
                if !rechosen(
                    &tag.media_type,
                    &tag.platforms,
                    &tag.dropped_platforms,
                    chosen,
                ) {
                    plan.unchanged[c.source] += 1;
                    continue;
                }
                (Reason::Platforms, None)
            }
            Some(Some(d)) => (Reason::Moved, Some(d.clone())),
            _ if on_target.is_some() => (Reason::Adopt, None),
            Some(None) => (Reason::Unverified, None),
            None => (Reason::New, None),
        };
        let failed_before = record.failed_before(image, tag);
        let retarget_from = elsewhere.map(str::to_string);
        let step = Step {
            candidate: c,
            reason,
            previous,
            failed_before,
            media_type: on_target.map(|h| h.media_type),
            retarget_from,
        };
        if reason == Reason::Adopt {
            plan.adopt.push(step)
        } else {
            to_copy.push(step)
        }
    }
    // Unstable sorts, in place: the key is unique per step (source, image, tag), so the
    // order is the one a stable sort gives, without a stable sort's scratch copy of the
    // steps (3.7 MB at 15,000 tags).
    to_copy.sort_unstable_by(|a, b| order_key(a).cmp(&order_key(b)));
    plan.adopt
        .sort_unstable_by(|a, b| order_key(a).cmp(&order_key(b)));
    let take = budget.unwrap_or(usize::MAX).min(to_copy.len());
    plan.pending = to_copy.split_off(take);
    if !plan.pending.is_empty() {
        to_copy.shrink_to_fit();
    }
    plan.copy = to_copy;
    plan
}

/// Keeps at most `quotas[source]` copies per source (the registry's remaining pull
/// quota), moving the rest to pending; returns how many were moved.
pub fn fit_quotas(plan: &mut Plan, quotas: &[Option<u64>]) -> usize {
    let mut used = vec![0u64; quotas.len()];
    let over = split_off_by(&mut plan.copy, |step| {
        let source = step.candidate.source;
        match quotas[source] {
            Some(quota) if used[source] >= quota => false,
            _ => {
                used[source] += 1;
                true
            }
        }
    });
    let moved = over.len();
    to_pending(plan, over);
    moved
}

/// Takes the steps `keep` refuses (asked once each, in order) out of `steps`, both parts
/// in order. Nothing is allocated when all are kept, and otherwise each part once at its
/// size: a plan holds 15,000 steps of ≈ 250 bytes at 15,000 tags (issue 14).
pub(crate) fn split_off_by(
    steps: &mut Vec<Step>,
    mut keep: impl FnMut(&Step) -> bool,
) -> Vec<Step> {
    let verdicts: Vec<bool> = steps.iter().map(&mut keep).collect();
    let kept = verdicts.iter().filter(|k| **k).count();
    if kept == steps.len() {
        return Vec::new();
    }
    let (mut yes, mut no) = (
        Vec::with_capacity(kept),
        Vec::with_capacity(steps.len() - kept),
    );
    for (step, keep) in std::mem::take(steps).into_iter().zip(verdicts) {
        if keep { yes.push(step) } else { no.push(step) }
    }
    *steps = yes;
    no
}

/// Puts `over` ahead of the plan's pending steps.
pub(crate) fn to_pending(plan: &mut Plan, mut over: Vec<Step>) {
    if !over.is_empty() {
        over.append(&mut plan.pending);
        plan.pending = over;
    }
}

/// Failed-last, then newest upload first (unknown times after known ones), then by name.
fn order_key(step: &Step) -> (bool, Reverse<Option<i64>>, usize, &RepoPath, &Tag) {
    let c = &step.candidate;
    (
        step.failed_before,
        Reverse(c.uploaded_ms),
        c.source,
        &c.image,
        &c.tag,
    )
}

#[cfg(test)]
mod tests;
