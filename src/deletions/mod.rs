//! Upstream deletions: which recorded tags a complete source listing no longer shows
//! (marked `deleted_upstream_at`), which came back (un-marked), and, with `--prune`, which
//! marked tags to delete from the target (`prune`). Pure decisions over data; `delete`
//! does the deleting.

pub mod delete;
mod prune;

use std::collections::BTreeMap;

pub use prune::{Hold, PrunePlan, PruneStep, plan_prune};

use crate::metadata::record::{NamespaceRecord, Outcome};
use crate::reference::Tag;

/// What one source's listing saw, as far as it can vouch for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Each image of this run's scope whose repository was listed to its last page: every
    /// tag it has upstream, sorted, before any tag filter (a tag a filter leaves out is
    /// still there). Images whose listing failed are not here.
    pub tags: BTreeMap<String, Vec<Tag>>,
    /// Whether every repository of the namespace was listed (catalog or gcr's `child`
    /// tree, no repository failing): an image of the scope missing from `tags` is then
    /// gone upstream. Never with `--images`/`--images-from`, which list only named images.
    pub complete: bool,
}

impl Seen {
    /// Adds an image's listed tags.
    pub fn add(&mut self, image: String, mut tags: Vec<Tag>) {
        tags.sort();
        tags.dedup();
        self.tags.insert(image, tags);
    }

    /// Whether `tag` of `image` is upstream (`Some(true)`), gone (`Some(false)`), or not
    /// known (`None`): its repository failed, or is outside the scope, or the listing was
    /// not complete. `in_scope` says whether the run mirrors `image` at all (image filters,
    /// shard, `--images`).
    fn present(&self, image: &str, tag: &str, in_scope: &impl Fn(&str) -> bool) -> Option<bool> {
        match self.tags.get(image) {
            Some(tags) => Some(tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok()),
            // A listing that found no image at all is more likely a wrong view (a catalog
            // the credentials see nothing of) than a namespace emptied upstream.
            None if self.complete && !self.tags.is_empty() && in_scope(image) => Some(false),
            None => None,
        }
    }
}

/// The marks a listing makes on one source's records: `DeletedUpstream` for each recorded
/// tag it shows gone (not marked yet), `BackUpstream` for each marked tag it shows again.
/// Tags it cannot vouch for (see [`Seen`]) are left as they are. Pruned tags are marked
/// too: the mark says what upstream has, `pruned_at` what the mirror has.
pub fn upstream_marks(
    record: &NamespaceRecord,
    seen: &Seen,
    in_scope: impl Fn(&str) -> bool,
    at: &str,
) -> Vec<Outcome> {
    let mut marks = Vec::new();
    for (image, recorded) in &record.images {
        for (tag, t) in &recorded.tags {
            // Referrer tags recorded as ordinary tags (before referrers travelled with
            // their subject) are no longer in the listing's tags; they are not gone.
            if crate::referrers::referrer_tag(tag).is_some() {
                continue;
            }
            let mark = match (seen.present(image, tag, &in_scope), &t.deleted_upstream_at) {
                (Some(false), None) => Outcome::DeletedUpstream {
                    image: image.clone(),
                    tag: tag.clone(),
                    at: at.to_string(),
                },
                (Some(true), Some(_)) => Outcome::BackUpstream {
                    image: image.clone(),
                    tag: tag.clone(),
                },
                _ => continue,
            };
            marks.push(mark);
        }
    }
    // A tag that failed or was skipped, never mirrored, and is gone upstream: its entry
    // would otherwise stay in `failed`/`skipped` forever.
    let unmirrored = record.failed.keys().chain(record.skipped.keys());
    let mut forgotten: Vec<(&str, &str)> = unmirrored
        .filter_map(|key| key.rsplit_once(':'))
        .filter(|(image, tag)| seen.present(image, tag, &in_scope) == Some(false))
        .collect();
    forgotten.sort();
    forgotten.dedup();
    marks.extend(
        forgotten
            .into_iter()
            .map(|(image, tag)| Outcome::Forgotten {
                image: image.to_string(),
                tag: tag.to_string(),
            }),
    );
    marks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::record::{ImageRecord, TagRecord};
    use crate::reference::Digest;

    const AT: &str = "2026-12-01T10:00:00Z";

    fn record(tags: &[(&str, &str, Option<&str>)]) -> NamespaceRecord {
        let mut record = NamespaceRecord::new("src/ns".into(), "dst/m".into());
        for (image, tag, deleted) in tags {
            let entry = record
                .images
                .entry(image.to_string())
                .or_insert_with(|| ImageRecord {
                    target: format!("dst/m/{image}"),
                    ..ImageRecord::default()
                });
            let t = TagRecord {
                digest: Some(format!("sha256:{}", "a".repeat(64)).parse().unwrap()),
                deleted_upstream_at: deleted.map(str::to_string),
                synced_at: "2026-11-01T00:00:00Z".into(),
                ..TagRecord::default()
            };
            entry.tags.insert(tag.to_string(), t);
        }
        record
    }

    fn seen(images: &[(&str, &[&str])], complete: bool) -> Seen {
        let mut seen = Seen {
            complete,
            ..Seen::default()
        };
        for (image, tags) in images {
            seen.add(
                image.to_string(),
                tags.iter().map(|t| t.parse().unwrap()).collect(),
            );
        }
        seen
    }

    fn names(marks: &[Outcome]) -> Vec<String> {
        marks
            .iter()
            .map(|m| match m {
                Outcome::DeletedUpstream { image, tag, .. } => format!("gone {image}:{tag}"),
                Outcome::BackUpstream { image, tag } => format!("back {image}:{tag}"),
                Outcome::Forgotten { image, tag } => format!("forgotten {image}:{tag}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn failed_and_skipped_tags_gone_upstream_are_forgotten() {
        let mut r = record(&[("app", "1", None)]);
        r.apply(&[
            Outcome::Failed {
                image: "app".into(),
                tag: "broken".into(),
                error: "HTTP 500".into(),
                at: AT.into(),
            },
            Outcome::Failed {
                image: "app".into(),
                tag: "flaky".into(),
                error: "HTTP 500".into(),
                at: AT.into(),
            },
            Outcome::Skipped {
                image: "old".into(),
                tag: "v1".into(),
                digest: Digest::repeat('c'),
                reason: "schema 1".into(),
                at: AT.into(),
            },
        ]);
        // `old` was listed with no tag left; `flaky` is still there; a partial listing
        // vouches for nothing.
        let listing = seen(&[("app", &["1", "flaky"]), ("old", &[])], true);
        let marks = upstream_marks(&r, &listing, |_| true, AT);
        assert_eq!(names(&marks), ["forgotten app:broken", "forgotten old:v1"]);
        let changes = r.apply(&marks);
        assert!(changes.record && changes.images.contains("old"));
        assert_eq!(r.failed.keys().collect::<Vec<_>>(), ["app:flaky"]);
        assert!(r.skipped.is_empty());
        let partial = seen(&[("app", &["1"])], false);
        let mut r2 = record(&[("app", "1", None)]);
        r2.apply(&[Outcome::Failed {
            image: "gone".into(),
            tag: "x".into(),
            error: "e".into(),
            at: AT.into(),
        }]);
        assert!(upstream_marks(&r2, &partial, |_| true, AT).is_empty());
    }

    #[test]
    fn referrer_tags_recorded_before_are_never_marked_gone() {
        let sig = format!("sha256-{}.sig", "b".repeat(64));
        let r = record(&[("app", "1", None), ("app", &sig, None)]);
        let marks = upstream_marks(&r, &seen(&[("app", &["1"])], true), |_| true, AT);
        assert!(marks.is_empty(), "{marks:?}");
    }

    #[test]
    fn a_tag_missing_from_its_listed_repository_is_marked_once() {
        let r = record(&[("app", "1", None), ("app", "2", None)]);
        let marks = upstream_marks(&r, &seen(&[("app", &["2"])], true), |_| true, AT);
        assert_eq!(names(&marks), ["gone app:1"]);
        // Already marked: nothing new, and the first time stays.
        let mut r = r;
        r.apply(&marks);
        assert_eq!(
            r.images["app"].tags["1"].deleted_upstream_at.as_deref(),
            Some(AT)
        );
        let again = upstream_marks(&r, &seen(&[("app", &["2"])], true), |_| true, "later");
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn marks_keep_their_first_time_and_a_pruned_tag_counts_as_unrecorded() {
        let mut r = record(&[("app", "1", None)]);
        let gone = |at: &str| Outcome::DeletedUpstream {
            image: "app".into(),
            tag: "1".into(),
            at: at.into(),
        };
        assert!(r.apply(&[gone("T1")]).images.contains("app"));
        assert!(r.apply(&[gone("T2")]).images.is_empty(), "marked already");
        r.apply(&[Outcome::Pruned {
            image: "app".into(),
            tag: "1".into(),
            at: "T3".into(),
        }]);
        let tag = &r.images["app"].tags["1"];
        assert_eq!(tag.deleted_upstream_at.as_deref(), Some("T1"));
        assert_eq!(tag.pruned_at.as_deref(), Some("T3"));
        // The mirror no longer holds it: planned as a tag never recorded.
        assert_eq!(r.digest("app", "1"), None);
        assert!(r.to_json().contains("\"pruned_at\": \"T3\""));
        // A mark on a tag with no record changes nothing.
        let other = Outcome::BackUpstream {
            image: "other".into(),
            tag: "1".into(),
        };
        assert!(!r.apply(&[other]).record);
    }

    #[test]
    fn a_tag_listed_again_is_unmarked() {
        let r = record(&[("app", "1", Some(AT)), ("app", "2", None)]);
        let marks = upstream_marks(&r, &seen(&[("app", &["1", "2"])], true), |_| true, AT);
        assert_eq!(names(&marks), ["back app:1"]);
        let mut r = r;
        r.apply(&marks);
        assert_eq!(r.images["app"].tags["1"].deleted_upstream_at, None);
    }

    #[test]
    fn a_tag_a_filter_leaves_out_is_still_upstream() {
        // `tags` holds the listing before tag filters: a filtered tag is there.
        let r = record(&[("app", "1-rc", None)]);
        let marks = upstream_marks(&r, &seen(&[("app", &["1-rc", "2"])], true), |_| true, AT);
        assert!(marks.is_empty());
    }

    #[test]
    fn a_repository_gone_from_a_complete_listing_loses_every_tag() {
        let r = record(&[("app", "1", None), ("old", "1", None), ("old", "2", None)]);
        let marks = upstream_marks(&r, &seen(&[("app", &["1"])], true), |_| true, AT);
        assert_eq!(names(&marks), ["gone old:1", "gone old:2"]);
    }

    #[test]
    fn what_the_listing_cannot_vouch_for_is_never_marked() {
        let r = record(&[("app", "1", None), ("old", "1", None)]);
        // A repository failed (or --images named others): the listing is not complete.
        let partial = upstream_marks(&r, &seen(&[("app", &["1"])], false), |_| true, AT);
        assert!(partial.is_empty(), "{partial:?}");
        // Outside the scope (an image filter, another shard): not judged.
        let filtered = upstream_marks(&r, &seen(&[("app", &["1"])], true), |i| i == "app", AT);
        assert!(filtered.is_empty(), "{filtered:?}");
        // A listing that found nothing at all judges nothing.
        let empty = upstream_marks(&r, &seen(&[], true), |_| true, AT);
        assert!(empty.is_empty(), "{empty:?}");
        // A marked tag of an image not listed stays marked.
        let r = record(&[("app", "1", None), ("old", "1", Some(AT))]);
        let kept = upstream_marks(&r, &seen(&[("app", &["1"])], false), |_| true, AT);
        assert!(kept.is_empty(), "{kept:?}");
    }
}
