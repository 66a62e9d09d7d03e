//! Shared test harness: real registries, fixture images, and running the real binary.
#![allow(dead_code)]

pub mod faults;
pub mod gcr;
pub mod git;
pub mod github;
pub mod google;
pub mod images;
pub mod proxies;
pub mod referrers;
pub mod registry;
pub mod release_assets;
pub mod releases;
pub mod runner;
pub mod serve;
pub mod server;
pub mod storage;

use std::path::Path;
use std::process::{Command, Output};

#[allow(unused_imports)]
pub use images::{Format, Pusher};
#[allow(unused_imports)]
pub use registry::{Access, TestRegistry, protected};

/// The built `gcrsync` binary with a clean environment (no `GCRSYNC_*` from the caller).
pub fn gcrsync(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gcrsync"));
    command.current_dir(dir);
    for (key, _) in std::env::vars() {
        if key.starts_with("GCRSYNC_")
            || key.starts_with("DOCKER_")
            || key.starts_with("GITHUB_")
            || key.ends_with("_PROXY")
            || key.ends_with("_proxy")
        {
            command.env_remove(key);
        }
    }
    // A developer's own ~/.docker/config.json must not change what the tests see.
    command.env("HOME", dir);
    command.env("NO_COLOR", "1");
    command
}

/// Arguments for a mirror from `src/team` to `dst/mirror`, both over plain HTTP.
pub fn args_for(src: &str, dst: &str, metadata: &Path) -> Vec<String> {
    vec![
        "--source".into(),
        format!("{src}/team"),
        "--target".into(),
        format!("{dst}/mirror"),
        "--insecure-registry".into(),
        format!("{src},{dst}"),
        "--metadata-dir".into(),
        metadata.display().to_string(),
    ]
}

/// [`args_for`] two test registries.
pub fn mirror_args(src: &TestRegistry, dst: &TestRegistry, metadata: &Path) -> Vec<String> {
    args_for(&src.addr, &dst.addr, metadata)
}

/// Pushes one small image per `repo:tag`.
pub async fn push(registry: &TestRegistry, tags: &[&str]) {
    let p = Pusher::new(&registry.addr);
    for reference in tags {
        let (repo, tag) = reference.rsplit_once(':').unwrap();
        p.image(
            repo,
            tag,
            Format::Oci,
            "amd64",
            &[images::random_bytes(2000)],
        )
        .await;
    }
}

/// [`args_for`] the fake gcr.io's `team` and a test registry.
pub fn gcr_args(gcr: &gcr::FakeGcr, dst: &TestRegistry, metadata: &Path) -> Vec<String> {
    args_for(&gcr.addr, &dst.addr, metadata)
}

pub fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run gcrsync");
    eprintln!(
        "--- gcrsync exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The lines `gcrsync test` prints (`SRC:TAG → TARGET:TAG (why)`), sorted.
pub fn planned(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(output)
        .lines()
        .filter(|l| l.contains(" → "))
        .map(|l| l.split(" (").next().unwrap().to_string())
        .collect();
    lines.sort();
    lines
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Requests logged after the first `skip`.
pub fn since(accesses: Vec<Access>, skip: usize) -> Vec<Access> {
    accesses.into_iter().skip(skip).collect()
}

pub fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// Polls `done` until it holds; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !done() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
