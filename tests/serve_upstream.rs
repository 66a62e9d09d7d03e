//! `gcrsync serve` and its upstream, with real parts (CNCF distribution behind the fault
//! proxy or the fake gcr.io, skopeo as the client): a blob cut or corrupted leaves nothing
//! cached, a cut download resumes with a range request, a stopped or failing upstream is
//! answered from the cache, and the upstream is reached through HTTP and SOCKS5 proxies,
//! those of a config file's top level too.

mod common;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::serve::{Serve, layout_digests, pull, skopeo};
use common::*;

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
async fn a_config_files_top_level_network_keys_apply_to_serve() {
    use common::proxies::http_proxy;
    let registry = TestRegistry::start();
    let (app, _) = Pusher::new(&registry.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let proxy = http_proxy();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gcrsync.yml");
    std::fs::write(
        &config,
        format!(
            "proxy: http://{}\nsources:\n  - source: gcr.io/google_containers\n    target: ghcr.io/me\n",
            proxy.addr
        ),
    )
    .unwrap();
    let serve = Serve::start(&[
        "--upstream",
        &registry.addr,
        "--config",
        config.to_str().unwrap(),
    ]);
    let out = dir.path().join("app");
    assert!(
        pull(&format!("{}/team/app:1", serve.addr), &out)
            .status
            .success()
    );
    assert_eq!(layout_digests(&out).0, app);
    assert!(proxy.count() > 0, "the file's proxy was used");
    assert!(serve.log().contains("do not apply"), "{}", serve.log());

    // A bad value in the file is named with its line, from --config or GCRSYNC_CONFIG.
    let bad = dir.path().join("bad.yml");
    std::fs::write(&bad, "http-timeout: 30s\nretries: 99\n").unwrap();
    let by_flag = run(gcrsync(dir.path()).args([
        "serve",
        "--upstream",
        "gcr.io",
        "--config",
        bad.to_str().unwrap(),
    ]));
    let by_env = run(gcrsync(dir.path()).env("GCRSYNC_CONFIG", &bad).args([
        "serve",
        "--upstream",
        "gcr.io",
    ]));
    for output in [by_flag, by_env] {
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stderr(&output).contains("bad.yml:2: retries"),
            "{}",
            stderr(&output)
        );
    }
}
