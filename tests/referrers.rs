//! Referrers (signatures, SBOMs, signatures of SBOMs) copied with their image: read from
//! a source with the OCI 1.1 referrers API (the gcr fake's) and from cosign's tags,
//! written to CNCF distribution 2.8, which has only the `sha256-<hex>` tag fallback.

mod common;

use common::gcr::FakeGcr;
use common::images::{OCI_MANIFEST, random_bytes};
use common::referrers::{
    NOTATION_SIG, SPDX, artifact, cosign_signature, fallback_signature, fallback_tag, listed,
};
use common::*;

/// An image with a notation signature and an SBOM (both by `subject`), a signature of
/// the SBOM, and a cosign `.sig` tag, on a source with the referrers API. Returns the gcr
/// front, the upstream registry, and the digests: (image, signature, sbom, sbom's
/// signature).
async fn signed_image() -> (FakeGcr, TestRegistry, [String; 4]) {
    let upstream = TestRegistry::start();
    let p = Pusher::new(&upstream.addr);
    let (app, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(700)])
        .await;
    let subject = p.get_manifest("team/app", &app).await;
    let gcr = FakeGcr::start(&upstream.addr, true);
    gcr.referrers_api(1);
    let push = async |kind: &str, subject: &[u8], payload: &str| {
        let (body, digest) = artifact(
            &p,
            "team/app",
            kind,
            (OCI_MANIFEST, subject),
            payload.as_bytes(),
        )
        .await;
        gcr.push_manifest("team/app", &digest, OCI_MANIFEST, &body)
            .await;
        (body, digest)
    };
    let (_, sig) = push(NOTATION_SIG, &subject, "signature").await;
    let (sbom_body, sbom) = push(SPDX, &subject, "{\"spdxVersion\":\"SPDX-2.3\"}").await;
    let (_, sbom_sig) = push(NOTATION_SIG, &sbom_body, "sbom signature").await;
    let cosign = cosign_signature(&p, "team/app", &app).await;
    let tag = format!("{}.sig", fallback_tag(&app));
    gcr.push_manifest("team/app", &tag, OCI_MANIFEST, &cosign)
        .await;
    (gcr, upstream, [app, sig, sbom, sbom_sig])
}

#[tokio::test]
async fn signatures_and_sboms_are_copied_with_their_image_into_the_tag_fallback() {
    let (gcr, _upstream, [app, sig, sbom, sbom_sig]) = signed_image().await;
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    // A filter that leaves out every `sha256-*` tag does not leave out the referrers.
    let out = run(gcrsync(work.path())
        .args(args_for(&gcr.addr, &dst.addr, &meta))
        .args(["--exclude-tags", "^sha256-"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = Pusher::new(&dst.addr);
    assert_eq!(
        target.head("mirror/app", "1").await.as_deref(),
        Some(app.as_str())
    );
    for digest in [&sig, &sbom, &sbom_sig] {
        assert_eq!(
            target.head("mirror/app", digest).await.as_deref(),
            Some(digest.as_str()),
            "every referrer, recursively, is on the target by digest"
        );
    }
    // distribution 2.8 has no API: the fallback index of each subject lists its referrers.
    let index = |digest: &str| {
        let target = Pusher::new(&dst.addr);
        let tag = fallback_tag(digest);
        async move {
            let body = target.get_manifest("mirror/app", &tag).await;
            let mut found = listed(&serde_json::from_slice(&body).unwrap());
            found.sort();
            found
        }
    };
    let mut of_app = vec![sig.clone(), sbom.clone()];
    of_app.sort();
    assert_eq!(index(&app).await, of_app);
    assert_eq!(index(&sbom).await, std::slice::from_ref(&sbom_sig));
    // cosign's tag is copied as a tag; no referrer tag is mirrored as an image of its own.
    let tags = target.tags("mirror/app").await;
    assert!(
        tags.contains(&format!("{}.sig", fallback_tag(&app))),
        "{tags:?}"
    );
    let record = read_json(&meta.join(format!("{}/team/images.json", gcr.addr)));
    let images: Vec<&String> = record["images"].as_object().unwrap().keys().collect();
    assert_eq!(images, ["app"], "{record}");
    let tags: Vec<&String> = record["images"]["app"]["tags"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(tags, ["1"], "{record}");
    let recorded = record["images"]["app"]["tags"]["1"]["referrers"].to_string();
    for digest in [&sig, &sbom, &sbom_sig] {
        assert!(recorded.contains(digest.as_str()), "{recorded}");
    }
}

#[tokio::test]
async fn referrers_none_copies_the_image_alone() {
    let (gcr, _upstream, [app, sig, _, _]) = signed_image().await;
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path())
        .args(args_for(&gcr.addr, &dst.addr, &work.path().join("meta")))
        .args(["--referrers", "none"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = Pusher::new(&dst.addr);
    assert_eq!(
        target.head("mirror/app", "1").await.as_deref(),
        Some(app.as_str())
    );
    assert_eq!(target.head("mirror/app", &sig).await, None);
    assert_eq!(target.tags("mirror/app").await, ["1"]);
}

/// A source without the API, answering its route with 405 as some registries do: the
/// referrers come from the `sha256-<hex>` fallback index the source holds.
#[tokio::test]
async fn a_source_without_the_api_is_read_through_its_tag_fallback() {
    use common::faults::{Fault, FaultProxy, Rule};
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (app, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(700)])
        .await;
    let (sig, _) = fallback_signature(&p, "team/app", &app, "signature", &[]).await;
    let proxy = FaultProxy::start(&src.addr);
    proxy.inject(Rule {
        method: "GET",
        path_contains: "/referrers/".into(),
        times: 100,
        fault: Fault::Status(405, None),
    });
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let out =
        run(gcrsync(work.path()).args(args_for(&proxy.addr, &dst.addr, &work.path().join("meta"))));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(proxy.saw("/referrers/"), "the API was asked first");
    let target = Pusher::new(&dst.addr);
    assert_eq!(
        target.head("mirror/app", &sig).await.as_deref(),
        Some(sig.as_str())
    );
    let index = target.get_manifest("mirror/app", &fallback_tag(&app)).await;
    assert_eq!(listed(&serde_json::from_slice(&index).unwrap()), [sig]);
    assert_eq!(
        target.tags("mirror/app").await.len(),
        2,
        "1 and the fallback tag"
    );
}

/// The requests of a gcr log from `from` on that ask for referrers.
fn referrer_requests(log: &[(String, String)], from: usize) -> usize {
    log[from..]
        .iter()
        .filter(|(_, path)| path.contains("/referrers/"))
        .count()
}

/// A source with the referrers API: a signature pushed later (no tag shows it) is not
/// asked for by a no-op run, one request per tag; it comes on its turn of
/// `--referrers-recheck` (here every second, so the next run is every tag's turn).
#[tokio::test]
async fn a_signature_pushed_later_comes_on_its_turn_and_a_no_op_asks_nothing_per_tag() {
    let upstream = TestRegistry::start();
    let p = Pusher::new(&upstream.addr);
    let mut digests = Vec::new();
    for tag in ["1", "2", "3"] {
        let (d, _) = p
            .image("team/app", tag, Format::Oci, "amd64", &[random_bytes(300)])
            .await;
        digests.push(d);
    }
    let gcr = FakeGcr::start(&upstream.addr, true);
    gcr.referrers_api(10);
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    let sync = |extra: &[&str]| {
        run(gcrsync(work.path())
            .args(args_for(&gcr.addr, &dst.addr, &meta))
            .args(extra))
    };
    let first = sync(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let record = read_json(&meta.join(format!("{}/team/images.json", gcr.addr)));
    assert_eq!(record["referrers_api"], true, "{record}");
    assert!(record["referrers_checked_through"].is_string(), "{record}");
    let subject = p.get_manifest("team/app", &digests[0]).await;
    let (body, sig) = artifact(
        &p,
        "team/app",
        NOTATION_SIG,
        (OCI_MANIFEST, &subject),
        b"signed later",
    )
    .await;
    gcr.push_manifest("team/app", &sig, OCI_MANIFEST, &body)
        .await;

    let before = gcr.log().len();
    let no_op = sync(&[]);
    assert_eq!(no_op.status.code(), Some(0), "{}", stderr(&no_op));
    let log = gcr.log();
    assert_eq!(referrer_requests(&log, before), 0, "{:?}", &log[before..]);
    let target = Pusher::new(&dst.addr);
    assert_eq!(target.head("mirror/app", &sig).await, None);

    std::thread::sleep(std::time::Duration::from_millis(1100));
    // A run stopped by its deadline before the re-reads leaves the schedule where it was.
    let through = |meta: &std::path::Path| {
        read_json(&meta.join(format!("{}/team/images.json", gcr.addr)))["referrers_checked_through"]
            .clone()
    };
    let started = through(&meta);
    let before = gcr.log().len();
    let cut = sync(&["--referrers-recheck", "1s", "--deadline", "0s"]);
    assert_eq!(cut.status.code(), Some(0), "{}", stderr(&cut));
    assert_eq!(referrer_requests(&gcr.log(), before), 0);
    assert_eq!(through(&meta), started);
    let before = gcr.log().len();
    let turn = sync(&["--referrers-recheck", "1s"]);
    assert_eq!(turn.status.code(), Some(0), "{}", stderr(&turn));
    assert!(
        stderr(&turn).contains("referrers read again for 3 unchanged tags: 1 new"),
        "{}",
        stderr(&turn)
    );
    let log = gcr.log();
    assert_eq!(
        referrer_requests(&log, before),
        4,
        "one per tag, and one for the signature: {:?}",
        &log[before..]
    );
    assert_eq!(
        target.head("mirror/app", &sig).await.as_deref(),
        Some(sig.as_str())
    );
    let index = target
        .get_manifest("mirror/app", &fallback_tag(&digests[0]))
        .await;
    assert_eq!(
        listed(&serde_json::from_slice(&index).unwrap()),
        std::slice::from_ref(&sig)
    );
    let record = read_json(&meta.join(format!("{}/team/images.json", gcr.addr)));
    assert_eq!(
        record["images"]["app"]["tags"]["1"]["referrers"],
        serde_json::json!([sig])
    );
    assert_ne!(through(&meta), started, "the schedule moved on");
    let changelog = std::fs::read_to_string(meta.join("CHANGELOG.md")).unwrap();
    assert_eq!(changelog.matches("new referrers").count(), 1, "{changelog}");
}

/// A source without the API (distribution 2.8): a signature pushed with its fallback
/// tag shows in the listing, so the next run copies it at once, whatever the schedule;
/// the run after asks nothing about referrers.
#[tokio::test]
async fn a_new_fallback_tag_in_the_listing_has_the_referrers_read_at_once() {
    use common::faults::{Fault, FaultProxy, Rule};
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (app, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    p.image("team/app", "2", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let proxy = FaultProxy::start(&src.addr);
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    let sync = || {
        run(gcrsync(work.path())
            .args(args_for(&proxy.addr, &dst.addr, &meta))
            .args(["--referrers-recheck", "off", "--process-limit", "1"]))
    };
    let first = sync();
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let referrer_asks = |log: &[(String, String, String)]| {
        log.iter()
            .filter(|(_, path, _)| path.contains("/referrers/"))
            .count()
    };
    assert_eq!(
        referrer_asks(&proxy.log()),
        1,
        "a registry without the API is asked once per run, not once per image (one at a time here)"
    );
    let record_path = meta.join(format!("{}/team/images.json", proxy.addr));
    assert_eq!(read_json(&record_path)["referrers_api"], false);

    let (sig, _) = fallback_signature(&p, "team/app", &app, "signature", &[]).await;
    // A re-read that fails is a failure of the run, and nothing is recorded: the next
    // run reads it again.
    proxy.inject(Rule {
        method: "GET",
        path_contains: "/manifests/sha256-".into(),
        times: 1,
        fault: Fault::Status(500, None),
    });
    let failed = run(gcrsync(work.path())
        .args(args_for(&proxy.addr, &dst.addr, &meta))
        .args(["--referrers-recheck", "off", "--retries", "0"]));
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    assert!(
        stderr(&failed).contains("referrers not read again"),
        "{}",
        stderr(&failed)
    );
    let record = read_json(&record_path);
    assert!(
        record["images"]["app"]["tags"]["1"]
            .get("referrers")
            .is_none(),
        "{record}"
    );
    let seen = proxy.log().len();
    let second = sync();
    assert_eq!(second.status.code(), Some(0), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("referrers read again for 1 unchanged tags: 1 new"),
        "{}",
        stderr(&second)
    );
    let target = Pusher::new(&dst.addr);
    let index = target.get_manifest("mirror/app", &fallback_tag(&app)).await;
    assert_eq!(
        listed(&serde_json::from_slice(&index).unwrap()),
        std::slice::from_ref(&sig)
    );
    let record = read_json(&record_path);
    assert_eq!(
        record["images"]["app"]["tags"]["1"]["referrers"],
        serde_json::json!([sig])
    );
    assert!(record["images"]["app"]["tags"]["1"]["referrer_tags"].is_string());
    assert!(
        record["images"]["app"]["tags"]["2"]
            .get("referrer_tags")
            .is_none()
    );
    let log = proxy.log();
    assert!(
        log[seen..]
            .iter()
            .all(|(method, path, _)| method == "HEAD" || !path.contains("/manifests/2")),
        "the unsigned tag is only HEADed by the listing: {:?}",
        &log[seen..]
    );

    let seen = proxy.log().len();
    let third = sync();
    assert_eq!(third.status.code(), Some(0), "{}", stderr(&third));
    let log = proxy.log();
    let asked: Vec<_> = log[seen..]
        .iter()
        .filter(|(_, path, _)| path.contains("/referrers/") || path.contains("sha256-"))
        .collect();
    assert!(asked.is_empty(), "{asked:?}");
}

/// Tags recorded without their referrers (mirrored under `--referrers none`, or adopted
/// from a target filled by other means) get them from the next run that sees their
/// referrer tags in the listing.
#[tokio::test]
async fn adopted_tags_get_their_referrers_on_the_next_run() {
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (app, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(400)])
        .await;
    let (sig, _) = fallback_signature(&p, "team/app", &app, "signature", &[]).await;
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    let sync = |extra: &[&str]| {
        let out = run(gcrsync(work.path())
            .args(mirror_args(&src, &dst, &meta))
            .args(extra));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        stderr(&out)
    };
    sync(&["--referrers", "none"]);
    std::fs::remove_dir_all(&meta).unwrap();
    let adopted = sync(&[]);
    assert!(adopted.contains("1 adopted"), "{adopted}");
    let target = Pusher::new(&dst.addr);
    assert_eq!(target.head("mirror/app", &sig).await, None);
    let next = sync(&[]);
    assert!(
        next.contains("referrers read again for 1 unchanged tags: 1 new"),
        "{next}"
    );
    assert_eq!(
        target.head("mirror/app", &sig).await.as_deref(),
        Some(sig.as_str())
    );
}

/// `referrers` is a source's own key in a config file: one source mirrors its signatures,
/// the other, under `referrers: none`, its images alone.
#[tokio::test]
async fn each_source_of_a_config_file_has_its_own_referrers_choice() {
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let mut sigs = Vec::new();
    for ns in ["signed", "plain"] {
        let repo = format!("{ns}/app");
        let (app, _) = p
            .image(&repo, "1", Format::Oci, "amd64", &[random_bytes(300)])
            .await;
        sigs.push(fallback_signature(&p, &repo, &app, ns, &[]).await.0);
    }
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let (s, d) = (&src.addr, &dst.addr);
    let config = format!(
        "insecure-registry: [{s}, {d}]\nmetadata-dir: meta\nsources:\n  - source: {s}/signed\n    target: {d}/signed\n  - source: {s}/plain\n    target: {d}/plain\n    referrers: none\n"
    );
    std::fs::write(work.path().join("mirror.yml"), config).unwrap();
    let out = run(gcrsync(work.path()).args(["--config", "mirror.yml"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = Pusher::new(&dst.addr);
    assert_eq!(
        target.head("signed/app", &sigs[0]).await.as_deref(),
        Some(sigs[0].as_str())
    );
    assert_eq!(target.head("plain/app", &sigs[1]).await, None);
    assert_eq!(target.tags("plain/app").await, ["1"]);
}
