#!/usr/bin/env bash
# An offline demo: two local registries, a few images pushed to the first (a single-arch
# image, an alias, and a 3-platform OCI index), then gcrsync mirrors them, twice. The
# metadata it wrote (images.json, README.md, CHANGELOG.md) is left in a folder named at
# the end (DEMO_OUT=DIR chooses it). DEMO_RELEASE=1 builds and runs the release binary.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v docker-registry >/dev/null; then
  echo "== installing CNCF distribution (docker-registry)"
  apt-get install -y --no-install-recommends docker-registry >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends docker-registry >/dev/null; } ||
    { echo "could not install docker-registry; install it (apt-get install docker-registry) and rerun" >&2; exit 1; }
fi

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
out=${DEMO_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gcrsync-demo.XXXXXX")}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/metadata"
start_registry() { # name port
  mkdir -p "$work/$1"
  cat >"$work/$1/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/$1/data}}
http: {addr: 127.0.0.1:$2}
YML
  docker-registry serve "$work/$1/config.yml" >/dev/null 2>&1 &
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$2/v2/" >/dev/null && return; sleep 0.1; done
  echo "registry $1 did not start" >&2; exit 1
}
SRC=127.0.0.1:${DEMO_SOURCE_PORT:-15001}
DST=127.0.0.1:${DEMO_TARGET_PORT:-15002}
start_registry source "${SRC#*:}"
start_registry target "${DST#*:}"

push_blob() { # repo file -> prints digest
  local digest="sha256:$(sha256sum "$2" | cut -d' ' -f1)" location
  location=$(curl -fsS -X POST -D - -o /dev/null "http://$SRC/v2/$1/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case $location in http*) ;; *) location="http://$SRC$location" ;; esac
  curl -fsS -X PUT -H "Content-Type: application/octet-stream" --data-binary "@$2" "$location&digest=$digest" >/dev/null
  echo "$digest"
}
push_manifest() { # repo ref media-type file -> prints digest
  curl -fsS -X PUT -H "Content-Type: $3" --data-binary "@$4" "http://$SRC/v2/$1/manifests/$2" >/dev/null
  echo "sha256:$(sha256sum "$4" | cut -d' ' -f1)"
}
image() { # repo ref arch -> prints "digest size" of the manifest
  local f="$work/blob.$RANDOM" c="$work/config.$RANDOM" m="$work/manifest.$RANDOM"
  head -c 300000 /dev/urandom >"$f"
  printf '{"architecture":"%s","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' "$3" >"$c"
  local ld cd
  ld=$(push_blob "$1" "$f"); cd=$(push_blob "$1" "$c")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' \
    "$cd" "$(stat -c%s "$c")" "$ld" "$(stat -c%s "$f")" >"$m"
  echo "$(push_manifest "$1" "$2" application/vnd.oci.image.manifest.v1+json "$m") $(stat -c%s "$m")"
}

echo "== pushing demo images to $SRC/demo"
read -r d1 _ < <(image demo/pause 3.9 amd64)
curl -fsS -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$SRC/v2/demo/pause/manifests/$d1" >"$work/alias"
push_manifest demo/pause latest application/vnd.oci.image.manifest.v1+json "$work/alias" >/dev/null
entries=()
for arch in amd64 arm64 s390x; do
  read -r d s < <(image demo/etcd "$arch-tmp" "$arch")
  entries+=("{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"$d\",\"size\":$s,\"platform\":{\"os\":\"linux\",\"architecture\":\"$arch\"}}")
done
(IFS=,; printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' "${entries[*]}") >"$work/index"
push_manifest demo/etcd 3.5.9-0 application/vnd.oci.image.index.v1+json "$work/index" >/dev/null

# Cargo says where it put the binary: CARGO_TARGET_DIR, build.target-dir and the profile
# all change that, so the path is never assumed.
profile=(); [ "${DEMO_RELEASE:-}" = 1 ] && profile=(--release)
bin=$(cargo build --quiet "${profile[@]}" --bin gcrsync --message-format=json |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n1)
[ -x "$bin" ] || { echo "cargo build did not report the gcrsync binary" >&2; exit 1; }
meta="$out/metadata"
args=(--source "$SRC/demo" --target "$DST/mirror" --insecure-registry "$SRC,$DST" --include-tags '^[0-9l]' --metadata-dir "$meta")
echo; echo "== gcrsync test (dry run)"; "$bin" test "${args[@]}"
echo; echo "== gcrsync sync"; "$bin" sync "${args[@]}"
echo; echo "== gcrsync sync again (nothing to do)"; "$bin" sync "${args[@]}"
echo; echo "== $meta/$SRC/demo/images.json"; cat "$meta/$SRC/demo/images.json"
echo; echo "== $meta/$SRC/demo/README.md (rendered)"; cat "$meta/$SRC/demo/README.md"
echo; echo "== $meta/CHANGELOG.md"; cat "$meta/CHANGELOG.md"
echo; echo "== the metadata is left in $meta:"; (cd "$meta" && find . -type f | sort)
