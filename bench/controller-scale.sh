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
# One simulated node with room for every exporter pod (a real node has 110 by default; the point
# here is the controller, not the scheduler), under a name and addresses of its own so the bench
# can run beside another local stack.
n=${SVDM_SCALE_N:-300}
export SIM_NODE_NAME=${SIM_NODE_NAME:-sim-node-bench}
export SIM_POD_IP_PREFIX=${SIM_POD_IP_PREFIX:-198.18.36,198.18.37}
export SIM_SERVICE_IP_PREFIX=${SIM_SERVICE_IP_PREFIX:-127.0.38}
export SIM_MAX_PODS=${SIM_MAX_PODS:-$((n + 20))}
e2e/stack.sh up sim
SVDM_SCALE_N=$n cargo test -p svdm-controller --test scale -- --ignored --nocapture
