#!/usr/bin/env bash
# Alternating A/B of the semi-honest Laplacian session (issue 15's command), this tree against a base
# commit unpacked with `git archive` (same venv). Usage, from the repository root:
#   BASE=2aeb851 PAIRS=4 nice bash docs/double-blind/stop10-lapsh/ab.sh docs/double-blind/stop10-lapsh
# EXTRA: more bench.krr_cost arguments (e.g. EXTRA='--security client-malicious').
# Writes ab.csv (run, tree, wall_s, server_cpu_s, client_cpu_s, total_MB, rounds, load1) and the
# per-run bench.krr_cost outputs under OUT/runs/.
set -euo pipefail
OUT=${1:-docs/double-blind/stop10-lapsh}
BASE=${BASE:-2aeb851}
PAIRS=${PAIRS:-4}
PY=${PY:-/work/main/.venv/bin/python}
HERE=$(pwd)
BASEDIR=$(mktemp -d)
git archive "$BASE" | tar -x -C "$BASEDIR"
mkdir -p "$OUT/runs"
echo "run,tree,wall_s,server_cpu_s,client_cpu_s,total_MB,rounds,load1" > "$OUT/ab.csv"
for i in $(seq 1 "$PAIRS"); do
  # alternate which tree goes first in each pair
  if (( i % 2 )); then order="base ours"; else order="ours base"; fi
  for tree in $order; do
    dir=$([ "$tree" = base ] && echo "$BASEDIR" || echo "$HERE")
    load=$(cut -d' ' -f1 /proc/loadavg)
    res="$HERE/$OUT/runs/$tree-$i"
    (cd "$dir" && "$PY" -m bench.krr_cost --kernel laplacian --sigma 1000 --sizes 16384 --features 351 ${EXTRA:-} \
        --out "$res" > /dev/null 2>&1)
    "$PY" - "$res" "$i" "$tree" "$load" >> "$OUT/ab.csv" <<'PYEOF'
import json, sys, glob
res, i, tree, load = sys.argv[1:]
r = json.load(open(glob.glob(res + "/*.json")[0]))[0]
print(f"{i},{tree},{r['wall_s']:.3f},{r['server_cpu_s']:.3f},{r['client_cpu_s']:.3f},{r['total_MB']:.6f},{r['rounds']},{load}")
PYEOF
    tail -1 "$OUT/ab.csv"
  done
done
rm -rf "$BASEDIR"
