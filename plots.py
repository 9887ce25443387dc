"""
Figures of analyze.py: training curves, rate maps, place-cell scores and silencing of one run, and
the comparison figures across runs. Every fig_* returns a PNG's bytes; analyze.py writes the files.
"""

import io
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def png(fig):
    """The figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def act_label(args):
    """A run's activation in words, e.g. 'nmda α=10' or 'gelu'."""
    beta = f" β={args['beta']:g}" if args["beta"] != 1 else ""
    return f"nmda α={args['alpha']:g}{beta}" if args["act"] == "nmda" else args["act"]


def mean_se(runs, key):
    """Mean and standard error over seeds of a metric (nan for one seed: no spread to measure)."""
    v = np.array([np.nan if r["metrics"][key] is None else r["metrics"][key] for r in runs], float)
    return v.mean(), v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")


def pearson(x, y):
    """Pearson's r as text; n/a below 3 runs or without spread."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = len(x) >= 3 and x.std() > 0 and y.std() > 0
    return f"{np.corrcoef(x, y)[0, 1]:.2f}" if ok else "n/a"


def fig_training(rows, chance, title):
    """Loss and the four error rates of log.csv against the optimizer step."""
    assert rows, "empty"
    step = [float(r["step"]) for r in rows]
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    a0.plot(step, [float(r["loss"]) for r in rows], "k-")
    a0.set(xlabel="optimizer step", ylabel="training loss (cross-entropy, nats)", title="loss")
    for key, label, style in (("wm_error", "WM, familiar maps", "C0-"),
                              ("rm_error", "RM, familiar maps", "C3-"),
                              ("novel_wm_error", "WM, novel maps", "C0--"),
                              ("novel_rm_error", "RM, novel maps", "C3--")):
        a1.plot(step, [float(r[key]) for r in rows], style, label=label)
    a1.axhline(chance, color="gray", ls=":", label=f"chance ({chance:.2f})")
    a1.set(xlabel="optimizer step", ylabel="arg-max error rate", ylim=(0, 1),
           title="memory errors (training evaluations)")
    a1.legend(fontsize=8)
    fig.suptitle(title)
    return png(fig)


def fig_rate_maps(rate, si, place, kinds, names, size, top=6):
    """The most place-like units of each kind (by mean SI), rate maps in familiar map 0."""
    rows = [("ffn", "FFN neurons"), ("att", "attention softmax neurons"), ("g", "position vector g")]
    fig, axes = plt.subplots(len(rows), top, figsize=(1.9 * top, 2.3 * len(rows)), squeeze=False,
                             layout="constrained")
    for ax_row, (kind, title) in zip(axes, rows):
        idx = np.flatnonzero(kinds == kind)
        for ax, u in zip(ax_row, idx[np.argsort(-si[idx])[:top]]):
            ax.imshow(rate[u].reshape(size, size), origin="upper", cmap="viridis")  # row 0 (north) on top
            star = " *" if place[u] else ""
            ax.set_title(f"{names[u]}{star}\nSI {si[u]:.2f} | {rate[u].min():.2g} to {rate[u].max():.2g}",
                         fontsize=8)
            ax.set_xticks([]), ax.set_yticks([])
        ax_row[0].set_ylabel(title, fontsize=9)
    fig.suptitle("most place-like units: mean activity per node in familiar map 0, north up, west left; "
                 "colour\nfrom each map's min (dark) to max (yellow), range in the title; SI in bits, "
                 "mean over maps; * = place cell", fontsize=10)
    return png(fig)


def fig_scores(si, place, kinds, layers, n_layer):
    """Histograms of SI per population, place cells stacked in a darker colour."""
    pops = [(f"FFN layer {l}", (kinds == "ffn") & (layers == l)) for l in range(n_layer)]
    pops += [("attention softmax", kinds == "att"), ("position vector g", kinds == "g")]
    bins = np.linspace(0, max(si.max(), 1e-3), 31)
    fig, axes = plt.subplots(1, len(pops), figsize=(3.2 * len(pops), 3), sharex=True, layout="constrained")
    for ax, (title, sel) in zip(axes, pops):
        ax.hist([si[sel & place], si[sel & ~place]], bins, stacked=True, histtype="stepfilled",
                color=["C3", "C7"], label=["place cell", "not"])
        ax.set(title=f"{title}\n{place[sel].mean():.0%} of {sel.sum()} are place cells",
               xlabel="spatial information (bits)", ylabel="units")
    axes[0].legend(fontsize=8)
    return png(fig)


def fig_silencing(m, fractions, draws, n_ffn, chance):
    """Error against the share of FFN neurons silenced (fractions, of n_ffn): most place-like first,
    or random (draws sets of each size)."""
    pct = [round(f * 100) for f in fractions]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for ax, mem in zip(axes, ("rm", "wm")):
        ax.plot(pct, [m[f"silence_{p}pct_place_{mem}_error"] for p in pct], "C3o-",
                label="most place-like (by SI)")
        ax.errorbar(pct, [m[f"silence_{p}pct_random_{mem}_error"] for p in pct],
                    [m[f"silence_{p}pct_random_{mem}_error_sd"] for p in pct], fmt="C7s--", capsize=3,
                    label=f"random (mean ± sd, {draws} draws)")
        ax.axhline(m[f"silence_none_{mem}_error"], color="k", lw=0.8, label="none silenced")
        ax.set(xscale="log", xlabel=f"% of the {n_ffn} FFN neurons silenced",
               ylabel="error rate (familiar maps)", title=f"{mem.upper()} error (chance {chance:.2f})")
        ax.set_xticks(pct, [str(p) for p in pct])
    axes[0].legend(fontsize=8)
    return png(fig)


def fig_compare(runs, gs, nmda_gs, chance):
    """Errors against alpha, errors by activation, place-likeness against RM error. gs: the runs as
    (label, runs) groups of otherwise equal settings; nmda_gs: the NMDA runs grouped alike, alpha
    left free (empty: no figure against alpha)."""
    files = {}
    if nmda_gs:  # RM and WM error against alpha, alpha = 0 on its own tick at the left of a log axis
        alphas = sorted({r["args"]["alpha"] for _, rs in nmda_gs for r in rs})
        zero_x = min([a for a in alphas if a > 0], default=1.0) / 10
        fig, ax = plt.subplots(figsize=(9, 4), layout="constrained")
        for i, (label, rs) in enumerate(nmda_gs):
            al = sorted({r["args"]["alpha"] for r in rs})
            x = [a if a > 0 else zero_x for a in al]
            for key, fmt_, name in (("rm_error", "o-", "RM"), ("wm_error", "s--", "WM")):
                ms = [mean_se([r for r in rs if r["args"]["alpha"] == a], key) for a in al]
                ax.errorbar(x, [v for v, _ in ms], [s for _, s in ms], fmt=fmt_, color=f"C{i}", capsize=3,
                            label=f"{name} error, {label}")
        ax.axhline(chance, color="gray", ls=":", label="chance")
        ax.set_xscale("log")
        ax.set_xticks([a if a > 0 else zero_x for a in alphas], [f"{a:g}" for a in alphas])
        ax.minorticks_off()
        ax.set(xlabel="NMDA α (log axis; 0 at the left)", ylabel="error rate (familiar maps)", ylim=(0, 1),
               title="memory errors against α (mean ± SE over seeds)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        files["errors_vs_alpha.png"] = png(fig)

    # bars: one panel per group of otherwise equal runs
    def order(r):  # NMDA by alpha first, then the other activations by name
        return (r["args"]["act"] != "nmda", r["args"]["act"], r["args"]["alpha"], r["args"]["beta"])

    bar_gs = [(label, sorted(rs, key=order)) for label, rs in gs if len({act_label(r["args"]) for r in rs}) > 1]
    n_bars = max([len({act_label(r["args"]) for r in rs}) for _, rs in bar_gs] + [1])
    fig, axes = plt.subplots(max(len(bar_gs), 1), 1, figsize=(max(6, 1.1 * n_bars), 3.3 * max(len(bar_gs), 1)),
                             squeeze=False, layout="constrained")
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
    files["errors_by_activation.png"] = png(fig)

    # place-likeness against RM error, one row per group as above: r only among comparable runs
    fig, axes = plt.subplots(len(gs), 2, figsize=(10, 4.6 * len(gs)), squeeze=False, layout="constrained")
    for ax_row, (label, rs) in zip(axes, gs):
        rm = [r["metrics"]["rm_error"] for r in rs]
        for ax, (stat, xlabel) in zip(ax_row, (("si_mean", "mean spatial information (bits)"),
                                               ("place_cell_fraction", "fraction of place cells"))):
            for pop, c, name in (("ffn", "C3", "FFN neurons"), ("att", "C0", "attention softmax neurons")):
                x = [r["metrics"][f"{pop}_{stat}"] for r in rs]
                ax.scatter(x, rm, color=c, zorder=3, label=f"{name}: Pearson r = {pearson(x, rm)}")
            for r, y in zip(rs, rm):  # a faint line joins the two populations of one run
                xs = [r["metrics"][f"{pop}_{stat}"] for pop in ("att", "ffn")]
                ax.plot(xs, [y, y], color="0.85", lw=0.8, zorder=1)
                ax.annotate(act_label(r["args"]), (xs[1], y), fontsize=6, xytext=(3, 2),
                            textcoords="offset points")
            ax.set(xlabel=xlabel, ylabel="RM error (familiar maps)", title=f"{len(rs)} runs, {label}")
            ax.title.set_fontsize(9)
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
    fig.suptitle("place-likeness of FFN and attention neurons against RM error")
    files["place_score_vs_rm.png"] = png(fig)
    return files
