"""
A compact transformer for the grid task: TEM-t (Whittington et al., ICLR 2022) as the NMDA paper
(Kim et al., NeurIPS 2023) uses it, with the feed-forward activation taken from nmda.py; and, with
four switches of ModelConfig, the official release's own model, a Transformer-XL around the same
position code.

Three changes to a plain transformer:
1. Recurrent positional encoding. A position vector g is path-integrated from the actions,
   g_{t+1} = tanh(g_t + W_{a_t} g_t), one learned matrix per action (initialised to zero).
   g_0 is random for every walk, so absolute position is never given: it must be inferred.
2. Tokens join a position part, ReLU(Linear(g)), and a sensory part, an embedding of the
   observation. Observation token s carries (g_s, obs_s). Query token t carries (g_{t+1}, QUERY):
   it asks "what will I see where I am about to be?" and its output predicts obs_{t+1}.
3. Causal attention over the context only. The sequence is [observation tokens ; query tokens].
   Query token t attends to observation tokens t-context+1 .. t and to itself. Observation tokens
   attend only to themselves, so whatever a prediction knows about the walk comes from exactly the
   last `context` observations (plus g, which carries only the path), and every step's prediction
   comes out of one pass as the same function as one pass per prefix (as the official release trains).

Optionally (tem_t=True) queries and keys come from the position embedding only, and values from
the sensory half of the stream, as in TEM-t proper: of the block's normalised input, ln1(x)[..., d/2:],
so the position half moves them too (LayerNorm takes its mean and scale over both halves), in the
first block as in the others.

The official release (kdkyum/transformer_memory_consolidation, xlTEM with attn_type 1) differs in
four ways, each a switch (train.py --arch xl turns on all four): learnable relative-lag terms in
attention (rel_lags); observation tokens that attend to earlier observations too (obs_attend); walks
in segments, every token attending to its segment and to a memory of the tokens before it, the
previous segment's input to each block, g and the memory carried without gradient (segment,
mem_len); and its init, input dropout and read-out bias (official_init). Its query is its cls
token, the query token here; every prediction still comes out of one pass (Model.forward), and
what a prediction can see is Model.reach.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nmda import make_activation


@dataclass
class ModelConfig:
    n_obs: int = 10  # sensory tokens; the query token is one more
    n_actions: int = 5
    n_layer: int = 2
    n_head: int = 8
    d_model: int = 512  # half position part, half sensory part
    d_ff: int = 2048
    d_rnn: int = 128  # size of the position vector g
    context: int = 64  # how many past observations a prediction may attend to
    act: str = "nmda"
    alpha: float = 10.0
    beta: float = 1.0
    dropout: float = 0.1
    tem_t: bool = False  # q, k from the position embedding; v from the sensory half of the stream
    # The official release's model (xlTEM, a Transformer-XL with its attn_type 1) differs from the above
    # in four ways, each a switch here (train.py's --arch xl turns on all four):
    rel_lags: bool = False  # learnable relative-lag terms in attention: r_w_bias . k, q . r_emb[lag], r_bias[lag]
    obs_attend: bool = False  # observation tokens attend to earlier observations too, not to themselves alone
    segment: int = 0  # > 0: walks run in segments of this many steps, g and the memory carried, no gradient
    mem_len: int = 0  # with segment: earlier observation tokens (their layer inputs) every token attends to
    official_init: bool = False  # normal(0, 0.02) weights, dropout on the input tokens, a read-out bias


def split_tokens(x, dim=1):
    """The token sequence is [T observation tokens ; T query tokens] along `dim`: (observation part,
    query part). The one place that knows the layout; Model.forward builds it."""
    T = x.shape[dim] // 2
    return x.narrow(dim, 0, T), x.narrow(dim, T, T)


class PathIntegration(torch.autograd.Function):
    """g[:, t+1] = tanh(g_t + W_{a_t} g_t) for t = 0..T-1 with g[:, 0] = g0, in W's dtype, and its
    backward written out (backpropagation through time). With h_{t+1} = g_t + W_{a_t} g_t and dg_t
    the loss's whole gradient with respect to g_t:
        dh_{t+1} = dg_{t+1} * (1 - g_{t+1}^2)
        dg_t     = (the gradient at g_t itself) + dh_{t+1} + W_{a_t}^T dh_{t+1}
        dW_a     = sum over the walks and steps that took action a of dh_{t+1} g_t^T
    A step is one matrix product against every action's matrix at once, a gather of each walk's
    action and two element-wise kernels; the weight gradient is one product per action, after the
    loop. Autograd through Model.path_integrate_loop computes the same (in float32: under bf16
    autocast the loop runs in bf16) and launches many more."""

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


class Attention(nn.Module):
    def __init__(self, cfg, n_lags):
        super().__init__()
        self.n_head, self.tem_t, self.obs_attend = cfg.n_head, cfg.tem_t, cfg.obs_attend
        d, half, hd = cfg.d_model, cfg.d_model // 2, cfg.d_model // cfg.n_head
        if cfg.tem_t:
            self.qk = nn.Linear(half, 2 * d, bias=False)  # from the position embedding
            self.v = nn.Linear(half, d, bias=False)  # from the sensory half of the normalised stream
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.rel_lags:  # Transformer-XL's learnable relative terms (Dai et al. 2019), per layer, per lag
            self.r_w_bias = nn.Parameter(torch.zeros(cfg.n_head, hd))  # a content bias on every query
            self.r_emb = nn.Parameter(torch.zeros(n_lags, cfg.n_head, hd))  # score q . r_emb[lag]
            self.r_bias = nn.Parameter(torch.zeros(n_lags, cfg.n_head))  # score r_bias[lag]
            nn.init.normal_(self.r_w_bias, 0.0, 0.02)
            nn.init.normal_(self.r_emb, 0.0, 0.02)
        self.rel_lags = cfg.rel_lags
        self.spell_out = False  # True (memory.activity): attention spelled out and its weights kept in self.weights

    def forward(self, x, mem, pos_emb, mask, lag, queries_only=False):
        """x (B*K, 2n, d): n observation tokens, then n query tokens, of K segments of B walks (walk-major);
        mem (B*K, m, d): each segment's memory, earlier observation tokens; mask (K, 2n, m+2n) and lag
        (2n, m+2n) from Model.visibility. Returns the update of every token, or of the query tokens alone."""
        BK, N, d = x.shape
        K, H, hd = mask.shape[0], self.n_head, d // self.n_head
        n, m = N // 2, 0 if mem is None else mem.shape[1]
        kv = x if mem is None else torch.cat([mem, x], 1)  # (B*K, m+2n, d): the keys
        if self.tem_t:
            q, k = self.qk(pos_emb).split(d, dim=2)
            v = self.v(x[..., d // 2:])
        else:
            q, k, v = self.qkv(kv).split(d, dim=2)
            q = q[:, m:]  # queries come from this chunk's tokens only
        q, k, v = (z.view(-1, K, z.shape[1], H, hd).transpose(2, 3) for z in (q, k, v))  # (B, K, H, tokens, hd)
        if K == 1:  # one segment, or none: (B, H, tokens, hd), the fused kernel's fastest shape
            q, k, v, mask = q[:, 0], k[:, 0], v[:, 0], mask[0]
        # An observation token that attends to itself alone needs no attention: its softmax is 1, its output
        # its own value. Then (and in the last block, whose observation outputs nobody reads) only the
        # query tokens' rows are computed.
        every_row = self.obs_attend and not queries_only  # observation tokens attend too
        rows = slice(0, N) if every_row else slice(n, N)
        q, mask, lag = q[..., rows, :], mask[..., rows, :], lag[rows]
        if K > 1:
            mask = mask[:, None]  # (K, 1, rows, keys), against (B, K, H, rows, keys)
        if not self.rel_lags and not self.spell_out:  # fused kernel: training and evaluation
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, K, H, rows, hd)
        else:  # the same computation spelled out, with the relative terms and the weights to read
            if self.rel_lags:  # Transformer-XL's terms: (q + r_w_bias) . k, plus q . r_emb[lag] + r_bias[lag]
                att = (q + self.r_w_bias[:, None]) @ k.transpose(-2, -1)  # (B, K, H, rows, keys)
                q_lags = q @ self.r_emb.permute(1, 2, 0)  # (B, K, H, rows, n_lags): q against every lag's r_emb
                att = att + q_lags.gather(-1, lag.expand(*q_lags.shape[:-2], *lag.shape)) + self.r_bias.T[:, lag]
            else:
                att = q @ k.transpose(-2, -1)  # (B, K, H, rows, keys)
            att = (att / math.sqrt(hd)).masked_fill(~mask, float("-inf")).softmax(-1)
            if self.spell_out:  # the queries' weights on the observations, (B*K, H, n, m+n)
                self.weights = att[..., -n:, :m + n].reshape(BK, H, n, m + n)
            y = att @ v
        if not every_row and not queries_only:  # observation tokens get their own values
            y = torch.cat([v[..., m:m + n, :], y], -2)  # (B, K, H, 2n, hd)
        y = y.reshape(BK, H, -1, hd).transpose(1, 2).reshape(BK, -1, d)
        return self.dropout(self.proj(y))


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


class Block(nn.Module):
    def __init__(self, cfg, n_lags):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg, n_lags), MLP(cfg)

    def forward(self, x, mem, pos_emb, mask, lag, queries_only=False):
        """x (B, 2n, d) -> (B, 2n, d); or, with queries_only, (B, n, d): the last block, whose
        observation-token outputs nobody reads, updates and returns the query tokens alone. mem (B, m, d):
        the earlier observation tokens' inputs to this block, normalised here like x."""
        update = self.attn(self.ln1(x), None if mem is None else self.ln1(mem), pos_emb, mask, lag, queries_only)
        x = (split_tokens(x)[1] if queries_only else x) + update
        return x + self.mlp(self.ln2(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.d_model % 2 == 0 and cfg.d_model % cfg.n_head == 0
        assert not (cfg.tem_t and cfg.segment), "tem_t attention has no segment memory"
        self.cfg = cfg
        half = cfg.d_model // 2
        # W_a of g_{t+1} = tanh(g_t + W_a g_t), zero at init: g starts out as pure tanh decay.
        self.W_a = nn.Parameter(torch.zeros(cfg.n_actions, cfg.d_rnn, cfg.d_rnn))
        self.g_proj = nn.Linear(cfg.d_rnn, half)
        self.obs_emb = nn.Embedding(cfg.n_obs + 1, half)  # index n_obs is the query token
        self.drop_in = nn.Dropout(cfg.dropout if cfg.official_init else 0.0)  # the official drops input tokens
        self.blocks = nn.ModuleList(Block(cfg, self.n_lags) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_obs, bias=cfg.official_init)
        if cfg.official_init:  # the official release's: normal(0, 0.02) weights, zero biases, W_a still zero
            for name, p in self.named_parameters():
                if name.endswith("r_bias") or (name.endswith(".bias") and p.dim() == 1):
                    nn.init.zeros_(p)
                elif name != "W_a" and (p.dim() > 1 or name.endswith("r_w_bias")):
                    nn.init.normal_(p, 0.0, 0.02)

    @property
    def span(self):
        """The most past observations a query token attends to directly: its context, or with segments,
        the memory and the segment."""
        return self.cfg.mem_len + self.cfg.segment if self.cfg.segment else self.cfg.context

    @property
    def lag_units(self):
        """The attention lags that memory.activity keeps as units: every lag of the context; with segments,
        0 to mem_len, the lags every query sees once the walk is past its first segment (a further lag
        is seen only late in a segment, so its weight would follow the segment's phase, not the place)."""
        return self.cfg.mem_len + 1 if self.cfg.segment else self.cfg.context

    @property
    def n_lags(self):
        """Lags the relative terms tell apart: 0 (a token and itself) to span. With segments the
        official table's segment + mem_len entries, the furthest lag (the last query to the first
        memory token) sharing the last entry, as the official pads its table with its first."""
        return self.span if self.cfg.segment else self.span + 1

    def reach(self, T, direct=False):
        """(T,) the earliest observation the prediction at step t can depend on: through every layer
        (observation tokens that attend to earlier ones pass on what they saw), or with direct, the
        ones the last layer's query token attends to itself."""
        c, t = self.cfg, torch.arange(T)
        def seen(i):  # the earliest observation a token of step i attends to
            return (i // c.segment * c.segment - c.mem_len if c.segment else i - c.context + 1).clamp(min=0)
        first = seen(t)
        if c.obs_attend and not direct:
            for _ in range(c.n_layer - 1):  # each layer below reaches back once more
                first = seen(first)
        return first

    def segment_ends(self, T):
        """(T,) bool: the last step of each segment, the one prediction of a segment the official
        release's validate() scores (every step, without segments)."""
        t = torch.arange(T)
        return (t % self.cfg.segment == self.cfg.segment - 1) | (t == T - 1) if self.cfg.segment else t >= 0

    def visibility(self, n, m=0, K=1, device=None, start=0):
        """(mask (K, 2n, m+2n), lag (2n, m+2n)) for K segments of n steps (segment k from step k*n), each
        with m memory tokens before it: the rows are the n observation tokens and n query tokens, the
        columns the memory (observations s-m..s-1), the observations and the queries. mask, True = may
        attend: query t sees the observations from its context's start (t-context+1; with segments, the
        memory's) to t, and itself; an observation token sees itself, and with obs_attend what query t
        sees but itself. Observations before step 0 are never seen. start: the first segment's step. lag:
        observation token t sits at position t and query token t at t+1, where obs t+1 will be; the
        same in every segment, so taken from the first.

                            memory (m)    observations (n)   queries (n)
            observations    sees          sees (causal)      -
            queries         sees          sees (causal)      itself
        """
        s = start + torch.arange(K, device=device)[:, None, None] * n  # (K, 1, 1): each segment's first step
        i = s + torch.arange(n, device=device)[:, None]  # (K, n, 1): the step of each row
        j = s - m + torch.arange(m + n, device=device)  # (K, 1, m+n): the step of each observation column
        lo = s - m if self.cfg.segment else i - self.cfg.context + 1
        sees = (j <= i) & (j >= lo) & (j >= 0)  # (K, n, m+n)
        obs_rows = sees if self.cfg.obs_attend else (j == i).expand_as(sees)
        none = torch.zeros(K, n, n, dtype=torch.bool, device=device)
        me = torch.eye(n, dtype=torch.bool, device=device).expand(K, n, n)
        mask = torch.cat([torch.cat([obs_rows, none], 2), torch.cat([sees, me], 2)], 1)
        position = torch.cat([i[0, :, 0], i[0, :, 0] + 1])  # of the rows; the columns: observations at j, queries at i+1
        lag = (position[:, None] - torch.cat([j[0, 0], i[0, :, 0] + 1])).clamp(0, self.n_lags - 1)
        return mask, lag

    def path_integrate(self, act, g0):
        """g (B, T+1, d_rnn): g[:, 0] = g0 and g[:, t+1] = tanh(g_t + W_{act_t} g_t), in W's dtype
        (float32: PathIntegration turns autocast off for the recurrence and computes in W's dtype).

        The same function as path_integrate_loop, with values and gradients the tests compare, but
        a handful of kernels a step and one matrix product for the weight gradient (PathIntegration)."""
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

    def forward(self, obs, act, g0=None):
        """obs (B, T), act (B, T) -> logits (B, T, n_obs); logits[:, t] predicts obs[:, t+1] from
        obs[:, :t+1] and act[:, :t+1]: from the last `context` observations, or with segments, the
        walk segment by segment, g and the memory carried from each to the next without gradient.
        g0 (B, d_rnn): the starting position vector, drawn N(0, 1/d_rnn) if None."""
        B, T = obs.shape
        if g0 is None:
            g0 = self.random_g0(B, device=obs.device)
        if not self.cfg.segment:
            return self.run(obs, act, g0)
        # Segments. A segment's memory is the previous segment's input to each block, so once the block
        # below has run for every segment, the next can too: all K segments of a walk run side by side,
        # block by block, the same function as one after another (and as the official's pass per prefix).
        S = self.cfg.segment
        K = -(-T // S)
        pad = K * S - T  # the last segment filled out; what is predicted there is dropped
        obs, act = F.pad(obs, (0, pad)), F.pad(act, (0, pad))
        with torch.no_grad():  # g where each segment starts (steps 0, S, 2S, ...): carried without gradient
            starts = self.path_integrate(act, g0)[:, 0:K * S:S]  # (B, K, d_rnn)
        starts = torch.cat([g0[:, None], starts[:, 1:]], 1).flatten(0, 1)  # the first is g0 itself, its gradient kept
        logits = self.run(obs.view(B * K, S), act.view(B * K, S), starts, K)
        return logits.view(B, K * S, -1)[:, :T]

    def run(self, obs, act, g0, K=1, mem=None, start=0):
        """One pass: obs, act (B*K, n) -> logits (B*K, n, n_obs), K segments of B walks (walk-major), each
        of n steps with its first g; with segments, each segment's memory is the previous one's, or
        for one segment from step `start`, mem: per block (B, m, d) its input at the m steps before
        (the official's mems; bench.py times its pass per prefix so)."""
        BK, n = obs.shape
        cfg = self.cfg
        g = self.path_integrate(act, g0)  # (B*K, n+1, d_rnn)
        pos_emb = F.relu(self.g_proj(g))  # (B*K, n+1, d/2)
        # The token sequence [observations ; queries] (split_tokens): observation token t carries
        # (g_t, obs_t); query token t carries (g_{t+1}, QUERY) and asks for obs_{t+1}.
        pos_emb = torch.cat([pos_emb[:, :n], pos_emb[:, 1:]], 1)  # (B*K, 2n, d/2)
        query = torch.full_like(obs, cfg.n_obs)
        x = self.drop_in(torch.cat([pos_emb, self.obs_emb(torch.cat([obs, query], 1))], 2))  # (B*K, 2n, d)
        if mem is not None:  # a memory handed in
            M = mem[0].shape[1]
        else:
            M = cfg.mem_len if cfg.segment else 0
        mask, lag = self.visibility(n, M, K, obs.device, start)
        for i, block in enumerate(self.blocks):
            if mem is not None:
                m = mem[i]
            else:  # (B*K, M, d): this block's input for the M steps before each segment, or none
                m = self.memory(x[:, :n], K) if M else None
            x = block(x, m, pos_emb, mask, lag, queries_only=i == len(self.blocks) - 1)
        return self.head(self.ln_f(x))

    def memory(self, h, K):
        """Transformer-XL's memory (mems): for each of K segments (B*K, S, d) of observation-token inputs,
        the mem_len inputs just before it, without gradient; zeros before the walk (never attended to)."""
        M, (BK, S, d) = self.cfg.mem_len, h.shape
        h = F.pad(h.detach().reshape(BK // K, K * S, d), (0, 0, M, 0))  # (B, M + K*S, d)
        return h.unfold(1, M, S)[:, :K].transpose(2, 3).reshape(BK, M, d)  # window k: steps k*S-M .. k*S-1

    def flops_per_step(self, batch, T):
        """Model FLOPs of one training step on `batch` walks of T predictions: forward + backward,
        counted as 3x the forward's matrix multiplies (2 FLOPs per multiply-add), as in the
        PaLM/nanoGPT MFU estimate. Attention counts only the pairs the mask lets through (q.k and the
        weighted sum of v); observation tokens that attend to themselves alone take no product; the
        last block projects and feeds forward the query tokens alone. With segments, as computed: the
        last one filled out, the memory's keys and values made anew in every segment (as the official
        release does), and g where each segment starts found once without gradient."""
        c, d = self.cfg, self.cfg.d_model
        S = c.segment or T
        K, M = -(-T // S), c.mem_len if c.segment else 0
        mask = self.visibility(S, M, K)[0]  # (K, 2S, M+2S)
        keys, macs = K * (M + 2 * S), 0  # the tokens each block makes keys and values of
        for last in [False] * (c.n_layer - 1) + [True]:
            rows = mask[:, S:] if last or not c.obs_attend else mask  # the rows attention computes
            macs += keys * (d // 2 if c.tem_t else d) * 3 * d  # q, k, v (tem_t: from halves)
            macs += 2 * int(rows.sum()) * d  # q.k and the weighted sum of v, over the pairs seen
            if c.rel_lags:  # q against every lag's r_emb
                macs += rows.shape[0] * rows.shape[1] * self.n_lags * d
            tokens = K * S if last else 2 * K * S
            macs += tokens * d * d + 2 * tokens * d * c.d_ff  # the projection and the feed-forward
        # path integration as computed: every step multiplies by all n_actions matrices; and g_proj
        macs += K * S * c.n_actions * c.d_rnn ** 2 + K * (S + 1) * c.d_rnn * d // 2
        starts = 2 * K * S * c.n_actions * c.d_rnn ** 2 if c.segment else 0  # forward only
        return (3 * 2 * (macs + K * S * d * c.n_obs) + starts) * batch  # + read-out
