#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that run
# gcrsync against real CNCF distribution registries (docker-registry) on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-registry htpasswd; do
  command -v "$tool" >/dev/null || {
    echo "$tool is required: apt-get install docker-registry apache2-utils (or run .ci/run)" >&2
    exit 1
  }
done
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
