//! The OCI 1.1 referrers API of the gcr front, as a registry that has it answers: every
//! manifest with a `subject` pushed through the front (or handed to `push_referrer`) is
//! indexed under its subject at push time, the push is answered with `OCI-Subject`, and
//! `GET /v2/<name>/referrers/<digest>` answers an image index of descriptors (with the
//! manifest's `artifactType` or config media type, and its annotations), filtered by
//! `artifactType` (`OCI-Filters-Applied`), paginated with `Link`. An unknown subject has
//! an empty index, never a 404 (the spec's rule). Off by default: the upstream, CNCF
//! distribution 2.8, has no such API, and the front then forwards (404).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use super::super::server::{Body, full};
use super::{FakeGcr, State};

impl FakeGcr {
    /// Serves the OCI 1.1 referrers API (`page_size` descriptors per page) and answers
    /// manifest pushes that have a `subject` with `OCI-Subject`, as a 1.1 registry does.
    pub fn referrers_api(&self, page_size: usize) {
        let mut state = self.state.lock().unwrap();
        state.referrers.enabled = true;
        state.referrers.page_size = page_size;
    }

    /// Pushes a manifest to the upstream as a client of this registry would, indexing
    /// it under its `subject` (if any) for the referrers API; returns its digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let upstream = self.upstream.clone();
        let digest = super::super::images::Pusher::new(&upstream)
            .manifest(repo, reference, media_type, body)
            .await;
        index_push(&self.state, repo, body, media_type);
        digest
    }
}

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The front's referrers index.
#[derive(Default)]
pub(super) struct Referrers {
    /// Whether the API is served (and pushes answered with `OCI-Subject`).
    pub(super) enabled: bool,
    /// Descriptors per page when the client does not ask for fewer.
    pub(super) page_size: usize,
    /// (repository, subject digest) → descriptors, in push order.
    pub(super) index: BTreeMap<(String, String), Vec<Value>>,
}

/// The subject and referrers descriptor of a manifest body, if it has a subject.
fn describe(body: &[u8], media_type: &str) -> Option<(String, Value)> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let subject = doc["subject"]["digest"].as_str()?.to_string();
    let artifact_type = doc["artifactType"]
        .as_str()
        .or_else(|| doc["config"]["mediaType"].as_str());
    let mut descriptor = json!({
        "mediaType": doc["mediaType"].as_str().unwrap_or(media_type),
        "digest": super::super::images::digest_of(body),
        "size": body.len(),
    });
    if let Some(kind) = artifact_type {
        descriptor["artifactType"] = json!(kind);
    }
    if let Some(annotations) = doc["annotations"].as_object().filter(|a| !a.is_empty()) {
        descriptor["annotations"] = json!(annotations);
    }
    Some((subject, descriptor))
}

/// Indexes a stored manifest; returns its subject when it has one.
pub(super) fn index_push(
    state: &Arc<Mutex<State>>,
    repo: &str,
    body: &[u8],
    media_type: &str,
) -> Option<String> {
    let (subject, descriptor) = describe(body, media_type)?;
    let mut state = state.lock().unwrap();
    let list = state
        .referrers
        .index
        .entry((repo.to_string(), subject.clone()))
        .or_default();
    if !list.iter().any(|d| d["digest"] == descriptor["digest"]) {
        list.push(descriptor);
    }
    Some(subject)
}

/// A manifest PUT through the front, while the API is on: stored upstream, then indexed
/// and answered with `OCI-Subject` as a 1.1 registry does. `None`: not for this module.
pub(super) async fn put_manifest(
    req: Request<Incoming>,
    state: &Arc<Mutex<State>>,
    client: &reqwest::Client,
    upstream: &str,
    me: &str,
) -> Result<Response<Body>, Request<Incoming>> {
    let path = req.uri().path().to_string();
    let enabled = state.lock().unwrap().referrers.enabled;
    let Some((repo, reference)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.split_once("/manifests/"))
        .filter(|_| enabled && req.method() == "PUT")
    else {
        return Err(req);
    };
    let (repo, reference) = (repo.to_string(), reference.to_string());
    let media_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body = http_body_util::BodyExt::collect(req.into_body())
        .await
        .unwrap()
        .to_bytes();
    let stored = client
        .put(format!("http://{upstream}/v2/{repo}/manifests/{reference}"))
        .header("content-type", &media_type)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let status = stored.status().as_u16();
    let mut answer = Response::builder().status(status);
    for (name, value) in stored.headers() {
        let value = value.to_str().unwrap_or_default().replace(upstream, me);
        answer = answer.header(name, value);
    }
    if status == 201
        && let Some(subject) = index_push(state, &repo, &body, &media_type)
    {
        answer = answer.header("oci-subject", subject);
    }
    Ok(answer.body(full(stored.bytes().await.unwrap())).unwrap())
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /v2/<name>/referrers/<digest>` while the API is on; `None` otherwise.
pub(super) fn answer(path: &str, query: &str, state: &Arc<Mutex<State>>) -> Option<Response<Body>> {
    let (repo, subject) = path.strip_prefix("/v2/")?.split_once("/referrers/")?;
    let state = state.lock().unwrap();
    if !state.referrers.enabled {
        return None;
    }
    let all = state
        .referrers
        .index
        .get(&(repo.to_string(), subject.to_string()))
        .cloned()
        .unwrap_or_default();
    let kind = query_param(query, "artifactType");
    let matching: Vec<Value> = all
        .into_iter()
        .filter(|d| kind.as_ref().is_none_or(|k| d["artifactType"] == json!(k)))
        .collect();
    let size = query_param(query, "n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(state.referrers.page_size)
        .max(1);
    let from: usize = query_param(query, "page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = matching.iter().skip(from).take(size).cloned().collect();
    let mut response = Response::builder()
        .status(200)
        .header("content-type", OCI_INDEX);
    if kind.is_some() {
        response = response.header("oci-filters-applied", "artifactType");
    }
    if from + size < matching.len() {
        let mut next = format!(
            "/v2/{repo}/referrers/{subject}?n={size}&page={}",
            from + size
        );
        if let Some(k) = &kind {
            next.push_str(&format!(
                "&{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("artifactType", k)
                    .finish()
            ));
        }
        response = response.header("link", format!("<{next}>; rel=\"next\""));
    }
    let body = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": page});
    Some(response.body(full(body.to_string())).unwrap())
}
