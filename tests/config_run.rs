//! `--config FILE` runs the real binary against real registries (CNCF distribution):
//! several sources with their own filters, mappings, targets and logins in one run, one
//! budget shared fairly, overrides by flag and variable, `config show` with origins and no
//! secret, and the errors of the keys a run adds, each with its line. The action given a
//! config file: tests/action.rs.

mod common;

use std::path::Path;
use std::process::Output;

use common::images::random_bytes;
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SRC_PASSWORD: &str = "src-Pa55-from-an-env-var";
const DST_PASSWORD: &str = "dst-Pa55-from-an-env-var";

/// Writes `text` as `mirror.yml` in `dir` and runs `gcrsync ARGS` there with `env`.
fn gcrsync_with(dir: &Path, text: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::fs::write(dir.join("mirror.yml"), text).unwrap();
    let mut command = gcrsync(dir);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    run(&mut command)
}

#[tokio::test]
async fn three_sources_with_their_own_filters_mappings_targets_and_logins_in_one_run() {
    let keys = tempfile::tempdir().unwrap();
    let (open, private) = (
        TestRegistry::start(),
        protected(keys.path(), "reader", SRC_PASSWORD),
    );
    let (dst, private_dst) = (
        TestRegistry::start(),
        protected(keys.path(), "writer", DST_PASSWORD),
    );
    push(
        &open,
        &[
            "team/app:v1",
            "team/app:v2",
            "team/app:dev",
            "other/tool:1.0",
            "other/tool:1.1",
            "other/app:3.0",
        ],
    )
    .await;
    push_with_login(
        &private,
        "reader",
        SRC_PASSWORD,
        &["ns/web:1", "ns/internal/x:1"],
    )
    .await;
    let (o, s, d, pd) = (&open.addr, &private.addr, &dst.addr, &private_dst.addr);
    let config = format!(
        "# three sources, one run\n\
         target: {d}/mirror\n\
         insecure-registry: [{o}, {s}, {d}, {pd}]\n\
         process-count: -1\n\
         metadata-dir: meta\n\
         sources:\n\
         \x20 - source: {o}/team\n\
         \x20   include-tags: '^v'\n\
         \x20 - source: {o}/other\n\
         \x20   name-template: 'other-{{{{ image }}}}'\n\
         \x20   latest: 1\n\
         \x20 - source: {s}/ns\n\
         \x20   images: [web, internal/x]\n\
         \x20   exclude-images: '^internal(/|$)'\n\
         \x20   source-username: reader\n\
         \x20   source-password-env: SRC_PASS\n\
         \x20   target: {pd}/b\n\
         \x20   target-username: writer\n\
         \x20   target-password-env: DST_PASS\n"
    );
    let work = tempfile::tempdir().unwrap();
    let env = [("SRC_PASS", SRC_PASSWORD), ("DST_PASS", DST_PASSWORD)];
    let report = work.path().join("report.json");
    let out = gcrsync_with(
        work.path(),
        &config,
        &[
            "--config",
            "mirror.yml",
            "--report",
            report.to_str().unwrap(),
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Each source with its own filters and mapping, into its own target.
    let at_dst = Pusher::new(d);
    assert_eq!(at_dst.tags("mirror/app").await, ["v1", "v2"]);
    assert_eq!(at_dst.tags("mirror/other-tool").await, ["1.1"]);
    assert_eq!(at_dst.tags("mirror/other-app").await, ["3.0"]);
    let at_private = login_pusher(&private_dst, "writer", DST_PASSWORD);
    assert_eq!(at_private.tags("b/web").await, ["1"]);
    assert!(at_private.tags("b/internal/x").await.is_empty());
    // Each keeps its own records; one CHANGELOG block for the run's one commit.
    let meta = work.path().join("meta");
    for (ns, target, images) in [
        (format!("{o}/team"), format!("{d}/mirror"), vec!["app"]),
        (
            format!("{o}/other"),
            format!("{d}/mirror"),
            vec!["app", "tool"],
        ),
        (format!("{s}/ns"), format!("{pd}/b"), vec!["web"]),
    ] {
        let record = read_json(&meta.join(&ns).join("images.json"));
        assert_eq!(record["source"], ns.as_str());
        assert_eq!(record["target"], target.as_str());
        let names: Vec<&str> = record["images"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, images, "{ns}");
        assert!(meta.join(&ns).join("README.md").is_file());
    }
    let changelog = std::fs::read_to_string(meta.join("CHANGELOG.md")).unwrap();
    assert_eq!(changelog.matches("### ").count(), 1, "{changelog}");
    assert!(changelog.contains("Update(num: 5)"), "{changelog}");
    let report = read_json(&report);
    assert_eq!(report["commits"].as_array().unwrap().len(), 1);
    let copied: Vec<u64> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["copied"].as_u64().unwrap())
        .collect();
    assert_eq!(copied, [2, 2, 1]);
    for text in [stdout(&out), stderr(&out), changelog] {
        assert!(
            !text.contains(SRC_PASSWORD) && !text.contains(DST_PASSWORD),
            "{text}"
        );
    }
    // A second run has nothing to do.
    let again = gcrsync_with(work.path(), &config, &["--config", "mirror.yml"], &env);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stderr(&again).contains("plan: 0 to copy"),
        "{}",
        stderr(&again)
    );
}

/// Pushes through a registry that requires a login.
async fn push_with_login(registry: &TestRegistry, user: &str, password: &str, tags: &[&str]) {
    let p = login_pusher(registry, user, password);
    for reference in tags {
        let (repo, tag) = reference.rsplit_once(':').unwrap();
        p.image(repo, tag, Format::Oci, "amd64", &[random_bytes(2000)])
            .await;
    }
}

fn login_pusher(registry: &TestRegistry, user: &str, password: &str) -> Pusher {
    Pusher::with_login(&registry.addr, user, password)
}

#[tokio::test]
async fn one_budget_is_shared_fairly_between_sources_then_leftovers() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let busy: Vec<String> = (1..=8).map(|n| format!("busy/app:{n}")).collect();
    let mut tags: Vec<&str> = busy.iter().map(String::as_str).collect();
    tags.extend(["small/app:1", "mid/app:1", "mid/app:2", "mid/app:3"]);
    push(&src, &tags).await;
    let (s, d) = (&src.addr, &dst.addr);
    let source = |ns: &str, own: &str| format!("  - source: {s}/{ns}\n    target: {d}/{ns}\n{own}");
    let config = format!(
        "insecure-registry: [{s}, {d}]\nprocess-count: 6\nsources:\n{}{}{}",
        source("busy", ""),
        source("small", ""),
        source("mid", "")
    );
    let work = tempfile::tempdir().unwrap();
    let report = work.path().join("report.json");
    let args = [
        "--config",
        "mirror.yml",
        "--report",
        report.to_str().unwrap(),
    ];
    let out = gcrsync_with(work.path(), &config, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let counts = |field: &str| -> Vec<u64> {
        read_json(&report)["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s[field].as_u64().unwrap())
            .collect()
    };
    // 6 split three ways is 2 each; small needs 1, and its leftover goes to the first
    // waiting tag in the plan's order (busy's). Head-of-list would have given busy all 6.
    assert_eq!(counts("copied"), [3, 1, 2]);
    assert_eq!(counts("pending"), [5, 0, 1]);
    // A source's own process-count caps it, however much of the budget is left.
    let capped = format!(
        "insecure-registry: [{s}, {d}]\nprocess-count: 6\nsources:\n{}{}{}",
        source("small", ""),
        source("mid", ""),
        source("busy", "    process-count: 1\n")
    );
    let out = gcrsync_with(work.path(), &capped, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(counts("copied"), [0, 1, 1], "mid's last tag, one of busy's");
    assert_eq!(counts("pending"), [0, 0, 4]);
    assert_eq!(Pusher::new(d).tags("busy/app").await.len(), 4);
}

#[tokio::test]
async fn flags_and_variables_override_the_files_top_level_and_a_sources_own_keys_win() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    push(
        &src,
        &["a/app:v1", "a/app:v2", "a/app:dev", "b/app:v1", "b/app:dev"],
    )
    .await;
    let (s, d) = (&src.addr, &dst.addr);
    let config = format!(
        "insecure-registry: [{s}, {d}]\ninclude-tags: '^v1$'\nsources:\n  - source: {s}/a\n    target: {d}/a\n  - source: {s}/b\n    target: {d}/b\n    include-tags: '^dev$'\n"
    );
    let work = tempfile::tempdir().unwrap();
    let plan = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["test", "--config", "mirror.yml"];
        all.extend_from_slice(args);
        let out = gcrsync_with(work.path(), &config, &all, env);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        planned(&out)
    };
    let line = |ns: &str, tag: &str| format!("{ns}/app:{tag} → {d}/{ns}/app:{tag}");
    assert_eq!(plan(&[], &[]), [line("a", "v1"), line("b", "dev")]);
    let from_env = [("GCRSYNC_INCLUDE_TAGS", "^v2$")];
    assert_eq!(plan(&[], &from_env), [line("a", "v2"), line("b", "dev")]);
    let flag = ["--include-tags", "^(v1|dev)$"];
    assert_eq!(
        plan(&flag, &from_env),
        [line("a", "dev"), line("a", "v1"), line("b", "dev")]
    );
    // A `.env` counts as a variable too, below the real environment.
    std::fs::write(work.path().join(".env"), "GCRSYNC_INCLUDE_TAGS='^dev$'\n").unwrap();
    assert_eq!(plan(&[], &[]), [line("a", "dev"), line("b", "dev")]);
    assert_eq!(plan(&[], &from_env), [line("a", "v2"), line("b", "dev")]);
    // `config show` says where each value came from.
    let show = gcrsync_with(
        work.path(),
        &config,
        &[
            "config",
            "show",
            "--config",
            "mirror.yml",
            "--deadline",
            "5m",
        ],
        &[],
    );
    assert_eq!(show.status.code(), Some(0), "{}", stderr(&show));
    let text = stdout(&show);
    for expected in [
        "  deadline: 5m    # flag",
        "  include-tags: ^dev$    # .env GCRSYNC_INCLUDE_TAGS",
        "  include-tags: ^dev$    # file mirror.yml:8 (source)",
        &format!("  insecure-registry: {s},{d}    # file mirror.yml:1 (top level)"),
        "  process-count: 100    # default",
        &format!("source 2: {s}/b → {d}/b (a fair share of process-count)"),
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
}

#[test]
fn config_show_never_prints_a_secret() {
    let work = tempfile::tempdir().unwrap();
    let config = "target: docker.io/m\ngithub-repo: o/r\ngithub-token-env: MY_TOKEN\nsources:\n  - source: gcr.io/a\n    source-username: me\n    source-password-env: SRC_PASS\n  - source: quay.io/b\n    target: ghcr.io/o/m\n    target-username: bot\n    target-password-env: DST_PASS\n";
    let secrets = [
        ("MY_TOKEN", "ghp_tokenNeverShown1"),
        ("SRC_PASS", "srcNeverShown2"),
        ("DST_PASS", "dstNeverShown3"),
        ("DOCKER_USERNAME", "hubuser"),
        ("DOCKER_PASSWORD", "dockerNeverShown4"),
        (
            "GCRSYNC_PROXY",
            "http://user:proxyNeverShown5@proxy.example:3128",
        ),
    ];
    let out = gcrsync_with(
        work.path(),
        config,
        &["config", "show", "--config", "mirror.yml"],
        &secrets,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out) + &stderr(&out);
    for (_, secret) in secrets.iter().filter(|(_, s)| s.contains("NeverShown")) {
        let secret = secret
            .split(['@', ':'])
            .find(|p| p.contains("NeverShown"))
            .unwrap();
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    for expected in [
        "  github-token: <redacted>    # file mirror.yml:3 (top level), from env MY_TOKEN",
        "  source-password: <redacted>    # file mirror.yml:7 (source), from env SRC_PASS",
        "  target-password: <redacted>    # file mirror.yml:11 (source), from env DST_PASS",
        "  proxy: http://user:<redacted>@proxy.example:3128    # env GCRSYNC_PROXY",
    ] {
        assert!(text.contains(expected), "{expected:?} in\n{text}");
    }
    // The first source has no target login of its own: DOCKER_PASSWORD would be used.
    assert!(
        text.contains("  target-password: <redacted>    # env DOCKER_PASSWORD"),
        "{text}"
    );
}

#[test]
fn a_run_refuses_what_the_file_gets_wrong_with_its_line() {
    let work = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n    source-username: me\n    source-password-env: SRC_PASS\n",
            &[],
            "mirror.yml:5: source-password-env: the variable SRC_PASS is not set",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n",
            &["--source", "gcr.io/b"],
            "--source (GCRSYNC_SOURCE): given (flag) while mirror.yml lists its own sources",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n  - source: gcr.io/b\n    name-template: 'b-{{ image }}'\n  - source: gcr.io/a\n    target: y.io/m\n",
            &[],
            "mirror.yml:6: gcr.io/a is listed twice (also at line 3)",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n    target: quay.io/b\n  - source: quay.io/b\n",
            &[],
            "mirror.yml:5: quay.io/b and gcr.io/a (line 3): one's target is the other's source",
        ),
        (
            "target: x.io/m\ngithub-create-branch: maybe\nsources:\n  - source: gcr.io/a\n",
            &[],
            "mirror.yml:2: github-create-branch: give true or false",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n    github-token-env: T\n",
            &[],
            "mirror.yml:4: github-token-env applies to the whole run",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n    process-count: 0\n",
            &[],
            "mirror.yml:4: process-count: 0 is out of range",
        ),
        (
            "sources:\n  - source: gcr.io/a\n",
            &[],
            "mirror.yml:2: target: no target given",
        ),
        (
            "target: x.io/m\ncommit-every: 0\nsources:\n  - source: gcr.io/a\n",
            &[],
            "mirror.yml:2: commit-every: 0 is out of range",
        ),
        (
            "target: x.io/m\nsources:\n  - source: gcr.io/a\n",
            &["--retries", "99"],
            "mirror.yml: --retries (GCRSYNC_RETRIES): 99 is out of range",
        ),
    ];
    for (text, args, expected) in cases {
        let mut all = vec!["--config", "mirror.yml"];
        all.extend_from_slice(args);
        let out = gcrsync_with(work.path(), text, &all, &[]);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{text}\nexpected {expected:?}\n{}",
            stderr(&out)
        );
    }
    // A file that does not exist is named.
    let out = run(gcrsync(work.path()).args(["--config", "nowhere.yml"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nowhere.yml: cannot read it"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_example_config_is_valid_and_the_example_workflow_uses_it() {
    let out = run(gcrsync(Path::new(ROOT)).args(["config", "check", "examples/mirror.yml"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("valid (3 sources)"));
    let example = std::fs::read_to_string(Path::new(ROOT).join("examples/mirror.yml")).unwrap();
    for host in ["gcr.io/", "registry.k8s.io", "-docker.pkg.dev/"] {
        assert!(
            example.contains(&format!("source: {host}")) || example.contains(host),
            "{host}"
        );
    }
    let workflow: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(Path::new(ROOT).join("examples/mirror-workflow.yml")).unwrap(),
    )
    .unwrap();
    let steps = workflow["jobs"]["mirror"]["steps"].as_sequence().unwrap();
    let action = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("gcrsync/gcrsync@"))
        })
        .unwrap();
    assert_eq!(action["with"]["config"], ".github/mirror.yml");
    // Every variable the file names is passed to the step from a secret.
    for var in ["DOCKERHUB_TOKEN", "GHCR_TOKEN", "GCP_SA_KEY"] {
        assert!(example.contains(&format!("-env: {var}")), "{var}");
        assert_eq!(
            action["env"][var].as_str(),
            Some(format!("${{{{ secrets.{var} }}}}").as_str())
        );
    }
    // The README explains the file with this example.
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    assert!(readme.contains("examples/mirror.yml") && readme.contains("saphyr"));
}

#[tokio::test]
async fn many_sources_commit_to_github_in_one_commit_per_batch() {
    let (src, dst, gh) = (
        TestRegistry::start(),
        TestRegistry::start(),
        common::github::FakeGitHub::start(false),
    );
    push(
        &src,
        &["a/app:1", "a/app:2", "b/app:1", "b/tool:1", "c/app:1"],
    )
    .await;
    let (s, d) = (&src.addr, &dst.addr);
    let config = format!(
        "insecure-registry: [{s}, {d}]\ngithub-repo: owner/repo\ngithub-api-url: {}\ngithub-token-env: GH_TOKEN\ncommit-every: 3\nsources:\n  - source: {s}/a\n    target: {d}/a\n  - source: {s}/b\n    target: {d}/b\n  - source: {s}/c\n    target: {d}/c\n",
        gh.api_url
    );
    let work = tempfile::tempdir().unwrap();
    let before = gh.history("main").len();
    let env = [("GH_TOKEN", common::github::WRITE_TOKEN)];
    let out = gcrsync_with(work.path(), &config, &["--config", "mirror.yml"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Five copies in batches of three: two commits (a batch holds tags of any source).
    assert_eq!(gh.history("main").len(), before + 2);
    for ns in ["a", "b", "c"] {
        let record: serde_json::Value =
            serde_json::from_str(&gh.file("main", &format!("{s}/{ns}/images.json")).unwrap())
                .unwrap();
        assert_eq!(record["target"], format!("{d}/{ns}").as_str());
        assert!(gh.file("main", &format!("{s}/{ns}/README.md")).is_some());
    }
    let changelog = gh.file("main", "CHANGELOG.md").unwrap();
    assert_eq!(
        changelog.matches("Update(num: 3)").count(),
        1,
        "{changelog}"
    );
    assert_eq!(
        changelog.matches("Update(num: 2)").count(),
        1,
        "{changelog}"
    );
    let text = stdout(&out) + &stderr(&out);
    assert!(!text.contains(common::github::WRITE_TOKEN), "{text}");
}

#[tokio::test]
async fn images_from_gives_each_source_only_its_own_lines() {
    let (a, b, dst) = (
        TestRegistry::start(),
        TestRegistry::start(),
        TestRegistry::start(),
    );
    push(&a, &["team/app:1", "team/app:2", "team/web:1"]).await;
    push(&b, &["team/app:1", "team/app:3", "other/db:1"]).await;
    let (a, b, d) = (&a.addr, &b.addr, &dst.addr);
    let work = tempfile::tempdir().unwrap();
    // The same image name under both sources, with different tags: each source takes its
    // own pairs, not the union. `other` has no line, and mirrors nothing.
    std::fs::write(
        work.path().join("pulled.txt"),
        format!("{a}/team/app:1\n{b}/team/app:3\nquay.io/elsewhere/x:1\n"),
    )
    .unwrap();
    let config = format!(
        "insecure-registry: [{a}, {b}, {d}]\nsources:\n  - source: {a}/team\n    target: {d}/a\n  - source: {b}/team\n    target: {d}/b\n  - source: {b}/other\n    target: {d}/o\n"
    );
    let args = [
        "test",
        "--config",
        "mirror.yml",
        "--images-from",
        "pulled.txt",
    ];
    let out = gcrsync_with(work.path(), &config, &args, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        planned(&out),
        [
            format!("team/app:1 → {d}/a/app:1"),
            format!("team/app:3 → {d}/b/app:3"),
        ]
    );
    // No line under any source is still an error, naming the option.
    std::fs::write(work.path().join("pulled.txt"), "quay.io/elsewhere/x:1\n").unwrap();
    let out = gcrsync_with(work.path(), &config, &args, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--images-from"), "{}", stderr(&out));
}
