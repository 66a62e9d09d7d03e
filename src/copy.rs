//! The copy engine: one tag, verbatim, from a source `Registry` to a target `Registry`.
//! Children before their index, blobs before their manifest, each blob HEAD-checked,
//! mounted where the target already holds it, deduplicated across concurrent copies,
//! and streamed with its digest and size verified.

pub mod referrers;
mod stream;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::try_join_all;
use tokio::sync::Semaphore;

use crate::oci::http::RetryPolicy;
use crate::oci::manifest::{
    CONFIG_LIMIT, Contents, Descriptor, ManifestError, RawManifest, config_platform,
};
use crate::oci::{self, BlobBody, ManifestRef, Registry, Upload};
use crate::platforms::{PlatformSet, SKIP_MARK, Subset, subset_index};
use crate::reference::{Digest, RepoPath, Tag};
use stream::{Verifying, resuming};

/// Why a tag could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A registry operation failed (after retries).
    #[error(transparent)]
    Registry(#[from] oci::Error),
    /// The manifest cannot be read.
    #[error("{reference}: {source}")]
    Manifest {
        /// The manifest.
        reference: String,
        /// Why.
        source: ManifestError,
    },
    /// The manifest (or a child of it) cannot be mirrored verbatim: the tag is skipped.
    #[error("{0}")]
    Uncopyable(String),
}

impl CopyError {
    /// Why the tag is skipped rather than failed: its content cannot be mirrored verbatim,
    /// which stays true for as long as its digest does.
    pub fn skip_reason(&self) -> Option<&str> {
        match self {
            CopyError::Uncopyable(reason) => Some(reason),
            _ => None,
        }
    }
}

/// What was copied for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The digest pushed (the source's, unless `--platforms` rebuilt the index).
    pub digest: Digest,
    /// The source's digest, when it differs from `digest` (a platform subset).
    pub source_digest: Option<Digest>,
    /// Its media type.
    pub media_type: String,
    /// Platforms of a multi-arch image, or the one platform its config names.
    pub platforms: Vec<String>,
    /// Platforms of the source's index left out by `--platforms`.
    pub dropped: Vec<String>,
    /// The child manifests of a copied index (their referrers are copied too).
    pub children: Vec<Digest>,
    /// The referrers copied with it (filled by the run, see `copy::referrers`).
    pub referrers: Vec<Digest>,
    /// The mark of its referrer tags as listed, when its referrers were read
    /// (`referrers::recheck::mark`).
    pub referrer_mark: Option<String>,
}

/// Per blob digest, the target repositories known to hold it. The per-digest async lock
/// makes concurrent copies of one blob wait for the first and then mount or skip.
#[derive(Default)]
struct BlobLedger {
    entries: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<HashSet<RepoPath>>>>>,
}

impl BlobLedger {
    fn entry(&self, digest: &Digest) -> Arc<tokio::sync::Mutex<HashSet<RepoPath>>> {
        self.entries
            .lock()
            .expect("ledger lock")
            .entry(digest.clone())
            .or_default()
            .clone()
    }
}

/// Copies tags into one target registry; shared by all concurrent copies of a run.
pub struct Copier<T> {
    dst: Arc<T>,
    ledger: BlobLedger,
    /// Platform named by each image config seen in this run, by config digest.
    configs: Mutex<HashMap<Digest, Option<String>>>,
    transfers: Semaphore,
    retry: RetryPolicy,
    /// `--platforms`: `None` copies every platform, verbatim.
    platforms: Option<PlatformSet>,
    /// `--referrers`: which referrers of a copied tag are copied with it.
    referrers: crate::referrers::Choice,
    /// Per (target repository, subject): a lock around the read, merge and put of its
    /// fallback index, so that two tags of one digest copied at once lose no entry.
    fallback_locks: Mutex<HashMap<(RepoPath, Digest), SubjectLock>>,
}

/// See [`Copier::fallback_locks`].
type SubjectLock = Arc<tokio::sync::Mutex<()>>;

impl<T: Registry> Copier<T> {
    /// `transfers` bounds concurrent blob transfers across every tag being copied.
    pub fn new(dst: Arc<T>, transfers: usize, retry: RetryPolicy) -> Self {
        Copier {
            dst,
            ledger: BlobLedger::default(),
            configs: Mutex::default(),
            transfers: Semaphore::new(transfers.max(1)),
            retry,
            platforms: None,
            referrers: crate::referrers::Choice::None,
            fallback_locks: Mutex::default(),
        }
    }

    /// Copies the referrers `choice` selects with each tag (`--referrers`; default none).
    pub fn with_referrers(mut self, choice: crate::referrers::Choice) -> Self {
        self.referrers = choice;
        self
    }

    /// Copies only `platforms` of multi-arch images (`--platforms`); `None`: all, verbatim.
    pub fn with_platforms(mut self, platforms: Option<PlatformSet>) -> Self {
        self.platforms = platforms;
        self
    }

    /// Applies `--platforms` to a source manifest: the manifest to push (the source's,
    /// or its index rebuilt from the chosen children) and the platforms dropped; a skip
    /// when nothing of it is chosen. A single image's platform costs one small GET of its
    /// config (noted, so the copy does not read it again).
    async fn choose<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        manifest: RawManifest,
        contents: Contents,
    ) -> Result<(RawManifest, Contents, Vec<String>), CopyError> {
        let Some(chosen) = &self.platforms else {
            return Ok((manifest, contents, Vec::new()));
        };
        let config = match &contents {
            Contents::Index(_) => None,
            Contents::Image(blobs) => blobs.first().filter(|c| c.size <= CONFIG_LIMIT),
        };
        if let Some(config) = config {
            return match self.config_platform(src, src_repo, config).await {
                Some(p) if !chosen.contains(&p) => Err(CopyError::Uncopyable(format!(
                    "its platform {p} is not{SKIP_MARK}{chosen}"
                ))),
                // An image of a chosen platform, or of none (an artifact): copied.
                _ => Ok((manifest, contents, Vec::new())),
            };
        }
        if !matches!(contents, Contents::Index(_)) {
            return Ok((manifest, contents, Vec::new()));
        }
        let what = format!("{src_repo}@{}", manifest.digest);
        let malformed = |e| CopyError::Manifest {
            reference: what.clone(),
            source: ManifestError::Malformed(e),
        };
        match subset_index(&manifest.bytes, chosen).map_err(malformed)? {
            Subset::All => Ok((manifest, contents, Vec::new())),
            Subset::Nothing(had) => Err(CopyError::Uncopyable(format!(
                "none of its platforms ({}) is{SKIP_MARK}{chosen}",
                had.join(", ")
            ))),
            Subset::Rebuilt { bytes, dropped } => {
                let rebuilt = RawManifest::new(Bytes::from(bytes), Some(&manifest.media_type));
                let contents = rebuilt.contents().map_err(|source| CopyError::Manifest {
                    reference: what.clone(),
                    source,
                })?;
                Ok((rebuilt, contents, dropped))
            }
        }
    }

    /// Copies `src_repo:tag` to `dst_repo:tag` byte for byte.
    pub async fn copy_tag<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        tag: &Tag,
    ) -> Result<Copied, CopyError> {
        let reference = ManifestRef::Tag(tag.clone());
        let fetched = fetched(src.get_manifest(src_repo, &reference).await, None)?;
        let source_digest = fetched.digest.clone();
        let contents = parse(&fetched, src_repo, &reference, None)?;
        let (manifest, contents, dropped) = self.choose(src, src_repo, fetched, contents).await?;
        let mut platforms = contents.platforms();
        // A single image's platform is in its config, read as it streams past.
        let config = match &contents {
            Contents::Image(blobs) => blobs.first().filter(|c| c.size <= CONFIG_LIMIT),
            Contents::Index(_) => None,
        };
        self.copy_contents(src, src_repo, dst_repo, &contents, config)
            .await?;
        if let Some(config) = config {
            platforms.extend(self.config_platform(src, src_repo, config).await);
        }
        self.dst
            .put_manifest(dst_repo, &reference, &manifest)
            .await?;
        let children = match &contents {
            Contents::Index(children) => children.iter().map(|(c, _)| c.digest.clone()).collect(),
            Contents::Image(_) => Vec::new(),
        };
        Ok(Copied {
            children,
            referrers: Vec::new(),
            referrer_mark: None,
            source_digest: (manifest.digest != source_digest).then_some(source_digest),
            digest: manifest.digest,
            media_type: manifest.media_type,
            platforms,
            dropped,
        })
    }

    /// The platform an image config names: noted while it streamed, else (the target
    /// already had it) read from the source, one small GET. Unreadable: no platform.
    async fn config_platform<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        config: &Descriptor,
    ) -> Option<String> {
        if let Some(known) = self
            .configs
            .lock()
            .expect("configs lock")
            .get(&config.digest)
        {
            return known.clone();
        }
        let read = async {
            let body = src.get_blob(src_repo, &config.digest, 0).await?;
            let what = format!("{src_repo}@{}", config.digest);
            let mut verified =
                Verifying::new(body.stream, config.digest.clone(), config.size, what)?;
            let mut bytes = Vec::with_capacity(config.size as usize);
            while let Some(chunk) = verified.next().await {
                bytes.extend_from_slice(&chunk?);
            }
            Ok::<_, oci::Error>(bytes)
        };
        let platform = match read.await {
            Ok(bytes) => config_platform(&config.media_type, &bytes),
            Err(e) => {
                tracing::warn!("{src_repo}: config not read for its platform: {e}");
                return None;
            }
        };
        self.note_config(&config.digest, platform.clone());
        platform
    }

    fn note_config(&self, digest: &Digest, platform: Option<String>) {
        self.configs
            .lock()
            .expect("configs lock")
            .insert(digest.clone(), platform);
    }

    async fn copy_contents<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        contents: &Contents,
        config: Option<&Descriptor>,
    ) -> Result<(), CopyError> {
        match contents {
            Contents::Index(children) => {
                try_join_all(
                    children
                        .iter()
                        .map(|(child, _)| self.copy_child(src, src_repo, dst_repo, child)),
                )
                .await?;
            }
            Contents::Image(blobs) => {
                try_join_all(blobs.iter().map(|blob| {
                    let keep = config.is_some_and(|c| c == blob);
                    self.copy_blob(src, src_repo, dst_repo, blob, keep)
                }))
                .await?;
            }
        }
        Ok(())
    }

    /// A child manifest of an index, by digest; skipped when the target already has it
    /// (a registry only accepts a manifest once its blobs are present).
    async fn copy_child<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        child: &Descriptor,
    ) -> Result<(), CopyError> {
        let reference = ManifestRef::Digest(child.digest.clone());
        if self
            .dst
            .head_manifest(dst_repo, &reference)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let manifest = fetched(
            src.get_manifest(src_repo, &reference).await,
            Some(&child.digest),
        )?;
        let contents = parse(&manifest, src_repo, &reference, Some(&child.digest))?;
        Box::pin(self.copy_contents(src, src_repo, dst_repo, &contents, None)).await?;
        self.dst
            .put_manifest(dst_repo, &reference, &manifest)
            .await?;
        Ok(())
    }

    /// One blob: known here → nothing; on the target → nothing; elsewhere on the target →
    /// mount; otherwise stream it over. Retried as a whole: a broken upload is abandoned.
    /// `keep`: a small image config, whose platform is noted as it streams past.
    async fn copy_blob<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        blob: &Descriptor,
        keep: bool,
    ) -> Result<(), CopyError> {
        let entry = self.ledger.entry(&blob.digest);
        let mut holders = entry.lock().await;
        if holders.contains(dst_repo) {
            return Ok(());
        }
        let _permit = self
            .transfers
            .acquire()
            .await
            .expect("semaphore never closed");
        if !self.dst.blob_exists(dst_repo, &blob.digest).await? {
            let mount_from = holders.iter().next().cloned();
            let tap = keep.then(|| Arc::new(Mutex::new(Vec::new())));
            self.retry
                .run(&format!("copy {src_repo}@{}", blob.digest), || {
                    let tap = tap.clone();
                    self.transfer(src, src_repo, dst_repo, blob, mount_from.as_ref(), tap)
                })
                .await?;
            // Complete only when streamed (not mounted) and verified on the last byte.
            let seen = tap.map(|t| std::mem::take(&mut *t.lock().expect("tap lock")));
            if let Some(bytes) = seen.filter(|b| b.len() as u64 == blob.size) {
                self.note_config(&blob.digest, config_platform(&blob.media_type, &bytes));
            }
        }
        holders.insert(dst_repo.clone());
        Ok(())
    }

    async fn transfer<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        blob: &Descriptor,
        mount_from: Option<&RepoPath>,
        tap: Option<Arc<Mutex<Vec<u8>>>>,
    ) -> oci::Result<()> {
        let mount = mount_from.map(|from| (&blob.digest, from));
        let Upload::Session(session) = self.dst.start_upload(dst_repo, mount).await? else {
            return Ok(());
        };
        let body = src.get_blob(src_repo, &blob.digest, 0).await?;
        if let Some(announced) = body.size.filter(|s| *s != blob.size) {
            return Err(oci::Error::SizeMismatch {
                what: format!("{src_repo}@{}", blob.digest),
                expected: blob.size,
                actual: announced,
            });
        }
        let body = resuming(
            src.clone(),
            src_repo.clone(),
            blob.clone(),
            body,
            self.retry.retries,
        );
        let what = format!("{src_repo}@{}", blob.digest);
        let verified = Verifying::new(body, blob.digest.clone(), blob.size, what)?;
        let stream = match tap {
            None => verified.boxed(),
            Some(tap) => {
                tap.lock().expect("tap lock").clear();
                verified
                    .inspect(move |item| {
                        let mut seen = tap.lock().expect("tap lock");
                        if let Ok(chunk) = item {
                            if seen.len() as u64 <= CONFIG_LIMIT {
                                seen.extend_from_slice(chunk);
                            }
                        }
                    })
                    .boxed()
            }
        };
        let body = BlobBody {
            size: Some(blob.size),
            stream,
        };
        self.dst
            .finish_upload(dst_repo, &session, &blob.digest, blob.size, body)
            .await
    }
}

/// The platforms of an index the target already holds (an adopted tag), read from the
/// source by digest: one GET per adopted index, once per tag (adoption is not repeated).
/// Informational: when it cannot be read, the tag is adopted without platforms.
pub async fn index_platforms<S: Registry>(
    src: &S,
    repo: &RepoPath,
    digest: &Digest,
) -> Vec<String> {
    let reference = ManifestRef::Digest(digest.clone());
    let read = src.get_manifest(repo, &reference).await;
    match read
        .map_err(CopyError::from)
        .and_then(|m| parse(&m, repo, &reference, None))
    {
        Ok(contents) => contents.platforms(),
        Err(e) => {
            tracing::warn!("{repo}@{digest}: platforms not read: {e}");
            Vec::new()
        }
    }
}

/// Why a tag is skipped, naming the child when it is an index's child that is uncopyable.
fn skip_because(reason: String, child: Option<&Digest>) -> CopyError {
    CopyError::Uncopyable(match child {
        Some(digest) => format!("child manifest {digest}: {reason}"),
        None => reason,
    })
}

/// A fetched manifest; the registry client's "cannot be mirrored" becomes a skip.
fn fetched(
    result: oci::Result<RawManifest>,
    child: Option<&Digest>,
) -> Result<RawManifest, CopyError> {
    result.map_err(|e| match e {
        oci::Error::Unsupported { detail, .. } => skip_because(detail, child),
        e => CopyError::Registry(e),
    })
}

fn parse(
    manifest: &RawManifest,
    repo: &RepoPath,
    reference: &ManifestRef,
    child: Option<&Digest>,
) -> Result<Contents, CopyError> {
    manifest.contents().map_err(|source| match source {
        ManifestError::Uncopyable(reason) => skip_because(reason, child),
        source => CopyError::Manifest {
            reference: format!("{repo}:{reference}"),
            source,
        },
    })
}
