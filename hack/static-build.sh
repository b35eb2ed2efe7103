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
# Builds the four binaries the module's images carry, statically linked, and copies them into OUT_DIR:
#   svdm-controller, svdm-webhook (image controller), svdm-exporter (image exporter),
#   svdm-hooks (image hooks, and hooks/svdm-hooks in the bundle).
# Static, because the images have no C library or OpenSSL of their own (an empty base), and because
# addon-operator runs the hooks binary chrooted with nothing else in the chroot: glibc is linked in
# with `+crt-static` (Debian's libc6-dev ships libc.a) and OpenSSL from libssl.a (libssl-dev) by
# OPENSSL_STATIC. Both the werf build (.werf/rust-build.yaml) and `make images` (hack/images.sh) run
# this, so the two build the same thing. The flags are set for the target only: with an explicit
# --target cargo keeps build scripts and proc macros dynamic, and this target directory apart from
# the debug builds the tests use.
#   usage: hack/static-build.sh OUT_DIR      (CARGO_TARGET_DIR as usual; release profile)
set -euo pipefail

out=${1:?usage: static-build.sh OUT_DIR}
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
export OPENSSL_STATIC=1
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
bins=(svdm-controller svdm-webhook svdm-exporter svdm-hooks)
pkgs=()
for b in "${bins[@]}"; do pkgs+=(-p "$b"); done
cargo build --release --locked --target "$target" "${pkgs[@]}"
dir="${CARGO_TARGET_DIR:-target}/$target/release"
mkdir -p "$out"
for b in "${bins[@]}"; do
  # A binary that still asks for a program interpreter (ld-linux) is dynamic: it would not start in
  # the images, so stop here rather than ship it.
  if LC_ALL=C readelf -l "$dir/$b" | grep -q 'program interpreter'; then
    echo "static-build: $b is dynamically linked" >&2
    exit 1
  fi
  # Stripped of the symbol table, as Deckhouse's Go images are (-ldflags "-s -w"): a fifth smaller;
  # panic messages keep their text, backtraces lose function names.
  install -s -m 0755 "$dir/$b" "$out/$b"
done
