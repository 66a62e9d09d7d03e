//! Registry misbehaviour between gcrsync and a real registry: throttling with
//! `Retry-After`, server errors, bodies cut or altered mid-stream. Each run either succeeds
//! after retries or reports the tag failed; no record ever claims a wrong digest.

mod common;

use std::time::Instant;

use common::faults::{Fault, FaultProxy, Rule};
use common::images::random_bytes;
use common::*;

fn proxied_args(proxy: &FaultProxy, dst: &TestRegistry, metadata: &std::path::Path) -> Vec<String> {
    args_for(&proxy.addr, &dst.addr, metadata)
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_honouring_retry_after() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, blobs) = Pusher::new(&src.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(300_000)],
        )
        .await;
    let proxy = FaultProxy::start(&src.addr);
    let rule = |method, path: &str, fault| Rule {
        method,
        path_contains: path.into(),
        times: 1,
        fault,
    };
    proxy.inject(rule("GET", "/v2/_catalog", Fault::Status(503, None)));
    proxy.inject(rule("GET", "/tags/list", Fault::Status(429, Some(2))));
    proxy.inject(rule("HEAD", "/manifests/1", Fault::Status(502, None)));
    proxy.inject(rule("GET", "/manifests/1", Fault::Status(500, None)));
    proxy.inject(rule("GET", &blobs[1], Fault::Status(429, None)));
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let started = Instant::now();
    let out = run(gcrsync(work.path()).args(proxied_args(&proxy, &dst, &metadata)));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        started.elapsed().as_secs_f64() >= 2.0,
        "Retry-After: 2 was not honoured"
    );
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    let injected = proxy
        .log()
        .iter()
        .filter(|(_, _, what)| what != "forwarded")
        .count();
    assert_eq!(injected, 5, "{:?}", proxy.log());
}

#[tokio::test]
async fn cut_and_altered_blob_bodies_are_caught_and_retried() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, blobs) = Pusher::new(&src.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(2 << 20)],
        )
        .await;
    let proxy = FaultProxy::start(&src.addr);
    let rule = |fault| Rule {
        method: "GET",
        path_contains: blobs[1].clone(),
        times: 1,
        fault,
    };
    proxy.inject(rule(Fault::CutAfter(1 << 20)));
    proxy.inject(rule(Fault::Corrupt));
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path()).args(proxied_args(&proxy, &dst, &work.path().join("meta"))));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("digest mismatch"),
        "the altered body must be caught: {log}"
    );
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    let gets = proxy
        .log()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains(&blobs[1]))
        .count();
    assert_eq!(gets, 3, "cut, altered, then whole");
}

#[tokio::test]
async fn persistent_failures_fail_the_tag_without_recording_it_and_a_clean_rerun_converges() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let (bad, blobs) = p
        .image(
            "team/bad",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(100_000)],
        )
        .await;
    let (good, _) = p
        .image(
            "team/good",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(100_000)],
        )
        .await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.inject(Rule {
        method: "GET",
        path_contains: blobs[1].clone(),
        times: 100,
        fault: Fault::Corrupt,
    });
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = proxied_args(&proxy, &dst, &metadata);
    let out = run(gcrsync(work.path()).args(&args).args(["--retries", "1"]));
    assert_eq!(out.status.code(), Some(1));
    let json = metadata.join(format!("{}/team/images.json", proxy.addr));
    let record = read_json(&json);
    assert_eq!(
        record["images"]["good"]["tags"]["1"]["digest"],
        good.as_str()
    );
    assert!(record["images"].get("bad").is_none());
    assert!(
        record["failed"]["bad:1"]["error"]
            .as_str()
            .unwrap()
            .contains("digest mismatch")
    );
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/bad", "1").await,
        None,
        "no tag with a wrong digest"
    );

    // Without the fault, the next run copies it and clears the failure.
    proxy.clear();
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let record = read_json(&json);
    assert_eq!(record["images"]["bad"]["tags"]["1"]["digest"], bad.as_str());
    assert!(record["failed"].as_object().unwrap().is_empty(), "{record}");
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/bad", "1").await,
        Some(bad)
    );
}

#[tokio::test]
async fn a_pull_quota_smaller_than_the_plan_copies_what_fits_and_says_so() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for tag in ["a", "b", "c", "d", "e"] {
        p.image("team/app", tag, Format::Oci, "amd64", &[random_bytes(100)])
            .await;
    }
    let proxy = FaultProxy::start(&src.addr);
    proxy.add_header("ratelimit-limit", "100;w=21600");
    proxy.add_header("ratelimit-remaining", "2;w=21600");
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(proxied_args(&proxy, &dst, &work.path().join("meta")))
        .arg("--report")
        .arg(&report));
    assert_eq!(
        out.status.code(),
        Some(0),
        "quota leftovers are not failures"
    );
    assert!(
        stderr(&out).contains("pull quota (RateLimit-Remaining) does not cover the plan"),
        "{}",
        stderr(&out)
    );
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/app").await, ["a", "b"]);
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (totals["copied"].as_u64(), totals["pending"].as_u64()),
        (Some(2), Some(3)),
        "{totals}"
    );
}

#[tokio::test]
async fn a_download_cut_mid_stream_resumes_with_a_range_request_in_the_same_upload() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let size = 4 << 20;
    let (digest, blobs) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(size)])
        .await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.inject(Rule {
        method: "GET",
        path_contains: blobs[1].clone(),
        times: 1,
        fault: Fault::CutAfter(1 << 20),
    });
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path()).args(proxied_args(&proxy, &dst, &work.path().join("meta"))));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("resuming at byte"),
        "{}",
        stderr(&out)
    );
    let gets: Vec<String> = proxy
        .log()
        .into_iter()
        .filter(|(m, p, _)| m == "GET" && p.contains(&blobs[1]))
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed_at: u64 = gets[1]
        .split("[bytes=")
        .nth(1)
        .unwrap()
        .trim_end_matches("-]")
        .parse()
        .unwrap();
    assert!(
        resumed_at > 0 && resumed_at <= 1 << 20,
        "resumed from the bytes already received: {gets:?}"
    );
    let uploads = dst
        .accesses()
        .iter()
        .filter(|a| a.method == "PUT" && a.path.contains(&blobs[1]))
        .count();
    assert_eq!(uploads, 1, "the upload went on, it did not start over");
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
}

#[tokio::test]
async fn http_timeout_cuts_a_hung_server_but_never_a_slow_steady_transfer() {
    use std::time::Duration;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, blobs) = Pusher::new(&src.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(2 << 20)],
        )
        .await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.inject(Rule {
        method: "GET",
        path_contains: "/tags/list".into(),
        times: 1,
        fault: Fault::Stall(Duration::from_secs(5)),
    });
    // 2 MiB in 64 KiB pieces 100 ms apart: over 3 s in all, never 1 s without data.
    proxy.inject(Rule {
        method: "GET",
        path_contains: blobs[1].clone(),
        times: 1,
        fault: Fault::Trickle(Duration::from_millis(100)),
    });
    let work = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = run(gcrsync(work.path())
        .args(proxied_args(&proxy, &dst, &work.path().join("meta")))
        .args(["--http-timeout", "1s"]));
    assert_eq!(out.status.code(), Some(0));
    let log = stderr(&out);
    assert!(
        log.contains("tags/list") && log.contains("retrying"),
        "the hung listing timed out and was retried: {log}"
    );
    assert!(
        !log.contains("resuming"),
        "the slow blob was never cut: {log}"
    );
    assert!(
        started.elapsed() > Duration::from_secs(3),
        "the trickle took longer than the timeout"
    );
    let gets = proxy
        .log()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains(&blobs[1]))
        .count();
    assert_eq!(
        gets,
        1,
        "the slow transfer went through in one piece: {:?}",
        proxy.log()
    );
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
}

#[tokio::test]
async fn a_target_that_does_not_create_repositories_on_push_says_what_to_do() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let front = FaultProxy::start(&dst.addr);
    front.inject(Rule {
        method: "POST",
        path_contains: "/blobs/uploads/".into(),
        times: 100,
        fault: Fault::Status(404, None),
    });
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let out = run(gcrsync(work.path()).args(args_for(&src.addr, &front.addr, &metadata)));
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("target repository mirror/app: does not exist and the registry does not create repositories on push"), "{err}");
    assert!(err.contains("create it"), "{err}");
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert!(
        record["images"].as_object().unwrap().is_empty(),
        "nothing recorded: {record}"
    );
}

/// A `Link` to the next page on another host is refused: the registry's credentials go
/// with every page request, so they would go to that host.
#[tokio::test]
async fn a_next_page_link_to_another_host_is_refused() {
    let (src, dst, elsewhere) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.add_header(
        "link",
        &format!(
            r#"<http://{}/v2/_catalog?n=1000&last=team>; rel="next""#,
            elsewhere.addr
        ),
    );
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path())
        .args(proxied_args(&proxy, &dst, &work.path().join("meta")))
        .args(["--insecure-registry", &elsewhere.addr]));
    assert_eq!(out.status.code(), Some(3), "the catalog cannot be listed");
    assert!(
        stderr(&out).contains("leaves the registry"),
        "{}",
        stderr(&out)
    );
    assert!(
        elsewhere.accesses().is_empty(),
        "nothing reached the other host"
    );
}
