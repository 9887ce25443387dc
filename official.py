"""
The official release's checkpoints (kdkyum/transformer_memory_consolidation, its xlTEM), read without
running any code they carry, and their weights in the key layout of model.py's xl model.

The official checkpoint.pt is {"state_dict", "maps", "config"}: `maps` a numpy int64 array (N, L*L),
`config` a pickled configuration_transfo_xl.TransfoXLConfig, a plain class. torch.load's
weights_only unpickler builds only what it is allowed to: tensors, numpy arrays, and here a
stand-in class of ours under that class's name, which takes the attributes and runs nothing.
"""

import numpy as np
import torch


class OfficialConfig:
    """Stands in for configuration_transfo_xl.TransfoXLConfig: unpickling sets its attributes, nothing else."""


_reconstruct = np._core.multiarray._reconstruct
ALLOWED = [(OfficialConfig, "configuration_transfo_xl.TransfoXLConfig"), np.ndarray, np.dtype,
           type(np.dtype("int64")), type(np.dtype("int32")),
           (_reconstruct, "numpy._core.multiarray._reconstruct"),  # numpy 2
           (_reconstruct, "numpy.core.multiarray._reconstruct")]  # numpy 1


def is_official(ckpt):
    return isinstance(ckpt, dict) and {"state_dict", "maps", "config"} <= set(ckpt)


def settings(config):
    """(ModelConfig fields, TaskConfig fields) of an official config (OfficialConfig or dict)."""
    c = config if isinstance(config, dict) else vars(config)
    assert c.get("attn_type", 1) == 1, f"attn_type {c.get('attn_type')}: only the paper's attn_type 1 is read"
    assert c.get("pre_lnorm", True) and not c.get("correction", False) and not c.get("clamp_len", 0)
    assert c.get("ext_len", 0) == 0 and not c.get("same_length", False) and c["d_embed"] * 2 == c["d_model"]
    assert c["n_head"] * c["d_head"] == c["d_model"], "n_head x d_head must be d_model"
    assert c.get("rnn_act_ftn", "tanh") == "tanh" and c.get("n_a", 5) == 5, "only tanh and 5 actions are read"
    act = {"swish": "silu"}.get(c["ffn_act_ftn"], c["ffn_act_ftn"])
    model = dict(n_obs=c["vocab_size"], n_actions=c["n_a"], n_layer=c["n_layer"], n_head=c["n_head"],
                 d_model=c["d_model"], d_ff=c["d_inner"], d_rnn=c["d_rnn"], context=c["tgt_len"] + c["mem_len"],
                 act=act, alpha=float(c.get("alpha", 1.0)), beta=float(c.get("beta", 1.0)),
                 dropout=float(c.get("dropout", 0.1)), rel_lags=True, obs_attend=True,
                 segment=c["tgt_len"], mem_len=c["mem_len"], official_init=True)
    world = dict(size=c["side_len"], n_obs=c["vocab_size"], num_maps=c["num_envs"], n_actions=c["n_a"])
    return model, world


# Each key of model.py's layout <- the official release's key: the model's own, then each block's.
KEYS = {"g_proj.weight": "transformer.grid_emb.0.weight", "g_proj.bias": "transformer.grid_emb.0.bias",
        "obs_emb.weight": "transformer.word_emb.weight", "ln_f.weight": "transformer.ln_f.weight",
        "ln_f.bias": "transformer.ln_f.bias", "head.weight": "classifier.weight", "head.bias": "classifier.bias"}
BLOCK_KEYS = {"attn.qkv.weight": "dec_attn.qkv_net.weight", "attn.proj.weight": "dec_attn.o_net.weight",
              "ln1.weight": "dec_attn.layer_norm.weight", "ln1.bias": "dec_attn.layer_norm.bias",
              "mlp.fc.weight": "pos_ff.fc1.0.weight", "mlp.proj.weight": "pos_ff.fc2.0.weight",
              "ln2.weight": "pos_ff.layer_norm.weight", "ln2.bias": "pos_ff.layer_norm.bias"}
RELATIVE = ("r_w_bias", "r_emb", "r_bias")  # one (n_layer, ...) tensor each in the official release, one per block here


def flip_lags(key, table):
    """The official release's r_emb and r_bias run over klen - 1 - lag, model.py's over lag: the same flip
    turns one into the other, both ways."""
    return table if key == "r_w_bias" else table.flip(0)


def key_pairs(n_layer):
    """(model.py's key, the official release's) for every weight that is only renamed."""
    pairs = list(KEYS.items())
    for i in range(n_layer):
        pairs += [(f"blocks.{i}.{ours}", f"transformer.layers.{i}.{theirs}") for ours, theirs in BLOCK_KEYS.items()]
    return pairs


def from_official(sd, n_layer):
    """An official state_dict in model.py's layout; its unused embeddings (rew_emb, valid_seq_emb) left
    out. The official RNN computes g + g W_a with g a row vector: its W_a is ours transposed. Its
    relative tables are shared tensors indexed by layer and by klen - 1 - lag: ours are per block, by lag."""
    out = {ours: sd[theirs] for ours, theirs in key_pairs(n_layer)}
    out["W_a"] = sd["rnn.weight"].transpose(1, 2)
    for key in RELATIVE:
        for i in range(n_layer):
            out[f"blocks.{i}.attn.{key}"] = flip_lags(key, sd["transformer." + key][i])
    return out


def to_official(sd, n_layer):
    """The inverse of from_official: for tests."""
    out = {theirs: sd[ours] for ours, theirs in key_pairs(n_layer)}
    out["rnn.weight"] = sd["W_a"].transpose(1, 2)
    for key in RELATIVE:
        out["transformer." + key] = torch.stack([flip_lags(key, sd[f"blocks.{i}.attn.{key}"]) for i in range(n_layer)])
    return out


def as_run(ckpt):
    """An official checkpoint as one of train.py's, for analyze.py: {model, task_config, model_config, args,
    step, maps}. Its step counts the official optimizer steps, one per prediction: epochs x walk length."""
    c = vars(ckpt["config"]) if not isinstance(ckpt["config"], dict) else ckpt["config"]
    model, world = settings(c)
    walk_len = c.get("walk_length", c["steps_per_epoch"] * c["tgt_len"])
    args = dict(world, act=model["act"], alpha=model["alpha"], beta=model["beta"], seed=c.get("seed", 0),
                context=model["context"], walk_len=walk_len, d_rnn=model["d_rnn"], arch="xl",
                official=f"{c.get('training_epoch', '?')} epochs of walks of {walk_len} steps, batch "
                         f"{c.get('batch_size', '?')}, lr {c.get('learning_rate', '?')}")
    maps = torch.as_tensor(np.asarray(ckpt["maps"]), dtype=torch.long)
    assert maps.shape == (world["num_maps"], world["size"] ** 2), f"maps of shape {tuple(maps.shape)}"
    return dict(model=from_official(ckpt["state_dict"], model["n_layer"]), task_config=dict(world, seed=args["seed"]),
                model_config=model, args=args, step=c.get("training_epoch", 0) * walk_len, maps=maps)
