//! The gcr front's token endpoint, as gcr.io's answers it: Basic logins (`_json_key`,
//! `oauth2accesstoken` with a Google access token) and anonymous pulls on `GET /v2/token`,
//! docker's identity tokens on `POST` (the OAuth2 refresh-token grant), Bearer tokens
//! that expire and open only the repositories of their `scope` parameters (several per
//! token, or as other services treat them: see [`MultiScope`]), and outages on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use base64::Engine as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::super::server::Body;
use super::{State, json_answer, repo_of};

/// How the token endpoint treats several `scope` parameters in one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MultiScope {
    /// One token opening every scope asked (gcr.io, Docker Hub, distribution's auth).
    #[default]
    Honour,
    /// 400 to a request with more than one scope.
    Refuse,
    /// A token that opens only the first scope (services that ignore the others); other
    /// repositories answer it with 401 and a challenge.
    FirstOnly,
    /// The same, but other repositories answer it with 403 `DENIED`, as registries do for
    /// a valid token short of a repository's scope.
    FirstOnlyDenied,
}

/// The repositories of `repository:NAME:ACTIONS` scopes.
fn scoped_repos<'a>(scopes: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    scopes
        .into_iter()
        .filter_map(|s| s.strip_prefix("repository:")?.rsplit_once(':'))
        .map(|(repo, _)| repo.to_string())
        .collect()
}

impl State {
    /// A new Bearer token opening `repos`, valid for the current lifetime: (token, seconds).
    fn issue(&mut self, mut repos: Vec<String>) -> (String, u64) {
        if matches!(
            self.multi_scope,
            MultiScope::FirstOnly | MultiScope::FirstOnlyDenied
        ) {
            repos.truncate(1);
        }
        self.issued += 1;
        let token = format!("fake-gcr-token-{}", self.issued);
        let expiry = Instant::now() + self.lifetime;
        self.tokens
            .insert(token.clone(), (expiry, repos.into_iter().collect()));
        (token, self.lifetime.as_secs())
    }

    /// The answer to a token request for `scopes` scopes the service will not take.
    fn refuse_scopes(&self, scopes: usize) -> Option<Response<Body>> {
        (self.multi_scope == MultiScope::Refuse && scopes > 1).then(|| {
            json_answer(
                400,
                json!({"errors": [{"code": "UNSUPPORTED", "message": "one scope per request"}]}),
            )
        })
    }

    /// Whether `token` is valid and opens the repository `path` addresses (any valid
    /// token opens `/v2/` and the catalog).
    pub(super) fn opens(&self, token: &str, path: &str) -> bool {
        let repo = repo_of(path);
        self.tokens.get(token).is_some_and(|(expiry, repos)| {
            *expiry > Instant::now()
                && (repo.is_empty() || repo == "_catalog" || repos.contains(repo))
        })
    }
}

fn basic_login(req: &Request<Incoming>) -> Option<(String, String)> {
    let value = req
        .headers()
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?,
    )
    .ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.into(), password.into()))
}

/// The answer to a token request (`path` is `/v2/token`); `entry` is its log line.
pub(super) async fn answer(
    req: Request<Incoming>,
    state: &Arc<Mutex<State>>,
    entry: (String, String),
    query: &str,
) -> Response<Body> {
    if req.method() == "POST" {
        return refresh_grant(req, state, entry).await;
    }
    state.lock().unwrap().log.push(entry);
    let repos = scoped_repos(
        url::form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.into_owned())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str),
    );
    let login = basic_login(&req);
    let mut state = state.lock().unwrap();
    if state.failing_tokens > 0 {
        state.failing_tokens -= 1;
        return json_answer(
            503,
            json!({"errors": [{"code": "UNAVAILABLE", "message": "token service down"}]}),
        );
    }
    let google_token = |l: &(String, String)| {
        l.0 == "oauth2accesstoken"
            && state
                .google
                .as_ref()
                .is_some_and(|g| g.lock().unwrap().contains(&l.1))
    };
    let allowed = match &login {
        Some(l) => state.logins.contains(l) || google_token(l),
        None => state.anonymous,
    };
    if !allowed {
        return json_answer(
            401,
            json!({"errors": [{"code": "UNAUTHORIZED", "message": "bad login"}]}),
        );
    }
    if let Some(refused) = state.refuse_scopes(repos.len()) {
        return refused;
    }
    let (token, lifetime) = state.issue(repos);
    json_answer(200, json!({"token": token, "expires_in": lifetime}))
}

/// docker's identity tokens: the OAuth2 refresh-token grant.
async fn refresh_grant(
    req: Request<Incoming>,
    state: &Arc<Mutex<State>>,
    entry: (String, String),
) -> Response<Body> {
    let body = http_body_util::BodyExt::collect(req.into_body())
        .await
        .unwrap()
        .to_bytes();
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let scopes: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let repos = scoped_repos(scopes);
    let form: HashMap<String, String> = pairs.iter().cloned().collect();
    let mut state = state.lock().unwrap();
    state.log.push(entry);
    let refresh = form.get("refresh_token").cloned().unwrap_or_default();
    let known = state.logins.contains(&("<token>".to_string(), refresh));
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") || !known {
        return json_answer(401, json!({"error": "invalid_grant"}));
    }
    if let Some(refused) = state.refuse_scopes(repos.len()) {
        return refused;
    }
    let (token, lifetime) = state.issue(repos);
    json_answer(200, json!({"access_token": token, "expires_in": lifetime}))
}
