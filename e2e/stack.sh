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
# Runs the module's components against the local control plane (e2e/testenv.sh) as local
# processes: the simulated node (kubelet, storage, kube-proxy/DNS stand-in), the controller and the
# webhook (registered through the API server by URL). The exporter is started by the simulated
# node, as a kubelet would start the pods the controller creates.
#
#   e2e/stack.sh up [sim] [controller] [webhook]   needs "$TESTENV_DIR/env"; default: all three;
#                                                  builds nothing (run `cargo build --workspace --bins`)
#   e2e/stack.sh down
#
# Writes "$TESTENV_DIR/stack.env" (export lines) for tests and the demo.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
TESTENV_DIR=${TESTENV_DIR:-$repo/.run/testenv}
target=${CARGO_TARGET_DIR:-$repo/target}/debug
stack=$TESTENV_DIR/stack
MODULE_NS=d8-storage-volume-data-manager
EXPORTER_IMAGE=registry.local/svdm/exporter:dev
log() { printf 'stack: %s\n' "$*" >&2; }

is_running() {
  local f=$stack/$1.pid pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  # Read first, then match: `tr | grep -q` fails under pipefail when grep exits early (SIGPIPE).
  local cmd
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ $cmd == *"$2"* ]]
}

stop_one() { # name binary [seconds]
  local pid i
  is_running "$1" "$2" || { rm -f "$stack/$1.pid"; return 0; }
  pid=$(cat "$stack/$1.pid")
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 $((${3:-10} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$stack/$1.pid"
}

down() {
  [ -d "$stack" ] || return 0
  if [ -f "$TESTENV_DIR/env" ]; then
    # shellcheck source=/dev/null
    . "$TESTENV_DIR/env"
    "$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG" delete validatingwebhookconfiguration \
      d8-storage-volume-data-manager --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  stop_one webhook svdm-webhook
  stop_one controller svdm-controller
  # The simulated node stops its pods' processes, detaches its loop devices and removes its
  # /etc/hosts block on SIGTERM.
  # With hundreds of pods (the scale bench) stopping them all takes a while.
  stop_one kube-sim svdm-kube-sim 90
  # A node killed before it stopped its pods leaves their processes (each in its own process
  # group, recorded in the pod's kubelet/pid) and its /etc/hosts block behind.
  local f pid cmd
  for f in "$stack"/kube-sim/pods/*/kubelet/pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null) || continue
    if [[ $cmd == *"$stack"* ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; fi
  done
  if [ -f "$stack/node-name" ]; then
    python3 - "$(cat "$stack/node-name")" <<'PY'
import fcntl, sys
begin, end = f"# BEGIN svdm-kube-sim {sys.argv[1]}", f"# END svdm-kube-sim {sys.argv[1]}"
with open("/etc/hosts", "r+") as f:  # in place: /etc/hosts may be a bind mount
    fcntl.flock(f, fcntl.LOCK_EX)
    out, skip = [], False
    for line in f.read().splitlines(keepends=True):
        if line.rstrip("\n") == begin:
            skip = True
        elif skip and line.rstrip("\n") == end:
            skip = False
        elif not skip:
            out.append(line)
    f.seek(0)
    f.truncate()
    f.writelines(out)
PY
  fi
  # The node keeps its loop devices across restarts (they are its disks); tearing the stack down
  # removes the disks too, so detach every loop device backed by a file of this stack.
  local dev file
  while read -r dev file; do
    case $file in "$stack"/*) losetup -d "$dev" 2>/dev/null || true ;; esac
  done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null || true)
  log "stopped"
}

wait_for() { # what seconds command...
  local what=$1 secs=$2 i; shift 2
  for i in $(seq 1 $((secs * 2))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "$what not ready within ${secs}s"
  for f in "$stack"/*.log; do [ -f "$f" ] && { printf '\n===== %s =====\n' "$f" >&2; tail -n 40 "$f" >&2; }; done
  return 1
}

want() { [[ " $components " == *" $1 "* ]]; }

up() {
  components=${*:-sim controller webhook}
  # shellcheck source=/dev/null
  . "$TESTENV_DIR/env"
  mkdir -p "$stack"
  local k=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG")
  "${k[@]}" apply --server-side -f "$repo/crds/dataexports.yaml" >/dev/null
  "${k[@]}" wait --for condition=Established --timeout 60s crd/dataexports.storage.deckhouse.io >/dev/null
  "${k[@]}" apply --server-side -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: $MODULE_NS}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: exporter, namespace: $MODULE_NS}
---
# The exporter's own identity: TokenReview and SubjectAccessReview for every user request …
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "d8:storage-volume-data-manager:exporter:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: ServiceAccount, name: exporter, namespace: $MODULE_NS}]
---
# … and its activity Lease, nothing else.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: "d8:storage-volume-data-manager:exporter", namespace: $MODULE_NS}
rules:
- {apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, update, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "d8:storage-volume-data-manager:exporter", namespace: $MODULE_NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: "d8:storage-volume-data-manager:exporter"}
subjects: [{kind: ServiceAccount, name: exporter, namespace: $MODULE_NS}]
---
# What users get from the module's shipped roles: manage DataExports and download their data.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: "d8:storage-volume-data-manager:user"
rules:
- {apiGroups: [storage.deckhouse.io], resources: [dataexports], verbs: [get, list, watch, create, update, patch, delete]}
- {apiGroups: [storage.deckhouse.io], resources: [dataexports/download], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "test-editor-dataexports", namespace: $TESTENV_EDITOR_NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "d8:storage-volume-data-manager:user"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: test-editor}]
---
# The chart's grant for d8's publish auto-detect (templates/rbac-for-us.yaml).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: "d8:storage-volume-data-manager:publish-autodetect", namespace: default}
rules:
- {apiGroups: [""], resources: [services], resourceNames: [kubernetes], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "d8:storage-volume-data-manager:publish-autodetect", namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: "d8:storage-volume-data-manager:publish-autodetect"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "system:authenticated"}]
EOF

  # Exporter CA: what the module's TLS hook puts into a Secret for the controller.
  if [ ! -f "$stack/exporter-ca.crt" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
      -subj "/CN=storage-volume-data-manager exporter CA" -keyout "$stack/exporter-ca.key" \
      -out "$stack/exporter-ca.crt" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  fi

  if ! want sim; then :
  elif [ -x "$target/svdm-kube-sim" ]; then
    echo "${SIM_NODE_NAME:-sim-node-1}" > "$stack/node-name"
    if ! is_running kube-sim svdm-kube-sim; then
      # The node runs with admin credentials, as a stand-in for kubelet + CSI driver + kube-proxy.
      # Images it runs as local processes: the tests' exporter image, and the module's images as the
      # chart names them (e2e/module.sh): the controller image holds both the controller and the
      # webhook binary, picked by the container's command. This node also forwards the Services
      # whose endpoints are on no node: default/kubernetes, the API server (--proxy-nodeless).
      # shellcheck source=e2e/module/images.env
      . "$repo/e2e/module/images.env"
      KUBECONFIG=$TESTENV_KUBECONFIG RUST_LOG=${SIM_LOG:-info} "$target/svdm-kube-sim" \
        --kubeconfig "$TESTENV_KUBECONFIG" --data-dir "$stack/kube-sim" --proxy-nodeless \
        --exporter-image "$EXPORTER_IMAGE" --exporter-binary "$target/svdm-exporter" \
        --image "$SVDM_MODULE_REGISTRY@$SVDM_CONTROLLER_DIGEST=$target" \
        --image "$SVDM_MODULE_REGISTRY@$SVDM_EXPORTER_DIGEST=$target/svdm-exporter" \
        > "$stack/kube-sim.log" 2>&1 &
      echo $! > "$stack/kube-sim.pid"
    fi
    wait_for "simulated node" 60 "${k[@]}" wait --for condition=Ready --timeout 1s "node/${SIM_NODE_NAME:-sim-node-1}"
  else
    log "MISSING: svdm-kube-sim is not built; no node, no storage"
  fi

  if ! want controller; then :
  elif [ -x "$target/svdm-controller" ]; then
    if ! is_running controller svdm-controller; then
      KUBECONFIG=$TESTENV_KUBECONFIG RUST_LOG=${CONTROLLER_LOG:-info} "$target/svdm-controller" \
        --exporter-image "$EXPORTER_IMAGE" \
        --exporter-ca-cert "$stack/exporter-ca.crt" --exporter-ca-key "$stack/exporter-ca.key" \
        --metrics-address 127.0.0.1:0 \
        > "$stack/controller.log" 2>&1 &
      echo $! > "$stack/controller.pid"
    fi
  else
    log "MISSING: svdm-controller is not built; DataExports will not be reconciled"
  fi

  if ! want webhook; then :
  elif [ -x "$target/svdm-webhook" ]; then
    if ! is_running webhook svdm-webhook; then
      # Serving certificate for 127.0.0.1, from the test CA, as the TLS hook would issue for the
      # webhook Service in a cluster.
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=svdm-webhook" \
        -keyout "$stack/webhook.key" -out "$stack/webhook.csr" 2>/dev/null
      openssl x509 -req -in "$stack/webhook.csr" -CA "$TESTENV_CA" -CAkey "$TESTENV_CA_KEY" -CAcreateserial \
        -days 30 -out "$stack/webhook.crt" \
        -extfile <(printf "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth") 2>/dev/null
      local port
      port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
      echo "$port" > "$stack/webhook.port"
      KUBECONFIG=$TESTENV_KUBECONFIG RUST_LOG=${WEBHOOK_LOG:-info} "$target/svdm-webhook" \
        --tls-cert "$stack/webhook.crt" --tls-key "$stack/webhook.key" --address 127.0.0.1 --port "$port" \
        > "$stack/webhook.log" 2>&1 &
      echo $! > "$stack/webhook.pid"
    fi
    local port
    port=$(cat "$stack/webhook.port")
    wait_for "webhook" 60 curl -fsS --cacert "$TESTENV_CA" "https://127.0.0.1:$port/readyz"
    "${k[@]}" apply --server-side -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: d8-storage-volume-data-manager}
webhooks:
- name: dataexports.storage.deckhouse.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Fail
  timeoutSeconds: 10
  clientConfig:
    url: https://127.0.0.1:$port/validate-dataexport
    caBundle: $(base64 -w0 < "$TESTENV_CA")
  rules:
  - {apiGroups: [storage.deckhouse.io], apiVersions: [v1alpha1], operations: [CREATE, UPDATE], resources: [dataexports], scope: Namespaced}
EOF
  else
    log "MISSING: svdm-webhook is not built; DataExports are not validated against the cluster"
  fi

  cat > "$TESTENV_DIR/stack.env" <<EOF
export SVDM_STACK_DIR=$stack
export SVDM_EXPORTER_IMAGE=$EXPORTER_IMAGE
export SVDM_EXPORTER_CA=$stack/exporter-ca.crt
export SVDM_MODULE_NAMESPACE=$MODULE_NS
EOF
  log "up; logs in $stack"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
