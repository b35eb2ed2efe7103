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
# A real, throw-away Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager (PV binder, garbage collector, node lifecycle, namespaces, service
# accounts …), kube-scheduler and the external snapshot-controller, all built from Go modules.
# Only the node and the storage are simulated (crates/kube-sim), by whoever uses this.
#
#   e2e/testenv.sh up       build (or reuse cached) binaries, make a PKI, start, wait for /readyz
#   e2e/testenv.sh down     stop every process this script started and remove its state
#   e2e/testenv.sh status   say whether it runs
#
# State lives in $TESTENV_DIR (default: <repo>/.run/testenv). After `up`, "$TESTENV_DIR/env" holds
# `export` lines for the tests:
#   TESTENV_KUBECONFIG          admin (group system:masters)
#   TESTENV_KUBECONFIG_EDITOR   user test-editor: ClusterRole edit (with VolumeSnapshots) in namespace
#                               $TESTENV_EDITOR_NAMESPACE
#   TESTENV_KUBECONFIG_NOBODY   user test-nobody: no rights at all
#   TESTENV_CA / TESTENV_CA_KEY the cluster CA (it signs the apiserver and client certificates)
#   TESTENV_API_URL, TESTENV_BIN (kubectl of the same release), TESTENV_DIR
# Kubeconfigs embed the CA (certificate-authority-data), because `d8` ignores a CA given as a path.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
EDITOR_NS=svdm-editor
# The API server's address in the simulated cluster network (e2e/sim-network.sh): local to this
# machine, yet a valid EndpointSlice address, so the API server's own endpoint reconciler publishes
# it for Service default/kubernetes and that Service's ClusterIP reaches it, as in a real cluster.
API_IP=198.18.0.1
log() { printf 'testenv: %s\n' "$*" >&2; }

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
free_api_port() { python3 -c "import socket;s=socket.socket();s.bind((\"$API_IP\",0));print(s.getsockname()[1])"; }

# Processes are tracked by pid files; a process is ours only if its pid file exists and the pid
# still runs the binary we started (pids are reused).
is_running() {
  local f=$TESTENV_DIR/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  # Read first, then match: `tr | grep -q` fails under pipefail when grep exits early (SIGPIPE).
  local cmd
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$1"* ]]
}

stop_one() {
  local name=$1 pid i
  is_running "$name" || { rm -f "$TESTENV_DIR/$name.pid"; return 0; }
  pid=$(cat "$TESTENV_DIR/$name.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$TESTENV_DIR/$name.pid"
}

down() {
  [ -d "$TESTENV_DIR" ] || { log "nothing to stop"; return 0; }
  for p in snapshot-controller kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_one "$p"
  done
  if [ -f "$TESTENV_DIR/etcd-data-dir" ]; then rm -rf "$(cat "$TESTENV_DIR/etcd-data-dir")"; fi
  rm -rf "$TESTENV_DIR"
  log "stopped"
}

dump_logs() {
  for f in "$TESTENV_DIR"/*.log; do
    [ -f "$f" ] || continue
    printf '\n===== %s (last 40 lines) =====\n' "$f" >&2
    tail -n 40 "$f" >&2
  done
}

wait_for() { # what, seconds, command...
  local what=$1 secs=$2 i; shift 2
  for i in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what did not become ready within ${secs}s"; dump_logs; return 1
}

kubeconfig() { # file user-entry-yaml
  local ca_data
  ca_data=$(base64 -w0 < "$pki/ca.crt")
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: https://$API_IP:$api_port
    certificate-authority-data: $ca_data
users:
- name: user
  user:
$2
contexts:
- name: testenv
  context: {cluster: testenv, user: user, namespace: default}
current-context: testenv
EOF
  chmod 600 "$1"
}

client_cert() { # name subject
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "$2" \
    -keyout "$pki/$1.key" -out "$pki/$1.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$1.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 30 -out "$pki/$1.crt" -extfile <(printf "extendedKeyUsage=clientAuth") 2>/dev/null
}

make_pki() {
  mkdir -p "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj "/CN=svdm-testenv-ca" \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  # Rust (openssl) and Go clients both need the IP SAN; a CN is not enough.
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
    -out "$pki/apiserver.crt" -extfile <(printf "subjectAltName=IP:$API_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth") 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  # The control-plane components authenticate with client certificates as the users the RBAC
  # bootstrap policy already grants their permissions to.
  client_cert kube-controller-manager "/CN=system:kube-controller-manager"
  client_cert kube-scheduler "/CN=system:kube-scheduler"
  client_cert admin-cert "/O=system:masters/CN=test-admin-cert"
  admin_token=$(openssl rand -hex 24)
  editor_token=$(openssl rand -hex 24)
  nobody_token=$(openssl rand -hex 24)
  {
    echo "$admin_token,test-admin,test-admin-uid,system:masters"
    echo "$editor_token,test-editor,test-editor-uid,test-editors"
    echo "$nobody_token,test-nobody,test-nobody-uid"
  } > "$pki/tokens.csv"
  chmod 600 "$pki"/*.key "$pki/tokens.csv"
}

start() { # name binary args... (log: $TESTENV_DIR/name.log)
  local name=$1; shift
  "$@" > "$TESTENV_DIR/$name.log" 2>&1 &
  echo $! > "$TESTENV_DIR/$name.pid"
}

up() {
  if is_running kube-apiserver; then log "already running ($TESTENV_DIR/env)"; return 0; fi
  down >/dev/null 2>&1 || true
  local t0 kube_bin snap_dir
  t0=$(date +%s)
  "$repo/e2e/sim-network.sh"
  kube_bin=$("$repo/e2e/kube-testenv/build.sh")
  snap_dir=$("$repo/e2e/snapshot-controller/build.sh")
  log "binaries ready in $(( $(date +%s) - t0 ))s: $kube_bin"
  mkdir -p "$TESTENV_DIR"
  pki=$TESTENV_DIR/pki
  make_pki
  api_port=$(free_api_port); etcd_port=$(free_port); peer_port=$(free_port)
  kcm_port=$(free_port); sched_port=$(free_port); snap_port=$(free_port)
  # etcd's data is disposable: tmpfs and no fsync keep 2 cores free for real work.
  local etcd_data
  etcd_data=$(mktemp -d /dev/shm/svdm-etcd.XXXXXX)
  echo "$etcd_data" > "$TESTENV_DIR/etcd-data-dir"

  start etcd "$kube_bin/etcd" --name default --data-dir "$etcd_data" --unsafe-no-fsync --log-level warn \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" --listen-metrics-urls ""
  wait_for etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"

  # The service range is on loopback (127.0.240.0/20, 4094 Services: enough for the 300-export
  # scale run): the simulated node's kube-proxy stand-in listens on each ClusterIP it serves, so
  # the API server reaches a webhook registered by Service reference the way it does in a cluster.
  # Nothing here ever dials an address off this machine.
  start kube-apiserver "$kube_bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$API_IP" --advertise-address "$API_IP" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range "${TESTENV_SERVICE_CIDR:-127.0.240.0/20}" \
    --allow-privileged=true --profiling=false --enable-priority-and-fairness=false --v=1
  wait_for kube-apiserver 120 curl -fsS --cacert "$pki/ca.crt" -H "Authorization: Bearer $admin_token" \
    "https://$API_IP:$api_port/readyz"

  kubeconfig "$TESTENV_DIR/admin.kubeconfig" "    token: $admin_token"
  kubeconfig "$TESTENV_DIR/editor.kubeconfig" "    token: $editor_token"
  kubeconfig "$TESTENV_DIR/nobody.kubeconfig" "    token: $nobody_token"
  kubeconfig "$TESTENV_DIR/admin-cert.kubeconfig" "    client-certificate: $pki/admin-cert.crt
    client-key: $pki/admin-cert.key"
  kubeconfig "$TESTENV_DIR/kube-controller-manager.kubeconfig" "    client-certificate: $pki/kube-controller-manager.crt
    client-key: $pki/kube-controller-manager.key"
  kubeconfig "$TESTENV_DIR/kube-scheduler.kubeconfig" "    client-certificate: $pki/kube-scheduler.crt
    client-key: $pki/kube-scheduler.key"

  # All default controllers (PV binder, attach/detach, GC, namespace, node lifecycle, service
  # account and token, …). A short node grace period makes "node gone" testable in seconds.
  start kube-controller-manager "$kube_bin/kube-controller-manager" \
    --kubeconfig "$TESTENV_DIR/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$TESTENV_DIR/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$TESTENV_DIR/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" --leader-elect=false \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --use-service-account-credentials=true --controllers '*' \
    --node-monitor-grace-period 20s --node-monitor-period 2s --v=1
  start kube-scheduler "$kube_bin/kube-scheduler" \
    --kubeconfig "$TESTENV_DIR/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$TESTENV_DIR/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$TESTENV_DIR/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --v=1

  local kubectl=("$kube_bin/kubectl" --kubeconfig "$TESTENV_DIR/admin.kubeconfig")
  "${kubectl[@]}" apply --server-side -f "$snap_dir/crds/" >/dev/null
  wait_for "VolumeSnapshot CRDs" 60 "${kubectl[@]}" wait --for condition=Established --timeout 1s \
    crd/volumesnapshots.snapshot.storage.k8s.io crd/volumesnapshotcontents.snapshot.storage.k8s.io \
    crd/volumesnapshotclasses.snapshot.storage.k8s.io crd/volumegroupsnapshots.groupsnapshot.storage.k8s.io
  # The snapshot-controller is test infrastructure; it runs as admin rather than with a copy of
  # its upstream RBAC manifests.
  start snapshot-controller "$snap_dir/snapshot-controller" \
    --kubeconfig "$TESTENV_DIR/admin.kubeconfig" --leader-election=false \
    --http-endpoint "127.0.0.1:$snap_port" --v=2

  wait_for "kube-controller-manager" 60 "${kubectl[@]}" get serviceaccount default -n default
  "${kubectl[@]}" create namespace "$EDITOR_NS" >/dev/null
  "${kubectl[@]}" create rolebinding test-editor-edit -n "$EDITOR_NS" --clusterrole edit --user test-editor >/dev/null
  # Editors manage VolumeSnapshots in their namespaces, as a Deckhouse cluster grants them through
  # its snapshot-controller module's roles (upstream ships no such role); aggregated into `edit`.
  "${kubectl[@]}" apply --server-side -f - >/dev/null <<'EOF'
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: testenv:volumesnapshots:edit
  labels: {rbac.authorization.k8s.io/aggregate-to-edit: "true"}
rules:
- apiGroups: [snapshot.storage.k8s.io]
  resources: [volumesnapshots]
  verbs: [get, list, watch, create, update, patch, delete]
EOF

  cat > "$TESTENV_DIR/env" <<EOF
export TESTENV_DIR=$TESTENV_DIR
export TESTENV_BIN=$kube_bin
export TESTENV_SNAPSHOT_CRDS=$snap_dir/crds
export TESTENV_API_URL=https://$API_IP:$api_port
export TESTENV_CA=$pki/ca.crt
export TESTENV_CA_KEY=$pki/ca.key
export TESTENV_KUBECONFIG=$TESTENV_DIR/admin.kubeconfig
export TESTENV_KUBECONFIG_ADMIN_CERT=$TESTENV_DIR/admin-cert.kubeconfig
export TESTENV_KUBECONFIG_EDITOR=$TESTENV_DIR/editor.kubeconfig
export TESTENV_KUBECONFIG_NOBODY=$TESTENV_DIR/nobody.kubeconfig
export TESTENV_EDITOR_NAMESPACE=$EDITOR_NS
EOF
  log "up in $(( $(date +%s) - t0 ))s; source $TESTENV_DIR/env"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) if is_running kube-apiserver; then echo "running: $TESTENV_DIR/env"; else echo "not running"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
