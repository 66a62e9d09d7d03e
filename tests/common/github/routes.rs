//! The fake GitHub's routes: faults and secondary limits first, then the repository's
//! REST endpoints (repository, refs, commits, blobs, trees, contents) over the git objects.

use std::collections::BTreeMap;

use base64::Engine as _;
use hyper::Response;
use serde_json::{Value, json};

use super::{
    Fault, Object, SECONDARY_LIMIT_MESSAGE, State, answer, raw_answer, web_page_404, wrapped_base64,
};
use crate::common::server::Body;

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
        Fault::ForeignCommitFirst => unreachable!("carried out, not answered"),
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

pub(super) fn route(
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
    let mut fault = state
        .faults
        .iter()
        .position(|(route, _)| signature.starts_with(route.as_str()))
        .map(|i| state.faults.remove(i).1);
    if matches!(fault, Some(Fault::ForeignCommitFirst)) {
        // Carried out normally, after a foreign commit lands (at a ref update).
        state.races += 1;
        fault = None;
    }
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
        ("GET", r) if r.starts_with("/compare/") => {
            // `BASE...HEAD`, each a commit or a branch; only `status` is modelled.
            let resolve = |name: &str| {
                state
                    .refs
                    .get(name)
                    .cloned()
                    .or_else(|| state.git.commit_tree(name).map(|_| name.to_string()))
            };
            let pair = r["/compare/".len()..].split_once("...");
            match pair.map(|(b, h)| (resolve(b), resolve(h))) {
                Some((Some(base), Some(head))) => {
                    let status = if base == head {
                        "identical"
                    } else if state.git.is_ancestor(&base, &head) {
                        "ahead"
                    } else if state.git.is_ancestor(&head, &base) {
                        "behind"
                    } else {
                        "diverged"
                    };
                    answer(200, json!({"status": status}), remaining)
                }
                _ => answer(404, json!({"message": "Not Found"}), remaining),
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
            if bytes.len() > BLOB_LIMIT {
                return answer(
                    422,
                    json!({"message": "Blob is too large: the Git Data API takes blobs up to 100 MB"}),
                    remaining,
                );
            }
            state.blobs_created += 1;
            let sha = state.git.store(Object::Blob(bytes));
            answer(201, json!({"sha": sha}), remaining)
        }
        ("GET", r) if r.starts_with("/git/trees/") => {
            let recursive = query.split('&').any(|p| p == "recursive=1");
            match state.git.objects.get(&r["/git/trees/".len()..]) {
                Some((Object::Tree(_), _)) => {
                    let sha = &r["/git/trees/".len()..];
                    let mut entries = Vec::new();
                    list_tree(state, sha, "", recursive, &mut entries);
                    // GitHub: at most 100,000 entries (and 7 MB) in a recursive listing.
                    let truncated = entries.len() > TREE_LIST_LIMIT;
                    entries.truncate(TREE_LIST_LIMIT);
                    answer(
                        200,
                        json!({"sha": sha, "tree": entries, "truncated": truncated}),
                        remaining,
                    )
                }
                _ => answer(404, json!({"message": "Not Found"}), remaining),
            }
        }
        ("POST", "/git/trees") => create_tree(state, &json_body, remaining),
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

/// GitHub lists at most this many entries of a tree (recursive or not), then says
/// `truncated`.
const TREE_LIST_LIMIT: usize = 100_000;
/// The Git Data API takes blobs up to 100 MB.
const BLOB_LIMIT: usize = 100 * 1024 * 1024;
/// GitHub answers 422 "Sorry, your request timed out. It's likely that your input was too
/// large to process" to tree requests with a few MB of inline content (reported from about
/// 2.5 MB: qoomon/actions--create-commit#90, codesandbox/codesandbox-client#8614).
const TREE_INLINE_LIMIT: usize = 2 * 1024 * 1024;

/// The entries of tree `sha` as `GET /git/trees` answers them; subtrees' entries too when
/// `recursive`, with paths relative to `sha`.
fn list_tree(state: &State, sha: &str, prefix: &str, recursive: bool, out: &mut Vec<Value>) {
    let Some((Object::Tree(entries), _)) = state.git.objects.get(sha) else {
        return;
    };
    for (name, (mode, sha)) in entries {
        let path = format!("{prefix}{name}");
        if mode == "40000" {
            out.push(json!({"path": path, "mode": "040000", "type": "tree", "sha": sha}));
            if recursive {
                list_tree(state, sha, &format!("{path}/"), true, out);
            }
        } else {
            let size = match state.git.objects.get(sha) {
                Some((Object::Blob(bytes), _)) => bytes.len(),
                _ => 0,
            };
            out.push(json!({"path": path, "mode": mode, "type": "blob", "sha": sha, "size": size}));
        }
    }
}

/// `POST /git/trees`: entries by `sha` (a blob created before), by inline `content`, or
/// deleted (`sha: null`, which fails for a path not in the base tree, as on GitHub).
fn create_tree(state: &mut State, body: &Value, remaining: u64) -> Response<Body> {
    let entries = body["tree"].as_array().cloned().unwrap_or_default();
    let inline: usize = entries
        .iter()
        .filter_map(|e| e["content"].as_str())
        .map(str::len)
        .sum();
    if inline > TREE_INLINE_LIMIT {
        return answer(
            422,
            json!({"message": "Sorry, your request timed out.  It's likely that your input was too large to process.  Consider building the tree incrementally, or building the commits you need in a local clone of the repository and then pushing them to GitHub."}),
            remaining,
        );
    }
    let mut files = BTreeMap::new();
    if let Some(base) = body["base_tree"].as_str() {
        state.git.files(base, "", &mut files);
    }
    let mut paths = Vec::new();
    for entry in entries {
        let path = entry["path"].as_str().unwrap().to_string();
        paths.push(path.clone());
        if let Some(content) = entry["content"].as_str() {
            let sha = state.git.store(Object::Blob(content.as_bytes().to_vec()));
            files.insert(path, sha);
        } else if let Some(sha) = entry["sha"].as_str() {
            files.insert(path, sha.to_string());
        } else if files.remove(&path).is_none() {
            return answer(
                422,
                json!({"message": format!("GitHub cannot delete {path}: not in the base tree")}),
                remaining,
            );
        }
    }
    state.trees_created.push(paths);
    let sha = state.git.build(&files);
    answer(201, json!({"sha": sha}), remaining)
}
