//! How one request reaches a registry: the auth challenge, redirects to storage hosts
//! (without the registry's credentials), and what a refusal or an error answer means.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;

use super::error::{Error, Result};
use super::http::HttpRegistry;

/// Error bodies are read only this far: enough for the OCI error envelope.
const MAX_ERROR_BODY: usize = 4096;
/// Redirects followed for one request (registries redirect blobs once, to storage).
const MAX_REDIRECTS: usize = 5;

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
pub(super) fn next_link(headers: &HeaderMap) -> Option<String> {
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

pub(super) async fn expect(
    method: &Method,
    url: &str,
    response: Response,
    ok: &[u16],
) -> Result<Response> {
    if ok.contains(&response.status().as_u16()) {
        Ok(response)
    } else {
        Err(status_error(method, url, response).await)
    }
}

pub(super) fn header_str<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

impl HttpRegistry {
    /// Sends a request built by `build`, answering one auth challenge; `build` is called
    /// again for the authenticated attempt.
    pub(super) async fn send(
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
            // A 403 to a token fetched for several scopes: the service issued it without
            // granting them all; ask again for this scope alone (once: that falls back).
            if response.status() == reqwest::StatusCode::FORBIDDEN
                && let Some(value) = &authorization
                && self.auth.batched(value).await
            {
                self.auth.refused_batch(scopes).await;
                authorization = self.authorize(scopes).await?;
                continue;
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

    /// Like `send`, for blob bodies (on the upload client): they cannot be replayed, so a
    /// 401 is returned as an error.
    pub(super) async fn send_once(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_storage_urls_are_logged_without_their_signature() {
        let url = "https://storage.googleapis.com/artifacts.p.appspot.com/containers/images/sha256:ab?GoogleAccessId=x&Expires=1&Signature=c2ln";
        assert_eq!(
            loggable(url),
            "https://storage.googleapis.com/artifacts.p.appspot.com/containers/images/sha256:ab"
        );
    }

    #[test]
    fn storage_errors_and_scopes_are_read() {
        let gcs = "<?xml version='1.0'?><Error><Code>ExpiredToken</Code><Message>Invalid argument.</Message></Error>";
        assert_eq!(
            xml_detail(gcs).as_deref(),
            Some("ExpiredToken: Invalid argument.")
        );
        assert_eq!(xml_detail("<html>nope</html>"), None);
        let scopes = ["repository:team/app:pull,push".to_string()];
        assert_eq!(scoped_repo(&scopes).as_deref(), Some("team/app"));
        assert_eq!(scoped_repo(&["registry:catalog:*".to_string()]), None);
        assert_eq!(scoped_repo(&[]), None);
    }

    #[test]
    fn a_tls_server_answering_plain_http_is_recognised() {
        let go = "Client sent an HTTP request to an HTTPS server.\n";
        let e = Error::plain_to_tls("http://127.0.0.1:5000/v2/", go, false).unwrap();
        assert!(
            e.to_string().contains("write https://127.0.0.1:5000"),
            "{e}"
        );
        assert!(!e.is_retryable());
        assert!(Error::plain_to_tls("http://h/v2/", "", true).is_some());
        assert!(Error::plain_to_tls("https://h/v2/", go, true).is_none());
        assert!(Error::plain_to_tls("http://h/v2/", "{\"errors\":[]}", false).is_none());
    }
}
