//! Builds test images on a registry through the distribution HTTP API: blobs, Docker v2
//! and OCI manifests, OCI indexes and Docker manifest lists.

use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// Registry config accepting the foreign-layer URLs of [`Pusher::refused_image`].
pub const ALLOW_FOREIGN_URLS: &str =
    "validation:\n  manifests:\n    urls:\n      allow:\n        - ^https?://\n";

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// A registry to push fixtures to, over plain HTTP.
pub struct Pusher {
    pub base: String,
    http: reqwest::Client,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Docker,
    Oci,
}

impl Pusher {
    pub fn new(addr: &str) -> Self {
        Pusher {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// A pusher for a registry with htpasswd auth: Basic credentials on every request.
    pub fn with_login(addr: &str, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Basic {basic}").parse().unwrap(),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        Pusher {
            base: format!("http://{addr}"),
            http,
        }
    }

    /// A pusher for an HTTPS registry whose certificate `ca_pem` signed.
    pub fn tls(addr: &str, ca_pem: &[u8]) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        Pusher {
            base: format!("https://{addr}"),
            http,
        }
    }

    pub async fn blob(&self, repo: &str, bytes: &[u8]) -> Value {
        let digest = digest_of(bytes);
        let start = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 202, "open upload {repo}");
        let location = start.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{location}{sep}digest={digest}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "upload {repo}@{digest}");
        json!({"digest": digest, "size": bytes.len()})
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> String {
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let response = self
            .http
            .put(url)
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap();
        let status = response.status();
        assert_eq!(
            status,
            201,
            "push {repo}:{reference}: {}",
            response.text().await.unwrap()
        );
        digest_of(body)
    }

    /// Pushes a single-platform image with `layers`; returns (manifest digest, blob digests).
    pub async fn image(
        &self,
        repo: &str,
        tag: &str,
        format: Format,
        arch: &str,
        layers: &[Vec<u8>],
    ) -> (String, Vec<String>) {
        let (manifest, blobs) = self.image_manifest(repo, format, arch, layers).await;
        let media_type = if format == Format::Oci {
            OCI_MANIFEST
        } else {
            DOCKER_MANIFEST
        };
        (self.manifest(repo, tag, media_type, &manifest).await, blobs)
    }

    async fn image_manifest(
        &self,
        repo: &str,
        format: Format,
        arch: &str,
        layers: &[Vec<u8>],
    ) -> (Vec<u8>, Vec<String>) {
        let nonce = hex::encode(random_bytes(8));
        let config = json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "nonce": nonce});
        let config = serde_json::to_vec(&config).unwrap();
        let (config_type, layer_type, media_type) = match format {
            Format::Oci => (
                "application/vnd.oci.image.config.v1+json",
                "application/vnd.oci.image.layer.v1.tar+gzip",
                OCI_MANIFEST,
            ),
            Format::Docker => (
                "application/vnd.docker.container.image.v1+json",
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                DOCKER_MANIFEST,
            ),
        };
        let mut config_desc = self.blob(repo, &config).await;
        config_desc["mediaType"] = json!(config_type);
        let mut blobs = vec![config_desc["digest"].as_str().unwrap().to_string()];
        let mut layer_descs = Vec::new();
        for layer in layers {
            let mut d = self.blob(repo, layer).await;
            d["mediaType"] = json!(layer_type);
            blobs.push(d["digest"].as_str().unwrap().to_string());
            layer_descs.push(d);
        }
        // Indented like `docker manifest push` output: verbatim copies must keep whitespace.
        let body = json!({"schemaVersion": 2, "mediaType": media_type, "config": config_desc, "layers": layer_descs});
        (serde_json::to_vec_pretty(&body).unwrap(), blobs)
    }

    /// Pushes a multi-platform index (OCI) or list (Docker); returns (index digest, child digests).
    pub async fn index(
        &self,
        repo: &str,
        tag: &str,
        format: Format,
        platforms: &[(&str, Vec<Vec<u8>>)],
    ) -> (String, Vec<String>) {
        let mut children = Vec::new();
        let mut digests = Vec::new();
        for (arch, layers) in platforms {
            let (manifest, _) = self.image_manifest(repo, format, arch, layers).await;
            let media_type = if format == Format::Oci {
                OCI_MANIFEST
            } else {
                DOCKER_MANIFEST
            };
            let digest = self
                .manifest(repo, &digest_of(&manifest), media_type, &manifest)
                .await;
            let (arch, variant) = arch
                .split_once('/')
                .map_or((*arch, None), |(a, v)| (a, Some(v)));
            let mut platform = json!({"os": "linux", "architecture": arch});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            children.push(json!({"mediaType": media_type, "digest": digest, "size": manifest.len(), "platform": platform}));
            digests.push(digest);
        }
        let media_type = if format == Format::Oci {
            OCI_INDEX
        } else {
            DOCKER_LIST
        };
        let body = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": media_type, "manifests": children}),
        )
        .unwrap();
        (self.manifest(repo, tag, media_type, &body).await, digests)
    }

    /// An image with a foreign (non-distributable) layer that names a URL: a registry
    /// started with `ALLOW_FOREIGN_URLS` accepts it, one with the default config refuses
    /// the manifest (distribution answers 500), which makes a copy of it fail.
    pub async fn refused_image(&self, repo: &str, tag: &str) {
        let mut config = self
            .blob(repo, b"{\"architecture\":\"amd64\",\"os\":\"windows\"}")
            .await;
        config["mediaType"] = json!("application/vnd.docker.container.image.v1+json");
        let mut layer = self.blob(repo, &random_bytes(500)).await;
        layer["mediaType"] = json!("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
        layer["urls"] = json!(["https://example.com/layer.tar.gz"]);
        let body = json!({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST, "config": config, "layers": [layer]});
        self.manifest(
            repo,
            tag,
            DOCKER_MANIFEST,
            &serde_json::to_vec(&body).unwrap(),
        )
        .await;
    }

    /// The digest a tag points at, by HEAD.
    pub async fn head(&self, repo: &str, reference: &str) -> Option<String> {
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        let response = self
            .http
            .head(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap();
        (response.status() == 200).then(|| {
            response.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string()
        })
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> bool {
        let response = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await
            .unwrap();
        response.status() == 200
    }

    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Vec<u8> {
        let accept = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST].join(", ");
        let url = format!("{}/v2/{repo}/manifests/{reference}", self.base);
        self.http
            .get(url)
            .header("accept", accept)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    pub async fn get_blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    pub async fn delete_manifest(&self, repo: &str, digest: &str) {
        let url = format!("{}/v2/{repo}/manifests/{digest}", self.base);
        assert_eq!(self.http.delete(url).send().await.unwrap().status(), 202);
    }

    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let url = format!("{}/v2/{repo}/tags/list", self.base);
        let response = self.http.get(url).send().await.unwrap();
        if response.status() == 404 {
            return Vec::new();
        }
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        let mut tags: Vec<String> = body["tags"].as_array().map_or(Vec::new(), |a| {
            a.iter().map(|t| t.as_str().unwrap().to_string()).collect()
        });
        tags.sort();
        tags
    }
}
