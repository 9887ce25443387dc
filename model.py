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

Optionally (tem_t=True) queries and keys come from the position part only and values from the
sensory part only, as in TEM-t proper.
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
    tem_t: bool = False  # q, k from the position part only; v from the sensory part only


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.n_head, self.tem_t = cfg.n_head, cfg.tem_t
        d, half = cfg.d_model, cfg.d_model // 2
        if cfg.tem_t:
            self.qk = nn.Linear(half, 2 * d, bias=False)  # from the position embedding
            self.v = nn.Linear(half, d, bias=False)  # from the sensory half of the stream
        else:
            self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, pos_emb, mask, rec=None):
        B, S, d = x.shape
        if self.tem_t:
            q, k = self.qk(pos_emb).split(d, dim=2)
            v = self.v(x[..., d // 2:])
        else:
            q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(B, S, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        if rec is None:  # fused kernel: training and evaluation
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, S, hd)
        else:  # the same computation, spelled out so the attention weights can be read
            att = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
            att = att.masked_fill(~mask, float("-inf")).softmax(-1)  # (B, H, S, S)
            rec.setdefault("att", []).append(att)
            y = att @ v
        y = y.transpose(1, 2).reshape(B, S, d)
        return self.dropout(self.proj(y))


class MLP(nn.Module):
    """Linear(d_model -> d_ff, no bias) -> activation -> Linear(d_ff -> d_model, no bias)."""

    def __init__(self, cfg):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.act = make_activation(cfg.act, cfg.alpha, cfg.beta)
        self.proj = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, rec=None):
        h = self.act(self.fc(x))  # (B, S, d_ff): the feed-forward "neurons"
        if rec is not None:
            rec.setdefault("ffn", []).append(h)
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model), nn.LayerNorm(cfg.d_model)
        self.attn, self.mlp = Attention(cfg), MLP(cfg)

    def forward(self, x, pos_emb, mask, rec=None):
        x = x + self.attn(self.ln1(x), pos_emb, mask, rec)
        return x + self.mlp(self.ln2(x), rec)


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
        """g (B, T+1, d_rnn): g[:, 0] = g0 and g[:, t+1] = tanh(g_t + W_{act_t} g_t)."""
        g = [g0]
        for t in range(act.shape[1]):
            moved = torch.einsum("bd,aed->bae", g[-1], self.W_a)  # (B, n_actions, d_rnn)
            step = moved.gather(1, act[:, t, None, None].expand(-1, 1, moved.shape[2]))
            g.append(torch.tanh(g[-1] + step.squeeze(1)))
        return torch.stack(g, 1)

    def attention_mask(self, T, device):
        """(2T, 2T) bool, True = may attend. Rows/columns 0..T-1 are observation tokens, T..2T-1
        query tokens. Observation s sees itself; query t sees observations t-context+1..t and
        itself."""
        i = torch.arange(T, device=device)
        lag = i[:, None] - i[None, :]  # query t (row) minus observation s (column)
        eye = torch.eye(T, dtype=torch.bool, device=device)
        top = torch.cat([eye, torch.zeros_like(eye)], 1)
        bottom = torch.cat([(lag >= 0) & (lag < self.cfg.context), eye], 1)
        return torch.cat([top, bottom], 0)

    def forward(self, obs, act, g0=None, rec=None):
        """obs (B, T), act (B, T) -> logits (B, T, n_obs); logits[:, t] predicts obs[:, t+1]
        from obs[:, :t+1] and act[:, :t+1], attending to at most `context` past observations.

        g0 (B, d_rnn): the starting position vector, drawn N(0, 1/d_rnn) if None.
        rec: pass a dict to read out internal activity of the query tokens, filled with
        "g" (B, T+1, d_rnn), "ffn" [n_layer x (B, T, d_ff)], "att" [n_layer x (B, H, T, T)]
        where att[..., t, s] is the weight query t gives observation s."""
        B, T = obs.shape
        cfg = self.cfg
        if g0 is None:
            g0 = torch.randn(B, cfg.d_rnn, device=obs.device) / math.sqrt(cfg.d_rnn)
        g = self.path_integrate(act, g0)  # (B, T+1, d_rnn)
        pos_emb = F.relu(self.g_proj(g))  # (B, T+1, d/2)
        pos_emb = torch.cat([pos_emb[:, :T], pos_emb[:, 1:]], 1)  # obs t: g_t; query t: g_{t+1}
        query = torch.full_like(obs, cfg.n_obs)
        x = torch.cat([pos_emb, self.obs_emb(torch.cat([obs, query], 1))], 2)  # (B, 2T, d)
        mask = self.attention_mask(T, obs.device)
        inner = None if rec is None else {}
        for block in self.blocks:
            x = block(x, pos_emb, mask, inner)
        if rec is not None:  # keep the query tokens' part
            rec["g"] = g
            rec["ffn"] = [h[:, T:] for h in inner["ffn"]]
            rec["att"] = [a[:, :, T:, :T] for a in inner["att"]]
        return self.head(self.ln_f(x[:, T:]))  # (B, T, n_obs)

    def flops_per_step(self, batch, T):
        """Model FLOPs of one training step on `batch` walks of T predictions: forward + backward,
        counted as 3x the forward's matrix multiplies (2 FLOPs per multiply-add), as in the
        PaLM/nanoGPT MFU estimate. Only useful work counts: attention over the keys each token
        may see, not the masked-out rest of the (2T x 2T) score matrix."""
        c = self.cfg
        d, S = c.d_model, 2 * T  # T observation tokens + T query tokens
        qkv = S * (d // 2) * 3 * d if c.tem_t else S * d * 3 * d  # tem_t: q, k, v from halves
        per_layer = qkv + S * d * d + 2 * S * d * c.d_ff  # q/k/v, output projection, feed-forward
        keys = T + sum(min(t + 1, c.context) + 1 for t in range(T))  # each token's visible keys
        per_layer += 2 * keys * d  # scores q.k and the weighted sum of v
        g = T * c.n_actions * c.d_rnn ** 2 + (T + 1) * c.d_rnn * d // 2  # path integration, g_proj
        forward = 2 * (c.n_layer * per_layer + g + T * d * c.n_obs)  # + read-out
        return 3 * forward * batch
