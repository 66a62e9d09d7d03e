#!/usr/bin/env bash
# Benchmarks `gcrsync serve` against CNCF distribution's proxy mode (`docker-registry` with
# `proxy.remoteurl`), in one run, on the same upstream: a local distribution registry with
# Bearer-token auth (scripts/bench/tokenserver.py) holding the generated workload. The
# same client work goes through each proxy: `skopeo copy --all` of IMAGES images
# (sequential, from an empty cache = cold; again = warm), then CLIENTS concurrent clients
# each pulling the first 3 images from an empty cache. Reports wall times (medians of ITER
# runs), upstream requests and bytes (the upstream's access log) and the proxies' peak RSS.
# Usage: scripts/bench-serve.sh [--quick]   (results: stdout and bench-serve-results.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${ITER:-3}; SCALE=${SCALE:-1}; IMAGES=${IMAGES:-8}; CLIENTS=${CLIENTS:-16}
[ "${1:-}" = --quick ] && { ITER=1; SCALE=0.2; IMAGES=4; CLIENTS=4; }
for tool in docker-registry skopeo openssl python3; do
  command -v "$tool" >/dev/null || { echo "bench-serve needs $tool (apt-get install docker-registry skopeo)" >&2; exit 1; }
done
cargo build --release --locked --quiet
BIN=$PWD/target/release/gcrsync
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
OUT=bench-serve-results.md; : >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }
UP=127.0.0.1:16301 OURS=127.0.0.1:16311 THEIRS=127.0.0.1:16312

(cd "$W" && openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.pem -days 2 -subj /CN=bench-token 2>/dev/null)
python3 scripts/bench/tokenserver.py 16299 "$W/token.key" "$W/token.pem" bench bench-pass &
wait_port() { for _ in $(seq 200); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.05; done; echo "nothing on port $1" >&2; exit 1; }

# The upstream: plain HTTP with Bearer tokens, as gcr.io and Docker Hub answer (minus TLS).
mkdir -p "$W/up"
cat >"$W/up/config.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $W/up/data}}
http: {addr: $UP}
auth: {token: {realm: 'http://127.0.0.1:16299/token', service: bench, issuer: bench-issuer, rootcertbundle: $W/token.pem}}
EOF
docker-registry serve "$W/up/config.yml" >"$W/up.log" 2>/dev/null &
wait_port 16301
python3 scripts/bench/workload.py "$UP" team --repos "$IMAGES" --tags 1 --scale "$SCALE" --user bench --password bench-pass | tee -a "$OUT"

PROXY_PID=
start_proxy() { # ours|theirs → a fresh proxy with an empty cache
  rm -rf "$W/cache-$1"; mkdir -p "$W/cache-$1"
  if [ "$1" = ours ]; then
    "$BIN" serve -q --listen "$OURS" --upstream "$UP" --cache-dir "$W/cache-$1" \
      --source-username bench --source-password bench-pass >"$W/ours.log" 2>&1 &
    PROXY_PID=$!; wait_port 16311
  else
    cat >"$W/theirs.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/cache-$1}, cache: {blobdescriptor: inmemory}}
http: {addr: $THEIRS}
proxy: {remoteurl: 'http://$UP', username: bench, password: bench-pass}
EOF
    docker-registry serve "$W/theirs.yml" >"$W/theirs.log" 2>&1 &
    PROXY_PID=$!; wait_port 16312
  fi
}
peak_rss_mib() { awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$PROXY_PID/status"; }
stop_proxy() { kill -TERM "$PROXY_PID" 2>/dev/null || true; wait "$PROXY_PID" 2>/dev/null || true; }
addr_of() { [ "$1" = ours ] && echo "$OURS" || echo "$THEIRS"; }

pull() { # proxy-addr image-index client-id
  local image; image=team/app$(printf %02d "$2"):v1.0
  rm -rf "$W/out/$3/$2"; mkdir -p "$W/out/$3"
  skopeo --insecure-policy copy --all --src-tls-verify=false -q "docker://$1/$image" "dir:$W/out/$3/$2" >/dev/null
}
now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc | awk '{ printf "%.2f", $1 }'; }
lines() { wc -l <"$W/up.log"; }
# Upstream requests since line N: count, auth challenges (401), and of the others: blob GETs
# (and distinct blobs), blob HEADs, manifest GETs/HEADs, MiB sent.
upstream() {
  tail -n +"$(($1 + 1))" "$W/up.log" | awk -F'"' '{ split($2, r, " "); split($3, s, " "); m = r[1]; p = r[2]; n++; bytes += s[2]
      if (s[1] == 401) { c++; next }
      if (p ~ /\/blobs\//) { if (m == "GET") { bg++; u[p] = 1 } else bh++ }
      else if (p ~ /\/manifests\//) { if (m == "GET") mg++; else mh++ } }
    END { d = 0; for (x in u) d++; printf "%d requests, %d of them 401 challenges; %d blob GETs (%d distinct), %d blob HEADs, %d manifest GETs, %d manifest HEADs; %.1f MiB", n, c, bg, d, bh, mg, mh, bytes / 1048576 }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

: >"$W/times"
for i in $(seq "$ITER"); do
  for proxy in theirs ours; do
    start_proxy "$proxy"; addr=$(addr_of "$proxy")
    l0=$(lines); t=$(now)
    for n in $(seq 0 $((IMAGES - 1))); do pull "$addr" "$n" cold; done
    echo "cold-$proxy $(elapsed "$t")" >>"$W/times"
    [ "$i" = 1 ] && echo "- cold, $proxy: $(upstream "$l0")" >>"$W/requests"
    l0=$(lines); t=$(now)
    for n in $(seq 0 $((IMAGES - 1))); do pull "$addr" "$n" warm; done
    echo "warm-$proxy $(elapsed "$t")" >>"$W/times"
    [ "$i" = 1 ] && echo "- warm, $proxy: $(upstream "$l0")" >>"$W/requests"
    echo "rss-$proxy $(peak_rss_mib)" >>"$W/times"
    stop_proxy

    start_proxy "$proxy"; addr=$(addr_of "$proxy")
    l0=$(lines); t=$(now); pids=()
    for c in $(seq "$CLIENTS"); do
      ( for n in 0 1 2; do pull "$addr" "$n" "c$c"; done ) & pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    echo "concurrent-$proxy $(elapsed "$t")" >>"$W/times"
    echo "crss-$proxy $(peak_rss_mib)" >>"$W/times"
    [ "$i" = 1 ] && echo "- $CLIENTS concurrent cold clients, $proxy: $(upstream "$l0")" >>"$W/requests"
    stop_proxy
  done
done

get() { awk -v k="$1" '$1 == k { print $2 }' "$W/times" | median; }
peak() { awk -v k="$1" '$1 == k { print $2 }' "$W/times" | sort -n | tail -1; }
ratio() { echo "scale=2; $1 / $2" | bc; }
{
  echo
  echo "### gcrsync serve vs distribution proxy mode — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $ITER iterations"
  echo
  echo "$(docker-registry --version | awk '{ print $2, $3 }'), skopeo $(skopeo --version | awk '{ print $3 }'), gcrsync $("$BIN" --version | awk '{ print $2 }'); $IMAGES images, $CLIENTS concurrent clients × 3 images"
  echo
  echo "| run | distribution s | gcrsync serve s | serve/distribution | distribution peak RSS MiB | serve peak RSS MiB |"
  echo "|---|---|---|---|---|---|"
  for phase in cold warm concurrent; do
    d=$(get "$phase-theirs"); o=$(get "$phase-ours")
    case $phase in concurrent) dr=$(peak crss-theirs); or=$(peak crss-ours) ;; *) dr=$(peak rss-theirs); or=$(peak rss-ours) ;; esac
    echo "| $phase | $d | $o | $(ratio "$o" "$d") | $dr | $or |"
  done
  echo; echo "Upstream requests (first iteration; token requests not counted):"; echo
  cat "$W/requests"
} | tee -a "$OUT"
