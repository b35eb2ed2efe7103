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
# Installs what `make demo` and `make test` need on a fresh Debian machine, and nothing when it is
# already there (so a warm machine never touches the network). Go modules and crates are fetched
# by the builds themselves; this covers the system side.
set -euo pipefail
need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in libssl-dev pkg-config openssl curl util-linux iproute2 python3 jq; do
  have_pkg "$pkg" || need+=("$pkg")
done
if [ "${SVDM_BENCH:-0}" = 1 ]; then have_cmd nginx || need+=(nginx-light); fi
# `make images` builds OCI images without a container engine: umoci builds and unpacks, skopeo reads.
if [ "${SVDM_IMAGES:-0}" = 1 ]; then
  for pkg in umoci skopeo; do have_pkg "$pkg" || need+=("$pkg"); done
fi
for c in go cargo; do
  have_cmd "$c" || { echo "setup: '$c' is missing; install the Go and Rust toolchains first" >&2; exit 1; }
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
  $sudo_ apt-get update -qq
  $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The module lint validates settings and rendered manifests with these (whichever python3 is first
# on PATH, so pip rather than Debian's python3-* packages).
if ! python3 -c 'import yaml, jsonschema' 2>/dev/null; then
  echo "setup: installing PyYAML and jsonschema for python3" >&2
  python3 -m pip install -q pyyaml jsonschema
fi
# Block volumes are loop devices; make sure the kernel side is there before anything relies on it.
if ! losetup -f >/dev/null 2>&1; then
  modprobe loop 2>/dev/null || true
  losetup -f >/dev/null || { echo "setup: no free loop device (need root and the loop module)" >&2; exit 1; }
fi
# The simulated cluster network (API server and pod addresses): see the script.
"$(dirname "$0")/sim-network.sh"
