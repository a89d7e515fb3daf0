#!/usr/bin/env bash
# Installs the S3 test server (s3rver, pinned by package-lock.json) into tests/s3/node_modules
# when it is missing or older than package-lock.json; otherwise does nothing, so that it
# runs offline once installed. `make test` calls it; tests/integration/s3helper.py too.
# --engine-strict=false: s3rver 5.0.0 asks for node >= 24 but runs on Debian 12's node 20.
set -euo pipefail
cd "$(dirname "$0")"
stamp=node_modules/.package-lock.json   # npm writes it on every install
if [[ -f $stamp && ! package-lock.json -nt $stamp ]]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "tests/s3/setup.sh: npm not found (scripts/deps.sh installs nodejs and npm)" >&2
  exit 1
fi
echo "tests/s3/setup.sh: installing the S3 test server (npm ci)"
npm ci --no-audit --no-fund --engine-strict=false --loglevel=error
