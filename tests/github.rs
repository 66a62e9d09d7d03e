//! The GitHub metadata store against a fake GitHub API with real git object ids:
//! one commit per batch, no commit on a no-op, concurrent shards and races merged,
//! permissions and rate limits handled, the token nowhere but the Authorization header,
//! GitHub Enterprise's `/api/v3` (and a hint when its web UI is given), directories read
//! where files are expected. Scale, secondary limits and 5xx: tests/github_scale.rs.

mod common;

use std::process::{Command, Output, Stdio};

use common::github::{FakeGitHub, Fault, Options, READ_TOKEN, WRITE_TOKEN};
use common::images::random_bytes;
use common::*;

fn assert_token_only_in_authorization(gh: &FakeGitHub, token: &str, outputs: &[&Output]) {
    for request in gh.log() {
        assert!(
            !request.path.contains(token) && !request.body.contains(token),
            "token leaked in {request:?}"
        );
        for (name, value) in &request.headers {
            assert!(
                name == "authorization" || !value.contains(token),
                "token leaked in header {name}"
            );
        }
    }
    for out in outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(token), "token leaked in output: {text}");
    }
}

#[tokio::test]
async fn a_sync_commits_the_metadata_once_and_a_noop_run_commits_nothing() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let p = Pusher::new(&src.addr);
    let (digest, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    p.image("team/app", "2", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let before = gh.history("main").len();
    let first = gh.sync(work.path(), &src, &dst, &["--commit-every", "1"]);
    assert_eq!(first.status.code(), Some(0));
    let history = gh.history("main");
    assert_eq!(history.len(), before + 2, "one commit per batch of one tag");
    let record: serde_json::Value = serde_json::from_str(
        &gh.file("main", &format!("{}/team/images.json", src.addr))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["images"]["app"]["tags"]["1"]["digest"],
        digest.as_str()
    );
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    assert_eq!(
        changelog.matches("Update(num: 1):").count(),
        2,
        "{changelog}"
    );
    let readme = gh
        .file("main", &format!("{}/team/README.md", src.addr))
        .unwrap();
    assert!(readme.contains("| [app](app.md) | 2 | `"), "{readme}");
    let page = gh
        .file("main", &format!("{}/team/app.md", src.addr))
        .unwrap();
    assert!(
        page.contains("| `1` |") && page.contains("| `2` |"),
        "{page}"
    );
    assert!(
        gh.file("main", "README.md").is_some(),
        "existing files are kept"
    );
    assert!(
        !work.path().join("unused-local-dir").exists(),
        "the local store is not used"
    );

    let requests = gh.log().len();
    let second = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(gh.history("main"), history, "a no-op run makes no commit");
    let writes: Vec<_> = gh
        .log()
        .into_iter()
        .skip(requests)
        .filter(|r| r.method != "GET")
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_token_only_in_authorization(&gh, WRITE_TOKEN, &[&first, &second]);
    for file in gh.files("main") {
        assert!(
            !gh.file("main", &file).unwrap().contains(WRITE_TOKEN),
            "token committed in {file}"
        );
    }
}

#[tokio::test]
async fn every_stored_object_hashes_as_git_would() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    Pusher::new(&src.addr)
        .image(
            "team/nested/app",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(1000)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    assert_eq!(gh.sync(work.path(), &src, &dst, &[]).status.code(), Some(0));
    let objects = gh.objects();
    assert!(objects.iter().any(|(_, kind, _)| *kind == "commit") && objects.len() > 8);
    for (sha, kind, raw) in objects {
        let mut git = Command::new("git")
            .args(["hash-object", "--literally", "-t", kind, "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("git is needed to check the fake's object ids");
        std::io::Write::write_all(&mut git.stdin.take().unwrap(), &raw).unwrap();
        let out = git.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            sha,
            "{kind} object id differs from git's"
        );
    }
}

#[tokio::test]
async fn a_commit_landing_during_ours_is_merged_not_overwritten() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let p = Pusher::new(&src.addr);
    p.image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    assert_eq!(gh.sync(work.path(), &src, &dst, &[]).status.code(), Some(0));
    p.image("team/app", "2", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    gh.race_next_ref_updates(2);
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    let files = gh.files("main");
    assert!(
        files.contains(&"foreign-1.txt".to_string())
            && files.contains(&"foreign-2.txt".to_string()),
        "{files:?}"
    );
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    let blocks: Vec<&str> = changelog
        .lines()
        .filter(|l| l.starts_with("### "))
        .collect();
    assert_eq!(
        blocks.len(),
        4,
        "ours twice (two runs) and both foreign blocks: {changelog}"
    );
    assert!(
        blocks[0].contains("Update(num: 1)"),
        "our new block is on top: {blocks:?}"
    );
    let record = gh
        .file("main", &format!("{}/team/images.json", src.addr))
        .unwrap();
    assert!(
        record.contains("\"1\"") && record.contains("\"2\""),
        "{record}"
    );
}

#[tokio::test]
async fn four_concurrent_shards_all_land() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let p = Pusher::new(&src.addr);
    for i in 0..16 {
        p.image(
            &format!("team/img{i:02}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(1000)],
        )
        .await;
    }
    let work = tempfile::tempdir().unwrap();
    let mut args = mirror_args(&src, &dst, &work.path().join("unused"));
    args.extend(gh.args(WRITE_TOKEN));
    let children: Vec<_> = (1..=4)
        .map(|k| {
            gcrsync(work.path())
                .args(&args)
                .args(["--shard", &format!("{k}/4")])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let record: serde_json::Value = serde_json::from_str(
        &gh.file("main", &format!("{}/team/images.json", src.addr))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record["images"].as_object().unwrap().len(), 16, "{record}");
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    let entries = changelog.lines().filter(|l| l.starts_with("- ")).count();
    assert_eq!(entries, 16, "{changelog}");
    assert_eq!(
        changelog.lines().filter(|l| l.starts_with("### ")).count(),
        4,
        "{changelog}"
    );
}

#[tokio::test]
async fn an_empty_repository_gets_its_first_commit() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(true),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    let files = gh.files("main");
    for file in [
        "CHANGELOG.md".to_string(),
        format!("{}/team/README.md", src.addr),
        format!("{}/team/images.json", src.addr),
    ] {
        assert!(files.contains(&file), "{file} missing from {files:?}");
    }
    assert_eq!(
        gh.file("main", "CHANGELOG.md")
            .unwrap()
            .matches("### ")
            .count(),
        1
    );
}

#[tokio::test]
async fn server_errors_and_secondary_rate_limits_are_waited_out() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    gh.inject(Fault::ServerError(502));
    gh.inject(Fault::SecondaryLimit(1));
    gh.inject(Fault::ServerError(500));
    gh.inject(Fault::PrimaryLimit(1));
    let work = tempfile::tempdir().unwrap();
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("HTTP 403, rate limited"),
        "{}",
        stderr(&out)
    );
    assert!(gh.file("main", "CHANGELOG.md").is_some());
}

#[tokio::test]
async fn permission_and_configuration_problems_are_fatal_and_say_what_to_do() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let base = mirror_args(&src, &dst, &work.path().join("unused"));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (gh.args(READ_TOKEN), "contents: write"),
        (
            gh.args("ghp_unknown_token_value_123456789"),
            "rejected the token (401)",
        ),
        (
            [
                "--github-repo",
                "owner/missing",
                "--github-api-url",
                &gh.api_url,
                "--github-token",
                WRITE_TOKEN,
            ]
            .map(String::from)
            .to_vec(),
            "owner/missing not found (404)",
        ),
        (
            [
                gh.args(WRITE_TOKEN),
                vec!["--github-branch".into(), "mirror".into()],
            ]
            .concat(),
            "--github-create-branch",
        ),
    ];
    for (args, message) in cases {
        let out = run(gcrsync(work.path()).args(&base).args(&args));
        assert_eq!(out.status.code(), Some(3), "{args:?}");
        assert!(
            stderr(&out).contains(message),
            "expected {message:?} in {}",
            stderr(&out)
        );
        assert_token_only_in_authorization(&gh, READ_TOKEN, &[&out]);
        assert_token_only_in_authorization(&gh, WRITE_TOKEN, &[&out]);
    }
    assert_eq!(
        Pusher::new(&dst.addr).tags("mirror/app").await,
        Vec::<String>::new(),
        "nothing copied before the store was usable"
    );
    // With --github-create-branch the branch is made from the default branch.
    let out = gh.sync(
        work.path(),
        &src,
        &dst,
        &["--github-branch", "mirror", "--github-create-branch"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(
        gh.file("mirror", "CHANGELOG.md").is_some() && gh.file("main", "CHANGELOG.md").is_none()
    );
    // A token without --github-repo uses GITHUB_REPOSITORY, as in GitHub Actions.
    let out = run(gcrsync(work.path())
        .args(&base)
        .env("GITHUB_REPOSITORY", "owner/repo")
        .env("GITHUB_TOKEN", READ_TOKEN)
        .env("GITHUB_API_URL", &gh.api_url));
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("contents: write"));
}

#[tokio::test]
async fn the_seed_tools_lists_are_imported_and_checked_on_the_target() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    let p = Pusher::new(&src.addr);
    let (mirrored, _) = p
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let (stale, _) = p
        .image("team/app", "2", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    // The old tool mirrored app:1 for real, and listed app:2 although its push failed.
    let work = tempfile::tempdir().unwrap();
    let only_1 = run(gcrsync(work.path())
        .args(mirror_args(&src, &dst, &work.path().join("local")))
        .args(["--include-tags", "^1$"]));
    assert_eq!(only_1.status.code(), Some(0));
    gh.seed(
        "main",
        &format!("{}/team/ImageList", src.addr),
        "[\n    \"app:1\",\n    \"app:2\"\n]",
    );
    let before = dst.accesses().len();
    let report = work.path().join("report.json");
    let out = gh.sync(
        work.path(),
        &src,
        &dst,
        &["--report", report.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0));
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (totals["adopted"].as_u64(), totals["copied"].as_u64()),
        (Some(1), Some(1)),
        "{totals}"
    );
    let uploads = since(dst.accesses(), before)
        .into_iter()
        .filter(|a| a.method == "PUT" && a.path.contains("/manifests/2"))
        .count();
    assert_eq!(
        uploads, 1,
        "the listed-but-missing tag is copied, not trusted"
    );
    let record: serde_json::Value = serde_json::from_str(
        &gh.file("main", &format!("{}/team/images.json", src.addr))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        record["images"]["app"]["tags"]["1"]["digest"],
        mirrored.as_str()
    );
    assert_eq!(
        record["images"]["app"]["tags"]["2"]["digest"],
        stale.as_str()
    );
}

#[tokio::test]
async fn github_enterprise_paths_work_and_its_web_ui_gets_a_hint() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    // GitHub Enterprise Server: the API under /api/v3, the web UI (HTML 404) at the root.
    let ghe = FakeGitHub::start(false);
    assert!(ghe.api_url.ends_with("/api/v3"));
    let base = mirror_args(&src, &dst, &work.path().join("unused"));
    let out = run(gcrsync(work.path()).args(&base).args([
        "--github-repo",
        "owner/repo",
        "--github-api-url",
        &ghe.root_url,
        "--github-token",
        WRITE_TOKEN,
    ]));
    assert_eq!(out.status.code(), Some(3));
    let expected = format!("--github-api-url {}/api/v3", ghe.root_url);
    assert!(
        stderr(&out).contains("web page") && stderr(&out).contains(&expected),
        "expected a hint to add /api/v3 in {}",
        stderr(&out)
    );
    assert!(
        ghe.log().iter().all(|r| r.method == "GET"),
        "nothing written"
    );
    let before = ghe.log().len();
    let out = ghe.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        ghe.log()
            .iter()
            .skip(before)
            .all(|r| r.path.starts_with("/api/v3/repos/owner/repo")),
        "every API call under /api/v3"
    );
    assert!(ghe.file("main", "CHANGELOG.md").is_some());
    // api.github.com's layout, the API at the root, works the same.
    let dotcom = FakeGitHub::start_with(Options {
        prefix: "",
        ..Options::default()
    });
    let out = dotcom.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        dotcom
            .file("main", &format!("{}/team/images.json", src.addr))
            .is_some_and(|r| r.contains("\"1\"")),
        "recorded (adopted: the first run copied it)"
    );
}

#[tokio::test]
async fn directories_where_files_are_read_are_handled() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    // The seeds kept `<ns>/ImageList`, so `<ns>` (here `team`) may be a directory; read as
    // a legacy list it answers 200 with a listing, which is no list: it is skipped.
    let gh = FakeGitHub::start(false);
    gh.seed("main", "team/notes.md", "the seeds' directory\n");
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(0));
    let record = gh
        .file("main", &format!("{}/team/images.json", src.addr))
        .unwrap();
    assert!(record.contains("\"1\""), "{record}");
    assert!(
        gh.log()
            .iter()
            .any(|r| r.path.contains("/contents/team?") && r.status == 200),
        "the directory was read and answered with its listing"
    );
    // images.json itself a directory: a clear error naming the path, nothing committed.
    let gh = FakeGitHub::start(false);
    let path = format!("{}/team/images.json", src.addr);
    gh.seed("main", &format!("{path}/stray.txt"), "not a record\n");
    let history = gh.history("main");
    let out = gh.sync(work.path(), &src, &dst, &[]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains(&format!("{path} is a directory")),
        "{}",
        stderr(&out)
    );
    assert_eq!(gh.history("main"), history);
}

#[tokio::test]
async fn a_branch_creation_whose_answer_was_lost_is_not_an_error() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        FakeGitHub::start(false),
    );
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    // The branch is created, the answer is a 502; the retry finds it exists (422).
    gh.inject_on("POST /git/refs", Fault::ServerErrorAfterApplying(502));
    let work = tempfile::tempdir().unwrap();
    let out = gh.sync(
        work.path(),
        &src,
        &dst,
        &["--github-branch", "mirror", "--github-create-branch"],
    );
    assert_eq!(out.status.code(), Some(0));
    let statuses: Vec<u16> = gh
        .log()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/git/refs"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [502, 422]);
    assert!(gh.file("mirror", "CHANGELOG.md").is_some());
}
