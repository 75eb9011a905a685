#!/bin/bash
# Before (main at c7b626c, protocol 16, unpacked with `git archive` into /tmp/main_snap) and after
# (this branch, protocol 19), N = 16,384, d = 351, alternating, three runs each; the rows of
# alternating.csv / alternating.json come from the krr_cost.json each run writes.
for i in 1 2 3; do
  (cd /tmp/main_snap && PYTHONPATH=/tmp/main_snap python -m bench.krr_cost --sizes 16384 --features 351 --out /tmp/alt/before$i)
  python -m bench.krr_cost --inner-product he --sizes 16384 --features 351 --out /tmp/alt/after$i
done
