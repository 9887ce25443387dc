"""
Figures of one run, drawn by analyze.py: training curves, rate maps, place-cell scores and
silencing. Every fig_* returns a PNG's bytes; write_all puts them (and any other output) in place.
"""

import csv
import io
import os
import sys
import tempfile
from dataclasses import asdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import silencing  # noqa: E402
from env import TaskConfig  # noqa: E402
from nmda import ACTIVATIONS, settings_of  # noqa: E402


def png(fig):
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def cannot_write(folder):
    """Why files cannot be written in folder (made if missing), or None if they can."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return e.strerror


def write_all(folder, files):
    """Write every output under a temporary name first, then rename: all or nothing replaced."""
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name + ".tmp"), "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
    for name in files:
        os.replace(os.path.join(folder, name + ".tmp"), os.path.join(folder, name))


def act_label(args):
    """A run's activation in words with the settings it is built from (nmda.settings_of), e.g.
    'nmda α=10 β=1' or 'gelu'; for an activation that learns them, their starting values. args: a
    run's flags (or metrics)."""
    names = {"alpha": "α", "beta": "β"}
    takes = settings_of(args["act"]) if args["act"] in ACTIVATIONS else ("alpha", "beta")  # unknown here: both
    return " ".join([args["act"]] + [f"{names.get(p, p)}={args[p]:g}" for p in takes])


def task_label(task):
    """A run's task in words (task: its task_config): its maps and seed, and every other task setting
    unlike the paper's, e.g. '4 maps, seed 0, size 7, walk sticky'."""
    paper = asdict(TaskConfig())
    others = [f"{k} {v}" for k, v in task.items() if k not in ("num_maps", "seed") and k in paper and v != paper[k]]
    return ", ".join([f"{task['num_maps']} maps", f"seed {task['seed']}", *others])


LOG_COLUMNS = ("step", "loss", "wm_error", "rm_error", "novel_wm_error", "novel_rm_error", "elapsed_s")


def read_log(log_path):
    """A run's log.csv as columns of floats (LOG_COLUMNS), or None (and a line on stderr saying why)
    if it is missing or unreadable: the training curves are a bonus, never a reason to stop."""
    if not os.path.exists(log_path):
        print(f"no training curves: no {log_path}", file=sys.stderr)
        return None
    try:
        with open(log_path) as f:
            rows = list(csv.DictReader(f))
        assert rows, "no rows"
        return {key: np.array([float(r[key]) for r in rows]) for key in LOG_COLUMNS}
    except (OSError, KeyError, ValueError, TypeError, AssertionError) as e:
        print(f"no training curves: {log_path} is unreadable ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def fig_training(log, chance, title):
    """Loss and the four error rates of a run's log (read_log) against the optimizer step."""
    step, curves = log["step"], log
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    a0.plot(step, curves["loss"], "k-")
    a0.set(xlabel="optimizer step", ylabel="training loss (cross-entropy, nats)", title="loss")
    for key, label, style in (("wm_error", "WM, familiar maps", "C0-"),
                              ("rm_error", "RM, familiar maps", "C3-"),
                              ("novel_wm_error", "WM, novel maps", "C0--"),
                              ("novel_rm_error", "RM, novel maps", "C3--")):
        a1.plot(step, curves[key], style, label=label)
    a1.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.2f})")
    a1.set(xlabel="optimizer step", ylabel="arg-max error rate", ylim=(0, 1),
           title="memory errors (training evaluations)")
    a1.legend(fontsize=8)
    fig.suptitle(title)
    return png(fig)


def fig_rate_maps(scores, place, kinds, names, size, top=6):
    """The most place-like units of each kind (by score), rate maps in familiar map 0, beside map 0's
    tokens. scores: the dict of analyze.place_analysis."""
    rate, si, stability, share = scores["rate"], scores["si"], scores["stability"], scores["obs_share"]
    rows = [("ffn", "FFN neurons"), ("att", "attention softmax neurons"), ("g", "position vector g")]
    fig, axes = plt.subplots(len(rows), top + 1, figsize=(1.9 * (top + 1), 2.6 * len(rows)), squeeze=False,
                             layout="constrained")
    tokens = scores["tokens"].reshape(size, size)
    axes[0, 0].imshow(tokens, origin="upper", cmap="tab10" if tokens.max() < 10 else "tab20")
    for (i, j), token in np.ndenumerate(tokens):
        axes[0, 0].text(j, i, token, ha="center", va="center", fontsize=max(4, 60 // size), color="w")
    axes[0, 0].set_title("map 0: the token\nat each node", fontsize=8)
    for ax_row, (kind, title) in zip(axes, rows):
        ax_row[0].set_xticks([]), ax_row[0].set_yticks([])
        ax_row[0].set_ylabel(title, fontsize=9)
        if ax_row[0] is not axes[0, 0]:
            ax_row[0].set_frame_on(False)
        idx = np.flatnonzero(kinds == kind)
        for ax, u in zip(ax_row[1:], idx[np.argsort(-si[idx])[:top]]):
            ax.imshow(rate[u].reshape(size, size), origin="upper", cmap="viridis")  # row 0 (north) on top
            star = " *" if place[u] else ""
            ax.set_title(f"{names[u]}{star}\nscore {si[u]:.2f}, r {stability[u]:.2f}, η² {share[u]:.2f}\n"
                         f"{rate[u].min():.2g} to {rate[u].max():.2g}", fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle("most place-like units: mean activity per node in familiar map 0, north up, west left; colour "
                 "from each map's\nmin (dark) to max (yellow), range under the title; score: SI in bits where the "
                 "field is stable and the unit\nnot silent, else 0; r: split-half stability; η²: the share of "
                 "the map's variance that the node's token\nexplains; all three means over maps; "
                 "* = place cell", fontsize=10)
    return png(fig)


def fig_scores(si, place, kinds, layers, n_layer):
    """Histograms of the place score per population, place cells stacked in a darker colour."""
    pops = [(f"FFN layer {l}", (kinds == "ffn") & (layers == l)) for l in range(n_layer)]
    pops += [("attention softmax", kinds == "att"), ("position vector g", kinds == "g")]
    bins = np.linspace(0, max(si.max(), 1e-3), 31)
    fig, axes = plt.subplots(1, len(pops), figsize=(3.2 * len(pops), 3), sharex=True, layout="constrained")
    for ax, (title, sel) in zip(axes, pops):
        ax.hist([si[sel & place], si[sel & ~place]], bins, stacked=True, histtype="stepfilled",
                color=["C3", "C7"], label=["place cell", "not"])
        ax.set(title=f"{title}\n{place[sel].mean():.0%} of {sel.sum()} are place cells",
               xlabel="place score (SI, bits)", ylabel="units")
    axes[0].legend(fontsize=8)
    return png(fig)


def fig_silencing(m, fractions, draws, n_ffn, chance):
    """Error against the share of FFN neurons silenced (fractions, of n_ffn): most place-like first,
    or random (draws sets of each size). None where there are too few place cells for any share."""
    pct = [round(f * 100) for f in fractions]
    if all(m[silencing.tag(fraction=f) + "_place_rm_error"] is None for f in fractions):
        return None

    def get(key):  # None (too few place cells for that share) is drawn as a gap
        values = [m[silencing.tag(fraction=f) + key] for f in fractions]
        return [np.nan if v is None else v for v in values]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for ax, mem in zip(axes, ("rm", "wm")):
        ax.plot(pct, get(f"_place_{mem}_error"), "C3o-",
                label="place cells of highest score")
        ax.errorbar(pct, get(f"_random_{mem}_error"), get(f"_random_{mem}_error_sd"), fmt="C7s--", capsize=3,
                    label=f"others of the same layers,\nrandom (mean ± sd, {draws} draws)")
        ax.axhline(m[f"{silencing.tag()}_{mem}_error"], color="k", lw=0.8, label="none silenced")
        ax.set(xscale="log", xlabel=f"% of the {n_ffn} FFN neurons silenced",
               ylabel="error rate (familiar maps)", title=f"{mem.upper()} error (chance {chance:.2f})")
        ax.set_xticks(pct, [str(p) for p in pct])
    axes[0].legend(fontsize=8, loc="upper left")  # errors rise to the right
    return png(fig)
