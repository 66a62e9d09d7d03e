//! `gcrsync serve`'s settings: its own options (listen address, upstream routes, cache,
//! TLS, htpasswd) and the source-side credentials and network options it shares with sync.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::resolve::{credentials, docker_config, duration, gcp_key, network, positive};
use super::transport::{CaBundle, ProxyUrl, insecure_registry, note_scheme};
use super::{
    ConfigError, Credentials, DockerConfig, GcpKey, Insecure, LogFormat, Transport, bad, transport,
};
use crate::cli::{Cli, Command, ServeArgs};
use crate::reference::{Namespace, RegistryHost, RepoPath, Scheme};

/// One `--upstream [PREFIX=]REGISTRY[/NAMESPACE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamRoute {
    /// The client path prefix routed here; `None`: the default route.
    pub prefix: Option<RepoPath>,
    /// Where client paths land: `REGISTRY[/NAMESPACE]`.
    pub namespace: Namespace,
    /// The scheme written before REGISTRY, if any.
    pub scheme: Option<Scheme>,
}

/// Parses one `--upstream` value.
pub fn upstream_route(text: &str) -> Result<UpstreamRoute, ConfigError> {
    let text = text.trim();
    let (prefix, rest) = match text.split_once('=') {
        Some((p, r)) => (Some(p.trim().trim_matches('/')), r.trim()),
        None => (None, text),
    };
    let prefix = prefix
        .map(|p| {
            p.parse::<RepoPath>().map_err(|e| {
                bad(
                    "upstream",
                    format!("{text:?}: the prefix before '=' is not a repository path: {e}"),
                )
            })
        })
        .transpose()?;
    let (namespace, scheme) = Namespace::parse_with_scheme(rest)
        .map_err(|e| bad("upstream", format!("{text:?}: {e}")))?;
    // `gcr.io` alone parses as a Docker Hub namespace only if it lacks a dot; a bare word
    // like `google_containers` would silently mean docker.io/google_containers.
    if !rest.contains('.') && !rest.contains(':') && !rest.starts_with("localhost") {
        return Err(bad(
            "upstream",
            format!("{text:?}: name the registry host, e.g. gcr.io/google_containers or docker.io"),
        ));
    }
    Ok(UpstreamRoute {
        prefix,
        namespace,
        scheme,
    })
}

/// htpasswd logins: user → bcrypt hash.
#[derive(Clone, Default)]
pub struct Htpasswd(pub HashMap<String, String>);

impl std::fmt::Debug for Htpasswd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Htpasswd({} users)", self.0.len())
    }
}

/// Parses an htpasswd file; only bcrypt entries (`htpasswd -B`, as distribution takes).
pub fn htpasswd(text: &str) -> Result<Htpasswd, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line
            .split_once(':')
            .ok_or_else(|| format!("line {}: not USER:HASH", n + 1))?;
        if !["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)) {
            return Err(format!(
                "line {} ({user}): not a bcrypt hash; create entries with `htpasswd -B`",
                n + 1
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    if users.is_empty() {
        return Err("no USER:HASH line; add users with `htpasswd -B FILE USER`".into());
    }
    Ok(Htpasswd(users))
}

/// `20GiB`, `500MB`, `1024` (bytes).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "ki" | "kib" => 1 << 10,
        "mi" | "mib" => 1 << 20,
        "gi" | "gib" => 1 << 30,
        "ti" | "tib" => 1 << 40,
        _ => return None,
    };
    (number >= 0.0).then_some((number * factor as f64) as u64)
}

/// `--tls-cert` and `--tls-key`, read and checked.
#[derive(Clone)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: Vec<u8>,
    /// The private key (PEM; secret).
    pub key: Vec<u8>,
}

/// Everything `gcrsync serve` needs, validated.
pub struct ServeSettings {
    /// `--listen`.
    pub listen: SocketAddr,
    /// `--upstream`, in the order given.
    pub upstreams: Vec<UpstreamRoute>,
    /// `--cache-dir`.
    pub cache_dir: PathBuf,
    /// `--cache-max` in bytes.
    pub cache_max: Option<u64>,
    /// `--tag-ttl`.
    pub tag_ttl: Duration,
    /// `--tls-cert/--tls-key`.
    pub tls: Option<TlsFiles>,
    /// `--htpasswd`.
    pub htpasswd: Option<Htpasswd>,
    /// `--client-limit`.
    pub client_limit: usize,
    /// `--record-misses`.
    pub record_misses: Option<PathBuf>,
    /// `--source-username/--source-password`.
    pub source_credentials: Option<Credentials>,
    /// docker's config.json logins.
    pub docker_config: DockerConfig,
    /// `--gcp-credentials`.
    pub gcp_key: Option<GcpKey>,
    /// `--insecure-registry`.
    pub insecure: Vec<(RegistryHost, Insecure)>,
    /// Schemes written before upstream registries.
    pub schemes: Vec<(RegistryHost, Scheme)>,
    /// `--ca-cert` (PEM).
    pub ca_cert: Option<CaBundle>,
    /// `--proxy`.
    pub proxy: Option<ProxyUrl>,
    /// `--http-timeout`.
    pub http_timeout: Duration,
    /// `--retries`.
    pub retries: usize,
    /// `--log-format`.
    pub log_format: LogFormat,
    /// -v count minus -q.
    pub verbosity: i8,
}

impl ServeSettings {
    /// How an upstream registry is spoken to (as for sync's sources).
    pub fn transport(&self, host: &RegistryHost) -> Transport {
        let insecure = self
            .insecure
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, m)| *m);
        let scheme = self
            .schemes
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, s)| *s);
        transport(host, insecure, scheme)
    }

    /// Every secret, for masking in CI logs (`::add-mask::`, as sync's `Settings::secrets`).
    pub fn secrets(&self) -> Vec<String> {
        let mut secrets: Vec<String> = self
            .source_credentials
            .iter()
            .map(|c| c.password.clone())
            .collect();
        secrets.extend(self.gcp_key.iter().flat_map(|k| k.secrets()));
        secrets.extend(self.docker_config.passwords());
        secrets.extend(super::proxy_secrets(self.proxy.as_ref()));
        secrets.retain(|s| !s.is_empty());
        secrets.sort();
        secrets.dedup();
        secrets
    }
}

fn listen(text: &str) -> Result<SocketAddr, ConfigError> {
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_string(),
    };
    full.parse().map_err(|_| {
        bad(
            "listen",
            format!("{text:?} is not ADDR:PORT, e.g. 0.0.0.0:5000, 127.0.0.1:5000 or :5000"),
        )
    })
}

fn read(flag: &'static str, path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| bad(flag, format!("cannot read {}: {e}", path.display())))
}

fn tls(args: &ServeArgs) -> Result<Option<TlsFiles>, ConfigError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (read("tls-cert", c)?, read("tls-key", k)?),
        (Some(_), None) => return Err(bad("tls-key", "--tls-cert needs --tls-key")),
        (None, Some(_)) => return Err(bad("tls-cert", "--tls-key needs --tls-cert")),
    };
    let certs = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("tls-cert", format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(bad("tls-cert", "no CERTIFICATE in the file"));
    }
    PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| bad("tls-key", format!("no PEM private key: {e}")))?;
    Ok(Some(TlsFiles { cert, key }))
}

/// Resolves `gcrsync serve`'s options; `env` looks up fallback variables.
pub fn resolve_serve(
    cli: Cli,
    env: impl Fn(&str) -> Option<String>,
) -> Result<ServeSettings, ConfigError> {
    let Some(Command::Serve(args)) = cli.command else {
        return Err(bad("listen", "not the serve command"));
    };
    let o = cli.options;
    let insecure: Vec<(RegistryHost, Insecure)> = o
        .insecure_registry
        .iter()
        .filter(|h| !h.trim().is_empty())
        .map(|h| insecure_registry(h.trim()))
        .collect::<Result<_, _>>()?;
    let mut schemes = Vec::new();
    let mut upstreams: Vec<UpstreamRoute> = Vec::new();
    for text in args.upstream.iter().filter(|t| !t.trim().is_empty()) {
        let route = upstream_route(text)?;
        note_scheme(
            &mut schemes,
            &insecure,
            "upstream",
            &route.namespace,
            route.scheme,
        )?;
        if upstreams.iter().any(|u| u.prefix == route.prefix) {
            let what = match &route.prefix {
                Some(p) => format!("the prefix {p} is routed twice"),
                None => "two upstreams without PREFIX= (only one default route)".into(),
            };
            return Err(bad(
                "upstream",
                format!("{what}; give each its own PREFIX="),
            ));
        }
        upstreams.push(route);
    }
    if upstreams.is_empty() {
        return Err(bad(
            "upstream",
            "no upstream given; e.g. --upstream gcr.io or --upstream k8s=registry.k8s.io",
        ));
    }
    if upstreams.len() > 1 && (o.source_username.is_some() || o.source_password.is_some()) {
        // One login for every upstream would hand one registry's password to the others.
        return Err(bad(
            "source-username",
            "one login cannot go to several --upstream registries; log in to each through \
             --docker-config (docker login HOST), or run one serve per upstream",
        ));
    }
    let docker_config = docker_config(&o, &env)?;
    let (proxy, ca_cert) = network(&o)?;
    let htpasswd = args
        .htpasswd
        .as_ref()
        .map(|p| {
            let text = String::from_utf8_lossy(&read("htpasswd", p)?).into_owned();
            htpasswd(&text).map_err(|e| bad("htpasswd", format!("{}: {e}", p.display())))
        })
        .transpose()?;
    let cache_max = args
        .cache_max
        .as_deref()
        .map(|t| match parse_size(t) {
            Some(n) if n > 0 => Ok(n),
            _ => Err(bad(
                "cache-max",
                format!("{t:?} is not a size; write e.g. 20GiB or 500MB"),
            )),
        })
        .transpose()?;
    let retries = if (0..=20).contains(&o.retries) {
        o.retries as usize
    } else {
        return Err(bad(
            "retries",
            format!("{} is out of range; give a number from 0 to 20", o.retries),
        ));
    };
    let log_format = match o.log_format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => return Err(bad("log-format", format!("{other:?} is not text or json"))),
    };
    Ok(ServeSettings {
        listen: listen(&args.listen)?,
        upstreams,
        cache_dir: args.cache_dir.clone(),
        cache_max,
        tag_ttl: duration("tag-ttl", &args.tag_ttl)?,
        tls: tls(&args)?,
        htpasswd,
        client_limit: positive("client-limit", args.client_limit, 100_000)?,
        record_misses: args.record_misses.clone(),
        source_credentials: credentials("source-username", o.source_username, o.source_password)?,
        docker_config,
        gcp_key: gcp_key(o.gcp_credentials.as_deref(), &env)?,
        insecure,
        schemes,
        ca_cert,
        proxy,
        http_timeout: duration("http-timeout", &o.http_timeout)?,
        retries,
        log_format,
        verbosity: o.verbose.min(3) as i8 - i8::from(o.quiet),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_parse_with_and_without_prefix() {
        let d = upstream_route("gcr.io/google_containers").unwrap();
        assert_eq!(d.prefix, None);
        assert_eq!(d.namespace.to_string(), "gcr.io/google_containers");
        let k = upstream_route("k8s=registry.k8s.io").unwrap();
        assert_eq!(k.prefix.unwrap().as_str(), "k8s");
        assert_eq!(k.namespace.to_string(), "registry.k8s.io");
        let h = upstream_route("http://127.0.0.1:5000/team").unwrap();
        assert_eq!(h.scheme, Some(Scheme::Http));
        assert!(upstream_route("google_containers").is_err());
        assert!(upstream_route("Bad Prefix=gcr.io").is_err());
    }

    #[test]
    fn secrets_include_the_password_and_the_proxy_password_as_written_and_decoded() {
        use clap::Parser;
        let cli = Cli::try_parse_from([
            "gcrsync",
            "serve",
            "--upstream",
            "gcr.io",
            "--source-username",
            "me",
            "--source-password",
            "pw-1",
            "--proxy",
            "socks5://me:p%40ss+w@proxy:1080",
        ])
        .unwrap();
        let settings = resolve_serve(cli, |_| None).unwrap();
        let secrets = settings.secrets();
        for secret in ["pw-1", "p%40ss+w", "p@ss+w"] {
            assert!(
                secrets.contains(&secret.to_string()),
                "{secret}: {secrets:?}"
            );
        }
        assert!(!secrets.iter().any(|s| s.is_empty() || s == "me"));
    }

    #[test]
    fn sizes_and_htpasswd() {
        assert_eq!(parse_size("20GiB"), Some(20 << 30));
        assert_eq!(parse_size("500MB"), Some(500_000_000));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("lots"), None);
        let users = htpasswd("alice:$2y$05$abcdefghijklmnopqrstuv\n").unwrap();
        assert!(users.0.contains_key("alice"));
        let md5 = htpasswd("bob:$apr1$xyz$abc").unwrap_err();
        assert!(md5.contains("htpasswd -B"), "{md5}");
    }
}
