//! The `oci:DIR` layout store through the `Registry` trait, no server: concurrent tags all
//! land in one index, a blob is in a layout whole and verified or not at all (and linked
//! into another image, not sent again), and every command runs between two directories.

mod common;

use std::sync::Arc;

use common::images::{OCI_MANIFEST, digest_of, random_bytes};
use common::*;
use gcrsync::oci::layout::LayoutRegistry;
use gcrsync::oci::manifest::RawManifest;
use gcrsync::oci::{BlobBody, ManifestRef, Registry, Upload};
use serde_json::{Value, json};

fn manifest(body: Value) -> RawManifest {
    RawManifest::new(
        serde_json::to_vec(&body).unwrap().into(),
        Some(OCI_MANIFEST),
    )
}

#[tokio::test]
async fn concurrent_tags_into_one_layout_all_land_in_its_index() {
    let dir = tempfile::tempdir().unwrap();
    let layouts = Arc::new(LayoutRegistry::new(dir.path().to_path_buf()));
    let repo: gcrsync::reference::RepoPath = "team/app".parse().unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (layouts, repo) = (layouts.clone(), Arc::new(repo.clone()));
        tasks.push(tokio::spawn(async move {
            let m = manifest(json!({"schemaVersion": 2, "config": {}, "n": i}));
            let tag = ManifestRef::Tag(format!("t{i}").parse().unwrap());
            layouts.put_manifest(&repo, &tag, &m).await.unwrap();
            m.digest
        }));
    }
    let mut digests = Vec::new();
    for task in tasks {
        digests.push(task.await.unwrap());
    }
    let listed = layouts.list_tags(&repo).await.unwrap();
    assert_eq!(listed.tags.len(), 40);
    for (i, digest) in digests.iter().enumerate() {
        let tag = format!("t{i}").parse().unwrap();
        assert_eq!(&listed.digests[&tag].digest, digest);
    }
    // Moving a tag replaces its entry; nothing temporary is left beside the layout.
    let moved = manifest(json!({"schemaVersion": 2, "config": {}, "n": "moved"}));
    let t0 = ManifestRef::Tag("t0".parse().unwrap());
    layouts.put_manifest(&repo, &t0, &moved).await.unwrap();
    let head = layouts.head_manifest(&repo, &t0).await.unwrap().unwrap();
    assert_eq!(head.digest, moved.digest);
    assert_eq!(layouts.list_tags(&repo).await.unwrap().tags.len(), 40);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("team/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

async fn open_session(layouts: &LayoutRegistry, repo: &gcrsync::reference::RepoPath) -> String {
    match layouts.start_upload(repo, None).await.unwrap() {
        Upload::Session(s) => s,
        Upload::Mounted => panic!("nothing to mount"),
    }
}

fn body(chunks: Vec<Result<bytes::Bytes, gcrsync::oci::Error>>, size: u64) -> BlobBody {
    use futures_util::StreamExt;
    BlobBody {
        size: Some(size),
        stream: futures_util::stream::iter(chunks).boxed(),
    }
}

#[tokio::test]
async fn a_blob_is_in_the_layout_whole_and_verified_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let layouts = LayoutRegistry::new(dir.path().to_path_buf());
    let repo: gcrsync::reference::RepoPath = "app".parse().unwrap();
    let data = random_bytes(300_000);
    let digest: gcrsync::reference::Digest = digest_of(&data).parse().unwrap();
    // A body that breaks mid-way, and one whose bytes were altered: no blob, no temp file.
    let session = open_session(&layouts, &repo).await;
    let broken = vec![
        Ok(bytes::Bytes::copy_from_slice(&data[..1000])),
        Err(gcrsync::oci::Error::Layout {
            path: "src".into(),
            detail: "connection reset".into(),
            missing: false,
        }),
    ];
    let size = data.len() as u64;
    assert!(
        layouts
            .finish_upload(&repo, &session, &digest, size, body(broken, size))
            .await
            .is_err()
    );
    let mut altered = data.clone();
    altered[7] ^= 1;
    let session = open_session(&layouts, &repo).await;
    let error = layouts
        .finish_upload(
            &repo,
            &session,
            &digest,
            size,
            body(vec![Ok(altered.into())], size),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(error, gcrsync::oci::Error::DigestMismatch { .. }),
        "{error}"
    );
    assert!(!layouts.blob_exists(&repo, &digest).await.unwrap());
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(entries.iter().all(|n| !n.ends_with(".tmp")), "{entries:?}");
    // The intact body lands, and reads back from any offset.
    let session = open_session(&layouts, &repo).await;
    layouts
        .finish_upload(
            &repo,
            &session,
            &digest,
            size,
            body(vec![Ok(data.clone().into())], size),
        )
        .await
        .unwrap();
    assert!(layouts.blob_exists(&repo, &digest).await.unwrap());
    let mut read = Vec::new();
    let mut tail = layouts.get_blob(&repo, &digest, 1000).await.unwrap();
    assert_eq!(tail.size, Some(size - 1000));
    use futures_util::StreamExt;
    while let Some(chunk) = tail.stream.next().await {
        read.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(read, data[1000..]);
    // Another image of the directory gets it linked, not sent again.
    let other: gcrsync::reference::RepoPath = "other".parse().unwrap();
    let mounted = layouts
        .start_upload(&other, Some((&digest, &repo)))
        .await
        .unwrap();
    assert!(matches!(mounted, Upload::Mounted));
    assert!(layouts.blob_exists(&other, &digest).await.unwrap());
}

/// Writes a one-layer image into `layouts` through the `Registry` trait; returns its digest.
async fn layout_image(layouts: &LayoutRegistry, repo: &str, tag: &str) -> String {
    let repo: gcrsync::reference::RepoPath = repo.parse().unwrap();
    let mut descriptors = Vec::new();
    let config = serde_json::to_vec(&json!({"os": "linux", "architecture": "arm64"})).unwrap();
    for (bytes, media_type) in [
        (config, "application/vnd.oci.image.config.v1+json"),
        (
            random_bytes(3_000),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        ),
    ] {
        let digest = digest_of(&bytes);
        let session = open_session(layouts, &repo).await;
        let size = bytes.len() as u64;
        let stream = body(vec![Ok(bytes.into())], size);
        layouts
            .finish_upload(&repo, &session, &digest.parse().unwrap(), size, stream)
            .await
            .unwrap();
        descriptors.push(json!({"mediaType": media_type, "digest": digest, "size": size}));
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptors[0], "layers": [descriptors[1]]});
    let m = manifest(body);
    let tag = ManifestRef::Tag(tag.parse().unwrap());
    layouts.put_manifest(&repo, &tag, &m).await.unwrap();
    m.digest.to_string()
}

/// Directory to directory, no server: `test` plans, `sync` copies, `compare` rebuilds the
/// records from the target directory.
#[tokio::test]
async fn every_command_works_between_two_directories() {
    let work = tempfile::tempdir().unwrap();
    let (a, b) = (work.path().join("a"), work.path().join("b"));
    let layouts = LayoutRegistry::new(a.clone());
    let one = layout_image(&layouts, "tools/one", "1.0").await;
    let two = layout_image(&layouts, "two", "latest").await;
    let (source, target) = (
        format!("oci:{}", a.display()),
        format!("oci:{}", b.display()),
    );
    let meta = work.path().join("meta");
    let args = |name: &str| {
        let mut command = gcrsync(work.path());
        command
            .args([name, "--source", &source, "--target", &target])
            .arg("--metadata-dir")
            .arg(&meta);
        command
    };
    let out = run(&mut args("test"));
    assert_eq!(out.status.code(), Some(0));
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        plan.contains(&format!("tools/one:1.0 → {target}/tools/one:1.0 (new)")),
        "{plan}"
    );
    assert!(!b.exists(), "a dry run writes nothing");
    let out = run(&mut args("sync"));
    assert_eq!(out.status.code(), Some(0));
    let copy = LayoutRegistry::new(b.clone());
    for (repo, tag, digest) in [("tools/one", "1.0", &one), ("two", "latest", &two)] {
        let head = copy
            .head_manifest(
                &repo.parse().unwrap(),
                &ManifestRef::Tag(tag.parse().unwrap()),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(head.digest.as_str(), digest.as_str());
    }
    let records = meta.join(format!("oci{}/images.json", a.display()));
    let page = std::fs::read_to_string(meta.join(format!("oci{}/two.md", a.display()))).unwrap();
    assert!(
        page.contains(&format!("skopeo copy {target}/two:latest docker://")),
        "a layout is read with skopeo, not pulled with docker: {page}"
    );
    let record = read_json(&records);
    assert_eq!(
        record["images"]["two"]["tags"]["latest"]["platforms"],
        json!(["linux/arm64"])
    );
    std::fs::remove_file(&records).unwrap();
    let out = run(&mut args("compare"));
    assert_eq!(out.status.code(), Some(0));
    let record = read_json(&records);
    assert_eq!(
        record["images"]["tools/one"]["tags"]["1.0"]["digest"],
        one.as_str()
    );
}
