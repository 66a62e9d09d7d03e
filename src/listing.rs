//! Listing: the images and tags of each source, their digests (HEAD, never GET), and the
//! target's digests for tags without a record. I/O only; the decisions are in `plan`.

use std::collections::{BTreeMap, HashMap};

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::filter::Filters;
use crate::mapping::NameMapper;
use crate::oci::taglist::TagList;
use crate::oci::{self, ManifestRef, Registry};
use crate::plan::{Candidate, TargetHead, TargetKey};
use crate::reference::{Digest, Namespace, RepoPath, Repository, Tag};

/// Listing a source failed: fatal (exit 3), never read as "zero images".
#[derive(Debug, thiserror::Error)]
#[error("listing {source_ref} failed: {error}")]
pub struct ListError {
    /// What was being listed.
    pub source_ref: String,
    /// The registry error.
    #[source]
    pub error: oci::Error,
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
}

/// Counts of one source's listing, for the report.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListStats {
    /// Images kept (after image filters and sharding).
    pub images: usize,
    /// Tags listed in every image, kept or not.
    pub tags: usize,
    /// Tags removed, by the option that removed them (`shard`: another shard's images).
    pub removed: BTreeMap<&'static str, usize>,
}

impl ListStats {
    /// Tags removed by any filter.
    pub fn filtered(&self) -> usize {
        self.removed.values().sum()
    }
}

/// A stable shard of an image name (FNV-1a), the same on every machine and run.
fn shard_of(name: &str, count: u64) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % count
}

fn list_error(what: String) -> impl FnOnce(oci::Error) -> ListError {
    move |error| ListError {
        source_ref: what,
        error,
    }
}

/// Lists the tags of many repositories at once; a repository gone since it was named
/// (404) has no tags unless `strict`.
async fn list_many<R: Registry>(
    registry: &R,
    repos: Vec<(RepoPath, RepoPath)>,
    strict: bool,
    queries: usize,
) -> Result<Vec<(RepoPath, TagList)>, ListError> {
    stream::iter(repos)
        .map(|(image, repo)| async move {
            match registry.list_tags(&repo).await {
                Ok(list) => Ok((image, list)),
                Err(e) if e.status() == Some(404) && !strict => Ok((image, TagList::default())),
                Err(error) => Err(ListError {
                    source_ref: repo.to_string(),
                    error,
                }),
            }
        })
        .buffer_unordered(queries)
        .try_collect()
        .await
}

/// Walks gcr's `child` lists at every depth, one request per repository; a repository
/// keeps its own tags even when it also has children.
async fn walk_children<R: Registry>(
    registry: &R,
    namespace: &Namespace,
    root: TagList,
    queries: usize,
) -> Result<Vec<(RepoPath, TagList)>, ListError> {
    let mut found = Vec::new();
    let child_paths = |parent: Option<&RepoPath>, list: &TagList| -> Vec<(RepoPath, RepoPath)> {
        let children = list
            .children
            .iter()
            .flatten()
            .filter_map(|c| c.parse::<RepoPath>().ok());
        children
            .map(|c| {
                let image = parent.map_or(c.clone(), |p| p.join(&c));
                (image.clone(), namespace.repo(&image))
            })
            .collect()
    };
    let mut level = child_paths(None, &root);
    while !level.is_empty() {
        let listed = list_many(registry, level, false, queries).await?;
        level = listed
            .iter()
            .flat_map(|(image, list)| child_paths(Some(image), list))
            .collect();
        found.extend(listed.into_iter().filter(|(_, list)| !list.tags.is_empty()));
    }
    Ok(found)
}

/// The repositories of a source with their tags: `--images`; gcr's `child` tree when the
/// namespace answers with one; otherwise the catalog entries under the namespace path.
async fn discover<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    queries: usize,
) -> Result<Vec<(RepoPath, TagList)>, ListError> {
    let ns = spec.namespace;
    if let Some(images) = spec.images {
        let repos = images.iter().map(|i| (i.clone(), ns.repo(i))).collect();
        return list_many(registry, repos, true, queries).await;
    }
    if let Some(root) = &ns.path {
        match registry.list_tags(root).await {
            Ok(list) if list.children.is_some() => {
                return walk_children(registry, ns, list, queries).await;
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
    let all = registry
        .catalog()
        .await
        .map_err(list_error(format!("{ns} (catalog)")))?;
    let repos = all
        .iter()
        .filter_map(|repo| {
            repo.strip_prefix(ns.path.as_ref())
                .map(|image| (image, repo.clone()))
        })
        .collect();
    list_many(registry, repos, false, queries).await
}

/// A listed tag waiting for its digest.
struct Listed {
    image: RepoPath,
    tag: Tag,
    target: Repository,
}

impl Listed {
    fn candidate(
        self,
        spec: &SourceSpec<'_>,
        digest: Digest,
        uploaded_ms: Option<i64>,
        media_type: Option<String>,
    ) -> Candidate {
        let source_repo = spec.namespace.repo(&self.image);
        Candidate {
            source: spec.index,
            image: self.image,
            source_repo,
            tag: self.tag,
            digest,
            uploaded_ms,
            target: self.target,
            media_type,
        }
    }
}

/// Lists, filters, shards and maps one source; a tag's digest comes from gcr's manifest
/// map when served, else from a HEAD.
pub async fn list_source<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    filters: &Filters,
    mapper: &NameMapper,
    queries: usize,
) -> Result<(Vec<Candidate>, ListStats), SourceError> {
    let (shard, shards) = spec.shard;
    let mut listed = discover(registry, spec, queries).await?;
    listed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut stats = ListStats::default();
    let mut known = Vec::new();
    let mut to_head = Vec::new();
    for (image, list) in listed {
        stats.tags += list.tags.len();
        let in_shard = shard_of(&format!("{}/{image}", spec.namespace), shards) == shard;
        let verdict =
            filters
                .image(image.as_str())
                .and(if in_shard { Ok(()) } else { Err("shard") });
        if let Err(filter) = verdict {
            *stats.removed.entry(filter).or_default() += list.tags.len();
            continue;
        }
        stats.images += 1;
        let target = mapper.map(spec.namespace, &image, spec.target)?;
        let mut passing = Vec::new();
        for tag in &list.tags {
            match filters.tag(tag.as_str()) {
                Ok(()) => passing.push(tag),
                Err(filter) => *stats.removed.entry(filter).or_default() += 1,
            }
        }
        let uploaded = |t: &Tag| list.digests.get(t).and_then(|i| i.uploaded_ms);
        let ages: Vec<(&str, Option<i64>)> =
            passing.iter().map(|t| (t.as_str(), uploaded(t))).collect();
        let newest = filters.latest_of(&ages);
        if newest.len() < passing.len() {
            *stats.removed.entry("latest").or_default() += passing.len() - newest.len();
        }
        for tag in newest.into_iter().map(|i| passing[i].clone()) {
            let listed = Listed {
                image: image.clone(),
                tag: tag.clone(),
                target: target.clone(),
            };
            match list.digests.get(&tag) {
                Some(info) => known.push(listed.candidate(
                    spec,
                    info.digest.clone(),
                    info.uploaded_ms,
                    info.media_type.clone(),
                )),
                None => to_head.push(listed),
            }
        }
    }
    let headed: Vec<Option<Candidate>> = stream::iter(to_head)
        .map(|listed| async move {
            let repo = spec.namespace.repo(&listed.image);
            let head = registry
                .head_manifest(&repo, &ManifestRef::Tag(listed.tag.clone()))
                .await;
            let head = head.map_err(list_error(format!(
                "{}/{}:{}",
                spec.namespace, listed.image, listed.tag
            )))?;
            // A tag deleted since it was listed is simply gone.
            Ok::<_, ListError>(
                head.map(|h| listed.candidate(spec, h.digest, None, Some(h.media_type))),
            )
        })
        .buffer_unordered(queries)
        .try_collect()
        .await?;
    let mut candidates: Vec<Candidate> = known
        .into_iter()
        .chain(headed.into_iter().flatten())
        .collect();
    candidates.sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    Ok((candidates, stats))
}

/// HEADs each candidate's tag on the target, for adoption and for records without digests.
pub async fn target_heads<R: Registry>(
    target: &R,
    candidates: &[&Candidate],
    queries: usize,
) -> Result<HashMap<TargetKey, Option<TargetHead>>, ListError> {
    stream::iter(candidates)
        .map(|c| async move {
            let head = target
                .head_manifest(&c.target.path, &ManifestRef::Tag(c.tag.clone()))
                .await;
            let head = head.map_err(|error| ListError {
                source_ref: format!("{}:{}", c.target, c.tag),
                error,
            })?;
            Ok((
                (c.source, c.image.clone(), c.tag.clone()),
                head.map(|h| TargetHead {
                    digest: h.digest,
                    media_type: h.media_type,
                }),
            ))
        })
        .buffer_unordered(queries)
        .try_collect()
        .await
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
