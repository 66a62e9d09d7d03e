//! Where a run's results go, as the options describe it: the GitHub repository the
//! metadata is committed to, and the GitHub Actions files. Plain data; the metadata store
//! and `actions` use it.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Retries per request (`--retries`).
    pub retries: usize,
    /// Rate-limit and pacing waits must end within this long of connecting (`--deadline`).
    pub deadline: Option<Duration>,
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

/// Where the runner wants our outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionsEnv {
    /// `GITHUB_OUTPUT`.
    pub output: Option<PathBuf>,
    /// `GITHUB_STEP_SUMMARY`.
    pub summary: Option<PathBuf>,
    /// `GITHUB_SERVER_URL/owner/repo` of the metadata repository, for commit links.
    pub repo_url: Option<String>,
}
