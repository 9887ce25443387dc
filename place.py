"""
Place-cell statistics of units' activity along walks on a grid: rate maps, Skaggs' spatial
information, its shuffle test, split-half stability and silent units. analyze.py applies them to
the model's units; here they know nothing of the model, so tests can feed them units whose answer
is known by construction.
"""

import numpy as np
import torch


def rate_maps(activity, pos, n_nodes):
    """Mean activity per node: activity (T, U), pos (T,) -> rate (U, n_nodes) (0 where never
    visited) and occupancy (n_nodes,) in steps."""
    a, p = torch.as_tensor(activity, dtype=torch.float32), torch.as_tensor(pos)
    occ = torch.bincount(p, minlength=n_nodes)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)  # on a GPU index_add_ would add in any order: sums that differ run to run
    try:
        rate = torch.zeros(n_nodes, a.shape[1], device=a.device).index_add_(0, p, a) / occ.clamp(min=1)[:, None]
    finally:
        torch.use_deterministic_algorithms(deterministic)
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
    """A unit is a place cell if its score beats the pct-th percentile of its own shuffles and the floor."""
    return (si > np.percentile(null, pct, axis=0)) & (si > floor)


def split_half_stability(activity, pos, n_nodes):
    """Whether each unit's rate map repeats in independent walks: the Pearson correlation, over the
    nodes visited in both, of the rate map of the even walks with that of the odd walks (each walk
    has its own random g0). activity (W, T, U), pos (W, T), W >= 2 -> r (U,); 0 where a half is flat.
    A field that reliably marks a place repeats; a peak made by a few rare visits does not."""
    halves = [rate_maps(activity[i::2].flatten(0, 1), pos[i::2].flatten(), n_nodes) for i in (0, 1)]
    both = (halves[0][1] > 0) & (halves[1][1] > 0)
    even, odd = (rate[:, both] - rate[:, both].mean(1, keepdims=True) for rate, _ in halves)
    norm = np.sqrt((even ** 2).sum(1) * (odd ** 2).sum(1))
    return np.divide((even * odd).sum(1), norm, out=np.zeros(len(norm)), where=norm > 0)


def observation_share(rate, occupancy, node_obs):
    """How much of each rate map is the observation at the node: the share of its variance over the
    visited nodes (weighted by occupancy) that the node's observation explains, eta^2 of a one-way
    analysis of variance. rate (..., n_nodes), occupancy (n_nodes,), node_obs (n_nodes,) the token
    each node shows -> (...,) in [0, 1]; 0 for a flat map. 1: the unit fires alike wherever the same
    token lies, an observation cell with a field at each of them; a single field at one node scores
    about (1/n_c - 1/n) / (1 - 1/n) for n nodes of which n_c show its token."""
    vis = np.asarray(occupancy) > 0
    p = np.asarray(occupancy, dtype=float)[vis] / np.sum(occupancy)
    lam, obs = np.asarray(rate, dtype=float)[..., vis], np.asarray(node_obs)[vis]
    total = (p * (lam - (lam * p).sum(-1, keepdims=True)) ** 2).sum(-1)
    fitted = np.zeros_like(lam)  # each node's value replaced by the mean over the nodes of its token
    for token in np.unique(obs):
        at = obs == token
        fitted[..., at] = (lam[..., at] * p[at]).sum(-1, keepdims=True) / p[at].sum()
    between = (p * (fitted - (lam * p).sum(-1, keepdims=True)) ** 2).sum(-1)
    return np.divide(between, total, out=np.zeros_like(total), where=total > 1e-12 * np.abs(lam).max(-1) ** 2)


def silent_units(spread, kinds, frac=0.01, least=None):
    """True for the units whose rate map in a map barely varies: a spread (max - min over nodes)
    below frac of the median spread of their kind, or below least[kind] where a kind's scale has an
    absolute meaning. SI is scale-free, so a unit whose activity is all but zero (an attention lag
    weighted 1e-20 everywhere) could score the maximum on rounding noise."""
    silent = np.zeros(len(spread), dtype=bool)
    for kind in np.unique(kinds):
        sel = kinds == kind
        silent[sel] = spread[sel] < max(frac * np.median(spread[sel]), (least or {}).get(kind, 0))
    return silent


def score_map(activity, pos, n_nodes, kinds, shuffles, rng, stability=0.5, least=None, node_obs=None):
    """Place scores of units in one map, from W >= 2 walks: activity (W, T, U), pos (W, T) ->
    dict of si (U,) and null (shuffles, U) from shuffle_test, silent and unstable (U,) bools, the
    split-half r (U,), the rate maps (U, n_nodes) and, given the map's node_obs (n_nodes,), each
    rate map's observation_share (U,). A place cell's activity depends reliably on
    where the walker is, at a scale that matters: a unit scores its SI only if it is not silent
    (silent_units with least) and its field repeats (r >= stability), else 0, in its shuffles too."""
    activity, pos = torch.as_tensor(activity, dtype=torch.float32), torch.as_tensor(pos)
    si, null = shuffle_test(activity, pos, n_nodes, shuffles, rng)
    rate, occ = rate_maps(activity.flatten(0, 1), pos.flatten(), n_nodes)
    silent = silent_units(np.ptp(rate[:, occ > 0], axis=1), kinds, least=least)
    r = split_half_stability(activity, pos, n_nodes)
    scored = ~silent & (r >= stability)
    out = dict(si=np.where(scored, si, 0.0), null=np.where(scored, null, 0.0), silent=silent,
               unstable=~silent & ~scored, stability=r, rate=rate)
    return out if node_obs is None else dict(out, obs_share=observation_share(rate, occ, node_obs))
