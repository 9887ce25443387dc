"""
Time a small-preset training step (forward, backward, clip, Adam) with each speed trick of model.py
turned off in turn, the variants in alternation, medians of ROUNDS rounds of 5 steps each
(PERFORMANCE.md, the speed tricks). It patches the model.py of the commit that had every trick
(af077da), in a folder of its own:

    git worktree add ../tricks af077da
    OMP_NUM_THREADS=2 python assets/speed_tricks.py ../tricks tem 7
    OMP_NUM_THREADS=2 python assets/speed_tricks.py ../tricks xl 7
"""
import sys, time, statistics
sys.path.insert(0, sys.argv[1])
import torch, torch.nn.functional as F
import model as M
from env import GridWorld
torch.manual_seed(0)
arch, rounds = sys.argv[2], int(sys.argv[3])
small = dict(n_obs=10, n_layer=2, n_head=4, d_model=64, d_ff=256, d_rnn=32, context=16, dropout=0.0)
if arch == "xl":
    small.update(rel_lags=True, obs_attend=True, segment=8, mem_len=8, official_init=True)
B, T = 32, 64
try:
    env = GridWorld(size=7, num_maps=4, seed=0)
except TypeError:
    from env import TaskConfig
    env = GridWorld(TaskConfig(size=7, num_maps=4, seed=0))
obs, act, _, _ = env.walk(B, T)

def make():
    torch.manual_seed(0)
    return M.Model(M.ModelConfig(**small))

def step_fn(model, forward):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g0 = model.random_g0(B)
    def step():
        logits = forward(model, g0)
        loss = F.cross_entropy(logits.flatten(0, 1), obs[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return step

def plain(model, g0):
    return model(obs[:, :-1], act, g0)

variants = {}
variants["all tricks"] = (make, plain)

def no_queries_only():
    model = make()

    def run(obs_, act_, g0_, K=1, mem=None, start=0):
        # the old run with queries_only=False in the last block
        BK, n = obs_.shape
        cfg = model.cfg
        g = model.path_integrate(act_, g0_)
        pos_emb = F.relu(model.g_proj(g))
        pos_emb = torch.cat([pos_emb[:, :n], pos_emb[:, 1:]], 1)
        query = torch.full_like(obs_, cfg.n_obs)
        x = model.drop_in(torch.cat([pos_emb, model.obs_emb(torch.cat([obs_, query], 1))], 2))
        Mm = cfg.mem_len if cfg.segment else 0
        mask, lag = model.visibility(n, Mm, K, obs_.device, start)
        for block in model.blocks:
            m = model.memory(x[:, :n], K) if Mm else None
            x = block(x, m, pos_emb, mask, lag, queries_only=False)
        return model.head(model.ln_f(x[:, n:]))
    model.run = run
    return model
variants["last block: every token"] = (no_queries_only, plain)

if arch == "tem":
    def no_obs_skip():
        model = make()
        for b in model.blocks:
            b.attn.obs_attend = True  # every row computed; the mask (cfg.obs_attend False) keeps them to themselves
        return model
    variants["observation rows computed"] = (no_obs_skip, plain)

def loop_pi():
    model = make()
    model.path_integrate = model.path_integrate_loop
    return model
variants["path integration by autograd"] = (loop_pi, plain)

if arch == "xl":
    S, Mm = small["segment"], small["mem_len"]
    def one_after_another(model, g0):
        K = T // S
        with torch.no_grad():
            starts = model.path_integrate(act, g0)[:, 0:K * S:S]
        out = []
        for k in range(K):
            mem = [torch.randn(B, Mm, small["d_model"]) for _ in model.blocks]
            g = g0 if k == 0 else starts[:, k]
            out.append(model.run(obs[:, k * S:(k + 1) * S], act[:, k * S:(k + 1) * S], g, mem=mem, start=k * S))
        return torch.cat(out, 1)
    variants["segments one after another"] = (make, one_after_another)

steps = {name: step_fn(mk(), fwd) for name, (mk, fwd) in variants.items()}
times = {name: [] for name in steps}
for s in steps.values():
    for _ in range(3):
        s()
for r in range(rounds):  # alternate the variants, a few steps each
    for name, s in steps.items():
        t = time.perf_counter()
        for _ in range(5):
            s()
        times[name].append((time.perf_counter() - t) / 5 * 1000)
base = statistics.median(times["all tricks"])
for name, ts in times.items():
    med = statistics.median(ts)
    print(f"| {arch} | {name} | {med:.1f} ms | {med / base:.2f} |")
