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
# Instructions the exporter executes per small-file request, counted by valgrind's callgrind: unlike
# timings, the count is the same from run to run on a busy machine, so before/after comparisons of
# the request path are exact. User-space instructions only (the kernel's TCP and file work is not in
# it; bench/exporter.sh shows wall time and CPU time).
#
#   bench/exporter-callgrind.sh                       # no auth: 2000 requests for 1-4 KiB files
#   AUTH=1 TESTENV_DIR=.run/testenv bench/exporter-callgrind.sh   # with TokenReview/SAR (cached)
#   KEEP=1 ...                                        # keep callgrind.out for callgrind_annotate
#   EXPORTER=/path/to/svdm-exporter ...               # count that binary instead of building
#
# AUTH=1 needs a running control plane (e2e/testenv.sh up with that TESTENV_DIR); the script creates a
# namespace with the exporter's and a downloader's ServiceAccounts in it, and removes it at the end.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
N=${N:-2000}
AUTH=${AUTH:-0}
target=${CARGO_TARGET_DIR:-$repo/target}
export PATH=$PATH:/usr/local/go/bin
log() { printf 'callgrind: %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "installing valgrind"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind >/dev/null; }

work=$(mktemp -d /tmp/svdm-callgrind.XXXXXX)
vpid=""
ns=""
cleanup() {
  if [ -n "$vpid" ]; then kill "$vpid" 2>/dev/null || true; wait "$vpid" 2>/dev/null || true; fi
  if [ -n "$ns" ]; then "${k[@]}" delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
    "${k[@]}" delete clusterrolebinding "$ns-auth-delegator" >/dev/null 2>&1 || true; fi
  if [ "${KEEP:-0}" = 1 ]; then log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if [ -n "${EXPORTER:-}" ]; then
  exporter=$EXPORTER  # a given build, e.g. an earlier commit's
else
  (cd "$repo" && cargo build --release -q -p svdm-exporter)
  exporter=$target/release/svdm-exporter
fi
(cd "$repo/bench/d8client" && go build -o "$work/d8client" .)
mkdir -p "$work/data/small"
python3 - "$work" "$N" <<'PY'
import os, sys
work, n = sys.argv[1], int(sys.argv[2])
blob = os.urandom(4096)
names = [f"f{i:05d}" for i in range(n)]
for i, name in enumerate(names):
    with open(os.path.join(work, "data", "small", name), "wb") as f:
        f.write(blob[: 1024 + (i * 37) % 3072])
open(os.path.join(work, "names.txt"), "w").write("\n".join(names) + "\n")
open(os.path.join(work, "warm.txt"), "w").write("\n".join(names[:200]) + "\n")
PY
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 \
  -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')

args=(--mode filesystem --source "$work/data" --address 127.0.0.1 --port "$port"
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --log-level warn)
if "$exporter" --help | grep -q -- --admin-port; then args+=(--admin-port 0); fi
client=("$work/d8client" -cacert "$work/cert.pem" -mode files -conns 1 -url "https://127.0.0.1:$port/api/v1/files/small/")
if [ "$AUTH" = 1 ]; then
  # shellcheck disable=SC1091
  source "${TESTENV_DIR:-$repo/.run/testenv}/env"
  k=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG")
  ns=svdm-callgrind-$RANDOM
  "${k[@]}" create namespace "$ns" >/dev/null
  "${k[@]}" -n "$ns" create serviceaccount exporter >/dev/null
  "${k[@]}" -n "$ns" create serviceaccount downloader >/dev/null
  "${k[@]}" create clusterrolebinding "$ns-auth-delegator" --clusterrole system:auth-delegator \
    --serviceaccount "$ns:exporter" >/dev/null
  "${k[@]}" apply -f - >/dev/null <<ROLE
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: downloader, namespace: $ns}
rules:
- {apiGroups: [storage.deckhouse.io], resources: [dataexports/download], verbs: [get], resourceNames: [b]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: downloader, namespace: $ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: downloader}
subjects: [{kind: ServiceAccount, name: downloader, namespace: $ns}]
ROLE
  "${k[@]}" -n "$ns" create token downloader --duration 1h > "$work/token"
  cat > "$work/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "$TESTENV_API_URL", certificate-authority: "$TESTENV_CA"}}]
users: [{name: u, user: {token: "$("${k[@]}" -n "$ns" create token exporter --duration 1h)"}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
KC
  export KUBECONFIG=$work/kubeconfig
  # A cache long enough that the counted requests are all hits, as in a steady download.
  args+=(--export-namespace "$ns" --export-name b --auth-cache-ttl 10m)
  client+=(-token-file "$work/token")
else
  args+=(--export-namespace b --export-name b --no-auth)
fi

# valgrind 3.19 does not know openat2: the shim maps it to openat inside this measurement only.
cc -shared -fPIC -O2 -o "$work/openat2-shim.so" "$repo/bench/callgrind-openat2-shim.c" -ldl
# glibc's memset/memcpy switch to `rep stosb`/`rep movsb` above 2 KiB, which callgrind counts as one
# instruction per byte; with the threshold out of reach they use vector loops, counted as executed.
GLIBC_TUNABLES=glibc.cpu.x86_rep_stosb_threshold=4294967295:glibc.cpu.x86_rep_movsb_threshold=4294967295 \
LD_PRELOAD=$work/openat2-shim.so valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
  "$exporter" "${args[@]}" > "$work/exporter.log" 2>&1 &
vpid=$!
for _ in $(seq 1 600); do curl -sk -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.1; done
"${client[@]}" -names "$work/warm.txt" >/dev/null
# Each client run is a new process with one new connection, so each dump holds one TLS handshake;
# the difference of a short and a long run is the requests alone.
short=$((N / 4))
head -n "$short" "$work/names.txt" > "$work/short.txt"
callgrind_control --zero "$vpid" >/dev/null 2>&1
out1=$("${client[@]}" -names "$work/short.txt")
callgrind_control --dump "$vpid" >/dev/null 2>&1
out2=$("${client[@]}" -names "$work/names.txt")
callgrind_control --dump "$vpid" >/dev/null 2>&1
grep -q "codes=200:$short\$" <<<"$out1" || { log "unexpected answers: $out1"; exit 1; }
grep -q "codes=200:$N\$" <<<"$out2" || { log "unexpected answers: $out2"; exit 1; }
i1=$(awk '/^summary:/ {print $2}' "$work/callgrind.out.1")
i2=$(awk '/^summary:/ {print $2}' "$work/callgrind.out.2")
echo "instructions per small-file request ($([ "$AUTH" = 1 ] && echo "auth on, cached" || echo "no auth")): $(( (i2 - i1) / (N - short) )) ($i1 for $short requests, $i2 for $N, each with one handshake)"
