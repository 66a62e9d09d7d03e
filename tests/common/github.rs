//! A fake GitHub REST API that keeps real state: git objects whose ids are real git SHA-1s
//! (checked against `git hash-object` in tests), branches with fast-forward-only updates,
//! contents reads as GitHub answers them (inline base64 up to 1 MB, without content above,
//! a listing for a directory, raw on request), tokens with and without write access,
//! rate-limit headers, an empty repository, GitHub Enterprise's `/api/v3` prefix with a web
//! UI answering HTML at the root, secondary limits on content-creating requests, trees
//! listed (`truncated` past 100,000 entries) and created with inline content (422 past a
//! few MB, as GitHub times out) or deletions (422 for a missing path), and fault
//! switches (5xx, rate limits, a commit landing on the branch just before our ref update).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

mod routes;

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
    /// A ref update carried out normally, but another writer's commit lands just before it.
    ForeignCommitFirst,
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
    /// The paths each tree request wrote or deleted, in order.
    trees_created: Vec<Vec<String>>,
    /// Blobs created through `POST /git/blobs`.
    blobs_created: usize,
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
    /// The options that record a run's metadata in this fake's `owner/repo` with `token`.
    pub fn args(&self, token: &str) -> Vec<String> {
        [
            "--github-repo",
            "owner/repo",
            "--github-api-url",
            &self.api_url,
            "--github-token",
            token,
        ]
        .map(String::from)
        .to_vec()
    }

    /// Runs a sync from `src/team` to `dst/mirror` recorded in this fake (write token).
    pub fn sync(
        &self,
        work: &std::path::Path,
        src: &super::TestRegistry,
        dst: &super::TestRegistry,
        extra: &[&str],
    ) -> std::process::Output {
        let mut args = super::mirror_args(src, dst, &work.join("unused-local-dir"));
        args.extend(self.args(WRITE_TOKEN));
        super::run(super::gcrsync(work).args(&args).args(extra))
    }

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

    /// The files each tree request (each commit but an empty repository's first) wrote or
    /// deleted, in order: what a commit uploads.
    pub fn trees_created(&self) -> Vec<Vec<String>> {
        self.state.lock().unwrap().trees_created.clone()
    }

    /// How many blobs `POST /git/blobs` created.
    pub fn blobs_created(&self) -> usize {
        self.state.lock().unwrap().blobs_created
    }

    /// How many requests the secondary limit turned away.
    pub fn limited(&self) -> usize {
        self.state.lock().unwrap().limited
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
    let response = routes::route(&mut state, &method, &path, &query, token, raw_accept, &body);
    state.log.push(Logged {
        method,
        path: format!("{path}?{query}"),
        headers,
        body: body_text,
        status: response.status().as_u16(),
    });
    response
}
