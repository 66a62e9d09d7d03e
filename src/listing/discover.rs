//! Discovery: which repositories a source has (`--images`, gcr's `child` tree, or the
//! catalog) and their tag lists, each handed on as it arrives. At 15,000 tags the lists of
//! a whole namespace held until the last one came were ≈ 4 MB (issue 14).

use std::collections::BTreeMap;

use futures_util::{StreamExt, stream};

use super::{ListError, ListFailure, ListedBy, SourceError, SourceSpec, failure};
use crate::filter::Filters;
use crate::mapping::MappingError;
use crate::oci::taglist::TagList;
use crate::oci::{self, Registry};
use crate::reference::{Namespace, RepoPath};

/// Takes each listed image that the image filters keep, with its tags.
/// Its error (a name that does not map) ends the listing.
pub type Sink<'s> = dyn FnMut(RepoPath, TagList) -> Result<(), MappingError> + Send + 's;

/// Lists the tags of many repositories at once, handing each listing to `each` as it
/// arrives. A repository gone since it was named (404) is a warning unless `strict`
/// (named by `--images`), where it is a failure. Gives the repositories that failed after
/// retries, and how many were listed; stops at the first error of `each`.
async fn list_many<R: Registry>(
    registry: &R,
    ns: &Namespace,
    images: Vec<RepoPath>,
    strict: bool,
    queries: usize,
    mut each: impl FnMut(RepoPath, TagList) -> Result<(), MappingError>,
) -> Result<(Vec<(RepoPath, oci::Error)>, usize), MappingError> {
    // Their tokens are fetched together, several scopes per token request.
    let repos: Vec<RepoPath> = images.iter().map(|image| ns.repo(image)).collect();
    registry.prepare(&repos).await;
    let mut results = stream::iter(images)
        .map(|image| async move {
            let result = registry.list_tags(&ns.repo(&image)).await;
            (image, result)
        })
        .buffer_unordered(queries);
    let (mut failed, mut listed) = (Vec::new(), 0);
    while let Some((image, result)) = results.next().await {
        match result {
            Ok(list) => {
                listed += 1;
                each(image, list)?;
            }
            Err(e) if e.status() == Some(404) && !strict => tracing::warn!(
                "{ns}/{image}: listed by the registry but answers 404 (deleted since?); skipped: {e}"
            ),
            Err(e) => failed.push((image, e)),
        }
    }
    Ok((failed, listed))
}

/// What discovery found besides the tag lists it handed on.
#[derive(Default)]
pub struct Discovered {
    pub listed_by: Option<ListedBy>,
    /// Whether every repository walked was listed (none failed, not `--images`).
    pub complete: bool,
    pub images_removed: BTreeMap<&'static str, usize>,
    pub failures: Vec<ListFailure>,
}

impl Discovered {
    /// Discovery of every repository by `how`: complete until a repository fails.
    fn walking(how: ListedBy) -> Self {
        Discovered {
            listed_by: Some(how),
            complete: true,
            ..Discovered::default()
        }
    }

    /// Repository failures: those of images the filters keep are failures, those of
    /// images walked only for their children are warnings.
    fn failed(&mut self, ns: &Namespace, failed: Vec<(RepoPath, oci::Error)>, filters: &Filters) {
        // A repository not listed hides its tags, and in a gcr tree what is below it.
        self.complete &= failed.is_empty();
        for (image, error) in failed {
            match filters.image(image.as_str()) {
                Ok(()) => self.failures.push(failure(ns, image, None, &error)),
                Err(filter) => tracing::warn!(
                    "{ns}/{image} is removed by --{filter}, but was listed because images below it could pass; that failed, so they are not mirrored: {error}; to skip it, have the filter remove what is below it too (e.g. --exclude-images '^{image}(/|$)')"
                ),
            }
        }
    }

    /// Hands a listed image on when it passes the image filters, else counts it removed.
    fn keep(
        &mut self,
        image: RepoPath,
        list: TagList,
        filters: &Filters,
        sink: &mut Sink<'_>,
    ) -> Result<(), MappingError> {
        match filters.image(image.as_str()) {
            Ok(()) => sink(image, list),
            Err(filter) => {
                *self.images_removed.entry(filter).or_default() += 1;
                Ok(())
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

/// The child repositories a gcr listing names, below `parent`.
fn child_paths(parent: Option<&RepoPath>, list: &TagList) -> Vec<RepoPath> {
    let children = list
        .children
        .iter()
        .flatten()
        .filter_map(|c| c.parse::<RepoPath>().ok());
    children
        .map(|c| parent.map_or(c.clone(), |p| p.join(&c)))
        .collect()
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
    sink: &mut Sink<'_>,
) -> Result<Discovered, SourceError> {
    let mut found = Discovered::walking(ListedBy::Children);
    let mut level = child_paths(None, &root);
    while !level.is_empty() {
        let wanted = found.worth_listing(level, filters, true);
        let mut below = Vec::new();
        let (failed, _) = list_many(registry, ns, wanted, false, queries, |image, list| {
            below.extend(child_paths(Some(&image), &list));
            // A gcr path with children but no tags of its own is no image.
            if list.tags.is_empty() {
                return Ok(());
            }
            found.keep(image, list, filters, sink)
        })
        .await?;
        found.failed(ns, failed, filters);
        level = below;
    }
    Ok(found)
}

/// The repositories of a source, their tags handed to `sink`: `--images`; gcr's `child`
/// tree when the namespace answers with one; otherwise the catalog entries under the
/// namespace path. Fails as a whole only when the namespace cannot be listed at all.
pub async fn discover<R: Registry>(
    registry: &R,
    spec: &SourceSpec<'_>,
    filters: &Filters,
    queries: usize,
    sink: &mut Sink<'_>,
) -> Result<Discovered, SourceError> {
    let ns = spec.namespace;
    let mut found = Discovered::default();
    if let Some(images) = spec.images {
        let wanted = found.worth_listing(images.to_vec(), filters, false);
        let (mut failed, listed) = list_many(registry, ns, wanted, true, queries, |image, list| {
            found.keep(image, list, filters, sink)
        })
        .await?;
        // Nothing at the root vouches for the credentials here: refused everywhere, they are.
        let refused = |(_, e): &(RepoPath, oci::Error)| matches!(e, oci::Error::Auth { .. });
        if listed == 0
            && let Some(at) = failed.iter().position(refused)
        {
            let (image, error) = failed.swap_remove(at);
            return Err(ListError {
                source_ref: format!("{ns}/{image}"),
                error,
            }
            .into());
        }
        found.failed(ns, failed, filters);
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
                    return from_catalog(registry, ns, images, filters, queries, sink).await;
                }
            }
            Err(e) => tracing::debug!("{ns}: catalog failed ({e}); probing the namespace"),
        }
    }
    if let Some(root) = &ns.path {
        match registry.list_tags(root).await {
            Ok(list) if list.children.is_some() => {
                return walk_children(registry, ns, list, filters, queries, sink).await;
            }
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {}
            Err(error) => {
                return Err(ListError {
                    source_ref: ns.to_string(),
                    error,
                }
                .into());
            }
        }
    }
    let all = registry.catalog().await.map_err(|error| ListError {
        source_ref: format!("{ns} (catalog)"),
        error,
    })?;
    from_catalog(registry, ns, under(ns, &all), filters, queries, sink).await
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
    sink: &mut Sink<'_>,
) -> Result<Discovered, SourceError> {
    let mut found = Discovered::walking(ListedBy::Catalog);
    let wanted = found.worth_listing(images, filters, false);
    let (failed, _) = list_many(registry, ns, wanted, false, queries, |image, list| {
        found.keep(image, list, filters, sink)
    })
    .await?;
    found.failed(ns, failed, filters);
    Ok(found)
}
