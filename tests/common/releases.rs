//! A fake github.com release host, laid out as GitHub serves a repository after
//! `.github/workflows/release.yml` ran for a few versions: three hosts (the web front of
//! `github.server_url`, the REST API of `github.api_url`, and an objects host the downloads
//! redirect to, with signed URLs), real `gcrsync-<target>.tar.gz` archives for every target
//! of release.yml's matrix plus a `SHA256SUMS` made by release.yml's own command, moving
//! tags (`v1`, `v1.2`) without releases, a backport published after a newer major, a
//! prerelease, and a draft only a token sees. The release list is paginated with `Link`
//! headers that, as on GitHub, point at `/repositories/<id>/releases`.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::release_assets::publish;
use super::server::{self, Body, full};

pub const REPO: &str = "gcrsync/gcrsync";
const REPO_ID: u64 = 700_123;
/// A workflow token: it may list drafts (GitHub shows them to tokens with push access).
pub const TOKEN: &str = "ghs_releaseTOKENreleaseTOKENrelease0003";

/// How a release was published.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A full release; `latest` as release.yml marks it (only the highest version).
    Stable {
        latest: bool,
    },
    Prerelease,
    Draft,
}

/// One request, as a host saw it.
#[derive(Debug, Clone)]
pub struct Hit {
    /// "web", "api" or "objects".
    pub host: &'static str,
    /// Path and query.
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Release {
    pub id: u64,
    pub tag: String,
    pub kind: Kind,
    /// Asset name → file on disk.
    pub assets: BTreeMap<String, PathBuf>,
    /// Asset name → sha256 hex (as SHA256SUMS lists it).
    pub sums: BTreeMap<String, String>,
}

struct State {
    releases: Vec<Release>,
    web: String,
    api: String,
    objects: String,
    /// Signed object URLs handed out: token → asset file.
    signed: BTreeMap<String, PathBuf>,
    corrupt: HashSet<(String, String)>,
    page_cap: usize,
    compact: bool,
    anonymous_limited: bool,
    /// The next this many object downloads answer 503 (storage has bad moments).
    unavailable: usize,
    hits: Vec<Hit>,
}

pub struct FakeReleases {
    pub server_url: String,
    pub api_url: String,
    state: Arc<Mutex<State>>,
}

impl FakeReleases {
    /// The releases in the order they were published, and the git tags that have none.
    pub fn start(releases: &[(&str, Kind)]) -> Self {
        let releases = releases
            .iter()
            .enumerate()
            .map(|(i, (tag, kind))| {
                let (assets, sums) = publish(i);
                Release {
                    id: 180_000_000 + i as u64,
                    tag: tag.to_string(),
                    kind: *kind,
                    assets,
                    sums,
                }
            })
            .collect();
        let state = Arc::new(Mutex::new(State {
            releases,
            web: String::new(),
            api: String::new(),
            objects: String::new(),
            signed: BTreeMap::new(),
            corrupt: HashSet::new(),
            page_cap: 100,
            compact: false,
            anonymous_limited: false,
            unavailable: 0,
            hits: Vec::new(),
        }));
        let (s, a, o) = (state.clone(), state.clone(), state.clone());
        let web = format!("http://{}", server::serve(move |r| web(r, s.clone())));
        let api = format!("http://{}", server::serve(move |r| api(r, a.clone())));
        let objects = format!("http://{}", server::serve(move |r| objects(r, o.clone())));
        {
            let mut st = state.lock().unwrap();
            st.web = web.clone();
            st.api = api.clone();
            st.objects = objects;
        }
        FakeReleases {
            server_url: web,
            api_url: api,
            state,
        }
    }

    /// gcrsync as release.yml leaves it after these pushes, in order: v1.0.0, v1.2.0,
    /// v2.0.0, then the backports v1.2.1 and v1.0.1 (not marked latest: v2.0.0 is higher),
    /// v2.0.1 marked prerelease by hand while it is tried, the prerelease v2.1.0-rc.1, and
    /// a draft of v2.1.0. The moving tags v1, v1.0, v1.2, v2, v2.0 are git tags only: no
    /// release, no downloads. Pages hold at most 2 releases (GitHub: 100) so that every
    /// lookup pages.
    pub fn github_like() -> Self {
        let fake = Self::start(&[
            ("v1.0.0", Kind::Stable { latest: true }),
            ("v1.2.0", Kind::Stable { latest: true }),
            ("v2.0.0", Kind::Stable { latest: true }),
            ("v1.2.1", Kind::Stable { latest: false }),
            ("v1.0.1", Kind::Stable { latest: false }),
            ("v2.0.1", Kind::Prerelease),
            ("v2.1.0-rc.1", Kind::Prerelease),
            ("v2.1.0", Kind::Draft),
        ]);
        fake.set_page_cap(2);
        fake
    }

    pub fn set_page_cap(&self, n: usize) {
        self.state.lock().unwrap().page_cap = n;
    }

    /// Serve minified JSON instead of the indented JSON GitHub gives curl.
    pub fn set_compact(&self, compact: bool) {
        self.state.lock().unwrap().compact = compact;
    }

    /// Unauthenticated API calls get GitHub's 403 "API rate limit exceeded".
    pub fn limit_anonymous(&self) {
        self.state.lock().unwrap().anonymous_limited = true;
    }

    /// The next `n` downloads from the objects host answer 503.
    pub fn fail_downloads(&self, n: usize) {
        self.state.lock().unwrap().unavailable = n;
    }

    /// The objects host serves `asset` of `tag` with one byte changed.
    pub fn corrupt(&self, tag: &str, asset: &str) {
        let mut state = self.state.lock().unwrap();
        state.corrupt.insert((tag.into(), asset.into()));
    }

    /// `asset` of `tag` was never uploaded (a build job of the matrix failed).
    pub fn remove_asset(&self, tag: &str, asset: &str) {
        let mut state = self.state.lock().unwrap();
        let release = state.releases.iter_mut().find(|r| r.tag == tag).unwrap();
        assert!(release.assets.remove(asset).is_some());
    }

    pub fn release(&self, tag: &str) -> Release {
        let state = self.state.lock().unwrap();
        state
            .releases
            .iter()
            .find(|r| r.tag == tag)
            .unwrap()
            .clone()
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// Paths of the release downloads asked of the web host.
    pub fn downloads(&self) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.host == "web")
            .map(|h| h.path)
            .collect()
    }
}

fn respond(
    status: u16,
    headers: &[(&str, String)],
    body: impl Into<bytes::Bytes>,
) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, v);
    }
    builder.body(full(body)).unwrap()
}

fn log(state: &Arc<Mutex<State>>, host: &'static str, req: &Request<Incoming>) {
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap_or("").to_string());
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    state.lock().unwrap().hits.push(Hit {
        host,
        path,
        authorization,
    });
}

fn is_listed(release: &Release) -> bool {
    release.kind != Kind::Draft
}

/// The release `latest/download` and `releases/latest` mean: the last one published as
/// latest (GitHub's `make_latest`, which release.yml sets only for the highest version).
fn latest(state: &State) -> Option<&Release> {
    state
        .releases
        .iter()
        .rev()
        .find(|r| r.kind == Kind::Stable { latest: true })
}

async fn web(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    log(&state, "web", &req);
    let path = req.uri().path().to_string();
    let not_found = || respond(404, &[("content-type", "text/plain".into())], "Not Found");
    let Some(rest) = path.strip_prefix(&format!("/{REPO}/releases/")) else {
        return not_found();
    };
    let mut state = state.lock().unwrap();
    if let Some(asset) = rest.strip_prefix("latest/download/") {
        let Some(release) = latest(&state) else {
            return not_found();
        };
        let to = format!(
            "{}/{REPO}/releases/download/{}/{asset}",
            state.web, release.tag
        );
        return respond(302, &[("location", to)], "");
    }
    let Some((tag, asset)) = rest
        .strip_prefix("download/")
        .and_then(|r| r.split_once('/'))
    else {
        return not_found();
    };
    let Some(file) = state
        .releases
        .iter()
        .filter(|r| is_listed(r))
        .find(|r| r.tag == tag)
        .and_then(|r| r.assets.get(asset))
        .cloned()
    else {
        return not_found();
    };
    let token = format!("{:032x}", rand::random::<u128>());
    state.signed.insert(token.clone(), file);
    let corrupt = state
        .corrupt
        .contains(&(tag.to_string(), asset.to_string()));
    let to = format!(
        "{}/github-production-release-asset/{REPO_ID}/{asset}?X-Amz-Signature={token}{}",
        state.objects,
        if corrupt { "&corrupt=1" } else { "" }
    );
    respond(302, &[("location", to)], "")
}

async fn objects(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    log(&state, "objects", &req);
    let query = req.uri().query().unwrap_or("").to_string();
    let token = query
        .split('&')
        .find_map(|p| p.strip_prefix("X-Amz-Signature="))
        .unwrap_or("");
    {
        let mut state = state.lock().unwrap();
        if state.unavailable > 0 {
            state.unavailable -= 1;
            return respond(503, &[], "<Error><Code>SlowDown</Code></Error>");
        }
    }
    let Some(file) = state.lock().unwrap().signed.get(token).cloned() else {
        return respond(
            403,
            &[("content-type", "application/xml".into())],
            "<Error><Code>AccessDenied</Code></Error>",
        );
    };
    if req.headers().contains_key("authorization") {
        // Storage refuses a second credential besides the signature.
        return respond(400, &[], "<Error><Code>InvalidArgument</Code></Error>");
    }
    let mut bytes = tokio::fs::read(&file).await.unwrap();
    if query.contains("corrupt=1") {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x55;
    }
    respond(
        200,
        &[("content-type", "application/octet-stream".into())],
        bytes,
    )
}

fn release_json(state: &State, r: &Release) -> Value {
    let html = format!("{}/{REPO}/releases/tag/{}", state.web, r.tag);
    let uploader =
        json!({"login": "github-actions[bot]", "id": 41898282, "type": "Bot", "site_admin": false});
    let assets: Vec<Value> = r
        .assets
        .iter()
        .enumerate()
        .map(|(i, (name, file))| {
            json!({
                "url": format!("{}/repos/{REPO}/releases/assets/{}", state.api, r.id * 10 + i as u64),
                "id": r.id * 10 + i as u64,
                "name": name,
                "label": "",
                "uploader": uploader,
                "content_type": "application/gzip",
                "state": "uploaded",
                "size": std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
                "digest": r.sums.get(name).map(|s| format!("sha256:{s}")),
                "download_count": 3,
                "browser_download_url": format!("{}/{REPO}/releases/download/{}/{name}", state.web, r.tag),
            })
        })
        .collect();
    let draft = r.kind == Kind::Draft;
    json!({
        "url": format!("{}/repos/{REPO}/releases/{}", state.api, r.id),
        "html_url": if draft { format!("{}/{REPO}/releases/tag/untagged-{:x}", state.web, r.id) } else { html },
        "id": r.id,
        "author": uploader,
        "node_id": format!("RE_kwDOK{}", r.id),
        "tag_name": r.tag,
        "target_commitish": "main",
        "name": r.tag,
        "draft": draft,
        "immutable": false,
        "prerelease": r.kind == Kind::Prerelease,
        "created_at": "2026-01-01T00:00:00Z",
        "published_at": if draft { Value::Null } else { json!("2026-01-01T00:10:00Z") },
        "assets": assets,
        "tarball_url": format!("{}/repos/{REPO}/tarball/{}", state.api, r.tag),
        "zipball_url": format!("{}/repos/{REPO}/zipball/{}", state.api, r.tag),
        // Release notes quoting JSON: only escaped quotes, which no key match may take.
        "body": "## What's Changed\n* config: {\"tag_name\": \"v9.9.9\", \"draft\": false, \"prerelease\": false}\n",
        "reactions": {"url": "", "total_count": 1, "+1": 1},
    })
}

fn json_response(
    state: &State,
    status: u16,
    link: Option<String>,
    value: &Value,
) -> Response<Body> {
    let body = if state.compact {
        serde_json::to_string(value).unwrap()
    } else {
        serde_json::to_string_pretty(value).unwrap()
    };
    let mut headers = vec![
        (
            "content-type",
            "application/json; charset=utf-8".to_string(),
        ),
        ("x-ratelimit-limit", "1000".into()),
        ("x-ratelimit-remaining", "999".into()),
        ("x-github-api-version-selected", "2022-11-28".into()),
    ];
    if let Some(link) = link {
        headers.push(("link", link));
    }
    respond(status, &headers, body)
}

fn not_found(state: &State) -> Response<Body> {
    json_response(
        state,
        404,
        None,
        &json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/releases/releases", "status": "404"}),
    )
}

async fn api(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    log(&state, "api", &req);
    let path = req.uri().path().to_string();
    let query: BTreeMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim_start_matches("Bearer ")
                .trim_start_matches("token ")
                .to_string()
        });
    let state = state.lock().unwrap();
    match auth.as_deref() {
        Some(TOKEN) => {}
        Some(_) => {
            return json_response(
                &state,
                401,
                None,
                &json!({"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest", "status": "401"}),
            );
        }
        None if state.anonymous_limited => {
            let mut r = json_response(
                &state,
                403,
                None,
                &json!({"message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)", "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}),
            );
            r.headers_mut()
                .insert("x-ratelimit-remaining", "0".parse().unwrap());
            return r;
        }
        None => {}
    }
    let rest = path
        .strip_prefix(&format!("/repos/{REPO}/releases"))
        .or_else(|| path.strip_prefix(&format!("/repositories/{REPO_ID}/releases")));
    let Some(rest) = rest else {
        return not_found(&state);
    };
    if let Some(tag) = rest.strip_prefix("/tags/") {
        return match state
            .releases
            .iter()
            .filter(|r| is_listed(r))
            .find(|r| r.tag == tag)
        {
            Some(r) => json_response(&state, 200, None, &release_json(&state, r)),
            None => not_found(&state),
        };
    }
    if rest == "/latest" {
        return match latest(&state) {
            Some(r) => json_response(&state, 200, None, &release_json(&state, r)),
            None => not_found(&state),
        };
    }
    if !rest.is_empty() {
        return not_found(&state);
    }
    // Newest first; drafts only for a token (GitHub: for users with push access).
    let visible: Vec<&Release> = state
        .releases
        .iter()
        .rev()
        .filter(|r| auth.is_some() || is_listed(r))
        .collect();
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30usize)
        .clamp(1, 100)
        .min(state.page_cap);
    let page = query
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let last = visible.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = visible
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| release_json(&state, r))
        .collect();
    let url = |p: usize| {
        format!(
            "<{}/repositories/{REPO_ID}/releases?per_page={per_page}&page={p}>",
            state.api
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url(page - 1)));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    let link = (!links.is_empty()).then(|| links.join(", "));
    json_response(&state, 200, link, &Value::Array(items))
}
