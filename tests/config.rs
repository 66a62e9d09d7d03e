//! `gcrsync config check FILE`: a file of many sources is checked as the flags are, and
//! every error names the file, the line and the key; secrets written inline are refused.

mod common;

use std::path::Path;

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
