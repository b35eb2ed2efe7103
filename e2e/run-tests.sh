#!/usr/bin/env bash
# Copyright 2026 Flant JSC
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
# `make test`: every test of the project, against real parts. Leaves nothing running.
#
#  1. cargo fmt --check, clippy -D warnings, module bundle lint (helm renders, settings case tests)
#  2. one local control plane for the whole run (e2e/testenv.sh) plus the shared simulated node
#  3. cargo test --workspace: unit and integration tests; tests that need the cluster take a
#     namespace of their own and start the component they test themselves (controller, webhook,
#     exporter) so they never share one with another test
#  4. end to end: a ModuleConfig enables the module (settings validated, hooks run through the
#     batch-hook protocol, chart rendered by helm and applied; controller and webhook run from it
#     with the chart's RBAC), the demo's user flow runs (export a Filesystem and a Block PVC and a
#     VolumeSnapshot, download with a user's token, checksums, return) through the contract
#     client (crates/d8-contract: what d8 does, no more), its expiry-recreate loops and publish
#     auto-detect run against it, then the module is uninstalled and its module-disabled hooks run
#  5. the rendered chart and the hooks against the API server (server-side dry run, hook protocol)
#  6. the hooks' disable/migration suite, on a private control plane of its own
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
t0=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }

step "format, clippy and module lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
hack/module-lint.sh

step "build binaries and tests"
cargo build --workspace --bins
cargo test --workspace --no-run

step "start the local control plane and the shared simulated node"
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
cleanup() {
  local rc=$?
  [ $rc = 0 ] || e2e/dump-logs.sh || true
  e2e/stack.sh down || true
  e2e/testenv.sh down || true
  exit $rc
}
trap cleanup EXIT
e2e/testenv.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"
e2e/stack.sh up sim

step "cargo test (unit, integration, cluster)"
cargo test --workspace --no-fail-fast

step "end to end: the module enabled by a ModuleConfig, the demo's user flow, the module disabled"
e2e/module.sh up
e2e/demo-flow.sh
# The contract client against the installed module: expiry and recreate, 20 times in a row for
# each client generation; the publish auto-detect for users without rights in `default`.
SVDM_MODULE_E2E=1 cargo test -p svdm-d8-contract --test module -- --nocapture
e2e/module.sh down

step "rendered chart and hooks against the API server"
hack/module-dry-run.sh

step "stop the shared control plane"
e2e/stack.sh down
e2e/testenv.sh down
trap - EXIT

step "hooks: module disable and migration on a private control plane"
hack/hooks-e2e.sh

step "all tests passed"
