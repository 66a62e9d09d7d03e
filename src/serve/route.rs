//! What a request asks for: the distribution API path parsed into a typed endpoint, and
//! the client's repository routed to an upstream (by prefix, default route or `?ns=`).
//! Pure functions, tested without a network.

use super::errors::ApiError;
use crate::oci::ManifestRef;
use crate::reference::{Digest, RepoPath};
use crate::settings::serve::UpstreamRoute;

/// One endpoint of the pull API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v2/`.
    Base,
    /// `/v2/NAME/manifests/REF`.
    Manifest(RepoPath, ManifestRef),
    /// `/v2/NAME/blobs/DIGEST`.
    Blob(RepoPath, Digest),
    /// `/v2/NAME/tags/list`.
    Tags(RepoPath),
    /// `/v2/NAME/referrers/DIGEST`.
    Referrers(RepoPath, Digest),
    /// `/v2/NAME/blobs/uploads/...` and `/v2/_catalog`: never served here.
    Unsupported,
}

fn name(text: &str) -> Result<RepoPath, ApiError> {
    text.parse()
        .map_err(|e| ApiError::new(400, "NAME_INVALID", format!("{e}")))
}

fn digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e| ApiError::new(400, "DIGEST_INVALID", format!("{e}")))
}

/// Parses a request path (`/v2/...`); `None` for paths outside the API.
pub fn endpoint(path: &str) -> Option<Result<Endpoint, ApiError>> {
    let rest = path.strip_prefix("/v2")?;
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Some(Ok(Endpoint::Base));
    }
    if rest == "_catalog" || rest.contains("/blobs/uploads") {
        return Some(Ok(Endpoint::Unsupported));
    }
    let parsed = (|| {
        if let Some(repo) = rest.strip_suffix("/tags/list") {
            return Ok(Endpoint::Tags(name(repo)?));
        }
        // Repository names cannot contain these words as components' neighbours in this
        // order, so the last occurrence splits name from reference.
        for (marker, kind) in [("/manifests/", 0), ("/blobs/", 1), ("/referrers/", 2)] {
            if let Some(at) = rest.rfind(marker) {
                let (repo, reference) = (&rest[..at], &rest[at + marker.len()..]);
                let repo = name(repo)?;
                return Ok(match kind {
                    0 => Endpoint::Manifest(repo, manifest_ref(reference)?),
                    1 => Endpoint::Blob(repo, digest(reference)?),
                    _ => Endpoint::Referrers(repo, digest(reference)?),
                });
            }
        }
        Err(ApiError::new(
            404,
            "NAME_UNKNOWN",
            format!("no such endpoint: {path}"),
        ))
    })();
    Some(parsed)
}

fn manifest_ref(text: &str) -> Result<ManifestRef, ApiError> {
    if text.contains(':') {
        return digest(text).map(ManifestRef::Digest);
    }
    text.parse()
        .map(ManifestRef::Tag)
        .map_err(|e| ApiError::new(400, "TAG_INVALID", format!("{e}")))
}

/// Which upstream serves `repo`, and under which repository there: `?ns=HOST` picks the
/// upstream of that host (containerd's mirrors); else the longest matching prefix; else
/// the default route, with the path appended unchanged.
pub fn route(
    upstreams: &[UpstreamRoute],
    repo: &RepoPath,
    ns: Option<&str>,
) -> Result<(usize, RepoPath), ApiError> {
    if let Some(host) = ns {
        let same = |u: &UpstreamRoute| {
            let ours = u.namespace.registry.as_str();
            ours == host
                || (u.namespace.registry.is_docker_hub()
                    && matches!(
                        host,
                        "docker.io" | "registry-1.docker.io" | "index.docker.io"
                    ))
        };
        let found = upstreams
            .iter()
            .position(|u| same(u) && u.prefix.is_none())
            .or_else(|| upstreams.iter().position(same));
        return match found {
            Some(i) => Ok((i, upstreams[i].namespace.repo(repo))),
            None => Err(ApiError::new(
                404,
                "NAME_UNKNOWN",
                format!("no --upstream for registry {host} (containerd's ?ns=)"),
            )),
        };
    }
    let prefixed = upstreams
        .iter()
        .enumerate()
        .filter_map(|(i, u)| Some((i, u, repo.strip_prefix(Some(u.prefix.as_ref()?))?)))
        .max_by_key(|(_, u, _)| u.prefix.as_ref().map_or(0, |p| p.depth()));
    if let Some((i, u, rest)) = prefixed {
        return Ok((i, u.namespace.repo(&rest)));
    }
    match upstreams.iter().position(|u| u.prefix.is_none()) {
        Some(i) => Ok((i, upstreams[i].namespace.repo(repo))),
        None => Err(ApiError::new(
            404,
            "NAME_UNKNOWN",
            format!("{repo}: no --upstream prefix matches, and there is no default upstream"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::serve::upstream_route;

    fn routes() -> Vec<UpstreamRoute> {
        ["gcr.io", "k8s=registry.k8s.io", "k8s/extra=quay.io/extra"]
            .iter()
            .map(|t| upstream_route(t).unwrap())
            .collect()
    }

    fn repo(s: &str) -> RepoPath {
        s.parse().unwrap()
    }

    #[test]
    fn paths_parse_into_endpoints() {
        let e = endpoint("/v2/google_containers/etcd-amd64/manifests/3.0.14-kubeadm");
        assert_eq!(
            e.unwrap().unwrap(),
            Endpoint::Manifest(
                repo("google_containers/etcd-amd64"),
                ManifestRef::Tag("3.0.14-kubeadm".parse().unwrap())
            )
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let e = endpoint(&format!("/v2/a/b/blobs/{d}")).unwrap().unwrap();
        assert_eq!(e, Endpoint::Blob(repo("a/b"), d.parse().unwrap()));
        assert_eq!(endpoint("/v2/").unwrap().unwrap(), Endpoint::Base);
        assert_eq!(endpoint("/v2").unwrap().unwrap(), Endpoint::Base);
        assert_eq!(
            endpoint("/v2/a/tags/list").unwrap().unwrap(),
            Endpoint::Tags(repo("a"))
        );
        assert_eq!(
            endpoint("/v2/a/blobs/uploads/").unwrap().unwrap(),
            Endpoint::Unsupported
        );
        assert!(endpoint("/metrics").is_none());
        let bad = endpoint("/v2/a/blobs/sha256:zz").unwrap().unwrap_err();
        assert_eq!(bad.code, "DIGEST_INVALID");
        let bad = endpoint("/v2/UPPER/manifests/1").unwrap().unwrap_err();
        assert_eq!(bad.code, "NAME_INVALID");
    }

    #[test]
    fn repositories_route_by_prefix_default_and_ns() {
        let r = routes();
        let to = |path: &str, ns: Option<&str>| {
            let (i, repo) = route(&r, &repo(path), ns).unwrap();
            format!("{}/{}", r[i].namespace.registry, repo)
        };
        assert_eq!(
            to("google_containers/etcd-amd64", None),
            "gcr.io/google_containers/etcd-amd64"
        );
        assert_eq!(to("k8s/pause", None), "registry.k8s.io/pause");
        assert_eq!(to("k8s/extra/tool", None), "quay.io/extra/tool");
        // A prefix is a whole component: `k8sfoo` is the default route's.
        assert_eq!(to("k8sfoo/x", None), "gcr.io/k8sfoo/x");
        assert_eq!(
            to("pause", Some("registry.k8s.io")),
            "registry.k8s.io/pause"
        );
        assert!(route(&r, &repo("x"), Some("ghcr.io")).is_err());
        let only_prefixed = vec![upstream_route("k8s=registry.k8s.io").unwrap()];
        assert!(route(&only_prefixed, &repo("other/x"), None).is_err());
    }
}
