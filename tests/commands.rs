//! The commands against real registries: test (dry run, and its plan with filters and name
//! mapping against a golden file), compare, monitor, adoption, cross-repository mounts,
//! and `--images`, `--metadata-path` and user templates. Bad input: tests/config.rs.

mod common;

use common::images::random_bytes;
use common::*;

#[tokio::test]
async fn test_command_prints_the_plan_and_copies_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path())
        .arg("test")
        .args(mirror_args(&src, &dst, &metadata)));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("team/app:1 → {}/mirror/app:1 (new)", dst.addr)),
        "{stdout}"
    );
    let writes: Vec<_> = since(dst.accesses(), before)
        .into_iter()
        .filter(|a| a.method != "HEAD" && !a.path.contains("/tags/list"))
        .collect();
    assert!(writes.is_empty(), "dry run wrote to the target: {writes:?}");
    assert!(!metadata.exists(), "dry run wrote metadata");
    // `sync --dry-run` is the same command.
    let out = run(gcrsync(work.path())
        .args(["sync", "--dry-run"])
        .args(mirror_args(&src, &dst, &metadata)));
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout);
}

#[tokio::test]
async fn tags_already_on_the_target_are_adopted_without_copying() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let layer = random_bytes(50_000);
    let (digest, _) = Pusher::new(&src.addr)
        .image(
            "team/app",
            "1",
            Format::Docker,
            "amd64",
            std::slice::from_ref(&layer),
        )
        .await;
    let target = Pusher::new(&dst.addr);
    let manifest = Pusher::new(&src.addr).get_manifest("team/app", "1").await;
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let config = Pusher::new(&src.addr)
        .get_blob("team/app", parsed["config"]["digest"].as_str().unwrap())
        .await;
    target.blob("mirror/app", &config).await;
    target.blob("mirror/app", &layer).await;
    target
        .manifest("mirror/app", "1", images::DOCKER_MANIFEST, &manifest)
        .await;

    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &metadata))
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let sent: Vec<String> = since(dst.accesses(), before)
        .into_iter()
        .map(|a| format!("{} {}", a.method, a.path))
        .collect();
    assert_eq!(
        sent,
        [
            "GET /v2/mirror/app/tags/list?n=1000".to_string(),
            "HEAD /v2/mirror/app/manifests/1".to_string()
        ],
        "adoption must only list and HEAD the target"
    );
    assert_eq!(read_json(&report)["totals"]["adopted"], 1);
    let adopted = &read_json(&metadata.join(format!("{}/team/images.json", src.addr)))["images"]["app"]
        ["tags"]["1"];
    assert_eq!(
        adopted["media_type"],
        images::DOCKER_MANIFEST,
        "the media type the target serves"
    );
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(
        record["images"]["app"]["tags"]["1"]["digest"],
        digest.as_str()
    );
    assert!(
        !metadata.join("CHANGELOG.md").exists(),
        "an adoption copies nothing, so it adds no CHANGELOG block"
    );
}

#[tokio::test]
async fn shared_layers_are_uploaded_once_and_mounted_into_other_repositories() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let base = random_bytes(2 << 20);
    let base_digest = images::digest_of(&base);
    for image in ["a", "b", "c", "d"] {
        p.image(
            &format!("team/{image}"),
            "1",
            Format::Oci,
            "amd64",
            &[base.clone(), random_bytes(1000)],
        )
        .await;
    }
    let work = tempfile::tempdir().unwrap();
    let out = run(gcrsync(work.path()).args(mirror_args(&src, &dst, &work.path().join("meta"))));
    assert_eq!(out.status.code(), Some(0));
    let log = dst.accesses();
    let uploads = log
        .iter()
        .filter(|a| a.method == "PUT" && a.path.contains(&format!("digest={base_digest}")))
        .count();
    let mounts = log
        .iter()
        .filter(|a| a.method == "POST" && a.path.contains("mount=") && a.status == 201)
        .count();
    assert_eq!(uploads, 1, "the shared base layer travels once: {log:?}");
    assert_eq!(
        mounts, 3,
        "and is mounted into the three other repositories"
    );
    let source_gets = src
        .accesses()
        .iter()
        .filter(|a| a.method == "GET" && a.path.contains(&base_digest))
        .count();
    assert_eq!(source_gets, 1, "and is downloaded once");
}

#[tokio::test]
async fn compare_rebuilds_the_records_from_the_target() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let platforms = [
        ("amd64", vec![random_bytes(100)]),
        ("arm64", vec![random_bytes(100)]),
    ];
    let (index, _) = p.index("team/multi", "1", Format::Oci, &platforms).await;
    let (single, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let json = metadata.join(format!("{}/team/images.json", src.addr));
    let synced = read_json(&json);
    std::fs::remove_dir_all(&metadata).unwrap();

    let before = dst.accesses().len();
    assert_eq!(
        run(gcrsync(work.path()).arg("compare").args(&args))
            .status
            .code(),
        Some(0)
    );
    let gets: Vec<String> = since(dst.accesses(), before)
        .into_iter()
        .filter(|a| a.method == "GET" && a.path.contains("/manifests/"))
        .map(|a| a.path)
        .collect();
    assert_eq!(
        gets,
        [format!("/v2/mirror/multi/manifests/{index}")],
        "only the index is read, for its platforms"
    );
    let rebuilt = read_json(&json);
    assert_eq!(
        rebuilt["images"]["app"]["tags"]["1"]["media_type"],
        images::OCI_MANIFEST
    );
    assert_eq!(
        rebuilt["images"]["multi"]["tags"]["1"]["digest"],
        index.as_str()
    );
    assert_eq!(
        rebuilt["images"]["multi"]["tags"]["1"]["platforms"],
        synced["images"]["multi"]["tags"]["1"]["platforms"]
    );
    assert_eq!(
        rebuilt["images"]["app"]["tags"]["1"]["digest"],
        single.as_str()
    );

    // A tag gone from the target is dropped from the records.
    Pusher::new(&dst.addr)
        .delete_manifest("mirror/app", &single)
        .await;
    assert_eq!(
        run(gcrsync(work.path()).arg("compare").args(&args))
            .status
            .code(),
        Some(0)
    );
    assert!(read_json(&json)["images"].get("app").is_none());
    // And the next sync copies it again.
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(single)
    );
}

#[tokio::test]
async fn monitor_reports_pending_counts_and_copies_nothing() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for tag in ["1", "2", "3"] {
        p.image("team/app", tag, Format::Oci, "amd64", &[random_bytes(100)])
            .await;
    }
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(
        run(gcrsync(work.path())
            .args(&args)
            .args(["--process-count", "1"]))
        .status
        .code(),
        Some(0)
    );
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path())
        .args(["monitor", "--count", "2", "--interval", "0s"])
        .args(&args));
    assert_eq!(out.status.code(), Some(0));
    let line = format!(
        "{}/team → {}/mirror: 2 pending, 1 unchanged",
        src.addr, dst.addr
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).matches(&line).count(),
        2,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        since(dst.accesses(), before)
            .iter()
            .all(|a| a.method == "HEAD" || a.path.contains("/tags/list"))
    );
}

#[tokio::test]
async fn filters_and_name_mapping_match_the_golden_plan() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for (image, tags) in [
        (
            "app",
            &[
                "v1.0.0",
                "v1.1.0",
                "v2.0.0-rc.1",
                "latest",
                "debug-x",
                "1.2",
            ][..],
        ),
        ("app-arm64", &["v1.0.0"][..]),
        ("tools", &["1"][..]),
        ("nested/deep", &["0.1", "0.2"][..]),
    ] {
        let (digest, _) = p
            .image(
                &format!("team/{image}"),
                tags[0],
                Format::Oci,
                "amd64",
                &[random_bytes(100)],
            )
            .await;
        let manifest = p.get_manifest(&format!("team/{image}"), &digest).await;
        for tag in &tags[1..] {
            p.manifest(
                &format!("team/{image}"),
                tag,
                images::OCI_MANIFEST,
                &manifest,
            )
            .await;
        }
    }
    let work = tempfile::tempdir().unwrap();
    let args = mirror_args(&src, &dst, &work.path().join("meta"));
    let filters = [
        "--filter-preset",
        "legacy",
        "--exclude-tags",
        "^debug",
        "--latest",
        "2",
        "--exclude-images",
        "^tools$",
        "--name-template",
        "{{ namespace }}-{{ image }}",
    ];
    let out = run(gcrsync(work.path()).arg("test").args(&args).args(filters));
    assert_eq!(out.status.code(), Some(0));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
            .lines()
            .filter(|l| !l.contains("INFO"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let text = text
        .replace(&src.addr, "SOURCE")
        .replace(&dst.addr, "TARGET");
    let golden =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/filters-plan.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &text).unwrap();
    }
    assert_eq!(text, std::fs::read_to_string(&golden).unwrap());
    let mut listed: Vec<String> = src
        .accesses()
        .into_iter()
        .filter(|a| a.path.contains("/tags/list"))
        .map(|a| a.path.replace("?n=1000", ""))
        .collect();
    listed.sort();
    // The namespace itself (is it a gcr tree?), then only images a filter can let through.
    assert_eq!(
        listed,
        [
            "/v2/team/app/tags/list",
            "/v2/team/nested/deep/tags/list",
            "/v2/team/tags/list"
        ],
        "an image removed by --exclude-images or the preset is never listed"
    );
}

#[tokio::test]
async fn explicit_images_metadata_path_and_user_templates() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    p.image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    p.image(
        "team/other",
        "1",
        Format::Oci,
        "amd64",
        &[random_bytes(100)],
    )
    .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let readme = work.path().join("readme.j2");
    let changelog = work.path().join("changelog.j2");
    std::fs::write(
        &readme,
        "Mirror of {{ source }}: {{ images | length }} image(s)\n",
    )
    .unwrap();
    std::fs::write(&changelog, "## {{ time }} ({{ entries | length }})\n").unwrap();
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &metadata))
        .args([
            "--images",
            "app",
            "--metadata-path",
            "mirrors/gcr",
            "--timezone",
            "Asia/Shanghai",
        ])
        .arg("--readme-template")
        .arg(&readme)
        .arg("--changelog-template")
        .arg(&changelog));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/app").await, ["1"]);
    assert!(
        Pusher::new(&dst.addr).tags("mirror/other").await.is_empty(),
        "--images lists only what it names"
    );
    let dir = metadata.join(format!("mirrors/gcr/{}/team", src.addr));
    assert_eq!(
        std::fs::read_to_string(dir.join("README.md")).unwrap(),
        format!("Mirror of {}/team: 1 image(s)\n", src.addr)
    );
    let block = std::fs::read_to_string(metadata.join("mirrors/gcr/CHANGELOG.md")).unwrap();
    let shanghai =
        jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::get("Asia/Shanghai").unwrap());
    assert!(block.ends_with(" (1)\n"), "{block}");
    // The time is written in the given zone (UTC+8), not in UTC.
    let hour: i8 = block[14..16].parse().unwrap();
    assert!(
        hour == shanghai.hour() || (hour + 1) % 24 == shanghai.hour(),
        "{block} vs {shanghai}"
    );
}
