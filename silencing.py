"""
Silencing tests: which feed-forward neurons a memory needs. A neuron is silenced by zeroing its
activation at inference. Here the choice of neurons and the bookkeeping; how the errors are measured
is the caller's (analyze.py passes errors(silenced) -> (WM error, RM error) on fixed walks), so tests
can check the choices on neurons whose answer is known by construction.
"""

import numpy as np

FRACTIONS = (0.01, 0.05, 0.10, 0.25)  # of all FFN neurons, all layers pooled
DRAWS = 5  # random sets of each kind and size


def tag(fraction=None, layer=None):
    """The prefix of a condition's keys in metrics.json, made here alone: tag(fraction=0.25) is
    'silence_25pct' (test 1 below), tag(layer=0) is 'silence_layer0' (test 2), tag() 'silence_none'."""
    if fraction is not None:
        return f"silence_{round(fraction * 100)}pct"
    return "silence_none" if layer is None else f"silence_layer{layer}"


def conditions(n_layer):
    """How many times silencing_test measures errors, at most (fewer where a condition has no neurons)."""
    return 1 + len(FRACTIONS) * (1 + DRAWS) + n_layer * 2 * DRAWS


def silence(model, masks):
    """Multiply layer l's FFN activation output by masks[l] (d_ff,) of 0/1; returns the hook handles
    (.remove() them to undo)."""
    return [b.mlp.act.register_forward_hook(lambda mod, inp, out, m=m: out * m)
            for b, m in zip(model.blocks, masks)]


def random_like(chosen, d_ff, n_layer, rng):
    """Random FFN neurons other than `chosen`, as many in each layer as `chosen` has there (indices
    into all layers pooled: layer l holds l*d_ff .. (l+1)*d_ff - 1). Where `chosen` fills more than
    half a layer, the layer has too few others: as many as it has are taken, and the rest are drawn
    from the other layers' remaining neurons."""
    counts = np.bincount(chosen // d_ff, minlength=n_layer)
    others = np.setdiff1d(np.arange(n_layer * d_ff), chosen)
    drawn = [rng.choice(others[others // d_ff == layer], min(c, np.sum(others // d_ff == layer)), replace=False)
             for layer, c in enumerate(counts)]
    drawn = np.concatenate(drawn)
    rest = np.setdiff1d(others, drawn)
    return np.concatenate([drawn, rng.choice(rest, len(chosen) - len(drawn), replace=False)])


def layer_halves(ffn_place, ffn_sd, d_ff, n_layer):
    """Per layer: its active place cells, its active other neurons (indices into all layers pooled)
    and k, half the size of the smaller group, so that k drawn at random from either is never the
    whole group. Active: an activity sd at least the median of the layer's place cells. Most of a
    layer's other neurons are far quieter than its place cells, and silencing a quiet neuron
    changes little whatever it codes: the two groups are compared at a like activity."""
    out = []
    for layer in range(n_layer):
        here = np.arange(layer * d_ff, (layer + 1) * d_ff)
        is_place = ffn_place[here]
        active = ffn_sd[here] >= (np.median(ffn_sd[here][is_place]) if is_place.any() else np.inf)
        place_cells, others = here[is_place & active], here[~is_place & active]
        out.append((place_cells, others, min(len(place_cells), len(others)) // 2))
    return out


def silencing_test(errors, d_ff, n_layer, ffn_si, ffn_share, ffn_place, ffn_sd, rng):
    """errors(silenced) -> (WM, RM error) with the FFN neurons `silenced` (indices, all layers
    pooled) zeroed, on the same walks every time, so conditions are paired; ffn_* are per neuron:
    score, observation_share, place cell or not, activity sd. Two tests:
    1. the k most place-like (by score) and k others, random, from the same layers in the same numbers
       (DRAWS draws), for k = FRACTIONS of all FFN neurons: the place-like neurons sit mostly in one
       layer, and a layer's neurons matter more or less than another's whatever their score. Keys:
       silence_none_wm_error, silence_25pct_k (and _k_layer0, ...), silence_25pct_place_obs_share (their mean eta^2),
       silence_25pct_place_rm_error, silence_25pct_random_rm_error and its _sd, ...
    2. per layer, k of its active place cells and k of its active other neurons, each drawn at random
       DRAWS times (layer_halves). Keys: silence_layer0_k, silence_layer0_place_activity_sd (the
       group's median), silence_layer0_place_rm_error and its _sd, silence_layer0_other_rm_error, ...
       (None where a layer lacks either group)."""
    out = dict(zip((tag() + "_wm_error", tag() + "_rm_error"), errors([])))

    def put(prefix, draws):  # draws (n, 2): WM and RM error of each draw -> their mean and sd
        for j, mem in enumerate(("wm", "rm")):
            out[f"{prefix}_{mem}_error"] = draws[:, j].mean()
            out[f"{prefix}_{mem}_error_sd"] = draws[:, j].std(ddof=1)

    for fraction in FRACTIONS:
        k, pre = max(1, round(fraction * n_layer * d_ff)), tag(fraction=fraction)
        out[f"{pre}_k"] = k
        if ffn_place.sum() < k:  # fewer place cells than k: the most place-like would not all be place cells
            for key in ("place_obs_share", "place_wm_error", "place_rm_error", "random_wm_error",
                        "random_rm_error", "random_wm_error_sd", "random_rm_error_sd"):
                out[f"{pre}_{key}"] = None
            continue
        place_cells = np.flatnonzero(ffn_place)
        chosen = place_cells[np.argsort(-ffn_si[place_cells], kind="stable")[:k]]  # the k best place cells
        out[f"{pre}_place_obs_share"] = ffn_share[chosen].mean()
        for layer, n in enumerate(np.bincount(chosen // d_ff, minlength=n_layer)):
            out[f"{pre}_k_layer{layer}"] = n  # how many of the most place-like are in each layer
        out[f"{pre}_place_wm_error"], out[f"{pre}_place_rm_error"] = errors(chosen)
        put(f"{pre}_random", np.array([errors(random_like(chosen, d_ff, n_layer, rng)) for _ in range(DRAWS)]))
    for layer, (place_cells, others, k) in enumerate(layer_halves(ffn_place, ffn_sd, d_ff, n_layer)):
        out[tag(layer=layer) + "_k"] = k
        for name, pool in (("place", place_cells), ("other", others)):
            out[f"{tag(layer=layer)}_{name}_activity_sd"] = np.median(ffn_sd[pool]) if len(pool) else None
            put(f"{tag(layer=layer)}_{name}",
                np.array([errors(rng.choice(pool, k, replace=False)) for _ in range(DRAWS)]) if k
                else np.full((2, 2), np.nan))
    return out
