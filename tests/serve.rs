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
    let registry = TestRegistry::start();
    let layer = random_bytes(1 << 20);
    let digest = common::images::digest_of(&layer);
    Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    let upstream = common::faults::FaultProxy::start(&registry.addr);
    upstream.inject(common::faults::Rule {
        method: "GET",
        path_contains: digest.clone(),
        times: 1,
        fault: common::faults::Fault::Trickle(std::time::Duration::from_millis(40)),
    });
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
async fn with_the_upstream_stopped_cached_tags_are_still_served() {
    let registry = TestRegistry::start();
    let (app, _) = Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(10_000)],
        )
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
    // A tag never pulled cannot be made up: the client gets the upstream failure.
    let missing = skopeo(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{}/team/app:2", serve.addr),
    ]);
    assert!(!missing.status.success());
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
async fn the_pull_api_answers_heads_ranges_accept_and_tag_pages_as_a_registry_does() {
    use common::faults::FaultProxy;
    let registry = TestRegistry::start();
    let pusher = Pusher::new(&registry.addr);
    let layer = random_bytes(50_000);
    let digest = common::images::digest_of(&layer);
    let (app, _) = pusher
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    for tag in ["2", "3"] {
        pusher
            .image("team/app", tag, Format::Oci, "amd64", &[random_bytes(100)])
            .await;
    }
    let upstream = FaultProxy::start(&registry.addr);
    let serve = Serve::start(&["--upstream", &upstream.addr]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2", serve.addr);

    let root = http.get(format!("{base}/")).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(
        root.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    // HEAD on an uncached blob: the upstream's HEAD, no download, nothing cached.
    let head = http
        .head(format!("{base}/team/app/blobs/{digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "50000");
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    assert!(
        upstream
            .log()
            .iter()
            .all(|(m, p, _)| !(m == "GET" && p.contains(&digest)))
    );
    assert!(serve.cached_blobs().is_empty());

    // Manifests: HEAD and GET by tag, with the upstream's bytes and headers.
    let accept = common::images::OCI_MANIFEST;
    let head = http
        .head(format!("{base}/team/app/manifests/1"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["docker-content-digest"], app.as_str());
    assert_eq!(head.headers()["content-type"], accept);
    let manifest = http
        .get(format!("{base}/team/app/manifests/{app}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(common::images::digest_of(&manifest), app);
    // A client that cannot take the type is told so, as a registry does.
    let refused = http
        .get(format!("{base}/team/app/manifests/1"))
        .header("accept", common::images::DOCKER_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    // The upstream's own error code passes through.
    let missing = http
        .get(format!("{base}/team/app/manifests/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN", "{body}");

    // Range on a blob (cold, then cached).
    for _ in 0..2 {
        let part = http
            .get(format!("{base}/team/app/blobs/{digest}"))
            .header("range", "bytes=100-199")
            .send()
            .await
            .unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.headers()["content-range"], "bytes 100-199/50000");
        assert_eq!(part.bytes().await.unwrap(), layer[100..200]);
    }
    let gets = upstream
        .log()
        .iter()
        .filter(|(m, p, _)| m == "GET" && p.contains(&digest))
        .count();
    assert_eq!(gets, 1, "one whole-blob fetch serves every range");

    // tags/list, paginated with n and last.
    let page = http
        .get(format!("{base}/team/app/tags/list?n=2"))
        .send()
        .await
        .unwrap();
    let link = page.headers()["link"].to_str().unwrap().to_string();
    let body: serde_json::Value = page.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({"name": "team/app", "tags": ["1", "2"]})
    );
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let body: serde_json::Value = http
        .get(format!("http://{}{next}", serve.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["tags"], serde_json::json!(["3"]));

    let metrics = http
        .get(format!("http://{}/metrics", serve.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "gcrsync_serve_cache_hits_total",
        "gcrsync_serve_cache_misses_total",
        "gcrsync_serve_coalesced_total",
        "gcrsync_serve_upstream_requests_total",
        "gcrsync_serve_upstream_bytes_total",
        "gcrsync_serve_cache_bytes",
    ] {
        assert!(metrics.contains(&format!("\n{name} ")), "{name}: {metrics}");
    }
    // One log line per request, with its cache outcome.
    let log = serve.log();
    assert!(
        log.contains("cache=\"hit\"") || log.contains("cache=hit"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_htpasswd_protect_the_proxy() {
    let registry = TestRegistry::start();
    let (app, _) = Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::serve::certificates(dir.path());
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::copy(&ca, certs.join("ca.crt")).unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let made = std::process::Command::new("htpasswd")
        .args(["-B", "-b", "-c"])
        .arg(&htpasswd)
        .args(["alice", "s3cret"])
        .output()
        .unwrap();
    assert!(made.status.success());
    let serve = Serve::start(&[
        "--upstream",
        &registry.addr,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--htpasswd",
        htpasswd.to_str().unwrap(),
    ]);
    let image = format!("docker://{}/team/app:1", serve.addr);
    let out = dir.path().join("pulled");
    let cert_dir = format!("--src-cert-dir={}", certs.display());
    let good = skopeo(&[
        "copy",
        &cert_dir,
        "--src-creds=alice:s3cret",
        &image,
        &format!("dir:{}", out.display()),
    ]);
    assert!(good.status.success());
    assert_eq!(layout_digests(&out).0, app);
    for creds in ["--src-creds=alice:wrong", "--src-no-creds"] {
        let cert_dir = format!("--cert-dir={}", certs.display());
        let bad = skopeo(&["inspect", &cert_dir, &creds.replace("src-", ""), &image]);
        assert!(!bad.status.success(), "{creds}");
        let said = String::from_utf8_lossy(&bad.stderr).to_lowercase();
        assert!(
            said.contains("unauthorized") || said.contains("authentication required"),
            "{creds}: {said}"
        );
    }
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let anonymous = http
        .get(format!("https://{}/v2/", serve.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(
        anonymous.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    assert!(!serve.log().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_upstream_is_reached_through_http_and_socks5_proxies() {
    use common::proxies::{http_proxy, socks5_proxy};
    let registry = TestRegistry::start();
    let gcr = FakeGcr::start(&registry.addr, true);
    let (app, _) = Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    for (scheme, proxy) in [("http", http_proxy()), ("socks5", socks5_proxy())] {
        let serve = Serve::start(&[
            "--upstream",
            &gcr.addr,
            "--proxy",
            &format!("{scheme}://{}", proxy.addr),
        ]);
        let work = tempfile::tempdir().unwrap();
        let out = work.path().join("app");
        assert!(
            pull(&format!("{}/team/app:1", serve.addr), &out)
                .status
                .success()
        );
        assert_eq!(layout_digests(&out).0, app);
        assert!(
            proxy.count() > 0,
            "{scheme}: the upstream was reached through the proxy"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_client_is_capped_and_sigterm_lets_responses_in_flight_finish() {
    use futures_util::StreamExt;
    let registry = TestRegistry::start();
    let layer = random_bytes(512 << 10);
    let digest = common::images::digest_of(&layer);
    Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    let upstream = common::faults::FaultProxy::start(&registry.addr);
    upstream.inject(common::faults::Rule {
        method: "GET",
        path_contains: digest.clone(),
        times: 1,
        fault: common::faults::Fault::Trickle(std::time::Duration::from_millis(60)),
    });
    let mut serve = Serve::start(&["--upstream", &upstream.addr, "--client-limit", "1"]);
    let http = reqwest::Client::new();
    let url = format!("http://{}/v2/team/app/blobs/{digest}", serve.addr);
    let mut slow = http.get(&url).send().await.unwrap().bytes_stream();
    let mut received = slow.next().await.unwrap().unwrap().to_vec();
    let capped = http
        .get(format!("http://{}/v2/", serve.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        capped.status(),
        429,
        "a second request in flight from one client"
    );
    assert_eq!(capped.headers()["retry-after"], "1");
    let addr = serve.addr.clone();
    let stopping = std::thread::spawn(move || serve.stop());
    common::wait_until(
        "the listener closes",
        std::time::Duration::from_secs(5),
        || std::net::TcpStream::connect(&addr).is_err(),
    );
    while let Some(chunk) = slow.next().await {
        received.extend_from_slice(&chunk.expect("the response in flight finishes"));
    }
    assert!(received == layer);
    let status = stopping.join().unwrap();
    assert_eq!(status.and_then(|s| s.code()), Some(0));
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

#[tokio::test(flavor = "multi_thread")]
async fn cache_max_evicts_the_least_recently_used_blob() {
    let registry = TestRegistry::start();
    let (a, b) = (random_bytes(600_000), random_bytes(600_000));
    let (da, db) = (common::images::digest_of(&a), common::images::digest_of(&b));
    Pusher::new(&registry.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[a.clone(), b.clone()],
        )
        .await;
    let upstream = common::faults::FaultProxy::start(&registry.addr);
    let serve = Serve::start(&["--upstream", &upstream.addr, "--cache-max", "1MB"]);
    let get = |digest: &str| {
        let url = format!("http://{}/v2/team/app/blobs/{digest}", serve.addr);
        async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() }
    };
    assert_eq!(get(&da).await, a);
    assert_eq!(get(&db).await, b);
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    assert_eq!(
        serve.cached_blobs(),
        [hex(&db)],
        "a was evicted to stay under 1 MB"
    );
    assert_eq!(get(&da).await, a, "an evicted blob is fetched again");
    let fetched = |d: &str| {
        upstream
            .log()
            .iter()
            .filter(|(m, p, _)| m == "GET" && p.contains(d))
            .count()
    };
    assert_eq!((fetched(&da), fetched(&db)), (2, 1));
}

#[test]
fn bad_serve_options_are_named_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["serve"], "--upstream"),
        (
            vec!["serve", "--upstream", "google_containers"],
            "name the registry host",
        ),
        (
            vec!["serve", "--upstream", "gcr.io", "--upstream", "quay.io"],
            "PREFIX=",
        ),
        (
            vec!["serve", "--upstream", "gcr.io", "--listen", "5000"],
            "--listen",
        ),
        (
            vec!["serve", "--upstream", "gcr.io", "--cache-max", "lots"],
            "--cache-max",
        ),
        (
            vec!["serve", "--upstream", "gcr.io", "--tls-cert", "c.pem"],
            "--tls-key",
        ),
        (
            vec!["serve", "--upstream", "gcr.io", "--htpasswd", "missing"],
            "--htpasswd",
        ),
    ] {
        let output = run(gcrsync(dir.path()).args(&args));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
