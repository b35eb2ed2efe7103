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
# (e2e/testenv.sh up; e2e/stack.sh up; the module enabled by e2e/module.sh): as the normal user
# test-editor, with the commands of `d8 data export` as the contract client (crates/d8-contract)
# plays them — no --publish, no pause after Ready — export a Filesystem and a Block PVC and a
# VolumeSnapshot, download files, a listing, a directory tree (also under the public prefix) and the
# block device, compare checksums, check that no token gets 401, time a tree of small files through
# status.url next to the exporter pod's own address, then delete the exports and check that both
# PVCs are Bound to their original volumes again with their data, and the same once more for an
# export d8 creates itself (`download pvc/files … --cleanup`).
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
d8_bin=${CARGO_TARGET_DIR:-$repo/target}/debug/svdm-d8
[ -x "$d8_bin" ] || { echo "the contract client $d8_bin is not built (cargo build --workspace --bins)"; exit 1; }

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
# A tree of small files, what `d8 data export download` fetches one request each.
many_n=${DEMO_SMALL_FILES:-1000}
python3 - "$dir/many" "$many_n" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, f"d{i % 10}", f"e{i % 3}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}.bin"), "wb") as f:
        f.write(os.urandom(4096))
PY
head -c 33554432 /dev/urandom | dd of="$dev" bs=1M conv=fsync status=none
echo "  files volume: $dir ($many_n small files under many/)"
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

# Everything from here on goes through the contract client (crates/d8-contract): what the real
# `d8 data export` does as test-editor, no more — no --publish (the auto-detect decides), no pause
# after Ready, the client's own 3 s polls. Where the module's answer or timing differs from what d8
# relies on, it fails and names the step.
D8() { KUBECONFIG=$TESTENV_KUBECONFIG_EDITOR "$d8_bin" "$@"; }

say "as test-editor, with d8's commands: export both volumes (v0.33.6) and the snapshot (v0.33.14), ttl 10m"
D8 data export create files pvc/files -n "$NS" --ttl 10m
D8 data export create disk pvc/disk -n "$NS" --ttl 10m
D8 --generation v0.33.14 data export create files-snap vs/files-snap -n "$NS" --ttl 10m
"${user[@]}" get dataexport -o wide
echo "  the user's PVCs are Lost while exported (their PVs serve the exporters):"
"${user[@]}" get pvc

check() { # what expected-file actual-file
  local a b
  a=$(sha256sum < "$2" | cut -d' ' -f1); b=$(sha256sum < "$3" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then echo "  OK   $1 sha256 $a"; else echo "  FAIL $1: $a != $b"; exit 1; fi
}
same_tree() { # what expected-dir actual-dir
  if diff -r "$2" "$3" >/dev/null; then echo "  OK   $1: $(find "$3" -type f | wc -l) files identical"
  else diff -r "$2" "$3" | head -5; echo "  FAIL $1"; exit 1; fi
}

say "download with d8's commands right after Ready and verify"
D8 data export download files /hello.txt -n "$NS" -o "$work/hello.txt"
check "file hello.txt" "$dir/hello.txt" "$work/hello.txt"
D8 data export download files /docs/random.bin -n "$NS" -o "$work/random.bin"
check "file docs/random.bin (3 MiB)" "$dir/docs/random.bin" "$work/random.bin"
D8 data export list files / -n "$NS" > "$work/listing.json"
echo "  d8 data export list files /:"; jq -r '.items[] | "    \(.type)\t\(.name)"' "$work/listing.json"
[ "$(jq -r '[.items[].name] | sort | join(",")' "$work/listing.json")" = "after-snapshot.txt,docs,hello.txt,link-to-note,many" ] \
  || { echo "  FAIL listing"; exit 1; }
rm -rf "$work/docs" && mkdir -p "$work/docs"
D8 data export download files /docs/ -n "$NS" -o "$work/docs"
same_tree "recursive download of docs/" "$dir/docs" "$work/docs"
# Under the public prefix /<namespace>/<name>/ (what the Ingress forwards; there is no ingress
# controller here, so the requests go to status.url with that prefix).
D8 data export download files /hello.txt -n "$NS" -o "$work/hello-public.txt" --public-prefix-on-url
check "file hello.txt under the public prefix" "$dir/hello.txt" "$work/hello-public.txt"
D8 data export download disk -n "$NS" -o "$work/disk.img"
check "block device (32 MiB)" "$dev" "$work/disk.img"
size=$(D8 data export list disk -n "$NS")
echo "  d8 data export list disk: $size"; [ "$size" = "Disk size: 32Mi" ] || { echo "  FAIL disk size"; exit 1; }
url=$("${user[@]}" get dataexport files -o jsonpath='{.status.url}')
"${user[@]}" get dataexport files -o jsonpath='{.status.ca}' | base64 -d > "$work/files-ca.pem"
status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/files-ca.pem" "${url}api/v1/files/hello.txt")
echo "  without a token: HTTP $status (expected 401)"; [ "$status" = 401 ]

say "a directory of $many_n small files, recursively, through status.url and straight to the exporter pod"
files_uid=$("${user[@]}" get dataexport files -o jsonpath='{.metadata.uid}')
pod_ip=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pod -l "svdm.storage.deckhouse.io/dataexport-uid=$files_uid" -o jsonpath='{.items[0].status.podIP}')
for how in service pod; do
  rm -rf "$work/many-$how" && mkdir -p "$work/many-$how"
  extra=(); [ "$how" = pod ] && extra=(--connect-to "$pod_ip:8443")
  started=$(date +%s.%N)
  D8 data export download files /many/ -n "$NS" -o "$work/many-$how" "${extra[@]}" 2>/dev/null
  ended=$(date +%s.%N)
  label="through the Service (status.url)"; [ "$how" = pod ] && label="straight to the pod ($pod_ip)"
  python3 -c 'import sys; n, a, b, l = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"  {l:40} {n / (b - a):7.0f} files/s ({b - a:.2f} s with the client start-up and its Get)")' \
    "$many_n" "$started" "$ended" "$label"
  same_tree "many/ via $how" "$dir/many" "$work/many-$how"
done

say "the snapshot export: the data as it was when the snapshot was taken"
snap_uid=$("${user[@]}" get dataexport files-snap -o jsonpath='{.metadata.uid}')
restored_pvc=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pvc -l "svdm.storage.deckhouse.io/dataexport-uid=$snap_uid" -o jsonpath='{.items[0].metadata.name}')
restored_pv=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pvc "$restored_pvc" -o jsonpath='{.spec.volumeName}')
echo "  restored in $SVDM_MODULE_NAMESPACE as PVC $restored_pvc (PV $restored_pv); volumeMode $("${user[@]}" get dataexport files-snap -o jsonpath='{.status.volumeMode}')"
D8s() { D8 --generation v0.33.14 "$@"; }
D8s data export download files-snap /hello.txt -n "$NS" -o "$work/snap-hello.txt"
check "snapshot hello.txt (as at snapshot time)" "$work/snap-hello.expected" "$work/snap-hello.txt"
D8s data export download files-snap /docs/random.bin -n "$NS" -o "$work/snap-random.bin"
check "snapshot docs/random.bin (3 MiB)" "$work/snap-random.expected" "$work/snap-random.bin"
D8s data export list files-snap / -n "$NS" > "$work/snap-listing.json"
echo "  listing of the snapshot's /:"; jq -r '.items[] | "    \(.type)\t\(.name)"' "$work/snap-listing.json"
[ "$(jq -r '[.items[].name] | sort | join(",")' "$work/snap-listing.json")" = "docs,hello.txt,link-to-note,many" ] \
  || { echo "  FAIL snapshot listing: after-snapshot.txt must not be in it"; exit 1; }

if [ "${RETURN_CHECK:-1}" = 1 ]; then
  say "as test-editor: delete the three exports; the PVCs must get their volumes back, data unchanged"
  uids=$("${user[@]}" get dataexport files disk files-snap -o jsonpath='{.items[*].metadata.uid}')
  for e in files disk files-snap; do D8 data export delete "$e" -n "$NS"; done
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

  say "as test-editor: d8 data export download pvc/files … --cleanup=true (d8 creates and deletes de-pvc-files)"
  D8 data export download pvc/files /hello.txt -n "$NS" -o "$work/auto-hello.txt" --cleanup=true
  check "file hello.txt through the auto-created export" "$dir/hello.txt" "$work/auto-hello.txt"
  "${user[@]}" wait --for=delete dataexport/de-pvc-files --timeout 120s
  "${user[@]}" wait --for=jsonpath='{.status.phase}'=Bound --timeout 120s pvc/files
  [ "$("${user[@]}" get pvc files -o jsonpath='{.spec.volumeName}')" = "$pv_files" ] || { echo "  FAIL files: other PV"; exit 1; }
  echo "  de-pvc-files deleted by the client; PVC files Bound to $pv_files again"
  say "done: both volumes and the snapshot exported, downloaded and returned; checksums match"
else
  say "done: both volumes and the snapshot exported and downloaded, checksums match (exports kept)"
fi
cat <<EOF

Reproduce by hand (KEEP=1 leaves it running), as d8 users do (svdm-d8 plays d8 v0.33.6):
  export KUBECONFIG=$TESTENV_KUBECONFIG_EDITOR     # user test-editor
  $TESTENV_BIN/kubectl -n $NS get dataexports
  $d8_bin data export list files / -n $NS
  $d8_bin data export download files /docs/ -n $NS -o .
  $d8_bin data export download disk -n $NS -o disk.img
or with curl:
  URL=\$($TESTENV_BIN/kubectl -n $NS get de files -o jsonpath='{.status.url}')
  $TESTENV_BIN/kubectl -n $NS get de files -o jsonpath='{.status.ca}' | base64 -d > ca.pem
  curl --cacert ca.pem -H "Authorization: Bearer \$(awk -F': ' '/token:/{print \$2}' \$KUBECONFIG)" "\${URL}api/v1/files/"
Service names resolve through the simulated node's block in /etc/hosts; logs: $SVDM_STACK_DIR
Stop with: make testenv-down (after e2e/stack.sh down)
EOF
