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

/// `--proxy`, parsed once: an `http`, `https`, `socks5` or `socks5h` URL (`HOST:PORT`
/// alone means `http://`). Neither `Debug` nor `Display` shows its password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(reqwest::Url);

impl ProxyUrl {
    /// Parses `text`; the error never repeats a password.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let full = match text.contains("://") {
            true => text.to_string(),
            false => format!("http://{text}"),
        };
        let url = reqwest::Url::parse(&full)
            .ok()
            .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()));
        let Some(url) = url else {
            return Err(format!(
                "{:?} is not a proxy URL; write e.g. http://proxy:3128 or socks5://proxy:1080",
                redacted(text)
            ));
        };
        if !["http", "https", "socks5", "socks5h"].contains(&url.scheme()) {
            return Err(format!(
                "{}: the scheme {:?} is not http, https, socks5 or socks5h",
                ProxyUrl(url.clone()),
                url.scheme()
            ));
        }
        Ok(ProxyUrl(url))
    }

    /// The URL, password included (for the HTTP client only).
    pub fn url(&self) -> &reqwest::Url {
        &self.0
    }
}

/// `[scheme://]user:password@host` with the password cut out. Everything before the last
/// `@` is userinfo (a password may hold `@`), and a lone user may be a token: neither is
/// shown but the user's name.
pub(super) fn redacted(text: &str) -> String {
    let (prefix, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), text),
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{prefix}{user}:<redacted>@{host}")
        }
        None => text.to_string(),
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("<redacted>"));
        }
        f.write_str(&shown.as_str().replace("%3Credacted%3E", "<redacted>"))
    }
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// `--ca-cert`, read and parsed once: every certificate of the PEM file (a bundle may
/// hold several), trusted besides the system roots.
#[derive(Clone)]
pub struct CaBundle {
    certificates: Vec<reqwest::Certificate>,
}

impl CaBundle {
    /// Parses PEM text; the error says what is wrong.
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let certificates = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("not a PEM certificate: {e}"))?;
        if certificates.is_empty() {
            return Err("no PEM certificate in it".into());
        }
        Ok(CaBundle { certificates })
    }

    /// Its certificates.
    pub fn certificates(&self) -> &[reqwest::Certificate] {
        &self.certificates
    }
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaBundle({} certificates)", self.certificates.len())
    }
}

#[cfg(test)]
mod typed {
    use super::{CaBundle, ProxyUrl};

    #[test]
    fn proxies_are_parsed_once_and_never_shown_with_their_password() {
        let p = ProxyUrl::parse("http://me:s3cret@proxy.example:3128").unwrap();
        assert_eq!(p.url().password(), Some("s3cret"));
        assert_eq!(p.to_string(), "http://me:<redacted>@proxy.example:3128/");
        assert!(!format!("{p:?}").contains("s3cret"));
        assert_eq!(
            ProxyUrl::parse("proxy:3128").unwrap().url().as_str(),
            "http://proxy:3128/"
        );
        assert!(ProxyUrl::parse("socks5h://p:1080").is_ok());
        let bad = ProxyUrl::parse("ftp://me:s3cret@p:21").unwrap_err();
        assert!(bad.contains("\"ftp\"") && !bad.contains("s3cret"), "{bad}");
        let bad = ProxyUrl::parse("::nope").unwrap_err();
        assert!(bad.contains("not a proxy URL"), "{bad}");
    }

    #[test]
    fn a_ca_bundle_keeps_every_certificate() {
        use base64::Engine as _;
        let pem: String = webpki_root_certs::TLS_SERVER_ROOT_CERTS[..3]
            .iter()
            .map(|der| {
                let text = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
                let lines: Vec<&str> = text
                    .as_bytes()
                    .chunks(64)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect();
                format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    lines.join("\n")
                )
            })
            .collect();
        assert_eq!(
            CaBundle::from_pem(pem.as_bytes())
                .unwrap()
                .certificates()
                .len(),
            3
        );
        assert!(CaBundle::from_pem(b"not pem").is_err());
    }
}
