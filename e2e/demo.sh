#!/usr/bin/env bash
# `make demo`: a real local control plane, the module's components, a Filesystem and a Block
# volume exported by a normal user and downloaded with that user's token, checksums verified.
# KEEP=1 leaves everything running and prints how to explore it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
KEEP=${KEEP:-0}
export TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/storage-volume-data-manager/target}
t0=$(date +%s)
say() { printf '\n\033[1m==> %s\033[0m (%ss)\n' "$*" "$(( $(date +%s) - t0 ))"; }
missing=()

say "build the module's binaries"
cargo build --workspace --bins

say "start the local control plane (etcd, kube-apiserver, controller-manager, scheduler, snapshot-controller)"
cleanup() {
  local rc=$?
  if [ "$KEEP" = 1 ] && [ $rc = 0 ]; then return; fi
  e2e/stack.sh down || true
  e2e/testenv.sh down || true
  exit $rc
}
trap cleanup EXIT
e2e/testenv.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/env"

say "start the simulated node and the module's components"
e2e/stack.sh up
# shellcheck source=/dev/null
. "$TESTENV_DIR/stack.env"

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

say "done: both volumes exported and downloaded, checksums match"
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
