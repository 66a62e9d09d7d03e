//! `--platforms`: a subset of a multi-arch image is mirrored as a rebuilt index of the
//! chosen children (a new digest, recorded beside upstream's), no-op runs compare
//! upstream's digest, and what has no chosen platform is skipped with a reason.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::images::{OCI_INDEX, digest_of, random_bytes};
use common::*;
use gcrsync::copy::Copier;
use gcrsync::oci::http::RetryPolicy;
use gcrsync::oci::layout::LayoutRegistry;
use gcrsync::oci::manifest::RawManifest;
use gcrsync::oci::{BlobBody, ManifestRef, Registry, Upload};
use gcrsync::reference::RepoPath;
use serde_json::{Value, json};

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn children(index: &[u8]) -> Vec<(String, String)> {
    let value: Value = serde_json::from_slice(index).unwrap();
    value["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut platform = format!(
                "{}/{}",
                p["os"].as_str().unwrap(),
                p["architecture"].as_str().unwrap()
            );
            if let Some(v) = p["variant"].as_str() {
                platform.push_str(&format!("/{v}"));
            }
            (m["digest"].as_str().unwrap().to_string(), platform)
        })
        .collect()
}

#[tokio::test]
async fn a_subset_is_a_rebuilt_index_recorded_with_upstreams_digest_and_never_recopied() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let three = [
        ("amd64", vec![random_bytes(30_000)]),
        ("s390x", vec![random_bytes(20_000)]),
        ("arm64/v8", vec![random_bytes(10_000)]),
    ];
    let (multi, multi_children) = p.index("team/multi", "1.0", Format::Oci, &three).await;
    let two = [
        ("arm/v7", vec![random_bytes(5_000)]),
        ("amd64", vec![random_bytes(5_000)]),
    ];
    let (list, list_children) = p.index("team/list", "2", Format::Docker, &two).await;
    let other = [
        ("s390x", vec![random_bytes(1_000)]),
        ("ppc64le", vec![random_bytes(1_000)]),
    ];
    let (none, _) = p.index("team/none", "1", Format::Oci, &other).await;
    let (solo, _) = p
        .image(
            "team/solo",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(2_000)],
        )
        .await;
    let (mainframe, _) = p
        .image(
            "team/mainframe",
            "1",
            Format::Docker,
            "s390x",
            &[random_bytes(2_000)],
        )
        .await;

    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    let report = work.path().join("report.json");
    let mut args = mirror_args(&src, &dst, &meta);
    args.extend(["--platforms".into(), "linux/arm64,linux/amd64".into()]);
    args.extend(["--report".into(), report.display().to_string()]);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let summary = stderr(&out);
    assert!(
        summary.contains(
            "platforms not mirrored (--platforms): linux/arm/v7 (1 tags), linux/s390x (1 tags)"
        ),
        "{summary}"
    );

    // The index holds the chosen children only, in upstream's order, with a new digest.
    let target = Pusher::new(&dst.addr);
    let copied = target.get_manifest("mirror/multi", "1.0").await;
    let mirrored = digest_of(&copied);
    assert_ne!(mirrored, multi);
    assert_eq!(
        children(&copied),
        [
            (multi_children[0].clone(), "linux/amd64".to_string()),
            (multi_children[2].clone(), "linux/arm64/v8".to_string())
        ]
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&copied).unwrap()["mediaType"],
        OCI_INDEX
    );
    assert_eq!(
        target.head("mirror/multi", &multi_children[1]).await,
        None,
        "s390x child"
    );
    let list_copy = target.get_manifest("mirror/list", "2").await;
    assert_eq!(
        children(&list_copy),
        [(list_children[1].clone(), "linux/amd64".to_string())]
    );
    // Why not upstream's bytes: the registry refuses an index naming a child it lacks.
    let upstream = p.get_manifest("team/multi", "1.0").await;
    let refused = reqwest::Client::new()
        .put(format!(
            "http://{}/v2/mirror/multi/manifests/verbatim",
            dst.addr
        ))
        .header("content-type", OCI_INDEX)
        .body(upstream)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("MANIFEST_BLOB_UNKNOWN")
    );
    // A single image of a chosen platform is copied verbatim; the others are skipped.
    assert_eq!(
        target.head("mirror/solo", "1").await.as_deref(),
        Some(solo.as_str())
    );
    assert_eq!(target.head("mirror/mainframe", "1").await, None);
    assert_eq!(target.head("mirror/none", "1").await, None);

    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    let tag = &record["images"]["multi"]["tags"]["1.0"];
    assert_eq!(
        (tag["digest"].as_str(), tag["source_digest"].as_str()),
        (Some(mirrored.as_str()), Some(multi.as_str()))
    );
    assert_eq!(tag["platforms"], json!(["linux/amd64", "linux/arm64/v8"]));
    assert_eq!(
        record["images"]["list"]["tags"]["2"]["source_digest"],
        list.as_str()
    );
    assert!(
        record["images"]["solo"]["tags"]["1"]
            .get("source_digest")
            .is_none()
    );
    let skipped = &record["skipped"];
    assert_eq!(skipped["mainframe:1"]["digest"], mainframe.as_str());
    assert!(
        skipped["mainframe:1"]["reason"]
            .as_str()
            .unwrap()
            .contains("linux/s390x is not in --platforms linux/arm64,linux/amd64"),
        "{skipped}"
    );
    assert_eq!(skipped["none:1"]["digest"], none.as_str());
    assert!(
        skipped["none:1"]["reason"]
            .as_str()
            .unwrap()
            .contains("none of its platforms (linux/ppc64le, linux/s390x)")
    );
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (totals["copied"].as_u64(), totals["skipped"].as_u64()),
        (Some(3), Some(2)),
        "{totals}"
    );

    // The next run compares upstream's digests: nothing is copied, nothing sent to the target.
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (
            totals["copied"].as_u64(),
            totals["unchanged"].as_u64(),
            totals["skipped"].as_u64()
        ),
        (Some(0), Some(3), Some(2)),
        "{totals}"
    );
    assert_eq!(dst.accesses().len(), before, "no request to the target");

    // Upstream moves: the new index is cut down again.
    let (moved, moved_children) = p.index("team/multi", "1.0", Format::Oci, &three).await;
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    let tag = &record["images"]["multi"]["tags"]["1.0"];
    assert_eq!(tag["source_digest"], moved.as_str());
    let copied = target.get_manifest("mirror/multi", "1.0").await;
    assert_eq!(tag["digest"], digest_of(&copied).as_str());
    assert_eq!(children(&copied).len(), 2);
    assert_eq!(children(&copied)[1].0, moved_children[2]);

    // A narrower choice re-copies what it changes, judged from the records alone.
    let narrow: Vec<String> = args
        .iter()
        .map(|a| a.replace("linux/arm64,linux/amd64", "linux/amd64"))
        .collect();
    let out = run(gcrsync(work.path()).args(&narrow));
    assert_eq!(out.status.code(), Some(0));
    let totals = &read_json(&report)["totals"];
    // multi is cut again; list (amd64 only already) and solo stay; both skips are re-judged.
    assert_eq!(
        (
            totals["copied"].as_u64(),
            totals["unchanged"].as_u64(),
            totals["skipped"].as_u64()
        ),
        (Some(1), Some(2), Some(2)),
        "{totals}"
    );
    let copied = target.get_manifest("mirror/multi", "1.0").await;
    assert_eq!(
        children(&copied),
        [(moved_children[0].clone(), "linux/amd64".to_string())]
    );
    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    assert!(
        record["skipped"]["mainframe:1"]["reason"]
            .as_str()
            .unwrap()
            .ends_with("--platforms linux/amd64")
    );

    // Without --platforms, everything is mirrored whole and verbatim again.
    let all: Vec<String> = args[..args.len() - 4]
        .iter()
        .cloned()
        .chain(args[args.len() - 2..].iter().cloned())
        .collect();
    assert!(!all.iter().any(|a| a == "--platforms"));
    let out = run(gcrsync(work.path()).args(&all));
    assert_eq!(out.status.code(), Some(0));
    for (image, tag, digest) in [
        ("multi", "1.0", &moved),
        ("list", "2", &list),
        ("none", "1", &none),
        ("mainframe", "1", &mainframe),
    ] {
        let got = target.head(&format!("mirror/{image}"), tag).await;
        assert_eq!(got.as_deref(), Some(digest.as_str()), "{image}:{tag}");
    }
    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(record["skipped"], json!({}));
    assert!(
        record["images"]["multi"]["tags"]["1.0"]
            .get("source_digest")
            .is_none()
    );
}

#[test]
fn a_bad_platform_list_is_a_configuration_error() {
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path()).args([
        "test",
        "--source",
        "localhost:1/s",
        "--target",
        "localhost:1/t",
        "--platforms",
        "linux/amd64,arm64",
    ]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--platforms (GCRSYNC_PLATFORMS)") && err.contains("\"arm64\" is no platform"),
        "{err}"
    );
}

/// Puts `bytes` into a layout as a blob and returns its descriptor.
async fn blob(
    layouts: &LayoutRegistry,
    repo: &RepoPath,
    bytes: Vec<u8>,
    media_type: &str,
) -> Value {
    let digest = digest_of(&bytes);
    let Upload::Session(session) = layouts.start_upload(repo, None).await.unwrap() else {
        panic!("no mount asked")
    };
    let size = bytes.len() as u64;
    let body = BlobBody {
        size: Some(size),
        stream: Box::pin(futures_util::stream::iter([Ok(bytes::Bytes::from(bytes))])),
    };
    layouts
        .finish_upload(repo, &session, &digest.parse().unwrap(), size, body)
        .await
        .unwrap();
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

/// The copy engine between two layout directories: no server, a fraction of a second.
#[tokio::test]
async fn the_copy_engine_cuts_an_index_between_two_layouts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = Arc::new(LayoutRegistry::new(a.path().to_path_buf()));
    let repo: RepoPath = "app".parse().unwrap();
    let mut children = Vec::new();
    for arch in ["amd64", "riscv64", "arm64"] {
        let config = serde_json::to_vec(&json!({"os": "linux", "architecture": arch})).unwrap();
        let config = blob(
            &src,
            &repo,
            config,
            "application/vnd.oci.image.config.v1+json",
        )
        .await;
        let layer = blob(
            &src,
            &repo,
            random_bytes(4_000),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .await;
        let body = json!({"schemaVersion": 2, "mediaType": common::images::OCI_MANIFEST, "config": config, "layers": [layer]});
        let m = RawManifest::new(serde_json::to_vec(&body).unwrap().into(), None);
        src.put_manifest(&repo, &ManifestRef::Digest(m.digest.clone()), &m)
            .await
            .unwrap();
        children.push(
            json!({"mediaType": m.media_type, "digest": m.digest, "size": m.bytes.len(),
            "platform": {"os": "linux", "architecture": arch}}),
        );
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children,
        "annotations": {"org.opencontainers.image.version": "1.0"}});
    let index = RawManifest::new(serde_json::to_vec(&index).unwrap().into(), None);
    let tag = "1.0".parse().unwrap();
    src.put_manifest(&repo, &ManifestRef::Tag(tag), &index)
        .await
        .unwrap();

    let dst = Arc::new(LayoutRegistry::new(b.path().to_path_buf()));
    let chosen = "linux/arm64,linux/amd64".parse().unwrap();
    let copier = Copier::new(dst.clone(), 4, RetryPolicy::new(0)).with_platforms(Some(chosen));
    let tag = "1.0".parse().unwrap();
    let copied = copier.copy_tag(&src, &repo, &repo, &tag).await.unwrap();
    assert_eq!(copied.source_digest.as_ref(), Some(&index.digest));
    assert_eq!(copied.dropped, ["linux/riscv64"]);
    assert_eq!(copied.platforms, ["linux/amd64", "linux/arm64"]);
    let pushed = dst
        .get_manifest(&repo, &ManifestRef::Tag("1.0".parse().unwrap()))
        .await
        .unwrap();
    assert_eq!(pushed.digest, copied.digest);
    let value: Value = serde_json::from_slice(&pushed.bytes).unwrap();
    assert_eq!(
        value["annotations"]["org.opencontainers.image.version"],
        "1.0"
    );
    let kept: Vec<&Value> = value["manifests"].as_array().unwrap().iter().collect();
    assert_eq!(kept, [&children[0], &children[2]]);
    let riscv = children[1]["digest"].as_str().unwrap().parse().unwrap();
    assert!(
        dst.head_manifest(&repo, &ManifestRef::Digest(riscv))
            .await
            .unwrap()
            .is_none()
    );
    // Without --platforms the same copy is verbatim.
    let verbatim = Copier::new(dst.clone(), 4, RetryPolicy::new(0));
    let copied = verbatim.copy_tag(&src, &repo, &repo, &tag).await.unwrap();
    assert_eq!(
        (copied.digest, copied.source_digest),
        (index.digest.clone(), None)
    );
}

#[tokio::test]
async fn each_source_of_a_config_file_keeps_its_own_platforms() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let two = || {
        [
            ("amd64", vec![random_bytes(3_000)]),
            ("arm64/v8", vec![random_bytes(3_000)]),
        ]
    };
    let (cut, cut_children) = p.index("a/multi", "1", Format::Oci, &two()).await;
    let (whole, _) = p.index("b/multi", "1", Format::Oci, &two()).await;
    let (s, d) = (&src.addr, &dst.addr);
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("mirror.yml"),
        format!(
            "target: {d}/unused\n\
             metadata-dir: meta\n\
             sources:\n\
             \x20 - source: {s}/a\n\
             \x20   target: {d}/mirror-a\n\
             \x20   platforms: linux/amd64\n\
             \x20 - source: {s}/b\n\
             \x20   target: {d}/mirror-b\n"
        ),
    )
    .unwrap();
    let args = ["--config", "mirror.yml"];
    let out = run(gcrsync(work.path()).args(args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let q = Pusher::new(&dst.addr);
    // The first source's index is cut to amd64 (a new digest); the second is verbatim.
    let mirrored_a = q.get_manifest("mirror-a/multi", "1").await;
    assert_ne!(digest_of(&mirrored_a), cut);
    let kept: Vec<String> = children(&mirrored_a).into_iter().map(|c| c.0).collect();
    assert_eq!(kept, [cut_children[0].clone()]);
    assert_eq!(
        q.head("mirror-b/multi", "1").await.as_deref(),
        Some(whole.as_str())
    );
    let record = read_json(&work.path().join("meta").join(format!("{s}/a/images.json")));
    let tag = &record["images"]["multi"]["tags"]["1"];
    assert_eq!(tag["source_digest"], json!(cut));
    assert_eq!(tag["dropped_platforms"], json!(["linux/arm64/v8"]));

    // A second run copies nothing for either source.
    let out = run(gcrsync(work.path()).args(args));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stderr(&out).matches(" 0 copied").count(),
        2,
        "{}",
        stderr(&out)
    );
}
