//! `--prune` against a gcr.io-style target, which refuses to delete a digest some tag
//! still names (`GOOGLE_MANIFEST_DANGLING_TAG`): gcrsync deletes the mirrored tags by name
//! first, then the digest. The target is the gcr front (tests/common/gcr/delete.rs) over
//! CNCF distribution.

mod common;

use common::gcr::FakeGcr;
use common::images::random_bytes;
use common::*;
use serde_json::Value;

/// `GET path` on the gcr front with a pull token for `repo`: (status, JSON body).
async fn gcr_get(gcr: &FakeGcr, repo: &str, path: &str) -> (u16, Value) {
    let http = reqwest::Client::new();
    let token: Value = http
        .get(format!(
            "http://{}/v2/token?scope=repository:{repo}:pull",
            gcr.addr
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let response = http
        .get(format!("http://{}{path}", gcr.addr))
        .bearer_auth(token["token"].as_str().unwrap())
        .header("accept", images::OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The tags the gcr front lists for `repo`, sorted.
async fn listed_tags(gcr: &FakeGcr, repo: &str) -> Vec<String> {
    let (_, listed) = gcr_get(gcr, repo, &format!("/v2/{repo}/tags/list")).await;
    let mut tags: Vec<String> = serde_json::from_value(listed["tags"].clone()).unwrap();
    tags.sort();
    tags
}

#[tokio::test]
async fn prune_deletes_the_tags_first_where_the_target_refuses_a_tagged_digest() {
    let src = TestRegistry::start();
    let p = Pusher::new(&src.addr);
    let (v1, _) = p
        .image("team/app", "v1", Format::Oci, "amd64", &[random_bytes(900)])
        .await;
    let body = p.get_manifest("team/app", &v1).await;
    p.manifest("team/app", "v1-alias", images::OCI_MANIFEST, &body)
        .await;
    p.image("team/app", "v2", Format::Oci, "amd64", &[random_bytes(900)])
        .await;
    let upstream = TestRegistry::start();
    let gcr = FakeGcr::start(&upstream.addr, true);
    gcr.allow_deletes();
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("meta");
    let sync = |extra: &[&str]| {
        run(gcrsync(work.path())
            .args(args_for(&src.addr, &gcr.addr, &meta))
            .args(extra))
    };
    let first = sync(&[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(
        listed_tags(&gcr, "mirror/app").await,
        ["v1", "v1-alias", "v2"]
    );

    p.delete_manifest("team/app", &v1).await;
    let seen = gcr.log().len();
    let pruned = sync(&["--prune"]);
    assert_eq!(pruned.status.code(), Some(0), "{}", stderr(&pruned));
    let deletes: Vec<String> = gcr.log()[seen..]
        .iter()
        .filter(|(method, _)| method == "DELETE")
        .map(|(_, path)| path.trim_end_matches('?').to_string())
        .collect();
    let by_digest = format!("/v2/mirror/app/manifests/{v1}");
    assert_eq!(deletes.first(), Some(&by_digest), "{deletes:?}");
    assert_eq!(deletes.last(), Some(&by_digest), "{deletes:?}");
    let mut tags = deletes[1..deletes.len() - 1].to_vec();
    tags.sort();
    assert_eq!(
        tags,
        [
            "/v2/mirror/app/manifests/v1",
            "/v2/mirror/app/manifests/v1-alias"
        ]
    );
    assert_eq!(listed_tags(&gcr, "mirror/app").await, ["v2"]);
    let (status, _) = gcr_get(&gcr, "mirror/app", &by_digest).await;
    assert_eq!(status, 404, "the untagged digest went too");
    let record = read_json(&meta.join(format!("{}/team/images.json", src.addr)));
    for tag in ["v1", "v1-alias"] {
        let t = &record["images"]["app"]["tags"][tag];
        assert!(t["pruned_at"].is_string(), "{tag}: {t}");
    }
    assert!(record["images"]["app"]["tags"]["v2"]["pruned_at"].is_null());
}
