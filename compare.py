"""
Compare runs that analyze.py has analysed: runs.csv (one row per run), summary.csv (mean and
standard error over seeds of every setting), a table on stdout and the comparison figures.

    python compare.py runs/*/ --out runs      # reads each run's metrics.json; nothing is recomputed

analyze.py calls this itself when it is given several runs.
"""

import argparse
import csv
import glob
import hashlib
import io
import json
import math
import os
from functools import partial

import numpy as np

import checkpoint
import cli
import plots
from nmda import ACTIVATIONS, settings_of
from plots import act_label, plt, png

# Settings that do not change what a run learned: left out when runs are grouped for comparison
# ("bench" and "profile" were train.py flags once: older checkpoints still carry them).
NOT_SETTINGS = {"device", "dtype", "compile", "out_dir", "resume", "overwrite", "eval_interval",
                "eval_walks", "preset", "bench", "profile"}
# The metrics of summary.csv, and the columns of the tables on stdout.
SUMMARY = ("wm_error", "rm_error", "novel_wm_error", "novel_rm_error", "ffn_place_cell_fraction",
           "ffn_token_cell_fraction", "att_place_cell_fraction", "ffn_si_mean", "att_si_mean", "rm_auc",
           "ideal_rm_error", "loop_closure_accuracy", "novel_loop_closure_accuracy")
SEGMENTED = ("official_wm_error", "official_rm_error")  # the official split too, of runs with segments (--arch xl)
RUN_COLUMNS = {"wm_error": "wm_error", "rm_error": "rm_error", "novel_wm_error": "novel_wm_error",
               "novel_rm_error": "novel_rm_error", "ffn_place_cell_fraction": "ffn_pc",
               "ffn_token_cell_fraction": "ffn_tc", "att_place_cell_fraction": "att_pc", "loop_closure_accuracy": "loop"}


die = partial(cli.die, "compare.py")  # bad input: one line on stderr, exit status 2


RM_THRESHOLDS = (0.5, 0.1)  # learning speed: when familiar RM error first reaches these


def learning_speed(log):
    """How fast a run stored its maps, from its training log (plots.read_log; None: no log): for
    each of RM_THRESHOLDS, the first logged step, and the seconds of training until it, at which the
    familiar RM error was at or below it (None: not reached); and rm_auc, the area under the RM
    curve (trapezoids over the logged steps) over the steps it spans: the mean RM error over
    training, lower for a run that learned sooner; and plateau(log), whether it still learns."""
    out = {}
    for threshold in RM_THRESHOLDS:
        hit = np.flatnonzero(log["rm_error"] <= threshold) if log is not None else []
        out[f"steps_to_rm_{threshold:g}"] = int(log["step"][hit[0]]) if len(hit) else None
        out[f"seconds_to_rm_{threshold:g}"] = float(log["elapsed_s"][hit[0]]) if len(hit) else None
    out.update(plateau(log))
    if log is None:
        out["rm_auc"] = None
    elif len(log["step"]) == 1:
        out["rm_auc"] = float(log["rm_error"][0])
    else:
        step, rm = log["step"], log["rm_error"]
        out["rm_auc"] = float(((rm[1:] + rm[:-1]) / 2 * np.diff(step)).sum() / (step[-1] - step[0]))
    return out


PLATEAU_SE = 2  # a run is at its plateau when its RM fell over the last quarter by no more than this many SE


def plateau(log):
    """Whether a run has stopped learning, from its training log (None: no log): rm_fall_last_quarter,
    how far familiar RM error fell over the last quarter of the logged steps (the slope of the
    least-squares line through the logged points there, times the quarter's steps; < 0: it rose),
    and rm_fall_last_quarter_se, its standard error from the points' scatter about the line (None
    below three points). The run is at its plateau when the fall is within PLATEAU_SE of them."""
    out = dict.fromkeys(("rm_fall_last_quarter", "rm_fall_last_quarter_se"))
    if log is None:
        return out
    step, rm = log["step"], log["rm_error"]
    last = step >= step[-1] * 0.75
    x, y = step[last], rm[last]
    if len(x) < 3:
        return out
    dx = x - x.mean()
    slope = (dx * (y - y.mean())).sum() / (dx ** 2).sum()
    residual = y - y.mean() - slope * dx
    slope_se = math.sqrt((residual ** 2).sum() / (len(x) - 2) / (dx ** 2).sum())
    quarter = step[-1] * 0.25
    return dict(rm_fall_last_quarter=float(-slope * quarter), rm_fall_last_quarter_se=float(slope_se * quarter))


def at_plateau(m):
    """True, False, or None (not known) for a run's metrics: its RM fell by no more than PLATEAU_SE
    standard errors over the last quarter of its steps."""
    fall, se = m.get("rm_fall_last_quarter"), m.get("rm_fall_last_quarter_se")
    return None if fall is None or se is None else fall <= PLATEAU_SE * se


def mean_se(runs, key):
    """Mean and standard error over seeds of a metric (nan for one seed: no spread to measure)."""
    v = np.array([np.nan if r["metrics"][key] is None else r["metrics"][key] for r in runs], float)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")


def pearson(x, y):
    """Pearson's r as text; n/a below 3 runs or without spread."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = len(x) >= 3 and x.std() > 0 and y.std() > 0
    return f"{np.corrcoef(x, y)[0, 1]:.2f}" if ok else "n/a"


def setting(args):
    """What a run is, for grouping: its flags but the seed and NOT_SETTINGS, with OLDER's value for a
    setting it predates, and without the activation settings its activation is not built from."""
    args = checkpoint.upgrade(args)
    unused = {"alpha", "beta"} - set(settings_of(args["act"])) if args["act"] in ACTIVATIONS else set()
    return {k: v for k, v in args.items() if k not in NOT_SETTINGS | unused | {"seed"}}


def groups(runs, drop):
    """Runs with equal settings except `drop` (and seed), each group labelled by what sets it apart
    from the other groups: every setting that differs between them ("all runs" for one group)."""
    by = {}
    for r in runs:
        key = tuple(sorted((k, str(v)) for k, v in setting(r["args"]).items() if k not in drop))
        by.setdefault(key, []).append(r)
    differ = sorted({k for key in by for k, v in key if len({dict(o).get(k) for o in by}) > 1})
    return [(", ".join(f"{k}={dict(key).get(k, '-')}" for k in differ) or "all runs", rs)
            for key, rs in by.items()]


def seed_table(runs):
    """One row per setting (runs equal in all but the seed): mean and standard error over seeds."""
    rows = []
    for label, rs in groups(runs, ()):
        args = rs[0]["args"]
        row = dict(setting=label, act=args["act"], alpha=args["alpha"], beta=args["beta"],
                   num_maps=args["num_maps"], seeds=len(rs))
        for k in SUMMARY + SEGMENTED * ("official_rm_error" in rs[0]["metrics"]):
            row[k], row[k + "_se"] = mean_se(rs, k)
        row["at_plateau"] = sum(at_plateau(r["metrics"]) is True for r in rs)
        for threshold in RM_THRESHOLDS:  # over the seeds that got there; how many did
            reached = [r for r in rs if r["metrics"].get(f"steps_to_rm_{threshold:g}") is not None]
            row[f"reached_rm_{threshold:g}"] = len(reached)
            for k in (f"steps_to_rm_{threshold:g}", f"seconds_to_rm_{threshold:g}"):
                row[k], row[k + "_se"] = mean_se(reached, k) if reached else (float("nan"), float("nan"))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["num_maps"], r["act"] != "nmda", r["act"], r["alpha"], r["setting"]))


def csv_text(rows):
    """Rows of dicts as CSV text, the columns in order of first appearance."""
    table = io.StringIO()
    w = csv.DictWriter(table, list(dict.fromkeys(k for r in rows for k in r)))
    w.writeheader()
    w.writerows(rows)
    return table.getvalue()


def number(v):
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def print_table(rows):
    """Rows of strings, the first the header, as columns right-aligned to their widest cell."""
    width = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print("\n".join("  ".join(v.rjust(wd) for v, wd in zip(row, width)) for row in rows))


def print_tables(runs, summary_rows, chance):
    """One line per run, then one per setting with mean ± SE over seeds of every metric of SUMMARY,
    then the learning speed per setting. A row's setting is what sets it apart from the other
    settings compared (groups)."""
    label = {id(r): lab for lab, rs in groups(runs, ()) for r in rs}
    rows = [["run", "setting", "seed"] + list(RUN_COLUMNS.values()) + ["rm_fall_q4", f"fall <= {PLATEAU_SE} SE"]]
    for r in runs:
        m = r["metrics"]
        flat = {True: "plateau", False: "learning", None: "?"}[at_plateau(m)]
        rows.append([r["dir"], label[id(r)], str(r["args"]["seed"])] + [number(m[c]) for c in RUN_COLUMNS]
                    + [number(m["rm_fall_last_quarter"]), flat])
    print_table(rows)

    def cell(r, k):
        return f"{r[k]:.3f} ± {r[k + '_se']:.3f}" if r["seeds"] > 1 else f"{r[k]:.3f}"

    for i in range(0, len(SUMMARY), 5):  # five metrics a table, so that a line fits a terminal
        print(f"\nmean ± standard error over seeds (chance {chance:.3f}), metrics {i + 1} to "
              f"{min(i + 5, len(SUMMARY))} of {len(SUMMARY)}:")
        keys = SUMMARY[i:i + 5]
        print_table([["setting", "seeds", *keys]] + [[r["setting"], str(r["seeds"])] + [cell(r, k) for k in keys]
                                                     for r in summary_rows])
    print("\nlearning speed, from each run's log.csv: the step at which familiar RM error first reached a "
          "threshold (mean ± SE over the seeds that reached it), the mean RM error over training (rm_auc), "
          f"and the seeds at their plateau (RM fell by at most {PLATEAU_SE} SE over the last quarter):")
    rows = [["setting", "seeds"] + [f"to RM <= {t:g}" for t in RM_THRESHOLDS] + ["rm_auc", "at plateau"]]
    for r in summary_rows:
        cells = []
        for t in RM_THRESHOLDS:
            n, k = r[f"reached_rm_{t:g}"], f"steps_to_rm_{t:g}"
            spread = f" ± {r[k + '_se']:.0f}" if n > 1 else ""
            cells.append(f"{r[k]:.0f}{spread} ({n}/{r['seeds']})" if n else f"not reached (0/{r['seeds']})")
        rows.append([r["setting"], str(r["seeds"])] + cells + [cell(r, "rm_auc"), f"{r['at_plateau']} of {r['seeds']}"])
    print_table(rows)


def compare(runs, out, figures=True):
    """runs: dicts with the run's folder ("dir"), training flags ("args") and metrics.json
    ("metrics"). Prints the tables and Pearson r, writes runs.csv, summary.csv and the figures."""
    chance = runs[0]["metrics"]["chance"]
    other = [r["dir"] for r in runs if r["metrics"].get("code") != code_version()]
    if other:  # read back from metrics.json, which an older version of the code may have made
        print(f"note: {len(other)} of the {len(runs)} runs were analysed by other code than this; "
              f"python analyze.py --redo {' '.join(other[:3])}{' ...' if len(other) > 3 else ''} analyses them anew\n")
    lacking = sorted({k for r in runs for k in r.get("lacks", ())})
    if lacking:
        print(f"note: {', '.join(lacking)}: n/a for the runs analysed before it was a metric; python analyze.py "
              "--redo RUN computes it\n")
    summary_rows = seed_table(runs)
    print_tables(runs, summary_rows, chance)
    files = {"runs.csv": csv_text([r["metrics"] for r in runs]), "summary.csv": csv_text(summary_rows)}
    gs = sorted(groups(runs, ("act", "alpha", "beta")), key=lambda g: g[1][0]["args"]["num_maps"])
    for label, rs in gs:
        rm = [r["metrics"]["rm_error"] for r in rs]
        r_ffn, r_att = (pearson([r["metrics"][f"{p}_si_mean"] for r in rs], rm) for p in ("ffn", "att"))
        r_beyond = pearson([beyond_token(r["metrics"]) for r in rs], rm)
        print(f"Pearson r with RM error over {len(rs)} runs ({label}): mean SI of FFN {r_ffn}, of attention "
              f"{r_att}; fraction of FFN place cells that are not token cells {r_beyond}")
    if figures:
        by_alpha = [r for r in runs if "alpha" in setting(r["args"])]  # runs whose activation takes alpha
        files["errors_vs_alpha.png"] = fig_errors_vs_alpha(groups(by_alpha, ("alpha",)), chance)
        files["errors_by_activation.png"] = fig_errors_by_activation(gs, chance)
        files["place_score_vs_rm.png"] = fig_place_score_vs_rm(gs)
        files["learning_curves.png"] = fig_learning_curves(gs, "activation", chance)
        files["learning_curves_by_num_maps.png"] = fig_learning_curves(groups(runs, ("num_maps",)), "N", chance)
    files = {k: v for k, v in files.items() if v is not None}
    plots.write_all(out, files)
    print(f"wrote {', '.join(os.path.join(out, n) for n in files)}")


# ---- figures ------------------------------------------------------------------------------------

def fig_errors_vs_alpha(nmda_gs, chance):
    """RM and WM error against alpha, one colour per group of otherwise equal runs of an activation
    built from alpha (NMDA's); alpha = 0 on its own tick at the left of a log axis. None without such runs."""
    if not nmda_gs:
        return None
    alphas = sorted({r["args"]["alpha"] for _, rs in nmda_gs for r in rs})
    zero_x = min([a for a in alphas if a > 0], default=1.0) / 10
    fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
    for i, (label, rs) in enumerate(nmda_gs):
        al = sorted({r["args"]["alpha"] for r in rs})
        x = [a if a > 0 else zero_x for a in al]
        for key, style, name in (("rm_error", "o-", "RM"), ("wm_error", "s--", "WM")):
            ms = [mean_se([r for r in rs if r["args"]["alpha"] == a], key) for a in al]
            ax.errorbar(x, [v for v, _ in ms], [s for _, s in ms], fmt=style, color=f"C{i}", capsize=3,
                        label=f"{name} error, {label}")
        ideal = [r["metrics"].get("ideal_rm_error") for r in rs]
        if None not in ideal:
            ax.axhline(np.mean(ideal), color=f"C{i}", ls=":", lw=0.8, label=f"the ideal observer's RM, {label}")
    ax.axhline(chance, color="gray", ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks([a if a > 0 else zero_x for a in alphas], [f"{a:g}" for a in alphas])
    ax.minorticks_off()
    ax.set(xlabel="NMDA α (log axis; 0 at the left)", ylabel="error rate (familiar maps)", ylim=(0, 1),
           title="memory errors against α (mean ± SE over seeds)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return png(fig)


def fig_errors_by_activation(gs, chance):
    """Bars of RM and WM error, one panel per group of otherwise equal runs that differ in their
    activation: NMDA by alpha first, then the other activations by name. None where no group has
    two activations."""
    def order(r):
        return (r["args"]["act"] != "nmda", r["args"]["act"], r["args"]["alpha"], r["args"]["beta"])

    bar_gs = [(label, sorted(rs, key=order)) for label, rs in gs if len({act_label(r["args"]) for r in rs}) > 1]
    if not bar_gs:
        return None
    n_bars = max(len({act_label(r["args"]) for r in rs}) for _, rs in bar_gs)
    fig, axes = plt.subplots(len(bar_gs), 1, figsize=(max(6, 1.1 * n_bars), 3.3 * len(bar_gs)), squeeze=False,
                             layout="constrained")
    for ax, (label, rs) in zip(axes[:, 0], bar_gs):
        acts = list(dict.fromkeys(act_label(r["args"]) for r in rs))
        for j, (key, name) in enumerate((("rm_error", "RM"), ("wm_error", "WM"))):
            ms = [mean_se([r for r in rs if act_label(r["args"]) == a], key) for a in acts]
            ax.bar(np.arange(len(acts)) + (j - 0.5) * 0.4, [v for v, _ in ms], 0.4, yerr=[s for _, s in ms],
                   capsize=3, color=f"C{3 if j == 0 else 0}", label=f"{name} error")
        ax.axhline(chance, color="gray", ls=":", label="chance")
        ax.set_xticks(range(len(acts)), acts)
        ax.set_xlim(-0.7, max(len(acts), 3) - 0.3)  # a lone bar pair stays bar-shaped
        ax.set(ylabel="error rate (familiar maps)", ylim=(0, 1),
               title=f"error by activation ({label}; mean ± SE over seeds)")
        ax.legend(fontsize=8)
    return png(fig)


def fig_learning_curves(gs, by, chance):
    """Familiar RM error against the optimizer step, a line per setting (the mean over its seeds,
    with a band of ± one standard error), a panel per group of runs that differ in `by` alone
    ('activation' or 'N'). None where no group holds two settings. Seeds are averaged over the
    steps all their logs share."""
    def curve_of(r):
        return act_label(r["args"]) if by == "activation" else f"N = {r['args']['num_maps']}"

    def order(r):
        a = r["args"]
        return (a["num_maps"],) if by == "N" else (a["num_maps"], a["act"] != "nmda", a["act"], a["alpha"], a["beta"])

    panels = [(label, sorted(rs, key=order)) for label, rs in gs if len({curve_of(r) for r in rs}) > 1]
    panels.sort(key=lambda p: order(p[1][0]) if by == "activation" else ())  # by N, then as given
    if not panels:
        return None
    every = list(dict.fromkeys(curve_of(r) for _, rs in panels for r in rs))  # a curve keeps its colour
    if by == "N":
        every.sort(key=lambda s: int(s.split("= ")[1]))
    colour_of = dict(zip(every, plt.cm.viridis(np.linspace(0, 0.85, len(every))) if by == "N"
                         else [f"C{i % 10}" for i in range(len(every))]))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(9, 7.5 * cols), 4.4 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (label, rs) in zip(axes.flat, panels):
        label = act_label(rs[0]["args"]) if by == "N" else label  # what the panel's runs share
        names = list(dict.fromkeys(curve_of(r) for r in rs))
        for name in names:
            colour = colour_of[name]
            logs = [plots.read_log(os.path.join(r["dir"], "log.csv")) for r in rs if curve_of(r) == name]
            logs = [log for log in logs if log is not None]
            if not logs:
                continue
            steps = sorted(set.intersection(*(set(log["step"]) for log in logs)))
            rm = np.array([[dict(zip(log["step"], log["rm_error"]))[s] for s in steps] for log in logs])
            mean = rm.mean(0)
            ax.plot(steps, mean, color=colour, label=f"{name} ({len(logs)} seed{'s' if len(logs) > 1 else ''})")
            if len(logs) > 1:
                se = rm.std(0, ddof=1) / math.sqrt(len(logs))
                ax.fill_between(steps, mean - se, mean + se, color=colour, alpha=0.2, lw=0)
            ideal = [r["metrics"].get("ideal_rm_error") for r in rs if curve_of(r) == name]
            if by == "N" and None not in ideal:  # the floor differs with N; with the activation it does not
                ax.axhline(np.mean(ideal), color=colour, ls="--", lw=0.8)
        ax.axhline(chance, color="gray", ls=":", label="chance")
        ideal = [r["metrics"].get("ideal_rm_error") for r in rs]
        if by == "activation" and None not in ideal:
            ax.axhline(np.mean(ideal), color="k", ls="--", lw=0.8, label="the ideal observer")
        for threshold in RM_THRESHOLDS:
            ax.axhline(threshold, color="0.8", lw=0.8)
        ax.set(xlabel="optimizer step", ylabel="familiar RM error (training evaluations)", ylim=(0, 1),
               title=label if len(label) < 80 else label[:77] + "...")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # the curves fill the axes
    fig.suptitle(f"learning curves by {by}: mean ± SE over seeds; grey lines at RM error "
                 + " and ".join(f"{t:g}" for t in RM_THRESHOLDS) + ";\ndashed: the ideal observer's RM error "
                 "(analyze.py), the least the context allows", fontsize=10)
    return png(fig)


def beyond_token(m):
    """The fraction of a run's FFN neurons that are place cells but not token cells."""
    return m["ffn_place_cell_fraction"] - m["ffn_token_cell_fraction"]


def fig_place_score_vs_rm(gs):
    """Place-likeness of FFN and attention neurons against RM error, one row per group of otherwise
    equal runs: Pearson r only among comparable runs."""
    fig, axes = plt.subplots(len(gs), 2, figsize=(10, 4.6 * len(gs)), squeeze=False, layout="constrained")
    for ax_row, (label, rs) in zip(axes, gs):
        rm = [r["metrics"]["rm_error"] for r in rs]
        for ax, (stat, xlabel) in zip(ax_row, (("si_mean", "mean spatial information (bits)"),
                                               ("place_cell_fraction", "fraction of place cells"))):
            for pop, colour, name in (("ffn", "C3", "FFN neurons"), ("att", "C0", "attention softmax neurons")):
                x = [r["metrics"][f"{pop}_{stat}"] for r in rs]
                ax.scatter(x, rm, color=colour, zorder=3, label=f"{name}: Pearson r = {pearson(x, rm)}")
            if stat == "place_cell_fraction":
                x = [beyond_token(r["metrics"]) for r in rs]
                ax.scatter(x, rm, color="C1", marker="^", zorder=3,
                           label=f"FFN neurons, token cells left out: Pearson r = {pearson(x, rm)}")
            for r, y in zip(rs, rm):  # a faint line joins the two populations of one run
                xs = [r["metrics"][f"{pop}_{stat}"] for pop in ("att", "ffn")]
                ax.plot(xs, [y, y], color="0.85", lw=0.8, zorder=1)
                ax.annotate(act_label(r["args"]), (xs[1], y), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
            ax.set(xlabel=xlabel, ylabel="RM error (familiar maps)", title=f"{len(rs)} runs, {label}")
            ax.title.set_fontsize(9)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.suptitle("place-likeness of FFN and attention neurons against RM error")
    return png(fig)


# ---- the command line ---------------------------------------------------------------------------

def sha256(paths):
    """The SHA-256 of the files' bytes, one after another, as hex."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def code_version():
    """What the code that computes the numbers is: the SHA-256 of every .py file beside this one but
    the tests. Any edit of the project's code (a metric, the task, the model) changes it; analyze.py
    keeps it in metrics.json."""
    here = os.path.dirname(os.path.abspath(__file__))
    return sha256(sorted(p for p in glob.glob(os.path.join(here, "*.py")) if not os.path.basename(p).startswith("test_")))


def given_twice(runs):
    """The first two of runs [(folder, checkpoint's SHA-256)] that hold the same checkpoint, or None:
    a run given twice (or copied) would count as two seeds of its setting."""
    seen = {}
    for d, sha in runs:
        if sha in seen:
            return seen[sha], d
        seen[sha] = d
    return None


def load(run_dir):
    """One analysed run as compare() takes it, from run_dir/metrics.json."""
    path = os.path.join(run_dir, "metrics.json")
    if not os.path.isdir(run_dir):
        die(f"{run_dir}: not a run folder (give folders that analyze.py has analysed)")
    try:
        with open(path) as f:
            m = json.load(f)
        args = m.pop("args")
        assert isinstance(args, dict)
        for k in ("task_config", "model_config"):  # kept in metrics.json for the record; args has them too
            m.pop(k, None)
        missing = [k for k in dict.fromkeys(("chance", *RUN_COLUMNS)) if k not in m]
        assert not missing, f"it lacks {', '.join(missing[:3])}"
        lacks = [k for k in SUMMARY if k not in m]  # metrics added since the run was analysed: n/a
        m.update(dict.fromkeys(lacks))
        if "rm_fall_last_quarter" not in m:  # a metrics.json from before plateau(): from the run's log
            m.update(plateau(plots.read_log(os.path.join(run_dir, "log.csv"))))
    except FileNotFoundError:
        die(f"{path}: no such file (python analyze.py {run_dir} writes it)")
    except (OSError, ValueError, KeyError, AttributeError, AssertionError) as e:
        why = f"{type(e).__name__}: {e}" if isinstance(e, AssertionError) else type(e).__name__
        die(f"{path}: not a metrics.json of analyze.py ({why}); python analyze.py --redo {run_dir} writes it anew")
    return dict(dir=run_dir, args=args, metrics=m, lacks=lacks)


def main(argv=None):
    p = argparse.ArgumentParser(description="Compare runs analysed by analyze.py.")
    p.error = die  # argparse's own complaints: one line, exit 2
    p.add_argument("runs", nargs="+", help="run folders, each holding metrics.json from analyze.py")
    p.add_argument("--out", default=".", help="where runs.csv, summary.csv and the figures go (default: %(default)s)")
    p.add_argument("--no_figures", action="store_true", help="tables only")
    args = p.parse_args(argv)
    if plots.cannot_write(args.out):
        die(f"--out {args.out}: cannot write there ({plots.cannot_write(args.out)})")
    runs = [load(d) for d in args.runs]
    twice = given_twice([(r["dir"], r["metrics"].get("checkpoint", os.path.realpath(r["dir"]))) for r in runs])
    if twice:
        die(f"{twice[0]} and {twice[1]} hold the same run: it would count as two seeds; give each run once")
    compare(runs, args.out, not args.no_figures)


if __name__ == "__main__":
    main()
