//! The plan's tests: what is new, moved, unchanged or skipped, and in which order.

use super::*;
use crate::metadata::record::{Outcome, TagRecord};

fn digest(c: char) -> Digest {
    Digest::repeat(c)
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
                referrer_tags: None,
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
    schema1.media_type = Some("application/vnd.docker.distribution.manifest.v1+prettyjws".into());
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
            referrer_tags: None,
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

#[test]
fn the_usual_media_types_are_shared_by_every_candidate() {
    use std::sync::Arc;
    let oci = || crate::oci::manifest::OCI_MANIFEST.to_string();
    let (a, b) = (media_type(oci()), media_type(oci()));
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(&*a, crate::oci::manifest::OCI_MANIFEST);
    let odd = media_type("application/vnd.example.thing.v3+json".into());
    assert_eq!(&*odd, "application/vnd.example.thing.v3+json");
}
