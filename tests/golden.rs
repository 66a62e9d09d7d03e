//! Golden files: the exact bytes of images.json, the namespace README and the CHANGELOG
//! for a fixed set of outcomes. Regenerate with `UPDATE_GOLDEN=1 cargo test --test golden`.

mod common;

use std::path::Path;

use common::github::{FakeGitHub, WRITE_TOKEN};
use gcrsync::metadata::github::{GitHubConfig, GitHubStore};
use gcrsync::metadata::local::LocalStore;
use gcrsync::metadata::record::{Outcome, TagRecord};
use gcrsync::metadata::render::{Renderer, TemplateFiles};
use gcrsync::metadata::{MetadataStore, Recorder};

fn synced(
    image: &str,
    tag: &str,
    digest: char,
    previous: Option<char>,
    platforms: &[&str],
    copied: bool,
) -> (usize, Outcome) {
    let digest_of = |c: char| {
        format!("sha256:{}", c.to_string().repeat(64))
            .parse()
            .unwrap()
    };
    let media_type = if platforms.is_empty() {
        "application/vnd.oci.image.manifest.v1+json"
    } else {
        "application/vnd.oci.image.index.v1+json"
    };
    let outcome = Outcome::Synced {
        image: image.into(),
        tag: tag.into(),
        target: format!("docker.io/myuser/{image}"),
        record: TagRecord {
            deleted_upstream_at: None,
            pruned_at: None,
            digest: Some(digest_of(digest)),
            source_digest: None,
            media_type: media_type.into(),
            platforms: platforms.iter().map(|p| p.to_string()).collect(),
            referrers: Vec::new(),
            referrer_tags: None,
            dropped_platforms: Vec::new(),
            synced_at: "2026-11-22T10:00:00Z".into(),
        },
        previous: previous.map(digest_of),
        copied,
    };
    (0, outcome)
}

fn check(actual: &str, golden: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(actual, expected, "differs from {golden}");
}

/// Records two batches (copies, an adoption, a failure; then a moved tag) in `store`.
async fn record_fixture<M: MetadataStore>(store: M) {
    let namespaces = vec![(
        "gcr.io/google-containers".parse().unwrap(),
        "docker.io/myuser".parse().unwrap(),
    )];
    let timezone = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let recorder = Recorder::new(
        store,
        "",
        Renderer::new(&TemplateFiles::default()).unwrap(),
        namespaces,
        timezone,
    );
    let first = [
        synced(
            "pause",
            "3.9",
            'a',
            None,
            &["linux/amd64", "linux/arm64"],
            true,
        ),
        synced("etcd", "3.5.9-0", 'b', None, &[], true),
        synced("kube-proxy", "v1.28.0", 'c', None, &[], false),
        (
            0,
            Outcome::Failed {
                image: "pause".into(),
                tag: "3.10".into(),
                error: "HTTP 500".into(),
                at: "2026-11-22T10:00:00Z".into(),
            },
        ),
        (
            0,
            Outcome::Skipped {
                image: "pause".into(),
                tag: "0.8.0".into(),
                digest: format!("sha256:{}", "e".repeat(64)).parse().unwrap(),
                reason:
                    "schema 1 manifest (application/vnd.docker.distribution.manifest.v1+prettyjws)"
                        .into(),
                at: "2026-11-22T10:00:00Z".into(),
            },
        ),
    ];
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    recorder
        .commit(&first, at("2026-11-22T02:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    let second = [synced("etcd", "3.5.9-0", 'd', Some('b'), &[], true)];
    let committed = recorder
        .commit(&second, at("2026-11-23T02:30:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        committed.message,
        "gcrsync: 1 moved (gcr.io/google-containers)"
    );
}

const FILES: [(&str, &str); 6] = [
    ("gcr.io/google-containers/images.json", "images.json"),
    ("gcr.io/google-containers/README.md", "README.md"),
    ("gcr.io/google-containers/pause.md", "pause.md"),
    ("gcr.io/google-containers/etcd.md", "etcd.md"),
    ("gcr.io/google-containers/kube-proxy.md", "kube-proxy.md"),
    ("CHANGELOG.md", "CHANGELOG.md"),
];

#[tokio::test]
async fn local_metadata_files_match_the_golden_bytes() {
    let dir = tempfile::tempdir().unwrap();
    record_fixture(LocalStore::new(dir.path().to_path_buf())).await;
    for (path, golden) in FILES {
        check(
            &std::fs::read_to_string(dir.path().join(path)).unwrap(),
            golden,
        );
    }
    let names: Vec<_> = std::fs::read_dir(dir.path().join("gcr.io/google-containers"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names.len(),
        5,
        "README, images.json and a page per image; no temporary files left behind: {names:?}"
    );
}

#[tokio::test]
async fn github_metadata_files_match_the_same_golden_bytes() {
    let gh = FakeGitHub::start(false);
    let config = GitHubConfig {
        api_url: gh.api_url.clone(),
        repo: "owner/repo".into(),
        token: WRITE_TOKEN.into(),
        branch: None,
        create_branch: false,
        author_name: "gcrsync".into(),
        author_email: "gcrsync@users.noreply.github.com".into(),
        retries: 4,
        deadline: None,
    };
    let store = GitHubStore::connect(&config, reqwest::Client::new(), true)
        .await
        .unwrap();
    let before = gh.history("main").len();
    record_fixture(store).await;
    assert_eq!(gh.history("main").len(), before + 2, "one commit per batch");
    // The second batch moved one etcd tag: the other images' pages are not uploaded again.
    let ns = "gcr.io/google-containers";
    assert_eq!(
        gh.trees_created().last().unwrap(),
        &[
            "CHANGELOG.md".to_string(),
            format!("{ns}/etcd.md"),
            format!("{ns}/README.md"),
            format!("{ns}/images.json"),
        ]
    );
    assert_eq!(gh.blobs_created(), 0, "small files go inline in the tree");
    for (path, golden) in FILES {
        check(&gh.file("main", path).unwrap(), golden);
    }
}
