"""
Analyse runs of train.py: memory errors, place cells, silencing and loop closure, the measures of
Kim et al. (NeurIPS 2023, sections 3-4 and figures 3-5) and some beyond them.

    python analyze.py out/                          # one run: metrics.json and PNGs in out/
    python analyze.py out_a0/ out_a10/ out_gelu/    # each as above, then compare.py's runs.csv,
                                                    # summary.csv and figures in --out
    python analyze.py out/ --quick                  # a smoke test, not a measurement

Writes metrics.json (flat keys) and PNG figures (drawn by plots.py) into each run folder, only once
everything has been computed. Choices (details in each function's docstring):
- Error rates: on fresh walks drawn as in training (its walk_len and context), batch after batch
  until each standard error is below --max_se. The SE treats walks as clusters (steps within a
  walk are correlated): cluster_se.
- Rate maps: --rate_walks walks of --rate_steps steps in each of familiar maps 0..--rate_maps-1;
  the activity at step t belongs to the node asked about, pos[t+1].
- Place cells: Skaggs' spatial information with each rate map's minimum subtracted
  (spatial_information), tested against per-walk circular shifts of the positions
  (shuffle_test): SI, averaged over maps, above the 99th percentile of the shuffles and --si_floor.
- Silencing: the 1, 5, 10, 25% most place-like FFN neurons (all layers pooled) against as many
  random ones (5 draws), on the same familiar-map walks.
- Loop closure: a random walk filling the context, then a 4-step square back to its last node.
Every draw comes from analyze.py's own generators (--seed), never from the training stream, and
each part has its own, so resizing one leaves the others be.
"""

import argparse
import csv
import json
import math
import os
import sys

import numpy as np
import torch

import compare
import plots
from env import GridWorld, visited_in_context
from model import Model, ModelConfig

# Flags left unset take DEFAULTS, or QUICK with --quick.
DEFAULTS = dict(max_se=0.005, max_walks=20000, rate_steps=4000, rate_walks=4, rate_maps=4,
                shuffles=100, silence_walks=256, loop_walks=1024)
QUICK = dict(max_se=0.05, max_walks=128, rate_steps=300, rate_walks=1, rate_maps=1,
             shuffles=20, silence_walks=32, loop_walks=64)
METHOD = 3  # raise it when a change of method changes the numbers: older metrics.json are redone
SILENCE_FRACTIONS = (0.01, 0.05, 0.10, 0.25)  # of all FFN neurons, all layers pooled
SILENCE_DRAWS = 5  # random sets of each size
# Offsets from --seed of each part's own random stream.
SEEDS = dict(errors=0, novel_errors=1, rate_maps=2, shuffles=3, silencing=4, silence_draws=5, loop=6,
             novel_loop=7)
NEEDED_ARGS = ("act", "alpha", "beta", "size", "n_obs", "num_maps", "n_actions", "seed", "context",
               "walk_len", "d_rnn")



def die(msg):
    """Bad input: one line on stderr, exit status 2."""
    print(f"analyze.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Analyse runs of train.py: memory errors, place cells, "
                                            "silencing, loop closure.")
    p.error = die  # argparse's own complaints: one line, exit 2

    def both(k):  # the help of a flag that --quick changes gives both defaults
        return f" (default: {DEFAULTS[k]}; --quick: {QUICK[k]})"

    add = p.add_argument
    add("runs", nargs="+", help="run folders, each holding ckpt.pt (and log.csv) from train.py")
    add("--out", default=".", help="where runs.csv and the comparison figures go, for several runs "
                                   "(default: %(default)s)")
    add("--walk_len", type=int, help="steps per walk for the error rates (default: the run's training walk_len)")
    add("--max_se", type=float, help="draw walks until every error rate's standard error is below this" + both("max_se"))
    add("--max_walks", type=int, help="cap on walks per error estimate" + both("max_walks"))
    add("--rate_steps", type=int, help="steps per long walk for rate maps" + both("rate_steps"))
    add("--rate_walks", type=int, help="long walks per map for rate maps" + both("rate_walks"))
    add("--rate_maps", type=int, help="rate maps in familiar maps 0..rate_maps-1, scores averaged over them"
                                      + both("rate_maps"))
    add("--shuffles", type=int, help="circular-shift shuffles per unit and map for the place-cell test"
                                     + both("shuffles"))
    add("--si_floor", type=float, default=0.1,
        help="a place cell's spatial information must also exceed this, in bits (default: %(default)s)")
    add("--silence_walks", type=int, help="walks per silencing condition (the same walks for all)"
                                          + both("silence_walks"))
    add("--loop_walks", type=int, help="walks per loop-closure probe, familiar and novel each" + both("loop_walks"))
    add("--seed", type=int, default=1234, help="seed of analyze.py's walks, g0 and shuffles (default: %(default)s)")
    add("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, ... (default: %(default)s)")
    add("--no_figures", action="store_true", help="numbers only")
    add("--redo", action="store_true",
        help="analyse every run again; by default a run whose metrics.json is newer than its ckpt.pt and "
             "was made with the same analysis flags is read back, not recomputed")
    add("--quick", action="store_true", help="few walks, steps and shuffles: a smoke test, not a measurement")
    opts = p.parse_args(argv)
    for k, v in (QUICK if opts.quick else DEFAULTS).items():
        if getattr(opts, k) is None:
            setattr(opts, k, v)
    if opts.device == "auto":
        opts.device = "cuda" if torch.cuda.is_available() else "cpu"
    for k in ("walk_len", "max_walks", "rate_steps", "rate_walks", "rate_maps", "shuffles", "silence_walks",
              "loop_walks"):
        if getattr(opts, k) is not None and getattr(opts, k) < 1:
            die(f"--{k} must be a positive integer (got {getattr(opts, k)})")
    if not opts.max_se >= 0:
        die(f"--max_se must be a number >= 0 (got {opts.max_se})")
    if not math.isfinite(opts.si_floor):
        die(f"--si_floor must be a finite number (got {opts.si_floor})")
    if opts.device != "cpu" and not (opts.device.startswith("cuda") and torch.cuda.is_available()):
        die(f"--device {opts.device!r} is not available here; use auto or cpu")
    return opts


def load_run(run_dir, device):
    """(model, env, ckpt) from run_dir/ckpt.pt; any problem ends the program with one line."""
    path = os.path.join(run_dir, "ckpt.pt")
    if not os.path.exists(run_dir):
        die(f"{run_dir}: no such directory")
    if not os.path.isdir(run_dir):
        die(f"{run_dir}: not a directory; give a run folder of train.py, one holding ckpt.pt")
    if not os.path.isfile(path):
        die(f"{path}: no checkpoint here (train.py --out_dir {run_dir} writes one)")
    try:  # weights_only: a checkpoint holds only tensors and plain values, and no code runs
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        die(f"{path}: not a readable checkpoint (truncated or not a torch file: {type(e).__name__})")
    try:
        assert isinstance(ckpt, dict), f"it holds a {type(ckpt).__name__}, not a dict"
        missing = [k for k in ("model", "model_config", "args", "step") if k not in ckpt]
        missing += [k for k in NEEDED_ARGS if k not in ckpt.get("args", {})]
        assert not missing, f"missing {', '.join(missing)}"
        args = argparse.Namespace(**ckpt["args"])
        model = Model(ModelConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])  # float32 weights, whatever dtype they were saved in
        cfg = model.cfg
        same = (cfg.n_obs, cfg.n_actions, cfg.context) == (args.n_obs, args.n_actions, args.context)
        assert same, "model and args disagree"
        env = GridWorld(args.size, args.n_obs, args.num_maps, args.n_actions, args.seed, device)
    except Exception as e:
        why = " ".join(str(e).split())[:200]  # one line, however long the message
        die(f"{path}: not a checkpoint of this project's model ({type(e).__name__}: {why})")
    return model.to(device).eval(), env, ckpt


def draw_walks(env, batch, steps, gen, novel=False, map_id=None):
    """Random walks as in training: obs (B, steps+1), act (B, steps), pos (B, steps+1) and the
    maps walked on (B, n_nodes). Novel maps are drawn here, since env.walk does not return them."""
    _, act, pos, map_id = env.walk(batch, steps, map_id=map_id, generator=gen)
    maps = (torch.randint(env.n_obs, (batch, env.n_nodes), generator=gen, device=env.device)
            if novel else env.maps[map_id])
    return maps.gather(1, pos), act, pos, maps


def unit_activity(rec, context):
    """Every unit of one forward pass as (B, T, U): FFN neurons of each layer, then the attention
    softmax neurons (layer, head, lag k: the weight query t gives observation t-k, 0 if t-k < 0),
    then g[t+1], the position vector of the node query t asks about."""
    parts = list(rec["ffn"])
    for a in rec["att"]:  # (B, H, T, T)
        B, H, T, _ = a.shape
        src = torch.arange(T, device=a.device)[:, None] - torch.arange(context, device=a.device)  # (T, C)
        lagged = a.gather(3, src.clamp(min=0).expand(B, H, T, context)) * (src >= 0)  # (B, H, T, C)
        parts.append(lagged.transpose(1, 2).flatten(2))  # (B, T, H*C)
    return torch.cat(parts + [rec["g"][:, 1:]], 2)


@torch.no_grad()
def forward_chunked(model, obs, act, g0, chunk=256, record=False):
    """model(obs, act, g0) for walks of any length, chunk by chunk: logits (B, T, n_obs) and, with
    record, unit_activity (B, T, U). A prediction at step t depends only on obs[t-context+1..t] and
    g[t+1], so g is path-integrated once and chunks overlap by context-1 steps, each keeping only
    the predictions whose window lies inside it (the first chunk keeps all)."""
    C, T = model.cfg.context, obs.shape[1]
    chunk = max(chunk, 2 * C)
    g = model.path_integrate(act, g0)  # (B, T+1, d_rnn)
    logits, units, s = [], [], 0
    while True:
        e = min(s + chunk, T)
        rec = {} if record else None
        out = model(obs[:, s:e], act[:, s:e], g[:, s], rec)  # (B, e-s, n_obs)
        keep = 0 if s == 0 else C - 1
        logits.append(out[:, keep:])
        if record:
            units.append(unit_activity(rec, C)[:, keep:])
        if e == T:
            return torch.cat(logits, 1), torch.cat(units, 1) if record else None
        s = e - (C - 1)


def model_predictor(model, gen):
    """predict(obs, act, pos, maps) -> arg-max tokens (B, T), from a fresh random g0 per walk."""
    def predict(obs, act, pos, maps):
        g0 = torch.randn(obs.shape[0], model.cfg.d_rnn, generator=gen, device=obs.device)
        return forward_chunked(model, obs[:, :-1], act, g0 / math.sqrt(model.cfg.d_rnn))[0].argmax(-1)
    return predict


def cluster_se(wrong, steps):
    """Error rate sum(wrong)/sum(steps) over m walks and its standard error with walks as clusters
    (steps of one walk are correlated, walks are independent): the ratio estimator's linearised SE
    sqrt(m/(m-1) * sum_i (w_i - p n_i)^2) / sum_i n_i. nan where there are no steps."""
    n = steps.sum()
    if n == 0 or len(steps) < 2:
        return float("nan"), float("nan")
    p = wrong.sum() / n
    return float(p), float(math.sqrt(len(steps) / (len(steps) - 1) * ((wrong - p * steps) ** 2).sum()) / n)


@torch.no_grad()
def error_rates(predict, env, context, walk_len, gen, novel=False, max_se=0.005, max_walks=20000, batch=None):
    """WM and RM error of predict(obs, act, pos, maps) -> tokens (B, T) on fresh walks, drawn a batch
    at a time until both standard errors are below max_se or max_walks walks are used."""
    batch = batch or max(8, min(256, 16384 // walk_len))  # ~16k steps a batch, whatever the walk length
    counts, n = [], 0  # per walk: WM wrong, WM steps, RM wrong, RM steps
    while n < max_walks:
        b = min(batch, max_walks - n)
        obs, act, pos, maps = draw_walks(env, b, walk_len, gen, novel)
        wrong = predict(obs, act, pos, maps) != obs[:, 1:]  # (B, T)
        wm = visited_in_context(pos, context)
        per_walk = [(wrong & wm).sum(1), wm.sum(1), (wrong & ~wm).sum(1), (~wm).sum(1)]
        counts.append(torch.stack(per_walk, 1).cpu())
        n += b
        c = torch.cat(counts).double().numpy()
        out = {"walks": n}
        for name, i in (("wm", 0), ("rm", 2)):
            out[f"{name}_error"], out[f"{name}_error_se"] = cluster_se(c[:, i], c[:, i + 1])
            out[f"{name}_steps"] = int(c[:, i + 1].sum())
        if out["wm_error_se"] < max_se and out["rm_error_se"] < max_se:  # False while nan
            break
    return out


def rate_maps(activity, pos, n_nodes):
    """Mean activity per node: activity (T, U), pos (T,) -> rate (U, n_nodes) (0 where never
    visited) and occupancy (n_nodes,) in steps."""
    a, p = torch.as_tensor(activity, dtype=torch.float32), torch.as_tensor(pos)
    occ = torch.bincount(p, minlength=n_nodes)
    rate = torch.zeros(n_nodes, a.shape[1], device=a.device).index_add_(0, p, a) / occ.clamp(min=1)[:, None]
    return rate.T.cpu().double().numpy(), occ.cpu().numpy()


def spatial_information(rate, occupancy):
    """Skaggs' spatial information in bits, SI = sum_i p_i (l_i/lbar) log2(l_i/lbar), of each rate map.

    rate (..., n_nodes) is mean activity per node, occupancy (n_nodes,) the visits (p_i = its share;
    unvisited nodes are left out). Signed activity is made non-negative by subtracting the map's own
    minimum over visited nodes: l_i = r_i - min_j r_j, lbar = sum_i p_i l_i. SI is thus invariant to
    adding a constant to a unit, and 0 for a flat map (a constant unit scores exactly 0)."""
    vis = np.asarray(occupancy) > 0
    p = np.asarray(occupancy, dtype=float)[vis] / np.sum(occupancy)
    lam = np.asarray(rate, dtype=float)[..., vis]
    lam = lam - lam.min(-1, keepdims=True)
    lbar = (lam * p).sum(-1, keepdims=True)
    ratio = np.divide(lam, lbar, out=np.zeros_like(lam), where=lbar > 0)
    return (p * ratio * np.log2(np.where(ratio > 0, ratio, 1.0))).sum(-1)


def shuffle_test(activity, pos, n_nodes, shuffles, rng):
    """SI of every unit and its null distribution: activity (W, T, U), pos (W, T) of W walks (or
    (T, U) and (T,) for one) -> si (U,), null (shuffles, U).

    Each shuffle circularly shifts every walk's positions against its activity by the walk's own
    random offset in [T/10, 9T/10]: each unit keeps its time course (and any offset a walk's random
    g0 gives it), the occupancy is unchanged, and only the pairing of activity with place is broken."""
    a, p = torch.as_tensor(activity, dtype=torch.float32), torch.as_tensor(pos)
    a, p = (a, p) if p.dim() == 2 else (a[None], p[None])
    W, T = p.shape
    a = a.reshape(W * T, -1)
    rate, occ = rate_maps(a, p.flatten(), n_nodes)
    shifts = rng.integers(T // 10, max(T - T // 10, T // 10 + 1), size=(shuffles, W))
    shifts = torch.as_tensor(shifts, device=p.device)
    t = torch.arange(T, device=p.device)
    null = [spatial_information(rate_maps(a, p.gather(1, (t - s[:, None]) % T).flatten(), n_nodes)[0], occ)
            for s in shifts]
    return spatial_information(rate, occ), np.stack(null)


def place_cells(si, null, floor=0.1, pct=99.0):
    """A unit is a place cell if its SI beats the pct-th percentile of its own shuffles and the floor."""
    return (si > np.percentile(null, pct, axis=0)) & (si > floor)


def silent_units(spread, kinds, frac=0.01):
    """True for the units whose rate map in a map barely varies: a spread (max - min over nodes)
    below frac of the median spread of their kind. SI is scale-free, so a unit whose activity is all
    but zero (an attention lag weighted 1e-20 everywhere) could score the maximum on rounding noise
    alone. place_analysis scores a silent unit 0 in that map: it tells the network nothing of place."""
    silent = np.zeros(len(spread), dtype=bool)
    for kind in np.unique(kinds):
        sel = kinds == kind
        silent[sel] = spread[sel] < frac * np.median(spread[sel])
    return silent


def unit_kinds(cfg):
    """Kind ('ffn', 'att', 'g'), layer and a name for each column of unit_activity."""
    kinds, layers, names = [], [], []
    for l in range(cfg.n_layer):
        kinds += ["ffn"] * cfg.d_ff; layers += [l] * cfg.d_ff
        names += [f"FFN L{l} #{i}" for i in range(cfg.d_ff)]
    for l in range(cfg.n_layer):
        n = cfg.n_head * cfg.context
        kinds += ["att"] * n; layers += [l] * n
        names += [f"att L{l} H{h} lag {k}" for h in range(cfg.n_head) for k in range(cfg.context)]
    kinds += ["g"] * cfg.d_rnn; layers += [-1] * cfg.d_rnn
    names += [f"g #{i}" for i in range(cfg.d_rnn)]
    return np.array(kinds), np.array(layers), names


@torch.no_grad()
def place_analysis(model, env, opts, gen, rng):
    """Per familiar map 0..rate_maps-1: long walks, every unit's rate map, SI and shuffles. A unit's
    score is its SI averaged over maps; its null is the shuffles averaged over maps (shuffle j of
    every map), so the test asks whether the mean SI beats chance. Steps before the context is full
    are left out, so every lag unit is defined; activity at step t belongs to node pos[t+1]. A unit
    silent in a map (silent_units) scores 0 there, in its shuffles too.
    Returns the scores, their nulls, map 0's rate maps, the fraction of maps each unit is silent in,
    the number of maps and the steps per map."""
    C, si, null, silent = model.cfg.context, [], [], []
    kinds = unit_kinds(model.cfg)[0]
    for m in range(min(opts.rate_maps, env.num_maps)):
        obs, act, pos, _ = draw_walks(env, opts.rate_walks, opts.rate_steps, gen, map_id=m)
        g0 = torch.randn(opts.rate_walks, model.cfg.d_rnn, generator=gen, device=env.device)
        g0 = g0 / math.sqrt(model.cfg.d_rnn)
        units = forward_chunked(model, obs[:, :-1], act, g0, record=True)[1][:, C - 1:]  # (W, steps, U)
        nodes = pos[:, C:]  # (W, steps)
        s, n = shuffle_test(units, nodes, env.n_nodes, opts.shuffles, rng)
        rate, occ = rate_maps(units.flatten(0, 1), nodes.flatten(), env.n_nodes)
        quiet = silent_units(np.ptp(rate[:, occ > 0], axis=1), kinds)  # (U,)
        si.append(np.where(quiet, 0.0, s)), null.append(np.where(quiet, 0.0, n)), silent.append(quiet)
        first = rate if m == 0 else first
    return np.mean(si, 0), np.mean(null, 0), first, np.mean(silent, 0), len(si), nodes.numel()


def silence(model, masks):
    """Multiply layer l's FFN activation output by masks[l] (d_ff,) of 0/1; returns the hook handles
    (.remove() them to undo)."""
    return [b.mlp.act.register_forward_hook(lambda mod, inp, out, m=m: out * m)
            for b, m in zip(model.blocks, masks)]


def silence_key(fraction, *what):
    """The metrics.json key of a silencing result: silence_key(0.25, "place", "rm") is
    'silence_25pct_place_rm_error', silence_key(0.25, "k") 'silence_25pct_k' (the number silenced),
    silence_key("none", "wm") 'silence_none_wm_error'."""
    tag = fraction if fraction == "none" else f"{round(fraction * 100)}pct"
    return "_".join(["silence", tag, *what]) + ("" if what == ("k",) else "_error")


def silencing_test(model, env, walk_len, ffn_si, opts):
    """WM and RM error on familiar maps with the k most place-like FFN neurons (by SI, all layers
    pooled) silenced, and k random ones (SILENCE_DRAWS draws), for k = SILENCE_FRACTIONS of all FFN
    neurons. Every condition sees the same walks and g0 (one seed), so differences are paired."""
    L, d_ff = model.cfg.n_layer, model.cfg.d_ff
    rng = np.random.default_rng(opts.seed + SEEDS["silence_draws"])

    def run(silenced):
        mask = torch.ones(L * d_ff, device=env.device)
        mask[torch.as_tensor(silenced, dtype=torch.long)] = 0
        gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["silencing"])  # the same walks each time
        hooks = silence(model, mask.view(L, d_ff))
        try:
            r = error_rates(model_predictor(model, gen), env, model.cfg.context, walk_len, gen, max_se=0,
                            max_walks=opts.silence_walks)
        finally:
            for h in hooks:
                h.remove()
        return r["wm_error"], r["rm_error"]

    out = dict(zip((silence_key("none", "wm"), silence_key("none", "rm")), run([])))
    for f in SILENCE_FRACTIONS:
        k = max(1, round(f * L * d_ff))
        out[silence_key(f, "k")] = k
        out[silence_key(f, "place", "wm")], out[silence_key(f, "place", "rm")] = run(np.argsort(-ffn_si)[:k])
        rand = np.array([run(rng.choice(L * d_ff, k, replace=False)) for _ in range(SILENCE_DRAWS)])
        for j, mem in enumerate(("wm", "rm")):
            out[silence_key(f, "random", mem)] = rand[:, j].mean()
            out[silence_key(f, "random", mem) + "_sd"] = rand[:, j].std(ddof=1)
    return out


SQUARE = ("north", "east", "south", "west")
LOOPS = [SQUARE[i:] + SQUARE[:i] for i in range(4)]
LOOPS += [tuple(reversed(loop)) for loop in LOOPS]


def loop_walks(env, batch, prefix, gen, novel=False):
    """TEM-t's loop: a random walk of `prefix` steps, then a 4-step square (north, east, south, west
    in any of its 8 orientations, drawn uniformly among those that stay on the grid) that returns to
    the walk's last node. Returns obs, act, pos, maps as draw_walks; pos[:, -1] == pos[:, -5]."""
    obs, act, pos, maps = draw_walks(env, batch, prefix, gen, novel)
    codes = torch.tensor([[env.action_names.index(m) for m in loop] for loop in LOOPS],
                         device=env.device)  # (8, 4)
    node = pos[:, -1:].expand(batch, len(LOOPS))  # (B, 8)
    legal = torch.ones(batch, len(LOOPS), dtype=torch.bool, device=env.device)
    for j in range(4):  # try every orientation from every walk's end
        nxt = env.next_node[node, codes[:, j]]  # (B, 8)
        legal &= nxt >= 0
        node = nxt.clamp(min=0)
    u = torch.rand(batch, len(LOOPS), generator=gen, device=env.device).masked_fill(~legal, -1)
    loop_act = codes[u.argmax(1)]  # (B, 4)
    loop_pos = [pos[:, -1]]
    for j in range(4):
        loop_pos.append(env.next_node[loop_pos[-1], loop_act[:, j]])
    pos = torch.cat([pos, torch.stack(loop_pos[1:], 1)], 1)
    return maps.gather(1, pos), torch.cat([act, loop_act], 1), pos, maps


def loop_accuracy(model, env, opts, novel):
    """Accuracy of the prediction at the loop's return step (the walk's last)."""
    gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["novel_loop" if novel else "loop"])
    obs, act, pos, maps = loop_walks(env, opts.loop_walks, model.cfg.context, gen, novel)
    return (model_predictor(model, gen)(obs, act, pos, maps)[:, -1] == obs[:, -1]).float().mean().item()


def settings(opts):
    """The analysis flags that change the numbers, as one string stored in metrics.json, and the
    METHOD version."""
    keys = ("walk_len", "max_se", "max_walks", "rate_steps", "rate_walks", "rate_maps", "shuffles", "si_floor",
            "silence_walks", "loop_walks", "seed")
    return " ".join([f"method={METHOD}"] + [f"{k}={getattr(opts, k)}" for k in keys])


def previous_metrics(run_dir, ckpt, opts):
    """run_dir/metrics.json if it is newer than ckpt.pt, of the same step, made with the same flags and,
    if figures are wanted, drawn."""
    path = os.path.join(run_dir, "metrics.json")
    try:
        if os.path.getmtime(path) < os.path.getmtime(os.path.join(run_dir, "ckpt.pt")):
            return None
        if not opts.no_figures and not os.path.exists(os.path.join(run_dir, "rate_maps.png")):
            return None  # figures wanted that an earlier --no_figures analysis did not draw
        with open(path) as f:
            m = json.load(f)
        return m if m.get("analysis") == settings(opts) and m.get("step") == ckpt["step"] else None
    except (OSError, ValueError, AttributeError):
        return None


def analyze_run(run_dir, model, env, ckpt, opts):
    """Every metric of one run as a flat dict, and the files to write next to it."""
    args, cfg = ckpt["args"], model.cfg
    walk_len, chance = opts.walk_len or args["walk_len"], 1 - 1 / env.n_obs
    m = dict(run=run_dir, step=ckpt["step"], act=args["act"], alpha=args["alpha"], beta=args["beta"],
             num_maps=args["num_maps"], seed=args["seed"], chance=chance, walk_len=walk_len,
             analysis=settings(opts))
    for novel in (False, True):
        gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["novel_errors" if novel else "errors"])
        r = error_rates(model_predictor(model, gen), env, cfg.context, walk_len, gen, novel, opts.max_se,
                        opts.max_walks)
        m.update({("novel_" if novel else "") + k: v for k, v in r.items()})
    gen = torch.Generator(env.device).manual_seed(opts.seed + SEEDS["rate_maps"])
    rng = np.random.default_rng(opts.seed + SEEDS["shuffles"])
    si, null, first, silent, n_maps, n_steps = place_analysis(model, env, opts, gen, rng)
    kinds, layers, names = unit_kinds(cfg)
    place = place_cells(si, null, opts.si_floor)
    m.update(rate_maps=n_maps, rate_steps_per_map=n_steps, shuffles=opts.shuffles)
    for kind in ("ffn", "att", "g"):
        sel = kinds == kind
        m[f"{kind}_place_cell_fraction"], m[f"{kind}_si_mean"] = place[sel].mean(), si[sel].mean()
        m[f"{kind}_silent_fraction"] = silent[sel].mean()
        for l in range(cfg.n_layer if kind != "g" else 0):
            m[f"{kind}_place_cell_fraction_layer{l}"] = place[sel & (layers == l)].mean()
    m["loop_closure_accuracy"] = loop_accuracy(model, env, opts, novel=False)
    m["novel_loop_closure_accuracy"] = loop_accuracy(model, env, opts, novel=True)
    m["loop_walks"] = opts.loop_walks
    m.update(silencing_test(model, env, walk_len, si[kinds == "ffn"], opts))
    m = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in
         ((k, v.item() if hasattr(v, "item") else v) for k, v in m.items())}  # plain JSON numbers
    files = {"metrics.json": json.dumps({**m, "args": args}, indent=1) + "\n"}  # args: for compare.py
    if not opts.no_figures:
        log = os.path.join(run_dir, "log.csv")
        title = (f"{run_dir}: {plots.act_label(args)}, {args['num_maps']} maps, seed {args['seed']}, "
                 f"step {ckpt['step']}")
        try:  # the training curves are a bonus: a missing or odd log.csv costs only that figure
            with open(log) as f:
                files["training.png"] = plots.fig_training(list(csv.DictReader(f)), chance, title)
        except (OSError, KeyError, ValueError, TypeError, AssertionError) as e:
            print(f"analyze.py: no training.png: {log} is missing or unreadable ({type(e).__name__})",
                  file=sys.stderr)
        files["rate_maps.png"] = plots.fig_rate_maps(first, si, place, kinds, names, env.size)
        files["place_scores.png"] = plots.fig_scores(si, place, kinds, layers, cfg.n_layer)
        files["silencing.png"] = plots.fig_silencing(m, SILENCE_FRACTIONS, SILENCE_DRAWS,
                                                     cfg.n_layer * cfg.d_ff, chance)
    return m, files


def summary(m, n_layer):
    """The run's numbers on stdout, a few lines."""
    def f(k):
        return "  n/a" if m[k] is None else f"{m[k]:.3f}"

    print(f"{m['run']}: {plots.act_label(m)}, {m['num_maps']} maps, seed {m['seed']}, step {m['step']}. "
          f"Errors over walks of {m['walk_len']} steps, ± SE over walks (chance {m['chance']:.3f}):")
    for pre, name in (("", "familiar"), ("novel_", "novel")):
        print(f"  {name:8s}  WM {f(pre + 'wm_error')} ± {f(pre + 'wm_error_se')} "
              f"({m[pre + 'wm_steps']} steps)   "
              f"RM {f(pre + 'rm_error')} ± {f(pre + 'rm_error_se')} ({m[pre + 'rm_steps']} steps)   "
              f"[{m[pre + 'walks']} walks]")
    layers = ", ".join(f"layer {l} {m[f'ffn_place_cell_fraction_layer{l}']:.1%}" for l in range(n_layer))
    print(f"  place cells ({m['rate_maps']} maps x {m['rate_steps_per_map']} steps, "
          f"{m['shuffles']} shuffles): "
          f"FFN {m['ffn_place_cell_fraction']:.1%} ({layers}), attention {m['att_place_cell_fraction']:.1%}, "
          f"g {m['g_place_cell_fraction']:.1%}; mean SI: FFN {m['ffn_si_mean']:.3f}, "
          f"attention {m['att_si_mean']:.3f} bits")
    silent = ", ".join(f"{m[k + '_silent_fraction']:.1%} of {name}" for k, name in
                       (("ffn", "FFN"), ("att", "attention"), ("g", "g")) if m.get(k + "_silent_fraction"))
    if silent:
        print(f"  silent, so scored 0 (share of units x maps): {silent}")
    print(f"  loop closure accuracy: familiar {f('loop_closure_accuracy')}, "
          f"novel {f('novel_loop_closure_accuracy')}")
    for x in SILENCE_FRACTIONS:
        print(f"  silence {round(x * 100):2d}% ({m[silence_key(x, 'k')]} FFN): most place-like "
              f"WM {f(silence_key(x, 'place', 'wm'))} RM {f(silence_key(x, 'place', 'rm'))} | "
              f"random WM {f(silence_key(x, 'random', 'wm'))} RM {f(silence_key(x, 'random', 'rm'))}")


@torch.no_grad()
def main(argv=None):
    opts = parse_args(argv)
    loaded = [(d, *load_run(d, opts.device)) for d in opts.runs]  # every input checked before any work
    for d, model, _, _ in loaded:
        if opts.rate_steps <= model.cfg.context:
            die(f"--rate_steps {opts.rate_steps} must exceed the context ({model.cfg.context}) of {d}")
    runs = []
    for d, model, env, ckpt in loaded:
        m = None if opts.redo else previous_metrics(d, ckpt, opts)
        if m is None:
            m, files = analyze_run(d, model, env, ckpt, opts)
            plots.write_all(d, files)  # only now, with everything computed, is anything in d replaced
            done = f"wrote {', '.join(files)} in {d}"
        else:
            done = f"read back {d}/metrics.json (same checkpoint and flags; --redo recomputes)"
        m.pop("args", None)
        summary(m, model.cfg.n_layer)
        print("  " + done)
        runs.append(dict(dir=d, args=ckpt["args"], metrics=m))
    if len(runs) > 1:
        compare.compare(runs, opts.out, not opts.no_figures)


if __name__ == "__main__":
    main()
