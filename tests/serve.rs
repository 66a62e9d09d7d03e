//! `gcrsync serve` with real parts: CNCF distribution upstreams (behind the fake gcr.io's
//! bearer-token auth, or the fault proxy), Debian's skopeo as the client, the real binary.

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
async fn an_upstream_cutting_or_corrupting_a_blob_leaves_nothing_cached_and_the_next_pull_is_good()
{
    use common::faults::{Fault, FaultProxy, Rule};
    let registry = TestRegistry::start();
    let layer = random_bytes(400_000);
    let digest = common::images::digest_of(&layer);
    let (app, _) = Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            Format::Docker,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    let upstream = FaultProxy::start(&registry.addr);
    let serve = Serve::start(&["--upstream", &upstream.addr, "--retries", "0"]);
    let url = format!("http://{}/v2/team/app/blobs/{digest}", serve.addr);
    let hex = digest.trim_start_matches("sha256:").to_string();
    for fault in [Fault::CutAfter(100_000), Fault::Corrupt] {
        upstream.inject(Rule {
            method: "GET",
            path_contains: digest.clone(),
            times: 1,
            fault: fault.clone(),
        });
        let response = reqwest::get(&url).await.unwrap();
        let body = response.bytes().await;
        assert!(
            body.is_err(),
            "{fault:?}: the client's transfer fails, it gets no bad layer"
        );
        common::wait_until(
            "the failed download is cleaned up",
            std::time::Duration::from_secs(5),
            || serve.leftovers() == 0,
        );
        assert!(
            !serve.cached_blobs().contains(&hex),
            "{fault:?}: nothing cached"
        );
    }
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("app");
    assert!(
        pull(&format!("{}/team/app:1", serve.addr), &out)
            .status
            .success()
    );
    let (top, blobs) = layout_digests(&out);
    assert_eq!(top, app);
    assert!(blobs.contains(&digest));
    assert!(serve.cached_blobs().contains(&hex));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_upstream_download_resumes_with_a_range_request_within_the_retries() {
    use common::faults::{Fault, FaultProxy, Rule};
    let registry = TestRegistry::start();
    // Cut after more than hyper's first read (about 400 KB), so the headers go out first
    // and the cut falls mid-body.
    let ([a, b], [da, db]) = common::serve::two_layer_image(&registry, 1_200_000).await;
    let upstream = FaultProxy::start(&registry.addr);
    let serve = Serve::start(&["--upstream", &upstream.addr, "--retries", "1"]);
    let url = |d: &str| format!("http://{}/v2/team/app/blobs/{d}", serve.addr);
    let fault = |digest: &str, times, fault| {
        upstream.inject(Rule {
            method: "GET",
            path_contains: digest.to_string(),
            times,
            fault,
        })
    };
    let gets = |d: &str| -> Vec<String> {
        let log = upstream.log();
        log.into_iter()
            .filter(|(m, p, _)| m == "GET" && p.contains(d))
            .map(|(_, p, _)| p)
            .collect()
    };
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();

    // Cut once: resumed from the bytes received; the client gets the whole, verified blob.
    fault(&da, 1, Fault::CutAfter(500_000));
    let got = reqwest::get(url(&da)).await.unwrap().bytes().await.unwrap();
    assert!(got == a, "the client got the whole blob");
    let asked = gets(&da);
    assert_eq!(asked.len(), 2, "{asked:?}");
    let resumed_at: u64 = asked[1]
        .split("[bytes=")
        .nth(1)
        .and_then(|r| r.strip_suffix("-]"))
        .unwrap_or_else(|| panic!("a Range request: {asked:?}"))
        .parse()
        .unwrap();
    assert!(resumed_at > 0 && resumed_at <= 500_000, "{asked:?}");
    assert!(serve.cached_blobs().contains(&hex(&da)));
    assert!(
        serve.log().contains("resuming from there"),
        "{}",
        serve.log()
    );

    // The resumption refused (within the retries too): as before, an error, nothing cached.
    fault(&db, 1, Fault::CutAfter(500_000));
    fault(&db, 10, Fault::Status(503, None));
    // (Under load the cut can come before the headers leave the fault proxy: then the
    // first GET itself failed, and the client gets the upstream's error instead.)
    let response = reqwest::get(url(&db)).await.unwrap();
    let got_blob = response.status() == 200 && response.bytes().await.is_ok();
    assert!(!got_blob, "the client's transfer fails");
    let asked = gets(&db).len();
    assert!((2..=3).contains(&asked), "one GET and the retries: {asked}");
    common::wait_until(
        "the failed download is cleaned up",
        std::time::Duration::from_secs(5),
        || serve.leftovers() == 0,
    );
    assert!(!serve.cached_blobs().contains(&hex(&db)));
    assert!(serve.log().contains("resuming failed"), "{}", serve.log());
    upstream.clear();
    let got = reqwest::get(url(&db)).await.unwrap().bytes().await.unwrap();
    assert!(got == b, "the next request is good");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_upstream_stopped_cached_tags_are_still_served() {
    let registry = TestRegistry::start();
    let pusher = Pusher::new(&registry.addr);
    let (app, _) = pusher
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(10_000)],
        )
        .await;
    pusher
        .image("team/app", "2", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let serve = Serve::start(&[
        "--upstream",
        &registry.addr,
        "--tag-ttl",
        "1s",
        "--retries",
        "0",
    ]);
    let work = tempfile::tempdir().unwrap();
    let image = format!("{}/team/app:1", serve.addr);
    assert!(pull(&image, &work.path().join("a")).status.success());
    let http = reqwest::Client::new();
    let tags = |query: &'static str| {
        let url = format!("http://{}/v2/team/app/tags/list{query}", serve.addr);
        let http = http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let link = response.headers().get("link").cloned();
            (response.status(), link, response.text().await.unwrap())
        }
    };
    let (status, _, listed) = tags("").await;
    assert_eq!(
        (status.as_u16(), listed.as_str()),
        (200, r#"{"name":"team/app","tags":["1","2"]}"#)
    );
    drop(registry);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = work.path().join("b");
    assert!(pull(&image, &out).status.success(), "{}", serve.log());
    assert_eq!(layout_digests(&out).0, app);
    assert!(
        serve.log().contains("serving the cached"),
        "{}",
        serve.log()
    );
    // The last good listing answers, paginated as the spec says.
    let (status, link, page) = tags("?n=1").await;
    assert_eq!(
        (status.as_u16(), page.as_str()),
        (200, r#"{"name":"team/app","tags":["1"]}"#)
    );
    assert_eq!(
        link.unwrap(),
        r#"</v2/team/app/tags/list?n=1&last=1>; rel="next""#
    );
    let (_, link, page) = tags("?n=1&last=1").await;
    assert_eq!(
        (page.as_str(), link),
        (r#"{"name":"team/app","tags":["2"]}"#, None)
    );
    assert!(
        serve.log().contains("serving the cached listing of 2 tags"),
        "{}",
        serve.log()
    );
    // A repository never listed has no listing to fall back on.
    let url = format!("http://{}/v2/team/other/tags/list", serve.addr);
    let never = http.get(url).send().await.unwrap();
    assert_eq!(never.status(), 503);
    // A tag never pulled cannot be made up: the client gets the upstream failure.
    let missing = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/team/app:2", serve.addr),
    ]);
    assert!(!missing.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_upstream_is_asked_once_before_the_cached_tag_answers() {
    use common::faults::{Fault, FaultProxy, Rule};
    let registry = TestRegistry::start();
    let (app, _) = Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let upstream = FaultProxy::start(&registry.addr);
    let serve = Serve::start(&[
        "--upstream",
        &upstream.addr,
        "--tag-ttl",
        "1s",
        "--retries",
        "1",
    ]);
    let url = format!("http://{}/v2/team/app/manifests/1", serve.addr);
    let http = reqwest::Client::new();
    let get = || async {
        let r = http
            .get(&url)
            .header("accept", common::images::OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string(),
        )
    };
    assert_eq!(get().await, (200, app.clone()));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    upstream.inject(Rule {
        method: "HEAD",
        path_contains: "/manifests/1".into(),
        times: 100,
        fault: Fault::Status(503, None),
    });
    let before = upstream.log().len();
    assert_eq!(get().await, (200, app), "the cached tag answers");
    let heads = upstream.log()[before..]
        .iter()
        .filter(|(m, p, _)| m == "HEAD" && p.contains("/manifests/1"))
        .count();
    assert_eq!(
        heads,
        1,
        "one HEAD, not --retries more (the cached tag answers): {:?}\n{}",
        &upstream.log()[before..],
        serve.log()
    );
    // The same for a listing kept: one GET, then the kept listing.
    let tags = format!("http://{}/v2/team/app/tags/list", serve.addr);
    let listed = http.get(&tags).send().await.unwrap().text().await.unwrap();
    upstream.inject(Rule {
        method: "GET",
        path_contains: "/tags/list".into(),
        times: 100,
        fault: Fault::Status(503, None),
    });
    let before = upstream.log().len();
    let kept = http.get(&tags).send().await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.text().await.unwrap(), listed);
    assert_eq!(upstream.log().len() - before, 1, "{:?}", upstream.log());
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
