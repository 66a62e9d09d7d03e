//! The request bodies of a commit's files. Small text files go inline in the tree request
//! (`content`), so that a batch touching fifty image pages is one content-creating
//! request, not fifty blobs against GitHub's 80 a minute and 500 an hour; large files go
//! as blobs, because GitHub times out on large tree requests ("your input was too large
//! to process"); deletions are entries with a null `sha`. Pure.

use base64::Engine as _;
use bytes::Bytes;
use serde::Serialize;

use crate::metadata::FileChange;

/// A file up to this size may go inline in the tree request.
pub const INLINE_FILE: usize = 256 * 1024;
/// The most inline content in one tree request; files past it go as blobs.
pub const INLINE_TOTAL: usize = 1024 * 1024;

/// How one file of a commit is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upload {
    /// Its text inside the tree request.
    Inline,
    /// A blob created first.
    Blob,
    /// A tree entry with a null `sha`.
    Delete,
}

/// How each of `changes` is sent, in order: inline while the files are small text and the
/// inline total stays within `INLINE_TOTAL`.
pub fn plan(changes: &[FileChange]) -> Vec<Upload> {
    let mut inline = 0;
    changes
        .iter()
        .map(|change| match &change.bytes {
            None => Upload::Delete,
            Some(bytes)
                if bytes.len() <= INLINE_FILE
                    && inline + bytes.len() <= INLINE_TOTAL
                    && std::str::from_utf8(bytes).is_ok() =>
            {
                inline += bytes.len();
                Upload::Inline
            }
            Some(_) => Upload::Blob,
        })
        .collect()
}

/// `{"encoding":"base64","content":"…"}`, base64 written straight into the body.
pub fn blob_body(bytes: &[u8]) -> Bytes {
    let mut body = String::with_capacity(bytes.len().div_ceil(3) * 4 + 40);
    body.push_str(r#"{"encoding":"base64","content":""#);
    base64::engine::general_purpose::STANDARD.encode_string(bytes, &mut body);
    body.push_str("\"}");
    Bytes::from(body)
}

#[derive(Serialize)]
#[serde(untagged)]
enum Entry<'a> {
    Inline {
        path: &'a str,
        mode: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
        content: &'a str,
    },
    Sha {
        path: &'a str,
        mode: &'static str,
        #[serde(rename = "type")]
        kind: &'static str,
        /// `None`: deleted.
        sha: Option<&'a str>,
    },
}

#[derive(Serialize)]
struct Tree<'a> {
    base_tree: &'a str,
    tree: Vec<Entry<'a>>,
}

/// The body of a tree request on `base_tree`: `changes` sent as `uploads` says, with
/// `blobs[i]` the blob of the i-th change sent as a blob.
pub fn tree_body(
    base_tree: &str,
    changes: &[FileChange],
    uploads: &[Upload],
    blobs: &[String],
) -> Bytes {
    let mut blobs = blobs.iter();
    let tree = changes
        .iter()
        .zip(uploads)
        .map(|(change, upload)| {
            let path = change.path.as_str();
            let (mode, kind) = ("100644", "blob");
            match (upload, &change.bytes) {
                (Upload::Inline, Some(bytes)) => Entry::Inline {
                    path,
                    mode,
                    kind,
                    content: std::str::from_utf8(bytes).expect("planned as text"),
                },
                (Upload::Blob, _) => Entry::Sha {
                    path,
                    mode,
                    kind,
                    sha: Some(blobs.next().expect("one blob per blob upload")),
                },
                _ => Entry::Sha {
                    path,
                    mode,
                    kind,
                    sha: None,
                },
            }
        })
        .collect();
    let body = serde_json::to_vec(&Tree { base_tree, tree }).expect("trees serialize");
    Bytes::from(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, size: usize) -> FileChange {
        FileChange {
            path: path.into(),
            bytes: Some(vec![b'x'; size]),
        }
    }

    #[test]
    fn small_text_goes_inline_within_a_total_and_the_rest_as_blobs() {
        let mut changes = vec![
            change("a.md", 1000),
            change("images.json", 4_000_000),
            FileChange {
                path: "gone.md".into(),
                bytes: None,
            },
            FileChange {
                path: "binary".into(),
                bytes: Some(vec![0xff, 0xfe]),
            },
        ];
        for i in 0..5 {
            changes.push(change(&format!("p{i}.md"), 250_000));
        }
        let plan = plan(&changes);
        use Upload::*;
        assert_eq!(
            plan,
            [
                Inline, Blob, Delete, Blob, Inline, Inline, Inline, Inline, Blob
            ]
        );
        let body = tree_body(
            "base",
            &changes,
            &plan,
            &["b1".into(), "b2".into(), "b3".into()],
        );
        let tree: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(tree["base_tree"], "base");
        assert_eq!(tree["tree"][0]["content"].as_str().unwrap().len(), 1000);
        assert_eq!(tree["tree"][1]["sha"], "b1");
        assert!(tree["tree"][2]["sha"].is_null() && tree["tree"][2].get("content").is_none());
        assert_eq!(tree["tree"][3]["sha"], "b2");
        assert_eq!(tree["tree"][8]["sha"], "b3");
    }

    #[test]
    fn a_blob_body_is_base64_json() {
        let body: serde_json::Value = serde_json::from_slice(&blob_body(b"hello\n")).unwrap();
        assert_eq!(body["encoding"], "base64");
        assert_eq!(body["content"], "aGVsbG8K");
    }
}
