"""
A compact transformer for the grid task: TEM-t (Whittington et al., ICLR 2022) as the NMDA paper
(Kim et al., NeurIPS 2023) uses it, with the feed-forward activation taken from nmda.py.

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
   last `context` observations (plus g, which carries only the path): the working-memory /
   reference-memory split of env.visited_in_context is exact, and every step's prediction comes
   out of one pass as the same function as one pass per prefix (as the official release trains).

Optionally (tem_t=True) queries and keys come from the position embedding only, and values from
the sensory half of the stream, as in TEM-t proper: of the block's normalised input, ln1(x)[..., d/2:],
so the position half moves them too (LayerNorm takes its mean and scale over both halves), in the
first block as in the others.
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
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.tem_t = cfg.n_head, cfg.tem_t
        d, half = cfg.d_model, cfg.d_model // 2
        if cfg.tem_t:
            self.qk = nn.Linear(half, 2 * d, bias=False)  # from the position embedding
            self.v = nn.Linear(half, d, bias=False)  # from the sensory half of the normalised stream
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)
        self.spell_out = False  # True (Model.record): attention spelled out and its weights kept in self.weights

    def forward(self, x, pos_emb, mask, queries_only=False):
        """x (B, 2T, d): T observation tokens, then T query tokens; mask (T, 2T) from
        Model.attention_mask. Returns the update of every token, or of the query tokens alone."""
        B, S, d = x.shape
        if self.tem_t:
            q, k = self.qk(pos_emb).split(d, dim=2)
            v = self.v(x[..., d // 2:])
        else:
            q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(B, S, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        # An observation token attends to itself alone: its softmax is 1, its output its own value.
        # Only the query tokens need attention proper, over [observations ; queries].
        q = split_tokens(q, 2)[1]  # (B, H, T, hd): the queries' queries
        if not self.spell_out:  # fused kernel: training and evaluation
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        else:  # the same computation, spelled out so the attention weights can be read
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            self.weights = att.masked_fill(~mask, float("-inf")).softmax(-1)  # (B, H, T, 2T)
            y = self.weights @ v
        if not queries_only:
            y = torch.cat([split_tokens(v, 2)[0], y], 2)  # (B, H, 2T, hd): observation tokens get their values
        y = y.transpose(1, 2).reshape(B, -1, d)
        return self.dropout(self.proj(y))


class MLP(nn.Module):
    """Linear(d_model -> d_ff, no bias) -> activation -> Linear(d_ff -> d_model, no bias)."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.act = make_activation(cfg.act, cfg.alpha, cfg.beta)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.act(self.fc(x))  # (B, S, d_ff): the feed-forward "neurons"
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, pos_emb, mask, queries_only=False):
        """x (B, 2T, d) -> (B, 2T, d); or, with queries_only, (B, T, d): the last block, whose
        observation-token outputs nobody reads, updates and returns the query tokens alone."""
        update = self.attn(self.ln1(x), pos_emb, mask, queries_only)
        x = (split_tokens(x)[1] if queries_only else x) + update
        return x + self.mlp(self.ln2(x))


class Model(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.d_model % 2 == 0 and cfg.d_model % cfg.n_head == 0
        self.cfg = cfg
        half = cfg.d_model // 2
        # W_a of g_{t+1} = tanh(g_t + W_a g_t), zero at init: g starts out as pure tanh decay.
        self.W_a = nn.Parameter(torch.zeros(cfg.n_actions, cfg.d_rnn, cfg.d_rnn))
        self.g_proj = nn.Linear(cfg.d_rnn, half)
        self.obs_emb = nn.Embedding(cfg.n_obs + 1, half)  # index n_obs is the query token
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.n_obs, bias=False)

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

    def attention_mask(self, T, device):
        """(T, 2T) bool, True = may attend: the rows are the query tokens, the columns the T
        observation tokens and then the T query tokens. Query t sees observations
        t-context+1..t and itself. (Observation tokens see only themselves: see Attention.)"""
        i = torch.arange(T, device=device)
        lag = i[:, None] - i[None, :]  # query t (row) minus observation s (column)
        return torch.cat([(lag >= 0) & (lag < self.cfg.context), lag == 0], 1)

    def forward(self, obs, act, g0=None):
        """obs (B, T), act (B, T) -> logits (B, T, n_obs); logits[:, t] predicts obs[:, t+1]
        from obs[:, :t+1] and act[:, :t+1], attending to at most `context` past observations.

        g0 (B, d_rnn): the starting position vector, drawn N(0, 1/d_rnn) if None."""
        B, T = obs.shape
        cfg = self.cfg
        if g0 is None:
            g0 = self.random_g0(B, device=obs.device)
        g = self.path_integrate(act, g0)  # (B, T+1, d_rnn)
        pos_emb = F.relu(self.g_proj(g))  # (B, T+1, d/2)
        # The token sequence [observations ; queries] (split_tokens): observation token t carries
        # (g_t, obs_t); query token t carries (g_{t+1}, QUERY) and asks for obs_{t+1}.
        pos_emb = torch.cat([pos_emb[:, :T], pos_emb[:, 1:]], 1)  # (B, 2T, d/2)
        query = torch.full_like(obs, cfg.n_obs)
        x = torch.cat([pos_emb, self.obs_emb(torch.cat([obs, query], 1))], 2)  # (B, 2T, d)
        mask = self.attention_mask(T, obs.device)
        for i, block in enumerate(self.blocks):
            x = block(x, pos_emb, mask, queries_only=i == len(self.blocks) - 1)
        return self.head(self.ln_f(x))  # (B, T, n_obs)

    def record(self, obs, act, g0=None):
        """(logits, rec): the forward pass, and the internal activity of its query tokens, read by
        forward hooks (as silencing.py's) that leave the forward as it is: "g" (B, T+1, d_rnn), the
        position vectors (g_proj's input); "ffn" [n_layer x (B, T, d_ff)], the feed-forward neurons
        after the activation; "att" [n_layer x (B, H, T, T)], where att[..., t, s] is the weight query
        t gives observation s. The fused attention kernel never forms those weights, so meanwhile
        attention is spelled out (Attention.spell_out): the same function."""
        T, rec = obs.shape[1], {"ffn": []}

        def ffn(module, inputs, out):  # (B, 2T, d_ff), or the query tokens alone in the last block
            rec["ffn"].append(split_tokens(out)[1] if out.shape[1] == 2 * T else out)

        hooks = [self.g_proj.register_forward_pre_hook(lambda module, inputs: rec.update(g=inputs[0]))]
        hooks += [block.mlp.act.register_forward_hook(ffn) for block in self.blocks]
        for block in self.blocks:
            block.attn.spell_out = True
        try:
            logits = self(obs, act, g0)
        finally:
            for h in hooks:
                h.remove()
            for block in self.blocks:
                block.attn.spell_out = False
        rec["att"] = [split_tokens(block.attn.weights, 3)[0] for block in self.blocks]  # on observation tokens
        for block in self.blocks:
            block.attn.weights = None
        return logits, rec

    def flops_per_step(self, batch, T):
        """Model FLOPs of one training step on `batch` walks of T predictions: forward + backward,
        counted as 3x the forward's matrix multiplies (2 FLOPs per multiply-add), as in the
        PaLM/nanoGPT MFU estimate. Attention counts only the keys a query token may see, not the
        masked-out rest of its row; observation tokens attend to themselves alone, which takes no
        product; the last block projects and feeds forward the query tokens alone."""
        c = self.cfg
        d = c.d_model
        qkv = 2 * T * (d // 2 if c.tem_t else d) * 3 * d  # every token's q, k, v (tem_t: from halves)
        keys = sum(min(t + 1, c.context) + 1 for t in range(T))  # the keys of every query token
        attention = 2 * keys * d  # scores q.k and the weighted sum of v

        def proj_and_ffn(tokens):
            return tokens * d * d + 2 * tokens * d * c.d_ff

        blocks = c.n_layer * (qkv + attention) + (c.n_layer - 1) * proj_and_ffn(2 * T) + proj_and_ffn(T)
        # path integration as computed: every step multiplies by all n_actions matrices; and g_proj
        g = T * c.n_actions * c.d_rnn ** 2 + (T + 1) * c.d_rnn * d // 2
        forward = 2 * (blocks + g + T * d * c.n_obs)  # + read-out
        return 3 * forward * batch

