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
# Regenerates go.mod/go.sum for the pinned Kubernetes release using only the Go module proxy.
#
# k8s.io/kubernetes requires its staging modules at v0.0.0 and resolves them through relative
# replaces that only apply inside its own repository, so a consumer must pin each staging module to
# the matching published v0.X.Y tag. The list is read from k8s.io/kubernetes's own go.mod so a
# version bump never relies on a hand-maintained list (a missing one shows up as
# "unknown revision v0.0.0").
#
# Usage: e2e/kube-testenv/update-gomod.sh [v1.36.3]
set -euo pipefail
cd "$(dirname "$0")"
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
K8S_VERSION=${1:-$(sed -n 's/^K8S_VERSION=//p' version.env)}
STAGING_VERSION="v0.${K8S_VERSION#v1.}"

gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
mapfile -t staging < <(grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')
[ "${#staging[@]}" -gt 20 ] || { echo "found only ${#staging[@]} staging modules in $gomod" >&2; exit 1; }

for m in "${staging[@]}"; do
  go mod edit -replace="${m}=${m}@${STAGING_VERSION}"
done
# etcd at exactly the version this Kubernetes release pins, so the pair is one Kubernetes tests.
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2}' "$gomod")
go get "k8s.io/kubernetes@${K8S_VERSION}" "go.etcd.io/etcd/server/v3@${etcd_version}"
# `go mod edit -tool` records the tools without re-resolving versions (`go get -tool pkg` would
# move k8s.io/kubernetes to its latest release).
for t in k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl go.etcd.io/etcd/server/v3; do
  go mod edit -tool="$t"
done
go mod tidy
printf 'K8S_VERSION=%s\nETCD_VERSION=%s\n' "$K8S_VERSION" "$etcd_version" > version.env
echo "pinned k8s.io/kubernetes ${K8S_VERSION}, ${#staging[@]} staging modules at ${STAGING_VERSION}, etcd ${etcd_version}"
