//! Errors as registry clients expect them: a status and the distribution error envelope
//! (`{"errors":[{"code","message"}]}`), carrying the upstream's own code and message.

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};

use crate::oci;

/// An error answer; `Clone` so that every client of one coalesced fetch gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The distribution error code (`MANIFEST_UNKNOWN`, `UNSUPPORTED`, ...).
    pub code: String,
    /// What happened.
    pub message: String,
    /// Seconds the upstream asked to wait.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with our own code.
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    /// 405 `UNSUPPORTED`: this proxy takes no writes.
    pub fn read_only(method: &str) -> Self {
        Self::new(
            405,
            "UNSUPPORTED",
            format!("{method}: this registry is a read-only pull-through cache"),
        )
    }

    /// Whether the upstream could not be asked at all, or failed on its side (timeouts,
    /// refused connections, 5xx): the case where a cached tag is still served.
    pub fn upstream_down(&self) -> bool {
        self.status >= 500
    }

    /// Whether a cached answer (a tag, a tag listing) stands in for the upstream's: it is
    /// down or throttling us, which the client cannot fix.
    pub fn serves_stale(&self) -> bool {
        self.upstream_down() || self.status == 429
    }

    /// The response.
    pub fn response(&self) -> Response<Body> {
        let body = serde_json::json!({
            "errors": [{"code": self.code, "message": self.message}]
        });
        let mut response = Response::new(Body::from(body.to_string()));
        *response.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_GATEWAY);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `CODE: message` as `oci::send` keeps the upstream's error, split again.
fn split_detail(detail: &str) -> Option<(String, String)> {
    let (code, message) = detail.split_once(": ").unwrap_or((detail, ""));
    let is_code = !code.is_empty()
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit());
    is_code.then(|| (code.to_string(), message.to_string()))
}

/// The answer to a client whose request the upstream failed: 4xx pass through with the
/// upstream's code and message; upstream failures become 502/503 (the client cannot fix
/// them by changing its request).
pub fn from_upstream(e: &oci::Error, what: &str) -> ApiError {
    use oci::Error as E;
    let text = e.to_string();
    match e {
        E::Status {
            status,
            detail,
            retry_after,
            ..
        } => {
            let (code, message) = split_detail(detail).unwrap_or_else(|| {
                let code = match *status {
                    404 => "NAME_UNKNOWN",
                    429 => "TOOMANYREQUESTS",
                    401 => "UNAUTHORIZED",
                    403 => "DENIED",
                    _ => "UNAVAILABLE",
                };
                (code.to_string(), text.clone())
            });
            let status = match *status {
                s @ 400..=499 => s,
                _ => 502,
            };
            ApiError {
                status,
                code,
                message: if message.is_empty() { text } else { message },
                retry_after: retry_after.map(|d| d.as_secs()),
            }
        }
        E::NoAccess { detail, .. } => {
            let (code, message) =
                split_detail(detail).unwrap_or_else(|| ("DENIED".into(), text.clone()));
            ApiError::new(403, &code, if message.is_empty() { text } else { message })
        }
        E::Unsupported { detail, .. } => ApiError::new(
            404,
            "MANIFEST_UNKNOWN",
            format!("{what}: cannot be served verbatim: {detail}"),
        ),
        E::Auth { .. } => ApiError::new(
            502,
            "UNAVAILABLE",
            format!("{what}: the proxy's upstream login was refused: {text}"),
        ),
        E::DigestMismatch { .. } | E::SizeMismatch { .. } | E::InvalidResponse { .. } => {
            ApiError::new(
                502,
                "UNAVAILABLE",
                format!("{what}: upstream sent bad content: {text}"),
            )
        }
        // Upstreams are registries; a layout directory is never one, but say so plainly.
        E::Layout { .. } => ApiError::new(
            502,
            "UNAVAILABLE",
            format!("{what}: upstream is not a registry: {text}"),
        ),
        E::Transport { .. } | E::Tls { .. } | E::Storage { .. } => ApiError::new(
            503,
            "UNAVAILABLE",
            format!("{what}: upstream unreachable: {text}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_codes_and_messages_pass_through() {
        let e = oci::Error::Status {
            method: "GET".into(),
            url: "https://gcr.io/v2/x/manifests/1".into(),
            status: 404,
            detail: "MANIFEST_UNKNOWN: manifest unknown".into(),
            retry_after: None,
        };
        let api = from_upstream(&e, "x:1");
        assert_eq!((api.status, api.code.as_str()), (404, "MANIFEST_UNKNOWN"));
        assert_eq!(api.message, "manifest unknown");
        let e = oci::Error::Status {
            method: "GET".into(),
            url: "u".into(),
            status: 503,
            detail: String::new(),
            retry_after: Some(std::time::Duration::from_secs(7)),
        };
        let api = from_upstream(&e, "x:1");
        assert_eq!((api.status, api.retry_after), (502, Some(7)));
        assert!(api.upstream_down());
    }
}
