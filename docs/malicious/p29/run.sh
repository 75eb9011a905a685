#!/bin/bash
export PATH=/work/main/.venv/bin:$PATH
cd "$(dirname "$0")"
for r in 1 2; do
  for N in 1024 4096 16384; do
    for side in base new; do
      dir=/work/wt-gmal; [ $side = base ] && dir=/tmp/gmal-base
      echo "=== round $r N=$N $side load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
      (cd $dir && nice python -m bench.malicious_cost --skip-compact --skip-ot --exact-sizes $N --malicious-cross he --out docs/malicious/p29/exact/$side-$N-r$r 2>&1 | grep -v "^\s*$")
    done
  done
done
for side in base new; do
  dir=/work/wt-gmal; [ $side = base ] && dir=/tmp/gmal-base
  echo "=== laplacian 16384 $side load $(cut -d' ' -f1-3 /proc/loadavg) $(date +%T)"
  (cd $dir && nice python -m bench.malicious_cost --skip-compact --skip-ot --laplacian-sizes 16384 --out docs/malicious/p29/exact/$side-lap-16384 2>&1 | grep -v "^\s*$")
done
echo DONE
