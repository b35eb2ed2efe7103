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
# The module enabled the way Deckhouse enables it, on the local control plane (e2e/testenv.sh up,
# e2e/stack.sh up sim): a platform engineer applies a ModuleConfig, and this script does what
# Deckhouse's addon-operator does with it —
#
#   1. reads the ModuleConfig back from the API server, validates its settings against
#      openapi/config-values.yaml and fills the defaults (hack/lint/module_lint.py values);
#   2. runs the module's hooks for beforeHelm through the batch-hook protocol, with binding contexts
#      built from the cluster's real objects (hack/hook-runner.py), giving the internal values
#      (webhook certificate, exporter CA);
#   3. renders the chart with real `helm` and applies it (CRDs first, then every rendered object);
#   4. runs the afterHelm hooks, waits for the controller and webhook Deployments to roll out and
#      checks that the API server reaches the webhook through its Service.
#
# The controller and webhook pods are scheduled by the real scheduler onto the simulated node, whose
# kubelet stand-in runs the local binaries for the chart's image references (e2e/module/images.env)
# with the pods' own ServiceAccount tokens: everything they may do comes from the chart's RBAC.
#
#   e2e/module.sh up     SVDM_MODULECONFIG=<file> to enable with other settings
#   e2e/module.sh down   uninstall the release and run the module-disabled (afterDeleteHelm) hooks
#
# Writes its work files (values, rendered manifests, hook output) to $TESTENV_DIR/module.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"
# shellcheck source=e2e/module/images.env
. "$repo/e2e/module/images.env"
target=${CARGO_TARGET_DIR:-$repo/target}/debug
work=$TESTENV_DIR/module
NS=d8-storage-volume-data-manager
MODULE=storage-volume-data-manager
k=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG")
user=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG_EDITOR" -n "$TESTENV_EDITOR_NAMESPACE")
say() { printf 'module: %s\n' "$*" >&2; }

hooks() { # binding
  python3 hack/hook-runner.py --hooks-bin "$target/svdm-hooks" --binding "$1" \
    --values "$work/values.yaml" --out "$work/values.next.yaml" \
    --kubectl "$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG" --apply-kube
  mv "$work/values.next.yaml" "$work/values.yaml"
}

up() {
  # shellcheck source=hack/install-tools.sh
  source "$repo/hack/install-tools.sh"
  install_helm
  [ -x "$target/svdm-hooks" ] || { say "svdm-hooks is not built (cargo build --workspace --bins)"; exit 1; }
  mkdir -p "$work"

  say "the platform: ModuleConfig API and priority classes"
  "${k[@]}" apply --server-side -f e2e/module/platform.yaml >/dev/null
  "${k[@]}" wait --for condition=Established --timeout 60s crd/moduleconfigs.deckhouse.io >/dev/null

  say "the platform engineer enables the module: ${SVDM_MODULECONFIG:-e2e/module/moduleconfig.yaml}"
  "${k[@]}" apply --server-side -f "${SVDM_MODULECONFIG:-e2e/module/moduleconfig.yaml}" >/dev/null

  say "the operator: settings from the ModuleConfig, validated and defaulted"
  "${k[@]}" get moduleconfig "$MODULE" -o json > "$work/moduleconfig.json"
  if [ "$(jq -r '.spec.enabled' "$work/moduleconfig.json")" != true ]; then
    say "ModuleConfig $MODULE does not enable the module; nothing to do"
    exit 1
  fi
  jq '.spec.settings // {}' "$work/moduleconfig.json" > "$work/settings.json"
  if ! python3 hack/lint/module_lint.py values "$work/settings.json" "$work/module-values.yaml" >&2; then
    say "the ModuleConfig's settings are invalid; the module stays as it was"
    exit 1
  fi
  # Global values as Deckhouse passes them, for this cluster: its images, and one node that is not
  # a dedicated system node (so the pods carry no system nodeSelector).
  python3 - hack/lint/global-values.yaml "$work/module-values.yaml" "$work/values.yaml" <<PY
import sys, yaml
glob = yaml.safe_load(open(sys.argv[1]))["global"]
glob["modulesImages"]["registry"]["base"] = "$SVDM_MODULE_REGISTRY"
glob["modulesImages"]["digests"]["storageVolumeDataManager"] = {
    "controller": "$SVDM_CONTROLLER_DIGEST", "exporter": "$SVDM_EXPORTER_DIGEST"}
glob["discovery"]["d8SpecificNodeCountByRole"] = {}
glob["enabledModules"] = [m for m in glob["enabledModules"]
                          if m not in ("vertical-pod-autoscaler", "operator-prometheus", "prometheus")]
module = yaml.safe_load(open(sys.argv[2]))
module["storageVolumeDataManager"]["internal"] = {}
yaml.safe_dump({"global": glob, **module}, open(sys.argv[3], "w"))
PY

  say "the operator: beforeHelm hooks"
  hooks beforeHelm

  say "the operator: helm renders and applies the chart"
  "${HELM_BIN}" template "$MODULE" "$repo" --namespace "$NS" --kube-version 1.36 \
    -f "$work/values.yaml" > "$work/rendered.yaml"
  # addon-operator applies crds/*.yaml except the doc-* translations.
  "${k[@]}" apply --server-side --force-conflicts -f crds/dataexports.yaml >/dev/null
  "${k[@]}" wait --for condition=Established --timeout 60s crd/dataexports.storage.deckhouse.io >/dev/null
  # The stand-in RBAC that e2e/stack.sh gives the tests' exporters and users goes: from here on,
  # every grant the module's components and its users have comes from the chart.
  "${k[@]}" delete --ignore-not-found \
    clusterrole/d8:storage-volume-data-manager:user \
    clusterrolebinding/d8:storage-volume-data-manager:exporter:auth-delegator >/dev/null
  "${k[@]}" -n "$NS" delete --ignore-not-found \
    role/d8:storage-volume-data-manager:exporter rolebinding/d8:storage-volume-data-manager:exporter >/dev/null
  "${k[@]}" -n "$TESTENV_EDITOR_NAMESPACE" delete --ignore-not-found rolebinding/test-editor-dataexports >/dev/null
  "${k[@]}" apply --server-side --force-conflicts --field-manager helm -f "$work/rendered.yaml" >/dev/null
  say "applied $(grep -c '^kind:' "$work/rendered.yaml") objects"

  say "the operator: afterHelm hooks"
  hooks afterHelm

  # What a cluster admin does to let test-editor use the module: bind the module's shipped RBAC v2
  # capabilities in the user's namespace (Deckhouse's user-authz aggregates them into its roles).
  "${k[@]}" apply --server-side -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: test-editor-svdm-view, namespace: $TESTENV_EDITOR_NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "d8:use:capability:module:$MODULE:view"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: test-editor}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: test-editor-svdm-edit, namespace: $TESTENV_EDITOR_NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "d8:use:capability:module:$MODULE:edit"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: test-editor}]
EOF

  say "waiting for the module's pods"
  if ! "${k[@]}" -n "$NS" rollout status deploy/controller deploy/webhook --timeout 180s >&2; then
    "${k[@]}" -n "$NS" get pods -o wide >&2 || true
    "${k[@]}" -n "$NS" describe pods >&2 || true
    exit 1
  fi
  # The API server must reach the webhook through its Service: a DataExport of a PVC that does not
  # exist is refused with the webhook's message, not with a connection error.
  local out i
  for i in $(seq 1 60); do
    out=$("${user[@]}" create --dry-run=server -o name -f - 2>&1 <<EOF || true
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata: {name: module-probe}
spec: {ttl: 5m, targetRef: {kind: PersistentVolumeClaim, name: module-probe-missing}}
EOF
)
    if [[ $out == *'denied the request'*module-probe-missing* ]]; then break; fi
    sleep 1
  done
  if [[ $out != *'denied the request'*module-probe-missing* ]]; then
    say "the API server did not get an answer from the webhook: $out"
    exit 1
  fi
  say "webhook answers through its Service: ${out##*denied the request: }"
  say "up: controller and webhook run from the rendered chart (work files in $work)"
}

down() {
  [ -f "$work/rendered.yaml" ] || { say "not installed"; return 0; }
  say "helm uninstall: delete what the chart made (CRDs stay, as in Deckhouse)"
  "${k[@]}" delete --ignore-not-found --wait=true --timeout 120s -f "$work/rendered.yaml" >/dev/null 2>&1 || true
  say "the operator: afterDeleteHelm hooks"
  hooks afterDeleteHelm
  "${k[@]}" delete --ignore-not-found moduleconfig "$MODULE" >/dev/null
  "${k[@]}" -n "$TESTENV_EDITOR_NAMESPACE" delete --ignore-not-found \
    rolebinding/test-editor-svdm-view rolebinding/test-editor-svdm-edit >/dev/null
  rm -f "$work/rendered.yaml"
  say "down"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
