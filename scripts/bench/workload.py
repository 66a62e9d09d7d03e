#!/usr/bin/env python3
"""Pushes the benchmark workload to a registry over the distribution HTTP API.

REPOS repositories x TAGS tags; every image has a shared base layer (per "family" of
repositories) plus its own layers of 1-20 MB; every third repository's tags are 2-platform
OCI indexes. Deterministic (seeded), so every run pushes the same bytes.
Usage: workload.py HOST:PORT NAMESPACE [--repos 12] [--tags 3] [--scale 1.0] [--move N]
"""
import argparse, hashlib, json, os, random, re, sys

sys.path.insert(0, os.path.dirname(__file__))
from httpauth import Http

HTTP = Http()

def request(method, url, body=None, headers=None):
    repo = re.search(r"/v2/(.+?)/(?:blobs|manifests)/", url)
    scope = f"repository:{repo.group(1)}:pull,push" if repo else None
    with HTTP.open(method, url, body, headers, scope) as resp:
        return resp.status, dict(resp.headers), resp.read()

class Registry:
    def __init__(self, addr):
        self.base = addr if addr.startswith("http") else f"http://{addr}"
        self.known = set()

    def blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if (repo, digest) not in self.known:
            _, headers, _ = request("POST", f"{self.base}/v2/{repo}/blobs/uploads/")
            location = headers["Location"]
            if not location.startswith("http"):
                location = self.base + location
            sep = "&" if "?" in location else "?"
            request("PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
            self.known.add((repo, digest))
        return {"digest": digest, "size": len(data)}

    def manifest(self, repo, ref, media_type, body):
        request("PUT", f"{self.base}/v2/{repo}/manifests/{ref}", body, {"Content-Type": media_type})
        return {"mediaType": media_type, "digest": "sha256:" + hashlib.sha256(body).hexdigest(), "size": len(body)}

def image(reg, repo, rng, layers, arch):
    config = json.dumps({"architecture": arch, "os": "linux", "nonce": rng.random()}).encode()
    cfg = dict(reg.blob(repo, config), mediaType="application/vnd.oci.image.config.v1+json")
    descs = [dict(reg.blob(repo, l), mediaType="application/vnd.oci.image.layer.v1.tar+gzip") for l in layers]
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": cfg, "layers": descs}).encode()
    return body

def huge(reg, repo, mib):
    """One image with a single layer of `mib` MiB, uploaded in chunks (bounded memory)."""
    digest, chunk = hashlib.sha256(), random.Random(7).randbytes(1 << 20)
    _, headers, _ = request("POST", f"{reg.base}/v2/{repo}/blobs/uploads/")
    location = headers["Location"] if headers["Location"].startswith("http") else reg.base + headers["Location"]
    for i in range(mib):
        part = bytes([i % 251]) + chunk[1:]
        digest.update(part)
        _, headers, _ = request("PATCH", location, part, {"Content-Type": "application/octet-stream"})
        location = headers["Location"] if headers["Location"].startswith("http") else reg.base + headers["Location"]
    d = "sha256:" + digest.hexdigest()
    sep = "&" if "?" in location else "?"
    request("PUT", f"{location}{sep}digest={d}", b"", {"Content-Type": "application/octet-stream"})
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    cfg = dict(reg.blob(repo, config), mediaType="application/vnd.oci.image.config.v1+json")
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": mib << 20}
    body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": [layer]}).encode()
    reg.manifest(repo, "1", "application/vnd.oci.image.manifest.v1+json", body)
    print(f"pushed {repo}:1 with a {mib} MiB layer")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr"); ap.add_argument("namespace")
    ap.add_argument("--repos", type=int, default=12); ap.add_argument("--tags", type=int, default=3)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--move", type=int, default=0, help="re-push this many tags with a new layer")
    ap.add_argument("--user"); ap.add_argument("--password"); ap.add_argument("--cafile")
    ap.add_argument("--huge", type=int, default=0, help="instead: one image with a layer of this many MiB")
    a = ap.parse_args()
    global HTTP
    HTTP = Http(a.user, a.password, a.cafile)
    rng = random.Random(42)
    reg = Registry(a.addr)
    if a.huge:
        huge(reg, f"{a.namespace}/huge", a.huge)
        return
    mb = lambda n: rng.randbytes(max(1, int(n * a.scale * 1024 * 1024)))
    bases = [mb(8) for _ in range(3)]
    total = 0
    for r in range(a.repos):
        repo = f"{a.namespace}/app{r:02d}"
        for t in range(a.tags):
            tag = f"v1.{t}"
            own = [mb(rng.choice([1, 2, 5, 10, 20]))]
            if r % 3 == 2:
                children = []
                for arch in ("amd64", "arm64"):
                    body = image(reg, repo, rng, [bases[r % 3]] + own + [mb(1)], arch)
                    d = reg.manifest(repo, "sha256:" + hashlib.sha256(body).hexdigest(),
                                     "application/vnd.oci.image.manifest.v1+json", body)
                    children.append(dict(d, platform={"os": "linux", "architecture": arch}))
                index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                    "manifests": children}).encode()
                reg.manifest(repo, tag, "application/vnd.oci.image.index.v1+json", index)
            else:
                body = image(reg, repo, rng, [bases[r % 3]] + own, "amd64")
                reg.manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", body)
            total += 1
    moved_rng = random.Random()
    for m in range(a.move):
        repo = f"{a.namespace}/app{m:02d}"
        body = image(reg, repo, moved_rng, [bases[m % 3], moved_rng.randbytes(1024 * 1024)], "amd64")
        reg.manifest(repo, "v1.0", "application/vnd.oci.image.manifest.v1+json", body)
    print(f"pushed {total} tags in {a.repos} repositories to {a.addr}/{a.namespace}" + (f", moved {a.move}" if a.move else ""))

if __name__ == "__main__":
    main()
