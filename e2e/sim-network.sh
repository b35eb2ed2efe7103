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
# The simulated cluster network: routes 198.18.0.0/15 (reserved for network benchmarks, RFC 2544,
# never routed on the internet) to `lo`, so every address in it is local to this machine. The local
# control plane needs addresses that are local yet not loopback: the API server refuses loopback
# addresses in EndpointSlices, and routing by EndpointSlices is what kube-proxy (and the simulated
# node's stand-in, crates/kube-sim) does. The API server listens on 198.18.0.1; simulated pods get
# 198.18.<n>.<m>. Idempotent; needs root (CAP_NET_ADMIN) the first time after boot.
set -euo pipefail
net=198.18.0.0/15
if [ -n "$(ip -4 route show table local "$net" 2>/dev/null)" ]; then exit 0; fi
sudo_=""; [ "$(id -u)" = 0 ] || sudo_=sudo
$sudo_ ip -4 route add local "$net" dev lo
echo "sim-network: $net routed to lo" >&2
