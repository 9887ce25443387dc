"""Tests: each asserts one property that matters. Run with: python -m pytest -q test_all.py"""

import csv
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import train
from env import GridWorld, visited_in_context
from model import Model, ModelConfig
from nmda import ACTIVATIONS, NMDA, make_activation, nmda

torch.set_num_threads(1)  # tiny models: threads only add overhead
HERE = os.path.dirname(os.path.abspath(__file__))
TINY = ["--preset", "small", "--d_model", "32", "--d_ff", "64", "--n_head", "2", "--d_rnn", "16",
        "--walk_len", "32", "--batch_size", "16", "--eval_walks", "32"]


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


def test_activation_registry():
    for name in ACTIVATIONS:
        y = make_activation(name, 10.0, 1.0)(torch.randn(8))
        assert y.shape == (8,)
    with pytest.raises(ValueError):
        make_activation("nope")


# ---- env.py -------------------------------------------------------------------------------------

def test_walk_moves_are_legal_and_match_actions():
    env = GridWorld(size=6, num_maps=3, seed=1)
    obs, act, pos, map_id = env.walk(256, 50)
    r, c = pos // 6, pos % 6
    dr, dc = r[:, 1:] - r[:, :-1], c[:, 1:] - c[:, :-1]
    assert ((r >= 0) & (r < 6) & (c >= 0) & (c < 6)).all()
    want = torch.tensor([(0, 0), (0, 1), (1, 0), (-1, 0), (0, -1)])  # stay, east, south, north, west
    assert torch.equal(dr, want[act][..., 0]) and torch.equal(dc, want[act][..., 1])


def test_stay_probability_is_one_over_options():
    env = GridWorld(size=5, num_maps=1, seed=0)
    _, act, pos, _ = env.walk(4000, 50)
    r, c = pos[:, :-1] // 5, pos[:, :-1] % 5
    n_edges = (r == 0).int() + (r == 4).int() + (c == 0).int() + (c == 4).int()
    for n_edge, p in ((2, 1 / 3), (1, 1 / 4), (0, 1 / 5)):  # corner, edge, interior
        stays = (act[n_edge == n_edges] == 0).double()
        se = math.sqrt(p * (1 - p) / stays.numel())
        assert abs(stays.mean().item() - p) < 4 * se, (n_edge, stays.mean().item(), p)


def test_four_action_walks_never_stay():
    env = GridWorld(size=5, num_maps=1, n_actions=4, seed=0)
    _, act, pos, _ = env.walk(200, 30)
    assert (pos[:, 1:] != pos[:, :-1]).all() and act.max() == 3


def test_observations_match_the_map():
    env = GridWorld(size=7, n_obs=10, num_maps=5, seed=3)
    obs, _, pos, map_id = env.walk(64, 40)
    assert torch.equal(obs, env.maps[map_id[:, None], pos])
    assert env.maps.shape == (5, 49) and env.maps.dtype == torch.long


def test_maps_are_a_function_of_the_seed_and_novel_maps_are_new():
    a, b = GridWorld(seed=7), GridWorld(seed=7)
    assert torch.equal(a.maps, b.maps) and not torch.equal(a.maps, GridWorld(seed=8).maps)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    obs, _, pos, map_id = a.walk(64, 200, novel=True, generator=g1)
    assert torch.equal(obs, a.walk(64, 200, novel=True, generator=g2)[0])  # reproducible
    assert (map_id == -1).all()
    # No novel walk is consistent with any familiar map.
    familiar = a.maps[:, pos]  # (num_maps, B, steps+1)
    assert not (familiar == obs).all(-1).any()


def test_visited_in_context_on_hand_made_walks():
    pos = torch.tensor([[0, 1, 0, 2, 3, 1, 1]])
    # t:           0  1  2  3  4  5   target pos[t+1] = 1 0 2 3 1 1
    want_c2 = [[0, 1, 0, 0, 0, 1]]  # context 2: window pos[t-1..t]
    want_c4 = [[0, 1, 0, 0, 1, 1]]  # context 4: window pos[t-3..t]; step 4 sees pos[1] = 1
    assert visited_in_context(pos, 2).int().tolist() == want_c2
    assert visited_in_context(pos, 4).int().tolist() == want_c4
    assert visited_in_context(pos, 1).int().tolist() == [[0, 0, 0, 0, 0, 1]]


# ---- model.py -----------------------------------------------------------------------------------

def tiny_model(**kw):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, d_model=32, d_ff=64, d_rnn=16, context=5, dropout=0.0, **kw)
    return Model(cfg).eval()


def walks(T=20, B=3):
    # W_a is zero at init; give it weights so that actions matter in g
    return GridWorld(size=5, seed=0).walk(B, T)


@pytest.mark.parametrize("tem_t", [False, True])
def test_model_is_causal_and_sees_only_its_context(tem_t):
    model = tiny_model(tem_t=tem_t)
    torch.nn.init.normal_(model.W_a, std=0.3)
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


def test_one_pass_equals_prefix_by_prefix():
    model = tiny_model()
    torch.nn.init.normal_(model.W_a, std=0.3)
    obs, act, _, _ = walks(T=16)
    g0 = torch.randn(3, 16)
    one_pass = model(obs[:, :-1], act, g0)
    for t in range(16):
        prefix = model(obs[:, : t + 1], act[:, : t + 1], g0)[:, -1]
        torch.testing.assert_close(one_pass[:, t], prefix, rtol=1e-5, atol=1e-5)


def test_recorded_activity_matches_the_forward_pass():
    model = tiny_model()
    obs, act, _, _ = walks(T=12)
    g0, rec = torch.randn(3, 16), {}
    logits = model(obs[:, :-1], act, g0, rec=rec)
    torch.testing.assert_close(logits, model(obs[:, :-1], act, g0), rtol=1e-5, atol=1e-5)
    assert rec["g"].shape == (3, 13, 16) and len(rec["ffn"]) == 2 and rec["ffn"][0].shape == (3, 12, 64)
    att = rec["att"][0]  # (B, H, T, T): each query's weights over the observations sum to < 1
    assert att.shape == (3, 2, 12, 12) and (att.sum(-1) < 1).all()
    assert (att[..., torch.triu(torch.ones(12, 12, dtype=torch.bool), 1)] == 0).all()


# ---- train.py -----------------------------------------------------------------------------------

def read_log(out_dir):
    with open(os.path.join(out_dir, "log.csv")) as f:
        return list(csv.DictReader(f))


def test_short_training_lowers_the_loss(tmp_path):
    train.main(TINY + ["--max_iters", "80", "--eval_interval", "20", "--lr", "3e-3",
                       "--out_dir", str(tmp_path)])
    rows = read_log(tmp_path)
    first, last = float(rows[0]["loss"]), float(rows[-1]["loss"])
    assert last < first - 0.05, (first, last)
    assert float(rows[-1]["wm_error"]) < 0.8  # chance is 0.9


def test_resume_gives_the_same_next_losses(tmp_path):
    common = TINY + ["--eval_interval", "5", "--dropout", "0.1"]
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


def test_bad_flags_exit_2_with_one_line(tmp_path, capsys):
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
    for argv, needle in cases:
        with pytest.raises(SystemExit) as e:
            train.main(argv)
        lines = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(lines) == 1 and needle in lines[0], (argv, lines)
    assert (corrupt / "ckpt.pt").read_bytes() == b"not a checkpoint"


def test_the_command_line_reports_bad_input_in_one_line():
    r = subprocess.run([sys.executable, "train.py", "--alpha", "-1"], cwd=HERE, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "train.py: error: --alpha must be in [0, 1e6] (got -1.0)"]


def test_two_process_data_parallel_gives_the_same_losses(tmp_path):
    argv = TINY + ["--max_iters", "6", "--eval_interval", "3", "--dropout", "0", "--seed", "3"]
    train.main(argv + ["--out_dir", str(tmp_path / "one")])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "train.py", *argv, "--out_dir", str(tmp_path / "two")],
                       cwd=HERE, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    assert [r["step"] for r in two] == ["3", "6"]
    for a, b in zip(one, two):
        for k in ("loss", "wm_error", "rm_error"):
            assert abs(float(a[k]) - float(b[k])) < 1e-4, (k, a[k], b[k])
