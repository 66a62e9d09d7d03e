//! Names across runs and shards: a changed `--name-template` or `--target` re-targets
//! every recorded tag (adopted where already there, copied otherwise), and two images
//! mapping to one target repository stop every shard before any request to the target
//! (and two sources of one run, until a `--name-template` tells them apart).

mod common;

use common::images::random_bytes;
use common::*;

#[tokio::test]
async fn a_changed_name_template_or_target_retargets_every_recorded_tag() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for repo in ["app", "tool"] {
        p.image(
            &format!("team/{repo}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(300)],
        )
        .await;
    }
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    // `app` is already at its new name (mirrored there by another run); `tool` is not.
    let renamed = ["--name-template", "v2/{{ image }}"];
    let elsewhere = work.path().join("other-meta");
    let out = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &elsewhere))
        .args(renamed)
        .args(["--images", "app"]));
    assert_eq!(out.status.code(), Some(0));

    let out = run(gcrsync(work.path()).arg("test").args(&args).args(renamed));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let d = &dst.addr;
    assert_eq!(
        stdout,
        format!(
            "team/tool:1 → {d}/mirror/v2/tool:1 (retarget from {d}/mirror/tool)\n\
             team/app:1 → {d}/mirror/v2/app:1 (retarget from {d}/mirror/app, already there: adopt)\n"
        )
    );
    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(renamed)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (&totals["copied"], &totals["adopted"], &totals["unchanged"]),
        (&1.into(), &1.into(), &0.into()),
        "{totals}"
    );
    assert_eq!(Pusher::new(d).tags("mirror/v2/tool").await, ["1"]);
    let record = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(
        record["images"]["tool"]["target"],
        format!("{d}/mirror/v2/tool")
    );
    assert_eq!(
        record["images"]["app"]["target"],
        format!("{d}/mirror/v2/app")
    );
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(renamed)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read_json(&report)["totals"]["unchanged"], 2);

    // A new --target re-targets the same way: nothing is "unchanged" there.
    let moved: Vec<String> = args
        .iter()
        .map(|a| a.replace(&format!("{d}/mirror"), &format!("{d}/new")))
        .collect();
    let out = run(gcrsync(work.path())
        .arg("test")
        .args(&moved)
        .args(renamed)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "team/app:1 → {d}/new/v2/app:1 (retarget from {d}/mirror/v2/app)"
        )),
        "{stdout}"
    );
    assert_eq!(read_json(&report)["totals"]["unchanged"], 0);
}

/// gcrsync's shard of an image (FNV-1a of `namespace/image`), to pick names in two shards.
fn shard_of(name: &str, count: u64) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % count
}

#[tokio::test]
async fn a_collision_between_two_shards_stops_every_shard_before_any_target_request() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // `tN-a` and `tN/a` both map to `tN/a`; pick a pair that lands in different shards.
    let shard = |image: &str| shard_of(&format!("{}/team/{image}", src.addr), 3);
    let n = (0..100)
        .find(|n| shard(&format!("t{n}-a")) != shard(&format!("t{n}/a")))
        .unwrap();
    let p = Pusher::new(&src.addr);
    for image in [format!("t{n}-a"), format!("t{n}/a"), "fine".to_string()] {
        p.image(
            &format!("team/{image}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(100)],
        )
        .await;
    }
    let work = tempfile::tempdir().unwrap();
    let args = mirror_args(&src, &dst, &work.path().join("meta"));
    for k in 1..=3 {
        let out = run(gcrsync(work.path()).args(&args).args([
            "--name-template",
            r#"{{ image | replace("-", "/") }}"#,
            "--shard",
            &format!("{k}/3"),
        ]));
        assert_eq!(out.status.code(), Some(2), "shard {k}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{}/mirror/t{n}/a ← {}/team/t{n}-a, {}/team/t{n}/a",
                dst.addr, src.addr, src.addr
            )) && err.contains("across every --shard"),
            "{err}"
        );
    }
    assert!(
        dst.accesses().is_empty(),
        "no request reached the target: {:?}",
        dst.accesses()
    );
}

#[tokio::test]
async fn two_sources_mapping_to_one_target_name_is_a_configuration_error() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    p.image("team/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    p.image("other/app", "1", Format::Oci, "amd64", &[random_bytes(100)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let mut args = mirror_args(&src, &dst, &work.path().join("meta"));
    args.extend(["--source".to_string(), format!("{}/other", src.addr)]);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}/mirror/app ← {}/other/app, {}/team/app",
            dst.addr, src.addr, src.addr
        )),
        "{err}"
    );
    assert!(
        Pusher::new(&dst.addr).tags("mirror/app").await.is_empty(),
        "nothing copied"
    );
    args.extend([
        "--name-template".to_string(),
        "{{ namespace }}/{{ image }}".to_string(),
    ]);
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/other/app").await, ["1"]);
}
