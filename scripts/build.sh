#!/usr/bin/env bash
# Installs missing dependencies, then configures (once) and builds moeflow in build/ (Release).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# Warnings are errors here: these scripts target Debian 12's GCC 12, on which the tree builds
# without one, so CI (.ci/run) keeps it that way. A plain `cmake -S . -B build` leaves it off.
[ -f build/CMakeCache.txt ] || cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DMOEFLOW_WERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
