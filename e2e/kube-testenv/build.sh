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
# Builds the pinned control plane (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl,
# etcd) from Go modules and prints the directory that holds the binaries.
#
# The binaries are cached under ~/.cache keyed by go.sum (which pins every module), so a warm run
# is a hash and a few stat calls; a cold run needs only the Go module proxy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
. "$here/version.env"
key=$(cat "$here/go.sum" "$here/go.mod" "$here/version.env" | sha256sum | cut -c1-12)
bin=${KUBE_TESTENV_BIN:-$HOME/.cache/storage-volume-data-manager/kube-testenv/$key}
tools=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd)

complete() { for t in "${tools[@]}"; do [ -x "$bin/$t" ] || return 1; done; }
if complete; then echo "$bin"; exit 0; fi

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
cd "$here"
mkdir -p "$bin.tmp"
start=$(date +%s)
echo "kube-testenv: downloading modules for Kubernetes $K8S_VERSION" >&2
go mod download >&2
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
kver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
for t in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$bin.tmp/$t" ] && continue
  echo "kube-testenv: building $t" >&2
  go build -trimpath -ldflags "-s -w $kver" -o "$bin.tmp/$t" "k8s.io/kubernetes/cmd/$t" >&2
done
if [ ! -x "$bin.tmp/etcd" ]; then
  echo "kube-testenv: building etcd $ETCD_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$bin.tmp/etcd" go.etcd.io/etcd/server/v3 >&2
fi
rm -rf "$bin" && mv "$bin.tmp" "$bin"
echo "kube-testenv: built in $(( $(date +%s) - start ))s into $bin" >&2
echo "$bin"
