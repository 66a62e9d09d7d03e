//! Manifests: by digest from the cache (fetched once), by tag from the cache within
//! `--tag-ttl`, then revalidated with a HEAD (which Docker Hub does not count as a pull),
//! and served stale when the upstream is down. The decisions are pure functions below.

use std::sync::Arc;
use std::time::Duration;

use super::Proxy;
use super::cache::{CachedManifest, TagRecord, now};
use super::errors::{ApiError, from_upstream};
use super::metrics::inc;
use crate::oci::{ManifestHead, ManifestRef, Registry};
use crate::reference::{Digest, RepoPath, Tag};

/// What to do for a tag request, given what the cache knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagAction {
    /// Answer from the cache.
    Fresh(Digest),
    /// Ask the upstream with a HEAD whether it still points there.
    Revalidate(Digest),
    /// Never seen (or its manifest was evicted): GET it.
    Fetch,
}

/// The action for a tag: `record` is what it pointed to, `cached` whether that manifest
/// is still in the cache.
pub fn tag_action(record: Option<&TagRecord>, cached: bool, now: u64, ttl: Duration) -> TagAction {
    match record {
        Some(r) if cached && now.saturating_sub(r.checked) < ttl.as_secs().max(1) => {
            TagAction::Fresh(r.digest.clone())
        }
        Some(r) if cached => TagAction::Revalidate(r.digest.clone()),
        _ => TagAction::Fetch,
    }
}

/// What a revalidating HEAD means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revalidated {
    /// Still the cached digest.
    Same,
    /// The tag moved to this digest.
    Moved(Digest),
    /// The upstream no longer has the tag.
    Gone,
    /// The upstream could not say (down, 5xx, throttled): serve the cached one.
    Stale(String),
    /// The upstream refused (401/403...): pass its answer on.
    Refused(ApiError),
}

/// Judges a HEAD's outcome against the cached digest.
pub fn revalidated(cached: &Digest, head: Result<Option<Digest>, ApiError>) -> Revalidated {
    match head {
        Ok(Some(d)) if &d == cached => Revalidated::Same,
        Ok(Some(d)) => Revalidated::Moved(d),
        Ok(None) => Revalidated::Gone,
        Err(e) if e.serves_stale() => Revalidated::Stale(e.message),
        Err(e) => Revalidated::Refused(e),
    }
}

/// Where an answer came from, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The cache.
    Cache,
    /// The cache, though the upstream could not confirm it.
    Stale,
    /// An upstream fetch this request started.
    Upstream,
    /// An upstream fetch another request had started.
    Joined,
}

impl Origin {
    /// The word in the log line.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Cache => "hit",
            Origin::Stale => "stale",
            Origin::Upstream => "miss",
            Origin::Joined => "joined",
        }
    }
}

fn joined(j: bool) -> Origin {
    if j { Origin::Joined } else { Origin::Upstream }
}

/// The manifest `r` of `repo` on upstream `up`.
pub async fn manifest(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    r: &ManifestRef,
) -> Result<(CachedManifest, Origin), ApiError> {
    match r {
        ManifestRef::Digest(d) => by_digest(proxy, up, repo, d).await,
        ManifestRef::Tag(t) => by_tag(proxy, up, repo, t).await,
    }
}

async fn by_digest(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    digest: &Digest,
) -> Result<(CachedManifest, Origin), ApiError> {
    if let Some(m) = proxy.cache.manifest(digest) {
        inc(&proxy.metrics.hits);
        return Ok((m, Origin::Cache));
    }
    let (m, j) = fetch(proxy, up, repo, ManifestRef::Digest(digest.clone())).await;
    Ok((m?, joined(j)))
}

/// GETs a manifest (coalesced per upstream reference) and caches it.
async fn fetch(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    r: ManifestRef,
) -> (Result<CachedManifest, ApiError>, bool) {
    let host = proxy.upstreams[up].route.namespace.registry.clone();
    let key = format!("GET {host}/{repo}/{r}");
    let (p, repo) = (proxy.clone(), repo.clone());
    let out = proxy
        .manifests
        .run(key, move || async move {
            let registry = &p.upstreams[up].registry;
            let what = format!("{host}/{repo}:{r}");
            // The registry client retries manifest requests itself (`--retries`); retried
            // again here, a down upstream cost (retries + 1)² attempts before a cached
            // tag was served.
            inc(&p.metrics.upstream_requests);
            let m = registry
                .get_manifest(&repo, &r)
                .await
                .map_err(|e| from_upstream(&e, &what))?;
            crate::serve::metrics::add(&p.metrics.upstream_bytes, m.bytes.len() as u64);
            let cached = CachedManifest {
                bytes: m.bytes,
                media_type: m.media_type,
                digest: m.digest,
            };
            let store = p.cache.put_manifest(&cached);
            if let Err(e) = store {
                tracing::error!("cache: cannot store {what}: {e}");
            }
            if let ManifestRef::Tag(tag) = &r {
                remember(&p, up, &repo, tag, &cached);
                if let Some(log) = &p.misses {
                    log.record(&host, &repo, tag, &cached.digest);
                }
            }
            Ok(cached)
        })
        .await;
    if out.0.is_ok() {
        inc(&proxy.metrics.misses);
    }
    out
}

fn remember(proxy: &Proxy, up: usize, repo: &RepoPath, tag: &Tag, m: &CachedManifest) {
    let host = &proxy.upstreams[up].route.namespace.registry;
    let record = TagRecord {
        digest: m.digest.clone(),
        media_type: m.media_type.clone(),
        checked: now(),
    };
    if let Err(e) = proxy.cache.put_tag(host, repo, tag, &record) {
        tracing::error!("cache: cannot record {host}/{repo}:{tag}: {e}");
    }
}

async fn by_tag(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    tag: &Tag,
) -> Result<(CachedManifest, Origin), ApiError> {
    let host = proxy.upstreams[up].route.namespace.registry.clone();
    let record = proxy.cache.tag(&host, repo, tag);
    let cached = record
        .as_ref()
        .and_then(|r| proxy.cache.manifest(&r.digest));
    match tag_action(record.as_ref(), cached.is_some(), now(), proxy.tag_ttl) {
        TagAction::Fresh(_) => {
            inc(&proxy.metrics.hits);
            return Ok((cached.expect("cached"), Origin::Cache));
        }
        TagAction::Fetch => {
            let (m, j) = fetch(proxy, up, repo, ManifestRef::Tag(tag.clone())).await;
            return Ok((m?, joined(j)));
        }
        TagAction::Revalidate(_) => {}
    }
    let cached = cached.expect("cached");
    let head = head(proxy, up, repo, tag).await;
    let what = format!("{host}/{repo}:{tag}");
    match revalidated(&cached.digest, head.map(|h| h.map(|h| h.digest))) {
        Revalidated::Same => {
            remember(proxy, up, repo, tag, &cached);
            inc(&proxy.metrics.hits);
            Ok((cached, Origin::Cache))
        }
        Revalidated::Moved(digest) => {
            tracing::info!(
                "{what} moved from {} to {}",
                cached.digest.short(),
                digest.short()
            );
            let (m, j) = fetch(proxy, up, repo, ManifestRef::Tag(tag.clone())).await;
            Ok((m?, joined(j)))
        }
        Revalidated::Gone => {
            proxy.cache.drop_tag(&host, repo, tag);
            Err(ApiError::new(
                404,
                "MANIFEST_UNKNOWN",
                format!("{what}: the upstream no longer has this tag"),
            ))
        }
        Revalidated::Stale(why) => {
            tracing::warn!(
                "{what}: upstream cannot revalidate ({why}); serving the cached {}",
                cached.digest.short()
            );
            inc(&proxy.metrics.stale);
            Ok((cached, Origin::Stale))
        }
        Revalidated::Refused(e) => Err(e),
    }
}

/// A HEAD on a tag, coalesced; asked once (the cached tag answers if it fails).
async fn head(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    tag: &Tag,
) -> Result<Option<ManifestHead>, ApiError> {
    let host = &proxy.upstreams[up].route.namespace.registry;
    let key = format!("HEAD {host}/{repo}:{tag}");
    let (p, repo, r) = (proxy.clone(), repo.clone(), ManifestRef::Tag(tag.clone()));
    let what = format!("{host}/{repo}:{tag}");
    proxy
        .heads
        .run(key, move || async move {
            let registry = &p.upstreams[up].once;
            inc(&p.metrics.upstream_requests);
            registry
                .head_manifest(&repo, &r)
                .await
                .map_err(|e| from_upstream(&e, &what))
        })
        .await
        .0
}

/// What to send a client for a manifest, given what its `Accept` lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Negotiated {
    /// The manifest itself.
    Serve,
    /// A multi-arch tag asked for by a client that cannot take indexes: its linux/amd64
    /// image instead (as distribution and Docker Hub answer old clients), verbatim.
    Child(Digest),
    /// Nothing the upstream has; 404 `MANIFEST_UNKNOWN`, in distribution's words.
    Refuse(String),
}

/// distribution's name for a manifest type, singular and plural, in its refusals.
fn kind(media_type: &str) -> (&'static str, &'static str) {
    use crate::oci::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
    match media_type {
        OCI_INDEX => ("OCI index", "OCI indexes"),
        OCI_MANIFEST => ("OCI manifest", "OCI manifests"),
        DOCKER_LIST => ("manifest list", "manifest lists"),
        DOCKER_MANIFEST => ("Schema 2 manifest", "schema 2 manifests"),
        _ => ("manifest", "its media type"),
    }
}

/// Decides what answers a client that accepts `accepted`: the manifest when it can take
/// it; for a tag whose index it cannot take, the linux/amd64 child when it can take that
/// (a request by digest wants those exact bytes, so never); else a refusal. Never a
/// converted manifest.
pub fn negotiate(accepted: &[String], m: &CachedManifest, by_tag: bool) -> Negotiated {
    if accepts(accepted, &m.media_type) {
        return Negotiated::Serve;
    }
    let (one, many) = kind(&m.media_type);
    let refused = format!("{one} found, but accept header does not support {many}");
    if !by_tag || !crate::oci::manifest::is_index(&m.media_type) {
        return Negotiated::Refuse(refused);
    }
    let raw = crate::oci::manifest::RawManifest {
        bytes: m.bytes.clone(),
        media_type: m.media_type.clone(),
        digest: m.digest.clone(),
    };
    let children = match raw.contents() {
        Ok(crate::oci::manifest::Contents::Index(children)) => children,
        _ => Vec::new(),
    };
    let amd64 = children.into_iter().find(|(_, p)| {
        p.as_deref()
            .is_some_and(|p| p == "linux/amd64" || p.starts_with("linux/amd64/"))
    });
    match amd64 {
        None => Negotiated::Refuse(format!("{refused}, and it has no linux/amd64 image")),
        // A descriptor without a media type is settled once the child is fetched.
        Some((d, _)) if d.media_type.is_empty() || accepts(accepted, &d.media_type) => {
            Negotiated::Child(d.digest)
        }
        Some((d, _)) => Negotiated::Refuse(format!(
            "{refused}, nor {} (its linux/amd64 image)",
            kind(&d.media_type).1
        )),
    }
}

/// Whether a client whose `Accept` lists `accepted` can take `media_type`.
pub fn accepts(accepted: &[String], media_type: &str) -> bool {
    accepted.is_empty()
        || accepted
            .iter()
            .any(|a| a == media_type || a == "*/*" || a == "application/*")
}

/// The media types of `Accept` headers (repeated or comma-separated, parameters dropped).
pub fn accept_list<'a>(values: impl Iterator<Item = &'a str>) -> Vec<String> {
    values
        .flat_map(|v| v.split(','))
        .map(|t| t.split(';').next().unwrap_or("").trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[test]
    fn tags_are_fresh_within_the_ttl_then_revalidated() {
        let ttl = Duration::from_secs(300);
        let r = TagRecord {
            digest: d("a"),
            media_type: "t".into(),
            checked: 1000,
        };
        assert_eq!(
            tag_action(Some(&r), true, 1299, ttl),
            TagAction::Fresh(d("a"))
        );
        assert_eq!(
            tag_action(Some(&r), true, 1300, ttl),
            TagAction::Revalidate(d("a"))
        );
        assert_eq!(tag_action(Some(&r), false, 1001, ttl), TagAction::Fetch);
        assert_eq!(tag_action(None, false, 0, ttl), TagAction::Fetch);
    }

    #[test]
    fn a_failing_upstream_means_stale_and_a_refusal_passes_on() {
        assert_eq!(revalidated(&d("a"), Ok(Some(d("a")))), Revalidated::Same);
        assert_eq!(
            revalidated(&d("a"), Ok(Some(d("b")))),
            Revalidated::Moved(d("b"))
        );
        assert_eq!(revalidated(&d("a"), Ok(None)), Revalidated::Gone);
        let down = ApiError::new(503, "UNAVAILABLE", "connection refused");
        assert!(matches!(
            revalidated(&d("a"), Err(down)),
            Revalidated::Stale(_)
        ));
        let denied = ApiError::new(403, "DENIED", "no");
        assert!(matches!(
            revalidated(&d("a"), Err(denied)),
            Revalidated::Refused(_)
        ));
    }

    #[test]
    fn accept_negotiation() {
        let list = accept_list(
            [
                "application/vnd.oci.image.index.v1+json;q=0.5",
                "application/vnd.docker.distribution.manifest.v2+json, application/json",
            ]
            .into_iter(),
        );
        assert_eq!(list.len(), 3);
        assert!(accepts(&list, "application/vnd.oci.image.index.v1+json"));
        assert!(!accepts(
            &list,
            "application/vnd.docker.distribution.manifest.list.v2+json"
        ));
        assert!(accepts(&[], "anything"));
    }

    fn list(media_type: &str, children: &[(&str, &str, &str)]) -> CachedManifest {
        let manifests: Vec<serde_json::Value> = children
            .iter()
            .map(|(t, arch, body)| {
                serde_json::json!({"mediaType": t, "digest": d(body).as_str(), "size": 1,
                    "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        let body = serde_json::json!({"schemaVersion": 2, "mediaType": media_type,
            "manifests": manifests})
        .to_string();
        CachedManifest {
            digest: d(&body),
            bytes: body.into(),
            media_type: media_type.into(),
        }
    }

    #[test]
    fn an_old_client_gets_the_amd64_image_of_a_multi_arch_tag_or_a_refusal() {
        use crate::oci::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
        let docker_only = vec![DOCKER_MANIFEST.to_string()];
        let m = list(
            DOCKER_LIST,
            &[
                (DOCKER_MANIFEST, "arm64", "arm"),
                (DOCKER_MANIFEST, "amd64", "x86"),
            ],
        );
        assert_eq!(
            negotiate(&docker_only, &m, true),
            Negotiated::Child(d("x86"))
        );
        // By digest the client wants those bytes: no substitute.
        assert!(matches!(
            negotiate(&docker_only, &m, false),
            Negotiated::Refuse(_)
        ));
        assert_eq!(negotiate(&[], &m, true), Negotiated::Serve);
        let oci = list(OCI_INDEX, &[(OCI_MANIFEST, "amd64", "x86")]);
        assert_eq!(
            negotiate(&docker_only, &oci, true),
            Negotiated::Refuse(
                "OCI index found, but accept header does not support OCI indexes, \
                 nor OCI manifests (its linux/amd64 image)"
                    .into()
            )
        );
        let arm_only = list(DOCKER_LIST, &[(DOCKER_MANIFEST, "arm64", "arm")]);
        assert_eq!(
            negotiate(&docker_only, &arm_only, true),
            Negotiated::Refuse(
                "manifest list found, but accept header does not support manifest lists, \
                 and it has no linux/amd64 image"
                    .into()
            )
        );
        let image = CachedManifest {
            media_type: OCI_MANIFEST.into(),
            ..m
        };
        assert_eq!(
            negotiate(&docker_only, &image, true),
            Negotiated::Refuse(
                "OCI manifest found, but accept header does not support OCI manifests".into()
            )
        );
    }
}
