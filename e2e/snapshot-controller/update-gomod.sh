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
# Regenerates go.mod/go.sum that pin the real external-snapshotter snapshot-controller and the
# VolumeSnapshot CRDs (shipped in its client module) from the Go module proxy alone.
#
# It is a module of its own, apart from kube-testenv: the snapshotter builds against its own
# Kubernetes libraries (its go.mod pins them with replaces, which only the main module honours,
# so they are copied here, except the relative one to ./client, which becomes a version pin).
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
VERSION=${1:-$(sed -n 's/^SNAPSHOTTER_VERSION=//p' version.env)}
mod=github.com/kubernetes-csi/external-snapshotter/v8
client=github.com/kubernetes-csi/external-snapshotter/client/v8

printf 'module storage-volume-data-manager/e2e/snapshot-controller\n\ngo 1.26.0\n' > go.mod
rm -f go.sum
gomod=$(go mod download -json "${mod}@${VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
grep -E '^replace k8s.io/' "$gomod" | while read -r _ from _ to ver; do
  go mod edit -replace="${from}=${to}@${ver}"
done
go mod edit -replace="${client}=${client}@${VERSION}"
go get "${mod}@${VERSION}" "${client}@${VERSION}"
go mod edit -tool="${mod}/cmd/snapshot-controller"
go mod tidy
printf 'SNAPSHOTTER_VERSION=%s\n' "$VERSION" > version.env
echo "pinned external-snapshotter ${VERSION}"
