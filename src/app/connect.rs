//! Wiring a run to the outside: HTTP clients (timeouts, proxy, CA), one registry client
//! per source and the target with their logins, and the metadata recorder.

use std::sync::Arc;
use std::time::Duration;

use super::AppError;
use crate::metadata::render::Renderer;
use crate::metadata::{MetadataStore, Recorder};
use crate::oci::http::{Access, Clients, Endpoint, HttpRegistry, RetryPolicy};
use crate::reference::Namespace;
use crate::settings::{Insecure, Settings, Side};

/// Every registry a run talks to, sharing one connection pool.
pub(super) struct Registries {
    pub(super) sources: Vec<Arc<HttpRegistry>>,
    pub(super) target: Arc<HttpRegistry>,
    pub(super) retry: RetryPolicy,
}

/// The HTTP clients of a run (see `Clients`); `verify: false` only for
/// `--insecure-registry https://HOST`.
pub(super) fn http_clients(settings: &Settings, verify: bool) -> Result<Clients, AppError> {
    Ok(Clients {
        requests: http_client(settings, verify, true)?,
        uploads: http_client(settings, verify, false)?,
    })
}

/// One HTTP client; `idle_timeout` adds `--http-timeout` as a read timeout.
fn http_client(
    settings: &Settings,
    verify: bool,
    idle_timeout: bool,
) -> Result<reqwest::Client, AppError> {
    let mut builder = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(!verify)
        .user_agent(concat!("gcrsync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.http_timeout)
        .tcp_keepalive(settings.http_timeout)
        .pool_max_idle_per_host(settings.limits.tags + settings.limits.queries);
    if idle_timeout {
        builder = builder.read_timeout(settings.http_timeout);
    }
    if let Some(proxy) = &settings.proxy {
        let proxy =
            reqwest::Proxy::all(proxy).map_err(|e| AppError::Config(format!("--proxy: {e}")))?;
        builder = builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_env()));
    }
    if let Some(pem) = &settings.ca_cert {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| AppError::Config(format!("--ca-cert: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| AppError::Fatal(format!("cannot set up HTTP: {e}")))
}

impl Registries {
    /// One client per registry over the shared pool `http` (or `unverified` for
    /// `--insecure-registry https://HOST`).
    pub(super) fn new(settings: &Settings, http: &Clients) -> Result<Self, AppError> {
        let retry = RetryPolicy {
            retries: settings.retries,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(30),
        };
        let unverified = match settings
            .insecure
            .iter()
            .any(|(_, m)| *m == Insecure::UnverifiedTls)
        {
            true => Some(http_clients(settings, false)?),
            false => None,
        };
        let registry = |ns: &Namespace, access, side| -> Result<Arc<HttpRegistry>, AppError> {
            let mode = settings.insecure_mode(&ns.registry);
            let endpoint = Endpoint {
                host: ns.registry.clone(),
                plain_http: mode == Some(Insecure::PlainHttp),
                login: settings
                    .login_for(&ns.registry, side)
                    .map_err(AppError::Fatal)?,
                access,
            };
            let client = match (mode, &unverified) {
                (Some(Insecure::UnverifiedTls), Some(client)) => client.clone(),
                _ => http.clone(),
            };
            Ok(Arc::new(HttpRegistry::new(endpoint, client, retry)))
        };
        let sources = settings
            .sources
            .iter()
            .map(|ns| registry(ns, Access::Pull, Side::Source))
            .collect::<Result<_, _>>()?;
        let target = registry(&settings.target, Access::Push, Side::Target)?;
        Ok(Registries {
            sources,
            target,
            retry,
        })
    }
}

pub(super) fn recorder<M: MetadataStore>(
    settings: &Settings,
    store: M,
) -> Result<Recorder<M>, AppError> {
    let renderer = Renderer::new(
        settings.readme_template.as_ref(),
        settings.changelog_template.as_ref(),
    )
    .map_err(|e| AppError::Config(e.to_string()))?;
    let pairs = settings
        .sources
        .iter()
        .map(|s| (s.clone(), settings.target.clone()))
        .collect();
    Ok(Recorder::new(
        store,
        &settings.metadata_path,
        renderer,
        pairs,
        settings.timezone.clone(),
    ))
}
