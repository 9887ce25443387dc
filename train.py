"""
Train the transformer of model.py on the grid task of env.py.

    python train.py --act nmda --alpha 10            # CPU: the small preset, GPU: the paper's
    python train.py --preset paper --act gelu --out_dir out/gelu
    python train.py --out_dir out --resume            # go on from out/ckpt.pt
    torchrun --standalone --nproc_per_node=2 train.py ...   # data-parallel over 2 processes

Every interval it prints and appends to out_dir/log.csv the training loss and the error rates on
working-memory (WM) and reference-memory (RM) steps, on familiar and on novel maps, and saves
out_dir/ckpt.pt atomically.
"""

import argparse
import csv
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, fields

import torch
import torch.nn.functional as F
from torch.distributed import destroy_process_group, init_process_group
from torch.nn.parallel import DistributedDataParallel as DDP

from env import GridWorld, visited_in_context
from model import Model, ModelConfig
from nmda import ACTIVATIONS

# Preset values fill every preset flag the command line leaves unset.
PRESETS = {
    # SPEC §3 and the official release's figures, for one GPU. One pass trains every step of a
    # 128-step walk at once; 512 walks x 128 steps = 65,536 supervised predictions per step.
    "paper": dict(size=11, n_obs=10, num_maps=32, n_layer=2, n_head=8, d_model=512, d_ff=2048,
                  d_rnn=128, context=64, walk_len=128, batch_size=512, lr=1e-4, dropout=0.1,
                  max_iters=20000, eval_interval=500, eval_walks=512),
    # For a 2-core CPU, about 5 minutes: a 7x7 grid, 4 maps, a narrow model and a short context
    # (so that a third of the steps are reference-memory steps). README "Results" says how it was
    # chosen.
    "small": dict(size=7, n_obs=10, num_maps=4, n_layer=2, n_head=4, d_model=64, d_ff=256,
                  d_rnn=32, context=16, walk_len=64, batch_size=64, lr=1e-3, dropout=0.0,
                  max_iters=2000, eval_interval=250, eval_walks=256),
}
# Flags a resumed run may change; every other setting comes from the checkpoint.
RESUMABLE = ("max_iters", "eval_interval", "device", "dtype", "compile", "resume", "out_dir", "bench", "profile")
# Dense bf16 peak FLOP/s of the GPUs whose MFU we report (NVIDIA data sheets, SXM parts).
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def die(msg):
    """Bad input: one line on stderr, exit status 2."""
    print(f"train.py: error: {msg}", file=sys.stderr)
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own complaints: one line, exit 2
        die(message)


class Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # preset flags say so themselves
        return action.help if action.default is None else super()._get_help_string(action)


def parse_args(argv=None):
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=Help)
    P = "(default: from --preset)"
    a = p.add_argument
    a("--preset", choices=["auto", "paper", "small"], default="auto",
      help="paper: the paper's settings, for one GPU; small: for a 2-core CPU; auto: paper on a GPU, else small")
    a("--act", default="nmda", help=f"feed-forward activation: {', '.join(ACTIVATIONS)}")
    a("--alpha", type=float, default=10.0, help="NMDA alpha, the Mg2+ block ([Mg2+]/3.57mM); 0 = linear")
    a("--beta", type=float, default=1.0, help="NMDA beta, the steepness of the gate")
    a("--tem_t", action="store_true", help="TEM-t attention: q, k from position only, v from sensory only")
    a("--size", type=int, help=f"grid side length L {P}")
    a("--n_obs", type=int, help=f"number of sensory tokens {P}")
    a("--num_maps", type=int, help=f"number of familiar maps N {P}")
    a("--n_actions", type=int, default=5, choices=[4, 5], help="5: stay + 4 moves; 4: moves only")
    a("--n_layer", type=int, help=f"transformer blocks {P}")
    a("--n_head", type=int, help=f"attention heads {P}")
    a("--d_model", type=int, help=f"token width, half position and half sensory {P}")
    a("--d_ff", type=int, help=f"feed-forward hidden units {P}")
    a("--d_rnn", type=int, help=f"size of the position vector g {P}")
    a("--context", type=int, help=f"past observations a prediction may attend to {P}")
    a("--dropout", type=float, help=f"dropout after attention and feed-forward {P}")
    a("--walk_len", type=int, help=f"steps per training walk; every step is a prediction {P}")
    a("--batch_size", type=int, help=f"walks per optimizer step (global, over all processes) {P}")
    a("--lr", type=float, help=f"Adam learning rate {P}")
    a("--grad_clip", type=float, default=0.25, help="gradient-norm clip (0: off)")
    a("--max_iters", type=int, help=f"optimizer steps {P}")
    a("--eval_interval", type=int, help=f"steps between evaluations, log lines and checkpoints {P}")
    a("--eval_walks", type=int, help=f"walks per evaluation, familiar and novel each {P}")
    a("--seed", type=int, default=0, help="seed of the familiar maps, the walks and the weights")
    a("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1, ...")
    a("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
      help="autocast precision; auto: bfloat16 on a GPU that has it, else float32")
    a("--compile", default="auto", choices=["auto", "on", "off"], help="torch.compile; auto: on for cuda")
    a("--out_dir", default="out", help="where ckpt.pt and log.csv go")
    a("--resume", action="store_true", help="continue from out_dir/ckpt.pt")
    a("--overwrite", action="store_true", help="start afresh even if out_dir/ckpt.pt exists")
    a("--bench", type=int, default=0, metavar="N",
      help="benchmark instead of training: time N training steps after warm-up, one pass against "
           "prefix by prefix, and print predictions/s, tokens/s, step time, peak memory and MFU")
    a("--profile", type=int, default=0, metavar="N",
      help="with --bench: also profile N training iterations and print the ops that take the most time")
    return p.parse_args(argv)


def resolve(args):
    """Fill preset values, check every flag, return the settled args."""
    cuda = torch.cuda.is_available()
    if args.device == "auto":
        args.device = "cuda" if cuda else "cpu"
    if args.preset == "auto":
        args.preset = "paper" if args.device.startswith("cuda") else "small"
        print(f"no preset given: using --preset {args.preset} ({'GPU' if args.preset == 'paper' else 'no GPU'}; "
              "pass --preset to choose)")
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.dtype == "auto":
        args.dtype = "bfloat16" if args.device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    if args.compile == "auto":
        args.compile = "on" if args.device.startswith("cuda") else "off"
    check(args)
    return args


def check(args):
    if args.act not in ACTIVATIONS:
        die(f"--act {args.act!r} is unknown; choose from {', '.join(ACTIVATIONS)}")
    positive = ("size", "n_obs", "num_maps", "n_layer", "n_head", "d_model", "d_ff", "d_rnn",
                "context", "walk_len", "batch_size", "max_iters", "eval_interval", "eval_walks")
    for k in positive:
        if getattr(args, k) < 1:
            die(f"--{k} must be a positive integer (got {getattr(args, k)})")
    finite = all(math.isfinite(getattr(args, k)) for k in ("alpha", "beta", "lr", "dropout", "grad_clip"))
    if not finite:
        die("--alpha, --beta, --lr, --dropout and --grad_clip must be finite numbers")
    if not 0 <= args.alpha <= 1e6:
        die(f"--alpha must be in [0, 1e6] (got {args.alpha})")
    if args.size < 2:
        die(f"--size must be at least 2: a grid of 1 node has nowhere to go (got {args.size})")
    if args.n_obs < 2:
        die(f"--n_obs must be at least 2 (got {args.n_obs})")
    if args.d_model % 2 or args.d_model % args.n_head:
        die(f"--d_model must be even and divisible by --n_head (got d_model {args.d_model}, n_head {args.n_head})")
    if args.lr <= 0 or not 0 <= args.dropout < 1 or args.grad_clip < 0:
        die("--lr must be > 0, --dropout in [0, 1), --grad_clip >= 0")
    if args.bench < 0 or args.profile < 0 or (args.profile and not args.bench):
        die(f"--bench and --profile take a count >= 0, and --profile needs --bench "
            f"(got --bench {args.bench}, --profile {args.profile})")
    if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
        die(f"--device {args.device!r} is not available here; use auto or cpu")


def load_checkpoint(path):
    if not os.path.isfile(path):
        die(f"--resume: no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        assert isinstance(ckpt, dict) and {"model", "model_config", "args", "step"} <= ckpt.keys()
    except Exception as e:
        die(f"--resume: {path} is not a readable checkpoint of this project ({type(e).__name__})")
    return ckpt


def save_checkpoint(path, **ckpt):
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written ckpt.pt


def error_counts(logits, obs, pos, context):
    """Wrong predictions and step counts on WM and RM steps, as a (4,) tensor on the device:
    [wm_wrong, wm_steps, rm_wrong, rm_steps]."""
    wrong = logits.argmax(-1) != obs[:, 1:]
    wm = visited_in_context(pos, context)
    return torch.stack([(wrong & wm).sum(), wm.sum(), (wrong & ~wm).sum(), (~wm).sum()])


@torch.no_grad()
def evaluate(model, env, args, ctx):
    """WM and RM error on familiar and novel maps, on the same walks at every evaluation."""
    model.eval()
    gen = torch.Generator(env.device).manual_seed(args.seed + 12345)
    out = {}
    for novel in (False, True):
        counts = 0
        for i in range(0, args.eval_walks, args.batch_size):
            n = min(args.batch_size, args.eval_walks - i)
            obs, act, pos, _ = env.walk(n, args.walk_len, novel=novel, generator=gen)
            g0 = torch.randn(n, args.d_rnn, generator=gen, device=env.device) / math.sqrt(args.d_rnn)
            with ctx:
                logits = model(obs[:, :-1], act, g0)
            counts = counts + error_counts(logits.float(), obs, pos, args.context)
        c = counts.tolist()
        pre = "novel_" if novel else ""
        out[pre + "wm_error"] = c[0] / max(c[1], 1)
        out[pre + "rm_error"] = c[2] / max(c[3], 1)
    model.train()
    return out


def bench(args, next_batch, train_step, flops_per_step, peak, device):
    """Time the training step after warm-up: one pass over walk_len steps against one pass per
    prefix (a window of `context` observations predicting its last step, as the official
    release trains), and the walk generation that feeds it. Prints medians; MFU against the
    GPU's dense bf16 peak. With --profile, also where the time of a training iteration goes."""
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)

    def timed(step_fn, n):
        for _ in range(min(n, 5)):  # warm-up (and compilation)
            step_fn()
        times = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            step_fn()
            sync()
            times.append(time.perf_counter() - t)
        return sorted(times)[n // 2]

    batch = next_batch()
    T, W, B = args.walk_len, min(args.context, args.walk_len), batch[0].shape[0]
    walks = timed(next_batch, args.bench)
    one = timed(lambda: train_step(*batch), args.bench)
    # prefix by prefix: observations t-W+1..t with g0 = g_{t-W+1}; the same function (see tests)
    window = (batch[0][:, : W + 1], batch[1][:, :W], batch[2])
    prefix = timed(lambda: train_step(*window, one_pass=False), args.bench)
    rows = [("one pass", one, B * T, 2 * B * T), ("prefix by prefix", prefix, B, 2 * B * W)]
    print(f"benchmark: {args.device} {args.dtype}{' compiled' if args.compile == 'on' else ''}, "
          f"batch {B}, walk_len {T}, context {args.context}, d_model {args.d_model}, "
          f"d_ff {args.d_ff}, {args.n_layer} layers; median of {args.bench} steps")
    for name, sec, preds, tokens in rows:
        mfu = f" | MFU {flops_per_step / sec / peak:6.1%}" if peak and name == "one pass" else ""
        print(f"{name:>16}: {sec * 1000:8.2f} ms/step | {preds / sec:12,.0f} predictions/s | "
              f"{tokens / sec:12,.0f} tokens/s{mfu}")
    print(f"one pass / prefix by prefix: {(B * T / one) / (B / prefix):.1f}x the predictions per second")
    mfu = f", MFU {flops_per_step / (walks + one) / peak:.1%}" if peak else ""
    print(f"walk generation: {walks * 1000:.2f} ms per batch; a training iteration (walks + one "
          f"pass) {(walks + one) * 1000:.2f} ms{mfu}")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if args.profile:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            for _ in range(args.profile):
                with torch.profiler.record_function("walks"):
                    b = next_batch()
                with torch.profiler.record_function("train_step"):
                    train_step(*b)
            sync()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        print(f"profile of {args.profile} training iterations, by {key}:")
        print(prof.key_averages().table(sort_by=key, row_limit=20))


def main(argv=None):
    args = resolve(parse_args(argv))
    ckpt_path = os.path.join(args.out_dir, "ckpt.pt")
    ckpt = None
    if args.resume:
        ckpt = load_checkpoint(ckpt_path)
        cli = vars(args)
        args = argparse.Namespace(**{**ckpt["args"], **{k: cli[k] for k in RESUMABLE}})
        check(args)
    elif os.path.exists(ckpt_path) and not args.overwrite and not args.bench:
        die(f"{ckpt_path} exists: pass --resume to continue it, --overwrite to replace it, "
            "or another --out_dir")

    # Data-parallel: torchrun sets RANK; each process takes its slice of the global batch.
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, world = 0, 1
    if ddp:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        init_process_group(backend="nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
            torch.cuda.set_device(args.device)
        if args.batch_size % world:
            die(f"--batch_size {args.batch_size} must be divisible by the {world} processes")
    master = rank == 0
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    ptdtype = getattr(torch, args.dtype)
    ctx = nullcontext() if ptdtype == torch.float32 else torch.autocast(device.type, dtype=ptdtype)

    env = GridWorld(args.size, args.n_obs, args.num_maps, args.n_actions, args.seed, device)
    cfg = ModelConfig(**{f.name: getattr(args, f.name) for f in fields(ModelConfig)})
    model = Model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=device.type == "cuda")
    step = 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        if torch.device(ckpt["args"]["device"]).type == device.type:  # states are per device type
            env.generator.set_state(ckpt["rng"]["walks"])
            if device.type == "cuda":
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        elif master:
            print("resuming on another kind of device: the random streams start afresh")
        if master:
            print(f"resuming {ckpt_path} at step {step}; settings from the checkpoint "
                  f"except {', '.join('--' + k for k in RESUMABLE[:5])}")
    flops_per_step = model.flops_per_step(args.batch_size, args.walk_len)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    peak = next((v * world for k, v in PEAK_FLOPS.items() if k in gpu), None)  # the global batch's GPUs
    raw_model = model
    if args.compile == "on":
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(enabled=ptdtype == torch.float16)

    if master:
        if not args.bench:
            os.makedirs(args.out_dir, exist_ok=True)
        n_params = sum(p.numel() for p in raw_model.parameters())
        print(f"{args.act} alpha={args.alpha:g} beta={args.beta:g} | {args.size}x{args.size} grid, "
              f"{args.num_maps} maps, context {args.context} | {n_params / 1e6:.2f}M parameters | "
              f"{args.device} {args.dtype}{' compiled' if args.compile == 'on' else ''}"
              f"{f' x{world} processes' if ddp else ''}")
        print("errors are arg-max error rates; chance is "
              f"{1 - 1 / args.n_obs:.2f}. WM: the answer is in the context; RM: it is not")
    log_path = os.path.join(args.out_dir, "log.csv")
    log_cols = ["step", "loss", "wm_error", "rm_error", "novel_wm_error", "novel_rm_error",
                "ms_per_step", "elapsed_s"]

    def checkpoint():
        save_checkpoint(ckpt_path, model=raw_model.state_dict(), model_config=asdict(cfg),
                        args=vars(args), optimizer=optimizer.state_dict(), step=step,
                        rng={"walks": env.generator.get_state(), "torch": torch.get_rng_state(),
                             "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None})

    B = args.batch_size // world

    def next_batch():
        # Every process draws the same global batch and keeps its slice, so a run's numbers do
        # not depend on how many processes share it.
        obs, act, pos, _ = env.walk(args.batch_size, args.walk_len)
        g0 = torch.randn(args.batch_size, args.d_rnn, generator=env.generator, device=device)
        sl = slice(rank * B, (rank + 1) * B)
        return obs[sl], act[sl], g0[sl] / math.sqrt(args.d_rnn)

    def train_step(obs, act, g0, one_pass=True):
        with ctx:
            logits = model(obs[:, :-1], act, g0)  # (B, walk_len, n_obs): every step at once
            if one_pass:
                loss = F.cross_entropy(logits.float().flatten(0, 1), obs[:, 1:].flatten())
            else:  # the last step only, as one pass per prefix trains
                loss = F.cross_entropy(logits[:, -1].float(), obs[:, -1])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if args.grad_clip > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    if args.bench:
        return bench(args, next_batch, train_step, flops_per_step, peak, device)
    loss_sum = torch.zeros((), device=device)  # accumulated on the device, read at log time
    n_loss, t0, t_start = 0, time.time(), time.time()
    elapsed0 = 0.0
    if ckpt is not None and os.path.exists(log_path):
        with open(log_path) as f:
            rows = list(csv.DictReader(f))
        elapsed0 = float(rows[-1]["elapsed_s"]) if rows else 0.0
    try:
        while step < args.max_iters:
            loss = train_step(*next_batch())
            loss_sum += loss
            n_loss += 1
            step += 1

            if step % args.eval_interval == 0 or step == args.max_iters:
                if ddp:
                    torch.distributed.all_reduce(loss_sum)  # every process's slice: the global loss
                    loss_sum /= world
                mean_loss = loss_sum.item() / n_loss  # the one host-device sync per interval
                if not math.isfinite(mean_loss):
                    print(f"train.py: the loss is {mean_loss} near step {step}; stopped. The last "
                          f"good checkpoint is kept in {ckpt_path}. Try a lower --lr", file=sys.stderr)
                    sys.exit(1)
                ms = (time.time() - t0) * 1000 / n_loss
                loss_sum.zero_()
                n_loss = 0
                if master:
                    m = evaluate(raw_model, env, args, ctx)
                    checkpoint()
                    elapsed = elapsed0 + time.time() - t_start
                    eta = ms * (args.max_iters - step) / 1000
                    mfu = f" | MFU {flops_per_step / (ms / 1000) / peak:.1%}" if peak else ""
                    print(f"step {step:6d}/{args.max_iters} | loss {mean_loss:.4f} | familiar WM "
                          f"{m['wm_error']:.3f} RM {m['rm_error']:.3f} | novel WM {m['novel_wm_error']:.3f} "
                          f"RM {m['novel_rm_error']:.3f} | {ms:.1f} ms/step{mfu} | ETA {eta / 60:.1f} min", flush=True)
                    new = not os.path.exists(log_path)
                    with open(log_path, "a", newline="") as f:
                        w = csv.writer(f)
                        if new:
                            w.writerow(log_cols)
                        w.writerow([step, f"{mean_loss:.5f}"] + [f"{m[k]:.5f}" for k in log_cols[2:6]]
                                   + [f"{ms:.2f}", f"{elapsed:.1f}"])
                t0 = time.time()
    except KeyboardInterrupt:
        if master:
            checkpoint()
            print(f"\ninterrupted: saved {ckpt_path} at step {step}; --resume goes on from there")
        sys.exit(130)
    else:
        if ddp:  # let every process finish together: rank 0 may still be evaluating and saving
            torch.distributed.barrier()
    finally:
        if ddp:
            destroy_process_group()
    if master:
        print(f"done: {ckpt_path} ({step} steps). Analyse it with: python analyze.py {args.out_dir}")


if __name__ == "__main__":
    main()
