//! Listing: the images and tags of each source, their digests (HEAD, never GET), and the
//! target's digests for tags without a record. I/O only; the decisions are in `plan`.

use std::collections::BTreeMap;

mod discover;
mod target;
pub use target::{TargetHeads, target_heads};

use futures_util::{StreamExt, stream};

use crate::filter::Filters;
use crate::mapping::{MappingError, NameMapper};
use crate::oci::taglist::TagList;
use crate::oci::{self, ManifestRef, Registry};
use crate::plan::Candidate;
use crate::reference::{Digest, Namespace, RepoPath, Repository, Tag};
use crate::referrers::ListedTag;

/// Listing a source failed as a whole: fatal (exit 3), never read as "zero images".
#[derive(Debug, thiserror::Error)]
#[error("listing {source_ref} failed: {error}")]
pub struct ListError {
    /// What was being listed.
    pub source_ref: String,
    /// The registry error.
    #[source]
    pub error: oci::Error,
}

/// A repository or tag that could not be listed (or HEADed): reported and counted as
/// failed while the rest of the run goes on. Nothing is recorded for a repository, so its
/// records stay exactly as they were.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListFailure {
    /// The image, relative to its source namespace.
    pub image: RepoPath,
    /// The tag, or `None` when the repository itself could not be listed.
    pub tag: Option<Tag>,
    /// The registry's status and message.
    pub error: String,
}

/// How a namespace's repositories were found; kept in its records so that the next run
/// of a catalog registry asks the catalog straight away instead of first probing the
/// namespace for gcr's `child` tree (one request less, and one round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListedBy {
    /// gcr's `tags/list` with `child` lists.
    Children,
    /// `/v2/_catalog`, filtered by the namespace path.
    Catalog,
}

/// What to list in one source.
pub struct SourceSpec<'a> {
    /// Index of the source in the settings.
    pub index: usize,
    /// The namespace.
    pub namespace: &'a Namespace,
    /// `--images`: list only these instead of the catalog.
    pub images: Option<&'a [RepoPath]>,
    /// The target namespace names are mapped under.
    pub target: &'a Namespace,
    /// `--shard K/N`: keep the images of one shard.
    pub shard: (u64, u64),
    /// How the namespace was listed last time (from its records), if known.
    pub listed_before: Option<ListedBy>,
    /// Candidates the records already show mirrored as listed (`plan::unchanged`): counted
    /// in [`SourceListing::unchanged`] and dropped at once, not kept one per tag.
    pub settled: Option<&'a Settled<'a>>,
}

/// Whether a candidate is settled already (see [`SourceSpec::settled`]).
pub type Settled<'a> = dyn Fn(&Candidate) -> bool + Send + Sync + 'a;

/// Counts of one source's listing, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListStats {
    /// Images kept (after image filters and sharding).
    pub images: usize,
    /// Tags listed in the images the image filters keep (every shard's).
    pub tags: usize,
    /// Tags removed, by the option that removed them (`shard`: another shard's images).
    pub removed: BTreeMap<&'static str, usize>,
    /// Images removed by an image filter, by option; their tags are never listed.
    pub images_removed: BTreeMap<&'static str, usize>,
    /// Repositories and tags that could not be listed.
    pub failures: Vec<ListFailure>,
}

impl ListStats {
    /// Tags removed by any filter.
    pub fn filtered(&self) -> usize {
        self.removed.values().sum()
    }
}

/// What one source lists to.
#[derive(Debug, Default)]
pub struct SourceListing {
    /// The tags of this shard, filtered and mapped, with their digests.
    pub candidates: Vec<Candidate>,
    /// Counts and failures.
    pub stats: ListStats,
    /// Every image with a tag to mirror, in every shard, with its target repository:
    /// collisions are checked over these, so shards cannot write one target unawares.
    pub mapped: Vec<(RepoPath, Repository)>,
    /// How the namespace was listed (`None`: `--images`), to be recorded.
    pub listed_by: Option<ListedBy>,
    /// Every tag of this shard's listed images, before tag filters, for judging upstream
    /// deletions.
    pub seen: crate::deletions::Seen,
    /// Candidates dropped as settled (see [`SourceSpec::settled`]).
    pub unchanged: usize,
}

/// A stable shard of an image name (FNV-1a), the same on every machine and run.
fn shard_of(name: &str, count: u64) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % count
}

/// Whether the registry refused access: a 401/403, or a token it would not issue.
fn denied(error: &oci::Error) -> bool {
    matches!(error.status(), Some(401 | 403)) || matches!(error, oci::Error::Auth { .. })
}

/// The failure of one repository (or tag) whose namespace was listed with the same
/// credentials: a refusal says "no access" and does not blame the credentials.
fn failure(ns: &Namespace, image: RepoPath, tag: Option<Tag>, error: &oci::Error) -> ListFailure {
    let what = match &tag {
        Some(t) => format!("{ns}/{image}:{t}"),
        None => format!("{ns}/{image}"),
    };
    let text = match error {
        // The hint about credentials fits a refused login, not one repository out of many.
        oci::Error::Auth { detail, .. } => {
            let why = detail.split("; check --").next().unwrap_or(detail);
            format!(
                "no access to {what}: {why} (the same credentials were accepted elsewhere in {ns})"
            )
        }
        e if denied(e) => format!("no access to {what}: {e}"),
        e => e.to_string(),
    };
    tracing::error!("{what}: {text}");
    ListFailure {
        image,
        tag,
        error: text,
    }
}

/// A listed tag waiting for its digest. The repositories are shared with the image's
/// other tags (`RepoPath` is an `Arc<str>`), not copied per tag.
struct Listed {
    image: RepoPath,
    source_repo: RepoPath,
    tag: Tag,
    target: Repository,
    referrer_tags: std::sync::Arc<[ListedTag]>,
}

impl Listed {
    fn candidate(
        self,
        spec: &SourceSpec<'_>,
        digest: Digest,
        uploaded_ms: Option<i64>,
        media_type: Option<std::sync::Arc<str>>,
    ) -> Candidate {
        Candidate {
            source: spec.index,
            image: self.image,
            source_repo: self.source_repo,
            tag: self.tag,
            digest,
            uploaded_ms,
            target: self.target,
            media_type,
            referrer_tags: self.referrer_tags,
        }
    }
}

/// Lists, filters, maps and shards one source; a tag's digest comes from gcr's manifest
/// map when served, else from a HEAD. A repository or tag that cannot be listed is a
/// failure in the stats; only a namespace that cannot be listed at all is an error.
pub async fn list_source<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    filters: &Filters,
    mapper: &NameMapper,
    queries: usize,
) -> Result<SourceListing, SourceError> {
    let (shard, shards) = spec.shard;
    let mut out = SourceListing::default();
    let settled = |c: &Candidate| spec.settled.is_some_and(|settled| settled(c));
    let mut unchanged = 0;
    let mut known = Vec::new();
    let mut to_head = Vec::new();
    // Each image as its listing arrives, so that the listings are not all held at once.
    let mut take = |image: RepoPath, mut list: TagList| -> Result<(), MappingError> {
        let stats = &mut out.stats;
        // Referrer tags (`sha256-<hex>`, cosign's `.sig`/`.att`/`.sbom`) are never
        // ordinary tags, whatever the filters say: they go with their subject's copy.
        let referrer_tags = crate::referrers::sorted(
            list.tags
                .iter()
                .filter(|t| crate::referrers::referrer_tag(t.as_str()).is_some())
                .map(|t| ListedTag {
                    tag: t.clone(),
                    digest: list.digests.get(t).map(|info| info.digest.clone()),
                }),
        );
        if !referrer_tags.is_empty() {
            list.tags
                .retain(|t| crate::referrers::referrer_tag(t.as_str()).is_none());
        }
        stats.tags += list.tags.len();
        let verdicts: Vec<_> = list.tags.iter().map(|t| filters.tag(t.as_str())).collect();
        let passing: Vec<&Tag> = list
            .tags
            .iter()
            .zip(&verdicts)
            .filter_map(|(tag, verdict)| verdict.is_ok().then_some(tag))
            .collect();
        // Mapped in every shard (a bad name is an error in all of them), for collisions.
        let target = mapper.map(spec.namespace, &image, spec.target)?;
        if !passing.is_empty() {
            out.mapped.push((image.clone(), target.clone()));
        }
        if shard_of(&format!("{}/{image}", spec.namespace), shards) != shard {
            *stats.removed.entry("shard").or_default() += list.tags.len();
            return Ok(());
        }
        for filter in verdicts.into_iter().filter_map(Result::err) {
            *stats.removed.entry(filter).or_default() += 1;
        }
        stats.images += 1;
        let uploaded = |t: &Tag| list.digests.get(t).and_then(|i| i.uploaded_ms);
        let ages: Vec<(&str, Option<i64>)> =
            passing.iter().map(|t| (t.as_str(), uploaded(t))).collect();
        let newest = filters.latest_of(&ages);
        if newest.len() < passing.len() {
            *stats.removed.entry("latest").or_default() += passing.len() - newest.len();
        }
        let chosen: Vec<Tag> = newest.into_iter().map(|i| passing[i].clone()).collect();
        let source_repo = spec.namespace.repo(&image);
        for tag in chosen {
            // Taken out of the listing, which is dropped after this image: not copied.
            let info = list.digests.remove(&tag);
            let listed = Listed {
                image: image.clone(),
                source_repo: source_repo.clone(),
                tag,
                target: target.clone(),
                referrer_tags: referrer_tags.clone(),
            };
            match info {
                Some(info) => {
                    let c = listed.candidate(spec, info.digest, info.uploaded_ms, info.media_type);
                    if settled(&c) {
                        unchanged += 1;
                    } else {
                        known.push(c);
                    }
                }
                None => to_head.push(listed),
            }
        }
        out.seen.add(image.to_string(), list.tags);
        Ok(())
    };
    let found = discover::discover(registry, spec, filters, queries, &mut take).await?;
    out.listed_by = found.listed_by;
    out.seen.complete = found.complete;
    let stats = &mut out.stats;
    stats.images_removed = found.images_removed;
    stats.failures = found.failures;
    // Listings arrive in any order; the HEADs go in name order, as before.
    to_head.sort_by(|a: &Listed, b: &Listed| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    // `Ok(None)`: deleted since listed; `Ok(Some(None))`: settled, dropped here.
    let headed: Vec<Result<Option<Option<Candidate>>, ListFailure>> = stream::iter(to_head)
        .map(|listed| async move {
            let head = registry
                .head_manifest(&listed.source_repo, &ManifestRef::Tag(listed.tag.clone()))
                .await;
            match head {
                // A tag deleted since it was listed is simply gone.
                Ok(head) => Ok(head.map(|h| {
                    let c = listed.candidate(
                        spec,
                        h.digest,
                        None,
                        Some(crate::plan::media_type(h.media_type)),
                    );
                    (!settled(&c)).then_some(c)
                })),
                Err(e) => Err(failure(spec.namespace, listed.image, Some(listed.tag), &e)),
            }
        })
        .buffer_unordered(queries)
        .collect()
        .await;
    let mut candidates = known;
    for result in headed {
        match result {
            Ok(Some(None)) => unchanged += 1,
            Ok(candidate) => candidates.extend(candidate.flatten()),
            Err(failed) => stats.failures.push(failed),
        }
    }
    candidates.sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    stats
        .failures
        .sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    out.candidates = candidates;
    out.unchanged = unchanged;
    Ok(out)
}

/// Whether the run mirrors `image` of `spec`'s source at all: named by `--images` (when
/// given), kept by the image filters, and of this shard. Deletions are judged only there.
pub fn in_scope(spec: &SourceSpec<'_>, filters: &Filters, image: &str) -> bool {
    let (shard, shards) = spec.shard;
    let named = spec
        .images
        .is_none_or(|images| images.iter().any(|i| i.as_str() == image));
    named
        && filters.image(image).is_ok()
        && shard_of(&format!("{}/{image}", spec.namespace), shards) == shard
}

/// Listing a source failed: the registry failed, or a listed name does not map.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The registry failed.
    #[error(transparent)]
    List(#[from] ListError),
    /// A name does not map (a configuration error).
    #[error(transparent)]
    Mapping(#[from] crate::mapping::MappingError),
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(
            shard_of("gcr.io/gc/pause", 4),
            shard_of("gcr.io/gc/pause", 4)
        );
        let mut counts = [0; 4];
        for i in 0..400 {
            counts[shard_of(&format!("gcr.io/gc/image-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n > 60), "{counts:?}");
    }
}
