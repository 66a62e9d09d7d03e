#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that run
# gcrsync against real CNCF distribution registries (docker-registry) on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v docker-registry >/dev/null || {
  echo "docker-registry (CNCF distribution) is required: apt-get install docker-registry" >&2
  exit 1
}
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
