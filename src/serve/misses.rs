//! `--record-misses FILE`: each tag fetched from an upstream, appended as one JSON line,
//! so that a scheduled `gcrsync sync --images-from FILE` mirrors what people pull.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::reference::{Digest, RegistryHost, RepoPath, Tag};

/// One line of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Miss {
    /// `REGISTRY/REPOSITORY:TAG`, as `sync --images-from` reads it.
    pub image: String,
    /// The upstream registry.
    pub registry: String,
    /// The repository on it.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest digest fetched.
    pub digest: String,
    /// When (RFC 3339, UTC).
    pub time: String,
}

/// The open file.
pub struct MissLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl MissLog {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> std::io::Result<MissLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(MissLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends one miss; a failure is logged, never fatal to the pull.
    pub fn record(&self, host: &RegistryHost, repo: &RepoPath, tag: &Tag, digest: &Digest) {
        let miss = Miss {
            image: format!("{host}/{repo}:{tag}"),
            registry: host.to_string(),
            repository: repo.to_string(),
            tag: tag.to_string(),
            digest: digest.to_string(),
            time: jiff::Timestamp::now().to_string(),
        };
        let mut line = serde_json::to_string(&miss).unwrap_or_default();
        line.push('\n');
        // One write per line, with O_APPEND: lines from concurrent misses never interleave.
        let written = self
            .file
            .lock()
            .expect("miss log")
            .write_all(line.as_bytes());
        if let Err(e) = written {
            tracing::warn!("--record-misses {}: {e}", self.path.display());
        }
    }
}
