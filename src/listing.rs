//! Listing: the images and tags of each source, their digests (HEAD, never GET), and the
//! target's digests for tags without a record. I/O only; the decisions are in `plan`.

use std::collections::HashMap;

use futures_util::{StreamExt, TryStreamExt, stream};

use crate::filter::Filters;
use crate::mapping::NameMapper;
use crate::oci::{self, ManifestRef, Registry};
use crate::plan::{Candidate, TargetKey};
use crate::reference::{Digest, Namespace, RepoPath, Tag};

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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ListStats {
    /// Images listed (after image filters and sharding).
    pub images: usize,
    /// Tags listed in those images.
    pub tags: usize,
    /// Tags the tag filters removed.
    pub filtered: usize,
}

/// A stable shard of an image name (FNV-1a), the same on every machine and run.
fn shard_of(name: &str, count: u64) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % count
}

/// The images of a source: `--images`, or the catalog entries under its path.
async fn images<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
) -> Result<Vec<RepoPath>, ListError> {
    if let Some(images) = spec.images {
        return Ok(images.to_vec());
    }
    let all = registry.catalog().await.map_err(|error| ListError {
        source_ref: format!("{} (catalog)", spec.namespace),
        error,
    })?;
    Ok(all
        .iter()
        .filter_map(|repo| repo.strip_prefix(spec.namespace.path.as_ref()))
        .collect())
}

/// Lists, filters, shards and maps one source, then HEADs each tag for its digest.
pub async fn list_source<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    filters: &Filters,
    mapper: &NameMapper,
    queries: usize,
) -> Result<(Vec<Candidate>, ListStats), SourceError> {
    let (index, (shard, shards)) = (spec.index, spec.shard);
    let mut names = images(registry, spec).await?;
    names.retain(|i| {
        filters.keeps_image(i.as_str())
            && shard_of(&format!("{}/{i}", spec.namespace), shards) == shard
    });
    names.sort();
    let mut stats = ListStats {
        images: names.len(),
        ..ListStats::default()
    };
    let listed: Vec<(RepoPath, Vec<Tag>)> = stream::iter(names)
        .map(|image| async move {
            let repo = spec.namespace.repo(&image);
            match registry.list_tags(&repo).await {
                Ok(tags) => Ok((image, tags)),
                // Deleted between the catalog and now: nothing to mirror, not a failure.
                Err(e) if e.status() == Some(404) && spec.images.is_none() => {
                    Ok((image, Vec::new()))
                }
                Err(error) => Err(ListError {
                    source_ref: format!("{}/{image}", spec.namespace),
                    error,
                }),
            }
        })
        .buffer_unordered(queries)
        .try_collect()
        .await?;
    let mut wanted = Vec::new();
    for (image, tags) in listed {
        stats.tags += tags.len();
        let target = mapper.map(spec.namespace, &image, spec.target)?;
        for tag in tags {
            if filters.keeps_tag(tag.as_str()) {
                wanted.push((image.clone(), tag, target.clone()));
            } else {
                stats.filtered += 1;
            }
        }
    }
    let candidates: Vec<Option<Candidate>> = stream::iter(wanted)
        .map(|(image, tag, target)| async move {
            let repo = spec.namespace.repo(&image);
            let head = registry
                .head_manifest(&repo, &ManifestRef::Tag(tag.clone()))
                .await;
            let head = head.map_err(|error| ListError {
                source_ref: format!("{}/{image}:{tag}", spec.namespace),
                error,
            })?;
            // A tag deleted since it was listed is simply gone.
            Ok::<_, ListError>(head.map(|h| Candidate {
                source: index,
                image,
                source_repo: repo,
                tag,
                digest: h.digest,
                uploaded_ms: None,
                target,
            }))
        })
        .buffer_unordered(queries)
        .try_collect()
        .await?;
    let mut candidates: Vec<Candidate> = candidates.into_iter().flatten().collect();
    candidates.sort_by(|a, b| (&a.image, &a.tag).cmp(&(&b.image, &b.tag)));
    Ok((candidates, stats))
}

/// HEADs each candidate's tag on the target, for adoption and for records without digests.
pub async fn target_heads<R: Registry>(
    target: &R,
    candidates: &[&Candidate],
    queries: usize,
) -> Result<HashMap<TargetKey, Option<Digest>>, ListError> {
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
                head.map(|h| h.digest),
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
