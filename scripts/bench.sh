#!/usr/bin/env bash
# Benchmarks gcrsync against `skopeo sync --all` and a parallel reference copier
# (scripts/bench/refcopy.py: each unique blob once, monolithic POST+PUT, 8 workers) on
# local CNCF distribution registries, in one run, over plain HTTP and over TLS with Basic
# auth. Reports medians of ITER runs: wall time, CPU, peak RSS, and requests by method and
# kind from the registries' access logs, for a full mirror, a no-op rerun and a rerun
# after 3 tags moved; then peak RSS copying one image with a HUGE_MIB layer; then the
# scale scenario: gcr-style namespaces of REPOSxTAGS behind the gcr front with a
# service-account key (scripts/bench/gcr_front.rs), mirrored to an empty target and rerun.
# Usage: scripts/bench.sh [--quick]              everything (results: stdout and bench-results.md)
#        scripts/bench.sh scale [REPOSxTAGS...]  the scale scenario alone (default 30x50 100x50 300x50)
#        BENCH_GCR_REFERRERS=1 scripts/bench.sh scale …   with the front's referrers API on, and
#          a third run where every tag's turn of --referrers-recheck came (one read per tag)
set -euo pipefail
cd "$(dirname "$0")/.."
ITER=${ITER:-3}; SCALE=${SCALE:-3}; HUGE_MIB=${HUGE_MIB:-1024}; SIZES=${SIZES:-30x50 100x50 300x50}
ONLY=
case "${1:-}" in
  --quick) ITER=1; SCALE=0.2; HUGE_MIB=64; SIZES=${QUICK_SIZES:-6x50 20x50} ;;
  scale) ONLY=scale; shift; [ $# -gt 0 ] && SIZES="$*" ;;
  "") ;;
  *) echo "usage: scripts/bench.sh [--quick | scale [REPOSxTAGS...]]" >&2; exit 2 ;;
esac
for tool in docker-registry skopeo htpasswd openssl python3 /usr/bin/time; do
  command -v "$tool" >/dev/null || { echo "bench needs $tool (apt-get install docker-registry skopeo apache2-utils time)" >&2; exit 1; }
done
cargo build --release --locked --quiet --bin gcrsync --example bench-gcr
GCR_FRONT=$PWD/target/release/examples/bench-gcr
BIN=$PWD/target/release/gcrsync
W=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT
OUT=bench-results.md; : >"$OUT"
say() { echo "$*" | tee -a "$OUT"; }

# --- TLS material and htpasswd for the "TLS + Basic auth" transport ---------------------
(cd "$W" && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null &&
  openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null &&
  echo subjectAltName=IP:127.0.0.1 >san.ext &&
  openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile san.ext 2>/dev/null &&
  mkdir -p certs && cp ca.pem certs/ca.crt && htpasswd -Bbc htpasswd bench bench-pass 2>/dev/null &&
  openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.pem -days 2 -subj /CN=bench-token 2>/dev/null)
python3 scripts/bench/tokenserver.py 16199 "$W/token.key" "$W/token.pem" bench bench-pass &

PIDS=()
start() { # name port mode(0 plain HTTP | 1 TLS + Basic | 2 TLS + Bearer) → a fresh registry, access log at $W/name.log
  local dir="$W/$1"; rm -rf "$dir"; mkdir -p "$dir"
  { echo "version: 0.1"; echo "log: {level: error, accesslog: {disabled: false}}"
    echo "storage: {filesystem: {rootdirectory: $dir/data}}"
    case $3 in
      0) echo "http: {addr: 127.0.0.1:$2}" ;;
      *) echo "http: {addr: 127.0.0.1:$2, tls: {certificate: $W/srv.pem, key: $W/srv.key}}" ;;
    esac
    case $3 in
      1) echo "auth: {htpasswd: {realm: bench, path: $W/htpasswd}}" ;;
      2) echo "auth: {token: {realm: 'http://127.0.0.1:16199/token', service: bench, issuer: bench-issuer, rootcertbundle: $W/token.pem}}" ;;
    esac; } >"$dir/config.yml"
  # A registry still answering on the port (one not stopped) would be measured instead,
  # with other storage and logs: refused, as is a registry that exits at start.
  if (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then echo "port $2 is already in use; cannot start $1" >&2; return 1; fi
  docker-registry serve "$dir/config.yml" >"$W/$1.log" 2>/dev/null &
  eval "PID_$1=$!"
  for _ in $(seq 100); do
    (echo >"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return
    kill -0 "$(eval echo "\$PID_$1")" 2>/dev/null || { echo "registry $1 exited at start" >&2; return 1; }
    sleep 0.05
  done
  echo "registry $1 did not answer on port $2" >&2; return 1
}
stop() { local v="PID_$1"; kill "${!v}" 2>/dev/null || true; wait "${!v}" 2>/dev/null || true; }

# Requests in a log since line N: "GET manifest 12, HEAD manifest 3, ..." by method and kind.
requests() { # log from_line
  tail -n +"$(($2 + 1))" "$1" | awk -F'"' '{ split($2, r, " "); p = r[2]; k = "other";
      if (p ~ /\/manifests\//) k = "manifest"; else if (p ~ /\/blobs\/uploads/) k = "upload"; else if (p ~ /\/blobs\//) k = "blob";
      n[r[1] " " k]++; t++ } END { for (x in n) printf "%s %d, ", x, n[x]; printf "total %d", t }'
}
lines() { wc -l <"$1"; }
measure() { # label cmd... → appends "label wall cpu rss" to $W/times
  local label=$1; shift
  /usr/bin/time -f "%e %U %S %M" -o "$W/t" "$@" >"$W/cmd.out" 2>&1 || { cat "$W/cmd.out"; return 1; }
  read -r wall user sys rss <"$W/t"
  echo "$label $wall $(echo "$user + $sys" | bc) $rss" >>"$W/times"
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

run_transport() { # name tls
  local name=$1 tls=$2 scheme=http auth=() skauth=() refauth=() wlauth=() skyaml src=127.0.0.1:16101 dst=127.0.0.1:16102
  if [ "$tls" != 0 ]; then
    scheme=https
    auth=(--source-username bench --source-password bench-pass --target-username bench --target-password bench-pass --ca-cert "$W/ca.pem")
    refauth=(--user bench --password bench-pass --cafile "$W/ca.pem"); wlauth=("${refauth[@]}")
    skauth=(--dest-creds bench:bench-pass --dest-cert-dir "$W/certs")
    skyaml="  cert-dir: $W/certs
  credentials: {username: bench, password: bench-pass}"
  else
    auth=(--insecure-registry "$src,$dst"); skauth=(--dest-tls-verify=false); skyaml="  tls-verify: false"
  fi
  # skopeo syncs a namespace of many repositories only from a YAML list.
  { echo "$src:"; echo "$skyaml"; echo "  images-by-tag-regex:"
    for r in $(seq -w 0 11); do echo "    team/app$r: '.*'"; done; } >"$W/sk.yaml"
  start src 16101 "$tls"
  python3 scripts/bench/workload.py "$scheme://$src" team --scale "$SCALE" "${wlauth[@]}" | tee -a "$OUT"
  say "source data: $(du -sh "$W/src/data" | cut -f1)"
  : >"$W/times"
  for i in $(seq "$ITER"); do
    for tool in reference skopeo gcrsync; do
      start dst 16102 "$tls"; rm -rf "$W/meta"
      local s0 d0; s0=$(lines "$W/src.log"); d0=$(lines "$W/dst.log")
      case $tool in
        reference) measure full-reference python3 scripts/bench/refcopy.py "$scheme://$src" "$scheme://$dst" team mirror "${refauth[@]}" ;;
        skopeo) measure full-skopeo skopeo sync --all --src yaml --dest docker "${skauth[@]}" "$W/sk.yaml" "$dst/mirror" ;;
        gcrsync) measure full-gcrsync "$BIN" -q --source "$scheme://$src/team" --target "$scheme://$dst/mirror" --metadata-dir "$W/meta" --process-count -1 "${auth[@]}" ;;
      esac
      [ "$i" = 1 ] && echo "full $tool: source: $(requests "$W/src.log" "$s0"); target: $(requests "$W/dst.log" "$d0")" >>"$W/requests"
      if [ "$tool" != reference ]; then
        s0=$(lines "$W/src.log"); d0=$(lines "$W/dst.log")
        case $tool in
          skopeo) measure noop-skopeo skopeo sync --all --src yaml --dest docker "${skauth[@]}" "$W/sk.yaml" "$dst/mirror" ;;
          gcrsync) measure noop-gcrsync "$BIN" -q --source "$scheme://$src/team" --target "$scheme://$dst/mirror" --metadata-dir "$W/meta" --process-count -1 "${auth[@]}" ;;
        esac
        [ "$i" = 1 ] && echo "no-op $tool: source: $(requests "$W/src.log" "$s0"); target: $(requests "$W/dst.log" "$d0")" >>"$W/requests"
      fi
      stop dst
    done
  done
  {
    echo; echo "### $name"; echo
    echo "| run | reference s | skopeo s | gcrsync s | gcrsync/reference | skopeo/reference | gcrsync/skopeo | gcrsync CPU s | skopeo CPU s | gcrsync peak RSS MiB | skopeo peak RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for phase in full noop; do
      ref=$(awk -v k="$phase-reference" '$1 == k { print $2 }' "$W/times" | median)
      sk=$(awk -v k="$phase-skopeo" '$1 == k { print $2 }' "$W/times" | median)
      gc=$(awk -v k="$phase-gcrsync" '$1 == k { print $2 }' "$W/times" | median)
      gcpu=$(awk -v k="$phase-gcrsync" '$1 == k { print $3 }' "$W/times" | median)
      scpu=$(awk -v k="$phase-skopeo" '$1 == k { print $3 }' "$W/times" | median)
      grss=$(awk -v k="$phase-gcrsync" '$1 == k { print $4 }' "$W/times" | sort -n | tail -1)
      srss=$(awk -v k="$phase-skopeo" '$1 == k { print $4 }' "$W/times" | sort -n | tail -1)
      ratio() { [ -n "$1" ] && [ -n "$2" ] && echo "scale=3; $1 / $2" | bc || echo "—"; }
      echo "| $phase | ${ref:-—} | $sk | $gc | $(ratio "$gc" "$ref") | $(ratio "$sk" "$ref") | $(ratio "$gc" "$sk") | $gcpu | $scpu | $((grss / 1024)) | $((srss / 1024)) |"
    done
    echo; echo "Requests (first iteration):"; echo; sed 's/^/- /' "$W/requests"
  } | tee -a "$OUT"
  rm -f "$W/requests"

  # 3 tags moved: only their new manifests and blobs should travel.
  start dst 16102 "$tls"; rm -rf "$W/meta" "$W/meta-sk"
  "$BIN" -q --source "$scheme://$src/team" --target "$scheme://$dst/mirror" --metadata-dir "$W/meta" --process-count -1 "${auth[@]}" >/dev/null 2>&1
  skopeo sync --all --src yaml --dest docker "${skauth[@]}" "$W/sk.yaml" "$dst/skopeo" >/dev/null 2>&1
  python3 scripts/bench/workload.py "$scheme://$src" team --scale "$SCALE" --move 3 "${wlauth[@]}" >/dev/null
  local s0 d0; s0=$(lines "$W/src.log"); d0=$(lines "$W/dst.log")
  measure moved-gcrsync "$BIN" -q --source "$scheme://$src/team" --target "$scheme://$dst/mirror" --metadata-dir "$W/meta" --process-count -1 "${auth[@]}"
  say "- 3 moved, gcrsync: $(tail -1 "$W/times" | awk '{ print $2 }') s; source: $(requests "$W/src.log" "$s0"); target: $(requests "$W/dst.log" "$d0")"
  s0=$(lines "$W/src.log"); d0=$(lines "$W/dst.log")
  measure moved-skopeo skopeo sync --all --src yaml --dest docker "${skauth[@]}" "$W/sk.yaml" "$dst/skopeo"
  say "- 3 moved, skopeo: $(tail -1 "$W/times" | awk '{ print $2 }') s; source: $(requests "$W/src.log" "$s0"); target: $(requests "$W/dst.log" "$d0")"
  stop dst; stop src
}

# Requests in a log since line N, as "kind<TAB>count" lines: token, tags/list, catalog, or
# "METHOD manifest|blob|upload|other" (the gcr front logs a challenged request as
# "METHOD challenged PATH": counted by its path).
tally() { # log from_line
  tail -n +"$(($2 + 1))" "$1" | awk -F'"' '{ split($2, r, " "); m = r[1]; p = (r[2] == "challenged") ? r[3] : r[2];
      if (p ~ /^\/v2\/token/) k = "token"; else if (p ~ /\/tags\/list/) k = "tags/list"; else if (p ~ /\/_catalog/) k = "catalog";
      else if (p ~ /\/referrers\//) k = m " referrers";
      else if (p ~ /\/manifests\//) k = m " manifest"; else if (p ~ /\/blobs\/uploads/) k = m " upload";
      else if (p ~ /\/blobs\//) k = m " blob"; else k = m " other";
      n[k]++; n["total"]++ } END { for (k in n) print k "\t" n[k] }'
}
get() { awk -F'\t' -v k="$2" '$1 == k { v = $2 } END { print v + 0 }' "$1"; } # tally-file kind
# Target requests before the first copy request (planning: tags/list, HEAD of manifests).
before_copy() { # log from_line
  tail -n +"$(($2 + 1))" "$1" | awk -F'"' '{ split($2, r, " ") } r[2] ~ /\/blobs\// || r[1] == "PUT" || r[1] == "POST" { copying = 1 } !copying { n++ } END { print n + 0 }'
}

scale_size() { # REPOSxTAGS → rows of the scale table in $W/scale-rows, request lines in $W/scale-requests
  local repos=${1%x*} per=${1#*x} ns=google-containers W=$SW
  local tags=$((repos * per)) front src_from dst_from
  start src 16101 0; start dst 16102 0
  local t0; t0=$(date +%s.%N)
  python3 scripts/bench/scale.py "$W/src/data" "$ns" --repos "$repos" --tags "$per" >/dev/null
  local gen; gen=$(echo "$(date +%s.%N) - $t0" | bc)
  rm -rf "$W/gcr" "$W/meta-scale"
  "$GCR_FRONT" 127.0.0.1:16101 "$W/gcr" >"$W/gcr.out" 2>&1 &
  local front_pid=$!
  for _ in $(seq 600); do [ -s "$W/gcr/addr" ] && break; sleep 0.05; done
  front=$(cat "$W/gcr/addr") || { cat "$W/gcr.out"; echo "the gcr front did not start" >&2; return 1; }
  local args=(-q --source "http://$front/$ns" --target 127.0.0.1:16102/mirror --metadata-dir "$W/meta-scale"
    --process-count -1 --gcp-credentials "$W/gcr/key.json" --insecure-registry "$front,127.0.0.1:16102")
  local runs="full no-op" recheck=()
  [ "${BENCH_GCR_REFERRERS:-}" = 1 ] && runs="full no-op recheck"
  for run in $runs; do
    [ "$run" = recheck ] && { sleep 1.1; recheck=(--referrers-recheck 1s); }
    : >"$W/gcr/requests.log"; sleep 0.2
    src_from=$(lines "$W/gcr/requests.log"); dst_from=$(lines "$W/dst.log")
    : >"$W/times"
    measure "$run" "$BIN" "${args[@]}" "${recheck[@]}"
    grep -q " $tags listed, .* 0 failed, 0 pending" "$W/cmd.out" || { cat "$W/cmd.out"; echo "scale $1 $run: not everything mirrored" >&2; return 1; }
    sleep 0.3 # the front writes its log every 100 ms
    tally "$W/gcr/requests.log" "$src_from" >"$W/src.tally"; tally "$W/dst.log" "$dst_from" >"$W/dst.tally"
    read -r _ wall cpu rss <"$W/times"
    local listings tokens per_tag planned readme
    listings=$(get "$W/src.tally" tags/list); tokens=$(get "$W/src.tally" token)
    per_tag=$(($(get "$W/src.tally" "HEAD manifest") + $(get "$W/src.tally" "GET manifest")))
    planned=$(before_copy "$W/dst.log" "$dst_from")
    readme=$(find "$W/meta-scale" -name README.md -printf '%s\n' | sort -n | tail -1)
    echo "| $tags | $repos × $per | $run | $wall | $cpu | $((rss / 1024)) | $listings | $tokens | $per_tag | $(get "$W/src.tally" total) | $planned ($(echo "scale=2; $planned / $repos" | bc)) | $(get "$W/dst.tally" total) | $((readme / 1024)) |" >>"$W/scale-rows"
    echo "$tags tags, $run: source: $(sort "$W/src.tally" | awk -F'\t' '$1 != "total" { printf "%s %d, ", $1, $2 }')total $(get "$W/src.tally" total); target: $(sort "$W/dst.tally" | awk -F'\t' '$1 != "total" { printf "%s %d, ", $1, $2 }')total $(get "$W/dst.tally" total)" >>"$W/scale-requests"
  done
  echo "$tags tags: source storage written in $(printf %.1f "$gen") s ($(du -sh "$W/src/data" | cut -f1)); images.json $(($(find "$W/meta-scale" -name images.json -printf '%s\n' | sort -n | tail -1) / 1024)) KiB" >>"$W/scale-requests"
  kill "$front_pid" 2>/dev/null; wait "$front_pid" 2>/dev/null || true
  stop dst; stop src
}

run_scale() {
  # Tens of thousands of small files per registry: kept in memory (/dev/shm) where there is
  # one, so a shared machine's disk does not time the scale runs (deleting them from a busy
  # disk took minutes); the registries' storage is not what is measured here.
  SW=$(mktemp -d -p "$([ -w /dev/shm ] && echo /dev/shm || echo "$W")"); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W" "$SW"' EXIT
  : >"$SW/scale-rows"; : >"$SW/scale-requests"
  for size in $SIZES; do scale_size "$size"; done
  local W=$SW
  {
    echo; echo "### Scale: a gcr-style namespace behind a service-account key, to an empty target"; echo
    echo "| tags | repositories × tags | run | wall s | CPU s | peak RSS MiB | source tags/list | source tokens | source manifest requests | source total | target requests before copying (per repository) | target total | namespace README KiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    cat "$W/scale-rows"
    echo; echo "Requests by kind:"; echo; sed 's/^/- /' "$W/scale-requests"
  } | tee -a "$OUT"
}

say "# gcrsync benchmark — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $ITER iterations, scale $SCALE"
say "skopeo $(skopeo --version | awk '{ print $3 }'), $(docker-registry --version | awk '{ print $2, $3 }'), gcrsync $("$BIN" --version | awk '{ print $2 }')"
if [ "$ONLY" = scale ]; then run_scale; exit 0; fi
run_transport "plain HTTP" 0
run_transport "TLS + Basic auth" 1
run_transport "TLS + Bearer tokens" 2

# Memory must not grow with layer size: one image with a HUGE_MIB layer.
start src 16101 0; start dst 16102 0
python3 scripts/bench/workload.py 127.0.0.1:16101 team --huge "$HUGE_MIB" | tee -a "$OUT"
: >"$W/times"
measure huge-gcrsync "$BIN" -q --source 127.0.0.1:16101/team --target 127.0.0.1:16102/mirror --metadata-dir "$W/meta-huge" --insecure-registry 127.0.0.1:16101,127.0.0.1:16102
measure huge-skopeo skopeo copy --all --src-tls-verify=false --dest-tls-verify=false docker://127.0.0.1:16101/team/huge:1 docker://127.0.0.1:16102/skopeo/huge:1
say ""
say "### One image with a $HUGE_MIB MiB layer"
say ""
awk '{ printf "- %s: %s s, peak RSS %d MiB\n", $1, $2, $4 / 1024 }' "$W/times" | tee -a "$OUT"
# Stopped before the scale part starts its own registries on these ports: left running,
# they answered in place of the scale registries (whose metadata was then never written).
stop dst; stop src

run_scale
