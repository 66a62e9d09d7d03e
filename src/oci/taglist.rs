//! The `tags/list` answer, with the extension gcr.io and Artifact Registry add:
//! `child` (repositories one level below) and `manifest` (digest → tags, media type,
//! upload time), which gives every tag's digest without a request per tag.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use crate::reference::{Digest, Tag};

/// What a registry says about one repository's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagList {
    /// The tags.
    pub tags: Vec<Tag>,
    /// gcr extension: names of child repositories; `None` when the registry lacks it.
    pub children: Option<Vec<String>>,
    /// gcr extension: per tag, its digest and upload time.
    pub digests: BTreeMap<Tag, TagInfo>,
}

/// A tag's manifest as the gcr `manifest` map describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInfo {
    /// The manifest digest.
    pub digest: Digest,
    /// Upload time, ms since the epoch (`timeUploadedMs`).
    pub uploaded_ms: Option<i64>,
    /// The manifest's media type (`mediaType`), which tells schema 1 without a request;
    /// the usual ones shared.
    pub media_type: Option<std::sync::Arc<str>>,
}

/// One page as served (JSON).
#[derive(Debug, Deserialize)]
pub struct TagsPage {
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    child: Option<Vec<String>>,
    #[serde(default)]
    manifest: Option<BTreeMap<String, ManifestEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestEntry {
    #[serde(default)]
    tag: Vec<String>,
    #[serde(default, deserialize_with = "number")]
    time_uploaded_ms: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
}

/// gcr.io sends numbers as strings (`"1564686316380"`); other servers as integers.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Text(String),
    }
    Ok(match Option::<Number>::deserialize(d)? {
        Some(Number::Int(n)) => Some(n),
        Some(Number::Text(t)) => t.trim().parse().ok(),
        None => None,
    })
}

impl TagList {
    /// Joins the pages of one listing. Names a registry could not address are skipped.
    pub fn from_pages(pages: Vec<TagsPage>) -> Self {
        let mut list = TagList::default();
        for page in pages {
            list.tags.extend(
                page.tags
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|t| t.parse().ok()),
            );
            if let Some(children) = page.child {
                list.children.get_or_insert_with(Vec::new).extend(children);
            }
            for (digest, entry) in page.manifest.unwrap_or_default() {
                let Ok(digest) = digest.parse::<Digest>() else {
                    continue;
                };
                let media_type = entry
                    .media_type
                    .filter(|m| !m.is_empty())
                    .map(super::manifest::shared_media_type);
                for tag in entry.tag.iter().filter_map(|t| t.parse::<Tag>().ok()) {
                    let info = TagInfo {
                        digest: digest.clone(),
                        uploaded_ms: entry.time_uploaded_ms,
                        media_type: media_type.clone(),
                    };
                    list.digests.insert(tag, info);
                }
            }
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcr_listing_gives_children_and_digests_with_string_or_integer_times() {
        let d1 = format!("sha256:{}", "1".repeat(64));
        let d2 = format!("sha256:{}", "2".repeat(64));
        let body = format!(
            r#"{{"child":["a","b"],"manifest":{{
              "{d1}":{{"imageSizeBytes":"1000","layerId":"","mediaType":"application/vnd.docker.distribution.manifest.v2+json","tag":["1.0","latest"],"timeCreatedMs":"1","timeUploadedMs":"1564686316380"}},
              "{d2}":{{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","tag":["0.9"],"timeUploadedMs":42}},
              "sha256:untagged":{{"tag":[]}}}},
              "name":"ns/img","tags":["0.9","1.0","latest"]}}"#
        );
        let list = TagList::from_pages(vec![serde_json::from_str(&body).unwrap()]);
        assert_eq!(list.children, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(list.tags.len(), 3);
        let latest = &list.digests[&"latest".parse::<Tag>().unwrap()];
        assert_eq!(
            (latest.digest.as_str(), latest.uploaded_ms),
            (d1.as_str(), Some(1_564_686_316_380))
        );
        let old = &list.digests[&"0.9".parse::<Tag>().unwrap()];
        assert_eq!(old.uploaded_ms, Some(42));
        assert_eq!(
            old.media_type.as_deref(),
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
        );
        assert_eq!(
            latest.media_type.as_deref(),
            Some("application/vnd.docker.distribution.manifest.v2+json")
        );
    }

    #[test]
    fn plain_registries_have_no_extension_and_null_tags() {
        let list = TagList::from_pages(vec![
            serde_json::from_str(r#"{"name":"x","tags":null}"#).unwrap(),
        ]);
        assert_eq!(list, TagList::default());
    }
}
