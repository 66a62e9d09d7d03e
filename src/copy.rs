//! The copy engine: one tag, verbatim, from a source `Registry` to a target `Registry`.
//! Children before their index, blobs before their manifest, each blob HEAD-checked,
//! mounted where the target already holds it, deduplicated across concurrent copies,
//! and streamed with its digest and size verified.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::try_join_all;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;
use tokio::sync::Semaphore;

use crate::oci::http::RetryPolicy;
use crate::oci::manifest::{Contents, Descriptor, ManifestError, RawManifest};
use crate::oci::{self, BlobBody, ManifestRef, Registry, Upload};
use crate::reference::{Digest, RepoPath, Tag};

/// Why a tag could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A registry operation failed (after retries).
    #[error(transparent)]
    Registry(#[from] oci::Error),
    /// The manifest cannot be copied verbatim.
    #[error("{reference}: {source}")]
    Manifest {
        /// The manifest.
        reference: String,
        /// Why.
        source: ManifestError,
    },
}

/// What was copied for one tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The digest pushed (equal to the source's at copy time).
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Platforms of a multi-arch image.
    pub platforms: Vec<String>,
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
    transfers: Semaphore,
    retry: RetryPolicy,
}

impl<T: Registry> Copier<T> {
    /// `transfers` bounds concurrent blob transfers across every tag being copied.
    pub fn new(dst: Arc<T>, transfers: usize, retry: RetryPolicy) -> Self {
        Copier {
            dst,
            ledger: BlobLedger::default(),
            transfers: Semaphore::new(transfers.max(1)),
            retry,
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
        let manifest = src.get_manifest(src_repo, &reference).await?;
        let contents = parse(&manifest, src_repo, &reference)?;
        let platforms = contents.platforms();
        self.copy_contents(src, src_repo, dst_repo, &contents)
            .await?;
        self.dst
            .put_manifest(dst_repo, &reference, &manifest)
            .await?;
        Ok(Copied {
            digest: manifest.digest,
            media_type: manifest.media_type,
            platforms,
        })
    }

    async fn copy_contents<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        contents: &Contents,
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
                try_join_all(
                    blobs
                        .iter()
                        .map(|blob| self.copy_blob(src, src_repo, dst_repo, blob)),
                )
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
        let manifest = src.get_manifest(src_repo, &reference).await?;
        let contents = parse(&manifest, src_repo, &reference)?;
        Box::pin(self.copy_contents(src, src_repo, dst_repo, &contents)).await?;
        self.dst
            .put_manifest(dst_repo, &reference, &manifest)
            .await?;
        Ok(())
    }

    /// One blob: known here → nothing; on the target → nothing; elsewhere on the target →
    /// mount; otherwise stream it over. Retried as a whole: a broken upload is abandoned.
    async fn copy_blob<S: Registry + 'static>(
        &self,
        src: &Arc<S>,
        src_repo: &RepoPath,
        dst_repo: &RepoPath,
        blob: &Descriptor,
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
            self.retry
                .run(&format!("copy {src_repo}@{}", blob.digest), || {
                    self.transfer(src, src_repo, dst_repo, blob, mount_from.as_ref())
                })
                .await?;
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
        let body = BlobBody {
            size: Some(blob.size),
            stream: verified.boxed(),
        };
        self.dst
            .finish_upload(dst_repo, &session, &blob.digest, blob.size, body)
            .await
    }
}

/// The source side of a blob transfer: when the download breaks mid-way, it continues
/// with a `Range` request from the last byte received (up to `resumes` times), so the
/// upload in progress goes on instead of starting over.
fn resuming<S: Registry + 'static>(
    src: Arc<S>,
    repo: RepoPath,
    blob: Descriptor,
    first: BlobBody,
    resumes: usize,
) -> BoxStream<'static, oci::Result<Bytes>> {
    let state = (Some(first.stream), 0u64, resumes);
    futures_util::stream::unfold(state, move |(stream, offset, left)| {
        let (src, repo, blob) = (src.clone(), repo.clone(), blob.clone());
        async move {
            let mut stream = stream?;
            let (offset, mut left) = (offset, left);
            loop {
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        let offset = offset + chunk.len() as u64;
                        return Some((Ok(chunk), (Some(stream), offset, left)));
                    }
                    Some(Err(e))
                        if e.is_retryable() && left > 0 && offset > 0 && offset < blob.size =>
                    {
                        tracing::warn!("{repo}@{}: {e}; resuming at byte {offset}", blob.digest);
                        left -= 1;
                        match src.get_blob(&repo, &blob.digest, offset).await {
                            Ok(rest) => stream = rest.stream,
                            Err(e) => return Some((Err(e), (None, offset, 0))),
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (None, offset, 0))),
                    None => return None,
                }
            }
        }
    })
    .boxed()
}

fn parse(
    manifest: &RawManifest,
    repo: &RepoPath,
    reference: &ManifestRef,
) -> Result<Contents, CopyError> {
    manifest.contents().map_err(|source| CopyError::Manifest {
        reference: format!("{repo}:{reference}"),
        source,
    })
}

/// Passes a blob's bytes through while hashing them; ends with an error instead of
/// end-of-stream when the digest or size is wrong, so the upload is never completed.
struct Verifying {
    inner: futures_util::stream::BoxStream<'static, oci::Result<Bytes>>,
    hasher: sha2::Sha256,
    seen: u64,
    expected: Digest,
    size: u64,
    what: String,
    done: bool,
}

impl Verifying {
    fn new(
        inner: futures_util::stream::BoxStream<'static, oci::Result<Bytes>>,
        expected: Digest,
        size: u64,
        what: String,
    ) -> oci::Result<Self> {
        if expected.sha256_hex().is_none() {
            return Err(oci::Error::Unsupported {
                what,
                detail: "only sha256 blobs can be verified".into(),
            });
        }
        Ok(Verifying {
            inner,
            hasher: sha2::Sha256::new(),
            seen: 0,
            expected,
            size,
            what,
            done: false,
        })
    }

    fn check(&mut self) -> oci::Result<()> {
        if self.seen != self.size {
            return Err(oci::Error::SizeMismatch {
                what: self.what.clone(),
                expected: self.size,
                actual: self.seen,
            });
        }
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        if actual != self.expected.as_str() {
            return Err(oci::Error::DigestMismatch {
                what: self.what.clone(),
                expected: self.expected.to_string(),
                actual,
            });
        }
        Ok(())
    }
}

impl Stream for Verifying {
    type Item = oci::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.hasher.update(&chunk);
                self.seen += chunk.len() as u64;
                // The check runs on the last byte, not at end-of-stream: with a known
                // Content-Length the HTTP client stops polling once `size` bytes are sent,
                // so a bad final chunk must be withheld for the upload to be abandoned.
                if self.seen >= self.size {
                    self.done = true;
                    return Poll::Ready(Some(self.check().map(|()| chunk)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(self.check().err().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;

    async fn drain(
        chunks: Vec<&'static [u8]>,
        expected: Digest,
        size: u64,
    ) -> oci::Result<Vec<u8>> {
        let inner = stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c)))).boxed();
        let mut s = Verifying::new(inner, expected, size, "blob".into())?;
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            out.extend_from_slice(&item?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn verifying_stream_passes_good_bytes_and_stops_bad_ones() {
        let good = Digest::sha256_of(b"hello world");
        assert_eq!(
            drain(vec![b"hello ", b"world"], good.clone(), 11)
                .await
                .unwrap(),
            b"hello world"
        );
        let altered = drain(vec![b"hello ", b"World"], good.clone(), 11).await;
        assert!(matches!(altered, Err(oci::Error::DigestMismatch { .. })));
        let truncated = drain(vec![b"hello "], good.clone(), 11).await;
        assert!(matches!(
            truncated,
            Err(oci::Error::SizeMismatch { actual: 6, .. })
        ));
        let bad_last_chunk = drain(vec![b"hello ", b"worlD"], good.clone(), 11).await;
        assert!(matches!(
            bad_last_chunk,
            Err(oci::Error::DigestMismatch { .. })
        ));
        // Nothing beyond the announced size is passed on.
        assert_eq!(
            drain(vec![b"hello world", b"!"], good, 11).await.unwrap(),
            b"hello world"
        );
    }
}
