//! gcr.io's `tags/list` as the gcr front answers it: the repository's own tags with a
//! `manifest` map (digest → media type, tags, upload time, numbers as strings) and its
//! direct `child` repositories, found from the upstream's catalog; or, when told, a plain
//! registry's answer. Tags the front holds itself are listed with the upstream's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use hyper::Response;
use serde_json::{Value, json};

use super::super::server::Body;
use super::held::{held_for, with_held_tags};
use super::{State, json_answer};

/// A plain registry's answer for `name`, with the tags this front holds.
pub(super) async fn plain_tags(
    client: &reqwest::Client,
    upstream: &str,
    name: &str,
    state: &Arc<Mutex<State>>,
) -> Response<Body> {
    let tags = match upstream_tags(client, upstream, name).await {
        Ok(tags) => tags,
        Err(answer) => return answer,
    };
    let tags = super::delete::visible(with_held_tags(tags, name, state), name, state);
    json_answer(200, json!({"name": name, "tags": tags}))
}

/// The upstream's own tags of `name`, or its error answer (passed on as it is).
async fn upstream_tags(
    client: &reqwest::Client,
    upstream: &str,
    name: &str,
) -> Result<Vec<String>, Response<Body>> {
    let own = client
        .get(format!("http://{upstream}/v2/{name}/tags/list"))
        .send()
        .await
        .unwrap();
    let status = own.status().as_u16();
    let body: Value = serde_json::from_slice(&own.bytes().await.unwrap()).unwrap();
    if status != 200 {
        return Err(json_answer(status, body));
    }
    Ok(body["tags"].as_array().map_or(Vec::new(), |t| {
        t.iter().map(|t| t.as_str().unwrap().to_string()).collect()
    }))
}

/// gcr's answer for `name`: its own tags with their digests, and its direct children.
pub(super) async fn gcr_tags(
    client: &reqwest::Client,
    upstream: &str,
    name: &str,
    state: &Arc<Mutex<State>>,
) -> Response<Body> {
    let catalog = client
        .get(format!("http://{upstream}/v2/_catalog?n=1000"))
        .send()
        .await
        .unwrap();
    let catalog: Value = serde_json::from_slice(&catalog.bytes().await.unwrap()).unwrap();
    let repos: Vec<String> = catalog["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let prefix = format!("{name}/");
    let children: BTreeSet<String> = repos
        .iter()
        .filter_map(|r| r.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap().to_string())
        .collect();
    let tags = upstream_tags(client, upstream, name)
        .await
        .unwrap_or_default();
    let tags = super::delete::visible(with_held_tags(tags, name, state), name, state);
    if tags.is_empty() && children.is_empty() {
        return json_answer(
            404,
            json!({"errors": [{"code": "NAME_UNKNOWN", "message": "repository name not known to registry"}]}),
        );
    }
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
    let mut manifests: BTreeMap<String, (String, Vec<String>, i64)> = BTreeMap::new();
    for tag in &tags {
        let held = held_for(&format!("/v2/{name}/manifests/{tag}"), state);
        let (digest, media_type) = match held {
            Some(doc) => (doc.digest, doc.media_type),
            None => {
                let head = client
                    .head(format!("http://{upstream}/v2/{name}/manifests/{tag}"))
                    .header("accept", accept)
                    .send()
                    .await
                    .unwrap();
                let digest = head.headers()["docker-content-digest"]
                    .to_str()
                    .unwrap()
                    .to_string();
                (
                    digest,
                    head.headers()["content-type"].to_str().unwrap().to_string(),
                )
            }
        };
        let uploaded = state
            .lock()
            .unwrap()
            .uploaded
            .get(&(name.to_string(), tag.clone()))
            .copied()
            .unwrap_or(1_700_000_000_000);
        let entry = manifests
            .entry(digest)
            .or_insert((media_type, Vec::new(), uploaded));
        entry.1.push(tag.clone());
        entry.2 = entry.2.max(uploaded);
    }
    let hide = state.lock().unwrap().no_listing_media_types;
    let manifest: serde_json::Map<String, Value> = manifests
        .into_iter()
        .map(|(digest, (media_type, tag, uploaded))| {
            let mut entry = json!({"imageSizeBytes": "0", "layerId": "", "mediaType": media_type, "tag": tag,
                               "timeCreatedMs": "0", "timeUploadedMs": uploaded.to_string()});
            if hide {
                entry.as_object_mut().unwrap().remove("mediaType");
            }
            (digest, entry)
        })
        .collect();
    json_answer(
        200,
        json!({"child": children, "manifest": manifest, "name": name, "tags": tags}),
    )
}
