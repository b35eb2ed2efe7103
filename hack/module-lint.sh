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
# Lints the Deckhouse module bundle:
#   1. installs pinned helm and dmt (hack/install-tools.sh; cached per version),
#   2. checks the settings schema against openapi/openapi-case-tests.yaml and every documented example,
#   3. renders the chart with helm for the defaults and for every documented example,
#   4. checks the repository and the rendered manifests against the deckhouse conventions,
#   5. runs `dmt lint` when dmt could be installed.
# Exits non-zero on any error. Set SVDM_REQUIRE_DMT=1 to fail when dmt cannot be installed.
# Rendered manifests are left in $SVDM_RENDER_DIR (default .run/module-render) for dry-runs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
RENDER_DIR="${SVDM_RENDER_DIR:-${ROOT}/.run/module-render}"
KUBE_VERSION=1.36
failed=0

step() { echo "==> $*" >&2; }

# shellcheck source=hack/install-tools.sh
source "${ROOT}/hack/install-tools.sh"
step "helm ${HELM_VERSION}"
install_helm
dmt_ok=1
step "dmt ${DMT_VERSION}"
if ! install_dmt 2>"${TMPDIR:-/tmp}/svdm-dmt-install.log"; then
  dmt_ok=0
  tail -n 3 "${TMPDIR:-/tmp}/svdm-dmt-install.log" >&2 || true
  if [[ "${SVDM_REQUIRE_DMT:-0}" == "1" ]]; then
    echo "error: dmt ${DMT_VERSION} could not be installed" >&2
    exit 1
  fi
  echo "warning: dmt ${DMT_VERSION} could not be installed from the Go module proxy; running the in-repo convention checks only" >&2
fi

step "openapi case tests"
python3 hack/lint/module_lint.py cases || failed=1

step "repository checks"
python3 hack/lint/module_lint.py static || failed=1

step "helm template (defaults and every documented example)"
rm -rf "${RENDER_DIR}"
mkdir -p "${RENDER_DIR}/settings" "${RENDER_DIR}/values"
python3 hack/lint/module_lint.py settings-sets "${RENDER_DIR}/settings"
api_versions=(
  --api-versions autoscaling.k8s.io/v1/VerticalPodAutoscaler
  --api-versions monitoring.coreos.com/v1/PodMonitor
  --api-versions monitoring.coreos.com/v1/PrometheusRule
  --api-versions deckhouse.io/v1/GrafanaDashboardDefinition
)
rendered=()
for settings in "${RENDER_DIR}"/settings/*.json; do
  name="$(basename "${settings}" .json)"
  values="${RENDER_DIR}/values/${name}.yaml"
  if ! python3 hack/lint/module_lint.py values "${settings}" "${values}"; then
    echo "error: settings set ${name} does not validate" >&2
    failed=1
    continue
  fi
  out="${RENDER_DIR}/${name}.yaml"
  if ! "${HELM_BIN}" template "${MODULE_RELEASE:-storage-volume-data-manager}" "${ROOT}" \
      --namespace d8-storage-volume-data-manager --kube-version "${KUBE_VERSION}" "${api_versions[@]}" \
      -f hack/lint/global-values.yaml -f "${values}" >"${out}" 2>"${out}.err"; then
    echo "error: helm template failed for ${name}:" >&2
    cat "${out}.err" >&2
    failed=1
    continue
  fi
  rendered+=("${out}")
done
# The same chart without the optional APIs (no VPA, no Prometheus operator) must render too.
if ! "${HELM_BIN}" template storage-volume-data-manager "${ROOT}" --kube-version "${KUBE_VERSION}" \
    -f hack/lint/global-values.yaml -f "${RENDER_DIR}/values/defaults.yaml" >"${RENDER_DIR}/minimal-apis.yaml.out"; then
  echo "error: helm template failed without optional APIs" >&2
  failed=1
fi
echo "rendered ${#rendered[@]} settings set(s) into ${RENDER_DIR}" >&2

step "rendered manifest checks"
if [[ ${#rendered[@]} -gt 0 ]]; then
  python3 hack/lint/module_lint.py rendered "${rendered[@]}" || failed=1
fi

step "lint self-test (each check catches its mistake)"
if [[ -f "${RENDER_DIR}/defaults.yaml" ]]; then
  python3 hack/lint/test_module_lint.py "${RENDER_DIR}/defaults.yaml" || failed=1
fi

if [[ "${dmt_ok}" == "1" ]]; then
  step "dmt lint"
  # dmt writes templates/_dmt_image_stub.tpl while rendering; never leave it behind.
  trap 'rm -f "${ROOT}/templates/_dmt_image_stub.tpl"' EXIT
  "${DMT_BIN}" lint "${ROOT}" || failed=1
fi

if [[ "${failed}" != "0" ]]; then
  echo "module lint: FAILED" >&2
  exit 1
fi
echo "module lint: OK" >&2
