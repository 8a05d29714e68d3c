#!/usr/bin/env bash
# Everything from a fresh machine to a first result: install what is missing, build, and
# integrate the default model (single-index He3) into single_index_he3.h5, printing a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/moeflow flow models/single_index_he3.ini -o single_index_he3.h5
