//! Credentials against registries that demand them (distribution's htpasswd Basic auth,
//! the fake gcr.io's Bearer tokens): the challenge flow, `_json_key`, Google service
//! account and docker identity-token logins, tokens renewed mid-run and a token endpoint
//! that fails, clear errors naming the options, and no secret in any output.

mod common;

use std::path::Path;
use std::time::Duration;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::*;

const USER: &str = "alice";
const PASSWORD: &str = "s3cr3t-Pa55-never-printed";

/// A registry requiring `USER:PASSWORD`.
fn protected_registry(dir: &Path) -> TestRegistry {
    protected(dir, USER, PASSWORD)
}

fn assert_no_secret(texts: &[&str]) {
    for text in texts {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
}

#[tokio::test]
async fn basic_auth_on_both_sides_works_and_wrong_credentials_are_fatal_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = TestRegistry::start();
    let dst = protected_registry(dir.path());
    let (digest, _) = Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let report = work.path().join("report.json");
    let args = mirror_args(&src, &dst, &metadata);

    let out = run(gcrsync(work.path()).args(&args).args([
        "--target-username",
        USER,
        "--target-password",
        "wrong",
    ]));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("authentication to") && err.contains("--target-username/--target-password"),
        "{err}"
    );

    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("requires credentials"),
        "{}",
        stderr(&out)
    );

    // Credentials from the environment, as CI secrets arrive (DOCKER_* are the seed names).
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--log-format", "json", "-v", "--report"])
        .arg(&report)
        .env("DOCKER_USERNAME", USER)
        .env("DOCKER_PASSWORD", PASSWORD));
    assert_eq!(out.status.code(), Some(0));
    let files: Vec<String> = walk(&metadata)
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut texts = vec![
        stderr(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read_to_string(&report).unwrap(),
    ];
    texts.extend(files);
    assert_no_secret(&texts.iter().map(String::as_str).collect::<Vec<_>>());

    // The mirror is readable with the same credentials only.
    let client = reqwest::Client::new();
    let url = format!("http://{}/v2/mirror/app/manifests/1", dst.addr);
    let accept = images::OCI_MANIFEST;
    let anonymous = client
        .head(&url)
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let head = client
        .head(&url)
        .header("accept", accept)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["docker-content-digest"].to_str().unwrap(),
        digest
    );

    // The tag moves; the plan is one copy and no target check. Refused target credentials
    // still end the run with exit 3 (not 1 as for a failed tag), and the record stays.
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let out = run(gcrsync(work.path())
        .args(&args)
        .args([
            "--target-username",
            USER,
            "--target-password",
            "wrong",
            "--report",
        ])
        .arg(&report));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let written = read_json(&report);
    assert!(
        written["error"]
            .as_str()
            .is_some_and(|e| e.contains("--target-username")),
        "{written}"
    );
    let records = read_json(&metadata.join(format!("{}/team/images.json", src.addr)));
    assert_eq!(records["images"]["app"]["tags"]["1"]["digest"], digest);
}

#[tokio::test]
async fn a_protected_source_is_listed_with_source_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let src = protected_registry(dir.path());
    let dst = TestRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(
        out.status.code(),
        Some(3),
        "an unauthorised listing is fatal, never zero images"
    );
    assert!(
        stderr(&out).contains("--source-username/--source-password"),
        "{}",
        stderr(&out)
    );
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("GCRSYNC_SOURCE_USERNAME", USER)
        .env("GCRSYNC_SOURCE_PASSWORD", PASSWORD));
    assert_eq!(
        out.status.code(),
        Some(0),
        "an empty catalog listed with credentials is fine"
    );
    assert_no_secret(&[&stderr(&out)]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path))
        } else {
            files.push(path)
        }
    }
    files
}

#[tokio::test]
async fn docker_config_logins_are_used_and_explicit_options_take_precedence() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let src = TestRegistry::start();
    let dst = protected_registry(dir.path());
    Pusher::new(&src.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(1000)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
            dst.addr
        ),
    )
    .unwrap();
    let args = mirror_args(&src, &dst, &work.path().join("meta"));

    let wrong = run(gcrsync(work.path())
        .args(&args)
        .env("DOCKER_CONFIG", &docker)
        .args(["--target-username", USER, "--target-password", "nope"]));
    assert_eq!(
        wrong.status.code(),
        Some(3),
        "explicit credentials win over the docker config"
    );
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("DOCKER_CONFIG", &docker));
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).contains("1 copied"), "{}", stderr(&out));
    assert_no_secret(&[&stderr(&out), &stderr(&wrong)]);

    std::fs::write(docker.join("config.json"), "{ broken").unwrap();
    let out = run(gcrsync(work.path())
        .args(&args)
        .args(["--docker-config", docker.to_str().unwrap()]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--docker-config (GCRSYNC_DOCKER_CONFIG)"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_repository_the_accepted_credentials_cannot_reach_is_no_access_not_bad_credentials() {
    use common::faults::{Fault, FaultProxy, Rule};
    let dir = tempfile::tempdir().unwrap();
    let src = TestRegistry::start();
    let registry = protected_registry(dir.path());
    // A per-repository ACL in front of the registry: mirror/secret is someone else's.
    let dst = FaultProxy::start(&registry.addr);
    for method in ["HEAD", "GET", "POST", "PUT"] {
        dst.inject(Rule {
            method,
            path_contains: "/v2/mirror/secret/".into(),
            times: 1000,
            fault: Fault::Status(401, None),
        });
    }
    Pusher::new(&src.addr)
        .image(
            "team/secret",
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(100)],
        )
        .await;
    let work = tempfile::tempdir().unwrap();
    let args = args_for(&src.addr, &dst.addr, &work.path().join("meta"));
    let login = |password: &str| {
        let mut command = gcrsync(work.path());
        command
            .args(&args)
            .args(["--target-username", USER, "--target-password", password]);
        run(&mut command)
    };

    let out = login(PASSWORD);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(&format!("no access to {}/mirror/secret", dst.addr))
            && err.contains("accepts the credentials, but not for this repository")
            && !err.contains("authentication to")
            && !err.contains("--target-password"),
        "the repository is named, the credentials are not blamed: {err}"
    );
    assert_no_secret(&[&err]);

    // The same refusal with a wrong password is the registry refusing the credentials.
    let out = login("wrong");
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.contains("authentication to") && err.contains("--target-username/--target-password"),
        "{err}"
    );
}

#[tokio::test]
async fn a_gcp_key_goes_to_the_google_source_not_to_a_second_registry_beside_it() {
    use base64::Engine as _;
    use common::gcr::FakeGcr;
    use common::google::FakeGoogle;
    let dir = tempfile::tempdir().unwrap();
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let private = protected_registry(dir.path());
    let image = |p: Pusher, repo: &'static str| async move {
        p.image(repo, "1", Format::Oci, "amd64", &[random_bytes(800)])
            .await
    };
    image(Pusher::new(&upstream.addr), "team/a").await;
    image(Pusher::with_login(&private.addr, USER, PASSWORD), "team/b").await;
    let keys = tempfile::tempdir().unwrap();
    let google = FakeGoogle::start(keys.path());
    let gcr = FakeGcr::start(&upstream.addr, false);
    gcr.trust_google(google.issued.clone());
    let work = tempfile::tempdir().unwrap();
    // The second registry's login is in docker's config. Before, the key (sent to every
    // source) won over it: the registry got `oauth2accesstoken` and a Google token.
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = format!(
        r#"{{"auths": {{"http://{}": {{"auth": "{auth}"}}}}}}"#,
        private.addr
    );
    std::fs::write(docker.join("config.json"), config).unwrap();
    let (g, p, d) = (&gcr.addr, &private.addr, &dst.addr);
    let meta = work.path().join("meta");
    let run_with = |config: String| {
        std::fs::write(work.path().join("mirror.yml"), config).unwrap();
        run(gcrsync(work.path())
            .args([
                "--config",
                "mirror.yml",
                "--metadata-dir",
                meta.to_str().unwrap(),
            ])
            .env("DOCKER_CONFIG", &docker)
            .env("SA_KEY", google.key_json()))
    };
    let head = format!("insecure-registry: [{g}, {p}, {d}]\n");
    let (gs, ps) = (
        format!("  - source: {g}/team\n    target: {d}/g\n"),
        format!("  - source: {p}/team\n    target: {d}/p\n"),
    );
    // The key at the top level: it goes to neither loopback registry (none is Google's and
    // there are two), so the fake gcr, which wants a Google token, refuses the listing.
    let out = run_with(format!(
        "{head}gcp-credentials-env: SA_KEY\nsources:\n{gs}{ps}"
    ));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&format!("listing {g}/team failed")));
    // Named by the gcr source's own entry: there only; the other keeps its docker login.
    let out = run_with(format!(
        "{head}sources:\n{gs}    gcp-credentials-env: SA_KEY\n{ps}"
    ));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(Pusher::new(d).tags("g/a").await, ["1"]);
    assert_eq!(Pusher::new(d).tags("p/b").await, ["1"]);
    assert!(google.token_requests() >= 1, "the gcr source used the key");
}

#[tokio::test]
async fn a_private_gcr_source_takes_a_json_key_login_and_tokens_are_renewed_mid_run() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&upstream.addr);
    for i in 0..6 {
        p.image(
            &format!("team/img{i}"),
            "1",
            Format::Oci,
            "amd64",
            &[random_bytes(3 << 20)],
        )
        .await;
    }
    let gcr = FakeGcr::start(&upstream.addr, false);
    let key =
        r#"{"type":"service_account","client_email":"mirror@project.iam.gserviceaccount.com"}"#;
    gcr.accept_login("_json_key", key);
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));

    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(
        out.status.code(),
        Some(3),
        "anonymous access to a private source is fatal"
    );
    assert!(
        stderr(&out).contains("--source-username/--source-password"),
        "{}",
        stderr(&out)
    );

    gcr.token_lifetime(Duration::from_secs(1));
    // Six images one at a time, each manifest answer 300 ms late: the run lasts well past
    // several token lifetimes however fast the machine is.
    gcr.delay_manifests(Duration::from_millis(300));
    let out = run(gcrsync(work.path()).args(&args).args([
        "--process-limit",
        "1",
        "--source-username",
        "_json_key",
        "--source-password",
        key,
    ]));
    assert_eq!(out.status.code(), Some(0));
    for i in 0..6 {
        assert_eq!(
            Pusher::new(&dst.addr).tags(&format!("mirror/img{i}")).await,
            ["1"]
        );
    }
    assert!(
        gcr.tokens_issued() > 2,
        "one-second tokens must have been renewed: {}",
        gcr.tokens_issued()
    );
    assert!(
        !stderr(&out).contains("mirror@project"),
        "the key leaked: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn a_gcp_service_account_key_is_exchanged_for_an_access_token_and_used_as_oauth2accesstoken()
{
    use common::google::{CLIENT_EMAIL, FakeGoogle};
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    for i in 0..3 {
        Pusher::new(&upstream.addr)
            .image(
                &format!("team/img{i}"),
                "1",
                Format::Oci,
                "amd64",
                &[random_bytes(500)],
            )
            .await;
    }
    let keys = tempfile::tempdir().unwrap();
    let google = FakeGoogle::start(keys.path());
    let gcr = FakeGcr::start(&upstream.addr, false);
    gcr.trust_google(google.issued.clone());
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));
    let key = google.key_json();

    // As an Actions secret holds it: the JSON text itself.
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("GCRSYNC_GCP_CREDENTIALS", &key));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/img2").await, ["1"]);
    assert_eq!(
        google.token_requests(),
        1,
        "the access token is cached across the run's registry logins"
    );
    let private_key_line = key.split("\\n").nth(1).unwrap().to_string();
    assert!(!stderr(&out).contains(&private_key_line));

    // As a path, through GOOGLE_APPLICATION_CREDENTIALS.
    let path = work.path().join("key.json");
    std::fs::write(&path, &key).unwrap();
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("compare")
        .env("GOOGLE_APPLICATION_CREDENTIALS", &path));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(google.token_requests(), 2);

    // A key whose signature the endpoint rejects: fatal, with the reason, no key material.
    let other = FakeGoogle::start(tempfile::tempdir().unwrap().path());
    let forged = other.key_json().replace(&other.addr, &google.addr);
    let out = run(gcrsync(work.path())
        .args(&args)
        .env("GCRSYNC_GCP_CREDENTIALS", &forged));
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("Google token exchange failed"), "{err}");
    assert!(
        !err.contains(forged.split("\\n").nth(1).unwrap()) && err.contains(&gcr.addr),
        "{err}"
    );
    let _ = CLIENT_EMAIL;
}

#[tokio::test]
async fn a_failing_token_endpoint_is_retried_and_a_dead_one_is_fatal() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = Pusher::new(&upstream.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let gcr = FakeGcr::start(&upstream.addr, true);
    let work = tempfile::tempdir().unwrap();
    let args = gcr_args(&gcr, &dst, &work.path().join("meta"));
    gcr.fail_token_requests(2);
    let out = run(gcrsync(work.path()).args(&args));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("/v2/token") && stderr(&out).contains("HTTP 503"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    gcr.fail_token_requests(100);
    let out = run(gcrsync(work.path()).args(&args).args(["--retries", "1"]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "a source that cannot be listed is fatal, never zero images"
    );
}

#[tokio::test]
async fn a_docker_config_identity_token_is_exchanged_with_the_refresh_token_grant() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let (digest, _) = Pusher::new(&upstream.addr)
        .image("team/app", "1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let gcr = FakeGcr::start(&upstream.addr, false);
    let token = "identity-refresh-token-never-printed";
    gcr.accept_identity_token(token);
    let work = tempfile::tempdir().unwrap();
    let docker = work.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"{}": {{"identitytoken": "{token}"}}}}}}"#,
            gcr.addr
        ),
    )
    .unwrap();
    let out = run(gcrsync(work.path())
        .args(gcr_args(&gcr, &dst, &work.path().join("meta")))
        .env("DOCKER_CONFIG", &docker));
    assert_eq!(out.status.code(), Some(0), "{:?}", gcr.log());
    assert_eq!(
        Pusher::new(&dst.addr).head("mirror/app", "1").await,
        Some(digest)
    );
    assert!(
        gcr.log()
            .iter()
            .any(|(m, p)| m == "POST" && p.starts_with("/v2/token"))
    );
    assert!(!stderr(&out).contains(token));
}
