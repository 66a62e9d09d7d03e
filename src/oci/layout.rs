//! `oci:DIR`: a directory of OCI image layouts (image-layout 1.1) as a [`Registry`], one
//! layout per image at `DIR/<image path>`, so `skopeo copy oci:DIR/pause:3.9 …` reads
//! what a mirror wrote, and a mirror can read what was carried across an air gap.
//!
//! Writes are crash-safe: every file is written beside its place, synced and renamed, blobs
//! before the manifests naming them, manifests before `index.json`; a killed run leaves at
//! most unreferenced blobs and temporary files, never a torn or dangling `index.json`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::manifest::{OCI_INDEX, RawManifest};
use super::taglist::{TagInfo, TagList};
use super::{BlobBody, BlobHead, Error, ManifestHead, ManifestRef, Registry, Result, Upload};
use crate::reference::{Digest, RepoPath, Tag};

/// The annotation naming a tag in `index.json` (what skopeo and umoci read).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The `oci-layout` file's content.
const LAYOUT_VERSION: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// Read size of blob streams.
const CHUNK: usize = 256 * 1024;

/// A directory of image layouts, read and written as a registry.
pub struct LayoutRegistry {
    root: PathBuf,
    /// One lock per layout: `index.json` updates of concurrent tags are serialised, so
    /// none is lost (a read-modify-rename by two tasks at once would drop one entry).
    locks: Mutex<HashMap<RepoPath, Arc<tokio::sync::Mutex<()>>>>,
    /// Names temporary files uniquely within this process.
    counter: AtomicU64,
    /// Layouts whose leftovers of killed runs were swept by this process.
    swept: Mutex<HashSet<RepoPath>>,
}

/// `index.json`: entries are kept as written (other tools' annotations and fields stay).
#[derive(Serialize, Deserialize)]
struct LayoutIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(default)]
    manifests: Vec<Value>,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// What an `index.json` entry says about a tagged manifest.
struct Entry {
    digest: Digest,
    media_type: String,
}

fn entry_tag(entry: &Value) -> Option<&str> {
    entry.get("annotations")?.get(REF_NAME)?.as_str()
}

fn entry_of(entry: &Value) -> Option<Entry> {
    Some(Entry {
        digest: entry.get("digest")?.as_str()?.parse().ok()?,
        media_type: entry
            .get("mediaType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    })
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Layout {
        path: path.display().to_string(),
        detail: e.to_string(),
        missing: e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn missing(path: &Path, detail: impl Into<String>) -> Error {
    Error::Layout {
        path: path.display().to_string(),
        detail: detail.into(),
        missing: true,
    }
}

fn invalid(path: &Path, detail: impl Into<String>) -> Error {
    Error::Layout {
        path: path.display().to_string(),
        detail: detail.into(),
        missing: false,
    }
}

/// Why `dir` cannot be opened as a directory of layouts (`for_writing`: it may not exist
/// yet, and is created on the first write), in words that say what to write instead.
pub fn check_dir(dir: &Path, for_writing: bool) -> std::result::Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => {
            return Err(format!("{} is a file, not a directory", dir.display()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && for_writing => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "{} does not exist; give the directory a mirror wrote (one image layout per image below it)",
                dir.display()
            ));
        }
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    }
    if dir.join("oci-layout").exists() {
        return Err(format!(
            "{} is itself one image layout; gcrsync keeps one layout per image below DIR (DIR/<image>), so give a directory of its own (or its parent, for reading)",
            dir.display()
        ));
    }
    Ok(())
}

impl LayoutRegistry {
    /// The layouts below `root` (checked by [`check_dir`] first, where options are read).
    pub fn new(root: PathBuf) -> Self {
        LayoutRegistry {
            root,
            locks: Mutex::default(),
            counter: AtomicU64::new(0),
            swept: Mutex::default(),
        }
    }

    fn layout(&self, repo: &RepoPath) -> PathBuf {
        self.root.join(repo.as_str())
    }

    fn blob_path(&self, repo: &RepoPath, digest: &Digest) -> PathBuf {
        let (algorithm, hex) = digest.as_str().split_once(':').unwrap_or(("sha256", ""));
        self.layout(repo).join("blobs").join(algorithm).join(hex)
    }

    fn lock(&self, repo: &RepoPath) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("layout locks");
        locks.entry(repo.clone()).or_default().clone()
    }

    /// A fresh temporary path inside the layout (the same file system as its target, so
    /// the final rename is atomic); never inside `blobs/`, which readers walk.
    fn temp_path(&self, repo: &RepoPath, what: &str) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!(".gcrsync-{what}-{}-{n}.tmp", std::process::id());
        self.layout(repo).join(name)
    }

    async fn read_index(&self, repo: &RepoPath) -> Result<LayoutIndex> {
        let path = self.layout(repo).join("index.json");
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| invalid(&path, format!("not an image index: {e}")))
    }

    /// The entry tagged `tag`, the last one when a tool wrote several.
    async fn tagged(&self, repo: &RepoPath, tag: &Tag) -> Result<Option<Entry>> {
        let index = match self.read_index(repo).await {
            Err(e) if e.is_not_found() => return Ok(None),
            other => other?,
        };
        Ok(index
            .manifests
            .iter()
            .rev()
            .find(|e| entry_tag(e) == Some(tag.as_str()))
            .and_then(entry_of))
    }

    /// Writes `bytes` to `path` through a synced temporary file and a rename.
    async fn write_file(&self, repo: &RepoPath, path: &Path, bytes: &[u8]) -> Result<()> {
        let temp = self.temp_path(repo, "file");
        let write = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            file.write_all(bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&temp, path).await
        };
        if let Err(e) = write.await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io_error(path, e));
        }
        Ok(())
    }

    /// Removes the temporary files a killed run left in the layout (those of other
    /// processes: one process writes a layout at a time), once per run and layout.
    async fn sweep(&self, repo: &RepoPath) {
        if !self.swept.lock().expect("swept").insert(repo.clone()) {
            return;
        }
        let Ok(mut entries) = tokio::fs::read_dir(self.layout(repo)).await else {
            return;
        };
        let mine = format!("-{}-", std::process::id());
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".gcrsync-") && name.ends_with(".tmp") && !name.contains(&mine) {
                tracing::debug!("{repo}: removing {name}, left by a run that was killed");
                let _ = tokio::fs::remove_file(entry.path()).await;
            }
        }
    }

    /// Creates the layout's directories and its `oci-layout` file, once.
    async fn ensure_layout(&self, repo: &RepoPath, algorithm: &str) -> Result<()> {
        self.sweep(repo).await;
        let dir = self.layout(repo);
        let blobs = dir.join("blobs").join(algorithm);
        tokio::fs::create_dir_all(&blobs)
            .await
            .map_err(|e| io_error(&blobs, e))?;
        let marker = dir.join("oci-layout");
        if !tokio::fs::try_exists(&marker).await.unwrap_or(false) {
            self.write_file(repo, &marker, LAYOUT_VERSION).await?;
        }
        Ok(())
    }

    /// Stores a blob's bytes under its digest (already verified by the caller).
    async fn put_blob_bytes(&self, repo: &RepoPath, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(repo, digest);
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        self.write_file(repo, &path, bytes).await
    }

    /// Adds or moves `tag` in `index.json`, atomically, under the layout's lock.
    async fn tag(&self, repo: &RepoPath, tag: &Tag, manifest: &RawManifest) -> Result<()> {
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let mut index = match self.read_index(repo).await {
            Err(e) if e.is_not_found() => LayoutIndex {
                schema_version: 2,
                manifests: Vec::new(),
                rest: Map::from_iter([("mediaType".to_string(), json!(OCI_INDEX))]),
            },
            other => other?,
        };
        index
            .manifests
            .retain(|e| entry_tag(e) != Some(tag.as_str()));
        index.manifests.push(json!({
            "mediaType": manifest.media_type,
            "digest": manifest.digest,
            "size": manifest.bytes.len(),
            "annotations": {REF_NAME: tag},
        }));
        let bytes = serde_json::to_vec(&index).expect("index serializes");
        let path = self.layout(repo).join("index.json");
        self.write_file(repo, &path, &bytes).await?;
        // The rename is durable once the directory is synced.
        if let Ok(dir) = tokio::fs::File::open(self.layout(repo)).await {
            let _ = dir.sync_all().await;
        }
        Ok(())
    }

    async fn read_manifest(
        &self,
        repo: &RepoPath,
        digest: &Digest,
        media_type: Option<&str>,
    ) -> Result<RawManifest> {
        let path = self.blob_path(repo, digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        let manifest = RawManifest::new(Bytes::from(bytes), media_type);
        if digest.sha256_hex().is_some() && manifest.digest != *digest {
            return Err(Error::DigestMismatch {
                what: path.display().to_string(),
                expected: digest.to_string(),
                actual: manifest.digest.to_string(),
            });
        }
        Ok(manifest)
    }
}

/// Every directory below `root` holding an `oci-layout` file, as repository paths; a
/// layout's own `blobs/` is not walked, and names no registry could hold are skipped.
fn walk_layouts(root: &Path) -> std::io::Result<Vec<RepoPath>> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let is_layout = dir != root && dir.join("oci-layout").is_file();
        if is_layout {
            let relative = dir.strip_prefix(root).unwrap_or(&dir);
            let name = relative
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            match name.parse::<RepoPath>() {
                Ok(repo) => found.push(repo),
                Err(e) => tracing::warn!("{}: not mirrored: {e}", dir.display()),
            }
        }
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let hidden = name.to_string_lossy().starts_with('.');
            if hidden || (is_layout && name == "blobs") || !entry.file_type()?.is_dir() {
                continue;
            }
            stack.push(entry.path());
        }
    }
    found.sort();
    Ok(found)
}

// No referrers API (the trait's default `None`): in a layout, referrers are what skopeo and
// oras write there, manifests tagged `sha256-<hex>` (the distribution spec's fallback) in
// `index.json`, which `list_tags` shows like any tag. Scanning every blob for a `subject`
// would read the whole layout for each image.
impl Registry for LayoutRegistry {
    async fn catalog(&self) -> Result<Vec<RepoPath>> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || walk_layouts(&root).map_err(|e| io_error(&root, e)))
            .await
            .expect("walk does not panic")
    }

    /// Every tag with its digest and media type from `index.json`: a listing needs no
    /// request per tag, as with gcr's manifest map.
    async fn list_tags(&self, repo: &RepoPath) -> Result<TagList> {
        let index = self.read_index(repo).await?;
        let mut list = TagList::default();
        for entry in &index.manifests {
            let (Some(name), Some(found)) = (entry_tag(entry), entry_of(entry)) else {
                continue;
            };
            let Ok(tag) = name.parse::<Tag>() else {
                tracing::warn!("{repo}: {REF_NAME} {name:?} is no tag; not mirrored");
                continue;
            };
            let info = TagInfo {
                digest: found.digest,
                uploaded_ms: None,
                media_type: Some(found.media_type)
                    .filter(|m| !m.is_empty())
                    .map(super::manifest::shared_media_type),
            };
            list.digests.insert(tag, info);
        }
        list.tags = list.digests.keys().cloned().collect();
        Ok(list)
    }

    async fn head_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
    ) -> Result<Option<ManifestHead>> {
        match r {
            ManifestRef::Tag(tag) => {
                let Some(entry) = self.tagged(repo, tag).await? else {
                    return Ok(None);
                };
                if entry.media_type.is_empty() {
                    // An entry without its type: the manifest's own field tells.
                    let m = self.read_manifest(repo, &entry.digest, None).await?;
                    return Ok(Some(ManifestHead {
                        digest: m.digest,
                        media_type: m.media_type,
                    }));
                }
                Ok(Some(ManifestHead {
                    digest: entry.digest,
                    media_type: entry.media_type,
                }))
            }
            ManifestRef::Digest(digest) => match self.read_manifest(repo, digest, None).await {
                Ok(m) => Ok(Some(ManifestHead {
                    digest: m.digest,
                    media_type: m.media_type,
                })),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            },
        }
    }

    async fn get_manifest(&self, repo: &RepoPath, r: &ManifestRef) -> Result<RawManifest> {
        match r {
            ManifestRef::Tag(tag) => {
                let entry = self.tagged(repo, tag).await?.ok_or_else(|| {
                    missing(
                        &self.layout(repo).join("index.json"),
                        format!("no manifest tagged {tag}"),
                    )
                })?;
                let media_type = Some(entry.media_type.as_str()).filter(|m| !m.is_empty());
                self.read_manifest(repo, &entry.digest, media_type).await
            }
            ManifestRef::Digest(digest) => self.read_manifest(repo, digest, None).await,
        }
    }

    async fn put_manifest(
        &self,
        repo: &RepoPath,
        r: &ManifestRef,
        manifest: &RawManifest,
    ) -> Result<()> {
        self.ensure_layout(repo, "sha256").await?;
        self.put_blob_bytes(repo, &manifest.digest, &manifest.bytes)
            .await?;
        match r {
            ManifestRef::Tag(tag) => self.tag(repo, tag, manifest).await,
            // A child of an index is reached through its index; it has no entry of its own.
            ManifestRef::Digest(_) => Ok(()),
        }
    }

    /// Removes the `index.json` entries of the digest (every tag of it) or of the tag. The
    /// blobs stay: other entries may share them, and readers ignore what no entry names
    /// (`umoci gc` removes them).
    async fn delete_manifest(&self, repo: &RepoPath, r: &ManifestRef) -> Result<()> {
        let lock = self.lock(repo);
        let _held = lock.lock().await;
        let mut index = self.read_index(repo).await?;
        let before = index.manifests.len();
        index.manifests.retain(|e| match r {
            ManifestRef::Tag(tag) => entry_tag(e) != Some(tag.as_str()),
            ManifestRef::Digest(d) => entry_of(e).is_none_or(|found| found.digest != *d),
        });
        let path = self.layout(repo).join("index.json");
        if index.manifests.len() == before {
            return Err(missing(&path, format!("no manifest {r}")));
        }
        let bytes = serde_json::to_vec(&index).expect("index serializes");
        self.write_file(repo, &path, &bytes).await?;
        if let Ok(dir) = tokio::fs::File::open(self.layout(repo)).await {
            let _ = dir.sync_all().await;
        }
        Ok(())
    }

    async fn blob_exists(&self, repo: &RepoPath, digest: &Digest) -> Result<bool> {
        Ok(tokio::fs::metadata(self.blob_path(repo, digest))
            .await
            .is_ok_and(|m| m.is_file()))
    }

    async fn head_blob(&self, repo: &RepoPath, digest: &Digest) -> Result<Option<BlobHead>> {
        Ok(tokio::fs::metadata(self.blob_path(repo, digest))
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|m| BlobHead {
                size: Some(m.len()),
            }))
    }

    async fn get_blob(&self, repo: &RepoPath, digest: &Digest, offset: u64) -> Result<BlobBody> {
        let path = self.blob_path(repo, digest);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(&path, e))?;
        let len = file.metadata().await.map_err(|e| io_error(&path, e))?.len();
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_error(&path, e))?;
        let stream = futures_util::stream::unfold(Some((file, path)), |state| async move {
            let (mut file, path) = state?;
            let mut buffer = BytesMut::with_capacity(CHUNK);
            match file.read_buf(&mut buffer).await {
                Ok(0) => None,
                Ok(_) => Some((Ok(buffer.freeze()), Some((file, path)))),
                Err(e) => Some((Err(io_error(&path, e)), None)),
            }
        });
        Ok(BlobBody {
            size: Some(len.saturating_sub(offset)),
            stream: stream.boxed(),
        })
    }

    /// A "mount" links the blob from another layout of this directory (copies it where
    /// links are refused), so a layer shared by many images costs one transfer.
    async fn start_upload(
        &self,
        repo: &RepoPath,
        mount: Option<(&Digest, &RepoPath)>,
    ) -> Result<Upload> {
        let session = self.temp_path(repo, "upload").display().to_string();
        let Some((digest, from)) = mount else {
            return Ok(Upload::Session(session));
        };
        let source = self.blob_path(from, digest);
        if !tokio::fs::try_exists(&source).await.unwrap_or(false) {
            return Ok(Upload::Session(session));
        }
        let algorithm = digest.as_str().split_once(':').map_or("sha256", |(a, _)| a);
        self.ensure_layout(repo, algorithm).await?;
        let dest = self.blob_path(repo, digest);
        let temp = PathBuf::from(&session);
        let linked = match tokio::fs::hard_link(&source, &temp).await {
            Ok(()) => Ok(()),
            Err(_) => tokio::fs::copy(&source, &temp).await.map(drop),
        };
        if let Err(e) = linked.and(tokio::fs::rename(&temp, &dest).await) {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(io_error(&dest, e));
        }
        Ok(Upload::Mounted)
    }

    /// Streams the blob to a temporary file, checks its size and digest, syncs it and
    /// renames it into `blobs/`: a blob file is complete and verified, or absent.
    async fn finish_upload(
        &self,
        repo: &RepoPath,
        session: &str,
        digest: &Digest,
        size: u64,
        body: BlobBody,
    ) -> Result<()> {
        use sha2::Digest as _;
        let algorithm = digest.as_str().split_once(':').map_or("sha256", |(a, _)| a);
        self.ensure_layout(repo, algorithm).await?;
        let temp = PathBuf::from(session);
        let dest = self.blob_path(repo, digest);
        let write = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| io_error(&temp, e))?;
            let mut hasher = sha2::Sha256::new();
            let mut written = 0u64;
            let mut stream = body.stream;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error(&temp, e))?;
            }
            if written != size {
                return Err(Error::SizeMismatch {
                    what: dest.display().to_string(),
                    expected: size,
                    actual: written,
                });
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if digest.sha256_hex().is_some() && actual != digest.as_str() {
                return Err(Error::DigestMismatch {
                    what: dest.display().to_string(),
                    expected: digest.to_string(),
                    actual,
                });
            }
            file.sync_all().await.map_err(|e| io_error(&temp, e))?;
            tokio::fs::rename(&temp, &dest)
                .await
                .map_err(|e| io_error(&dest, e))
        };
        let written = write.await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        written
    }
}
