#!/usr/bin/env bash
# Installs the gcrsync release binary for this runner (the first step of action.yml).
#
# What to install: the `version` input when set, else the ref the action was used at
# (`github.action_ref`):
#   vX.Y.Z (or X.Y.Z)  → that release (also a prerelease named so, e.g. v2.1.0-rc.1);
#   vX, vX.Y           → the newest release of that series that is neither a draft nor a
#                        prerelease, found through the REST API (the moving tags vX and vX.Y
#                        that release.yml pushes have no release, hence no downloads);
#   latest             → the newest such release overall;
#   anything else (a branch, a SHA, `uses: ./`) → built from the action's checkout with
#                        cargo, with a warning saying why.
# A release that exists but cannot be downloaded or verified fails the step: it is never
# replaced by a build. Assets come from `github.server_url`, the release list from
# `github.api_url` (with the workflow token when there is one: it is never printed, and
# curl never forwards it to another host). JSON is read with grep and sed, so the script
# needs only bash, curl, tar, and sha256sum or shasum: jq and python are not on every runner.
set -euo pipefail

# Runner OS/ARCH → the release asset's target triple. Must list exactly the targets of
# release.yml's build matrix (tests/install.rs checks both ways).
targets="Linux/X64=x86_64-unknown-linux-musl Linux/ARM64=aarch64-unknown-linux-musl macOS/ARM64=aarch64-apple-darwin"

action_path=${GITHUB_ACTION_PATH:-$(cd "$(dirname "$0")/../.." && pwd)}
repository=${GCRSYNC_ACTION_REPOSITORY:-}
ref=${GCRSYNC_ACTION_REF:-}
wanted=${GCRSYNC_ACTION_VERSION:-}
server=${GCRSYNC_SERVER_URL:-https://github.com}
server=${server%/}
api=${GCRSYNC_API_URL:-https://api.github.com}
api=${api%/}
token=${GCRSYNC_ACTION_TOKEN:-}
unset GCRSYNC_ACTION_TOKEN
# The runner does not always fill github.action_ref/action_repository inside a composite
# action (actions/runner#2473); the path it checked the action out to names both:
# …/_actions/OWNER/REPO/REF[/SUBDIR]. A `uses: ./` checkout is never under _actions/.
if [[ "$action_path" == */_actions/*/*/* ]]; then
  IFS=/ read -r path_owner path_repo path_ref _ <<<"${action_path##*/_actions/}"
  repository=${repository:-$path_owner/$path_repo}
  ref=${ref:-$path_ref}
fi

work="${RUNNER_TEMP:-/tmp}/gcrsync-install"
dest="${RUNNER_TEMP:-/tmp}/gcrsync-bin"
rm -rf "$work"
mkdir -p "$work" "$dest"

fail() {
  echo "::error title=gcrsync install::$*"
  exit 1
}
debug() { echo "::debug::gcrsync install: $*"; }

platform() {
  local os=${RUNNER_OS:-$(uname -s)} arch=${RUNNER_ARCH:-$(uname -m)}
  case "$os" in Linux | linux) os=Linux ;; Darwin | macOS) os=macOS ;; esac
  case "$arch" in x86_64 | amd64 | X64) arch=X64 ;; aarch64 | arm64 | ARM64) arch=ARM64 ;; esac
  echo "$os/$arch"
}

target_for() {
  local pair
  for pair in $targets; do
    if [ "${pair%%=*}" = "$1" ]; then
      echo "${pair#*=}"
      return
    fi
  done
}

# --- Reading the release list -----------------------------------------------------------

# GET an API URL; the body goes to $2, the headers to $3; prints the HTTP status (000 when
# nothing answered). The token travels in curl's config on stdin, never in its arguments.
api_get() {
  { [ -z "$token" ] || printf 'header = "Authorization: Bearer %s"\n' "$token"; } |
    curl --config - -sS -L --retry 3 --connect-timeout 20 --max-time 60 \
      -H 'Accept: application/vnd.github+json' -H 'X-GitHub-Api-Version: 2022-11-28' \
      -D "$3" -o "$2" -w '%{http_code}' "$1" || true
}

origin() { sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^/]+).*#\1#' <<<"$1"; }

# The API's own words on a failed call ("API rate limit exceeded ...", "Not Found").
api_message() {
  grep -oE '"message"[[:space:]]*:[[:space:]]*"[^"]*"' "$1" 2>/dev/null | head -n1 |
    sed -E 's/.*:[[:space:]]*"(.*)"/\1/' || true
}

# Prints "TAG" for every release that is neither a draft nor a prerelease. GitHub's release
# objects carry `tag_name`, `draft` and `prerelease` exactly once each and no nested object
# has those keys; inside strings every quote is escaped, so `"draft":` cannot match text in
# a release's notes. The three keys of one release are grouped in whatever order they come.
stable_tags() {
  local key value tag="" draft="" pre=""
  while IFS='=' read -r key value; do
    case "$key" in
      tag_name) [ -z "$tag" ] || return 1; tag=$value ;;
      draft) [ -z "$draft" ] || return 1; draft=$value ;;
      prerelease) [ -z "$pre" ] || return 1; pre=$value ;;
    esac
    if [ -n "$tag" ] && [ -n "$draft" ] && [ -n "$pre" ]; then
      [ "$draft" != false ] || [ "$pre" != false ] || echo "$tag"
      tag="" draft="" pre=""
    fi
  done < <(grep -oE '"(tag_name|draft|prerelease)"[[:space:]]*:[[:space:]]*("[^"]*"|true|false)' "$1" |
    sed -E 's/^"([a-z_]+)"[[:space:]]*:[[:space:]]*"?([^"]*)"?$/\1=\2/')
  [ -z "$tag$draft$pre" ]
}

# Is version tag $1 newer than $2 (both vX.Y.Z)?
newer() {
  local a1 a2 a3 b1 b2 b3
  IFS=. read -r a1 a2 a3 <<<"${1#v}"
  IFS=. read -r b1 b2 b3 <<<"${2#v}"
  ((10#$a1 > 10#$b1 || (10#$a1 == 10#$b1 && (10#$a2 > 10#$b2 || (10#$a2 == 10#$b2 && 10#$a3 > 10#$b3)))))
}

# Sets $best to the newest stable release of series $1 ("v1", "v1.2", or "" for all),
# across every page. Runs in the main shell so that `fail` reaches the log.
newest_release() {
  local series=$1 url="$api/repos/$repository/releases?per_page=100" page=0 status tag why
  best=""
  while [ -n "$url" ]; do
    page=$((page + 1))
    [ "$page" -le 50 ] || fail "the release list of $repository at $api has more than 50 pages; set the version input (e.g. version: v1.2.3)"
    debug "GET $url"
    status=$(api_get "$url" "$work/page.json" "$work/page.headers")
    if [ "$status" != 200 ]; then
      why=$(api_message "$work/page.json")
      [ -n "$token" ] || why="${why:+$why; }no token was given, and GitHub allows 60 unauthenticated API requests an hour"
      fail "cannot list the releases of $repository at $api (HTTP $status${why:+: $why}) to resolve '$spec'; retry later, or set the version input to a release (e.g. version: v1.2.3)"
    fi
    stable_tags "$work/page.json" >"$work/tags" ||
      fail "unexpected release list from $url (a release without exactly one tag_name, draft and prerelease)"
    while read -r tag; do
      [[ "$tag" =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
      [ -z "$series" ] || [[ "$tag." == "$series."* ]] || continue
      if [ -z "$best" ] || newer "$tag" "$best"; then best=$tag; fi
    done <"$work/tags"
    url=$(tr -d '\r' <"$work/page.headers" | grep -i '^link:' | tail -n1 |
      sed -n 's/.*<\([^>]*\)>; *rel="next".*/\1/p' || true)
    if [ -n "$url" ] && [ "$(origin "$url")" != "$(origin "$api")" ]; then
      fail "the release list's next page is on another host ($(origin "$url")); refusing to send the token there"
    fi
  done
}

# --- Installing ---------------------------------------------------------------------------

# GET $1 into $2 following redirects (GitHub sends release assets to another host);
# prints the final HTTP status. No token: release assets of public repositories need none.
download() {
  curl -sS -L --retry 3 --connect-timeout 20 --max-time 900 -o "$2" -w '%{http_code}' "$1" || true
}

sha256() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

# Why a release download answered $2: the release may not exist, or lack the asset.
missing() {
  local tag=$1 status=$2 url=$3 what="release $1 of $repository"
  if [ "$status" = 404 ]; then
    case "$(api_get "$api/repos/$repository/releases/tags/$tag" "$work/release.json" "$work/release.headers")" in
      404) fail "there is no release $tag of $repository ($url answered 404); use a published release (see $server/$repository/releases) or the version input" ;;
      200) fail "$what has no asset ${url##*/} for this runner ($url answered 404); pick another release with the version input" ;;
    esac
  fi
  fail "cannot download ${url##*/} of $what (HTTP $status from $url); nothing was built instead: retry the job, or pin another release with the version input"
}

install_release() {
  local tag=$1 target=$2 asset="gcrsync-$2.tar.gz" base="$server/$repository/releases/download/$1" status
  debug "downloading $base/$asset"
  status=$(download "$base/$asset" "$work/$asset")
  [ "$status" = 200 ] || missing "$tag" "$status" "$base/$asset"
  status=$(download "$base/SHA256SUMS" "$work/SHA256SUMS")
  [ "$status" = 200 ] || missing "$tag" "$status" "$base/SHA256SUMS"
  local expected actual
  expected=$(awk -v a="$asset" '$2 == a || $2 == "*" a { print $1 }' "$work/SHA256SUMS")
  actual=$(sha256 "$work/$asset")
  if [ -z "$expected" ]; then
    fail "SHA256SUMS of release $tag lists no $asset; refusing to run an unverified binary"
  elif [ "$expected" != "$actual" ]; then
    fail "checksum mismatch for $asset of release $tag (SHA256SUMS says $expected, the download is $actual); refusing to run it"
  fi
  tar -xzf "$work/$asset" -C "$dest" gcrsync || fail "$asset of release $tag holds no gcrsync executable"
  echo "gcrsync $tag ($target) from $server/$repository/releases, sha256 $actual"
}

# Builds from the action's checkout; $1 says why, $2 how to install in seconds instead.
build_from_source() {
  echo "::warning title=gcrsync install::$1; building gcrsync from source with cargo, which takes minutes. ${2:-Use a release to install in seconds: uses: ${repository:-OWNER/gcrsync}@v1, or the version input.}"
  command -v cargo >/dev/null ||
    fail "building from source needs cargo, and there is none on PATH: install a Rust toolchain in an earlier step, or use a release (uses: ${repository:-OWNER/gcrsync}@v1, or the version input)"
  [ -f "$action_path/Cargo.toml" ] || fail "no Cargo.toml in $action_path to build from"
  cargo build --release --locked --manifest-path "$action_path/Cargo.toml"
  cp "${CARGO_TARGET_DIR:-$action_path/target}/release/gcrsync" "$dest/gcrsync"
}

exact='^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$' # v1.2.3, or a prerelease v2.1.0-rc.1
[[ ! "$wanted" =~ ^[0-9]+(\.[0-9]+){0,2} ]] || wanted="v$wanted"
if [ -n "$wanted" ]; then
  [[ "$wanted" =~ $exact || "$wanted" =~ ^v[0-9]+(\.[0-9]+)?$ || "$wanted" = latest ]] ||
    fail "input version must be a release like v1.2.3, a series like v1 or v1.2, or latest; not '$wanted'"
  # `uses: ./` names no repository: the releases are then the workflow repository's own.
  repository=${repository:-${GITHUB_REPOSITORY:-}}
fi
spec=${wanted:-$ref}
debug "action ref '${ref}', version input '${wanted}', repository '${repository}', platform $(platform)"
target=$(target_for "$(platform)")

if [ -z "$repository" ] || [ -z "$spec" ]; then
  build_from_source "the action runs from a local checkout (uses: ./), which has no release"
  installed=source
elif ! [[ "$spec" =~ $exact || "$spec" =~ ^v[0-9]+(\.[0-9]+)?$ || "$spec" = latest ]]; then
  build_from_source "$repository@$spec is a branch or a commit, not a release"
  installed=source
elif [ -z "$target" ]; then
  build_from_source "releases have no binary for $(platform) (only ${targets//=/→})" \
    "Run on one of those to install in seconds."
  installed=source
else
  tag=$spec
  if ! [[ "$spec" =~ $exact ]]; then
    series=$spec
    [ "$series" != latest ] || series=""
    newest_release "$series"
    tag=$best
    [ -n "$tag" ] || fail "$repository has no published release in series '$spec' (drafts and prereleases do not count); use a released version (see $server/$repository/releases)"
    debug "'$spec' resolves to release $tag"
  fi
  install_release "$tag" "$target"
  installed=$tag
fi

chmod +x "$dest/gcrsync"
"$dest/gcrsync" --version || fail "the installed $dest/gcrsync does not run on this runner ($(platform))"
rm -rf "$work"
{
  echo "bin=$dest/gcrsync"
  echo "version=$installed"
} >>"${GITHUB_OUTPUT:-/dev/null}"
