//! The local-directory metadata store (`--metadata-dir`): atomic write-then-rename files.

use std::path::{Path, PathBuf};

use super::{FileChange, Listing, MetadataStore, StoreError, WriteOutcome, blob_id};

/// Metadata kept in a directory with the same layout as the GitHub repository.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> Self {
        LocalStore { root }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `bytes` beside `path`, syncs, then renames over it: a reader (or a run killed
/// midway) sees the old file or the new one, never a torn one.
async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    use tokio::io::AsyncWriteExt;
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(io_error(dir))?;
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(io_error(&tmp))?;
    file.write_all(bytes).await.map_err(io_error(&tmp))?;
    file.sync_all().await.map_err(io_error(&tmp))?;
    tokio::fs::rename(&tmp, path).await.map_err(io_error(path))
}

impl MetadataStore for LocalStore {
    type Revision = ();

    async fn head(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn read(&self, _: &(), path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.path(path);
        match tokio::fs::read(&full).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A directory where a file may be (`<ns>` vs `<ns>/ImageList`) is no file.
            Err(_) if full.is_dir() => Err(StoreError::NotAFile {
                path: path.to_string(),
            }),
            Err(e) => Err(io_error(&full)(e)),
        }
    }

    /// Walks `dir`, reading one file at a time to hash it.
    async fn list(&self, _: &(), dir: &str) -> Result<Listing, StoreError> {
        let mut listing = Listing::new();
        let mut pending = vec![dir.trim_matches('/').to_string()];
        while let Some(relative) = pending.pop() {
            let full = self.path(&relative);
            let mut entries = match tokio::fs::read_dir(&full).await {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(_) if full.is_file() => continue,
                Err(e) => return Err(io_error(&full)(e)),
            };
            while let Some(entry) = entries.next_entry().await.map_err(io_error(&full))? {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let path = format!("{relative}/{name}");
                let kind = entry.file_type().await.map_err(io_error(&entry.path()))?;
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_file() && !name.contains(".tmp-") {
                    let bytes = tokio::fs::read(entry.path())
                        .await
                        .map_err(io_error(&entry.path()))?;
                    listing.insert(path, blob_id(&bytes));
                }
            }
        }
        Ok(listing)
    }

    async fn write(
        &self,
        _: &(),
        changes: &[FileChange],
        _message: &str,
    ) -> Result<WriteOutcome, StoreError> {
        for change in changes {
            let path = self.path(&change.path);
            match &change.bytes {
                Some(bytes) => write_atomically(&path, bytes).await?,
                None => match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io_error(&path)(e));
                    }
                    _ => {}
                },
            }
        }
        Ok(WriteOutcome::Written { id: None })
    }
}
