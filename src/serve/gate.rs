//! What every request passes through (a tower middleware): the htpasswd login, the
//! per-client concurrency cap (held until the response body is sent), the API version
//! header, and one structured log line.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response, header};
use axum::middleware::Next;
use base64::Engine as _;
use futures_util::StreamExt;
use sha2::Digest as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Proxy;
use super::errors::ApiError;
use super::manifests::Origin;
use super::metrics::inc;
use super::server::Peer;
use crate::settings::serve::Htpasswd;

/// Logins checked against the htpasswd file; bcrypt is slow by design, so an accepted
/// `Authorization` value is remembered (as its hash) instead of verified on every request.
pub struct Logins {
    users: Htpasswd,
    accepted: Mutex<HashSet<[u8; 32]>>,
}

/// Accepted logins remembered at most (then the memory starts afresh).
const REMEMBERED: usize = 10_000;

impl Logins {
    /// Over `users`.
    pub fn new(users: Htpasswd) -> Self {
        Logins {
            users,
            accepted: Mutex::default(),
        }
    }

    /// The user name when `authorization` is a valid Basic login.
    async fn check(&self, authorization: Option<&str>) -> Option<String> {
        let value = authorization?.strip_prefix("Basic ")?.trim();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':')?;
        let key: [u8; 32] = sha2::Sha256::digest(value.as_bytes()).into();
        if self.accepted.lock().expect("logins").contains(&key) {
            return Some(user.to_string());
        }
        let hash = self.users.0.get(user)?.clone();
        let password = password.to_string();
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        if !ok {
            return None;
        }
        let mut accepted = self.accepted.lock().expect("logins");
        if accepted.len() >= REMEMBERED {
            accepted.clear();
        }
        accepted.insert(key);
        Some(user.to_string())
    }
}

/// At most `limit` requests in flight per client address.
pub struct ClientLimits {
    limit: usize,
    clients: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
}

impl ClientLimits {
    /// `limit` per client.
    pub fn new(limit: usize) -> Self {
        ClientLimits {
            limit,
            clients: Mutex::default(),
        }
    }

    fn permit(&self, ip: IpAddr) -> Option<OwnedSemaphorePermit> {
        let mut clients = self.clients.lock().expect("client limits");
        if clients.len() > 10_000 {
            // Forget idle clients rather than grow without bound.
            clients.retain(|_, s| s.available_permits() < self.limit);
        }
        let semaphore = clients
            .entry(ip)
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }
}

/// The middleware.
pub async fn gate(State(proxy): State<Arc<Proxy>>, req: Request, next: Next) -> Response<Body> {
    let started = Instant::now();
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let mut user = None;
    let refused = if let (Some(logins), true) = (&proxy.logins, path.starts_with("/v2")) {
        let authorization = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        user = logins.check(authorization).await;
        user.is_none().then(|| {
            let mut r = ApiError::new(401, "UNAUTHORIZED", "authentication required").response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"gcrsync\""),
            );
            r
        })
    } else {
        None
    };
    let permit = match (&refused, peer) {
        (None, Some(peer)) => match proxy.limits.permit(peer.ip()) {
            Some(p) => Some(p),
            None => {
                inc(&proxy.metrics.throttled);
                let mut e = ApiError::new(
                    429,
                    "TOOMANYREQUESTS",
                    format!(
                        "more than {} requests in flight from {}",
                        proxy.limits.limit,
                        peer.ip()
                    ),
                );
                e.retry_after = Some(1);
                return finish(
                    &proxy,
                    e.response(),
                    None,
                    started,
                    Some(peer),
                    &method,
                    &path,
                    None,
                );
            }
        },
        _ => None,
    };
    let response = match refused {
        Some(r) => r,
        None => next.run(req).await,
    };
    finish(
        &proxy, response, permit, started, peer, &method, &path, user,
    )
}

#[allow(clippy::too_many_arguments)]
fn finish(
    proxy: &Proxy,
    mut response: Response<Body>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    peer: Option<std::net::SocketAddr>,
    method: &axum::http::Method,
    path: &str,
    user: Option<String>,
) -> Response<Body> {
    inc(&proxy.metrics.requests);
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    let origin = response
        .extensions()
        .get::<Origin>()
        .map_or("-", |o| o.as_str());
    tracing::info!(
        target: "gcrsync::serve::access",
        client = %peer.map_or("-".to_string(), |p| p.ip().to_string()),
        user = user.as_deref().unwrap_or("-"),
        method = %method,
        path,
        status = response.status().as_u16(),
        cache = origin,
        ms = started.elapsed().as_millis() as u64,
        "{method} {path} {}",
        response.status().as_u16()
    );
    match permit {
        // The cap counts a request until its body is sent, not only until its headers.
        Some(permit) => response.map(|body| {
            Body::from_stream(body.into_data_stream().map(move |chunk| {
                let _held = &permit;
                chunk
            }))
        }),
        None => response,
    }
}
