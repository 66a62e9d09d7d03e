//! Either kind of registry a run talks to: one over HTTP, or a directory of image layouts
//! (`oci:DIR`). The `Registry` trait's futures make it no trait object; this enum is one.

use super::http::HttpRegistry;
use super::layout::LayoutRegistry;
use super::manifest::RawManifest;
use super::referrers::ReferrersPage;
use super::taglist::TagList;
use super::{BlobBody, BlobHead, ManifestHead, ManifestRef, Registry, Result, Upload};
use crate::reference::{Digest, RepoPath};

/// A source or target as configured.
// One per registry of a run, behind an `Arc`: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum AnyRegistry {
    /// A registry over HTTP.
    Http(HttpRegistry),
    /// `oci:DIR`.
    Layout(LayoutRegistry),
}

/// Calls the same method on whichever registry this is.
macro_rules! each {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            AnyRegistry::Http($r) => $call.await,
            AnyRegistry::Layout($r) => $call.await,
        }
    };
}

impl Registry for AnyRegistry {
    fn pull_quota(&self) -> Option<u64> {
        match self {
            AnyRegistry::Http(r) => r.pull_quota(),
            AnyRegistry::Layout(r) => r.pull_quota(),
        }
    }
    async fn prepare(&self, repos: &[RepoPath]) {
        each!(self, r => r.prepare(repos))
    }
    async fn catalog(&self) -> Result<Vec<RepoPath>> {
        each!(self, r => r.catalog())
    }
    async fn list_tags(&self, repo: &RepoPath) -> Result<TagList> {
        each!(self, r => r.list_tags(repo))
    }
    async fn head_manifest(
        &self,
        repo: &RepoPath,
        m: &ManifestRef,
    ) -> Result<Option<ManifestHead>> {
        each!(self, r => r.head_manifest(repo, m))
    }
    async fn get_manifest(&self, repo: &RepoPath, m: &ManifestRef) -> Result<RawManifest> {
        each!(self, r => r.get_manifest(repo, m))
    }
    async fn put_manifest(
        &self,
        repo: &RepoPath,
        m: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<()> {
        each!(self, r => r.put_manifest(repo, m, manifest))
    }
    async fn delete_manifest(&self, repo: &RepoPath, m: &ManifestRef) -> Result<()> {
        each!(self, r => r.delete_manifest(repo, m))
    }
    async fn blob_exists(&self, repo: &RepoPath, digest: &Digest) -> Result<bool> {
        each!(self, r => r.blob_exists(repo, digest))
    }
    async fn head_blob(&self, repo: &RepoPath, digest: &Digest) -> Result<Option<BlobHead>> {
        each!(self, r => r.head_blob(repo, digest))
    }
    async fn get_blob(&self, repo: &RepoPath, digest: &Digest, offset: u64) -> Result<BlobBody> {
        each!(self, r => r.get_blob(repo, digest, offset))
    }
    async fn start_upload(
        &self,
        repo: &RepoPath,
        mount: Option<(&Digest, &RepoPath)>,
    ) -> Result<Upload> {
        each!(self, r => r.start_upload(repo, mount))
    }
    async fn finish_upload(
        &self,
        repo: &RepoPath,
        session: &str,
        digest: &Digest,
        size: u64,
        body: BlobBody,
    ) -> Result<()> {
        each!(self, r => r.finish_upload(repo, session, digest, size, body))
    }
    async fn referrers_page(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        artifact_type: Option<&str>,
        page: Option<&str>,
    ) -> Result<Option<ReferrersPage>> {
        each!(self, r => r.referrers_page(repo, digest, artifact_type, page))
    }
    fn referrers_api(&self) -> Option<bool> {
        match self {
            AnyRegistry::Http(r) => r.referrers_api(),
            AnyRegistry::Layout(r) => r.referrers_api(),
        }
    }
    async fn put_referrer(
        &self,
        repo: &RepoPath,
        m: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<bool> {
        each!(self, r => r.put_referrer(repo, m, manifest))
    }
}
