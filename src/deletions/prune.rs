//! `--prune`: which tags marked deleted upstream to delete from the target, one deletion
//! per (repository, digest). Pure: a function of the records.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::metadata::record::{NamespaceRecord, TagRecord};
use crate::oci::manifest::is_index;
use crate::reference::Digest;

/// Why a tag marked deleted upstream stays on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "hold", content = "detail")]
pub enum Hold {
    /// A `sha256-*` tag holds referrers (signatures, SBOMs) by the tag-schema fallback:
    /// never pruned.
    Referrer,
    /// Another recorded tag still upstream (`image:tag`) has this digest in the same
    /// repository: deleting the digest would delete that tag too.
    SharedDigest(String),
    /// Recorded without a digest (imported from a seed list): unknown what to delete.
    UnknownDigest,
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Referrer => f.write_str("a sha256-* referrer tag; never pruned"),
            Hold::SharedDigest(with) => write!(
                f,
                "its digest is also {with}, which is still upstream; deleting it would delete that tag too"
            ),
            Hold::UnknownDigest => {
                f.write_str("recorded without a digest; `gcrsync compare` records it")
            }
        }
    }
}

/// One deletion: a digest in one target repository, and the marked tags it removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneStep {
    /// Index of the source (and of its record).
    pub source: usize,
    /// Image name relative to the source namespace.
    pub image: String,
    /// The target repository, as recorded.
    pub target: String,
    /// The manifest digest on the target.
    pub digest: Digest,
    /// The marked tags of this digest, by name.
    pub tags: Vec<String>,
    /// For an image (not an index): the indexes of tags still upstream in the same
    /// repository (`image:tag`, digest), whose children it may be; deleting a child would
    /// break its index, so they are read before the deletion.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<(String, Digest)>,
}

/// A marked tag that stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Held {
    /// Index of the source.
    pub source: usize,
    /// Image name.
    pub image: String,
    /// The tag.
    pub tag: String,
    /// Why.
    #[serde(flatten)]
    pub hold: Hold,
}

/// What `--prune` would delete, and what it leaves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// Deletions, by source, image and digest.
    pub delete: Vec<PruneStep>,
    /// Marked tags left on the target.
    pub held: Vec<Held>,
}

impl PrunePlan {
    /// How many tags the deletions remove (what `--prune-max` bounds).
    pub fn tags(&self) -> usize {
        self.delete.iter().map(|s| s.tags.len()).sum()
    }
}

/// The deletions that prune every tag marked deleted upstream and not pruned yet, over
/// the records of every source (a digest is shared per target repository, whichever source
/// recorded it). Tags not marked, or pruned already, are never touched.
pub fn plan_prune(records: &[NamespaceRecord]) -> PrunePlan {
    let marked = |t: &TagRecord| t.deleted_upstream_at.is_some() && t.pruned_at.is_none();
    // Most runs have nothing marked: no map of every live tag (at 15,000 tags a no-op
    // held one beside the parsed records).
    let any = records
        .iter()
        .flat_map(|r| r.images.values())
        .any(|i| i.tags.values().any(marked));
    if !any {
        return PrunePlan::default();
    }
    // Digests still used by a tag upstream, per target repository: (repo, digest) → tag.
    let mut live: HashMap<(&str, &Digest), (&str, &str)> = HashMap::new();
    // Indexes still upstream, per target repository.
    let mut indexes: HashMap<&str, Vec<(String, Digest)>> = HashMap::new();
    for record in records {
        for (name, image) in &record.images {
            for (tag, t) in &image.tags {
                if t.deleted_upstream_at.is_none()
                    && t.pruned_at.is_none()
                    && let Some(digest) = &t.digest
                {
                    if is_index(&t.media_type) {
                        let repo = indexes.entry(image.target.as_str()).or_default();
                        if !repo.iter().any(|(_, d)| d == digest) {
                            repo.push((format!("{name}:{tag}"), digest.clone()));
                        }
                    }
                    live.entry((image.target.as_str(), digest))
                        .or_insert((name, tag));
                }
            }
        }
    }
    let mut plan = PrunePlan::default();
    let mut steps: BTreeMap<(usize, &str, &Digest), PruneStep> = BTreeMap::new();
    for (source, record) in records.iter().enumerate() {
        for (name, image) in &record.images {
            for (tag, t) in image.tags.iter().filter(|(_, t)| marked(t)) {
                let hold = match &t.digest {
                    _ if tag.starts_with("sha256-") => Some(Hold::Referrer),
                    None => Some(Hold::UnknownDigest),
                    Some(d) => live
                        .get(&(image.target.as_str(), d))
                        .map(|(image, tag)| Hold::SharedDigest(format!("{image}:{tag}"))),
                };
                match (hold, &t.digest) {
                    (Some(hold), _) => plan.held.push(Held {
                        source,
                        image: name.clone(),
                        tag: tag.clone(),
                        hold,
                    }),
                    (None, Some(digest)) => steps
                        .entry((source, name.as_str(), digest))
                        .or_insert_with(|| PruneStep {
                            source,
                            image: name.clone(),
                            target: image.target.clone(),
                            digest: digest.clone(),
                            tags: Vec::new(),
                            guards: match is_index(&t.media_type) {
                                true => Vec::new(),
                                false => indexes
                                    .get(image.target.as_str())
                                    .cloned()
                                    .unwrap_or_default(),
                            },
                        })
                        .tags
                        .push(tag.clone()),
                    (None, None) => unreachable!("no digest is held above"),
                }
            }
        }
    }
    plan.delete = steps.into_values().collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::record::{ImageRecord, TagRecord};

    fn digest(c: char) -> Digest {
        Digest::repeat(c)
    }

    /// `(image, tag, digest, deleted upstream, pruned)`; every image maps to `dst/<image>`.
    fn record(tags: &[(&str, &str, Option<char>, bool, bool)]) -> NamespaceRecord {
        let mut record = NamespaceRecord::new("src".into(), "dst".into());
        for &(image, tag, d, deleted, pruned) in tags {
            let entry = record
                .images
                .entry(image.into())
                .or_insert_with(|| ImageRecord {
                    target: format!("dst/{image}"),
                    ..ImageRecord::default()
                });
            let t = TagRecord {
                digest: d.map(digest),
                deleted_upstream_at: deleted.then(|| "T1".to_string()),
                pruned_at: pruned.then(|| "T2".to_string()),
                synced_at: "T0".into(),
                ..TagRecord::default()
            };
            entry.tags.insert(tag.into(), t);
        }
        record
    }

    #[test]
    fn marked_tags_are_deleted_once_per_digest() {
        let r = record(&[
            ("app", "1", Some('a'), true, false),
            ("app", "1.0", Some('a'), true, false),
            ("app", "2", Some('b'), true, false),
            ("app", "3", Some('c'), false, false),
            ("app", "0", Some('d'), true, true),
        ]);
        let plan = plan_prune(&[r]);
        let steps: Vec<(char, Vec<String>)> = plan
            .delete
            .iter()
            .map(|s| (s.digest.as_str().chars().last().unwrap(), s.tags.clone()))
            .collect();
        assert_eq!(
            steps,
            [
                ('a', vec!["1".into(), "1.0".into()]),
                ('b', vec!["2".into()])
            ]
        );
        assert_eq!(plan.tags(), 3);
        assert!(plan.held.is_empty());
        assert_eq!(plan.delete[0].target, "dst/app");
    }

    #[test]
    fn a_digest_a_live_tag_shares_and_referrer_tags_are_held() {
        let sig = format!("sha256-{}.sig", "e".repeat(64));
        let r = record(&[
            ("app", "1", Some('a'), true, false),
            ("app", "latest", Some('a'), false, false),
            ("app", &sig, Some('e'), true, false),
            ("app", "legacy", None, true, false),
            // The same digest in another repository does not hold it.
            ("other", "1", Some('b'), false, false),
            ("app", "2", Some('b'), true, false),
            // A pruned tag holds nothing.
            ("app", "3", Some('c'), true, false),
            ("app", "3-old", Some('c'), true, true),
        ]);
        let plan = plan_prune(&[r]);
        let held: Vec<(&str, &Hold)> = plan
            .held
            .iter()
            .map(|h| (h.tag.as_str(), &h.hold))
            .collect();
        assert_eq!(
            held,
            [
                ("1", &Hold::SharedDigest("app:latest".into())),
                ("legacy", &Hold::UnknownDigest),
                (sig.as_str(), &Hold::Referrer),
            ]
        );
        let deleted: Vec<&str> = plan
            .delete
            .iter()
            .flat_map(|s| s.tags.iter().map(String::as_str))
            .collect();
        assert_eq!(deleted, ["2", "3"]);
    }

    #[test]
    fn an_image_is_guarded_by_the_live_indexes_of_its_repository() {
        let mut r = record(&[
            ("app", "1-amd64", Some('a'), true, false),
            ("app", "1", Some('b'), false, false),
            ("app", "0", Some('c'), true, false),
            ("other", "1", Some('d'), false, false),
        ]);
        for (tag, media_type) in [
            ("1", "application/vnd.oci.image.index.v1+json"),
            ("0", "application/vnd.oci.image.index.v1+json"),
        ] {
            let t = r.images.get_mut("app").unwrap().tags.get_mut(tag).unwrap();
            t.media_type = media_type.into();
        }
        r.images
            .get_mut("other")
            .unwrap()
            .tags
            .get_mut("1")
            .unwrap()
            .media_type = "application/vnd.oci.image.index.v1+json".into();
        let plan = plan_prune(&[r]);
        let guards: Vec<(&str, &[(String, Digest)])> = plan
            .delete
            .iter()
            .map(|s| (s.tags[0].as_str(), s.guards.as_slice()))
            .collect();
        // The image is checked against the live index of its repository; an index needs no
        // check (deleting it leaves its children), and other repositories do not count.
        assert_eq!(
            guards,
            [
                ("1-amd64", &[("app:1".to_string(), digest('b'))][..]),
                ("0", &[][..])
            ]
        );
    }

    #[test]
    fn sources_sharing_a_target_repository_share_its_digests() {
        let a = record(&[("app", "1", Some('a'), true, false)]);
        let b = record(&[("app", "keep", Some('a'), false, false)]);
        let plan = plan_prune(&[a, b]);
        assert!(plan.delete.is_empty());
        assert_eq!(plan.held.len(), 1);
    }
}
