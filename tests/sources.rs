//! Sources the gcr way: `child` trees at every depth, digests from the manifest map (no
//! per-tag request), Bearer tokens (anonymous, `_json_key`, expiring mid-run).

mod common;

use std::time::Duration;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::*;

fn gcr_args(gcr: &FakeGcr, dst: &TestRegistry, metadata: &std::path::Path) -> Vec<String> {
    vec![
        "--source".into(),
        format!("{}/team", gcr.addr),
        "--target".into(),
        format!("{}/mirror", dst.addr),
        "--insecure-registry".into(),
        format!("{},{}", gcr.addr, dst.addr),
        "--metadata-dir".into(),
        metadata.display().to_string(),
    ]
}

#[tokio::test]
async fn a_gcr_namespace_is_listed_at_every_depth_without_per_tag_requests() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    let mut expected = Vec::new();
    // `a` has its own tags and a child; `c` has none, only a grandchild chain.
    for (repo, tag) in [
        ("a", "1"),
        ("a/b", "2"),
        ("c/d/e", "3"),
        ("c/d/e", "4"),
        ("f", "5"),
    ] {
        let (digest, _) = p
            .image(
                &format!("team/{repo}"),
                tag,
                Format::Oci,
                "amd64",
                &[random_bytes(500)],
            )
            .await;
        expected.push((repo, tag, digest));
    }
    p.image(
        "elsewhere/x",
        "1",
        Format::Oci,
        "amd64",
        &[random_bytes(500)],
    )
    .await;
    let gcr = FakeGcr::start(&upstream.addr, true);
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = gcr_args(&gcr, &dst, &metadata);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    for (repo, tag, digest) in &expected {
        assert_eq!(
            Pusher::new(&dst.addr)
                .head(&format!("mirror/{repo}"), tag)
                .await
                .as_deref(),
            Some(digest.as_str()),
            "{repo}:{tag}"
        );
    }
    assert!(Pusher::new(&dst.addr).tags("mirror/x").await.is_empty());

    let before = gcr.log().len();
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let second: Vec<_> = gcr.log().into_iter().skip(before).collect();
    let challenged = second
        .iter()
        .filter(|(_, p)| p.starts_with("challenged"))
        .count();
    assert_eq!(
        challenged, 1,
        "one 401 round trip teaches the token realm: {second:?}"
    );
    let listings: Vec<&str> = second
        .iter()
        .filter(|(m, p)| m == "GET" && p.starts_with("/v2/team") && p.contains("/tags/list"))
        .map(|(_, p)| p.as_str())
        .collect();
    // team, a, a/b, c, c/d, c/d/e, f: one listing request per repository, nothing per tag.
    assert_eq!(listings.len(), 7, "{listings:?}");
    let other: Vec<_> = second
        .iter()
        .filter(|(_, p)| !p.contains("/tags/list") && !p.starts_with("/v2/token"))
        .collect();
    let tokens = second
        .iter()
        .filter(|(_, p)| p.starts_with("/v2/token"))
        .count();
    assert_eq!(
        tokens, 7,
        "one pull token per repository scope, reused by every request: {second:?}"
    );
    assert!(
        other.is_empty(),
        "a no-op run over a gcr listing sends no HEAD, no catalog: {other:?}"
    );
}

#[tokio::test]
async fn the_newest_upload_is_copied_first_within_the_budget() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    for tag in ["old", "newest", "middle"] {
        p.image("team/app", tag, Format::Oci, "amd64", &[random_bytes(500)])
            .await;
    }
    let gcr = FakeGcr::start(&upstream.addr, true);
    gcr.uploaded("team/app", "old", 1_000);
    gcr.uploaded("team/app", "middle", 2_000);
    gcr.uploaded("team/app", "newest", 3_000);
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));
    assert_eq!(
        run(gcrsync(work.path())
            .args(&args)
            .args(["--process-count", "1"]))
        .status
        .code(),
        Some(0)
    );
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/app").await, ["newest"]);
    assert_eq!(
        run(gcrsync(work.path())
            .args(&args)
            .args(["--process-count", "1"]))
        .status
        .code(),
        Some(0)
    );
    assert_eq!(
        Pusher::new(&dst.addr).tags("mirror/app").await,
        ["middle", "newest"]
    );
}

#[tokio::test]
async fn a_private_gcr_source_takes_a_json_key_login_and_tokens_are_renewed_mid_run() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    for i in 0..6 {
        p.image(
            &format!("team/img{i}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(3 << 20)],
        )
        .await;
    }
    let gcr = FakeGcr::start(&upstream.addr, false);
    let key =
        r#"{"type":"service_account","client_email":"mirror@project.iam.gserviceaccount.com"}"#;
    gcr.accept_login("_json_key", key);
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));

    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(
        out.status.code(),
        Some(3),
        "anonymous access to a private source is fatal"
    );
    assert!(
        stderr(&out).contains("--source-username/--source-password"),
        "{}",
        stderr(&out)
    );

    gcr.token_lifetime(Duration::from_secs(1));
    let out = run(gcrsync(work.path()).args(&args).args([
        "--process-limit",
        "1",
        "--source-username",
        "_json_key",
        "--source-password",
        key,
    ]));
    assert_eq!(out.status.code(), Some(0));
    for i in 0..6 {
        assert_eq!(
            Pusher::new(&dst.addr).tags(&format!("mirror/img{i}")).await,
            ["1"]
        );
    }
    assert!(
        gcr.tokens_issued() > 2,
        "one-second tokens must have been renewed: {}",
        gcr.tokens_issued()
    );
    assert!(
        !stderr(&out).contains("mirror@project"),
        "the key leaked: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_gcp_service_account_key_is_exchanged_for_an_access_token_and_used_as_oauth2accesstoken()
{
    use common::google::{CLIENT_EMAIL, FakeGoogle};
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    for i in 0..3 {
        Pusher::new(&upstream.addr)
            .image(
                &format!("team/img{i}"),
                "1",
                Format::Oci,
                "amd64",
                &[random_bytes(500)],
            )
            .await;
    }
    let keys = tempfile::tempdir().unwrap();
    let google = FakeGoogle::start(keys.path());
    let gcr = FakeGcr::start(&upstream.addr, false);
    gcr.trust_google(google.issued.clone());
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));
    let key = google.key_json();

    // As an Actions secret holds it: the JSON text itself.
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("GCRSYNC_GCP_CREDENTIALS", &key));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/img2").await, ["1"]);
    assert_eq!(
        google.token_requests(),
        1,
        "the access token is cached across the run's registry logins"
    );
    let private_key_line = key.split("\\n").nth(1).unwrap().to_string();
    assert!(!stderr(&out).contains(&private_key_line));

    // As a path, through GOOGLE_APPLICATION_CREDENTIALS.
    let path = work.path().join("key.json");
    std::fs::write(&path, &key).unwrap();
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("compare")
        .env("GOOGLE_APPLICATION_CREDENTIALS", &path));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(google.token_requests(), 2);

    // A key whose signature the endpoint rejects: fatal, with the reason, no key material.
    let other = FakeGoogle::start(tempfile::tempdir().unwrap().path());
    let forged = other.key_json().replace(&other.addr, &google.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("GCRSYNC_GCP_CREDENTIALS", &forged));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("Google token exchange failed"), "{err}");
    assert!(
        !err.contains(forged.split("\\n").nth(1).unwrap()) && err.contains(&gcr.addr),
        "{err}"
    );
    let _ = CLIENT_EMAIL;
}
