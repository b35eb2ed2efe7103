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
# Lays out the root filesystem of one of the module's images from the static binaries
# (hack/static-build.sh) into ROOT. The werf build (.werf/rust-build.yaml) and `make images`
# (hack/images.sh) both use it, so an image has the same files whichever way it is built.
#   usage: hack/image-rootfs.sh IMAGE BIN_DIR ROOT        IMAGE: controller | exporter | hooks
# The pods run with a read-only root filesystem, where a volume can only be mounted on a directory
# that exists in the image: images/<IMAGE>/mount-points.yaml lists the ones the chart's Deployments
# mount (created owned by 64535, the user those pods run as). The exporter's pods are created by
# the controller, not by the chart, so its mount points are named here (images/exporter/README.md).
set -euo pipefail

image=${1:?usage: image-rootfs.sh IMAGE BIN_DIR ROOT}
bin=${2:?usage: image-rootfs.sh IMAGE BIN_DIR ROOT}
root=${3:?usage: image-rootfs.sh IMAGE BIN_DIR ROOT}
here=$(cd "$(dirname "$0")/.." && pwd)
user=64535

# The `dirs:` list of a mount-points.yaml (one absolute path per `- ` item).
mount_point_dirs() {
  [ -f "$1" ] || return 0
  awk '/^[a-z]+:/ { in_dirs = ($1 == "dirs:") } in_dirs && /^[[:space:]]*- / { print $2 }' "$1"
}

mkdir -p "$root"
case "$image" in
  controller)
    install -D -m 0755 "$bin/svdm-controller" "$root/svdm-controller"
    install -D -m 0755 "$bin/svdm-webhook" "$root/svdm-webhook"
    ;;
  exporter)
    install -D -m 0755 "$bin/svdm-exporter" "$root/svdm-exporter"
    # Filesystem volumes are mounted read-only on /data, the serving certificate on /etc/svdm/tls.
    # uid 0 reads them (with CAP_DAC_READ_SEARCH only), so root owns these.
    install -d -m 0755 "$root/data" "$root/etc/svdm/tls"
    ;;
  hooks)
    # The path the bundle gives it (hooks/svdm-hooks), so the image runs it where addon-operator does.
    install -D -m 0755 "$bin/svdm-hooks" "$root/hooks/svdm-hooks"
    ;;
  *)
    echo "image-rootfs: unknown image $image" >&2
    exit 2
    ;;
esac
while read -r dir; do
  [ -n "$dir" ] || continue
  install -d -m 0755 -o "$user" -g "$user" "$root$dir"
done < <(mount_point_dirs "$here/images/$image/mount-points.yaml")
