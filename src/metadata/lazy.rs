//! A namespace's record as one batch uses it: `images.json` kept as the text it was read
//! as, each image parsed only when the batch changes it or a page or README reads it, and
//! written back by copying the text of every image the batch left alone. At 15,000 tags the
//! record parsed whole was ≈ 8 MB of small allocations beside its 4.5 MB of JSON (issue 14).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use serde::de::value::MapDeserializer;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::record::{Changes, ImageRecord, NamespaceRecord, Outcome, TagRecord};

/// What the README shows of an image without reading its tags again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tags the mirror holds (not pruned).
    pub mirrored: usize,
    /// The latest `synced_at` of its tags.
    pub updated_at: Option<String>,
    /// Tags removed upstream or pruned.
    pub removed: usize,
}

impl Summary {
    fn of(image: &ImageRecord) -> Self {
        let tags = image.tags.values();
        Summary {
            mirrored: tags.clone().filter(|t| t.pruned_at.is_none()).count(),
            updated_at: tags.clone().map(|t| &t.synced_at).max().cloned(),
            removed: tags.filter(|t| removed(t)).count(),
        }
    }
}

/// Whether a tag shows under "removed": gone upstream, or pruned from the mirror.
pub fn removed(t: &TagRecord) -> bool {
    t.deleted_upstream_at.is_some() || t.pruned_at.is_some()
}

/// One image of the record.
#[derive(Debug)]
enum Image {
    /// Untouched by the batch: its text in `BatchRecord::text`, exactly as `to_json`
    /// writes it at its depth.
    Stored { at: Range<usize>, summary: Summary },
    /// Changed by the batch, or read in another layout than `to_json`'s.
    Parsed(Arc<ImageRecord>),
}

/// A record with its images parsed on demand.
#[derive(Debug)]
pub struct BatchRecord {
    /// Everything but the images: failures, skipped tags, source, target (`images` empty).
    pub head: NamespaceRecord,
    images: BTreeMap<String, Image>,
    /// The JSON the record was read from (empty for a record built in memory).
    text: String,
}

/// An `images.json` value is written four spaces deep (`"images"` → name → value).
const DEPTH: &str = "\n    ";

impl BatchRecord {
    /// A record held parsed (a new one, or the seeds' legacy list).
    pub fn parsed(mut record: NamespaceRecord) -> Self {
        let images = std::mem::take(&mut record.images)
            .into_iter()
            .map(|(name, image)| (name, Image::Parsed(Arc::new(image))))
            .collect();
        BatchRecord {
            head: record,
            images,
            text: String::new(),
        }
    }

    /// Reads `images.json` (or the seeds' legacy list of `"image:tag"` strings), keeping
    /// each image as text once it is checked.
    pub fn from_json(
        bytes: Vec<u8>,
        source: &str,
        target: &str,
    ) -> Result<Self, serde_json::Error> {
        if let Ok(legacy) = serde_json::from_slice::<Vec<String>>(&bytes) {
            return Ok(Self::parsed(NamespaceRecord::from_legacy(
                &legacy, source, target,
            )));
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            <serde_json::Error as serde::de::Error>::custom(format!("not UTF-8: {e}"))
        })?;
        let (head, images) = {
            let mut top: BTreeMap<String, &RawValue> = serde_json::from_str(&text)?;
            let images_text = top.remove("images");
            // The other fields through the record's own `Deserialize`, so a field added
            // to `NamespaceRecord` is read (and written) here too.
            let head = NamespaceRecord::deserialize(MapDeserializer::new(top.into_iter()))?;
            let raw: BTreeMap<String, &RawValue> = match images_text {
                Some(images) => serde_json::from_str(images.get())?,
                None => BTreeMap::new(),
            };
            let mut images = BTreeMap::new();
            let mut canonical = Vec::new();
            for (name, value) in raw {
                let image: ImageRecord = serde_json::from_str(value.get())?;
                canonical.clear();
                serde_json::to_writer_pretty(&mut canonical, &image)?;
                let same = std::str::from_utf8(&canonical)
                    .is_ok_and(|c| c.split('\n').eq(value.get().split(DEPTH)));
                let entry = if same {
                    let start = value.get().as_ptr() as usize - text.as_ptr() as usize;
                    Image::Stored {
                        at: start..start + value.get().len(),
                        summary: Summary::of(&image),
                    }
                } else {
                    Image::Parsed(Arc::new(image))
                };
                images.insert(name, entry);
            }
            (head, images)
        };
        Ok(BatchRecord { head, images, text })
    }

    /// Applies outcomes as `NamespaceRecord::apply` does, parsing only their images.
    pub fn apply<'a>(
        &mut self,
        outcomes: impl IntoIterator<Item = &'a Outcome> + Clone,
    ) -> Changes {
        for outcome in outcomes.clone() {
            let name = outcome.image();
            if self.head.images.contains_key(name) {
                continue;
            }
            if let Some(image) = self.images.remove(name).and_then(|i| self.owned(i)) {
                self.head.images.insert(name.to_string(), image);
            }
        }
        let changes = self.head.apply(outcomes);
        for (name, image) in std::mem::take(&mut self.head.images) {
            self.images.insert(name, Image::Parsed(Arc::new(image)));
        }
        changes
    }

    fn owned(&self, image: Image) -> Option<ImageRecord> {
        match image {
            Image::Parsed(image) => Some(Arc::unwrap_or_clone(image)),
            Image::Stored { at, .. } => serde_json::from_str(&self.text[at]).ok(),
        }
    }

    /// The names of the images, in order.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.images.keys()
    }

    /// How many images.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Whether it has no image.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// Whether `name` is recorded.
    pub fn contains(&self, name: &str) -> bool {
        self.images.contains_key(name)
    }

    /// Image `name`, parsed (shared when the batch changed it, parsed anew otherwise).
    pub fn image(&self, name: &str) -> Option<Arc<ImageRecord>> {
        match self.images.get(name)? {
            Image::Parsed(image) => Some(image.clone()),
            Image::Stored { at, .. } => serde_json::from_str(&self.text[at.clone()])
                .ok()
                .map(Arc::new),
        }
    }

    /// What the README shows of every image, in order, without their tags.
    pub fn summaries(&self) -> impl Iterator<Item = (&String, Summary)> {
        self.images.iter().map(|(name, image)| {
            let summary = match image {
                Image::Parsed(image) => Summary::of(image),
                Image::Stored { summary, .. } => summary.clone(),
            };
            (name, summary)
        })
    }

    /// Pretty JSON with 2-space indent, every object's keys sorted, and a trailing newline:
    /// byte for byte `NamespaceRecord::to_json` of the same record, the untouched images
    /// copied from the text they were read from.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let head = serde_json::to_value(&self.head).expect("records serialize");
        let top = Top(self, head);
        // Counted first, so the buffer is allocated once at its size.
        let mut counter = super::record::Counter(0);
        serde_json::to_writer_pretty(&mut counter, &top).expect("records serialize");
        let mut out = Vec::with_capacity(counter.0 + 1);
        serde_json::to_writer_pretty(&mut out, &top).expect("records serialize");
        out.push(b'\n');
        out
    }

    /// `to_json_bytes`, built inside the text the record was read from: the images the
    /// batch left alone stay where they are or move, so a batch holds one `images.json`
    /// instead of the one read and the one written (4.5 MB each at 15,000 tags, issue 14).
    pub fn into_json_bytes(self) -> Vec<u8> {
        let pieces = self.pieces();
        splice(self.text.into_bytes(), pieces)
    }

    /// What `to_json_bytes` writes, as pieces of the text and new bytes.
    fn pieces(&self) -> Vec<Piece> {
        let mut pieces = Pieces {
            text: self.text.as_bytes().as_ptr_range(),
            pieces: Vec::new(),
        };
        let head = serde_json::to_value(&self.head).expect("records serialize");
        serde_json::to_writer_pretty(&mut pieces, &Top(self, head)).expect("records serialize");
        let mut pieces = pieces.pieces;
        pieces.push(Piece::New(b"\n".to_vec()));
        pieces
    }
}

/// A part of the JSON a batch writes: bytes of the text read, or new bytes.
#[derive(Debug, PartialEq)]
enum Piece {
    Keep(Range<usize>),
    New(Vec<u8>),
}

/// Collects what serde_json writes as pieces: an untouched image is written as the raw
/// value borrowed from the text (one `write` of bytes inside it), kept as a range.
struct Pieces {
    text: Range<*const u8>,
    pieces: Vec<Piece>,
}

impl std::io::Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let inside = self.text.contains(&buf.as_ptr()) && buf.as_ptr_range().end <= self.text.end;
        if inside {
            let start = buf.as_ptr() as usize - self.text.start as usize;
            self.pieces.push(Piece::Keep(start..start + buf.len()));
        } else if let Some(Piece::New(bytes)) = self.pieces.last_mut() {
            bytes.extend_from_slice(buf);
        } else {
            self.pieces.push(Piece::New(buf.to_vec()));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `pieces` laid out in `text` itself: each kept range moved to its place (those moving
/// right first, from the last; then those moving left, from the first, so that no range is
/// overwritten before it moves), then the new bytes written between them. Kept ranges out
/// of order (an `images.json` whose images are not in name order, as an edit by hand can
/// leave it) are copied into a new buffer instead.
fn splice(mut text: Vec<u8>, pieces: Vec<Piece>) -> Vec<u8> {
    let len = |p: &Piece| match p {
        Piece::Keep(range) => range.len(),
        Piece::New(bytes) => bytes.len(),
    };
    let keeps = pieces.iter().filter_map(|p| match p {
        Piece::Keep(range) => Some(range),
        Piece::New(_) => None,
    });
    let in_order = keeps
        .clone()
        .zip(keeps.skip(1))
        .all(|(a, b)| a.end <= b.start);
    let total: usize = pieces.iter().map(len).sum();
    if !in_order {
        let mut out = Vec::with_capacity(total);
        for piece in &pieces {
            match piece {
                Piece::Keep(range) => out.extend_from_slice(&text[range.clone()]),
                Piece::New(bytes) => out.extend_from_slice(bytes),
            }
        }
        return out;
    }
    let mut at = Vec::with_capacity(pieces.len());
    let mut offset = 0;
    for piece in &pieces {
        at.push(offset);
        offset += len(piece);
    }
    if total > text.len() {
        // Exactly: doubling would map another 4.5 MB at 15,000 tags.
        text.reserve_exact(total - text.len());
        text.resize(total, 0);
    }
    let moves = || {
        pieces.iter().zip(&at).filter_map(|(p, &to)| match p {
            Piece::Keep(range) => Some((range.clone(), to)),
            Piece::New(_) => None,
        })
    };
    let right: Vec<_> = moves().filter(|(range, to)| *to > range.start).collect();
    for (range, to) in right.into_iter().rev() {
        text.copy_within(range, to);
    }
    for (range, to) in moves().filter(|(range, to)| *to < range.start) {
        text.copy_within(range, to);
    }
    for (piece, &to) in pieces.iter().zip(&at) {
        if let Piece::New(bytes) = piece {
            text[to..to + bytes.len()].copy_from_slice(bytes);
        }
    }
    text.truncate(total);
    text
}

/// The record's top-level object: the head's fields (a JSON map: sorted, as `to_json`
/// writes them) with the images in place of its empty `images`.
struct Top<'a>(&'a BatchRecord, serde_json::Value);

impl Serialize for Top<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.1.as_object().into_iter().flatten();
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if key == "images" {
                map.serialize_entry(key, &Images(self.0))?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

struct Images<'a>(&'a BatchRecord);

impl Serialize for Images<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let record = self.0;
        let mut map = serializer.serialize_map(Some(record.images.len()))?;
        for (name, image) in &record.images {
            match image {
                Image::Parsed(image) => map.serialize_entry(name, image.as_ref())?,
                Image::Stored { at, .. } => {
                    // Checked when read; written verbatim (serde_json copies a raw value).
                    let raw: &RawValue = serde_json::from_str(&record.text[at.clone()])
                        .map_err(serde::ser::Error::custom)?;
                    map.serialize_entry(name, raw)?;
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::record::Failure;

    fn tag(digest: char, at: &str) -> TagRecord {
        TagRecord {
            digest: Some(
                format!("sha256:{}", digest.to_string().repeat(64))
                    .parse()
                    .unwrap(),
            ),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            platforms: vec!["linux/amd64".into()],
            synced_at: at.into(),
            ..TagRecord::default()
        }
    }

    fn synced(image: &str, t: &str, digest: char, at: &str) -> Outcome {
        Outcome::Synced {
            image: image.into(),
            tag: t.into(),
            target: format!("t/{image}"),
            record: tag(digest, at),
            previous: None,
            copied: true,
        }
    }

    fn sample() -> NamespaceRecord {
        let mut record = NamespaceRecord::new("gcr.io/s".into(), "t".into());
        for image in ["a", "b/c", "d\"q", "é"] {
            for (i, t) in ["1.0", "latest", "v2"].iter().enumerate() {
                record.apply(&[synced(
                    image,
                    t,
                    (b'a' + i as u8) as char,
                    "2026-01-01T00:00:00Z",
                )]);
            }
        }
        record.failed.insert(
            "a:x".into(),
            Failure {
                attempts: 2,
                error: "e".into(),
                last_at: "T".into(),
            },
        );
        record
            .images
            .get_mut("a")
            .unwrap()
            .tags
            .get_mut("v2")
            .unwrap()
            .deleted_upstream_at = Some("T2".into());
        record
    }

    #[test]
    fn untouched_images_are_kept_as_text_and_written_back_byte_for_byte() {
        let record = sample();
        let text = record.to_json();
        let lazy = BatchRecord::from_json(text.clone().into_bytes(), "", "").unwrap();
        assert!(
            lazy.images
                .values()
                .all(|i| matches!(i, Image::Stored { .. }))
        );
        assert_eq!(lazy.head.failed, record.failed);
        assert_eq!(String::from_utf8(lazy.to_json_bytes()).unwrap(), text);
        assert_eq!(*lazy.image("b/c").unwrap(), record.images["b/c"]);
        let summaries: Vec<_> = lazy.summaries().map(|(_, s)| s).collect();
        assert_eq!(summaries[0].removed, 1);
        assert_eq!(summaries[1].mirrored, 3);
    }

    #[test]
    fn a_batch_parses_only_its_images_and_writes_what_a_whole_record_would() {
        let mut whole = sample();
        let mut lazy = BatchRecord::from_json(whole.to_json().into_bytes(), "", "").unwrap();
        let batch = [
            synced("b/c", "v3", 'f', "2026-02-01T00:00:00Z"),
            synced("new", "1", 'e', "2026-02-01T00:00:00Z"),
            Outcome::Missing {
                image: "é".into(),
                tag: "1.0".into(),
            },
        ];
        let expected = whole.apply(&batch);
        assert_eq!(lazy.apply(&batch), expected);
        let parsed: Vec<&String> = lazy
            .images
            .iter()
            .filter(|(_, i)| matches!(i, Image::Parsed(_)))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(parsed, ["b/c", "new", "é"]);
        assert_eq!(
            String::from_utf8(lazy.to_json_bytes()).unwrap(),
            whole.to_json()
        );
        assert_eq!(
            String::from_utf8(lazy.into_json_bytes()).unwrap(),
            whole.to_json()
        );
    }

    #[test]
    fn written_in_place_the_text_is_what_a_whole_record_writes_as_images_grow_and_shrink() {
        let mut whole = sample();
        for image in ["b0", "b1", "c", "f", "g"] {
            whole.apply(&[synced(image, "1", 'a', "2026-01-01T00:00:00Z")]);
        }
        // Round by round: images grow (a tag more), shrink (a tag fewer), come and go, so
        // that kept images move both ways in one batch.
        let rounds: [&[Outcome]; 4] = [
            &[
                synced("b0", "2", 'b', "2026-02-01T00:00:00Z"),
                Outcome::Missing {
                    image: "c".into(),
                    tag: "1".into(),
                },
                synced("zz", "1", 'c', "2026-02-01T00:00:00Z"),
            ],
            &[
                Outcome::Missing {
                    image: "a".into(),
                    tag: "1.0".into(),
                },
                synced(
                    "f",
                    "long-tag-name-that-grows-the-image",
                    'd',
                    "2026-03-01T00:00:00Z",
                ),
            ],
            &[Outcome::Missing {
                image: "zz".into(),
                tag: "1".into(),
            }],
            &[],
        ];
        for batch in rounds {
            let mut lazy = BatchRecord::from_json(whole.to_json().into_bytes(), "", "").unwrap();
            assert_eq!(lazy.apply(batch), whole.apply(batch));
            let expected = whole.to_json();
            let kept = lazy
                .pieces()
                .iter()
                .filter(|p| matches!(p, Piece::Keep(_)))
                .count();
            assert!(kept >= 4, "{kept} images kept as text");
            assert_eq!(String::from_utf8(lazy.to_json_bytes()).unwrap(), expected);
            assert_eq!(String::from_utf8(lazy.into_json_bytes()).unwrap(), expected);
        }
    }

    #[test]
    fn pieces_out_of_order_are_copied_not_moved() {
        let text = b"0123456789".to_vec();
        let pieces = vec![
            Piece::Keep(5..8),
            Piece::New(b"-".to_vec()),
            Piece::Keep(0..3),
            Piece::New(b"!".to_vec()),
        ];
        assert_eq!(splice(text.clone(), pieces), b"567-012!");
        let moved = vec![
            Piece::New(b"abcdef".to_vec()),
            Piece::Keep(2..4),
            Piece::Keep(6..7),
            Piece::New(b"x".to_vec()),
            Piece::Keep(9..10),
        ];
        assert_eq!(splice(text, moved), b"abcdef236x9");
    }

    #[test]
    fn a_record_in_another_layout_is_read_and_written_as_gcrsync_writes_it() {
        let record = sample();
        let compact = serde_json::to_vec(&record).unwrap();
        let lazy = BatchRecord::from_json(compact, "", "").unwrap();
        assert!(lazy.images.values().all(|i| matches!(i, Image::Parsed(_))));
        assert_eq!(lazy.to_json_bytes(), record.to_json_bytes());
        let lazy = BatchRecord::from_json(serde_json::to_vec(&record).unwrap(), "", "").unwrap();
        assert_eq!(lazy.into_json_bytes(), record.to_json_bytes());
        // Images out of name order, each in gcrsync's own layout: kept as text, written
        // back sorted.
        let mut head = serde_json::to_value(&record).unwrap();
        let images = head["images"].take();
        let reversed: Vec<String> = images
            .as_object()
            .unwrap()
            .iter()
            .rev()
            .map(|(name, image)| {
                let image = serde_json::to_string_pretty(image).unwrap();
                format!(
                    "{}: {}",
                    serde_json::to_string(name).unwrap(),
                    image.replace('\n', DEPTH)
                )
            })
            .collect();
        let text = serde_json::to_string_pretty(&head).unwrap().replace(
            "\"images\": null",
            &format!("\"images\": {{\n    {}\n  }}", reversed.join(",\n    ")),
        );
        let lazy = BatchRecord::from_json(text.into_bytes(), "", "").unwrap();
        assert!(
            lazy.images
                .values()
                .all(|i| matches!(i, Image::Stored { .. }))
        );
        let keeps: Vec<_> = lazy
            .pieces()
            .into_iter()
            .filter_map(|p| match p {
                Piece::Keep(range) => Some(range.start),
                Piece::New(_) => None,
            })
            .collect();
        assert!(keeps.windows(2).any(|w| w[0] > w[1]), "{keeps:?}");
        assert_eq!(lazy.into_json_bytes(), record.to_json_bytes());
        let legacy = BatchRecord::from_json(br#"["base:debug"]"#.to_vec(), "s", "u").unwrap();
        assert_eq!(legacy.image("base").unwrap().target, "u/base");
        assert!(BatchRecord::from_json(b"{\"images\": 3}".to_vec(), "", "").is_err());
    }
}
