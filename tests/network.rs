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
