//! What the records say about tags that are not plain copies: schema-1 (and other
//! uncopyable) manifests skipped with a reason through each way they are recognised, and
//! the platforms of single images and of adopted indexes.

mod common;

use common::gcr::{FakeGcr, SCHEMA1_SIGNED};
use common::images::random_bytes;
use common::*;

/// Requests a log names for `team/old`'s tag `0.8` (by tag), or for its digest.
fn about_old_tag<'a>(log: &'a [(String, String)], digest: &str) -> Vec<&'a (String, String)> {
    log.iter()
        .filter(|(_, p)| p.contains("/old/manifests/0.8") || p.contains(digest))
        .collect()
}

fn target_requests_for_old(dst: &TestRegistry, skip: usize) -> Vec<Access> {
    since(dst.accesses(), skip)
        .into_iter()
        .filter(|a| a.path.contains("/old/"))
        .collect()
}

/// A gcr namespace with a normal image and, next to it, a pre-2017 schema-1 tag.
async fn gcr_with_schema1() -> (
    TestRegistry,
    TestRegistry,
    FakeGcr,
    common::gcr::HeldManifest,
) {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    p.image(
        "team/app",
        "1.0",
        Format::Oci,
        "amd64",
        &[random_bytes(500)],
    )
    .await;
    // The repository exists upstream with a modern tag; gcr keeps the old one in schema 1.
    p.image(
        "team/old",
        "1.0",
        Format::Docker,
        "amd64",
        &[random_bytes(400)],
    )
    .await;
    let gcr = FakeGcr::start(&upstream.addr, true);
    let doc = gcr.serve_schema1("team/old", "0.8");
    (upstream, dst, gcr, doc)
}

#[tokio::test]
async fn a_gcr_schema1_tag_is_skipped_from_its_listing_and_never_requested_again() {
    let (_upstream, dst, gcr, doc) = gcr_with_schema1().await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let (outputs, summary) = (work.path().join("out"), work.path().join("summary.md"));
    let args = gcr_args(&gcr, &dst, &metadata);

    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", &outputs)
        .env("GITHUB_STEP_SUMMARY", &summary));
    assert_eq!(out.status.code(), Some(0), "a skipped tag is not an error");
    let log = gcr.log();
    assert!(
        about_old_tag(&log, &doc.digest).is_empty(),
        "the listing's mediaType is enough: {log:?}"
    );
    assert!(
        target_requests_for_old(&dst, 0)
            .iter()
            .all(|a| !a.path.contains("/manifests/0.8"))
    );
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (&totals["copied"], &totals["skipped"], &totals["failed"]),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{totals}"
    );
    let skipped = &read_json(&report)["skipped"][0];
    assert_eq!(
        (&skipped["image"], &skipped["tag"]),
        (&"old".into(), &"0.8".into())
    );
    let records = metadata.join(format!("{}/team", gcr.addr));
    let record = read_json(&records.join("images.json"));
    let entry = &record["skipped"]["old:0.8"];
    assert_eq!(entry["digest"], doc.digest.as_str());
    let reason = entry["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("schema 1 manifest") && reason.contains(SCHEMA1_SIGNED),
        "{reason}"
    );
    assert!(entry["since"].as_str().unwrap().ends_with('Z'));
    assert!(record["images"]["old"]["tags"].get("0.8").is_none());
    assert!(record["failed"].as_object().unwrap().is_empty());
    let readme = std::fs::read_to_string(records.join("README.md")).unwrap();
    assert!(
        readme.contains("## Not mirrored") && readme.contains("`old:0.8`"),
        "{readme}"
    );
    assert!(stderr(&out).contains("skipped: "), "summary lists it");
    let outputs = std::fs::read_to_string(&outputs).unwrap();
    assert!(
        outputs.contains("\nskipped=1\n") && outputs.contains("\nunchanged=0\n"),
        "{outputs}"
    );
    let summary = std::fs::read_to_string(&summary).unwrap();
    assert!(
        summary.contains("**Skipped tags**") && summary.contains(":0.8` | schema 1"),
        "{summary}"
    );

    // Second run: nothing is sent for that tag, anywhere; it is still counted as skipped.
    let (src_before, dst_before) = (gcr.log().len(), dst.accesses().len());
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let second: Vec<_> = gcr.log().into_iter().skip(src_before).collect();
    assert!(about_old_tag(&second, &doc.digest).is_empty(), "{second:?}");
    assert!(
        since(dst.accesses(), dst_before).is_empty(),
        "no-op run touched the target"
    );
    let again = read_json(&report);
    assert_eq!(
        (&again["totals"]["skipped"], &again["totals"]["unchanged"]),
        (&1.into(), &2.into())
    );
    assert!(
        again["skipped"].as_array().unwrap().is_empty(),
        "only new verdicts are listed"
    );
    assert_eq!(
        read_json(&records.join("images.json")),
        record,
        "nothing rewritten"
    );

    // The tag moves to a modern image: judged again, copied, and no longer skipped.
    gcr.drop_held("team/old", "0.8");
    let (moved, _) = Pusher::new(&_upstream.addr)
        .image(
            "team/old",
            "0.8",
            Format::Docker,
            "amd64",
            &[random_bytes(300)],
        )
        .await;
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/old", "0.8").await,
        Some(moved.clone())
    );
    let record = read_json(&records.join("images.json"));
    assert!(
        record["skipped"].as_object().unwrap().is_empty(),
        "{record}"
    );
    assert_eq!(
        record["images"]["old"]["tags"]["0.8"]["digest"],
        moved.as_str()
    );
}

#[tokio::test]
async fn a_schema1_tag_behind_a_catalog_registry_is_skipped_by_its_head_content_type() {
    let (_upstream, dst, gcr, doc) = gcr_with_schema1().await;
    gcr.plain_listing();
    let vendor = "application/vnd.example.thing.v1+json";
    gcr.serve_unknown_type("team/app", "thing", vendor);
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = gcr_args(&gcr, &dst, &metadata);

    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let log = gcr.log();
    assert!(
        log.iter().any(|(_, p)| p.starts_with("/v2/_catalog")),
        "found by catalog"
    );
    let old: Vec<_> = about_old_tag(&log, &doc.digest)
        .into_iter()
        .filter(|(_, p)| !p.starts_with("challenged"))
        .collect();
    assert_eq!(
        old,
        [&(
            "HEAD".to_string(),
            "/v2/team/old/manifests/0.8?".to_string()
        )],
        "the listing HEAD's Content-Type decides; no GET"
    );
    assert!(
        target_requests_for_old(&dst, 0)
            .iter()
            .all(|a| !a.path.contains("/manifests/0.8"))
    );
    assert_eq!(read_json(&report)["totals"]["skipped"], 2);
    let record = read_json(&metadata.join(format!("{}/team/images.json", gcr.addr)));
    assert_eq!(record["skipped"]["old:0.8"]["digest"], doc.digest.as_str());
    let reason = record["skipped"]["app:thing"]["reason"].as_str().unwrap();
    assert!(reason.contains(vendor), "{reason}");
    assert!(
        !log.iter()
            .any(|(m, p)| m == "GET" && p.contains("/manifests/thing"))
    );

    // Second run: the listing HEAD (how this registry tells digests), and nothing else.
    let (src_before, dst_before) = (gcr.log().len(), dst.accesses().len());
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let second: Vec<_> = gcr.log().into_iter().skip(src_before).collect();
    let old: Vec<_> = about_old_tag(&second, &doc.digest)
        .into_iter()
        .filter(|(_, p)| !p.starts_with("challenged"))
        .collect();
    assert_eq!(old.len(), 1, "{old:?}");
    assert_eq!(old[0].0, "HEAD");
    assert!(since(dst.accesses(), dst_before).is_empty());
}

#[tokio::test]
async fn a_schema1_tag_the_listing_does_not_type_is_skipped_at_its_get_not_failed() {
    let (_upstream, dst, gcr, doc) = gcr_with_schema1().await;
    gcr.hide_listing_media_types();
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = gcr_args(&gcr, &dst, &metadata);

    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("digest mismatch"));
    let log = gcr.log();
    let gets: Vec<_> = about_old_tag(&log, &doc.digest)
        .into_iter()
        .filter(|(m, p)| m == "GET" && !p.starts_with("challenged"))
        .collect();
    assert_eq!(gets.len(), 1, "fetched once, not retried: {gets:?}");
    let pushed: Vec<_> = target_requests_for_old(&dst, 0)
        .into_iter()
        .filter(|a| a.method == "PUT" && a.path.contains("/manifests/0.8"))
        .collect();
    assert!(
        pushed.is_empty(),
        "nothing of it reaches the target: {pushed:?}"
    );
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (&totals["skipped"], &totals["failed"]),
        (&1.into(), &0.into()),
        "{totals}"
    );
    let record = read_json(&metadata.join(format!("{}/team/images.json", gcr.addr)));
    assert_eq!(record["skipped"]["old:0.8"]["digest"], doc.digest.as_str());
    assert!(
        record["skipped"]["old:0.8"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("schema 1 manifest")
    );

    let (src_before, dst_before) = (gcr.log().len(), dst.accesses().len());
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    let second: Vec<_> = gcr.log().into_iter().skip(src_before).collect();
    assert!(about_old_tag(&second, &doc.digest).is_empty(), "{second:?}");
    assert!(since(dst.accesses(), dst_before).is_empty());
}

#[tokio::test]
async fn single_images_record_their_config_platform_and_adopted_indexes_their_platforms() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let (single, _) = p
        .image(
            "team/app",
            "1",
            Format::Docker,
            "s390x",
            &[random_bytes(2000)],
        )
        .await;
    // An alias of the same manifest: its config is not streamed twice.
    p.manifest(
        "team/app",
        "alias",
        images::DOCKER_MANIFEST,
        &p.get_manifest("team/app", &single).await,
    )
    .await;
    p.image(
        "team/app",
        "oci",
        Format::Oci,
        "arm64",
        &[random_bytes(1000)],
    )
    .await;
    let platforms = [
        ("amd64", vec![random_bytes(700)]),
        ("arm64/v8", vec![random_bytes(800)]),
    ];
    let (index, _) = p.index("team/multi", "1.0", Format::Oci, &platforms).await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let path = metadata.join(format!("{}/team/images.json", src.addr));
    let record = read_json(&path);
    let tags = &record["images"]["app"]["tags"];
    assert_eq!(tags["1"]["platforms"], serde_json::json!(["linux/s390x"]));
    assert_eq!(
        tags["alias"]["platforms"],
        serde_json::json!(["linux/s390x"])
    );
    assert_eq!(tags["oci"]["platforms"], serde_json::json!(["linux/arm64"]));
    let page = std::fs::read_to_string(metadata.join(format!("{}/team/app.md", src.addr))).unwrap();
    assert!(page.contains("| linux/s390x |"), "{page}");

    // Records lost: the next run adopts everything; the index's platforms are read from
    // the source with one GET by digest, single images are not fetched at all.
    std::fs::remove_dir_all(&metadata).unwrap();
    let (src_before, dst_before) = (src.accesses().len(), dst.accesses().len());
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let record = read_json(&path);
    let adopted = &record["images"]["multi"]["tags"]["1.0"];
    assert_eq!(
        adopted["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64/v8"])
    );
    assert_eq!(adopted["media_type"], images::OCI_INDEX);
    let gets: Vec<_> = since(src.accesses(), src_before)
        .into_iter()
        .filter(|a| {
            a.method == "GET"
                && !a.path.contains("/tags/list")
                && !a.path.starts_with("/v2/_catalog")
        })
        .collect();
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].path, format!("/v2/team/multi/manifests/{index}"));
    assert!(
        since(dst.accesses(), dst_before)
            .iter()
            .all(|a| a.method == "HEAD" || a.path.contains("/tags/list"))
    );

    // And then a no-op run sends nothing beyond the listing.
    let (src_before, dst_before) = (src.accesses().len(), dst.accesses().len());
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    assert!(
        since(src.accesses(), src_before)
            .iter()
            .all(|a| a.method == "HEAD"
                || a.path.contains("/tags/list")
                || a.path.starts_with("/v2/_catalog"))
    );
    assert!(since(dst.accesses(), dst_before).is_empty());
}

#[tokio::test]
async fn a_config_the_target_already_holds_is_read_once_from_the_source_for_its_platform() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let (first, blobs) = p
        .image(
            "team/app",
            "1",
            Format::Oci,
            "ppc64le",
            &[random_bytes(3000)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));

    // Another manifest over the same config and layer (only an annotation differs): its
    // blobs are all on the target already, so nothing streams past.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&p.get_manifest("team/app", &first).await).unwrap();
    manifest["annotations"] = serde_json::json!({"org.example.rebuilt": "yes"});
    let body = serde_json::to_vec(&manifest).unwrap();
    p.manifest("team/app", "2", images::OCI_MANIFEST, &body)
        .await;
    let before = src.accesses().len();
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(
        record["images"]["app"]["tags"]["2"]["platforms"],
        serde_json::json!(["linux/ppc64le"])
    );
    let blob_gets: Vec<_> = since(src.accesses(), before)
        .into_iter()
        .filter(|a| a.method == "GET" && a.path.contains("/blobs/"))
        .collect();
    assert_eq!(blob_gets.len(), 1, "{blob_gets:?}");
    assert!(
        blob_gets[0].path.ends_with(&blobs[0]),
        "the config, not the layer"
    );
}
