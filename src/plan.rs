//! The plan: which listed tags to copy, adopt or leave, in what order, within the budget.
//! A pure function of the listing, the records and the target HEADs (SPEC §4.2).

use std::cmp::Reverse;
use std::collections::HashMap;

use serde::Serialize;

use crate::metadata::record::NamespaceRecord;
use crate::oci::manifest::skip_reason;
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
    Adopt,
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
fn skip_verdict(c: &Candidate, record: &NamespaceRecord) -> Option<Option<String>> {
    if record.skipped_at(c.image.as_str(), c.tag.as_str(), &c.digest) {
        return Some(None);
    }
    let reason = c.media_type.as_deref().and_then(skip_reason)?;
    Some(Some(reason))
}

/// The candidates whose state on the target must be known before planning: those
/// without a record, or recorded without a digest.
pub fn needs_target_check<'a>(
    candidates: &'a [Candidate],
    records: &[NamespaceRecord],
) -> Vec<&'a Candidate> {
    candidates
        .iter()
        .filter(|c| {
            !matches!(
                records[c.source].digest(c.image.as_str(), c.tag.as_str()),
                Some(Some(_))
            )
        })
        .filter(|c| skip_verdict(c, &records[c.source]).is_none())
        .collect()
}

/// Decides each candidate's fate. `target_heads` holds what the target serves for each
/// candidate returned by [`needs_target_check`] (`None`: absent). `budget`: `None` = no limit.
pub fn plan(
    candidates: &[Candidate],
    records: &[NamespaceRecord],
    target_heads: &HashMap<TargetKey, Option<TargetHead>>,
    budget: Option<usize>,
) -> Plan {
    let mut plan = Plan {
        unchanged: vec![0; records.len()],
        still_skipped: vec![0; records.len()],
        ..Plan::default()
    };
    let mut to_copy = Vec::new();
    for c in candidates {
        let record = &records[c.source];
        match skip_verdict(c, record) {
            Some(None) => {
                plan.still_skipped[c.source] += 1;
                continue;
            }
            Some(Some(reason)) => {
                let candidate = c.clone();
                plan.skip.push(Skipping { candidate, reason });
                continue;
            }
            None => {}
        }
        let (image, tag) = (c.image.as_str(), c.tag.as_str());
        let key = (c.source, c.image.clone(), c.tag.clone());
        let on_target = target_heads
            .get(&key)
            .cloned()
            .flatten()
            .filter(|h| h.digest == c.digest);
        let (reason, previous) = match record.digest(image, tag) {
            Some(Some(d)) if *d == c.digest => {
                plan.unchanged[c.source] += 1;
                continue;
            }
            Some(Some(d)) => (Reason::Moved, Some(d.clone())),
            _ if on_target.is_some() => (Reason::Adopt, None),
            Some(None) => (Reason::Unverified, None),
            None => (Reason::New, None),
        };
        let step = Step {
            candidate: c.clone(),
            reason,
            previous,
            failed_before: record.failed_before(image, tag),
            media_type: on_target.map(|h| h.media_type),
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
        }
    }

    fn record_with(entries: &[(&str, &str, Option<char>)]) -> NamespaceRecord {
        let mut record = NamespaceRecord::new("s".into(), "t".into());
        let outcomes: Vec<_> = entries
            .iter()
            .map(|(image, tag, d)| Outcome::Synced {
                image: image.to_string(),
                tag: tag.to_string(),
                target: String::new(),
                record: TagRecord {
                    digest: d.map(digest),
                    media_type: String::new(),
                    platforms: vec![],
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
            ((0, "b".parse().unwrap(), "1".parse().unwrap()), None),
            (
                (0, "c".parse().unwrap(), "1".parse().unwrap()),
                Some(head('d')),
            ),
            (
                (0, "d".parse().unwrap(), "1".parse().unwrap()),
                Some(head('0')),
            ),
        ]);
        let plan = plan(&candidates, &records, &heads, None);
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
        let mut planned = plan(&candidates, &records, &HashMap::new(), None);
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
        let all = plan(&candidates, &records, &HashMap::new(), None);
        assert_eq!(names(&all.copy), ["x:1", "y:1", "a:1", "z:1", "b:1"]);
        let budgeted = plan(&candidates, &records, &HashMap::new(), Some(2));
        assert_eq!(names(&budgeted.copy), ["x:1", "y:1"]);
        assert_eq!(names(&budgeted.pending), ["a:1", "z:1", "b:1"]);
        let mut shuffled = candidates.to_vec();
        shuffled.reverse();
        assert_eq!(
            plan(&shuffled, &records, &HashMap::new(), Some(2)),
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
        let first = plan(&candidates, &records, &HashMap::new(), None);
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
        let again = plan(&[old.clone()], &records, &HashMap::new(), None);
        assert!(needs_target_check(&[old.clone()], &records).is_empty());
        assert_eq!(
            (again.still_skipped[0], again.skip.len(), again.copy.len()),
            (1, 0, 0)
        );
        // Moved: judged afresh (HEADed on the target, planned as new).
        let mut moved = old;
        moved.digest = digest('d');
        assert_eq!(needs_target_check(&[moved.clone()], &records).len(), 1);
        let after = plan(&[moved], &records, &HashMap::new(), None);
        assert_eq!(
            (after.still_skipped[0], names(&after.copy)),
            (0, vec!["old:0.8".to_string()])
        );
    }
}
