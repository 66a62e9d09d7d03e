//! The manifests the gcr fake keeps itself instead of its upstream's: signed schema-1
//! manifests as gcr.io still serves them for pre-2017 images (a current distribution
//! registry will not store them), and vendor types no mirror knows.

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hyper::Response;
use serde_json::json;

use super::super::server::{Body, full};
use super::State;

/// A manifest the front serves itself: a signed schema-1 one as gcr.io serves it, or a
/// vendor type a distribution registry will not store.
#[derive(Clone)]
pub struct HeldManifest {
    /// The body served (for schema 1: the payload with `signatures` spliced in).
    pub signed: Vec<u8>,
    /// `Docker-Content-Digest` (for schema 1: sha256 of the payload, not of the body).
    pub digest: String,
    /// `Content-Type` (and the listing's `mediaType`).
    pub media_type: String,
}

pub const SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl HeldManifest {
    /// A libtrust-style signed manifest for `name:tag`: the payload is the pretty JSON
    /// manifest; the JWS `protected` header records how long the payload's formatted
    /// prefix is and its tail, so a verifier can cut the `signatures` back out. The
    /// signature bytes are random: gcrsync never verifies them (it skips schema 1).
    pub fn schema1(name: &str, tag: &str, layer: &str) -> Self {
        let payload = serde_json::to_string_pretty(&json!({
            "schemaVersion": 1,
            "name": name,
            "tag": tag,
            "architecture": "amd64",
            "fsLayers": [{"blobSum": layer}],
            "history": [{"v1Compatibility": json!({"id": hex::encode(super::super::images::random_bytes(32)), "os": "linux"}).to_string()}],
        }))
        .unwrap();
        let format_length = payload.len() - 2;
        let tail = &payload[format_length..];
        assert_eq!(tail, "\n}");
        let protected = json!({"formatLength": format_length, "formatTail": base64url(tail.as_bytes()),
                               "time": "2016-09-12T20:26:11Z"});
        let signature = json!({
            "header": {"jwk": {"crv": "P-256", "kid": "FAKE:GCR0:SCHE:MA1K:EYID", "kty": "EC",
                               "x": base64url(&super::super::images::random_bytes(32)),
                               "y": base64url(&super::super::images::random_bytes(32))},
                       "alg": "ES256"},
            "signature": base64url(&super::super::images::random_bytes(64)),
            "protected": base64url(protected.to_string().as_bytes()),
        });
        let signatures = serde_json::to_string_pretty(&json!([signature])).unwrap();
        let signed = format!(
            "{},\n   \"signatures\": {}\n}}",
            &payload[..format_length],
            signatures.replace('\n', "\n   ")
        );
        HeldManifest {
            digest: super::super::images::digest_of(payload.as_bytes()),
            signed: signed.into_bytes(),
            media_type: SCHEMA1_SIGNED.into(),
        }
    }
}

/// The held manifest `path` (`/v2/NAME/manifests/REF`) names, if this front holds one.
pub(super) fn held_for(path: &str, state: &Arc<Mutex<State>>) -> Option<HeldManifest> {
    let (name, reference) = path.strip_prefix("/v2/")?.split_once("/manifests/")?;
    let state = state.lock().unwrap();
    state
        .held
        .iter()
        .find(|((repo, tag), doc)| repo == name && (tag == reference || doc.digest == reference))
        .map(|(_, doc)| doc.clone())
}

/// Served whatever the `Accept`, as gcr does for schema 1: it has nothing else for them.
pub(super) fn held_answer(doc: &HeldManifest, head: bool) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", &doc.media_type)
        .header("docker-content-digest", &doc.digest)
        .header("content-length", doc.signed.len())
        .body(full(if head { Vec::new() } else { doc.signed.clone() }))
        .unwrap()
}

/// Adds the tags this front holds for `name` to an upstream tag list.
pub(super) fn with_held_tags(
    mut tags: Vec<String>,
    name: &str,
    state: &Arc<Mutex<State>>,
) -> Vec<String> {
    let state = state.lock().unwrap();
    for (repo, tag) in state.held.keys() {
        if repo == name && !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags
}
