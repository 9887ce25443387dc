"""
The tables of RESULTS.md's sections on the xl study: each setting of the CPU study under TEM-t
(assets/study_runs.csv, assets/study_logs/) and under the official release's model
(assets/xl_study_logs/N*), mean ± SE over seeds; the ablation (abl_*), the storage runs (long_*),
which runs are at their plateau, and the study's seconds of training.

    python assets/xl_study.py            # from the repository's top

Every number is read from the runs' metrics.json (analyze.py) and log.csv (learning speed and
plateau: compare.learning_speed, as analyze.py computes them).
"""
import csv, glob, json, math, os, re, sys
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import compare, plots  # noqa: E402
LOGS = os.path.join(HERE, "xl_study_logs")


def f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def ms(vals, digits=3):
    """mean ± SE over the runs that have a value; (k) when not three runs."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = sum(vals) / len(vals)
    fmt = (lambda x: f"{x:,.0f}") if abs(m) > 1 else (lambda x: f"{x:.{digits}f}")
    if len(vals) < 2:
        return fmt(m)
    se = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1) / len(vals))
    return f"{fmt(m)} ± {fmt(se)}"


def label(act, alpha):
    return f"NMDA α = {float(alpha):g}" if act == "nmda" else act.upper() if act in ("gelu", "relu") else act


def with_log(m, log_path):
    """A run's metrics with learning speed and plateau taken from its log (the same for both models)."""
    return {**m, **compare.learning_speed(plots.read_log(log_path))}


def xl_runs(prefix):
    """{name: metrics} of the finished xl-study runs whose name starts with prefix."""
    out = {}
    for p in sorted(glob.glob(os.path.join(LOGS, prefix + "*.metrics.json"))):
        name = os.path.basename(p)[: -len(".metrics.json")]
        out[name] = with_log(json.load(open(p)), os.path.join(LOGS, name + ".csv"))
    return out


tem = defaultdict(list)
for r in csv.DictReader(open(os.path.join(HERE, "study_runs.csv"))):
    name = os.path.basename(r["run"].rstrip("/"))
    tem[(int(float(r["num_maps"])), label(r["act"], r["alpha"]))].append(
        with_log(r, os.path.join(HERE, "study_logs", name + ".csv")))
main = xl_runs("N")
xl = defaultdict(list)
for m in main.values():
    xl[(int(m["num_maps"]), label(m["act"], m["alpha"]))].append(m)
ORDER = ["NMDA α = 0", "NMDA α = 0.1", "NMDA α = 1", "NMDA α = 10", "GELU", "RELU"]


def reached(runs, key):
    """mean ± SE of a learning-speed figure over the runs that reached it, and how many did."""
    got = [f(r.get(key)) for r in runs if f(r.get(key)) is not None]
    return ms(got) + ("" if len(got) == len(runs) else f" ({len(got)} of {len(runs)})") if got else f"– (0 of {len(runs)})"


def plateaus(runs):  # with_log gave every run its plateau figures
    return sum(compare.at_plateau(r) is True for r in runs)


TABLES = {
    "errors": [("wm_error", "familiar WM"), ("rm_error", "familiar RM"), ("official_wm_error", "WM, official split"),
               ("official_rm_error", "RM, official split"), ("novel_wm_error", "novel WM"),
               ("novel_rm_error", "novel RM"), ("ideal_rm_error", "ideal RM")],
    "cells": [("ffn_place_cell_fraction", "FFN place cells"), ("ffn_token_cell_fraction", "FFN token cells"),
              ("att_place_cell_fraction", "att. place cells"), ("att_token_cell_fraction", "att. token cells"),
              ("silence_25pct_place_rm_error", "RM, 25 % most place-like FFN silenced"),
              ("silence_25pct_random_rm_error", "RM, 25 % others silenced")],
    "speed": [("steps_to_rm_0.5", "steps to RM ≤ 0.5"), ("seconds_to_rm_0.5", "s to RM ≤ 0.5"),
              ("steps_to_rm_0.1", "steps to RM ≤ 0.1"), ("seconds_to_rm_0.1", "s to RM ≤ 0.1"),
              ("rm_fall_last_quarter", "RM's fall, last quarter")],
}
for N in (4, 8):
    for table, keys in TABLES.items():
        print(f"\n| N = {N} | model | " + " | ".join(k[1] for k in keys) + (" | at plateau |" if table == "speed" else " |"))
        print("| --- | --- | " + " | ".join("---" for _ in keys) + (" | --- |" if table == "speed" else " |"))
        for name in ORDER:
            for model, runs in (("TEM-t", tem.get((N, name), [])), ("xl", xl.get((N, name), []))):
                if not runs:
                    continue
                if table == "speed":
                    cells = [reached(runs, k) if k.startswith(("steps", "seconds")) else ms([f(r.get(k)) for r in runs])
                             for k, _ in keys] + [f"{plateaus(runs)} of {len(runs)}"]
                else:
                    cells = [ms([f(r.get(k)) for r in runs]) for k, _ in keys]
                print(f"| {name} | {model} ({len(runs)}) | " + " | ".join(cells) + " |")

# The ablation at N = 8: TEM-t with one of the official's differences, then all four (the xl runs)
abl = defaultdict(list)
for name, m in xl_runs("abl_").items():
    which, setting = re.match(r"abl_([a-z]+)_N8_(.+)_s\d+$", name).groups()
    abl[(which, label(m["act"], m["alpha"]))].append(m)
columns = [("tem", "TEM-t"), ("rel", "`--rel_lags`"), ("obs", "`--obs_attend`"), ("seg", "`--segment 8 --mem_len 8`"),
           ("init", "`--official_init`"), ("xl", "xl, all four")]
# follow-ups of the segments (seed 0, α = 10): with one more difference, and xl without them
FOLLOW_UPS = {"segobs": "segments + `--obs_attend`", "seginit": "segments + `--official_init`", "segrel": "segments + `--rel_lags`",
              "xlnoseg": "xl without segments"}
extra = [(w, FOLLOW_UPS.get(w, f"`{w}`")) for w in sorted({w for w, _ in abl} - {c for c, _ in columns})]
print("\nAblation, N = 8: familiar RM (familiar WM), mean ± SE over seeds [runs]")
print("| setting | " + " | ".join(c[1] for c in columns + extra) + " |")
print("| --- | " + " | ".join("---" for _ in columns + extra) + " |")
for name in ("NMDA α = 0", "NMDA α = 10", "GELU"):
    cells = []
    for which, _ in columns + extra:
        runs = {"tem": tem.get((8, name), []), "xl": xl.get((8, name), [])}.get(which, abl.get((which, name), []))
        cells.append(f"{ms([f(r['rm_error']) for r in runs])} ({ms([f(r['wm_error']) for r in runs])}) [{len(runs)}]"
                     if runs else "–")
    print(f"| {name} | " + " | ".join(cells) + " |")

# Storage: xl at N = 8, four times the steps
long = xl_runs("long_")
if long:
    print("\nStorage, xl, N = 8, 18,000 steps: per run")
    print("| run | familiar WM | familiar RM | RM, official split | RM's fall, last quarter | at plateau | steps to RM ≤ 0.1 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, m in long.items():
        flat = compare.at_plateau(m)
        print(f"| {name} | {m['wm_error']:.3f} | {m['rm_error']:.3f} ± {m['rm_error_se']:.3f} | {m['official_rm_error']:.3f} "
              f"| {m['rm_fall_last_quarter']:.3f} ± {m['rm_fall_last_quarter_se']:.3f} | {'yes' if flat else 'no'} "
              f"| {m['steps_to_rm_0.1'] if m['steps_to_rm_0.1'] is not None else '–'} |")

# Plateau, run by run, and the seconds of training
every = {**main, **xl_runs("abl_"), **long}
learning = {n: m for n, m in every.items() if compare.at_plateau(m) is False}
falls = sorted(m["rm_fall_last_quarter"] / m["rm_fall_last_quarter_se"] for m in learning.values())
print(f"\nAt plateau (RM fell by at most {compare.PLATEAU_SE} SE over the last quarter): "
      f"{len(every) - len(learning)} of {len(every)} runs ({', '.join(sorted(set(every) - set(learning))) or 'none'}); "
      f"the others' RM fell by {min(m['rm_fall_last_quarter'] for m in learning.values()):.3f} to "
      f"{max(m['rm_fall_last_quarter'] for m in learning.values()):.3f}, {falls[0]:.1f} to {falls[-1]:.1f} SE")
seconds = {n: plots.read_log(os.path.join(LOGS, n + ".csv"))["elapsed_s"][-1] for n in every}
print(f"\nSeconds of training, summed over the {len(every)} runs: {sum(seconds.values()):,.0f} "
      f"({sum(seconds.values()) / 3600:.1f} h of one thread; two at a time, {sum(seconds.values()) / 7200:.1f} h of the machine)")
methods = sorted(re.match(r"method=(\d+)", m["analysis"]).group(1) for m in every.values())
print("analysis methods of the xl runs' metrics: " + ", ".join(f"{k}: {methods.count(k)} runs" for k in sorted(set(methods))))
