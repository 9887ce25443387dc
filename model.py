"""
The transformer of the NMDA paper (Kim et al., NeurIPS 2023): the model of its authors' code
(kdkyum/transformer_memory_consolidation, "the official release" below), a Transformer-XL built
around the position code of TEM-t (Whittington et al., ICLR 2022), with the feed-forward activation
of nmda.py. Read it top to bottom: the config, what a prediction sees, the feed-forward layer,
attention, the block, the model; the fast path integration comes last.

It differs from a plain causal transformer (nanoGPT's) in five ways, each a piece with a name:
1. Path-integrated positions (Model.path_integrate). There is no position embedding: a vector g
   is path-integrated from the actions, g_{t+1} = tanh(g_t + W_{a_t} g_t), one learned matrix per
   action (zero at init), from a random g_0. Absolute position is never given; it must be inferred.
2. Query tokens (Model.tokens). Observation token t joins ReLU(Linear(g_t)) and the embedding of
   obs_t. Query token t joins ReLU(Linear(g_{t+1})) and the embedding of a QUERY symbol: it asks
   "what will I see where I am about to be?", and its output predicts obs_{t+1}. The sequence is
   [observation tokens ; query tokens], so every step of a walk is predicted in one pass, each
   prediction the same function as a pass over its own prefix (the official release makes one pass
   per prefix).
3. What a prediction sees (window_start, attention_mask). TEM-t: the last `context` observations.
   The paper's model: the walk in segments; a token sees its segment up to itself and the mem_len
   steps before the segment. Observation tokens attend to what their step's query sees
   (obs_attend), or to themselves alone, so that a prediction knows only its window.
4. Segments with memory (Model.segments, Model.mems): Transformer-XL's recurrence. A segment's
   memory is each block's inputs at the mem_len steps before the segment (the previous segment's,
   when mem_len = segment), and g where the segment starts; both carried without gradient.
5. Relative-lag terms (Attention.lag_scores): Transformer-XL's learnable scores of how many steps
   back a key is, added to the attention scores.
It also starts from the official release's initialisation, with dropout on the input tokens and a
bias in the read-out (official_init).

ModelConfig's defaults are the paper's model: 3 to 5 and the official initialisation on (train.py
--arch xl, the default). TEM-t as the NMDA paper describes it is the same transformer with none of
them and a window of `context` observations (train.py --arch tem). One more option, off in both:
the attention of Whittington et al.'s TEM-t itself, where queries and keys come from the position
part alone (qk_from_position).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nmda import make_activation


@dataclass
class ModelConfig:
    n_obs: int = 10  # sensory tokens; the query symbol is one more
    n_actions: int = 5
    n_layer: int = 2
    n_head: int = 8
    d_model: int = 512  # half position part, half sensory part
    d_ff: int = 2048
    d_rnn: int = 128  # size of the position vector g
    act: str = "nmda"  # the feed-forward activation, a name in nmda.ACTIVATIONS
    alpha: float = 10.0
    beta: float = 1.0
    dropout: float = 0.1
    context: int = 64  # without segments: how many observations a prediction may attend to, its own step's included
    # The official release's model (its class xlTEM, with Transformer-XL's relative attention); --arch tem: all off.
    rel_lags: bool = True  # learnable relative-lag terms in attention
    obs_attend: bool = True  # observation tokens attend to earlier observations too, not to themselves alone
    segment: int = 32  # > 0: walks run in segments of this many steps, g and the memory carried without gradient
    mem_len: int = 32  # with segments: how many steps before its segment a token also attends to
    official_init: bool = True  # normal(0, 0.02) weights, dropout on the input tokens, a read-out bias
    # Whittington et al.'s attention (an option): queries and keys from the position part alone, values from
    # the sensory half
    qk_from_position: bool = False


# ---- what a prediction sees ------------------------------------------------------------------------

def window_start(cfg, t):
    """The first observation the tokens of step t attend to (t: a tensor of steps): the last `context`
    observations, or with segments, the segment's own and the mem_len steps before it; never before
    step 0. The attention mask, the working/reference memory split (reach, below), the ideal observer
    (memory.py) and the analysis all read what a prediction sees from here."""
    first = t // cfg.segment * cfg.segment - cfg.mem_len if cfg.segment else t - cfg.context + 1
    return first.clamp(min=0)


def reach(cfg, T, direct=False):
    """(T,) the first observation the prediction at step t can depend on. Observation tokens that
    attend (obs_attend) pass on what they saw, so each layer below the last reaches one window further
    back; with direct, only the window the last layer's query token attends to. A step is a WM step
    when its node is among the observations from here to t (env.visited_since)."""
    first = window_start(cfg, torch.arange(T))
    if cfg.obs_attend and not direct:
        for _ in range(cfg.n_layer - 1):
            first = window_start(cfg, first)
    return first


def span(cfg):
    """The most observations a query token attends to: its context, or its segment and memory."""
    return cfg.segment + cfg.mem_len if cfg.segment else cfg.context


def segment_ends(cfg, T):
    """(T,) bool: the last step of each segment, the one prediction of a segment the official
    release's validation scores (every step, without segments)."""
    t = torch.arange(T)
    return (t % cfg.segment == cfg.segment - 1) | (t == T - 1) if cfg.segment else t >= 0


def splits(cfg, T):
    """The WM/RM splits a model's errors are counted under, {name: (first, scored)}, for
    env.memory_counts: "" the exact one, every step, WM when its node is among the observations the
    prediction can depend on (reach); with segments also "official_", the official release's: each
    segment's last prediction, WM when its node is in the segment or its memory."""
    out = {"": (reach(cfg, T), None)}
    if cfg.segment:
        out["official_"] = (reach(cfg, T, direct=True), segment_ends(cfg, T))
    return out


def attention_mask(cfg, n, K=1, device=None):
    """Who may attend to whom in one pass over K segments of n steps each (K = 1: the whole walk):
    (K, 2n, M + 2n) bool, M = mem_len with segments, else 0. Rows: the n observation tokens, then the
    n query tokens. Columns: the M memory tokens (the steps before the segment), the n observation
    tokens, the n query tokens. Query token t sees the observations from window_start(t) to t, and
    itself; an observation token sees itself, and with obs_attend the observations its step's query
    sees.
                        memory (M)    observations (n)   queries (n)
        observations    sees          sees (causal)      -
        queries         sees          sees (causal)      itself
    """
    M = cfg.mem_len if cfg.segment else 0
    start = torch.arange(K, device=device)[:, None, None] * n  # (K, 1, 1): the step where each segment starts
    t = start + torch.arange(n, device=device)[:, None]  # (K, n, 1): the step of each row
    j = start - M + torch.arange(M + n, device=device)  # (K, 1, M + n): the step of each observation column
    sees = (window_start(cfg, t) <= j) & (j <= t)  # (K, n, M + n)
    itself = torch.eye(n, dtype=torch.bool, device=device).expand(K, n, n)
    obs_rows = torch.cat([sees if cfg.obs_attend else j == t, torch.zeros_like(itself)], 2)
    return torch.cat([obs_rows, torch.cat([sees, itself], 2)], 1)


def n_lags(cfg):
    """Lags the relative-lag terms tell apart: 0 (a token and itself) to span. With segments, the
    official table's segment + mem_len entries (lags 0 to span - 1): the furthest lag, span (the last
    query token to the first memory token), shares the entry of lag span - 1, as the official release
    pads its table by repeating that entry."""
    return span(cfg) if cfg.segment else span(cfg) + 1


def lags(cfg, n, device=None):
    """(2n, M + 2n): how many steps back each column's token sits from each row's, where observation
    token t sits at step t and query token t at t+1 (where obs_{t+1} will be); clamped to the table.
    The same in every segment."""
    M = cfg.mem_len if cfg.segment else 0
    steps = torch.arange(n, device=device)
    row_step = torch.cat([steps, steps + 1])  # of the observation tokens, then of the query tokens
    column_step = torch.cat([torch.arange(-M, n, device=device), steps + 1])  # memory, observations, queries
    return (row_step[:, None] - column_step).clamp(0, n_lags(cfg) - 1)


# ---- the network ------------------------------------------------------------------------------------

class MLP(nn.Module):
    """Linear(d_model -> d_ff, no bias) -> activation -> Linear(d_ff -> d_model, no bias)."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.act = make_activation(cfg.act, cfg.d_ff, cfg.alpha, cfg.beta)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.act(self.fc(x))  # (B, S, d_ff): the feed-forward "neurons"
        return self.dropout(self.proj(h))


class Attention(nn.Module):
    """Multi-head attention, one computation for every model: F.scaled_dot_product_attention with an
    additive mask, -inf where a token may not attend, plus the relative-lag scores where the model has
    them. With record (memory.activity), the same computation spelled out, its weights kept."""

    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.qk_from_position = cfg.n_head, cfg.qk_from_position
        d, hd = cfg.d_model, cfg.d_model // cfg.n_head
        if cfg.qk_from_position:
            self.qk = nn.Linear(d // 2, 2 * d, bias=False)  # from the position part of the input tokens
            self.v = nn.Linear(d // 2, d, bias=False)  # from the sensory half of the normalised stream
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.rel_lags = cfg.rel_lags
        if cfg.rel_lags:  # Transformer-XL's learnable relative terms (Dai et al. 2019), per layer
            self.r_w_bias = nn.Parameter(torch.zeros(cfg.n_head, hd))  # a content bias on every query
            self.r_emb = nn.Parameter(torch.zeros(n_lags(cfg), cfg.n_head, hd))  # a score q . r_emb[lag]
            self.r_bias = nn.Parameter(torch.zeros(n_lags(cfg), cfg.n_head))  # a score r_bias[lag]
            nn.init.normal_(self.r_w_bias, 0.0, 0.02)
            nn.init.normal_(self.r_emb, 0.0, 0.02)
        self.record, self.weights = False, None

    def forward(self, h, rows, mask, lag, g_emb=None):
        """h (N, keys, d): the normalised tokens attended to (with segments, the memory's first); the
        rows whose update is computed are its last `rows` tokens. mask (N or 1, 1, rows, keys) bool
        and lag (rows, keys), from attention_mask and lags. g_emb (N, keys, d/2): the tokens' position
        parts (qk_from_position). Returns the rows' update (N, rows, d)."""
        N, keys, d = h.shape
        if self.qk_from_position:  # Whittington et al.'s: where (q, k) decides what (v) is read
            q, k = self.qk(g_emb).split(d, dim=2)
            v = self.v(h[..., d // 2:])
        else:
            q, k, v = self.qkv(h).split(d, dim=2)
        q, k, v = (z.view(N, -1, self.n_head, d // self.n_head).transpose(1, 2) for z in (q[:, -rows:], k, v))
        if self.rel_lags:  # Transformer-XL's terms: the lag scores an additive mask, -inf where unseen ...
            mask = self.lag_scores(q, lag).to(q.dtype).masked_fill(~mask, float("-inf"))
            q = q + self.r_w_bias[:, None].to(q.dtype)  # ... and the content bias on the queries: (q + r_w_bias) . k
        if self.record:  # memory.activity reads the weights: the same function, spelled out
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (N, H, rows, keys)
            self.weights = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask).softmax(-1)
            y = self.weights @ v
        else:  # mask: True where a token may attend, or a float added to the scores
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (N, H, rows, hd)
        return self.dropout(self.proj(y.transpose(1, 2).reshape(N, rows, d)))

    def lag_scores(self, q, lag):
        """Transformer-XL's position scores, q . r_emb[lag] + r_bias[lag], for every row and column,
        scaled as scaled_dot_product_attention scales q . k: (N, H, rows, keys)."""
        per_lag = q @ self.r_emb.permute(1, 2, 0)  # (N, H, rows, n_lags): each query against every lag
        scores = per_lag.gather(-1, lag.expand(*per_lag.shape[:2], *lag.shape)) + self.r_bias.T[:, lag]
        return scores / math.sqrt(q.shape[-1])


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, mem, mask, lag, rows, g_emb=None):
        """x (N, 2n, d) -> the updated last `rows` tokens (N, rows, d). mem (N, M, d) or None: the
        block's inputs at the memory's steps, which its tokens attend to too."""
        h = self.ln1(x if mem is None else torch.cat([mem, x], 1))
        x = x[:, -rows:] + self.attn(h, rows, mask[..., -rows:, :], lag[-rows:], g_emb)
        return x + self.mlp(self.ln2(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.d_model % 2 == 0 and cfg.d_model % cfg.n_head == 0
        assert not (cfg.qk_from_position and cfg.segment), "qk_from_position has no memory to attend to"
        self.cfg = cfg
        half = cfg.d_model // 2
        # W_a of g_{t+1} = tanh(g_t + W_a g_t), zero at init: g starts out as pure tanh decay.
        self.W_a = nn.Parameter(torch.zeros(cfg.n_actions, cfg.d_rnn, cfg.d_rnn))
        self.g_proj = nn.Linear(cfg.d_rnn, half)
        self.obs_emb = nn.Embedding(cfg.n_obs + 1, half)  # index n_obs is the query symbol
        self.drop_in = nn.Dropout(cfg.dropout if cfg.official_init else 0.0)  # the official release drops input tokens
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_obs, bias=cfg.official_init)
        if cfg.official_init:
            self.init_as_official()

    def init_as_official(self):
        """The official release's initialisation: normal(0, 0.02) weights, zero biases, W_a still zero."""
        for name, p in self.named_parameters():
            if name.endswith("r_bias") or (name.endswith(".bias") and p.dim() == 1):
                nn.init.zeros_(p)
            elif name != "W_a" and (p.dim() > 1 or name.endswith("r_w_bias")):
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, obs, act, g0=None):
        """obs (B, T), act (B, T) -> logits (B, T, n_obs); logits[:, t] predicts obs[:, t+1] from
        obs[:, :t+1] and act[:, :t+1], as much of them as the prediction sees (window_start). g0
        (B, d_rnn): the starting position vector, drawn N(0, 1/d_rnn) if None."""
        if g0 is None:
            g0 = self.random_g0(obs.shape[0], device=obs.device)
        if self.cfg.segment:
            return self.segments(obs, act, g0)
        return self.run(obs, self.path_integrate(act, g0))  # g: (B, T+1, d_rnn)

    def run(self, obs, g, K=1):
        """One pass: obs (N, n), g (N, n+1, d_rnn) -> logits (N, n, n_obs). With segments, N = B*K:
        K segments of each of B walks (walk-major), whose blocks also attend to their memory."""
        n = obs.shape[1]
        x, g_emb = self.tokens(obs, g)  # (N, 2n, d): [observation tokens ; query tokens]
        mask = attention_mask(self.cfg, n, K, x.device)
        mask = mask[:, None] if K == 1 else mask.repeat(x.shape[0] // K, 1, 1)[:, None]  # (1 or N, 1, 2n, M+2n)
        lag = lags(self.cfg, n, x.device)
        for i, block in enumerate(self.blocks):
            mem = self.mems(x[:, :n], K) if self.cfg.segment else None
            last = i == len(self.blocks) - 1  # whose observation tokens' outputs nobody reads: queries alone
            x = block(x, mem, mask, lag, n if last else 2 * n, g_emb)
        return self.head(self.ln_f(x))

    def tokens(self, obs, g):
        """[observation tokens ; query tokens] (N, 2n, d) and their position parts (N, 2n, d/2):
        observation token t carries (g_t, obs_t), query token t carries (g_{t+1}, QUERY)."""
        n = obs.shape[1]
        where = F.relu(self.g_proj(g))  # (N, n+1, d/2)
        g_emb = torch.cat([where[:, :n], where[:, 1:]], 1)  # (N, 2n, d/2)
        what = self.obs_emb(torch.cat([obs, torch.full_like(obs, self.cfg.n_obs)], 1))  # (N, 2n, d/2)
        return self.drop_in(torch.cat([g_emb, what], 2)), g_emb

    def segments(self, obs, act, g0):
        """Transformer-XL's recurrence over a walk's segments, run side by side in one pass: a segment's
        memory is the previous segment's input to each block, so once a block has run for every
        segment the next can too; the same function as one segment after another (and as the
        official release's pass per prefix). The last segment is filled out; its extra predictions
        are dropped."""
        (B, T), S = obs.shape, self.cfg.segment
        K = math.ceil(T / S)
        obs, act = F.pad(obs, (0, K * S - T)), F.pad(act, (0, K * S - T))
        with torch.no_grad():  # g where each segment starts, carried without gradient
            starts = self.path_integrate(act, g0)[:, 0:K * S:S]  # (B, K, d_rnn)
        starts = torch.cat([g0[:, None], starts[:, 1:]], 1)  # the first segment's: g0 itself, its gradient kept
        g = self.path_integrate(act.view(B * K, S), starts.flatten(0, 1))  # (B*K, S+1, d_rnn)
        return self.run(obs.view(B * K, S), g, K).view(B, K * S, -1)[:, :T]

    def mems(self, h, K):
        """Transformer-XL's memory, its `mems`: for each of K segments (N, S, d) of observation-token
        inputs to a block, the mem_len inputs just before it, without gradient; zeros before the walk
        (the mask keeps them unseen)."""
        M, (N, S, d) = self.cfg.mem_len, h.shape
        h = F.pad(h.detach().reshape(N // K, K * S, d), (0, 0, M, 0))  # (B, M + K*S, d)
        return h.unfold(1, M, S)[:, :K].transpose(2, 3).reshape(N, M, d)  # window k: steps k*S-M .. k*S-1

    def path_integrate(self, act, g0):
        """g (B, T+1, d_rnn): g[:, 0] = g0 and g[:, t+1] = tanh(g_t + W_{act_t} g_t), in W's dtype
        (float32 under autocast). The same function as path_integrate_loop, with values and gradients
        the tests compare, but a few kernels a step and its backward written out (PathIntegration)."""
        return PathIntegration.apply(act, g0, self.W_a)

    def path_integrate_loop(self, act, g0):
        """The reference: path integration step by step, as written in the TEM-t paper."""
        g = [g0]
        for t in range(act.shape[1]):
            W = self.W_a[act[:, t]]  # (B, d_rnn, d_rnn): each walk's matrix for its action
            g.append(torch.tanh(g[-1] + (W @ g[-1].unsqueeze(2)).squeeze(2)))
        return torch.stack(g, 1)

    def random_g0(self, batch, generator=None, device=None):
        """g_0 ~ N(0, 1/d_rnn) for each of `batch` walks: absolute position is never given."""
        g0 = torch.randn(batch, self.cfg.d_rnn, generator=generator, device=device)
        return g0 / math.sqrt(self.cfg.d_rnn)


# ---- for speed: path integration with its backward written out ---------------------------------------

class PathIntegration(torch.autograd.Function):
    """g[:, t+1] = tanh(g_t + W_{a_t} g_t) for t = 0..T-1 with g[:, 0] = g0, in W's dtype, and its
    backward written out (backpropagation through time). With h_{t+1} = g_t + W_{a_t} g_t and dg_t
    the loss's whole gradient with respect to g_t:
        dh_{t+1} = dg_{t+1} * (1 - g_{t+1}^2)
        dg_t     = (the gradient at g_t itself) + dh_{t+1} + W_{a_t}^T dh_{t+1}
        dW_a     = sum over the walks and steps that took action a of dh_{t+1} g_t^T
    A step is one matrix product against every action's matrix at once, a gather of each walk's
    action and two element-wise kernels; the weight gradient is one product per action, after the
    loop. Autograd through Model.path_integrate_loop computes the same and launches many more."""

    @staticmethod
    def forward(ctx, act, g0, W):
        # act (B, T) action indices, g0 (B, d) row vectors, W (A, d, d) with W[a] @ g the move of action a
        with torch.autocast(g0.device.type, enabled=False):  # a recurrence: in W's precision, not bf16
            g0 = g0.to(W.dtype)
            (B, T), (A, d, _) = act.shape, W.shape
            # For row vectors, (W_a g)^T = g^T W_a^T: every_action[j, a*d + i] = W[a, i, j], so that
            # g @ every_action (B, A*d) holds [W_0 g, W_1 g, ...], every action's move at once.
            every_action = W.permute(2, 0, 1).reshape(d, A * d)
            pick = act[:, :, None, None].expand(B, T, 1, d)  # (B, T, 1, d): each walk's action at each step
            g = [g0]
            for t in range(T):
                moved = (g[-1] @ every_action).view(B, A, d).gather(1, pick[:, t]).squeeze(1)  # (B, d): W_{a_t} g_t
                g.append(torch.tanh(g[-1] + moved))
            g = torch.stack(g, 1)  # (B, T+1, d)
        ctx.save_for_backward(act, W, g)
        return g

    @staticmethod
    def backward(ctx, grad_g):
        act, W, g = ctx.saved_tensors
        with torch.autocast(g.device.type, enabled=False):
            grad_g = grad_g.to(W.dtype)
            (B, T), (A, d, _) = act.shape, W.shape
            # The transposes this time: every_action_t[i, a*d + j] = W[a, i, j], so that
            # dh @ every_action_t (B, A*d) holds [W_0^T dh, W_1^T dh, ...].
            every_action_t = W.permute(1, 0, 2).reshape(d, A * d)
            pick = act[:, :, None, None].expand(B, T, 1, d)  # (B, T, 1, d), as in forward
            slope = 1 - g[:, 1:] ** 2  # tanh' at every step, (B, T, d)
            dg, dh = grad_g[:, T], [None] * T  # dg (B, d): the whole gradient at g_{t+1}, from the last step back
            for t in reversed(range(T)):
                dh[t] = dg * slope[:, t]  # (B, d): at h_{t+1}, before the tanh
                if t == 0 and not ctx.needs_input_grad[1]:
                    break  # g0 needs no gradient: the last product is not needed
                back = (dh[t] @ every_action_t).view(B, A, d).gather(1, pick[:, t]).squeeze(1)  # (B, d): W_{a_t}^T dh
                dg = grad_g[:, t] + dh[t] + back
            dh = torch.stack(dh, 1).flatten(0, 1)  # (B*T, d)
            g_prev, act = g[:, :T].flatten(0, 1), act.flatten()
            dW = torch.stack([(dh * (act == a)[:, None]).T @ g_prev for a in range(A)])  # (A, d, d)
        return None, dg if ctx.needs_input_grad[1] else None, dW
