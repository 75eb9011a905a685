#!/bin/bash
export PATH=/work/main/.venv/bin:$PATH
cd /work/wt-gmal
for N in 1024 4096 16384; do
  echo "=== final N=$N load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
  nice python -m bench.malicious_cost --skip-compact --skip-ot --exact-sizes $N --malicious-cross he --out /tmp/gmal-runs/final-$N 2>&1 | grep -v "^\s*$"
done
echo "=== final laplacian load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
nice python -m bench.malicious_cost --skip-compact --skip-ot --laplacian-sizes 16384 --out /tmp/gmal-runs/final-lap-16384 2>&1 | grep -v "^\s*$"
echo DONE
