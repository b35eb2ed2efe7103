#!/usr/bin/env bash
# Controller scale benchmark: N DataExports of N PVCs created at once on the local control plane
# with the shared simulated node; prints time to Ready, time to return and the controller's peak
# RSS (crates/controller/tests/scale.rs). N defaults to 300 (SVDM_SCALE_N).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/bench-testenv}
cargo build --workspace --bins
cleanup() { e2e/stack.sh down || true; e2e/testenv.sh down || true; }
trap cleanup EXIT
e2e/testenv.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"
e2e/stack.sh up sim
SVDM_SCALE_N=${SVDM_SCALE_N:-300} cargo test -p svdm-controller --test scale -- --ignored --nocapture
