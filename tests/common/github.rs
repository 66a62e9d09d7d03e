//! A fake GitHub REST API that keeps real state: git objects whose ids are real git SHA-1s
//! (checked against `git hash-object` in tests), branches with fast-forward-only updates,
//! raw contents reads, tokens with and without write access, rate-limit headers, an empty
//! repository, and fault switches (5xx, secondary rate limits, a commit landing on the
//! branch just before our ref update).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha1::{Digest as _, Sha1};

use super::server::{self, Body, full};

#[derive(Debug, Clone)]
enum Object {
    Blob(Vec<u8>),
    /// name → (mode, sha)
    Tree(BTreeMap<String, (String, String)>),
    Commit {
        tree: String,
        parents: Vec<String>,
    },
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

/// An injected answer for an upcoming request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `5xx` with a message.
    ServerError(u16),
    /// 403 with `retry-after: secs` (GitHub's secondary rate limit).
    SecondaryLimit(u64),
    /// 403 with `x-ratelimit-remaining: 0` and a reset `secs` from now (the primary limit).
    PrimaryLimit(i64),
}

#[derive(Default)]
struct State {
    repo: String,
    default_branch: String,
    objects: HashMap<String, (Object, Vec<u8>)>,
    refs: BTreeMap<String, String>,
    tokens: HashMap<String, bool>,
    log: Vec<Logged>,
    faults: Vec<Fault>,
    races: usize,
    remaining: u64,
}

pub struct FakeGitHub {
    /// The API root to pass as `--github-api-url` (with a GHE-style `/api/v3` prefix).
    pub api_url: String,
    state: Arc<Mutex<State>>,
}

pub const WRITE_TOKEN: &str = "ghp_writeTOKENwriteTOKENwriteTOKEN0001";
pub const READ_TOKEN: &str = "ghp_readTOKENreadTOKENreadTOKENread0002";

fn hash(kind: &str, content: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("{kind} {}\0", content.len()).as_bytes());
    hasher.update(content);
    hex::encode(hasher.finalize())
}

impl State {
    fn store(&mut self, object: Object) -> String {
        let (kind, raw) = match &object {
            Object::Blob(bytes) => ("blob", bytes.clone()),
            Object::Tree(entries) => {
                // git orders tree entries by name, with a tree's name compared as "name/".
                let mut sorted: Vec<_> = entries.iter().collect();
                sorted.sort_by_key(|(name, (mode, _))| {
                    if mode == "40000" {
                        format!("{name}/")
                    } else {
                        name.to_string()
                    }
                });
                let mut raw = Vec::new();
                for (name, (mode, sha)) in sorted {
                    raw.extend_from_slice(format!("{mode} {name}\0").as_bytes());
                    raw.extend_from_slice(&hex::decode(sha).unwrap());
                }
                ("tree", raw)
            }
            Object::Commit { .. } => unreachable!("commits are stored by commit()"),
        };
        let sha = hash(kind, &raw);
        self.objects.insert(sha.clone(), (object, raw));
        sha
    }

    fn commit(&mut self, tree: &str, parents: &[String], message: &str, author: &Value) -> String {
        let name = author["name"].as_str().unwrap_or("gcrsync");
        let email = author["email"].as_str().unwrap_or("gcrsync@example.com");
        let when = author["date"]
            .as_str()
            .and_then(|d| d.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let signature = format!("{name} <{email}> {} +0000", when.as_second());
        let mut raw = format!("tree {tree}\n");
        for parent in parents {
            raw.push_str(&format!("parent {parent}\n"));
        }
        raw.push_str(&format!(
            "author {signature}\ncommitter {signature}\n\n{message}"
        ));
        if !raw.ends_with('\n') {
            raw.push('\n');
        }
        let sha = hash("commit", raw.as_bytes());
        let object = Object::Commit {
            tree: tree.to_string(),
            parents: parents.to_vec(),
        };
        self.objects.insert(sha.clone(), (object, raw.into_bytes()));
        sha
    }

    /// Every file of a tree, by full path.
    fn files(&self, tree: &str, prefix: &str, out: &mut BTreeMap<String, String>) {
        let Some((Object::Tree(entries), _)) = self.objects.get(tree) else {
            return;
        };
        for (name, (mode, sha)) in entries {
            let path = format!("{prefix}{name}");
            if mode == "40000" {
                self.files(sha, &format!("{path}/"), out)
            } else {
                out.insert(path, sha.clone());
            }
        }
    }

    /// Builds the nested trees of a set of files; returns the root tree's sha.
    fn build(&mut self, files: &BTreeMap<String, String>) -> String {
        let mut here: BTreeMap<String, (String, String)> = BTreeMap::new();
        let mut dirs: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (path, sha) in files {
            match path.split_once('/') {
                Some((dir, rest)) => {
                    dirs.entry(dir.to_string())
                        .or_default()
                        .insert(rest.to_string(), sha.clone());
                }
                None => {
                    here.insert(path.clone(), ("100644".into(), sha.clone()));
                }
            }
        }
        for (dir, sub) in dirs {
            let sha = self.build(&sub);
            here.insert(dir, ("40000".into(), sha));
        }
        self.store(Object::Tree(here))
    }

    fn commit_tree(&self, commit: &str) -> Option<String> {
        match self.objects.get(commit) {
            Some((Object::Commit { tree, .. }, _)) => Some(tree.clone()),
            _ => None,
        }
    }

    fn is_ancestor(&self, ancestor: &str, of: &str) -> bool {
        let mut stack = vec![of.to_string()];
        while let Some(sha) = stack.pop() {
            if sha == ancestor {
                return true;
            }
            if let Some((Object::Commit { parents, .. }, _)) = self.objects.get(&sha) {
                stack.extend(parents.iter().cloned());
            }
        }
        false
    }

    fn read(&self, commit: &str, path: &str) -> Option<Vec<u8>> {
        let mut files = BTreeMap::new();
        self.files(&self.commit_tree(commit)?, "", &mut files);
        match self.objects.get(files.get(path)?) {
            Some((Object::Blob(bytes), _)) => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Another writer's commit on `branch`: adds `foreign-N.txt`, prepends a CHANGELOG block.
    fn land_foreign_commit(&mut self, branch: &str) {
        let Some(head) = self.refs.get(branch).cloned() else {
            return;
        };
        let mut files = BTreeMap::new();
        self.files(&self.commit_tree(&head).unwrap(), "", &mut files);
        let n = self.races;
        let note = self.store(Object::Blob(
            format!("written by someone else ({n})\n").into_bytes(),
        ));
        files.insert(format!("foreign-{n}.txt"), note);
        let mut changelog = format!("### foreign block {n}\n\n").into_bytes();
        changelog.extend(self.read(&head, "CHANGELOG.md").unwrap_or_default());
        files.insert("CHANGELOG.md".into(), self.store(Object::Blob(changelog)));
        let tree = self.build(&files);
        let commit = self.commit(
            &tree,
            &[head],
            &format!("someone else {n}"),
            &json!({"name": "other"}),
        );
        self.refs.insert(branch.to_string(), commit);
    }
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
        let mut state = State {
            repo: "owner/repo".into(),
            default_branch: "main".into(),
            remaining: 5000,
            ..State::default()
        };
        state.tokens.insert(WRITE_TOKEN.into(), true);
        state.tokens.insert(READ_TOKEN.into(), false);
        if !empty {
            let readme = state.store(Object::Blob(b"# metadata\n".to_vec()));
            let tree = state.build(&BTreeMap::from([("README.md".to_string(), readme)]));
            let commit = state.commit(&tree, &[], "initial", &json!({"name": "owner"}));
            state.refs.insert("main".into(), commit);
        }
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let addr = server::serve(move |req| handle(req, shared.clone()));
        FakeGitHub {
            api_url: format!("http://{addr}/api/v3"),
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
        let mut files = BTreeMap::new();
        let tree = state.commit_tree(&head).unwrap();
        state.files(&tree, "", &mut files);
        let blob = state.store(Object::Blob(content.as_bytes().to_vec()));
        files.insert(path.to_string(), blob);
        let tree = state.build(&files);
        let commit = state.commit(&tree, &[head], "seed", &json!({"name": "seed"}));
        state.refs.insert(branch.to_string(), commit);
    }

    pub fn inject(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push(fault);
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
            .read(head, path)
            .map(|b| String::from_utf8(b).unwrap())
    }

    /// Every file at the head of `branch`.
    pub fn files(&self, branch: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut files = BTreeMap::new();
        if let Some(head) = state.refs.get(branch) {
            state.files(&state.commit_tree(head).unwrap(), "", &mut files);
        }
        files.into_keys().collect()
    }

    /// Commits reachable from `branch`, newest first along first parents.
    pub fn history(&self, branch: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut out = Vec::new();
        let mut next = state.refs.get(branch).cloned();
        while let Some(sha) = next {
            next = match state.objects.get(&sha) {
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
    state.log.push(Logged {
        method: method.clone(),
        path: format!("{path}?{query}"),
        headers,
        body: body_text,
    });
    state.remaining = state.remaining.saturating_sub(1);
    let remaining = state.remaining;
    if !state.faults.is_empty() {
        return match state.faults.remove(0) {
            Fault::ServerError(status) => {
                answer(status, json!({"message": "Server Error"}), remaining)
            }
            Fault::SecondaryLimit(secs) => {
                let mut response = answer(
                    403,
                    json!({"message": "You have exceeded a secondary rate limit."}),
                    remaining,
                );
                response
                    .headers_mut()
                    .insert("retry-after", secs.to_string().parse().unwrap());
                response
            }
            Fault::PrimaryLimit(secs) => {
                let mut response = answer(403, json!({"message": "API rate limit exceeded"}), 0);
                let reset = (jiff::Timestamp::now().as_second() + secs).to_string();
                response
                    .headers_mut()
                    .insert("x-ratelimit-reset", reset.parse().unwrap());
                response
            }
        };
    }
    let can_write = match token.as_deref().and_then(|t| state.tokens.get(t)) {
        Some(write) => *write,
        None => return answer(401, json!({"message": "Bad credentials"}), remaining),
    };
    let Some(rest) = path.strip_prefix(&format!("/api/v3/repos/{}", state.repo)) else {
        return answer(404, json!({"message": "Not Found"}), remaining);
    };
    let rest = rest.to_string();
    if method != "GET" && !can_write {
        return answer(
            403,
            json!({"message": "Resource not accessible by personal access token"}),
            remaining,
        );
    }
    let json_body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let empty = state.refs.is_empty();
    let is_empty_answer = || {
        answer(
            409,
            json!({"message": "Git Repository is empty."}),
            remaining,
        )
    };
    match (method.as_str(), rest.as_str()) {
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
            match state.commit_tree(&r["/git/commits/".len()..]) {
                Some(tree) => answer(
                    200,
                    json!({"sha": &r["/git/commits/".len()..], "tree": {"sha": tree}}),
                    remaining,
                ),
                None => answer(404, json!({"message": "Not Found"}), remaining),
            }
        }
        ("GET", r) if r.starts_with("/contents/") => {
            let commit = query
                .split('&')
                .find_map(|p| p.strip_prefix("ref="))
                .unwrap_or("")
                .to_string();
            let file = state.read(&commit, &r["/contents/".len()..]);
            match (file, raw_accept) {
                (Some(bytes), true) => Response::builder().status(200).body(full(bytes)).unwrap(),
                (Some(_), false) => answer(
                    500,
                    json!({"message": "fake serves raw contents only"}),
                    remaining,
                ),
                (None, _) => answer(404, json!({"message": "Not Found"}), remaining),
            }
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
            let sha = state.store(Object::Blob(bytes));
            answer(201, json!({"sha": sha}), remaining)
        }
        ("POST", "/git/trees") => {
            let mut files = BTreeMap::new();
            if let Some(base) = json_body["base_tree"].as_str() {
                state.files(base, "", &mut files);
            }
            for entry in json_body["tree"].as_array().cloned().unwrap_or_default() {
                let path = entry["path"].as_str().unwrap().to_string();
                match entry["sha"].as_str() {
                    Some(sha) => files.insert(path, sha.to_string()),
                    None => files.remove(&path),
                };
            }
            let sha = state.build(&files);
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
            let sha = state.commit(
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
                Some(current) if !forced && !state.is_ancestor(&current, &new) => answer(
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
                && state.read(parent.as_ref().unwrap(), &path).is_some()
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
            let mut files = BTreeMap::new();
            if let Some(p) = &parent {
                let tree = state.commit_tree(p).unwrap();
                state.files(&tree, "", &mut files);
            }
            let blob = state.store(Object::Blob(bytes));
            files.insert(path, blob);
            let tree = state.build(&files);
            let parents: Vec<String> = parent.into_iter().collect();
            let sha = state.commit(
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
