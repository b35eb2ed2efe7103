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
# Side-by-side benchmark on loopback TLS (HTTP/1.1) on the same files:
#   svdm-exporter (release, --no-auth)  vs  nginx (Debian, TLS, sendfile)  vs  Go net/http FileServer.
# Servers are pinned to CPU 0 and clients to CPU 1 when the machine has two or more CPUs.
#
#   bench/exporter.sh              # 2 GiB file, 100k-entry listing, 10k small files
#   BENCH_SIZE_MB=512 bench/exporter.sh
#
# Needs: cargo, go, curl, openssl, nginx (installed with apt-get if missing and running as root),
# losetup (root) for the block-device figure. Every number is printed with its ratio to nginx and Go.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=${BENCH_SIZE_MB:-2048}
PAR_MB=${BENCH_PARALLEL_MB:-512}       # bytes per stream in the 8-stream test
RANGES=${BENCH_RANGES:-2000}           # 4 KiB range requests on one keep-alive connection
LIST_N=${BENCH_LIST_N:-100000}
SMALL_N=${BENCH_SMALL_N:-10000}
target=${CARGO_TARGET_DIR:-$repo/target}
export PATH=$PATH:/usr/local/go/bin

log() { printf 'bench: %s\n' "$*" >&2; }
pids=()
loopdev=""
work=$(mktemp -d /tmp/svdm-bench.XXXXXX)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$(nproc)" -ge 2 ]; then srv_cpu=(taskset -c 0); cli_cpu=(taskset -c 1); else srv_cpu=(); cli_cpu=(); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

command -v nginx >/dev/null || { log "installing nginx"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null; }
log "building (release)"
(cd "$repo" && cargo build --release -q -p svdm-exporter)
exporter=$target/release/svdm-exporter
(cd "$repo/bench/goserver" && go build -o "$work/goserver" .)

log "preparing data in $work"
data=$work/data
mkdir -p "$data/many" "$data/small"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$data/big.bin"
python3 - "$data" "$LIST_N" "$SMALL_N" <<'PY'
import os, sys
root, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    open(os.path.join(root, "many", f"entry-{i:06d}"), "wb").close()
blob = os.urandom(4096)
for i in range(m):
    with open(os.path.join(root, "small", f"f{i:05d}"), "wb") as f:
        f.write(blob[: 1024 + (i * 37) % 3072])
PY
if losetup -f >/dev/null 2>&1; then loopdev=$(losetup -f --show -r "$data/big.bin"); fi
cat "$data/big.bin" > /dev/null  # page cache
if [ -n "$loopdev" ]; then cat "$loopdev" > /dev/null; fi

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 \
  -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

pe=$(free_port); pb=$(free_port); pn=$(free_port); pg=$(free_port)
"${srv_cpu[@]}" "$exporter" --mode filesystem --source "$data" --address 127.0.0.1 --port "$pe" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --export-namespace b --export-name b \
  --no-auth --log-level warn > "$work/exporter.log" 2>&1 &
epid=$!; pids+=("$epid")
if [ -n "$loopdev" ]; then
  "${srv_cpu[@]}" "$exporter" --mode block --source "$loopdev" --address 127.0.0.1 --port "$pb" \
    --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --export-namespace b --export-name b \
    --no-auth --log-level warn > "$work/exporter-block.log" 2>&1 &
  pids+=("$!")
fi
"${srv_cpu[@]}" "$work/goserver" -addr "127.0.0.1:$pg" -root "$data" -block "${loopdev:-}" \
  -cert "$work/cert.pem" -key "$work/key.pem" > "$work/go.log" 2>&1 &
pids+=("$!")
cat > "$work/nginx.conf" <<NGX
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  client_body_temp_path $work/nginx-tmp;
  proxy_temp_path $work/nginx-tmp;
  fastcgi_temp_path $work/nginx-tmp;
  uwsgi_temp_path $work/nginx-tmp;
  scgi_temp_path $work/nginx-tmp;
  server {
    listen 127.0.0.1:$pn ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location /files/ { alias $data/; autoindex on; autoindex_format json; }
  }
}
NGX
mkdir -p "$work/nginx-tmp"
"${srv_cpu[@]}" nginx -c "$work/nginx.conf" -g 'daemon on;' 2>>"$work/nginx-error.log"
for port in "$pe" "$pn" "$pg"; do
  for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$port/" && break; sleep 0.1; done
done

idle_rss=$(awk '/VmRSS/{print int($2/1024)}' "/proc/$epid/status")
C=("${cli_cpu[@]}" curl -s --cacert "$work/cert.pem" --http1.1)
E=https://127.0.0.1:$pe/api/v1/files
N=https://127.0.0.1:$pn/files
G=https://127.0.0.1:$pg/files
B=https://127.0.0.1:$pb/api/v1/block
GB=https://127.0.0.1:$pg/block
now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1/1e6/($3-$2):.0f}')"; }

single() { "${C[@]}" -o /dev/null -w '%{speed_download}' "$1" | python3 -c 'import sys;print(f"{float(sys.stdin.read())/1e6:.0f}")'; }
parallel8() {
  local t0 t1 i cp=()
  t0=$(now)
  for i in $(seq 1 8); do "${C[@]}" -o /dev/null -r "0-$((PAR_MB * 1024 * 1024 - 1))" "$1" & cp+=("$!"); done
  for p in "${cp[@]}"; do wait "$p"; done
  t1=$(now); mbps $((8 * PAR_MB * 1024 * 1024)) "$t0" "$t1"
}
ranges() {
  local cfg=$work/ranges.cfg t0 t1 i
  : > "$cfg"
  for i in $(seq 1 "$RANGES"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$1" >> "$cfg"; done
  t0=$(now); "${C[@]}" -r 4096-8191 -K "$cfg"; t1=$(now)
  python3 -c "print(f'{$RANGES/($t1-$t0):.0f}')"
}
timed() { local t0 t1; t0=$(now); "${C[@]}" -o /dev/null "$1"; t1=$(now); python3 -c "print(f'{($t1-$t0)*1000:.0f}')"; }
ratio() { python3 -c "a,b='$1','$2'; print(f'{float(a)/float(b):.2f}x' if b not in ('','-','0') and a not in ('','-') else '-')"; }
row() { printf '%-44s %12s %12s %12s %10s %10s\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$3")" "$(ratio "$2" "$4")"; }
rowinv() { printf '%-44s %12s %12s %12s %10s %10s\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$2")" "$(ratio "$4" "$2")"; }
rss() { awk '/VmRSS/{print int($2/1024)}' "/proc/$1/status"; }

echo
echo "crypto bound (one core):"
openssl speed -seconds 1 -evp aes-128-gcm 2>/dev/null | tail -1
echo
printf '%-44s %12s %12s %12s %10s %10s\n' "figure (higher is better unless noted)" "exporter" "nginx" "go" "vs nginx" "vs go"
row "single stream ${SIZE_MB} MiB file, MB/s" "$(single "$E/big.bin")" "$(single "$N/big.bin")" "$(single "$G/big.bin")"
if [ -n "$loopdev" ]; then
  row "single stream ${SIZE_MB} MiB loop device, MB/s" "$(single "$B")" "-" "$(single "$GB")"
else
  echo "single stream loop device: skipped (no loop devices)"
fi
row "8 streams x ${PAR_MB} MiB, total MB/s" "$(parallel8 "$E/big.bin")" "$(parallel8 "$N/big.bin")" "$(parallel8 "$G/big.bin")"
row "4 KiB ranges/s, keep-alive (no auth)" "$(ranges "$E/big.bin")" "$(ranges "$N/big.bin")" "$(ranges "$G/big.bin")"
before=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$epid/status")
rowinv "${LIST_N}-entry listing, ms (lower better)" "$(timed "$E/many/")" "$(timed "$N/many/")" "$(timed "$G/many/")"
after=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$epid/status")
echo "exporter peak RSS before/after the listing: ${before} / ${after} MiB"

cfg=$work/small.cfg; : > "$cfg"
for f in "$data"/small/*; do printf 'url = "%s/small/%s"\noutput = "/dev/null"\n' "$E" "$(basename "$f")" >> "$cfg"; done
t0=$(now); "${C[@]}" -K "$cfg"; t1=$(now)
per_file=$(python3 -c "print(f'{($t1-$t0)*1000:.0f}')")
tar_ms=$(timed "$E/small/?format=tar")
echo "tar of ${SMALL_N} small files: ${tar_ms} ms vs ${SMALL_N} single requests (keep-alive): ${per_file} ms -> $(ratio "$per_file" "$tar_ms") faster"

echo "exporter RSS idle at start: ${idle_rss} MiB; after the runs above: $(rss "$epid") MiB"
cp=()
for i in $(seq 1 32); do "${C[@]}" -o /dev/null --limit-rate 20M "$E/big.bin" & cp+=("$!"); done
sleep 3
echo "exporter RSS under 32 concurrent downloads: $(rss "$epid") MiB"
for p in "${cp[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${cp[@]}"; do wait "$p" 2>/dev/null || true; done
