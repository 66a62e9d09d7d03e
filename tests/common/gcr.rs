//! A fake gcr.io in front of a real distribution registry: gcr's token endpoint and
//! Bearer tokens (gcr/tokens.rs), the `WWW-Authenticate: Bearer` challenge on every API
//! call, and gcr's `tags/list` with `child` and `manifest` (gcr/listing.rs). Everything
//! else is forwarded, except the manifests it keeps itself (gcr/held.rs: signed schema-1
//! ones as gcr.io still serves for pre-2017 images, which a current distribution registry
//! will not store), blob downloads redirected to storage when told, the referrers API
//! when on (gcr/referrers.rs), and gcr's manifest deletes when allowed (gcr/delete.rs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::faults::forward;
use super::server::{self, Body, full};
use super::storage::FakeStorage;

// Paths of their own, so the benchmark's copy of this front (scripts/bench/gcr_front.rs)
// finds its submodules too.
#[path = "gcr/delete.rs"]
mod delete;
#[path = "gcr/held.rs"]
mod held;
#[allow(unused_imports)] // not every test binary uses both
pub use held::{HeldManifest, SCHEMA1_SIGNED};
use held::{held_answer, held_for};
#[path = "gcr/listing.rs"]
mod listing;
#[path = "gcr/referrers.rs"]
mod referrers;
#[path = "gcr/tokens.rs"]
mod tokens;
pub use tokens::MultiScope;

#[derive(Default)]
struct State {
    failing_tokens: usize,
    /// Token → (expiry, the repositories its scopes open).
    tokens: HashMap<String, (Instant, HashSet<String>)>,
    multi_scope: MultiScope,
    issued: usize,
    lifetime: Duration,
    anonymous: bool,
    logins: HashSet<(String, String)>,
    log: Vec<(String, String)>,
    uploaded: HashMap<(String, String), i64>,
    google: Option<Arc<Mutex<HashSet<String>>>>,
    /// (repo, tag) → a manifest this front keeps itself (schema 1, a vendor type),
    /// served in place of the upstream's.
    held: BTreeMap<(String, String), HeldManifest>,
    /// Leave `mediaType` out of the `manifest` map (older gcr answers, other registries).
    no_listing_media_types: bool,
    /// Forward `tags/list` as a plain registry does: no `child`, no `manifest` map.
    plain_listing: bool,
    /// Where blob downloads are redirected, and with which status (302 like gcr.io).
    storage: Option<(u16, FakeStorage)>,
    /// Repositories the credentials may not read (401 or 403), and ones deleted (404),
    /// though their parent's `child` list still names them.
    refused: HashMap<String, u16>,
    /// Added before every manifest answer, so a run outlives short-lived tokens.
    manifest_delay: Duration,
    /// The OCI 1.1 referrers API, when on (see `gcr/referrers.rs`).
    referrers: referrers::Referrers,
    /// Manifest deletes, when allowed (see `gcr/delete.rs`).
    deletes: delete::Deletes,
}

pub struct FakeGcr {
    pub addr: String,
    state: Arc<Mutex<State>>,
    upstream: String,
}

impl FakeGcr {
    /// A front for the registry at `upstream`; `anonymous`: pulls need no login.
    pub fn start(upstream: &str, anonymous: bool) -> Self {
        let state = Arc::new(Mutex::new(State {
            lifetime: Duration::from_secs(300),
            anonymous,
            ..State::default()
        }));
        let own = Arc::new(Mutex::new(String::new()));
        let upstream_addr = upstream.to_string();
        let (shared, upstream, own_addr) = (state.clone(), upstream.to_string(), own.clone());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let addr = server::serve(move |req| {
            let me = own_addr.lock().unwrap().clone();
            handle(req, shared.clone(), client.clone(), upstream.clone(), me)
        });
        *own.lock().unwrap() = addr.clone();
        FakeGcr {
            addr,
            state,
            upstream: upstream_addr,
        }
    }

    /// Accepts this identity (refresh) token at the token endpoint.
    pub fn accept_identity_token(&self, token: &str) {
        self.state
            .lock()
            .unwrap()
            .logins
            .insert(("<token>".into(), token.into()));
    }

    /// Accepts this Basic login at the token endpoint.
    pub fn accept_login(&self, user: &str, password: &str) {
        self.state
            .lock()
            .unwrap()
            .logins
            .insert((user.into(), password.into()));
    }

    /// Accepts `oauth2accesstoken` logins with any access token in `issued` (Google's).
    pub fn trust_google(&self, issued: Arc<Mutex<HashSet<String>>>) {
        self.state.lock().unwrap().google = Some(issued);
    }

    /// The next `n` token requests fail with 503.
    pub fn fail_token_requests(&self, n: usize) {
        self.state.lock().unwrap().failing_tokens = n;
    }

    /// Tokens issued from now on expire after `lifetime`.
    pub fn token_lifetime(&self, lifetime: Duration) {
        self.state.lock().unwrap().lifetime = lifetime;
    }

    /// gcr's `timeUploadedMs` for a tag.
    pub fn uploaded(&self, repo: &str, tag: &str, ms: i64) {
        self.state
            .lock()
            .unwrap()
            .uploaded
            .insert((repo.into(), tag.into()), ms);
    }

    /// (method, path) of every request; requests answered with the auth challenge are
    /// logged as `challenged PATH`.
    pub fn log(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().log.clone()
    }

    /// Blob downloads are answered with `status` (302 as gcr.io, 307 as Docker Hub) and
    /// a signed URL on `storage`, as gcr.io sends them to Cloud Storage.
    pub fn redirect_blobs(&self, storage: &FakeStorage, status: u16) {
        self.state.lock().unwrap().storage = Some((status, storage.clone()));
    }

    /// How the token endpoint answers several scopes in one request.
    pub fn multi_scope(&self, mode: MultiScope) {
        self.state.lock().unwrap().multi_scope = mode;
    }

    /// Every manifest answer from now on waits `delay` first.
    pub fn delay_manifests(&self, delay: Duration) {
        self.state.lock().unwrap().manifest_delay = delay;
    }

    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().issued
    }

    /// Serves a signed schema-1 manifest as `repo:tag` (listed with the repository's
    /// upstream tags; the repository must exist upstream). Returns it.
    pub fn serve_schema1(&self, repo: &str, tag: &str) -> HeldManifest {
        let layer = super::images::digest_of(&super::images::random_bytes(16));
        self.hold(repo, tag, HeldManifest::schema1(repo, tag, &layer))
    }

    /// Serves `repo:tag` as a manifest of a type no mirror knows (a vendor's artifact).
    pub fn serve_unknown_type(&self, repo: &str, tag: &str, media_type: &str) -> HeldManifest {
        let body = json!({"schemaVersion": 2, "mediaType": media_type, "payload": tag}).to_string();
        let doc = HeldManifest {
            digest: super::images::digest_of(body.as_bytes()),
            signed: body.into_bytes(),
            media_type: media_type.into(),
        };
        self.hold(repo, tag, doc)
    }

    /// Serves `doc` as `repo:tag` in place of the upstream's; returns it.
    fn hold(&self, repo: &str, tag: &str, doc: HeldManifest) -> HeldManifest {
        self.state
            .lock()
            .unwrap()
            .held
            .insert((repo.into(), tag.into()), doc.clone());
        doc
    }

    /// Stops serving the held `repo:tag` (the upstream's tag, if any, shows through).
    pub fn drop_held(&self, repo: &str, tag: &str) {
        self.state
            .lock()
            .unwrap()
            .held
            .remove(&(repo.to_string(), tag.to_string()));
    }

    /// Omits `mediaType` from the listing's `manifest` map.
    pub fn hide_listing_media_types(&self) {
        self.state.lock().unwrap().no_listing_media_types = true;
    }

    /// Answers `tags/list` like a plain registry (the namespace is then found by catalog).
    pub fn plain_listing(&self) {
        self.state.lock().unwrap().plain_listing = true;
    }

    /// Every API request on `repo` answers `status` as gcr.io does for a repository the
    /// caller may not read (401, 403) or one deleted since its parent listed it (404);
    /// tokens are still issued for it, as gcr.io does.
    pub fn refuse(&self, repo: &str, status: u16) {
        self.state
            .lock()
            .unwrap()
            .refused
            .insert(repo.into(), status);
    }
}

/// The repository a `/v2/…` API path addresses.
fn repo_of(path: &str) -> &str {
    let name = path.trim_start_matches("/v2/");
    let name = name.split("/manifests/").next().unwrap_or("");
    let name = name.split("/blobs/").next().unwrap_or("");
    let name = name.split("/referrers/").next().unwrap_or("");
    name.trim_end_matches("/tags/list")
}

/// gcr.io's answers for a repository the token does not open, or one that is gone.
fn refusal(status: u16, repo: &str, me: &str) -> Response<Body> {
    let (code, message) = match status {
        401 => ("UNAUTHORIZED", "You don't have the needed permissions to perform this operation, and you may have invalid credentials. To authenticate your request, follow the steps in: https://cloud.google.com/container-registry/docs/advanced-authentication".to_string()),
        403 => ("DENIED", format!("Permission \"artifactregistry.repositories.downloadArtifacts\" denied on resource \"projects/team/locations/us/repositories/gcr.io\" (or it may not exist) for {repo}")),
        _ => ("NAME_UNKNOWN", format!("Repository \"{repo}\" not found")),
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if status == 401 {
        response = response.header(
            "www-authenticate",
            format!(r#"Bearer realm="http://{me}/v2/token",service="fake-gcr",scope="repository:{repo}:pull""#),
        );
    }
    response
        .body(full(
            json!({"errors": [{"code": code, "message": message}]}).to_string(),
        ))
        .unwrap()
}

fn json_answer(status: u16, body: Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    upstream: String,
    me: String,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let entry = (req.method().to_string(), format!("{path}?{query}"));
    if path == "/v2/token" {
        return tokens::answer(req, &state, entry, &query).await;
    }
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let valid = bearer
        .as_ref()
        .is_some_and(|t| state.lock().unwrap().opens(t, &path));
    let denied = !valid && {
        let state = state.lock().unwrap();
        state.multi_scope == MultiScope::FirstOnlyDenied
            && bearer.is_some_and(|t| {
                state
                    .tokens
                    .get(&t)
                    .is_some_and(|(e, _)| *e > Instant::now())
            })
    };
    if denied {
        state
            .lock()
            .unwrap()
            .log
            .push((entry.0, format!("denied {}", entry.1)));
        return refusal(403, repo_of(&path), &me);
    }
    state.lock().unwrap().log.push((
        entry.0,
        if valid {
            entry.1
        } else {
            format!("challenged {}", entry.1)
        },
    ));
    let delay = state.lock().unwrap().manifest_delay;
    if valid && path.contains("/manifests/") && !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if !valid {
        let name = repo_of(&path);
        let challenge = format!(
            r#"Bearer realm="http://{me}/v2/token",service="fake-gcr",scope="repository:{name}:pull""#
        );
        return Response::builder()
            .status(401)
            .header("www-authenticate", challenge)
            .header("content-type", "application/json")
            .body(full(
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            ))
            .unwrap();
    }
    let refused = state.lock().unwrap().refused.get(repo_of(&path)).copied();
    if let Some(status) = refused {
        return refusal(status, repo_of(&path), &me);
    }
    if let Some(answer) = delete::answer(&req, &path, &state, &client, &upstream).await {
        return answer;
    }
    if let Some(doc) = held_for(&path, &state) {
        return held_answer(&doc, req.method() == "HEAD");
    }
    if req.method() == "GET" && path.ends_with("/tags/list") {
        let name = path
            .trim_start_matches("/v2/")
            .trim_end_matches("/tags/list")
            .to_string();
        if state.lock().unwrap().plain_listing {
            return listing::plain_tags(&client, &upstream, &name, &state).await;
        }
        return listing::gcr_tags(&client, &upstream, &name, &state).await;
    }
    if let Some(redirect) = redirect_blob(&req, &path, &state) {
        return redirect;
    }
    if req.method() == "GET"
        && let Some(answer) = referrers::answer(&path, &query, &state)
    {
        return answer;
    }
    let req = match referrers::put_manifest(req, &state, &client, &upstream, &me).await {
        Ok(answer) => return answer,
        Err(req) => req,
    };
    forward(req, &client, &upstream, &me, None).await
}

/// gcr.io's answer to an authorized blob GET: a redirect to a signed storage URL.
fn redirect_blob(
    req: &Request<Incoming>,
    path: &str,
    state: &Arc<Mutex<State>>,
) -> Option<Response<Body>> {
    let (status, storage) = state.lock().unwrap().storage.clone()?;
    let (repo, digest) = path.trim_start_matches("/v2/").split_once("/blobs/")?;
    if req.method() != "GET" || !digest.starts_with("sha256:") {
        return None;
    }
    Some(
        Response::builder()
            .status(status)
            .header("location", storage.sign(repo, digest))
            .header("content-type", "text/html")
            .body(full(""))
            .unwrap(),
    )
}
