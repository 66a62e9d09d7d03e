//! What a run costs in requests, tokens and connections, counted in the logs of real
//! registries and of the gcr front: a few per repository, never one per tag.

mod common;

use common::gcr::{FakeGcr, MultiScope};
use common::images::random_bytes;
use common::*;

/// Pushes one small image under `tags` in `repo`; returns its digest.
async fn push_tags(p: &Pusher, repo: &str, tags: &[&str]) -> String {
    let (digest, _) = p
        .image(repo, tags[0], Format::Oci, "amd64", &[random_bytes(200)])
        .await;
    let manifest = p.get_manifest(repo, &digest).await;
    for tag in &tags[1..] {
        p.manifest(repo, tag, images::OCI_MANIFEST, &manifest).await;
    }
    digest
}

#[tokio::test]
async fn the_target_is_listed_once_per_repository_and_only_listed_tags_are_headed() {
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    let tags = ["1", "2", "3", "4", "5"];
    for repo in ["a", "b", "c", "d/e"] {
        push_tags(&p, &format!("team/{repo}"), &tags).await;
    }
    // `b:1` is already on the target (adopted); `b:old` is there but not at the source.
    let manifest = p.get_manifest("team/b", "1").await;
    let target = Pusher::new(&dst.addr);
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    for blob in std::iter::once(&parsed["config"]).chain(parsed["layers"].as_array().unwrap()) {
        let bytes = p.get_blob("team/b", blob["digest"].as_str().unwrap()).await;
        target.blob("mirror/b", &bytes).await;
    }
    target
        .manifest("mirror/b", "1", images::OCI_MANIFEST, &manifest)
        .await;
    push_tags(&target, "mirror/b", &["old"]).await;

    let work = tempfile::tempdir().unwrap();
    let metadata = work.path().join("meta");
    let args = mirror_args(&src, &dst, &metadata);
    // The dry run sends exactly what a run sends before copying.
    let before = dst.accesses().len();
    let out = run(gcrsync(work.path()).arg("test").args(&args));
    assert_eq!(out.status.code(), Some(0));
    let mut sent: Vec<String> = since(dst.accesses(), before)
        .into_iter()
        .map(|a| format!("{} {} {}", a.method, a.path, a.status))
        .collect();
    sent.sort();
    assert_eq!(
        sent,
        [
            "GET /v2/mirror/a/tags/list?n=1000 404",
            "GET /v2/mirror/b/tags/list?n=1000 200",
            "GET /v2/mirror/c/tags/list?n=1000 404",
            "GET /v2/mirror/d/e/tags/list?n=1000 404",
            "HEAD /v2/mirror/b/manifests/1 200",
        ],
        "20 unrecorded tags in 4 repositories: one listing each, one HEAD for the listed tag"
    );

    let report = work.path().join("report.json");
    let out = run(gcrsync(work.path())
        .args(&args)
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    let totals = &read_json(&report)["totals"];
    assert_eq!(
        (totals["adopted"].as_u64(), totals["copied"].as_u64()),
        (Some(1), Some(19)),
        "{totals}"
    );
    for repo in ["a", "b", "c", "d/e"] {
        let mut listed = target.tags(&format!("mirror/{repo}")).await;
        listed.retain(|t| t != "old");
        listed.sort();
        assert_eq!(listed, tags, "{repo}");
    }
}

/// A gcr namespace of `repos` repositories (`team/r00`…), one tag each, behind a front
/// that wants a service-account login.
async fn gcr_namespace(upstream: &TestRegistry, repos: usize) -> FakeGcr {
    let p = Pusher::new(&upstream.addr);
    for i in 0..repos {
        push_tags(&p, &format!("team/r{i:02}"), &["1"]).await;
    }
    let gcr = FakeGcr::start(&upstream.addr, false);
    gcr.accept_login("_json_key", KEY);
    gcr
}

const KEY: &str = r#"{"type":"service_account","client_email":"m@p.iam.gserviceaccount.com"}"#;

/// Plans a mirror of the gcr front's `team` (a dry run); returns the token requests.
fn plan_from(gcr: &FakeGcr, dst: &TestRegistry, work: &std::path::Path) -> Vec<String> {
    let before = gcr.log().len();
    let report = work.join("report.json");
    let out = run(gcrsync(work)
        .arg("test")
        .args(args_for(&gcr.addr, &dst.addr, &work.join("meta")))
        .args(["--source-username", "_json_key", "--source-password", KEY])
        .arg("--report")
        .arg(&report));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read_json(&report)["totals"]["pending"], 30);
    gcr.log()[before..]
        .iter()
        .filter(|(_, path)| path.starts_with("/v2/token"))
        .map(|(_, path)| path.clone())
        .collect()
}

#[tokio::test]
async fn repository_tokens_are_fetched_many_scopes_at_a_time_or_one_by_one_where_refused() {
    let (upstream, dst) = (TestRegistry::start(), TestRegistry::start());
    let gcr = gcr_namespace(&upstream, 30).await;
    let work = tempfile::tempdir().unwrap();

    // One token for the namespace's own listing, then 30 child scopes in 25 + 5.
    let tokens = plan_from(&gcr, &dst, work.path());
    let scopes: Vec<usize> = tokens.iter().map(|t| t.matches("scope=").count()).collect();
    assert_eq!(scopes, [1, 25, 5], "{tokens:?}");
    let challenged = gcr
        .log()
        .iter()
        .filter(|(_, path)| path.starts_with("challenged"))
        .count();
    assert_eq!(challenged, 1, "only the first contact is challenged");

    // A token service that refuses several scopes: asked once, then one scope per token.
    gcr.multi_scope(MultiScope::Refuse);
    let tokens = plan_from(&gcr, &dst, work.path());
    let multi = tokens.iter().filter(|t| t.matches("scope=").count() > 1);
    assert_eq!(multi.count(), 1, "{tokens:?}");
    assert_eq!(tokens.len(), 1 + 1 + 30, "{tokens:?}");

    // One that issues a token opening only the first scope: the first request the token
    // does not open (401) makes every later token single-scope. Batches fetched before
    // that answer arrived are the only other multi-scope requests.
    gcr.multi_scope(MultiScope::FirstOnly);
    let tokens = plan_from(&gcr, &dst, work.path());
    let many = |t: &String| t.matches("scope=").count() > 1;
    let last_batch = tokens.iter().rposition(many).expect("a batch was asked");
    let first_single = tokens.iter().skip(1).position(|t| !many(t)).unwrap() + 1;
    assert!(last_batch < first_single, "{tokens:?}");
    assert!(tokens.len() <= 1 + 2 + 30, "{tokens:?}");

    // And one whose registry answers such a token with 403 rather than 401.
    gcr.multi_scope(MultiScope::FirstOnlyDenied);
    let tokens = plan_from(&gcr, &dst, work.path());
    let last_batch = tokens.iter().rposition(many).expect("a batch was asked");
    let first_single = tokens.iter().skip(1).position(|t| !many(t)).unwrap() + 1;
    assert!(last_batch < first_single, "{tokens:?}");
    assert!(tokens.len() <= 1 + 2 + 30, "{tokens:?}");
}

#[tokio::test]
async fn a_no_op_run_reuses_a_few_connections_to_a_registry() {
    use common::faults::FaultProxy;
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    for i in 0..12 {
        push_tags(&p, &format!("team/r{i:02}"), &["1", "2", "3"]).await;
    }
    let source = FaultProxy::start(&src.addr);
    let work = tempfile::tempdir().unwrap();
    let args = args_for(&source.addr, &dst.addr, &work.path().join("meta"));
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let probe = "GET /v2/team/tags/list";
    let first: Vec<String> = source
        .log()
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    assert!(first.iter().any(|r| r.starts_with(probe)), "{first:?}");

    let (requests, connections) = (source.log().len(), source.connections());
    let dst_before = dst.accesses().len();
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let sent: Vec<String> = source.log()[requests..]
        .iter()
        .map(|(m, p, _)| format!("{m} {p}"))
        .collect();
    let connections = source.connections() - connections;
    eprintln!(
        "no-op: {} requests on {connections} connections",
        sent.len()
    );
    // The records say the namespace was listed by the catalog: no probe for gcr's tree.
    let count = |prefix: &str| sent.iter().filter(|r| r.starts_with(prefix)).count();
    assert_eq!(count("GET /v2/_catalog"), 1, "{sent:?}");
    assert_eq!(count(probe), 0, "{sent:?}");
    assert_eq!(count("GET /v2/team/r"), 12, "{sent:?}");
    assert_eq!(count("HEAD /v2/team/r"), 36, "{sent:?}");
    assert_eq!(sent.len(), 1 + 12 + 36, "{sent:?}");
    assert_eq!(
        dst.accesses().len(),
        dst_before,
        "nothing sent to the target"
    );
    assert!(connections <= MAX_CONNECTIONS, "{connections} connections");
    let record = read_json(
        &work
            .path()
            .join(format!("meta/{}/team/images.json", source.addr)),
    );
    assert_eq!(record["listed_by"], "catalog");
}

#[tokio::test]
async fn a_catalog_that_fails_where_it_listed_before_falls_back_to_probing_the_namespace() {
    use common::faults::{Fault, FaultProxy, Rule};
    let (src, dst) = (TestRegistry::start(), TestRegistry::start());
    let p = Pusher::new(&src.addr);
    push_tags(&p, "team/a", &["1"]).await;
    let source = FaultProxy::start(&src.addr);
    let work = tempfile::tempdir().unwrap();
    let args = args_for(&source.addr, &dst.addr, &work.path().join("meta"));
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    push_tags(&p, "team/b", &["1"]).await;

    source.inject(Rule {
        method: "GET",
        path_contains: "/v2/_catalog".into(),
        times: 1,
        fault: Fault::Status(404, None),
    });
    let before = source.log().len();
    assert_eq!(run(gcrsync(work.path()).args(&args)).status.code(), Some(0));
    let sent: Vec<String> = source.log()[before..]
        .iter()
        .filter(|(_, p, _)| !p.contains("/manifests/"))
        .map(|(m, p, fault)| format!("{m} {} {fault}", p.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        sent[..3],
        [
            "GET /v2/_catalog Status(404, None)",
            "GET /v2/team/tags/list forwarded",
            "GET /v2/_catalog forwarded"
        ],
        "{sent:?}"
    );
    assert_eq!(Pusher::new(&dst.addr).tags("mirror/b").await, ["1"]);
}

/// Connections a run may open to one plain-HTTP registry for its listings and HEADs: 8
/// queries in flight (the first contact's connection among them), and a couple more where
/// a request starts just before the connection of one that ended is back in the pool.
/// Before the bound, this no-op opened 24.
const MAX_CONNECTIONS: usize = 8 + 3;
