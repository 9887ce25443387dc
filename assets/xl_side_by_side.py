"""
The side-by-side tables of RESULTS.md: each setting of the CPU study under TEM-t (assets/study_runs.csv)
and under the official release's model (assets/xl_study_logs/*.metrics.json), mean ± SE over seeds.

    python assets/xl_side_by_side.py            # from the repository's top
"""
import csv, glob, json, math, os, sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))

def f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def ms(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = sum(vals) / len(vals)
    fmt = (lambda x: f"{x:,.0f}") if m > 1 else (lambda x: f"{x:.3f}")
    if len(vals) < 2:
        return fmt(m)
    se = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
    return f"{fmt(m)} ± {fmt(se)}" + ("" if len(vals) == 3 else f" ({len(vals)})")

def label(act, alpha):
    return f"NMDA α = {float(alpha):g}" if act == "nmda" else act.upper() if act in ("gelu", "relu") else act

tem = defaultdict(list)
for r in csv.DictReader(open(os.path.join(HERE, "study_runs.csv"))):
    tem[(int(float(r["num_maps"])), label(r["act"], r["alpha"]))].append(r)
xl = defaultdict(list)
for p in sorted(glob.glob(os.path.join(HERE, "xl_study_logs", "N*.metrics.json"))):
    m = json.load(open(p))
    xl[(int(m["num_maps"]), label(m["act"], m["alpha"]))].append(m)
order = ["NMDA α = 0", "NMDA α = 0.1", "NMDA α = 1", "NMDA α = 10", "GELU", "RELU"]
keys = [("wm_error", "familiar WM"), ("rm_error", "familiar RM"), ("official_rm_error", "RM, official split"),
        ("novel_wm_error", "novel WM"), ("novel_rm_error", "novel RM"), ("ideal_rm_error", "ideal RM"),
        ("ffn_place_cell_fraction", "FFN place cells"), ("ffn_token_cell_fraction", "FFN token cells"),
        ("att_place_cell_fraction", "att. place cells"), ("steps_to_rm_0.5", "steps to RM ≤ 0.5")]
for N in (4, 8):
    print(f"\n| N = {N} | model | " + " | ".join(k[1] for k in keys) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in keys) + " |")
    for name in order:
        for model, runs in (("TEM-t", tem.get((N, name), [])), ("xl", xl.get((N, name), []))):
            if not runs:
                continue
            cells = [ms([f(r.get(k)) for r in runs]) for k, _ in keys]
            got = sum(f(r.get("steps_to_rm_0.5")) is not None for r in runs)
            if 0 < got < len(runs):
                cells[-1] = cells[-1].split(" (")[0] + f" ({got} of {len(runs)} reached)"
            print(f"| {name} | {model} ({len(runs)}) | " + " | ".join(cells) + " |")
