//! Kills, signals and deadlines: whatever happens, every record is true and a rerun completes.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::faults::{Fault, FaultProxy, Rule, slow_large_image};
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
    // SPEC §8: a run stopped by a signal exits 1, after recording what finished.
    assert_eq!(out.status.code(), Some(1), "{log}");
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

fn signal(child: &std::process::Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child to exit, at most `limit`; returns its output and how long it took.
fn exit_within(
    mut child: std::process::Child,
    limit: Duration,
) -> (std::process::Output, Duration) {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("gcrsync did not exit within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

/// Actions cancels with SIGINT and kills 10 s later: a copy in the middle of a large,
/// slow layer is cancelled at once, the finished tags (not yet committed: the batch is
/// not full) are committed, the report says so, and the process is gone well within 5 s.
#[tokio::test]
async fn sigint_during_a_large_layer_cancels_it_commits_the_rest_and_exits_within_5s() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let small = push_workload(&src, 3, 1000).await;
    let (proxy, large_digest) = slow_large_image(&src).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let child = gcrsync(work.path())
        .args(args_for(&proxy.addr, &dst.addr, &metadata))
        .args(["--process-limit", "4", "--report"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let records = metadata.join(format!("{}/team/images.json", proxy.addr));
    wait_for_small_copies(&dst, &proxy, &large_digest, small.len()).await;
    assert!(
        !records.exists(),
        "the batch is not full: nothing committed yet"
    );
    signal(&child, "INT");
    let (out, took) = exit_within(child, Duration::from_secs(5));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let report = read_json(&report);
    assert_eq!(report["stopped"], "signal", "{report}");
    assert_eq!(report["totals"]["copied"], small.len(), "{report}");
    assert_eq!(report["totals"]["pending"], 1, "{report}");
    assert_eq!(report["unrecorded"], 0, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let recorded = read_json(&records);
    assert_eq!(
        recorded["images"].as_object().unwrap().len(),
        small.len(),
        "{recorded}"
    );
    assert!(recorded["images"].get("large").is_none(), "{recorded}");
    // A rerun without the slow proxy's fault completes the mirror.
    proxy.clear();
    let out = run(gcrsync(work.path())
        .args(args_for(&proxy.addr, &dst.addr, &metadata))
        .args(["--commit-every", "1"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        read_json(&records)["images"].as_object().unwrap().len(),
        small.len() + 1
    );
}

/// Waits until `count` small images `img00…` are on the target under `mirror/` and the
/// slow layer's download has started.
async fn wait_for_small_copies(dst: &TestRegistry, proxy: &FaultProxy, large: &str, count: usize) {
    let target = Pusher::new(&dst.addr);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut copied = 0;
        for i in 0..count {
            copied += usize::from(
                target
                    .head(&format!("mirror/img{i:02}"), "1")
                    .await
                    .is_some(),
            );
        }
        if copied == count && proxy.saw(large) {
            // The manifest is a copy's last write to the target, but the run still reads
            // the image's referrers before it counts the tag: on a loaded machine a
            // signal sent at once caught a small copy there (and it went unrecorded).
            std::thread::sleep(Duration::from_millis(500));
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the small images were never copied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A metadata store that fails for good mid-run ends the run with exit 3, and the report
/// still says what was committed before; a rerun picks up from there.
#[tokio::test]
async fn a_store_failing_mid_run_exits_3_with_a_report_of_what_was_committed() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let tags = push_workload(&src, 6, 1 << 20).await;
    let proxy = FaultProxy::start(&src.addr);
    // Slow enough that the store can be broken after the first commit.
    proxy.inject(Rule {
        method: "GET",
        path_contains: "/blobs/".into(),
        times: 1000,
        fault: Fault::Trickle(Duration::from_millis(20)),
    });
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let child = gcrsync(work.path())
        .args(args_for(&proxy.addr, &dst.addr, &metadata))
        .args(["--commit-every", "1", "--process-limit", "1", "--report"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ns = metadata.join(format!("{}/team", proxy.addr));
    assert!(wait_for(&ns.join("README.md"), Duration::from_secs(30)));
    // A directory where the store must write a file: every later write fails.
    std::fs::remove_file(ns.join("README.md")).unwrap();
    std::fs::create_dir_all(ns.join("README.md/x")).unwrap();
    let (out, _) = exit_within(child, Duration::from_secs(60));
    let log = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    let report = read_json(&report);
    assert!(
        report["error"].as_str().unwrap().contains("README.md"),
        "{report}"
    );
    assert!(
        !report["commits"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(log.contains("committed before that"), "{log}");
    std::fs::remove_dir_all(ns.join("README.md")).unwrap();
    proxy.clear();
    let out = run(gcrsync(work.path()).args(args_for(&proxy.addr, &dst.addr, &metadata)));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        read_json(&ns.join("images.json"))["images"]
            .as_object()
            .unwrap()
            .len(),
        tags.len()
    );
}

/// `monitor` between rounds wakes on a signal at once, and reports.
#[tokio::test]
async fn monitor_wakes_on_a_signal_at_once() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_workload(&src, 1, 100).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let child = gcrsync(work.path())
        .arg("monitor")
        .args(["--interval", "1h", "--count", "0"])
        .args(mirror_args(&src, &dst, &metadata))
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first round lists the source; then the wait of an hour starts.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !src.accesses().iter().any(|a| a.path.contains("/tags/list")) {
        assert!(Instant::now() < deadline, "monitor never listed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    let (out, took) = exit_within(child, Duration::from_secs(3));
    assert!(took < Duration::from_secs(3));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 pending"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_json(&report)["command"], "monitor");
}

/// Every ending writes the report: a configuration error found after listing (exit 2)
/// too. A report path in a missing directory is refused before anything happens.
#[tokio::test]
async fn errors_still_write_the_report_and_a_bad_report_path_is_refused_up_front() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_workload(&src, 2, 100).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let before = src.accesses().len();
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &metadata))
        .args(["--report", "no/such/dir/report.json"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--report"), "{}", stderr(&out));
    assert_eq!(
        src.accesses().len(),
        before,
        "nothing is sent before the check"
    );
    // Two images onto one target name: exit 2, with a report that says why.
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &metadata))
        .args(["--name-template", "one", "--report"])
        .arg(&report));
    assert_eq!(out.status.code(), Some(2));
    let report = read_json(&report);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("--name-template"),
        "{report}"
    );
    assert_eq!(report["totals"]["copied"], 0);
}

/// A run whose last commit GitHub holds with a secondary rate limit, signalled with
/// SIGINT once the small images are copied (and, when `second`, with SIGTERM 0.5 s later).
async fn signal_while_github_holds_the_commit(second: bool) -> (std::process::Output, Duration) {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push_workload(&src, 2, 1000).await;
    let (proxy, large_digest) = slow_large_image(&src).await;
    let gh = common::github::FakeGitHub::start(false);
    // The batch's first write (its tree: small files go inline) is held for a minute.
    gh.inject_on("POST /git/trees", common::github::Fault::SecondaryLimit(60));
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report.json");
    let child = gcrsync(work.path())
        .args(args_for(
            &proxy.addr,
            &dst.addr,
            &work.path().join("unused"),
        ))
        .args(gh.args(common::github::WRITE_TOKEN))
        .args(["--process-limit", "4", "--report"])
        .arg(&report)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_small_copies(&dst, &proxy, &large_digest, 2).await;
    signal(&child, "INT");
    if !second {
        let (out, took) = exit_within(child, Duration::from_secs(7));
        let report = read_json(&report);
        assert_eq!(report["unrecorded"], 2, "{report}");
        assert!(report["error"].is_null(), "{report}");
        return (out, took);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        gh.log()
            .iter()
            .any(|r| r.method == "POST" && r.path.contains("/git/trees")),
        "the last commit had started"
    );
    signal(&child, "TERM");
    exit_within(child, Duration::from_secs(2))
}

/// After the first signal the last commit gets a bounded time, then the run reports
/// (exit 1: stopped by a signal, not a store failure) well inside Actions' window.
#[tokio::test]
async fn a_commit_held_by_github_ends_within_the_cancel_window() {
    let (out, took) = signal_while_github_holds_the_commit(false).await;
    let log = stderr(&out);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("next run adopts them"), "{log}");
}

/// A second signal ends the process at once, as Actions' SIGTERM 7.5 s after its SIGINT
/// would.
#[tokio::test]
async fn a_second_signal_exits_at_once_while_the_last_commit_waits() {
    let (out, took) = signal_while_github_holds_the_commit(true).await;
    let log = stderr(&out);
    assert!(took < Duration::from_secs(1), "{took:?}");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("second signal"), "{log}");
}
