//! One GitHub REST request: retried by the shared `RetryPolicy` on 5xx and broken
//! connections, waiting out primary and secondary rate limits within `--deadline`, with
//! content-creating requests paced within GitHub's secondary limits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use octocrab::Octocrab;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;

use super::pace::{Pacer, Window};
use crate::metadata::StoreError;
use crate::retry::{RetryPolicy, Transient};

/// Without `--deadline`, the longest rate-limit wait made (the primary limit resets hourly).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// How far past `--deadline` a rate-limit wait may end, so the last commits land.
const DEADLINE_GRACE: Duration = Duration::from_secs(90);
/// GitHub: a secondary limit without `retry-after` or reset waits at least a minute.
const SECONDARY_MIN_WAIT: Duration = Duration::from_secs(60);
/// ... and backs off exponentially when it repeats, up to this.
const SECONDARY_MAX_WAIT: Duration = Duration::from_secs(30 * 60);

/// A response, read whole.
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Answer {
    pub(super) fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, StoreError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| github(what, format!("unexpected answer: {e}")))
    }

    /// GitHub's `{"message": …}`.
    pub(super) fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Message {
            message: Option<String>,
        }
        serde_json::from_slice::<Message>(&self.body)
            .ok()
            .and_then(|m| m.message)
            .unwrap_or_default()
    }

    /// A web page rather than the API (a GitHub Enterprise host without `/api/v3`).
    pub(super) fn is_web_page(&self) -> bool {
        let content_type = self
            .headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        content_type.contains("text/html")
            || (!content_type.contains("json")
                && serde_json::from_slice::<Value>(&self.body).is_err())
    }
}

pub(super) fn github(action: &str, detail: impl Into<String>) -> StoreError {
    StoreError::GitHub {
        action: action.to_string(),
        detail: detail.into(),
    }
}

/// How long a 403 or 429 asks us to wait, or `None` when it is no rate limit (a refused
/// permission). GitHub's rules: `retry-after` when sent; until `x-ratelimit-reset` when
/// `x-ratelimit-remaining` is 0; otherwise (a secondary limit) at least a minute, doubling
/// with each consecutive one (`streak` before this one).
pub(super) fn limit_wait(
    status: u16,
    headers: &HeaderMap,
    message: &str,
    now_unix: i64,
    streak: u32,
) -> Option<Duration> {
    if status != 403 && status != 429 {
        return None;
    }
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
    };
    if let Some(secs) = header("retry-after") {
        return Some(Duration::from_secs(secs.max(0) as u64));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        if let Some(reset) = header("x-ratelimit-reset") {
            return Some(Duration::from_secs((reset - now_unix).max(0) as u64 + 1));
        }
    }
    if status == 429 || message.to_ascii_lowercase().contains("rate limit") {
        let grown = SECONDARY_MIN_WAIT.saturating_mul(1 << streak.min(10));
        return Some(grown.min(SECONDARY_MAX_WAIT));
    }
    None
}

/// Blobs, trees, commits, ref updates and contents writes: what GitHub's secondary
/// limits count as content-creating.
fn creates_content(method: &str) -> bool {
    method != "GET"
}

/// Why one attempt failed.
#[derive(Debug)]
enum CallError {
    /// The connection broke or the body could not be read.
    Transport(String),
    /// A 5xx.
    Server { status: u16, message: String },
    /// A rate limit, with the wait it asks for.
    Limited {
        status: u16,
        message: String,
        wait: Duration,
    },
    /// Not worth retrying (a wait past the deadline).
    Fatal(StoreError),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(e) => write!(f, "{e}"),
            CallError::Server { status, message } => write!(f, "HTTP {status}: {message}"),
            CallError::Limited {
                status,
                message,
                wait,
            } => write!(
                f,
                "HTTP {status}, rate limited ({message}); GitHub asks to wait {}s",
                wait.as_secs()
            ),
            CallError::Fatal(e) => write!(f, "{e}"),
        }
    }
}

impl Transient for CallError {
    fn is_retryable(&self) -> bool {
        !matches!(self, CallError::Fatal(_))
    }
    fn retry_after(&self) -> Option<Duration> {
        match self {
            CallError::Limited { wait, .. } => Some(*wait),
            _ => None,
        }
    }
    fn max_retry_after(&self) -> Duration {
        // Checked against the deadline (or MAX_WAIT) when the answer came.
        Duration::MAX
    }
}

/// The GitHub API client of a store.
pub(super) struct Api {
    client: Octocrab,
    api_url: String,
    retry: RetryPolicy,
    deadline: Option<Instant>,
    pacer: Mutex<Pacer>,
    /// Consecutive secondary limits without a stated wait.
    streak: AtomicU32,
}

impl Api {
    pub(super) fn new(
        client: Octocrab,
        api_url: &str,
        retry: RetryPolicy,
        deadline: Option<Instant>,
        pace: &[Window],
    ) -> Self {
        Api {
            client,
            api_url: api_url.to_string(),
            retry,
            deadline,
            pacer: Mutex::new(Pacer::new(pace)),
            streak: AtomicU32::new(0),
        }
    }

    pub(super) fn api_url(&self) -> &str {
        &self.api_url
    }

    /// A request carrying `body`, JSON already serialized: octocrab's own helpers would
    /// serialize a value again and copy the text twice more, which for a 4 MB images.json
    /// blob is most of a commit's memory. A `Bytes` body is shared, not copied, by retries.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Bytes,
    ) -> Result<http::Request<Bytes>, CallError> {
        let builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/json");
        // Octocrab's headers (API version, user agent) without a body; ours goes in after.
        let (mut parts, _empty) = self
            .client
            .build_request::<()>(builder, None)
            .map_err(|e| CallError::Transport(e.to_string()))?
            .into_parts();
        parts.headers.remove(http::header::CONTENT_LENGTH);
        Ok(http::Request::from_parts(parts, body))
    }

    /// Whether a wait of `wait` from now is allowed: it must end before `--deadline`, give
    /// or take `DEADLINE_GRACE` (the deadline stops starting copies; the commits of the
    /// copies still running at it must land, even behind a short rate-limit wait).
    fn check_wait(&self, wait: Duration, why: &str) -> Result<(), StoreError> {
        let allowed = self.deadline.map_or(MAX_WAIT, |d| {
            (d + DEADLINE_GRACE).saturating_duration_since(Instant::now())
        });
        if wait <= allowed {
            return Ok(());
        }
        let limit = match self.deadline {
            Some(_) => format!(
                "only {}s are left before --deadline (and its grace of {}s)",
                allowed.as_secs(),
                DEADLINE_GRACE.as_secs()
            ),
            None => format!("longer than gcrsync waits ({}s)", MAX_WAIT.as_secs()),
        };
        Err(github(
            "waiting for the rate limit",
            format!(
                "{why} asks to wait {}s, {limit}; the rest is recorded by the next run",
                wait.as_secs()
            ),
        ))
    }

    /// One API request, retried (see the module doc); a non-5xx answer is returned as is.
    pub(super) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Bytes>,
        accept: Option<&str>,
    ) -> Result<Answer, StoreError> {
        let what = format!("GitHub {method} {path}");
        let result = self
            .retry
            .retry(&what, || self.attempt(method, path, body, accept))
            .await;
        result.map_err(|e| match e {
            CallError::Fatal(e) => e,
            other => github(
                &format!("{method} {path}"),
                format!("{other} (after {} retries)", self.retry.retries),
            ),
        })
    }

    async fn attempt(
        &self,
        method: &str,
        path: &str,
        body: Option<&Bytes>,
        accept: Option<&str>,
    ) -> Result<Answer, CallError> {
        if creates_content(method) {
            let wait = self
                .pacer
                .lock()
                .expect("pacer lock")
                .reserve(Instant::now());
            if !wait.is_zero() {
                self.check_wait(wait, "pacing within GitHub's secondary limits")
                    .map_err(CallError::Fatal)?;
                tracing::info!(
                    "pacing GitHub writes within its secondary limits: waiting {wait:.1?}"
                );
                tokio::time::sleep(wait).await;
            }
        }
        let sent = match method {
            "GET" => {
                let mut headers = http::HeaderMap::new();
                if let Some(accept) = accept {
                    headers.insert(http::header::ACCEPT, accept.parse().expect("static header"));
                }
                self.client._get_with_headers(path, Some(headers)).await
            }
            "POST" | "PATCH" | "PUT" => {
                let request = self.request(method, path, body.cloned().unwrap_or_default())?;
                self.client.execute(request).await
            }
            other => unreachable!("no {other} requests are made"),
        };
        let response = sent.map_err(|e| CallError::Transport(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| CallError::Transport(e.to_string()))?
            .to_bytes();
        let answer = Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        };
        if answer.status >= 500 {
            return Err(CallError::Server {
                status: answer.status,
                message: answer.message(),
            });
        }
        let message = answer.message();
        let now = jiff::Timestamp::now().as_second();
        let streak = self.streak.load(Ordering::SeqCst);
        match limit_wait(answer.status, &answer.headers, &message, now, streak) {
            Some(wait) => {
                let stated = answer.headers.contains_key("retry-after")
                    || answer.headers.contains_key("x-ratelimit-reset");
                if !stated {
                    self.streak.fetch_add(1, Ordering::SeqCst);
                }
                let why = format!("GitHub's rate limit (HTTP {}: {message})", answer.status);
                self.check_wait(wait, &why).map_err(CallError::Fatal)?;
                Err(CallError::Limited {
                    status: answer.status,
                    message,
                    wait,
                })
            }
            None => {
                self.streak.store(0, Ordering::SeqCst);
                Ok(answer)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    const SECONDARY: &str =
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.";

    #[test]
    fn retry_after_is_waited_as_asked() {
        let h = headers(&[("retry-after", "42")]);
        assert_eq!(
            limit_wait(403, &h, SECONDARY, 0, 0),
            Some(Duration::from_secs(42))
        );
        assert_eq!(limit_wait(429, &h, "", 0, 3), Some(Duration::from_secs(42)));
    }

    #[test]
    fn an_exhausted_primary_limit_waits_until_its_reset() {
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1000300"),
        ]);
        assert_eq!(
            limit_wait(403, &h, "API rate limit exceeded", 1_000_000, 0),
            Some(Duration::from_secs(301))
        );
        // A reset already passed still waits a second, never a negative time.
        assert_eq!(
            limit_wait(403, &h, "", 2_000_000, 0),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_secondary_limit_without_a_stated_wait_waits_a_minute_and_doubles() {
        let h = headers(&[("x-ratelimit-remaining", "4000")]);
        let waits: Vec<_> = (0..4)
            .map(|streak| limit_wait(403, &h, SECONDARY, 0, streak).unwrap().as_secs())
            .collect();
        assert_eq!(waits, [60, 120, 240, 480]);
        assert_eq!(
            limit_wait(403, &h, SECONDARY, 0, 30),
            Some(SECONDARY_MAX_WAIT)
        );
        assert_eq!(
            limit_wait(429, &HeaderMap::new(), "", 0, 0),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn a_refused_permission_is_no_rate_limit() {
        let h = headers(&[("x-ratelimit-remaining", "4999")]);
        assert_eq!(
            limit_wait(403, &h, "Resource not accessible by integration", 0, 0),
            None
        );
        assert_eq!(
            limit_wait(404, &headers(&[("retry-after", "1")]), "", 0, 0),
            None
        );
    }

    #[test]
    fn a_web_page_is_told_from_the_api() {
        let page = Answer {
            status: 404,
            headers: headers(&[("content-type", "text/html; charset=utf-8")]),
            body: Bytes::from_static(b"<!DOCTYPE html><html>Page not found</html>"),
        };
        assert!(page.is_web_page());
        let api = Answer {
            status: 404,
            headers: headers(&[("content-type", "application/json; charset=utf-8")]),
            body: Bytes::from_static(br#"{"message":"Not Found"}"#),
        };
        assert!(!api.is_web_page());
    }
}
