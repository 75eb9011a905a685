#!/bin/bash
export PATH=/work/main/.venv/bin:$PATH
for r in 4 5; do
  for side in base new; do
    dir=/work/wt-gmal; [ $side = base ] && dir=/tmp/gmal-base
    echo "=== steps2 round $r N=16384 $side load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
    (cd $dir && nice python -m bench.malicious_steps --sizes 16384 --out /tmp/gmal-runs/steps2-$side-16384-r$r > /dev/null 2>&1)
  done
done
echo DONE
