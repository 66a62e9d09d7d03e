#!/usr/bin/env bash
# Runs gcrsync for action.yml. Options arrive as GCRSYNC_* variables mapped from the
# inputs in action.yml (empty = unset); under Actions gcrsync always writes a report (to
# $RUNNER_TEMP unless `report` is set), which the outputs name.
set -euo pipefail

bin=${GCRSYNC_BIN:?the install step did not provide the gcrsync binary}
command=${GCRSYNC_ACTION_COMMAND:-sync}
case "$command" in
  sync | test | compare | monitor) ;;
  *) echo "::error title=gcrsync::input 'command' must be sync, test, compare or monitor, not '$command'"; exit 2 ;;
esac
unset GCRSYNC_BIN GCRSYNC_ACTION_COMMAND
exec "$bin" "$command"
