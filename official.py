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


def load(path):
    """The checkpoint as a dict; raises on a file that is truncated, not a torch file, or that names
    anything beyond ALLOWED (code is refused, never run)."""
    with torch.serialization.safe_globals(ALLOWED):
        return torch.load(path, map_location="cpu", weights_only=True)


def settings(config):
    """(ModelConfig fields, GridWorld arguments) of an official config (OfficialConfig or dict)."""
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


def from_official(sd, n_layer):
    """An official state_dict in model.py's layout. The official RNN computes g + g W_a with g a row
    vector: its W_a is our W_a transposed. Its relative tables are shared tensors indexed by layer and
    by klen - 1 - lag: ours are per block and by lag."""
    t = "transformer."
    out = {"W_a": sd["rnn.weight"].transpose(1, 2), "g_proj.weight": sd[t + "grid_emb.0.weight"],
           "g_proj.bias": sd[t + "grid_emb.0.bias"], "obs_emb.weight": sd[t + "word_emb.weight"],
           "ln_f.weight": sd[t + "ln_f.weight"], "ln_f.bias": sd[t + "ln_f.bias"],
           "head.weight": sd["classifier.weight"], "head.bias": sd["classifier.bias"]}
    for i in range(n_layer):
        o, b = f"{t}layers.{i}.", f"blocks.{i}."
        out.update({b + "attn.qkv.weight": sd[o + "dec_attn.qkv_net.weight"],
                    b + "attn.proj.weight": sd[o + "dec_attn.o_net.weight"],
                    b + "ln1.weight": sd[o + "dec_attn.layer_norm.weight"], b + "ln1.bias": sd[o + "dec_attn.layer_norm.bias"],
                    b + "mlp.fc.weight": sd[o + "pos_ff.fc1.0.weight"], b + "mlp.proj.weight": sd[o + "pos_ff.fc2.0.weight"],
                    b + "ln2.weight": sd[o + "pos_ff.layer_norm.weight"], b + "ln2.bias": sd[o + "pos_ff.layer_norm.bias"],
                    b + "attn.r_w_bias": sd[t + "r_w_bias"][i], b + "attn.r_emb": sd[t + "r_emb"][i].flip(0),
                    b + "attn.r_bias": sd[t + "r_bias"][i].flip(0)})
    return out


def to_official(sd, n_layer):
    """The inverse of from_official (the official's unused embeddings left out): for tests."""
    t = "transformer."
    back = {"rnn.weight": sd["W_a"].transpose(1, 2), t + "grid_emb.0.weight": sd["g_proj.weight"],
            t + "grid_emb.0.bias": sd["g_proj.bias"], t + "word_emb.weight": sd["obs_emb.weight"],
            t + "ln_f.weight": sd["ln_f.weight"], t + "ln_f.bias": sd["ln_f.bias"],
            "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    for key, ours in (("r_w_bias", lambda i: sd[f"blocks.{i}.attn.r_w_bias"]),
                      ("r_emb", lambda i: sd[f"blocks.{i}.attn.r_emb"].flip(0)),
                      ("r_bias", lambda i: sd[f"blocks.{i}.attn.r_bias"].flip(0))):
        back[t + key] = torch.stack([ours(i) for i in range(n_layer)])
    for i in range(n_layer):
        o, b = f"{t}layers.{i}.", f"blocks.{i}."
        back.update({o + "dec_attn.qkv_net.weight": sd[b + "attn.qkv.weight"],
                     o + "dec_attn.o_net.weight": sd[b + "attn.proj.weight"],
                     o + "dec_attn.layer_norm.weight": sd[b + "ln1.weight"], o + "dec_attn.layer_norm.bias": sd[b + "ln1.bias"],
                     o + "pos_ff.fc1.0.weight": sd[b + "mlp.fc.weight"], o + "pos_ff.fc2.0.weight": sd[b + "mlp.proj.weight"],
                     o + "pos_ff.layer_norm.weight": sd[b + "ln2.weight"], o + "pos_ff.layer_norm.bias": sd[b + "ln2.bias"]})
    return back


def as_run(ckpt):
    """An official checkpoint as one of train.py's, for analyze.py: {model, model_config, args, step,
    maps}. Its step counts the official optimizer steps, one per prediction: epochs x walk length."""
    c = vars(ckpt["config"]) if not isinstance(ckpt["config"], dict) else ckpt["config"]
    model, world = settings(c)
    walk_len = c.get("walk_length", c["steps_per_epoch"] * c["tgt_len"])
    args = dict(world, act=model["act"], alpha=model["alpha"], beta=model["beta"], seed=c.get("seed", 0),
                context=model["context"], walk_len=walk_len, d_rnn=model["d_rnn"], arch="xl",
                official=f"{c.get('training_epoch', '?')} epochs of walks of {walk_len} steps, batch "
                         f"{c.get('batch_size', '?')}, lr {c.get('learning_rate', '?')}")
    maps = torch.as_tensor(np.asarray(ckpt["maps"]), dtype=torch.long)
    assert maps.shape == (world["num_maps"], world["size"] ** 2), f"maps of shape {tuple(maps.shape)}"
    return dict(model=from_official(ckpt["state_dict"], model["n_layer"]), model_config=model, args=args,
                step=c.get("training_epoch", 0) * walk_len, maps=maps)
