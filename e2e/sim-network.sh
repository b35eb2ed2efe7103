#!/usr/bin/env bash
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
