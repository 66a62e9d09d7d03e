//! Registry authentication: the `WWW-Authenticate` challenge, Basic, and Bearer tokens cached
//! per scope, fetched for several prepared scopes at once where the token service allows.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::clients::Clients;
use super::error::{Error, Result};
pub use crate::settings::Credentials;

impl Credentials {
    fn basic_header(&self) -> HeaderValue {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.username, self.password);
        let mut value = HeaderValue::try_from(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        ))
        .expect("base64 is a valid header value");
        value.set_sensitive(true);
        value
    }
}

/// Produces fresh credentials on demand (e.g. a short-lived OAuth access token).
pub trait CredentialSource: Send + Sync {
    /// The credentials to use now; the error says why none could be obtained.
    fn credentials(
        &self,
    ) -> futures_util::future::BoxFuture<'_, std::result::Result<Credentials, String>>;
}

/// How a registry is logged in to.
#[derive(Clone)]
pub enum Login {
    /// Fixed user name and password.
    Static(Credentials),
    /// Credentials fetched anew for every token exchange (they expire).
    Dynamic(std::sync::Arc<dyn CredentialSource>),
    /// A docker `identitytoken`: an OAuth2 refresh token exchanged at the token realm.
    IdentityToken(String),
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Login::Static(c) => c.fmt(f),
            Login::Dynamic(_) => f.write_str("Login::Dynamic"),
            Login::IdentityToken(_) => f.write_str("Login::IdentityToken(<redacted>)"),
        }
    }
}

/// What the registry asked for in its `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Bearer realm="…",service="…",scope="a,b"` (quoted values may hold commas).
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut fields = HashMap::new();
    let mut rest = params.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, remainder) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        fields.insert(key, value.to_string());
        rest = remainder.trim_start_matches(',').trim();
    }
    let realm = fields.remove("realm")?;
    Some(Challenge::Bearer {
        realm,
        service: fields.remove("service"),
    })
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

struct Token {
    header: HeaderValue,
    expires: Instant,
    /// Fetched for several scopes at once (cached under each of them).
    batched: bool,
}

/// Scopes asked of the token service in one request: 25 repository scopes make a query
/// of about 2 KB, well under any server's URL limit, and 300 repositories cost 12 tokens.
pub const SCOPES_PER_TOKEN: usize = 25;

/// The tokens, and the scopes announced by `prepare` whose tokens are not fetched yet.
#[derive(Default)]
struct Cache {
    tokens: HashMap<String, Token>,
    pending: VecDeque<String>,
    /// Every `Authorization` value of a token fetched for several scopes, to recognise
    /// one refused after it left the cache.
    batched: HashSet<HeaderValue>,
}

impl Cache {
    fn valid(&self, key: &str) -> Option<&Token> {
        self.tokens.get(key).filter(|t| t.expires > Instant::now())
    }
}

/// Tokens without `expires_in` live 60 s by the token spec; renew a little early.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const RENEW_MARGIN: Duration = Duration::from_secs(10);

/// Authenticates requests to one registry; learns the scheme from the first challenge.
pub struct Authenticator {
    registry: String,
    role: &'static str,
    login: Option<Login>,
    challenge: std::sync::Mutex<Option<Challenge>>,
    /// Held across a token fetch so concurrent requests for one scope fetch it once.
    cache: tokio::sync::Mutex<Cache>,
    /// Whether the token service grants several scopes in one token; cleared for good
    /// when it refuses such a request or its token does not open every scope.
    multi_scope: AtomicBool,
}

impl Authenticator {
    /// `role` (`source`/`target`) names the options to fix in error messages.
    pub fn new(registry: String, role: &'static str, login: Option<Login>) -> Self {
        Authenticator {
            registry,
            role,
            login,
            challenge: std::sync::Mutex::new(None),
            cache: tokio::sync::Mutex::new(Cache::default()),
            multi_scope: AtomicBool::new(true),
        }
    }

    /// Records the scheme of a 401 answer; an unknown one is an error.
    pub fn learn(&self, www_authenticate: Option<&str>) -> Result<()> {
        let challenge = www_authenticate
            .and_then(parse_challenge)
            .ok_or_else(|| Error::Auth {
                registry: self.registry.clone(),
                detail: format!(
                    "HTTP 401 without a usable WWW-Authenticate challenge ({www_authenticate:?})"
                ),
            })?;
        *self.challenge.lock().expect("challenge lock") = Some(challenge);
        Ok(())
    }

    /// The registry host, as the user wrote it.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `source` or `target`.
    pub fn role(&self) -> &'static str {
        self.role
    }

    /// Whether any credentials are configured (else requests go anonymous).
    pub fn has_login(&self) -> bool {
        self.login.is_some()
    }

    /// Drops a token the registry refused, so the next call fetches a fresh one. A token
    /// fetched for several scopes that is refused means the token service does not really
    /// grant several at once: from then on each scope gets its own token.
    pub async fn forget(&self, scopes: &[String]) {
        let mut cache = self.cache.lock().await;
        let refused = cache.tokens.remove(&scopes.join(" "));
        if refused.is_some_and(|t| t.batched) {
            self.single_scopes(&mut cache, "a token fetched for several scopes was refused");
        }
    }

    /// Whether `authorization` carries a token fetched for several scopes at once.
    pub async fn batched(&self, authorization: &HeaderValue) -> bool {
        self.cache.lock().await.batched.contains(authorization)
    }

    /// A token fetched for several scopes was refused for one of them: from then on
    /// each scope gets its own token.
    pub async fn refused_batch(&self, scopes: &[String]) {
        let mut cache = self.cache.lock().await;
        cache.tokens.remove(&scopes.join(" "));
        self.single_scopes(&mut cache, "a token fetched for several scopes was refused");
    }

    /// Announces the scopes the next requests will need: the next token fetched also
    /// covers up to [`SCOPES_PER_TOKEN`] of them. No request is sent here.
    pub async fn prepare(&self, scopes: impl IntoIterator<Item = String>) {
        if !self.multi_scope.load(Ordering::Relaxed) {
            return;
        }
        let mut cache = self.cache.lock().await;
        let fresh: Vec<String> = scopes
            .into_iter()
            .filter(|s| cache.valid(s).is_none() && !cache.pending.contains(s))
            .collect();
        cache.pending.extend(fresh);
    }

    /// Falls back to one scope per token for good, dropping the tokens fetched for several.
    fn single_scopes(&self, cache: &mut Cache, why: &str) {
        if self.multi_scope.swap(false, Ordering::Relaxed) {
            tracing::debug!("{}: {why}; asking one scope per token", self.registry);
        }
        cache.pending.clear();
        cache.tokens.retain(|_, t| !t.batched);
    }

    /// The scopes of one token fetch: `key`'s, with pending ones when it is a single scope.
    fn batch(&self, cache: &mut Cache, scopes: &[String]) -> Vec<String> {
        let mut batch = scopes.to_vec();
        if scopes.len() != 1 || !self.multi_scope.load(Ordering::Relaxed) {
            return batch;
        }
        while batch.len() < SCOPES_PER_TOKEN
            && let Some(next) = cache.pending.pop_front()
        {
            if next != scopes[0] && cache.valid(&next).is_none() {
                batch.push(next);
            }
        }
        batch
    }

    /// The `Authorization` value for `scopes`, fetching a token if the scheme needs one.
    pub async fn authorize(
        &self,
        http: &Clients,
        scopes: &[String],
    ) -> Result<Option<HeaderValue>> {
        let challenge = self.challenge.lock().expect("challenge lock").clone();
        match challenge {
            None => Ok(None),
            Some(Challenge::Basic) => match self.credentials().await? {
                Some(c) => Ok(Some(c.basic_header())),
                None => Err(self.rejected("the registry requires credentials and none were given")),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let key = scopes.join(" ");
                let mut cache = self.cache.lock().await;
                if let Some(t) = cache.valid(&key) {
                    return Ok(Some(t.header.clone()));
                }
                let batch = self.batch(&mut cache, scopes);
                let fetched = self
                    .fetch_token(http, &realm, service.as_deref(), &batch)
                    .await;
                let token = match fetched {
                    // A service that will not issue one token for several scopes (400,
                    // 401, 403) may still issue one per scope.
                    Err(e) if batch.len() > 1 && is_refusal(&e) => {
                        self.single_scopes(
                            &mut cache,
                            &format!("the token service refused several scopes ({e})"),
                        );
                        self.fetch_token(http, &realm, service.as_deref(), scopes)
                            .await?
                    }
                    other => other?,
                };
                let header = token.header.clone();
                if token.batched {
                    cache.batched.insert(header.clone());
                }
                if batch.len() > 1 {
                    for scope in &batch[1..] {
                        let copy = Token {
                            header: token.header.clone(),
                            ..token
                        };
                        cache.tokens.insert(scope.clone(), copy);
                    }
                }
                cache.tokens.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    async fn credentials(&self) -> Result<Option<Credentials>> {
        match &self.login {
            None => Ok(None),
            Some(Login::Static(c)) => Ok(Some(c.clone())),
            Some(Login::IdentityToken(_)) => Err(self
                .rejected("an identity token works only with registries that issue Bearer tokens")),
            Some(Login::Dynamic(source)) => {
                source
                    .credentials()
                    .await
                    .map(Some)
                    .map_err(|why| Error::Auth {
                        registry: self.registry.clone(),
                        detail: format!("could not obtain credentials: {why}"),
                    })
            }
        }
    }

    /// The error for credentials the registry refused, naming the options to fix.
    pub fn rejected(&self, why: &str) -> Error {
        let role = self.role;
        Error::Auth {
            registry: self.registry.clone(),
            detail: format!(
                "{why}; check --{role}-username/--{role}-password (GCRSYNC_{}_USERNAME/PASSWORD), --gcp-credentials or the docker config",
                role.to_ascii_uppercase()
            ),
        }
    }

    async fn fetch_token(
        &self,
        clients: &Clients,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token> {
        let mut query: Vec<(&str, &str)> = scopes.iter().map(|s| ("scope", s.as_str())).collect();
        if let Some(service) = service {
            query.push(("service", service));
        }
        let http = clients.requests(realm)?;
        let request = match &self.login {
            // The OAuth2 refresh-token grant docker uses for identity tokens.
            Some(Login::IdentityToken(token)) => {
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("client_id", "gcrsync")
                    .append_pair("refresh_token", token);
                for (key, value) in &query {
                    form.append_pair(key, value);
                }
                http.post(realm)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(form.finish())
            }
            _ => match self.credentials().await? {
                Some(c) => http
                    .get(realm)
                    .query(&query)
                    .header(reqwest::header::AUTHORIZATION, c.basic_header()),
                None => http.get(realm).query(&query),
            },
        };
        let transport = |source| Error::transport(&reqwest::Method::GET, realm, source);
        let response = request.send().await.map_err(transport)?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(self.rejected(&format!("the token service {realm} answered HTTP {status}")));
        }
        if !response.status().is_success() {
            let retry_after = super::http::retry_after(response.headers());
            return Err(Error::Status {
                method: "GET".into(),
                url: realm.to_string(),
                status,
                detail: String::new(),
                retry_after,
            });
        }
        let bytes = response.bytes().await.map_err(transport)?;
        let body: TokenResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                url: realm.to_string(),
                detail: format!("token response is not JSON: {e}"),
            })?;
        let value = body
            .token
            .or(body.access_token)
            .ok_or_else(|| Error::InvalidResponse {
                url: realm.to_string(),
                detail: "token response has neither token nor access_token".into(),
            })?;
        let lifetime = body
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let mut header = HeaderValue::try_from(format!("Bearer {value}")).map_err(|_| {
            Error::InvalidResponse {
                url: realm.to_string(),
                detail: "token is not a valid header value".into(),
            }
        })?;
        header.set_sensitive(true);
        Ok(Token {
            header,
            batched: scopes.len() > 1,
            expires: Instant::now()
                + lifetime
                    .saturating_sub(RENEW_MARGIN)
                    .max(Duration::from_secs(1)),
        })
    }
}

/// A token request refused as such (not a service failing): bad credentials, or a
/// request for several scopes the service will not take.
fn is_refusal(error: &Error) -> bool {
    error.is_credentials_refused() || matches!(error.status(), Some(400 | 401 | 403))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_with_quoted_commas() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a:pull,push""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="x""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[tokio::test]
    async fn prepared_scopes_are_asked_together_until_the_service_refuses() {
        let auth = Authenticator::new("r".into(), "source", None);
        let scope = |i: usize| format!("repository:r{i}:pull");
        auth.prepare((0..30).map(scope)).await;
        let mut cache = auth.cache.lock().await;
        let first = auth.batch(&mut cache, &[scope(3)]);
        assert_eq!(first.len(), SCOPES_PER_TOKEN);
        assert_eq!(first[0], scope(3), "the scope asked for comes first");
        assert!(!first[1..].contains(&scope(3)), "and only once");
        let second = auth.batch(&mut cache, &["repository:x:pull".into()]);
        assert_eq!(second[1..], (25..30).map(scope).collect::<Vec<_>>());
        let mount = ["repository:a:pull,push".to_string(), scope(40)];
        assert_eq!(
            auth.batch(&mut cache, &mount),
            mount,
            "several scopes: as asked"
        );
        auth.single_scopes(&mut cache, "refused");
        drop(cache);
        auth.prepare((50..60).map(scope)).await;
        let mut cache = auth.cache.lock().await;
        assert_eq!(auth.batch(&mut cache, &[scope(50)]), [scope(50)]);
    }

    #[test]
    fn debug_hides_the_password() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
