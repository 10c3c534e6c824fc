#!/usr/bin/env bash
# Make a Vulkan device available without a GPU: Mesa's lavapipe (Vulkan on the CPU, Debian's
# mesa-vulkan-drivers), for the wgpu backend's tests. Installs it when missing (needs root and
# the Debian package registry) and prints the lavapipe ICD file, for VK_ICD_FILENAMES.
set -euo pipefail
find_icd() { ls /usr/share/vulkan/icd.d/lvp_icd.*.json 2>/dev/null | head -n 1; }
if [ -z "$(find_icd)" ]; then
  [ "$(id -u)" -eq 0 ] || exec sudo -E "$0" "$@"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >&2
fi
icd="$(find_icd)"
[ -n "$icd" ] || { echo "lavapipe's ICD file is missing after installing mesa-vulkan-drivers" >&2; exit 1; }
echo "$icd"
