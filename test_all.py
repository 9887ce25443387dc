"""Tests: each asserts one property that matters. Run with: python -m pytest -q test_all.py"""

import argparse
import csv
import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import analyze
import bench
import checkpoint
import compare
import gpu
import gpucheck
import memory
import official
import place
import plots
import silencing
import train
from env import WALKS, Batches, GridWorld, TaskConfig, visited_since
from model import Model, ModelConfig, PathIntegration, attention_mask, reach, segment_ends
from nmda import ACTIVATIONS, NMDA, make_activation, nmda

torch.set_num_threads(1)  # tiny models: threads only add overhead
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--preset", "small", "--d_model", "32", "--d_ff", "64", "--n_head", "2", "--d_rnn", "16",
        "--walk_len", "32", "--batch_size", "16", "--eval_walks", "32", "--warmup_iters", "2", "--device", "cpu"]


# ---- nmda.py ------------------------------------------------------------------------------------

def test_nmda_equals_its_formula():
    x = torch.linspace(-20, 20, 401, dtype=torch.float64)
    for alpha in (0.01, 0.5, 1.0, 10.0, 1e3):
        for beta in (0.5, 1.0, 2.0):
            want = x / (1 + alpha * torch.exp(-beta * x))
            torch.testing.assert_close(nmda(x, alpha, beta), want, rtol=1e-12, atol=1e-12)


def test_nmda_is_silu_at_alpha_1_and_identity_at_alpha_0():
    x = torch.randn(1000, dtype=torch.float64) * 5
    torch.testing.assert_close(nmda(x, 1.0, 1.0), F.silu(x))
    assert torch.equal(NMDA(0.0)(x), x)


def test_nmda_is_finite_at_extreme_inputs():
    x = torch.tensor([-1e30, -1e4, -80.0, 0.0, 80.0, 1e4, 1e30])
    for dtype in (torch.float32, torch.bfloat16):
        for alpha in (1e-6, 1.0, 10.0, 1e6):
            y = nmda(x.to(dtype), alpha, 1.0)
            assert torch.isfinite(y).all(), (dtype, alpha, y)
            assert y[0] == 0 and y[-1] == x[-1].to(dtype)  # fully blocked / fully open


def test_nmda_gradcheck():
    x = torch.randn(64, dtype=torch.float64, requires_grad=True) * 4
    for alpha in (0.0, 0.1, 10.0):
        assert torch.autograd.gradcheck(lambda z: nmda(z, alpha, 1.5), (x,))


# Each registered activation and its formula, a function of x and of the settings alpha and beta (an
# activation that is not built from one ignores it; one with a parameter per neuron, at its initial
# value). A new entry in nmda.ACTIVATIONS needs its formula here.
FORMULAS = {
    "nmda": lambda x, alpha, beta: x / (1 + alpha * torch.exp(-beta * x)),
    "gelu": lambda x, alpha, beta: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "relu": lambda x, alpha, beta: x.clamp(min=0),
    "swish": lambda x, alpha, beta: x / (1 + torch.exp(-x)),
    "silu": lambda x, alpha, beta: x / (1 + torch.exp(-x)),
    "linear": lambda x, alpha, beta: x,
    "sigmoid": lambda x, alpha, beta: 1 / (1 + torch.exp(-x)),
    "tanh": lambda x, alpha, beta: (torch.exp(x) - torch.exp(-x)) / (torch.exp(x) + torch.exp(-x)),
    "leaky_relu": lambda x, alpha, beta: torch.where(x > 0, x, 0.01 * x),
    "elu": lambda x, alpha, beta: torch.where(x > 0, x, torch.exp(x) - 1),
}


def test_each_registered_activation_computes_its_formula():
    assert set(ACTIVATIONS) == set(FORMULAS), "give a new activation its formula in FORMULAS"
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)[:, None].expand(241, 7)  # a layer of 7 neurons
    for name, formula in FORMULAS.items():
        for alpha, beta in ((10.0, 1.0), (0.5, 3.0), (0.0, 1.0)):
            module = make_activation(name, 7, alpha, beta).double()
            torch.testing.assert_close(module(x), formula(x, alpha, beta), msg=f"{name} at alpha {alpha}, beta {beta}")
    with pytest.raises(ValueError):
        make_activation("nope", 7)


# ---- env.py -------------------------------------------------------------------------------------

def test_walk_moves_are_legal_and_match_actions():
    env = GridWorld(TaskConfig(size=6, num_maps=3, seed=1))
    obs, act, pos, map_id = env.walk(256, 50)
    r, c = pos // 6, pos % 6
    dr, dc = r[:, 1:] - r[:, :-1], c[:, 1:] - c[:, :-1]
    assert ((r >= 0) & (r < 6) & (c >= 0) & (c < 6)).all()
    want = torch.tensor([(0, 0), (0, 1), (1, 0), (-1, 0), (0, -1)])  # stay, east, south, north, west
    assert torch.equal(dr, want[act][..., 0]) and torch.equal(dc, want[act][..., 1])


def test_stay_probability_is_one_over_options():
    env = GridWorld(TaskConfig(size=5, num_maps=1, seed=0))
    _, act, pos, _ = env.walk(4000, 50)
    r, c = pos[:, :-1] // 5, pos[:, :-1] % 5
    n_edges = (r == 0).int() + (r == 4).int() + (c == 0).int() + (c == 4).int()
    for n_edge, p in ((2, 1 / 3), (1, 1 / 4), (0, 1 / 5)):  # corner, edge, interior
        stays = (act[n_edge == n_edges] == 0).double()
        se = math.sqrt(p * (1 - p) / stays.numel())
        assert abs(stays.mean().item() - p) < 4 * se, (n_edge, stays.mean().item(), p)


def test_four_action_walks_never_stay():
    env = GridWorld(TaskConfig(size=5, num_maps=1, n_actions=4, seed=0))
    _, act, pos, _ = env.walk(200, 30)
    assert (pos[:, 1:] != pos[:, :-1]).all() and act.max() == 3


def sticky(env):
    """The README's walk rule: staying put is 3 times as likely as each move (the stay move leads to the
    node itself; with n_actions 4 there is none)."""
    return (env.next_node >= 0) + 2.0 * (env.next_node == torch.arange(env.n_nodes, device=env.device)[:, None])


def test_recipe_a_walk_rule_draws_each_move_with_its_weight(monkeypatch):
    monkeypatch.setitem(WALKS, "sticky", sticky)
    assert GridWorld(TaskConfig(size=5, num_maps=1, n_actions=4, walk="sticky")).move_weights.max() == 1  # no stay
    env = GridWorld(TaskConfig(size=5, num_maps=1, walk="sticky"))
    _, act, pos, _ = env.walk(4000, 30)
    assert torch.equal(env.next_node[pos[:, :-1], act], pos[:, 1:])  # legal moves only
    r, c = pos[:, :-1] // 5, pos[:, :-1] % 5
    n_edges = (r == 0).int() + (r == 4).int() + (c == 0).int() + (c == 4).int()
    for n_edge, p in ((2, 3 / 5), (1, 3 / 6), (0, 3 / 7)):  # corner, edge, interior: 3 / (3 + legal moves)
        stays = (act[n_edge == n_edges] == 0).double()
        assert abs(stays.mean().item() - p) < 4 * math.sqrt(p * (1 - p) / stays.numel()), (n_edge, p)


def test_the_uniform_walk_is_the_arg_max_of_uniforms_over_the_legal_moves():
    # the walks every run has trained on: the same draws, bit for bit, as the rule that made them
    env = GridWorld(TaskConfig(size=4, num_maps=2, seed=3))
    obs, act, pos, _ = env.walk(64, 50, generator=torch.Generator().manual_seed(9))
    g = torch.Generator().manual_seed(9)
    torch.randint(env.num_maps, (64,), generator=g)  # the maps, then the starts, then the uniforms
    start = torch.randint(env.n_nodes, (64,), generator=g)
    u = torch.rand(64, 50, env.n_actions, generator=g)
    want = [start]
    for t in range(50):
        options = env.next_node[want[-1]]
        want.append(options.gather(1, u[:, t].masked_fill(options < 0, -1).argmax(-1, keepdim=True)).squeeze(1))
    assert torch.equal(pos, torch.stack(want, 1))


def test_observations_match_the_map():
    env = GridWorld(TaskConfig(size=7, n_obs=10, num_maps=5, seed=3))
    obs, _, pos, map_id = env.walk(64, 40)
    assert torch.equal(obs, env.maps[map_id[:, None], pos])
    assert env.maps.shape == (5, 49) and env.maps.dtype == torch.long


def test_maps_are_a_function_of_the_seed_and_novel_maps_are_new():
    a, b = GridWorld(TaskConfig(seed=7)), GridWorld(TaskConfig(seed=7))
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.maps, GridWorld(TaskConfig(seed=8)).maps)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    obs, _, pos, map_id = a.walk(64, 200, novel=True, generator=g1)
    assert torch.equal(obs, a.walk(64, 200, novel=True, generator=g2)[0])  # reproducible
    assert (map_id == -1).all()
    # No novel walk is consistent with any familiar map.
    familiar = a.maps[:, pos]  # (num_maps, B, steps+1)
    assert not (familiar == obs).all(-1).any()


def window(T, context):
    """(T,) the first observation of each step's window of `context` observations: TEM-t's, model.reach's."""
    return reach(ModelConfig(**TEM, context=context), T)


def test_visited_since_on_hand_made_walks():
    pos = torch.tensor([[0, 1, 0, 2, 3, 1, 1]])
    # t:           0  1  2  3  4  5   target pos[t+1] = 1 0 2 3 1 1
    want_c2 = [[0, 1, 0, 0, 0, 1]]  # context 2: window pos[t-1..t]
    want_c4 = [[0, 1, 0, 0, 1, 1]]  # context 4: window pos[t-3..t]; step 4 sees pos[1] = 1
    assert window(6, 4).tolist() == [0, 0, 0, 0, 1, 2]
    assert visited_since(pos, window(6, 2)).int().tolist() == want_c2
    assert visited_since(pos, window(6, 4)).int().tolist() == want_c4
    assert visited_since(pos, window(6, 1)).int().tolist() == [[0, 0, 0, 0, 0, 1]]


def test_batches_are_slices_of_one_walk_draw_and_resume_exactly():
    # Batches draws `ahead` batches with one env.walk call: the walks are env.walk's own, whose
    # distribution the tests above check, cut into consecutive batches.
    env = GridWorld(TaskConfig(size=5, num_maps=3, seed=4))
    draw_g0 = tiny_model().random_g0
    state = env.generator.get_state()
    batches = Batches(env, 8, 10, draw_g0, ahead=3)
    env.generator.set_state(state)
    obs, act, _, _ = env.walk(24, 10)
    g0 = draw_g0(24, generator=env.generator)
    for i in range(3):
        b = batches.next()
        for got, want in zip(b, (obs, act, g0)):
            assert torch.equal(got, want[8 * i: 8 * (i + 1)])
    later = [batches.next() for _ in range(2)]  # a new draw, then one batch into it
    saved = batches.state()
    after = [batches.next() for _ in range(4)]
    resumed = Batches(GridWorld(TaskConfig(size=5, num_maps=3, seed=4)), 8, 10, draw_g0, ahead=3)
    resumed.load_state(saved)
    for a, b in zip(after, [resumed.next() for _ in range(4)]):
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(later[0][0], obs[:8])
    half = Batches(GridWorld(TaskConfig(size=5, num_maps=3, seed=4)), 8, 10, draw_g0, ahead=3, part=slice(4, 8))
    assert torch.equal(half.next()[0], obs[4:8])  # a data-parallel process keeps its slice


# ---- model.py -----------------------------------------------------------------------------------

XL = dict(rel_lags=True, obs_attend=True, segment=4, mem_len=4, official_init=True)  # the paper's model, small
TEM = dict(rel_lags=False, obs_attend=False, segment=0, mem_len=0, official_init=False)  # TEM-t: none of it


def tiny_model(context=5, d_model=32, d_ff=64, d_rnn=16, **kw):
    """A small model: TEM-t with a window of `context` observations, unless kw turns on the paper's differences."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, d_model=d_model, d_ff=d_ff, d_rnn=d_rnn, context=context,
                      dropout=0.0, **{**TEM, **kw})
    model = Model(cfg).eval()
    with torch.no_grad():  # W_a starts at zero; make path integration do something
        model.W_a.normal_(0, 0.3)
    return model


def walks(T=20, B=3):
    return GridWorld(TaskConfig(size=5, seed=0)).walk(B, T)


@pytest.mark.parametrize("qk_from_position", [False, True])
def test_model_is_causal_and_sees_only_its_context(qk_from_position):
    model = tiny_model(qk_from_position=qk_from_position)
    obs, act, _, _ = walks()
    obs, g0 = obs[:, :-1], torch.randn(3, 16)
    base = model(obs, act, g0)
    for t0 in (0, 7, 13):
        obs2, act2 = obs.clone(), act.clone()
        obs2[:, t0] = (obs2[:, t0] + 1) % 10
        out = model(obs2, act, g0)
        assert torch.equal(out[:, :t0], base[:, :t0])  # the past does not see the future
        assert not torch.allclose(out[:, t0], base[:, t0])  # the present does
        assert torch.equal(out[:, t0 + 5:], base[:, t0 + 5:])  # context 5: forgotten after 5 steps
        act2[:, t0] = (act2[:, t0] + 1) % 5
        out = model(obs, act2, g0)
        assert torch.equal(out[:, :t0], base[:, :t0])
        assert not torch.allclose(out[:, t0], base[:, t0])


@pytest.mark.parametrize("kind", [{}, {"rel_lags": True}, {"obs_attend": True}, {"segment": 4, "mem_len": 3}, XL])
def test_one_pass_equals_prefix_by_prefix(kind):
    model = tiny_model(**kind)
    obs, act, _, _ = walks(T=16)
    g0 = torch.randn(3, 16)
    one_pass = model(obs[:, :-1], act, g0)
    for t in range(16):
        prefix = model(obs[:, : t + 1], act[:, : t + 1], g0)[:, -1]
        torch.testing.assert_close(one_pass[:, t], prefix, rtol=1e-5, atol=1e-5)


def test_recorded_activity_matches_the_forward_pass():
    model = tiny_model()
    obs, act, _, _ = walks(T=12)
    g0 = torch.randn(3, 16)
    fused = model(obs[:, :-1], act, g0)
    logits, rec = memory.activity(model, obs[:, :-1], act, g0)
    torch.testing.assert_close(logits, fused, rtol=1e-5, atol=1e-5)  # attention spelled out: the same function
    assert torch.equal(model(obs[:, :-1], act, g0), fused)  # and the hooks gone: the forward as it was
    assert rec["g"].shape == (3, 13, 16) and len(rec["ffn"]) == 2 and rec["ffn"][0].shape == (3, 12, 64)
    att = rec["att"][0]  # (B, H, T, context) by lag: each query's weights over the observations sum to < 1
    assert att.shape == (3, 2, 12, 5) and (att.sum(-1) < 1).all() and (att > 0).any()
    before_the_walk = torch.arange(12)[:, None] < torch.arange(5)  # lag k > t: observation t-k does not exist
    assert (att[..., before_the_walk] == 0).all()


def test_tem_t_proper_values_are_the_sensory_half_of_the_normalised_stream():
    # in the first block too: ln1 normalises both halves, so the position part moves the values
    model = tiny_model(qk_from_position=True)
    obs, act, _, _ = walks(T=6)
    block, seen = model.blocks[0], {"ln1": [], "v": []}
    hooks = [block.ln1.register_forward_hook(lambda mod, inp, out: seen["ln1"].append(out)),
             block.attn.v.register_forward_hook(lambda mod, inp, out: seen["v"].append(inp[0]))]
    with torch.no_grad():
        for g0 in (torch.zeros(3, 16), torch.randn(3, 16)):  # the same observations at other positions
            model(obs[:, :-1], act, g0)
    for h in hooks:
        h.remove()
    for normalised, v_in in zip(seen["ln1"], seen["v"]):
        assert torch.equal(v_in, normalised[..., 16:])
    assert not torch.allclose(seen["v"][0], seen["v"][1])


@pytest.mark.parametrize("kind", [{}, {"qk_from_position": True}, XL])
def test_flops_per_step_matches_a_flop_counter(kind):
    # torch's FlopCounterMode counts every matrix multiply of a forward and backward pass. Recorded,
    # the attention is spelled out, so it charges the full score matrix of the rows it computes,
    # masked pairs too; flops_per_step (which MFU divides by) counts only the pairs the mask lets
    # through. And g0 needs no gradient (nor does the g carried into a segment), so the first
    # path-integration step of each skips one backward multiply.
    model, (B, T) = tiny_model(**kind).train(), (3, 10)
    obs, act, _, _ = walks(T=T, B=B)
    with FlopCounterMode(display=False) as counter:
        memory.activity(model, obs[:, :-1], act)[0].sum().backward()
    c = model.cfg
    S, masked_pairs = c.segment or T, 0
    mask = attention_mask(c, S, len(range(0, T, S)))
    for last in [False] * (c.n_layer - 1) + [True]:
        rows = mask[:, S:] if last else mask  # the last block computes the query tokens alone
        masked_pairs += rows.numel() - rows.sum().item()
    masked = 3 * 2 * (2 * B * masked_pairs * c.d_model)  # q.k and att @ v, x3 for backward
    g0_grad = 2 * B * c.n_actions * c.d_rnn ** 2 * len(range(0, T, S))
    assert gpu.flops_per_step(c, B, T) == counter.get_total_flops() - masked + g0_grad

def test_fast_path_integration_equals_the_loop_in_values_and_gradients():
    model = tiny_model(n_actions=5).double()
    act = torch.randint(5, (4, 30), generator=torch.Generator().manual_seed(0))
    g0 = torch.randn(4, 16, dtype=torch.float64, requires_grad=True)
    fast, loop = model.path_integrate(act, g0), model.path_integrate_loop(act, g0)
    torch.testing.assert_close(fast, loop, rtol=0, atol=1e-12)
    weights = torch.randn_like(fast)  # any loss: a random linear function of every g_t
    grads = [torch.autograd.grad((g * weights).sum(), (g0, model.W_a)) for g in (fast, loop)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    W = model.W_a.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda g, w: PathIntegration.apply(act[:2, :6], g, w),
                                    (g0[:2].detach().requires_grad_(), W))


def test_path_integration_stays_in_float32_under_bf16_autocast():
    model, act = tiny_model(), torch.randint(5, (2, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = model.path_integrate(act, model.random_g0(2))
    assert g.dtype == torch.float32


def test_aot_compiled_model_equals_eager_with_one_static_graph_per_walk_length():
    # Training compiles with dynamic=False: each walk length gets its own static graph, whole, and
    # never a dynamic-shape one (which crashed inductor). aot_eager runs eagerly the forward and
    # backward graphs that AOTAutograd would hand inductor, in seconds on a CPU; inductor's own
    # kernels are compared on a GPU (test_cuda_compiled_paper_preset_matches_eager).
    model = tiny_model(context=4, **SMALL).train()
    graphs = []  # the example inputs of each graph compiled

    def backend(gm, example_inputs):
        graphs.append(example_inputs)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    compiled = torch.compile(model, dynamic=False, backend=backend)
    for T in (12, 7, 12):
        obs, act, _, _ = walks(T=T)
        g0 = model.random_g0(3)
        eager, fast = model(obs[:, :-1], act, g0), compiled(obs[:, :-1], act, g0)
        torch.testing.assert_close(fast, eager, rtol=1e-5, atol=1e-5)
        grads = [torch.autograd.grad(out.square().sum(), model.W_a)[0] for out in (eager, fast)]
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-5)
    torch.compiler.reset()
    # a dynamic graph would take its sizes as inputs (SymInt), and symbolic sizes in its tensors
    assert all(isinstance(t, torch.Tensor) and all(isinstance(n, int) for n in t.shape) for g in graphs for t in g)
    walk_inputs = [[tuple(x.shape) for x in g if x.dtype == torch.long] for g in graphs]  # obs and act
    assert walk_inputs == [[(3, 12), (3, 12)], [(3, 7), (3, 7)]]  # one graph per length, no graph break; 12 again: cached


# ---- train.py -----------------------------------------------------------------------------------

def read_log(out_dir):
    with open(os.path.join(out_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def test_learning_rate_schedule_on_known_steps():
    def lr(step, decay, **kw):
        args = dict(lr=1e-2, min_lr=1e-3, warmup_iters=10, max_iters=110, decay=decay) | kw
        return train.get_lr(step, argparse.Namespace(**args))

    assert [lr(s, "cosine") for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])  # warm-up: (step+1)/10 of lr
    for decay in ("cosine", "linear"):  # from lr at the warm-up's end, through the midpoint, to min_lr
        assert [lr(s, decay) for s in (10, 60, 110, 500)] == pytest.approx([1e-2, 5.5e-3, 1e-3, 1e-3])
    assert lr(35, "cosine") == pytest.approx(1e-3 + 9e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(35, "linear") == pytest.approx(1e-3 + 9e-3 * 0.75)
    assert {lr(s, "none") for s in (10, 60, 110)} == {1e-2}
    assert lr(0, "cosine", warmup_iters=0) == pytest.approx(1e-2)  # no warm-up: the peak at once


def test_a_resume_that_raises_max_iters_says_what_the_schedule_does(tmp_path, capsys):
    train.main(TINY + ["--max_iters", "20", "--eval_interval", "10", "--out_dir", str(tmp_path)])
    assert float(read_log(tmp_path)[-1]["lr"]) < 2e-4  # the last step's rate, near min_lr 0 (peak 1e-2)
    capsys.readouterr()
    train.main(["--resume", "--out_dir", str(tmp_path), "--max_iters", "40"])
    out = capsys.readouterr().out
    assert "--max_iters 20 -> 40: the learning rate now falls to 0 at step 40" in out, out
    assert [r["step"] for r in read_log(tmp_path)] == ["10", "20", "30", "40"]


def test_short_training_lowers_the_loss(tmp_path):
    train.main(TINY + ["--max_iters", "80", "--eval_interval", "20", "--lr", "3e-3",
                       "--out_dir", str(tmp_path)])
    rows = read_log(tmp_path)
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < first - 0.05, (first, last)
    assert float(rows[-1]["wm_error"]) < 0.8  # chance is 0.9


def test_resume_gives_the_same_next_losses(tmp_path):
    # a constant rate: a schedule that ends at --max_iters would change with the new --max_iters
    common = TINY + ["--eval_interval", "5", "--dropout", "0.1", "--decay", "none"]
    train.main(common + ["--max_iters", "15", "--out_dir", str(tmp_path / "straight")])
    train.main(common + ["--max_iters", "10", "--out_dir", str(tmp_path / "resumed")])
    train.main(["--max_iters", "15", "--out_dir", str(tmp_path / "resumed"), "--resume"])
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == ["5", "10", "15"]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    ckpt = torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=False)
    assert ckpt["step"] == 15 and ckpt["model_config"]["d_model"] == 32


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = F.cross_entropy

    def poisoned(*a, **k):
        calls["n"] += 1
        return real(*a, **k) * (float("nan") if calls["n"] > 12 else 1.0)

    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--max_iters", "30", "--eval_interval", "10", "--out_dir", str(tmp_path)])
    assert e.value.code == 1
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 10


def test_a_stop_after_a_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys, sigint):
    # the loss turns nan at step 13 and Ctrl-C comes at step 15, before the next log line
    calls, real = [], F.cross_entropy

    def poisoned(*a, **k):
        calls.append(1)
        if len(calls) == 15:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k) * (float("nan") if len(calls) > 12 else 1.0)

    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--max_iters", "30", "--eval_interval", "10", "--out_dir", str(tmp_path)])
    assert e.value.code == 1 and "the last good checkpoint is kept" in capsys.readouterr().err
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 10


def signal_at_call(monkeypatch, module, name, n):
    """Replace module.name by a wrapper that sends this process SIGINT at its n-th call (1-based),
    as Ctrl-C pressed while that call runs."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, wrapper)


@pytest.fixture
def sigint():
    """SIGINT with Python's own handler for the test, as in a terminal: a process started in the
    background may inherit it ignored, and train.py leaves an ignored signal ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def final_weights(out_dir):
    return torch.load(os.path.join(out_dir, "ckpt.pt"), weights_only=True)["model"]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """40 steps (the walks redrawn at steps 16 and 32) with dropout, the rate warming up over 5 steps and then
    falling along a cosine, logged every 10, uninterrupted."""
    out = tmp_path_factory.mktemp("straight")
    train.main(INTERRUPTED + ["--out_dir", str(out)])
    return out


INTERRUPTED = TINY + ["--max_iters", "40", "--eval_interval", "10", "--dropout", "0.1", "--seed", "5",
               "--warmup_iters", "5"]


@pytest.mark.parametrize("where,n", [("cross_entropy", 3), ("cross_entropy", 10), ("cross_entropy", 21),
                                     ("cross_entropy", 33), ("memory_counts", 3)])
def test_an_interrupted_and_resumed_run_is_the_same_run_bit_for_bit(where, n, straight_run, tmp_path, monkeypatch,
                                                                   capsys, sigint):
    # Ctrl-C inside a training step (cross_entropy) or inside an evaluation (memory_counts, whose
    # 3rd call is in the first evaluation, at step 10, on its novel maps: 2 batches of walks each for
    # familiar and novel maps): the run saves where it stands and --resume, given nothing else, ends
    # the same run: the same log lines (but for the times) and the same final weights, bit for bit.
    signal_at_call(monkeypatch, train.F if where == "cross_entropy" else train, where, n)
    with pytest.raises(SystemExit) as e:
        train.main(INTERRUPTED + ["--out_dir", str(tmp_path)])
    assert e.value.code == 130 and "interrupted: saved" in capsys.readouterr().out
    monkeypatch.undo()
    train.main(["--resume", "--out_dir", str(tmp_path)])  # the run's own --max_iters: 40
    timeless = [{k: v for k, v in row.items() if k not in ("ms_per_step", "elapsed_s")} for row in read_log(tmp_path)]
    assert timeless == [{k: v for k, v in row.items() if k not in ("ms_per_step", "elapsed_s")}
                        for row in read_log(straight_run)]
    resumed, straight = final_weights(tmp_path), final_weights(straight_run)
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)
    elapsed = [float(row["elapsed_s"]) for row in read_log(tmp_path)]
    assert elapsed == sorted(elapsed)  # time goes on from the interruption, never back


def test_ctrl_c_before_the_first_step_saves_nothing(tmp_path, monkeypatch, capsys, sigint):
    signal_at_call(monkeypatch, train, "GridWorld", 1)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--out_dir", str(tmp_path)])
    assert e.value.code == 130 and "nothing was saved" in capsys.readouterr().err
    assert not (tmp_path / "ckpt.pt").exists()


def test_resume_keeps_the_runs_own_flags_unless_given_anew(tmp_path, capsys):
    train.main(TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path)])
    train.main(["--resume", "--out_dir", str(tmp_path)])  # not the preset's 4,500 steps
    assert [r["step"] for r in read_log(tmp_path)] == ["3", "6"]
    train.main(["--resume", "--out_dir", str(tmp_path), "--max_iters", "9"])
    assert [r["step"] for r in read_log(tmp_path)] == ["3", "6", "9"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--out_dir", str(tmp_path), "--alpha", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--alpha cannot change when resuming" in err[0]


def test_a_moved_run_resumes_where_it_now_is(tmp_path, monkeypatch):
    train.main(TINY + ["--max_iters", "3", "--eval_interval", "3", "--out_dir", str(tmp_path / "first")])
    os.rename(tmp_path / "first", tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    train.main(["--resume", "--max_iters", "6"])  # the default --out_dir, out/, not the folder it was made in
    assert [r["step"] for r in read_log(tmp_path / "out")] == ["3", "6"] and not (tmp_path / "first").exists()


def test_overwrite_starts_the_log_anew(tmp_path):
    train.main(TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path)])
    train.main(TINY + ["--max_iters", "3", "--eval_interval", "3", "--out_dir", str(tmp_path), "--overwrite"])
    assert [r["step"] for r in read_log(tmp_path)] == ["3"]


def test_an_overwrite_stopped_before_its_first_log_line_keeps_no_old_log(tmp_path, monkeypatch, capsys, sigint):
    # the new run's first checkpoint, a stop's too, retires the old run's log: --resume then
    # appends to the new run's own log alone
    train.main(TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path)])
    signal_at_call(monkeypatch, train.F, "cross_entropy", 2)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path), "--overwrite"])
    assert e.value.code == 130 and "interrupted: saved" in capsys.readouterr().out
    monkeypatch.undo()
    train.main(["--resume", "--out_dir", str(tmp_path)])
    assert [r["step"] for r in read_log(tmp_path)] == ["3", "6"]


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, tiny_runs, capsys):
    marker = tmp_path / "the code ran"

    class Payload:  # unpickling it would call os.mkdir(marker)
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    good = torch.load(tiny_runs / "a" / "ckpt.pt", weights_only=True)
    (tmp_path / "run").mkdir()
    torch.save({**good, "model": Payload()}, tmp_path / "run" / "ckpt.pt")
    for entry, argv in ((train.main, ["--resume", "--out_dir", str(tmp_path / "run")]),
                        (analyze.main, [str(tmp_path / "run")])):
        with pytest.raises(SystemExit) as e:
            entry(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "UnpicklingError" in err[0], err
    assert not marker.exists()


def test_a_failed_save_keeps_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    real, calls = torch.save, []

    def disk_full(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            f.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return real(obj, f, *args, **kwargs)
    monkeypatch.setattr(train.torch, "save", disk_full)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["step"] == 3
    assert sorted(os.listdir(tmp_path)) == ["ckpt.pt", "log.csv"]  # and no half-written ckpt.pt.tmp


def test_bad_flags_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # train.py's default --out_dir, out/, holds a run, as after the README's first command
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"a run")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "ckpt.pt").write_bytes(b"not a checkpoint")
    cases = [
        (["--alpha", "-1"], "--alpha"),
        (["--num_maps", "0"], "--num_maps"),
        (["--size", "1"], "--size"),
        (["--act", "softsign"], "--act"),
        (["--n_head", "3"], "--n_head"),
        (["--context", "0"], "--context"),
        (["--lr", "nan"], "--lr"),
        (["--resume", "--out_dir", str(tmp_path / "missing")], "no checkpoint"),
        (["--resume", "--out_dir", str(corrupt)], "not a readable checkpoint"),
        (["--out_dir", str(corrupt)], "--resume"),  # never overwrite a checkpoint silently
        (["--max_iters", "ten"], "--max_iters"),
    ]
    (tmp_path / "afile").write_text("")
    # these name the one flag at fault, and no other
    alone = [(["--lr", "-1"], "--lr"), (["--dropout", "1.5"], "--dropout"), (["--alpha", "nan"], "--alpha"),
             (["--grad_clip", "-1"], "--grad_clip"), (["--out_dir", "/proc/nowhere"], "--out_dir"),
             (["--out_dir", str(tmp_path / "afile")], "--out_dir")]
    for argv, needle in cases + alone:
        with pytest.raises(SystemExit) as e:
            train.main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and needle in lines[0], (argv, lines)
        assert out == ""  # nothing said before the complaint
        if (argv, needle) in alone:
            assert re.findall(r"--[a-z_]+", lines[0]) == [needle] and argv[1] in lines[0], lines
    assert (corrupt / "ckpt.pt").read_bytes() == b"not a checkpoint"


def test_a_warm_up_longer_than_the_run_is_refused(tmp_path, capsys):
    # the rate would never reach --lr
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--warmup_iters", "10", "--max_iters", "4", "--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--warmup_iters 10" in err[0] and "--max_iters 4" in err[0], err
    assert not (tmp_path / "ckpt.pt").exists()


def test_a_non_finite_loss_before_any_checkpoint_says_none_was_saved(tmp_path, monkeypatch, capsys):
    real = F.cross_entropy

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")
    monkeypatch.setattr(train.F, "cross_entropy", poisoned)
    with pytest.raises(SystemExit) as e:
        train.main(TINY + ["--max_iters", "20", "--eval_interval", "10", "--out_dir", str(tmp_path)])
    assert e.value.code == 1 and "no checkpoint was saved" in capsys.readouterr().err
    assert not (tmp_path / "ckpt.pt").exists()


def test_the_command_line_reports_bad_input_in_one_line(tmp_path):
    (tmp_path / "out").mkdir()  # a run in out/, as after the README's first command: the flag is named first
    (tmp_path / "out" / "ckpt.pt").write_bytes(b"a run")
    r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), "--alpha", "-1"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "train.py: error: --alpha must be in [0, 1e6] (got -1.0)"]


def test_benchmark_prints_both_layouts_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for arch in ("xl", "tem"):
        bench.main(["--preset", "small", "--arch", arch, "--batch_size", "8", "--steps", "2", "--device", "cpu"]
                   + ["--profile", "1"] * (arch == "tem"))
        out = capsys.readouterr().out
        assert f"{arch} model" in out and out.count("predictions/s") == 2 and "one pass / prefix by prefix:" in out
        assert "walks:" in out and ("aten::mm" in out) == (arch == "tem")  # the profile lists the matmuls
    assert os.listdir(tmp_path) == []
    for argv, flag in ((["--profile", "-1"], "--profile"), (["--steps", "0"], "--steps"), (["--bench", "2"], "--bench")):
        with pytest.raises(SystemExit) as e:
            bench.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and flag in lines[0], (argv, lines)


DATA_PARALLEL = TINY + ["--eval_interval", "3", "--dropout", "0", "--seed", "3", "--decay", "none"]


def torchrun(*argv):
    """train.py over 2 CPU processes."""
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", *argv], cwd=HERE, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """6 steps of one process, without dropout, logged every 3."""
    out = tmp_path_factory.mktemp("one")
    train.main(DATA_PARALLEL + ["--max_iters", "6", "--out_dir", str(out)])
    return out


def same_losses(one, two):
    """Gradients summed in another order differ in the last bits: losses agree to float tolerance;
    an arg-max error rate may flip a prediction or two of its ~400 steps."""
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(one, two):
        assert abs(float(a["loss"]) - float(b["loss"])) < 2e-4, (a["loss"], b["loss"])
        for k in ("wm_error", "rm_error"):
            assert abs(float(a[k]) - float(b[k])) < 0.01, (k, a[k], b[k])


def test_two_process_data_parallel_gives_the_same_losses(one_process_run, tmp_path):
    assert DATA_PARALLEL[:2] == ["--preset", "small"]  # left out: the preset this machine chooses, small on a CPU
    r = torchrun(*DATA_PARALLEL[2:], "--max_iters", "6", "--out_dir", str(tmp_path))
    same_losses(read_log(one_process_run), read_log(tmp_path))
    assert r.stdout.count("no preset given") == 1, r.stdout  # every process chose it: process 0 alone says so


def test_under_torchrun_process_0_alone_speaks(monkeypatch, capsys):
    # every process reads the same flags: one says what is wrong (and what was chosen: the test above)
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit) as e:
        train.main(["--alpha", "-1"])
    assert e.value.code == 2 and capsys.readouterr().err == ""


def test_a_one_process_run_resumed_on_two_goes_on_with_its_walks(one_process_run, tmp_path):
    # the walks do not depend on the number of processes: the stream goes on where it stood
    train.main(DATA_PARALLEL + ["--max_iters", "3", "--out_dir", str(tmp_path)])
    torchrun("--resume", "--max_iters", "6", "--out_dir", str(tmp_path))
    same_losses(read_log(one_process_run), read_log(tmp_path))


def test_precision_and_compilation_for_each_gpu_generation():
    assert gpu.auto_settings(None) == ("float32", "off")  # a CPU
    assert gpu.auto_settings((7, 0)) == ("float16", "on")  # V100: bf16 only emulated
    assert gpu.auto_settings((7, 5)) == ("float16", "on")  # T4, Colab's free GPU
    assert gpu.auto_settings((8, 0)) == ("bfloat16", "on")  # A100
    assert gpu.auto_settings((8, 6)) == ("bfloat16", "on")  # RTX 30xx
    assert gpu.auto_settings((9, 0)) == ("bfloat16", "on")  # H100, H200
    assert gpu.auto_settings((6, 0)) == ("float16", "off")  # P100: too old for inductor


def test_peak_flops_follow_the_card_and_the_precision(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: NAME[0])
    NAME = ["NVIDIA H100 80GB HBM3"]
    assert gpu.peak_flops("cuda", "bfloat16") == 989e12 and gpu.peak_flops("cuda", "float32") == 495e12
    NAME[0] = "NVIDIA H100 PCIe"
    assert gpu.peak_flops("cuda", "bfloat16") == 756e12  # not the SXM part's
    NAME[0] = "Tesla T4"
    assert gpu.peak_flops("cuda", "float16") == 65e12 and gpu.peak_flops("cuda", "float32") == 8.1e12
    NAME[0] = "Some Future GPU"
    assert gpu.peak_flops("cuda") is None and gpu.peak_flops("cpu") is None


def test_peak_flops_match_whole_card_names(monkeypatch):
    # "A100" is inside "RTX A1000" and "T4" inside "T400": a card is known by its whole name
    for name, peak in (("NVIDIA RTX A1000", None), ("NVIDIA T400 4GB", None), ("NVIDIA GH200 480GB", None),
                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA A100 80GB PCIe", 312e12), ("Tesla V100-PCIE-32GB", 125e12)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        assert gpu.peak_flops("cuda", "bfloat16") == peak, name


def test_a_gpu_index_beyond_the_machine_is_named(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SystemExit) as e:
        train.main(TINY[:-2] + ["--device", "cuda:7", "--out_dir", "unused"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == ["train.py: error: --device 'cuda:7': this machine has 1 GPU(s), "
                                         "cuda:0 to cuda:0"], err


def test_resume_in_another_precision(tmp_path, capsys):
    # float16 needs loss scaling, which a run made in float32 or bfloat16 never had: no state to load
    common = TINY[:-2] + ["--device", "cpu", "--eval_interval", "2", "--out_dir", str(tmp_path)]
    train.main(common + ["--max_iters", "2", "--dtype", "bfloat16"])
    train.main(["--resume", "--out_dir", str(tmp_path), "--max_iters", "4", "--dtype", "float16"])
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["args"]["dtype"] == "float16" and ckpt["scaler"]["scale"] > 0  # the GradScaler ran, on the CPU
    train.main(["--resume", "--out_dir", str(tmp_path), "--max_iters", "6", "--dtype", "float32"])
    assert [r["step"] for r in read_log(tmp_path)] == ["2", "4", "6"]
    assert all(math.isfinite(float(r["loss"])) for r in read_log(tmp_path))


def test_a_four_layer_model_trains_and_is_analysed(tmp_path, capsys):
    # the most place-like quarter of 4 layers can fill more than half of one: silencing still finds others
    out = str(tmp_path / "deep")
    train.main(TINY + ["--n_layer", "4", "--max_iters", "4", "--eval_interval", "2", "--out_dir", out])
    analyze.main([out, "--quick"])
    m = json.load(open(os.path.join(out, "metrics.json")))
    assert {f"ffn_place_cell_fraction_layer{i}" for i in range(4)} <= m.keys()
    assert m["silence_25pct_k"] == 64 and "silence_layer3_k" in m
    err = capsys.readouterr().err
    assert "rate maps and shuffle tests" in err and "silencing" in err and "s so far" in err  # progress shown


# ---- on a GPU: these run wherever CUDA is, and skip on a CPU ------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PAPER_SHORT = ["--preset", "paper", "--batch_size", "32", "--eval_walks", "32", "--warmup_iters", "2",
               "--device", "cuda"]


@cuda
def test_cuda_compiled_paper_preset_matches_eager(tmp_path):
    losses = {}
    for mode in ("on", "off"):
        argv = PAPER_SHORT + ["--max_iters", "20", "--eval_interval", "10", "--dropout", "0", "--compile", mode,
                              "--out_dir", str(tmp_path / mode)]
        r = subprocess.run([sys.executable, os.path.join(HERE, "train.py"), *argv], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "TORCH_LOGS": "recompiles"})
        assert r.returncode == 0, r.stderr[-2000:]
        assert "Recompiling" not in r.stderr, r.stderr[-2000:]  # one shape, one graph
        losses[mode] = [float(row["loss"]) for row in read_log(tmp_path / mode)]
    # the same step in bf16 (or fp16), fused differently: the losses agree to the precision's rounding
    assert losses["on"] == pytest.approx(losses["off"], rel=2e-2), losses


@cuda
def test_cuda_path_integration_equals_the_loop_in_values_and_gradients():
    torch.manual_seed(0)
    model = Model(ModelConfig(d_rnn=32, n_actions=5)).cuda()
    with torch.no_grad():
        model.W_a.normal_(0, 0.3)
    act = torch.randint(5, (16, 40), device="cuda")
    g0 = torch.randn(16, 32, device="cuda", requires_grad=True)
    fast, loop = model.path_integrate(act, g0), model.path_integrate_loop(act, g0)
    torch.testing.assert_close(fast, loop, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(fast)
    grads = [torch.autograd.grad((g * w).sum(), (model.W_a, g0)) for g in (fast, loop)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)


@cuda
def test_cuda_interrupted_and_resumed_run_ends_the_same(tmp_path, monkeypatch, capsys, sigint):
    # Ctrl-C within step 6, between the log lines of steps 4 and 8: the run saves there, and
    # --resume, given nothing else, ends the same run
    argv = PAPER_SHORT + ["--max_iters", "8", "--eval_interval", "4", "--compile", "off", "--dtype", "float32"]
    train.main(argv + ["--out_dir", str(tmp_path / "straight")])
    signal_at_call(monkeypatch, train.F, "cross_entropy", 6)
    with pytest.raises(SystemExit) as e:
        train.main(argv + ["--out_dir", str(tmp_path / "resumed")])
    assert e.value.code == 130 and "interrupted: saved" in capsys.readouterr().out
    assert torch.load(tmp_path / "resumed" / "ckpt.pt", weights_only=True)["step"] == 6
    monkeypatch.undo()
    train.main(["--resume", "--out_dir", str(tmp_path / "resumed")])
    a, b = read_log(tmp_path / "straight"), read_log(tmp_path / "resumed")
    assert [r["step"] for r in b] == ["4", "8"]
    # the same walks, dropout masks and schedule; cuBLAS may sum in another order: to float tolerance
    assert [float(r["loss"]) for r in b] == pytest.approx([float(r["loss"]) for r in a], rel=1e-4)


@cuda
def test_cuda_resume_in_another_precision(tmp_path):
    # bfloat16, then float16 (loss-scaled), then float32: each leg runs in its own precision, float16 with a
    # loss scale of its own, and the run goes on from its weights (its losses keep close to those of a run
    # made in bfloat16 throughout, not those of a fresh start)
    common = PAPER_SHORT + ["--compile", "off", "--eval_interval", "2", "--dropout", "0"]
    train.main(common + ["--max_iters", "6", "--dtype", "bfloat16", "--out_dir", str(tmp_path / "straight")])
    run = ["--out_dir", str(tmp_path / "run")]
    train.main(common + run + ["--max_iters", "2", "--dtype", "bfloat16"])
    for dtype, steps in (("float16", "4"), ("float32", "6")):
        train.main(["--resume", "--max_iters", steps, "--dtype", dtype] + run)
        ckpt = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
        assert ckpt["args"]["dtype"] == dtype and ckpt["step"] == int(steps)
        assert (ckpt["scaler"].get("scale", 0) > 0) == (dtype == "float16")  # the GradScaler ran in float16 alone
    got, want = ([float(r["loss"]) for r in read_log(tmp_path / d)] for d in ("run", "straight"))
    assert len(got) == 3 and got == pytest.approx(want, rel=2e-2)  # within bf16/fp16 rounding of the same run


@cuda
def test_cuda_analysis_agrees_with_the_cpu_analysis(tiny_runs, tmp_path):
    # a CUDA generator draws other walks than a CPU one: the error rates agree within their standard errors
    m = {}
    for device in ("cpu", "cuda"):
        run = tmp_path / device
        run.mkdir()
        (run / "ckpt.pt").write_bytes((tiny_runs / "a" / "ckpt.pt").read_bytes())
        analyze.main([str(run), "--quick", "--max_se", "0.01", "--max_walks", "4000", "--no_figures", "--device", device])
        m[device] = json.load(open(run / "metrics.json"))
    for key in ("wm_error", "rm_error", "novel_wm_error", "novel_rm_error", "ideal_rm_error"):
        se = math.hypot(m["cpu"][key + "_se"], m["cuda"][key + "_se"])
        assert abs(m["cuda"][key] - m["cpu"][key]) < 4 * se + 1e-9, (key, m["cpu"][key], m["cuda"][key], se)


@cuda
def test_cuda_benchmark_of_the_paper_preset_prints_its_table(capsys):
    bench.main(["--preset", "paper", "--steps", "3", "--device", "cuda"])
    out = capsys.readouterr().out
    assert out.count("predictions/s") == 2 and "MFU" in out and "peak GPU memory" in out


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_cuda_two_nccl_processes_give_the_losses_of_one(tmp_path):
    argv = PAPER_SHORT + ["--max_iters", "6", "--eval_interval", "3", "--dropout", "0", "--compile", "off",
                          "--dtype", "float32"]
    train.main(argv + ["--out_dir", str(tmp_path / "one")])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        os.path.join(HERE, "train.py"), *argv, "--out_dir", str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [float(r["loss"]) for r in two] == pytest.approx([float(r["loss"]) for r in one], rel=1e-3)


def test_more_processes_than_gpus_is_named(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")  # process 0, which speaks for all, sees it too
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"torchrun --nproc_per_node: 2 processes, but 1 GPU\(s\) here"):
        gpu.distributed(8, "cuda")
    with pytest.raises(ValueError, match="--batch_size 7 must be divisible by the 2 processes"):
        gpu.distributed(7, "cpu")


def test_a_process_signalled_before_its_first_step_stops_with_the_others(tmp_path):
    # Ctrl-C reaches process 1 alone while it sets up: it trains on with process 0 to the log line,
    # where they decide together to stop, save and exit; stopping alone would leave process 0
    # waiting for it in the gradients' all-reduce
    script = tmp_path / "signalled.py"
    script.write_text(f"import os, signal, sys\nsys.path.insert(0, {HERE!r})\nimport train\n"
                      "real = train.GridWorld\n\n\n"
                      "def signalled(*args, **kwargs):\n"
                      "    if os.environ['RANK'] == '1':\n"
                      "        os.kill(os.getpid(), signal.SIGINT)\n"
                      "    return real(*args, **kwargs)\n\n\n"
                      "train.GridWorld = signalled\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
                      "train.main(sys.argv[1:])\n")
    argv = TINY + ["--max_iters", "6", "--eval_interval", "3", "--out_dir", str(tmp_path / "run")]
    with open(tmp_path / "out.txt", "w") as out:
        p = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                              str(script), *argv], cwd=HERE, stdout=out, stderr=subprocess.STDOUT,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            p.wait(timeout=90)
        except subprocess.TimeoutExpired:
            p.terminate()  # torchrun ends its processes (with SIGKILL after 30 s), then itself
            p.wait()
            raise AssertionError("the processes hung: one stopped alone")
    assert "interrupted: saved" in (tmp_path / "out.txt").read_text(), (tmp_path / "out.txt").read_text()[-2000:]
    assert torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)["step"] == 3


def test_two_process_resume_is_the_same_run(tmp_path):
    # each process draws its own dropout masks; the checkpoint keeps every process's random state
    argv = TINY + ["--eval_interval", "3", "--dropout", "0.1", "--seed", "3", "--decay", "none"]
    torchrun(*argv, "--max_iters", "6", "--out_dir", str(tmp_path / "straight"))
    torchrun(*argv, "--max_iters", "3", "--out_dir", str(tmp_path / "resumed"))
    torchrun("--resume", "--max_iters", "6", "--out_dir", str(tmp_path / "resumed"))
    assert [r["loss"] for r in read_log(tmp_path / "resumed")] == [r["loss"] for r in read_log(tmp_path / "straight")]


# ---- analyze.py ---------------------------------------------------------------------------------

SMALL = dict(d_model=16, d_ff=32, d_rnn=8)


# ---- memory errors: fake predictors with known answers

def oracle(obs, act, pos, maps):
    return maps.gather(1, pos[:, 1:])  # reads the map at the target node


def constant(obs, act, pos, maps):
    return torch.zeros_like(act)


def context_only(context):
    """Returns the observation last seen at the target node if it is in the context, else token 0."""
    def predict(obs, act, pos, maps):
        target, pred = pos[:, 1:], torch.zeros_like(act)
        found = torch.zeros_like(act, dtype=torch.bool)
        for lag in range(context):  # nearest first
            hit = torch.zeros_like(found)
            hit[:, lag:] = target[:, lag:] == pos[:, : pos.shape[1] - 1 - lag]
            hit &= ~found
            pred[:, lag:] = torch.where(hit[:, lag:], obs[:, : obs.shape[1] - 1 - lag], pred[:, lag:])
            found |= hit
        return pred
    return predict


def rates(predict, novel, walks=256, walk_len=40, context=8):
    env = GridWorld(TaskConfig(size=5, n_obs=10, num_maps=3, seed=0))
    gen = torch.Generator().manual_seed(7)
    return memory.error_rates(predict, env, window(walk_len, context), walk_len, gen, novel, max_se=0, max_walks=walks,
                              batch=100)


@pytest.mark.parametrize("novel", [False, True])
def test_oracle_has_zero_error_and_counts_every_step(novel):
    r = rates(oracle, novel)
    assert r["wm_error"] == 0 and r["rm_error"] == 0
    assert r["walks"] == 256 and r["wm_steps"] + r["rm_steps"] == 256 * 40 and r["rm_steps"] > 0


def test_constant_predictor_is_at_chance():
    r = rates(constant, novel=True)
    for k in ("wm", "rm"):
        assert abs(r[f"{k}_error"] - 0.9) < 4 * r[f"{k}_error_se"], r


def test_context_only_predictor_has_zero_wm_and_chance_rm_error():
    r = rates(context_only(8), novel=True)
    assert r["wm_error"] == 0
    assert abs(r["rm_error"] - 0.9) < 4 * r["rm_error_se"], r


def test_ideal_observer_knows_a_map_of_distinct_tokens_from_one_observation():
    env = GridWorld(TaskConfig(size=3, n_obs=9, num_maps=1, seed=0))
    env.maps[0] = torch.randperm(9, generator=torch.Generator().manual_seed(0))  # every node its own token
    r = memory.error_rates(memory.ideal_observer(env, window(30, 1)), env, window(30, 1), 30, torch.Generator().manual_seed(1), max_se=0,
                            max_walks=64)
    assert r["wm_error"] == 0 and r["rm_error"] == 0 and r["rm_steps"] > 500


def test_ideal_observer_is_never_wrong_on_wm_and_gains_from_context():
    env = GridWorld(TaskConfig(size=5, n_obs=10, num_maps=3, seed=0))
    rm = {}
    for context in (2, 8):
        r = memory.error_rates(memory.ideal_observer(env, window(40, context)), env, window(40, context), 40,
                               torch.Generator().manual_seed(7),
                                max_se=0, max_walks=256, batch=100)  # the walks of rates()
        assert r["wm_error"] == 0  # the answer is in the window, and every consistent hypothesis agrees on it
        rm[context] = r["rm_error"]
    guess = rates(context_only(8), novel=False)  # the same walks: the last token seen there, else token 0
    assert rm[8] < rm[2] < 0.9 and rm[8] < guess["rm_error"], (rm, guess["rm_error"])


def test_start_likelihood_is_the_product_of_the_rules_move_probabilities(monkeypatch):
    # a 3x3 grid, actions stay, east, stay: from the centre (node 4) and from its east neighbour (node 5)
    monkeypatch.setitem(WALKS, "sticky", sticky)
    act = torch.tensor([[0, 1, 0]])
    for walk, centre in (("uniform", [1 / 5, 1 / 5, 1 / 4]), ("sticky", [3 / 7, 1 / 7, 3 / 6])):
        env = GridWorld(TaskConfig(size=3, num_maps=1, walk=walk))
        node, log_p = memory.start_log_likelihood(env, act)
        assert node[0, :, 4].tolist() == [4, 4, 5, 5]
        torch.testing.assert_close(log_p[0, :, 4].exp(), torch.tensor(centre).cumprod(0))
        assert log_p[0, 0, 5] == pytest.approx(math.log(centre[2])) and log_p[0, 1:, 5].tolist() == [-math.inf] * 2  # east of the edge


def test_sampling_stops_once_standard_errors_are_small():
    env, gen = GridWorld(TaskConfig(size=5, num_maps=3)), torch.Generator().manual_seed(0)
    r = memory.error_rates(oracle, env, window(40, 8), 40, gen, max_se=0.005, max_walks=10000, batch=50)
    assert r["walks"] == 50  # zero error: SE 0 after the first batch
    r = memory.error_rates(constant, env, window(40, 8), 40, torch.Generator().manual_seed(0), True, 0.01, 10000, batch=20)
    assert max(r["wm_error_se"], r["rm_error_se"]) < 0.01 and 20 < r["walks"] < 10000
    # one batch fewer (the same walks) had not got there yet
    r = memory.error_rates(constant, env, window(40, 8), 40, torch.Generator().manual_seed(0), True, 0, r["walks"] - 20,
                           batch=20)
    assert max(r["wm_error_se"], r["rm_error_se"]) >= 0.01


def test_cluster_se_with_one_step_per_walk_is_the_binomial_se():
    wrong = np.random.default_rng(0).random(400) < 0.3
    p, se = memory.cluster_se(wrong.astype(float), np.ones(400))
    assert p == wrong.mean()
    assert se == pytest.approx(math.sqrt(p * (1 - p) / 400 * 400 / 399))
    # two walks, 1 of 1 and 0 of 3 steps wrong: p = 1/4, residuals +-0.75, SE = sqrt(2 * 1.125) / 4
    assert memory.cluster_se(np.array([1.0, 0.0]), np.array([1.0, 3.0])) == pytest.approx((0.25, 0.375))


# ---- place cells on synthetic units

def test_spatial_information_of_known_maps():
    occ = np.full(16, 10)
    one_node = np.eye(16)[3]
    assert place.spatial_information(one_node, occ) == pytest.approx(math.log2(16))
    assert place.spatial_information(np.full(16, 2.7), occ) == 0  # constant: exactly zero
    # signed activity: the minimum is subtracted, so adding a constant changes nothing
    assert place.spatial_information(one_node - 5, occ) == pytest.approx(math.log2(16))


def test_observation_share_of_known_maps():
    tokens = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])  # 10 nodes; token 0 at nodes 0, 3 and 6
    occ = np.full(10, 5)
    per_token = np.array([0.2, -1.0, 3.0, 0.5])[tokens]  # any function of the token alone
    assert place.observation_share(np.stack([per_token, 7 * per_token - 2]), occ, tokens) == pytest.approx([1, 1])
    one_node = np.eye(10)[3]  # a single field at node 3, whose token (0) 3 of the 10 nodes show
    assert place.observation_share(one_node, occ, tokens) == pytest.approx((1 / 3 - 1 / 10) / (1 - 1 / 10))
    assert place.observation_share(np.full(10, 4.2), occ, tokens) == 0  # flat: nothing to explain
    # occupancy weighs a node as if it were that many nodes: eta^2 with weights 1..10 is that of the
    # unweighted map with node i repeated i + 1 times
    rng = np.random.default_rng(0)
    rate, weights = rng.standard_normal(10), np.arange(1, 11)
    repeated = np.repeat(np.arange(10), weights)
    assert place.observation_share(rate, weights, tokens) == pytest.approx(
        place.observation_share(rate[repeated], np.ones(len(repeated)), tokens[repeated]))
    occ[3] = 0  # an unvisited node is left out: without the field at node 3 the map is flat
    assert place.observation_share(one_node, occ, tokens) == 0
    # unrelated to the tokens: the mean over random maps is (k - 1) / (n - 1) for k tokens on n nodes
    tokens = rng.permutation(np.arange(49) % 10)
    shares = place.observation_share(rng.standard_normal((4000, 49)), np.ones(49), tokens)
    assert shares.mean() == pytest.approx(9 / 48, abs=0.01)


def test_gaussian_bumps_are_place_cells_and_noise_is_not():
    env = GridWorld(TaskConfig(size=7, num_maps=1, seed=0))
    _, _, pos, _ = env.walk(2, 3000, generator=torch.Generator().manual_seed(0))
    pos = pos.flatten().numpy()
    rng = np.random.default_rng(0)
    r, c = pos // 7, pos % 7
    centres = [(1, 1), (3, 4), (6, 0), (5, 5)]
    bumps = [np.exp(-((r - i) ** 2 + (c - j) ** 2) / 2) for i, j in centres]  # sigma = 1 node
    activity = np.stack(bumps + [np.full(len(pos), 0.5)], 1) + 0.05 * rng.standard_normal((len(pos), 5))
    noise = rng.standard_normal((len(pos), 200))  # 200 units with no spatial tuning
    si, null = place.shuffle_test(np.concatenate([activity, noise], 1), pos, 49, 100, rng)
    is_place = place.place_cells(si, null, floor=0.1)
    assert is_place[:4].all() and (si[:4] > 1.0).all()
    assert not is_place[4]  # a constant unit plus noise
    assert is_place[5:].mean() <= 0.03  # ~1% by construction of a 99th-percentile test
    const_si, _ = place.shuffle_test(np.full((len(pos), 1), 3.0), pos, 49, 5, rng)
    assert const_si[0] == 0


def test_a_near_silent_unit_is_caught_although_its_si_is_high():
    # SI is scale-free: a place field scaled by 1e-12 has the SI of the field, and passes the
    # shuffle test. Its rate map's spread, a trillionth of the others', marks it silent.
    env = GridWorld(TaskConfig(size=5, num_maps=1, seed=0))
    _, _, pos, _ = env.walk(1, 4000, generator=torch.Generator().manual_seed(1))
    pos = pos[0].numpy()
    rng = np.random.default_rng(1)
    field = np.exp(-((pos // 5 - 2) ** 2 + (pos % 5 - 1) ** 2) / 2.0)
    units = np.stack([field, 1e-12 * field] + [rng.standard_normal(len(pos)) for _ in range(6)], 1)
    si, null = place.shuffle_test(units, pos, 25, 50, rng)
    assert place.place_cells(si, null).tolist()[:2] == [True, True] and si[1] == pytest.approx(si[0])
    rate, occ = place.rate_maps(units, pos, 25)
    silent = place.silent_units(np.ptp(rate, axis=1), np.array(["ffn"] * 8))
    assert silent.tolist() == [False, True] + [False] * 6


def test_a_place_cell_needs_a_stable_field_at_a_scale_that_matters():
    # Four walks in one map. Unit 0 has a field at (3, 4) in every walk; unit 1 fires only at node
    # (3, 3) during the first 1000 steps of walk 0, a peak made by a few of the node's visits; unit 2
    # is unit 0 scaled by 1e-12. SI and the shuffle test alone pass all but unit 2 (silent); only
    # unit 0's field repeats in the odd walks what it does in the even ones.
    env = GridWorld(TaskConfig(size=7, num_maps=1, seed=0))
    _, _, pos, _ = env.walk(4, 3000, generator=torch.Generator().manual_seed(2))
    rng = np.random.default_rng(2)
    row, col = pos // 7, pos % 7
    field = torch.exp(-((row - 3) ** 2 + (col - 4) ** 2) / 2.0)
    blip = torch.zeros_like(field)
    blip[0, :1000] = (pos[0, :1000] == 24).float()  # node 24 is (3, 3)
    assert 10 <= blip.sum() <= 0.2 * (pos == 24).sum()  # a few of its visits
    noise = torch.randn(4, 3001, 23, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    units = torch.stack([field, blip, 1e-12 * field], 2) + 0.01 * noise[..., :3]
    units[..., 2] = 1e-12 * field  # no noise: its spread stays a trillionth of the others'
    units = torch.cat([units, noise[..., 3:]], 2).float()  # 20 noise units
    kinds = np.array(["ffn"] * 23)
    before = place.score_map(units, pos, 49, kinds, 100, rng, stability=-1)  # every field counts
    after = place.score_map(units, pos, 49, kinds, 100, rng, stability=0.5)
    assert place.place_cells(before["si"], before["null"])[:3].tolist() == [True, True, False]
    assert place.place_cells(after["si"], after["null"])[:3].tolist() == [True, False, False]
    assert after["si"][0] == before["si"][0] > 1 and after["si"][1] == 0 < before["si"][1]
    assert after["stability"][0] > 0.9 and abs(after["stability"][1]) < 0.2
    assert after["unstable"][:3].tolist() == [False, True, False]
    assert after["silent"][:3].tolist() == [False, False, True]
    assert after["unstable"][3:].all()  # noise has no field to repeat
    # attention weights have an absolute scale: a lag whose mean weight varies by less than a
    # uniform slot's share (1/65 for a context of 64) is silent, however small its kind's median
    spread, kinds = np.array([0.3, 0.01, 0.005, 0.004]), np.array(["att"] * 4)
    assert not place.silent_units(spread, kinds).any()
    assert place.silent_units(spread, kinds, least={"att": 1 / 65}).tolist() == [False, True, True, True]


def test_rate_maps_average_activity_per_node():
    # a unit active only in the north-west corner node (row 0, column 0) of a 3x3 grid
    pos = np.array([0, 1, 2, 4, 8, 0])
    rate, occ = place.rate_maps(np.array([[1.0], [0], [0], [0], [0], [1]]), pos, 9)
    assert rate[0].reshape(3, 3)[0, 0] == 1 and rate[0].sum() == 1
    assert occ.tolist() == [2, 1, 1, 0, 1, 0, 0, 0, 1]


# ---- the model: chunking, unit layout and silencing

def test_chunked_long_walk_equals_unchunked():
    model, env = tiny_model(context=4, **SMALL), GridWorld(TaskConfig(size=5, num_maps=2, seed=0))
    obs, act, pos, _ = env.walk(3, 37, generator=torch.Generator().manual_seed(1))
    g0 = torch.randn(3, 8) / math.sqrt(8)
    whole_logits, whole_units = memory.forward_chunked(model, obs[:, :-1], act, g0, chunk=1000, record=True)
    logits, units = memory.forward_chunked(model, obs[:, :-1], act, g0, chunk=8, record=True)  # 6 chunks
    assert logits.shape == (3, 37, 10) and units.shape == whole_units.shape
    assert torch.allclose(logits, whole_logits, atol=1e-5) and torch.allclose(units, whole_units, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(model(obs[:, :-1], act, g0), whole_logits, atol=1e-5)  # the fused path


def test_attention_units_are_lagged_weights_and_g_is_the_asked_node():
    model, env = tiny_model(context=4, **SMALL), GridWorld(TaskConfig(size=5, num_maps=2, seed=0))
    obs, act, _, _ = env.walk(2, 10, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, rec = memory.activity(model, obs[:, :-1], act, torch.zeros(2, 8) + 0.1)
    units = memory.unit_activity(rec)  # (B, T, U)
    kinds, layers, names = analyze.unit_kinds(model)
    assert units.shape[2] == len(kinds) == 2 * 32 + 2 * 2 * 4 + 8
    u = names.index("att L1 H1 lag 2")
    assert torch.equal(units[:, 7, u], rec["att"][1][:, 1, 7, 2])  # query 7 looking at obs 5
    assert (units[:, 1, u] == 0).all()  # no observation 2 steps before step 1
    assert torch.equal(units[:, 7, kinds == "g"], rec["g"][:, 8])
    lag_sum = units[:, 5:, (kinds == "att") & (layers == 0)].view(2, -1, 2, 4).sum(-1)
    assert torch.all(lag_sum < 1) and torch.all(lag_sum > 0)  # the query's own token takes the rest


def test_random_silencing_draws_as_many_from_each_layer():
    rng = np.random.default_rng(0)
    chosen = np.array([5, 700, 701, 1023, 1030, 1535])  # d_ff 512, 3 layers: one in layer 0, three in 1, two in 2
    draws = [silencing.random_like(chosen, 512, 3, rng) for _ in range(200)]
    for d in draws:
        assert np.bincount(d // 512, minlength=3).tolist() == [1, 3, 2] and len(set(d)) == 6
        assert not set(d) & set(chosen)  # others than the chosen
    assert len(np.unique(np.concatenate(draws))) > 500  # random within the layers


def test_random_silencing_takes_from_other_layers_what_a_full_layer_lacks():
    rng = np.random.default_rng(0)
    chosen = np.concatenate([np.arange(0, 8), [12]])  # d_ff 10, 3 layers: 8 of layer 0's 10, one of layer 1
    for _ in range(100):
        d = silencing.random_like(chosen, 10, 3, rng)
        assert len(d) == len(set(d)) == 9 and not set(d) & set(chosen)
        assert {8, 9} <= set(d) and np.sum(d >= 10) == 7  # all that layer 0 has left, the rest elsewhere


def test_silencing_chooses_place_cells_only():
    si = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.1, 0.0, 0.0])  # neuron 1 scores high but is no place cell
    place_cells = np.array([True, False, True, True, False, False, False, False])
    share = np.array([0.1, 0.9, 0.3, 0.5, 0, 0, 0, 0])  # each neuron's eta^2: the mean names who was chosen

    def errors(silenced):
        return np.array([0.1, 0.5])
    out = silencing.silencing_test(errors, 4, 2, si, share, place_cells, np.ones(8), np.random.default_rng(0))
    assert out["silence_25pct_k"] == 2 and out["silence_25pct_place_obs_share"] == pytest.approx(0.2)  # 0 and 2
    assert out["silence_1pct_place_obs_share"] == pytest.approx(0.1)  # the best place cell
    fewer = silencing.silencing_test(errors, 4, 2, si, share, place_cells & (si > 2.2), np.ones(8),
                                     np.random.default_rng(0))
    assert fewer["silence_25pct_place_rm_error"] is None  # 1 place cell, k = 2: no padding with others


def test_layer_halves_compare_place_cells_with_other_neurons_as_active():
    place_cells = np.zeros(30, dtype=bool)  # 3 layers of 10: 4 place cells in layer 0, all of layer 1, none of 2
    place_cells[[1, 3, 5, 7]] = True
    place_cells[10:20] = True
    sd = np.full(30, 0.01)  # quiet, but for the place cells and layer 0's neurons 0, 2, 4 and 9
    sd[[1, 3, 5, 7]] = [0.2, 0.4, 0.6, 0.8]  # median 0.5: place cells 5 and 7 are the active ones
    sd[[0, 2, 4, 9]] = [0.5, 0.9, 0.3, 0.7]  # others at least as active: 0, 2 and 9
    sd[10:20] = 1.0
    (p0, o0, k0), (p1, o1, k1), (_, o2, k2) = silencing.layer_halves(place_cells, sd, 10, 3)
    assert p0.tolist() == [5, 7] and o0.tolist() == [0, 2, 9] and k0 == 1
    assert p1.tolist() == list(range(10, 20)) and len(o1) == 0 and k1 == 0  # nothing to compare with
    assert len(o2) == 0 and k2 == 0  # no place cells: no activity to match


def test_silencing_hook_zeroes_exactly_the_named_units():
    model, env = tiny_model(context=4, **SMALL), GridWorld(TaskConfig(size=5, num_maps=2, seed=0))
    obs, act, _, _ = env.walk(2, 12, generator=torch.Generator().manual_seed(1))
    g0 = torch.randn(2, 8)
    with torch.no_grad():
        base_logits, base = memory.activity(model, obs[:, :-1], act, g0)
        masks = torch.ones(2, 32)
        masks[0, [3, 17]] = 0
        masks[1, [0, 31]] = 0
        hooks = silencing.silence(model, masks)
        logits, rec = memory.activity(model, obs[:, :-1], act, g0)
        for h in hooks:
            h.remove()
        assert (rec["ffn"][0][..., [3, 17]] == 0).all() and (rec["ffn"][1][..., [0, 31]] == 0).all()
        assert (base["ffn"][0][..., [3, 17]] != 0).all()  # they were active before
        keep = masks[0].bool()
        assert torch.equal(rec["ffn"][0][..., keep], base["ffn"][0][..., keep])  # layer 0: nothing else moved
        assert not torch.allclose(logits, base_logits)
        assert torch.equal(memory.activity(model, obs[:, :-1], act, g0)[0], base_logits)  # removed: back to normal


# ---- loop closure

@pytest.mark.parametrize("n_actions", [4, 5])
def test_loop_walks_return_to_the_loop_start_by_legal_moves(n_actions):
    env = GridWorld(TaskConfig(size=4, num_maps=2, n_actions=n_actions, seed=0))
    obs, act, pos, maps = memory.loop_walks(env, 300, 6, torch.Generator().manual_seed(0), novel=True)
    assert act.shape == (300, 10) and pos.shape == (300, 11)
    assert torch.equal(env.next_node[pos[:, :-1], act], pos[:, 1:])  # every move legal and as recorded
    assert torch.equal(pos[:, -1], pos[:, -5])
    assert all(len(set(p[-5:-1].tolist())) == 4 for p in pos)  # a real square, no stays
    assert torch.equal(obs, maps.gather(1, pos))
    assert visited_since(pos, window(10, 4))[:, -1].all()  # the return step is a WM step
    assert len({tuple(a[-4:].tolist()) for a in act}) == 8  # all orientations occur


# ---- end to end on tiny checkpoints

@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two tiny runs of train.py (alpha 10 and 0), a few steps each, of TEM-t: enough place cells to draw
    every figure (the paper's model, the default, is analysed in the tests of the recipes)."""
    root = tmp_path_factory.mktemp("runs")
    for name, alpha in (("a", "10"), ("b", "0")):
        train.main(["--preset", "small", "--arch", "tem", "--n_layer", "2", "--d_model", "32", "--d_ff", "64", "--n_head", "2",
                    "--max_iters", "4", "--eval_interval", "2", "--warmup_iters", "2", "--batch_size", "16",
                    "--eval_walks", "16", "--alpha", alpha, "--device", "cpu", "--out_dir", str(root / name), "--overwrite"])
    return root


# ---- the command line

def test_bad_inputs_exit_2_with_one_line(tiny_runs, tmp_path, capsys):
    for name in ("empty", "truncated", "foreign", "wrong_shapes", "no_args"):
        (tmp_path / name).mkdir()
    (tmp_path / "afile").write_text("")
    (tmp_path / "truncated" / "ckpt.pt").write_bytes(open(tiny_runs / "a" / "ckpt.pt", "rb").read()[:5000])
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign" / "ckpt.pt")
    good = torch.load(tiny_runs / "a" / "ckpt.pt", weights_only=True)
    torch.save({k: v for k, v in good.items() if k != "task_config"} | {"args": {}}, tmp_path / "no_args" / "ckpt.pt")
    good["model_config"]["d_ff"] += 1
    torch.save(good, tmp_path / "wrong_shapes" / "ckpt.pt")
    # The real command line once, for the exit status and a stderr free of tracebacks.
    p = subprocess.run([sys.executable, os.path.join(HERE, "analyze.py"), str(tmp_path / "truncated")],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(f"analyze.py: error: {tmp_path / 'truncated' / 'ckpt.pt'}: not a readable checkpoint")
    before = sorted(os.listdir(tiny_runs / "a"))
    cases = {"nowhere": "no such directory", "afile": "not a directory", "empty": "no checkpoint",
             "foreign": "missing args, model", "no_args": "missing size, n_obs", "wrong_shapes": "size mismatch"}
    for name, why in cases.items():
        with pytest.raises(SystemExit) as e:
            analyze.main([str(tiny_runs / "a"), str(tmp_path / name)])  # checked before any run is analysed
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and err.startswith("analyze.py: error: "), err
        assert str(tmp_path / name) in err and why in err, err
    with pytest.raises(SystemExit) as e:
        analyze.main([str(tiny_runs / "a"), "--shuffles", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1
    for name in ("truncated", "foreign", "wrong_shapes"):
        assert os.listdir(tmp_path / name) == ["ckpt.pt"]  # nothing written next to a bad checkpoint
    assert sorted(os.listdir(tiny_runs / "a")) == before  # nor next to the good run named before it


def test_unwritable_output_and_foreign_metrics_exit_2_with_one_line(tiny_runs, tmp_path, capsys):
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "metrics.json").write_text('{"args": {}}')
    cases = [(analyze.main, [str(tiny_runs / "a"), str(tiny_runs / "b"), "--out", "/dev/null/x"], "--out"),
             (compare.main, [str(tiny_runs / "a"), "--out", "/dev/null/x"], "--out"),
             (compare.main, [str(tmp_path / "odd")], "lacks chance")]
    for entry, argv, needle in cases:
        with pytest.raises(SystemExit) as e:
            entry(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and needle in err[0], err


def test_learning_speed_of_a_known_curve():
    log = {"step": np.array([100.0, 200, 300, 400]), "rm_error": np.array([0.8, 0.45, 0.2, 0.05]),
           "elapsed_s": np.array([10.0, 20, 30, 40])}
    speed = compare.learning_speed(log)
    assert speed["steps_to_rm_0.5"] == 200 and speed["seconds_to_rm_0.5"] == 20.0 and speed["steps_to_rm_0.1"] == 400
    assert speed["rm_auc"] == pytest.approx((62.5 + 32.5 + 12.5) / 300)  # trapezoids over 300 steps
    flat = compare.learning_speed({**log, "rm_error": np.full(4, 0.6)})
    assert flat["steps_to_rm_0.5"] is None and flat["seconds_to_rm_0.1"] is None and flat["rm_auc"] == pytest.approx(0.6)
    assert compare.learning_speed(None) == dict.fromkeys(flat)  # no log: every figure None


def test_plateau_of_known_curves():
    step = np.arange(100.0, 4001, 100)  # the last quarter: steps 3000..4000, 11 points
    falling = compare.plateau({"step": step, "rm_error": 0.5 - 1e-5 * step})
    assert falling["rm_fall_last_quarter"] == pytest.approx(1e-5 * 1000)  # a line: its fall, exactly
    assert falling["rm_fall_last_quarter_se"] == pytest.approx(0, abs=1e-12)
    assert compare.at_plateau(falling) is False
    # flat but noisy, a pattern symmetric about the quarter's middle: no slope, and scatter about it
    wiggle = np.where(np.arange(40) % 2 == 0, 0.01, -0.01)
    wiggle[29:] = np.r_[wiggle[29:35], wiggle[29:34][::-1]]  # steps 3000..4000 mirror about 3500
    flat = compare.plateau({"step": step, "rm_error": 0.2 + wiggle})
    assert flat["rm_fall_last_quarter"] == pytest.approx(0, abs=1e-12) and flat["rm_fall_last_quarter_se"] > 0.001
    assert compare.at_plateau(flat) is True
    rising = compare.plateau({"step": step, "rm_error": 0.2 + 1e-5 * step})
    assert rising["rm_fall_last_quarter"] < 0 and compare.at_plateau(rising) is True  # rose: not learning more
    short = compare.plateau({"step": np.array([100.0, 200]), "rm_error": np.array([0.5, 0.4])})
    assert compare.at_plateau(short) is None and compare.plateau(None)["rm_fall_last_quarter"] is None


def test_mean_se_over_seeds_and_pearson_r_on_known_values():
    runs = [{"metrics": {"rm_error": v}} for v in (1.0, 2.0, 3.0)]
    assert compare.mean_se(runs, "rm_error") == (2.0, pytest.approx(1 / math.sqrt(3)))  # sd 1 over sqrt 3
    mean, se = compare.mean_se(runs[:1], "rm_error")
    assert mean == 1.0 and math.isnan(se)  # one seed: no standard error, not a zero one
    assert compare.pearson([1, 2, 3, 4], [3, 5, 7, 9]) == "1.00" and compare.pearson([1, 2, 3], [3, 2, 1]) == "-1.00"
    assert compare.pearson([1, 2], [1, 2]) == "n/a" and compare.pearson([1, 1, 1], [1, 2, 3]) == "n/a"


def test_no_activation_figure_without_two_activations_to_compare():
    seeds = [{"args": {"act": "nmda", "alpha": 10.0, "beta": 1.0}, "metrics": {"rm_error": 0.1, "wm_error": 0.01}}
             for _ in range(2)]  # two seeds of one setting
    assert compare.fig_errors_by_activation([("all runs", seeds)], 0.9) is None


def test_flags_a_run_may_change_on_resume_do_not_split_runs_into_settings():
    # train.py's NEW_ON_RESUME flags (bar max_iters) do not change what a run learns: comparison
    # does not tell runs apart by them, so a run resumed on another machine, or made before a new flag of
    # that kind, stays in its group; a setting that shapes the run (alpha) does split them.
    args = vars(train.settings(["--preset", "small", "--device", "cpu"])[0])
    anew = {k: f"another {k}" for k in train.NEW_ON_RESUME if k != "max_iters"}
    runs = [dict(args=args), dict(args={**args, **anew}), dict(args={k: v for k, v in args.items() if k not in anew})]
    assert len(compare.groups(runs, ())) == 1
    assert [label for label, _ in compare.groups(runs + [dict(args={**args, "alpha": 3.0})], ())] == ["alpha=10.0",
                                                                                                         "alpha=3.0"]


@pytest.fixture
def axes_with_data(monkeypatch):
    """{PNG bytes: how many of the figure's axes show data (lines, bars, images)} for every figure drawn."""
    drawn, real = {}, plots.png

    def png(fig):
        n = sum(ax.has_data() for ax in fig.axes)
        data = real(fig)
        drawn[data] = n
        return data
    monkeypatch.setattr(plots, "png", png)
    monkeypatch.setattr(compare, "png", png)
    return drawn


def test_end_to_end_one_run_and_comparison(tiny_runs, tmp_path, capsys, axes_with_data):
    a, b = str(tiny_runs / "a"), str(tiny_runs / "b")
    analyze.main([a, b, "--quick", "--out", str(tmp_path)])
    m = json.load(open(os.path.join(a, "metrics.json")))
    keys = ["wm_error", "wm_error_se", "wm_steps", "rm_error", "rm_error_se", "rm_steps", "novel_wm_error",
            "novel_rm_error", "novel_rm_error_se", "ffn_place_cell_fraction", "ffn_place_cell_fraction_layer0",
            "ffn_place_cell_fraction_layer1", "att_place_cell_fraction", "ffn_si_mean", "att_si_mean",
            "loop_closure_accuracy", "novel_loop_closure_accuracy", "silence_none_rm_error",
            "silence_25pct_place_rm_error", "silence_25pct_random_rm_error", "silence_1pct_k",
            "rm_fall_last_quarter", "rm_fall_last_quarter_se"]
    assert set(keys) <= m.keys()
    assert 0 <= m["rm_error"] <= 1 and m["wm_steps"] + m["rm_steps"] == m["walks"] * m["walk_len"]
    assert m["silence_1pct_k"] == 1 and m["silence_25pct_k"] == 32  # of 2 x 64 FFN neurons
    # every figure drawn, panel by panel: rate maps of the 6 most place-like units of each of 3 kinds
    # beside map 0's tokens; a histogram per FFN layer, attention and g; one group of runs to compare
    figures = {a: {"training.png": 2, "rate_maps.png": 1 + 3 * 6, "place_scores.png": 2 + 2, "silencing.png": 2},
               tmp_path: {"errors_vs_alpha.png": 1, "errors_by_activation.png": 1, "place_score_vs_rm.png": 2,
                          "learning_curves.png": 1}}
    for folder, want in figures.items():
        drawn = {f: open(os.path.join(folder, f), "rb").read() for f in want}
        assert {f: axes_with_data.get(png) for f, png in drawn.items()} == want
        assert all(plots.plt.imread(os.path.join(folder, f)).std() > 0 for f in want)  # a picture, not one colour
    assert not (tmp_path / "learning_curves_by_num_maps.png").exists()  # one N: nothing to show
    rows = open(tmp_path / "runs.csv").read().splitlines()
    assert len(rows) == 3 and rows[0].startswith("run,") and "wm_error" in rows[0]
    out = capsys.readouterr().out
    assert a in out and b in out and "Pearson" in out
    summary = open(tmp_path / "summary.csv").read().splitlines()  # one row per setting: alpha 10, alpha 0
    assert len(summary) == 3 and ",seeds," in summary[0]
    # compare.py alone redraws the comparison from the metrics.json files, with the same numbers
    compare.main([a, b, "--out", str(tmp_path / "again"), "--no_figures"])
    assert open(tmp_path / "again" / "summary.csv").read() == open(tmp_path / "summary.csv").read()
    # a metrics.json from before the plateau figures: compare.py takes them from the run's log
    older = tmp_path / "older"
    older.mkdir()
    shutil.copy(os.path.join(a, "log.csv"), older)
    json.dump({k: v for k, v in m.items() if not k.startswith("rm_fall")} | {"args": m["args"]},
              open(older / "metrics.json", "w"))
    got = compare.load(str(older))["metrics"]
    assert (got["rm_fall_last_quarter"], got["rm_fall_last_quarter_se"]) == (m["rm_fall_last_quarter"], m["rm_fall_last_quarter_se"])
    capsys.readouterr()
    analyze.summary(m, 2)  # learning speed and plateau from the log, and none made up without one
    with_log = capsys.readouterr().out
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "log.csv").write_text("step,loss\n1,oops\n")
    for folder, state in (("nolog", "missing"), ("garbled", "unreadable")):
        analyze.summary({**m, **compare.learning_speed(None), "run": str(tmp_path / folder)}, 2)
        without = capsys.readouterr().out
        assert f"log.csv is {state}, so no learning speed" in without and "not reached" not in without
    assert "learning, from log.csv: RM <= 0.5" in with_log  # (two logged steps: no plateau to judge)
    assert plots.read_log(str(tmp_path / "garbled" / "log.csv")) is None
    assert "garbled/log.csv is unreadable (ValueError" in capsys.readouterr().err
    # A second comparison reads the metrics back instead of recomputing them, unless the flags differ.
    analyze.main([a, b, "--quick", "--out", str(tmp_path), "--no_figures"])
    assert capsys.readouterr().out.count("read back") == 2
    analyze.main([a, "--quick", "--shuffles", "3", "--no_figures"])
    assert "read back" not in capsys.readouterr().out


def test_metrics_made_on_another_kind_of_device_are_not_read_back(tiny_runs, monkeypatch):
    # a CUDA generator draws other walks than a CPU one: the numbers are not the same analysis
    a = str(tiny_runs / "a")
    analyze.main([a, "--quick", "--no_figures", "--device", "cpu"])
    ckpt = analyze.load_run(a, "cpu")[2]
    assert analyze.previous_metrics(a, ckpt, analyze.parse_args([a, "--quick", "--no_figures", "--device", "cpu"]))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    on_cuda = analyze.parse_args([a, "--quick", "--no_figures", "--device", "cuda"])
    assert analyze.previous_metrics(a, ckpt, on_cuda) is None


def test_a_failed_analysis_replaces_nothing(tiny_runs, monkeypatch):
    a = str(tiny_runs / "a")
    with open(os.path.join(a, "metrics.json"), "w") as f:
        f.write("old")

    def broken(*args):
        raise RuntimeError("fails late")
    monkeypatch.setattr(silencing, "silencing_test", broken)
    with pytest.raises(RuntimeError):
        analyze.main([a, "--quick", "--no_figures"])
    assert open(os.path.join(a, "metrics.json")).read() == "old"
    assert not [f for f in os.listdir(a) if f.endswith(".tmp")]


# ---- gpucheck.py --------------------------------------------------------------------------------

def test_gpucheck_at_tiny_sizes_prints_every_row_last_and_writes_runs_that_analyze_reads(tmp_path, capsys):
    cuda = torch.cuda.is_available()  # on a GPU this suite runs the GPU tests itself: not twice
    assert gpucheck.main(["--tiny", "--out", str(tmp_path)] + ["--skip", "tests"] * cuda) == 0
    table = open(tmp_path / "table.md").read().rstrip()
    assert capsys.readouterr().out.rstrip().endswith(table)  # the table is the last thing printed
    cells = [line[2:-2].split(" | ") for line in table.splitlines()[4:]]  # check | result | target | verdict
    rows = {c[0]: c[1:] for c in cells}
    runs = ["training NMDA α = 10", "training NMDA α = 0", "training GELU"]
    assert list(rows)[:4] == ["GPU tests (pytest -k cuda)", "bench.py small: float32, eager",
                              "bench.py small: auto dtype, eager", "bench.py small: auto dtype, compiled"]
    assert list(rows)[-4:] == ["path integration forward + backward", *runs]
    assert "ms/step" in rows["bench.py small: float32, eager"][0] and "ms at B = 32" in list(rows.values())[-4][0]
    if not cuda:
        assert rows["GPU tests (pytest -k cuda)"][0] == rows["bench.py small: auto dtype, compiled"][0] == "skipped: no GPU"
    assert all(r[2] in ("—", "not measured", "not measured (--tiny)") for r in rows.values())  # no verdict at tiny sizes
    for run in ("nmda_a10", "nmda_a0", "gelu"):
        assert len(read_log(tmp_path / f"run_{run}")) >= 1
        path = tmp_path / f"run_{run}" / "ckpt.pt"
        ckpt = torch.load(path, weights_only=True)
        assert os.path.getsize(path) < 16 * 2**20 and "optimizer" not in ckpt
        assert {v.dtype for v in ckpt["model"].values() if v.is_floating_point()} == {torch.bfloat16}
        model, _, loaded = analyze.load_run(str(tmp_path / f"run_{run}"), "cpu")
        assert loaded["step"] == ckpt["step"] >= 10 and next(model.parameters()).dtype == torch.float32
    summary = json.load(open(tmp_path / "summary.json"))
    assert [c["check"] for c in summary["checks"]] == list(rows) and all(c["ok"] for c in summary["checks"])


# ---- the official release's model: xlTEM, computed the way its code computes ---------------------



def official_reference(sd, c, obs, act, g0):
    """The official release's computation, written out from its code: the walk in segments of
    c.segment; for every step of a segment, one forward of the prefix (segment start .. step) with the
    memory of the previous segment and a cls token at its end, each layer's attention with the
    Transformer-XL relative terms (its _rel_shift); the memory of the next segment taken from the
    segment's last pass, no gradient; g carried across, no gradient. Sequence-first, like the official.
    sd: a state_dict in the official key layout. Returns logits (B, T, n_obs)."""
    t_, L, H = "transformer.", c.n_layer, c.n_head
    d, hd, S, M = c.d_model, c.d_model // c.n_head, c.segment, c.mem_len
    act_fn = make_activation(c.act, c.d_ff, c.alpha, c.beta)
    W = sd["rnn.weight"]
    B, T = obs.shape

    def layer_norm(x, name):
        return F.layer_norm(x, (d,), sd[name + ".weight"], sd[name + ".bias"])

    def attention(i, w, mems):  # w (q, B, d), mems (m, B, d)
        o = f"{t_}layers.{i}.dec_attn."
        cat = w if mems is None else torch.cat([mems, w], 0)
        heads = layer_norm(cat, o + "layer_norm") @ sd[o + "qkv_net.weight"].T
        q, k, v = heads.chunk(3, -1)
        qlen, klen = w.shape[0], cat.shape[0]
        q = q[-qlen:].view(qlen, B, H, hd)
        k, v = k.view(klen, B, H, hd), v.view(klen, B, H, hd)
        r_emb, r_bias = sd[t_ + "r_emb"][i], sd[t_ + "r_bias"][i]  # (max_klen, H, hd), (max_klen, H)
        if klen > r_emb.shape[0]:  # too few entries: the first repeated in front
            pad = klen - r_emb.shape[0]
            r_emb = torch.cat([r_emb[:1].expand(pad, -1, -1), r_emb])
            r_bias = torch.cat([r_bias[:1].expand(pad, -1), r_bias])
        else:
            r_emb, r_bias = r_emb[-klen:], r_bias[-klen:]
        AC = torch.einsum("ibnd,jbnd->ijbn", q + sd[t_ + "r_w_bias"][i], k)
        BD = torch.einsum("ibnd,jnd->ijbn", q, r_emb) + r_bias[None, :, None]
        # _rel_shift: row i's entries move so that column j holds relative index j + qlen - 1 - i
        padded = torch.cat([BD.new_zeros(qlen, 1, B, H), BD], 1).view(klen + 1, qlen, B, H)
        BD = padded[1:].view(qlen, klen, B, H)
        score = (AC + BD) / math.sqrt(hd)
        future = torch.triu(torch.ones(qlen, klen, dtype=torch.bool), 1 + klen - qlen)
        score = score.masked_fill(future[:, :, None, None], torch.finfo(score.dtype).min)
        prob = score.softmax(1)
        vec = torch.einsum("ijbn,jbnd->ibnd", prob, v).reshape(qlen, B, d)
        return w + vec @ sd[o + "o_net.weight"].T

    def ffn(i, x):
        o = f"{t_}layers.{i}.pos_ff."
        hid = act_fn(layer_norm(x, o + "layer_norm") @ sd[o + "fc1.0.weight"].T)
        return x + hid @ sd[o + "fc2.0.weight"].T

    def forward(a, src, g_prev, mems):  # one prefix: src (B, q), a (B, q)
        g = [g_prev]
        for n in range(a.shape[1]):
            g.append(torch.tanh(g[-1] + torch.einsum("bi,bij->bj", g[-1], W[a[:, n]])))
        g = torch.stack(g, 1)  # (B, q+1, d_rnn)
        ids = torch.cat([src, torch.full_like(src[:, :1], c.n_obs)], 1)
        grid = torch.relu(g @ sd[t_ + "grid_emb.0.weight"].T + sd[t_ + "grid_emb.0.bias"])
        x = torch.cat([grid, sd[t_ + "word_emb.weight"][ids]], -1).transpose(0, 1)  # (q+1, B, d)
        hids = [x]
        for i in range(L):
            x = ffn(i, attention(i, x, None if mems is None else mems[i]))
            hids.append(x)
        qlen = ids.shape[1] - 1  # the cls token is not kept in the memory
        new_mems = [(h[:qlen] if mems is None else torch.cat([m, h[:qlen]]))[-M:].detach()
                    for m, h in zip(mems or [None] * L, hids[:L])]
        out = layer_norm(x[-1], t_ + "ln_f")
        return out @ sd["classifier.weight"].T + sd["classifier.bias"], new_mems, g[:, -1].detach()

    logits, mems, g = [], None, g0
    for start in range(0, T, S):
        stop = min(start + S, T)
        for i in range(start + 1, stop + 1):
            out, new_mems, new_g = forward(act[:, start:i], obs[:, start:i], g, mems)
            logits.append(out)
        mems, g = new_mems, new_g
    return torch.stack(logits, 1)


def xl_model(segment=4, mem_len=4, dtype=torch.float32):
    """A small xl model with every weight moved off its init, so that every term of the attention acts."""
    model = tiny_model(**{**XL, "segment": segment, "mem_len": mem_len}).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("segment,mem_len", [(4, 4), (4, 2), (3, 7)])
def test_xl_one_pass_equals_the_official_prefix_by_prefix_computation(segment, mem_len):
    # Walks of several segments, the last one short; equal logits and equal gradients of every weight,
    # the stop-gradients of the memory and of the carried g included.
    model = xl_model(segment, mem_len)
    obs, act, _, _ = walks(T=15)
    g0 = model.random_g0(3, generator=torch.Generator().manual_seed(0))
    one_pass = model(obs[:, :-1], act, g0)
    sd = {k: v.detach().clone().requires_grad_() for k, v in official.to_official(model.state_dict(), 2).items()}
    reference = official_reference(sd, model.cfg, obs[:, :-1], act, g0)
    torch.testing.assert_close(one_pass, reference, rtol=1e-5, atol=1e-5)
    loss = lambda logits: F.cross_entropy(logits.flatten(0, 1), obs[:, 1:].flatten())  # noqa: E731
    loss(one_pass).backward()
    loss(reference).backward()
    grads = official.to_official({k: p.grad for k, p in model.named_parameters()}, 2)
    assert set(grads) == set(sd)
    for k in grads:
        torch.testing.assert_close(grads[k], sd[k].grad, rtol=1e-4, atol=1e-6, msg=k)


def test_an_official_state_dict_loads_into_the_xl_model_and_gives_its_logits():
    # A state_dict in the official key layout (with its unused embeddings), made by hand from
    # random tensors, never from our model: loaded through from_official it gives the reference's logits.
    ours = xl_model().state_dict()
    gen = torch.Generator().manual_seed(3)
    sd = {k: 0.3 * torch.randn(v.shape, generator=gen) for k, v in official.to_official(ours, 2).items()}
    sd.update({"transformer.rew_emb.weight": torch.zeros(2, 16), "transformer.valid_seq_emb.weight": torch.zeros(3, 16)})
    model = Model(xl_model().cfg).eval()
    model.load_state_dict(official.from_official(sd, 2))  # strict: every key of ours, and no other
    obs, act, _, _ = walks(T=13)
    g0 = model.random_g0(3, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(model(obs[:, :-1], act, g0), official_reference(sd, model.cfg, obs[:, :-1], act, g0),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", [{}, {"obs_attend": True}, {"segment": 4, "mem_len": 4}, XL,
                                  {**XL, "segment": 3, "mem_len": 5}])
def test_the_exact_split_is_the_receptive_field(kind):
    # Model.reach(T)[t] is the earliest observation the prediction at step t depends on: changing an
    # observation from there on changes it, changing an earlier one does not. Known by construction
    # for the window: t - context + 1; for the xl model of 2 layers with segment = mem_len = 4, the
    # previous segment's memory of memory: 4 * (t // 4) - 8.
    model = xl_model() if kind == XL else tiny_model(**kind)
    obs, act, _, _ = walks(T=20)
    g0 = torch.randn(3, 16) / 4
    T = 20
    first = reach(model.cfg, T)
    if not kind:
        assert first.tolist() == [max(0, t - 4) for t in range(T)]
    if kind == XL:
        assert first.tolist() == [max(0, 4 * (t // 4) - 8) for t in range(T)]
        assert reach(model.cfg, T, direct=True).tolist() == [max(0, 4 * (t // 4) - 4) for t in range(T)]
    with torch.no_grad():
        base = model(obs[:, :-1], act, g0)
        for j in range(T):
            changed = obs[:, :-1].clone()
            changed[:, j] = (changed[:, j] + 1) % 10
            moved = (model(changed, act, g0) - base).abs().amax((0, 2)) > 1e-6  # (T,): which predictions moved
            t = torch.arange(T)
            assert torch.equal(moved, (t >= j) & (first <= j)), (j, moved.int().tolist(), first.tolist())


def test_the_official_split_scores_each_segments_last_step_by_the_direct_context():
    # The official rule (misc.eval_memory_correct): a segment's last prediction, WM when its node is among
    # pos[start - mem_len : stop]. A walk made by hand, segments of 4 with mem_len 4, ends back at node 1:
    # step 11 asks about pos[12] = 1, seen at step 1 only. Its own segment (8..11) and the memory (4..7)
    # lack it: RM under the official rule; but through the two layers the prediction reaches step 0:
    # WM under the exact one. Step 3 asks about node 4 and step 7 about node 8, both new: RM under both.
    model = tiny_model(**XL)
    pos = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1]])
    assert segment_ends(model.cfg, 12).tolist() == [t % 4 == 3 for t in range(12)]
    official_wm = visited_since(pos, reach(model.cfg, 12, direct=True))[0]
    exact_wm = visited_since(pos, reach(model.cfg, 12))[0]
    assert official_wm[[3, 7, 11]].tolist() == [False, False, False]
    assert exact_wm[[3, 7, 11]].tolist() == [False, False, True]


XL_RUN = TINY + ["--arch", "xl", "--segment", "4", "--mem_len", "4", "--walk_len", "12", "--max_iters", "20",
                 "--eval_interval", "10", "--dropout", "0.1", "--seed", "3"]


def test_an_interrupted_and_resumed_xl_run_is_the_same_run_bit_for_bit(tmp_path, monkeypatch, capsys, sigint):
    # The xl model with dropout (the input tokens' too), walks of three segments: stopped inside a
    # training step, resumed, it ends the same run as one never stopped, log lines and weights bit for bit.
    train.main(XL_RUN + ["--out_dir", str(tmp_path / "straight")])
    signal_at_call(monkeypatch, train.F, "cross_entropy", 13)
    with pytest.raises(SystemExit) as e:
        train.main(XL_RUN + ["--out_dir", str(tmp_path / "stopped")])
    assert e.value.code == 130 and "interrupted: saved" in capsys.readouterr().out
    monkeypatch.undo()
    train.main(["--resume", "--out_dir", str(tmp_path / "stopped")])
    rows = [[{k: v for k, v in row.items() if k not in ("ms_per_step", "elapsed_s")} for row in read_log(tmp_path / d)]
            for d in ("straight", "stopped")]
    assert rows[0] == rows[1] and len(rows[0]) == 2 and "official_rm_error" in rows[0][0]
    resumed, straight = final_weights(tmp_path / "stopped"), final_weights(tmp_path / "straight")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight) and "blocks.0.attn.r_emb" in straight


def test_analyze_reads_an_official_checkpoint_and_agrees_with_its_error_rates(tmp_path, capsys):
    # ../shared/official-ckpt holds a checkpoint the official code wrote, and its own validate()'s error rates
    # on it. Read here (no code run, no transformers), on fresh walks of the same length, under the official
    # split (each segment's last prediction, WM when in pos[start - mem_len : stop]): the same error rates
    # within two standard errors of the difference.
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "official-ckpt")
    if not os.path.exists(os.path.join(src, "checkpoint.pt")):
        pytest.skip("../shared/official-ckpt is not here")
    with open(os.path.join(src, "official_errors.json")) as f:
        theirs = json.load(f)
    run = tmp_path / "official"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(open(os.path.join(src, "checkpoint.pt"), "rb").read())
    model, env, ckpt = analyze.load_run(str(run), "cpu")
    assert model.cfg.segment == 8 and model.cfg.mem_len == 8 and env.maps.tolist() == ckpt["maps"].tolist()
    gen = torch.Generator().manual_seed(0)
    ours = memory.error_rates(memory.model_predictor(model, gen), env, reach(model.cfg, 128, direct=True), 128, gen,
                              max_se=0, max_walks=640, scored=segment_ends(model.cfg, 128))
    for k in ("wm", "rm"):
        p, n = theirs[f"{k}_error"], theirs[f"n_{k}"]
        se = math.hypot(ours[f"{k}_error_se"], math.sqrt(p * (1 - p) / n))
        assert abs(ours[f"{k}_error"] - p) < 2 * se, (k, ours[f"{k}_error"], p, se)
    # a truncated official checkpoint, and one that carries code: one line, exit 2, nothing run
    marker = tmp_path / "the code ran"

    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(marker),)

    for name, write in (("truncated", lambda p: p.write_bytes((run / "checkpoint.pt").read_bytes()[:5000])),
                        ("code", lambda p: torch.save({"state_dict": Payload(), "maps": 0, "config": 0}, p))):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "checkpoint.pt")
        with pytest.raises(SystemExit) as e:
            analyze.main([str(tmp_path / name)])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and "checkpoint.pt" in err[0], err
    assert not marker.exists()


def test_the_official_init():
    # normal(0, 0.02) for every weight matrix, embedding, r_emb and r_w_bias; zero biases, r_bias and W_a;
    # LayerNorm at one; a read-out bias; without official_init, PyTorch's defaults and no read-out bias.
    torch.manual_seed(0)
    model = Model(ModelConfig(d_model=256, d_ff=1024, segment=8, mem_len=8))  # the paper's model, smaller
    for name, p in model.named_parameters():
        if name == "W_a" or name.endswith("r_bias") or (name.endswith(".bias") and p.dim() == 1):
            assert (p == 0).all(), name
        elif "ln" in name:
            assert (p == 1).all(), name
        else:
            se = 0.02 / math.sqrt(p.numel())  # of the mean; the sd's is about that over sqrt 2
            assert abs(p.std().item() - 0.02) < 4 * se and abs(p.mean().item()) < 4 * se, name
    assert model.head.bias is not None and Model(ModelConfig(**TEM)).head.bias is None
    assert abs(Model(ModelConfig(**TEM)).blocks[0].mlp.fc.weight.std().item() - 0.02) > 0.002  # PyTorch's default


@pytest.mark.parametrize("argv,flag", [(["--arch", "tem", "--mem_len", "4"], "--mem_len"),
                                       (["--arch", "xl", "--qk_from_position"], "--qk_from_position"),
                                       (["--arch", "xl", "--context", "20"], "--context"),
                                       (["--segment", "-1"], "--segment")])
def test_the_xl_flags_refuse_what_would_go_unused_in_one_line(argv, flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        train.main(TINY + argv + ["--out_dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and flag in err[0], err


def test_a_run_from_before_arch_resumes_and_groups_with_tem_runs(tmp_path, capsys):
    # A checkpoint from before --arch (and before the paper's model was the default): no switches in its
    # flags or its model_config, and TEM-t's attention named tem_t. --resume goes on as TEM-t, and compare.py
    # puts it in one group with a run of the same settings made now with --arch tem.
    for name in ("old", "new"):
        train.main(TINY + ["--arch", "tem", "--max_iters", "4", "--eval_interval", "2", "--out_dir", str(tmp_path / name)])
    path = tmp_path / "old" / "ckpt.pt"
    ckpt = torch.load(path, weights_only=True)
    for settings in (ckpt["args"], ckpt["model_config"]):
        for k in ("arch", "rel_lags", "obs_attend", "segment", "mem_len", "official_init"):
            settings.pop(k, None)
        settings["tem_t"] = settings.pop("qk_from_position")
    del ckpt["task_config"]
    torch.save(ckpt, path)
    train.main(["--resume", "--max_iters", "6", "--out_dir", str(tmp_path / "old")])
    assert "step      6/6" in capsys.readouterr().out
    runs = [dict(args=torch.load(tmp_path / d / "ckpt.pt", weights_only=True)["args"]) for d in ("old", "new")]
    assert len(compare.groups(runs, ("max_iters",))) == 1
    assert analyze.load_run(str(tmp_path / "old"), "cpu")[0].cfg == analyze.load_run(str(tmp_path / "new"), "cpu")[0].cfg


def test_the_checkpoints_made_before_still_load():
    # ../shared/h100-runs: three paper-preset runs of TEM-t from an older commit, trimmed to their weights in
    # bfloat16 (no task_config; TEM-t's attention switch named tem_t)
    folder = os.path.join(HERE, "..", "shared", "h100-runs")
    paths = [os.path.join(folder, f) for f in ("nmda_a10_ckpt.pt", "nmda_a0_ckpt.pt", "gelu_ckpt.pt")]
    if not all(os.path.exists(p) for p in paths):
        pytest.skip("../shared/h100-runs is not here")
    for path in paths:
        ckpt = checkpoint.load(path)
        task, cfg = checkpoint.configs(ckpt)
        assert (task.size, task.num_maps, task.walk) == (11, 32, "uniform") and cfg.segment == 0 and not cfg.rel_lags
        Model(cfg).load_state_dict(ckpt["model"])  # strict: every weight of TEM-t, and no other


def test_xl_attention_units_are_the_lags_every_query_sees():
    # with segments of 4 and a memory of 4, query offsets 0..3 see lags 0..4+offset: lags 0..4 are seen by
    # all, and they alone are units; lags 5..7, seen late in a segment only, are left out
    model = xl_model(segment=4, mem_len=4)
    obs, act, _, _ = walks(T=12)
    with torch.no_grad():
        logits, rec = memory.activity(model, obs[:, :-1], act)
        torch.testing.assert_close(logits, model(obs[:, :-1], act, rec["g"][:, 0]), rtol=1e-5, atol=1e-5)
        block = model.blocks[0].attn
        block.record = True
        model(obs[:, :-1], act, rec["g"][:, 0])
        block.record = False
    every_lag = memory.by_lag(model.cfg, block.weights[..., -4:, :8], 4)  # (B*K, H, 4, span): the queries' rows
    every_lag = every_lag.unflatten(0, (3, 3)).movedim(1, 2).flatten(2, 3)  # (B, H, T, span)
    assert memory.lag_units(model.cfg) == 5 and rec["att"][0].shape == (3, 2, 12, 5)
    assert torch.equal(rec["att"][0], every_lag[..., :5])  # the units are lags 0..4 of every query's weights
    seen_late = every_lag[..., 5:] > 0  # (B, H, T, 3): lags 5..7
    assert seen_late.any() and not seen_late[:, :, 4::4].any()  # seen, but not by a segment's first query
    assert (rec["att"][0][:, :, 4:] > 0).all()  # past the first segment every unit's lag is seen
    assert rec["ffn"][1].shape == (3, 12, 64) and rec["g"].shape == (3, 13, 16)


def test_the_xl_study_tables_come_out_of_the_committed_logs():
    # RESULTS.md's xl tables are this script's output, from assets/ alone
    out = subprocess.run([sys.executable, os.path.join("assets", "xl_study.py")], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "| NMDA α = 10 | xl (" in out.stdout and "Ablation, N = 8" in out.stdout and "Seconds of training" in out.stdout
    results = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), encoding="utf-8").read()
    rows = [line for line in results[results.index("### The study under the xl model"):].splitlines() if line.startswith("| ")]
    printed = set(out.stdout.splitlines())
    assert len(rows) > 90 and [r for r in rows if r not in printed] == []  # every row of those sections, as printed


# ---- the README's recipes ("Make it yours"), each done as it says -------------------------------

class NMDAPerNeuron(torch.nn.Module):
    """The recipe's activation: NMDA with a learnable alpha for each neuron of the layer, learned as
    log alpha (alpha stays positive; alpha = 0 is log alpha = -inf, the identity, with no gradient)."""

    def __init__(self, width, alpha, beta):
        super().__init__()
        self.log_alpha, self.beta = torch.nn.Parameter(torch.full((width,), float(alpha)).log()), beta

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x - self.log_alpha)


def test_recipe_an_activation_with_a_parameter_per_neuron(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ACTIVATIONS, "nmda_per_neuron", lambda width, alpha, beta: NMDAPerNeuron(width, alpha, beta))
    monkeypatch.setitem(FORMULAS, "nmda_per_neuron", FORMULAS["nmda"])  # at its initial alpha
    test_each_registered_activation_computes_its_formula()  # the formula test takes it in as it is
    run = str(tmp_path / "run")
    train.main(TINY + ["--act", "nmda_per_neuron", "--max_iters", "4", "--eval_interval", "2", "--out_dir", run])
    alpha = torch.load(os.path.join(run, "ckpt.pt"), weights_only=True)["model"]["blocks.0.mlp.act.log_alpha"].exp()
    assert alpha.shape == (64,) and len(alpha.unique()) > 1  # one per neuron of d_ff 64, each learned on its own
    analyze.main([run, "--quick", "--no_figures"])
    assert "nmda_per_neuron α=10 β=1, xl model, 4 maps" in capsys.readouterr().out  # labelled with its own settings
    assert plots.act_label({"act": "gelu", "alpha": 3.0, "beta": 2.0}) == "gelu"  # which gelu is not built from


def test_recipe_a_task_setting_flows_from_the_command_line_to_the_analysis(tmp_path, monkeypatch, capsys):
    # The recipe's edits, made with monkeypatch: a field `stay` in env.TaskConfig, and a walk rule that reads it.
    import env as env_module
    Task = dataclasses.make_dataclass("TaskConfig", [("stay", float, env_module.setting(1.0, "stay's weight"))],
                                      bases=(TaskConfig,))
    for module in (env_module, train, checkpoint):
        monkeypatch.setattr(module, "TaskConfig", Task)
    monkeypatch.setitem(WALKS, "lazy", lambda env: (env.next_node >= 0) * torch.tensor([env.cfg.stay, 1, 1, 1, 1]))
    for stay in ("1", "4"):
        train.main(TINY + ["--walk", "lazy", "--stay", stay, "--max_iters", "2", "--eval_interval", "2",
                           "--out_dir", str(tmp_path / stay)])
    older = {k: v for k, v in torch.load(tmp_path / "1" / "ckpt.pt", weights_only=True)["args"].items() if k != "stay"}
    assert len(compare.groups([dict(args=older), dict(args={**older, "stay": 1.0})], ())) == 1  # older: the default
    model, env, ckpt = analyze.load_run(str(tmp_path / "4"), "cpu")
    assert ckpt["task_config"]["stay"] == 4 and env.cfg.stay == 4.0 and env.move_weights[12].tolist() == [4, 1, 1, 1, 1]
    capsys.readouterr()
    analyze.main([str(tmp_path / "1"), str(tmp_path / "4"), "--quick", "--no_figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert json.load(open(tmp_path / "4" / "metrics.json"))["task_config"]["stay"] == 4
    for table in out.split("mean ± standard error over seeds")[1:]:  # the runs told apart in every table
        assert "stay=1.0" in table and "stay=4.0" in table
    monkeypatch.undo()  # code without the setting refuses the runs that have it, naming it
    with pytest.raises(SystemExit) as e:
        analyze.main([str(tmp_path / "4")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "task setting 'stay' is unknown to this code" in err
    with pytest.raises(SystemExit) as e:
        train.main(["--resume", "--out_dir", str(tmp_path / "4")])
    assert e.value.code == 2 and "'stay' is unknown" in capsys.readouterr().err


def min_rm_error(log):
    """The recipe's metric: the lowest familiar RM error of the training log (None without a log)."""
    return {"min_rm_error": None if log is None else float(log["rm_error"].min())}


def test_recipe_a_metric_is_a_small_function_tested_on_a_known_case(tiny_runs, tmp_path, monkeypatch, capsys):
    assert min_rm_error({"rm_error": np.array([0.8, 0.3, 0.4])}) == {"min_rm_error": 0.3}
    assert min_rm_error(None) == {"min_rm_error": None}
    # the recipe's line in analyze_run, made with monkeypatch: the learning-speed step returns it too
    real = compare.learning_speed
    monkeypatch.setattr(compare, "learning_speed", lambda log: {**real(log), **min_rm_error(log)})
    monkeypatch.setattr(compare, "SUMMARY", compare.SUMMARY + ("min_rm_error",))
    runs = [shutil.copytree(tiny_runs / name, tmp_path / name, ignore=shutil.ignore_patterns("*.json", "*.png"))
            for name in ("a", "b")]
    analyze.main([str(r) for r in runs] + ["--quick", "--no_figures", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    m = json.load(open(runs[0] / "metrics.json"))
    assert m["min_rm_error"] == min(float(r["rm_error"]) for r in read_log(runs[0]))
    assert f"min_rm_error {m['min_rm_error']:.3f}" in out  # in analyze.py's summary of the run
    assert "min_rm_error" in out.split("mean ± standard error")[-1]  # in compare.py's tables
    assert "min_rm_error" in open(tmp_path / "summary.csv").readline()
    b = json.load(open(runs[1] / "metrics.json"))
    json.dump({k: v for k, v in b.items() if k != "min_rm_error"}, open(runs[1] / "metrics.json", "w"))  # before it
    compare.main([str(r) for r in runs] + ["--out", str(tmp_path), "--no_figures"])
    assert "note: min_rm_error: n/a for the runs analysed before it was a metric" in capsys.readouterr().out


# ---- settings, numbers and messages that cannot go silently wrong --------------------------------

def test_metrics_are_read_back_only_from_this_checkpoint_and_this_code(tiny_runs, tmp_path, monkeypatch, capsys):
    run = shutil.copytree(tiny_runs / "a", tmp_path / "a", ignore=shutil.ignore_patterns("*.json", "*.png"))
    argv = [str(run), "--quick", "--no_figures"]
    analyze.main(argv)
    analyze.main(argv)
    assert capsys.readouterr().out.count("read back") == 1
    monkeypatch.setattr(compare, "code_version", lambda: "the code, edited")  # any .py file changed
    analyze.main(argv)
    assert "read back" not in capsys.readouterr().out
    monkeypatch.undo()
    analyze.main(argv)  # made by the edited code: not this code's
    assert "read back" not in capsys.readouterr().out
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    ckpt["model"]["head.weight"][0, 0] += 1  # the same step, other weights
    torch.save(ckpt, run / "ckpt.pt")
    analyze.main(argv)
    assert "read back" not in capsys.readouterr().out
    compare.main([str(run), "--out", str(tmp_path), "--no_figures"])  # compare.py reads back, and says by whom
    assert "note:" not in capsys.readouterr().out
    m = json.load(open(run / "metrics.json"))
    json.dump({**m, "code": "older"}, open(run / "metrics.json", "w"))
    compare.main([str(run), "--out", str(tmp_path), "--no_figures"])
    assert "note: 1 of the 1 runs were analysed by other code than this" in capsys.readouterr().out


def test_a_quick_run_needs_no_other_flag(tmp_path, capsys):
    i = TINY.index("--warmup_iters")
    argv = TINY[:i] + TINY[i + 2:]  # the preset's warm-up: 200 steps
    train.main(argv + ["--max_iters", "10", "--eval_interval", "5", "--out_dir", str(tmp_path / "quick")])
    assert torch.load(tmp_path / "quick" / "ckpt.pt", weights_only=True)["args"]["warmup_iters"] == 1  # a tenth
    assert [r["step"] for r in read_log(tmp_path / "quick")] == ["5", "10"]
    with pytest.raises(SystemExit) as e:  # a warm-up given on the command line is the user's: too long, an error
        train.main(argv + ["--max_iters", "10", "--warmup_iters", "300", "--out_dir", str(tmp_path / "given")])
    assert e.value.code == 2 and "--warmup_iters 300 must be at most --max_iters 10" in capsys.readouterr().err


def test_compare_tells_apart_runs_that_differ_in_one_setting(tiny_runs, capsys, tmp_path):
    run = shutil.copytree(tiny_runs / "a", tmp_path / "a", ignore=shutil.ignore_patterns("*.json", "*.png"))
    analyze.main([str(run), "--quick", "--no_figures"])
    m = json.load(open(run / "metrics.json"))
    args = m.pop("args")
    runs = [dict(dir=f"run{n}", args={**args, "n_actions": n}, metrics=m) for n in (4, 5)]
    compare.compare(runs, str(tmp_path), figures=False)
    out = capsys.readouterr().out
    tables = out.split("\n\n")
    assert sum("n_actions=4" in t and "n_actions=5" in t for t in tables) >= 4  # runs, each summary, learning
    gelu = [dict(dir=f"g{a}", args={**args, "act": "gelu", "alpha": a}, metrics=m) for a in (0.0, 10.0)]
    assert len(compare.groups(gelu, ())) == 1  # alpha does not shape gelu: one setting, two seeds' worth


def test_messages_say_what_the_file_or_flag_is(tiny_runs, tmp_path, capsys):
    official_ckpt = os.path.join(HERE, "..", "shared", "official-ckpt", "checkpoint.pt")
    trimmed = {k: v for k, v in torch.load(tiny_runs / "a" / "ckpt.pt", weights_only=True).items()
               if k in ("model", "task_config", "model_config", "args", "step")}  # as gpucheck.py keeps them
    for name, write in (("trimmed", lambda p: torch.save(trimmed, p)),
                        ("official", lambda p: shutil.copy(official_ckpt, p) if os.path.exists(official_ckpt) else
                         torch.save({"state_dict": {}, "maps": np.zeros((1, 4)), "config": {}}, p))):
        (tmp_path / name).mkdir()
        write(tmp_path / name / "ckpt.pt")
    copy = shutil.copytree(tiny_runs / "a", tmp_path / "copy")
    analyze.main([str(copy), "--quick", "--no_figures"])
    capsys.readouterr()
    cases = [(train.main, ["--resume", "--out_dir", str(tmp_path / "trimmed")], "holds the weights and settings alone"),
             (train.main, ["--walk", "nope", "--out_dir", str(tmp_path / "new")], "--walk must be one of uniform"),
             (analyze.main, [str(tiny_runs / "a"), str(copy), "--quick"], "hold the same checkpoint"),
             (compare.main, [str(copy), str(copy)], "hold the same run")]
    if os.path.exists(official_ckpt):
        cases.append((train.main, ["--resume", "--out_dir", str(tmp_path / "official")], "the official release's"))
    for entry, argv, needle in cases:
        with pytest.raises(SystemExit) as e:
            entry(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and needle in err[0], (argv, err)


def test_the_readme_headline_comes_out_of_the_committed_runs(tmp_path):
    # the README's headline table is assets/headline.py's output, from assets/ alone, row for row
    out = subprocess.run([sys.executable, os.path.join("assets", "headline.py"), str(tmp_path / "headline.png")],
                         capture_output=True, text=True, cwd=HERE, timeout=120)
    assert out.returncode == 0, out.stderr
    readme = open(os.path.join(HERE, "README.md"), encoding="utf-8").read()
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert len(table) == 6 and "\n".join(table) in readme
    assert plots.plt.imread(str(tmp_path / "headline.png")).std() > 0
