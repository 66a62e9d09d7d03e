//! The disk cache: content-addressed blobs and manifests (`blobs/sha256/HEX`, a manifest's
//! media type beside it in `types/HEX`), tag records per upstream repository, and the
//! least-recently-used index that `--cache-max` evicts by. Every file is written under
//! `tmp/` and renamed into place, so a crash leaves no partial content where it is read.
//! Each upstream repository's last good tag listing is kept beside its tag records, for
//! when the upstream cannot list.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::reference::{Digest, RegistryHost, RepoPath, Tag};

/// What a tag pointed to when last asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagRecord {
    /// The manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// When the upstream last confirmed it (seconds since the epoch).
    pub checked: u64,
}

/// A manifest as stored: its exact bytes and the `Content-Type` it came with.
#[derive(Debug, Clone)]
pub struct CachedManifest {
    /// The bytes.
    pub bytes: Bytes,
    /// The media type.
    pub media_type: String,
    /// Their digest.
    pub digest: Digest,
}

struct Entry {
    size: u64,
    used: u64,
    /// When its file's modification time was last set (seconds since the epoch): the
    /// LRU order a restart rebuilds, kept to within `TOUCH_EVERY`.
    touched: u64,
}

/// A cache hit sets its file's modification time at most this often (seconds): a restart
/// then evicts in use order, at the cost of one syscall per blob per hour, not per hit.
const TOUCH_EVERY: u64 = 3600;

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

/// The cache directory.
pub struct Cache {
    dir: PathBuf,
    max: Option<u64>,
    index: Mutex<Index>,
    unique: AtomicU64,
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn hex(digest: &Digest) -> io::Result<&str> {
    digest
        .sha256_hex()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "only sha256 content is cached"))
}

impl Cache {
    /// Opens (or creates) the cache at `dir`: leftovers of interrupted downloads are
    /// removed, and the content present is indexed, oldest modification first.
    pub fn open(dir: &Path, max: Option<u64>) -> io::Result<Cache> {
        for sub in ["blobs/sha256", "types", "tags", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        for leftover in std::fs::read_dir(dir.join("tmp"))? {
            let _ = std::fs::remove_file(leftover?.path());
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir.join("blobs/sha256"))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((
                modified,
                entry.file_name().to_string_lossy().into_owned(),
                meta.len(),
            ));
        }
        found.sort();
        let mut index = Index::default();
        for (modified, name, size) in found {
            index.clock += 1;
            index.total += size;
            let used = index.clock;
            let touched = modified
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            index.entries.insert(
                name,
                Entry {
                    size,
                    used,
                    touched,
                },
            );
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            max,
            index: Mutex::new(index),
            unique: AtomicU64::new(0),
        })
    }

    /// Bytes of content held.
    pub fn size(&self) -> u64 {
        self.index.lock().expect("cache index").total
    }

    /// Where `digest`'s content lives once cached.
    pub fn blob_path(&self, digest: &Digest) -> io::Result<PathBuf> {
        Ok(self.dir.join("blobs/sha256").join(hex(digest)?))
    }

    /// A fresh temporary path for content on its way in.
    pub fn tmp_path(&self) -> PathBuf {
        let n = self.unique.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()))
    }

    /// The size of `digest` if cached; counts as a use for the LRU order.
    pub fn lookup(&self, digest: &Digest) -> Option<u64> {
        let hex = digest.sha256_hex()?;
        let (size, touch) = {
            let mut index = self.index.lock().expect("cache index");
            index.clock += 1;
            let clock = index.clock;
            let entry = index.entries.get_mut(hex)?;
            entry.used = clock;
            let now = now();
            let touch = now.saturating_sub(entry.touched) >= TOUCH_EVERY;
            if touch {
                entry.touched = now;
            }
            (entry.size, touch)
        };
        if touch {
            let path = self.dir.join("blobs/sha256").join(hex);
            let _ = std::fs::File::open(path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        }
        Some(size)
    }

    /// Moves a verified temporary file into place as `digest` (flushed to disk first, so
    /// a crash after the rename cannot leave a short file), then evicts above `--cache-max`.
    pub fn commit(&self, tmp: &Path, digest: &Digest, size: u64) -> io::Result<()> {
        let path = self.blob_path(digest)?;
        std::fs::File::open(tmp)?.sync_data()?;
        std::fs::rename(tmp, &path)?;
        self.index_new(digest, size);
        Ok(())
    }

    fn index_new(&self, digest: &Digest, size: u64) {
        let Some(hex) = digest.sha256_hex() else {
            return;
        };
        let evicted = {
            let mut index = self.index.lock().expect("cache index");
            index.clock += 1;
            let used = index.clock;
            let entry = Entry {
                size,
                used,
                touched: now(),
            };
            if let Some(old) = index.entries.insert(hex.to_string(), entry) {
                index.total -= old.size;
            }
            index.total += size;
            self.evict(&mut index, hex)
        };
        for name in evicted {
            let _ = std::fs::remove_file(self.dir.join("blobs/sha256").join(&name));
            let _ = std::fs::remove_file(self.dir.join("types").join(&name));
            tracing::debug!("cache: evicted sha256:{name}");
        }
    }

    /// Picks the least recently used entries (never `keep`) until the total fits.
    fn evict(&self, index: &mut Index, keep: &str) -> Vec<String> {
        let Some(max) = self.max else {
            return Vec::new();
        };
        if index.total <= max {
            return Vec::new();
        }
        let mut order: Vec<(u64, String)> = index
            .entries
            .iter()
            .filter(|(name, _)| name.as_str() != keep)
            .map(|(name, e)| (e.used, name.clone()))
            .collect();
        order.sort();
        let mut evicted = Vec::new();
        for (_, name) in order {
            if index.total <= max {
                break;
            }
            if let Some(e) = index.entries.remove(&name) {
                index.total -= e.size;
                evicted.push(name);
            }
        }
        evicted
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.tmp_path();
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Stores a manifest's bytes and media type (the type first: content present means
    /// its type is too).
    pub fn put_manifest(&self, m: &CachedManifest) -> io::Result<()> {
        let hex = hex(&m.digest)?;
        self.write_atomic(&self.dir.join("types").join(hex), m.media_type.as_bytes())?;
        self.write_atomic(&self.blob_path(&m.digest)?, &m.bytes)?;
        self.index_new(&m.digest, m.bytes.len() as u64);
        Ok(())
    }

    /// A cached manifest by digest.
    pub fn manifest(&self, digest: &Digest) -> Option<CachedManifest> {
        let hex = digest.sha256_hex()?;
        let media_type = std::fs::read_to_string(self.dir.join("types").join(hex)).ok()?;
        let bytes = std::fs::read(self.blob_path(digest).ok()?).ok()?;
        self.lookup(digest);
        Some(CachedManifest {
            bytes: bytes.into(),
            media_type,
            digest: digest.clone(),
        })
    }

    fn tag_path(&self, host: &RegistryHost, repo: &RepoPath, tag: &Tag) -> PathBuf {
        // `@` appears in no repository component, so `@tags` never meets a repository.
        self.dir
            .join("tags")
            .join(host.as_str().replace(':', "_"))
            .join(repo.as_str())
            .join("@tags")
            .join(tag.as_str())
    }

    fn list_path(&self, host: &RegistryHost, repo: &RepoPath) -> PathBuf {
        // Beside `@tags`; `@` keeps it apart from repositories below this one.
        self.dir
            .join("tags")
            .join(host.as_str().replace(':', "_"))
            .join(repo.as_str())
            .join("@list")
    }

    /// The last good tag listing of `repo`, if one was kept.
    pub fn tag_list(&self, host: &RegistryHost, repo: &RepoPath) -> Option<Vec<String>> {
        let text = std::fs::read(self.list_path(host, repo)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Keeps `tags` as `repo`'s last good listing (replacing the one before, atomically).
    pub fn put_tag_list(
        &self,
        host: &RegistryHost,
        repo: &RepoPath,
        tags: &[String],
    ) -> io::Result<()> {
        let path = self.list_path(host, repo);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let json = serde_json::to_vec(tags).map_err(io::Error::other)?;
        self.write_atomic(&path, &json)
    }

    /// What `tag` pointed to when last asked, if it was.
    pub fn tag(&self, host: &RegistryHost, repo: &RepoPath, tag: &Tag) -> Option<TagRecord> {
        let text = std::fs::read(self.tag_path(host, repo, tag)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Records what `tag` points to.
    pub fn put_tag(
        &self,
        host: &RegistryHost,
        repo: &RepoPath,
        tag: &Tag,
        record: &TagRecord,
    ) -> io::Result<()> {
        let path = self.tag_path(host, repo, tag);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let json = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.write_atomic(&path, &json)
    }

    /// Forgets `tag` (the upstream deleted it).
    pub fn drop_tag(&self, host: &RegistryHost, repo: &RepoPath, tag: &Tag) {
        let _ = std::fs::remove_file(self.tag_path(host, repo, tag));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> CachedManifest {
        CachedManifest {
            bytes: Bytes::from(text.to_string()),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: Digest::sha256_of(text.as_bytes()),
        }
    }

    #[test]
    fn content_survives_a_restart_and_tmp_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let m = manifest("{}");
        cache.put_manifest(&m).unwrap();
        std::fs::write(cache.tmp_path(), b"partial").unwrap();
        drop(cache);
        let cache = Cache::open(dir.path(), None).unwrap();
        assert_eq!(cache.manifest(&m.digest).unwrap().bytes, m.bytes);
        assert_eq!(cache.size(), 2);
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn least_recently_used_content_is_evicted_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), Some(25)).unwrap();
        let (a, b, c) = (
            manifest("aaaaaaaaaa"),
            manifest("bbbbbbbbbb"),
            manifest("cccccccccc"),
        );
        cache.put_manifest(&a).unwrap();
        cache.put_manifest(&b).unwrap();
        assert!(cache.manifest(&a.digest).is_some()); // a is now newer than b
        cache.put_manifest(&c).unwrap();
        assert!(
            cache.manifest(&b.digest).is_none(),
            "b was least recently used"
        );
        assert!(cache.manifest(&a.digest).is_some() && cache.manifest(&c.digest).is_some());
        assert_eq!(cache.size(), 20);
    }

    #[test]
    fn a_restart_keeps_the_use_order_of_content_used_an_hour_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            manifest("aaaaaaaaaa"),
            manifest("bbbbbbbbbb"),
            manifest("cccccccccc"),
        );
        let cache = Cache::open(dir.path(), None).unwrap();
        cache.put_manifest(&a).unwrap();
        cache.put_manifest(&b).unwrap();
        drop(cache);
        let ago = |hours: u64| {
            std::time::SystemTime::now() - std::time::Duration::from_secs(hours * 3600)
        };
        for (m, hours) in [(&a, 3), (&b, 2)] {
            let file = std::fs::File::open(
                dir.path()
                    .join("blobs/sha256")
                    .join(m.digest.sha256_hex().unwrap()),
            )
            .unwrap();
            file.set_modified(ago(hours)).unwrap();
        }
        // a, the older, is used; after a restart b is the least recently used.
        let cache = Cache::open(dir.path(), None).unwrap();
        assert!(cache.lookup(&a.digest).is_some());
        drop(cache);
        let cache = Cache::open(dir.path(), Some(25)).unwrap();
        cache.put_manifest(&c).unwrap();
        assert!(cache.manifest(&b.digest).is_none(), "b was evicted");
        assert!(cache.manifest(&a.digest).is_some());
    }

    #[test]
    fn tags_are_recorded_per_upstream_repository() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let host: RegistryHost = "localhost:5000".parse().unwrap();
        let repo: RepoPath = "team/app".parse().unwrap();
        let tag: Tag = "1.0".parse().unwrap();
        let record = TagRecord {
            digest: Digest::sha256_of(b"x"),
            media_type: "t".into(),
            checked: 5,
        };
        cache.put_tag(&host, &repo, &tag, &record).unwrap();
        assert_eq!(cache.tag(&host, &repo, &tag), Some(record));
        let other: RepoPath = "team".parse().unwrap();
        assert_eq!(cache.tag(&host, &other, &tag), None);
        cache.drop_tag(&host, &repo, &tag);
        assert_eq!(cache.tag(&host, &repo, &tag), None);
    }

    #[test]
    fn a_tag_listing_is_kept_per_repository_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::open(dir.path(), None).unwrap();
        let host: RegistryHost = "localhost:5000".parse().unwrap();
        let (repo, parent): (RepoPath, RepoPath) =
            ("team/app".parse().unwrap(), "team".parse().unwrap());
        assert_eq!(cache.tag_list(&host, &repo), None);
        let tags = vec!["1".to_string(), "2".to_string()];
        cache.put_tag_list(&host, &repo, &tags).unwrap();
        cache.put_tag_list(&host, &parent, &["x".into()]).unwrap();
        cache.put_tag_list(&host, &repo, &tags[1..]).unwrap();
        drop(cache);
        let cache = Cache::open(dir.path(), None).unwrap();
        assert_eq!(cache.tag_list(&host, &repo), Some(vec!["2".to_string()]));
        assert_eq!(cache.tag_list(&host, &parent), Some(vec!["x".to_string()]));
    }
}
