#!/usr/bin/env bash
# Installs the gcrsync binary for this runner, for action.yml. In order:
#   GCRSYNC_RELEASE_DIR set  → the release assets in that directory (tests, mirrors);
#   a version tag (v1.2.3)   → that release's asset, verified against its SHA256SUMS;
#   anything else (a branch, a SHA, `uses: ./`) → built from this checkout with cargo.
# A checksum mismatch always fails: it is never "fixed" by building instead.
set -euo pipefail

action_path=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/../.." && pwd)}
dest="${RUNNER_TEMP:-/tmp}/gcrsync-bin"
mkdir -p "$dest"

case "${RUNNER_OS:-Linux}/${RUNNER_ARCH:-X64}" in
  Linux/X64) target=x86_64-unknown-linux-musl ;;
  Linux/ARM64) target=aarch64-unknown-linux-musl ;;
  macOS/ARM64) target=aarch64-apple-darwin ;;
  *) target="" ;;
esac
version=${GCRSYNC_ACTION_VERSION:-${GCRSYNC_ACTION_REF:-}}
repository=${GCRSYNC_ACTION_REPOSITORY:-gcrsync/gcrsync}
server=${GCRSYNC_SERVER_URL:-https://github.com}
asset="gcrsync-$target.tar.gz"

fetch() { # name → $dest/name
  if [ -n "${GCRSYNC_RELEASE_DIR:-}" ]; then
    cp "$GCRSYNC_RELEASE_DIR/$1" "$dest/$1"
  else
    curl -fsSL --retry 3 -o "$dest/$1" "$server/$repository/releases/download/$version/$1"
  fi
}

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

install_release() {
  fetch "$asset" && fetch SHA256SUMS || return 2
  expected=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1 }' "$dest/SHA256SUMS")
  actual=$(sha256 "$dest/$asset")
  if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
    echo "::error title=gcrsync install::checksum mismatch for $asset (expected ${expected:-none}, got $actual); refusing to run it"
    exit 1
  fi
  tar -xzf "$dest/$asset" -C "$dest" gcrsync
}

build_from_source() {
  echo "::notice title=gcrsync install::no release for '${version:-this checkout}'; building from source with cargo"
  cargo build --release --locked --manifest-path "$action_path/Cargo.toml"
  cp "$action_path/target/release/gcrsync" "$dest/gcrsync"
}

if [ -n "$target" ] && { [ -n "${GCRSYNC_RELEASE_DIR:-}" ] || [[ "$version" =~ ^v[0-9] ]]; }; then
  if ! install_release; then
    [ -f "$action_path/Cargo.toml" ] || { echo "::error title=gcrsync install::cannot download $asset of $version"; exit 1; }
    build_from_source
  fi
elif [ -f "$action_path/Cargo.toml" ]; then
  build_from_source
else
  echo "::error title=gcrsync install::no release binary for ${RUNNER_OS:-?}/${RUNNER_ARCH:-?} and no source to build"
  exit 1
fi

chmod +x "$dest/gcrsync"
"$dest/gcrsync" --version
echo "bin=$dest/gcrsync" >>"${GITHUB_OUTPUT:-/dev/null}"
