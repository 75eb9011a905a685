#!/bin/bash
# The runs behind docs/malicious.md "Protocol 35, CPU": BASE = a checkout of main at 0c000b2
# (git archive 0c000b2 | tar -x -C BASE), BRANCH = this checkout; alternating, one at a time.
# usage: docs/malicious/p35-cpu/pairs.sh BASE BRANCH OUT
BASE=$1; BRANCH=$2; O=$3
for i in 1 2 3; do for v in base wt; do
  d=$([ $v = base ] && echo $BASE || echo $BRANCH)
  (cd $d && echo "== steps $v $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" && nice python -m bench.malicious_steps --sizes 16384 --out $O/steps/$v$i 2>&1 | grep -E "N=16384|2c")
done; done
for i in 1 2 3; do for v in base wt; do
  d=$([ $v = base ] && echo $BASE || echo $BRANCH)
  (cd $d && echo "== tcp $v $i $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" && nice python -m bench.krr_cost --security semi-honest,client-malicious --repeat 1 --sizes 16384 --features 351 --out $O/tcp/$v$i 2>&1 | tail -8)
done; done
for i in 1 2 3 4 5; do for v in base wt; do
  d=$([ $v = base ] && echo $BASE || echo $BRANCH)
  (cd $d && echo "$v $i $(PYTHONPATH=$d nice python $BRANCH/docs/malicious/p35-cpu/checked_matvec.py 2>/dev/null | tail -1)")
done; done
