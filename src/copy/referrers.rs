//! Referrers of a copied image (signatures, attestations, SBOMs), copied verbatim and
//! recursively: read from the source's referrers API where it has one, else from its
//! fallback tag `sha256-<hex>` and cosign's `.sig`/`.att`/`.sbom` tags (which the listing
//! shows); pushed to the target blobs first, and indexed there by the target itself
//! (`OCI-Subject`) or in the fallback tag this maintains (fetch, merge, put; one at a
//! time per subject).

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use super::{Copier, CopyError, fetched, parse};
use crate::oci::manifest::{Contents, OCI_INDEX, RawManifest};
use crate::oci::referrers::{self as api, Referrer, fallback_tag, merge_fallback, parse_index};
use crate::oci::{ManifestRef, Registry};
use crate::reference::{Digest, RepoPath, Tag};
use crate::referrers::{Choice, ListedTag, tags_of};

/// Where a copy of referrers reads from and writes to.
pub struct Place<'a, S> {
    /// The source registry.
    pub src: &'a Arc<S>,
    /// The repository at the source.
    pub src_repo: &'a RepoPath,
    /// The repository at the target.
    pub dst_repo: &'a RepoPath,
    /// The source repository's referrer tags (`sha256-<hex>[.sig|.att|.sbom]`), listed.
    pub tags: &'a [ListedTag],
}

impl<T: Registry> Copier<T> {
    /// [`Copier::copy_referrers`] under this copier's `--referrers` choice.
    pub async fn copy_referrers_chosen<S: Registry + 'static>(
        &self,
        at: &Place<'_, S>,
        subjects: Vec<Digest>,
        known: &HashSet<Digest>,
    ) -> Result<Vec<Digest>, CopyError> {
        let choice = self.referrers.clone();
        self.copy_referrers(at, subjects, &choice, known).await
    }

    /// Copies the referrers of `subjects` and of those referrers, in turn, as `choice`
    /// selects; returns the digests of every referrer found (sorted). Those in `known`
    /// (copied by an earlier run) are not copied again, but their own referrers are read:
    /// a signature of an SBOM may be new.
    pub async fn copy_referrers<S: Registry + 'static>(
        &self,
        at: &Place<'_, S>,
        subjects: Vec<Digest>,
        choice: &Choice,
        known: &HashSet<Digest>,
    ) -> Result<Vec<Digest>, CopyError> {
        let mut found = Vec::new();
        if *choice == Choice::None {
            return Ok(found);
        }
        let mut seen: HashSet<Digest> = subjects.iter().cloned().collect();
        let mut queue = subjects;
        while let Some(subject) = queue.pop() {
            for referrer in self.referrers_of(at, &subject).await? {
                if !choice.wants(referrer.artifact_type.as_deref()) {
                    continue;
                }
                if !known.contains(&referrer.digest) {
                    self.copy_referrer(at, &subject, &referrer).await?;
                }
                if seen.insert(referrer.digest.clone()) {
                    found.push(referrer.digest.clone());
                    queue.push(referrer.digest);
                }
            }
            // cosign's tags are copied as tags (their manifests have no subject).
            for (listed, suffix) in tags_of(&subject, at.tags) {
                let Some(suffix) = suffix else { continue };
                if !choice.wants_cosign(suffix) {
                    continue;
                }
                let digest = match &listed.digest {
                    Some(digest) if known.contains(digest) => digest.clone(),
                    _ => {
                        let tag = &listed.tag;
                        let done = self.copy_tag(at.src, at.src_repo, at.dst_repo, tag).await?;
                        done.digest
                    }
                };
                if seen.insert(digest.clone()) {
                    found.push(digest.clone());
                    queue.push(digest);
                }
            }
        }
        found.sort();
        Ok(found)
    }

    /// Whether this copier copies referrers at all (`--referrers` is not `none`).
    pub fn copies_referrers(&self) -> bool {
        self.referrers != Choice::None
    }

    /// Reads the referrers of a mirrored, unchanged tag again and copies the new ones:
    /// those of `subject` (its source digest) and, for an index, of each child the target
    /// holds (`index`: the target's digest of it, read there, not at the source). Returns
    /// every referrer found, sorted.
    pub async fn recheck_referrers<S: Registry + 'static>(
        &self,
        at: &Place<'_, S>,
        subject: Digest,
        index: Option<&Digest>,
        known: &HashSet<Digest>,
    ) -> Result<Vec<Digest>, CopyError> {
        let mut subjects = vec![subject];
        if let Some(index) = index {
            let reference = ManifestRef::Digest(index.clone());
            let manifest = fetched(
                self.dst.get_manifest(at.dst_repo, &reference).await,
                Some(index),
            )?;
            if let Contents::Index(children) = parse(&manifest, at.dst_repo, &reference, None)? {
                subjects.extend(children.into_iter().map(|(child, _)| child.digest));
            }
        }
        self.copy_referrers_chosen(at, subjects, known).await
    }

    /// The source's referrers of `subject`: its API's list, else its fallback tag's index.
    async fn referrers_of<S: Registry + 'static>(
        &self,
        at: &Place<'_, S>,
        subject: &Digest,
    ) -> Result<Vec<Referrer>, CopyError> {
        if let Some(listed) = api::all(at.src.as_ref(), at.src_repo, subject, None).await? {
            return Ok(listed);
        }
        let fallback = tags_of(subject, at.tags)
            .into_iter()
            .find(|(_, s)| s.is_none());
        let Some((listed, _)) = fallback else {
            return Ok(Vec::new());
        };
        let index = at
            .src
            .get_manifest(at.src_repo, &ManifestRef::Tag(listed.tag.clone()))
            .await?;
        Ok(parse_index(&index.bytes).unwrap_or_default())
    }

    /// One referrer manifest, blobs first; then, unless the target indexed it itself,
    /// its entry in the target's fallback tag of `subject`.
    async fn copy_referrer<S: Registry + 'static>(
        &self,
        at: &Place<'_, S>,
        subject: &Digest,
        referrer: &Referrer,
    ) -> Result<(), CopyError> {
        let reference = ManifestRef::Digest(referrer.digest.clone());
        let manifest = fetched(
            at.src.get_manifest(at.src_repo, &reference).await,
            Some(&referrer.digest),
        )?;
        let contents = parse(&manifest, at.src_repo, &reference, Some(&referrer.digest))?;
        Box::pin(self.copy_contents(at.src, at.src_repo, at.dst_repo, &contents, None)).await?;
        if self
            .dst
            .put_referrer(at.dst_repo, &reference, &manifest)
            .await?
        {
            return Ok(());
        }
        let tag: Tag = fallback_tag(subject)
            .parse()
            .expect("sha256-<hex> is a valid tag");
        let tag_ref = ManifestRef::Tag(tag);
        let lock = self
            .fallback_locks
            .lock()
            .expect("fallback locks")
            .entry((at.dst_repo.clone(), subject.clone()))
            .or_default()
            .clone();
        let _held = lock.lock().await;
        // One GET: a 404 means no referrer indexed there yet.
        let existing = match self.dst.get_manifest(at.dst_repo, &tag_ref).await {
            Ok(index) => Some(index.bytes),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(merged) = merge_fallback(existing.as_deref(), referrer) {
            let index = RawManifest::new(Bytes::from(merged), Some(OCI_INDEX));
            self.dst.put_manifest(at.dst_repo, &tag_ref, &index).await?;
        }
        Ok(())
    }
}
