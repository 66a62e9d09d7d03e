//! The HTTP clients of a run, built on first use: plain-HTTP registries never load a CA
//! store, and TLS loads one once (the system's, else the bundled Mozilla roots).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::error::Error;
use crate::settings::{CaBundle, ProxyUrl};

/// What every client of a run shares.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Connect timeout, TCP keepalive, and (except for uploads) the idle-read timeout.
    pub timeout: Duration,
    /// Idle connections kept per host.
    pub pool_per_host: usize,
    /// `--proxy`, else the `*_PROXY` variables.
    pub proxy: Option<ProxyUrl>,
    /// `--ca-cert`, trusted besides the system roots.
    pub ca_cert: Option<CaBundle>,
    /// `false` only for `--insecure-registry https://HOST`.
    pub verify: bool,
}

/// A registry's two clients. Uploads get their own: reqwest's read timeout runs while a
/// request body is still being sent, so on the upload client it would cap the whole
/// transfer; the source side of an upload keeps its idle timeout instead.
#[derive(Clone)]
struct Pair {
    requests: reqwest::Client,
    uploads: reqwest::Client,
}

struct Inner {
    options: ClientOptions,
    plain: Pair,
    tls: OnceLock<Result<Pair, String>>,
    general: OnceLock<Result<reqwest::Client, String>>,
}

/// The clients of a run. Registry clients never follow redirects on their own: the
/// registry code follows them, so that credentials stay with the registry.
#[derive(Clone)]
pub struct Clients(Arc<Inner>);

/// Which roots a TLS client trusts.
enum Roots {
    /// None at all: the client is only ever given `http://` URLs.
    Nothing,
    /// The system's (or the bundled) roots and `--ca-cert`.
    Trusted,
}

impl Clients {
    /// Builds the plain-HTTP clients now (cheap: no CA store), TLS ones on first use; the
    /// error names the option at fault.
    pub fn new(options: ClientOptions) -> Result<Self, String> {
        let plain = Pair {
            requests: build(&options, Roots::Nothing, Some(options.timeout), false)?,
            uploads: build(&options, Roots::Nothing, None, false)?,
        };
        Ok(Clients(Arc::new(Inner {
            options,
            plain,
            tls: OnceLock::new(),
            general: OnceLock::new(),
        })))
    }

    fn pair(&self, url: &str) -> Result<&Pair, Error> {
        if !url.starts_with("https://") {
            return Ok(&self.0.plain);
        }
        let options = &self.0.options;
        let tls = self.0.tls.get_or_init(|| {
            Ok(Pair {
                requests: build(options, Roots::Trusted, Some(options.timeout), false)?,
                uploads: build(options, Roots::Trusted, None, false)?,
            })
        });
        tls.as_ref().map_err(|detail| Error::Tls {
            url: url.to_string(),
            detail: detail.clone(),
        })
    }

    /// The client for every request to `url` but blob uploads.
    pub fn requests(&self, url: &str) -> Result<reqwest::Client, Error> {
        self.pair(url).map(|p| p.requests.clone())
    }

    /// The client for blob uploads to `url`.
    pub fn uploads(&self, url: &str) -> Result<reqwest::Client, Error> {
        self.pair(url).map(|p| p.uploads.clone())
    }

    /// A TLS-capable client that follows redirects itself, for APIs other than registries
    /// (GitHub).
    pub fn general(&self) -> Result<reqwest::Client, String> {
        let options = &self.0.options;
        self.0
            .general
            .get_or_init(|| build(options, Roots::Trusted, Some(options.timeout), true))
            .clone()
    }
}

fn build(
    options: &ClientOptions,
    roots: Roots,
    read_timeout: Option<Duration>,
    follow_redirects: bool,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("gcrsync/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(options.timeout)
        .tcp_keepalive(options.timeout)
        .pool_max_idle_per_host(options.pool_per_host);
    if !follow_redirects {
        builder = builder.redirect(reqwest::redirect::Policy::none());
    }
    if let Some(timeout) = read_timeout {
        builder = builder.read_timeout(timeout);
    }
    if let Some(proxy) = &options.proxy {
        let proxy = reqwest::Proxy::all(proxy.url().clone())
            .map_err(|e| format!("--proxy {proxy}: {e}"))?;
        builder = builder.proxy(proxy.no_proxy(reqwest::NoProxy::from_env()));
    }
    builder = match roots {
        Roots::Nothing => builder.tls_certs_only(Vec::new()),
        Roots::Trusted if !options.verify => builder.tls_danger_accept_invalid_certs(true),
        Roots::Trusted => trust(builder, options.ca_cert.as_ref()),
    };
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTP: {}", super::error::causes(&e)))
}

fn extra_root(ca: Option<&CaBundle>) -> Vec<reqwest::Certificate> {
    ca.map(|ca| ca.certificates().to_vec()).unwrap_or_default()
}

/// On Linux the roots are the system bundle (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the
/// distribution's), read once; a slim container without one gets the bundled Mozilla
/// roots and a warning rather than no TLS at all.
#[cfg(all(unix, not(target_vendor = "apple"), not(target_os = "android")))]
fn trust(builder: reqwest::ClientBuilder, ca: Option<&CaBundle>) -> reqwest::ClientBuilder {
    static SYSTEM: OnceLock<Vec<reqwest::Certificate>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let certs: Vec<_> = found
            .certs
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok())
            .collect();
        if !certs.is_empty() {
            return certs;
        }
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        tracing::warn!(
            "no system CA certificates ({why}); trusting the bundled Mozilla roots instead (install ca-certificates, or set SSL_CERT_FILE)"
        );
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok())
            .collect()
    });
    let mut roots = system.clone();
    roots.extend(extra_root(ca));
    builder.tls_certs_only(roots)
}

/// Elsewhere the platform verifier asks the operating system, which always has roots.
#[cfg(not(all(unix, not(target_vendor = "apple"), not(target_os = "android"))))]
fn trust(builder: reqwest::ClientBuilder, ca: Option<&CaBundle>) -> reqwest::ClientBuilder {
    builder.tls_certs_merge(extra_root(ca))
}
