//! Upstream deletions against real distribution registries: a tag gone from a complete
//! source listing is marked in images.json and shown in the CHANGELOG and README, a tag
//! that returns is unmarked, a listing that failed marks nothing, and `--prune` deletes
//! marked tags from the target (never a digest a live tag shares), within `--prune-max`,
//! reporting a target that refuses deletes.

mod common;

use std::path::{Path, PathBuf};

use common::images::random_bytes;
use common::*;
use serde_json::Value;

/// A mirrored source: `team/app` with `v1` and `v1-alias` (one digest), `v2`, and
/// `team/tool:1`, all copied once to `dst/mirror`.
struct Mirrored {
    src: TestRegistry,
    dst: TestRegistry,
    work: tempfile::TempDir,
    /// Digests: v1 (and v1-alias), v2, tool:1.
    v1: String,
    v2: String,
    tool: String,
}

impl Mirrored {
    async fn new(dst: TestRegistry) -> Self {
        let src = TestRegistry::start();
        let p = Pusher::new(&src.addr);
        let layer = || vec![random_bytes(2_000)];
        let (v1, _) = p
            .image("team/app", "v1", Format::Oci, "amd64", &layer())
            .await;
        let body = p.get_manifest("team/app", &v1).await;
        p.manifest("team/app", "v1-alias", images::OCI_MANIFEST, &body)
            .await;
        let (v2, _) = p
            .image("team/app", "v2", Format::Oci, "amd64", &layer())
            .await;
        let (tool, _) = p
            .image("team/tool", "1", Format::Docker, "amd64", &layer())
            .await;
        let mirrored = Mirrored {
            src,
            dst,
            work: tempfile::tempdir().unwrap(),
            v1,
            v2,
            tool,
        };
        let out = mirrored.sync(&[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        mirrored
    }

    fn metadata(&self) -> PathBuf {
        self.work.path().join("meta")
    }

    fn report(&self) -> PathBuf {
        self.work.path().join("report.json")
    }

    fn command(&self, extra: &[&str]) -> std::process::Command {
        let mut command = gcrsync(self.work.path());
        command
            .args(mirror_args(&self.src, &self.dst, &self.metadata()))
            .arg("--report")
            .arg(self.report())
            .args(extra);
        command
    }

    fn sync(&self, extra: &[&str]) -> std::process::Output {
        run(&mut self.command(extra))
    }

    fn namespace_file(&self, name: &str) -> PathBuf {
        self.metadata()
            .join(format!("{}/team/{name}", self.src.addr))
    }

    fn tag(&self, image: &str, tag: &str) -> Value {
        read_json(&self.namespace_file("images.json"))["images"][image]["tags"][tag].clone()
    }

    fn text(&self, path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    fn changelog(&self) -> String {
        self.text(&self.metadata().join("CHANGELOG.md"))
    }

    fn source(&self) -> Pusher {
        Pusher::new(&self.src.addr)
    }

    fn target(&self) -> Pusher {
        Pusher::new(&self.dst.addr)
    }
}

/// A tag's RFC 3339 mark (`…Z`), or a panic saying what the record holds.
fn mark<'a>(tag: &'a Value, field: &str) -> &'a str {
    let at = tag[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {tag}"));
    assert!(at.len() == 20 && at.ends_with('Z'), "{field}: {at}");
    at
}

#[tokio::test]
async fn a_tag_removed_upstream_is_marked_shown_and_unmarked_when_it_returns() {
    let m = Mirrored::new(TestRegistry::start()).await;
    let body = m.source().get_manifest("team/app", &m.v2).await;
    m.source().delete_manifest("team/app", &m.v2).await;

    let out = m.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let marked = mark(&m.tag("app", "v2"), "deleted_upstream_at").to_string();
    assert!(m.tag("app", "v1")["deleted_upstream_at"].is_null());
    assert!(m.tag("tool", "1")["deleted_upstream_at"].is_null());
    // Without --prune the mirror keeps it.
    assert_eq!(
        m.target().head("mirror/app", "v2").await,
        Some(m.v2.clone())
    );
    let changelog = m.changelog();
    let line = format!(
        "- {}/team/app:v2 removed upstream ({}/mirror/app:v2 kept, {}…)",
        m.src.addr,
        m.dst.addr,
        &m.v2[..19]
    );
    assert!(changelog.contains(&line), "{changelog}");
    let readme = m.text(&m.namespace_file("README.md"));
    assert!(readme.contains("## Removed upstream"), "{readme}");
    assert!(
        readme.contains(&format!(
            "- `app:v2` (`{}…`): removed upstream {marked}; still in the mirror",
            &m.v2[..19]
        )),
        "{readme}"
    );
    let page = m.text(&m.namespace_file("app.md"));
    assert!(
        page.contains(&format!("| `v2` (removed upstream {marked}) |")),
        "{page}"
    );
    let report = read_json(&m.report());
    assert_eq!(
        report["prune"]["removed_upstream"][0]["tag"], "v2",
        "{report}"
    );

    // A run that sees it gone again changes nothing.
    let out = m.sync(&[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(mark(&m.tag("app", "v2"), "deleted_upstream_at"), marked);
    assert_eq!(m.changelog(), changelog, "nothing new to log");

    // Back upstream: unmarked, and said so.
    m.source()
        .manifest("team/app", "v2", images::OCI_MANIFEST, &body)
        .await;
    let out = m.sync(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(m.tag("app", "v2")["deleted_upstream_at"].is_null());
    assert!(
        m.changelog()
            .contains(&format!("- {}/team/app:v2 back upstream", m.src.addr)),
        "{}",
        m.changelog()
    );
    let readme = m.text(&m.namespace_file("README.md"));
    assert!(!readme.contains("## Removed upstream"), "{readme}");
}

#[tokio::test]
async fn a_failed_listing_marks_nothing() {
    let src = TestRegistry::start();
    let proxy = faults::FaultProxy::start(&src.addr);
    let dst = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (v1, _) = p
        .image("team/app", "v1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let (tool, _) = p
        .image("team/tool", "1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let sync = || {
        run(gcrsync(work.path())
            .args(args_for(&proxy.addr, &dst.addr, &metadata))
            .args(["--retries", "0"]))
    };
    assert_eq!(sync().status.code(), Some(0));
    let records = metadata.join(format!("{}/team/images.json", proxy.addr));
    let before = std::fs::read(&records).unwrap();
    p.delete_manifest("team/app", &v1).await;
    p.delete_manifest("team/tool", &tool).await;

    // The namespace cannot be listed: fatal, and the records stay as they were.
    proxy.inject(faults::Rule {
        method: "GET",
        path_contains: "/v2/_catalog".into(),
        times: 10,
        fault: faults::Fault::Status(500, None),
    });
    assert_eq!(sync().status.code(), Some(3));
    assert_eq!(std::fs::read(&records).unwrap(), before);
    proxy.clear();

    // One repository cannot be listed: its tags are not judged (exit 1 for the failed
    // repository); the repository that was listed, now empty, is.
    proxy.inject(faults::Rule {
        method: "GET",
        path_contains: "/v2/team/app/tags/list".into(),
        times: 1,
        fault: faults::Fault::Status(500, None),
    });
    let out = sync();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let record = read_json(&records);
    assert!(
        record["images"]["app"]["tags"]["v1"]["deleted_upstream_at"].is_null(),
        "{record}"
    );
    mark(
        &record["images"]["tool"]["tags"]["1"],
        "deleted_upstream_at",
    );
    let changelog = std::fs::read_to_string(metadata.join("CHANGELOG.md")).unwrap();
    assert!(
        !changelog.contains("app:v1 removed upstream"),
        "{changelog}"
    );
    assert!(
        changelog.contains("team/tool:1 removed upstream"),
        "{changelog}"
    );

    // A tag filter is no deletion: app:v1 is gone, the filter does not hide that, but
    // tags the filter leaves out are never marked.
    let out = run(gcrsync(work.path())
        .args(args_for(&proxy.addr, &dst.addr, &metadata))
        .args(["--include-tags", "^nothing$"]));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let record = read_json(&records);
    mark(
        &record["images"]["app"]["tags"]["v1"],
        "deleted_upstream_at",
    );
}

#[tokio::test]
async fn prune_deletes_marked_tags_and_keeps_a_digest_a_live_tag_shares() {
    let m = Mirrored::new(TestRegistry::start()).await;
    let src = m.source();
    // v1 goes, v1-alias (same digest) stays: distribution deletes by digest, so the alias
    // is put back.
    let v1_body = src.get_manifest("team/app", &m.v1).await;
    src.delete_manifest("team/app", &m.v1).await;
    src.manifest("team/app", "v1-alias", images::OCI_MANIFEST, &v1_body)
        .await;
    let v2_body = src.get_manifest("team/app", &m.v2).await;
    src.delete_manifest("team/app", &m.v2).await;
    src.delete_manifest("team/tool", &m.tool).await;

    let out = m.sync(&["--prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dst = m.target();
    assert_eq!(dst.head("mirror/app", "v2").await, None);
    assert_eq!(dst.head("mirror/tool", "1").await, None);
    // Deleting v1's digest would have deleted v1-alias too.
    assert_eq!(dst.head("mirror/app", "v1").await, Some(m.v1.clone()));
    assert_eq!(dst.head("mirror/app", "v1-alias").await, Some(m.v1.clone()));
    let deletes: Vec<String> = m
        .dst
        .accesses()
        .into_iter()
        .filter(|a| a.method == "DELETE")
        .map(|a| format!("{} {}", a.path, a.status))
        .collect();
    assert_eq!(
        deletes,
        [
            format!("/v2/mirror/app/manifests/{} 202", m.v2),
            format!("/v2/mirror/tool/manifests/{} 202", m.tool)
        ]
    );
    // The records keep what was pruned, and when.
    let v2 = m.tag("app", "v2");
    mark(&v2, "pruned_at");
    mark(&v2, "deleted_upstream_at");
    assert_eq!(v2["digest"], m.v2.as_str());
    assert!(m.tag("app", "v1")["pruned_at"].is_null());
    mark(&m.tag("app", "v1"), "deleted_upstream_at");
    let changelog = m.changelog();
    assert!(
        changelog.contains(&format!(
            "- {}/mirror/app:v2 pruned: removed upstream, deleted from the mirror",
            m.dst.addr
        )),
        "{changelog}"
    );
    let readme = m.text(&m.namespace_file("README.md"));
    assert!(readme.contains("; pruned from the mirror"), "{readme}");
    let report = read_json(&m.report());
    let held = &report["prune"]["held"][0];
    assert_eq!(
        (
            &held["tag"],
            held["detail"].as_str().map(|d| d.contains("app:v1-alias"))
        ),
        (&Value::from("v1"), Some(true)),
        "{report}"
    );
    assert_eq!(
        report["prune"]["pruned"].as_array().unwrap().len(),
        2,
        "{report}"
    );

    // Nothing more to delete: no request.
    let deletes_before = m
        .dst
        .accesses()
        .iter()
        .filter(|a| a.method == "DELETE")
        .count();
    assert_eq!(m.sync(&["--prune"]).status.code(), Some(0));
    let deletes_after = m
        .dst
        .accesses()
        .iter()
        .filter(|a| a.method == "DELETE")
        .count();
    assert_eq!(deletes_after, deletes_before);

    // A pruned tag back upstream is copied again, and its record is live again.
    src.manifest("team/app", "v2", images::OCI_MANIFEST, &v2_body)
        .await;
    let out = m.sync(&["--prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(dst.head("mirror/app", "v2").await, Some(m.v2.clone()));
    let v2 = m.tag("app", "v2");
    assert!(
        v2["pruned_at"].is_null() && v2["deleted_upstream_at"].is_null(),
        "{v2}"
    );
}

#[tokio::test]
async fn prune_never_deletes_a_child_of_an_index_still_upstream() {
    let src = TestRegistry::start();
    let dst = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let platforms = [
        ("amd64", vec![random_bytes(400)]),
        ("arm64", vec![random_bytes(400)]),
    ];
    let (index, children) = p.index("team/app", "v1", Format::Oci, &platforms).await;
    // The amd64 child tagged on its own too, as some projects publish.
    let child = p.get_manifest("team/app", &children[0]).await;
    p.manifest("team/app", "v1-amd64", images::OCI_MANIFEST, &child)
        .await;
    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let sync = || {
        run(gcrsync(work.path())
            .args(mirror_args(&src, &dst, &metadata))
            .arg("--prune"))
    };
    assert_eq!(sync().status.code(), Some(0));
    p.delete_manifest("team/app", &children[0]).await;

    let out = sync();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let target = Pusher::new(&dst.addr);
    assert_eq!(
        target.head("mirror/app", "v1-amd64").await,
        Some(children[0].clone())
    );
    assert_eq!(
        target.head("mirror/app", &children[0]).await,
        Some(children[0].clone())
    );
    assert_eq!(target.head("mirror/app", "v1").await, Some(index));
    assert!(dst.accesses().iter().all(|a| a.method != "DELETE"));
    assert!(
        stderr(&out).contains("a child of the index of app:v1, which is still upstream"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn prune_max_refuses_a_larger_deletion_and_deletes_nothing() {
    let m = Mirrored::new(TestRegistry::start()).await;
    m.source().delete_manifest("team/app", &m.v2).await;
    m.source().delete_manifest("team/tool", &m.tool).await;

    // A bad limit is a configuration error, before any request.
    let out = m.sync(&["--prune", "--prune-max", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--prune-max (GCRSYNC_PRUNE_MAX): 0 is out of range"),
        "{}",
        stderr(&out)
    );
    // Options given in a config file, as any other.
    let config = m.work.path().join("mirror.yml");
    std::fs::write(&config, "prune: true\nprune-max: 1\n").unwrap();
    let out = m.sync(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("2 tags are to be pruned, more than --prune-max 1")
            && err.contains("nothing was deleted")
            && err.contains("raise --prune-max to at least 2"),
        "{err}"
    );
    assert!(m.dst.accesses().iter().all(|a| a.method != "DELETE"));
    assert_eq!(
        m.target().head("mirror/app", "v2").await,
        Some(m.v2.clone())
    );
    // Marked all the same, so a later run with a higher limit prunes them.
    mark(&m.tag("app", "v2"), "deleted_upstream_at");
    assert!(m.tag("app", "v2")["pruned_at"].is_null());
    let report = read_json(&m.report());
    assert!(
        report["prune"]["error"]
            .as_str()
            .unwrap()
            .contains("--prune-max")
    );

    let out = m.sync(&["--prune", "--prune-max", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(m.target().head("mirror/app", "v2").await, None);
}

#[tokio::test]
async fn a_target_refusing_deletes_is_reported_and_the_run_goes_on() {
    let m = Mirrored::new(TestRegistry::start_without_delete()).await;
    m.source().delete_manifest("team/app", &m.v2).await;
    m.source().delete_manifest("team/tool", &m.tool).await;
    let (v3, _) = m
        .source()
        .image("team/app", "v3", Format::Oci, "amd64", &[random_bytes(300)])
        .await;

    let out = m.sync(&["--prune"]);
    // Not fatal: the new tag is copied; exit 1 says the pruning asked for did not happen.
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(m.target().head("mirror/app", "v3").await, Some(v3));
    let err = stderr(&out);
    assert!(
        err.contains("the target refuses deletes") && err.contains("UNSUPPORTED"),
        "{err}"
    );
    // One refusal, and the registry is not asked again in this run.
    let deletes: Vec<u16> = m
        .dst
        .accesses()
        .iter()
        .filter(|a| a.method == "DELETE")
        .map(|a| a.status)
        .collect();
    assert_eq!(deletes, [405]);
    let report = read_json(&m.report());
    let refused = report["prune"]["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 2, "{report}");
    assert!(m.tag("app", "v2")["pruned_at"].is_null());
    mark(&m.tag("app", "v2"), "deleted_upstream_at");
    assert_eq!(
        m.target().head("mirror/app", "v2").await,
        Some(m.v2.clone())
    );
}

#[tokio::test]
async fn gcrsync_test_shows_what_would_be_pruned_and_changes_nothing() {
    let m = Mirrored::new(TestRegistry::start()).await;
    m.source().delete_manifest("team/app", &m.v2).await;
    let records = std::fs::read(m.namespace_file("images.json")).unwrap();

    let out = run(m.command(&["--prune"]).arg("test"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{}/team/app:v2 (removed upstream: mark)",
            m.src.addr
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{}/mirror/app:v2 (prune: delete {} from the target)",
            m.dst.addr,
            &m.v2[..19]
        )),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read(m.namespace_file("images.json")).unwrap(),
        records
    );
    assert_eq!(
        m.target().head("mirror/app", "v2").await,
        Some(m.v2.clone())
    );
    assert!(m.dst.accesses().iter().all(|a| a.method != "DELETE"));

    // Without --prune it says what waits.
    let out = run(m.command(&[]).arg("test"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1 tag(s) removed upstream are still in the mirror; --prune deletes them"),
        "{stdout}"
    );
}

#[tokio::test]
async fn prune_from_an_oci_layout_target_removes_its_index_entry() {
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (v1, blobs) = p
        .image("team/app", "v1", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    p.image("team/app", "v2", Format::Oci, "amd64", &[random_bytes(500)])
        .await;
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let sync = |extra: &[&str]| {
        run(gcrsync(work.path())
            .args(["--source", &format!("{}/team", src.addr)])
            .args(["--target", &format!("oci:{}", layout.display())])
            .args([
                "--metadata-dir",
                &work.path().join("meta").display().to_string(),
            ])
            .args(extra))
    };
    assert_eq!(sync(&[]).status.code(), Some(0));
    p.delete_manifest("team/app", &v1).await;
    let out = sync(&["--prune"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let index = read_json(&layout.join("app/index.json"));
    let tags: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(tags, ["v2"]);
    // The blobs stay (`umoci gc` removes what no entry names).
    let hex = blobs[0].strip_prefix("sha256:").unwrap();
    assert!(layout.join("app/blobs/sha256").join(hex).is_file());
}
