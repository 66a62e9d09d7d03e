//! A fake GitHub REST API that keeps real state: git objects whose ids are real git SHA-1s
//! (checked against `git hash-object` in tests), branches with fast-forward-only updates,
//! contents reads as GitHub answers them (inline base64 up to 1 MB, without content above,
//! a listing for a directory, raw on request), tokens with and without write access,
//! rate-limit headers, an empty repository, GitHub Enterprise's `/api/v3` prefix with a web
//! UI answering HTML at the root, secondary limits on content-creating requests, and fault
//! switches (5xx, rate limits, a commit landing on the branch just before our ref update).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::git::{Git, Object};
use super::server::{self, Body, full};

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status answered.
    pub status: u16,
}

/// An injected answer for an upcoming request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `5xx` with a message.
    ServerError(u16),
    /// The request is carried out, then answered `5xx` (a gateway timing out after the fact).
    ServerErrorAfterApplying(u16),
    /// 403 with `retry-after: secs` (GitHub's secondary rate limit).
    SecondaryLimit(u64),
    /// 403 with `x-ratelimit-remaining: 0` and a reset `secs` from now (the primary limit).
    PrimaryLimit(i64),
}

/// How the fake is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// A repository without commits.
    pub empty: bool,
    /// Where the API is served: `/api/v3` as GitHub Enterprise Server, `""` as api.github.com.
    pub prefix: &'static str,
    /// Content-creating requests (blobs, trees, commits, refs, contents writes) allowed per
    /// window, as GitHub's secondary limit (80 per minute there); more get a 403.
    pub content_limit: Option<(usize, Duration)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            empty: false,
            prefix: "/api/v3",
            content_limit: None,
        }
    }
}

/// The body GitHub answers a secondary rate limit with.
pub const SECONDARY_LIMIT_MESSAGE: &str = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID 0000:1111:2222.";

/// Files up to this size come inline from the contents API; larger ones without content.
const INLINE_LIMIT: usize = 1024 * 1024;

#[derive(Default)]
struct State {
    repo: String,
    default_branch: String,
    git: Git,
    refs: BTreeMap<String, String>,
    tokens: HashMap<String, bool>,
    log: Vec<Logged>,
    /// (route prefix such as "POST /git/blobs", or "" for any request; fault)
    faults: Vec<(String, Fault)>,
    races: usize,
    remaining: u64,
    options: Options,
    content_sent: VecDeque<Instant>,
    limited: usize,
}

pub struct FakeGitHub {
    /// The API root to pass as `--github-api-url`.
    pub api_url: String,
    /// The server's root, where GitHub Enterprise Server serves its web UI.
    pub root_url: String,
    state: Arc<Mutex<State>>,
}

pub const WRITE_TOKEN: &str = "ghp_writeTOKENwriteTOKENwriteTOKEN0001";
pub const READ_TOKEN: &str = "ghp_readTOKENreadTOKENreadTOKENread0002";

impl State {
    /// Another writer's commit on `branch`: adds `foreign-N.txt`, prepends a CHANGELOG block.
    fn land_foreign_commit(&mut self, branch: &str) {
        let Some(head) = self.refs.get(branch).cloned() else {
            return;
        };
        let mut files = self.git.tree_files(&head);
        let n = self.races;
        let note = self.git.store(Object::Blob(
            format!("written by someone else ({n})\n").into_bytes(),
        ));
        files.insert(format!("foreign-{n}.txt"), note);
        let mut changelog = format!("### foreign block {n}\n\n").into_bytes();
        changelog.extend(self.git.read(&head, "CHANGELOG.md").unwrap_or_default());
        files.insert(
            "CHANGELOG.md".into(),
            self.git.store(Object::Blob(changelog)),
        );
        let tree = self.git.build(&files);
        let commit = self.git.commit(
            &tree,
            &[head],
            &format!("someone else {n}"),
            &json!({"name": "other"}),
        );
        self.refs.insert(branch.to_string(), commit);
    }

    /// GitHub's secondary limit on content-creating requests: `Some(retry-after)` when over.
    fn over_content_limit(&mut self) -> Option<u64> {
        let (limit, window) = self.options.content_limit?;
        let now = Instant::now();
        while self
            .content_sent
            .front()
            .is_some_and(|&t| now.duration_since(t) >= window)
        {
            self.content_sent.pop_front();
        }
        if self.content_sent.len() >= limit {
            self.limited += 1;
            let free = *self.content_sent.front().unwrap() + window - now;
            return Some(free.as_secs_f64().ceil().max(1.0) as u64);
        }
        self.content_sent.push_back(now);
        None
    }

    /// The contents API's answer for `path` at `commit`.
    fn contents(&self, commit: &str, path: &str, raw: bool, remaining: u64) -> Response<Body> {
        let files = self.git.tree_files(commit);
        if let Some(sha) = files.get(path) {
            let bytes = self.git.blob(sha).unwrap();
            if raw {
                return raw_answer(bytes);
            }
            let name = path.rsplit('/').next().unwrap();
            let (content, encoding) = if bytes.len() <= INLINE_LIMIT {
                (wrapped_base64(&bytes), "base64")
            } else {
                (String::new(), "none")
            };
            return answer(
                200,
                json!({"type": "file", "name": name, "path": path, "sha": sha, "size": bytes.len(),
                       "encoding": encoding, "content": content}),
                remaining,
            );
        }
        // A directory: its entries, whatever media type was asked for.
        let dir = format!("{path}/");
        let mut entries: BTreeMap<String, Value> = BTreeMap::new();
        for (file, sha) in &files {
            let Some(rest) = file.strip_prefix(&dir) else {
                continue;
            };
            let entry = match rest.split_once('/') {
                Some((sub, _)) => {
                    json!({"type": "dir", "name": sub, "path": format!("{dir}{sub}")})
                }
                None => json!({"type": "file", "name": rest, "path": file, "sha": sha}),
            };
            entries.insert(entry["name"].as_str().unwrap().to_string(), entry);
        }
        if entries.is_empty() {
            return answer(404, json!({"message": "Not Found"}), remaining);
        }
        answer(
            200,
            Value::Array(entries.into_values().collect()),
            remaining,
        )
    }
}

/// Base64 as GitHub sends file content: wrapped at 60 columns.
fn wrapped_base64(bytes: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = text
        .as_bytes()
        .chunks(60)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join("\n") + "\n"
}

fn raw_answer(bytes: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/vnd.github.raw; charset=utf-8")
        .body(full(bytes))
        .unwrap()
}

/// GitHub Enterprise Server's web UI answering a path outside `/api/v3`.
fn web_page_404() -> Response<Body> {
    Response::builder()
        .status(404)
        .header("content-type", "text/html; charset=utf-8")
        .body(full(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><title>Page not found · GitHub</title></head><body>404</body></html>\n",
        ))
        .unwrap()
}

fn answer(status: u16, body: Value, remaining: u64) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-ratelimit-limit", "5000")
        .header("x-ratelimit-remaining", remaining.to_string())
        .header(
            "x-ratelimit-reset",
            (jiff::Timestamp::now().as_second() + 3600).to_string(),
        )
        .body(full(body.to_string()))
        .unwrap()
}

impl FakeGitHub {
    /// A repository `owner/repo` with default branch `main`; empty when `empty`.
    pub fn start(empty: bool) -> Self {
        Self::start_with(Options {
            empty,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options) -> Self {
        let mut state = State {
            repo: "owner/repo".into(),
            default_branch: "main".into(),
            remaining: 5000,
            options: options.clone(),
            ..State::default()
        };
        state.tokens.insert(WRITE_TOKEN.into(), true);
        state.tokens.insert(READ_TOKEN.into(), false);
        if !options.empty {
            let readme = state.git.store(Object::Blob(b"# metadata\n".to_vec()));
            let tree = state
                .git
                .build(&BTreeMap::from([("README.md".to_string(), readme)]));
            let commit = state
                .git
                .commit(&tree, &[], "initial", &json!({"name": "owner"}));
            state.refs.insert("main".into(), commit);
        }
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let addr = server::serve(move |req| handle(req, shared.clone()));
        FakeGitHub {
            api_url: format!("http://{addr}{}", options.prefix),
            root_url: format!("http://{addr}"),
            state,
        }
    }

    /// Commits `content` at `path` on `branch` (as the seed tools' own files were).
    pub fn seed(&self, branch: &str, path: &str, content: &str) {
        let mut state = self.state.lock().unwrap();
        let head = state
            .refs
            .get(branch)
            .cloned()
            .expect("seed needs a branch");
        let mut files = state.git.tree_files(&head);
        let blob = state.git.store(Object::Blob(content.as_bytes().to_vec()));
        files.insert(path.to_string(), blob);
        let tree = state.git.build(&files);
        let commit = state
            .git
            .commit(&tree, &[head], "seed", &json!({"name": "seed"}));
        state.refs.insert(branch.to_string(), commit);
    }

    /// The next request gets `fault`.
    pub fn inject(&self, fault: Fault) {
        self.inject_on("", fault);
    }

    /// The next request whose `METHOD /route` (below `/repos/OWNER/NAME`) starts with
    /// `route`, e.g. `"POST /git/blobs"` or `"PATCH /git/refs"`, gets `fault`.
    pub fn inject_on(&self, route: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push((route.to_string(), fault));
    }

    /// The next `n` ref updates each find a foreign commit landed just before them.
    pub fn race_next_ref_updates(&self, n: usize) {
        self.state.lock().unwrap().races = n;
    }

    pub fn head(&self, branch: &str) -> Option<String> {
        self.state.lock().unwrap().refs.get(branch).cloned()
    }

    /// A file at the head of `branch`.
    pub fn file(&self, branch: &str, path: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        let head = state.refs.get(branch)?;
        state
            .git
            .read(head, path)
            .map(|b| String::from_utf8(b).unwrap())
    }

    /// Every file at the head of `branch`.
    pub fn files(&self, branch: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        match state.refs.get(branch) {
            Some(head) => state.git.tree_files(head).into_keys().collect(),
            None => Vec::new(),
        }
    }

    /// Commits reachable from `branch`, newest first along first parents.
    pub fn history(&self, branch: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut out = Vec::new();
        let mut next = state.refs.get(branch).cloned();
        while let Some(sha) = next {
            next = match state.git.objects.get(&sha) {
                Some((Object::Commit { parents, .. }, _)) => parents.first().cloned(),
                _ => None,
            };
            out.push(sha);
        }
        out
    }

    /// Every stored object: (sha, kind, raw content) for checking against `git hash-object`.
    pub fn objects(&self) -> Vec<(String, &'static str, Vec<u8>)> {
        let state = self.state.lock().unwrap();
        state
            .git
            .objects
            .iter()
            .map(|(sha, (object, raw))| {
                let kind = match object {
                    Object::Blob(_) => "blob",
                    Object::Tree(_) => "tree",
                    Object::Commit { .. } => "commit",
                };
                (sha.clone(), kind, raw.clone())
            })
            .collect()
    }

    pub fn log(&self) -> Vec<Logged> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests the secondary limit turned away.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
    }
}

fn secondary_limit(retry_after: u64, remaining: u64) -> Response<Body> {
    let mut response = answer(
        403,
        json!({"message": SECONDARY_LIMIT_MESSAGE,
               "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"}),
        remaining,
    );
    response
        .headers_mut()
        .insert("retry-after", retry_after.to_string().parse().unwrap());
    response
}

fn fault_answer(fault: &Fault, remaining: u64) -> Response<Body> {
    match fault {
        Fault::ServerError(status) | Fault::ServerErrorAfterApplying(status) => {
            answer(*status, json!({"message": "Server Error"}), remaining)
        }
        Fault::SecondaryLimit(secs) => secondary_limit(*secs, remaining),
        Fault::PrimaryLimit(secs) => {
            let mut response = answer(403, json!({"message": "API rate limit exceeded"}), 0);
            let reset = (jiff::Timestamp::now().as_second() + secs).to_string();
            response
                .headers_mut()
                .insert("x-ratelimit-reset", reset.parse().unwrap());
            response
        }
    }
}

async fn handle(req: Request<Incoming>, state: Arc<Mutex<State>>) -> Response<Body> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let raw_accept = req
        .headers()
        .get("accept")
        .is_some_and(|v| v.to_str().unwrap_or("").contains("raw"));
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim_start_matches("Bearer ")
                .trim_start_matches("token ")
                .to_string()
        });
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body_text = String::from_utf8_lossy(&body).into_owned();
    let mut state = state.lock().unwrap();
    let response = route(&mut state, &method, &path, &query, token, raw_accept, &body);
    state.log.push(Logged {
        method,
        path: format!("{path}?{query}"),
        headers,
        body: body_text,
        status: response.status().as_u16(),
    });
    response
}

fn route(
    state: &mut State,
    method: &str,
    path: &str,
    query: &str,
    token: Option<String>,
    raw_accept: bool,
    body: &[u8],
) -> Response<Body> {
    state.remaining = state.remaining.saturating_sub(1);
    let remaining = state.remaining;
    let Some(api_path) = path.strip_prefix(state.options.prefix) else {
        return web_page_404();
    };
    let repo_prefix = format!("/repos/{}", state.repo);
    let rest = api_path.strip_prefix(&repo_prefix).map(str::to_string);
    let signature = format!("{method} {}", rest.as_deref().unwrap_or(api_path));
    let fault = state
        .faults
        .iter()
        .position(|(route, _)| signature.starts_with(route.as_str()))
        .map(|i| state.faults.remove(i).1);
    if let Some(fault) = &fault {
        if !matches!(fault, Fault::ServerErrorAfterApplying(_)) {
            return fault_answer(fault, remaining);
        }
    }
    let can_write = match token.as_deref().and_then(|t| state.tokens.get(t)) {
        Some(write) => *write,
        None => return answer(401, json!({"message": "Bad credentials"}), remaining),
    };
    let Some(rest) = rest else {
        return answer(404, json!({"message": "Not Found"}), remaining);
    };
    if method != "GET" && !can_write {
        return answer(
            403,
            json!({"message": "Resource not accessible by personal access token"}),
            remaining,
        );
    }
    if method != "GET" {
        if let Some(retry_after) = state.over_content_limit() {
            return secondary_limit(retry_after, remaining);
        }
    }
    let response = repo_route(state, method, &rest, query, can_write, raw_accept, body);
    match fault {
        Some(fault) => fault_answer(&fault, remaining),
        None => response,
    }
}

fn repo_route(
    state: &mut State,
    method: &str,
    rest: &str,
    query: &str,
    can_write: bool,
    raw_accept: bool,
    body: &[u8],
) -> Response<Body> {
    let remaining = state.remaining;
    let json_body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let empty = state.refs.is_empty();
    let is_empty_answer = || {
        answer(
            409,
            json!({"message": "Git Repository is empty."}),
            remaining,
        )
    };
    match (method, rest) {
        ("GET", "") => answer(
            200,
            json!({"full_name": state.repo, "default_branch": state.default_branch, "permissions": {"pull": true, "push": can_write}}),
            remaining,
        ),
        ("GET", "/git/refs") if empty => is_empty_answer(),
        ("GET", "/git/refs") => answer(200, json!([]), remaining),
        ("GET", r) if r.starts_with("/git/ref/heads/") => {
            if empty {
                return is_empty_answer();
            }
            match state.refs.get(&r["/git/ref/heads/".len()..]) {
                Some(sha) => answer(
                    200,
                    json!({"ref": r, "object": {"sha": sha, "type": "commit"}}),
                    remaining,
                ),
                None => answer(404, json!({"message": "Not Found"}), remaining),
            }
        }
        ("GET", r) if r.starts_with("/git/commits/") => {
            match state.git.commit_tree(&r["/git/commits/".len()..]) {
                Some(tree) => answer(
                    200,
                    json!({"sha": &r["/git/commits/".len()..], "tree": {"sha": tree}}),
                    remaining,
                ),
                None => answer(404, json!({"message": "Not Found"}), remaining),
            }
        }
        ("GET", r) if r.starts_with("/git/blobs/") => {
            let sha = &r["/git/blobs/".len()..];
            match state.git.blob(sha) {
                Some(bytes) if raw_accept => raw_answer(bytes),
                Some(bytes) => answer(
                    200,
                    json!({"sha": sha, "size": bytes.len(), "encoding": "base64", "content": wrapped_base64(&bytes)}),
                    remaining,
                ),
                None => answer(404, json!({"message": "Not Found"}), remaining),
            }
        }
        ("GET", r) if r.starts_with("/contents/") => {
            let commit = query
                .split('&')
                .find_map(|p| p.strip_prefix("ref="))
                .map(str::to_string)
                .or_else(|| state.refs.get(&state.default_branch).cloned())
                .unwrap_or_default();
            state.contents(&commit, &r["/contents/".len()..], raw_accept, remaining)
        }
        ("POST", "/git/blobs") if empty => is_empty_answer(),
        ("POST", "/git/blobs") => {
            let content = json_body["content"].as_str().unwrap_or_default();
            let bytes = match json_body["encoding"].as_str() {
                Some("base64") => base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .unwrap(),
                _ => content.as_bytes().to_vec(),
            };
            let sha = state.git.store(Object::Blob(bytes));
            answer(201, json!({"sha": sha}), remaining)
        }
        ("POST", "/git/trees") => {
            let mut files = BTreeMap::new();
            if let Some(base) = json_body["base_tree"].as_str() {
                state.git.files(base, "", &mut files);
            }
            for entry in json_body["tree"].as_array().cloned().unwrap_or_default() {
                let path = entry["path"].as_str().unwrap().to_string();
                match entry["sha"].as_str() {
                    Some(sha) => files.insert(path, sha.to_string()),
                    None => files.remove(&path),
                };
            }
            let sha = state.git.build(&files);
            answer(201, json!({"sha": sha}), remaining)
        }
        ("POST", "/git/commits") => {
            let parents: Vec<String> = json_body["parents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            let tree = json_body["tree"].as_str().unwrap().to_string();
            let sha = state.git.commit(
                &tree,
                &parents,
                json_body["message"].as_str().unwrap(),
                &json_body["author"],
            );
            answer(201, json!({"sha": sha}), remaining)
        }
        ("POST", "/git/refs") => {
            let name = json_body["ref"]
                .as_str()
                .unwrap()
                .trim_start_matches("refs/heads/")
                .to_string();
            if state.refs.contains_key(&name) {
                return answer(
                    422,
                    json!({"message": "Reference already exists"}),
                    remaining,
                );
            }
            state
                .refs
                .insert(name, json_body["sha"].as_str().unwrap().to_string());
            answer(201, json!({"ref": json_body["ref"]}), remaining)
        }
        ("PATCH", r) if r.starts_with("/git/refs/heads/") => {
            let branch = r["/git/refs/heads/".len()..].to_string();
            if state.races > 0 {
                state.land_foreign_commit(&branch);
                state.races -= 1;
            }
            let new = json_body["sha"].as_str().unwrap().to_string();
            let forced = json_body["force"].as_bool().unwrap_or(false);
            match state.refs.get(&branch).cloned() {
                None => answer(
                    422,
                    json!({"message": "Reference does not exist"}),
                    remaining,
                ),
                Some(current) if !forced && !state.git.is_ancestor(&current, &new) => answer(
                    422,
                    json!({"message": "Update is not a fast forward"}),
                    remaining,
                ),
                Some(_) => {
                    state.refs.insert(branch, new.clone());
                    answer(200, json!({"ref": r, "object": {"sha": new}}), remaining)
                }
            }
        }
        ("PUT", r) if r.starts_with("/contents/") => {
            let path = r["/contents/".len()..].to_string();
            let branch = json_body["branch"]
                .as_str()
                .unwrap_or(&state.default_branch)
                .to_string();
            let parent = state.refs.get(&branch).cloned();
            if parent.is_some()
                && json_body["sha"].is_null()
                && state.git.read(parent.as_ref().unwrap(), &path).is_some()
            {
                return answer(
                    422,
                    json!({"message": "\"sha\" wasn't supplied."}),
                    remaining,
                );
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(json_body["content"].as_str().unwrap())
                .unwrap();
            let mut files = match &parent {
                Some(p) => state.git.tree_files(p),
                None => BTreeMap::new(),
            };
            let blob = state.git.store(Object::Blob(bytes));
            files.insert(path, blob);
            let tree = state.git.build(&files);
            let parents: Vec<String> = parent.into_iter().collect();
            let sha = state.git.commit(
                &tree,
                &parents,
                json_body["message"].as_str().unwrap(),
                &json_body["author"],
            );
            state.refs.insert(branch, sha.clone());
            answer(201, json!({"commit": {"sha": sha}}), remaining)
        }
        _ => answer(
            404,
            json!({"message": format!("fake GitHub has no route {method} {rest}")}),
            remaining,
        ),
    }
}
