//! Blob downloads, one per digest however many clients ask: the first request starts a
//! download into a temporary file, hashing as it goes; every client (the first too) reads
//! that file as it grows, so late arrivals stream from the fetch in flight instead of
//! waiting for its end. The file becomes cache content only once its size and digest are
//! verified; until then each reader holds back the last byte, so a cut or corrupt upstream
//! body reaches no client complete: their transfers fail instead. A cut body is first
//! resumed with a `Range` request from the bytes received, under the retry policy.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::watch;

use super::Proxy;
use super::errors::{ApiError, from_upstream};
use super::metrics::{add, inc};
use crate::oci::{BlobBody, Registry};
use crate::reference::{Digest, RepoPath};

/// Bytes read from the cache file per body chunk.
const CHUNK: usize = 256 << 10;

/// Where a download stands.
#[derive(Debug, Clone)]
pub enum Progress {
    /// The upstream has not answered yet.
    Connecting,
    /// Bytes are arriving: `written` of `size` (when the upstream said) are in the file.
    Streaming {
        /// `Content-Length` from the upstream.
        size: Option<u64>,
        /// Bytes written and flushed so far.
        written: u64,
    },
    /// Verified and in the cache.
    Done {
        /// The blob's size.
        size: u64,
    },
    /// Not cached; every reader fails with this.
    Failed(ApiError),
}

impl Progress {
    /// The size, once known.
    pub fn size(&self) -> Option<u64> {
        match self {
            Progress::Streaming { size, .. } => *size,
            Progress::Done { size } => Some(*size),
            _ => None,
        }
    }

    /// Bytes a reader may take: all once verified; before that, all but the last byte.
    fn readable(&self) -> Result<Option<u64>, ApiError> {
        match self {
            Progress::Connecting => Ok(None),
            Progress::Streaming { size, written } => Ok(Some(match size {
                Some(size) if written < size => *written,
                _ => written.saturating_sub(1),
            })),
            Progress::Done { size } => Ok(Some(*size)),
            Progress::Failed(e) => Err(e.clone()),
        }
    }
}

/// A download in flight.
pub struct Inflight {
    tmp: PathBuf,
    final_path: PathBuf,
    progress: watch::Receiver<Progress>,
}

/// Downloads in flight, by digest.
#[derive(Default)]
pub struct Fetches(Mutex<HashMap<Digest, Arc<Inflight>>>);

/// What a blob request reads from.
pub enum Source {
    /// A cached file of known size.
    Cached(PathBuf, u64),
    /// A download in flight (`true`: this request joined one already started).
    Inflight(Arc<Inflight>, bool),
}

impl Source {
    /// Waits until the size is known (or the download failed).
    pub async fn size(&self) -> Result<Option<u64>, ApiError> {
        match self {
            Source::Cached(_, size) => Ok(Some(*size)),
            Source::Inflight(inflight, _) => {
                let mut rx = inflight.progress.clone();
                let state = rx
                    .wait_for(|p| !matches!(p, Progress::Connecting))
                    .await
                    .map(|p| p.clone())
                    .unwrap_or_else(|_| Progress::Failed(abandoned()));
                match state {
                    Progress::Failed(e) => Err(e),
                    other => Ok(other.size()),
                }
            }
        }
    }

    /// The bytes `[start, end)` (`end`: to the last byte), as they become readable.
    pub fn read(
        self,
        start: u64,
        end: Option<u64>,
        proxy: Arc<Proxy>,
    ) -> impl Stream<Item = Result<Bytes, io::Error>> + Send + 'static {
        let (paths, progress) = match self {
            Source::Cached(path, size) => {
                let (_tx, rx) = watch::channel(Progress::Done { size });
                (vec![path], rx)
            }
            Source::Inflight(inflight, _) => (
                vec![inflight.tmp.clone(), inflight.final_path.clone()],
                inflight.progress.clone(),
            ),
        };
        let reader = Reader {
            paths,
            progress,
            file: None,
            pos: start,
            end,
        };
        futures_util::stream::unfold(reader, |mut r| async move {
            match r.next().await {
                Ok(None) => None,
                Ok(Some(bytes)) => Some((Ok(bytes), r)),
                Err(e) => {
                    // Ends the stream after the error: the client's transfer fails.
                    r.end = Some(r.pos);
                    Some((Err(e), r))
                }
            }
        })
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                add(&proxy.metrics.served_bytes, bytes.len() as u64);
            }
        })
    }
}

fn abandoned() -> ApiError {
    ApiError::new(503, "UNAVAILABLE", "the upstream download was abandoned")
}

struct Reader {
    /// The temporary file, then the cached one (after the rename).
    paths: Vec<PathBuf>,
    progress: watch::Receiver<Progress>,
    file: Option<tokio::fs::File>,
    pos: u64,
    end: Option<u64>,
}

impl Reader {
    async fn open(&mut self) -> io::Result<()> {
        for path in &self.paths {
            match tokio::fs::File::open(path).await {
                Ok(mut file) => {
                    file.seek(io::SeekFrom::Start(self.pos)).await?;
                    self.file = Some(file);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::NotFound, "blob file gone"))
    }

    async fn next(&mut self) -> io::Result<Option<Bytes>> {
        loop {
            if self.end.is_some_and(|end| self.pos >= end) {
                return Ok(None);
            }
            let state = self.progress.borrow_and_update().clone();
            let readable = state.readable().map_err(|e| io::Error::other(e.message))?;
            if let Progress::Done { size } = state
                && self.pos >= size
            {
                return Ok(None);
            }
            let limit = readable.map(|r| self.end.map_or(r, |e| e.min(r)));
            match limit {
                Some(limit) if limit > self.pos => {
                    if self.file.is_none() {
                        self.open().await?;
                    }
                    let want = (limit - self.pos).min(CHUNK as u64) as usize;
                    let mut buf = BytesMut::zeroed(want);
                    let file = self.file.as_mut().expect("opened");
                    let n = file.read(&mut buf).await?;
                    if n > 0 {
                        buf.truncate(n);
                        self.pos += n as u64;
                        return Ok(Some(buf.freeze()));
                    }
                    if matches!(state, Progress::Done { .. }) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "cached blob shorter than recorded",
                        ));
                    }
                }
                _ => {}
            }
            if self.progress.changed().await.is_err() {
                // The download ended; its last word is still readable.
                let last = self.progress.borrow().clone();
                if !matches!(last, Progress::Done { .. } | Progress::Failed(_)) {
                    return Err(io::Error::other(abandoned().message));
                }
            }
        }
    }
}

/// The blob's source: the cache, the download in flight, or a new download.
pub fn blob_source(
    proxy: &Arc<Proxy>,
    upstream: usize,
    repo: &RepoPath,
    digest: &Digest,
) -> Result<Source, ApiError> {
    let final_path = proxy.cache.blob_path(digest).map_err(|_| {
        ApiError::new(
            400,
            "DIGEST_INVALID",
            format!("{digest}: only sha256 blobs are served"),
        )
    })?;
    if let Some(size) = proxy.cache.lookup(digest) {
        inc(&proxy.metrics.hits);
        return Ok(Source::Cached(final_path, size));
    }
    let mut fetches = proxy.fetches.0.lock().expect("fetches");
    if let Some(inflight) = fetches.get(digest) {
        inc(&proxy.metrics.coalesced);
        return Ok(Source::Inflight(inflight.clone(), true));
    }
    // The download commits before it leaves this map: checked again under its lock.
    if let Some(size) = proxy.cache.lookup(digest) {
        inc(&proxy.metrics.hits);
        return Ok(Source::Cached(final_path, size));
    }
    inc(&proxy.metrics.misses);
    let (tx, rx) = watch::channel(Progress::Connecting);
    let inflight = Arc::new(Inflight {
        tmp: proxy.cache.tmp_path(),
        final_path,
        progress: rx,
    });
    fetches.insert(digest.clone(), inflight.clone());
    drop(fetches);
    let (proxy2, repo, digest, tmp) = (
        proxy.clone(),
        repo.clone(),
        digest.clone(),
        inflight.tmp.clone(),
    );
    // Its own task: the download goes on for the others (and the cache) when the client
    // that started it leaves.
    tokio::spawn(async move {
        let outcome = download(&proxy2, upstream, &repo, &digest, &tmp, &tx).await;
        let last = match outcome {
            Ok(size) => {
                let commit = {
                    let (proxy, tmp, digest) = (proxy2.clone(), tmp.clone(), digest.clone());
                    tokio::task::spawn_blocking(move || proxy.cache.commit(&tmp, &digest, size))
                        .await
                        .unwrap_or_else(|e| Err(io::Error::other(e)))
                };
                match commit {
                    Ok(()) => Progress::Done { size },
                    Err(e) => {
                        tracing::error!("cache: cannot store {digest}: {e}");
                        Progress::Failed(ApiError::new(
                            500,
                            "UNKNOWN",
                            format!("the cache cannot store {digest}: {e}"),
                        ))
                    }
                }
            }
            Err(e) => {
                tracing::warn!("{repo}@{digest}: not cached: {}", e.message);
                Progress::Failed(e)
            }
        };
        let failed = !matches!(last, Progress::Done { .. });
        tx.send_replace(last);
        proxy2.fetches.0.lock().expect("fetches").remove(&digest);
        // Last: once the file is gone, the next request starts afresh (it cannot join
        // this failed download any more).
        if failed {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
    });
    Ok(Source::Inflight(inflight, false))
}

/// One upstream GET of the blob from `offset` (a `Range` request past 0), under the retry
/// policy.
async fn open(
    proxy: &Proxy,
    upstream: usize,
    repo: &RepoPath,
    digest: &Digest,
    offset: u64,
) -> Result<BlobBody, crate::oci::Error> {
    let registry = &proxy.upstreams[upstream].registry;
    proxy
        .retry
        .run("", || {
            inc(&proxy.metrics.upstream_requests);
            registry.get_blob(repo, digest, offset)
        })
        .await
}

/// Downloads into `tmp`, publishing progress; the verified size, or why not. A body the
/// upstream cuts is resumed from the bytes received with a `Range` request, at most
/// `--retries` times, so the clients reading it still get the whole blob.
async fn download(
    proxy: &Proxy,
    upstream: usize,
    repo: &RepoPath,
    digest: &Digest,
    tmp: &PathBuf,
    tx: &watch::Sender<Progress>,
) -> Result<u64, ApiError> {
    let what = format!("{repo}@{digest}");
    let body = open(proxy, upstream, repo, digest, 0)
        .await
        .map_err(|e| from_upstream(&e, &what))?;
    let io_error = |e: io::Error| ApiError::new(500, "UNKNOWN", format!("cache write: {e}"));
    let mut file = tokio::fs::File::create(tmp).await.map_err(io_error)?;
    let size = body.size;
    tx.send_replace(Progress::Streaming { size, written: 0 });
    let mut hasher = sha2::Sha256::new();
    let mut written = 0u64;
    let mut stream = body.stream;
    let mut resumes = proxy.retry.retries;
    loop {
        let chunk = match stream.next().await {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                let cut = format!("{what}: upstream body cut at byte {written}: {e}");
                let complete = size.is_some_and(|s| written >= s);
                if resumes == 0 || complete || !e.is_retryable() {
                    return Err(ApiError::new(502, "UNAVAILABLE", cut));
                }
                resumes -= 1;
                tracing::warn!("{cut}; resuming from there");
                let rest = open(proxy, upstream, repo, digest, written)
                    .await
                    .map_err(|e| {
                        let why = from_upstream(&e, &what).message;
                        ApiError::new(502, "UNAVAILABLE", format!("{cut}; resuming failed: {why}"))
                    })?;
                if let (Some(size), Some(rest)) = (size, rest.size)
                    && written + rest != size
                {
                    return Err(ApiError::new(
                        502,
                        "UNAVAILABLE",
                        format!(
                            "{cut}; the upstream's rest is {rest} bytes, not {}",
                            size - written
                        ),
                    ));
                }
                stream = rest.stream;
                continue;
            }
        };
        add(&proxy.metrics.upstream_bytes, chunk.len() as u64);
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(io_error)?;
        // tokio's File finishes writes in the background: readers see only flushed bytes.
        file.flush().await.map_err(io_error)?;
        written += chunk.len() as u64;
        if size.is_some_and(|s| written > s) {
            break;
        }
        tx.send_replace(Progress::Streaming { size, written });
    }
    if let Some(size) = size.filter(|s| *s != written) {
        return Err(ApiError::new(
            502,
            "UNAVAILABLE",
            format!("{what}: upstream sent {written} bytes, announced {size}"),
        ));
    }
    let actual = hex::encode(hasher.finalize());
    if digest.sha256_hex() != Some(actual.as_str()) {
        return Err(ApiError::new(
            502,
            "UNAVAILABLE",
            format!("{what}: upstream content has digest sha256:{actual}"),
        ));
    }
    Ok(written)
}
