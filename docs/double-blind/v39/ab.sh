#!/usr/bin/env bash
# Protocol 39 against its branch point: issue 15's semi-honest Laplacian session, runs of three sessions
# alternating A B B A (A = base) PAIRS/2 times, then B A A B, as in docs/double-blind/v39/sessions.csv.
# From the repository root:  BASE=0a08cc8 PAIRS=6 nice bash docs/double-blind/v39/ab.sh OUTDIR
# Writes OUTDIR/sessions.csv (run, tree, session, wall, CPUs, bytes, rounds, 1-minute load at the run's
# start and end) and every run's bench.krr_cost JSON/CSV under OUTDIR/runs/.
set -euo pipefail
OUT=${1:-/tmp/v39-ab}
BASE=${BASE:-0a08cc8}
PAIRS=${PAIRS:-6}
PY=${PY:-/work/main/.venv/bin/python}
HERE=$(pwd)
BASEDIR=$(mktemp -d)
git archive "$BASE" | tar -x -C "$BASEDIR"
mkdir -p "$OUT/runs"
echo "run,tree,session,wall_s,server_cpu_s,client_cpu_s,total_bytes,rounds,load1_start,load1_end,start_utc" > "$OUT/sessions.csv"
order=""
half=$(( (PAIRS + 1) / 2 ))
for i in $(seq 1 "$PAIRS"); do
  j=$(( i <= half ? i : i - half ))  # the second half mirrors the first: B A A B ...
  if (( (j % 2 == 1) == (i <= half) )); then order+=" base v39"; else order+=" v39 base"; fi
done
run=0
for tree in $order; do
  run=$((run + 1))
  dir=$([ "$tree" = base ] && echo "$BASEDIR" || echo "$HERE")
  l0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date -u +%T)
  res="$OUT/runs/$run-$tree"
  (cd "$dir" && "$PY" -m bench.krr_cost --kernel laplacian --security semi-honest --repeat 3 --sizes 16384 \
      --features 351 --out "$res" > /dev/null 2>&1)
  rm -f "$res"/*.png
  l1=$(cut -d' ' -f1 /proc/loadavg)
  "$PY" - "$res" "$run" "$tree" "$l0" "$l1" "$t0" >> "$OUT/sessions.csv" <<'PYEOF'
import json, sys
res, run, tree, l0, l1, t0 = sys.argv[1:]
for j, r in enumerate(json.load(open(res + "/krr_cost.json"))):
    print(f"{run},{tree},{j + 1},{r['wall_s']:.3f},{r['server_cpu_s']:.3f},{r['client_cpu_s']:.3f},"
          f"{round(r['total_MB'] * 1e6)},{r['rounds']},{l0},{l1},{t0}")
PYEOF
  tail -3 "$OUT/sessions.csv"
done
rm -rf "$BASEDIR"
