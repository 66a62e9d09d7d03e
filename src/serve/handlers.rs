//! The pull API's answers: `/v2/`, manifests, blobs (with `Range`), `tags/list` (with
//! pagination), referrers (passed through); writes are refused with 405 `UNSUPPORTED`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::Proxy;
use super::cache::CachedManifest;
use super::errors::{ApiError, from_upstream};
use super::fetch::{Source, blob_source};
use super::manifests::{Negotiated, Origin, accept_list, manifest, negotiate};
use super::metrics::inc;
use super::route::{Endpoint, endpoint, route};
use crate::oci::{ManifestRef, Registry};
use crate::reference::{Digest, RepoPath};

/// Tags per page when the client does not say.
const DEFAULT_PAGE: usize = 1000;

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn with_origin(mut response: Response<Body>, origin: Origin) -> Response<Body> {
    response.extensions_mut().insert(origin);
    response
}

/// Every `/v2/...` request.
pub async fn api(State(proxy): State<Arc<Proxy>>, req: Request) -> Response<Body> {
    match answer(&proxy, req).await {
        Ok(response) => response,
        Err(e) => e.response(),
    }
}

async fn answer(proxy: &Arc<Proxy>, req: Request) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let endpoint = match endpoint(&path) {
        Some(e) => e?,
        None => {
            return Err(ApiError::new(
                404,
                "NOT_FOUND",
                format!("{path}: not a registry API path"),
            ));
        }
    };
    let method = req.method().clone();
    let head = method == Method::HEAD;
    if method != Method::GET && !head {
        return Err(ApiError::read_only(method.as_str()));
    }
    let ns = query_param(query.as_deref(), "ns");
    let routed = |repo: &RepoPath| route(&proxy.routes(), repo, ns.as_deref());
    match endpoint {
        Endpoint::Base => Ok(json(StatusCode::OK, "{}".into())),
        Endpoint::Unsupported => Err(ApiError::new(
            405,
            "UNSUPPORTED",
            format!("{path}: not served by this pull-through cache"),
        )),
        Endpoint::Manifest(repo, r) => {
            let (up, upstream_repo) = routed(&repo)?;
            let (m, origin) = manifest(proxy, up, &upstream_repo, &r).await?;
            let accepted = accept_list(
                req.headers()
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok()),
            );
            let refuse =
                |why: String| ApiError::new(404, "MANIFEST_UNKNOWN", format!("{repo}:{r}: {why}"));
            let by_tag = matches!(r, ManifestRef::Tag(_));
            let (m, origin) = match negotiate(&accepted, &m, by_tag) {
                Negotiated::Serve => (m, origin),
                Negotiated::Refuse(why) => return Err(refuse(why)),
                Negotiated::Child(digest) => {
                    let child = ManifestRef::Digest(digest);
                    let (child, origin) = manifest(proxy, up, &upstream_repo, &child).await?;
                    match negotiate(&accepted, &child, false) {
                        Negotiated::Serve => (child, origin),
                        _ => return Err(refuse(negotiate_failed(&m, &child))),
                    }
                }
            };
            let mut response = Response::new(if head {
                Body::empty()
            } else {
                Body::from(m.bytes.clone())
            });
            let h = response.headers_mut();
            h.insert(header::CONTENT_TYPE, value(&m.media_type));
            h.insert("docker-content-digest", value(m.digest.as_str()));
            h.insert(header::ETAG, value(&format!("\"{}\"", m.digest)));
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
            Ok(with_origin(response, origin))
        }
        Endpoint::Blob(repo, digest) => {
            let (up, upstream_repo) = routed(&repo)?;
            if head {
                return head_blob(proxy, up, &upstream_repo, &digest).await;
            }
            get_blob(proxy, up, &upstream_repo, &digest, req.headers()).await
        }
        Endpoint::Tags(repo) => {
            let (up, upstream_repo) = routed(&repo)?;
            tags(proxy, up, &repo, &upstream_repo, query.as_deref()).await
        }
        Endpoint::Referrers(repo, digest) => {
            let (up, upstream_repo) = routed(&repo)?;
            let asked = Referrers {
                client_repo: &repo,
                upstream_repo: &upstream_repo,
                digest: &digest,
                query: query.as_deref(),
                ns: ns.as_deref(),
            };
            referrers(proxy, up, &asked, head).await
        }
    }
}

/// Why the child an index's negotiation chose cannot be sent either (its descriptor had
/// no media type, and the manifest's own is one the client does not take).
fn negotiate_failed(index: &CachedManifest, child: &CachedManifest) -> String {
    format!(
        "{} is a multi-arch index whose linux/amd64 image is a {}; the request's Accept \
         lists neither",
        index.digest, child.media_type
    )
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn blob_headers(h: &mut HeaderMap, digest: &Digest) {
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert("docker-content-digest", value(digest.as_str()));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
}

/// HEAD: the cache, a download in flight, or the upstream's own HEAD (never a download).
async fn head_blob(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    digest: &Digest,
) -> Result<Response<Body>, ApiError> {
    let (size, origin) = if let Some(size) = proxy.cache.lookup(digest) {
        inc(&proxy.metrics.hits);
        (Some(size), Origin::Cache)
    } else {
        let registry = &proxy.upstreams[up].registry;
        let what = format!("{repo}@{digest}");
        // The registry client retries its own HEADs (`--retries`): not again here.
        inc(&proxy.metrics.upstream_requests);
        let found = registry
            .head_blob(repo, digest)
            .await
            .map_err(|e| from_upstream(&e, &what))?;
        match found {
            Some(h) => (h.size, Origin::Upstream),
            None => {
                return Err(ApiError::new(
                    404,
                    "BLOB_UNKNOWN",
                    format!("{what}: blob unknown to the upstream"),
                ));
            }
        }
    };
    let mut response = Response::new(Body::empty());
    blob_headers(response.headers_mut(), digest);
    if let Some(size) = size {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    Ok(with_origin(response, origin))
}

/// `Range: bytes=A-B` / `bytes=A-` / `bytes=-N` against `size`: `[start, end)`.
pub fn byte_range(header: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: answer the whole blob, as the spec allows
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (size.saturating_sub(n), size)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size
        } else {
            b.parse::<u64>().ok()?.saturating_add(1).min(size)
        };
        (start, end)
    };
    Some(if range.0 < range.1 {
        Ok(range)
    } else {
        Err(())
    })
}

async fn get_blob(
    proxy: &Arc<Proxy>,
    up: usize,
    repo: &RepoPath,
    digest: &Digest,
    headers: &HeaderMap,
) -> Result<Response<Body>, ApiError> {
    let source = blob_source(proxy, up, repo, digest)?;
    let origin = match &source {
        Source::Cached(..) => Origin::Cache,
        Source::Inflight(_, true) => Origin::Joined,
        Source::Inflight(_, false) => Origin::Upstream,
    };
    let size = source.size().await?;
    let range = match (
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    ) {
        (Some(r), Some(size)) => byte_range(r, size),
        _ => None,
    };
    let (start, end, status) = match range {
        None => (0, None, StatusCode::OK),
        Some(Ok((s, e))) => (s, Some(e), StatusCode::PARTIAL_CONTENT),
        Some(Err(())) => {
            let mut r = ApiError::new(416, "SIZE_INVALID", "range not satisfiable").response();
            if let Some(size) = size {
                r.headers_mut()
                    .insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
            }
            return Ok(r);
        }
    };
    let stream = source.read(start, end, proxy.clone());
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    blob_headers(h, digest);
    match (size, end) {
        (Some(size), Some(end)) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
            h.insert(
                header::CONTENT_RANGE,
                value(&format!("bytes {start}-{}/{size}", end - 1)),
            );
        }
        (Some(size), None) => {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        }
        _ => {}
    }
    Ok(with_origin(response, origin))
}

/// A referrers request as the client sent it.
struct Referrers<'a> {
    client_repo: &'a RepoPath,
    upstream_repo: &'a RepoPath,
    digest: &'a Digest,
    query: Option<&'a str>,
    ns: Option<&'a str>,
}

/// The upstream's referrers page, verbatim (body, `Content-Type`, `OCI-Filters-Applied`),
/// its `Link` pointing back at this proxy. Never cached: referrers are added upstream at
/// any time. An upstream without the API: 404, so clients read the `sha256-<hex>` tags.
async fn referrers(
    proxy: &Arc<Proxy>,
    up: usize,
    asked: &Referrers<'_>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let registry = &proxy.upstreams[up].registry;
    let (repo, digest) = (asked.upstream_repo, asked.digest);
    // The client's query without `ns` (routing only) goes upstream as it came: it is
    // `artifactType`, or the rest of a `Link` this proxy rewrote.
    let forwarded = asked
        .query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && *p != "ns" && !p.starts_with("ns="))
        .collect::<Vec<_>>()
        .join("&");
    let page =
        (!forwarded.is_empty()).then(|| format!("/v2/{repo}/referrers/{digest}?{forwarded}"));
    let what = format!("{repo}@{digest} referrers");
    inc(&proxy.metrics.upstream_requests);
    let found = registry
        .referrers_page(repo, digest, None, page.as_deref())
        .await
        .map_err(|e| from_upstream(&e, &what))?;
    let Some(found) = found else {
        return Err(ApiError::new(
            404,
            "NAME_UNKNOWN",
            format!(
                "{}: the upstream has no referrers API; read the sha256-<hex> tag instead",
                asked.client_repo
            ),
        ));
    };
    let length = found.bytes.len();
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::from(found.bytes)
    });
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, value(&found.content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Some(applied) = &found.filters_applied {
        h.insert("oci-filters-applied", value(applied));
    }
    if let Some(next) = found.next.as_deref().and_then(|n| next_page(n, asked)) {
        h.insert(header::LINK, value(&format!("<{next}>; rel=\"next\"")));
    }
    Ok(with_origin(response, Origin::Upstream))
}

/// The upstream's next-page link as this proxy's path: same query, the client's
/// repository (and its `ns`, which routed it here).
fn next_page(upstream_next: &str, asked: &Referrers<'_>) -> Option<String> {
    let query = upstream_next.split_once('?').map(|(_, q)| q)?;
    let mut query = query.to_string();
    if let Some(ns) = asked.ns {
        let ns: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("ns", ns)
            .finish();
        query = format!("{query}&{ns}");
    }
    Some(format!(
        "/v2/{}/referrers/{}?{query}",
        asked.client_repo, asked.digest
    ))
}

/// The upstream's tags, paginated here with `n` and `last` (sorted, as the spec says).
/// Each good listing is kept; when the upstream is down or throttling, the last one kept
/// answers instead (with a warning), as cached tags do.
async fn tags(
    proxy: &Arc<Proxy>,
    up: usize,
    client_repo: &RepoPath,
    repo: &RepoPath,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let host = &proxy.upstreams[up].route.namespace.registry;
    let what = format!("{host}/{repo} tags");
    // With a listing kept, the upstream is asked once: the listing answers if it fails.
    let kept = proxy.cache.tag_list(host, repo);
    let registry = match kept {
        Some(_) => &proxy.upstreams[up].once,
        None => &proxy.upstreams[up].registry,
    };
    inc(&proxy.metrics.upstream_requests);
    let listed = registry
        .list_tags(repo)
        .await
        .map_err(|e| from_upstream(&e, &what));
    let (all, origin) = match listed {
        Ok(list) => {
            let mut all: Vec<String> = list.tags.iter().map(|t| t.to_string()).collect();
            all.sort();
            all.dedup();
            if let Err(e) = proxy.cache.put_tag_list(host, repo, &all) {
                tracing::error!("cache: cannot keep {what}: {e}");
            }
            (all, Origin::Upstream)
        }
        Err(e) if e.serves_stale() => match kept {
            Some(all) => {
                tracing::warn!(
                    "{what}: upstream cannot list ({}); serving the cached listing of {} tags",
                    e.message,
                    all.len()
                );
                inc(&proxy.metrics.stale);
                (all, Origin::Stale)
            }
            None => return Err(e),
        },
        Err(e) => return Err(e),
    };
    let n = query_param(query, "n")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(DEFAULT_PAGE);
    let last = query_param(query, "last");
    let (page, more) = paginate(&all, n, last.as_deref());
    let body = serde_json::json!({"name": client_repo.as_str(), "tags": page}).to_string();
    let mut response = json(StatusCode::OK, body);
    if more && let Some(last) = page.last() {
        let link = format!("</v2/{client_repo}/tags/list?n={n}&last={last}>; rel=\"next\"");
        response.headers_mut().insert(header::LINK, value(&link));
    }
    Ok(with_origin(response, origin))
}

/// The page after `last` of at most `n` tags, and whether more follow.
pub fn paginate<'a>(sorted: &'a [String], n: usize, last: Option<&str>) -> (&'a [String], bool) {
    let from = match last {
        Some(last) => sorted.partition_point(|t| t.as_str() <= last),
        None => 0,
    };
    let rest = &sorted[from..];
    let take = n.min(rest.len());
    (&rest[..take], take < rest.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(byte_range("bytes=90-", 100), Some(Ok((90, 100))));
        assert_eq!(byte_range("bytes=-10", 100), Some(Ok((90, 100))));
        assert_eq!(byte_range("bytes=95-200", 100), Some(Ok((95, 100))));
        assert_eq!(byte_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(byte_range("items=1-2", 100), None);
    }

    #[test]
    fn tag_pages() {
        let tags: Vec<String> = ["a", "b", "c", "d"].iter().map(|s| s.to_string()).collect();
        assert_eq!(paginate(&tags, 2, None), (&tags[..2], true));
        assert_eq!(paginate(&tags, 2, Some("b")), (&tags[2..], false));
        assert_eq!(paginate(&tags, 10, Some("bb")), (&tags[2..], false));
        assert_eq!(paginate(&tags, 0, None), (&tags[..0], true));
    }
}
