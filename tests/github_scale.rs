//! GitHub at the scale of a real namespace: thousands of adopted or compared tags in a few
//! commits, GitHub's secondary limits and 5xx answers on blob, tree, commit and ref calls
//! waited out or retried without losing a record, and rate-limit waits kept within
//! `--deadline` (failing clearly, saying what was committed).

mod common;

use std::time::{Duration, Instant};

use common::github::{FakeGitHub, Fault, Options, WRITE_TOKEN};
use common::images::random_bytes;
use common::*;

/// Tags `repo`'s manifest `digest` as each of `tags`, the way distribution's filesystem
/// driver stores a tag (what a manifest PUT by tag writes), without 15,000 uploads.
fn add_tags(registry: &TestRegistry, repo: &str, digest: &str, tags: &[String]) {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let base = registry
        .data_dir()
        .join("data/docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags");
    assert!(base.is_dir(), "{} has no tags yet", repo);
    for tag in tags {
        let dir = base.join(tag);
        std::fs::create_dir_all(dir.join("current")).unwrap();
        std::fs::write(dir.join("current/link"), digest).unwrap();
        let index = dir.join("index/sha256").join(hex);
        std::fs::create_dir_all(&index).unwrap();
        std::fs::write(index.join("link"), digest).unwrap();
    }
}

fn commits_since(gh: &FakeGitHub, before: usize) -> usize {
    gh.history("main").len() - before
}

fn images_json(gh: &FakeGitHub, src: &TestRegistry) -> serde_json::Value {
    serde_json::from_str(
        &gh.file("main", &format!("{}/team/images.json", src.addr))
            .expect("images.json committed"),
    )
    .unwrap()
}

fn recorded_tags(record: &serde_json::Value) -> usize {
    record["images"]
        .as_object()
        .unwrap()
        .values()
        .map(|image| image["tags"].as_object().unwrap().len())
        .sum()
}

#[tokio::test]
async fn fifteen_thousand_adopted_tags_land_in_a_few_commits() {
    const IMAGES: usize = 3;
    const TAGS: usize = 5_000;
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let p = Pusher::new(&src.addr);
    let work = tempfile::tempdir().unwrap();
    let mut digests = Vec::new();
    for i in 0..IMAGES {
        let (digest, _) = p
            .image(
                &format!("team/app{i}"),
                "t0",
                Format::Oci,
                "amd64",
                &[random_bytes(100)],
            )
            .await;
        digests.push(digest);
    }
    // An existing mirror: the target already holds every tag (copied once, outside GitHub).
    let first = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &work.path().join("elsewhere")))
        .args(["--include-tags", "^t0$"]));
    assert_eq!(first.status.code(), Some(0));
    let tags: Vec<String> = (1..TAGS).map(|t| format!("t{t}")).collect();
    for (i, digest) in digests.iter().enumerate() {
        add_tags(&src, &format!("team/app{i}"), digest, &tags);
        add_tags(&dst, &format!("mirror/app{i}"), digest, &tags);
    }

    let before = gh.history("main").len();
    // images.json grows past what goes inline in a tree: it goes as a blob, retried.
    gh.inject_on("POST /git/blobs", Fault::ServerError(502));
    let started = Instant::now();
    let report = work.path().join("report.json");
    let out = gh.sync(
        work.path(),
        &src,
        &dst,
        &["--commit-every", "50", "--report", report.to_str().unwrap()],
    );
    eprintln!(
        "adopting {} tags took {:?}",
        IMAGES * TAGS,
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        read_json(&report)["totals"]["adopted"].as_u64(),
        Some((IMAGES * TAGS) as u64)
    );
    let commits = commits_since(&gh, before);
    assert!(
        (1..=10).contains(&commits),
        "{commits} commits for {} adopted tags, not one per --commit-every",
        IMAGES * TAGS
    );
    assert_eq!(recorded_tags(&images_json(&gh, &src)), IMAGES * TAGS);
    // images.json is now over 1 MB: the contents API sends it without content, so it is
    // read as a blob.
    assert!(
        gh.log()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/git/blobs/")),
        "large files are read through the blobs API"
    );
}

/// Three tags of `team/app` on the source.
async fn three_tags(src: &TestRegistry) {
    let p = Pusher::new(&src.addr);
    for tag in ["1", "2", "3"] {
        p.image("team/app", tag, Format::Oci, "amd64", &[random_bytes(500)])
            .await;
    }
}

#[tokio::test]
async fn compare_records_in_bulk_not_per_commit_every() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let work = tempfile::tempdir().unwrap();
    three_tags(&src).await;
    // The target already holds them (copied by a run recorded elsewhere).
    let copied =
        run(gcrsync(work.path()).args(mirror_args(&src, &dst, &work.path().join("elsewhere"))));
    assert_eq!(copied.status.code(), Some(0));
    let before = gh.history("main").len();
    let mut args = mirror_args(&src, &dst, &work.path().join("unused"));
    args.extend(gh.args(WRITE_TOKEN));
    let out = run(gcrsync(work.path())
        .arg("compare")
        .args(&args)
        .args(["--commit-every", "1"]));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(commits_since(&gh, before), 1, "one commit, not one per tag");
    assert_eq!(recorded_tags(&images_json(&gh, &src)), 3);
}

#[tokio::test]
async fn secondary_limits_are_waited_out_and_every_batch_lands() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // GitHub allows 80 content-creating requests a minute; this one 4 every 2 seconds.
    let gh = FakeGitHub::start_with(Options {
        content_limit: Some((4, Duration::from_secs(2))),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    three_tags(&src).await;
    let before = gh.history("main").len();
    let out = gh.sync(work.path(), &src, &dst, &["--commit-every", "1"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(gh.limited() > 0, "the limit was reached");
    assert!(
        stderr(&out).contains("secondary rate limit"),
        "{}",
        stderr(&out)
    );
    let limited: Vec<_> = gh.log().into_iter().filter(|r| r.status == 403).collect();
    assert!(
        limited.iter().all(|r| r.method != "GET"),
        "only content-creating requests are limited: {limited:?}"
    );
    assert_eq!(
        commits_since(&gh, before),
        3,
        "one commit per tag, none lost"
    );
    assert_eq!(recorded_tags(&images_json(&gh, &src)), 3);
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    assert_eq!(changelog.matches("### ").count(), 3, "{changelog}");
}

#[tokio::test]
async fn server_errors_on_tree_commit_and_ref_calls_are_retried_and_nothing_is_lost() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let work = tempfile::tempdir().unwrap();
    three_tags(&src).await;
    // Small files go inline in the tree (blobs: the fifteen-thousand-tag test).
    gh.inject_on("GET /git/trees", Fault::ServerError(502));
    gh.inject_on("POST /git/trees", Fault::ServerError(500));
    gh.inject_on("POST /git/commits", Fault::ServerError(503));
    // The ref moves, but the answer is lost in a 502: the retry finds it already there.
    gh.inject_on("PATCH /git/refs", Fault::ServerErrorAfterApplying(502));
    gh.inject_on("POST /git/trees", Fault::ServerError(504));
    let before = gh.history("main").len();
    let out = gh.sync(work.path(), &src, &dst, &["--commit-every", "2"]);
    assert_eq!(out.status.code(), Some(0));
    let statuses: Vec<(String, u16)> = gh
        .log()
        .into_iter()
        .filter(|r| r.status >= 500)
        .map(|r| (r.method, r.status))
        .collect();
    assert_eq!(statuses.len(), 5, "every fault was served: {statuses:?}");
    assert_eq!(commits_since(&gh, before), 2, "two batches, each once");
    assert_eq!(recorded_tags(&images_json(&gh, &src)), 3);
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    assert_eq!(changelog.matches("### ").count(), 2, "{changelog}");
    assert_eq!(changelog.matches("\n- ").count(), 3, "{changelog}");
}

/// The ref moves, its answer is lost, and another writer commits on top before the retry:
/// the retry is refused as not a fast forward, yet the batch is in. Re-applying it would
/// repeat its CHANGELOG block.
#[tokio::test]
async fn a_lost_ref_answer_with_a_commit_on_top_is_not_applied_twice() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let work = tempfile::tempdir().unwrap();
    three_tags(&src).await;
    gh.inject_on("PATCH /git/refs", Fault::ServerErrorAfterApplying(502));
    gh.inject_on("PATCH /git/refs", Fault::ForeignCommitFirst);
    let before = gh.history("main").len();
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(commits_since(&gh, before), 2, "ours and the foreign one");
    assert_eq!(recorded_tags(&images_json(&gh, &src)), 3);
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    assert_eq!(changelog.matches("mirror/app:1 ").count(), 1, "{changelog}");
    assert!(changelog.contains("foreign block"), "{changelog}");
    assert!(
        gh.log().iter().any(|r| r.path.contains("/compare/")),
        "the refused retry was checked against the branch"
    );
}

#[tokio::test]
async fn a_rate_limit_wait_past_the_deadline_fails_clearly_saying_what_was_committed() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    // Three content-creating requests make one commit here (a tree with the files inline,
    // the commit, the ref update); the fourth is told to wait ten minutes.
    let gh = FakeGitHub::start_with(Options {
        content_limit: Some((3, Duration::from_secs(600))),
        ..Options::default()
    });
    let work = tempfile::tempdir().unwrap();
    three_tags(&src).await;
    let before = gh.history("main").len();
    let started = Instant::now();
    let out = gh.sync(
        work.path(),
        &src,
        &dst,
        &["--commit-every", "1", "--deadline", "2m"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "no ten-minute wait"
    );
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("--deadline"), "{err}");
    assert!(err.contains("1 commit(s) landed before it"), "{err}");
    assert!(err.contains("not recorded"), "{err}");
    assert_eq!(commits_since(&gh, before), 1);
    assert_eq!(recorded_tags(&images_json(&gh, &src)), 1);
}
