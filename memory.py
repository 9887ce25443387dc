"""
Working- and reference-memory error of any predictor on walks of the task: the walks (with the
maps walked on), the model run over walks of any length (its predictions and, on request, its
units' activity), error rates with standard errors that treat walks as clusters, and TEM-t's
loop-closure probe. analyze.py measures the model
with them; tests measure predictors whose errors are known by construction (an oracle, a constant,
the ideal observer).
"""

import math

import torch

from env import memory_counts


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
        g0 = model.random_g0(obs.shape[0], generator=gen, device=obs.device)
        return forward_chunked(model, obs[:, :-1], act, g0)[0].argmax(-1)
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
        counts.append(memory_counts(wrong, pos, context).cpu())
        n += b
        c = torch.cat(counts).double().numpy()
        out = {"walks": n}
        for name, i in (("wm", 0), ("rm", 2)):
            out[f"{name}_error"], out[f"{name}_error_se"] = cluster_se(c[:, i], c[:, i + 1])
            out[f"{name}_steps"] = int(c[:, i + 1].sum())
        if out["wm_error_se"] < max_se and out["rm_error_se"] < max_se:  # False while nan
            break
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


@torch.no_grad()
def loop_accuracy(model, env, walks, gen, novel=False):
    """Accuracy of the prediction at the loop's return step (the walk's last), over `walks` loop walks."""
    obs, act, pos, maps = loop_walks(env, walks, model.cfg.context, gen, novel)
    return (model_predictor(model, gen)(obs, act, pos, maps)[:, -1] == obs[:, -1]).float().mean().item()
