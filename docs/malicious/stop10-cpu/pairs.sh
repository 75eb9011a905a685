#!/bin/bash
# Alternating before/after series for "Gaussian CPU, no wire change (stop 10)" (docs/malicious.md).
#   docs/malicious/stop10-cpu/pairs.sh BASE BRANCH OUT [ROUNDS]
# BASE, BRANCH: checkout roots (BASE: a `git archive` of main at the branch point). Each round runs,
# base then branch: the two-process session (bench.krr_cost), the in-process per-step figures
# (bench.malicious_steps) and the checked lattice cross term alone (p35-cpu/checked_matvec.py),
# one job at a time under nice; the 1-minute load is logged before each job.
set -u
BASE=$1; BRANCH=$2; OUT=$3; N=${4:-3}
SCRIPT=$(cd "$(dirname "$0")" && pwd)/../p35-cpu/checked_matvec.py
mkdir -p "$OUT"
for i in $(seq 1 "$N"); do
  for side in base branch; do
    if [ "$side" = base ]; then cd "$BASE"; else cd "$BRANCH"; fi
    d="$OUT/$side-$i"; mkdir -p "$d"
    echo "round $i $side load $(cut -d' ' -f1 /proc/loadavg) $(date -u +%H:%M:%S)" | tee -a "$OUT/console.log"
    nice python -m bench.krr_cost --security semi-honest,client-malicious --repeat 1 --sizes 16384 --features 351 \
      --out "$d/tcp" 2>&1 | grep -a "N= 16384" | sed 's/.*N= 16384//' | tee -a "$OUT/console.log"
    rm -f "$d/tcp/krr_cost.png"
    echo "  steps load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/console.log"
    nice python -m bench.malicious_steps --sizes 16384 --out "$d/steps" 2>&1 | grep -a "2c \|^N=\|10 G\|11 chain\|4 commit\|witness" | tee -a "$OUT/console.log"
    echo "  matvec load $(cut -d' ' -f1 /proc/loadavg)" | tee -a "$OUT/console.log"
    PYTHONPATH=. nice python "$SCRIPT" 2>/dev/null | tee -a "$OUT/console.log"
  done
done
