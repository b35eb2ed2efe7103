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
#   svdm-exporter (release)  vs  nginx (Debian, TLS, sendfile)  vs  Go net/http.
# Servers are pinned to CPU 0 and clients to CPU 1 when the machine has two or more CPUs.
#
#   bench/exporter.sh                   # everything, 5 rounds of the per-request rows
#   BENCH_AUTH=0 bench/exporter.sh      # without the authenticated rows (no control plane needed)
#   BENCH_SIZE_MB=512 BENCH_ROUNDS=3 bench/exporter.sh
#   BENCH_EXPORTER=/path/to/svdm-exporter bench/exporter.sh   # measure that binary instead of building
#   BENCH_ROWS=requests bench/exporter.sh   # only the per-request rows (and the bad-token counts)
#
# The exporter runs twice: with --no-auth, and with authentication on against a private local control
# plane (e2e/testenv.sh, real TokenReview and SubjectAccessReview, cached as in production) started and
# stopped by this script. Per-request rows use bench/d8client, which downloads the way d8 does and
# prints its own CPU time; the servers' CPU time comes from /proc. The machine may be shared: the
# per-request rows are medians of BENCH_ROUNDS rounds with the servers interleaved in each round.
#
# Needs: cargo, go, curl, openssl, nginx (installed with apt-get if missing and running as root),
# losetup (root) for the block-device figure; for the auth rows the control plane binaries that
# e2e/kube-testenv/build.sh caches. Every number is printed with its ratio to nginx and Go.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SIZE_MB=${BENCH_SIZE_MB:-2048}
PAR_MB=${BENCH_PARALLEL_MB:-512}       # bytes per stream in the 8-stream test
RANGES=${BENCH_RANGES:-2000}           # 4 KiB range requests on one keep-alive connection
LIST_N=${BENCH_LIST_N:-100000}
SMALL_N=${BENCH_SMALL_N:-10000}
ROUNDS=${BENCH_ROUNDS:-5}
AUTH=${BENCH_AUTH:-1}
BAD_N=${BENCH_BAD_N:-1000}             # requests with bad tokens, for the TokenReview count
ROWS=${BENCH_ROWS:-all}
target=${CARGO_TARGET_DIR:-$repo/target}
export PATH=$PATH:/usr/local/go/bin

log() { printf 'bench: %s\n' "$*" >&2; }
pids=()
loopdev=""
work=$(mktemp -d /tmp/svdm-bench.XXXXXX)
testenv_dir=$work/testenv
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$work/nginx.pid" ]; then kill "$(cat "$work/nginx.pid")" 2>/dev/null || true; fi
  if [ -n "$loopdev" ]; then losetup -d "$loopdev" 2>/dev/null || true; fi
  if [ -d "$testenv_dir" ]; then TESTENV_DIR=$testenv_dir "$repo/e2e/testenv.sh" down >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$(nproc)" -ge 2 ]; then srv_cpu=(taskset -c 0); cli_cpu=(taskset -c 1); else srv_cpu=(); cli_cpu=(); fi
free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

command -v nginx >/dev/null || { log "installing nginx"; DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null; }
if [ -n "${BENCH_EXPORTER:-}" ]; then
  exporter=$BENCH_EXPORTER  # a given build, e.g. an earlier commit's for a before/after table
else
  log "building (release)"
  (cd "$repo" && cargo build --release -q -p svdm-exporter)
  exporter=$target/release/svdm-exporter
fi
(cd "$repo/bench/goserver" && go build -o "$work/goserver" .)
(cd "$repo/bench/d8client" && go build -o "$work/d8client" .)

if [ "$AUTH" = 1 ]; then
  # Started early: it needs a few seconds, in which the data below is written. On the client CPU, so
  # the API server never takes time from the servers under test.
  log "starting a private control plane for the authenticated rows"
  TESTENV_DIR=$testenv_dir "${cli_cpu[@]}" "$repo/e2e/testenv.sh" up > "$work/testenv.log" 2>&1 &
  testenv_pid=$!
fi

log "preparing data in $work"
data=$work/data
mkdir -p "$data/many" "$data/small" "$data/tree"
head -c $((SIZE_MB * 1024 * 1024)) /dev/urandom > "$data/big.bin"
python3 - "$data" "$LIST_N" "$SMALL_N" <<'PY'
import os, sys
root, n, m = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    open(os.path.join(root, "many", f"entry-{i:06d}"), "wb").close()
blob = os.urandom(4096)
names = []
for i in range(m):
    names.append(f"f{i:05d}")
    with open(os.path.join(root, "small", names[-1]), "wb") as f:
        f.write(blob[: 1024 + (i * 37) % 3072])
with open(os.path.join(root, "..", "small-names.txt"), "w") as f:
    f.write("\n".join(names) + "\n")
# The d8-shaped tree: m files of 1-4 KiB in 10 x 10 nested directories.
per = max(1, m // 100)
for i in range(m):
    d = os.path.join(root, "tree", f"d{i // (per * 10) % 10}", f"s{i // per % 10}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(blob[: 1024 + (i * 53) % 3072])
PY
if losetup -f >/dev/null 2>&1; then loopdev=$(losetup -f --show -r "$data/big.bin"); fi
cat "$data/big.bin" > /dev/null  # page cache
if [ -n "$loopdev" ]; then cat "$loopdev" > /dev/null; fi
tree_files=$(find "$data/tree" -type f | wc -l)
tree_bytes=$(find "$data/tree" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
tree_dirs=$(find "$data/tree" -type d | wc -l)

openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" -days 1 \
  -subj /CN=localhost -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

pe=$(free_port); pb=$(free_port); pn=$(free_port); pg=$(free_port); pa=$(free_port)
# Several exporters run side by side: each takes a free admin port (builds that have one).
admin_port=(); if "$exporter" --help | grep -q -- --admin-port; then admin_port=(--admin-port 0); fi
"${srv_cpu[@]}" "$exporter" "${admin_port[@]}" --mode filesystem --source "$data" --address 127.0.0.1 --port "$pe" \
  --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --export-namespace b --export-name b \
  --no-auth --log-level warn > "$work/exporter.log" 2>&1 &
epid=$!; pids+=("$epid")
if [ -n "$loopdev" ]; then
  "${srv_cpu[@]}" "$exporter" "${admin_port[@]}" --mode block --source "$loopdev" --address 127.0.0.1 --port "$pb" \
    --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" --export-namespace b --export-name b \
    --no-auth --log-level warn > "$work/exporter-block.log" 2>&1 &
  pids+=("$!")
fi
"${srv_cpu[@]}" "$work/goserver" -addr "127.0.0.1:$pg" -root "$data" -block "${loopdev:-}" \
  -cert "$work/cert.pem" -key "$work/key.pem" > "$work/go.log" 2>&1 &
gpid=$!; pids+=("$gpid")
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
wait_https() { local _; for _ in $(seq 1 100); do curl -sk -o /dev/null "https://127.0.0.1:$1/" && return 0; sleep 0.1; done; return 1; }
for port in "$pe" "$pn" "$pg"; do wait_https "$port"; done
npids() { local m; m=$(cat "$work/nginx.pid"); echo "$m" $(pgrep -P "$m"); }

apid=""
if [ "$AUTH" = 1 ]; then
  if ! wait "$testenv_pid"; then
    log "the control plane did not start (see below); authenticated rows are skipped"
    tail -20 "$work/testenv.log" >&2
    AUTH=0
  fi
fi
if [ "$AUTH" = 1 ]; then
  # shellcheck disable=SC1091
  source "$testenv_dir/env"
  k=("$TESTENV_BIN/kubectl" --kubeconfig "$TESTENV_KUBECONFIG")
  # As in a cluster: the exporter's own ServiceAccount may review tokens and access (auth-delegator);
  # the downloader may `get dataexports/download` on this one export's name.
  "${k[@]}" create namespace bench >/dev/null
  "${k[@]}" -n bench create serviceaccount exporter >/dev/null
  "${k[@]}" -n bench create serviceaccount downloader >/dev/null
  "${k[@]}" create clusterrolebinding bench-exporter-auth-delegator --clusterrole system:auth-delegator \
    --serviceaccount bench:exporter >/dev/null
  "${k[@]}" apply -f - >/dev/null <<'ROLE'
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: downloader, namespace: bench}
rules:
- {apiGroups: [storage.deckhouse.io], resources: [dataexports/download], verbs: [get], resourceNames: [b]}
ROLE
  "${k[@]}" -n bench create rolebinding downloader --role downloader --serviceaccount bench:downloader >/dev/null
  "${k[@]}" -n bench create token downloader --duration 2h > "$work/token"
  exporter_token=$("${k[@]}" -n bench create token exporter --duration 2h)
  cat > "$work/exporter.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "$TESTENV_API_URL", certificate-authority: "$TESTENV_CA"}
users:
- name: u
  user: {token: "$exporter_token"}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
KC
  KUBECONFIG=$work/exporter.kubeconfig "${srv_cpu[@]}" "$exporter" "${admin_port[@]}" --mode filesystem --source "$data" \
    --address 127.0.0.1 --port "$pa" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    --export-namespace bench --export-name b --log-level warn > "$work/exporter-auth.log" 2>&1 &
  apid=$!; pids+=("$apid")
  wait_https "$pa"
fi

idle_rss=$(awk '/VmRSS/{print int($2/1024)}' "/proc/$epid/status")
C=("${cli_cpu[@]}" curl -s --cacert "$work/cert.pem" --http1.1)
D=("${cli_cpu[@]}" "$work/d8client" -cacert "$work/cert.pem")
E=https://127.0.0.1:$pe/api/v1/files
A=https://127.0.0.1:$pa/api/v1/files
N=https://127.0.0.1:$pn/files
G=https://127.0.0.1:$pg/files
GD=https://127.0.0.1:$pg/d8
B=https://127.0.0.1:$pb/api/v1/block
GB=https://127.0.0.1:$pg/block
now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$1/1e6/($3-$2):.0f}')"; }
tck=$(getconf CLK_TCK)
# CPU time (utime + stime of every thread) of processes, in clock ticks.
ticks() { local t=0 p f; for p in "$@"; do read -r -a f < "/proc/$p/stat"; t=$((t + f[13] + f[14])); done; echo "$t"; }

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
timed() { local t0 t1; t0=$(now); "${C[@]}" -o /dev/null "$@"; t1=$(now); python3 -c "print(f'{($t1-$t0)*1000:.0f}')"; }
ratio() { python3 -c "a,b='$1','$2'; print(f'{float(a)/float(b):.2f}x' if b not in ('','-','0') and a not in ('','-') else '-')"; }
row() { printf '%-44s %12s %12s %12s %10s %10s\n' "$1" "$2" "$3" "$4" "$(ratio "$2" "$3")" "$(ratio "$2" "$4")"; }
rowinv() { printf '%-44s %12s %12s %12s %10s %10s\n' "$1" "$2" "$3" "$4" "$(ratio "$3" "$2")" "$(ratio "$4" "$2")"; }
rss() { awk '/VmRSS/{print int($2/1024)}' "/proc/$1/status"; }

# One d8client run against one server: prints "rate server_us client_us" (per request, or per file for
# the tree), after checking that everything was fetched with 200s.
# measure <pids of the server> -- <d8client args>
measure() {
  local sp=() out t0 t1 n secs cu cs
  while [ "$1" != -- ]; do sp+=("$1"); shift; done; shift
  t0=$(ticks "${sp[@]}")
  out=$("${D[@]}" "$@")
  t1=$(ticks "${sp[@]}")
  if ! grep -q 'codes=200:[0-9]*$' <<<"$out"; then log "unexpected answers: $out"; echo "- - -"; return; fi
  python3 - "$out" "$t0" "$t1" "$tck" <<'PY'
import sys
kv = dict(p.split("=", 1) for p in sys.argv[1].split())
n = int(kv["files"]) or 1
secs = float(kv["seconds"])
srv = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[4])
cli = float(kv["cpu_user"]) + float(kv["cpu_sys"])
print(f"{n / secs:.0f} {srv / n * 1e6:.0f} {cli / n * 1e6:.0f}")
PY
}

if [ "$ROWS" = all ]; then
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
rowinv "  same, go = d8-format lister (stat per entry)" "$(timed "$E/many/")" "-" "$(timed "$GD/many/")"
echo "exporter peak RSS before/after the listing: ${before} / ${after} MiB"

cfg=$work/small.cfg; : > "$cfg"
for f in "$data"/small/*; do printf 'url = "%s/small/%s"\noutput = "/dev/null"\n' "$E" "$(basename "$f")" >> "$cfg"; done
t0=$(now); "${C[@]}" -K "$cfg"; t1=$(now)
per_file=$(python3 -c "print(f'{($t1-$t0)*1000:.0f}')")
tar_ms=$(timed "$E/small/?format=tar")
echo "tar of ${SMALL_N} small files: ${tar_ms} ms vs ${SMALL_N} single requests (curl, keep-alive): ${per_file} ms -> $(ratio "$per_file" "$tar_ms") faster"

echo "exporter RSS idle at start: ${idle_rss} MiB; after the runs above: $(rss "$epid") MiB"
cp=()
for i in $(seq 1 32); do "${C[@]}" -o /dev/null --limit-rate 20M "$E/big.bin" & cp+=("$!"); done
sleep 3
echo "exporter RSS under 32 concurrent downloads: $(rss "$epid") MiB"
for p in "${cp[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${cp[@]}"; do wait "$p" 2>/dev/null || true; done
fi

# Per-request rows: d8client against every server, interleaved, ROUNDS times; medians.
log "per-request rows: $ROUNDS rounds"
declare -A res
auth_args=(-token-file "$work/token")
for r in $(seq 1 "$ROUNDS"); do
  res[small_e_$r]=$(measure "$epid" -- -mode files -conns 1 -url "$E/small/" -names "$work/small-names.txt")
  res[small_n_$r]=$(measure $(npids) -- -mode files -conns 1 -url "$N/small/" -names "$work/small-names.txt")
  res[small_g_$r]=$(measure "$gpid" -- -mode files -conns 1 -url "$G/small/" -names "$work/small-names.txt")
  res[tree_e_$r]=$(measure "$epid" -- -mode tree -conns 4 -url "$E/tree/")
  res[tree_n_$r]=$(measure $(npids) -- -mode tree -conns 4 -format nginx -url "$N/tree/")
  res[tree_g_$r]=$(measure "$gpid" -- -mode tree -conns 4 -url "$GD/tree/")
  if [ "$AUTH" = 1 ]; then
    res[small_a_$r]=$(measure "$apid" -- -mode files -conns 1 -url "$A/small/" -names "$work/small-names.txt" "${auth_args[@]}")
    res[tree_a_$r]=$(measure "$apid" -- -mode tree -conns 4 -url "$A/tree/" "${auth_args[@]}")
  fi
done
# med <kind> <server> <field 1..3>: the median over the rounds.
med() {
  local r vals=()
  for r in $(seq 1 "$ROUNDS"); do vals+=("$(cut -d' ' -f"$3" <<<"${res[${1}_${2}_$r]:--}")"); done
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x != '-']; print(f'{statistics.median(v):.0f}' if v else '-')" "${vals[@]}"
}
best() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:] if x != '-']; print(max(v) if v else '-')" "$@"; }
least() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:] if x != '-']; print(min(v) if v else '-')" "$@"; }
row5() { printf '%-46s %9s %9s %9s %9s %11s %11s\n' "$@"; }
echo
echo "per-request rows (median of $ROUNDS rounds; client = bench/d8client on CPU 1, one process per run):"
row5 "figure" "exporter" "exp+auth" "nginx" "go" "auth/best" "noauth/best"
for kind in small tree; do
  if [ "$kind" = small ]; then
    title="${SMALL_N} small files one by one (1 conn), req/s"
  else
    title="d8-shaped tree: ${tree_files} files/${tree_dirs} dirs (4 conns), files/s"
  fi
  e=$(med "$kind" e 1); a=$( [ "$AUTH" = 1 ] && med "$kind" a 1 || echo -); n=$(med "$kind" n 1); g=$(med "$kind" g 1)
  b=$(best "$n" "$g")
  row5 "$title" "$e" "$a" "$n" "$g" "$(ratio "$a" "$b")" "$(ratio "$e" "$b")"
  e=$(med "$kind" e 2); a=$( [ "$AUTH" = 1 ] && med "$kind" a 2 || echo -); n=$(med "$kind" n 2); g=$(med "$kind" g 2)
  b=$(least "$n" "$g")
  row5 "  server CPU, us per request (lower better)" "$e" "$a" "$n" "$g" "$(ratio "$b" "$a")" "$(ratio "$b" "$e")"
  row5 "  client CPU, us per request" "$(med "$kind" e 3)" "$( [ "$AUTH" = 1 ] && med "$kind" a 3 || echo -)" "$(med "$kind" n 3)" "$(med "$kind" g 3)" "" ""
done
echo "  (tree: ${tree_bytes} bytes; nginx lists with its JSON autoindex, go with a d8-format lister; each"
echo "   round's figures are in the same order for every server: exporter, nginx, go, exporter+auth)"
for r in $(seq 1 "$ROUNDS"); do
  printf '  round %s small e/n/g/a: %s | %s | %s | %s   tree: %s | %s | %s | %s\n' "$r" \
    "${res[small_e_$r]}" "${res[small_n_$r]}" "${res[small_g_$r]}" "${res[small_a_$r]:--}" \
    "${res[tree_e_$r]}" "${res[tree_n_$r]}" "${res[tree_g_$r]}" "${res[tree_a_$r]:--}"
done

if [ "$AUTH" = 1 ]; then
  # TokenReview calls as the API server counts them (apiserver_request_total), so the figure does not
  # depend on the exporter's own bookkeeping.
  reviews() {
    "${k[@]}" get --raw /metrics | awk '/^apiserver_request_total\{/ && /resource="tokenreviews"/ && /verb="POST"/ {s+=$NF} END {printf "%d\n", s}'
  }
  echo bad-token-for-the-bench > "$work/bad-token"
  r0=$(reviews)
  same=$("${D[@]}" -mode flood -n "$BAD_N" -conns 16 -url "$A/small/f00000" -token-file "$work/bad-token" || true)
  r1=$(reviews)
  rand=$("${D[@]}" -mode flood -n "$BAD_N" -conns 16 -url "$A/small/f00000" || true)
  r2=$(reviews)
  per1000() { python3 -c "print(f'{($2-$1)*1000/$3:.0f}')" "$@"; }
  echo
  echo "unauthenticated traffic (16 connections, as fast as they go), TokenReview calls per 1000 bad requests:"
  printf '  %-40s %6s   (%s)\n' "the same bad token ${BAD_N}x" "$(per1000 "$r0" "$r1" "$BAD_N")" "$(grep -o 'seconds=[^ ]*\|codes=.*' <<<"$same" | tr '\n' ' ')"
  printf '  %-40s %6s   (%s)\n' "${BAD_N} different random tokens" "$(per1000 "$r1" "$r2" "$BAD_N")" "$(grep -o 'seconds=[^ ]*\|codes=.*' <<<"$rand" | tr '\n' ' ')"
  echo "exporter (auth) RSS after the runs: $(rss "$apid") MiB"
fi
