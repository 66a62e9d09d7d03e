//! Configuration as users give it, and what is wrong with it: `gcrsync config check FILE`
//! (a file of many sources is checked as the flags are, every error names the file, the
//! line and the key; secrets written inline are refused), a `.env` file, and bad flags or
//! files, each exiting with the documented code and naming the problem.

mod common;

use std::path::Path;

use common::images::random_bytes;
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `config check` on `text` written as `mirror.yml`; (exit code, stderr).
fn check(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mirror.yml"), text).unwrap();
    let out = common::gcrsync(dir.path())
        .args(["config", "check", "mirror.yml"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_of_three_sources_is_valid() {
    let file = Path::new(ROOT).join("tests/fixtures/config/three-sources.yml");
    let out = common::gcrsync(Path::new(ROOT))
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("valid (3 sources)"), "{stderr}");
}

#[test]
fn every_error_names_its_line_and_key() {
    let cases: &[(&str, &str)] = &[
        (
            "target: docker.io/m\ntargte: x\nsources:\n  - source: gcr.io/a\n",
            "mirror.yml:2: unknown key \"targte\" (did you mean \"target\"?)",
        ),
        (
            "target: docker.io/m\nsources:\n  - source: gcr.io/a\n\n    include-tags: '('\n",
            "mirror.yml:5: include-tags: invalid regex",
        ),
        (
            "target: docker.io/m\nsources:\n  - source: gcr.io/a\n    latest: many\n",
            "mirror.yml:4: latest: invalid value",
        ),
        (
            "target: docker.io/m\nsources:\n  - source: gcr.io/a\n    retries: 2\n",
            "mirror.yml:4: retries applies to the whole run",
        ),
        (
            "target: docker.io/m\nsources:\n  - include-tags: x\n",
            "mirror.yml:3: this source has no `source:`",
        ),
        (
            "sources:\n  - source: gcr.io/a\n    target: gcr.io/a\n",
            "mirror.yml:3: target: gcr.io/a is also a source",
        ),
        (
            "target: docker.io/m\nsources: [a\n",
            "mirror.yml:3: not valid YAML",
        ),
        (
            "target: docker.io/m\nsources:\n  - source: gcr.io/a\n  - source: quay.io/b\n",
            "mirror.yml:4: quay.io/b and gcr.io/a (line 3) both map into docker.io/m",
        ),
    ];
    for (text, expected) in cases {
        let (code, stderr) = check(text);
        assert_eq!(code, Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{text}\nexpected {expected:?}\n{stderr}"
        );
    }
    // With the namespace in the names, two sources share a target.
    let (code, stderr) = check(
        "target: docker.io/m\nname-template: '{{ namespace }}-{{ image }}'\nsources:\n  - source: gcr.io/a\n  - source: quay.io/b\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn secrets_written_in_the_file_are_refused_without_being_shown() {
    let text = "target: docker.io/m\ngithub-token: ghp_inline1\nsources:\n  - source: gcr.io/a\n    source-username: me\n    source-password: hunter2inline\n  - source: gcr.io/b\n    target: docker.io/n\n    gcp-credentials: '{\"type\": \"service_account\", \"private_key\": \"k3y\"}'\n";
    let (code, stderr) = check(text);
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "mirror.yml:2: github-token: a secret written in the file is refused",
        "write `github-token-env: VARIABLE`",
        "mirror.yml:6: source-password: a secret written in the file is refused",
        "mirror.yml:9: gcp-credentials: a key written in the file is refused",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    for secret in ["ghp_inline1", "hunter2inline", "k3y"] {
        assert!(!stderr.contains(secret), "{secret} shown:\n{stderr}");
    }
    // By reference it is accepted, and a user name without its password still is not.
    let (code, stderr) = check(
        "target: docker.io/m\ngithub-token-env: MY_TOKEN\nsources:\n  - source: gcr.io/a\n    source-username: me\n    source-password-env: SRC_PASS\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) =
        check("target: docker.io/m\nsources:\n  - source: gcr.io/a\n    source-username: me\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("mirror.yml:4: source-username: give both"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dotenv_configures_a_run_without_overriding_the_environment() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    Pusher::new(&src.addr)
        .image(
            "team/app",
            "keep",
            Format::Oci,
            "amd64",
            &[random_bytes(100)],
        )
        .await;
    Pusher::new(&src.addr)
        .image(
            "team/app",
            "skip",
            Format::Oci,
            "amd64",
            &[random_bytes(100)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    let env = format!(
        "GCRSYNC_SOURCE={}/team\nGCRSYNC_TARGET={}/elsewhere\nGCRSYNC_INSECURE_REGISTRY={},{}\nGCRSYNC_INCLUDE_TAGS=^keep$\n",
        src.addr, dst.addr, src.addr, dst.addr
    );
    std::fs::write(work.path().join(".env"), env).unwrap();
    let out = run(gcrsync(work.path())
        .env("GCRSYNC_TARGET", format!("{}/mirror", dst.addr))
        .env("GCRSYNC_PROCESS_COUNT", "")
        .env("GCRSYNC_EXCLUDE_TAGS", ""));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/app").await, ["keep"]);
    assert!(
        Pusher::new(&dst.addr)
            .tags("elsewhere/app")
            .await
            .is_empty()
    );
    assert!(
        work.path()
            .join("gcrsync-metadata")
            .join(format!("{}/team/images.json", src.addr))
            .exists()
    );
}

/// Bad input: each case exits with the documented code and names the problem.
#[test]
fn bad_input_exits_with_the_documented_code_and_message() {
    let work = tempfile::tempdir().unwrap();
    let unreachable = "127.0.0.1:9"; // discard port: nothing listens
    let base = [
        "--source",
        "127.0.0.1:9/team",
        "--target",
        "127.0.0.1:9/mirror",
        "--insecure-registry",
        "127.0.0.1:9",
    ];
    let unreachable_listing = format!("listing {unreachable}/team failed");
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (
            vec!["--bogus-flag"],
            2,
            "unexpected argument '--bogus-flag'",
        ),
        (
            vec!["--target", "x.io/m"],
            2,
            "--source (GCRSYNC_SOURCE): no source given",
        ),
        (
            vec!["--source", "gcr.io/x"],
            2,
            "--target (GCRSYNC_TARGET): no target given",
        ),
        (
            vec!["--source", "gcr.io/UPPER", "--target", "x.io/m"],
            2,
            "invalid repository path \"UPPER\"",
        ),
        (
            vec!["--source", "gcr.io/x", "--target", "x.io/m:tag"],
            2,
            "--target (GCRSYNC_TARGET)",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--include-tags",
                "([",
            ],
            2,
            "--include-tags (GCRSYNC_INCLUDE_TAGS): invalid regex",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--process-limit",
                "-3",
            ],
            2,
            "--process-limit",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--query-limit",
                "100000",
            ],
            2,
            "--query-limit",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--process-count",
                "0",
            ],
            2,
            "--process-count",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--commit-every",
                "abc",
            ],
            2,
            "invalid value 'abc' for '--commit-every",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--deadline",
                "tomorrow",
            ],
            2,
            "--deadline (GCRSYNC_DEADLINE)",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--http-timeout=-1s",
            ],
            2,
            "--http-timeout",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--timezone",
                "Nowhere/City",
            ],
            2,
            "--timezone",
        ),
        (
            vec![
                "--source", "gcr.io/x", "--target", "x.io/m", "--shard", "0/3",
            ],
            2,
            "--shard",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--name-template",
                "{{ image",
            ],
            2,
            "--name-template",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--readme-template",
                "/nonexistent.j2",
            ],
            2,
            "--readme-template",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--ca-cert",
                "/nonexistent.pem",
            ],
            2,
            "--ca-cert",
        ),
        (
            vec![
                "--source", "gcr.io/x", "--target", "x.io/m", "--proxy", "::nope",
            ],
            2,
            "--proxy",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--target-password",
                "hunter2",
            ],
            2,
            "--target-username",
        ),
        (
            vec!["--source", "gcr.io/x", "--target", "gcr.io/x"],
            2,
            "is also a source",
        ),
        (
            vec![
                "--source",
                "gcr.io/x",
                "--target",
                "x.io/m",
                "--log-format",
                "xml",
            ],
            2,
            "--log-format",
        ),
        (base.to_vec(), 3, &unreachable_listing),
    ];
    for (args, code, message) in &cases {
        let out = gcrsync(work.path())
            .args(args)
            .args(["--retries", "0"])
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {err}");
        assert!(
            err.contains(message),
            "{args:?}: expected {message:?} in {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains("hunter2"), "{args:?} leaked a secret: {err}");
    }
    assert!(
        !work.path().join("gcrsync-metadata").exists(),
        "a failed configuration wrote metadata"
    );
}

#[test]
fn a_malformed_dotenv_or_metadata_file_is_reported_not_ignored() {
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join(".env"),
        "GCRSYNC_SOURCE=gcr.io/x\nthis line is not an assignment\n",
    )
    .unwrap();
    let out = gcrsync(work.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains(".env"), "{}", stderr(&out));

    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("gcrsync-metadata/127.0.0.1:9/team");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("images.json"), "{ not json").unwrap();
    let out = gcrsync(work.path())
        .args([
            "--source",
            "127.0.0.1:9/team",
            "--target",
            "127.0.0.1:9/mirror",
            "--insecure-registry",
            "127.0.0.1:9",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("images.json is not valid") && err.contains("gcrsync compare"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("images.json")).unwrap(),
        "{ not json"
    );
}
