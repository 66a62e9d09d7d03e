//! The GitHub metadata store: files read at the branch head, each batch written as one
//! commit through the Git Data API (blobs for large files → a tree with the small ones
//! inline → commit → ref update without force). No clone, no git binary; a moved ref is a
//! conflict the `Recorder` re-applies onto.

mod api;
pub mod pace;
mod tree;

use std::time::Instant;

use api::{Answer, Api, github};
use base64::Engine as _;
use bytes::Bytes;
use octocrab::Octocrab;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{FileChange, Listing, MetadataStore, StoreError, WriteOutcome};
use crate::retry::RetryPolicy;
pub use crate::settings::GitHubConfig;

/// The branch head a batch is read at and committed onto; `None` in an empty repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    commit: Option<String>,
    tree: Option<String>,
}

/// Commits metadata to a branch of a GitHub repository.
pub struct GitHubStore {
    api: Api,
    repo: String,
    branch: String,
    author: Value,
}

#[derive(Deserialize)]
struct Sha {
    sha: String,
}

/// A tree as `GET /git/trees/{sha}` answers it.
#[derive(Deserialize)]
struct TreeListing {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Deserialize)]
struct TreeEntry {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    sha: String,
}

fn json_body(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

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
        let api = Api::new(
            client,
            &config.api_url,
            RetryPolicy::new(config.retries),
            config.deadline.map(|d| Instant::now() + d),
            &pace::GITHUB_LIMITS,
        );
        let mut store = GitHubStore {
            api,
            repo: config.repo.clone(),
            branch: String::new(),
            author,
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
        if answer.is_web_page() {
            return Err(self.web_page_error(answer.status));
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

    /// `--github-api-url` leads to a web site, not the API: GitHub Enterprise Server serves
    /// its web UI at the root and the API under `/api/v3`.
    fn web_page_error(&self, status: u16) -> StoreError {
        let url = self.api.api_url();
        let hint = if url.trim_end_matches('/').ends_with("/api/v3") {
            "check the URL".to_string()
        } else {
            format!(
                "for GitHub Enterprise Server add /api/v3: --github-api-url {}/api/v3",
                url.trim_end_matches('/')
            )
        };
        github(
            "reading the repository",
            format!(
                "--github-api-url {url} answered with a web page (HTTP {status}), not the GitHub REST API; {hint}"
            ),
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Bytes>,
        accept: Option<&str>,
    ) -> Result<Answer, StoreError> {
        self.api.call(method, path, body, accept).await
    }

    /// The entries of tree `sha`, with those of its subtrees when `recursive`.
    async fn tree(&self, sha: &str, recursive: bool) -> Result<TreeListing, StoreError> {
        let query = if recursive { "?recursive=1" } else { "" };
        let route = format!("/repos/{}/git/trees/{sha}{query}", self.repo);
        let answer = self.call("GET", &route, None, None).await?;
        self.expect(answer, &[200], "listing the metadata files")?
            .json("listing the metadata files")
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

    /// Whether the branch holds `commit` (compare `COMMIT...BRANCH` is "identical" or
    /// "ahead"); asked only after a refused ref update.
    async fn branch_contains(&self, commit: &str) -> Result<bool, StoreError> {
        let route = format!("/repos/{}/compare/{commit}...{}", self.repo, self.branch);
        let answer = self.call("GET", &route, None, None).await?;
        if answer.status == 404 {
            return Ok(false);
        }
        #[derive(Deserialize)]
        struct Comparison {
            status: String,
        }
        let found: Comparison = self
            .expect(answer, &[200], "comparing the branch")?
            .json("comparing the branch")?;
        Ok(matches!(found.status.as_str(), "identical" | "ahead"))
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
                Some(&json_body(&body)),
                None,
            )
            .await?;
        // 422 "Reference already exists": another shard, or our own retried request whose
        // first answer was lost, created it; either way the branch is there.
        if answer.status == 422 && self.ref_sha(&self.branch).await?.is_some() {
            return Ok(());
        }
        self.expect(answer, &[201], "creating the branch")?;
        tracing::info!(
            "created branch {} of {} from {from}",
            self.branch,
            self.repo
        );
        Ok(())
    }

    /// A blob's bytes, for files the contents API sends without content (over 1 MB).
    async fn read_blob(&self, sha: &str, action: &str) -> Result<Vec<u8>, StoreError> {
        let route = format!("/repos/{}/git/blobs/{sha}", self.repo);
        let answer = self
            .call("GET", &route, None, Some("application/vnd.github.raw"))
            .await?;
        Ok(Vec::from(self.expect(answer, &[200], action)?.body))
    }

    async fn post_sha(&self, path: &str, body: &Bytes, action: &str) -> Result<String, StoreError> {
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
        let bytes = change.bytes.as_deref().unwrap_or_default();
        let body = json!({
            "message": message,
            "content": base64::engine::general_purpose::STANDARD.encode(bytes),
            "branch": self.branch,
            "author": self.author,
            "committer": self.author,
        });
        let answer = self
            .call(
                "PUT",
                &format!("/repos/{}/contents/{}", self.repo, change.path),
                Some(&json_body(&body)),
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

    /// Through the contents API: small files come inline (base64), files over 1 MB come
    /// without content and are fetched as a blob (up to 100 MB), and a directory comes as
    /// a listing, which is no file.
    async fn read(&self, head: &Head, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(commit) = &head.commit else {
            return Ok(None);
        };
        let action = format!("reading {path}");
        let route = format!("/repos/{}/contents/{path}?ref={commit}", self.repo);
        let answer = self
            .call("GET", &route, None, Some("application/vnd.github+json"))
            .await?;
        if answer.status == 404 {
            return Ok(None);
        }
        let answer = self.expect(answer, &[200], &action)?;
        let entry = match answer.json::<Value>(&action)? {
            Value::Array(_) => {
                return Err(StoreError::NotAFile {
                    path: path.to_string(),
                });
            }
            entry => entry,
        };
        #[derive(Deserialize)]
        struct Entry {
            #[serde(rename = "type")]
            kind: String,
            sha: String,
            #[serde(default)]
            size: u64,
            #[serde(default)]
            encoding: Option<String>,
            #[serde(default)]
            content: Option<String>,
        }
        let entry: Entry = serde_json::from_value(entry)
            .map_err(|e| github(&action, format!("unexpected answer: {e}")))?;
        if entry.kind != "file" {
            return Err(StoreError::NotAFile {
                path: path.to_string(),
            });
        }
        match (entry.encoding.as_deref(), entry.content) {
            (Some("base64"), Some(content)) if !content.is_empty() || entry.size == 0 => {
                // GitHub wraps the base64 text at 60 columns.
                let text: String = content.split_whitespace().collect();
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map(Some)
                    .map_err(|e| github(&action, format!("content is not base64: {e}")))
            }
            _ => self.read_blob(&entry.sha, &action).await.map(Some),
        }
    }

    /// Walks the trees from the root to `dir` (one small request per level), then lists
    /// `dir` recursively: a few requests, whatever the number of files.
    async fn list(&self, head: &Head, dir: &str) -> Result<Listing, StoreError> {
        let mut listing = Listing::new();
        let Some(mut sha) = head.tree.clone() else {
            return Ok(listing);
        };
        let dir = dir.trim_matches('/');
        for name in dir.split('/').filter(|n| !n.is_empty()) {
            let found = self
                .tree(&sha, false)
                .await?
                .tree
                .into_iter()
                .find(|e| e.path == name);
            match found {
                Some(entry) if entry.kind == "tree" => sha = entry.sha,
                _ => return Ok(listing),
            }
        }
        let found = self.tree(&sha, true).await?;
        if found.truncated {
            // Files missing from the listing are written again: more uploads, nothing lost.
            tracing::warn!("GitHub truncated the listing of {dir}; some files are rewritten");
        }
        for entry in found.tree.into_iter().filter(|e| e.kind == "blob") {
            listing.insert(format!("{dir}/{}", entry.path), entry.sha);
        }
        Ok(listing)
    }

    async fn write(
        &self,
        head: &Head,
        changes: &[FileChange],
        message: &str,
    ) -> Result<WriteOutcome, StoreError> {
        let (Some(parent), Some(base_tree)) = (&head.commit, &head.tree) else {
            return match changes.iter().rev().find(|c| c.bytes.is_some()) {
                Some(first) => self.initialize(first, message).await,
                None => Ok(WriteOutcome::Written { id: None }),
            };
        };
        let uploads = tree::plan(changes);
        let mut blobs = Vec::new();
        for (change, upload) in changes.iter().zip(&uploads) {
            if let (tree::Upload::Blob, Some(bytes)) = (upload, &change.bytes) {
                let body = tree::blob_body(bytes);
                blobs.push(self.post_sha("blobs", &body, "creating a blob").await?);
            }
        }
        let body = tree::tree_body(base_tree, changes, &uploads, &blobs);
        let tree = self.post_sha("trees", &body, "creating a tree").await?;
        drop(body);
        if tree == *base_tree {
            return Ok(WriteOutcome::Written { id: None });
        }
        let mut author = self.author.clone();
        author["date"] = json!(super::record::now_utc());
        let commit_body = json!({"message": message, "tree": tree, "parents": [parent], "author": author, "committer": author});
        let commit = self
            .post_sha("commits", &json_body(&commit_body), "creating a commit")
            .await?;
        let route = format!("/repos/{}/git/refs/heads/{}", self.repo, self.branch);
        let answer = self
            .call(
                "PATCH",
                &route,
                Some(&json_body(&json!({"sha": commit, "force": false}))),
                None,
            )
            .await?;
        // 422 "Update is not a fast forward": someone else committed since `head`. Or our
        // own update landed and its answer was lost, the retry came after another writer's
        // commit on top: then the batch is in, and applying it again would repeat its
        // CHANGELOG block.
        if answer.status == 422 || answer.status == 409 {
            return Ok(match self.branch_contains(&commit).await? {
                true => WriteOutcome::Written { id: Some(commit) },
                false => WriteOutcome::Conflict,
            });
        }
        self.expect(answer, &[200], "updating the branch")?;
        Ok(WriteOutcome::Written { id: Some(commit) })
    }
}
