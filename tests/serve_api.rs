//! `gcrsync serve` at its edges: the pull API's answers as a registry gives them, TLS and
//! htpasswd, the per-client cap, SIGTERM, `--cache-max`, bad options, a Docker-only client
//! and referrers. Its upstream misbehaving or reached by proxy: tests/serve_upstream.rs.

mod common;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::serve::{Serve, layout_digests, skopeo};
use common::*;

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
async fn a_busy_client_is_capped_and_sigterm_lets_responses_in_flight_finish() {
    use futures_util::StreamExt;
    let (_registry, upstream, layer, digest) =
        common::serve::trickled_upstream(512 << 10, std::time::Duration::from_millis(60)).await;
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
async fn cache_max_evicts_the_least_recently_used_blob() {
    let registry = TestRegistry::start();
    let ([a, b], [da, db]) = common::serve::two_layer_image(&registry, 600_000).await;
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
        // One password must not go to every upstream.
        (
            vec![
                "serve",
                "--upstream",
                "gcr.io",
                "--upstream",
                "hub=docker.io",
                "--source-username",
                "u",
                "--source-password",
                "secret-pw",
            ],
            "one login cannot go to several --upstream registries",
        ),
    ] {
        let output = run(gcrsync(dir.path()).args(&args));
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!stderr(&output).contains("secret-pw"));
        assert!(
            stderr(&output).contains(says),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_without_index_types_in_accept_gets_the_amd64_image_of_a_multi_arch_tag() {
    use common::images::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};
    let registry = TestRegistry::start();
    let pusher = Pusher::new(&registry.addr);
    let (list, children) = pusher
        .index(
            "team/multi",
            "1",
            Format::Docker,
            &[
                ("arm64/v8", vec![random_bytes(3000)]),
                ("amd64", vec![random_bytes(4000)]),
            ],
        )
        .await;
    let (oci_index, _) = pusher
        .index(
            "team/oci",
            "1",
            Format::Oci,
            &[("amd64", vec![random_bytes(2000)])],
        )
        .await;
    let serve = Serve::start(&["--upstream", &registry.addr]);
    let http = reqwest::Client::new();
    let base = format!("http://{}/v2", serve.addr);
    let ask = |path: String, accept: &'static str, head: bool| {
        let request = match head {
            true => http.head(format!("{base}/{path}")),
            false => http.get(format!("{base}/{path}")),
        };
        async move { request.header("accept", accept).send().await.unwrap() }
    };

    // Only Docker's image type accepted: the list's linux/amd64 image, verbatim.
    for head in [false, true] {
        let child = ask("team/multi/manifests/1".into(), DOCKER_MANIFEST, head).await;
        assert_eq!(child.status(), 200);
        assert_eq!(child.headers()["content-type"], DOCKER_MANIFEST);
        assert_eq!(
            child.headers()["docker-content-digest"],
            children[1].as_str()
        );
        if !head {
            let bytes = child.bytes().await.unwrap();
            assert_eq!(common::images::digest_of(&bytes), children[1]);
        }
    }
    // A client that takes lists gets the list itself.
    let whole = ask("team/multi/manifests/1".into(), DOCKER_LIST, false).await;
    assert_eq!(whole.headers()["docker-content-digest"], list.as_str());
    // By digest the client asked for those bytes: no substitute, distribution's refusal.
    let by_digest = ask(
        format!("team/multi/manifests/{list}"),
        DOCKER_MANIFEST,
        false,
    )
    .await;
    assert_eq!(by_digest.status(), 404);
    let body: serde_json::Value = by_digest.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let said = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        said.contains("manifest list found, but accept header does not support manifest lists"),
        "{said}"
    );
    // An OCI index whose amd64 image is OCI: nothing a Docker-only client can take, and
    // nothing is converted.
    let refused = ask("team/oci/manifests/1".into(), DOCKER_MANIFEST, false).await;
    assert_eq!(refused.status(), 404);
    let body: serde_json::Value = refused.json().await.unwrap();
    let said = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        said.contains("OCI index found, but accept header does not support OCI indexes"),
        "{said}"
    );
    let oci_child = ask("team/oci/manifests/1".into(), OCI_MANIFEST, false).await;
    assert_eq!(oci_child.status(), 200);
    assert_eq!(oci_child.headers()["content-type"], OCI_MANIFEST);
    let whole = ask("team/oci/manifests/1".into(), OCI_INDEX, false).await;
    assert_eq!(whole.headers()["docker-content-digest"], oci_index.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn referrers_pass_through_verbatim_where_the_upstream_has_them_and_404_where_not() {
    use common::referrers::{NOTATION_SIG, SPDX, artifact, listed};
    let registry = TestRegistry::start();
    let pusher = Pusher::new(&registry.addr);
    let (app, _) = pusher
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let subject = pusher.get_manifest("team/app", &app).await;
    let gcr = FakeGcr::start(&registry.addr, true);
    gcr.referrers_api(2);
    let mut pushed = Vec::new();
    for (kind, payload) in [(NOTATION_SIG, "s1"), (SPDX, "b1"), (NOTATION_SIG, "s2")] {
        let subject = (common::images::OCI_MANIFEST, subject.as_slice());
        let (body, digest) = artifact(&pusher, "team/app", kind, subject, payload.as_bytes()).await;
        gcr.push_manifest("team/app", &digest, common::images::OCI_MANIFEST, &body)
            .await;
        pushed.push(digest);
    }
    let serve = Serve::start(&["--upstream", &gcr.addr]);
    let http = reqwest::Client::new();
    let base = format!("http://{}", serve.addr);

    // Two pages of the upstream's index, the Link pointing at the proxy.
    let first = http
        .get(format!("{base}/v2/team/app/referrers/{app}"))
        .send()
        .await
        .unwrap();
    if first.status() != 200 {
        panic!("{}: {}", first.status(), first.text().await.unwrap());
    }
    assert_eq!(
        first.headers()["content-type"],
        "application/vnd.oci.image.index.v1+json"
    );
    let link = first.headers()["link"].to_str().unwrap().to_string();
    assert!(
        link.starts_with(&format!("</v2/team/app/referrers/{app}?")),
        "{link}"
    );
    let page: serde_json::Value = first.json().await.unwrap();
    let next = link.trim_start_matches('<').split('>').next().unwrap();
    let second: serde_json::Value = http
        .get(format!("{base}{next}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let all: Vec<String> = listed(&page).into_iter().chain(listed(&second)).collect();
    assert_eq!(all, pushed);
    assert_eq!(page["manifests"][1]["artifactType"], SPDX);

    // artifactType filtering is the upstream's, with its OCI-Filters-Applied.
    let filtered = http
        .get(format!(
            "{base}/v2/team/app/referrers/{app}?artifactType={}",
            SPDX.replace('+', "%2B")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.headers()["oci-filters-applied"], "artifactType");
    let filtered: serde_json::Value = filtered.json().await.unwrap();
    assert_eq!(listed(&filtered), [pushed[1].clone()], "{:?}", gcr.log());

    // distribution 2.8 has no API: 404, the client falls back to the sha256-<hex> tag.
    let plain = Serve::start(&["--upstream", &registry.addr]);
    let none = http
        .get(format!("http://{}/v2/team/app/referrers/{app}", plain.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 404);
    let error: serde_json::Value = none.json().await.unwrap();
    assert_eq!(error["errors"][0]["code"], "NAME_UNKNOWN");
}
