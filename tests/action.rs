//! The GitHub Action run as the runner would run it (tests/common/runner.rs): installed from
//! a fake github.com release host as `uses: gcrsync/gcrsync@v1` resolves it, then run
//! against local registries, with debug logging on or a config file as its `config` input;
//! and the Travis line from examples/.travis.yml in a clean shell, through
//! `releases/latest/download` and pinned. The install's own cases are in tests/install.rs.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::images::random_bytes;
use common::releases::{FakeReleases, REPO};
use common::runner::runner;
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[tokio::test]
async fn the_action_installs_the_verified_release_and_reports_to_the_runner() {
    let keys = tempfile::tempdir().unwrap();
    let htpasswd = keys.path().join("htpasswd");
    let password = "act1on-Secret-pw";
    assert!(
        Command::new("htpasswd")
            .args(["-Bbc", htpasswd.to_str().unwrap(), "bot", password])
            .status()
            .unwrap()
            .success()
    );
    // The source accepts foreign-layer URLs, the target refuses them: one tag fails.
    let src = TestRegistry::start_with(images::ALLOW_FOREIGN_URLS);
    let dst = TestRegistry::start_with(&format!(
        "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        htpasswd.display()
    ));
    let p = Pusher::new(&src.addr);
    p.image(
        "team/good",
        "1",
        Format::Oci,
        "amd64",
        &[random_bytes(1000)],
    )
    .await;
    p.image(
        "team/good",
        "2",
        Format::Oci,
        "amd64",
        &[random_bytes(1000)],
    )
    .await;
    p.refused_image("team/bad", "1").await;

    let work = tempfile::tempdir().unwrap();
    let releases = FakeReleases::github_like();
    let runner = runner_on(&releases, work.path());
    let (source, target, insecure) = (
        format!("{}/team", src.addr),
        format!("{}/mirror", dst.addr),
        format!("{},{}", src.addr, dst.addr),
    );
    let inputs = [
        ("source", source.as_str()),
        ("target", target.as_str()),
        ("insecure-registry", insecure.as_str()),
        ("target-username", "bot"),
        ("target-password", password),
        ("retries", "0"),
    ];
    // "Re-run jobs with debug logging" sets RUNNER_DEBUG=1 for every step.
    let steps = runner.run_action(&inputs, &[("RUNNER_DEBUG", "1")]);
    assert_eq!(steps.len(), 2);
    let (install, installed) = &steps[0];
    assert!(install.status.success());
    assert!(
        installed["bin"].starts_with(work.path().join("tmp").to_str().unwrap()),
        "{installed:?}"
    );
    assert_eq!(
        installed["version"], "v1.2.1",
        "@v1 is the newest v1 release"
    );
    let (run, outputs) = &steps[1];
    assert_eq!(run.status.code(), Some(1), "a failed tag fails the step");
    assert!(
        String::from_utf8_lossy(&run.stderr)
            .lines()
            .any(|l| l.starts_with("DEBUG gcrsync ")),
        "RUNNER_DEBUG=1 turns on debug logs"
    );
    for (key, value) in [
        ("copied", "2"),
        ("adopted", "0"),
        ("skipped", "0"),
        ("failed", "1"),
        ("pending", "0"),
        ("commit-sha", ""),
    ] {
        assert_eq!(
            outputs.get(key).map(String::as_str),
            Some(value),
            "output {key}: {outputs:?}"
        );
    }
    let report = read_json(Path::new(&outputs["report"]));
    assert_eq!(report["totals"]["failed"], 1);

    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.starts_with(&format!("::add-mask::{password}\n")),
        "the secret is masked before anything is printed: {stdout}"
    );
    assert!(
        stdout.contains(&format!("::group::gcrsync: listing {source}"))
            && stdout.contains("::endgroup::")
    );
    let error = stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .expect("an annotation for the failed tag");
    assert!(
        error.contains("team/bad%3A1 failed") && error.contains("HTTP 500"),
        "{error}"
    );
    let everything = format!(
        "{stdout}{}{}",
        String::from_utf8_lossy(&run.stderr),
        std::fs::read_to_string(&outputs["report"]).unwrap()
    );
    assert_eq!(
        everything.matches(password).count(),
        1,
        "only the add-mask line carries the secret, debug logs included"
    );

    let summary = std::fs::read_to_string(work.path().join("summary.md")).unwrap();
    assert!(
        summary.contains(&format!(
            "| `{source}` | `{target}` | 2 | 0 | 0 | 0 | 0 | 1 | 0 |"
        )),
        "{summary}"
    );
    assert!(
        summary.contains("**Failed tags**") && summary.contains(&format!("| `{source}/bad:1` |")),
        "{summary}"
    );
}

/// The runner of `uses: gcrsync/gcrsync@v1`, on a github.com that is `releases`.
fn runner_on(releases: &FakeReleases, work: &Path) -> common::runner::Runner {
    let mut runner = runner(work);
    runner
        .context
        .insert("github.server_url".into(), releases.server_url.clone());
    runner
        .context
        .insert("github.api_url".into(), releases.api_url.clone());
    runner
}

/// The any-CI line of examples/.travis.yml (also in the README).
fn travis_line() -> String {
    let travis: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("examples/.travis.yml")).unwrap(),
    )
    .unwrap();
    travis["script"][0].as_str().unwrap().to_string()
}

#[test]
fn the_readme_shows_the_travis_line_and_how_to_pin() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(
        readme.contains(&travis_line()),
        "README's any-CI line differs"
    );
    assert!(readme.contains(&format!(
        "GCRSYNC_RELEASE_URL=https://github.com/{REPO}/releases/download/v"
    )));
}

#[tokio::test]
async fn the_travis_line_downloads_the_latest_or_a_pinned_release_verifies_and_runs() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let releases = FakeReleases::github_like();
    let line = travis_line();
    // What users get by default, with only the host swapped for the fake's.
    let default = line
        .split("${GCRSYNC_RELEASE_URL:-")
        .nth(1)
        .and_then(|r| r.split('}').next())
        .expect("the line reads GCRSYNC_RELEASE_URL with a default");
    assert_eq!(
        default,
        format!("https://github.com/{REPO}/releases/latest/download")
    );
    let latest = default.replace("https://github.com", &releases.server_url);
    let pinned = format!("{}/{REPO}/releases/download/v1.2.1", releases.server_url);
    let tools = common::runner::tools_without_rust(work.path());
    for (url, tag) in [(latest, "v2.0.0"), (pinned, "v1.2.1")] {
        let before = releases.downloads().len();
        let started = std::time::Instant::now();
        let out = Command::new("env")
            .arg("-i")
            .arg(format!("PATH={}", tools.display()))
            .arg(format!("HOME={}", work.path().display()))
            .arg(format!("TMPDIR={}", work.path().display()))
            .arg(format!("GCRSYNC_RELEASE_URL={url}"))
            .arg(format!("GCRSYNC_SOURCE={}/team", src.addr))
            .arg(format!("GCRSYNC_TARGET={}/mirror", dst.addr))
            .arg(format!(
                "GCRSYNC_INSECURE_REGISTRY={},{}",
                src.addr, dst.addr
            ))
            .args(["bash", "-c", &line])
            .current_dir(work.path())
            .output()
            .unwrap();
        eprintln!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success());
        assert!(started.elapsed().as_secs() < 20, "{:?}", started.elapsed());
        let asset = "gcrsync-x86_64-unknown-linux-musl.tar.gz";
        let fetched: Vec<String> = releases.downloads()[before..]
            .iter()
            .filter(|p| p.contains("/releases/download/"))
            .cloned()
            .collect();
        assert_eq!(
            fetched,
            [
                format!("/{REPO}/releases/download/{tag}/{asset}"),
                format!("/{REPO}/releases/download/{tag}/SHA256SUMS"),
            ],
            "the newest full release, not the backport published after it nor the prerelease"
        );
    }
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    assert!(work.path().join("gcrsync-metadata").exists());
}

/// Cancelling a workflow: the runner sends SIGINT to the step's process only (then
/// SIGTERM 7.5 s later, then kills the tree). That process must be gcrsync itself, so it
/// stops, commits what finished and writes the outputs inside the window.
#[tokio::test]
async fn a_cancelled_step_stops_gcrsync_itself_and_still_writes_the_outputs() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for i in 0..2 {
        p.image(
            &format!("team/small{i}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(1000)],
        )
        .await;
    }
    let (proxy, large_digest) = faults::slow_large_image(&src).await;

    let work = tempfile::tempdir().unwrap();
    let releases = FakeReleases::github_like();
    let runner = runner_on(&releases, work.path());
    let metadata = work.path().join("meta");
    let (source, target, insecure) = (
        format!("{}/team", proxy.addr),
        format!("{}/mirror", dst.addr),
        format!("{},{}", proxy.addr, dst.addr),
    );
    let metadata_dir = metadata.display().to_string();
    let inputs = [
        ("source", source.as_str()),
        ("target", target.as_str()),
        ("insecure-registry", insecure.as_str()),
        ("metadata-dir", metadata_dir.as_str()),
        ("github-token", ""),
        ("commit-every", "1"),
        ("process-limit", "4"),
    ];
    let records = metadata.join(format!("{}/team/images.json", proxy.addr));
    let mut took = Duration::ZERO;
    let steps = runner.run_action_watching(&inputs, &[], |id, step| {
        if id != "run" {
            return;
        }
        wait_until(
            "the small images never got recorded",
            Duration::from_secs(60),
            || {
                records.exists()
                    && read_json(&records)["images"]
                        .as_object()
                        .is_some_and(|i| i.len() == 2)
                    && proxy.saw(&large_digest)
            },
        );
        let signalled = Instant::now();
        assert!(
            Command::new("kill")
                .args(["-INT", &step.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
        // The runner's window before SIGTERM is 7.5 s; kill as it would after 10 s.
        while step.try_wait().unwrap().is_none() {
            if signalled.elapsed() > Duration::from_secs(10) {
                step.kill().unwrap();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        took = signalled.elapsed();
    });
    let (run, outputs) = &steps[1];
    assert!(
        took < Duration::from_secs(5),
        "the step took {took:?} after SIGINT"
    );
    assert_eq!(run.status.code(), Some(1), "a cancelled run exits 1");
    assert_eq!(outputs.get("copied").map(String::as_str), Some("2"));
    assert_eq!(outputs.get("pending").map(String::as_str), Some("1"));
    let report = read_json(Path::new(&outputs["report"]));
    assert_eq!(report["stopped"], "signal");
}

#[tokio::test]
async fn the_action_runs_a_config_file_given_as_its_config_input() {
    let keys = tempfile::tempdir().unwrap();
    let password = "act1on-Config-pw";
    let (src, dst) = (
        TestRegistry::start(),
        protected(keys.path(), "bot", password),
    );
    push(&src, &["team/app:1", "team/app:2", "other/app:1"]).await;
    let work = tempfile::tempdir().unwrap();
    let (s, d) = (&src.addr, &dst.addr);
    std::fs::write(
        work.path().join("mirror.yml"),
        format!(
            "target: {d}/mirror\ninsecure-registry: [{s}, {d}]\ntarget-username: bot\ntarget-password-env: DST_PASS\nprocess-count: 100\nreport: from-file.json\nsources:\n  - source: {s}/team\n    include-tags: '^1$'\n  - source: {s}/other\n    name-template: 'other-{{{{ image }}}}'\n"
        ),
    )
    .unwrap();
    let releases = common::releases::FakeReleases::github_like();
    let runner = runner_on(&releases, work.path());
    // The input overrides the file's top level: one copy for the run, shared by the two.
    let inputs = [("config", "mirror.yml"), ("process-count", "1")];
    let steps = runner.run_action(&inputs, &[("DST_PASS", password)]);
    let (run, outputs) = &steps[1];
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(outputs["copied"], "1", "{outputs:?}");
    assert_eq!(outputs["pending"], "1", "{outputs:?}");
    // The file's `report:` key is kept under the action, and the output names it.
    assert!(outputs["report"].ends_with("from-file.json"), "{outputs:?}");
    assert_eq!(
        read_json(&work.path().join("from-file.json"))["totals"]["copied"],
        1
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.starts_with(&format!("::add-mask::{password}\n")),
        "the secret the file names is masked before anything is printed: {stdout}"
    );
    let everything = format!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(everything.matches(password).count(), 1);
    let at_dst = Pusher::with_login(d, "bot", password);
    assert_eq!(at_dst.tags("mirror/app").await, ["1"]);
    assert!(at_dst.tags("mirror/other-app").await.is_empty());
}
