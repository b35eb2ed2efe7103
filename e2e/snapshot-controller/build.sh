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
# Builds the pinned snapshot-controller and copies the VolumeSnapshot CRDs next to it; prints the
# directory. Cached under ~/.cache keyed by go.sum, like kube-testenv/build.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/version.env"
key=$(cat "$here/go.sum" "$here/go.mod" "$here/version.env" | sha256sum | cut -c1-12)
out=${SNAPSHOT_CONTROLLER_BIN:-$HOME/.cache/storage-volume-data-manager/snapshot-controller/$key}
if [ -x "$out/snapshot-controller" ] && [ -f "$out/crds/groupsnapshot.storage.k8s.io_volumegroupsnapshots.yaml" ]; then
  echo "$out"; exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
cd "$here"
start=$(date +%s)
echo "snapshot-controller: building $SNAPSHOTTER_VERSION" >&2
go mod download >&2
mkdir -p "$out.tmp/crds"
go build -trimpath -ldflags "-s -w -X main.version=$SNAPSHOTTER_VERSION" -o "$out.tmp/snapshot-controller" \
  github.com/kubernetes-csi/external-snapshotter/v8/cmd/snapshot-controller >&2
client_dir=$(go list -m -f '{{.Dir}}' github.com/kubernetes-csi/external-snapshotter/client/v8)
# The group-snapshot CRDs too: the controller lists them at start and retries forever without.
cp "$client_dir"/config/crd/*snapshot.storage.k8s.io_*.yaml "$out.tmp/crds/"
chmod -R u+w "$out.tmp"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "snapshot-controller: built in $(( $(date +%s) - start ))s into $out" >&2
echo "$out"
