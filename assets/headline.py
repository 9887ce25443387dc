"""
The README's headline: familiar RM error during training of NMDA α = 10 against α = 0 at N = 4 maps,
three seeds each, under the paper's model (the default, xl) with TEM-t beside it; the figure
assets/headline_alpha0_vs_alpha10.png and the README's table, printed as it stands there.

    python assets/headline.py            # from the repository's top
    python assets/headline.py FIGURE.png # the figure elsewhere

Every number is read from the committed runs: the xl study's logs and metrics (assets/xl_study_logs/)
and the TEM-t study's (assets/study_logs/, assets/study_runs.csv), as RESULTS.md's commands made them.
"""
import csv, json, math, os, sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import compare, plots  # noqa: E402
from plots import plt  # noqa: E402

SEEDS = (0, 1, 2)
tem_metrics = {os.path.basename(r["run"].rstrip("/")): r for r in csv.DictReader(open(os.path.join(HERE, "study_runs.csv")))}


def runs(model, alpha):
    """[(log, metrics)] of the three seeds of NMDA alpha at N = 4 under model ('xl' or 'TEM-t')."""
    out = []
    for s in SEEDS:
        name = f"N4_nmda_a{alpha}_s{s}"
        if model == "xl":
            log, m = os.path.join(HERE, "xl_study_logs", name + ".csv"), json.load(open(os.path.join(HERE, "xl_study_logs", name + ".metrics.json")))
        else:
            log, m = os.path.join(HERE, "study_logs", name + ".csv"), tem_metrics[name]
        log = plots.read_log(log)
        keys = ("wm_error", "rm_error", "novel_rm_error", "ideal_rm_error", "ffn_place_cell_fraction", "ffn_token_cell_fraction")
        out.append((log, {**{k: float(m[k]) for k in keys}, **compare.learning_speed(log)}))
    return out


def mean_se(values, digits=3):
    v = np.array(values, float)
    fmt = (lambda x: f"{x:,.0f}") if abs(v.mean()) > 1 else (lambda x: f"{x:.{digits}f}")
    return f"{fmt(v.mean())} ± {fmt(v.std(ddof=1) / math.sqrt(len(v)))}"


ROWS = [("xl", 10, "NMDA α = 10, the paper's model"), ("xl", 0, "NMDA α = 0 (linear), the paper's model"),
        ("TEM-t", 10, "NMDA α = 10, TEM-t"), ("TEM-t", 0, "NMDA α = 0 (linear), TEM-t")]
fig, ax = plt.subplots(figsize=(7.5, 4), layout="constrained")
print("| N = 4 maps, 3 seeds | familiar WM | familiar RM | novel RM | steps to RM ≤ 0.5 | FFN place cells | of them token cells |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for model, alpha, name in ROWS:
    rs = runs(model, alpha)
    ms = [m for _, m in rs]
    reached = [m["steps_to_rm_0.5"] for m in ms if m["steps_to_rm_0.5"] is not None]
    steps = mean_se(reached) if len(reached) == len(ms) else f"{np.mean(reached):,.0f} ({len(reached)} of 3)" if reached else "not reached"
    token_share = np.mean([m["ffn_token_cell_fraction"] / m["ffn_place_cell_fraction"] for m in ms])
    print(f"| {name} | {mean_se([m['wm_error'] for m in ms])} | {mean_se([m['rm_error'] for m in ms])} | "
          f"{mean_se([m['novel_rm_error'] for m in ms])} | {steps} | {mean_se([m['ffn_place_cell_fraction'] for m in ms], 2)} | "
          f"{token_share:.2f} |")
    step = rs[0][0]["step"]
    rm = np.array([log["rm_error"] for log, _ in rs])
    mean, se = rm.mean(0), rm.std(0, ddof=1) / math.sqrt(len(rs))
    colour, style = ("C3" if alpha == 10 else "C0"), ("-" if model == "xl" else "--")
    ax.plot(step, mean, style, color=colour, lw=2 if model == "xl" else 1, label=name)
    if model == "xl":
        ax.fill_between(step, mean - se, mean + se, color=colour, alpha=0.2, lw=0)
ideal = [m["ideal_rm_error"] for _, m in runs("xl", 10)]
print(f"\nthe ideal observer's familiar RM error, the paper's model: {mean_se(ideal)}")
ax.axhline(np.mean(ideal), color="k", ls=":", lw=1, label="the ideal observer, the least this context allows")
ax.axhline(0.9, color="gray", ls=":", lw=0.8, label="chance")
ax.set(xlabel="optimizer step (--preset small)", ylabel="familiar RM error", ylim=(0, 1),
       title="RM error during training, N = 4 maps: mean ± SE over 3 seeds (TEM-t dashed)")
ax.legend(fontsize=8, loc="upper right")
path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "headline_alpha0_vs_alpha10.png")
fig.savefig(path, dpi=110)
print(f"wrote {path}")
