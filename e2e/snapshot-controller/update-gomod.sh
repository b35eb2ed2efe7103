#!/usr/bin/env bash
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
