#!/usr/bin/env python3
"""Writes a gcr-style namespace straight into a CNCF distribution 2.8 filesystem storage:
REPOS repositories x TAGS tags, in seconds instead of REPOS*TAGS pushes.

The layout is distribution's own (registry/storage/paths.go): blobs under
blobs/sha256/<2 hex>/<hex>/data; per repository, a `_layers` link for every blob it may
serve, a `_manifests/revisions` link for every manifest, and per tag `current/link` and
`index/sha256/<hex>/link`. Every tag is its own OCI image manifest (its tag in an
annotation) over one config and two layers shared by the repository's tags, one of them by
the whole namespace (as images of one project share their base): few files per tag, so
writing 15,000 tags takes seconds. Deterministic, so every run writes the same bytes.
Usage: scale.py STORAGE_ROOT NAMESPACE --repos 300 --tags 50
"""
import argparse, hashlib, json, os, random

V2 = "docker/registry/v2"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


class Storage:
    def __init__(self, root):
        self.root = os.path.join(root, V2)
        self.written = set()

    def blob(self, data):
        """Stores `data` once; returns its hex digest."""
        hexd = hashlib.sha256(data).hexdigest()
        if hexd not in self.written:
            write(f"{self.root}/blobs/sha256/{hexd[:2]}/{hexd}/data", data)
            self.written.add(hexd)
        return hexd

    def link(self, path, hexd):
        write(f"{self.root}/repositories/{path}/link", f"sha256:{hexd}".encode())

    def layer(self, repo, data):
        """A blob `repo` serves: stored, and linked into the repository."""
        hexd = self.blob(data)
        self.link(f"{repo}/_layers/sha256/{hexd}", hexd)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    def tag(self, repo, tag, manifest):
        hexd = self.blob(manifest)
        self.link(f"{repo}/_manifests/revisions/sha256/{hexd}", hexd)
        self.link(f"{repo}/_manifests/tags/{tag}/current", hexd)
        self.link(f"{repo}/_manifests/tags/{tag}/index/sha256/{hexd}", hexd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root"); ap.add_argument("namespace")
    ap.add_argument("--repos", type=int, default=300); ap.add_argument("--tags", type=int, default=50)
    a = ap.parse_args()
    rng = random.Random(14)
    store = Storage(a.root)
    base = rng.randbytes(32 * 1024)
    for r in range(a.repos):
        repo = f"{a.namespace}/image-{r:03d}"
        layers = [dict(store.layer(repo, base), mediaType=LAYER),
                  dict(store.layer(repo, rng.randbytes(8 * 1024)), mediaType=LAYER)]
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"image": repo}},
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        cfg = dict(store.layer(repo, config), mediaType="application/vnd.oci.image.config.v1+json")
        for t in range(a.tags):
            tag = f"v1.{t // 10}.{t % 10}"
            manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": layers,
                                   "annotations": {"org.opencontainers.image.version": tag}}, indent=3).encode()
            store.tag(repo, tag, manifest)
    print(f"wrote {a.repos * a.tags} tags in {a.repos} repositories under {a.namespace}/ to {a.root}")


if __name__ == "__main__":
    main()
