//! The OCI 1.1 referrers API as a mirror sees it: one page as the registry sent it (kept
//! verbatim for `serve`), and the descriptors it lists (for `sync`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::manifest::{OCI_INDEX, RawManifest};
use crate::reference::Digest;

/// One page of `GET /v2/<name>/referrers/<digest>`, as the registry sent it.
#[derive(Debug, Clone)]
pub struct ReferrersPage {
    /// The body: an image index of descriptors.
    pub bytes: Bytes,
    /// `Content-Type` (an OCI image index).
    pub content_type: String,
    /// `OCI-Filters-Applied` (e.g. `artifactType`), when the registry filtered.
    pub filters_applied: Option<String>,
    /// The next page (`Link: <…>; rel="next"`), a path or URL on the same registry.
    pub next: Option<String>,
}

/// A descriptor in a referrers list (or a fallback tag's index): what a referrer is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    /// The referrer manifest's media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its artifact type (the manifest's `artifactType`, else its config's media type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Its annotations, copied from the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct IndexWire {
    #[serde(default)]
    manifests: Vec<Referrer>,
}

/// The descriptors of a referrers page or fallback index; `None` when the body is not
/// an image index (a registry without the API may answer 200 with something else).
pub fn parse_index(bytes: &[u8]) -> Option<Vec<Referrer>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).ok()?;
    if probe.manifests.is_none() || probe.media_type.as_deref().is_some_and(|m| m != OCI_INDEX) {
        return None;
    }
    serde_json::from_slice::<IndexWire>(bytes)
        .ok()
        .map(|i| i.manifests)
}

/// What a manifest says about itself as a referrer: its subject, and the descriptor a
/// referrers list gives it (artifact type, annotations), per the distribution spec.
pub fn as_referrer(manifest: &RawManifest) -> Option<(Digest, Referrer)> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        artifact_type: Option<String>,
        config: Option<Config>,
        subject: Option<Subject>,
        annotations: Option<serde_json::Map<String, serde_json::Value>>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Config {
        media_type: Option<String>,
    }
    #[derive(Deserialize)]
    struct Subject {
        digest: Digest,
    }
    let wire: Wire = serde_json::from_slice(&manifest.bytes).ok()?;
    let subject = wire.subject?.digest;
    let artifact_type = wire
        .artifact_type
        .or_else(|| wire.config.and_then(|c| c.media_type));
    Some((
        subject,
        Referrer {
            media_type: manifest.media_type.clone(),
            digest: manifest.digest.clone(),
            size: manifest.bytes.len() as u64,
            artifact_type,
            annotations: wire.annotations.filter(|a| !a.is_empty()),
        },
    ))
}

/// Every referrer of `digest`, following pagination; `None` without the API. The caller
/// filters by artifact type itself: a registry may ignore `artifactType` (it then sends
/// no `OCI-Filters-Applied`).
pub async fn all<R: super::Registry>(
    registry: &R,
    repo: &crate::reference::RepoPath,
    digest: &Digest,
    artifact_type: Option<&str>,
) -> super::Result<Option<Vec<Referrer>>> {
    let mut all = Vec::new();
    let mut page = None;
    let mut pages = 0;
    loop {
        let Some(got) = registry
            .referrers_page(repo, digest, artifact_type, page.as_deref())
            .await?
        else {
            // A later page gone missing ends the list; the first says "no API".
            return Ok((pages > 0).then_some(all));
        };
        pages += 1;
        all.extend(parse_index(&got.bytes).unwrap_or_default());
        match got.next {
            // A registry sending the same link again would loop forever.
            Some(next) if page.as_deref() != Some(next.as_str()) && pages < 1000 => {
                page = Some(next)
            }
            _ => return Ok(Some(all)),
        }
    }
}

/// The fallback tag of a subject (`sha256-<hex>`), as the distribution spec names it.
pub fn fallback_tag(subject: &Digest) -> String {
    subject.as_str().replacen(':', "-", 1)
}

/// A fallback index with `referrer` added (replacing one of the same digest), or `None`
/// when it is already listed as is. `existing`: the target's current index bytes, if any;
/// its other fields and entries are kept in order.
pub fn merge_fallback(existing: Option<&[u8]>, referrer: &Referrer) -> Option<Vec<u8>> {
    let mut index = existing
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .filter(|v| v.get("manifests").is_some_and(|m| m.is_array()))
        .unwrap_or_else(
            || serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        );
    let entry = serde_json::to_value(referrer).expect("descriptors serialize");
    let manifests = index["manifests"].as_array_mut().expect("checked above");
    let same = |m: &serde_json::Value| m["digest"].as_str() == Some(referrer.digest.as_str());
    match manifests.iter().position(same) {
        Some(at) if manifests[at] == entry => return None,
        Some(at) => manifests[at] = entry,
        None => manifests.push(entry),
    }
    Some(serde_json::to_vec(&index).expect("an index serializes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> Digest {
        Digest::repeat(c)
    }

    fn referrer(c: char, kind: &str) -> Referrer {
        Referrer {
            media_type: super::super::manifest::OCI_MANIFEST.into(),
            digest: digest(c),
            size: 10,
            artifact_type: Some(kind.into()),
            annotations: None,
        }
    }

    #[test]
    fn fallback_tags_name_the_subject() {
        assert_eq!(
            fallback_tag(&digest('a')),
            format!("sha256-{}", "a".repeat(64))
        );
    }

    #[test]
    fn merging_adds_replaces_and_keeps_what_was_there() {
        let first = merge_fallback(None, &referrer('a', "sig")).unwrap();
        assert_eq!(parse_index(&first).unwrap(), [referrer('a', "sig")]);
        assert_eq!(merge_fallback(Some(&first), &referrer('a', "sig")), None);
        let second = merge_fallback(Some(&first), &referrer('b', "sbom")).unwrap();
        let listed = parse_index(&second).unwrap();
        assert_eq!(listed, [referrer('a', "sig"), referrer('b', "sbom")]);
        // Someone else's annotations on the index stay; a changed entry is replaced.
        let annotated = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","annotations":{"k":"v"},"manifests":[]}"#;
        let merged = merge_fallback(Some(annotated), &referrer('c', "x")).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(value["annotations"]["k"], "v");
        let changed = merge_fallback(Some(&second), &referrer('b', "spdx")).unwrap();
        assert_eq!(
            parse_index(&changed).unwrap()[1].artifact_type.as_deref(),
            Some("spdx")
        );
        // Garbage at the tag is replaced by a fresh index.
        assert!(merge_fallback(Some(b"not json"), &referrer('a', "sig")).is_some());
    }

    #[test]
    fn only_an_index_is_a_referrers_answer() {
        assert_eq!(parse_index(b"404 page not found"), None);
        assert_eq!(parse_index(br#"{"errors":[]}"#), None);
        let other = br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#;
        assert_eq!(parse_index(other), None);
        assert_eq!(
            parse_index(br#"{"schemaVersion":2,"manifests":[]}"#),
            Some(vec![])
        );
    }

    #[test]
    fn a_manifest_with_a_subject_describes_itself() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.example.sbom","digest":"{}","size":2}},"layers":[],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":3}},"annotations":{{"org.example":"1"}}}}"#,
            digest('c'),
            digest('5')
        );
        let m = RawManifest::new(Bytes::from(body), None);
        let (subject, r) = as_referrer(&m).unwrap();
        assert_eq!(subject, digest('5'));
        assert_eq!(
            r.artifact_type.as_deref(),
            Some("application/vnd.example.sbom")
        );
        assert_eq!(r.annotations.unwrap()["org.example"], "1");
        let plain = RawManifest::new(Bytes::from_static(br#"{"schemaVersion":2}"#), None);
        assert!(as_referrer(&plain).is_none());
    }
}
