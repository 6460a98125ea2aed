#!/bin/bash
# Interleaved A/B of two `mobilenet` binaries (or wrappers adding flags):
# runs `A bench ARGS --json` and `B bench ARGS --json` in alternating order
# ROUNDS times and prints both medians and the median of the per-round
# ratios B/A, the figure to trust on a noisy shared machine.
#
#   bash bench/ab.sh /tmp/mobilenet-old target/release/mobilenet 10 \
#       --alpha 1.0 --resolution 224 --threads 1 --runs 200
set -euo pipefail
if (( $# < 3 )); then
  echo "usage: bench/ab.sh BINARY_A BINARY_B ROUNDS [bench arguments...]" >&2
  exit 2
fi
A=$1; B=$2; R=$3; shift 3
median_ms() { "$1" bench "${@:2}" --json | grep -o '"median_ms":[0-9.]*' | cut -d: -f2; }
for i in $(seq "$R"); do
  if (( i % 2 )); then
    a=$(median_ms "$A" "$@"); b=$(median_ms "$B" "$@")
  else
    b=$(median_ms "$B" "$@"); a=$(median_ms "$A" "$@")
  fi
  echo "$a $b"
done | python3 -c "
import sys, statistics as s
r = [tuple(map(float, l.split())) for l in sys.stdin]
a = [x for x, _ in r]; b = [y for _, y in r]
print(f'A median {s.median(a):.3f} ms (min {min(a):.3f}) | B median {s.median(b):.3f} ms '
      f'(min {min(b):.3f}) | median B/A {s.median([y / x for x, y in r]):.3f} (n={len(r)})')"
