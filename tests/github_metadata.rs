//! The metadata of a real namespace's size through the fake GitHub: 300 images × 50 tags
//! recorded batch by batch keep a README GitHub renders (≤ 512 KiB) with a page per image,
//! a CHANGELOG.md rotated into changelog/YYYY-MM.md without losing a line, and a commit
//! uploads only the files whose content changed.

mod common;

use common::github::{FakeGitHub, WRITE_TOKEN};
use gcrsync::metadata::Recorder;
use gcrsync::metadata::changelog;
use gcrsync::metadata::github::{GitHubConfig, GitHubStore};
use gcrsync::metadata::record::{Outcome, TagRecord};
use gcrsync::metadata::render::{Renderer, TemplateFiles};

const NS: &str = "gcr.io/google-containers";
const IMAGES: usize = 300;
const TAGS: usize = 50;

/// Image `i`: every fiftieth one is nested (`nested/image-050`), as registries allow.
fn image(i: usize) -> String {
    if i % 50 == 0 {
        format!("nested/image-{i:03}")
    } else {
        format!("image-{i:03}")
    }
}

fn digest(seed: usize) -> gcrsync::reference::Digest {
    format!("sha256:{seed:064x}").parse().unwrap()
}

fn copied(i: usize, tag: usize, seed: usize, at: &str) -> (usize, Outcome) {
    let image = image(i);
    let outcome = Outcome::Synced {
        target: format!("docker.io/myuser/{image}"),
        image,
        tag: format!("v1.{tag}.0"),
        record: TagRecord {
            deleted_upstream_at: None,
            pruned_at: None,
            digest: Some(digest(seed)),
            dropped_platforms: vec![],
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            referrers: Vec::new(),
            referrer_tags: None,
            source_digest: None,
            synced_at: at.into(),
        },
        previous: None,
        copied: true,
    };
    (0, outcome)
}

async fn recorder(gh: &FakeGitHub) -> Recorder<GitHubStore> {
    let config = GitHubConfig {
        api_url: gh.api_url.clone(),
        repo: "owner/repo".into(),
        token: WRITE_TOKEN.into(),
        branch: None,
        create_branch: false,
        author_name: "gcrsync".into(),
        author_email: "gcrsync@users.noreply.github.com".into(),
        retries: 2,
        deadline: None,
    };
    let store = GitHubStore::connect(&config, reqwest::Client::new(), true)
        .await
        .unwrap();
    Recorder::new(
        store,
        "",
        Renderer::new(&TemplateFiles::default()).unwrap(),
        vec![(NS.parse().unwrap(), "docker.io/myuser".parse().unwrap())],
        jiff::tz::TimeZone::UTC,
    )
}

fn entries(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("- ")).count()
}

/// Requests that create content (blobs, trees, commits, ref updates) in `log[from..]`.
fn content_requests(gh: &FakeGitHub, from: usize) -> Vec<String> {
    gh.log()[from..]
        .iter()
        .filter(|r| r.method != "GET")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

#[tokio::test]
async fn fifteen_thousand_tags_keep_a_readme_github_renders_pages_per_image_and_a_bounded_changelog()
 {
    let gh = FakeGitHub::start(false);
    let recorder = recorder(&gh).await;
    // Ten batches of 1,500 copies (30 images each): five in October, five in November.
    for batch in 0..10 {
        let at = if batch < 5 {
            format!("2026-10-{:02}T08:00:00Z", 10 + batch)
        } else {
            format!("2026-11-{:02}T08:00:00Z", 10 + batch)
        };
        let outcomes: Vec<_> = (batch * 30..(batch + 1) * 30)
            .flat_map(|i| (0..TAGS).map(move |t| (i, t)))
            .map(|(i, t)| copied(i, t, i * 100 + t, &at))
            .collect();
        let now: jiff::Timestamp = at.parse().unwrap();
        recorder.commit(&outcomes, now).await.unwrap().unwrap();
    }

    let readme = gh.file("main", &format!("{NS}/README.md")).unwrap();
    let record = gh.file("main", &format!("{NS}/images.json")).unwrap();
    eprintln!(
        "15,000 tags: README {} bytes, images.json {} bytes",
        readme.len(),
        record.len()
    );
    assert!(
        readme.len() <= 512 * 1024,
        "README is {} bytes, over what GitHub renders",
        readme.len()
    );
    assert!(readme.contains("300 images · 15000 tags"), "{readme}");
    assert!(readme.contains("| [image-299](image-299.md) | 50 | `v1.49.0`, `v1.48.0`,"));
    assert!(readme.contains("| [nested/image-050](nested/image-050.md) | 50 |"));
    let files = gh.files("main");
    let pages: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(NS) && f.ends_with(".md") && !f.ends_with("README.md"))
        .collect();
    assert_eq!(pages.len(), IMAGES, "a page per image");
    let page = gh.file("main", &format!("{NS}/image-123.md")).unwrap();
    assert_eq!(page.matches("| `v1.").count(), TAGS, "{page}");
    assert!(
        page.contains(&format!("`{}`", digest(12_307).as_str())),
        "{page}"
    );
    let nested = gh
        .file("main", &format!("{NS}/nested/image-250.md"))
        .unwrap();
    assert!(nested.contains("](../README.md)"), "links back: {nested}");

    // Every copied line is kept: in CHANGELOG.md or in the archive of its month.
    let current = gh.file("main", "CHANGELOG.md").unwrap();
    assert!(current.len() <= changelog::LIMIT, "{} bytes", current.len());
    let october = gh
        .file("main", "changelog/2026-10.md")
        .expect("October archived");
    let november = gh
        .file("main", "changelog/2026-11.md")
        .expect("November archived");
    assert_eq!(
        entries(&current) + entries(&october) + entries(&november),
        IMAGES * TAGS
    );
    assert!(current.starts_with("### 2026-11-19 08:00:00 Update(num: 1500):"));
    assert_eq!(october.matches("### 2026-10-").count(), 5, "newest first");
    assert!(october.starts_with("### 2026-10-14 "), "newest first");
    assert!(!october.contains("### 2026-11-") && !november.contains("### 2026-10-"));
    assert!(
        gh.log()
            .iter()
            .any(|r| r.method == "GET" && r.path.contains("/git/blobs/")),
        "images.json (over 1 MB) is read as a blob"
    );

    // One tag of one image moves: its page, the README, the record and the CHANGELOG are
    // uploaded; the 299 other pages are not.
    let from = gh.log().len();
    let at = "2026-11-20T08:00:00Z";
    let mut moved = copied(7, 3, 999_999, at);
    if let Outcome::Synced { previous, .. } = &mut moved.1 {
        *previous = Some(digest(703));
    }
    recorder
        .commit(&[moved], at.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        gh.trees_created().last().unwrap(),
        &[
            "CHANGELOG.md".to_string(),
            format!("{NS}/image-007.md"),
            format!("{NS}/README.md"),
            format!("{NS}/images.json"),
        ]
    );
    let creating = content_requests(&gh, from);
    assert_eq!(
        creating.len(),
        4,
        "images.json as a blob, the rest inline in the tree, the commit, the ref: {creating:?}"
    );
    assert!(
        gh.file("main", &format!("{NS}/image-007.md"))
            .unwrap()
            .contains(&format!("`{}`", digest(999_999).as_str()))
    );

    // A failure shows on no page and in no README: only the record changes.
    let failed = Outcome::Failed {
        image: image(8),
        tag: "v1.3.0".into(),
        error: "HTTP 500".into(),
        at: at.into(),
    };
    recorder
        .commit(&[(0, failed)], at.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        gh.trees_created().last().unwrap(),
        &[format!("{NS}/images.json")]
    );
    // Recording again what is recorded changes nothing and commits nothing.
    let before = gh.history("main").len();
    let mut again = copied(9, 1, 901, "2026-10-10T08:00:00Z");
    if let Outcome::Synced { copied, .. } = &mut again.1 {
        *copied = false;
    }
    let none = recorder
        .commit(&[again], at.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(gh.history("main").len(), before);
}
