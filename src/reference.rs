//! Parsed names: digests, tags, repository paths and registry namespaces (parse, don't validate).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid name of some kind; the message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {expected}")]
pub struct ParseError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

fn invalid(kind: &'static str, value: &str, expected: &'static str) -> ParseError {
    ParseError {
        kind,
        value: value.to_string(),
        expected,
    }
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl $name {
            /// The canonical text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A content digest `algorithm:hex`; only `sha256` can be verified while streaming.
/// A `Box<str>`, not a `String`: a listing and its records hold one per tag (issue 14).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(Box<str>);
string_newtype!(Digest);

#[cfg(test)]
impl Digest {
    /// `sha256:` and 64 times `c`: a well-formed digest for tests.
    pub fn repeat(c: char) -> Digest {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    }
}

impl Digest {
    /// The digest of `bytes` under sha256, the algorithm every registry accepts.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Digest(format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes))).into())
    }

    /// The hex part after `sha256:`, or `None` for other algorithms.
    pub fn sha256_hex(&self) -> Option<&str> {
        self.0.strip_prefix("sha256:")
    }

    /// A short form for humans: `sha256:` and the first 12 hex digits.
    pub fn short(&self) -> &str {
        let end = self.0.find(':').map_or(0, |i| i + 1) + 12;
        &self.0[..end.min(self.0.len())]
    }
}

impl FromStr for Digest {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        const EXPECTED: &str = "expected sha256:<64 hex digits> or sha512:<128 hex digits>";
        let (algo, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("digest", s, EXPECTED))?;
        let len = match algo {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(invalid("digest", s, EXPECTED)),
        };
        let lower_hex = hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex.len() != len || !lower_hex {
            return Err(invalid("digest", s, EXPECTED));
        }
        Ok(Digest(s.into()))
    }
}

/// A tag, as the distribution spec allows: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(Box<str>);
string_newtype!(Tag);

impl FromStr for Tag {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !first_ok || !rest_ok || s.len() > 128 {
            return Err(invalid(
                "tag",
                s,
                "expected [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
            ));
        }
        Ok(Tag(s.into()))
    }
}

/// A repository path inside a registry (`team/app`), lower-case components joined by `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Shared (`Arc<str>`): every listed tag of an image names its image, source and target
/// repository, and at 15,000 tags a copy of each per tag was megabytes (issue 14).
pub struct RepoPath(Arc<str>);
string_newtype!(RepoPath);

/// One component: `[a-z0-9]+` groups joined by `.`, `_`, `__` or runs of `-`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut prev_sep: Option<u8> = None;
    let mut sep_len = 0;
    for &ch in b {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            prev_sep = None;
            sep_len = 0;
            continue;
        }
        let ok = match (ch, prev_sep) {
            (b'.' | b'_' | b'-', None) => true,
            (b'_', Some(b'_')) => sep_len < 2,
            (b'-', Some(b'-')) => true,
            _ => false,
        };
        if !ok {
            return false;
        }
        prev_sep = Some(ch);
        sep_len += 1;
    }
    true
}

impl FromStr for RepoPath {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.len() > 255 || !s.split('/').all(valid_component) {
            return Err(invalid(
                "repository path",
                s,
                "expected lower-case components [a-z0-9] joined by '.', '_', '__' or '-', separated by '/'",
            ));
        }
        Ok(RepoPath(s.into()))
    }
}

impl RepoPath {
    /// This path with `child` appended (`team` + `app` = `team/app`).
    pub fn join(&self, child: &RepoPath) -> RepoPath {
        RepoPath(format!("{}/{}", self.0, child.0).into())
    }

    /// The part after `prefix/`, when this path lies under `prefix`.
    pub fn strip_prefix(&self, prefix: Option<&RepoPath>) -> Option<RepoPath> {
        match prefix {
            None => Some(self.clone()),
            Some(p) => self
                .0
                .strip_prefix(&*p.0)?
                .strip_prefix('/')
                .map(|r| RepoPath(r.into())),
        }
    }

    /// How many `/`-separated components the path has.
    pub fn depth(&self) -> usize {
        self.0.split('/').count()
    }
}

/// The host (and port) a registry answers on, e.g. `gcr.io` or `localhost:5001`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// Shared like [`RepoPath`]: every listed tag names its target registry.
pub struct RegistryHost(Arc<str>);
string_newtype!(RegistryHost);

/// Docker Hub's name as users write it and the host its API really answers on.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// `host` and `port` of `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, port)) => (v6, Some(port.strip_prefix(':').unwrap_or("x"))),
            None => (s, None),
        };
    }
    s.rsplit_once(':').map_or((s, None), |(h, p)| (h, Some(p)))
}

impl FromStr for RegistryHost {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (host, port) = split_port(s);
        let bracketed = s.starts_with('[');
        let host_ok = if bracketed {
            host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !host.is_empty()
                && host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
        if !host_ok || !port_ok {
            return Err(invalid("registry host", s, "expected host or host:port"));
        }
        let canonical = match s {
            "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => DOCKER_HUB,
            other => other,
        };
        Ok(RegistryHost(canonical.into()))
    }
}

/// What an OCI image-layout directory is written as: `oci:DIR`.
pub const LAYOUT_PREFIX: &str = "oci:";

impl RegistryHost {
    /// The directory of an `oci:DIR` "registry" (one OCI image layout per image below
    /// it), or `None` for a registry reached over HTTP.
    pub fn layout_dir(&self) -> Option<&std::path::Path> {
        self.0.strip_prefix(LAYOUT_PREFIX).map(std::path::Path::new)
    }

    /// The host the registry API is reached on (Docker Hub is not served on docker.io).
    pub fn api_host(&self) -> &str {
        if &*self.0 == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.0
        }
    }

    /// `localhost`, `127.0.0.0/8` or `[::1]`, with any port: reached over plain HTTP by
    /// default, as docker does.
    pub fn is_loopback(&self) -> bool {
        let (host, _) = split_port(&self.0);
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Docker Hub allows exactly two path levels (`user/repo`).
    pub fn is_docker_hub(&self) -> bool {
        &*self.0 == DOCKER_HUB
    }
}

/// A registry namespace: a host and an optional path prefix (`gcr.io/google-containers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// The registry serving it.
    pub registry: RegistryHost,
    /// The path prefix under which its repositories live; `None` for a whole registry.
    pub path: Option<RepoPath>,
}

/// How a registry is spoken to, when written before its name (`http://HOST`, `https://HOST`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// TLS.
    Https,
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scheme::Http => "http://",
            Scheme::Https => "https://",
        })
    }
}

/// The scheme written before `text`, if any, and the rest.
pub fn split_scheme(text: &str) -> (Option<Scheme>, &str) {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("https://") {
        (Some(Scheme::Https), rest)
    } else if let Some(rest) = text.strip_prefix("http://") {
        (Some(Scheme::Http), rest)
    } else {
        (None, text)
    }
}

impl Namespace {
    /// Parses `[http://|https://]HOST[:PORT][/PATH]`, keeping the scheme apart: it says
    /// how to reach the registry, not which namespace it is.
    pub fn parse_with_scheme(text: &str) -> Result<(Namespace, Option<Scheme>), ParseError> {
        let (scheme, rest) = split_scheme(text);
        if scheme.is_none() && rest.starts_with(LAYOUT_PREFIX) {
            return Ok((rest.parse()?, None));
        }
        if scheme.is_none() && rest.contains("://") {
            return Err(invalid(
                "registry namespace",
                rest,
                "the only schemes are http:// (plain HTTP) and https:// (TLS)",
            ));
        }
        Ok((rest.parse()?, scheme))
    }
}

/// `oci:DIR`: a directory holding one OCI image layout per image, at `DIR/<image>`. The
/// directory is the namespace (it names the records), so it has no path of its own.
fn layout_namespace(dir: &str) -> Result<Namespace, ParseError> {
    const EXPECTED: &str = "expected oci:DIR, a directory path (oci:/srv/mirror or oci:mirror)";
    if dir.is_empty() || dir.starts_with("//") || dir.contains('\n') {
        return Err(invalid("image layout directory", dir, EXPECTED));
    }
    // `/` alone stays `/`; any other trailing `/` is dropped so `oci:d/` and `oci:d` agree.
    let dir = match dir.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    Ok(Namespace {
        registry: RegistryHost(format!("{LAYOUT_PREFIX}{dir}").into()),
        path: None,
    })
}

impl FromStr for Namespace {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if let Some(dir) = s.trim().strip_prefix(LAYOUT_PREFIX) {
            return layout_namespace(dir);
        }
        let s = s.trim().trim_end_matches('/');
        let s = split_scheme(s).1;
        let (first, rest) = s.split_once('/').map_or((s, None), |(a, b)| (a, Some(b)));
        // As docker does: the first component is a host only if it looks like one.
        let looks_like_host = first.contains('.') || first.contains(':') || first == "localhost";
        let (registry, path) = if looks_like_host {
            (first, rest)
        } else {
            (DOCKER_HUB, Some(s))
        };
        if s.is_empty() || s.contains('@') || (path.is_some_and(|p| p.contains(':'))) {
            return Err(invalid(
                "registry namespace",
                s,
                "expected HOST[:PORT][/PATH], e.g. gcr.io/google-containers",
            ));
        }
        Ok(Namespace {
            registry: registry.parse()?,
            path: path.map(str::parse).transpose()?,
        })
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}/{}", self.registry, p),
            None => write!(f, "{}", self.registry),
        }
    }
}

impl Namespace {
    /// The full repository path of `image` inside this namespace.
    pub fn repo(&self, image: &RepoPath) -> RepoPath {
        match &self.path {
            Some(p) => p.join(image),
            None => image.clone(),
        }
    }
}

/// A repository on a registry (`localhost:5002/mirror/app`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Repository {
    /// Where it lives.
    pub registry: RegistryHost,
    /// Its path there.
    pub path: RepoPath,
}

impl Serialize for Repository {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl fmt::Display for Repository {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_strictly() {
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(good.parse::<Digest>().unwrap().as_str(), good);
        for bad in [
            "sha256:abc",
            "md5:abc",
            &format!("sha256:{}", "A".repeat(64)),
            "nocolon",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
        assert_eq!(Digest::sha256_of(b"").short(), "sha256:e3b0c44298fc");
    }

    #[test]
    fn tags_follow_the_distribution_grammar() {
        for good in ["latest", "v1.2.3", "_x", "3.9-0", &"a".repeat(128)] {
            assert!(good.parse::<Tag>().is_ok(), "{good}");
        }
        for bad in ["", "-x", ".x", "a:b", "a/b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad}");
        }
    }

    #[test]
    fn repo_paths_follow_the_distribution_grammar() {
        for good in ["a", "team/app", "a.b/c_d/e__f/g--h", "k8s-1"] {
            assert!(good.parse::<RepoPath>().is_ok(), "{good}");
        }
        for bad in ["", "A", "a//b", "a/", "-a", "a_", "a___b", "a._b"] {
            assert!(bad.parse::<RepoPath>().is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaces_split_host_and_path() {
        let ns: Namespace = "gcr.io/google-containers".parse().unwrap();
        assert_eq!(ns.registry.as_str(), "gcr.io");
        assert_eq!(ns.path.unwrap().as_str(), "google-containers");
        let ns: Namespace = "localhost:5001/team/sub".parse().unwrap();
        assert_eq!(
            (ns.registry.as_str(), ns.path.unwrap().as_str()),
            ("localhost:5001", "team/sub")
        );
        let ns: Namespace = "registry.k8s.io".parse().unwrap();
        assert!(ns.path.is_none());
        let ns: Namespace = "myuser".parse().unwrap();
        assert_eq!(
            (ns.registry.api_host(), ns.to_string().as_str()),
            ("registry-1.docker.io", "docker.io/myuser")
        );
        let (ns, scheme) = Namespace::parse_with_scheme("http://localhost:5000/team").unwrap();
        assert_eq!(
            (ns.to_string().as_str(), scheme),
            ("localhost:5000/team", Some(Scheme::Http))
        );
        let (ns, scheme) = Namespace::parse_with_scheme("https://[::1]:5000/t").unwrap();
        assert_eq!(
            (ns.registry.as_str(), scheme),
            ("[::1]:5000", Some(Scheme::Https))
        );
        assert!(Namespace::parse_with_scheme("docker://gcr.io/x").is_err());
        for bad in [
            "",
            "gcr.io/Upper",
            "[::g]:5000/x",
            "host:99999/x",
            "gcr.io/a@sha256:x",
            "gcr.io/a:tag",
        ] {
            assert!(bad.parse::<Namespace>().is_err(), "{bad}");
        }
    }

    #[test]
    fn layout_directories_are_namespaces_of_their_own() {
        let (ns, scheme) = Namespace::parse_with_scheme("oci:/srv/mirror/").unwrap();
        assert_eq!(scheme, None);
        assert_eq!(ns.to_string(), "oci:/srv/mirror");
        assert_eq!(
            ns.registry.layout_dir(),
            Some(std::path::Path::new("/srv/mirror"))
        );
        assert!(ns.path.is_none());
        let relative: Namespace = "oci:out".parse().unwrap();
        let repo = Repository {
            registry: relative.registry.clone(),
            path: relative.repo(&"team/pause".parse().unwrap()),
        };
        // What skopeo reads as `oci:out/team/pause:TAG`.
        assert_eq!(repo.to_string(), "oci:out/team/pause");
        assert!(
            "gcr.io/x"
                .parse::<Namespace>()
                .unwrap()
                .registry
                .layout_dir()
                .is_none()
        );
        for bad in ["oci:", "oci://host/x", "oci:a\nb"] {
            let error = bad.parse::<Namespace>().unwrap_err().to_string();
            assert!(error.contains("oci:DIR"), "{bad}: {error}");
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(
                host.parse::<RegistryHost>().unwrap().is_loopback(),
                "{host}"
            );
        }
        for host in [
            "gcr.io",
            "10.0.0.1:5000",
            "localhost.example.com",
            "[::2]:5000",
        ] {
            assert!(
                !host.parse::<RegistryHost>().unwrap().is_loopback(),
                "{host}"
            );
        }
    }
}
