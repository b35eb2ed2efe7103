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
# Installs the pinned helm and dmt used by hack/module-lint.sh into a per-version cache directory
# (~/.cache/storage-volume-data-manager/tools/<tool>-<version>/). Already installed versions are
# reused. Prints nothing but progress on stderr; exits non-zero on failure.
#
# helm comes from `go install`. dmt does too where the Go module proxy serves it; this one does not
# (403 for github.com/deckhouse/dmt), so dmt is then built from its source archive vendored in
# hack/dmt/ (Apache-2.0, license kept there; checked against the sha256 below). Vendored rather than
# taken from a shared directory outside the repository: CI checks out a fresh clone elsewhere on the
# machine, where no path relative to the clone is guaranteed, and a missing linter must never pass
# as a clean lint. Only the kubedog pseudo-version dmt pins is refused as well; an earlier kubedog
# commit the proxy serves replaces it (hack/dmt/README.md).
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
DMT_VERSION="${DMT_VERSION:-v0.1.105}"
TOOLS_ROOT="${SVDM_TOOLS_ROOT:-${HOME}/.cache/storage-volume-data-manager/tools}"

HELM_DIR="${TOOLS_ROOT}/helm-${HELM_VERSION}"
DMT_DIR="${TOOLS_ROOT}/dmt-${DMT_VERSION}"
export HELM_BIN="${HELM_DIR}/helm"
export DMT_BIN="${DMT_DIR}/dmt"

log() { echo "install-tools: $*" >&2; }

need_go() {
  if ! command -v go >/dev/null 2>&1; then
    log "go is not on PATH; Go >= 1.25 is needed to build helm and dmt"
    exit 1
  fi
}

install_helm() {
  if [[ -x "${HELM_BIN}" ]]; then return 0; fi
  need_go
  log "building helm ${HELM_VERSION} into ${HELM_DIR}"
  mkdir -p "${HELM_DIR}"
  local minor=36
  # Without these ldflags helm believes the cluster is Kubernetes 1.20 (test-harness §8.1).
  GOBIN="${HELM_DIR}" CGO_ENABLED=0 go install \
    -ldflags "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${minor} -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${minor} -X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}" \
    "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}"
}

DMT_SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/dmt/dmt-${DMT_VERSION}.tar.gz"
DMT_SOURCE_SHA256=8430a73e763cf9007ac0ca5c095f9d5c058543bfaccc2079fddf3aa357f84fb0
# The kubedog commit that replaces dmt's pinned (and refused) pseudo-version.
DMT_KUBEDOG=github.com/werf/kubedog@v0.13.1-0.20260217150136-ed58edf34eac

install_dmt() {
  if [[ -x "${DMT_BIN}" ]]; then return 0; fi
  need_go
  mkdir -p "${DMT_DIR}"
  log "building dmt ${DMT_VERSION} into ${DMT_DIR}"
  if GOBIN="${DMT_DIR}" CGO_ENABLED=0 go install "github.com/deckhouse/dmt/cmd/dmt@${DMT_VERSION}" 2>"${DMT_DIR}/go-install.log"; then
    return 0
  fi
  log "go install refused ($(grep -m1 -o '[0-9][0-9][0-9] [A-Za-z ]*' "${DMT_DIR}/go-install.log" || echo "see ${DMT_DIR}/go-install.log")); building from ${DMT_SOURCE}"
  if [[ ! -f "${DMT_SOURCE}" ]] || ! echo "${DMT_SOURCE_SHA256}  ${DMT_SOURCE}" | sha256sum -c --quiet -; then
    log "no intact dmt source archive at ${DMT_SOURCE}"
    return 1
  fi
  local src
  src=$(mktemp -d)
  tar -xzf "${DMT_SOURCE}" -C "${src}"
  (
    cd "${src}/dmt"
    go mod edit -replace "github.com/werf/kubedog=${DMT_KUBEDOG}"
    GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/deckhouse/dmt/internal/version.Version=${DMT_VERSION}" \
      -o "${DMT_DIR}/dmt.tmp" ./cmd/dmt
  ) || { rm -rf "${src}"; return 1; }
  rm -rf "${src}"
  mv "${DMT_DIR}/dmt.tmp" "${DMT_BIN}"
}

main() {
  install_helm
  install_dmt
  echo "HELM_BIN=${HELM_BIN}"
  echo "DMT_BIN=${DMT_BIN}"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
