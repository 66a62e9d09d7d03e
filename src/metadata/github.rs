//! The GitHub metadata store: files read at the branch head, each batch written as one
//! commit through the Git Data API (blobs → tree → commit → ref update without force).
//! No clone, no git binary; a moved ref is a conflict the `Recorder` re-applies onto.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::BodyExt;
use octocrab::Octocrab;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FileChange, MetadataStore, StoreError, WriteOutcome};

/// Where and as whom to commit.
#[derive(Clone)]
pub struct GitHubConfig {
    /// API root, e.g. `https://api.github.com` or `https://ghe.example.com/api/v3`.
    pub api_url: String,
    /// `owner/name`.
    pub repo: String,
    /// The token; sent only in the `Authorization` header.
    pub token: String,
    /// Branch to commit to; `None` = the repository's default branch.
    pub branch: Option<String>,
    /// Create a missing branch from the default branch.
    pub create_branch: bool,
    /// Commit author name.
    pub author_name: String,
    /// Commit author e-mail.
    pub author_email: String,
    /// The longest rate-limit wait accepted before giving up.
    pub max_wait: Duration,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GitHubConfig({} at {}, branch {:?})",
            self.repo, self.api_url, self.branch
        )
    }
}

/// The branch head a batch is read at and committed onto; `None` in an empty repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    commit: Option<String>,
    tree: Option<String>,
}

/// Commits metadata to a branch of a GitHub repository.
pub struct GitHubStore {
    client: Octocrab,
    repo: String,
    branch: String,
    author: Value,
    max_wait: Duration,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self, what: &str) -> Result<T, StoreError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| github(what, format!("unexpected answer: {e}")))
    }

    fn message(&self) -> String {
        #[derive(Deserialize)]
        struct Message {
            message: Option<String>,
        }
        serde_json::from_slice::<Message>(&self.body)
            .ok()
            .and_then(|m| m.message)
            .unwrap_or_default()
    }
}

fn github(action: &str, detail: impl Into<String>) -> StoreError {
    StoreError::GitHub {
        action: action.to_string(),
        detail: detail.into(),
    }
}

#[derive(Deserialize)]
struct Sha {
    sha: String,
}

/// How long GitHub asks us to wait: `retry-after` (secondary limits), or until
/// `x-ratelimit-reset` when `x-ratelimit-remaining` is 0 (primary limit).
fn rate_limit_wait(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    if let Some(secs) = header("retry-after") {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining") == Some(0) {
        let now = jiff::Timestamp::now().as_second().max(0) as u64;
        return header("x-ratelimit-reset")
            .map(|reset| Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    None
}

const RETRIES: u32 = 5;

impl GitHubStore {
    /// Checks the repository, the token's write access (when `write`), and the branch.
    pub async fn connect(
        config: &GitHubConfig,
        http: reqwest::Client,
        write: bool,
    ) -> Result<Self, StoreError> {
        let client = Octocrab::builder()
            .base_uri(config.api_url.as_str())
            .map_err(|e| github("setup", format!("--github-api-url {}: {e}", config.api_url)))?
            .personal_token(config.token.clone())
            .build_with_reqwest(http)
            .map_err(|e| github("setup", e.to_string()))?;
        let author = json!({"name": config.author_name, "email": config.author_email});
        let mut store = GitHubStore {
            client,
            repo: config.repo.clone(),
            branch: String::new(),
            author,
            max_wait: config.max_wait,
        };
        #[derive(Deserialize)]
        struct Repo {
            default_branch: Option<String>,
            permissions: Option<Permissions>,
        }
        #[derive(Deserialize)]
        struct Permissions {
            push: Option<bool>,
        }
        let answer = store
            .call("GET", &format!("/repos/{}", store.repo), None, None)
            .await?;
        let info: Repo = store
            .expect(answer, &[200], "reading the repository")?
            .json("reading the repository")?;
        if write && info.permissions.and_then(|p| p.push) == Some(false) {
            return Err(store.permission_error("can read but not write"));
        }
        let default_branch = info.default_branch.unwrap_or_else(|| "main".into());
        store.branch = config
            .branch
            .clone()
            .unwrap_or_else(|| default_branch.clone());
        if store.ref_sha(&store.branch).await?.is_none() && !store.is_empty().await? {
            if !config.create_branch {
                return Err(github(
                    "reading the branch",
                    format!(
                        "branch {} does not exist in {}; create it, or pass --github-create-branch to branch it from {default_branch}",
                        store.branch, store.repo
                    ),
                ));
            }
            store.create_branch(&default_branch).await?;
        }
        Ok(store)
    }

    /// The branch commits go to.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    fn permission_error(&self, what: &str) -> StoreError {
        github(
            "checking permissions",
            format!(
                "the token {what} {}: it needs the `contents: write` permission (workflow `permissions: contents: write`, or a fine-grained token with Contents read and write)",
                self.repo
            ),
        )
    }

    /// Maps an unexpected status to an error that says what to do.
    fn expect(&self, answer: Answer, ok: &[u16], action: &str) -> Result<Answer, StoreError> {
        if ok.contains(&answer.status) {
            return Ok(answer);
        }
        let message = answer.message();
        Err(match answer.status {
            401 => github(
                action,
                "GitHub rejected the token (401): check --github-token (GITHUB_TOKEN); it may have expired",
            ),
            403 => self.permission_error(&format!("was refused ({message}) on")),
            404 => github(
                action,
                format!(
                    "{} not found (404), or the token cannot see it: check --github-repo and the token's repository access",
                    self.repo
                ),
            ),
            status => github(action, format!("HTTP {status}: {message}")),
        })
    }

    /// One API request, retried on 5xx and connection errors, waiting out rate limits.
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        accept: Option<&str>,
    ) -> Result<Answer, StoreError> {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = match method {
                "GET" => {
                    let mut headers = http::HeaderMap::new();
                    if let Some(accept) = accept {
                        headers
                            .insert(http::header::ACCEPT, accept.parse().expect("static header"));
                    }
                    self.client._get_with_headers(path, Some(headers)).await
                }
                "POST" => self.client._post(path, body).await,
                "PATCH" => self.client._patch(path, body).await,
                "PUT" => self.client._put(path, body).await,
                other => unreachable!("no {other} requests are made"),
            };
            let answer = match sent {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    match body.collect().await {
                        Ok(collected) => Ok(Answer {
                            status: parts.status.as_u16(),
                            headers: parts.headers,
                            body: collected.to_bytes(),
                        }),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(e.to_string()),
            };
            let wait = match &answer {
                Err(_) | Ok(Answer { status: 500.., .. }) => (attempt < RETRIES).then_some(delay),
                Ok(a) if a.status == 403 || a.status == 429 => match rate_limit_wait(&a.headers) {
                    Some(wait) if wait <= self.max_wait && attempt <= RETRIES => Some(wait),
                    Some(wait) => {
                        return Err(github(
                            "waiting for the rate limit",
                            format!(
                                "GitHub asks to wait {}s, longer than allowed ({}s)",
                                wait.as_secs(),
                                self.max_wait.as_secs()
                            ),
                        ));
                    }
                    None => None,
                },
                Ok(_) => None,
            };
            match (answer, wait) {
                (answer, Some(wait)) => {
                    let why = answer
                        .as_ref()
                        .map_or_else(|e| e.clone(), |a| format!("HTTP {}", a.status));
                    tracing::warn!("GitHub {method} {path}: {why}; retrying in {wait:.1?}");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                (Ok(answer), None) => return Ok(answer),
                (Err(e), None) => return Err(github(&format!("{method} {path}"), e)),
            }
        }
    }

    async fn ref_sha(&self, branch: &str) -> Result<Option<String>, StoreError> {
        let answer = self
            .call(
                "GET",
                &format!("/repos/{}/git/ref/heads/{branch}", self.repo),
                None,
                None,
            )
            .await?;
        if answer.status == 404 || answer.status == 409 {
            return Ok(None);
        }
        #[derive(Deserialize)]
        struct Ref {
            object: Sha,
        }
        let found: Ref = self
            .expect(answer, &[200], "reading the branch")?
            .json("reading the branch")?;
        Ok(Some(found.object.sha))
    }

    /// GitHub answers 409 "Git Repository is empty" on Git Data reads of an empty repository.
    async fn is_empty(&self) -> Result<bool, StoreError> {
        let answer = self
            .call("GET", &format!("/repos/{}/git/refs", self.repo), None, None)
            .await?;
        Ok(answer.status == 409)
    }

    async fn create_branch(&self, from: &str) -> Result<(), StoreError> {
        let sha = self.ref_sha(from).await?.ok_or_else(|| {
            github(
                "creating the branch",
                format!("default branch {from} has no commit"),
            )
        })?;
        let body = json!({"ref": format!("refs/heads/{}", self.branch), "sha": sha});
        let answer = self
            .call(
                "POST",
                &format!("/repos/{}/git/refs", self.repo),
                Some(&body),
                None,
            )
            .await?;
        self.expect(answer, &[201], "creating the branch")?;
        tracing::info!(
            "created branch {} of {} from {from}",
            self.branch,
            self.repo
        );
        Ok(())
    }

    async fn post_sha(&self, path: &str, body: &Value, action: &str) -> Result<String, StoreError> {
        let answer = self
            .call(
                "POST",
                &format!("/repos/{}/git/{path}", self.repo),
                Some(body),
                None,
            )
            .await?;
        Ok(self
            .expect(answer, &[200, 201], action)?
            .json::<Sha>(action)?
            .sha)
    }

    /// The first commit of an empty repository, through the contents API (the Git Data
    /// API refuses to work on empty repositories). The file chosen is re-written by the
    /// retried batch with the same bytes, so nothing is applied twice.
    async fn initialize(
        &self,
        change: &FileChange,
        message: &str,
    ) -> Result<WriteOutcome, StoreError> {
        let body = json!({
            "message": message,
            "content": base64::engine::general_purpose::STANDARD.encode(&change.bytes),
            "branch": self.branch,
            "author": self.author,
            "committer": self.author,
        });
        let answer = self
            .call(
                "PUT",
                &format!("/repos/{}/contents/{}", self.repo, change.path),
                Some(&body),
                None,
            )
            .await?;
        if answer.status == 409 || answer.status == 422 {
            return Ok(WriteOutcome::Conflict);
        }
        self.expect(answer, &[200, 201], "creating the first commit")?;
        Ok(WriteOutcome::Conflict)
    }
}

impl MetadataStore for GitHubStore {
    type Revision = Head;

    async fn head(&self) -> Result<Head, StoreError> {
        let Some(commit) = self.ref_sha(&self.branch).await? else {
            return Ok(Head {
                commit: None,
                tree: None,
            });
        };
        #[derive(Deserialize)]
        struct Commit {
            tree: Sha,
        }
        let answer = self
            .call(
                "GET",
                &format!("/repos/{}/git/commits/{commit}", self.repo),
                None,
                None,
            )
            .await?;
        let found: Commit = self
            .expect(answer, &[200], "reading the head commit")?
            .json("reading the head commit")?;
        Ok(Head {
            commit: Some(commit),
            tree: Some(found.tree.sha),
        })
    }

    async fn read(&self, head: &Head, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(commit) = &head.commit else {
            return Ok(None);
        };
        let route = format!("/repos/{}/contents/{path}?ref={commit}", self.repo);
        let answer = self
            .call("GET", &route, None, Some("application/vnd.github.raw"))
            .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        Ok(Some(
            self.expect(answer, &[200], &format!("reading {path}"))?
                .body
                .to_vec(),
        ))
    }

    async fn write(
        &self,
        head: &Head,
        changes: &[FileChange],
        message: &str,
    ) -> Result<WriteOutcome, StoreError> {
        let (Some(parent), Some(base_tree)) = (&head.commit, &head.tree) else {
            return match changes.last() {
                Some(first) => self.initialize(first, message).await,
                None => Ok(WriteOutcome::Written { id: None }),
            };
        };
        let mut entries = Vec::with_capacity(changes.len());
        for change in changes {
            let content = base64::engine::general_purpose::STANDARD.encode(&change.bytes);
            let sha = self
                .post_sha(
                    "blobs",
                    &json!({"content": content, "encoding": "base64"}),
                    "creating a blob",
                )
                .await?;
            entries
                .push(json!({"path": change.path, "mode": "100644", "type": "blob", "sha": sha}));
        }
        let tree = self
            .post_sha(
                "trees",
                &json!({"base_tree": base_tree, "tree": entries}),
                "creating a tree",
            )
            .await?;
        if tree == *base_tree {
            return Ok(WriteOutcome::Written { id: None });
        }
        let mut author = self.author.clone();
        author["date"] = json!(super::record::now_utc());
        let commit_body = json!({"message": message, "tree": tree, "parents": [parent], "author": author, "committer": author});
        let commit = self
            .post_sha("commits", &commit_body, "creating a commit")
            .await?;
        let route = format!("/repos/{}/git/refs/heads/{}", self.repo, self.branch);
        let answer = self
            .call(
                "PATCH",
                &route,
                Some(&json!({"sha": commit, "force": false})),
                None,
            )
            .await?;
        // 422 "Update is not a fast forward": someone else committed since `head`.
        if answer.status == 422 || answer.status == 409 {
            return Ok(WriteOutcome::Conflict);
        }
        self.expect(answer, &[200], "updating the branch")?;
        Ok(WriteOutcome::Written { id: Some(commit) })
    }
}
