#!/bin/bash
# usage: pairs.sh BASE BRANCH OUT ROUNDS -- alternating base / branch two-process krr_cost runs
BASE=$1; BR=$2; OUT=$3; R=$4
export PATH=/work/main/.venv/bin:$PATH
for i in $(seq ${START:-1} $R); do
  for who in base branch; do
    dir=$BASE; [ $who = branch ] && dir=$BR
    o=$OUT/round$i-$who
    mkdir -p $o
    l0=$(cut -d' ' -f1 /proc/loadavg)
    (cd $dir && PYTHONPATH=$dir nice python -m bench.krr_cost --kernel laplacian --security semi-honest,client-malicious --repeat 1 --sizes 16384 --features 351 --out $o > $o/console.log 2>&1)
    l1=$(cut -d' ' -f1 /proc/loadavg)
    python3 -c "
import json,sys
for r in json.load(open('$o/krr_cost.json')):
    print('round $i $who', r['security'], 'load $l0/$l1', 'wall %.2f s CPU client %.2f server %.2f s' % (r['wall_s'], r['client_cpu_s'], r['server_cpu_s']), '%d B' % round(r['total_MB']*1e6), r['rounds'], 'rounds', 'err %.2e' % r['max_abs_error'])
" | tee -a $OUT/summary.txt
  done
done
