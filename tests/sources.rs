//! Sources the gcr way: `child` trees at every depth, digests from the manifest map (no
//! per-tag request, even for 5000 tags), newest uploads first, and repositories refused
//! or gone failing alone. gcr's logins and tokens: tests/auth.rs.

mod common;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::*;

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
        tokens, 4,
        "one pull token per level of the child tree (its scopes asked together), reused by every request: {second:?}"
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

/// A gcr-style namespace `team` with one repository `big` of `n` tags, served from memory
/// (planning only: nothing behind it). Returns the address and the request log.
fn synthetic_gcr(n: usize) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use common::server::{self, full};
    use std::sync::{Arc, Mutex};
    let digest = |i: usize| format!("sha256:{i:064x}");
    let mut manifest = serde_json::Map::new();
    for i in 0..n {
        let entry = serde_json::json!({"mediaType": images::OCI_MANIFEST, "tag": [format!("t{i}")], "timeUploadedMs": (1_700_000_000_000u64 + i as u64).to_string()});
        manifest.insert(digest(i), entry);
    }
    let big = serde_json::json!({"child": [], "manifest": manifest, "name": "team/big", "tags": (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>()}).to_string();
    let root = serde_json::json!({"child": ["big"], "manifest": {}, "name": "team", "tags": []})
        .to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let addr = server::serve(move |req: hyper::Request<hyper::body::Incoming>| {
        let path = req.uri().path().to_string();
        seen.lock()
            .unwrap()
            .push(format!("{} {path}", req.method()));
        let body = match path.as_str() {
            "/v2/team/tags/list" => Some(root.clone()),
            "/v2/team/big/tags/list" => Some(big.clone()),
            _ => None,
        };
        async move {
            match body {
                Some(b) => hyper::Response::builder()
                    .status(200)
                    .header("content-type", "application/json")
                    .body(full(b))
                    .unwrap(),
                None => hyper::Response::builder()
                    .status(404)
                    .body(full("{}"))
                    .unwrap(),
            }
        }
    });
    (addr, log)
}

#[tokio::test]
async fn a_namespace_of_5000_tags_is_planned_with_one_listing_request_per_repository() {
    const N: usize = 5000;
    let (gcr, log) = synthetic_gcr(N);
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = [
        "--source".to_string(),
        format!("{gcr}/team"),
        "--target".into(),
        format!("{}/mirror", dst.addr),
        "--insecure-registry".into(),
        format!("{gcr},{}", dst.addr),
        "--metadata-dir".into(),
        metadata.display().to_string(),
    ];
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .arg("test")
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        *log.lock().unwrap(),
        ["GET /v2/team/tags/list", "GET /v2/team/big/tags/list"],
        "no request per tag at the source"
    );
    let sent: Vec<String> = dst
        .accesses()
        .iter()
        .map(|a| format!("{} {} {}", a.method, a.path, a.status))
        .collect();
    assert_eq!(
        sent,
        ["GET /v2/mirror/big/tags/list?n=1000 404"],
        "an absent target repository is listed once, its tags never HEADed"
    );
    assert_eq!(read_json(&report)["totals"]["pending"], N);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        100,
        "this run would copy --process-count of them"
    );

    // With every tag recorded, planning touches nothing but the two listings.
    let digest = |i: usize| format!("sha256:{i:064x}");
    let tags: serde_json::Map<String, serde_json::Value> = (0..N)
        .map(|i| (format!("t{i}"), serde_json::json!({"digest": digest(i), "media_type": images::OCI_MANIFEST, "platforms": [], "synced_at": "2026-11-22T10:00:00Z"})))
        .collect();
    let record = serde_json::json!({"source": format!("{gcr}/team"), "target": format!("{}/mirror", dst.addr),
        "images": {"big": {"target": format!("{}/mirror/big", dst.addr), "tags": tags}}, "failed": {}});
    let dir = metadata.join(format!("{gcr}/team"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("images.json"), record.to_string()).unwrap();
    let (before_src, before_dst) = (log.lock().unwrap().len(), dst.accesses().len());
    let out = run(gcrsync(work.path())
        .arg("test")
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(log.lock().unwrap().len() - before_src, 2);
    assert_eq!(
        dst.accesses().len(),
        before_dst,
        "nothing sent to the target"
    );
    assert_eq!(read_json(&report)["totals"]["unchanged"], N);
}

#[tokio::test]
async fn forbidden_unauthorized_and_vanished_repositories_fail_alone_and_keep_their_records() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    for repo in [
        "good",
        "deep/kid",
        "secret",
        "private",
        "gone",
        "skipped",
        "skipped/kid",
        "parent",
        "parent/kid",
    ] {
        p.image(
            &format!("team/{repo}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(300)],
        )
        .await;
    }
    let gcr = FakeGcr::start(&upstream.addr, true);
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let mut args = gcr_args(&gcr, &dst, &metadata);
    // `skipped` and all below it are excluded; only `parent` itself is, not its child.
    args.extend(["--exclude-images".into(), "^skipped|^parent$".into()]);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let target = Pusher::new(&dst.addr);
    assert!(target.tags("mirror/skipped").await.is_empty());
    assert!(target.tags("mirror/parent").await.is_empty());
    assert_eq!(target.tags("mirror/parent/kid").await, ["1"]);
    let records = metadata.join(format!("{}/team/images.json", gcr.addr));
    let before = read_json(&records);
    assert_eq!(before["images"].as_object().unwrap().len(), 6, "{before}");

    // Then the credentials lose two repositories, one is deleted, and new tags appear.
    gcr.refuse("team/secret", 403);
    gcr.refuse("team/private", 401);
    gcr.refuse("team/gone", 404);
    // Excluded itself, listed only to find what is below it: refused, that is a warning.
    gcr.refuse("team/parent", 403);
    for repo in ["good", "secret"] {
        p.image(
            &format!("team/{repo}"),
            "2",
            Format::Oci,
            "amd64",
            &[random_bytes(300)],
        )
        .await;
    }
    let report = work.path().join("report.json");
    let summary = work.path().join("summary.md");
    let logged = gcr.log().len();
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary));
    assert_eq!(out.status.code(), Some(1), "failed repositories, not fatal");
    assert_eq!(target.tags("mirror/good").await, ["1", "2"]);
    assert!(target.tags("mirror/secret").await == ["1"]);
    let after = read_json(&records);
    assert!(after["images"]["good"]["tags"].get("2").is_some());
    for image in ["secret", "private", "gone", "parent/kid"] {
        assert_eq!(
            after["images"][image], before["images"][image],
            "records of {image} stay as they were"
        );
    }
    assert_eq!(
        after["failed"],
        serde_json::json!({}),
        "repositories are reported, not recorded"
    );

    let report = read_json(&report);
    assert_eq!(report["totals"]["failed"], 2);
    let failed = report["failed_repositories"].as_array().unwrap();
    let error_of = |image: &str| {
        failed
            .iter()
            .find(|f| f["image"] == image)
            .unwrap_or_else(|| panic!("{image} not in {failed:?}"))["error"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let forbidden = error_of("secret");
    assert!(
        forbidden.starts_with(&format!("no access to {}/team/secret: ", gcr.addr))
            && forbidden.contains("HTTP 403 (DENIED: Permission"),
        "{forbidden}"
    );
    let unauthorized = error_of("private");
    assert!(
        unauthorized.contains("no access to")
            && unauthorized
                .contains("HTTP 401 (UNAUTHORIZED: You don't have the needed permissions"),
        "{unauthorized}"
    );
    // Anonymous here: the hint may be to give credentials, never that they were refused.
    assert!(
        !unauthorized.contains("authentication to") && !unauthorized.contains("check --source"),
        "the namespace accepted the request; credentials are not to blame: {unauthorized}"
    );
    assert_eq!(
        failed.len(),
        2,
        "a vanished repository is no failure: {failed:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("team/gone: listed by the registry but answers 404") && err.contains("WARN"),
        "{err}"
    );
    assert!(
        err.contains("team/parent is removed by --exclude-images, but was listed because images below it could pass")
            && err.contains("--exclude-images '^parent(/|$)'"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "failed: repository {}/team/secret could not be listed",
            gcr.addr
        )),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("::error title=gcrsync%3A ")
            && stdout.contains("team/private could not be listed::"),
        "{stdout}"
    );
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("Repositories that could not be listed")
            && summary.contains("/team/secret` | no access to"),
        "{summary}"
    );
    // Excluded with everything below it: never listed, in either run.
    let listed_skipped = gcr
        .log()
        .iter()
        .filter(|(_, p)| p.contains("/v2/team/skipped"))
        .count();
    assert_eq!(listed_skipped, 0, "{:?}", gcr.log());
    let second: Vec<_> = gcr.log().into_iter().skip(logged).collect();
    assert!(
        second
            .iter()
            .any(|(_, p)| p.starts_with("/v2/team/parent/tags/list")),
        "an excluded image whose children may pass is listed for them"
    );

    // `--images` lists no namespace root, but the registry's root (`/v2/`) still accepts
    // the (anonymous) request: one refused repository is a failure of its own, with the
    // hint to give credentials, not a refusal of the credentials (exit 3).
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--images", "private,good"]));
    assert_eq!(out.status.code(), Some(1));
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--images", "private"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--source-username"),
        "{}",
        stderr(&out)
    );
}
