#!/usr/bin/env python3
"""The reference copier of the benchmark: the simplest fast mirror. It reads every
manifest once, uploads each unique blob once per target registry (monolithic POST + PUT,
streamed), mounts it into the other repositories that need it, then pushes manifests,
children before indexes. 8 worker threads. No retries, no metadata: a yardstick only.
Usage: refcopy.py SRC_BASE DST_BASE NAMESPACE TARGET_NS [--user U --password P] [--cafile F]
"""
import argparse, json, os, re, sys, urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(__file__))
from httpauth import Http

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json"])

class Client:
    def __init__(self, base, http, actions):
        self.base, self.http, self.actions = base, http, actions

    def open(self, method, path, data=None, headers=None):
        url = path if path.startswith("http") else self.base + path
        repo = re.search(r"/v2/(.+?)/(?:blobs|manifests|tags)/", url)
        scope = f"repository:{repo.group(1)}:{self.actions}" if repo else "registry:catalog:*"
        if "mount=" in url:
            source = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["from"][0]
            scope = f"{scope} repository:{source}:pull"
        return self.http.open(method, url, data, headers, scope)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src"); ap.add_argument("dst"); ap.add_argument("namespace"); ap.add_argument("target")
    ap.add_argument("--user"); ap.add_argument("--password"); ap.add_argument("--cafile")
    a = ap.parse_args()
    src = Client(a.src, Http(a.user, a.password, a.cafile), "pull")
    dst = Client(a.dst, Http(a.user, a.password, a.cafile), "pull,push")
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
