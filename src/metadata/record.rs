//! The `images.json` schema of one namespace, and how a batch of outcomes updates it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::reference::Digest;

/// The current time as records write it: RFC 3339, UTC, whole seconds.
pub fn now_utc() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Reads a JSON object into a `BTreeMap` built at once from its entries. Filled key by key
/// in the (sorted) order of the file, a map splits each full node in two and keeps its
/// nodes a little over half full: at 15,000 tags the records took ≈ 450 bytes of nodes per
/// tag for ≈ 250 of entries (issue 14). Built from the sorted entries, the nodes are full.
/// A key given twice keeps its last value, as serde's own map does.
fn packed<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: serde::Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Entries<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Entries<V> {
        type Value = Vec<(String, V)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0));
            while let Some(entry) = map.next_entry()? {
                entries.push(entry);
            }
            Ok(entries)
        }
    }
    let entries = d.deserialize_map(Entries(std::marker::PhantomData))?;
    Ok(entries.into_iter().collect())
}

/// Everything recorded about one source namespace (SPEC §5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
///
/// The fields of every record type are declared in alphabetical order: `to_json` writes
/// them in declaration order, and images.json has every object's keys sorted.
pub struct NamespaceRecord {
    /// Tags whose last copy failed, keyed `image:tag`.
    #[serde(default, deserialize_with = "packed")]
    pub failed: BTreeMap<String, Failure>,
    /// Images by name relative to the source namespace.
    #[serde(default, deserialize_with = "packed")]
    pub images: BTreeMap<String, ImageRecord>,
    /// How the namespace was listed last (issue 14: a catalog registry is not probed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed_by: Option<crate::listing::ListedBy>,
    /// Whether the source answered as a registry with the referrers API (`false`: then
    /// only tags can bring referrers, and the listing shows those).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers_api: Option<bool>,
    /// Unchanged tags' referrers were read again up to this time (RFC 3339, UTC): the
    /// next run reads those whose turn of `--referrers-recheck` came since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrers_checked_through: Option<String>,
    /// Tags that cannot be mirrored verbatim (schema 1, unknown types), keyed `image:tag`;
    /// not fetched again while the source keeps serving the recorded digest.
    #[serde(default, deserialize_with = "packed")]
    pub skipped: BTreeMap<String, Skip>,
    /// The source namespace, e.g. `gcr.io/google-containers`.
    pub source: String,
    /// The target namespace.
    pub target: String,
}

/// A tag left out on purpose: what the source serves, why, and since when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Skip {
    /// The source manifest digest that was judged.
    pub digest: Digest,
    /// Why it cannot be mirrored.
    pub reason: String,
    /// When this digest was first skipped (RFC 3339, UTC).
    pub since: String,
}

/// The mirrored tags of one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// Tags by name.
    #[serde(default, deserialize_with = "packed")]
    pub tags: BTreeMap<String, TagRecord>,
    /// The target repository, e.g. `docker.io/myuser/pause`.
    pub target: String,
}

/// One tag as it was mirrored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TagRecord {
    /// When a complete source listing first no longer showed the tag (RFC 3339, UTC);
    /// cleared when it is listed again. The mirror keeps it unless `--prune` deletes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_upstream_at: Option<String>,
    /// The manifest digest on the target (on both sides unless `source_digest` is set);
    /// `None` for entries imported from the seeds' lists.
    pub digest: Option<Digest>,
    /// Platforms of upstream's index that `--platforms` left out (so a changed choice is
    /// seen without a request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_platforms: Vec<String>,
    /// The manifest media type.
    #[serde(default)]
    pub media_type: String,
    /// The platforms of a multi-arch image, or the one its config names (empty when
    /// unknown: adopted single images, records from before platforms were read).
    #[serde(default)]
    pub platforms: Vec<String>,
    /// When `--prune` deleted the tag from the target (RFC 3339, UTC): the record stays,
    /// so what was mirrored is not forgotten, but the mirror no longer holds it (runs treat
    /// it as unrecorded, so a tag that comes back is copied again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_at: Option<String>,
    /// A short hash of its digest's referrer tags as last listed (`sha256-<hex>`, cosign's
    /// `.sig`/`.att`/`.sbom`): a listing that shows another has them read again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub referrer_tags: Option<String>,
    /// The referrers copied with it (signatures, attestations, SBOMs; recursively), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referrers: Vec<Digest>,
    /// Upstream's digest, when the mirror holds other bytes: an index cut down to
    /// `--platforms`. Runs compare the listing with this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<Digest>,
    /// When it was recorded (RFC 3339, UTC).
    pub synced_at: String,
}

/// Why a tag could not be copied, kept so the next run retries it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// Consecutive failed runs.
    pub attempts: u32,
    /// The last error.
    pub error: String,
    /// When it last failed (RFC 3339, UTC).
    pub last_at: String,
}

/// What happened to one tag in this run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Copied (or adopted: already on the target with this digest).
    Synced {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// The target repository.
        target: String,
        /// What was recorded.
        record: TagRecord,
        /// The digest recorded before, when the tag moved.
        previous: Option<Digest>,
        /// Whether bytes were copied (`false`: adopted).
        copied: bool,
    },
    /// `compare` found the recorded tag absent from the target: the record is dropped.
    Missing {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
    },
    /// The manifest cannot be mirrored verbatim: recorded under `skipped`, not retried
    /// while its digest stays the same.
    Skipped {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// The source digest judged.
        digest: Digest,
        /// Why.
        reason: String,
        /// When.
        at: String,
    },
    /// A complete source listing no longer shows the recorded tag: it is marked
    /// `deleted_upstream_at` (the mirror keeps it unless `--prune` deletes it).
    DeletedUpstream {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// When.
        at: String,
    },
    /// A tag never mirrored (failed, or skipped) is gone upstream: its `failed` and
    /// `skipped` entries go.
    Forgotten {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
    },
    /// A tag marked deleted upstream is listed again: the mark is cleared.
    BackUpstream {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
    },
    /// `--prune` deleted the tag (marked deleted upstream) from the target: its record
    /// stays, with `pruned_at`.
    Pruned {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// When.
        at: String,
    },
    /// An unchanged tag's referrers were read again (its turn of `--referrers-recheck`,
    /// or the listing showed its referrer tags changed); the new ones were copied.
    Referrers {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// The source digest whose referrers were read.
        subject: Digest,
        /// Every referrer found, sorted (what the record lists).
        referrers: Vec<Digest>,
        /// How many of them were new (copied by this run).
        added: usize,
        /// The mark of its referrer tags as listed.
        mark: Option<String>,
    },
    /// What a run learnt of the source's referrers: every tag due for a re-read up to
    /// `through` was read (the schedule moves on), and whether it has the API.
    ReferrersChecked {
        /// The run's start (RFC 3339, UTC), when the schedule moves on.
        through: Option<String>,
        /// Whether the source has the referrers API, when the run asked.
        api: Option<bool>,
    },
    /// The copy failed; nothing is recorded as synced.
    Failed {
        /// Image name relative to the namespace.
        image: String,
        /// The tag.
        tag: String,
        /// The error.
        error: String,
        /// When.
        at: String,
    },
}

impl Outcome {
    /// The image (relative to the namespace) the outcome is about.
    pub fn image(&self) -> &str {
        match self {
            Outcome::Synced { image, .. }
            | Outcome::Missing { image, .. }
            | Outcome::Skipped { image, .. }
            | Outcome::DeletedUpstream { image, .. }
            | Outcome::BackUpstream { image, .. }
            | Outcome::Pruned { image, .. }
            | Outcome::Forgotten { image, .. }
            | Outcome::Referrers { image, .. }
            | Outcome::Failed { image, .. } => image,
            // The namespace's own fields.
            Outcome::ReferrersChecked { .. } => "",
        }
    }
}

/// A writer that only counts the bytes written to it.
pub(super) struct Counter(pub(super) usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What applying outcomes changed in a record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Images whose tags, target or skipped tags changed (or that were removed).
    pub images: std::collections::BTreeSet<String>,
    /// Whether anything in the record changed (images, failures, skipped tags).
    pub record: bool,
}

impl NamespaceRecord {
    /// An empty record for a namespace pair.
    pub fn new(source: String, target: String) -> Self {
        NamespaceRecord {
            source,
            target,
            ..Default::default()
        }
    }

    /// The recorded source digest of `image:tag` (what a listing is compared with), if
    /// any: upstream's digest of a platform subset, else the one digest of both sides.
    /// `Some(None)`: recorded with unknown digest. A tag pruned from the target counts as
    /// unrecorded: the mirror no longer holds it.
    pub fn digest(&self, image: &str, tag: &str) -> Option<Option<&Digest>> {
        self.images
            .get(image)?
            .tags
            .get(tag)
            .filter(|t| t.pruned_at.is_none())
            .map(|t| t.source_digest.as_ref().or(t.digest.as_ref()))
    }

    /// Whether `image:tag` was skipped at exactly this source digest: nothing to do.
    pub fn skipped_at(&self, image: &str, tag: &str, digest: &Digest) -> bool {
        self.skipped
            .get(&format!("{image}:{tag}"))
            .is_some_and(|s| s.digest == *digest)
    }

    /// Whether `image:tag` failed on the last attempt.
    pub fn failed_before(&self, image: &str, tag: &str) -> bool {
        self.failed.contains_key(&format!("{image}:{tag}"))
    }

    /// Applies outcomes onto this (freshly read) record. A record written by someone else
    /// with a later `synced_at` is kept; a success clears the tag's failure. Says what
    /// changed, so that only the files showing it are written.
    pub fn apply<'a>(&mut self, outcomes: impl IntoIterator<Item = &'a Outcome>) -> Changes {
        let mut changes = Changes::default();
        for outcome in outcomes {
            let (image, shown, recorded) = self.apply_one(outcome);
            if shown {
                changes.images.insert(image.to_string());
            }
            changes.record |= shown || recorded;
        }
        changes
    }

    /// Applies one outcome: `(image, whether its tags or skipped tags changed, whether
    /// anything else changed)`. Failures are recorded in `failed` only, which no page shows.
    fn apply_one<'a>(&mut self, outcome: &'a Outcome) -> (&'a str, bool, bool) {
        match outcome {
            Outcome::Synced {
                image,
                tag,
                target,
                record,
                ..
            } => {
                let entry = self.images.entry(image.clone()).or_default();
                let mut changed = false;
                if entry.target != *target {
                    // Re-targeted: the other tags were recorded at the old target, which
                    // this image no longer maps to; dropped, they are checked anew.
                    entry.tags.clear();
                    entry.target = target.clone();
                    changed = true;
                }
                let keep_old = entry
                    .tags
                    .get(tag)
                    .is_some_and(|t| t.synced_at > record.synced_at || t == record);
                if !keep_old {
                    entry.tags.insert(tag.clone(), record.clone());
                    changed = true;
                }
                let key = format!("{image}:{tag}");
                let recovered = self.failed.remove(&key).is_some();
                changed |= self.skipped.remove(&key).is_some();
                (image, changed, recovered)
            }
            Outcome::Skipped {
                image,
                tag,
                digest,
                reason,
                at,
            } => {
                let key = format!("{image}:{tag}");
                // A skip is a verdict on content, not a failure to retry.
                let recovered = self.failed.remove(&key).is_some();
                let since = match self.skipped.get(&key) {
                    Some(old) if old.digest == *digest => old.since.clone(),
                    _ => at.clone(),
                };
                let skip = Skip {
                    digest: digest.clone(),
                    reason: reason.clone(),
                    since,
                };
                let changed = self.skipped.get(&key) != Some(&skip);
                self.skipped.insert(key, skip);
                (image, changed, recovered)
            }
            Outcome::Missing { image, tag } => {
                let mut changed = false;
                if let Some(entry) = self.images.get_mut(image) {
                    changed = entry.tags.remove(tag).is_some();
                    if entry.tags.is_empty() {
                        self.images.remove(image);
                    }
                }
                (image, changed, false)
            }
            Outcome::DeletedUpstream { image, tag, at } => {
                let changed = self.mark(image, tag, |t| {
                    t.deleted_upstream_at.get_or_insert_with(|| at.clone());
                });
                (image, changed, false)
            }
            Outcome::Forgotten { image, tag } => {
                let key = format!("{image}:{tag}");
                let failed = self.failed.remove(&key).is_some();
                let skipped = self.skipped.remove(&key).is_some();
                (image, skipped, failed)
            }
            Outcome::BackUpstream { image, tag } => {
                let changed = self.mark(image, tag, |t| t.deleted_upstream_at = None);
                (image, changed, false)
            }
            Outcome::Pruned { image, tag, at } => {
                let changed = self.mark(image, tag, |t| {
                    t.pruned_at.get_or_insert_with(|| at.clone());
                });
                (image, changed, false)
            }
            Outcome::Referrers {
                image,
                tag,
                subject,
                referrers,
                mark,
                ..
            } => {
                let changed = self.mark(image, tag, |t| {
                    // Re-copied by another run since (another digest): not this one's.
                    if t.source_digest.as_ref().or(t.digest.as_ref()) == Some(subject) {
                        t.referrers.clone_from(referrers);
                        t.referrer_tags.clone_from(mark);
                    }
                });
                (image, false, changed)
            }
            Outcome::ReferrersChecked { through, api } => {
                let before = (self.referrers_checked_through.clone(), self.referrers_api);
                if through.is_some() {
                    self.referrers_checked_through.clone_from(through);
                }
                self.referrers_api = api.or(self.referrers_api);
                let changed =
                    before != (self.referrers_checked_through.clone(), self.referrers_api);
                ("", false, changed)
            }
            Outcome::Failed {
                image,
                tag,
                error,
                at,
            } => {
                let key = format!("{image}:{tag}");
                let attempts = self.failed.get(&key).map_or(0, |f| f.attempts) + 1;
                self.failed.insert(
                    key,
                    Failure {
                        attempts,
                        error: error.clone(),
                        last_at: at.clone(),
                    },
                );
                (image, false, true)
            }
        }
    }

    /// Changes the record of `image:tag`, if there is one; says whether it changed (a
    /// mark already set, or a record gone since, is left as it is).
    fn mark(&mut self, image: &str, tag: &str, change: impl FnOnce(&mut TagRecord)) -> bool {
        let Some(record) = self.images.get_mut(image).and_then(|i| i.tags.get_mut(tag)) else {
            return false;
        };
        let before = record.clone();
        change(record);
        *record != before
    }

    /// Pretty JSON with 2-space indent, every object's keys sorted, and a trailing newline.
    pub fn to_json(&self) -> String {
        String::from_utf8(self.to_json_bytes()).expect("serde_json writes UTF-8")
    }

    /// `to_json` as bytes, written straight from the record: no intermediate JSON tree,
    /// which for 15,000 tags is several times the size of the text. Keys come out sorted
    /// because fields are declared in alphabetical order and maps are `BTreeMap`s.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        // Counted first, so the buffer is allocated once at its size: growing a 4 MB
        // buffer by doubling would hold up to twice that while it is copied.
        let mut counter = Counter(0);
        serde_json::to_writer_pretty(&mut counter, self).expect("records serialize");
        let mut out = Vec::with_capacity(counter.0 + 1);
        serde_json::to_writer_pretty(&mut out, self).expect("records serialize");
        out.push(b'\n');
        out
    }

    /// Reads a record, or the seeds' legacy list of `"image:tag"` strings.
    pub fn from_json(bytes: &[u8], source: &str, target: &str) -> Result<Self, serde_json::Error> {
        // Checked first: serde would also read a JSON array as a struct's fields in order.
        if let Ok(legacy) = serde_json::from_slice::<Vec<String>>(bytes) {
            return Ok(Self::from_legacy(&legacy, source, target));
        }
        serde_json::from_slice::<NamespaceRecord>(bytes)
    }

    /// Imports the seeds' lists as records with unknown digests, to be checked on the target.
    pub fn from_legacy(entries: &[String], source: &str, target: &str) -> Self {
        let mut record = NamespaceRecord::new(source.to_string(), target.to_string());
        for entry in entries {
            let Some((image, tag)) = entry.rsplit_once(':') else {
                continue;
            };
            let image_record = record.images.entry(image.to_string()).or_default();
            image_record.target = format!("{target}/{image}");
            let legacy = TagRecord {
                deleted_upstream_at: None,
                digest: None,
                source_digest: None,
                media_type: String::new(),
                platforms: Vec::new(),
                referrers: Vec::new(),
                referrer_tags: None,
                dropped_platforms: Vec::new(),
                pruned_at: None,
                synced_at: String::new(),
            };
            image_record.tags.insert(tag.to_string(), legacy);
        }
        record
    }
}

#[cfg(test)]
mod tests;
