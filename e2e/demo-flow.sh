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
# The user-facing flow of the demo, run against an already running control plane and stack
# (e2e/testenv.sh up; e2e/stack.sh up): as the normal user test-editor, export a Filesystem and a
# Block PVC, download a file, a directory listing and the block device with that user's token
# through status.url and status.ca, compare checksums, check that no token gets 401, then delete
# the exports and check that both PVCs are Bound to their original volumes again with their data.
# Snapshots too: 'files' is snapshotted (VolumeSnapshot 'files-snap', class svdm-sim) before it is
# exported and then changed; a DataExport of the VolumeSnapshot must serve the data as it was at
# snapshot time (the later change must not show), and deleting it must leave the user's snapshot
# ready and nothing of the restore behind (copied snapshot and content, restored PVC and PV).
# test-editor has ClusterRole edit, which carries VolumeSnapshot rights only if the cluster
# aggregates them into edit; if it does not, the snapshot is taken as admin, with a NOTE saying so.
# `make demo` runs it; `make test` runs it as the end-to-end check of the whole module.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"
# shellcheck source=/dev/null
. "$TESTENV_DIR/stack.env"
t0=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
missing=()

NS=$TESTENV_EDITOR_NAMESPACE
admin=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG")
user=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG_EDITOR" -n "$NS")
user_token=$(awk -F': ' '/token:/{print $2}' "$TESTENV_KUBECONFIG_EDITOR")
work=$TESTENV_DIR/demo
mkdir -p "$work"

if ! "${admin[@]}" get node "${SIM_NODE_NAME:-sim-node-1}" >/dev/null 2>&1; then
  missing+=("simulated node (crates/kube-sim)")
  say "MISSING: ${missing[*]}; stopping here"
  exit 1
fi

say "as test-editor: create a Filesystem PVC 'files' and a Block PVC 'disk' in namespace $NS"
"${user[@]}" apply -f - <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: files}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: svdm-sim
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: disk}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: svdm-sim
  volumeMode: Block
  resources: {requests: {storage: 32Mi}}
EOF
"${user[@]}" wait --for=jsonpath='{.status.phase}'=Bound --timeout 90s pvc/files pvc/disk

say "put sample data on the volumes (on the node's disk, as an application would have)"
pv_files=$("${user[@]}" get pvc files -o jsonpath='{.spec.volumeName}')
pv_disk=$("${user[@]}" get pvc disk -o jsonpath='{.spec.volumeName}')
dir=$("${admin[@]}" get pv "$pv_files" -o jsonpath='{.metadata.annotations.sim\.svdm\.dev/path}')
dev=$("${admin[@]}" get pv "$pv_disk" -o jsonpath='{.metadata.annotations.sim\.svdm\.dev/loop-device}')
mkdir -p "$dir/docs/deep"
printf 'hello from storage-volume-data-manager\n' > "$dir/hello.txt"
head -c 3145728 /dev/urandom > "$dir/docs/random.bin"
printf 'nested\n' > "$dir/docs/deep/note.txt"
ln -sfn docs/deep/note.txt "$dir/link-to-note"
head -c 33554432 /dev/urandom | dd of="$dev" bs=1M conv=fsync status=none
echo "  files volume: $dir"
echo "  disk volume:  $dev"

# The controller runs either from the rendered chart (e2e/module.sh) or as a stack process.
available=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get deploy controller \
  -o jsonpath='{.status.availableReplicas}' 2>/dev/null || true)
if [ "${available:-0}" -lt 1 ] && [ ! -f "$SVDM_STACK_DIR/controller.pid" ]; then
  missing+=("controller (e2e/module.sh up, or e2e/stack.sh up controller)")
fi
if ! "${admin[@]}" get volumesnapshotclass svdm-sim >/dev/null 2>&1; then
  missing+=("VolumeSnapshotClass svdm-sim (simulated node's CSI driver)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "MISSING: ${missing[*]}; the demo stops before exporting"
  exit 1
fi

say "snapshot 'files' (VolumeSnapshot 'files-snap') before exporting it, then change the volume"
# Kubernetes' edit role has no rights on VolumeSnapshots (a CRD) unless a ClusterRole labelled
# rbac.authorization.k8s.io/aggregate-to-edit grants them; upstream external-snapshotter ships none.
snap=("${user[@]}"); snap_as=test-editor
if ! "${user[@]}" auth can-i create volumesnapshots.snapshot.storage.k8s.io >/dev/null 2>&1; then
  snap=("${admin[@]}" -n "$NS"); snap_as=admin
  echo "  NOTE test-editor may not create volumesnapshots.snapshot.storage.k8s.io in $NS (ClusterRole"
  echo "       edit aggregates no snapshot rights in this cluster); taking the snapshot as admin."
  echo "       Exporting and downloading it below stay test-editor's."
fi
"${snap[@]}" apply -f - <<'EOF'
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: files-snap}
spec: {volumeSnapshotClassName: svdm-sim, source: {persistentVolumeClaimName: files}}
EOF
if ! "${snap[@]}" wait --for=jsonpath='{.status.readyToUse}'=true --timeout 90s volumesnapshot/files-snap; then
  "${admin[@]}" -n "$NS" get volumesnapshot files-snap -o yaml
  exit 1
fi
cp "$dir/hello.txt" "$work/snap-hello.expected"
cp "$dir/docs/random.bin" "$work/snap-random.expected"
printf 'written after the snapshot\n' > "$dir/after-snapshot.txt"
printf 'hello again, changed after the snapshot\n' > "$dir/hello.txt"
echo "  files-snap readyToUse (as $snap_as); since then: after-snapshot.txt added, hello.txt rewritten"

say "as test-editor: export both volumes and the snapshot (DataExports 'files', 'disk', 'files-snap', ttl 10m)"
"${user[@]}" apply -f - <<'EOF'
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata: {name: files}
spec: {ttl: 10m, publish: false, targetRef: {kind: PersistentVolumeClaim, name: files}}
---
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata: {name: disk}
spec: {ttl: 10m, publish: false, targetRef: {kind: PersistentVolumeClaim, name: disk}}
---
apiVersion: storage.deckhouse.io/v1alpha1
kind: DataExport
metadata: {name: files-snap}
spec: {ttl: 10m, publish: false, targetRef: {group: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: files-snap}}
EOF
if ! "${user[@]}" wait --for=condition=Ready --timeout 120s dataexport/files dataexport/disk dataexport/files-snap; then
  "${user[@]}" get dataexport -o yaml
  exit 1
fi
"${user[@]}" get dataexport -o wide
echo "  the user's PVCs are Lost while exported (their PVs serve the exporters):"
"${user[@]}" get pvc

fetch() { # export-name path output
  local url ca
  url=$("${user[@]}" get dataexport "$1" -o jsonpath='{.status.url}')
  "${user[@]}" get dataexport "$1" -o jsonpath='{.status.ca}' | base64 -d > "$work/$1-ca.pem"
  curl -fsS --cacert "$work/$1-ca.pem" -H "Authorization: Bearer $user_token" -o "$3" "${url%/}$2"
}
reachable() { # export-name: Ready follows the exporter pod's readiness; the Service routes to it a
  # moment later (kube-proxy, here the simulated node's proxy, which resets connections meanwhile)
  local url i
  url=$("${user[@]}" get dataexport "$1" -o jsonpath='{.status.url}')
  "${user[@]}" get dataexport "$1" -o jsonpath='{.status.ca}' | base64 -d > "$work/$1-ca.pem"
  for i in $(seq 1 40); do
    if curl -fsS -o /dev/null --cacert "$work/$1-ca.pem" "${url%/}/healthz" 2>/dev/null; then
      [ "$i" = 1 ] || echo "  $1: $url answered $(( (i - 1) / 4 )).$(( (i - 1) % 4 * 25 ))s after Ready"
      return 0
    fi
    sleep 0.25
  done
  echo "  FAIL $1: $url does not answer /healthz 10s after Ready"; exit 1
}
check() { # what expected-file actual-file
  local a b
  a=$(sha256sum < "$2" | cut -d' ' -f1); b=$(sha256sum < "$3" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then echo "  OK   $1 sha256 $a"; else echo "  FAIL $1: $a != $b"; exit 1; fi
}

say "download with the user's token and verify"
for e in files disk files-snap; do reachable "$e"; done
fetch files /api/v1/files/hello.txt "$work/hello.txt";          check "file hello.txt" "$dir/hello.txt" "$work/hello.txt"
fetch files /api/v1/files/docs/random.bin "$work/random.bin";   check "file docs/random.bin (3 MiB)" "$dir/docs/random.bin" "$work/random.bin"
fetch files /api/v1/files/ "$work/listing.json"
echo "  listing of /:"; jq -r '.items[] | "    \(.type)\t\(.name)"' "$work/listing.json"
[ "$(jq -r '[.items[].name] | sort | join(",")' "$work/listing.json")" = "after-snapshot.txt,docs,hello.txt,link-to-note" ] \
  || { echo "  FAIL listing"; exit 1; }
fetch disk /api/v1/block "$work/disk.img";                      check "block device (32 MiB)" "$dev" "$work/disk.img"
status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/files-ca.pem" \
  "$("${user[@]}" get dataexport files -o jsonpath='{.status.url}')api/v1/files/hello.txt")
echo "  without a token: HTTP $status (expected 401)"; [ "$status" = 401 ]

say "download the snapshot export with the user's token: the data as it was when the snapshot was taken"
snap_uid=$("${user[@]}" get dataexport files-snap -o jsonpath='{.metadata.uid}')
restored_pvc=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pvc -l "svdm.storage.deckhouse.io/dataexport-uid=$snap_uid" -o jsonpath='{.items[0].metadata.name}')
restored_pv=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pvc "$restored_pvc" -o jsonpath='{.spec.volumeName}')
echo "  restored in $SVDM_MODULE_NAMESPACE as PVC $restored_pvc (PV $restored_pv); volumeMode $("${user[@]}" get dataexport files-snap -o jsonpath='{.status.volumeMode}')"
fetch files-snap /api/v1/files/hello.txt "$work/snap-hello.txt";        check "snapshot hello.txt (as at snapshot time)" "$work/snap-hello.expected" "$work/snap-hello.txt"
fetch files-snap /api/v1/files/docs/random.bin "$work/snap-random.bin"; check "snapshot docs/random.bin (3 MiB)" "$work/snap-random.expected" "$work/snap-random.bin"
fetch files-snap /api/v1/files/ "$work/snap-listing.json"
echo "  listing of the snapshot's /:"; jq -r '.items[] | "    \(.type)\t\(.name)"' "$work/snap-listing.json"
[ "$(jq -r '[.items[].name] | sort | join(",")' "$work/snap-listing.json")" = "docs,hello.txt,link-to-note" ] \
  || { echo "  FAIL snapshot listing: after-snapshot.txt must not be in it"; exit 1; }

if [ "${RETURN_CHECK:-1}" = 1 ]; then
  say "as test-editor: delete the three exports; the PVCs must get their volumes back, data unchanged"
  uids=$("${user[@]}" get dataexport files disk files-snap -o jsonpath='{.items[*].metadata.uid}')
  "${user[@]}" delete dataexport files disk files-snap --timeout 120s
  "${user[@]}" wait --for=jsonpath='{.status.phase}'=Bound --timeout 120s pvc/files pvc/disk
  [ "$("${user[@]}" get pvc files -o jsonpath='{.spec.volumeName}')" = "$pv_files" ] || { echo "  FAIL files: other PV"; exit 1; }
  [ "$("${user[@]}" get pvc disk -o jsonpath='{.spec.volumeName}')" = "$pv_disk" ] || { echo "  FAIL disk: other PV"; exit 1; }
  for pv in "$pv_files" "$pv_disk"; do
    policy=$("${admin[@]}" get pv "$pv" -o jsonpath='{.spec.persistentVolumeReclaimPolicy}')
    leftovers=$("${admin[@]}" get pv "$pv" -o json | jq -r '[(.metadata.labels // {}), (.metadata.annotations // {}) | keys[] | select(startswith("svdm."))] | join(",")')
    echo "  $pv: reclaim policy $policy, module keys left: ${leftovers:-none}"
    [ "$policy" = Delete ] && [ -z "$leftovers" ] || { echo "  FAIL: PV not restored"; exit 1; }
  done
  check "file docs/random.bin after return" "$work/random.bin" "$dir/docs/random.bin"
  check "block device after return" "$work/disk.img" "$dev"
  vs_ready=$("${snap[@]}" get volumesnapshot files-snap -o jsonpath='{.status.readyToUse}')
  vs_fins=$("${snap[@]}" get volumesnapshot files-snap -o json | jq -r '[.metadata.finalizers // [] | .[] | select(startswith("svdm."))] | join(",")')
  echo "  user's VolumeSnapshot files-snap: readyToUse $vs_ready, module finalizers left: ${vs_fins:-none}"
  [ "$vs_ready" = true ] && [ -z "$vs_fins" ] || { echo "  FAIL: the user's snapshot was touched"; exit 1; }
  # Only this demo's objects count: controller tests of other checkouts may share the cluster and
  # the module namespace. The restore's copied VolumeSnapshotContent and the restored PV are
  # cluster-scoped and go a moment after the DataExport (the CSI driver deletes the PV).
  ours="svdm.storage.deckhouse.io/managed=true,svdm.storage.deckhouse.io/dataexport-uid in (${uids// /,})"
  left() {
    "${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pods,pvc,svc,secrets,leases,volumesnapshots -l "$ours" -o name
    "${admin[@]}" get volumesnapshotcontents -l "$ours" -o name
    "${admin[@]}" get pv "${restored_pv:-none}" -o name --ignore-not-found
  }
  for _ in $(seq 1 60); do [ -z "$(left)" ] && break; sleep 0.5; done
  remaining=$(left | wc -l)
  echo "  objects left in $SVDM_MODULE_NAMESPACE (and the restore's content and PV): $remaining"
  [ "$remaining" = 0 ] || { left | sed 's/^/  FAIL left: /'; exit 1; }
  say "done: both volumes and the snapshot exported, downloaded and returned; checksums match"
else
  say "done: both volumes and the snapshot exported and downloaded, checksums match (exports kept)"
fi
cat <<EOF

Reproduce by hand (KEEP=1 leaves it running):
  export KUBECONFIG=$TESTENV_KUBECONFIG_EDITOR     # user test-editor
  $TESTENV_BIN/kubectl -n $NS get dataexports
  URL=\$($TESTENV_BIN/kubectl -n $NS get de files -o jsonpath='{.status.url}')
  $TESTENV_BIN/kubectl -n $NS get de files -o jsonpath='{.status.ca}' | base64 -d > ca.pem
  curl --cacert ca.pem -H "Authorization: Bearer \$(awk -F': ' '/token:/{print \$2}' \$KUBECONFIG)" "\${URL}api/v1/files/"
Service names resolve through the simulated node's block in /etc/hosts; logs: $SVDM_STACK_DIR
Stop with: make testenv-down (after e2e/stack.sh down)
EOF
