#!/usr/bin/env bash
# Make sure the given binaries are on PATH (Debian package names = binary names here).
# As root on Debian/Ubuntu they are installed with apt-get; anywhere else this says
# exactly what to install, and the steps that need them skip with the same advice.
set -euo pipefail

missing=()
for binary in "$@"; do
    command -v "$binary" >/dev/null 2>&1 || missing+=("$binary")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
    exit 0
fi

echo "note: ${missing[*]} not found; the steps that need them will be skipped. To install:"
if command -v apt-get >/dev/null 2>&1; then
    echo "  sudo apt-get install -y ${missing[*]}"
elif command -v brew >/dev/null 2>&1; then
    echo "  brew install ${missing[*]}"
else
    echo "  install ${missing[*]} with your system's package manager"
fi
