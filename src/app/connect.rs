//! Wiring a run to the outside: HTTP clients (timeouts, proxy, CA), one registry client
//! per source and the target with their logins, and the metadata recorder.

use std::sync::Arc;

use crate::exit::Failure;
use crate::gcp::is_google_registry;
use crate::metadata::render::{Renderer, TemplateFiles};
use crate::metadata::{MetadataStore, Recorder};
use crate::oci::auth::Login;
use crate::oci::clients::{ClientOptions, Clients};
use crate::oci::http::{Access, Endpoint, HttpRegistry, RetryPolicy};
use crate::reference::Namespace;
use crate::reference::RegistryHost;
use crate::settings::{DockerLogin, Insecure, Settings, Transport};

/// Every registry a run talks to, sharing one connection pool.
pub(super) struct Registries {
    pub(super) sources: Vec<Arc<HttpRegistry>>,
    pub(super) target: Arc<HttpRegistry>,
    pub(super) retry: RetryPolicy,
}

/// The HTTP clients of a run (see `Clients`): TLS ones, and the CA store, are set up only
/// when a TLS URL is first requested. `verify: false` only for
/// `--insecure-registry https://HOST`.
pub(super) fn http_clients(settings: &Settings, verify: bool) -> Result<Clients, Failure> {
    Clients::new(ClientOptions {
        timeout: settings.http_timeout,
        pool_per_host: settings.limits.tags + settings.limits.queries,
        proxy: settings.proxy.clone(),
        ca_cert: settings.ca_cert.clone(),
        verify,
    })
    .map_err(Failure::HttpSetup)
}

impl Registries {
    /// One client per registry over the shared pool `http` (or `unverified` for
    /// `--insecure-registry https://HOST`).
    pub(super) fn new(settings: &Settings, http: &Clients) -> Result<Self, Failure> {
        let retry = RetryPolicy::new(settings.retries);
        let unverified = match settings
            .insecure
            .iter()
            .any(|(_, m)| *m == Insecure::UnverifiedTls)
        {
            true => Some(http_clients(settings, false)?),
            false => None,
        };
        let registry = |ns: &Namespace, access, side| -> Result<Arc<HttpRegistry>, Failure> {
            let mode = settings.transport(&ns.registry);
            let endpoint = Endpoint {
                host: ns.registry.clone(),
                plain_http: mode == Transport::Http,
                login: login_for(settings, &ns.registry, side).map_err(Failure::Login)?,
                access,
            };
            let client = match (mode, &unverified) {
                (Transport::HttpsUnverified, Some(client)) => client.clone(),
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

/// Which side of the mirror a registry is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// A source.
    Source,
    /// The target.
    Target,
}

/// The login for `host`, in this order: the side's options (flags, `GCRSYNC_*`,
/// `DOCKER_*` for the target); the GCP key (any source; gcr.io and `*-docker.pkg.dev`
/// targets); docker's config.json; else anonymous.
fn login_for(
    settings: &Settings,
    host: &RegistryHost,
    side: Side,
) -> Result<Option<Login>, String> {
    let explicit = match side {
        Side::Source => &settings.source_credentials,
        Side::Target => &settings.target_credentials,
    };
    if let Some(c) = explicit {
        return Ok(Some(Login::Static(c.clone())));
    }
    if let Some(key) = settings
        .gcp_key
        .as_ref()
        .filter(|_| side == Side::Source || is_google_registry(host))
    {
        return key.login().map(Some);
    }
    Ok(settings.docker_config.get(host).map(|login| match login {
        DockerLogin::Basic(c) => Login::Static(c.clone()),
        DockerLogin::IdentityToken(token) => Login::IdentityToken(token.clone()),
    }))
}

pub(super) fn recorder<M: MetadataStore>(
    settings: &Settings,
    store: M,
) -> Result<Recorder<M>, Failure> {
    let renderer = Renderer::new(&TemplateFiles {
        readme: settings.readme_template.clone(),
        image: settings.image_template.clone(),
        changelog: settings.changelog_template.clone(),
    })?;
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
