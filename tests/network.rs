//! The network around the registries: TLS with a private CA (`--ca-cert`), unverified
//! TLS (`--insecure-registry https://HOST`), HTTP and SOCKS5 proxies (`--proxy`, `HTTP_PROXY`).

mod common;

use std::path::Path;
use std::process::Command;

use common::images::random_bytes;
use common::proxies::{http_proxy, socks5_proxy};
use common::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is needed for the TLS tests");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gcrsync test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

#[tokio::test]
async fn a_tls_registry_with_a_private_ca_is_trusted_only_when_told() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let src = TestRegistry::start();
    let dst = TestRegistry::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    let (digest, _) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(5000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let base = |metadata: &str| {
        vec![
            "--source".to_string(),
            format!("{}/team", src.addr),
            "--target".into(),
            format!("https://{}/mirror", dst.addr),
            "--metadata-dir".into(),
            work.path().join(metadata).display().to_string(),
        ]
    };

    let out = run(gcrsync(work.path())
        .args(base("a"))
        .args(["--retries", "0"]));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("certificate") && err.contains("--ca-cert"),
        "an untrusted certificate is named, with the fix: {err}"
    );

    let ca = certs.path().join("ca.pem");
    let out = run(gcrsync(work.path())
        .args(base("b"))
        .arg("--ca-cert")
        .arg(&ca));
    assert_eq!(out.status.code(), Some(0));
    let target = Pusher::tls(&dst.addr, &std::fs::read(&ca).unwrap());
    assert_eq!(target.head("mirror/app", "1").await, Some(digest.clone()));

    let mut args = base("c");
    args[3] = format!("{}/unverified", dst.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--insecure-registry", &format!("https://{}", dst.addr)]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(target.head("unverified/app", "1").await, Some(digest));
}

/// A TLS registry that speaks HTTP/2 (as gcr.io, Artifact Registry, Docker Hub and
/// ghcr.io do) carries a run's concurrent listings and HEADs over one connection: counted
/// by a SOCKS5 proxy, which sees each TCP connection. Over HTTP/1.1 each request in
/// flight takes a connection of its own (a plain-HTTP no-op of this size opened 24).
#[tokio::test]
async fn a_tls_registry_is_reached_over_one_multiplexed_connection() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let src = TestRegistry::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    let dst = TestRegistry::start();
    let ca = certs.path().join("ca.pem");
    let p = Pusher::tls(&src.addr, &std::fs::read(&ca).unwrap());
    for i in 0..12 {
        let repo = format!("team/r{i:02}");
        let (digest, _) = p
            .image(&repo, "1", Format::Oci, "amd64", &[random_bytes(200)])
            .await;
        let manifest = p.get_manifest(&repo, &digest).await;
        for tag in ["2", "3"] {
            p.manifest(&repo, tag, images::OCI_MANIFEST, &manifest)
                .await;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let args = [
        "--source".to_string(),
        format!("https://{}/team", src.addr),
        "--target".into(),
        format!("{}/mirror", dst.addr),
        "--metadata-dir".into(),
        work.path().join("meta").display().to_string(),
        "--ca-cert".into(),
        ca.display().to_string(),
    ];
    assert_eq!(
        run(gcrsync(work.path()).args(args.clone())).status.code(),
        Some(0)
    );
    let before = src.accesses().len();
    let socks = socks5_proxy();
    let out = run(gcrsync(work.path())
        .args(args)
        .args(["--proxy", &format!("socks5://{}", socks.addr)]));
    assert_eq!(out.status.code(), Some(0));
    let requests = src.accesses().len() - before;
    assert!(requests >= 1 + 12 + 36, "{requests} requests");
    assert_eq!(
        socks.count(),
        1,
        "{requests} requests of a no-op over one connection"
    );
}

#[tokio::test]
async fn every_registry_request_goes_through_the_configured_proxy() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = Pusher::new(&src.addr)
        .image(
            "team/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(200_000)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();

    let http = http_proxy();
    let mut args = mirror_args(&src, &dst, &work.path().join("a"));
    args[3] = format!("{}/via-http", dst.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--proxy", &format!("http://{}", http.addr)]));
    assert_eq!(out.status.code(), Some(0));
    let through_flag = http.count();
    assert!(
        through_flag >= 8,
        "listing, HEADs, blobs and manifests all go through the proxy: {through_flag}"
    );

    // The same through the environment variables every CI sets.
    let mut args = mirror_args(&src, &dst, &work.path().join("b"));
    args[3] = format!("{}/via-env", dst.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("HTTP_PROXY", format!("http://{}", http.addr)));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        http.count() >= 2 * through_flag - 2,
        "HTTP_PROXY is honoured: {} after {through_flag}",
        http.count()
    );

    let socks = socks5_proxy();
    let mut args = mirror_args(&src, &dst, &work.path().join("c"));
    args[3] = format!("{}/via-socks", dst.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--proxy", &format!("socks5://{}", socks.addr)]));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        socks.count() >= 2,
        "connections to both registries went through SOCKS5: {}",
        socks.count()
    );
    for repo in ["via-http/app", "via-env/app", "via-socks/app"] {
        assert_eq!(
            Pusher::new(&dst.addr).head(repo, "1").await.as_deref(),
            Some(digest.as_str()),
            "{repo}"
        );
    }
}

#[tokio::test]
async fn github_api_requests_go_through_the_proxy_too() {
    use common::github::{FakeGitHub, WRITE_TOKEN};
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let proxy = http_proxy();
    let work = tempfile::tempdir().unwrap();
    let github = [
        "--github-repo",
        "owner/repo",
        "--github-api-url",
        &gh.api_url,
        "--github-token",
        WRITE_TOKEN,
    ];
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &work.path().join("m")))
        .args(github)
        .args(["--proxy", &format!("http://{}", proxy.addr)]));
    assert_eq!(out.status.code(), Some(0));
    let github_host = gh
        .api_url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let hosts = proxy.hosts();
    for host in [&src.addr, &dst.addr, &github_host] {
        assert!(
            hosts.contains(host),
            "no request to {host} went through the proxy: {hosts:?}"
        );
    }
    assert!(gh.file("main", "CHANGELOG.md").is_some());
}

#[tokio::test]
async fn blobs_redirected_to_storage_go_without_credentials_resume_and_refresh_expired_urls() {
    use common::gcr::FakeGcr;
    use common::storage::FakeStorage;
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let layer = random_bytes(3 << 20);
    let (digest, _) = Pusher::new(&upstream.addr)
        .image("team/app", "1", Format::Docker, "amd64", &[layer])
        .await;
    let gcr = FakeGcr::start(&upstream.addr, false);
    gcr.accept_login("_json_key", "key-json");
    let storage = FakeStorage::start(&upstream.addr);
    gcr.redirect_blobs(&storage, 302);
    // The first signed URL is stale on arrival, every URL serves one request only (a
    // cached one fails on reuse), and the layer's first body is cut after 1 MiB.
    storage.expire_next(1);
    storage.one_use();
    storage.cut_next(1 << 20, 1);
    let work = tempfile::tempdir().unwrap();
    // Loopback hosts, no --insecure-registry: plain HTTP, as docker does.
    let out = run(gcrsync(work.path()).args([
        "--source",
        &format!("{}/team", gcr.addr),
        "--target",
        &format!("http://{}/mirror", dst.addr),
        "--source-username",
        "_json_key",
        "--source-password",
        "key-json",
        "--metadata-dir",
        &work.path().join("m").display().to_string(),
    ]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    let hits = storage.hits();
    assert!(
        hits.iter().all(|h| !h.authorization),
        "the registry's Authorization never reaches storage: {hits:?}"
    );
    assert!(
        hits.iter().any(|h| h.status == 400),
        "a URL expired: {hits:?}"
    );
    assert!(
        hits.iter()
            .any(|h| h.status == 206 && h.range.as_deref().is_some_and(|r| r.starts_with("bytes="))),
        "the cut layer resumed with Range through a fresh redirect: {hits:?}"
    );
    assert!(
        !hits.iter().any(|h| h.status == 403),
        "no signed URL was used twice: {hits:?}"
    );
    let blob_gets = gcr
        .log()
        .iter()
        .filter(|(m, p)| m == "GET" && p.contains("/blobs/") && !p.starts_with("challenged"))
        .count();
    assert_eq!(
        blob_gets,
        hits.len(),
        "every storage request came from a fresh redirect by the registry"
    );

    // Docker Hub and ghcr.io answer 307 instead.
    gcr.redirect_blobs(&storage, 307);
    let out = run(gcrsync(work.path()).args([
        "--source",
        &format!("{}/team", gcr.addr),
        "--target",
        &format!("{}/hub", dst.addr),
        "--source-username",
        "_json_key",
        "--source-password",
        "key-json",
        "--metadata-dir",
        &work.path().join("n").display().to_string(),
    ]));
    assert_eq!(out.status.code(), Some(0));
    let hits = storage.hits();
    assert!(
        hits.len() > blob_gets && hits.iter().all(|h| !h.authorization),
        "{hits:?}"
    );
}

#[tokio::test]
async fn http_and_loopback_registries_need_no_flag_and_a_scheme_mismatch_says_what_to_write() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let (src, plain) = (TestRegistry::start(), TestRegistry::start());
    let tls = TestRegistry::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    let (digest, _) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let port = |addr: &str| addr.rsplit(':').next().unwrap().to_string();
    let mirror = |source: String, target: String, meta: &str| {
        let mut command = gcrsync(work.path());
        command.args([
            "--source",
            &source,
            "--target",
            &target,
            "--retries",
            "3",
            "--metadata-dir",
            &work.path().join(meta).display().to_string(),
        ]);
        run(&mut command)
    };

    let out = mirror(
        format!("http://{}/team", src.addr),
        format!("localhost:{}/mirror", port(&plain.addr)),
        "a",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        Pusher::new(&plain.addr).head("mirror/app", "1").await,
        Some(digest)
    );

    // TLS spoken to a plain-HTTP registry: one attempt, and the flag that fixes it.
    let out = mirror(
        format!("https://{}/team", src.addr),
        format!("{}/m2", plain.addr),
        "b",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("answered the TLS handshake in plain HTTP")
            && err.contains(&format!("--insecure-registry {}", src.addr))
            && !err.contains("retrying")
            && !err.contains("InvalidContentType"),
        "{err}"
    );

    // Plain HTTP spoken to a TLS registry on loopback: says to write https://.
    let out = mirror(
        format!("{}/team", src.addr),
        format!("{}/m3", tls.addr),
        "c",
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("write https://{}", tls.addr)) && !err.contains("retrying"),
        "{err}"
    );
}

#[tokio::test]
async fn without_a_system_ca_bundle_plain_http_works_and_tls_falls_back_to_bundled_roots() {
    let certs = tempfile::tempdir().unwrap();
    certificates(certs.path());
    let src = TestRegistry::start();
    let tls = TestRegistry::start_tls(
        &certs.path().join("server.pem"),
        &certs.path().join("server.key"),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    // A slim container: the CA bundle paths exist but hold nothing.
    let empty = work.path().join("no-certs");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("ca-certificates.crt"), "").unwrap();
    let slim = |target: String, meta: &str, extra: &[&str]| {
        let mut command = gcrsync(work.path());
        command
            .env("SSL_CERT_FILE", empty.join("ca-certificates.crt"))
            .env("SSL_CERT_DIR", &empty)
            .args([
                "--source",
                &format!("{}/team", src.addr),
                "--target",
                &target,
                "--metadata-dir",
                &work.path().join(meta).display().to_string(),
            ])
            .args(extra);
        run(&mut command)
    };
    let plain = TestRegistry::start();
    let out = slim(format!("{}/mirror", plain.addr), "a", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !stderr(&out).contains("CA certificates"),
        "a plain-HTTP run never loads a CA store"
    );

    let ca = certs.path().join("ca.pem");
    let out = slim(
        format!("https://{}/mirror", tls.addr),
        "b",
        &["--ca-cert", ca.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("no system CA certificates"),
        "the fallback is said: {}",
        stderr(&out)
    );
    let target = Pusher::tls(&tls.addr, &std::fs::read(&ca).unwrap());
    assert!(target.head("mirror/app", "1").await.is_some());
}
