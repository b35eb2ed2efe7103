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
# `make images`: builds the module's three images as OCI images without a container engine, then
# checks them (hack/images-check.sh).
#   1. hack/static-build.sh: the four static binaries (release profile, cached in CARGO_TARGET_DIR);
#   2. hack/image-rootfs.sh: each image's root filesystem, the same files the werf build imports;
#   3. umoci (Debian package): one layer on an empty base per image, with the entrypoint and user
#      that images/<image>/werf.inc.yaml declares, into the OCI layout $SVDM_IMAGES_DIR/oci
#      (default .run/images/oci), tagged controller, exporter and hooks.
# skopeo reads them back in the check, or copies them anywhere: skopeo copy oci:.run/images/oci:controller ...
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
out=${SVDM_IMAGES_DIR:-$root/.run/images}
layout="$out/oci"
images=(controller exporter hooks)
started=$SECONDS

for tool in umoci skopeo; do
  command -v "$tool" >/dev/null || { echo "images: $tool is missing (e2e/setup.sh installs it)" >&2; exit 1; }
done

# The image config as werf would write it, taken from the werf.inc.yaml itself so the two cannot
# drift: entrypoint: ["/a", "b"] and user: "uid:gid" (absent for the exporter).
werf_config() {
  local file="images/$1/werf.inc.yaml" key=$2
  sed -n "s/^ *$key: *//p" "$file" | head -n 1
}

echo "==> static binaries" >&2
build_started=$SECONDS
hack/static-build.sh "$out/bin"
echo "images: binaries built in $((SECONDS - build_started)) s" >&2

rm -rf "$layout" "$out/work"
mkdir -p "$out/work"
umoci init --layout "$layout"
for image in "${images[@]}"; do
  echo "==> image $image" >&2
  work="$out/work/$image"
  umoci new --image "$layout:$image"
  umoci unpack --image "$layout:$image" "$work"
  hack/image-rootfs.sh "$image" "$out/bin" "$work/rootfs"
  umoci repack --image "$layout:$image" --history.created_by "hack/image-rootfs.sh $image" "$work"
  entrypoint=$(werf_config "$image" entrypoint)
  user=$(werf_config "$image" user | tr -d '"')
  args=(--os linux --architecture amd64 --author "Deckhouse Kubernetes Platform <contact@deckhouse.io>"
    --config.workingdir / --history.created_by "image config from images/$image/werf.inc.yaml")
  # ["/svdm-controller"] -> one --config.entrypoint per element.
  while read -r element; do
    [ -n "$element" ] && args+=(--config.entrypoint "$element")
  done < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])))' "$entrypoint")
  [ -z "$user" ] || args+=(--config.user "$user")
  umoci config --image "$layout:$image" "${args[@]}"
done
umoci gc --layout "$layout"
rm -rf "$out/work"
echo "images: built ${images[*]} into $layout in $((SECONDS - started)) s" >&2

hack/images-check.sh "$layout"
# What `make test` spends here: a cold run is dominated by the release build of the four binaries.
echo "images: built and checked in $((SECONDS - started)) s" >&2
