//! `oci:DIR` image-layout directories as source and target, proven with real readers:
//! Debian's skopeo copies what gcrsync wrote into a registry, umoci unpacks it, and a
//! round trip registry → directory → registry keeps every digest.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::images::{DOCKER_LIST, OCI_MANIFEST, digest_of, random_bytes};
use common::*;
use gcrsync::oci::layout::LayoutRegistry;
use gcrsync::oci::manifest::RawManifest;
use gcrsync::oci::{BlobBody, ManifestRef, Registry, Upload};
use serde_json::{Value, json};

/// A gzipped tar holding `hello.txt` with `text`, and its uncompressed digest (diff id).
fn tar_layer(text: &str) -> (Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("root")).unwrap();
    std::fs::write(dir.path().join("root/hello.txt"), text).unwrap();
    let tar = dir.path().join("layer.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(dir.path().join("root"))
        .arg("hello.txt")
        .status()
        .unwrap();
    assert!(status.success());
    let plain = std::fs::read(&tar).unwrap();
    let gz = Command::new("gzip").arg("-nc").arg(&tar).output().unwrap();
    assert!(gz.status.success());
    (gz.stdout, digest_of(&plain))
}

/// Pushes an OCI image whose one layer is a real tarball (what umoci can unpack).
async fn push_unpackable(p: &Pusher, repo: &str, tag: &str, text: &str) -> String {
    let (layer, diff_id) = tar_layer(text);
    let config = json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}});
    let config = serde_json::to_vec(&config).unwrap();
    let mut config_desc = p.blob(repo, &config).await;
    config_desc["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let mut layer_desc = p.blob(repo, &layer).await;
    layer_desc["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+gzip");
    let body = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": config_desc, "layers": [layer_desc]});
    p.manifest(
        repo,
        tag,
        OCI_MANIFEST,
        &serde_json::to_vec_pretty(&body).unwrap(),
    )
    .await
}

/// Every kind of manifest under `team/`: (image, tag, digest).
async fn push_fixture(src: &TestRegistry) -> Vec<(String, String, String)> {
    let p = Pusher::new(&src.addr);
    let shared = random_bytes(50_000);
    let mut tags = Vec::new();
    let d = push_unpackable(&p, "team/app", "v1", "hello from gcrsync\n").await;
    tags.push(("app".into(), "v1".into(), d));
    let (d, _) = p
        .image(
            "team/app",
            "docker",
            Format::Docker,
            "amd64",
            std::slice::from_ref(&shared),
        )
        .await;
    tags.push(("app".into(), "docker".into(), d));
    let platforms = [
        ("amd64", vec![shared.clone()]),
        ("arm64/v8", vec![random_bytes(20_000)]),
    ];
    let (d, _) = p.index("team/multi", "1.0", Format::Oci, &platforms).await;
    tags.push(("multi".into(), "1.0".into(), d));
    let (d, _) = p
        .index("team/nested/list", "2", Format::Docker, &platforms)
        .await;
    tags.push(("nested/list".into(), "2".into(), d));
    tags
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn skopeo(args: &[&str]) -> std::process::Output {
    let out = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo is installed (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sync(work: &Path, source: &str, target: &str, meta: &Path, extra: &[&str]) -> Value {
    let report = work.join("report.json");
    let out = run(gcrsync(work)
        .args(["--source", source, "--target", target])
        .arg("--metadata-dir")
        .arg(meta)
        .arg("--report")
        .arg(&report)
        .args(extra));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    read_json(&report)["totals"].clone()
}

#[tokio::test]
async fn a_directory_gcrsync_wrote_is_read_by_skopeo_and_unpacked_by_umoci() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let tags = push_fixture(&src).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layouts");
    let meta = work.path().join("meta");
    let source = format!("{}/team", src.addr);
    let target = format!("oci:{}", dir.display());
    let totals = sync(work.path(), &source, &target, &meta, &[]);
    assert_eq!(totals["copied"], 4, "{totals}");

    // One layout per image, tags in index.json as skopeo and umoci name them.
    let index = read_json(&dir.join("app/index.json"));
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(names.len(), 2, "{index}");
    assert!(names.contains(&"v1") && names.contains(&"docker"));
    assert_eq!(
        read_json(&dir.join("multi/oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    // skopeo reads every OCI tag at the source's digest. (Its oci: transport looks only at
    // OCI manifests and indexes in index.json; Docker ones are kept verbatim all the same,
    // for the round trip, and gcrsync reads them back.)
    for (image, tag, digest) in tags
        .iter()
        .filter(|(_, t, _)| ["v1", "1.0"].contains(&t.as_str()))
    {
        let reference = format!("oci:{}/{image}:{tag}", dir.display());
        let raw = skopeo(&["inspect", "--raw", &reference]).stdout;
        assert_eq!(&digest_of(&raw), digest, "{reference}");
    }
    // skopeo copies the multi-arch index from the directory into a registry, verbatim.
    let from = format!("oci:{}/multi:1.0", dir.display());
    let to = format!("docker://{}/copied/multi:1.0", dst.addr);
    skopeo(&[
        "copy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &from,
        &to,
    ]);
    let copied = Pusher::new(&dst.addr).head("copied/multi", "1.0").await;
    assert_eq!(copied.as_deref(), Some(tags[2].2.as_str()));

    // umoci unpacks the image with the real layer.
    let bundle = work.path().join("bundle");
    let image = format!("{}:v1", dir.join("app").display());
    let out = Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle)
        .output()
        .expect("umoci is installed (apt-get install umoci)");
    assert!(
        out.status.success(),
        "umoci: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("rootfs/hello.txt")).unwrap(),
        "hello from gcrsync\n"
    );

    // Records work as with a registry: the directory is the target namespace.
    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(record["target"], target.as_str());
    assert_eq!(
        record["images"]["multi"]["target"],
        format!("{target}/multi").as_str()
    );
    // A second run has nothing to do, and touches no layout.
    let before = std::fs::read(dir.join("app/index.json")).unwrap();
    let totals = sync(work.path(), &source, &target, &meta, &[]);
    assert_eq!(
        (totals["copied"].as_u64(), totals["unchanged"].as_u64()),
        (Some(0), Some(4))
    );
    assert_eq!(std::fs::read(dir.join("app/index.json")).unwrap(), before);
}

#[tokio::test]
async fn a_round_trip_registry_directory_registry_keeps_every_digest() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let tags = push_fixture(&src).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("carried");
    let target = format!("oci:{}", dir.display());
    let there = sync(
        work.path(),
        &format!("{}/team", src.addr),
        &target,
        &work.path().join("meta-a"),
        &[],
    );
    assert_eq!(there["copied"], 4, "{there}");
    // Across the air gap: the directory is the source, listed without a request per tag.
    let meta = work.path().join("meta-b");
    let back = sync(
        work.path(),
        &target,
        &format!("{}/restored", dst.addr),
        &meta,
        &[],
    );
    assert_eq!(back["copied"], 4, "{back}");
    let restored = Pusher::new(&dst.addr);
    for (image, tag, digest) in &tags {
        let got = restored.head(&format!("restored/{image}"), tag).await;
        assert_eq!(got.as_deref(), Some(digest.as_str()), "{image}:{tag}");
    }
    let list = restored.get_manifest("restored/nested/list", "2").await;
    assert_eq!(
        serde_json::from_slice::<Value>(&list).unwrap()["mediaType"],
        DOCKER_LIST
    );
    // Its records are those of a namespace named by the directory.
    // Kept under `oci/` and the directory's path: no colon, which Windows checkouts refuse.
    let stored = format!("oci{}/images.json", dir.display());
    let record = read_json(&meta.join(&stored));
    assert_eq!(record["source"], target.as_str());
    assert_eq!(
        record["images"]["nested/list"]["tags"]["2"]["digest"],
        tags[3].2.as_str()
    );
    let again = sync(
        work.path(),
        &target,
        &format!("{}/restored", dst.addr),
        &meta,
        &[],
    );
    assert_eq!(
        (again["copied"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(4))
    );
}

#[test]
fn a_bad_directory_is_a_configuration_error_naming_the_option() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let single = work.path().join("single");
    std::fs::create_dir(&single).unwrap();
    std::fs::write(
        single.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let missing = work.path().join("missing");
    let cases = [
        (
            "--source",
            format!("oci:{}", missing.display()),
            "does not exist",
        ),
        ("--target", format!("oci:{}", file.display()), "is a file"),
        (
            "--target",
            format!("oci:{}", single.display()),
            "itself one image layout",
        ),
        ("--source", "oci:".to_string(), "oci:DIR"),
    ];
    for (flag, value, says) in cases {
        let (source, target) = match flag {
            "--source" => (value.clone(), "localhost:1/t".to_string()),
            _ => ("localhost:1/s".to_string(), value.clone()),
        };
        let out = run(gcrsync(work.path())
            .args(["test", "--source", &source, "--target", &target])
            .arg("--metadata-dir")
            .arg(work.path().join("meta")));
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(err.contains(flag) && err.contains(says), "{value}: {err}");
    }
}

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

/// A run killed (SIGKILL) in the middle of a slow layer leaves the directory as readers
/// expect: finished images whole, the unfinished one untagged with no partial blob; the
/// next run sweeps the leftovers and completes it.
#[tokio::test]
async fn a_run_killed_mid_layer_leaves_layouts_whole_and_the_next_run_completes() {
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let small = push_unpackable(&p, "team/small", "1", "small\n").await;
    let (proxy, large_layer) = common::faults::slow_large_image(&src).await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layouts");
    let args = [
        "--source".to_string(),
        format!("{}/team", proxy.addr),
        "--target".to_string(),
        format!("oci:{}", dir.display()),
        "--metadata-dir".to_string(),
        work.path().join("meta").display().to_string(),
        "--commit-every".to_string(),
        "1".to_string(),
    ];
    let mut child = gcrsync(work.path())
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let in_flight = |dir: &Path| {
        std::fs::read_dir(dir.join("large"))
            .map(|entries| {
                entries.flatten().any(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(".gcrsync-upload") && e.metadata().unwrap().len() > 100_000
                })
            })
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(in_flight(&dir) && dir.join("small/index.json").exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the large layer never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let hex = large_layer.trim_start_matches("sha256:");
    assert!(
        !dir.join("large/blobs/sha256").join(hex).exists(),
        "no partial blob"
    );
    assert!(
        !dir.join("large/index.json").exists(),
        "the unfinished image is not tagged"
    );
    let reference = format!("oci:{}/small:1", dir.display());
    assert_eq!(
        digest_of(&skopeo(&["inspect", "--raw", &reference]).stdout),
        small
    );

    proxy.clear();
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let large = Pusher::new(&src.addr)
        .head("team/large", "1")
        .await
        .unwrap();
    let reference = format!("oci:{}/large:1", dir.display());
    assert_eq!(
        digest_of(&skopeo(&["inspect", "--raw", &reference]).stdout),
        large
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("large"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
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
