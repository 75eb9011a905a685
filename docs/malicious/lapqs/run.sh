#!/bin/sh
# the semi-honest chain's per-step profile (baseline) and the design's hot loops, alternating, one job at a time
set -e
OUT=${1:-docs/malicious/lapqs/run}
for r in 1 2; do
  echo "round $r profile load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
  nice python -m bench.laplacian_profile --sizes 16384 --features 351 --out $OUT/profile$r > $OUT/profile$r.log 2>&1
  echo "round $r proto load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
  nice python docs/malicious/lapqs/proto.py --skip clmul --out $OUT/proto$r.json > $OUT/proto$r.log 2>&1
done
echo "done load $(cut -d' ' -f1-3 /proc/loadavg) $(date -u +%H:%M:%S)"
