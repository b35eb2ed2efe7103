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
# Checks the images `make images` built (hack/images.sh), from the OCI layout alone:
#   - lists each image's layers and sizes (skopeo), and its entrypoint and user;
#   - unpacks each image (umoci) and runs its entrypoint from the unpacked root: chrooted into a
#     read-only bind mount of it, as the image's user, with an empty environment, so nothing of this
#     machine (no shared library, no writable root, no root user) can stand in for what is missing;
#   - one real action per image: the webhook (controller image) answers /healthz over TLS with a
#     throw-away certificate; the exporter serves a file over TLS (--no-auth: no cluster here) from
#     /data, the directory pods mount volumes on, and the download matches; the hooks binary
#     answers `hook list` and `hook config` with no environment, and `hook run 0` issues the
#     webhook certificate with only /dev/null and /tmp in its chroot, as addon-operator runs it.
# Ends with `images-check: N passed, M failed`; exits non-zero on any failure.
# Needs root (chroot, mount namespaces), umoci, skopeo, openssl, curl.
#   usage: hack/images-check.sh [OCI_LAYOUT]     (default .run/images/oci)
set -euo pipefail

cd "$(dirname "$0")/.."
layout=${1:-.run/images/oci}
work=$(mktemp -d)
# Servers started in the background write their pid (the binary's own: everything between execs)
# to a file here, so exactly they are stopped.
pidfiles=()
stop() { [ -s "$1" ] && kill "$(cat "$1")" 2>/dev/null || true; }
cleanup() {
  for f in "${pidfiles[@]}"; do stop "$f"; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
failed=0
passed=0
fail() { echo "images-check: FAIL: $*" >&2; failed=$((failed + 1)); }
ok() { echo "images-check: ok: $*" >&2; passed=$((passed + 1)); }

[ "$(id -u)" = 0 ] || { echo "images-check: needs root (chroot and mount namespaces)" >&2; exit 1; }
chroot_bin=$(command -v chroot)

# chrooted ROOT USER [--bind SRC DST]... [--dev NODES] [--tmp DIR] [--env K=V]... [--pidfile F] -- CMD...
# Runs CMD in a private mount namespace, chrooted into a read-only bind mount of ROOT as USER
# (uid:gid), with only the given environment. Two kinds of mounts, kept apart on purpose:
#   --bind SRC DST  a volume, bind-mounted read-only on DST, which must already be in the image
#                   (Deckhouse images carry their mount points: the root is read-only);
#   --dev NODES     what the runtime provides, not the image: a /dev holding the host's NODES
#                   (comma-separated; a container runtime gives null,zero,random,urandom and more,
#                   addon-operator's hook chroot only null);
#   --tmp DIR       DIR as /tmp, which addon-operator's hook chroot has.
#                   These two mount points are made in this scratch copy, as a runtime makes them.
inner() {
  local root=$1 user=$2 envs=() nodes="" tmp="" pidfile=""
  shift 2
  mount --bind "$root" "$root"
  while [ "$1" != -- ]; do
    case "$1" in
      --bind)
        [ -e "$root$3" ] || { echo "mount point $3 is not in the image" >&2; exit 1; }
        mount --bind "$2" "$root$3"
        mount -o remount,bind,ro "$root$3"
        shift 3
        ;;
      --dev) nodes=$2; shift 2 ;;
      --tmp) tmp=$2; shift 2 ;;
      --env) envs+=("$2"); shift 2 ;;
      --pidfile) pidfile=$2; shift 2 ;;
      *) echo "chrooted: unknown option $1" >&2; exit 2 ;;
    esac
  done
  shift
  if [ -n "$nodes" ]; then
    mkdir -p "$root/dev"
    mount -t tmpfs -o mode=0755,nosuid,noexec tmpfs "$root/dev"
    for node in ${nodes//,/ }; do
      touch "$root/dev/$node"
      mount --bind "/dev/$node" "$root/dev/$node"
    done
  fi
  if [ -n "$tmp" ]; then
    mkdir -p "$root/tmp"
    mount --bind "$tmp" "$root/tmp"
  fi
  mount -o remount,bind,ro "$root"
  [ -z "$pidfile" ] || echo $$ >"$pidfile"
  exec env -i "${envs[@]}" "$CHROOT_BIN" --userspec="$user" "$root" "$@"
}
chrooted() {
  CHROOT_BIN=$chroot_bin unshare --mount --propagation private \
    bash -c "$(declare -f inner); inner \"\$@\"" inner "$@"
}

# The image's user as uid:gid ("" means root, as a runtime would run it).
image_user() {
  local user
  user=$(skopeo inspect --config "oci:$layout:$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["config"].get("User") or "")')
  echo "${user:-0:0}"
}
# The entrypoint, one element per line.
image_entrypoint() {
  skopeo inspect --config "oci:$layout:$1" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["config"].get("Entrypoint") or []))'
}

# Waits for `listening on`/`serving ... on https://` in LOG and prints the port.
wait_port() {
  local log=$1 pid=$2 port=""
  for _ in $(seq 1 100); do
    port=$(grep -o -m1 -E '(listening on |https://)[^ ]*:[0-9]+' "$log" | grep -o -E '[0-9]+$' || true)
    [ -n "$port" ] && { echo "$port"; return 0; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}

# A throw-away TLS certificate for 127.0.0.1, readable by the images' users.
mkdir -p "$work/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=svdm-image-check \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$work/tls/tls.key" -out "$work/tls/tls.crt" 2>/dev/null
chmod 0755 "$work/tls"
chmod 0644 "$work/tls/tls.key" "$work/tls/tls.crt"

mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
printf '\n%-12s %7s %12s %12s  %-20s %s\n' image layers compressed unpacked entrypoint user
for image in controller exporter hooks; do
  manifest=$(skopeo inspect --raw "oci:$layout:$image")
  layers=$(python3 -c 'import json,sys; print(len(json.loads(sys.argv[1])["layers"]))' "$manifest")
  compressed=$(python3 -c 'import json,sys; print(sum(l["size"] for l in json.loads(sys.argv[1])["layers"]))' "$manifest")
  umoci unpack --image "$layout:$image" "$work/$image" >/dev/null
  unpacked=$(du -sb "$work/$image/rootfs" | cut -f1)
  printf '%-12s %7s %12s %12s  %-20s %s\n' "$image" "$layers" "$(mib "$compressed")" "$(mib "$unpacked")" \
    "$(image_entrypoint "$image" | paste -sd' ')" "$(image_user "$image")"
done
echo
for image in controller exporter hooks; do
  echo "--- $image: layers" >&2
  skopeo inspect "oci:$layout:$image" | python3 -c 'import json,sys; [print("   ", l) for l in json.load(sys.stdin)["Layers"]]' >&2
done

# OpenSSL inside the binaries against oss.yaml (a warning: the version is the build machine's).
oss_openssl=$(python3 -c 'import yaml; print(next(p["version"] for p in yaml.safe_load(open("oss.yaml")) if p["id"] == "openssl"))')
for bin in controller/rootfs/svdm-controller controller/rootfs/svdm-webhook exporter/rootfs/svdm-exporter; do
  found=$(grep -a -o -m1 -E 'OpenSSL [0-9]+\.[0-9]+\.[0-9]+' "$work/$bin" | head -n1 | cut -d' ' -f2 || true)
  if [ "$found" != "$oss_openssl" ]; then
    echo "images-check: warning: $(basename "$bin") carries OpenSSL ${found:-?}, oss.yaml says $oss_openssl" >&2
  fi
done
if grep -a -q -E 'OpenSSL [0-9]+\.[0-9]+\.[0-9]+' "$work/hooks/rootfs/hooks/svdm-hooks"; then
  fail "the hooks binary links OpenSSL; it is meant to be free of it (hooks/batch/Cargo.toml)"
fi

# The devices every container runtime puts in a pod's /dev (and nothing else of /dev).
pod_dev=null,zero,random,urandom

# --- controller image: both binaries start, the webhook serves TLS.
root="$work/controller/rootfs"
user=$(image_user controller)
[ "$user" != "0:0" ] || fail "controller image runs as root"
for bin in svdm-controller svdm-webhook; do
  if out=$(chrooted "$root" "$user" -- "/$bin" --version 2>&1) && [[ "$out" == "$bin "* ]]; then
    ok "controller: /$bin --version: $out"
  else
    fail "controller: /$bin --version: $out"
  fi
  if out=$(chrooted "$root" "$user" -- "/$bin" --help 2>&1) && grep -q -- '--log-level' <<<"$out"; then
    ok "controller: /$bin --help"
  else
    fail "controller: /$bin --help: $out"
  fi
done
[ "$(image_entrypoint controller)" = /svdm-controller ] || fail "controller entrypoint is $(image_entrypoint controller)"
# The webhook needs a Kubernetes client to start (its live facts); one pointing nowhere will do,
# since /healthz does not ask the cluster. It sits beside the certificate on the webhook's own
# mount point, as the Deployment mounts its Secret there.
cat >"$work/tls/kubeconfig" <<'KUBECONFIG'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
KUBECONFIG
chmod 0644 "$work/tls/kubeconfig"
log="$work/webhook.log"
# The webhook logs the address it was given, so it gets a free port picked here.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pidfiles+=("$work/webhook.pid")
chrooted "$root" "$user" --bind "$work/tls" /etc/svdm/webhook-tls --dev "$pod_dev" --env KUBECONFIG=/etc/svdm/webhook-tls/kubeconfig \
  --pidfile "$work/webhook.pid" -- \
  /svdm-webhook --tls-cert /etc/svdm/webhook-tls/tls.crt --tls-key /etc/svdm/webhook-tls/tls.key \
  --address 127.0.0.1 --port "$port" >"$log" 2>&1 &
if port=$(wait_port "$log" $!); then
  if body=$(curl -fsS --max-time 10 --cacert "$work/tls/tls.crt" "https://127.0.0.1:$port/healthz" 2>&1); then
    ok "controller: svdm-webhook serves /healthz over TLS from the read-only image root ($body)"
  else
    fail "controller: GET /healthz: $body"
  fi
else
  fail "controller: svdm-webhook did not start: $(tail -n 5 "$log")"
fi
stop "$work/webhook.pid"

# --- exporter image: serves a file over TLS from the unpacked root.
root="$work/exporter/rootfs"
user=$(image_user exporter)
mkdir -p "$work/volume/dir"
head -c 3000000 /dev/urandom >"$work/volume/dir/payload.bin"
want=$(sha256sum <"$work/volume/dir/payload.bin" | cut -d' ' -f1)
if out=$(chrooted "$root" "$user" -- /svdm-exporter --version 2>&1) && [[ "$out" == "svdm-exporter "* ]]; then
  ok "exporter: /svdm-exporter --version: $out"
else
  fail "exporter: /svdm-exporter --version: $out"
fi
if out=$(chrooted "$root" "$user" -- /svdm-exporter --help 2>&1) && grep -q -- '--no-auth' <<<"$out"; then
  ok "exporter: /svdm-exporter --help"
else
  fail "exporter: /svdm-exporter --help: $out"
fi
log="$work/exporter.log"
pidfiles+=("$work/exporter.pid")
chrooted "$root" "$user" --bind "$work/volume" /data --bind "$work/tls" /etc/svdm/tls --dev "$pod_dev" \
  --pidfile "$work/exporter.pid" -- \
  /svdm-exporter --mode filesystem --source /data --tls-cert /etc/svdm/tls/tls.crt --tls-key /etc/svdm/tls/tls.key \
  --export-namespace image-check --export-name image-check --no-auth --address 127.0.0.1 --port 0 >"$log" 2>&1 &
if port=$(wait_port "$log" $!); then
  got=$(curl -fsS --max-time 30 --cacert "$work/tls/tls.crt" "https://127.0.0.1:$port/api/v1/files/dir/payload.bin" | sha256sum | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then
    ok "exporter: served /data/dir/payload.bin (3000000 bytes) over TLS from the read-only image root, sha256 matches"
  else
    fail "exporter: download sha256 $got, want $want"
  fi
  listing=$(curl -fsS --max-time 10 --cacert "$work/tls/tls.crt" "https://127.0.0.1:$port/api/v1/files/dir/" || true)
  grep -q payload.bin <<<"$listing" && ok "exporter: directory listing names the file" || fail "exporter: listing: $listing"
else
  fail "exporter: did not start: $(tail -n 5 "$log")"
fi
stop "$work/exporter.pid"

# --- hooks image: discovery as addon-operator does it (chrooted, empty environment).
root="$work/hooks/rootfs"
user=$(image_user hooks)
entry=$(image_entrypoint hooks)
[ "$entry" = /hooks/svdm-hooks ] || fail "hooks entrypoint is $entry, the bundle path is /hooks/svdm-hooks"
if list=$(chrooted "$root" "$user" -- "$entry" hook list 2>&1) && [[ "$list" =~ ^Found\ ([0-9]+)\ items ]]; then
  n=${BASH_REMATCH[1]}
  ok "hooks: hook list: Found $n items"
  if config=$(chrooted "$root" "$user" -- "$entry" hook config 2>&1) &&
    python3 -c 'import json,sys; c=json.loads(sys.argv[1]); assert c["version"]=="v1" and len(c["hooks"])==int(sys.argv[2])' "$config" "$n"; then
    ok "hooks: hook config is v1 JSON with $n hooks"
  else
    fail "hooks: hook config: ${config:0:300}"
  fi
else
  fail "hooks: hook list: $list"
fi
# A real run as addon-operator makes it: chrooted with /dev/null and a /tmp holding the protocol
# files, nothing else. The TLS hook (index 0) on a first beforeHelm issues the webhook certificate
# and the exporter CA, so randomness and key generation work inside the static binary.
hooktmp="$work/hook-tmp"
mkdir -p "$hooktmp"
cp hooks/batch/tests/fixtures/before-helm-empty.json "$hooktmp/binding-context.json"
cp hooks/batch/tests/fixtures/values-custom-domain.json "$hooktmp/values.json"
for f in config-values.json values-patch.json kubernetes-patch.json metrics.json; do : >"$hooktmp/$f"; done
chown -R "$user" "$hooktmp"
if out=$(chrooted "$root" "$user" --dev null --tmp "$hooktmp" \
  --env BINDING_CONTEXT_PATH=/tmp/binding-context.json --env VALUES_PATH=/tmp/values.json \
  --env CONFIG_VALUES_PATH=/tmp/config-values.json --env VALUES_JSON_PATCH_PATH=/tmp/values-patch.json \
  --env KUBERNETES_PATCH_PATH=/tmp/kubernetes-patch.json --env METRICS_PATH=/tmp/metrics.json -- \
  "$entry" hook run 0 2>&1); then
  if python3 -c '
import json, sys
patch = json.load(open(sys.argv[1]))
cert = next(op["value"] for op in patch if op["path"] == "/storageVolumeDataManager/internal/webhookCert")
open(sys.argv[2], "w").write(cert["crt"])
' "$hooktmp/values-patch.json" "$work/hook-webhook.crt" && subject=$(openssl x509 -noout -subject -in "$work/hook-webhook.crt" 2>&1); then
    ok "hooks: hook run 0 (TLS, beforeHelm) issued the webhook certificate in the chroot ($subject)"
  else
    fail "hooks: hook run 0 wrote no usable webhook certificate: $(head -c 300 "$hooktmp/values-patch.json")"
  fi
else
  fail "hooks: hook run 0: $out"
fi

echo "images-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
