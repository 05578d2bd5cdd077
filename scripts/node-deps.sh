#!/usr/bin/env bash
# Install the Node.js packages of the acceptance tests (Nodemailer) into tests/support/node,
# only when node_modules is missing or package-lock.json changed since the last install.
# `npm ci` installs exactly what the lock file says and never rewrites it.
set -euo pipefail

dir="$(cd "$(dirname "$0")/.." && pwd)/tests/support/node"
stamp="$dir/node_modules/.posthorn-lock.sha256"
if ! command -v npm >/dev/null 2>&1; then
  echo "node-deps: npm is not installed (run scripts/system-deps.sh)" >&2
  exit 1
fi
wanted=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [ -d "$dir/node_modules" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
  exit 0
fi
echo "node-deps: installing the packages of $dir" >&2
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
echo "$wanted" > "$stamp"
