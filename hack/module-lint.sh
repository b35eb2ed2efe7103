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
# Lints the Deckhouse module bundle; exits non-zero on any error.
#   1. dmt lint, the Deckhouse module linter (v0.1.105; hack/install-tools.sh installs it, from the
#      source vendored in hack/dmt/ while the Go module proxy refuses it). Any dmt error fails the
#      lint; its warnings are printed and do not.
#   2. What dmt does not check, with pinned helm and hack/lint/module_lint.py:
#      - the settings schema against openapi/openapi-case-tests.yaml, every documented example and
#        the docs' DataExport examples (dmt validates no values against the schemas);
#      - a helm render for the defaults, each x-examples entry, all of them at once, every
#        ModuleConfig in docs/, one without the optional APIs and one whose custom certificate the
#        hook could not copy (the controller must be told), and dmt's manifest rules on each
#        of those renders (dmt renders once, with values it generates; publishing, custom
#        certificates and placement only show up in some);
#      - webhooks carry a caBundle and a Pod webhook never fails closed;
#      - names that must agree across files (module.yaml, Chart.yaml), both languages of every
#        setting's description, a title on every docs page and the settings page's schema marker;
#      - the docs against the code, in both languages: the Ready reason table lists exactly the
#        reasons of crates/api (with the Ready value the controller sets), the admission error table
#        every reason the webhook denies with, and the settings table every setting with the
#        schema's default;
#      - the build definitions: every image the chart references is a final werf image and the
#        other way round, and oss.yaml's versions are the ones Cargo.lock pins;
#      - a self-test that each of those checks catches the mistake it names.
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
step "dmt ${DMT_VERSION}"
if ! install_dmt; then
  echo "error: dmt ${DMT_VERSION} could not be installed; the module cannot be linted without it" >&2
  exit 1
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
# CustomCertificate mode whose Secret the hook could not copy: the hook records why instead of
# failing the module, and the chart must pass that to the controller (published exports report it
# as PublishFailed) instead of pointing Ingresses at a TLS Secret it does not render.
name=custom-certificate-missing
echo '{"publicHost": "data-exporter.example.com", "https": {"mode": "CustomCertificate", "customCertificate": {"secretName": "missing-tls"}}}' \
  >"${RENDER_DIR}/settings/${name}.json"
echo '{"customCertificateError": "the custom certificate Secret d8-system/missing-tls (type kubernetes.io/tls) was not found"}' \
  >"${RENDER_DIR}/values/${name}.internal.json"
out="${RENDER_DIR}/${name}.yaml"
if python3 hack/lint/module_lint.py values "${RENDER_DIR}/settings/${name}.json" "${RENDER_DIR}/values/${name}.yaml" \
      "${RENDER_DIR}/values/${name}.internal.json" \
    && "${HELM_BIN}" template storage-volume-data-manager "${ROOT}" --namespace d8-storage-volume-data-manager \
      --kube-version "${KUBE_VERSION}" "${api_versions[@]}" -f hack/lint/global-values.yaml \
      -f "${RENDER_DIR}/values/${name}.yaml" >"${out}"; then
  if ! grep -q -- '--publish-unavailable=the custom certificate Secret d8-system/missing-tls' "${out}" \
      || grep -q -- 'ingress-tls-customcertificate' "${out}"; then
    echo "error: ${name}: the controller must get --publish-unavailable and no Ingress TLS Secret may be rendered" >&2
    failed=1
  fi
  rendered+=("${out}")
else
  echo "error: helm template failed for ${name}" >&2
  failed=1
fi
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

step "dmt lint"
# dmt writes templates/_dmt_image_stub.tpl while rendering; never leave it behind.
trap 'rm -f "${ROOT}/templates/_dmt_image_stub.tpl"' EXIT
# Without a git remote dmt logs "Failed to get remote origin" errors and then reads the module name
# from module.yaml; those lines are noise, the verdict is the summary at the end.
dmt_status=0
"${DMT_BIN}" lint "${ROOT}" >"${RENDER_DIR}/dmt.log" 2>&1 || dmt_status=$?
grep -v 'Failed to get remote origin' "${RENDER_DIR}/dmt.log" >&2 || true
if [[ "${dmt_status}" != "0" ]]; then
  echo "error: dmt lint failed (exit ${dmt_status}; full output in ${RENDER_DIR}/dmt.log)" >&2
  failed=1
fi

if [[ "${failed}" != "0" ]]; then
  echo "module lint: FAILED" >&2
  exit 1
fi
echo "module lint: OK" >&2
