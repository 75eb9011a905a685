#!/usr/bin/env bash
# The L1 step's user and system CPU per party with numpy's huge-page hint on (NUMPY_MADVISE_HUGEPAGE=1,
# which protocols.mpc.pages leaves to win) and off (this branch's default), alternating. Usage:
#   PAIRS=2 nice bash docs/double-blind/stop10-lapsh/hint_ab.sh docs/double-blind/stop10-lapsh/hint
set -euo pipefail
OUT=${1:-docs/double-blind/stop10-lapsh/hint}
PAIRS=${PAIRS:-2}
PY=${PY:-/work/main/.venv/bin/python}
mkdir -p "$OUT"
for i in $(seq 1 "$PAIRS"); do
  if (( i % 2 )); then order="on off"; else order="off on"; fi
  for hint in $order; do
    echo "pair $i hint $hint load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/log.txt"
    if [ "$hint" = on ]; then env=NUMPY_MADVISE_HUGEPAGE=1; else env=UNUSED=0; fi
    env $env "$PY" -m bench.laplacian_profile --sizes 16384 --features 351 --out "$OUT/$hint-$i" \
      | grep -E "l1_(total|user|system)" | tee -a "$OUT/log.txt"
  done
done
