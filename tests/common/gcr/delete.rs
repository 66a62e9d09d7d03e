//! gcr.io's manifest deletes, when allowed (`FakeGcr::allow_deletes`): a digest some tag
//! still names is refused with 400 `GOOGLE_MANIFEST_DANGLING_TAG`, as gcr.io and Artifact
//! Registry do until the tags are gone (`gcloud container images delete` needs
//! `--force-delete-tags`); a tag is deleted by name; an untagged digest goes. The upstream,
//! distribution 2.8, cannot delete a tag, so the front hides what was deleted from the
//! listing and from manifest reads itself. Not allowed: 405 `UNSUPPORTED`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::json;

use super::super::server::Body;
use super::{FakeGcr, State, json_answer};

/// What was deleted through the front.
#[derive(Default)]
pub(super) struct Deletes {
    /// Whether DELETE is served.
    allowed: bool,
    /// (repository, tag or digest) deleted.
    gone: BTreeSet<(String, String)>,
}

impl FakeGcr {
    /// Serves manifest DELETEs as gcr.io does (see `gcr/delete.rs`).
    pub fn allow_deletes(&self) {
        self.state.lock().unwrap().deletes.allowed = true;
    }
}

/// The tags of `repo` still visible through the front.
pub(super) fn visible(tags: Vec<String>, repo: &str, state: &Arc<Mutex<State>>) -> Vec<String> {
    let state = state.lock().unwrap();
    tags.into_iter()
        .filter(|t| !state.deletes.gone.contains(&(repo.to_string(), t.clone())))
        .collect()
}

fn unknown(reference: &str) -> Response<Body> {
    json_answer(
        404,
        json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": format!("Failed to fetch \"{reference}\"")}]}),
    )
}

/// The answer to a manifest request this module owns: a DELETE, or a read of something
/// deleted. `None`: not for this module.
pub(super) async fn answer(
    req: &Request<Incoming>,
    path: &str,
    state: &Arc<Mutex<State>>,
    client: &reqwest::Client,
    upstream: &str,
) -> Option<Response<Body>> {
    let (repo, reference) = path.strip_prefix("/v2/")?.split_once("/manifests/")?;
    let key = (repo.to_string(), reference.to_string());
    let (allowed, gone) = {
        let state = state.lock().unwrap();
        (state.deletes.allowed, state.deletes.gone.contains(&key))
    };
    match req.method().as_str() {
        "GET" | "HEAD" if gone => Some(unknown(reference)),
        "DELETE" if !allowed => Some(json_answer(
            405,
            json!({"errors": [{"code": "UNSUPPORTED", "message": "deletes are not allowed"}]}),
        )),
        "DELETE" if gone => Some(unknown(reference)),
        "DELETE" => Some(delete(key, state, client, upstream).await),
        _ => None,
    }
}

async fn delete(
    key: (String, String),
    state: &Arc<Mutex<State>>,
    client: &reqwest::Client,
    upstream: &str,
) -> Response<Body> {
    let (repo, reference) = (&key.0, &key.1);
    let Some(digest) = digest_of(client, upstream, repo, reference).await else {
        return unknown(reference);
    };
    if reference.starts_with("sha256:") {
        let tags = client
            .get(format!("http://{upstream}/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap();
        let tags: Vec<String> = tags["tags"].as_array().map_or(Vec::new(), |t| {
            t.iter().map(|t| t.as_str().unwrap().to_string()).collect()
        });
        for tag in visible(tags, repo, state) {
            if digest_of(client, upstream, repo, &tag).await.as_deref() == Some(&digest) {
                let message = format!("Manifest is still referenced by tag: {tag}");
                return json_answer(
                    400,
                    json!({"errors": [{"code": "GOOGLE_MANIFEST_DANGLING_TAG", "message": message}]}),
                );
            }
        }
    }
    state.lock().unwrap().deletes.gone.insert(key);
    Response::builder()
        .status(202)
        .body(super::super::server::full(""))
        .unwrap()
}

/// What the upstream serves under `reference`.
async fn digest_of(
    client: &reqwest::Client,
    upstream: &str,
    repo: &str,
    reference: &str,
) -> Option<String> {
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
    let head = client
        .head(format!("http://{upstream}/v2/{repo}/manifests/{reference}"))
        .header("accept", accept)
        .send()
        .await
        .unwrap();
    let digest = head.headers().get("docker-content-digest")?;
    (head.status() == 200).then(|| digest.to_str().unwrap().to_string())
}
