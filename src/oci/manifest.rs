//! Manifests as raw bytes plus what the copy needs from them: children, blobs, platforms.

use bytes::Bytes;
use serde::Deserialize;

use crate::reference::Digest;

/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker image manifest, schema 1 (unsigned form).
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
/// Docker image manifest, schema 1, signed (JWS): what gcr.io serves for pre-2017 images.
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
/// OCI image config, and Docker's: the configs whose `os`/`architecture` name a platform.
const IMAGE_CONFIGS: [&str; 2] = [
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Configs larger than this are not read for their platform (image configs are a few KiB).
pub const CONFIG_LIMIT: u64 = 64 * 1024;

/// The Accept header for manifest requests: every type that can be copied verbatim.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// `listed` as a listed tag's media type: one of the usual manifest types shared, so that
/// 15,000 listed tags do not hold 15,000 copies of the same few strings.
pub fn shared_media_type(listed: String) -> std::sync::Arc<str> {
    use std::sync::{Arc, LazyLock};
    static USUAL: LazyLock<[Arc<str>; 4]> =
        LazyLock::new(|| [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].map(Arc::from));
    USUAL
        .iter()
        .find(|usual| ***usual == *listed)
        .cloned()
        .unwrap_or_else(|| listed.into())
}

/// Whether a media type is a multi-platform index (OCI index or Docker list).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_LIST)
}

/// Why a manifest of this media type cannot be mirrored verbatim, or `None` when it can
/// or when the type says too little to tell (empty, `application/json`, `text/plain`: the
/// body decides). Decided from the type alone, so a listing's or a HEAD's `Content-Type`
/// settles it without a download.
pub fn skip_reason(media_type: &str) -> Option<String> {
    let media_type = media_type.split(';').next().unwrap_or_default().trim();
    match media_type {
        OCI_INDEX | OCI_MANIFEST | DOCKER_LIST | DOCKER_MANIFEST => None,
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => Some(format!(
            "schema 1 manifest ({media_type}): its signed digest covers a form registries \
             rewrite, and current registries refuse schema 1 pushes"
        )),
        // Only a specific manifest type is a verdict; a generic one may hide anything.
        t if t.starts_with("application/vnd.") => {
            Some(format!("manifest media type {t} cannot be copied verbatim"))
        }
        _ => None,
    }
}

/// The platform (`os/arch[/variant]`) an image config names, when it is an image config.
pub fn config_platform(media_type: &str, bytes: &[u8]) -> Option<String> {
    if !(media_type.is_empty() || IMAGE_CONFIGS.contains(&media_type)) {
        return None;
    }
    let platform: WirePlatform = serde_json::from_slice(bytes).ok()?;
    platform.describe()
}

/// A manifest exactly as the registry served it; pushed back byte for byte.
#[derive(Debug, Clone)]
pub struct RawManifest {
    /// The body.
    pub bytes: Bytes,
    /// Its media type (from the body's `mediaType`, else the `Content-Type`).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
}

/// A referenced piece of content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Its digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// Its media type.
    pub media_type: String,
}

/// What a manifest refers to, which decides how it is copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// An index or list: child manifests, each with its platform (`os/arch[/variant]`).
    Index(Vec<(Descriptor, Option<String>)>),
    /// An image: its config and layers (and any other blobs it names).
    Image(Vec<Descriptor>),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<WireDescriptor>,
    #[serde(default)]
    layers: Vec<WireDescriptor>,
    manifests: Option<Vec<WireDescriptor>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireDescriptor {
    media_type: Option<String>,
    digest: Digest,
    size: u64,
    platform: Option<WirePlatform>,
}

#[derive(Deserialize)]
struct WirePlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

impl WirePlatform {
    /// `os/arch[/variant]`, or `None` when os or architecture is missing.
    fn describe(self) -> Option<String> {
        if self.os.is_empty() || self.architecture.is_empty() {
            return None;
        }
        Some(match self.variant {
            Some(v) if !v.is_empty() => format!("{}/{}/{}", self.os, self.architecture, v),
            _ => format!("{}/{}", self.os, self.architecture),
        })
    }
}

impl WireDescriptor {
    fn into_descriptor(self) -> (Descriptor, Option<String>) {
        let platform = self.platform.and_then(WirePlatform::describe);
        let media_type = self.media_type.unwrap_or_default();
        (
            Descriptor {
                digest: self.digest,
                size: self.size,
                media_type,
            },
            platform,
        )
    }
}

/// Why a manifest cannot be read for copying.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Schema 1, or another type that cannot be mirrored verbatim: skipped, not failed.
    #[error("{0}")]
    Uncopyable(String),
    /// Not a JSON manifest of a known shape.
    #[error("not a manifest: {0}")]
    Malformed(String),
}

impl RawManifest {
    /// Wraps bytes as served, taking the media type from the body when it names one.
    pub fn new(bytes: Bytes, content_type: Option<&str>) -> Self {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct MediaTypeOnly {
            media_type: Option<String>,
        }
        let from_body = serde_json::from_slice::<MediaTypeOnly>(&bytes)
            .ok()
            .and_then(|m| m.media_type);
        let from_header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
        let media_type = from_body
            .or(from_header)
            .unwrap_or_else(|| OCI_MANIFEST.to_string());
        let digest = Digest::sha256_of(&bytes);
        RawManifest {
            bytes,
            media_type,
            digest,
        }
    }

    /// Reads the children or blobs the manifest refers to.
    pub fn contents(&self) -> Result<Contents, ManifestError> {
        if let Some(reason) = skip_reason(&self.media_type) {
            return Err(ManifestError::Uncopyable(reason));
        }
        let wire: Wire = serde_json::from_slice(&self.bytes)
            .map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if wire.schema_version == Some(1) {
            let reason = skip_reason(DOCKER_SCHEMA1).expect("schema 1 is skipped");
            return Err(ManifestError::Uncopyable(reason));
        }
        let is_index = is_index(wire.media_type.as_deref().unwrap_or(&self.media_type))
            || wire.manifests.is_some();
        if is_index {
            let children = wire
                .manifests
                .unwrap_or_default()
                .into_iter()
                .map(WireDescriptor::into_descriptor);
            return Ok(Contents::Index(children.collect()));
        }
        let config = wire
            .config
            .ok_or_else(|| ManifestError::Malformed("image manifest without config".into()))?;
        let blobs = std::iter::once(config)
            .chain(wire.layers)
            .map(|d| d.into_descriptor().0);
        Ok(Contents::Image(blobs.collect()))
    }
}

impl Contents {
    /// The platforms of an index's children, sorted, without attestation entries.
    pub fn platforms(&self) -> Vec<String> {
        let Contents::Index(children) = self else {
            return Vec::new();
        };
        let mut platforms: Vec<String> = children
            .iter()
            .filter_map(|(_, p)| p.clone())
            .filter(|p| p != "unknown/unknown")
            .collect();
        platforms.sort();
        platforms.dedup();
        platforms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn index_children_and_platforms() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":6,"platform":{{"os":"linux","architecture":"amd64"}}}},
            {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":7,"platform":{{"os":"unknown","architecture":"unknown"}}}}]}}"#,
            digest('a'),
            digest('b'),
            digest('c')
        );
        let m = RawManifest::new(Bytes::from(body), Some("text/plain"));
        assert_eq!(m.media_type, OCI_INDEX);
        let contents = m.contents().unwrap();
        assert_eq!(contents.platforms(), ["linux/amd64", "linux/arm64/v8"]);
        let Contents::Index(children) = contents else {
            panic!("not an index")
        };
        assert_eq!(children.len(), 3);
    }

    #[test]
    fn image_blobs_include_config_first() {
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{}","size":1}},"layers":[{{"digest":"{}","size":2}}]}}"#,
            digest('1'),
            digest('2')
        );
        let m = RawManifest::new(
            Bytes::from(body),
            Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")),
        );
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        let Contents::Image(blobs) = m.contents().unwrap() else {
            panic!("not an image")
        };
        assert_eq!(blobs.iter().map(|b| b.size).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn schema1_is_refused() {
        let m = RawManifest::new(
            Bytes::from_static(br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Some(DOCKER_SCHEMA1_SIGNED),
        );
        assert!(
            matches!(m.contents(), Err(ManifestError::Uncopyable(r)) if r.starts_with("schema 1"))
        );
        // Unsigned, served as plain JSON: the body's schemaVersion tells.
        let plain = RawManifest::new(
            Bytes::from_static(br#"{"schemaVersion":1,"fsLayers":[]}"#),
            Some("application/json"),
        );
        assert!(matches!(
            plain.contents(),
            Err(ManifestError::Uncopyable(_))
        ));
    }

    #[test]
    fn skip_reasons_come_from_the_media_type_alone() {
        for copyable in [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST] {
            assert_eq!(skip_reason(copyable), None);
        }
        for vague in ["", "application/json", "text/plain; charset=utf-8"] {
            assert_eq!(skip_reason(vague), None, "{vague}");
        }
        let signed = skip_reason(&format!("{DOCKER_SCHEMA1_SIGNED}; charset=utf-8")).unwrap();
        assert!(signed.starts_with("schema 1 manifest (") && signed.contains("prettyjws"));
        assert!(skip_reason(DOCKER_SCHEMA1).unwrap().starts_with("schema 1"));
        let vendor = skip_reason("application/vnd.example.thing.v3+json").unwrap();
        assert!(
            vendor.contains("application/vnd.example.thing.v3+json"),
            "{vendor}"
        );
    }

    #[test]
    fn config_platforms() {
        let oci = "application/vnd.oci.image.config.v1+json";
        let docker = "application/vnd.docker.container.image.v1+json";
        let config = br#"{"architecture":"arm","os":"linux","variant":"v7","rootfs":{}}"#;
        assert_eq!(
            config_platform(oci, config).as_deref(),
            Some("linux/arm/v7")
        );
        let amd = br#"{"architecture":"amd64","os":"linux","config":{}}"#;
        assert_eq!(config_platform(docker, amd).as_deref(), Some("linux/amd64"));
        assert_eq!(config_platform("", amd).as_deref(), Some("linux/amd64"));
        // An artifact's config (Helm chart, signature) names no platform.
        assert_eq!(
            config_platform("application/vnd.cncf.helm.config.v1+json", amd),
            None
        );
        assert_eq!(config_platform(oci, br#"{"rootfs":{}}"#), None);
        assert_eq!(config_platform(oci, b"not json"), None);
    }
}
