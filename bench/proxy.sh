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
# The simulated kube-proxy's forwarder (crates/kube-sim/src/proxy.rs) next to a direct connection,
# on the real exporter (release, --no-auth) over loopback TLS: per small request, what the relay
# adds; for a large download, its throughput as a ratio of direct. Also the forwarder as it was
# before the fix (Nagle's algorithm on, 8 KiB copies), to show where its latency came from.
#
#   bench/proxy.sh                 # 3000 small GETs, a 1 GiB file, 5 rounds
#   BENCH_PROXY_REQUESTS=1000 BENCH_PROXY_MB=256 bench/proxy.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
REQUESTS=${BENCH_PROXY_REQUESTS:-3000}
MB=${BENCH_PROXY_MB:-1024}
ROUNDS=${BENCH_PROXY_ROUNDS:-5}
target=${CARGO_TARGET_DIR:-$repo/target}
log() { printf 'bench: %s\n' "$*" >&2; }
work=$(mktemp -d /tmp/svdm-proxy-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
if [ "$(nproc)" -ge 2 ]; then srv_cpu=(taskset -c 0); cli_cpu=(taskset -c 1); else srv_cpu=(); cli_cpu=(); fi

log "building (release)"
(cd "$repo" && cargo build --release -q -p svdm-exporter && cargo bench -q -p svdm-kube-sim --bench forwarder --no-run)
bench_bin=$(cd "$repo" && cargo bench -q -p svdm-kube-sim --bench forwarder --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("target",{}).get("name")=="forwarder" and m.get("executable"):
        print(m["executable"])' | tail -1)

mkdir -p "$work/data"
head -c 4096 /dev/urandom > "$work/data/small.bin"
head -c $((MB * 1024 * 1024)) /dev/urandom > "$work/data/big.bin"
cat "$work/data/big.bin" > /dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 1 -subj /CN=exporter.bench.svc -addext "subjectAltName=DNS:exporter.bench.svc" 2>/dev/null
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
"${srv_cpu[@]}" "$target/release/svdm-exporter" --mode filesystem --source "$work/data" --address 127.0.0.1 \
  --port "$port" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --export-namespace b --export-name b \
  --no-auth --log-level warn > "$work/exporter.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$port/healthz" && break; sleep 0.1; done

log "measuring: $REQUESTS small GETs and a $MB MiB GET per path, $ROUNDS rounds"
"${cli_cpu[@]}" "$bench_bin" "127.0.0.1:$port" exporter.bench.svc "$work/cert.pem" \
  /api/v1/files/small.bin /api/v1/files/big.bin "$REQUESTS" "$ROUNDS"
