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
# Prints the tails of every log of the local control plane, the stack and the exporter processes
# the simulated node ran, so a failed run explains itself before teardown removes them.
repo=$(cd "$(dirname "$0")/.." && pwd)
TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
[ -d "$TESTENV_DIR" ] || exit 0
find "$TESTENV_DIR" -name '*.log' -type f | sort | while read -r f; do
  printf '\n===== %s (last %s lines) =====\n' "${f#"$TESTENV_DIR"/}" "${LINES_PER_LOG:-30}"
  tail -n "${LINES_PER_LOG:-30}" "$f"
done
