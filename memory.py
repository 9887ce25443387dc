"""
Working- and reference-memory error of any predictor on walks of the task: the walks (with the
maps walked on), the model's units read by forward hooks (activity), the model run over walks of
any length (its predictions and, on request, those units), error rates with standard errors that
treat walks as clusters, and TEM-t's loop-closure probe; and the ideal observer, the best any
predictor can do with what the model sees. analyze.py measures the model with them; tests measure predictors whose errors are known
by construction.
"""

import math

import torch

from env import memory_counts
from model import reach, span


def draw_walks(env, batch, steps, gen, novel=False, map_id=None):
    """Random walks as in training: obs (B, steps+1), act (B, steps), pos (B, steps+1) and the
    maps walked on (B, n_nodes). Novel maps are drawn here, since env.walk does not return them."""
    _, act, pos, map_id = env.walk(batch, steps, map_id=map_id, generator=gen)
    maps = (torch.randint(env.n_obs, (batch, env.n_nodes), generator=gen, device=env.device)
            if novel else env.maps[map_id])
    return maps.gather(1, pos), act, pos, maps


def activity(model, obs, act, g0=None):
    """(logits, rec): model's forward pass, and the internal activity of its query tokens, read by
    forward hooks (as silencing.py's) that leave the forward as it is: "g" (B, T+1, d_rnn), the
    position vectors (g_proj's input); "ffn" [n_layer x (B, T, d_ff)], the feed-forward neurons
    after the activation; "att" [n_layer x (B, H, T, lag_units)], where att[..., t, k] is the weight
    query t gives observation t-k (0 where it does not see it). The fused attention kernel never
    forms those weights, so meanwhile attention is spelled out (Attention.record): the same
    function."""
    B, T = obs.shape
    S = model.cfg.segment or T  # the steps of each pass's rows: (B*K, ...) with K segments a walk
    K, M = -(-T // S), model.cfg.mem_len if model.cfg.segment else 0
    rec = {"ffn": []}

    def per_walk(z, dim):  # (B*K, ..., S at dim, ...) -> (B, ..., T, ...): the segments of each walk joined
        return z.unflatten(0, (B, K)).movedim(1, dim).flatten(dim, dim + 1).narrow(dim, 0, T)

    def ffn(module, inputs, out):  # (B*K, 2S, d_ff), or the query tokens alone in the last block
        rec["ffn"].append(per_walk(out[:, -S:], 1))

    def g(module, inputs):  # (B*K, S+1, d_rnn): each segment's g from its start
        rec["g"] = torch.cat([inputs[0][::K, :1], per_walk(inputs[0][:, 1:], 1)], 1)

    hooks = [model.g_proj.register_forward_pre_hook(g)]
    hooks += [block.mlp.act.register_forward_hook(ffn) for block in model.blocks]
    for block in model.blocks:
        block.attn.record = True
    try:
        logits = model(obs, act, g0)
    finally:
        for h in hooks:
            h.remove()
        for block in model.blocks:
            block.attn.record = False
    units = lag_units(model.cfg)
    rec["att"] = [per_walk(by_lag(model.cfg, block.attn.weights[..., -S:, :M + S], M)[..., :units], 2)
                  for block in model.blocks]  # the query rows' weights on the memory and the observations
    for block in model.blocks:
        block.attn.weights = None
    return logits, rec


def lag_units(cfg):
    """The attention lags that activity keeps as units: every lag of the context; with segments, 0 to
    mem_len, the lags every query sees once the walk is past its first segment (a further lag is seen
    only late in a segment, so its weight would follow the segment's phase, not the place)."""
    return cfg.mem_len + 1 if cfg.segment else cfg.context


def by_lag(cfg, att, m):
    """The queries' attention weights on observations (B, H, n, m+n) as (B, H, n, span): [..., t, k]
    the weight on observation t-k (0 where the query does not see it)."""
    B, H, n, _ = att.shape
    C = span(cfg)
    k = torch.arange(n, device=att.device)[:, None] + m - torch.arange(m + n, device=att.device)  # (n, m+n)
    out = att.new_zeros(B, H, n, C + 1)
    out.scatter_add_(3, k.clamp(0, C).expand(B, H, n, m + n), att * (k >= 0) * (k < C))
    return out[..., :C]


def unit_activity(rec):
    """Every unit of one forward pass as (B, T, U): FFN neurons of each layer, then the attention
    softmax neurons (layer, head, lag k: the weight query t gives observation t-k, 0 where it does not
    see it), then g[t+1], the position vector of the node query t asks about."""
    return torch.cat(list(rec["ffn"]) + [a.transpose(1, 2).flatten(2) for a in rec["att"]] + [rec["g"][:, 1:]], 2)


@torch.no_grad()
def forward_chunked(model, obs, act, g0, chunk=256, record=False):
    """model(obs, act, g0) for walks of any length: logits (B, T, n_obs) and, with record,
    unit_activity (B, T, U). A model with segments runs them all itself, side by side. Otherwise a prediction
    at step t depends only on obs[reach(cfg, T)[t]..t] and g up to t+1, so g is path-integrated once
    over the whole walk and chunks overlap by that reach, each keeping only the predictions whose
    reach lies inside it (the first chunk keeps all)."""
    T = obs.shape[1]
    if model.cfg.segment:
        if not record:
            return model(obs, act, g0), None
        out, rec = activity(model, obs, act, g0)
        return out, unit_activity(rec)
    C = int((torch.arange(T) - reach(model.cfg, T)).max()) + 1 if T else 1  # the most observations a prediction sees
    chunk = max(chunk, 2 * C)
    g = model.path_integrate(act, g0)  # (B, T+1, d_rnn)
    logits, units, s = [], [], 0
    while True:
        e = min(s + chunk, T)
        keep = 0 if s == 0 else C - 1
        if record:
            out, rec = activity(model, obs[:, s:e], act[:, s:e], g[:, s])  # (B, e-s, n_obs) and the activity
            units.append(unit_activity(rec)[:, keep:])
        else:
            out = model(obs[:, s:e], act[:, s:e], g[:, s])
        logits.append(out[:, keep:])
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
def error_rates(predict, env, first, walk_len, gen, novel=False, max_se=0.005, max_walks=20000, batch=None,
                scored=None):
    """WM and RM error of predict(obs, act, pos, maps) -> tokens (B, T) on fresh walks, drawn a batch
    at a time until both standard errors are below max_se or max_walks walks are used. A step is WM
    when its node is among the observations its prediction sees, from first[t] (walk_len,) to t
    (model.reach); scored (walk_len,) bool: the steps counted (None: all)."""
    batch = batch or max(8, min(256, 16384 // walk_len))  # ~16k steps a batch, whatever the walk length
    counts, n = [], 0  # per walk: WM wrong, WM steps, RM wrong, RM steps
    while n < max_walks:
        b = min(batch, max_walks - n)
        obs, act, pos, maps = draw_walks(env, b, walk_len, gen, novel)
        wrong = predict(obs, act, pos, maps) != obs[:, 1:]  # (B, T)
        counts.append(memory_counts(wrong, pos, first, scored).cpu())
        n += b
        c = torch.cat(counts).double().numpy()
        out = {"walks": n}
        for name, i in (("wm", 0), ("rm", 2)):
            out[f"{name}_error"], out[f"{name}_error_se"] = cluster_se(c[:, i], c[:, i + 1])
            out[f"{name}_steps"] = int(c[:, i + 1].sum())
        if out["wm_error_se"] < max_se and out["rm_error_se"] < max_se:  # False while nan
            break
    return out


def start_log_likelihood(env, act):
    """For walks of actions act (B, T), each start node p of the grid: node (B, T+1, n_nodes), the node
    at each step had the walk started at p, and log_p (B, T, n_nodes), log P(act[:, :t+1] | start p)
    under the walk's rule (env.move_weights): -inf once the path would have left the grid (a move
    there has weight 0; node is then clamped to the grid and means nothing)."""
    moves = torch.tensor(env.moves, device=env.device)  # (n_actions, 2): d_row, d_col
    nodes = torch.arange(env.n_nodes, device=env.device)
    start = torch.stack([nodes // env.size, nodes % env.size], 1)  # (n_nodes, 2)
    path = torch.cat([torch.zeros_like(moves[act[:, :1]]), moves[act].cumsum(1)], 1)  # (B, T+1, 2) from start
    where = (start + path[:, :, None]).clamp(0, env.size - 1)  # (B, T+1, n_nodes, 2): row and column
    node = (where * torch.tensor([env.size, 1], device=env.device)).sum(-1)
    log_move = env.move_weights.log() - env.move_weights.sum(1, keepdim=True).log()  # (n_nodes, n_actions)
    return node, torch.cumsum(log_move[node[:, :-1], act[:, :, None]], 1)


def ideal_observer(env, first):
    """predict(obs, act, pos, maps) -> (B, T) tokens, the Bayes-optimal prediction on familiar maps for
    an observer who knows the N maps and sees what the model sees: every action since the walk began
    (what g integrates) and the observations its prediction sees, from first[t] (T,) to t. A
    hypothesis is a map m and a start node p; its weight is the probability of the actions from p
    under the walk's rule (start_log_likelihood), if the observations in the window match map m along
    the path, else 0. The prediction is the token with the most weight at the target node. Its WM
    error is 0; its RM error is the least any model that sees these observations can reach on
    familiar maps: the rest cannot be known from the window. It knows the familiar maps alone
    (env.maps; the `maps` and `pos` it is handed go unused): use it on familiar walks only."""
    def predict(obs, act, pos, maps):
        B, T = act.shape
        node, log_p = start_log_likelihood(env, act)
        mismatch = [(env.maps[:, node[:, s]] != obs[:, s, None]).int() for s in range(T)]  # (M, B, n_nodes) each
        unseen = torch.zeros_like(mismatch[0], dtype=torch.int32)  # mismatches within what step t sees
        lo = 0
        pred = torch.empty(B, T, dtype=torch.long, device=env.device)
        for t in range(T):
            unseen += mismatch[t]
            for s in range(lo, int(first[t])):  # observations that left the window (first never falls)
                unseen -= mismatch[s]
            lo = max(lo, int(first[t]))
            logw = torch.where(unseen == 0, log_p[None, :, t], -math.inf)  # (M, B, n_nodes)
            w = logw.transpose(0, 1).flatten(1).softmax(1)  # (B, M * n_nodes)
            target = env.maps[:, node[:, t + 1]].transpose(0, 1).flatten(1)  # (B, M * n_nodes): the token there
            votes = torch.zeros(B, env.n_obs, device=env.device).scatter_add_(1, target, w)
            pred[:, t] = votes.argmax(1)
        return pred
    return predict


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
    obs, act, pos, maps = loop_walks(env, walks, span(model.cfg), gen, novel)
    return (model_predictor(model, gen)(obs, act, pos, maps)[:, -1] == obs[:, -1]).float().mean().item()
