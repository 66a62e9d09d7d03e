#!/usr/bin/env bash
# Starts two local registries (127.0.0.1:15001 source, :15002 target) in the background
# and pushes a small workload to the source, for the action job of ci.yml.
set -euo pipefail
cd "$(dirname "$0")/../.."
for port in 15001 15002; do
  dir=$(mktemp -d)
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$dir" "$port" >"$dir/config.yml"
  nohup docker-registry serve "$dir/config.yml" >/dev/null 2>&1 &
done
for port in 15001 15002; do
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.2; done
done
python3 scripts/bench/workload.py 127.0.0.1:15001 team --repos 3 --tags 2 --scale 0.05
