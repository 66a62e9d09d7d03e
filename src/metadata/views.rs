//! What templates see of a record: lazy minijinja objects over a shared `BatchRecord`. A
//! README of 300 images reads each image's newest tags, parsing one image at a time from
//! the record's text; counts come from each image's summary; nothing holds a second copy.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr};
use minijinja::{Value, context};

use super::lazy::{BatchRecord, removed};
use super::record::{ImageRecord, TagRecord};

/// How many tags of an image the README shows (`image.newest`).
pub const NEWEST: usize = 5;

type Shared = Arc<BatchRecord>;

/// Where the page of `image` lives, relative to the namespace's directory: `<image>.md`,
/// in subdirectories as the image's path has them. GitHub shows a `readme.md` as the
/// directory's README whatever its case, so an image named `readme` gets `readme_.md`
/// (no repository name ends in `_`, so no other image gets that name).
pub fn page_path(image: &str) -> String {
    let (dir, name) = match image.rsplit_once('/') {
        Some((dir, name)) => (format!("{dir}/"), name),
        None => (String::new(), image),
    };
    if name.eq_ignore_ascii_case("readme") {
        format!("{dir}{name}_.md")
    } else {
        format!("{dir}{name}.md")
    }
}

/// `path` as a relative Markdown link: characters outside a URL path's unreserved set
/// are percent-encoded (repository names hardly have any).
fn link(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The link from the page of `image` back to the namespace README.
fn readme_link(image: &str) -> String {
    "../".repeat(image.matches('/').count()) + "README.md"
}

/// Tag names compared as people read versions: runs of digits by their value, so `v1.10`
/// comes after `v1.9`.
pub fn natural(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let run = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (la, lb) = (run(a), run(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|&&c| c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (na, nb) = (trim(&a[..la]), trim(&b[..lb]));
                let order = na.len().cmp(&nb.len()).then_with(|| na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                (a, b) = (&a[la..], &b[lb..]);
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                (a, b) = (&a[1..], &b[1..]);
            }
        }
    }
}

/// The newest `n` tags of `image` the mirror holds (not pruned): latest `synced_at`
/// first, then the highest version.
pub fn newest(image: &ImageRecord, n: usize) -> Vec<(&String, &TagRecord)> {
    let mut tags: Vec<(&String, &TagRecord)> = image
        .tags
        .iter()
        .filter(|(_, t)| t.pruned_at.is_none())
        .collect();
    let order = |a: &(&String, &TagRecord), b: &(&String, &TagRecord)| {
        b.1.synced_at
            .cmp(&a.1.synced_at)
            .then_with(|| natural(b.0, a.0))
    };
    if tags.len() > n && n > 0 {
        tags.select_nth_unstable_by(n - 1, order);
        tags.truncate(n);
    }
    tags.sort_by(order);
    tags.truncate(n);
    tags
}

fn tag_value(tag: &str, t: &TagRecord) -> Value {
    context! {
        tag => tag,
        digest => t.digest.as_ref().map_or("unknown", |d| d.as_str()),
        media_type => &t.media_type,
        platforms => &t.platforms,
        synced_at => &t.synced_at,
        deleted_upstream_at => &t.deleted_upstream_at,
        pruned_at => &t.pruned_at,
    }
}

/// Tags the mirror holds: every recorded tag but the pruned ones.
pub fn mirrored(image: &ImageRecord) -> usize {
    image
        .tags
        .values()
        .filter(|t| t.pruned_at.is_none())
        .count()
}

/// Every image of a namespace, in name order (`images` in the README).
#[derive(Debug)]
pub struct ImagesView(Shared);

impl ImagesView {
    /// A view of `record`'s images.
    pub fn new(record: Shared) -> Self {
        ImagesView(record)
    }
}

impl Object for ImagesView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let name = self.0.names().nth(key.as_usize()?)?;
        Some(Value::from_object(ImageView::new(
            self.0.clone(),
            name.clone(),
        )))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| {
            Box::new(
                this.0
                    .names()
                    .map(|name| Value::from_object(ImageView::new(this.0.clone(), name.clone()))),
            )
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }
}

/// One image: `name`, `target`, `pull` (the command that fetches its newest tag), `page`
/// (link from the README), `readme` (link back), `tag_count` (held by the mirror),
/// `newest` (up to `NEWEST` tags), `tags` (all, by name), `skipped`, `removed` (removed
/// upstream or pruned). The image is parsed when a template first reads it, once.
#[derive(Debug)]
pub struct ImageView {
    record: Shared,
    name: String,
    image: OnceLock<Option<Arc<ImageRecord>>>,
}

impl ImageView {
    /// A view of image `name` of `record`.
    pub fn new(record: Shared, name: String) -> Self {
        ImageView {
            record,
            name,
            image: OnceLock::new(),
        }
    }

    fn image(&self) -> Option<&Arc<ImageRecord>> {
        self.image
            .get_or_init(|| self.record.image(&self.name))
            .as_ref()
    }
}

const IMAGE_KEYS: &[&str] = &[
    "name",
    "target",
    "pull",
    "page",
    "readme",
    "tag_count",
    "newest",
    "tags",
    "skipped",
    "removed",
];

impl Object for ImageView {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let empty = ImageRecord::default();
        let image = self.image().map_or(&empty, |i| i.as_ref());
        Some(match key.as_str()? {
            "name" => Value::from(self.name.as_str()),
            "target" => Value::from(image.target.as_str()),
            "pull" => {
                let tag = newest(image, 1)
                    .first()
                    .map_or("TAG", |(tag, _)| tag.as_str());
                Value::from(pull_command(&image.target, tag))
            }
            "page" => Value::from(link(&page_path(&self.name))),
            "readme" => Value::from(readme_link(&self.name)),
            "tag_count" => Value::from(mirrored(image)),
            "newest" => Value::from(
                newest(image, NEWEST)
                    .into_iter()
                    .map(|(tag, t)| tag_value(tag, t))
                    .collect::<Vec<_>>(),
            ),
            "tags" => Value::from_object(TagsView(self.image().cloned())),
            "skipped" => Value::from_object(SkippedView::new(
                self.record.clone(),
                Some(self.name.clone()),
            )),
            "removed" => Value::from_object(RemovedView {
                record: self.record.clone(),
                image: Some((self.name.clone(), self.image().cloned())),
            }),
            _ => return None,
        })
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(IMAGE_KEYS)
    }
}

/// Every tag of an image, by name: `tag`, `digest`, `media_type`, `platforms`, `synced_at`.
#[derive(Debug)]
struct TagsView(Option<Arc<ImageRecord>>);

impl TagsView {
    fn tags(&self) -> impl Iterator<Item = (&String, &TagRecord)> {
        self.0.iter().flat_map(|i| i.tags.iter())
    }
}

impl Object for TagsView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let (tag, t) = self.tags().nth(key.as_usize()?)?;
        Some(tag_value(tag, t))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| Box::new(this.tags().map(|(tag, t)| tag_value(tag, t))))
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.tags().count())
    }
}

/// Skipped tags (of one image, or all): `image`, `tag`, short `digest`, `reason`, `since`.
#[derive(Debug)]
pub struct SkippedView {
    record: Shared,
    image: Option<String>,
}

impl SkippedView {
    /// The skipped tags of `record`, of `image` only when given.
    pub fn new(record: Shared, image: Option<String>) -> Self {
        SkippedView { record, image }
    }

    fn entries(&self) -> Box<dyn Iterator<Item = Value> + Send + Sync + '_> {
        let to_value = |(key, s): (&String, &super::record::Skip)| {
            let (image, tag) = key.rsplit_once(':').unwrap_or((key, ""));
            context! {
                image => image,
                tag => tag,
                digest => s.digest.short(),
                reason => &s.reason,
                since => &s.since,
            }
        };
        match &self.image {
            None => Box::new(self.record.head.skipped.iter().map(to_value)),
            Some(image) => {
                let prefix = format!("{image}:");
                Box::new(
                    self.record
                        .head
                        .skipped
                        .range(prefix.clone()..)
                        .take_while(move |(key, _)| key.starts_with(&prefix))
                        .map(to_value),
                )
            }
        }
    }
}

impl Object for SkippedView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.entries().nth(key.as_usize()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| this.entries())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(match &self.image {
            None => self.record.head.skipped.len(),
            Some(_) => self.entries().count(),
        })
    }
}

/// How a reader fetches `target:tag`: `docker pull`, or for an `oci:DIR` layout (which
/// docker cannot read) skopeo's copy of it into a registry.
fn pull_command(target: &str, tag: &str) -> String {
    match target.strip_prefix(crate::reference::LAYOUT_PREFIX) {
        Some(path) => {
            let name = path.rsplit('/').next().unwrap_or(path);
            format!("skopeo copy oci:{path}:{tag} docker://REGISTRY/{name}:{tag}")
        }
        None => format!("docker pull {target}:{tag}"),
    }
}

/// Tags removed upstream or pruned from the mirror (of one image, or all): `image`, `tag`,
/// short `digest`, `deleted_upstream_at`, `pruned_at` (either may be none). Of all images,
/// only those whose summary counts removed tags are parsed.
#[derive(Debug)]
pub struct RemovedView {
    record: Shared,
    /// One image, with its record when it has one.
    image: Option<(String, Option<Arc<ImageRecord>>)>,
}

impl RemovedView {
    /// The removed tags of every image of `record`.
    pub fn new(record: Shared) -> Self {
        RemovedView {
            record,
            image: None,
        }
    }

    fn entries(&self) -> Box<dyn Iterator<Item = Value> + Send + Sync + '_> {
        match &self.image {
            Some((name, image)) => Box::new(image.iter().flat_map(|i| removed_of(name, i))),
            None => Box::new(
                self.record
                    .summaries()
                    .filter(|(_, s)| s.removed > 0)
                    .flat_map(|(name, _)| {
                        let image = self.record.image(name);
                        image.map(|i| removed_of(name, &i)).unwrap_or_default()
                    }),
            ),
        }
    }
}

/// The removed tags of one image, as templates see them.
fn removed_of(image: &str, record: &ImageRecord) -> Vec<Value> {
    record
        .tags
        .iter()
        .filter(|(_, t)| removed(t))
        .map(|(tag, t)| {
            context! {
                image => image,
                tag => tag,
                digest => t.digest.as_ref().map_or("unknown", |d| d.short()),
                deleted_upstream_at => &t.deleted_upstream_at,
                pruned_at => &t.pruned_at,
            }
        })
        .collect()
}

impl Object for RemovedView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Seq
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.entries().nth(key.as_usize()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_enumerator(|this| this.entries())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.entries().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_the_image_path_and_never_shadow_a_readme() {
        assert_eq!(page_path("pause"), "pause.md");
        assert_eq!(page_path("kubernetes/pause"), "kubernetes/pause.md");
        assert_eq!(page_path("readme"), "readme_.md");
        assert_eq!(page_path("a/readme"), "a/readme_.md");
        assert_eq!(page_path("readme.md"), "readme.md.md");
        assert_eq!(readme_link("pause"), "README.md");
        assert_eq!(readme_link("a/b/pause"), "../../README.md");
        assert_eq!(link("a b/c+d.md"), "a%20b/c%2Bd.md");
    }

    #[test]
    fn versions_sort_by_value() {
        let mut tags = vec!["v1.10.0", "v1.9.3", "v1.9.10", "latest", "v01.9.4", "v2"];
        tags.sort_by(|a, b| natural(a, b));
        assert_eq!(
            tags,
            ["latest", "v1.9.3", "v01.9.4", "v1.9.10", "v1.10.0", "v2"]
        );
    }

    #[test]
    fn a_layout_target_is_fetched_with_skopeo_not_docker() {
        assert_eq!(
            pull_command("docker.io/m/pause", "3.9"),
            "docker pull docker.io/m/pause:3.9"
        );
        assert_eq!(
            pull_command("oci:/srv/mirror/pause", "3.9"),
            "skopeo copy oci:/srv/mirror/pause:3.9 docker://REGISTRY/pause:3.9"
        );
    }

    #[test]
    fn newest_tags_are_the_last_synced_then_the_highest() {
        let tag = |at: &str| TagRecord {
            deleted_upstream_at: None,
            pruned_at: None,
            digest: None,
            dropped_platforms: vec![],
            media_type: String::new(),
            platforms: vec![],
            referrers: Vec::new(),
            referrer_tags: None,
            source_digest: None,
            synced_at: at.into(),
        };
        let mut image = ImageRecord::default();
        for v in ["v1.8", "v1.9", "v1.10", "v1.11"] {
            image.tags.insert(v.into(), tag("2026-01-01T00:00:00Z"));
        }
        image
            .tags
            .insert("v1.2".into(), tag("2026-02-01T00:00:00Z"));
        let names: Vec<&str> = newest(&image, 3)
            .into_iter()
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(names, ["v1.2", "v1.11", "v1.10"]);
        assert_eq!(newest(&image, 10).len(), 5);
        assert!(newest(&image, 0).is_empty());
    }
}
