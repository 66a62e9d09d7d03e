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
fn causes(error: &reqwest::Error) -> String {
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
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => true,
            Error::Auth { .. } | Error::InvalidResponse { .. } | Error::Unsupported { .. } => false,
        }
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
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Result of a registry operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
