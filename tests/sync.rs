//! End-to-end mirroring between two real distribution registries.

mod common;

use common::images::random_bytes;
use common::*;

const MIB: usize = 1 << 20;

/// The tags of the standard fixture: every manifest kind, shared layers, aliases, nesting.
struct Fixture {
    /// (repository under `team/`, tag, digest)
    tags: Vec<(String, String, String)>,
    blobs: Vec<(String, String)>,
}

async fn push_fixture(src: &TestRegistry) -> Fixture {
    let p = Pusher::new(&src.addr);
    let base = random_bytes(MIB);
    let mut tags = Vec::new();
    let mut blobs = Vec::new();
    let (d, b) = p
        .image(
            "team/app",
            "v1",
            Format::Docker,
            "amd64",
            &[base.clone(), random_bytes(200_000)],
        )
        .await;
    tags.push(("app".into(), "v1".into(), d.clone()));
    blobs.extend(b.into_iter().map(|b| ("app".to_string(), b)));
    p.manifest(
        "team/app",
        "latest",
        images::DOCKER_MANIFEST,
        &p.get_manifest("team/app", &d).await,
    )
    .await;
    tags.push(("app".into(), "latest".into(), d));
    let (d, b) = p
        .image(
            "team/app",
            "v2",
            Format::Oci,
            "amd64",
            &[base.clone(), random_bytes(300_000)],
        )
        .await;
    tags.push(("app".into(), "v2".into(), d));
    blobs.extend(b.into_iter().map(|b| ("app".to_string(), b)));
    let platforms = [
        ("amd64", vec![base.clone()]),
        ("arm64/v8", vec![random_bytes(100_000)]),
        ("s390x", vec![random_bytes(50_000)]),
    ];
    let (d, _) = p.index("team/multi", "1.0", Format::Oci, &platforms).await;
    tags.push(("multi".into(), "1.0".into(), d));
    let platforms = [
        ("amd64", vec![random_bytes(70_000)]),
        ("arm", vec![base.clone()]),
    ];
    let (d, _) = p.index("team/list", "2", Format::Docker, &platforms).await;
    tags.push(("list".into(), "2".into(), d));
    let (d, b) = p
        .image(
            "team/nested/deep/tool",
            "0.1",
            Format::Oci,
            "amd64",
            &[random_bytes(10_000)],
        )
        .await;
    tags.push(("nested/deep/tool".into(), "0.1".into(), d));
    blobs.extend(b.into_iter().map(|b| ("nested/deep/tool".to_string(), b)));
    // Outside the namespace: must not be mirrored.
    p.image(
        "other/thing",
        "1",
        Format::Oci,
        "amd64",
        &[random_bytes(1000)],
    )
    .await;
    Fixture { tags, blobs }
}

#[tokio::test]
async fn mirrors_every_manifest_kind_verbatim_then_does_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let fixture = push_fixture(&src).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = mirror_args(&src, &dst, &metadata);

    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let target = Pusher::new(&dst.addr);
    for (image, tag, digest) in &fixture.tags {
        assert_eq!(
            target
                .head(&format!("mirror/{image}"), tag)
                .await
                .as_deref(),
            Some(digest.as_str()),
            "{image}:{tag}"
        );
    }
    for (image, blob) in &fixture.blobs {
        assert!(
            target.blob_exists(&format!("mirror/{image}"), blob).await,
            "{image}@{blob}"
        );
    }
    assert!(target.tags("mirror/other/thing").await.is_empty());
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (totals["copied"].as_u64(), totals["failed"].as_u64()),
        (Some(6), Some(0)),
        "{totals}"
    );

    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    for (image, tag, digest) in &fixture.tags {
        assert_eq!(
            record["images"][image]["tags"][tag]["digest"],
            digest.as_str(),
            "{image}:{tag}"
        );
    }
    assert_eq!(
        record["images"]["multi"]["tags"]["1.0"]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8", "linux/s390x"])
    );
    assert_eq!(
        record["images"]["list"]["tags"]["2"]["media_type"],
        images::DOCKER_LIST
    );
    assert_eq!(
        record["images"]["nested/deep/tool"]["target"],
        format!("{}/mirror/nested/deep/tool", dst.addr)
    );
    let changelog = std::fs::read_to_string(metadata.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog.starts_with("### ") && changelog.contains("Update(num: 6):"),
        "{changelog}"
    );

    // Second run: one listing request per repository and one HEAD per tag at the source,
    // nothing at all at the target, and no new CHANGELOG block.
    let (src_before, dst_before) = (src.accesses().len(), dst.accesses().len());
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let src_log = since(src.accesses(), src_before);
    assert!(
        since(dst.accesses(), dst_before).is_empty(),
        "no-op run touched the target"
    );
    let heads = src_log
        .iter()
        .filter(|a| a.method == "HEAD" && a.path.contains("/manifests/"))
        .count();
    let lists = src_log
        .iter()
        .filter(|a| a.method == "GET" && a.path.contains("/tags/list"))
        .count();
    let catalog = src_log
        .iter()
        .filter(|a| a.path.starts_with("/v2/_catalog"))
        .count();
    let other: Vec<_> = src_log
        .iter()
        .filter(|a| {
            !(a.method == "HEAD"
                || a.path.contains("/tags/list")
                || a.path.starts_with("/v2/_catalog"))
        })
        .collect();
    // 4 repositories listed and the catalog, with no probe of the namespace itself: the
    // first run recorded that this namespace is listed by the catalog (`listed_by`).
    assert_eq!((heads, lists, catalog), (6, 4, 1), "{src_log:?}");
    assert!(
        other.is_empty(),
        "no-op run sent manifest or blob GETs: {other:?}"
    );
    assert_eq!(
        std::fs::read_to_string(metadata.join("CHANGELOG.md")).unwrap(),
        changelog
    );
    assert_eq!(read_json(&report)["totals"]["unchanged"], 6);
}

#[tokio::test]
async fn a_moved_tag_is_recopied_with_only_its_new_blobs() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let base = random_bytes(MIB);
    p.image(
        "team/app",
        "stable",
        Format::Oci,
        "amd64",
        &[base.clone(), random_bytes(1000)],
    )
    .await;
    p.image(
        "team/app",
        "other",
        Format::Oci,
        "amd64",
        std::slice::from_ref(&base),
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));

    let (moved, _) = p
        .image(
            "team/app",
            "stable",
            Format::Oci,
            "amd64",
            &[base.clone(), random_bytes(2000)],
        )
        .await;
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "stable").await,
        Some(moved.clone())
    );
    let uploads: Vec<_> = since(dst.accesses(), before)
        .into_iter()
        .filter(|a| a.method == "PUT" && a.path.contains("/blobs/uploads/"))
        .collect();
    assert_eq!(
        uploads.len(),
        2,
        "only the new config and layer travel: {uploads:?}"
    );
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(
        record["images"]["app"]["tags"]["stable"]["digest"],
        moved.as_str()
    );
    let changelog = std::fs::read_to_string(metadata.join("CHANGELOG.md")).unwrap();
    assert!(
        changelog
            .lines()
            .nth(2)
            .unwrap()
            .contains("(moved from sha256:"),
        "{changelog}"
    );
}

#[tokio::test]
async fn process_count_copies_exactly_the_head_of_the_plan() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for tag in ["e", "b", "d", "a", "c"] {
        p.image("team/app", tag, Format::Oci, "amd64", &[random_bytes(1000)])
            .await;
    }
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = mirror_args(&src, &dst, &metadata);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--process-count", "2", "--report"])
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/app").await, ["a", "b"]);
    assert_eq!(read_json(&report)["totals"]["pending"], 3);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--process-count", "-1"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        Pusher::new(&dst.addr).tags("mirror/app").await,
        ["a", "b", "c", "d", "e"]
    );
}

#[tokio::test]
async fn a_tag_the_target_rejects_fails_alone_and_is_not_recorded() {
    // The source accepts foreign-layer URLs; the target (default config) refuses the manifest.
    let src = TestRegistry::start_with(images::ALLOW_FOREIGN_URLS);
    let dst = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (good, _) = p
        .image(
            "team/good",
            "1",
            Format::Docker,
            "amd64",
            &[random_bytes(1000)],
        )
        .await;
    p.refused_image("team/bad", "1").await;

    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = mirror_args(&src, &dst, &metadata);
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--retries", "1", "--report"])
        .arg(&report));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("failed: ") && stderr(&out).contains("bad:1"),
        "{}",
        stderr(&out)
    );
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(
        record["images"]["good"]["tags"]["1"]["digest"],
        good.as_str()
    );
    assert!(record["images"].get("bad").is_none(), "{record}");
    assert_eq!(record["failed"]["bad:1"]["attempts"], 1);
    assert!(
        record["failed"]["bad:1"]["error"]
            .as_str()
            .unwrap()
            .contains("mirror/bad/manifests/1: HTTP 500"),
        "{record}"
    );
    let failed = &read_json(&report)["failed"];
    assert_eq!(failed[0]["image"], "bad");
    // Failed tags are retried on the next run, and count their attempts.
    let out = run(gcrsync(work.path()).args(&args).args(["--retries", "0"]));
    assert_eq!(out.status.code(), Some(1));
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(record["failed"]["bad:1"]["attempts"], 2);
}

#[tokio::test]
async fn a_repository_or_head_that_keeps_failing_fails_alone_and_excluded_images_are_never_listed()
{
    use common::faults::{Fault, FaultProxy, Rule};
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let push = |repo: &'static str, tag: &'static str| {
        let p = &p;
        async move {
            p.image(
                &format!("team/{repo}"),
                tag,
                Format::Oci,
                "amd64",
                &[random_bytes(300)],
            )
            .await
            .0
        }
    };
    push("app", "1").await;
    let broken_1 = push("broken", "1").await;
    push("excluded", "1").await;
    let (source, target) = (FaultProxy::start(&src.addr), FaultProxy::start(&dst.addr));
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let mut args = args_for(&source.addr, &target.addr, &metadata);
    args.extend(["--exclude-images", "^excluded$", "--retries", "1"].map(String::from));
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));

    push("app", "2").await;
    push("broken", "2").await;
    push("new", "1").await;
    let other = push("other", "1").await;
    let fail = |path: &str, method: &'static str, status: u16| Rule {
        method,
        path_contains: path.into(),
        times: 100,
        fault: Fault::Status(status, None),
    };
    // The catalog lists `broken`, whose listing then fails every time.
    source.inject(fail("/v2/team/broken/tags/list", "GET", 500));
    source.inject(fail("/v2/team/app/manifests/2", "HEAD", 500));
    // The target's listing of `new` fails too, so its tag is HEADed as before listings.
    target.inject(fail("/v2/mirror/new/tags/list", "GET", 500));
    target.inject(fail("/v2/mirror/new/manifests/1", "HEAD", 503));
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(1));
    let mirror = Pusher::new(&dst.addr);
    assert_eq!(mirror.head("mirror/other", "1").await, Some(other));
    assert!(mirror.tags("mirror/new").await.is_empty());
    assert_eq!(mirror.tags("mirror/app").await, ["1"]);

    let report = read_json(&report);
    assert_eq!(report["totals"]["failed"], 3, "{report}");
    let repos = report["failed_repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{repos:?}");
    assert_eq!(repos[0]["image"], "broken");
    let why = repos[0]["error"].as_str().unwrap();
    assert!(
        why.contains(
            "/v2/team/broken/tags/list?n=1000: HTTP 500 (INJECTED: fault injected with status 500)"
        ),
        "{why}"
    );
    let tags: Vec<String> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("{}:{} {}", f["image"], f["tag"], f["error"]))
        .collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(
        tags[0].contains("\"app\":\"2\"") && tags[0].contains("HTTP 500"),
        "{tags:?}"
    );
    assert!(
        tags[1].contains("\"new\":\"1\"")
            && tags[1].contains("(target): HEAD")
            && tags[1].contains("HTTP 503"),
        "{tags:?}"
    );

    let record = read_json(&metadata.join(format!("{}/team/images.json", source.addr)));
    assert_eq!(
        record["images"]["broken"]["tags"]["1"]["digest"],
        broken_1.as_str(),
        "the unlisted repository's records stay"
    );
    assert!(record["images"]["broken"]["tags"].get("2").is_none());
    assert!(record["images"]["other"]["tags"].get("1").is_some());
    let failed: Vec<&String> = record["failed"].as_object().unwrap().keys().collect();
    assert_eq!(
        failed,
        ["app:2", "new:1"],
        "tags are recorded as failed; repositories are not"
    );
    let excluded: Vec<_> = source
        .log()
        .into_iter()
        .filter(|(_, path, _)| path.contains("/team/excluded/"))
        .collect();
    assert!(
        excluded.is_empty(),
        "an excluded catalog repository is never listed: {excluded:?}"
    );
}
