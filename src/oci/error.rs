//! Registry errors: what failed, on which URL, and whether trying again can help.

use std::time::Duration;

/// A failed registry operation. URLs never carry credentials: those travel in headers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an unexpected status.
    #[error("{method} {url}: HTTP {status}{}", detail_suffix(.detail))]
    Status {
        /// HTTP method of the request.
        method: String,
        /// The URL requested.
        url: String,
        /// The status received.
        status: u16,
        /// The registry's own error code and message, if it sent one.
        detail: String,
        /// The delay the registry asked for with `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The request never got an answer (connect, reset, timeout).
    #[error("{method} {url}: {}", causes(source))]
    Transport {
        /// HTTP method of the request.
        method: String,
        /// The URL requested.
        url: String,
        /// The transport failure.
        #[source]
        source: reqwest::Error,
    },
    /// The registry refused the credentials (or demanded some that were not given).
    #[error("authentication to {registry} failed: {detail}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What went wrong, and what to do.
        detail: String,
    },
    /// Content did not hash to the digest it was fetched or announced by.
    #[error("{what}: digest mismatch, expected {expected}, got {actual}")]
    DigestMismatch {
        /// The blob or manifest reference.
        what: String,
        /// The digest asked for.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// A blob body was shorter or longer than announced.
    #[error("{what}: size mismatch, expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob reference.
        what: String,
        /// The size announced.
        expected: u64,
        /// The size received.
        actual: u64,
    },
    /// The registry answered in a way the distribution spec does not allow.
    #[error("{url}: invalid response: {detail}")]
    InvalidResponse {
        /// The URL requested.
        url: String,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The registry's credentials were accepted, but not for this repository (or, with no
    /// credentials, the repository is not public): the repository fails, not the run.
    #[error("no access to {registry}/{repo}: HTTP {status}{}; {hint}", detail_suffix(.detail))]
    NoAccess {
        /// The registry host.
        registry: String,
        /// The repository refused.
        repo: String,
        /// The status received.
        status: u16,
        /// The registry's own error code and message, if it sent one.
        detail: String,
        /// What it means and what to do.
        hint: String,
    },
    /// The storage host a registry redirected a blob download to refused the signed URL
    /// (expired, already used): a fresh one is asked of the registry.
    #[error("{method} {url} (a redirect from the registry): HTTP {status}{}", detail_suffix(.detail))]
    Storage {
        /// HTTP method of the request.
        method: String,
        /// The storage URL, without its signature.
        url: String,
        /// The status received.
        status: u16,
        /// The storage service's own error code and message.
        detail: String,
    },
    /// TLS could not be used as configured: plain HTTP answered a TLS handshake, a TLS
    /// server answered plain HTTP, or no TLS client could be set up. Never retried.
    #[error("{url}: {detail}")]
    Tls {
        /// The URL requested.
        url: String,
        /// What happened, naming the option that fixes it.
        detail: String,
    },
    /// An OCI image-layout directory (`oci:DIR`) could not be read or written.
    #[error("{path}: {detail}")]
    Layout {
        /// The file or directory.
        path: String,
        /// What failed.
        detail: String,
        /// The layout, manifest or blob is not there (a registry's 404).
        missing: bool,
    },
    /// The content exists but cannot be mirrored verbatim.
    #[error("{what}: {detail}")]
    Unsupported {
        /// The manifest reference.
        what: String,
        /// Why it is skipped.
        detail: String,
    },
}

/// reqwest's message hides the cause ("error sending request"); say what it was.
pub(crate) fn causes(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.contains("certificate") {
        text.push_str(" (trust the registry's CA with --ca-cert FILE, or use --insecure-registry https://HOST)");
    }
    text
}

impl Error {
    /// A request that got no answer. rustls reports a plain-HTTP answer to its handshake
    /// as a corrupt message (`InvalidContentType`); retrying cannot help, the scheme can.
    pub fn transport(method: &reqwest::Method, url: &str, source: reqwest::Error) -> Error {
        // reqwest's message repeats the whole URL, signature of a storage URL included.
        let source = source.without_url();
        let url = super::http::loggable(url);
        if causes(&source).contains("InvalidContentType") {
            let host = host_of(&url);
            return Error::Tls {
                detail: format!(
                    "{host} answered the TLS handshake in plain HTTP; if it is a plain-HTTP registry, write http://{host} or add --insecure-registry {host}"
                ),
                url,
            };
        }
        Error::Transport {
            method: method.to_string(),
            url,
            source,
        }
    }

    /// A TLS server's answer to a plain-HTTP request (Go's and nginx's words for it).
    /// `bare`: an HTTP/1.0 answer without headers, as Go sends it (a HEAD has no body).
    pub fn plain_to_tls(url: &str, body: &str, bare: bool) -> Option<Error> {
        let said = [
            "HTTP request to an HTTPS server",
            "plain HTTP request was sent to HTTPS",
        ];
        if !url.starts_with("http://") || !(bare || said.iter().any(|s| body.contains(s))) {
            return None;
        }
        let host = host_of(url);
        Some(Error::Tls {
            url: super::http::loggable(url),
            detail: format!(
                "{host} speaks TLS, not plain HTTP; write https://{host} (loopback hosts and --insecure-registry HOST are plain HTTP unless written so)"
            ),
        })
    }
}

/// `host:port` of a URL, for messages.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl Error {
    /// Whether the same request may succeed later: throttling, server errors, broken
    /// connections, and corrupted transfers (a fresh download may be intact).
    pub fn is_retryable(&self) -> bool {
        match self {
            // A 401 reaches here only from a one-shot upload whose token expired; a retry re-authenticates.
            Error::Status { status, .. } => matches!(*status, 401 | 408 | 429) || *status >= 500,
            Error::Transport { source, .. } => !source.is_builder() && !source.is_redirect(),
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } | Error::Storage { .. } => {
                true
            }
            Error::Auth { .. }
            | Error::NoAccess { .. }
            | Error::Tls { .. }
            | Error::InvalidResponse { .. }
            | Error::Layout { .. }
            | Error::Unsupported { .. } => false,
        }
    }

    /// A repository the registry will not show these credentials (401/403 while the
    /// registry itself accepted them): that repository fails, the run goes on.
    pub fn is_no_access(&self) -> bool {
        match self {
            Error::NoAccess { .. } => true,
            Error::Status { status, .. } => *status == 403,
            _ => false,
        }
    }

    /// A repository, manifest or blob the registry does not have (404, `NAME_UNKNOWN`,
    /// `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN`).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Status { status: 404, .. } | Error::Layout { missing: true, .. }
        )
    }

    /// Credentials refused at the registry (or its token service) itself: nothing on that
    /// registry can work, so the run stops.
    pub fn is_credentials_refused(&self) -> bool {
        matches!(self, Error::Auth { .. })
    }

    /// The delay the registry asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, when the registry answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. }
            | Error::NoAccess { status, .. }
            | Error::Storage { status, .. } => Some(*status),
            // Read as a registry's 404 wherever one is (a repository gone since listed).
            Error::Layout { missing: true, .. } => Some(404),
            _ => None,
        }
    }
}

/// Result of a registry operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[tokio::test]
    async fn a_transport_error_never_shows_a_signed_url() {
        let url = "http://127.0.0.1:1/bucket/blob?X-Amz-Signature=s3cr3tsig&Expires=1";
        let failed = reqwest::Client::new().get(url).send().await.unwrap_err();
        assert!(failed.to_string().contains("s3cr3tsig"), "reqwest shows it");
        let error = Error::transport(&reqwest::Method::GET, url, failed);
        let text = format!("{error} {error:?}");
        assert!(!text.contains("s3cr3tsig"), "{text}");
    }
}
