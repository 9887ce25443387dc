"""
Analyse runs of train.py: memory errors, place cells, silencing and loop closure, the measures of
Kim et al. (NeurIPS 2023, sections 3-4 and figures 3-5) and some beyond them.

    python analyze.py out/                          # one run: metrics.json and PNGs in out/
    python analyze.py out_a0/ out_a10/ out_gelu/    # each as above, then compare.py's runs.csv,
                                                    # summary.csv and figures in --out
    python analyze.py out/ --quick                  # a smoke test, not a measurement

Each part (error rates, rate maps, shuffles, silencing, loop closure) draws from its own generator
seeded from --seed, never from the training stream; each function's docstring gives its method.
"""

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict
from functools import partial

import numpy as np
import torch

import checkpoint
import cli
import compare
import gpu
import place
import plots
import silencing
from env import GridWorld
from memory import draw_walks, error_rates, forward_chunked, ideal_observer, lag_units, loop_accuracy, model_predictor
from model import Model, reach, span, splits
from nmda import settings_of

# Flags left unset take DEFAULTS, or QUICK with --quick.
DEFAULTS = dict(max_se=0.005, max_walks=20000, rate_steps=4000, rate_walks=4, rate_maps=4,
                shuffles=100, silence_walks=256, loop_walks=1024)
QUICK = dict(max_se=0.05, max_walks=128, rate_steps=300, rate_walks=2, rate_maps=1,
             shuffles=20, silence_walks=32, loop_walks=64)
TOKEN_CELL = 0.5  # a place cell is a token cell where the node's token explains this share of its rate map
# Offsets from --seed of each part's own random stream.
SEEDS = dict(errors=0, novel_errors=1, rate_maps=2, shuffles=3, silencing=4, silence_draws=5, loop=6,
             novel_loop=7, ideal=8)


die = partial(cli.die, "analyze.py")  # bad input: one line on stderr, exit status 2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Analyse runs of train.py: memory errors, place cells, "
                                                 "silencing, loop closure.")
    parser.error = die  # argparse's own complaints: one line, exit 2
    add = parser.add_argument
    add("runs", nargs="+", help="run folders, each holding ckpt.pt (and log.csv) from train.py")
    add("--out", default=".", help="where runs.csv, summary.csv and the comparison figures go, for several "
                                   "runs (default: %(default)s)")
    add("--walk_len", type=int, help="steps per walk for the error rates (default: the run's training walk_len)")
    sized = dict(max_se=(float, "draw walks until every error rate's standard error is below this"),
                 max_walks=(int, "cap on walks per error estimate"),
                 rate_steps=(int, "steps per long walk for rate maps"),
                 rate_walks=(int, "long walks per map for rate maps, at least 2 (even and odd walks are "
                                  "compared for stability)"),
                 rate_maps=(int, "rate maps in familiar maps 0..rate_maps-1, scores averaged over them"),
                 shuffles=(int, "circular-shift shuffles per unit and map for the place-cell test"),
                 silence_walks=(int, "walks per silencing condition (the same walks for all)"),
                 loop_walks=(int, "walks per loop-closure probe, familiar and novel each"))
    for name, (kind, text) in sized.items():  # flags that --quick changes: the help gives both defaults
        add(f"--{name}", type=kind, help=f"{text} (default: {DEFAULTS[name]}; --quick: {QUICK[name]})")
    add("--si_floor", type=float, default=0.1,
        help="a place cell's spatial information must also exceed this, in bits (default: %(default)s)")
    add("--stability", type=float, default=0.5,
        help="a unit scores in a map only where the rate maps of its even and odd walks correlate at least "
             "this much (Pearson r); -1 turns the test off (default: %(default)s)")
    add("--att_spread", type=float, default=1.0,
        help="an attention lag is silent in a map where its mean weight varies by less than this many times "
             "1/(context+1), a slot's share under uniform attention; 0 turns it off (default: %(default)s)")
    add("--seed", type=int, default=1234, help="seed of analyze.py's walks, g0 and shuffles (default: %(default)s)")
    add("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, ... (default: %(default)s)")
    add("--no_figures", action="store_true", help="numbers only")
    add("--redo", action="store_true",
        help="analyse every run again; by default a run's metrics.json is read back, not recomputed, when it was "
             "made from the same ckpt.pt (byte for byte) by the same code (every .py file here) with the same "
             "analysis flags on the same kind of device")
    add("--quick", action="store_true", help="few walks, steps and shuffles: a smoke test, not a measurement")
    opts = parser.parse_args(argv)
    if len(opts.runs) > 1 and plots.cannot_write(opts.out):
        die(f"--out {opts.out}: cannot write there ({plots.cannot_write(opts.out)})")
    for name, value in (QUICK if opts.quick else DEFAULTS).items():
        if getattr(opts, name) is None:
            setattr(opts, name, value)
    if opts.device == "auto":
        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    lowest = dict(walk_len=1, max_walks=1, rate_steps=1, rate_walks=2, rate_maps=1, shuffles=1, silence_walks=1,
                  loop_walks=1)
    for name, low in lowest.items():
        if getattr(opts, name) is not None and getattr(opts, name) < low:
            die(f"--{name} must be an integer >= {low} (got {getattr(opts, name)})")
    if not opts.max_se >= 0:
        die(f"--max_se must be a number >= 0 (got {opts.max_se})")
    if not all(math.isfinite(x) for x in (opts.si_floor, opts.stability, opts.att_spread)):
        die("--si_floor, --stability and --att_spread must be finite numbers")
    if gpu.unavailable(opts.device):  # the same rule as train.py's
        die(gpu.unavailable(opts.device))
    return opts


class Progress:
    """Long work made visible on stderr: a line as a stage begins, then as its pieces end, at most
    every `every` seconds (and at its last piece), with the time so far and about how long the stage
    has left. Enough to tell slow from stuck; silent with quiet."""

    def __init__(self, quiet=False, every=10.0):
        self.quiet, self.every, self.t0 = quiet, every, time.time()

    def stage(self, name, total):
        self.name, self.total, self.done, self.t_stage, self.t_said = name, total, 0, time.time(), time.time()
        if not self.quiet:
            print(f"  {name} ({total}) | {time.time() - self.t0:.0f} s so far", file=sys.stderr, flush=True)

    def tick(self):
        self.done += 1
        now = time.time()
        if self.quiet or (now - self.t_said < self.every and self.done < self.total):
            return
        left = (now - self.t_stage) / self.done * max(self.total - self.done, 0)
        print(f"  {self.name}: {self.done}/{self.total} | {now - self.t0:.0f} s so far"
              + (f", about {left:.0f} s left of this part" if self.done < self.total else ""),
              file=sys.stderr, flush=True)
        self.t_said = now


def load_run(run_dir, device):
    """(model, env, ckpt) from run_dir/ckpt.pt, or from the official release's run_dir/checkpoint.pt;
    the task and the model are built from the checkpoint's own settings (checkpoint.configs). Any
    problem ends the program with one line."""
    if not os.path.exists(run_dir):
        die(f"{run_dir}: no such directory")
    if not os.path.isdir(run_dir):
        die(f"{run_dir}: not a directory; give a run folder of train.py, one holding ckpt.pt")
    path = next((os.path.join(run_dir, f) for f in ("ckpt.pt", "checkpoint.pt") if os.path.isfile(os.path.join(run_dir, f))),
                os.path.join(run_dir, "ckpt.pt"))
    if not os.path.isfile(path):
        die(f"{path}: no checkpoint here (train.py --out_dir {run_dir} writes one; the official release, checkpoint.pt)")
    if plots.cannot_write(run_dir):
        die(f"{run_dir}: cannot write metrics.json there ({plots.cannot_write(run_dir)}); copy the run folder")
    try:  # weights_only: tensors, plain values and official.ALLOWED only, and no code runs
        ckpt = checkpoint.load(path)
    except Exception as e:
        die(f"{path}: not a readable checkpoint (truncated, not a torch file, or carrying code: {type(e).__name__})")
    try:
        assert isinstance(ckpt, dict), f"it holds a {type(ckpt).__name__}, not a dict"
        missing = sorted(checkpoint.ANALYSIS_KEYS - set(ckpt))
        assert not missing, f"missing {', '.join(missing)}"
        task, cfg = checkpoint.configs(ckpt)
        assert "walk_len" in ckpt["args"], "missing walk_len"  # the length of its training walks
        model = Model(cfg)
        model.load_state_dict(ckpt["model"])  # float32 weights, whatever dtype they were saved in
        assert (cfg.n_obs, cfg.n_actions) == (task.n_obs, task.n_actions), "model and task disagree"
        env = GridWorld(task, device)
        if "maps" in ckpt:  # an official run's own familiar maps
            env.maps = ckpt["maps"].to(env.device)
    except Exception as e:
        why = " ".join(str(e).split())[:200]  # one line, however long the message
        die(f"{path}: not a checkpoint this code can read ({type(e).__name__}: {why})")
    ckpt["path"], ckpt["sha256"] = path, compare.sha256([path])  # which file (ckpt.pt, or the official
    # release's checkpoint.pt), and its bytes' fingerprint
    return model.to(device).eval(), env, ckpt


def unit_kinds(model):
    """Kind ('ffn', 'att', 'g'), layer and a name for each column of unit_activity."""
    cfg = model.cfg
    units = [("ffn", layer, f"FFN L{layer} #{i}") for layer in range(cfg.n_layer) for i in range(cfg.d_ff)]
    units += [("att", layer, f"att L{layer} H{h} lag {k}") for layer in range(cfg.n_layer)
              for h in range(cfg.n_head) for k in range(lag_units(cfg))]
    units += [("g", -1, f"g #{i}") for i in range(cfg.d_rnn)]
    kinds, layers, names = zip(*units)
    return np.array(kinds), np.array(layers), list(names)


@torch.no_grad()
def place_analysis(model, env, opts, gen, rng, progress):
    """Per familiar map 0..rate_maps-1: long walks and every unit's place.score_map; steps before the
    context is full are left out, so every lag unit is defined. A unit's score is its score averaged
    over maps, tested against its shuffles averaged over maps (shuffle j of every map). Returns the
    means over maps of score_map's si, null, silent, unstable, stability and obs_share, and of each
    unit's standard deviation over the steps (activity_sd); map 0's rate maps (rate) and tokens
    (tokens), the number of maps and the steps per map."""
    C, kinds, per_map = span(model.cfg), unit_kinds(model)[0], []
    progress.stage("rate maps and shuffle tests, map by map", min(opts.rate_maps, env.num_maps))
    for m in range(min(opts.rate_maps, env.num_maps)):
        obs, act, pos, _ = draw_walks(env, opts.rate_walks, opts.rate_steps, gen, map_id=m)
        g0 = model.random_g0(opts.rate_walks, generator=gen, device=env.device)
        units = forward_chunked(model, obs[:, :-1], act, g0, record=True)[1][:, C - 1:]  # (W, steps - C + 1, U)
        nodes = pos[:, C:]  # (W, steps)
        scores = place.score_map(units, nodes, env.n_nodes, kinds, opts.shuffles, rng,
                                 opts.stability, least={"att": opts.att_spread / (C + 1)},
                                 node_obs=env.maps[m].cpu().numpy())
        per_map.append(dict(scores, activity_sd=units.flatten(0, 1).std(0).cpu().numpy()))
        progress.tick()
    keys = ("si", "null", "silent", "unstable", "stability", "obs_share", "activity_sd")
    out = {key: np.mean([scores[key] for scores in per_map], 0) for key in keys}
    return dict(out, rate=per_map[0]["rate"], tokens=env.maps[0].cpu().numpy(), maps=len(per_map),
                steps=nodes.numel())


def silenced_errors(model, env, walk_len, opts, progress):
    """errors(silenced) -> (WM, RM error) on familiar maps with the FFN neurons `silenced` (indices,
    all layers pooled) zeroed: opts.silence_walks walks, the same walks and g0 every call."""
    n_layer = model.cfg.n_layer

    def errors(silenced):
        mask = torch.ones(n_layer * model.cfg.d_ff, device=env.device)
        mask[torch.as_tensor(silenced, dtype=torch.long)] = 0
        gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["silencing"])  # the same walks each time
        hooks = silencing.silence(model, mask.view(n_layer, -1))
        try:
            r = error_rates(model_predictor(model, gen), env, reach(model.cfg, walk_len), walk_len, gen, max_se=0,
                            max_walks=opts.silence_walks)
        finally:
            for h in hooks:
                h.remove()
        progress.tick()
        return np.array([r["wm_error"], r["rm_error"]])
    return errors


def settings(opts):
    """The analysis flags that change the numbers, and the kind of device (a CUDA generator draws
    other walks than a CPU one): one string, kept in metrics.json."""
    keys = ("walk_len", "max_se", "max_walks", "rate_steps", "rate_walks", "rate_maps", "shuffles", "si_floor",
            "stability", "att_spread", "silence_walks", "loop_walks", "seed")
    return " ".join([f"{k}={getattr(opts, k)}" for k in keys] + [f"device={torch.device(opts.device).type}"])


def provenance(ckpt, opts):
    """What an analysis's numbers are a function of: the checkpoint's bytes, the code and the flags."""
    return dict(checkpoint=ckpt["sha256"], code=compare.code_version(), analysis=settings(opts))


def previous_metrics(run_dir, ckpt, opts):
    """run_dir/metrics.json if it was made from this very checkpoint, by this very code, with these
    flags on this kind of device, and, if figures are wanted, drawn; else None (analyse anew)."""
    path = os.path.join(run_dir, "metrics.json")
    try:
        if not opts.no_figures and not os.path.exists(os.path.join(run_dir, "rate_maps.png")):
            return None  # figures wanted that an earlier --no_figures analysis did not draw
        with open(path) as f:
            m = json.load(f)
        return m if all(m.get(k) == v for k, v in provenance(ckpt, opts).items()) else None
    except (OSError, ValueError, AttributeError):
        return None


def memory_errors(model, env, walk_len, opts, progress):
    """WM and RM error on familiar and novel maps (each ± SE, with its walks and steps) under each of
    model.splits: the exact split, and with segments the official release's too ("official_"); and
    the ideal observer's RM error, the least what a prediction sees allows."""
    m, ways = {}, splits(model.cfg, walk_len)
    progress.stage("memory errors: familiar maps, novel maps, the ideal observer", 3)
    for novel in (False, True):
        pre = "novel_" if novel else ""
        gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS[pre + "errors"])
        for name, (first, scored) in ways.items():
            r = error_rates(model_predictor(model, gen), env, first, walk_len, gen, novel, opts.max_se,
                            opts.max_walks, scored=scored)
            m.update({pre + name + k: v for k, v in r.items()})
        progress.tick()
    gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["ideal"])
    first = ways[""][0]
    r = error_rates(ideal_observer(env, first), env, first, walk_len, gen, False, opts.max_se, opts.max_walks,
                    batch=max(1, 4096 // walk_len))
    m["ideal_rm_error"], m["ideal_rm_error_se"] = r["rm_error"], r["rm_error_se"]
    progress.tick()
    return m


def place_fractions(scores, is_place, is_token, kinds, layers, n_layer):
    """Per kind of unit ("ffn", "att", "g") and per layer: the fraction of place cells and of token
    cells, the mean place score, the fractions of silent and unstable units, the mean stability, and
    the mean share of a place cell's rate map that the node's token explains (None without place cells).
    scores: place_analysis's (si, silent, unstable, stability, obs_share: one value per unit)."""
    m = {}
    for kind in ("ffn", "att", "g"):
        sel = kinds == kind
        m[f"{kind}_place_cell_fraction"], m[f"{kind}_si_mean"] = is_place[sel].mean(), scores["si"][sel].mean()
        for name in ("silent", "unstable"):
            m[f"{kind}_{name}_fraction"] = scores[name][sel].mean()
        m[f"{kind}_stability_mean"] = scores["stability"][sel].mean()
        m[f"{kind}_place_obs_share"] = scores["obs_share"][sel & is_place].mean() if is_place[sel].any() else None
        m[f"{kind}_token_cell_fraction"] = is_token[sel].mean()
        for layer in range(n_layer if kind != "g" else 0):
            here = sel & (layers == layer)
            m[f"{kind}_place_cell_fraction_layer{layer}"] = is_place[here].mean()
            m[f"{kind}_token_cell_fraction_layer{layer}"] = is_token[here].mean()
            m[f"{kind}_place_obs_share_layer{layer}"] = (scores["obs_share"][here & is_place].mean()
                                                         if is_place[here].any() else None)
    return m


def loop_closure(model, env, opts, progress):
    """TEM-t's loop probe: the accuracy at the step that closes a square, on familiar and novel maps."""
    m = {"loop_walks": opts.loop_walks}
    progress.stage("loop closure, familiar and novel maps", 2)
    for novel in (False, True):
        gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["novel_loop" if novel else "loop"])
        m[("novel_" if novel else "") + "loop_closure_accuracy"] = loop_accuracy(model, env, opts.loop_walks, gen, novel)
        progress.tick()
    return m


def analyze_run(run_dir, model, env, ckpt, opts):
    """Every metric of one run as a flat dict, and the files to write next to it. Each part is a
    function that returns a dict of metrics: a new metric is a function and one line here."""
    args, cfg = ckpt["args"], model.cfg
    walk_len, chance = opts.walk_len or args["walk_len"], 1 - 1 / env.n_obs
    m = dict(run=run_dir, step=ckpt["step"], act=cfg.act, alpha=cfg.alpha, beta=cfg.beta, num_maps=env.num_maps,
             seed=env.cfg.seed, chance=chance, walk_len=walk_len, **provenance(ckpt, opts))
    m.update({p: getattr(cfg, p) for p in settings_of(cfg.act)})  # what the activation is built from (its label)
    progress = Progress()
    m.update(memory_errors(model, env, walk_len, opts, progress))
    gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["rate_maps"])
    scores = place_analysis(model, env, opts, gen, np.random.default_rng(opts.seed + SEEDS["shuffles"]), progress)
    kinds, layers, names = unit_kinds(model)
    is_place = place.place_cells(scores["si"], scores["null"], opts.si_floor)
    is_token = is_place & (scores["obs_share"] >= TOKEN_CELL)  # a place cell whose map is mostly the token
    m.update(rate_maps=scores["maps"], rate_steps_per_map=scores["steps"], shuffles=opts.shuffles)
    m.update(place_fractions(scores, is_place, is_token, kinds, layers, cfg.n_layer))
    n_tokens = [len(env.maps[i].unique()) for i in range(scores["maps"])]  # tokens present in each map
    m["obs_share_chance"] = (np.mean(n_tokens) - 1) / (env.n_nodes - 1)  # ~ eta^2 of a map unrelated to them
    m.update(loop_closure(model, env, opts, progress))
    ffn = kinds == "ffn"
    progress.stage("silencing, condition by condition", silencing.conditions(cfg.n_layer))
    m.update(silencing.silencing_test(silenced_errors(model, env, walk_len, opts, progress), cfg.d_ff, cfg.n_layer,
                                      scores["si"][ffn], scores["obs_share"][ffn], is_place[ffn],
                                      scores["activity_sd"][ffn],
                                      np.random.default_rng(opts.seed + SEEDS["silence_draws"])))
    log = plots.read_log(os.path.join(run_dir, "log.csv"))
    m.update(compare.learning_speed(log))
    m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in
         ((k, v.item() if hasattr(v, "item") else v) for k, v in m.items())}  # plain JSON numbers
    m.update(args=args, task_config=asdict(env.cfg), model_config=asdict(cfg))  # the run's settings, for compare.py
    files = {"metrics.json": json.dumps(m, indent=1) + "\n"}
    if not opts.no_figures:
        title = f"{run_dir}: {plots.act_label(m)}, {plots.task_label(asdict(env.cfg))}, step {ckpt['step']}"
        if log is not None:
            files["training.png"] = plots.fig_training(log, chance, title)
        files["rate_maps.png"] = plots.fig_rate_maps(scores, is_place, kinds, names, env.size)
        files["place_scores.png"] = plots.fig_scores(scores["si"], is_place, kinds, layers, cfg.n_layer)
        silenced = plots.fig_silencing(m, silencing.FRACTIONS, silencing.DRAWS, cfg.n_layer * cfg.d_ff, chance)
        files.update({"silencing.png": silenced} if silenced else {})
    return m, files


# The metrics of compare.SUMMARY that summary() prints in its lines; it prints the others at its end.
SHOWN = ("wm_error", "rm_error", "novel_wm_error", "novel_rm_error", "ffn_place_cell_fraction", "ffn_token_cell_fraction",
         "att_place_cell_fraction", "ffn_si_mean", "att_si_mean", "rm_auc", "ideal_rm_error", "loop_closure_accuracy",
         "novel_loop_closure_accuracy")


def summary(m, n_layer):
    """The run's numbers on stdout, a few lines."""
    def num(key):
        return "  n/a" if m[key] is None else f"{m[key]:.3f}"

    arch = checkpoint.upgrade(m["args"])["arch"]  # a run from before --arch: TEM-t
    print(f"{m['run']}: {plots.act_label(m)}, {arch} model, {plots.task_label(m['task_config'])}, step {m['step']}. "
          f"Errors over walks of {m['walk_len']} steps, ± SE over walks (chance {m['chance']:.3f}):")
    for pre, name in (("", "familiar"), ("novel_", "novel")):
        print(f"  {name:8s}  WM {num(pre + 'wm_error')} ± {num(pre + 'wm_error_se')} ({m[pre + 'wm_steps']} steps)"
              f"   RM {num(pre + 'rm_error')} ± {num(pre + 'rm_error_se')} ({m[pre + 'rm_steps']} steps)"
              f"   [{m[pre + 'walks']} walks]")
    if "official_wm_error" in m:
        print(f"  official split (a segment's last prediction; WM when its node is in the segment or its memory): "
              f"familiar WM {num('official_wm_error')} ± {num('official_wm_error_se')} ({m['official_wm_steps']}) "
              f"RM {num('official_rm_error')} ± {num('official_rm_error_se')} ({m['official_rm_steps']}); "
              f"novel WM {num('novel_official_wm_error')} RM {num('novel_official_rm_error')}")
    print(f"  the ideal observer (knows the maps, sees what the model sees): familiar RM {num('ideal_rm_error')} "
          f"± {num('ideal_rm_error_se')}, the least this context allows")
    layers = ", ".join(f"layer {i} {m[f'ffn_place_cell_fraction_layer{i}']:.1%}" for i in range(n_layer))
    print(f"  place cells ({m['rate_maps']} maps x {m['rate_steps_per_map']} steps, {m['shuffles']} shuffles): "
          f"FFN {m['ffn_place_cell_fraction']:.1%} ({layers}), attention {m['att_place_cell_fraction']:.1%}, "
          f"g {m['g_place_cell_fraction']:.1%}; mean score: FFN {m['ffn_si_mean']:.3f}, "
          f"attention {m['att_si_mean']:.3f} bits")
    layers = ", ".join(f"layer {i} {num(f'ffn_place_obs_share_layer{i}')}" for i in range(n_layer))
    print(f"  share of a place cell's rate map that the node's token explains (eta^2, mean; chance "
          f"{m['obs_share_chance']:.3f}): FFN {num('ffn_place_obs_share')} ({layers}), "
          f"attention {num('att_place_obs_share')}, g {num('g_place_obs_share')}")
    layers = ", ".join(f"layer {i} {m[f'ffn_token_cell_fraction_layer{i}']:.1%}" for i in range(n_layer))
    print(f"  token cells, place cells with eta^2 >= {TOKEN_CELL}: FFN {m['ffn_token_cell_fraction']:.1%} ({layers}), "
          f"attention {m['att_token_cell_fraction']:.1%}, g {m['g_token_cell_fraction']:.1%} of the units")
    for kind, name in (("ffn", "FFN"), ("att", "attention"), ("g", "g")):
        print(f"  {name}: silent {m[kind + '_silent_fraction']:.1%}, unstable {m[kind + '_unstable_fraction']:.1%} "
              f"of units x maps (scored 0); mean split-half r {m[kind + '_stability_mean']:.2f}")
    speed = ", ".join(f"RM <= {t:g} at step {m[f'steps_to_rm_{t:g}']} ({m[f'seconds_to_rm_{t:g}']:.0f} s)"
                      if m[f"steps_to_rm_{t:g}"] is not None else f"RM <= {t:g} not reached" for t in compare.RM_THRESHOLDS)
    flat = compare.at_plateau(m)
    if flat is not None:
        speed += (f"; over the last quarter RM fell {m['rm_fall_last_quarter']:.3f} ± {m['rm_fall_last_quarter_se']:.3f}: "
                  + ("at its plateau" if flat else f"still learning (more than {compare.PLATEAU_SE} SE)"))
    if m["rm_auc"] is not None:
        print(f"  learning, from log.csv: {speed}; mean RM over training (rm_auc) {num('rm_auc')}")
    else:
        log = os.path.join(m["run"], "log.csv")
        print(f"  learning: {log} is {'unreadable' if os.path.exists(log) else 'missing'}, so no learning speed")
    print(f"  loop closure accuracy: familiar {num('loop_closure_accuracy')}, "
          f"novel {num('novel_loop_closure_accuracy')}")
    for fraction in silencing.FRACTIONS:
        tag = silencing.tag(fraction=fraction)
        print(f"  {tag} ({m[tag + '_k']} FFN, eta^2 {num(tag + '_place_obs_share')}): most place-like "
              f"WM {num(tag + '_place_wm_error')} RM {num(tag + '_place_rm_error')} | others of their layers "
              f"WM {num(tag + '_random_wm_error')} RM {num(tag + '_random_rm_error')}")
    for layer in range(n_layer):
        tag = silencing.tag(layer=layer)
        print(f"  {tag} ({m[tag + '_k']} of its active place cells | of its active others, median sd "
              f"{num(tag + '_place_activity_sd')} | {num(tag + '_other_activity_sd')}): "
              f"WM {num(tag + '_place_wm_error')} | {num(tag + '_other_wm_error')}, "
              f"RM {num(tag + '_place_rm_error')} | {num(tag + '_other_rm_error')}")
    more = [k for k in compare.SUMMARY if k not in SHOWN and k in m]  # metrics added to compare.SUMMARY
    if more:
        print("  " + ", ".join(f"{k} {num(k)}" for k in more))


@torch.no_grad()
def main(argv=None):
    opts = parse_args(argv)
    loaded = [(d, *load_run(d, opts.device)) for d in opts.runs]  # every input checked before any work
    twice = compare.given_twice([(d, ckpt["sha256"]) for d, _, _, ckpt in loaded])
    if twice:
        die(f"{twice[0]} and {twice[1]} hold the same checkpoint: it would count as two seeds; give each run once")
    for d, model, _, _ in loaded:
        if opts.rate_steps <= span(model.cfg):
            die(f"--rate_steps {opts.rate_steps} must exceed the context ({span(model.cfg)}) of {d}")
    runs = []
    for d, model, env, ckpt in loaded:
        m = None if opts.redo else previous_metrics(d, ckpt, opts)
        if m is None:
            m, files = analyze_run(d, model, env, ckpt, opts)
            plots.write_all(d, files)  # only now, with everything computed, is anything in d replaced
            done = f"wrote {', '.join(files)} in {d}"
        else:
            done = (f"read back {d}/metrics.json: made from this very checkpoint by this very code, with the same "
                    "flags on the same kind of device (--redo recomputes)")
        summary(m, model.cfg.n_layer)
        for k in ("args", "task_config", "model_config"):
            m.pop(k, None)
        print("  " + done)
        runs.append(dict(dir=d, args=ckpt["args"], metrics=m))
    if len(runs) > 1:
        compare.compare(runs, opts.out, not opts.no_figures)


if __name__ == "__main__":
    main()
