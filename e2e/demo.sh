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
# `make demo`: a real local control plane; the module enabled by a ModuleConfig, its chart rendered
# by helm after its hooks ran (e2e/module.sh), its controller and webhook running from that chart;
# a Filesystem and a Block volume and a VolumeSnapshot exported by a normal user and downloaded with
# that user's token, checksums verified, volumes returned.
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

say "start the simulated node (kubelet, CSI storage, kube-proxy stand-ins)"
e2e/stack.sh up sim

say "enable the module with a ModuleConfig: settings validated, hooks run, chart rendered and applied"
e2e/module.sh up

# With KEEP=1 the exports stay up for exploration; otherwise the flow also checks the return.
RETURN_CHECK=$([ "$KEEP" = 1 ] && echo 0 || echo 1) e2e/demo-flow.sh
