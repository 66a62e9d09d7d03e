//! Kills, signals and deadlines: whatever happens, every record is true and a rerun completes.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::images::random_bytes;
use common::*;

/// `count` single-layer images of `size` bytes each under `team/`.
async fn push_workload(src: &TestRegistry, count: usize, size: usize) -> Vec<(String, String)> {
    let p = Pusher::new(&src.addr);
    let mut tags = Vec::new();
    for i in 0..count {
        let (digest, _) = p
            .image(
                &format!("team/img{i:02}"),
                "1",
                Format::Oci,
                "amd64",
                &[random_bytes(size)],
            )
            .await;
        tags.push((format!("img{i:02}"), digest));
    }
    tags
}

/// Every record in the metadata names a digest the target really serves under that tag
/// in `prefix/`, with every blob present. Returns how many records there are.
async fn assert_records_true(
    metadata: &Path,
    src: &TestRegistry,
    dst: &TestRegistry,
    prefix: &str,
) -> usize {
    let path = metadata.join(format!("{}/team/images.json", src.addr));
    if !path.exists() {
        return 0;
    }
    let record = read_json(&path);
    let target = Pusher::new(&dst.addr);
    let mut count = 0;
    for (image, entry) in record["images"].as_object().unwrap() {
        for (tag, t) in entry["tags"].as_object().unwrap() {
            let repo = format!("{prefix}/{image}");
            let digest = t["digest"].as_str().unwrap();
            assert_eq!(
                target.head(&repo, tag).await.as_deref(),
                Some(digest),
                "record {image}:{tag} is not true"
            );
            let manifest: serde_json::Value =
                serde_json::from_slice(&target.get_manifest(&repo, digest).await).unwrap();
            for layer in manifest["layers"].as_array().unwrap() {
                assert!(
                    target
                        .blob_exists(&repo, layer["digest"].as_str().unwrap())
                        .await
                );
            }
            count += 1;
        }
    }
    count
}

fn wait_for(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[tokio::test]
async fn sigkill_mid_run_keeps_only_true_records_and_a_rerun_completes() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let tags = push_workload(&src, 10, 3 << 20).await;
    // Kill points: as soon as the first batch lands, and after fixed delays (several seeds).
    for (round, delay_ms) in [(0, None), (1, Some(150)), (2, Some(400))] {
        let work = tempfile::tempdir().unwrap();
        let metadata = work.path().join("meta");
        let target_prefix = format!("round{round}");
        let mut args = mirror_args(&src, &dst, &metadata);
        args[3] = format!("{}/{target_prefix}", dst.addr);
        let mut child = gcrsync(work.path())
            .args(&args)
            .args(["--commit-every", "1", "--process-limit", "2"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let json = metadata.join(format!("{}/team/images.json", src.addr));
        match delay_ms {
            None => assert!(
                wait_for(&json, Duration::from_secs(30)),
                "no batch committed"
            ),
            Some(ms) => std::thread::sleep(Duration::from_millis(ms)),
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let kept = assert_records_true(&metadata, &src, &dst, &target_prefix).await;
        assert!(
            kept < tags.len() || delay_ms.is_some(),
            "the kill came too late to test anything"
        );
        let out = run(gcrsync(work.path())
            .args(&args)
            .args(["--commit-every", "1"]));
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            assert_records_true(&metadata, &src, &dst, &target_prefix).await,
            tags.len()
        );
    }
}

#[tokio::test]
async fn sigterm_stops_new_copies_records_finished_ones_and_exits_cleanly() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let tags = push_workload(&src, 16, 6 << 20).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = mirror_args(&src, &dst, &metadata);
    let child = gcrsync(work.path())
        .args(&args)
        .args(["--commit-every", "1", "--process-limit", "1", "--report"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_for(
        &metadata.join(format!("{}/team/images.json", src.addr)),
        Duration::from_secs(30)
    ));
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("signal received"), "{log}");
    let report = read_json(&report);
    assert_eq!(report["stopped"], "signal");
    let copied = report["totals"]["copied"].as_u64().unwrap() as usize;
    assert!(
        report["totals"]["pending"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        copied + report["totals"]["pending"].as_u64().unwrap() as usize,
        tags.len()
    );
    assert_eq!(
        assert_records_true(&metadata, &src, &dst, "mirror").await,
        copied
    );
}

#[tokio::test]
async fn a_zero_deadline_starts_nothing_and_leaves_everything_pending() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_workload(&src, 3, 1000).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &metadata))
        .args(["--deadline", "0s", "--report"])
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let report = read_json(&report);
    assert_eq!(
        (
            report["stopped"].as_str(),
            report["totals"]["pending"].as_u64()
        ),
        (Some("deadline"), Some(3))
    );
    assert_eq!(
        assert_records_true(&metadata, &src, &dst, "mirror").await,
        0
    );
    assert!(Pusher::new(&dst.addr).tags("mirror/img00").await.is_empty());
}
