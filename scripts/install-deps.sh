#!/usr/bin/env bash
# Installs the Debian 12 packages moeflow needs, only those that are missing (idempotent and
# fast when everything is there). Run as root (or with sudo available).
set -euo pipefail

packages=(
  g++ make cmake
  libboost-dev libboost-program-options-dev libeigen3-dev libhdf5-dev
  libgtest-dev libbenchmark-dev
  python3 python3-numpy python3-h5py python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "moeflow: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
