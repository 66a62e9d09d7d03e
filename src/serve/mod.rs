//! `gcrsync serve`: a pull-through registry in front of one or more upstreams (seed 004).
//! Upstreams are reached through the same `HttpRegistry` as sync's sources (auth, proxy,
//! CA, retry policy); answers come from a verified, content-addressed disk cache.
//!
//! Server stack: hyper (HTTP/1.1 and HTTP/2, with tokio-rustls for `--tls-cert`) serving
//! an axum router, with the login, per-client cap and access log as a tower middleware:
//! streaming bodies with backpressure, graceful shutdown, and no runtime of its own.

pub mod cache;
pub mod coalesce;
pub mod errors;
pub mod fetch;
pub mod gate;
pub mod handlers;
pub mod manifests;
pub mod metrics;
pub mod misses;
pub mod route;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

use crate::exit::Failure;
use crate::gcp::key_goes_to;
use crate::oci::auth::Login;
use crate::oci::clients::{ClientOptions, Clients};
use crate::oci::http::{Access, Endpoint, HttpRegistry, RetryPolicy};
use crate::reference::RegistryHost;
use crate::settings::serve::{ServeSettings, UpstreamRoute};
use crate::settings::{DockerLogin, Insecure, Transport};

/// One upstream and its client.
pub struct Upstream {
    /// How it was configured.
    pub route: UpstreamRoute,
    /// Its registry client.
    pub registry: HttpRegistry,
    /// The same, without retries: for questions a cached answer stands in for (a tag's
    /// revalidating HEAD, a listing already kept), so a down upstream costs one attempt
    /// before the client is answered, not the whole backoff.
    pub once: HttpRegistry,
}

/// Everything the handlers share.
pub struct Proxy {
    /// The upstreams, in `--upstream` order.
    pub upstreams: Vec<Upstream>,
    /// The disk cache.
    pub cache: cache::Cache,
    /// Blob downloads in flight.
    pub fetches: fetch::Fetches,
    /// Manifest GETs in flight.
    pub manifests: coalesce::Coalescer<cache::CachedManifest>,
    /// Tag HEADs in flight.
    pub heads: coalesce::Coalescer<Option<crate::oci::ManifestHead>>,
    /// Counters.
    pub metrics: metrics::Metrics,
    /// The one retry policy (`--retries`): the registry clients retry their own requests
    /// with it; serve applies it only to blob GETs and their resumptions, which the
    /// client leaves to its callers.
    pub retry: RetryPolicy,
    /// `--tag-ttl`.
    pub tag_ttl: Duration,
    /// `--record-misses`.
    pub misses: Option<misses::MissLog>,
    /// `--htpasswd`.
    pub logins: Option<gate::Logins>,
    /// `--client-limit`.
    pub limits: gate::ClientLimits,
}

impl Proxy {
    /// The routes, for `route::route`.
    pub fn routes(&self) -> Vec<UpstreamRoute> {
        self.upstreams.iter().map(|u| u.route.clone()).collect()
    }
}

/// The login for an upstream, in sync's order for sources (`app::connect::login_for`):
/// `--source-username/--source-password` (refused with several upstreams), the GCP key
/// (only for Google's registries, so a Google token never reaches another upstream),
/// docker's config.json, anonymous.
fn login_for(settings: &ServeSettings, host: &RegistryHost) -> Result<Option<Login>, String> {
    if let Some(c) = &settings.source_credentials {
        return Ok(Some(Login::Static(c.clone())));
    }
    if let Some(key) = settings
        .gcp_key
        .as_ref()
        .filter(|_| key_goes_to(host, settings.upstreams.len() == 1))
    {
        return key.login().map(Some);
    }
    Ok(settings.docker_config.get(host).map(|login| match login {
        DockerLogin::Basic(c) => Login::Static(c.clone()),
        DockerLogin::IdentityToken(token) => Login::IdentityToken(token.clone()),
    }))
}

fn clients(settings: &ServeSettings, verify: bool) -> Result<Clients, Failure> {
    Clients::new(ClientOptions {
        timeout: settings.http_timeout,
        pool_per_host: 64,
        proxy: settings.proxy.clone(),
        ca_cert: settings.ca_cert.clone(),
        verify,
    })
    .map_err(Failure::HttpSetup)
}

fn upstreams(settings: &ServeSettings, retry: RetryPolicy) -> Result<Vec<Upstream>, Failure> {
    let http = clients(settings, true)?;
    let unverified = match settings
        .insecure
        .iter()
        .any(|(_, m)| *m == Insecure::UnverifiedTls)
    {
        true => Some(clients(settings, false)?),
        false => None,
    };
    settings
        .upstreams
        .iter()
        .map(|route| {
            let host = &route.namespace.registry;
            let mode = settings.transport(host);
            let endpoint = Endpoint {
                host: host.clone(),
                plain_http: mode == Transport::Http,
                login: login_for(settings, host).map_err(Failure::Login)?,
                access: Access::Pull,
            };
            let client = match (mode, &unverified) {
                (Transport::HttpsUnverified, Some(c)) => c.clone(),
                _ => http.clone(),
            };
            Ok(Upstream {
                route: route.clone(),
                once: HttpRegistry::new(endpoint.clone(), client.clone(), RetryPolicy::new(0)),
                registry: HttpRegistry::new(endpoint, client, retry),
            })
        })
        .collect()
}

async fn metrics_page(State(proxy): State<Arc<Proxy>>) -> impl axum::response::IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        proxy.metrics.render(proxy.cache.size()),
    )
}

/// The router: `/metrics`, and the registry API for everything else.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .fallback(handlers::api)
        .layer(axum::middleware::from_fn_with_state(
            proxy.clone(),
            gate::gate,
        ))
        .with_state(proxy)
}

/// Runs the proxy until SIGTERM/SIGINT.
pub async fn run(settings: ServeSettings) -> Result<(), Failure> {
    let retry = RetryPolicy::new(settings.retries);
    let cache = cache::Cache::open(&settings.cache_dir, settings.cache_max).map_err(|e| {
        Failure::Serve(format!(
            "--cache-dir {}: {e}; give a writable directory",
            settings.cache_dir.display()
        ))
    })?;
    let misses = settings
        .record_misses
        .as_ref()
        .map(|p| {
            misses::MissLog::open(p)
                .map_err(|e| Failure::Serve(format!("--record-misses {}: {e}", p.display())))
        })
        .transpose()?;
    let tls = settings
        .tls
        .as_ref()
        .map(server::tls_acceptor)
        .transpose()
        .map_err(Failure::Serve)?;
    let proxy = Arc::new(Proxy {
        upstreams: upstreams(&settings, retry)?,
        cache,
        fetches: fetch::Fetches::default(),
        manifests: coalesce::Coalescer::default(),
        heads: coalesce::Coalescer::default(),
        metrics: metrics::Metrics::default(),
        retry,
        tag_ttl: settings.tag_ttl,
        misses,
        logins: settings.htpasswd.clone().map(gate::Logins::new),
        limits: gate::ClientLimits::new(settings.client_limit),
    });
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| Failure::Serve(format!("--listen {}: {e}", settings.listen)))?;
    let routes: Vec<String> = proxy
        .upstreams
        .iter()
        .map(|u| match &u.route.prefix {
            Some(p) => format!("{p}/* → {}", u.route.namespace),
            None => format!("* → {}", u.route.namespace),
        })
        .collect();
    tracing::info!(
        "serving on {}://{} ({}), cache {} ({} bytes held)",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr().map_or(settings.listen, |a| a),
        routes.join(", "),
        settings.cache_dir.display(),
        proxy.cache.size()
    );
    server::serve(listener, router(proxy), tls).await;
    Ok(())
}
