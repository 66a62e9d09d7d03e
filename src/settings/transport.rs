//! How each registry is spoken to: `--insecure-registry`, the scheme written before a
//! `--source`/`--target`, and docker's loopback default.

use super::{ConfigError, bad};
use crate::reference::{Namespace, RegistryHost, Scheme};

/// How an `--insecure-registry` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insecure {
    /// `HOST` or `http://HOST`: plain HTTP.
    PlainHttp,
    /// `https://HOST`: TLS without certificate verification (self-signed, no CA at hand).
    UnverifiedTls,
}

pub(super) fn insecure_registry(text: &str) -> Result<(RegistryHost, Insecure), ConfigError> {
    let (mode, host) = match text.strip_prefix("https://") {
        Some(host) => (Insecure::UnverifiedTls, host),
        None => (
            Insecure::PlainHttp,
            text.strip_prefix("http://").unwrap_or(text),
        ),
    };
    let host = host
        .trim_end_matches('/')
        .parse()
        .map_err(|e| bad("insecure-registry", format!("{e}")))?;
    Ok((host, mode))
}

/// How one registry is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP: `http://HOST`, `--insecure-registry HOST`, or a loopback host.
    Http,
    /// TLS, verified against the system roots and `--ca-cert`.
    Https,
    /// TLS without verification: `--insecure-registry https://HOST`.
    HttpsUnverified,
}

/// The transport for `host`: `--insecure-registry` first, then the scheme written before
/// it, then docker's default (loopback hosts speak plain HTTP, every other host TLS).
pub fn transport(
    host: &RegistryHost,
    insecure: Option<Insecure>,
    scheme: Option<Scheme>,
) -> Transport {
    match (insecure, scheme) {
        (Some(Insecure::PlainHttp), _) => Transport::Http,
        (Some(Insecure::UnverifiedTls), _) => Transport::HttpsUnverified,
        (None, Some(Scheme::Http)) => Transport::Http,
        (None, Some(Scheme::Https)) => Transport::Https,
        (None, None) if host.is_loopback() => Transport::Http,
        (None, None) => Transport::Https,
    }
}

/// Records the scheme written before `ns` (from option `name`); one host cannot be
/// written with two, nor with one that `--insecure-registry` contradicts.
pub(super) fn note_scheme(
    schemes: &mut Vec<(RegistryHost, Scheme)>,
    insecure: &[(RegistryHost, Insecure)],
    name: &'static str,
    ns: &Namespace,
    scheme: Option<Scheme>,
) -> Result<(), ConfigError> {
    let Some(scheme) = scheme else {
        return Ok(());
    };
    let host = &ns.registry;
    if let Some((_, other)) = schemes.iter().find(|(h, s)| h == host && *s != scheme) {
        return Err(bad(
            name,
            format!("{host} is written both as {other}{host} and {scheme}{host}; use one"),
        ));
    }
    let clash = insecure.iter().find(|(h, mode)| {
        h == host
            && matches!(
                (mode, scheme),
                (Insecure::PlainHttp, Scheme::Https) | (Insecure::UnverifiedTls, Scheme::Http)
            )
    });
    if let Some((_, mode)) = clash {
        let said = match mode {
            Insecure::PlainHttp => format!("--insecure-registry {host} (plain HTTP)"),
            Insecure::UnverifiedTls => format!("--insecure-registry https://{host} (TLS)"),
        };
        return Err(bad(
            name,
            format!("{scheme}{host} contradicts {said}; drop one of them"),
        ));
    }
    if !schemes.iter().any(|(h, _)| h == host) {
        schemes.push((host.clone(), scheme));
    }
    Ok(())
}
