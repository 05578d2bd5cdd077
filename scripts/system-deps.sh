#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those that are missing, so a warm
# machine starts fast. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

# `system-deps.sh bench` adds the load generator used by bench/.
packages=(postgresql)
[ "${1:-}" = "bench" ] && packages+=(wrk)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=120 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}"
