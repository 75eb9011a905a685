#!/bin/bash
# The opt-in helper thread of the reply's block sums (SECUREML_HE_THREADS=2) against the default
# (one thread), alternating, two processes: docs/malicious/stop10-cpu/threads.sh OUT [ROUNDS]
set -u
OUT=$1; N=${2:-3}
mkdir -p "$OUT"
for i in $(seq 1 "$N"); do
  for t in 1 2; do
    echo -n "round $i threads=$t load $(cut -d' ' -f1 /proc/loadavg) " | tee -a "$OUT/console.log"
    SECUREML_HE_THREADS=$t nice python -m bench.krr_cost --security client-malicious --repeat 1 --sizes 16384 \
      --features 351 --out "$OUT/t$t-$i" 2>&1 | grep -ao 'wall .*rounds' | tr -s ' ' | tee -a "$OUT/console.log"
    rm -f "$OUT/t$t-$i/krr_cost.png"
  done
done
