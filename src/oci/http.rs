//! `HttpRegistry`: the distribution HTTP API over reqwest, with auth, pagination and retries.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header;
use reqwest::{Method, RequestBuilder};
use serde::Deserialize;

use super::auth::{Authenticator, Login};
pub use super::clients::Clients;
use super::error::{Error, Result};
use super::manifest::{ACCEPT, RawManifest};
use super::referrers::ReferrersPage;

mod referrers;
use super::send::{expect, header_str, next_link};
pub use super::send::{loggable, retry_after};
use super::taglist::{TagList, TagsPage};
use super::{BlobBody, BlobHead, ManifestHead, ManifestRef, Registry, Upload};
use crate::reference::{Digest, RegistryHost, RepoPath};

/// Page size asked of `_catalog` and `tags/list`; registries may cap it lower.
const PAGE_SIZE: usize = 1000;

/// Listings and HEADs in flight at once to a plain-HTTP registry. HTTP/1.1 takes one
/// connection per request in flight, so `--query-limit` concurrent queries opened as many
/// connections (33 for a 52-request no-op); a plain-HTTP registry is a local or LAN one,
/// where a few reused connections answer as fast.
pub const PLAIN_HTTP_QUERIES: usize = 8;

pub use crate::retry::RetryPolicy;

impl RetryPolicy {
    /// `RetryPolicy::retry` for registry calls (their closures need the error type named).
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retry(what, op).await
    }
}

impl crate::retry::Transient for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
    fn retry_after(&self) -> Option<Duration> {
        Error::retry_after(self)
    }
}

/// Whether a registry is reached with or without permission to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Sources: pull-only tokens.
    Pull,
    /// Targets: pull and push.
    Push,
}

/// How to reach one registry.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The registry.
    pub host: RegistryHost,
    /// Speak plain HTTP (`http://HOST`, `--insecure-registry HOST`, loopback hosts).
    pub plain_http: bool,
    /// How to log in, if at all.
    pub login: Option<Login>,
    /// Pull or push.
    pub access: Access,
}

/// A registry reached over its HTTP API.
pub struct HttpRegistry {
    pub(super) base: String,
    pub(super) clients: Clients,
    pub(super) auth: Authenticator,
    pub(super) access: Access,
    pub(super) retry: RetryPolicy,
    /// The last `RateLimit-Remaining` seen (Docker Hub's pull quota).
    pub(super) quota: std::sync::Mutex<Option<u64>>,
    /// Until the registry has answered once, requests wait for that first answer: it
    /// tells the auth scheme, which spares every concurrent request its own 401.
    pub(super) first_contact: tokio::sync::Mutex<bool>,
    /// Whether `GET /v2/` accepts our credentials: asked once, the first time a
    /// repository refuses them, to tell "no access to REPO" from "bad credentials".
    pub(super) root_accepts: tokio::sync::OnceCell<bool>,
    /// Bounds the listings and HEADs in flight (plain HTTP only), and so the connections.
    queries: Option<tokio::sync::Semaphore>,
    /// What the registry showed of its referrers API (see `http/referrers.rs`).
    referrers_api: std::sync::atomic::AtomicU8,
}

impl HttpRegistry {
    /// A registry client sharing `http`'s connection pool.
    pub fn new(endpoint: Endpoint, clients: Clients, retry: RetryPolicy) -> Self {
        let scheme = if endpoint.plain_http { "http" } else { "https" };
        let base = format!("{scheme}://{}", endpoint.host.api_host());
        let role = match endpoint.access {
            Access::Pull => "source",
            Access::Push => "target",
        };
        let auth = Authenticator::new(endpoint.host.to_string(), role, endpoint.login);
        HttpRegistry {
            base,
            clients,
            auth,
            access: endpoint.access,
            retry,
            quota: std::sync::Mutex::new(None),
            first_contact: tokio::sync::Mutex::new(false),
            root_accepts: tokio::sync::OnceCell::new(),
            queries: endpoint
                .plain_http
                .then(|| tokio::sync::Semaphore::new(PLAIN_HTTP_QUERIES)),
            referrers_api: std::sync::atomic::AtomicU8::new(0),
        }
    }

    /// A turn among the queries in flight, where they are bounded.
    async fn query_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.queries {
            Some(queries) => queries.acquire().await.ok(),
            None => None,
        }
    }

    fn scope(&self, repo: &RepoPath) -> String {
        match self.access {
            Access::Pull => format!("repository:{repo}:pull"),
            Access::Push => format!("repository:{repo}:pull,push"),
        }
    }

    pub(super) fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// Follows `Link: <…>; rel="next"` from `first`, collecting each page's items.
    async fn paginate<T, P>(
        &self,
        first: String,
        scope: String,
        items: impl Fn(P) -> Vec<T>,
    ) -> Result<Vec<T>>
    where
        P: serde::de::DeserializeOwned,
    {
        let mut all = Vec::new();
        let mut next = Some(first);
        let scopes = [scope];
        while let Some(url) = next.take() {
            let url = self.url(&url);
            // The registry's credentials go with every page: never to another host.
            if !url.starts_with(&format!("{}/", self.base)) {
                return Err(Error::InvalidResponse {
                    url: loggable(&url),
                    detail: format!("a next-page link leaves the registry {}", self.base),
                });
            }
            let (page, link) = self
                .retry
                .run("", || async {
                    let response = self.send(Method::GET, &url, &scopes, |r| r).await?;
                    let response = expect(&Method::GET, &url, response, &[200]).await?;
                    let link = next_link(response.headers());
                    let body = response
                        .bytes()
                        .await
                        .map_err(|e| Error::transport(&Method::GET, &url, e))?;
                    let page: P =
                        serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                            url: url.clone(),
                            detail: e.to_string(),
                        })?;
                    Ok((page, link))
                })
                .await?;
            all.extend(items(page));
            next = link;
        }
        Ok(all)
    }

    async fn fetch_manifest(&self, repo: &RepoPath, r: &ManifestRef) -> Result<RawManifest> {
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"));
        let scopes = [self.scope(repo)];
        let (bytes, content_type, announced) = self
            .retry
            .run("", || async {
                let response = self
                    .send(Method::GET, &url, &scopes, |b| {
                        b.header(header::ACCEPT, ACCEPT)
                    })
                    .await?;
                let response = expect(&Method::GET, &url, response, &[200]).await?;
                let content_type = header_str(&response, "content-type").map(str::to_string);
                let announced = header_str(&response, "docker-content-digest").map(str::to_string);
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| Error::transport(&Method::GET, &url, e))?;
                Ok::<_, Error>((bytes, content_type, announced))
            })
            .await?;
        let manifest = RawManifest::new(bytes, content_type.as_deref());
        // Schema 1's announced digest covers its JWS payload, not these bytes: say what
        // it is instead of "digest mismatch" (the copy skips it; it is never pushed).
        if let Some(reason) = super::manifest::skip_reason(&manifest.media_type) {
            return Err(Error::Unsupported {
                what: format!("{repo}:{r}"),
                detail: reason,
            });
        }
        let expected = match r {
            ManifestRef::Digest(d) => Some(d.to_string()),
            ManifestRef::Tag(_) => announced.filter(|a| a.starts_with("sha256:")),
        };
        match expected {
            Some(e) if e != manifest.digest.as_str() => Err(Error::DigestMismatch {
                what: format!("{repo}@{r}"),
                expected: e,
                actual: manifest.digest.to_string(),
            }),
            _ => Ok(manifest),
        }
    }
}

impl HttpRegistry {
    /// `PUT` a manifest; `true` when the registry answered `OCI-Subject` (it indexed the
    /// manifest's subject for its referrers API).
    async fn push_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"));
        let scopes = [self.scope(repo)];
        self.retry
            .run("", || async {
                let response = self
                    .send(Method::PUT, &url, &scopes, |b| {
                        b.header(header::CONTENT_TYPE, &manifest.media_type)
                            .body(manifest.bytes.clone())
                    })
                    .await?;
                let response = expect(&Method::PUT, &url, response, &[200, 201]).await?;
                let indexed = header_str(&response, "oci-subject").is_some();
                match header_str(&response, "docker-content-digest") {
                    Some(d) if d.starts_with("sha256:") && d != manifest.digest.as_str() => {
                        Err(Error::DigestMismatch {
                            what: format!("{repo}:{r} as stored by the target"),
                            expected: manifest.digest.to_string(),
                            actual: d.to_string(),
                        })
                    }
                    _ => Ok(indexed),
                }
            })
            .await
    }
}

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Registry for HttpRegistry {
    fn pull_quota(&self) -> Option<u64> {
        *self.quota.lock().expect("quota lock")
    }

    async fn prepare(&self, repos: &[RepoPath]) {
        self.auth.prepare(repos.iter().map(|r| self.scope(r))).await;
    }

    async fn catalog(&self) -> Result<Vec<RepoPath>> {
        let _turn = self.query_turn().await;
        let first = format!("/v2/_catalog?n={PAGE_SIZE}");
        let names = self
            .paginate(first, "registry:catalog:*".into(), |p: CatalogPage| {
                p.repositories.unwrap_or_default()
            })
            .await?;
        // A registry may list names we could not address; skip them rather than fail the run.
        Ok(names.iter().filter_map(|n| n.parse().ok()).collect())
    }

    async fn list_tags(&self, repo: &RepoPath) -> Result<TagList> {
        let _turn = self.query_turn().await;
        let first = format!("/v2/{repo}/tags/list?n={PAGE_SIZE}");
        let pages = self
            .paginate(first, self.scope(repo), |p: TagsPage| vec![p])
            .await?;
        Ok(TagList::from_pages(pages))
    }

    async fn head_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
    ) -> Result<Option<ManifestHead>> {
        let _turn = self.query_turn().await;
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"));
        let scopes = [self.scope(repo)];
        let head = self
            .retry
            .run("", || async {
                let response = self
                    .send(Method::HEAD, &url, &scopes, |b| {
                        b.header(header::ACCEPT, ACCEPT)
                    })
                    .await?;
                let response = expect(&Method::HEAD, &url, response, &[200, 404]).await?;
                if response.status() == 404 {
                    return Ok(None);
                }
                let digest = header_str(&response, "docker-content-digest")
                    .and_then(|d| d.parse::<Digest>().ok());
                let media_type = header_str(&response, "content-type").unwrap_or_default();
                let media_type = media_type
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                Ok(Some((digest, media_type)))
            })
            .await?;
        match head {
            None => Ok(None),
            Some((Some(digest), media_type)) => Ok(Some(ManifestHead { digest, media_type })),
            // Some registries omit the digest on HEAD; only then is a GET spent on it.
            Some((None, _)) => {
                let manifest = self.fetch_manifest(repo, r).await?;
                Ok(Some(ManifestHead {
                    digest: manifest.digest,
                    media_type: manifest.media_type,
                }))
            }
        }
    }

    async fn get_manifest(&self, repo: &RepoPath, r: &ManifestRef) -> Result<RawManifest> {
        self.fetch_manifest(repo, r).await
    }

    async fn put_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<()> {
        self.push_manifest(repo, r, manifest).await.map(drop)
    }

    fn referrers_api(&self) -> Option<bool> {
        self.knows_referrers_api()
    }

    async fn put_referrer(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<bool> {
        self.push_manifest(repo, r, manifest).await
    }

    async fn referrers_page(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        artifact_type: Option<&str>,
        page: Option<&str>,
    ) -> Result<Option<ReferrersPage>> {
        self.get_referrers_page(repo, digest, artifact_type, page)
            .await
    }

    /// With the push scope, as other clients ask it (crane: "for now DELETE is PUSH").
    async fn delete_manifest(&self, repo: &RepoPath, r: &ManifestRef) -> Result<()> {
        let url = self.url(&format!("/v2/{repo}/manifests/{r}"));
        let scopes = [self.scope(repo)];
        self.retry
            .run("", || async {
                let response = self.send(Method::DELETE, &url, &scopes, |b| b).await?;
                expect(&Method::DELETE, &url, response, &[200, 202, 204])
                    .await
                    .map(drop)
            })
            .await
    }

    async fn blob_exists(&self, repo: &RepoPath, digest: &Digest) -> Result<bool> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let scopes = [self.scope(repo)];
        self.retry
            .run("", || async {
                let response = self.send(Method::HEAD, &url, &scopes, |b| b).await?;
                let response = expect(&Method::HEAD, &url, response, &[200, 404]).await?;
                Ok(response.status() == 200)
            })
            .await
    }

    async fn head_blob(&self, repo: &RepoPath, digest: &Digest) -> Result<Option<BlobHead>> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let scopes = [self.scope(repo)];
        self.retry
            .run("", || async {
                let response = self.send(Method::HEAD, &url, &scopes, |b| b).await?;
                let response = expect(&Method::HEAD, &url, response, &[200, 404]).await?;
                // The header itself: a HEAD's body length says nothing.
                let size = header_str(&response, "content-length").and_then(|v| v.parse().ok());
                Ok((response.status() == 200).then_some(BlobHead { size }))
            })
            .await
    }

    async fn get_blob(&self, repo: &RepoPath, digest: &Digest, offset: u64) -> Result<BlobBody> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let range = |b: RequestBuilder| {
            if offset > 0 {
                b.header(header::RANGE, format!("bytes={offset}-"))
            } else {
                b
            }
        };
        let scopes = [self.scope(repo)];
        // A signed storage URL the registry redirected to may be refused (expired, or
        // valid for one use only): the registry is asked again for a fresh one, once here
        // and then under the caller's retries. Storage URLs are never kept for later.
        let mut asks = 0;
        let response = loop {
            let response = self.send(Method::GET, &url, &scopes, range).await?;
            // A resumed download needs 206: a 200 would restart from byte 0.
            let ok: &[u16] = if offset > 0 { &[206] } else { &[200] };
            match expect(&Method::GET, &url, response, ok).await {
                Err(e @ Error::Storage { .. }) if asks == 0 => {
                    tracing::debug!("{e}; asking the registry for a fresh URL");
                    asks += 1;
                }
                other => break other?,
            }
        };
        let size = response.content_length();
        let from = response.url().to_string();
        let stream = response
            .bytes_stream()
            .map_err(move |e| Error::transport(&Method::GET, &from, e));
        Ok(BlobBody {
            size,
            stream: stream.boxed(),
        })
    }

    async fn start_upload(
        &self,
        repo: &RepoPath,
        mount: Option<(&Digest, &RepoPath)>,
    ) -> Result<Upload> {
        let mut path = format!("/v2/{repo}/blobs/uploads/");
        let mut scopes = vec![self.scope(repo)];
        if let Some((digest, from)) = mount {
            path.push_str(&format!("?mount={digest}&from={from}"));
            scopes.push(format!("repository:{from}:pull"));
        }
        let url = self.url(&path);
        self.retry
            .run("", || async {
                let response = self
                    .send(Method::POST, &url, &scopes, |b| {
                        b.header(header::CONTENT_LENGTH, 0)
                    })
                    .await?;
                let response = expect(&Method::POST, &url, response, &[201, 202]).await?;
                if response.status() == 201 && mount.is_some() {
                    return Ok(Upload::Mounted);
                }
                // 202 to a mount request means "declined, upload instead" and opens the session.
                let location =
                    header_str(&response, "location").ok_or_else(|| Error::InvalidResponse {
                        url: url.clone(),
                        detail: "upload session without Location".into(),
                    })?;
                Ok(Upload::Session(self.url(location)))
            })
            .await
            .map_err(|e| match e.status() {
                // Docker Hub and others answer so for a repository that must exist first.
                Some(404) => Error::Unsupported {
                    what: format!("target repository {repo}"),
                    detail: format!(
                        "does not exist and the registry does not create repositories on push ({e}); create it, or map to an existing one with --name-template"
                    ),
                },
                _ => e,
            })
    }

    async fn finish_upload(
        &self,
        repo: &RepoPath,
        session: &str,
        digest: &Digest,
        size: u64,
        body: BlobBody,
    ) -> Result<()> {
        let separator = if session.contains('?') { '&' } else { '?' };
        let url = format!("{session}{separator}digest={digest}");
        // The body can be sent once only; a refused token surfaces as a retryable-by-caller error.
        let scopes = [self.scope(repo)];
        let mut body = Some(reqwest::Body::wrap_stream(body.stream));
        let response = self
            .send_once(Method::PUT, &url, &scopes, |b| {
                b.header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, size)
                    .body(
                        body.take()
                            .unwrap_or_else(|| reqwest::Body::from(Bytes::new())),
                    )
            })
            .await?;
        expect(&Method::PUT, &url, response, &[201, 204])
            .await
            .map(drop)
    }
}
