//! `HttpRegistry`: the distribution HTTP API over reqwest, with auth, pagination and retries.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;

use super::auth::{Authenticator, Login};
pub use super::clients::Clients;
use super::error::{Error, Result};
use super::manifest::{ACCEPT, RawManifest};
use super::taglist::{TagList, TagsPage};
use super::{BlobBody, ManifestHead, ManifestRef, Registry, Upload};
use crate::reference::{Digest, RegistryHost, RepoPath};

/// Page size asked of `_catalog` and `tags/list`; registries may cap it lower.
const PAGE_SIZE: usize = 1000;
/// A registry asking for longer than this is not waited for within one request's retries.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
/// Error bodies are read only this far: enough for the OCI error envelope.
const MAX_ERROR_BODY: usize = 4096;
/// Redirects followed for one request (registries redirect blobs once, to storage).
const MAX_REDIRECTS: usize = 5;

/// How failed requests are retried: exponential backoff with jitter, honouring `Retry-After`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: usize,
    /// The first delay; later ones double, up to `max_delay`.
    pub min_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails for good, or the retries are spent; `what` prefixes
    /// the retry warnings where the error itself does not say what was being done.
    pub async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.retries)
            .with_jitter();
        op.retry(backoff)
            .when(Error::is_retryable)
            .adjust(|e, delay| delay.map(|d| e.retry_after().map_or(d, |r| r.min(MAX_RETRY_AFTER))))
            .notify(|e, delay| match what {
                "" => tracing::warn!("{e}; retrying in {delay:.1?}"),
                _ => tracing::warn!("{what}: {e}; retrying in {delay:.1?}"),
            })
            .await
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
    base: String,
    clients: Clients,
    auth: Authenticator,
    access: Access,
    retry: RetryPolicy,
    /// The last `RateLimit-Remaining` seen (Docker Hub's pull quota).
    quota: std::sync::Mutex<Option<u64>>,
    /// Until the registry has answered once, requests wait for that first answer: it
    /// tells the auth scheme, which spares every concurrent request its own 401.
    first_contact: tokio::sync::Mutex<bool>,
    /// Whether `GET /v2/` accepts our credentials: asked once, the first time a
    /// repository refuses them, to tell "no access to REPO" from "bad credentials".
    root_accepts: tokio::sync::OnceCell<bool>,
}

/// Docker Hub's `RateLimit-Remaining: 76;w=21600`: pulls left in the window.
fn remaining_quota(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get("ratelimit-remaining")?.to_str().ok()?;
    value.split(';').next()?.trim().parse().ok()
}

/// `Retry-After` in seconds (the form registries send).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A URL as shown in errors and logs: upload sessions carry a long opaque `_state`
/// parameter that says nothing to a reader, so only `digest`/`mount`/`from` are kept.
pub fn loggable(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            ["digest=", "mount=", "from=", "n=", "last="]
                .iter()
                .any(|k| p.starts_with(k))
        })
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// The `rel="next"` target of a `Link` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(header::LINK)?.to_str().ok()?;
    link.split(',')
        .find(|part| part.contains("rel=\"next\"") || part.contains("rel=next"))
        .and_then(|part| {
            let start = part.find('<')? + 1;
            let end = part.find('>')?;
            Some(part[start..end].to_string())
        })
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    errors: Vec<ErrorEntry>,
}

#[derive(Deserialize)]
struct ErrorEntry {
    code: Option<String>,
    message: Option<String>,
}

/// `Code: Message` of a storage service's XML error (GCS, S3, Azure).
fn xml_detail(body: &str) -> Option<String> {
    let field = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = start + body[start..].find(&format!("</{name}>"))?;
        Some(body[start..end].trim().to_string())
    };
    let parts: Vec<String> = [field("Code"), field("Message")]
        .into_iter()
        .flatten()
        .collect();
    (!parts.is_empty()).then(|| parts.join(": "))
}

/// The repository of a `repository:NAME:ACTIONS` scope, the first one asked.
fn scoped_repo(scopes: &[String]) -> Option<String> {
    let scope = scopes.first()?.strip_prefix("repository:")?;
    scope.rsplit_once(':').map(|(repo, _)| repo.to_string())
}

/// The origin (scheme, host, port) of a URL, to tell the registry from other hosts.
fn origin(url: &str) -> Option<url::Origin> {
    url::Url::parse(url).ok().map(|u| u.origin())
}

/// Turns an unexpected answer into an error carrying the registry's own explanation.
/// An answer from another host than `url`'s (a redirect's) is named by its own URL.
async fn status_error(method: &Method, url: &str, response: Response) -> Error {
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let answered = response.url().to_string();
    let redirected = origin(&answered) != origin(url);
    // Go's TLS server answers plain HTTP with a bare `HTTP/1.0 400` (no headers); a HEAD
    // never gets to read the words that follow.
    let bare = response.version() == reqwest::Version::HTTP_10
        && !response.headers().contains_key(header::CONTENT_TYPE);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(Ok(chunk)) = stream.next().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    let detail = serde_json::from_slice::<ErrorEnvelope>(&body)
        .ok()
        .and_then(|e| e.errors.into_iter().next())
        .map(|e| {
            [e.code, e.message]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ")
        })
        .or_else(|| xml_detail(&String::from_utf8_lossy(&body)))
        .unwrap_or_default();
    if status == 400
        && let Some(e) = Error::plain_to_tls(url, &String::from_utf8_lossy(&body), bare)
    {
        return e;
    }
    if redirected {
        return Error::Storage {
            method: method.to_string(),
            url: loggable(&answered),
            status,
            detail,
        };
    }
    Error::Status {
        method: method.to_string(),
        url: loggable(url),
        status,
        detail,
        retry_after,
    }
}

async fn expect(method: &Method, url: &str, response: Response, ok: &[u16]) -> Result<Response> {
    if ok.contains(&response.status().as_u16()) {
        Ok(response)
    } else {
        Err(status_error(method, url, response).await)
    }
}

fn header_str<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
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
        }
    }

    fn scope(&self, repo: &RepoPath) -> String {
        match self.access {
            Access::Pull => format!("repository:{repo}:pull"),
            Access::Push => format!("repository:{repo}:pull,push"),
        }
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }

    /// Sends a request built by `build`, answering one auth challenge; `build` is called
    /// again for the authenticated attempt.
    async fn send(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let mut contacted = self.first_contact.lock().await;
        let _prober = if *contacted {
            drop(contacted);
            None
        } else {
            *contacted = true;
            Some(contacted)
        };
        let http = self.clients.requests(url)?;
        let mut authorization = self.authorize(scopes).await?;
        let mut attempt = 0;
        loop {
            let mut request = build(http.request(method.clone(), url));
            if let Some(value) = &authorization {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            let response = request
                .send()
                .await
                .map_err(|e| Error::transport(&method, url, e))?;
            if let Some(left) = remaining_quota(response.headers()) {
                *self.quota.lock().expect("quota lock") = Some(left);
            }
            if response.status() != reqwest::StatusCode::UNAUTHORIZED {
                return self
                    .follow(&method, url, response, &build, authorization.as_ref())
                    .await;
            }
            attempt += 1;
            if attempt == 2 {
                return Err(self.refused(&method, url, scopes, response).await);
            }
            if authorization.is_some() {
                self.auth.forget(scopes).await;
            }
            self.auth.learn(header_str(&response, "www-authenticate"))?;
            authorization = self.authorize(scopes).await?;
        }
    }

    /// Follows the redirects of a GET or HEAD (blob downloads go to a storage host: gcr.io,
    /// Artifact Registry, Docker Hub, ghcr.io). The registry's `Authorization` goes only to
    /// the registry's own origin: a signed storage URL carries its own, and GCS and S3
    /// refuse a request that has both.
    async fn follow(
        &self,
        method: &Method,
        url: &str,
        mut response: Response,
        build: &impl Fn(RequestBuilder) -> RequestBuilder,
        authorization: Option<&header::HeaderValue>,
    ) -> Result<Response> {
        let registry = origin(url);
        for _ in 0..MAX_REDIRECTS {
            let follows = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308)
                && matches!(*method, Method::GET | Method::HEAD);
            let location = header_str(&response, "location");
            let (true, Some(location)) = (follows, location) else {
                return Ok(response);
            };
            let next = response
                .url()
                .join(location)
                .map_err(|e| Error::InvalidResponse {
                    url: loggable(url),
                    detail: format!("redirect to an invalid Location: {e}"),
                })?;
            let next = next.as_str();
            let mut request = build(self.clients.requests(next)?.request(method.clone(), next));
            if let Some(value) = authorization.filter(|_| origin(next) == registry) {
                request = request.header(header::AUTHORIZATION, value.clone());
            }
            response = request
                .send()
                .await
                .map_err(|e| Error::transport(method, next, e))?;
        }
        Err(Error::InvalidResponse {
            url: loggable(url),
            detail: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }

    /// The `Authorization` for `scopes`. A token service refusing a repository's scope
    /// while it accepts the login itself is "no access to REPO", not bad credentials.
    async fn authorize(&self, scopes: &[String]) -> Result<Option<header::HeaderValue>> {
        match self.auth.authorize(&self.clients, scopes).await {
            Err(e) if e.is_credentials_refused() => match scoped_repo(scopes) {
                Some(repo) => {
                    let detail = "the token service refused this repository's scope".into();
                    Err(self.no_access(repo, 401, detail, e).await)
                }
                None => Err(e),
            },
            other => other,
        }
    }

    /// The error for a request still refused after authenticating: a repository the
    /// credentials do not reach, when the registry itself accepts them; else the
    /// credentials themselves (or their absence).
    async fn refused(
        &self,
        method: &Method,
        url: &str,
        scopes: &[String],
        response: Response,
    ) -> Error {
        let rejected = self.auth.rejected(&format!(
            "{method} {} was refused with HTTP 401",
            loggable(url)
        ));
        let Some(repo) = scoped_repo(scopes) else {
            return rejected;
        };
        let detail = match status_error(method, url, response).await {
            Error::Status { detail, .. } => detail,
            _ => String::new(),
        };
        self.no_access(repo, 401, detail, rejected).await
    }

    /// `NoAccess` to `repo` when the registry root accepts the login, else `otherwise`.
    async fn no_access(
        &self,
        repo: String,
        status: u16,
        detail: String,
        otherwise: Error,
    ) -> Error {
        match self.root_accepts().await {
            Ok(true) => {
                let role = self.auth.role();
                let hint = if self.auth.has_login() {
                    "the registry accepts the credentials, but not for this repository (it is private to others, or does not exist)".to_string()
                } else {
                    format!(
                        "anonymous access is refused (the repository is private, or does not exist); give --{role}-username/--{role}-password if you have access"
                    )
                };
                Error::NoAccess {
                    registry: self.auth.registry().to_string(),
                    repo,
                    status,
                    detail,
                    hint,
                }
            }
            Ok(false) => otherwise,
            Err(e) => e,
        }
    }

    /// Whether `GET /v2/` succeeds with our credentials (asked once per run).
    async fn root_accepts(&self) -> Result<bool> {
        self.root_accepts
            .get_or_try_init(|| async {
                let url = self.url("/v2/");
                let mut request = self.clients.requests(&url)?.get(&url);
                if let Some(value) = self.auth.authorize(&self.clients, &[]).await? {
                    request = request.header(header::AUTHORIZATION, value);
                }
                let response = request
                    .send()
                    .await
                    .map_err(|e| Error::transport(&Method::GET, &url, e))?;
                Ok(response.status().is_success())
            })
            .await
            .copied()
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

#[derive(Deserialize)]
struct CatalogPage {
    #[serde(default)]
    repositories: Option<Vec<String>>,
}

impl Registry for HttpRegistry {
    fn pull_quota(&self) -> Option<u64> {
        *self.quota.lock().expect("quota lock")
    }

    async fn catalog(&self) -> Result<Vec<RepoPath>> {
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
                match header_str(&response, "docker-content-digest") {
                    Some(d) if d.starts_with("sha256:") && d != manifest.digest.as_str() => {
                        Err(Error::DigestMismatch {
                            what: format!("{repo}:{r} as stored by the target"),
                            expected: manifest.digest.to_string(),
                            actual: d.to_string(),
                        })
                    }
                    _ => Ok(()),
                }
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

impl HttpRegistry {
    /// Like `send`, for blob bodies (on the upload client): they cannot be replayed, so a
    /// 401 is returned as an error.
    async fn send_once(
        &self,
        method: Method,
        url: &str,
        scopes: &[String],
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response> {
        let mut request = build(self.clients.uploads(url)?.request(method.clone(), url));
        if let Some(value) = self.authorize(scopes).await? {
            request = request.header(header::AUTHORIZATION, value);
        }
        let response = request
            .send()
            .await
            .map_err(|e| Error::transport(&method, url, e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            self.auth.forget(scopes).await;
        }
        Ok(response)
    }
}
