#!/usr/bin/env bash
# Stop 11 (Gaussian CPU): the two-process sessions of issue 12's figure, base and this tree alternating
# A B B A (A = base) PAIRS/2 times, then B A A B; each run one semi-honest and one client-malicious
# series of REPEAT sessions (bench.krr_cost). From the repository root:
#   BASE=a4f2fba PAIRS=2 nice bash docs/malicious/stop11-gcpu/ab.sh OUTDIR
# Writes OUTDIR/sessions.csv (run, tree, security, session, wall, CPUs, server prepare, bytes, rounds,
# 1-minute load at the run's start and end) and every run's bench.krr_cost JSON/CSV under OUTDIR/runs/.
set -euo pipefail
OUT=${1:-/tmp/stop11-ab}
BASE=${BASE:-a4f2fba}
PAIRS=${PAIRS:-2}
REPEAT=${REPEAT:-3}
PY=${PY:-/work/main/.venv/bin/python}
HERE=$(pwd)
BASEDIR=$(mktemp -d)
git archive "$BASE" | tar -x -C "$BASEDIR"
mkdir -p "$OUT/runs"
echo "run,tree,security,session,wall_s,server_cpu_s,client_cpu_s,server_prepare_s,total_bytes,rounds,load1_start,load1_end,start_utc" > "$OUT/sessions.csv"
order=""
half=$(( (PAIRS + 1) / 2 ))
for i in $(seq 1 "$PAIRS"); do
  j=$(( i <= half ? i : i - half ))  # the second half mirrors the first: B A A B ...
  if (( (j % 2 == 1) == (i <= half) )); then order+=" base branch"; else order+=" branch base"; fi
done
run=0
for tree in $order; do
  run=$((run + 1))
  dir=$([ "$tree" = base ] && echo "$BASEDIR" || echo "$HERE")
  l0=$(cut -d' ' -f1 /proc/loadavg); t0=$(date -u +%T)
  res="$OUT/runs/$run-$tree"
  (cd "$dir" && "$PY" -m bench.krr_cost --security semi-honest,client-malicious --repeat "$REPEAT" --sizes 16384 \
      --features 351 --out "$res" > /dev/null 2>&1)
  rm -f "$res"/*.png
  l1=$(cut -d' ' -f1 /proc/loadavg)
  "$PY" - "$res" "$run" "$tree" "$l0" "$l1" "$t0" >> "$OUT/sessions.csv" <<'PYEOF'
import json, sys
res, run, tree, l0, l1, t0 = sys.argv[1:]
seen = {}
for r in json.load(open(res + "/krr_cost.json")):
    sec = r.get("security", "?")
    seen[sec] = seen.get(sec, 0) + 1
    print(f"{run},{tree},{sec},{seen[sec]},{r['wall_s']:.3f},{r['server_cpu_s']:.3f},{r['client_cpu_s']:.3f},"
          f"{r['server_prepare_s']:.3f},{round(r['total_MB'] * 1e6)},{r['rounds']},{l0},{l1},{t0}")
PYEOF
  tail -6 "$OUT/sessions.csv"
done
rm -rf "$BASEDIR"
