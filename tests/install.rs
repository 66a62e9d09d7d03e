//! The action's install step (scripts/action/install.sh) as the runner runs it, against a
//! fake github.com laid out as after release.yml ran for a few versions
//! (tests/common/releases.rs), on a PATH without any Rust toolchain: refs resolve to the
//! right release in seconds; a branch builds from source with a warning; a release that
//! cannot be downloaded or verified fails the step and builds nothing.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::release_assets::{release_targets, run_publish_step};
use common::releases::{FakeReleases, Hit, REPO, TOKEN};
use common::runner::{Runner, runner, tools_without_rust};
use common::stdout;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const LINUX_X64: &str = "gcrsync-x86_64-unknown-linux-musl.tar.gz";

struct Install {
    work: tempfile::TempDir,
    runner: Runner,
    /// The runner's tools, without cargo or rustc.
    tools: PathBuf,
    /// Tools plus a `cargo` that records that it ran and "builds" the test binary.
    with_cargo: PathBuf,
}

impl Install {
    fn new(releases: &FakeReleases, token: &str) -> Self {
        let work = tempfile::tempdir().unwrap();
        let mut runner = runner(work.path());
        runner.only = vec!["install".into()];
        for (key, value) in [
            ("github.server_url", releases.server_url.as_str()),
            ("github.api_url", releases.api_url.as_str()),
            ("github.token", token),
        ] {
            runner.context.insert(key.into(), value.into());
        }
        let tools = tools_without_rust(work.path());
        let with_cargo = work.path().join("with-cargo");
        std::fs::create_dir_all(&with_cargo).unwrap();
        for entry in std::fs::read_dir(&tools).unwrap() {
            let entry = entry.unwrap();
            std::os::unix::fs::symlink(entry.path(), with_cargo.join(entry.file_name())).unwrap();
        }
        let cargo = with_cargo.join("cargo");
        std::fs::write(
            &cargo,
            format!(
                "#!/usr/bin/env bash\necho \"$*\" >>\"{}\"\nmkdir -p \"$CARGO_TARGET_DIR/release\"\ncp \"{}\" \"$CARGO_TARGET_DIR/release/gcrsync\"\n",
                work.path().join("cargo.log").display(),
                env!("CARGO_BIN_EXE_gcrsync")
            ),
        )
        .unwrap();
        std::process::Command::new("chmod")
            .args(["+x", cargo.to_str().unwrap()])
            .status()
            .unwrap();
        Install {
            work,
            runner,
            tools,
            with_cargo,
        }
    }

    /// Runs the install step for `uses: …@action_ref` with `version`, on `platform`
    /// (RUNNER_OS/RUNNER_ARCH) and `path`.
    fn run(
        &mut self,
        action_ref: &str,
        version: &str,
        platform: (&str, &str),
        path: &Path,
    ) -> (Output, BTreeMap<String, String>, Duration) {
        self.runner
            .context
            .insert("github.action_ref".into(), action_ref.into());
        let cache = self.work.path().join("cargo-target");
        let started = std::time::Instant::now();
        let mut steps = self.runner.run_action(
            &[("version", version)],
            &[
                ("PATH", path.to_str().unwrap()),
                ("RUNNER_OS", platform.0),
                ("RUNNER_ARCH", platform.1),
                ("CARGO_TARGET_DIR", cache.to_str().unwrap()),
            ],
        );
        let took = started.elapsed();
        assert_eq!(steps.len(), 1);
        let (out, outputs) = steps.remove(0);
        (out, outputs, took)
    }

    fn cargo_ran(&self) -> bool {
        self.work.path().join("cargo.log").exists()
    }
}

/// Release downloads in `hits` (paths on the web host).
fn downloads(hits: &[Hit]) -> Vec<String> {
    hits.iter()
        .filter(|h| h.host == "web")
        .map(|h| h.path.clone())
        .collect()
}

#[test]
fn refs_resolve_to_the_newest_full_release_of_their_series_without_rust() {
    let releases = FakeReleases::github_like();
    for token in ["", TOKEN] {
        // Both JSON layouts: minified, and indented (what GitHub gives curl).
        releases.set_compact(token.is_empty());
        let mut install = Install::new(&releases, token);
        for (action_ref, version, expected) in [
            ("v1", "", "v1.2.1"),
            ("v1.2", "", "v1.2.1"),
            ("v1.0", "", "v1.0.1"),
            ("v2", "", "v2.0.0"),
            ("v2.0", "", "v2.0.0"),
            ("v1.0.0", "", "v1.0.0"),
            ("v1", "v1.0.0", "v1.0.0"),
            ("main", "1.2.0", "v1.2.0"),
            ("v1", "latest", "v2.0.0"),
            // A prerelease is installed when asked for by name.
            ("v2.1.0-rc.1", "", "v2.1.0-rc.1"),
        ] {
            let spec = if version.is_empty() {
                action_ref
            } else {
                version
            };
            let exact = spec.matches('.').count() >= 2;
            if exact && !token.is_empty() {
                continue; // no API call: the token changes nothing
            }
            let before = releases.hits().len();
            let tools = install.tools.clone();
            let (out, outputs, took) = install.run(action_ref, version, ("Linux", "X64"), &tools);
            let case = format!(
                "@{action_ref} version '{version}' (token: {})",
                !token.is_empty()
            );
            assert!(out.status.success(), "{case}");
            assert_eq!(outputs["version"], expected, "{case}");
            assert!(took < Duration::from_secs(15), "{case} took {took:?}");
            let sum = &releases.release(expected).sums[LINUX_X64];
            assert!(
                stdout(&out).contains(&format!("gcrsync {expected} (x86_64-unknown-linux-musl)")),
                "{case}"
            );
            assert!(
                stdout(&out).contains(sum.as_str()),
                "{case}: the archive of {expected}"
            );
            let bin = Path::new(&outputs["bin"]);
            assert!(bin.starts_with(install.work.path().join("tmp")), "{case}");
            let hits = releases.hits()[before..].to_vec();
            assert_eq!(
                downloads(&hits),
                [
                    format!("/{REPO}/releases/download/{expected}/{LINUX_X64}"),
                    format!("/{REPO}/releases/download/{expected}/SHA256SUMS"),
                ],
                "{case}"
            );
            let api: Vec<&Hit> = hits.iter().filter(|h| h.host == "api").collect();
            if exact {
                assert!(api.is_empty(), "{case}: an exact version needs no API call");
            } else {
                // Pages of 2: every page is read, through GitHub's /repositories/ID links
                // (7 releases listed, 8 with the draft a token sees).
                assert_eq!(api.len(), 4, "{case}: {api:?}");
                assert!(api[0].path.starts_with(&format!("/repos/{REPO}/releases?")));
                assert!(
                    api[3].path.starts_with("/repositories/") && api[3].path.ends_with("page=4"),
                    "{api:?}"
                );
            }
            for hit in &hits {
                let expected_auth =
                    (hit.host == "api" && !token.is_empty()).then(|| format!("Bearer {TOKEN}"));
                assert_eq!(
                    hit.authorization, expected_auth,
                    "{case}: the token goes to the API only: {hit:?}"
                );
            }
            if !token.is_empty() {
                let everything =
                    format!("{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
                assert!(
                    !everything.contains(TOKEN),
                    "{case}: the token is never printed"
                );
            }
            assert!(!install.cargo_ran());
        }
    }
}

#[test]
fn every_runner_platform_gets_its_own_target_of_the_release_matrix() {
    let script =
        std::fs::read_to_string(Path::new(ROOT).join("scripts/action/install.sh")).unwrap();
    let table = script
        .lines()
        .find_map(|l| l.strip_prefix("targets=\""))
        .and_then(|l| l.strip_suffix('"'))
        .expect("install.sh has a targets=\"OS/ARCH=TRIPLE ...\" table");
    let platforms: Vec<(&str, &str)> = table
        .split_whitespace()
        .map(|p| p.split_once('=').unwrap())
        .collect();
    let mut installed: Vec<String> = platforms.iter().map(|(_, t)| t.to_string()).collect();
    let mut matrix = release_targets();
    installed.sort();
    matrix.sort();
    assert_eq!(
        installed, matrix,
        "install.sh and release.yml's matrix disagree"
    );

    let releases = FakeReleases::github_like();
    let mut install = Install::new(&releases, "");
    for (platform, target) in platforms {
        let (os, arch) = platform.split_once('/').unwrap();
        let tools = install.tools.clone();
        let (out, outputs, _) = install.run("v2", "", (os, arch), &tools);
        assert!(out.status.success(), "{platform}");
        assert_eq!(outputs["version"], "v2.0.0");
        let asset = format!("gcrsync-{target}.tar.gz");
        let sum = &releases.release("v2.0.0").sums[&asset];
        assert!(
            stdout(&out).contains(sum.as_str()),
            "{platform} gets {asset}"
        );
    }
    // A platform without a release binary builds from source, and says so.
    let with_cargo = install.with_cargo.clone();
    let (out, outputs, _) = install.run("v2", "", ("Windows", "X64"), &with_cargo);
    assert!(out.status.success());
    assert_eq!(outputs["version"], "source");
    assert!(
        stdout(&out)
            .contains("::warning title=gcrsync install::releases have no binary for Windows/X64")
    );
}

#[test]
fn a_branch_a_commit_or_a_local_checkout_builds_from_source_with_a_warning() {
    let releases = FakeReleases::github_like();
    let mut install = Install::new(&releases, "");
    for (action_ref, repository, why) in [
        (
            "main",
            REPO,
            "gcrsync/gcrsync@main is a branch or a commit, not a release",
        ),
        ("3f2c9a1e", REPO, "is a branch or a commit"),
        ("", "", "the action runs from a local checkout (uses: ./)"),
    ] {
        install
            .runner
            .context
            .insert("github.action_repository".into(), repository.into());
        let _ = std::fs::remove_file(install.work.path().join("cargo.log"));
        let before = releases.hits().len();
        let with_cargo = install.with_cargo.clone();
        let (out, outputs, _) = install.run(action_ref, "", ("Linux", "X64"), &with_cargo);
        assert!(out.status.success(), "{action_ref}");
        let warning = stdout(&out)
            .lines()
            .find(|l| l.starts_with("::warning title=gcrsync install::"))
            .map(str::to_string)
            .expect("a warning");
        assert!(
            warning.contains(why) && warning.contains("takes minutes"),
            "{warning}"
        );
        let cargo = std::fs::read_to_string(install.work.path().join("cargo.log")).unwrap();
        assert!(
            cargo.starts_with("build --release --locked --manifest-path"),
            "{cargo}"
        );
        assert_eq!(outputs["version"], "source");
        assert!(Path::new(&outputs["bin"]).is_file());
        assert!(
            releases.hits()[before..].is_empty(),
            "a build asks GitHub nothing"
        );

        // Without cargo the step fails and says what to do.
        let tools = install.tools.clone();
        let (out, outputs, _) = install.run(action_ref, "", ("Linux", "X64"), &tools);
        assert!(!out.status.success());
        assert!(
            stdout(&out)
                .contains("::error title=gcrsync install::building from source needs cargo")
        );
        assert!(!outputs.contains_key("bin"));
    }
}

/// Runs `@action_ref` with cargo on PATH: the step must fail with `error` and build nothing.
/// Returns the error annotation.
fn fails_without_building(
    install: &mut Install,
    action_ref: &str,
    platform: (&str, &str),
    error: &str,
) -> String {
    let with_cargo = install.with_cargo.clone();
    let (out, outputs, took) = install.run(action_ref, "", platform, &with_cargo);
    assert!(!out.status.success(), "@{action_ref}");
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("::error title=gcrsync install::"))
        .map(str::to_string)
        .unwrap_or_default();
    assert!(line.contains(error), "@{action_ref}: {line}");
    assert!(!install.cargo_ran(), "@{action_ref}: never a build instead");
    assert!(!outputs.contains_key("bin"));
    assert!(took < Duration::from_secs(15));
    line
}

#[test]
fn a_release_that_cannot_be_downloaded_or_verified_fails_and_builds_nothing() {
    let releases = FakeReleases::github_like();
    releases.corrupt("v1.2.1", LINUX_X64);
    releases.remove_asset("v1.2.1", "gcrsync-aarch64-apple-darwin.tar.gz");
    let mut install = Install::new(&releases, "");
    fails_without_building(
        &mut install,
        "v1",
        ("Linux", "X64"),
        &format!("checksum mismatch for {LINUX_X64} of release v1.2.1"),
    );
    fails_without_building(
        &mut install,
        "v1.2",
        ("macOS", "ARM64"),
        "release v1.2.1 of gcrsync/gcrsync has no asset gcrsync-aarch64-apple-darwin.tar.gz",
    );
    fails_without_building(
        &mut install,
        "v1.9.9",
        ("Linux", "X64"),
        "there is no release v1.9.9",
    );
    fails_without_building(
        &mut install,
        "v3",
        ("Linux", "X64"),
        "has no published release in series 'v3'",
    );
    // The draft and the prerelease are not releases of v2.1 to install.
    fails_without_building(
        &mut install,
        "v2.1",
        ("Linux", "X64"),
        "has no published release in series 'v2.1'",
    );
    let tools = install.tools.clone();
    let (out, _, _) = install.run("main", "v1.0.5", ("Linux", "X64"), &tools);
    assert!(stdout(&out).contains("there is no release v1.0.5"));
    let (out, _, _) = install.run("v1", "nightly", ("Linux", "X64"), &tools);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("input version must be a release like v1.2.3"));
}

#[test]
fn a_storage_hiccup_is_retried() {
    let releases = FakeReleases::github_like();
    releases.fail_downloads(2);
    let mut install = Install::new(&releases, "");
    let tools = install.tools.clone();
    let (out, outputs, took) = install.run("v1.2.0", "", ("Linux", "X64"), &tools);
    assert!(out.status.success());
    assert_eq!(outputs["version"], "v1.2.0");
    let objects = releases
        .hits()
        .iter()
        .filter(|h| h.host == "objects")
        .count();
    assert_eq!(objects, 4, "two 503s, then the archive and SHA256SUMS");
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[test]
fn a_rate_limited_api_fails_clearly_and_exact_versions_need_no_api() {
    let releases = FakeReleases::github_like();
    releases.limit_anonymous();
    let mut install = Install::new(&releases, "");
    let error = fails_without_building(
        &mut install,
        "v1",
        ("Linux", "X64"),
        "cannot list the releases of gcrsync/gcrsync",
    );
    assert!(
        error.contains("HTTP 403: API rate limit exceeded") && error.contains("no token was given"),
        "{error}"
    );
    let tools = install.tools.clone();
    let (out, outputs, _) = install.run("v1.2.0", "", ("Linux", "X64"), &tools);
    assert!(out.status.success());
    assert_eq!(outputs["version"], "v1.2.0");
    // With the workflow's token the same lookup works.
    let mut install = Install::new(&releases, TOKEN);
    let tools = install.tools.clone();
    let (out, outputs, _) = install.run("v1", "", ("Linux", "X64"), &tools);
    assert!(out.status.success());
    assert_eq!(outputs["version"], "v1.2.1");
}

#[test]
fn the_install_step_gets_the_hosts_and_token_the_runner_gives_actions() {
    let action: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(ROOT).join("action.yml")).unwrap())
            .unwrap();
    let step = action["runs"]["steps"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "install")
        .unwrap();
    for (var, value) in [
        ("GCRSYNC_ACTION_REF", "${{ github.action_ref }}"),
        (
            "GCRSYNC_ACTION_REPOSITORY",
            "${{ github.action_repository }}",
        ),
        ("GCRSYNC_SERVER_URL", "${{ github.server_url }}"),
        ("GCRSYNC_API_URL", "${{ github.api_url }}"),
        ("GCRSYNC_ACTION_TOKEN", "${{ github.token }}"),
        ("GCRSYNC_ACTION_VERSION", "${{ inputs.version }}"),
    ] {
        assert_eq!(step["env"][var].as_str(), Some(value), "{var}");
    }
}

#[test]
fn release_yml_keeps_latest_on_the_highest_version_and_moves_tags_only_forward() {
    let existing = [
        "v1.0.0", "v1.2.0", "v2.0.0", "v1", "v1.0", "v1.2", "v2", "v2.0",
    ];
    assert_eq!(
        run_publish_step("v2.1.0", &existing),
        [
            "gh release create v2.1.0 --latest=true",
            "git tag -f v2 c0ffee",
            "git push -f origin refs/tags/v2",
            "git tag -f v2.1 c0ffee",
            "git push -f origin refs/tags/v2.1",
        ]
    );
    // A backport after v2.0.0: not latest; v1 and v1.2 move to it.
    assert_eq!(
        run_publish_step("v1.2.1", &existing),
        [
            "gh release create v1.2.1 --latest=false",
            "git tag -f v1 c0ffee",
            "git push -f origin refs/tags/v1",
            "git tag -f v1.2 c0ffee",
            "git push -f origin refs/tags/v1.2",
        ]
    );
    // A fix of an older line moves only its own minor tag.
    assert_eq!(
        run_publish_step("v1.0.1", &existing),
        [
            "gh release create v1.0.1 --latest=false",
            "git tag -f v1.0 c0ffee",
            "git push -f origin refs/tags/v1.0",
        ]
    );
    assert_eq!(
        run_publish_step("v2.1.0-rc.1", &existing),
        ["gh release create v2.1.0-rc.1 --prerelease --latest=false"]
    );
}

/// `curl -s` of `url`: (status, Location, Link).
fn head_of(url: &str) -> (String, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let status = text.split_whitespace().nth(1).unwrap_or("").to_string();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or("")
            .to_string()
    };
    (status, header("location"), header("link"))
}

#[test]
fn the_fake_serves_releases_as_github_does() {
    let releases = FakeReleases::github_like();
    let web = format!("{}/{REPO}/releases", releases.server_url);
    // A moving tag has no release, so no downloads: what broke `uses: …@v1` before.
    assert_eq!(head_of(&format!("{web}/download/v1/{LINUX_X64}")).0, "404");
    assert_eq!(
        head_of(&format!("{web}/download/v2.1.0/{LINUX_X64}")).0,
        "404",
        "a draft"
    );
    let (status, location, _) = head_of(&format!("{web}/latest/download/{LINUX_X64}"));
    assert_eq!(status, "302");
    assert_eq!(location, format!("{web}/download/v2.0.0/{LINUX_X64}"));
    let (status, location, _) = head_of(&format!("{web}/download/v2.1.0-rc.1/SHA256SUMS"));
    assert_eq!(status, "302");
    assert!(
        !location.starts_with(&releases.server_url),
        "to the objects host: {location}"
    );
    assert!(location.contains("X-Amz-Signature="));
    let unsigned = location.split('?').next().unwrap();
    assert_eq!(head_of(unsigned).0, "403");
    let (status, _, link) = head_of(&format!(
        "{}/repos/{REPO}/releases?per_page=100",
        releases.api_url
    ));
    assert_eq!(status, "200");
    assert_eq!(
        link,
        format!(
            "<{api}/repositories/700123/releases?per_page=2&page=2>; rel=\"next\", \
             <{api}/repositories/700123/releases?per_page=2&page=4>; rel=\"last\"",
            api = releases.api_url
        )
    );
}

/// Inside a composite action the runner may leave `github.action_ref` and
/// `github.action_repository` empty; the action's checkout path
/// (`…/_actions/OWNER/REPO/REF`) still names the release to install, never a build.
#[test]
fn the_action_path_names_the_release_when_the_runner_gives_no_ref() {
    let releases = FakeReleases::github_like();
    let mut install = Install::new(&releases, "");
    install
        .runner
        .context
        .insert("github.action_repository".into(), String::new());
    let checkout = install.work.path().join("_actions/gcrsync/gcrsync/v1");
    std::fs::create_dir_all(checkout.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_MANIFEST_DIR"), &checkout).unwrap();
    let tools = install.tools.clone();
    let with_cargo = install.with_cargo.clone();
    let path = checkout.to_str().unwrap().to_string();
    let run = |install: &mut Install, tools: &Path| {
        install
            .runner
            .context
            .insert("github.action_ref".into(), String::new());
        let cache = install.work.path().join("cargo-target");
        install.runner.run_action(
            &[("version", "")],
            &[
                ("PATH", tools.to_str().unwrap()),
                ("GITHUB_ACTION_PATH", path.as_str()),
                ("CARGO_TARGET_DIR", cache.to_str().unwrap()),
            ],
        )
    };
    let steps = run(&mut install, &tools);
    let (out, outputs) = &steps[0];
    assert!(out.status.success(), "{}", stdout(out));
    assert_eq!(outputs["version"], "v1.2.1", "@v1 from the path");
    assert!(!install.cargo_ran());
    // With cargo on PATH too: still the release, never a build.
    let steps = run(&mut install, &with_cargo);
    assert!(steps[0].0.status.success());
    assert!(!install.cargo_ran());
}
