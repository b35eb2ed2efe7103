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
# Server-side dry-run of the rendered chart against the local control plane (e2e/testenv.sh up):
# the real API server validates every object strictly (schemas, RBAC escalation checks, webhook
# configurations) without persisting anything. Renders with hack/module-lint.sh's values for the
# defaults and for every documented example (run hack/module-lint.sh first, or this script renders
# itself). Optional APIs (VPA, Prometheus operator, Grafana dashboards) are rendered off, because the
# local control plane does not serve them.
#
# Needs $TESTENV_DIR/env (default .run/testenv/env). The module namespace is created if missing and
# removed again afterwards; everything else is dry-run only.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
ENV_FILE="${TESTENV_DIR:-${ROOT}/.run/testenv}/env"
if [[ ! -f "${ENV_FILE}" ]]; then
  echo "module-dry-run: ${ENV_FILE} not found; start the local control plane with e2e/testenv.sh up" >&2
  exit 1
fi
# shellcheck disable=SC1090
source "${ENV_FILE}"
KUBECTL=("${TESTENV_BIN}/kubectl" --kubeconfig "${TESTENV_KUBECONFIG}")
NS=d8-storage-volume-data-manager
RENDER_DIR="${SVDM_RENDER_DIR:-${ROOT}/.run/module-render}"

# shellcheck source=hack/install-tools.sh
source "${ROOT}/hack/install-tools.sh"
install_helm

mkdir -p "${RENDER_DIR}/settings" "${RENDER_DIR}/values" "${RENDER_DIR}/dry-run"
python3 hack/lint/module_lint.py settings-sets "${RENDER_DIR}/settings"

created_ns=0
cleanup() {
  if [[ "${created_ns}" == "1" ]]; then
    "${KUBECTL[@]}" delete namespace "${NS}" --wait=false >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
if ! "${KUBECTL[@]}" get namespace "${NS}" >/dev/null 2>&1; then
  "${KUBECTL[@]}" create namespace "${NS}" >/dev/null
  created_ns=1
fi
# The CRD must be known for nothing here, but the RBAC rules name its group; install it as the
# module does (addon-operator applies crds/*.yaml), server-side and idempotent.
"${KUBECTL[@]}" apply --server-side --force-conflicts -f crds/dataexports.yaml >/dev/null

# The hooks, run through the batch-hook protocol against this API server (hack/hook-runner.py):
# their beforeHelm values (real certificates) go into the defaults render below.
HOOKS_BIN="${SVDM_HOOKS_BIN:-}"
if [[ -z "${HOOKS_BIN}" ]]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/storage-volume-data-manager/target}"
  cargo build -q -p svdm-hooks
  HOOKS_BIN="${CARGO_TARGET_DIR}/debug/svdm-hooks"
fi
python3 hack/lint/module_lint.py values "${RENDER_DIR}/settings/defaults.json" "${RENDER_DIR}/values/defaults.yaml"
python3 - "${RENDER_DIR}/values/defaults.yaml" hack/lint/global-values.yaml "${RENDER_DIR}/hooks-in.yaml" <<'PY'
import sys, yaml
module = yaml.safe_load(open(sys.argv[1]))
module["storageVolumeDataManager"]["internal"] = {}
glob = yaml.safe_load(open(sys.argv[2]))
yaml.safe_dump({**glob, **module}, open(sys.argv[3], "w"))
PY
python3 hack/hook-runner.py --hooks-bin "${HOOKS_BIN}" --binding beforeHelm \
  --values "${RENDER_DIR}/hooks-in.yaml" --out "${RENDER_DIR}/hooks-out.yaml" \
  --kubectl "${TESTENV_BIN}/kubectl" --kubeconfig "${TESTENV_KUBECONFIG}"
python3 - "${RENDER_DIR}/hooks-out.yaml" "${RENDER_DIR}/values/hooks.yaml" <<'PY'
import sys, yaml
out = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump({"storageVolumeDataManager": out["storageVolumeDataManager"]}, open(sys.argv[2], "w"))
PY

failed=0
count=0
out="${RENDER_DIR}/dry-run/with-hook-values.yaml"
"${HELM_BIN}" template storage-volume-data-manager "${ROOT}" --namespace "${NS}" --kube-version 1.36 \
  -f hack/lint/global-values.yaml -f "${RENDER_DIR}/values/hooks.yaml" >"${out}"
if ! "${KUBECTL[@]}" apply --dry-run=server --validate=strict -f "${out}" >"${out}.log" 2>&1 || grep -qi "warning: tls" "${out}.log"; then
  echo "error: server-side dry-run with the hooks' values failed:" >&2
  cat "${out}.log" >&2
  failed=1
fi
count=$((count + 1))
for settings in "${RENDER_DIR}"/settings/*.json; do
  name="$(basename "${settings}" .json)"
  values="${RENDER_DIR}/values/${name}.yaml"
  python3 hack/lint/module_lint.py values "${settings}" "${values}"
  out="${RENDER_DIR}/dry-run/${name}.yaml"
  "${HELM_BIN}" template storage-volume-data-manager "${ROOT}" --namespace "${NS}" --kube-version 1.36 \
    -f hack/lint/global-values.yaml -f "${values}" >"${out}"
  if ! "${KUBECTL[@]}" apply --dry-run=server --validate=strict -f "${out}" >"${out}.log" 2>&1; then
    echo "error: server-side dry-run failed for ${name}:" >&2
    grep -iv "(server dry run)$" "${out}.log" >&2 || true
    failed=1
  fi
  count=$((count + 1))
done
if [[ "${failed}" != "0" ]]; then
  echo "module dry-run: FAILED" >&2
  exit 1
fi
echo "module dry-run: ${count} render(s) accepted by the API server" >&2
