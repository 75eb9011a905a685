#!/usr/bin/env bash
# Alternating A/B of the Laplacian session (issue 15's command, two processes), this tree against a
# base commit unpacked with `git archive` (same venv).  From the repository root:
#   BASE=0a08cc8 PAIRS=3 nice bash docs/double-blind/v38/ab.sh docs/double-blind/v38/sh
# SECURITY: semi-honest (default) or client-malicious.  Each run is one bench.krr_cost call with
# --repeat 3; ab.csv gets one line per session (run, tree, rep, wall_s, server_cpu_s, client_cpu_s,
# total_bytes, rounds, load1 before the call).
set -euo pipefail
OUT=${1:-docs/double-blind/v38/sh}
BASE=${BASE:-0a08cc8}
PAIRS=${PAIRS:-3}
SECURITY=${SECURITY:-semi-honest}
PY=${PY:-/work/main/.venv/bin/python}
HERE=$(pwd)
BASEDIR=$(mktemp -d)
git archive "$BASE" | tar -x -C "$BASEDIR"
mkdir -p "$OUT/runs"
echo "run,tree,rep,wall_s,server_cpu_s,client_cpu_s,total_bytes,rounds,load1" > "$OUT/ab.csv"
for i in $(seq 1 "$PAIRS"); do
  if (( i % 2 )); then order="base ours"; else order="ours base"; fi  # alternate who goes first
  for tree in $order; do
    dir=$([ "$tree" = base ] && echo "$BASEDIR" || echo "$HERE")
    load=$(cut -d' ' -f1 /proc/loadavg)
    res="$(realpath -m "$OUT")/runs/$tree-$i"
    (cd "$dir" && "$PY" -m bench.krr_cost --kernel laplacian --security "$SECURITY" --repeat 3 --sizes 16384 \
        --features 351 --out "$res" > /dev/null 2>&1)
    "$PY" - "$res/krr_cost.json" "$i" "$tree" "$load" >> "$OUT/ab.csv" <<'PYEOF'
import json, sys
path, i, tree, load = sys.argv[1:]
for rep, r in enumerate(json.load(open(path))):
    print(f"{i},{tree},{rep},{r['wall_s']:.3f},{r['server_cpu_s']:.3f},{r['client_cpu_s']:.3f},"
          f"{round(r['total_MB'] * 1e6)},{r['rounds']},{load}")
PYEOF
    rm -f "$res/krr_cost.png"
    tail -3 "$OUT/ab.csv"
  done
done
rm -rf "$BASEDIR"
