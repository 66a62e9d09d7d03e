//! The local-directory metadata store (`--metadata-dir`): atomic write-then-rename files.

use std::path::{Path, PathBuf};

use sha1::{Digest as _, Sha1};

use super::{FileChange, Listing, MetadataStore, StoreError, WriteOutcome};

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

/// A file's bytes, in a buffer allocated on this thread and filled on a blocking one:
/// buffers allocated on tokio's blocking threads stay in their malloc arenas once freed, and
/// a 5 MB images.json read each batch from a different thread grew the process by
/// megabytes a batch.
async fn read_here(path: &Path) -> std::io::Result<Vec<u8>> {
    let size = tokio::fs::metadata(path).await?.len();
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0) + 1);
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        std::fs::File::open(&path)?.read_to_end(&mut buf)?;
        Ok(buf)
    })
    .await
    .expect("reading does not panic")
}

/// The git blob id of a file (as `blob_id`), read in small pieces: a 5 MB images.json is
/// hashed without being held.
fn hash_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {size}\0").as_bytes());
    let mut buf = [0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hex::encode(hasher.finalize()))
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
    // In slices: tokio's `File` copies what it is given into a buffer of its own (up to
    // 2 MB) for its blocking thread; an images.json of 4.5 MB is not copied whole.
    for part in bytes.chunks(256 * 1024) {
        file.write_all(part).await.map_err(io_error(&tmp))?;
    }
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
        match read_here(&full).await {
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
                    let file = entry.path();
                    let id = tokio::task::spawn_blocking(move || hash_file(&file))
                        .await
                        .expect("hashing does not panic")
                        .map_err(io_error(&entry.path()))?;
                    listing.insert(path, id);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listing_has_the_git_blob_ids_of_the_files_and_deletes_are_applied() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().to_path_buf());
        let big = vec![b'x'; 200_000];
        let changes = [
            FileChange {
                path: "ns/a.md".into(),
                bytes: Some(b"hello\n".to_vec()),
            },
            FileChange {
                path: "ns/sub/b.json".into(),
                bytes: Some(big.clone()),
            },
        ];
        store.write(&(), &changes, "m").await.unwrap();
        let listing = store.list(&(), "ns").await.unwrap();
        // `git hash-object` of "hello\n".
        assert_eq!(
            listing["ns/a.md"],
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(listing["ns/sub/b.json"], super::super::blob_id(&big));
        assert!(store.list(&(), "other").await.unwrap().is_empty());
        let delete = [FileChange {
            path: "ns/a.md".into(),
            bytes: None,
        }];
        store.write(&(), &delete, "m").await.unwrap();
        assert_eq!(store.list(&(), "ns").await.unwrap().len(), 1);
    }
}
