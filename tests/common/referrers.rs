//! Referrer artifacts as signing and SBOM tools push them: OCI 1.1 manifests with a
//! `subject` (notation, oras, `cosign --registry-referrers-mode oci-1-1`), and cosign's
//! classic signature manifests tagged `sha256-<hex>.sig` (no subject).

use serde_json::{Value, json};

use super::images::{OCI_INDEX, OCI_MANIFEST, Pusher, digest_of};

/// The artifact type of cosign's classic signature (its config media type is not one).
pub const COSIGN_SIG: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// A notation signature's artifact type.
pub const NOTATION_SIG: &str = "application/vnd.cncf.notary.signature";
/// An SPDX SBOM's artifact type.
pub const SPDX: &str = "application/spdx+json";
/// The empty config of OCI 1.1 artifacts.
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// The body of an artifact manifest with a `subject` (`subject_type`, `subject`),
/// whose one layer `payload` is pushed to `repo` first. Returns (body, digest).
pub async fn artifact(
    p: &Pusher,
    repo: &str,
    artifact_type: &str,
    subject: (&str, &[u8]),
    payload: &[u8],
) -> (Vec<u8>, String) {
    let mut config = p.blob(repo, b"{}").await;
    config["mediaType"] = json!(EMPTY);
    let mut layer = p.blob(repo, payload).await;
    layer["mediaType"] = json!(artifact_type);
    let (subject_type, subject_body) = subject;
    let body = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": [layer],
        "subject": {"mediaType": subject_type, "digest": digest_of(subject_body), "size": subject_body.len()},
        "annotations": {"org.opencontainers.image.created": "2026-12-01T00:00:00Z"},
    });
    let body = serde_json::to_vec(&body).unwrap();
    let digest = digest_of(&body);
    (body, digest)
}

/// cosign's classic signature manifest (no subject), for the tag `sha256-<hex>.sig`.
pub async fn cosign_signature(p: &Pusher, repo: &str, signed: &str) -> Vec<u8> {
    let mut config = p.blob(repo, b"{\"architecture\":\"\",\"os\":\"\"}").await;
    config["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
    let payload = json!({"critical": {"image": {"docker-manifest-digest": signed}}}).to_string();
    let mut layer = p.blob(repo, payload.as_bytes()).await;
    layer["mediaType"] = json!(COSIGN_SIG);
    layer["annotations"] = json!({"dev.cosignproject.cosign/signature": "MEUCIQ=="});
    let body =
        json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
    serde_json::to_vec(&body).unwrap()
}

/// A notation signature of `signed` (an OCI manifest) pushed to a registry without the
/// referrers API as a client does there: the artifact by digest, then the subject's
/// fallback index `sha256-<hex>` listing it (and `also`, signatures pushed before).
/// Returns the signature's digest.
pub async fn fallback_signature(
    p: &Pusher,
    repo: &str,
    signed: &str,
    payload: &str,
    also: &[Value],
) -> (String, Value) {
    let subject = p.get_manifest(repo, signed).await;
    let (body, sig) = artifact(
        p,
        repo,
        NOTATION_SIG,
        (OCI_MANIFEST, &subject),
        payload.as_bytes(),
    )
    .await;
    p.manifest(repo, &sig, OCI_MANIFEST, &body).await;
    let entry = json!({"mediaType": OCI_MANIFEST, "digest": sig, "size": body.len(), "artifactType": NOTATION_SIG});
    let mut entries = also.to_vec();
    entries.push(entry.clone());
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
    let index = serde_json::to_vec(&index).unwrap();
    p.manifest(repo, &fallback_tag(signed), OCI_INDEX, &index)
        .await;
    (sig, entry)
}

/// The `sha256-<hex>` tag of a digest.
pub fn fallback_tag(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// The digests an index lists.
pub fn listed(index: &Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|d| d["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}
