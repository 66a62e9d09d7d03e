#!/usr/bin/env bash
# Runs gcrsync for action.yml. Options arrive as GCRSYNC_* variables mapped from the
# inputs in action.yml (empty = unset); the report always lands in a file for the outputs.
set -euo pipefail

bin=${GCRSYNC_BIN:?the install step did not provide the gcrsync binary}
command=${GCRSYNC_ACTION_COMMAND:-sync}
case "$command" in
  sync | test | compare | monitor) ;;
  *) echo "::error title=gcrsync::input 'command' must be sync, test, compare or monitor, not '$command'"; exit 2 ;;
esac
unset GCRSYNC_BIN GCRSYNC_ACTION_COMMAND
export GCRSYNC_REPORT="${GCRSYNC_REPORT:-${RUNNER_TEMP:-/tmp}/gcrsync-report.json}"
exec "$bin" "$command"
