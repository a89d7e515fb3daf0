#!/usr/bin/env bash
# Installs the Debian packages Aquifer needs to build, run and test. Idempotent: only
# packages that are missing are installed, so `make up` and `make test` can both call it.
set -euo pipefail
PKGS=(build-essential pkg-config clang llvm libclang-rt-dev
      librocksdb-dev libfuse3-dev fuse3 liburing-dev libcurl4-openssl-dev libssl-dev libisal-dev
      python3 python3-dev python3-numpy python3-torch iperf3 nodejs npm curl gdb acl
      iproute2)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# nodejs may come from another repository under another name; accept any working node+npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
