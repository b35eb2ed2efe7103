#!/usr/bin/env bash
# `make demo`: a real local control plane, the module's components, a Filesystem and a Block
# volume exported by a normal user and downloaded with that user's token, checksums verified.
# KEEP=1 leaves everything running and prints how to explore it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
KEEP=${KEEP:-0}
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/storage-volume-data-manager/target}
t0=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

say "build the module's binaries"
cargo build --workspace --bins

say "start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, snapshot-controller)"
cleanup() {
  local rc=$?
  [ $rc = 0 ] || e2e/dump-logs.sh || true
  if [ "$KEEP" = 1 ] && [ $rc = 0 ]; then return; fi
  e2e/stack.sh down || true
  e2e/testenv.sh down || true
  exit $rc
}
trap cleanup EXIT
e2e/testenv.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"

say "start the simulated node and the module's components"
e2e/stack.sh up

# With KEEP=1 the exports stay up for exploration; otherwise the flow also checks the return.
RETURN_CHECK=$([ "$KEEP" = 1 ] && echo 0 || echo 1) e2e/demo-flow.sh
