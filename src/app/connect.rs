//! Wiring a run to the outside: HTTP clients (timeouts, proxy, CA), one registry client
//! per source and the target with their logins, and the metadata recorder.

use std::collections::HashSet;
use std::sync::Arc;

use crate::exit::Failure;
use crate::gcp::{is_google_registry, key_goes_to};
use crate::metadata::render::{Renderer, TemplateFiles};
use crate::metadata::{MetadataStore, Recorder};
use crate::oci::any::AnyRegistry;
use crate::oci::auth::Login;
use crate::oci::clients::{ClientOptions, Clients};
use crate::oci::http::{Access, Endpoint, HttpRegistry, RetryPolicy};
use crate::oci::layout::{LayoutRegistry, check_dir};
use crate::reference::Namespace;
use crate::reference::RegistryHost;
use crate::settings::{
    ConfigError, Credentials, DockerLogin, GcpKey, Insecure, Logins, Settings, Transport,
};

/// Every registry a run talks to, sharing one connection pool.
pub(super) struct Registries {
    pub(super) sources: Vec<Arc<AnyRegistry>>,
    /// Each distinct target: a registry and the login its sources reach it with.
    pub(super) targets: Vec<Arc<AnyRegistry>>,
    /// The index in `targets` of each source's target.
    pub(super) target_of: Vec<usize>,
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
    /// `--insecure-registry https://HOST`). Sources sharing a target registry and login
    /// share its client, so blobs are mounted and deduplicated across them.
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
        let registry = |ns: &Namespace,
                        access,
                        side: Side,
                        choice: &Choice<'_>|
         -> Result<Arc<AnyRegistry>, Failure> {
            if let Some(dir) = ns.registry.layout_dir() {
                // `oci:DIR`: a source must exist; a target is created on the first write.
                let (flag, writes) = match side {
                    Side::Source => ("source", false),
                    Side::Target => ("target", true),
                };
                check_dir(dir, writes).map_err(|message| ConfigError {
                    flag,
                    message: format!("{ns}: {message}"),
                })?;
                let layouts = LayoutRegistry::new(dir.to_path_buf());
                return Ok(Arc::new(AnyRegistry::Layout(layouts)));
            }
            let mode = settings.transport(&ns.registry);
            let endpoint = Endpoint {
                host: ns.registry.clone(),
                plain_http: mode == Transport::Http,
                login: choice.login().map_err(Failure::Login)?,
                access,
            };
            let client = match (mode, &unverified) {
                (Transport::HttpsUnverified, Some(client)) => client.clone(),
                _ => http.clone(),
            };
            let http = HttpRegistry::new(endpoint, client, retry);
            Ok(Arc::new(AnyRegistry::Http(http)))
        };
        let mut sources = Vec::new();
        let mut targets = Vec::new();
        let mut chosen: Vec<(&RegistryHost, Choice<'_>)> = Vec::new();
        let mut target_of = Vec::new();
        let source_hosts: HashSet<&RegistryHost> = settings
            .sources
            .iter()
            .map(|s| &s.namespace.registry)
            .collect();
        for source in &settings.sources {
            let host = &source.namespace.registry;
            let choice = choose(&source.logins, host, Side::Source, source_hosts.len() == 1);
            sources.push(registry(
                &source.namespace,
                Access::Pull,
                Side::Source,
                &choice,
            )?);
            let host = &source.target.registry;
            let choice = choose(&source.logins, host, Side::Target, false);
            // A layout directory has one writer whatever the login, so its `index.json`
            // lock is one lock.
            let same = |h: &RegistryHost, c: &Choice<'_>| {
                h == host && (host.layout_dir().is_some() || *c == choice)
            };
            match chosen.iter().position(|(h, c)| same(h, c)) {
                Some(known) => target_of.push(known),
                None => {
                    targets.push(registry(
                        &source.target,
                        Access::Push,
                        Side::Target,
                        &choice,
                    )?);
                    target_of.push(chosen.len());
                    chosen.push((host, choice));
                }
            }
        }
        Ok(Registries {
            sources,
            targets,
            target_of,
            retry,
        })
    }

    /// The target client of source `source`.
    pub(super) fn target(&self, source: usize) -> &Arc<AnyRegistry> {
        &self.targets[self.target_of[source]]
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

/// The login chosen for one registry, comparable so that sources with the same target
/// and login share one client.
enum Choice<'a> {
    /// The side's options.
    Options(&'a Credentials),
    /// The GCP key.
    Gcp(&'a GcpKey),
    /// Docker's config.json.
    Docker(&'a DockerLogin),
    /// None.
    Anonymous,
}

impl PartialEq for Choice<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Choice::Options(a), Choice::Options(b)) => a == b,
            (Choice::Gcp(a), Choice::Gcp(b)) => a.json == b.json,
            (Choice::Docker(a), Choice::Docker(b)) => a == b,
            (Choice::Anonymous, Choice::Anonymous) => true,
            _ => false,
        }
    }
}

impl Choice<'_> {
    fn login(&self) -> Result<Option<Login>, String> {
        Ok(match self {
            Choice::Options(c) => Some(Login::Static((*c).clone())),
            Choice::Gcp(key) => Some(key.login()?),
            Choice::Docker(DockerLogin::Basic(c)) => Some(Login::Static(c.clone())),
            Choice::Docker(DockerLogin::IdentityToken(t)) => Some(Login::IdentityToken(t.clone())),
            Choice::Anonymous => None,
        })
    }
}

/// The login for `host`, in this order: the side's options (flags, `GCRSYNC_*`,
/// `DOCKER_*` for the target, a source's own in a config file); the GCP key (Google's
/// registries, the run's only source registry, or a source whose own config entry names
/// it; gcr.io and `*-docker.pkg.dev` targets);
/// docker's config.json; else anonymous.
fn choose<'a>(
    logins: &'a Logins,
    host: &RegistryHost,
    side: Side,
    only_source_registry: bool,
) -> Choice<'a> {
    let explicit = match side {
        Side::Source => &logins.source,
        Side::Target => &logins.target,
    };
    if let Some(c) = explicit {
        return Choice::Options(c);
    }
    if let Some(key) = logins.gcp_key.as_ref().filter(|_| match side {
        Side::Source => key_goes_to(host, only_source_registry || logins.gcp_key_own),
        Side::Target => is_google_registry(host),
    }) {
        return Choice::Gcp(key);
    }
    match logins.docker_config.get(host) {
        Some(login) => Choice::Docker(login),
        None => Choice::Anonymous,
    }
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
        .map(|s| (s.namespace.clone(), s.target.clone()))
        .collect();
    Ok(Recorder::new(
        store,
        &settings.metadata_path,
        renderer,
        pairs,
        settings.timezone.clone(),
    ))
}
