//! `oci:DIR` image-layout directories as source and target, proven with real readers:
//! Debian's skopeo copies what gcrsync wrote into a registry, umoci unpacks it, and a
//! round trip registry → directory → registry keeps every digest, and a run killed
//! mid-layer leaves every layout whole. The layout store itself: tests/layout_store.rs.

mod common;

use std::path::Path;
use std::process::Command;

use common::images::{DOCKER_LIST, OCI_MANIFEST, digest_of, random_bytes};
use common::*;
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
