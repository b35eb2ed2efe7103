#!/usr/bin/env bash
# `make test`: lint, every Rust test (unit, integration, and end-to-end against the real local
# control plane that this script starts once and shares, tests isolating themselves by
# namespace), and the module bundle checks. Leaves nothing running.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
t0=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "format and clippy"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

step "build binaries and tests"
cargo build --workspace --bins
cargo test --workspace --no-run

step "start the local control plane"
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
cleanup() {
  local rc=$?
  [ -x e2e/stack.sh ] && e2e/stack.sh down || true
  e2e/testenv.sh down || true
  exit $rc
}
trap cleanup EXIT
e2e/testenv.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"
if [ -x e2e/stack.sh ]; then step "start the simulated node"; e2e/stack.sh up; fi

step "cargo test (unit, integration, end-to-end)"
cargo test --workspace --no-fail-fast

if [ -x hack/module-lint.sh ]; then step "module bundle lint"; hack/module-lint.sh; fi
step "done"
