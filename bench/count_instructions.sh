#!/bin/bash
# Instructions per call of one function in a benchmark, counted by valgrind's callgrind: a figure
# that does not move with the machine's load or clock, for comparing two builds on a noisy machine
# (wall times still decide what is faster; a change can trade instructions for cache misses).
# Usage: bench/count_instructions.sh BENCH_BINARY FILTER [FUNCTION] [MIN_TIME]
#   FUNCTION  a C++ name as callgrind_annotate prints it, default moeflow::TwoLayerFlow::Drift
#   MIN_TIME  --benchmark_min_time of the run under valgrind (about 50x slower), default 0.3
# Prints: Ir per call, calls (its inclusive instructions over the calls from all its callers).
# Needs valgrind (Debian package valgrind, not a build dependency).
set -euo pipefail
[ $# -ge 2 ] || { sed -n '2,9p' "$0"; exit 2; }
bench=$1 filter=$2 function=${3:-moeflow::TwoLayerFlow::Drift} min_time=${4:-0.3}
command -v valgrind >/dev/null || { echo "valgrind not found: apt-get install valgrind" >&2; exit 1; }
out=$(mktemp); trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out" "$bench" --benchmark_filter="$filter" \
  --benchmark_min_time="$min_time" >/dev/null 2>&1
callgrind_annotate --inclusive=yes --tree=caller "$out" 2>/dev/null | FUNCTION="$function" /usr/bin/python3 -c '
import os, re, sys
name = re.escape(os.environ["FUNCTION"]) + r"\("
lines = sys.stdin.read().splitlines()
for i, line in enumerate(lines):
    if re.search(r"\*\s+\S*" + name, line):
        ir = int(line.split()[0].replace(",", ""))
        calls, j = 0, i - 1
        while j >= 0 and "<" in lines[j]:
            m = re.search(r"\(([\d,]+)x\)", lines[j])
            calls += int(m.group(1).replace(",", "")) if m else 0
            j -= 1
        if calls:
            print(f"{ir / calls:.0f} Ir per call, {calls} calls")
            sys.exit(0)
sys.exit("function not found in the profile: " + os.environ["FUNCTION"])
'
