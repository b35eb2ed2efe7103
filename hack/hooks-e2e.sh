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
# The module-disabled and migration hooks against a real control plane, through the batch-hook
# protocol (hack/hook-runner.py applies their object patches with kubectl, as addon-operator would).
#
# The hooks act cluster-wide, so this must never run against a control plane other tests use: it
# starts its own (e2e/testenv.sh with a private TESTENV_DIR) unless HOOKS_TESTENV_DIR names one that
# is already running and private. Scenarios, each set up exactly as the controller (or the earlier Go
# implementation) leaves the cluster mid-export, with the real PV binder of kube-controller-manager:
#   1. afterDeleteHelm with an export in flight (export PVC, exporter Pod, Service, Secret, Lease):
#      right after the one run the PV's claimRef names the user PVC (uid) and carries the original
#      reclaim policy with no svdm label, annotation or finalizer left on PV or PVC (no waiting for
#      the binder); then the user PVC ends Bound to its PV, the exporter objects and export PVC are
#      gone and the DataExport's finalizer is released.
#   3. afterDeleteHelm with a VolumeSnapshot export in flight (user snapshot protected by our
#      finalizer, copied VolumeSnapshotContent and VolumeSnapshot, restored PVC, exporter objects),
#      with the real snapshot-controller: every module-namespace object and the copied content are
#      gone, the user's VolumeSnapshot and content are intact (not deleting, same content, deletion
#      policy unchanged) and unprotected, the DataExport's finalizer released.
#   5. afterDeleteHelm with the PV already Released (export PVC deleted just before, claimRef still
#      naming it, policy Retain): the runs (with addon-operator's retries emulated) end with the PV
#      Bound to the user PVC under Delete, the same PV object, and a poller that watched the PV
#      throughout never saw it Released (or Failed) under Delete, deleting or gone.
#   4. afterDeleteHelm again: the second run succeeds and changes nothing.
#   6. the guard itself: the runner applying the hook's guarded restore to a PV that is not Bound
#      gets it rejected by the API server, reported as a failed test op, and the PV keeps Retain.
#   2. beforeHelm with a legacy export in flight: the same for the legacy names, the legacy-expired
#      DataExport marked Expired; a second run writes the marker; a third does nothing.
#   7. (in the same beforeHelm runs as 2) a legacy PV already Released (legacy export PVC deleted
#      just before, claimRef still naming it, policy Retain): the runs (with addon-operator's retries
#      emulated; a retry finds the half-returned PV by its legacy record and our mark) end with the
#      PV Bound to the user PVC under Delete, the same PV object, no legacy or svdm key left, and a
#      poller that watched the PV throughout never saw it Released (or Failed) under Delete,
#      deleting or gone; the marker is written only by the later clean run.
#   8. (in the same runs) a legacy PV an earlier run half-returned (its rebind held: claimRef the
#      user PVC with uid and our mark, user PVC released; its guarded restore was rejected): no
#      longer pointing into the module namespace, it is still found and gets only the guarded
#      restore: Bound under Delete, no legacy or svdm key left.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${ROOT}"
TESTENV_DIR="${HOOKS_TESTENV_DIR:-${HOME}/.cache/storage-volume-data-manager/hooks-testenv}"
export TESTENV_DIR
started=0
if [[ ! -f "${TESTENV_DIR}/env" ]]; then
  e2e/testenv.sh up >&2
  started=1
fi
SIM_PID=""
POLL_PID=""
cleanup() {
  if [[ -n "${SIM_PID}" ]]; then kill "${SIM_PID}" 2>/dev/null || true; wait "${SIM_PID}" 2>/dev/null || true; fi
  if [[ -n "${POLL_PID}" ]]; then kill "${POLL_PID}" 2>/dev/null || true; wait "${POLL_PID}" 2>/dev/null || true; fi
  if [[ -n "${WORK:-}" ]]; then rm -rf "${WORK}"; fi
  if [[ "${started}" == "1" && "${HOOKS_E2E_KEEP:-0}" != "1" ]]; then
    e2e/testenv.sh down >&2 || true
  fi
}
trap cleanup EXIT
# shellcheck disable=SC1091
source "${TESTENV_DIR}/env"
K=("${TESTENV_BIN}/kubectl" --kubeconfig "${TESTENV_KUBECONFIG}")
NS=d8-storage-volume-data-manager

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME}/.cache/storage-volume-data-manager/target}"
cargo build -q -p svdm-hooks
HOOKS_BIN="${CARGO_TARGET_DIR}/debug/svdm-hooks"
WORK="$(mktemp -d)"

passed=0
failed=0
check() { # description, command...
  local what="$1"
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok: ${what}" >&2
  else
    failed=$((failed + 1))
    echo "FAIL: ${what}" >&2
  fi
}
jp() { "${K[@]}" get "$@"; }
wait_for() { # seconds, command...
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS > deadline)); then return 1; fi
    sleep 1
  done
}
run_hooks() { # binding [hook-runner options...]
  python3 - hack/lint/global-values.yaml "${WORK}/in.yaml" <<'PY'
import sys, yaml
g = yaml.safe_load(open(sys.argv[1]))
g["storageVolumeDataManager"] = {"internal": {}, "https": {}}
yaml.safe_dump(g, open(sys.argv[2], "w"))
PY
  python3 hack/hook-runner.py --hooks-bin "${HOOKS_BIN}" --binding "$1" --values "${WORK}/in.yaml" \
    --out "${WORK}/out.yaml" --kubectl "${TESTENV_BIN}/kubectl" --kubeconfig "${TESTENV_KUBECONFIG}" --apply-kube "${@:2}"
}
# afterDeleteHelm with addon-operator's retry of a failed run (a guarded restore whose `test` does
# not hold yet fails the run; the retry starts from fresh snapshots).
run_disable() { run_hooks afterDeleteHelm --retries 10 --retry-delay 2; }

"${K[@]}" apply --server-side -f crds/dataexports.yaml >/dev/null

# The storage is simulated by whoever uses the testenv. The snapshot-controller leaves a deleted
# VolumeSnapshotContent's finalizer to the CSI driver's csi-snapshotter sidecar, which (for
# deletionPolicy Delete) deletes the storage snapshot first. This stands in for that sidecar for the
# driver the scenarios use, and records every storage snapshot it deletes: the user's must never be.
SNAP_DRIVER=hooks-e2e.csi.example
DELETED_SNAPSHOTS="${WORK}/deleted-storage-snapshots"
: >"${DELETED_SNAPSHOTS}"
sim_snapshotter() {
  while :; do
    "${K[@]}" get volumesnapshotcontents -o json 2>/dev/null | python3 -c '
import json, sys
for c in json.load(sys.stdin)["items"]:
    m, s = c["metadata"], c["spec"]
    if s.get("driver") != sys.argv[1] or not m.get("deletionTimestamp"):
        continue
    unbound = not (s.get("volumeSnapshotRef") or {}).get("uid")
    if not unbound and "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted" not in (m.get("annotations") or {}):
        continue
    fins = [f for f in (m.get("finalizers") or []) if f != "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"]
    print(m["name"], s.get("deletionPolicy"), (s.get("source") or {}).get("snapshotHandle", "-"), json.dumps({"metadata": {"finalizers": fins}}, separators=(",", ":")))
' "${SNAP_DRIVER}" | while read -r name policy handle patch; do
      if [[ "${policy}" == "Delete" ]]; then echo "${handle}" >>"${DELETED_SNAPSHOTS}"; fi
      "${K[@]}" patch volumesnapshotcontent "${name}" --type merge -p "${patch}" >/dev/null 2>&1 || true
    done
    sleep 0.5
  done
}
sim_snapshotter &
SIM_PID=$!
"${K[@]}" create namespace "${NS}" --dry-run=client -o yaml | "${K[@]}" apply -f - >/dev/null

# A PV bound to a user PVC by the real binder, then handed over (`prefix` = svdm or legacy).
make_bound_pv() { # namespace pvc pv
  local ns=$1 pvc=$2 pv=$3
  "${K[@]}" create namespace "${ns}" --dry-run=client -o yaml | "${K[@]}" apply -f - >/dev/null
  "${K[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: ${pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Delete
  storageClassName: hooks-e2e
  hostPath: {path: /tmp/hooks-e2e/${pv}}
  claimRef: {namespace: ${ns}, name: ${pvc}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${pvc}
  namespace: ${ns}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: hooks-e2e
  volumeName: ${pv}
  resources: {requests: {storage: 1Gi}}
YAML
  wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n ${ns} get pvc ${pvc} -o jsonpath='{.status.phase}') == Bound ]]"
}

hand_over() { # ns pvc pv export-pvc annotations-json labels-json user-finalizer user-annotations-json user-labels-json
  local ns=$1 pvc=$2 pv=$3 export=$4
  local user_uid
  user_uid=$(jp -n "${ns}" pvc "${pvc}" -o jsonpath='{.metadata.uid}')
  "${K[@]}" patch pv "${pv}" --type merge -p "{\"metadata\":{\"annotations\":$5,\"labels\":$6},\"spec\":{\"persistentVolumeReclaimPolicy\":\"Retain\"}}" >/dev/null
  "${K[@]}" patch pvc -n "${ns}" "${pvc}" --type merge -p "{\"metadata\":{\"finalizers\":[\"kubernetes.io/pvc-protection\",\"$7\"],\"annotations\":$8,\"labels\":$9}}" >/dev/null
  "${K[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${export}
  namespace: ${NS}
  labels: {svdm.storage.deckhouse.io/managed: "true"}
spec:
  accessModes: [ReadWriteOncePod]
  storageClassName: hooks-e2e
  volumeName: ${pv}
  resources: {requests: {storage: 1Gi}}
YAML
  local export_uid
  export_uid=$(jp -n "${NS}" pvc "${export}" -o jsonpath='{.metadata.uid}')
  "${K[@]}" patch pv "${pv}" --type merge -p "{\"spec\":{\"claimRef\":{\"namespace\":\"${NS}\",\"name\":\"${export}\",\"uid\":\"${export_uid}\",\"resourceVersion\":null}}}" >/dev/null
  wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n ${NS} get pvc ${export} -o jsonpath='{.status.phase}') == Bound ]]"
  wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n ${ns} get pvc ${pvc} -o jsonpath='{.status.phase}') == Lost ]]"
  echo "${user_uid}"
}

returned() { # ns pvc pv policy
  [[ $(jp -n "$1" pvc "$2" -o jsonpath='{.status.phase}/{.spec.volumeName}') == "Bound/$3" ]] &&
    [[ $(jp pv "$3" -o jsonpath='{.spec.persistentVolumeReclaimPolicy}') == "$4" ]]
}
no_marks() { # ns pvc pv pattern
  ! jp pv "$3" -o json | python3 -c "import json,sys; o=json.load(sys.stdin)['metadata']; sys.exit(0 if any('$4' in k for k in list((o.get('labels') or {}))+list((o.get('annotations') or {}))) else 1)" &&
    ! jp -n "$1" pvc "$2" -o json | python3 -c "import json,sys; o=json.load(sys.stdin)['metadata']; sys.exit(0 if any('$4' in k for k in list((o.get('labels') or {}))+list((o.get('annotations') or {}))+(o.get('finalizers') or [])) else 1)"
}
gone() { ! jp "$@" >/dev/null 2>&1; }
# The controller's object name for a DataExport uid (crates/controller objects::object_name).
object_name() { printf 'exp-%s' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"; }
# Exporter objects as the controller labels them in the module namespace.
make_exporter_objects() { # name dataexport-uid [pvc]
  local name=$1 uid=$2 pvc=${3:-}
  "${K[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ${NS}
  labels: {svdm.storage.deckhouse.io/managed: "true", svdm.storage.deckhouse.io/dataexport-uid: "${uid}"}
spec:
  ports: [{port: 443, targetPort: 8443}]
---
apiVersion: v1
kind: Secret
metadata:
  name: ${name}
  namespace: ${NS}
  labels: {svdm.storage.deckhouse.io/managed: "true", svdm.storage.deckhouse.io/dataexport-uid: "${uid}"}
stringData: {tls.crt: x, tls.key: x}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: ${name}
  namespace: ${NS}
  labels: {svdm.storage.deckhouse.io/managed: "true", svdm.storage.deckhouse.io/dataexport-uid: "${uid}"}
spec: {holderIdentity: exporter}
YAML
  if [[ -n "${pvc}" ]]; then
    # No node runs here: the pod stays Pending, but it holds the export PVC's pvc-protection.
    wait_for 60 jp -n "${NS}" serviceaccount default >/dev/null
    "${K[@]}" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${NS}
  labels: {svdm.storage.deckhouse.io/managed: "true", svdm.storage.deckhouse.io/dataexport-uid: "${uid}"}
spec:
  automountServiceAccountToken: false
  containers: [{name: exporter, image: registry.invalid/exporter, volumeMounts: [{name: data, mountPath: /data, readOnly: true}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: ${pvc}, readOnly: true}}]
YAML
  fi
}
exporter_gone() { # name
  gone -n "${NS}" pod "$1" && gone -n "${NS}" service "$1" && gone -n "${NS}" secret "$1" && gone -n "${NS}" lease "$1"
}
svdm_keys() { # kubectl-get-args...: prints svdm labels, annotations and finalizers of the object
  jp "$@" -o json | python3 -c "import json,sys; o=json.load(sys.stdin)['metadata']; print(' '.join(k for k in list((o.get('labels') or {}))+list((o.get('annotations') or {}))+(o.get('finalizers') or []) if 'svdm.storage.deckhouse.io' in k))"
}

echo "== scenario 1: module disabled with an export in flight" >&2
make_bound_pv hooks-a data pv-hooks-a
UID_A=$(hand_over hooks-a data pv-hooks-a exp-hooks-a \
  '{"svdm.storage.deckhouse.io/dataexport-namespace":"hooks-a","svdm.storage.deckhouse.io/dataexport-name":"backup","svdm.storage.deckhouse.io/dataexport-uid":"de-a","svdm.storage.deckhouse.io/original-reclaim-policy":"Delete","svdm.storage.deckhouse.io/original-claim-namespace":"hooks-a","svdm.storage.deckhouse.io/original-claim-name":"data","svdm.storage.deckhouse.io/original-claim-uid":"'"$(jp -n hooks-a pvc data -o jsonpath='{.metadata.uid}')"'"}' \
  '{"svdm.storage.deckhouse.io/exported":"true","svdm.storage.deckhouse.io/dataexport-uid":"de-a"}' \
  svdm.storage.deckhouse.io/export-protection \
  '{"svdm.storage.deckhouse.io/dataexport-uid":"de-a"}' \
  '{"svdm.storage.deckhouse.io/managed":"true","svdm.storage.deckhouse.io/dataexport-uid":"de-a"}')
make_exporter_objects exp-hooks-a de-a exp-hooks-a
"${K[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata:
  name: backup
  namespace: hooks-a
  finalizers: [svdm.storage.deckhouse.io/cleanup]
spec:
  targetRef: {kind: PersistentVolumeClaim, name: data}
YAML

echo "== scenario 3: module disabled with a VolumeSnapshot export in flight" >&2
"${K[@]}" create namespace hooks-s --dry-run=client -o yaml | "${K[@]}" apply -f - >/dev/null
# The user's snapshot as a CSI snapshot leaves it: content with deletionPolicy Delete (deleting it
# would delete the data), bound to the VolumeSnapshot by the real snapshot-controller.
"${K[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: hooks-s-user-content
spec:
  deletionPolicy: Delete
  driver: hooks-e2e.csi.example
  source: {snapshotHandle: user-snap-handle}
  sourceVolumeMode: Filesystem
  volumeSnapshotRef: {apiVersion: snapshot.storage.k8s.io/v1, kind: VolumeSnapshot, namespace: hooks-s, name: nightly}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: nightly
  namespace: hooks-s
spec:
  source: {volumeSnapshotContentName: hooks-s-user-content}
---
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata:
  name: snap-export
  namespace: hooks-s
  finalizers: [svdm.storage.deckhouse.io/cleanup]
spec:
  targetRef: {kind: VolumeSnapshot, group: snapshot.storage.k8s.io, name: nightly}
YAML
check "user snapshot bound by the snapshot-controller" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n hooks-s get volumesnapshot nightly -o jsonpath='{.status.boundVolumeSnapshotContentName}') == hooks-s-user-content ]]"
USER_VS_UID=$(jp -n hooks-s volumesnapshot nightly -o jsonpath='{.metadata.uid}')
# ProtectSource: our finalizer on the user's snapshot (the controller's merge of the whole list).
fins=$(jp -n hooks-s volumesnapshot nightly -o json | python3 -c "import json,sys; f=json.load(sys.stdin)['metadata'].get('finalizers') or []; print(json.dumps(f+['svdm.storage.deckhouse.io/restore-protection']))")
"${K[@]}" -n hooks-s patch volumesnapshot nightly --type merge -p "{\"metadata\":{\"finalizers\":${fins}}}" >/dev/null
DE_S=$(jp -n hooks-s dataexport snap-export -o jsonpath='{.metadata.uid}')
SN=$(object_name "${DE_S}")
OWNER_S="{svdm.storage.deckhouse.io/dataexport-namespace: hooks-s, svdm.storage.deckhouse.io/dataexport-name: snap-export, svdm.storage.deckhouse.io/dataexport-uid: \"${DE_S}\"}"
LABELS_S="{svdm.storage.deckhouse.io/managed: \"true\", svdm.storage.deckhouse.io/dataexport-uid: \"${DE_S}\"}"
# CreateContentCopy, CreateSnapshotCopy, CreateRestoredPvc as crates/controller objects.rs makes them.
"${K[@]}" apply -f - >/dev/null <<YAML
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshotContent
metadata:
  name: svdm-${SN}
  labels: ${LABELS_S}
  annotations: ${OWNER_S}
spec:
  deletionPolicy: Retain
  driver: hooks-e2e.csi.example
  source: {snapshotHandle: user-snap-handle}
  sourceVolumeMode: Filesystem
  volumeSnapshotRef: {apiVersion: snapshot.storage.k8s.io/v1, kind: VolumeSnapshot, namespace: ${NS}, name: ${SN}}
---
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: ${SN}
  namespace: ${NS}
  labels: ${LABELS_S}
  annotations: {svdm.storage.deckhouse.io/dataexport-namespace: hooks-s, svdm.storage.deckhouse.io/dataexport-name: snap-export, svdm.storage.deckhouse.io/dataexport-uid: "${DE_S}", svdm.storage.deckhouse.io/source-snapshot: hooks-s/nightly}
spec:
  source: {volumeSnapshotContentName: svdm-${SN}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: ${SN}
  namespace: ${NS}
  labels: ${LABELS_S}
  annotations: {svdm.storage.deckhouse.io/dataexport-namespace: hooks-s, svdm.storage.deckhouse.io/dataexport-name: snap-export, svdm.storage.deckhouse.io/dataexport-uid: "${DE_S}", svdm.storage.deckhouse.io/source-snapshot: hooks-s/nightly}
spec:
  accessModes: [ReadWriteOncePod]
  volumeMode: Filesystem
  storageClassName: hooks-e2e-restore
  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: ${SN}}
  resources: {requests: {storage: 1Gi}}
YAML
make_exporter_objects "${SN}" "${DE_S}"
check "snapshot copy bound to its content copy" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n ${NS} get volumesnapshot ${SN} -o jsonpath='{.status.boundVolumeSnapshotContentName}') == svdm-${SN} ]]"

echo "== scenario 5: module disabled with the PV already Released (export PVC deleted just before)" >&2
make_bound_pv hooks-r data pv-hooks-r
UID_R=$(hand_over hooks-r data pv-hooks-r exp-hooks-r \
  '{"svdm.storage.deckhouse.io/dataexport-namespace":"hooks-r","svdm.storage.deckhouse.io/dataexport-name":"backup","svdm.storage.deckhouse.io/dataexport-uid":"de-r","svdm.storage.deckhouse.io/original-reclaim-policy":"Delete","svdm.storage.deckhouse.io/original-claim-namespace":"hooks-r","svdm.storage.deckhouse.io/original-claim-name":"data","svdm.storage.deckhouse.io/original-claim-uid":"'"$(jp -n hooks-r pvc data -o jsonpath='{.metadata.uid}')"'"}' \
  '{"svdm.storage.deckhouse.io/exported":"true","svdm.storage.deckhouse.io/dataexport-uid":"de-r"}' \
  svdm.storage.deckhouse.io/export-protection \
  '{"svdm.storage.deckhouse.io/dataexport-uid":"de-r"}' \
  '{"svdm.storage.deckhouse.io/managed":"true","svdm.storage.deckhouse.io/dataexport-uid":"de-r"}')
EXPORT_R_UID=$(jp -n "${NS}" pvc exp-hooks-r -o jsonpath='{.metadata.uid}')
PV_R_UID=$(jp pv pv-hooks-r -o jsonpath='{.metadata.uid}')
# The controller deleted the export PVC (no exporter pod holds it) just before the module was
# disabled: the PV binder marks the PV Released while claimRef still names the export PVC.
"${K[@]}" -n "${NS}" delete pvc exp-hooks-r --wait=true >/dev/null
check "released: PV Released, claimRef still the export PVC, policy Retain" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-r -o jsonpath='{.status.phase}/{.spec.claimRef.uid}/{.spec.persistentVolumeReclaimPolicy}') == 'Released/${EXPORT_R_UID}/Retain' ]]"
# Watches the PV through the whole run: a Released (or Failed) PV under Delete is what loses data.
poll_pv() {
  while true; do
    jp pv pv-hooks-r -o jsonpath='{.metadata.uid} {.status.phase} {.spec.persistentVolumeReclaimPolicy} {.metadata.deletionTimestamp}{"\n"}' 2>/dev/null || echo "gone"
    sleep 0.2
  done
}
poll_pv >"${WORK}/pv-hooks-r.log" &
POLL_PID=$!

echo "== module disabled: afterDeleteHelm (with addon-operator's retries)" >&2
run_disable 2>&1 | tee "${WORK}/disable.log" >&2
# Right after the run, before the binder or anything else had to act: the return is complete.
check "in one run: PV claimRef names the user PVC with its uid" test "$(jp pv pv-hooks-a -o jsonpath='{.spec.claimRef.namespace}/{.spec.claimRef.name}/{.spec.claimRef.uid}')" == "hooks-a/data/${UID_A}"
check "in one run: reclaim policy Delete restored" test "$(jp pv pv-hooks-a -o jsonpath='{.spec.persistentVolumeReclaimPolicy}')" == Delete
check "in one run: no svdm key on the PV" test -z "$(svdm_keys pv pv-hooks-a)"
check "in one run: no svdm key or finalizer on the user PVC" test -z "$(svdm_keys -n hooks-a pvc data)"
check "in one run: no svdm finalizer on the user's VolumeSnapshot" test -z "$(svdm_keys -n hooks-s volumesnapshot nightly)"
check "user PVC Bound to its PV again, reclaim policy Delete restored" wait_for 60 returned hooks-a data pv-hooks-a Delete
check "same PVC object (uid kept)" test "$(jp -n hooks-a pvc data -o jsonpath='{.metadata.uid}')" == "${UID_A}"
check "no svdm label, annotation or finalizer left" no_marks hooks-a data pv-hooks-a svdm.storage.deckhouse.io
check "export PVC deleted" wait_for 30 gone -n "${NS}" pvc exp-hooks-a
check "exporter Pod, Service, Secret, Lease deleted" wait_for 30 exporter_gone exp-hooks-a
check "DataExport finalizer released" test -z "$(jp -n hooks-a dataexport backup -o jsonpath='{.metadata.finalizers}')"
check "snapshot: restored PVC deleted" wait_for 30 gone -n "${NS}" pvc "${SN}"
check "snapshot: copied VolumeSnapshot deleted" wait_for 30 gone -n "${NS}" volumesnapshot "${SN}"
check "snapshot: copied VolumeSnapshotContent deleted" wait_for 30 gone volumesnapshotcontent "svdm-${SN}"
check "snapshot: exporter Service, Secret, Lease deleted" wait_for 30 exporter_gone "${SN}"
check "snapshot: DataExport finalizer released" test -z "$(jp -n hooks-s dataexport snap-export -o jsonpath='{.metadata.finalizers}')"
user_snapshot_intact() {
  [[ $(jp -n hooks-s volumesnapshot nightly -o jsonpath='{.metadata.uid}|{.metadata.deletionTimestamp}|{.status.boundVolumeSnapshotContentName}') == "${USER_VS_UID}||hooks-s-user-content" ]] &&
    [[ $(jp volumesnapshotcontent hooks-s-user-content -o jsonpath='{.metadata.deletionTimestamp}|{.spec.deletionPolicy}|{.spec.source.snapshotHandle}') == "|Delete|user-snap-handle" ]] &&
    [[ -z "$(svdm_keys -n hooks-s volumesnapshot nightly)" && -z "$(svdm_keys volumesnapshotcontent hooks-s-user-content)" ]]
}
check "snapshot: the user's VolumeSnapshot and content intact and unprotected" user_snapshot_intact
check "snapshot: no storage snapshot deleted" test ! -s "${DELETED_SNAPSHOTS}"
check "released: user PVC Bound to its PV again, reclaim policy Delete restored" wait_for 60 returned hooks-r data pv-hooks-r Delete
check "released: PV Bound with claimRef the user PVC (uid)" test "$(jp pv pv-hooks-r -o jsonpath='{.status.phase}/{.spec.claimRef.uid}')" == "Bound/${UID_R}"
check "released: same PV object (never deleted), same user PVC" test "$(jp pv pv-hooks-r -o jsonpath='{.metadata.uid}|{.metadata.deletionTimestamp}|{.spec.hostPath.path}')/$(jp -n hooks-r pvc data -o jsonpath='{.metadata.uid}')" == "${PV_R_UID}||/tmp/hooks-e2e/pv-hooks-r/${UID_R}"
check "released: no svdm key left" no_marks hooks-r data pv-hooks-r svdm.storage.deckhouse.io
kill "${POLL_PID}" 2>/dev/null || true
wait "${POLL_PID}" 2>/dev/null || true
POLL_PID=""
echo "released: $(sort "${WORK}/pv-hooks-r.log" | uniq -c | tr '\n' ';')" >&2
check "released: PV observed during the run" test -s "${WORK}/pv-hooks-r.log"
check "released: at no observed point Released/Failed with Delete, deleting or gone" \
  bash -c "! grep -Eq '^gone|(Released|Failed) (Delete|Recycle)|Z\$' '${WORK}/pv-hooks-r.log' && ! grep -vq '^${PV_R_UID} ' '${WORK}/pv-hooks-r.log'"
if grep -q "a test operation failed" "${WORK}/disable.log"; then
  echo "released: a guarded restore was rejected by its test and the retry finished the return" >&2
else
  echo "released: the PV was Bound again before the guarded restore was applied (no retry needed)" >&2
fi

echo "== scenario 4: afterDeleteHelm again (idempotent)" >&2
check "second run succeeds" run_disable
check "second run: released PV still Bound with Delete, same object" test "$(jp pv pv-hooks-r -o jsonpath='{.metadata.uid}/{.status.phase}/{.spec.persistentVolumeReclaimPolicy}')" == "${PV_R_UID}/Bound/Delete"
check "second run: user PVC still Bound, reclaim policy Delete" returned hooks-a data pv-hooks-a Delete
check "second run: still no svdm key" no_marks hooks-a data pv-hooks-a svdm.storage.deckhouse.io
check "second run: user's snapshot still intact" user_snapshot_intact
check "second run: no storage snapshot deleted" test ! -s "${DELETED_SNAPSHOTS}"
check "second run: nothing left in the module namespace" test -z "$(jp -n "${NS}" pod,pvc,service,lease,volumesnapshot -l svdm.storage.deckhouse.io/managed=true -o name)$(jp secret -n "${NS}" -l svdm.storage.deckhouse.io/managed=true -o name)$(jp volumesnapshotcontent -l svdm.storage.deckhouse.io/managed=true -o name)"

echo "== scenario 2: upgrade from the earlier implementation with a legacy export in flight" >&2
make_bound_pv hooks-b db pv-hooks-b
hand_over hooks-b db pv-hooks-b pvc-for-pvc-hooksb \
  '{"storage.deckhouse.io/original-pvc-namespace":"hooks-b","storage.deckhouse.io/original-pvc-name":"db","storage.deckhouse.io/storage-manager-namespace":"hooks-b","storage.deckhouse.io/storage-manager-name":"old-export","storage.deckhouse.io/target-ref":"pvc","storage.deckhouse.io/generated-name-suffix":"hooksb","storage.deckhouse.io/original-reclaim-policy":"Delete"}' \
  '{"storage.deckhouse.io/data-exporter":"true"}' \
  storage.deckhouse.io/storage-manager-controller \
  '{"storage.deckhouse.io/data-export-in-progress":"true","storage.deckhouse.io/data-export-request":"true"}' \
  '{}' >/dev/null
"${K[@]}" -n "${NS}" create service clusterip service-for-pvc-hooksb --tcp=8085:8085 >/dev/null
"${K[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata:
  name: old-export
  namespace: hooks-b
  finalizers: [storage.deckhouse.io/storage-manager-controller]
spec:
  targetRef: {kind: PersistentVolumeClaim, name: db}
---
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata:
  name: expired
  namespace: hooks-b
spec:
  targetRef: {kind: PersistentVolumeClaim, name: db}
YAML
"${K[@]}" -n hooks-b patch dataexport expired --subresource=status --type merge \
  -p '{"status":{"conditions":[{"type":"Expired","status":"True","reason":"Expired","message":"idle","lastTransitionTime":"2026-10-01T10:00:00Z"}]}}' >/dev/null

echo "== scenario 7: upgrade with a legacy PV already Released (legacy export PVC deleted just before)" >&2
make_bound_pv hooks-c db pv-hooks-c
UID_C=$(hand_over hooks-c db pv-hooks-c pvc-for-pvc-hooksc \
  '{"storage.deckhouse.io/original-pvc-namespace":"hooks-c","storage.deckhouse.io/original-pvc-name":"db","storage.deckhouse.io/storage-manager-namespace":"hooks-c","storage.deckhouse.io/storage-manager-name":"old-export","storage.deckhouse.io/target-ref":"pvc","storage.deckhouse.io/generated-name-suffix":"hooksc","storage.deckhouse.io/original-reclaim-policy":"Delete"}' \
  '{"storage.deckhouse.io/data-exporter":"true"}' \
  storage.deckhouse.io/storage-manager-controller \
  '{"storage.deckhouse.io/data-export-in-progress":"true"}' \
  '{}')
EXPORT_C_UID=$(jp -n "${NS}" pvc pvc-for-pvc-hooksc -o jsonpath='{.metadata.uid}')
PV_C_UID=$(jp pv pv-hooks-c -o jsonpath='{.metadata.uid}')
"${K[@]}" -n "${NS}" delete pvc pvc-for-pvc-hooksc --wait=true >/dev/null
check "legacy released: PV Released, claimRef still the export PVC, policy Retain" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-c -o jsonpath='{.status.phase}/{.spec.claimRef.uid}/{.spec.persistentVolumeReclaimPolicy}') == 'Released/${EXPORT_C_UID}/Retain' ]]"
poll_pv_c() {
  while true; do
    jp pv pv-hooks-c -o jsonpath='{.metadata.uid} {.status.phase} {.spec.persistentVolumeReclaimPolicy} {.metadata.deletionTimestamp}{"\n"}' 2>/dev/null || echo "gone"
    sleep 0.2
  done
}
poll_pv_c >"${WORK}/pv-hooks-c.log" &
POLL_PID=$!

echo "== scenario 8: upgrade after a run that rebound a legacy PV but whose guarded restore was rejected" >&2
make_bound_pv hooks-d db pv-hooks-d
UID_D=$(hand_over hooks-d db pv-hooks-d pvc-for-pvc-hooksd \
  '{"storage.deckhouse.io/original-pvc-namespace":"hooks-d","storage.deckhouse.io/original-pvc-name":"db","storage.deckhouse.io/original-reclaim-policy":"Delete"}' \
  '{"storage.deckhouse.io/data-exporter":"true"}' \
  storage.deckhouse.io/storage-manager-controller \
  '{"storage.deckhouse.io/data-export-in-progress":"true"}' \
  '{}')
PV_D_UID=$(jp pv pv-hooks-d -o jsonpath='{.metadata.uid}')
"${K[@]}" -n "${NS}" delete pvc pvc-for-pvc-hooksd --wait=true >/dev/null
check "half-returned: PV Released first" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-d -o jsonpath='{.status.phase}') == Released ]]"
# What the earlier run's operations left: the rebind (claimRef with the user PVC's uid and our
# mark) and the user PVC's release applied, the guarded restore rejected.
"${K[@]}" patch pv pv-hooks-d --type json -p "[{\"op\":\"add\",\"path\":\"/spec/claimRef\",\"value\":{\"apiVersion\":\"v1\",\"kind\":\"PersistentVolumeClaim\",\"namespace\":\"hooks-d\",\"name\":\"db\",\"uid\":\"${UID_D}\"}},{\"op\":\"add\",\"path\":\"/metadata/annotations/svdm.storage.deckhouse.io~1legacy-return-claim-uid\",\"value\":\"${UID_D}\"}]" >/dev/null
"${K[@]}" -n hooks-d patch pvc db --type json -p '[{"op":"remove","path":"/metadata/finalizers/1"},{"op":"remove","path":"/metadata/annotations/storage.deckhouse.io~1data-export-in-progress"}]' >/dev/null
check "half-returned: PV Bound to the user PVC again under Retain, record kept" wait_for 60 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-d -o jsonpath='{.status.phase}/{.spec.claimRef.namespace}/{.spec.persistentVolumeReclaimPolicy}/{.metadata.labels.storage\.deckhouse\.io/data-exporter}') == Bound/hooks-d/Retain/true ]]"

echo "== upgrade: beforeHelm (with addon-operator's retries)" >&2
run_hooks beforeHelm --retries 10 --retry-delay 2 2>&1 | tee "${WORK}/migrate.log" >&2
check "legacy released: user PVC Bound to its PV again, reclaim policy Delete restored" wait_for 60 returned hooks-c db pv-hooks-c Delete
check "legacy released: PV Bound with claimRef the user PVC (uid)" test "$(jp pv pv-hooks-c -o jsonpath='{.status.phase}/{.spec.claimRef.uid}')" == "Bound/${UID_C}"
check "legacy released: same PV object (never deleted), same user PVC" test "$(jp pv pv-hooks-c -o jsonpath='{.metadata.uid}|{.metadata.deletionTimestamp}')/$(jp -n hooks-c pvc db -o jsonpath='{.metadata.uid}')" == "${PV_C_UID}|/${UID_C}"
check "legacy released: no legacy or svdm key left on the PV" bash -c "! '${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-c -o json | grep -q 'storage.deckhouse.io/'"
check "legacy released: no legacy finalizer or in-progress annotation left" bash -c "! '${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n hooks-c get pvc db -o json | grep -q 'storage-manager-controller\|data-export-in-progress'"
kill "${POLL_PID}" 2>/dev/null || true
wait "${POLL_PID}" 2>/dev/null || true
POLL_PID=""
echo "legacy released: $(sort "${WORK}/pv-hooks-c.log" | uniq -c | tr '\n' ';')" >&2
check "legacy released: PV observed during the run" test -s "${WORK}/pv-hooks-c.log"
check "legacy released: at no observed point Released/Failed with Delete, deleting or gone" \
  bash -c "! grep -Eq '^gone|(Released|Failed) (Delete|Recycle)|Z\$' '${WORK}/pv-hooks-c.log' && ! grep -vq '^${PV_C_UID} ' '${WORK}/pv-hooks-c.log'"
check "half-returned: guarded restore applied: Bound under Delete, same objects" test "$(jp pv pv-hooks-d -o jsonpath='{.metadata.uid}/{.status.phase}/{.spec.claimRef.uid}/{.spec.persistentVolumeReclaimPolicy}')" == "${PV_D_UID}/Bound/${UID_D}/Delete"
check "half-returned: no legacy or svdm key left on the PV" bash -c "! '${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-d -o json | grep -q 'storage.deckhouse.io/'"
check "half-returned: found by the migration although its claimRef is outside the module namespace" grep -q "legacy PV pv-hooks-d: rebound earlier" "${WORK}/migrate.log"
if grep -q "a test operation failed" "${WORK}/migrate.log"; then
  echo "legacy released: a guarded restore was rejected by its test and the retry finished the return" >&2
else
  echo "legacy released: the PV was Bound again before the guarded restore was applied (no retry needed)" >&2
fi
check "legacy: user PVC Bound again, reclaim policy Delete restored" wait_for 60 returned hooks-b db pv-hooks-b Delete
check "legacy: no legacy finalizer or in-progress annotation left" bash -c "! '${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' -n hooks-b get pvc db -o json | grep -q 'storage-manager-controller\|data-export-in-progress'"
check "legacy: storage-foundation's data-export-request annotation untouched" test "$(jp -n hooks-b pvc db -o jsonpath='{.metadata.annotations.storage\.deckhouse\.io/data-export-request}')" == "true"
check "legacy: PV record and label removed" bash -c "! '${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-b -o json | grep -q 'storage.deckhouse.io/'"
check "legacy: exporter objects and export PVC deleted" wait_for 30 gone -n "${NS}" pvc pvc-for-pvc-hooksb
check "legacy: Service deleted" gone -n "${NS}" service service-for-pvc-hooksb
check "legacy: DataExport finalizer released" test -z "$(jp -n hooks-b dataexport old-export -o jsonpath='{.metadata.finalizers}')"
check "legacy: expired DataExport is Expired today" test "$(jp -n hooks-b dataexport expired -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].reason}')" == "Expired/Expired"
check "no marker while the run found work" gone -n "${NS}" configmap svdm-migration
run_hooks beforeHelm
check "a clean run writes the marker" test "$(jp -n "${NS}" configmap svdm-migration -o jsonpath='{.data.legacy-go}')" == "done"
run_hooks beforeHelm 2>"${WORK}/third.log"
check "with the marker the migration does nothing" grep -q "hook migrate-legacy: ok (0 object patch(es))" "${WORK}/third.log"

echo "== scenario 6: the API server evaluates the guard's test ops on the live PV" >&2
"${K[@]}" apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-hooks-t
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: hooks-e2e-unused
  hostPath: {path: /tmp/hooks-e2e/pv-hooks-t}
YAML
check "guard: PV Available" wait_for 30 bash -c "[[ \$('${K[0]}' --kubeconfig '${TESTENV_KUBECONFIG}' get pv pv-hooks-t -o jsonpath='{.status.phase}') == Available ]]"
guard_rejected() { # the runner applies the hook's guarded restore to a PV that is not Bound
  python3 - "${TESTENV_BIN}/kubectl" "${TESTENV_KUBECONFIG}" <<'PY'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("runner", "hack/hook-runner.py")
r = importlib.util.module_from_spec(spec)
spec.loader.exec_module(r)
op = {"operation": "JSONPatch", "apiVersion": "v1", "kind": "PersistentVolume", "name": "pv-hooks-t",
      "jsonPatch": [{"op": "test", "path": "/status/phase", "value": "Bound"},
                    {"op": "test", "path": "/spec/claimRef/uid", "value": "x"},
                    {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"}]}
try:
    r.apply_kube_op([sys.argv[1], "--kubeconfig", sys.argv[2]], op)
except r.RunnerError as e:
    print(e, file=sys.stderr)
    sys.exit(0 if "a test operation failed" in str(e) else 1)
sys.exit(1)
PY
}
check "guard: the restore on a PV that is not Bound is rejected and reported as a failed test" guard_rejected
check "guard: the PV keeps Retain" test "$(jp pv pv-hooks-t -o jsonpath='{.spec.persistentVolumeReclaimPolicy}')" == Retain
"${K[@]}" delete pv pv-hooks-t --wait=false >/dev/null

echo "hooks e2e: ${passed} passed, ${failed} failed" >&2
echo "${passed} passed, ${failed} failed"
[[ "${failed}" == "0" ]]
