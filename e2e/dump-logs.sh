#!/usr/bin/env bash
# Prints the tails of every log of the local control plane, the stack and the exporter processes
# the simulated node ran, so a failed run explains itself before teardown removes them.
repo=$(cd "$(dirname "$0")/.." && pwd)
TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
[ -d "$TESTENV_DIR" ] || exit 0
find "$TESTENV_DIR" -name '*.log' -type f | sort | while read -r f; do
  printf '\n===== %s (last %s lines) =====\n' "${f#"$TESTENV_DIR"/}" "${LINES_PER_LOG:-30}"
  tail -n "${LINES_PER_LOG:-30}" "$f"
done
