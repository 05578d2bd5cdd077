#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those that are missing, so a warm
# machine starts fast. Needs root (or sudo) on Debian/Ubuntu.
set -euo pipefail

# swaks (with Net::SSLeay for its TLS) and Node.js (Nodemailer) are the independent SMTP
# clients of the acceptance tests; Node.js comes from Debian only when no node/npm is installed.
packages=(postgresql swaks libnet-ssleay-perl)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# `system-deps.sh bench` adds the load generators and the peers used by bench/: wrk for HTTP,
# Postfix for SMTP (its smtp-source, and its smtpd as the comparison).
[ "${1:-}" = "bench" ] && packages+=(wrk postfix)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
installing_postfix=false
for pkg in "${missing[@]}"; do [ "$pkg" = postfix ] && installing_postfix=true; done
if $installing_postfix; then
  # Only the programs are wanted: no system mail configuration, no mail server on port 25.
  echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
fi
$sudo apt-get -o DPkg::Lock::Timeout=120 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=120 install -y -qq --no-install-recommends "${missing[@]}"
if $installing_postfix; then
  # The package may have started the system instance; the benchmark runs its own.
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now postfix >/dev/null 2>&1 || true
  fi
  if $sudo postfix status >/dev/null 2>&1; then
    $sudo postfix stop >/dev/null 2>&1 || true
  fi
fi
