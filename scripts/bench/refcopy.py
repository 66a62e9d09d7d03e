#!/usr/bin/env python3
"""The reference copier of the benchmark: the simplest fast mirror. It reads every
manifest once, uploads each unique blob once per target registry (monolithic POST + PUT,
streamed), mounts it into the other repositories that need it, then pushes manifests,
children before indexes. 8 worker threads. No retries, no metadata: a yardstick only.
Usage: refcopy.py SRC_BASE DST_BASE NAMESPACE TARGET_NS [--user U --password P] [--cafile F]
"""
import argparse, base64, json, ssl, threading, urllib.request
from concurrent.futures import ThreadPoolExecutor

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])

class Client:
    def __init__(self, base, auth, ctx):
        self.base, self.auth, self.ctx = base, auth, ctx

    def open(self, method, path, data=None, headers=None):
        headers = dict(headers or {})
        if self.auth:
            headers["Authorization"] = self.auth
        url = path if path.startswith("http") else self.base + path
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        return urllib.request.urlopen(req, context=self.ctx)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src"); ap.add_argument("dst"); ap.add_argument("namespace"); ap.add_argument("target")
    ap.add_argument("--user"); ap.add_argument("--password"); ap.add_argument("--cafile")
    a = ap.parse_args()
    ctx = ssl.create_default_context(cafile=a.cafile) if a.cafile else None
    auth = "Basic " + base64.b64encode(f"{a.user}:{a.password}".encode()).decode() if a.user else None
    src, dst = Client(a.src, auth, ctx), Client(a.dst, auth, ctx)
    repos = [r for r in json.load(src.open("GET", "/v2/_catalog?n=1000"))["repositories"] if r.startswith(a.namespace + "/")]
    manifests = []  # (target repo, reference, media type, body), children first
    blobs = {}      # digest -> [(src repo, size, target repo)]
    def walk(repo, ref, target):
        resp = src.open("GET", f"/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT})
        body = resp.read(); media = resp.headers["Content-Type"]; m = json.loads(body)
        for child in m.get("manifests", []):
            walk(repo, child["digest"], target)
        for d in ([m["config"]] if "config" in m else []) + m.get("layers", []):
            blobs.setdefault(d["digest"], []).append((repo, d["size"], target))
        manifests.append((target, ref, media, body))
    for repo in repos:
        target = a.target + repo[len(a.namespace):]
        for tag in json.load(src.open("GET", f"/v2/{repo}/tags/list"))["tags"]:
            walk(repo, tag, target)
    lock = threading.Lock()
    def copy(digest):
        (repo, size, first), *rest = blobs[digest]
        resp = dst.open("POST", f"/v2/{first}/blobs/uploads/")
        location = resp.headers["Location"]
        location = location if location.startswith("http") else a.dst + location
        body = src.open("GET", f"/v2/{repo}/blobs/{digest}")
        sep = "&" if "?" in location else "?"
        dst.open("PUT", f"{location}{sep}digest={digest}", data=body,
                 headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"}).read()
        done = {first}
        for _, _, target in rest:
            if target not in done:
                dst.open("POST", f"/v2/{target}/blobs/uploads/?mount={digest}&from={first}").read()
                done.add(target)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, list(blobs)))
    for target, ref, media, body in manifests:
        dst.open("PUT", f"/v2/{target}/manifests/{ref}", data=body, headers={"Content-Type": media}).read()
    print(f"refcopy: {len(blobs)} unique blobs, {len(manifests)} manifests")

if __name__ == "__main__":
    main()
