//! The files of one namespace that a batch changes: the page of each image whose tags
//! changed (or that has none yet), the README when what it shows changed, images.json
//! when the record changed. A file rendered to the bytes the store already holds (same git
//! blob id) is left out, so a commit uploads only what differs.

use std::sync::Arc;

use super::lazy::BatchRecord;
use super::record::Changes;
use super::render::{ChangeLine, RenderError, Renderer, page_path};
use super::{FileChange, Listing, blob_id};

/// GitHub does not render a README much above this (isaacs/github#1610).
const README_RENDERED: usize = 512_000;

/// One namespace's directory as the batch finds it.
pub(super) struct Namespace<'a> {
    pub(super) renderer: &'a Renderer,
    /// The namespace's directory, relative to the store's root.
    pub(super) dir: &'a str,
    /// The files under `dir` at the revision the batch applies to.
    pub(super) listing: &'a Listing,
}

impl Namespace<'_> {
    /// `(pages and README, images.json)` to write for `record` after `changed`, with
    /// `recent` the batch's change lines.
    pub(super) fn changes(
        &self,
        record: BatchRecord,
        changed: &Changes,
        recent: &[ChangeLine],
    ) -> Result<(Vec<FileChange>, Option<FileChange>), RenderError> {
        let record = Arc::new(record);
        let mut shown = Vec::new();
        for name in record.names() {
            let path = format!("{}/{}", self.dir, page_path(name));
            // A page missing from the store (metadata written before pages existed, or
            // deleted by hand) is written even when its tags did not change.
            if changed.images.contains(name) || !self.listing.contains_key(&path) {
                let page = self.renderer.image_page(&record, name)?;
                shown.extend(self.if_different(path, page.into_bytes()));
            }
        }
        for name in changed.images.iter() {
            let path = format!("{}/{}", self.dir, page_path(name));
            if !record.contains(name) && self.listing.contains_key(&path) {
                // Its last tag was found missing from the target (`compare`).
                shown.push(FileChange { path, bytes: None });
            }
        }
        let readme_path = format!("{}/README.md", self.dir);
        let readme_shows_more = !changed.images.is_empty() || !recent.is_empty();
        if readme_shows_more || !shown.is_empty() || !self.listing.contains_key(&readme_path) {
            let readme = self.renderer.readme(&record, recent)?;
            if readme.len() > README_RENDERED {
                tracing::warn!(
                    "{readme_path} is {} bytes: GitHub shows no README past {README_RENDERED}; a shorter --readme-template keeps it readable",
                    readme.len()
                );
            }
            shown.extend(self.if_different(readme_path, readme.into_bytes()));
        }
        let records_path = format!("{}/images.json", self.dir);
        let record_file = if changed.record || !self.listing.contains_key(&records_path) {
            // The pages and README are rendered: the record is this batch's alone again.
            let bytes = Arc::try_unwrap(record).map_or_else(
                |shared| shared.to_json_bytes(),
                BatchRecord::into_json_bytes,
            );
            self.if_different(records_path, bytes)
        } else {
            None
        };
        Ok((shown, record_file))
    }

    /// A change writing `bytes` at `path`, unless the store holds exactly these bytes.
    fn if_different(&self, path: String, bytes: Vec<u8>) -> Option<FileChange> {
        if self
            .listing
            .get(&path)
            .is_some_and(|id| *id == blob_id(&bytes))
        {
            return None;
        }
        Some(FileChange {
            path,
            bytes: Some(bytes),
        })
    }
}
