#!/usr/bin/env bash
# Measure this CPU's FP32 FMA peak (GFLOP/s, 1 and 2 threads, AVX-512 and AVX2) with bench/fma_peak.rs.
#   bash bench/peak.sh [THREADS]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${FMA_PEAK_BIN:-/tmp/fma_peak}"
rustc -O -C target-cpu=native --edition 2021 "$HERE/fma_peak.rs" -o "$OUT"
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //') x$(nproc); $(date -Is)"
"$OUT" "$@"
