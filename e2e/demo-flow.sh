#!/usr/bin/env bash
# The user-facing flow of the demo, run against an already running control plane and stack
# (e2e/testenv.sh up; e2e/stack.sh up): as the normal user test-editor, export a Filesystem and a
# Block PVC, download a file, a directory listing and the block device with that user's token
# through status.url and status.ca, compare checksums, check that no token gets 401, then delete
# the exports and check that both PVCs are Bound to their original volumes again with their data.
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

if ! "${admin[@]}" get node sim-node-1 >/dev/null 2>&1; then
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

if ! "${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pods >/dev/null 2>&1 || [ ! -f "$SVDM_STACK_DIR/controller.pid" ]; then
  missing+=("controller (crates/controller)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "MISSING: ${missing[*]}; the demo stops before exporting"
  exit 1
fi

say "as test-editor: export both volumes (DataExports 'files' and 'disk', ttl 10m)"
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
EOF
if ! "${user[@]}" wait --for=condition=Ready --timeout 120s dataexport/files dataexport/disk; then
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
check() { # what expected-file actual-file
  local a b
  a=$(sha256sum < "$2" | cut -d' ' -f1); b=$(sha256sum < "$3" | cut -d' ' -f1)
  if [ "$a" = "$b" ]; then echo "  OK   $1 sha256 $a"; else echo "  FAIL $1: $a != $b"; exit 1; fi
}

say "download with the user's token and verify"
fetch files /api/v1/files/hello.txt "$work/hello.txt";          check "file hello.txt" "$dir/hello.txt" "$work/hello.txt"
fetch files /api/v1/files/docs/random.bin "$work/random.bin";   check "file docs/random.bin (3 MiB)" "$dir/docs/random.bin" "$work/random.bin"
fetch files /api/v1/files/ "$work/listing.json"
echo "  listing of /:"; jq -r '.items[] | "    \(.type)\t\(.name)"' "$work/listing.json"
[ "$(jq -r '[.items[].name] | sort | join(",")' "$work/listing.json")" = "docs,hello.txt,link-to-note" ] \
  || { echo "  FAIL listing"; exit 1; }
fetch disk /api/v1/block "$work/disk.img";                      check "block device (32 MiB)" "$dev" "$work/disk.img"
status=$(curl -s -o /dev/null -w '%{http_code}' --cacert "$work/files-ca.pem" \
  "$("${user[@]}" get dataexport files -o jsonpath='{.status.url}')api/v1/files/hello.txt")
echo "  without a token: HTTP $status (expected 401)"; [ "$status" = 401 ]

if [ "${RETURN_CHECK:-1}" = 1 ]; then
  say "as test-editor: delete both exports; the PVCs must get their volumes back, data unchanged"
  "${user[@]}" delete dataexport files disk --timeout 120s
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
  remaining=$("${admin[@]}" -n "$SVDM_MODULE_NAMESPACE" get pods,pvc,svc,secrets,leases -l svdm.storage.deckhouse.io/managed=true -o name | wc -l)
  echo "  objects left in $SVDM_MODULE_NAMESPACE: $remaining"; [ "$remaining" = 0 ]
  say "done: both volumes exported, downloaded and returned; checksums match"
else
  say "done: both volumes exported and downloaded, checksums match (exports kept)"
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
