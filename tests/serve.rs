//! `gcrsync serve` with real parts: CNCF distribution upstreams (some behind the fake
//! gcr.io's bearer tokens), Debian's skopeo as the client, the real binary: verbatim
//! pulls, warm pulls that ask the upstream nothing, one upstream fetch for concurrent
//! clients, pushes refused, and `sync --images-from` the misses. Upstream faults:
//! tests/serve_upstream.rs.

mod common;

use std::collections::HashMap;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::serve::{Serve, layout_digests, pull, skopeo};
use common::*;

/// Upstream GETs of blobs, by digest, in a fake gcr.io's log.
fn blob_gets(log: &[(String, String)]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (method, path) in log {
        if method == "GET" && path.contains("/blobs/sha256:") {
            let digest = path
                .split("/blobs/")
                .nth(1)
                .unwrap()
                .split('?')
                .next()
                .unwrap();
            *counts.entry(digest.to_string()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_through_serve_verbatim_and_a_warm_pull_asks_the_upstream_nothing() {
    let registry = TestRegistry::start();
    let gcr = FakeGcr::start(&registry.addr, true);
    let pusher = Pusher::new(&registry.addr);
    let (app, app_blobs) = pusher
        .image(
            "team/app",
            "1",
            Format::Docker,
            "amd64",
            &[random_bytes(300_000), random_bytes(1000)],
        )
        .await;
    let (multi, children) = pusher
        .index(
            "team/multi",
            "1",
            Format::Oci,
            &[
                ("amd64", vec![random_bytes(5000)]),
                ("arm64/v8", vec![random_bytes(6000)]),
            ],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    let misses = work.path().join("misses.jsonl");
    let mut serve = Serve::start(&[
        "--upstream",
        &gcr.addr,
        "--upstream",
        &format!("mirror={}/team", gcr.addr),
        "--record-misses",
        misses.to_str().unwrap(),
    ]);

    // The default route: the client's path is the upstream's.
    let out = work.path().join("app");
    assert!(
        pull(&format!("{}/team/app:1", serve.addr), &out)
            .status
            .success()
    );
    let (top, blobs) = layout_digests(&out);
    assert_eq!(top, app, "the manifest arrives verbatim (same digest)");
    for blob in &app_blobs {
        assert!(blobs.contains(blob), "{blob} pulled");
    }
    // A prefix route, and a multi-arch index with every child.
    let out = work.path().join("multi");
    assert!(
        pull(&format!("{}/mirror/multi:1", serve.addr), &out)
            .status
            .success()
    );
    let (top, blobs) = layout_digests(&out);
    assert_eq!(top, multi);
    for child in &children {
        assert!(blobs.contains(child), "child {child} pulled");
    }
    let cold = gcr.log();
    assert!(
        cold.iter()
            .any(|(m, p)| m == "GET" && p.starts_with("/v2/token")),
        "bearer tokens were used: {cold:?}"
    );

    // Each tag fetched from upstream is recorded once, as `sync --images-from` reads it.
    let recorded: Vec<serde_json::Value> = std::fs::read_to_string(&misses)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let images: Vec<&str> = recorded
        .iter()
        .map(|m| m["image"].as_str().unwrap())
        .collect();
    assert_eq!(
        images,
        [
            format!("{}/team/app:1", gcr.addr),
            format!("{}/team/multi:1", gcr.addr)
        ]
    );
    assert_eq!(recorded[1]["digest"], multi.as_str());

    // Warm: nothing goes upstream, not even a token request.
    let out = work.path().join("warm");
    assert!(
        pull(&format!("{}/mirror/multi:1", serve.addr), &out)
            .status
            .success()
    );
    assert_eq!(layout_digests(&out).0, multi);
    let after = gcr.log();
    assert_eq!(
        after[cold.len()..].to_vec(),
        Vec::<(String, String)>::new(),
        "a warm pull asks the upstream nothing"
    );

    // The cache is intact across a restart (SIGTERM ends the first one cleanly).
    let mut serve2 = serve.restart(&["--upstream", &gcr.addr]);
    let out = work.path().join("restarted");
    assert!(
        pull(&format!("{}/team/app:1", serve2.addr), &out)
            .status
            .success()
    );
    assert_eq!(layout_digests(&out).0, app);
    assert!(
        gcr.log()[after.len()..].iter().all(|(m, _)| m != "GET"),
        "{:?}",
        &gcr.log()[after.len()..]
    );
    assert_eq!(
        serve2.stop().and_then(|s| s.code()),
        Some(0),
        "{}",
        serve2.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn four_concurrent_cold_pulls_fetch_each_blob_from_the_upstream_once() {
    let registry = TestRegistry::start();
    let gcr = FakeGcr::start(&registry.addr, true);
    let layers = vec![
        random_bytes(3 << 20),
        random_bytes(2 << 20),
        random_bytes(1 << 20),
    ];
    let (app, blobs) = Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &layers)
        .await;
    let serve = Serve::start(&["--upstream", &gcr.addr]);
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/team/app:1", serve.addr);
    let pulls: Vec<_> = (0..4)
        .map(|i| {
            let (image, out) = (image.clone(), work.path().join(i.to_string()));
            std::thread::spawn(move || (pull(&image, &out), out))
        })
        .collect();
    for pull in pulls {
        let (output, out) = pull.join().unwrap();
        assert!(output.status.success());
        assert_eq!(layout_digests(&out).0, app);
    }
    let gets = blob_gets(&gcr.log());
    for blob in &blobs {
        assert_eq!(gets.get(blob), Some(&1), "{blob} fetched once: {gets:?}");
    }
    let manifest_gets = gcr
        .log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.starts_with("/v2/team/app/manifests/"))
        .count();
    assert_eq!(manifest_gets, 1, "{:?}", gcr.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn late_clients_stream_from_the_fetch_in_flight() {
    use futures_util::StreamExt;
    let (_registry, upstream, layer, digest) =
        common::serve::trickled_upstream(1 << 20, std::time::Duration::from_millis(40)).await;
    let serve = Serve::start(&["--upstream", &upstream.addr]);
    let url = format!("http://{}/v2/team/app/blobs/{digest}", serve.addr);
    let http = reqwest::Client::new();
    let mut first = http.get(&url).send().await.unwrap().bytes_stream();
    let mut got_first = first.next().await.unwrap().unwrap().to_vec();
    let second = http.get(&url).send().await.unwrap();
    assert_eq!(second.content_length(), Some(1 << 20));
    let mut second = second.bytes_stream();
    let mut got_second = second.next().await.unwrap().unwrap().to_vec();
    // The second client has bytes while the first is still receiving: streamed, not
    // handed over at the end.
    assert!(got_first.len() < layer.len() && !got_second.is_empty());
    while let Some(chunk) = first.next().await {
        got_first.extend_from_slice(&chunk.unwrap());
    }
    while let Some(chunk) = second.next().await {
        got_second.extend_from_slice(&chunk.unwrap());
    }
    assert!(got_first == layer && got_second == layer);
    let gets = upstream
        .log()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains(&digest))
        .count();
    assert_eq!(gets, 1);
    let metrics = http
        .get(format!("http://{}/metrics", serve.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gcrsync_serve_coalesced_total 1\n"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pushes_and_deletes_are_refused_with_unsupported() {
    let registry = TestRegistry::start();
    Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let pushed = registry.accesses().len();
    let serve = Serve::start(&["--upstream", &registry.addr]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app");
    assert!(
        pull(&format!("{}/team/app:1", serve.addr), &out)
            .status
            .success()
    );
    let push = skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("dir:{}", out.display()),
        &format!("docker://{}/team/pushed:1", serve.addr),
    ]);
    assert!(!push.status.success());
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2/team/app", serve.addr);
    for (method, url) in [
        (reqwest::Method::POST, format!("{base}/blobs/uploads/")),
        (reqwest::Method::PUT, format!("{base}/manifests/2")),
        (reqwest::Method::DELETE, format!("{base}/manifests/1")),
    ] {
        let response = http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(response.status(), 405, "{method} {url}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{method} {url}");
    }
    let forwarded = since(registry.accesses(), pushed);
    assert!(
        forwarded
            .iter()
            .all(|a| a.method == "GET" || a.method == "HEAD"),
        "{forwarded:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_images_from_mirrors_exactly_what_was_pulled_through_the_proxy() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start();
    let pusher = Pusher::new(&src.addr);
    let (app, _) = pusher
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    pusher
        .image("team/app", "2", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    pusher
        .image(
            "team/other",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(1000)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    let misses = work.path().join("misses.jsonl");
    let serve = Serve::start(&[
        "--upstream",
        &src.addr,
        "--record-misses",
        misses.to_str().unwrap(),
    ]);
    let out = work.path().join("app");
    assert!(
        pull(&format!("{}/team/app:1", serve.addr), &out)
            .status
            .success()
    );
    let metadata = work.path().join("metadata");
    let mut args = mirror_args(&src, &dst, &metadata);
    args.extend(["--images-from".into(), misses.display().to_string()]);
    let output = run(gcrsync(work.path()).args(&args));
    assert!(output.status.success());
    let target = Pusher::new(&dst.addr);
    assert_eq!(target.tags("mirror/app").await, ["1"]);
    assert_eq!(
        target.head("mirror/app", "1").await.as_deref(),
        Some(app.as_str())
    );
    assert!(target.tags("mirror/other").await.is_empty());
}
