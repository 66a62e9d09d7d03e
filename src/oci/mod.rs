//! The registry seam: the `Registry` trait the copy engine and the listing talk to.

pub mod any;
pub mod auth;
pub mod clients;
pub mod error;
pub mod http;
pub mod layout;
pub mod manifest;
pub mod referrers;
mod send;
pub mod taglist;

use std::fmt;
use std::future::Future;

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::reference::{Digest, RepoPath, Tag};
pub use error::{Error, Result};
use manifest::RawManifest;
use referrers::ReferrersPage;

/// A manifest is addressed by tag or by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    /// A mutable name.
    Tag(Tag),
    /// Immutable content.
    Digest(Digest),
}

impl fmt::Display for ManifestRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestRef::Tag(t) => t.fmt(f),
            ManifestRef::Digest(d) => d.fmt(f),
        }
    }
}

/// What a HEAD on a manifest tells without downloading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestHead {
    /// `Docker-Content-Digest`.
    pub digest: Digest,
    /// `Content-Type`.
    pub media_type: String,
}

/// What a HEAD on a blob tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHead {
    /// `Content-Length`, when the registry sent it.
    pub size: Option<u64>,
}

/// A blob body on its way from one registry to another.
pub struct BlobBody {
    /// `Content-Length` as announced by the source.
    pub size: Option<u64>,
    /// The bytes, in the order received.
    pub stream: BoxStream<'static, Result<Bytes>>,
}

/// An upload opened on the target: either the mount already did the work, or bytes must follow.
#[derive(Debug)]
pub enum Upload {
    /// The registry linked the blob from another repository; nothing to send.
    Mounted,
    /// The session URL to `PUT` the blob to.
    Session(String),
}

/// One registry, as the distribution spec lets a mirror see it.
///
/// Implemented over HTTP by [`http::HttpRegistry`], over a directory of OCI image layouts
/// by [`layout::LayoutRegistry`]; tests can put a misbehaving fake here.
pub trait Registry: Send + Sync {
    /// Pulls the registry says are left (Docker Hub's `RateLimit-Remaining`), if it says.
    fn pull_quota(&self) -> Option<u64> {
        None
    }
    /// Says which repositories the next requests will address, so that their tokens can
    /// be fetched together (several scopes in one token request); a no-op by default.
    fn prepare(&self, repos: &[RepoPath]) -> impl Future<Output = ()> + Send {
        let _ = repos;
        std::future::ready(())
    }
    /// Every repository the registry lists in `/v2/_catalog`, following pagination.
    fn catalog(&self) -> impl Future<Output = Result<Vec<RepoPath>>> + Send;
    /// Every tag of `repo` (with gcr's children and digests where served), following pagination.
    fn list_tags(&self, repo: &RepoPath) -> impl Future<Output = Result<taglist::TagList>> + Send;
    /// The digest of a manifest by HEAD, or `None` when it does not exist.
    fn head_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
    ) -> impl Future<Output = Result<Option<ManifestHead>>> + Send;
    /// The manifest's exact bytes, digest-checked.
    fn get_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
    ) -> impl Future<Output = Result<RawManifest>> + Send;
    /// Stores `manifest` unchanged under `r`.
    fn put_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a manifest (`DELETE /v2/<repo>/manifests/<r>`): by digest, every tag of it
    /// goes; by tag, only that tag (where the registry allows it). A missing manifest is
    /// an error whose `is_not_found` is true; a registry with deletes disabled answers 405.
    fn delete_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Whether the blob is in `repo`.
    fn blob_exists(
        &self,
        repo: &RepoPath,
        digest: &Digest,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The blob's size by HEAD, without downloading it; `None` when it does not exist.
    fn head_blob(
        &self,
        repo: &RepoPath,
        digest: &Digest,
    ) -> impl Future<Output = Result<Option<BlobHead>>> + Send;
    /// Streams a blob's body from byte `offset` (a `Range` request when not 0).
    fn get_blob(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        offset: u64,
    ) -> impl Future<Output = Result<BlobBody>> + Send;
    /// Opens an upload, first asking to mount `digest` from `from` when given.
    fn start_upload(
        &self,
        repo: &RepoPath,
        mount: Option<(&Digest, &RepoPath)>,
    ) -> impl Future<Output = Result<Upload>> + Send;
    /// Sends the whole blob to an open session in one `PUT` of known size.
    fn finish_upload(
        &self,
        repo: &RepoPath,
        session: &str,
        digest: &Digest,
        size: u64,
        body: BlobBody,
    ) -> impl Future<Output = Result<()>> + Send;
    /// One page of the referrers of `digest` (OCI 1.1 `GET /v2/<name>/referrers/<digest>`,
    /// optionally filtered by `artifact_type`): the first, or `page` (a previous page's
    /// `next`). `None` when the registry has no referrers API (404, or an answer that is
    /// no image index): then the `sha256-<hex>` fallback tag holds them. By default none.
    fn referrers_page(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        artifact_type: Option<&str>,
        page: Option<&str>,
    ) -> impl Future<Output = Result<Option<ReferrersPage>>> + Send {
        let _ = (repo, digest, artifact_type, page);
        std::future::ready(Ok(None))
    }
    /// Whether the registry has the referrers API, as far as this client has seen:
    /// `Some(false)` once it answered as a registry without it (later `referrers_page`
    /// calls are then `None` without a request), `Some(true)` once it served a page,
    /// `None` before it was asked. By default: no API.
    fn referrers_api(&self) -> Option<bool> {
        Some(false)
    }
    /// Stores a manifest that has a `subject` (a referrer) like `put_manifest`, and says
    /// whether the registry indexes it for its referrers API (it answered `OCI-Subject`);
    /// when not, the caller maintains the fallback tag. By default: not.
    fn put_referrer(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> impl Future<Output = Result<bool>> + Send {
        async move { self.put_manifest(repo, r, manifest).await.map(|()| false) }
    }
}
