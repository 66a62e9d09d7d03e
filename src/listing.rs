//! Listing: the images and tags of each source, their digests (HEAD, never GET), and the
//! target's digests for tags without a record. I/O only; the decisions are in `plan`.

use std::collections::BTreeMap;

mod target;
pub use target::{TargetHeads, target_heads};

use futures_util::{StreamExt, stream};

use crate::filter::Filters;
use crate::mapping::NameMapper;
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

/// The tag lists of many repositories, listed at once.
struct Lists {
    /// Listed: (image, its tags).
    listed: Vec<(RepoPath, TagList)>,
    /// Failed after retries: (image, the error).
    failed: Vec<(RepoPath, oci::Error)>,
}

/// Lists the tags of many repositories at once. A repository gone since it was named
/// (404) is a warning unless `strict` (named by `--images`), where it is a failure.
async fn list_many<R: Registry>(
    registry: &R,
    ns: &Namespace,
    images: Vec<RepoPath>,
    strict: bool,
    queries: usize,
) -> Lists {
    // Their tokens are fetched together, several scopes per token request.
    let repos: Vec<RepoPath> = images.iter().map(|image| ns.repo(image)).collect();
    registry.prepare(&repos).await;
    let results: Vec<_> = stream::iter(images)
        .map(|image| async move {
            let result = registry.list_tags(&ns.repo(&image)).await;
            (image, result)
        })
        .buffer_unordered(queries)
        .collect()
        .await;
    let mut lists = Lists {
        listed: Vec::new(),
        failed: Vec::new(),
    };
    for (image, result) in results {
        match result {
            Ok(list) => lists.listed.push((image, list)),
            Err(e) if e.status() == Some(404) && !strict => tracing::warn!(
                "{ns}/{image}: listed by the registry but answers 404 (deleted since?); skipped: {e}"
            ),
            Err(e) => lists.failed.push((image, e)),
        }
    }
    lists
}

/// What discovery found: the images the image filters keep, with their tags.
#[derive(Default)]
struct Discovered {
    listed_by: Option<ListedBy>,
    /// Whether every repository walked was listed (none failed, not `--images`).
    complete: bool,
    lists: Vec<(RepoPath, TagList)>,
    images_removed: BTreeMap<&'static str, usize>,
    failures: Vec<ListFailure>,
}

impl Discovered {
    /// Keeps the listed images that pass the image filters; repository failures of kept
    /// images are failures, those of images walked only for their children are warnings.
    fn add(&mut self, ns: &Namespace, lists: Lists, filters: &Filters) {
        // A repository not listed hides its tags, and in a gcr tree what is below it.
        self.complete &= lists.failed.is_empty();
        for (image, error) in lists.failed {
            match filters.image(image.as_str()) {
                Ok(()) => self.failures.push(failure(ns, image, None, &error)),
                Err(filter) => tracing::warn!(
                    "{ns}/{image} is removed by --{filter}, but was listed because images below it could pass; that failed, so they are not mirrored: {error}; to skip it, have the filter remove what is below it too (e.g. --exclude-images '^{image}(/|$)')"
                ),
            }
        }
        for (image, list) in lists.listed {
            match filters.image(image.as_str()) {
                Ok(()) => self.lists.push((image, list)),
                Err(filter) => *self.images_removed.entry(filter).or_default() += 1,
            }
        }
    }

    /// Which of `images` to list: those that pass the filters, or (`walk`) that could have
    /// images below them that do; the rest are counted as removed, never listed.
    fn worth_listing(
        &mut self,
        images: Vec<RepoPath>,
        filters: &Filters,
        walk: bool,
    ) -> Vec<RepoPath> {
        images
            .into_iter()
            .filter(|image| match filters.image(image.as_str()) {
                Ok(()) => true,
                Err(_) if walk && filters.may_pass_below(image.as_str()) => true,
                Err(filter) => {
                    *self.images_removed.entry(filter).or_default() += 1;
                    false
                }
            })
            .collect()
    }
}

/// Walks gcr's `child` lists at every depth, one request per repository; a repository
/// keeps its own tags even when it also has children. A child is listed only when it, or
/// some image below it, can pass the image filters.
async fn walk_children<R: Registry>(
    registry: &R,
    ns: &Namespace,
    root: TagList,
    filters: &Filters,
    queries: usize,
) -> Discovered {
    let mut found = Discovered {
        listed_by: Some(ListedBy::Children),
        complete: true,
        ..Discovered::default()
    };
    let child_paths = |parent: Option<&RepoPath>, list: &TagList| -> Vec<RepoPath> {
        let children = list
            .children
            .iter()
            .flatten()
            .filter_map(|c| c.parse::<RepoPath>().ok());
        children
            .map(|c| parent.map_or(c.clone(), |p| p.join(&c)))
            .collect()
    };
    let mut level = child_paths(None, &root);
    while !level.is_empty() {
        let wanted = found.worth_listing(level, filters, true);
        let mut lists = list_many(registry, ns, wanted, false, queries).await;
        level = lists
            .listed
            .iter()
            .flat_map(|(image, list)| child_paths(Some(image), list))
            .collect();
        // A gcr path with children but no tags of its own is no image.
        lists.listed.retain(|(_, list)| !list.tags.is_empty());
        found.add(ns, lists, filters);
    }
    found
}

/// The repositories of a source with their tags: `--images`; gcr's `child` tree when the
/// namespace answers with one; otherwise the catalog entries under the namespace path.
/// Fails as a whole only when the namespace cannot be listed at all.
async fn discover<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    filters: &Filters,
    queries: usize,
) -> Result<Discovered, ListError> {
    let ns = spec.namespace;
    let mut found = Discovered::default();
    if let Some(images) = spec.images {
        let wanted = found.worth_listing(images.to_vec(), filters, false);
        let mut lists = list_many(registry, ns, wanted, true, queries).await;
        // Nothing at the root vouches for the credentials here: refused everywhere, they are.
        let refused = |(_, e): &(RepoPath, oci::Error)| matches!(e, oci::Error::Auth { .. });
        if lists.listed.is_empty()
            && let Some(at) = lists.failed.iter().position(refused)
        {
            let (image, error) = lists.failed.swap_remove(at);
            return Err(ListError {
                source_ref: format!("{ns}/{image}"),
                error,
            });
        }
        found.add(ns, lists, filters);
        return Ok(found);
    }
    // A namespace listed by the catalog before is a catalog registry's: the gcr probe
    // would only answer 404 again. Should the catalog fail or hold nothing under the
    // namespace now, the namespace is probed as on a first run.
    if spec.listed_before == Some(ListedBy::Catalog) && ns.path.is_some() {
        match registry.catalog().await {
            Ok(all) => {
                let images = under(ns, &all);
                if !images.is_empty() {
                    return Ok(from_catalog(registry, ns, images, filters, queries).await);
                }
            }
            Err(e) => tracing::debug!("{ns}: catalog failed ({e}); probing the namespace"),
        }
    }
    if let Some(root) = &ns.path {
        match registry.list_tags(root).await {
            Ok(list) if list.children.is_some() => {
                return Ok(walk_children(registry, ns, list, filters, queries).await);
            }
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(error) => {
                return Err(ListError {
                    source_ref: ns.to_string(),
                    error,
                });
            }
        }
    }
    let all = registry.catalog().await.map_err(|error| ListError {
        source_ref: format!("{ns} (catalog)"),
        error,
    })?;
    Ok(from_catalog(registry, ns, under(ns, &all), filters, queries).await)
}

/// The catalog's repositories under the namespace path, relative to it.
fn under(ns: &Namespace, catalog: &[RepoPath]) -> Vec<RepoPath> {
    catalog
        .iter()
        .filter_map(|repo| repo.strip_prefix(ns.path.as_ref()))
        .collect()
}

/// Lists the tags of the catalog's `images` the filters keep.
async fn from_catalog<R: Registry>(
    registry: &R,
    ns: &Namespace,
    images: Vec<RepoPath>,
    filters: &Filters,
    queries: usize,
) -> Discovered {
    let mut found = Discovered {
        listed_by: Some(ListedBy::Catalog),
        complete: true,
        ..Discovered::default()
    };
    let wanted = found.worth_listing(images, filters, false);
    let lists = list_many(registry, ns, wanted, false, queries).await;
    found.add(ns, lists, filters);
    found
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
        media_type: Option<String>,
    ) -> Candidate {
        Candidate {
            source: spec.index,
            image: self.image,
            source_repo: self.source_repo,
            tag: self.tag,
            digest,
            uploaded_ms,
            target: self.target,
            media_type: media_type.map(crate::plan::media_type),
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
    let found = discover(registry, spec, filters, queries).await?;
    let mut listed = found.lists;
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = SourceListing {
        listed_by: found.listed_by,
        ..SourceListing::default()
    };
    out.seen.complete = found.complete;
    let stats = &mut out.stats;
    stats.images_removed = found.images_removed;
    stats.failures = found.failures;
    let settled = |c: &Candidate| spec.settled.is_some_and(|settled| settled(c));
    let mut unchanged = 0;
    let mut known = Vec::new();
    let mut to_head = Vec::new();
    for (image, mut list) in listed {
        // Referrer tags (`sha256-<hex>`, cosign's `.sig`/`.att`/`.sbom`) are never
        // ordinary tags, whatever the filters say: they go with their subject's copy.
        let referrer_tags: std::sync::Arc<[ListedTag]> = list
            .tags
            .iter()
            .filter(|t| crate::referrers::referrer_tag(t.as_str()).is_some())
            .map(|t| ListedTag {
                tag: t.clone(),
                digest: list.digests.get(t).map(|info| info.digest.clone()),
            })
            .collect();
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
            continue;
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
    }
    // `Ok(None)`: deleted since listed; `Ok(Some(None))`: settled, dropped here.
    let headed: Vec<Result<Option<Option<Candidate>>, ListFailure>> = stream::iter(to_head)
        .map(|listed| async move {
            let head = registry
                .head_manifest(&listed.source_repo, &ManifestRef::Tag(listed.tag.clone()))
                .await;
            match head {
                // A tag deleted since it was listed is simply gone.
                Ok(head) => Ok(head.map(|h| {
                    let c = listed.candidate(spec, h.digest, None, Some(h.media_type));
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
