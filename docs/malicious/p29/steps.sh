#!/bin/bash
export PATH=/work/main/.venv/bin:$PATH
for r in 1 2; do
 for N in 1024 16384; do
  for side in base new; do
    dir=/work/wt-gmal; [ $side = base ] && dir=/tmp/gmal-base
    echo "=== steps round $r N=$N $side load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
    (cd $dir && nice python -m bench.malicious_steps --sizes $N --out /tmp/gmal-runs/steps-$side-$N-r$r 2>&1)
  done
 done
done
echo DONE
