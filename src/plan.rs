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
    /// The manifest media type, where the listing (gcr) or the source HEAD told it.
    #[serde(skip)]
    pub media_type: Option<String>,
    /// The referrer tags of its repository (`sha256-<hex>[.sig|.att|.sbom]`), as listed:
    /// where its referrers are found without the referrers API. Shared per repository.
    #[serde(skip)]
    pub referrer_tags: std::sync::Arc<[Tag]>,
}

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
    let mut to_copy = Vec::new();
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
    to_copy.sort_by_key(order_key);
    plan.adopt.sort_by_key(order_key);
    let take = budget.unwrap_or(usize::MAX).min(to_copy.len());
    plan.pending = to_copy.split_off(take);
    plan.copy = to_copy;
    plan
}

/// Keeps at most `quotas[source]` copies per source (the registry's remaining pull
/// quota), moving the rest to pending; returns how many were moved.
pub fn fit_quotas(plan: &mut Plan, quotas: &[Option<u64>]) -> usize {
    let mut used = vec![0u64; quotas.len()];
    let (mut fits, mut over) = (Vec::new(), Vec::new());
    for step in plan.copy.drain(..) {
        let source = step.candidate.source;
        match quotas[source] {
            Some(quota) if used[source] >= quota => over.push(step),
            _ => {
                used[source] += 1;
                fits.push(step);
            }
        }
    }
    let moved = over.len();
    plan.copy = fits;
    over.append(&mut plan.pending);
    plan.pending = over;
    moved
}

/// Failed-last, then newest upload first (unknown times after known ones), then by name.
fn order_key(step: &Step) -> (bool, Reverse<Option<i64>>, usize, RepoPath, Tag) {
    let c = &step.candidate;
    (
        step.failed_before,
        Reverse(c.uploaded_ms),
        c.source,
        c.image.clone(),
        c.tag.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::record::{Outcome, TagRecord};

    fn digest(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }

    fn head(d: char) -> TargetHead {
        TargetHead {
            digest: digest(d),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        }
    }

    fn candidate(image: &str, tag: &str, d: char, uploaded_ms: Option<i64>) -> Candidate {
        Candidate {
            source: 0,
            image: image.parse().unwrap(),
            source_repo: format!("ns/{image}").parse().unwrap(),
            tag: tag.parse().unwrap(),
            digest: digest(d),
            uploaded_ms,
            target: Repository {
                registry: "t.io".parse().unwrap(),
                path: format!("m/{image}").parse().unwrap(),
            },
            media_type: None,
            referrer_tags: std::sync::Arc::from(Vec::new()),
        }
    }

    fn record_with(entries: &[(&str, &str, Option<char>)]) -> NamespaceRecord {
        let at: Vec<_> = entries
            .iter()
            .map(|&(image, tag, d)| (image, tag, d, "t.io/m"))
            .collect();
        record_at(&at)
    }

    /// Records of (image, tag, digest, target namespace the image was mapped under).
    fn record_at(entries: &[(&str, &str, Option<char>, &str)]) -> NamespaceRecord {
        let mut record = NamespaceRecord::new("s".into(), "t".into());
        let outcomes: Vec<_> = entries
            .iter()
            .map(|(image, tag, d, target)| Outcome::Synced {
                image: image.to_string(),
                tag: tag.to_string(),
                target: format!("{target}/{image}"),
                record: TagRecord {
                    deleted_upstream_at: None,
                    pruned_at: None,
                    digest: d.map(digest),
                    source_digest: None,
                    media_type: String::new(),
                    platforms: vec![],
                    referrers: Vec::new(),
                    dropped_platforms: vec![],
                    synced_at: "T".into(),
                },
                previous: None,
                copied: true,
            })
            .collect();
        record.apply(&outcomes);
        record
    }

    fn names(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{}:{}", s.candidate.image, s.candidate.tag))
            .collect()
    }

    #[test]
    fn new_moved_unchanged_adopted_and_unverified() {
        let candidates = [
            candidate("a", "1", 'a', None),
            candidate("a", "2", 'b', None),
            candidate("b", "1", 'c', None),
            candidate("c", "1", 'd', None),
            candidate("d", "1", 'e', None),
        ];
        let records = [record_with(&[
            ("a", "1", Some('a')),
            ("a", "2", Some('0')),
            ("d", "1", None),
        ])];
        let checks: Vec<_> = needs_target_check(&candidates, &records)
            .iter()
            .map(|c| c.image.to_string())
            .collect();
        assert_eq!(checks, ["b", "c", "d"]);
        let heads = HashMap::from([
            ((0, "c".parse().unwrap(), "1".parse().unwrap()), head('d')),
            ((0, "d".parse().unwrap(), "1".parse().unwrap()), head('0')),
        ]);
        let plan = plan(candidates.clone(), &records, &heads, None);
        assert_eq!(plan.unchanged, [1]);
        assert_eq!(names(&plan.adopt), ["c:1"]);
        assert_eq!(
            plan.adopt[0].media_type.as_deref(),
            Some("application/vnd.oci.image.manifest.v1+json")
        );
        let reasons: Vec<_> = plan.copy.iter().map(|s| s.reason).collect();
        assert_eq!(names(&plan.copy), ["a:2", "b:1", "d:1"]);
        assert_eq!(reasons, [Reason::Moved, Reason::New, Reason::Unverified]);
        assert_eq!(plan.copy[0].previous, Some(digest('0')));
    }

    #[test]
    fn what_the_listing_drops_as_unchanged_is_what_the_plan_counts_unchanged() {
        let mut elsewhere = candidate("e", "1", 'e', None);
        elsewhere.target.path = "other/e".parse().unwrap();
        let mut schema1 = candidate("f", "1", 'f', None);
        schema1.media_type =
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws".into());
        let candidates = [
            candidate("a", "1", 'a', None),
            candidate("a", "2", 'b', None),
            candidate("b", "1", 'c', None),
            candidate("d", "1", 'e', None),
            elsewhere,
            schema1,
        ];
        let records = [record_with(&[
            ("a", "1", Some('a')),
            ("a", "2", Some('0')),
            ("d", "1", None),
            ("e", "1", Some('e')),
            ("f", "1", Some('f')),
        ])];
        let settled: Vec<String> = candidates
            .iter()
            .filter(|c| unchanged(c, &records[0], None))
            .map(|c| format!("{}:{}", c.image, c.tag))
            .collect();
        assert_eq!(settled, ["a:1"]);
        let all = plan(candidates.clone(), &records, &HashMap::new(), None);
        assert_eq!(all.unchanged, [settled.len()]);
        let rest = candidates
            .iter()
            .filter(|c| !unchanged(c, &records[0], None));
        let without = plan(rest.cloned(), &records, &HashMap::new(), None);
        assert_eq!(without.unchanged, [0]);
        assert_eq!(names(&without.copy), names(&all.copy));
        assert_eq!(without.skip, all.skip);
    }

    #[test]
    fn quotas_cap_copies_per_source() {
        let mut second = candidate("z", "9", 'a', None);
        second.source = 1;
        let candidates = [
            candidate("a", "1", 'a', None),
            candidate("b", "1", 'a', None),
            second,
        ];
        let records = [
            NamespaceRecord::new("s".into(), "t".into()),
            NamespaceRecord::new("s2".into(), "t".into()),
        ];
        let mut planned = plan(candidates.clone(), &records, &HashMap::new(), None);
        assert_eq!(fit_quotas(&mut planned, &[Some(1), None]), 1);
        assert_eq!(names(&planned.copy), ["a:1", "z:9"]);
        assert_eq!(names(&planned.pending), ["b:1"]);
    }

    #[test]
    fn order_is_failed_last_then_newest_then_name_and_budget_takes_the_head() {
        let candidates = [
            candidate("z", "1", 'a', None),
            candidate("y", "1", 'a', Some(5)),
            candidate("x", "1", 'a', Some(9)),
            candidate("a", "1", 'a', None),
            candidate("b", "1", 'a', Some(100)),
        ];
        let mut records = [NamespaceRecord::new("s".into(), "t".into())];
        records[0].apply(&[Outcome::Failed {
            image: "b".into(),
            tag: "1".into(),
            error: "e".into(),
            at: "T".into(),
        }]);
        let all = plan(candidates.clone(), &records, &HashMap::new(), None);
        assert_eq!(names(&all.copy), ["x:1", "y:1", "a:1", "z:1", "b:1"]);
        let budgeted = plan(candidates.clone(), &records, &HashMap::new(), Some(2));
        assert_eq!(names(&budgeted.copy), ["x:1", "y:1"]);
        assert_eq!(names(&budgeted.pending), ["a:1", "z:1", "b:1"]);
        let mut shuffled = candidates.to_vec();
        shuffled.reverse();
        assert_eq!(
            plan(shuffled.clone(), &records, &HashMap::new(), Some(2)),
            budgeted
        );
    }

    #[test]
    fn uncopyable_tags_are_skipped_unfetched_and_re_evaluated_when_they_move() {
        let signed = "application/vnd.docker.distribution.manifest.v1+prettyjws";
        let mut old = candidate("old", "0.8", 'a', None);
        old.media_type = Some(signed.into());
        let mut vendor = candidate("odd", "1", 'b', None);
        vendor.media_type = Some("application/vnd.example.thing.v3+json".into());
        let mut fine = candidate("new", "1", 'c', None);
        fine.media_type = Some("application/vnd.docker.distribution.manifest.v2+json".into());
        let candidates = [old.clone(), vendor, fine];
        let mut records = [NamespaceRecord::new("s".into(), "t".into())];
        let checks = needs_target_check(&candidates, &records);
        assert_eq!(
            checks.len(),
            1,
            "only the copyable tag is HEADed on the target"
        );
        let first = plan(candidates.clone(), &records, &HashMap::new(), None);
        let skipped: Vec<_> = first
            .skip
            .iter()
            .map(|s| format!("{}:{}", s.candidate.image, s.candidate.tag))
            .collect();
        assert_eq!(skipped, ["old:0.8", "odd:1"]);
        assert!(first.skip[0].reason.starts_with("schema 1 manifest"));
        assert_eq!(names(&first.copy), ["new:1"]);
        records[0].apply(&[Outcome::Skipped {
            image: "old".into(),
            tag: "0.8".into(),
            digest: digest('a'),
            reason: first.skip[0].reason.clone(),
            at: "T".into(),
        }]);
        // Recorded at this digest: no target HEAD, no copy, whatever the listing says.
        old.media_type = None;
        let again = plan([old.clone()], &records, &HashMap::new(), None);
        assert!(needs_target_check(&[old.clone()], &records).is_empty());
        assert_eq!(
            (again.still_skipped[0], again.skip.len(), again.copy.len()),
            (1, 0, 0)
        );
        // Moved: judged afresh (HEADed on the target, planned as new).
        let mut moved = old;
        moved.digest = digest('d');
        assert_eq!(needs_target_check(&[moved.clone()], &records).len(), 1);
        let after = plan([moved], &records, &HashMap::new(), None);
        assert_eq!(
            (after.still_skipped[0], names(&after.copy)),
            (0, vec!["old:0.8".to_string()])
        );
    }

    fn key(image: &str, tag: &str) -> TargetKey {
        (0, image.parse().unwrap(), tag.parse().unwrap())
    }

    #[test]
    fn a_tag_recorded_at_another_target_is_retargeted_never_unchanged() {
        let candidates = [
            candidate("a", "1", 'a', None),
            candidate("a", "2", 'b', None),
            candidate("b", "1", 'c', None),
            candidate("c", "1", 'd', None),
        ];
        // a and b were mirrored under another name (template or target changed); c was not.
        let records = [record_at(&[
            ("a", "1", Some('a'), "t.io/old"),
            ("a", "2", Some('0'), "t.io/old"),
            ("b", "1", Some('c'), "u.io/m"),
            ("c", "1", Some('d'), "t.io/m"),
        ])];
        let checks: Vec<String> = needs_target_check(&candidates, &records)
            .iter()
            .map(|c| format!("{}:{}", c.image, c.tag))
            .collect();
        assert_eq!(checks, ["a:1", "a:2", "b:1"], "the new target is HEADed");
        // The new target already has a:1 (adopted); not a:2 (moved too) nor b:1 (copied).
        let heads = HashMap::from([(key("a", "1"), head('a')), (key("a", "2"), head('0'))]);
        let plan = plan(candidates.clone(), &records, &heads, None);
        assert_eq!(plan.unchanged, [1], "only c:1 is where it was recorded");
        assert_eq!(names(&plan.adopt), ["a:1"]);
        assert_eq!(plan.adopt[0].reason, Reason::Adopt);
        assert_eq!(plan.adopt[0].retarget_from.as_deref(), Some("t.io/old/a"));
        assert_eq!(names(&plan.copy), ["a:2", "b:1"]);
        assert!(plan.copy.iter().all(|s| s.reason == Reason::Retarget));
        assert_eq!(plan.copy[0].previous, Some(digest('0')), "a:2 also moved");
        assert_eq!(plan.copy[1].previous, None);
        assert_eq!(plan.copy[1].retarget_from.as_deref(), Some("u.io/m/b"));
    }

    #[test]
    fn a_partly_retargeted_image_leaves_no_tag_looking_mirrored_at_the_new_target() {
        let candidates = [
            candidate("a", "1", 'a', None),
            candidate("a", "2", 'b', None),
            candidate("a", "3", 'c', None),
        ];
        let mut records = [record_at(&[
            ("a", "1", Some('a'), "t.io/old"),
            ("a", "2", Some('b'), "t.io/old"),
            ("a", "3", Some('c'), "t.io/old"),
        ])];
        let heads = HashMap::from([(key("a", "1"), head('a'))]);
        // The budget copies one tag; a:1 is adopted; a:3 waits for the next run.
        let first = plan(candidates.clone(), &records, &heads, Some(1));
        assert_eq!(
            (
                names(&first.adopt),
                names(&first.copy),
                names(&first.pending)
            ),
            (vec!["a:1".into()], vec!["a:2".into()], vec!["a:3".into()])
        );
        let synced = |step: &Step| Outcome::Synced {
            image: step.candidate.image.to_string(),
            tag: step.candidate.tag.to_string(),
            target: step.candidate.target.to_string(),
            record: TagRecord {
                deleted_upstream_at: None,
                pruned_at: None,
                digest: Some(step.candidate.digest.clone()),
                source_digest: None,
                media_type: String::new(),
                platforms: vec![],
                referrers: Vec::new(),
                dropped_platforms: vec![],
                synced_at: "T2".into(),
            },
            previous: None,
            copied: true,
        };
        records[0].apply(&[synced(&first.adopt[0]), synced(&first.copy[0])]);
        assert_eq!(records[0].images["a"].target, "t.io/m/a");
        // a:3 was never copied to t.io/m: it must not now pass as mirrored there.
        let checks = needs_target_check(&candidates, &records);
        assert_eq!(checks.len(), 1);
        let second = plan(candidates.clone(), &records, &HashMap::new(), None);
        assert_eq!(second.unchanged, [2]);
        assert_eq!(names(&second.copy), ["a:3"]);
    }
}
