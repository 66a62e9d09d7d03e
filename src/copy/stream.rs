//! A blob's bytes on their way from source to target: resumed with a `Range` request when
//! the download breaks, and verified (sha256 and size) so a bad upload is never completed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;

use crate::oci::manifest::Descriptor;
use crate::oci::{self, BlobBody, Registry};
use crate::reference::{Digest, RepoPath};

/// The source side of a blob transfer: when the download breaks mid-way, it continues
/// with a `Range` request from the last byte received (up to `resumes` times), so the
/// upload in progress goes on instead of starting over.
pub(super) fn resuming<S: Registry + 'static>(
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

/// Passes a blob's bytes through while hashing them; ends with an error instead of
/// end-of-stream when the digest or size is wrong, so the upload is never completed.
pub(super) struct Verifying {
    inner: futures_util::stream::BoxStream<'static, oci::Result<Bytes>>,
    hasher: sha2::Sha256,
    seen: u64,
    expected: Digest,
    size: u64,
    what: String,
    done: bool,
}

impl Verifying {
    pub(super) fn new(
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
