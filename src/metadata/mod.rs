//! Metadata: the `MetadataStore` seam (a directory or a GitHub repository) and the
//! `Recorder` that turns batches of outcomes into files and commits them (SPEC §5–§6).

pub mod batch;
pub mod changelog;
mod files;
pub mod github;
pub mod lazy;
pub mod local;
pub mod record;
pub mod render;
pub mod views;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use lazy::BatchRecord;
use record::{NamespaceRecord, Outcome};
use render::{RenderError, Renderer, change_lines};
use sha1::{Digest as _, Sha1};

use crate::reference::Namespace;

/// A file to create, replace or delete, by path relative to the store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    /// Relative path, `/`-separated.
    pub path: String,
    /// New content; `None` deletes the file.
    pub bytes: Option<Vec<u8>>,
}

/// The files under a directory: path relative to the store's root → git blob id.
pub type Listing = BTreeMap<String, String>;

/// The git blob id (SHA-1 of `blob <size>\0` and the bytes) of a file's content: what
/// GitHub's trees list, so a file that would not change is not uploaded.
pub fn blob_id(bytes: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    hex::encode(hasher.finalize())
}

/// What happened to a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; `id` is the commit, where the store has commits.
    Written {
        /// Commit id.
        id: Option<String>,
    },
    /// Someone else wrote since the revision read: re-read, re-apply, retry.
    Conflict,
}

/// The metadata store is unusable (exit 3) or its content is invalid.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A local file could not be read or written.
    #[error("metadata file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A metadata file is not what gcrsync writes.
    #[error(
        "metadata file {path} is not valid: {detail}; fix or delete it (gcrsync compare rebuilds it from the target)"
    )]
    Invalid {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// A template failed.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The GitHub API refused or failed.
    #[error("GitHub {action}: {detail}")]
    GitHub {
        /// What was being done.
        action: String,
        /// What went wrong and what to do.
        detail: String,
    },
    /// Concurrent writers kept winning.
    #[error("metadata store kept changing under us after {0} attempts; try again")]
    Contended(usize),
    /// A directory where gcrsync keeps or looks for a file.
    #[error(
        "metadata path {path} is a directory, where gcrsync keeps a file; move it away or choose another --metadata-path"
    )]
    NotAFile {
        /// The path.
        path: String,
    },
    /// A commit failed (after its retries) once others had landed: what is committed
    /// stays, the outcomes not committed are recorded by the next run.
    #[error("{source}; {}", incomplete_detail(committed, *uncommitted))]
    Incomplete {
        /// The commits made before the failure, oldest first.
        committed: Vec<Committed>,
        /// Outcomes (tags) whose records were not committed.
        uncommitted: usize,
        /// Why the commit failed.
        source: Box<StoreError>,
    },
}

fn incomplete_detail(committed: &[Committed], uncommitted: usize) -> String {
    let done = match committed.last() {
        None => "nothing was committed in this run".to_string(),
        Some(last) => format!(
            "{} commit(s) landed before it (last {}: {})",
            committed.len(),
            last.id.as_deref().unwrap_or("written"),
            last.message
        ),
    };
    format!("{done}; {uncommitted} tag outcome(s) not recorded, the next run records them")
}

impl StoreError {
    /// Wraps a failed commit with what was committed before it; the `committed` of an
    /// already wrapped error are kept ahead of these.
    pub fn incomplete(self, mut committed: Vec<Committed>, uncommitted: usize) -> StoreError {
        match self {
            StoreError::Incomplete {
                committed: inner,
                uncommitted: more,
                source,
            } => {
                committed.extend(inner);
                StoreError::Incomplete {
                    committed,
                    uncommitted: uncommitted + more,
                    source,
                }
            }
            source => StoreError::Incomplete {
                committed,
                uncommitted,
                source: Box::new(source),
            },
        }
    }
}

/// Where metadata lives: a set of files with optimistic concurrency.
pub trait MetadataStore: Send + Sync {
    /// A point in the store's history that reads are made at and writes are based on.
    type Revision: Send + Sync;
    /// The current revision.
    fn head(&self) -> impl Future<Output = Result<Self::Revision, StoreError>> + Send;
    /// A file's content at `revision`, or `None` when it does not exist.
    fn read(
        &self,
        revision: &Self::Revision,
        path: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, StoreError>> + Send;
    /// Every file under `dir` (at any depth) at `revision`, with its `blob_id`.
    fn list(
        &self,
        revision: &Self::Revision,
        dir: &str,
    ) -> impl Future<Output = Result<Listing, StoreError>> + Send;
    /// Writes all `changes` at once on top of `revision`, or reports a conflict.
    fn write(
        &self,
        revision: &Self::Revision,
        changes: &[FileChange],
        message: &str,
    ) -> impl Future<Output = Result<WriteOutcome, StoreError>> + Send;
}

/// A committed batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The commit id, where the store has commits.
    pub id: Option<String>,
    /// The commit message.
    pub message: String,
}

/// How many times a batch is re-applied when concurrent writers move the store.
const MAX_CONFLICTS: usize = 8;

/// Applies batches of outcomes to the store: read fresh, apply, render, write.
pub struct Recorder<M> {
    store: M,
    prefix: String,
    renderer: Renderer,
    namespaces: Vec<(Namespace, Namespace)>,
    timezone: jiff::tz::TimeZone,
    /// How each source was listed this run, written into its record with the next batch.
    listed_by: std::sync::Mutex<Vec<Option<crate::listing::ListedBy>>>,
}

impl<M: MetadataStore> Recorder<M> {
    /// `namespaces[i]` is the (source, target) pair of source `i`; `prefix` is `--metadata-path`.
    pub fn new(
        store: M,
        prefix: &str,
        renderer: Renderer,
        namespaces: Vec<(Namespace, Namespace)>,
        timezone: jiff::tz::TimeZone,
    ) -> Self {
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Recorder {
            store,
            prefix,
            renderer,
            namespaces,
            timezone,
            listed_by: std::sync::Mutex::default(),
        }
    }

    /// How each source was listed this run (`None`: not listed), for its records.
    pub fn listed(&self, by_source: Vec<Option<crate::listing::ListedBy>>) {
        *self.listed_by.lock().unwrap_or_else(|e| e.into_inner()) = by_source;
    }

    fn dir(&self, source: usize) -> String {
        format!(
            "{}{}",
            self.prefix,
            namespace_dir(&self.namespaces[source].0)
        )
    }

    /// The records of every source, importing the seeds' lists where no `images.json` exists.
    pub async fn load_all(&self) -> Result<Vec<NamespaceRecord>, StoreError> {
        let revision = self.store.head().await?;
        let mut records = Vec::with_capacity(self.namespaces.len());
        for source in 0..self.namespaces.len() {
            records.push(self.load(&revision, source).await?);
        }
        Ok(records)
    }

    async fn load(
        &self,
        revision: &M::Revision,
        source: usize,
    ) -> Result<NamespaceRecord, StoreError> {
        let (src, dst) = (
            self.namespaces[source].0.to_string(),
            self.namespaces[source].1.to_string(),
        );
        let Some((path, bytes)) = self.read_record(revision, source).await? else {
            return Ok(NamespaceRecord::new(src, dst));
        };
        let mut record =
            NamespaceRecord::from_json(&bytes, &src, &dst).map_err(|e| StoreError::Invalid {
                path,
                detail: e.to_string(),
            })?;
        // A record follows its source; after a changed --target each image keeps its
        // recorded target, so its tags are planned as re-targeted.
        record.target = dst;
        Ok(record)
    }

    /// The record of `source` as a batch applies to it: images parsed on demand.
    async fn load_batch(
        &self,
        revision: &M::Revision,
        source: usize,
    ) -> Result<BatchRecord, StoreError> {
        let (src, dst) = (
            self.namespaces[source].0.to_string(),
            self.namespaces[source].1.to_string(),
        );
        let Some((path, bytes)) = self.read_record(revision, source).await? else {
            return Ok(BatchRecord::parsed(NamespaceRecord::new(src, dst)));
        };
        let mut record =
            BatchRecord::from_json(bytes, &src, &dst).map_err(|e| StoreError::Invalid {
                path,
                detail: e.to_string(),
            })?;
        record.head.target = dst;
        Ok(record)
    }

    /// The path and bytes of the record of `source`: its `images.json`, or else the seeds'
    /// lists; `None` when there is neither.
    async fn read_record(
        &self,
        revision: &M::Revision,
        source: usize,
    ) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let src = &self.namespaces[source].0;
        let dir = self.dir(source);
        let ns_path = src
            .path
            .as_ref()
            .map_or(src.registry.to_string(), |p| p.to_string());
        let candidates = [
            format!("{dir}/images.json"),
            format!("{dir}/ImageList"),
            format!("{}{ns_path}/ImageList", self.prefix),
            format!("{}{ns_path}", self.prefix),
        ];
        for (i, path) in candidates.into_iter().enumerate() {
            let bytes = match self.store.read(revision, &path).await {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                // The seeds' `<ns>` may be a directory (holding `<ns>/ImageList`): no list.
                Err(StoreError::NotAFile { .. }) if i > 0 => continue,
                Err(e) => return Err(e),
            };
            return Ok(Some((path, bytes)));
        }
        Ok(None)
    }

    /// Commits one batch as one write; `None` when the batch is empty.
    pub async fn commit(
        &self,
        batch: &[(usize, Outcome)],
        now: jiff::Timestamp,
    ) -> Result<Option<Committed>, StoreError> {
        if batch.is_empty() {
            return Ok(None);
        }
        let mut by_source: BTreeMap<usize, Vec<&Outcome>> = BTreeMap::new();
        for (source, outcome) in batch {
            by_source.entry(*source).or_default().push(outcome);
        }
        let message = self.message(&by_source);
        let mut delay = Duration::from_millis(200);
        for _ in 0..MAX_CONFLICTS {
            let revision = self.store.head().await?;
            let changes = self.changes(&revision, &by_source, now).await?;
            if changes.is_empty() {
                // Nothing shown or recorded changed (outcomes already recorded by others).
                return Ok(None);
            }
            match self.store.write(&revision, &changes, &message).await? {
                WriteOutcome::Written { id } => return Ok(Some(Committed { id, message })),
                WriteOutcome::Conflict => {
                    tracing::info!("metadata changed concurrently; re-applying the batch");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        Err(StoreError::Contended(MAX_CONFLICTS))
    }

    /// Commits many outcomes at once (adoptions, legacy imports, `compare`) in a few
    /// commits bounded by size (`batch`), not by `--commit-every`. A failure keeps the
    /// commits made before it, and says so (`StoreError::Incomplete`).
    pub async fn commit_bulk(
        &self,
        outcomes: &[(usize, Outcome)],
        now: jiff::Timestamp,
    ) -> Result<Vec<Committed>, StoreError> {
        let weights: Vec<usize> = outcomes.iter().map(|(_, o)| batch::weight(o)).collect();
        let mut committed = Vec::new();
        for range in batch::batches(&weights, batch::MAX_RECORDS, batch::MAX_BYTES) {
            let left = outcomes.len() - range.start;
            match self.commit(&outcomes[range], now).await {
                Ok(Some(commit)) => {
                    tracing::info!("recorded: {}", commit.message);
                    committed.push(commit);
                }
                Ok(None) => {}
                Err(e) => return Err(e.incomplete(committed, left)),
            }
        }
        Ok(committed)
    }

    /// The files of a batch applied on top of `revision`, only those whose content
    /// changes; `images.json` files come last so that a torn local write never leaves a
    /// record ahead of its pages and README.
    async fn changes(
        &self,
        revision: &M::Revision,
        by_source: &BTreeMap<usize, Vec<&Outcome>>,
        now: jiff::Timestamp,
    ) -> Result<Vec<FileChange>, StoreError> {
        let mut shown = Vec::new();
        let mut records = Vec::new();
        let mut entries = Vec::new();
        for (&source, outcomes) in by_source {
            let mut record = self.load_batch(revision, source).await?;
            let mut changed = record.apply(outcomes.iter().copied());
            let how = {
                let listed = self.listed_by.lock().unwrap_or_else(|e| e.into_inner());
                listed.get(source).copied().flatten()
            };
            if let Some(how) = how.filter(|how| record.head.listed_by != Some(*how)) {
                // A new listing style is worth writing with this batch's record.
                record.head.listed_by = Some(how);
                changed.record = true;
            }
            let lines = change_lines(&record, outcomes.iter().copied());
            let dir = self.dir(source);
            let listing = self.store.list(revision, &dir).await?;
            let files = files::Namespace {
                renderer: &self.renderer,
                dir: &dir,
                listing: &listing,
            };
            let (pages, record_file) = files.changes(record, &changed, &lines)?;
            shown.extend(pages);
            records.extend(record_file);
            entries.extend(lines);
        }
        let mut changes = Vec::new();
        if !entries.is_empty() {
            let time = now.to_zoned(self.timezone.clone());
            let block = self
                .renderer
                .changelog_block(&time.strftime("%Y-%m-%d %H:%M:%S").to_string(), &entries)?;
            drop(entries);
            let month = time.strftime("%Y-%m").to_string();
            changes = self.changelog(revision, block, &month).await?;
        }
        changes.extend(shown);
        changes.extend(records);
        Ok(changes)
    }

    /// `CHANGELOG.md` with `block` on top, its older blocks rotated into
    /// `changelog/YYYY-MM.md` past `changelog::LIMIT` (archives first: a torn local write
    /// leaves a block in both files, never in neither).
    async fn changelog(
        &self,
        revision: &M::Revision,
        block: String,
        this_month: &str,
    ) -> Result<Vec<FileChange>, StoreError> {
        let path = format!("{}CHANGELOG.md", self.prefix);
        let old = self.store.read(revision, &path).await?.unwrap_or_default();
        let new_block = block.len();
        let mut text = block.into_bytes();
        text.extend_from_slice(&old);
        drop(old);
        let rotation = changelog::rotate(
            &text,
            new_block,
            self.renderer.block_start(),
            this_month,
            changelog::LIMIT,
            changelog::KEEP,
        );
        let mut changes = Vec::new();
        if let Some(rotation) = rotation {
            for (month, mut moved) in rotation.moved {
                let archive = format!("{}{}", self.prefix, changelog::archive_path(&month));
                if let Some(mut old) = self.store.read(revision, &archive).await? {
                    // Put in front of the archive read, not the archive after the blocks:
                    // a month of 15,000 tags is 1.6 MB, held once, not twice.
                    old.splice(0..0, moved);
                    moved = old;
                }
                tracing::info!("CHANGELOG.md: older blocks moved into {archive}");
                changes.push(FileChange {
                    path: archive,
                    bytes: Some(moved),
                });
            }
            text.truncate(rotation.keep);
        }
        changes.push(FileChange {
            path,
            bytes: Some(text),
        });
        Ok(changes)
    }

    /// `gcrsync: 12 copied, 3 moved (gcr.io/google-containers)`.
    fn message(&self, by_source: &BTreeMap<usize, Vec<&Outcome>>) -> String {
        let (mut copied, mut moved, mut adopted, mut failed, mut missing) = (0, 0, 0, 0, 0);
        let (mut skipped, mut removed, mut back, mut pruned) = (0, 0, 0, 0);
        let (mut reread, mut referrers) = (0, 0);
        for outcome in by_source.values().flatten() {
            match outcome {
                Outcome::Synced { copied: false, .. } => adopted += 1,
                Outcome::Synced {
                    previous: Some(_), ..
                } => moved += 1,
                Outcome::Synced { .. } => copied += 1,
                Outcome::Failed { .. } => failed += 1,
                Outcome::Missing { .. } => missing += 1,
                Outcome::Skipped { .. } => skipped += 1,
                Outcome::DeletedUpstream { .. } => removed += 1,
                Outcome::BackUpstream { .. } => back += 1,
                Outcome::Pruned { .. } => pruned += 1,
                Outcome::Referrers { added, .. } => {
                    reread += 1;
                    referrers += added;
                }
                Outcome::ReferrersChecked { .. } | Outcome::Forgotten { .. } => {}
            }
        }
        let counts: Vec<String> = [
            (copied, "copied"),
            (moved, "moved"),
            (adopted, "adopted"),
            (failed, "failed"),
            (skipped, "skipped"),
            (missing, "missing"),
            (removed, "removed upstream"),
            (back, "back upstream"),
            (pruned, "pruned"),
            (referrers, "new referrers"),
            (reread, "referrers re-read"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let sources: Vec<String> = by_source
            .keys()
            .map(|&s| self.namespaces[s].0.to_string())
            .collect();
        let counts = match counts.is_empty() {
            true => "records updated".to_string(),
            false => counts.join(", "),
        };
        format!("gcrsync: {counts} ({})", sources.join(", "))
    }
}

/// A namespace's directory in the metadata store: its name (`gcr.io/google-containers`),
/// except that a layout directory `oci:DIR` is kept under `oci/` with its path's plain
/// parts: a colon is refused by Windows checkouts, and a leading `/` or a `..` would leave
/// the store.
fn namespace_dir(ns: &Namespace) -> String {
    let Some(dir) = ns.registry.layout_dir() else {
        return ns.to_string();
    };
    let parts = dir.components().filter_map(|c| match c {
        std::path::Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
        std::path::Component::ParentDir => Some("_up".to_string()),
        _ => None,
    });
    std::iter::once("oci".to_string())
        .chain(parts)
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_namespace_is_kept_under_oci_without_a_colon_or_an_escape() {
        let dir = |text: &str| namespace_dir(&text.parse().unwrap());
        assert_eq!(dir("gcr.io/google-containers"), "gcr.io/google-containers");
        assert_eq!(dir("oci:/srv/mirror"), "oci/srv/mirror");
        assert_eq!(dir("oci:./carried"), "oci/carried");
        assert_eq!(dir("oci:../up/x"), "oci/_up/up/x");
    }
}
