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
# Installs the pinned helm and dmt used by hack/module-lint.sh into a per-version cache directory.
# Both are built from source with `go install`, so only the Go module proxy is needed. Already
# installed versions are reused. Prints nothing but progress on stderr; exits non-zero on failure.
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

install_dmt() {
  if [[ -x "${DMT_BIN}" ]]; then return 0; fi
  need_go
  log "building dmt ${DMT_VERSION} into ${DMT_DIR}"
  mkdir -p "${DMT_DIR}"
  GOBIN="${DMT_DIR}" CGO_ENABLED=0 go install "github.com/deckhouse/dmt/cmd/dmt@${DMT_VERSION}"
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
