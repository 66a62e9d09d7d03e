//! The GitHub Action run as the runner would run it: each step of action.yml with its
//! `env:` evaluated from the inputs, `GITHUB_OUTPUT`/`GITHUB_STEP_SUMMARY` files and
//! `GITHUB_ACTIONS=true`, against local registries; a tampered checksum must fail; and
//! the Travis line from examples/.travis.yml in a clean shell.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::images::random_bytes;
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ASSET: &str = "gcrsync-x86_64-unknown-linux-musl.tar.gz";

/// A release directory as the release workflow publishes it: the archive and SHA256SUMS.
fn release_dir(dir: &Path) -> PathBuf {
    let release = dir.join("release");
    let staging = dir.join("staging");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_gcrsync"), staging.join("gcrsync")).unwrap();
    let tar = Command::new("tar")
        .args([
            "-czf",
            release.join(ASSET).to_str().unwrap(),
            "-C",
            staging.to_str().unwrap(),
            "gcrsync",
        ])
        .status()
        .unwrap();
    assert!(tar.success());
    let sum = Command::new("sha256sum")
        .arg(ASSET)
        .current_dir(&release)
        .output()
        .unwrap();
    std::fs::write(release.join("SHA256SUMS"), sum.stdout).unwrap();
    release
}

struct Runner {
    work: PathBuf,
    context: BTreeMap<String, String>,
}

impl Runner {
    /// Evaluates the `${{ … }}` expressions action.yml uses.
    fn eval(
        &self,
        value: &str,
        inputs: &BTreeMap<String, String>,
        steps: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> String {
        let mut out = value.to_string();
        while let Some(start) = out.find("${{") {
            let end = out[start..].find("}}").unwrap() + start;
            let expr = out[start + 3..end].trim().to_string();
            let resolved = if let Some(name) = expr.strip_prefix("inputs.") {
                inputs
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("action.yml reads undeclared input {name}"))
            } else if let Some(rest) = expr.strip_prefix("steps.") {
                let (step, output) = rest.split_once(".outputs.").unwrap();
                steps
                    .get(step)
                    .and_then(|o| o.get(output))
                    .cloned()
                    .unwrap_or_default()
            } else {
                self.context
                    .get(&expr)
                    .cloned()
                    .unwrap_or_else(|| panic!("unknown expression {expr}"))
            };
            out.replace_range(start..end + 2, &resolved);
        }
        out
    }

    /// Runs every step of action.yml; returns each step's output and its outputs file.
    fn run_action(
        &self,
        given: &[(&str, &str)],
        extra_env: &[(&str, &str)],
    ) -> Vec<(Output, BTreeMap<String, String>)> {
        let action: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(Path::new(ROOT).join("action.yml")).unwrap(),
        )
        .unwrap();
        let mut inputs = BTreeMap::new();
        for (name, spec) in action["inputs"].as_mapping().unwrap() {
            let default = spec["default"].as_str().unwrap_or("").to_string();
            inputs.insert(
                name.as_str().unwrap().to_string(),
                self.eval(&default, &BTreeMap::new(), &BTreeMap::new()),
            );
        }
        for (name, value) in given {
            assert!(inputs.contains_key(*name), "no input {name} in action.yml");
            inputs.insert(name.to_string(), value.to_string());
        }
        let summary = self.work.join("summary.md");
        let mut steps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut results = Vec::new();
        for step in action["runs"]["steps"].as_sequence().unwrap() {
            let id = step["id"].as_str().unwrap().to_string();
            let output_file = self.work.join(format!("output-{id}"));
            std::fs::write(&output_file, "").unwrap();
            let mut command = Command::new("bash");
            command
                .arg("-e")
                .arg("-c")
                .arg(step["run"].as_str().unwrap())
                .env_clear();
            command
                .env("PATH", std::env::var("PATH").unwrap())
                .env("HOME", &self.work)
                .current_dir(&self.work);
            for (key, value) in [
                ("GITHUB_ACTIONS", "true"),
                ("RUNNER_OS", "Linux"),
                ("RUNNER_ARCH", "X64"),
                ("GITHUB_ACTION_PATH", ROOT),
                ("GITHUB_REPOSITORY", "owner/repo"),
            ] {
                command.env(key, value);
            }
            command
                .env("RUNNER_TEMP", self.work.join("tmp"))
                .env("GITHUB_OUTPUT", &output_file)
                .env("GITHUB_STEP_SUMMARY", &summary);
            for (key, value) in step["env"].as_mapping().unwrap() {
                command.env(
                    key.as_str().unwrap(),
                    self.eval(value.as_str().unwrap(), &inputs, &steps),
                );
            }
            command.envs(extra_env.iter().copied());
            let out = command.output().unwrap();
            eprintln!(
                "--- step {id}: {:?}\n{}\n{}",
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let outputs: BTreeMap<String, String> = std::fs::read_to_string(&output_file)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect();
            let failed = !out.status.success();
            steps.insert(id, outputs.clone());
            results.push((out, outputs));
            if failed {
                break;
            }
        }
        results
    }
}

fn runner(work: &Path) -> Runner {
    std::fs::create_dir_all(work.join("tmp")).unwrap();
    let context = BTreeMap::from([
        ("github.token".to_string(), String::new()),
        ("github.action_ref".to_string(), "v1".to_string()),
        (
            "github.action_repository".to_string(),
            "gcrsync/gcrsync".to_string(),
        ),
        (
            "github.server_url".to_string(),
            "https://github.com".to_string(),
        ),
    ]);
    Runner {
        work: work.to_path_buf(),
        context,
    }
}

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
    let release = release_dir(work.path());
    let runner = runner(work.path());
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
    let steps = runner.run_action(
        &inputs,
        &[("GCRSYNC_RELEASE_DIR", release.to_str().unwrap())],
    );
    assert_eq!(steps.len(), 2);
    let (install, installed) = &steps[0];
    assert!(install.status.success());
    assert!(
        installed["bin"].starts_with(work.path().join("tmp").to_str().unwrap()),
        "{installed:?}"
    );
    let (run, outputs) = &steps[1];
    assert_eq!(run.status.code(), Some(1), "a failed tag fails the step");
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
        "only the add-mask line carries the secret"
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

#[test]
fn a_tampered_checksum_stops_the_install() {
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(work.path());
    let sums = std::fs::read_to_string(release.join("SHA256SUMS")).unwrap();
    let tampered = format!(
        "{}{}",
        if sums.starts_with('0') { "1" } else { "0" },
        &sums[1..]
    );
    std::fs::write(release.join("SHA256SUMS"), tampered).unwrap();
    let steps = runner(work.path()).run_action(
        &[("source", "gcr.io/x"), ("target", "x.io/m")],
        &[("GCRSYNC_RELEASE_DIR", release.to_str().unwrap())],
    );
    assert_eq!(steps.len(), 1, "the run step never starts");
    let (install, outputs) = &steps[0];
    assert!(!install.status.success());
    assert!(
        String::from_utf8_lossy(&install.stdout)
            .contains("::error title=gcrsync install::checksum mismatch")
    );
    assert!(!outputs.contains_key("bin"));
}

#[tokio::test]
async fn the_travis_line_downloads_verifies_and_runs_in_a_clean_shell() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let release = release_dir(work.path());
    let travis: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("examples/.travis.yml")).unwrap(),
    )
    .unwrap();
    let line = travis["script"][0].as_str().unwrap();
    let out = Command::new("env")
        .arg("-i")
        .arg(format!("PATH={}", std::env::var("PATH").unwrap()))
        .arg(format!("HOME={}", work.path().display()))
        .arg(format!("GCRSYNC_RELEASE_BASE=file://{}", release.display()))
        .arg(format!("GCRSYNC_SOURCE={}/team", src.addr))
        .arg(format!("GCRSYNC_TARGET={}/mirror", dst.addr))
        .arg(format!(
            "GCRSYNC_INSECURE_REGISTRY={},{}",
            src.addr, dst.addr
        ))
        .args(["bash", "-c", line])
        .current_dir(work.path())
        .output()
        .unwrap();
    eprintln!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    assert!(work.path().join("gcrsync-metadata").exists());
}
