"""Resumed-session summary of bench.local_model_bench --double-blind JSON files: per model, OT
path (exact, rounded, precorrected) and connection (new, kept alive), the median time to the prediction, the
median of per-session ratios to the semi-honest lattice paths' sessions of the same run (run
alternately: session i of each path back to back), bytes to the prediction and after the reply
(the pool refill), client CPU, the largest |error| against the plaintext prediction.

    python -m bench.double_blind_summary docs/compact-models/v30/double_blind_v30_*.json
"""
from __future__ import annotations

import json
import sys

import numpy as np


def summary(path: str) -> list[str]:
    d = json.load(open(path))
    la, lb = d["machine"]["load_average"][0], d["machine"]["load_average_end"][0]
    lines = [f"== {path.split('/')[-1]}: 1-minute load {la:.2f} -> {lb:.2f}, pinned={d['pinned_cpus']['client'] is not None}"]
    for model in ("rff", "local"):
        for ka in ("", "/keep-alive"):
            if f"{model}/lattice{ka}" not in d["models"]:
                continue
            lat = d["models"][f"{model}/lattice{ka}"]["sessions"]["resumed"]
            prep = d["models"][f"{model}/lattice-prepared{ka}"]["sessions"]["resumed"]
            for path_ in ("ot", "ot-rounded", "ot-pre", "ot-pre-rounded"):
                key = model if (path_ == "ot" and not ka) else f"{model}/{path_}{ka}"
                if key not in d["models"]:
                    continue
                s = d["models"][key]["sessions"]["resumed"]
                t = np.array([x["prediction_s"] for x in s])
                tl = np.array([x["prediction_s"] for x in lat])
                tp = np.array([x["prediction_s"] for x in prep])
                lines.append(
                    f"{model:5s} {path_:14s} {'kept' if ka else 'new '} to the prediction {1e3 * np.median(t):6.2f} ms "
                    f"(lattice {1e3 * np.median(tl):5.2f}, prepared {1e3 * np.median(tp):5.2f}; paired ratio "
                    f"{np.median(t / tl):.2f}x / {np.median(t / tp):.2f}x) | {s[0]['bytes']} B vs {lat[0]['bytes']} B = "
                    f"{s[0]['bytes'] / lat[0]['bytes']:.2f}x | after the reply {s[0]['after_reply_bytes']} B "
                    f"(per session {(s[0]['bytes'] + s[0]['after_reply_bytes']) / lat[0]['bytes']:.2f}x) | client CPU "
                    f"{1e3 * np.median([x['client_cpu_s'] for x in s]):.1f} vs {1e3 * np.median([x['client_cpu_s'] for x in lat]):.1f} ms"
                    f" | max |error| {max(x['abs_error'] for x in s):.2e}")
    return lines


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print("\n".join(summary(p)))
