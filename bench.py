"""
Time the training iteration of train.py's presets: the walks, and the step in one pass (every
step of a walk predicted at once) against one pass per prefix (one prediction a pass, as the
official release trains). Prints medians, predictions/s, MFU and peak GPU memory; --profile N also
prints where the time of N iterations goes. Writes nothing.

    python bench.py                                   # the small preset on a CPU, the paper's on a GPU
    python bench.py --preset paper --dtype bfloat16 --compile on --profile 5
"""

import argparse
import sys
import time
from contextlib import nullcontext
from dataclasses import fields, replace
from functools import partial

import torch
import torch.nn.functional as F

import cli
from cli import PRESETS, XL
from env import Batches, GridWorld, TaskConfig
import gpu
from model import Model, ModelConfig



die = partial(cli.die, "bench.py")  # bad input: one line on stderr, exit status 2


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0], allow_abbrev=False)
    p.error = die  # argparse's own complaints: one line, exit 2
    p.add_argument("--preset", choices=["auto", *PRESETS], default="auto",
                   help="train.py's preset to time; auto: paper on a GPU, else small")
    p.add_argument("--arch", choices=["tem", "xl"], default="tem",
                   help="tem: model.py's TEM-t; xl: the official release's Transformer-XL, one pass per segment "
                        "against its one pass per prefix (default: %(default)s)")
    p.add_argument("--batch_size", type=int, help="walks per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps after warm-up (default: %(default)s)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N training iterations")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast precision; auto: as train.py chooses it (gpu.auto_settings)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile; auto: as train.py chooses it (gpu.auto_settings)")
    args = p.parse_args(argv)
    cuda = torch.cuda.is_available()
    args.device = ("cuda" if cuda else "cpu") if args.device == "auto" else args.device
    on_gpu = args.device.startswith("cuda")
    if args.device != "cpu" and not (on_gpu and cuda):
        die(f"--device {args.device!r} is not available here; use auto or cpu")
    if on_gpu and (torch.device(args.device).index or 0) >= torch.cuda.device_count():
        die(f"--device {args.device!r}: this machine has {torch.cuda.device_count()} GPU(s)")
    args.preset = cli.auto_preset(args.device) if args.preset == "auto" else args.preset
    dtype, compile_ = gpu.auto_settings(gpu.capability(args.device))
    args.dtype = dtype if args.dtype == "auto" else args.dtype
    args.compile = compile_ if args.compile == "auto" else args.compile
    for k in ("batch_size", "steps"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            die(f"--{k} must be a positive integer (got {getattr(args, k)})")
    if args.profile < 0:
        die(f"--profile must be a count >= 0 (got {args.profile})")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    preset, device = PRESETS[args.preset], torch.device(args.device)  # its model, grid and walks
    B, T = args.batch_size or preset["batch_size"], preset["walk_len"]
    cuda = device.type == "cuda"

    def sync():  # wait for the GPU, so that a time is the work's, not the launch's
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        gpu.allow_tf32()
    ptdtype = getattr(torch, args.dtype)
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device.type, dtype=ptdtype)
    scaler = torch.amp.GradScaler(device.type, enabled=ptdtype == torch.float16)  # as train.py's step
    torch.manual_seed(0)
    env = GridWorld(TaskConfig(**{f.name: preset[f.name] for f in fields(TaskConfig) if f.name in preset}), device)
    cfg = ModelConfig(**{f.name: preset[f.name] for f in fields(ModelConfig) if f.name in preset})
    if args.arch == "xl":  # train.py's --arch xl
        cfg = replace(cfg, rel_lags=True, obs_attend=True, official_init=True, **XL[args.preset])
    model = Model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=cuda)
    try:
        batches = Batches(env, B, T, model.random_g0)
    except (RuntimeError, MemoryError) as e:
        die(f"--batch_size {B}: the walks do not fit in memory ({type(e).__name__})")
    W = min(model.cfg.context, T)

    def update(loss):  # as train.py's step: backward, clip, Adam
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        scaler.step(optimizer)
        scaler.update()

    def step(forward, obs, act, g0, last_only):
        with autocast:  # all predictions, or the last one (one pass per prefix)
            logits = forward(obs[:, :-1], act, g0)[:, -1 if last_only else 0:]
            loss = F.cross_entropy(logits.float().flatten(0, 1), obs[:, -logits.shape[1]:].flatten())
        update(loss)

    def prefix_step(prefix, target):  # one official optimizer step: a prefix's pass, its last prediction
        with autocast:
            loss = F.cross_entropy(prefix()[:, -1].float(), target)
        update(loss)

    def timed(fn):
        for _ in range(min(args.steps, 5)):  # warm-up (and compilation)
            fn()
        times = []
        for _ in range(args.steps):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return sorted(times)[args.steps // 2]

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    obs, act, g0 = batches.next()
    walks = timed(batches.draw) / batches.ahead  # a draw makes `ahead` batches
    rows = []  # (layout, seconds a step, predictions, tokens)
    if args.arch == "xl":  # the official's way: a segment's every prefix its own pass, after the memory
        S = cfg.segment
        mem = [torch.randn(B, cfg.mem_len, cfg.d_model, device=device) for _ in model.blocks]  # its values matter not
        g_s = model.random_g0(B, device=device)
        prefixes = [lambda k=k: model.run(obs[:, S:S + k], act[:, S:S + k], g_s, mem=mem, start=S) for k in range(1, S + 1)]
        forward = torch.compile(model, dynamic=False) if args.compile == "on" else model
        sec = timed(lambda: step(forward, obs, act, g0, False))
        rows.append(("one pass", sec, B * T, 2 * B * T))
        sec = timed(lambda: [prefix_step(p, obs[:, S + k]) for k, p in enumerate(prefixes, 1)])
        rows.append(("prefix by prefix", sec, B * S, sum(2 * k + cfg.mem_len for k in range(1, S + 1)) * B))
    for name, window, last_only, predictions in ((("one pass", T, False, B * T), ("prefix by prefix", W, True, B))
                                                 if args.arch == "tem" else ()):
        # each layout compiled afresh for its one shape: no recompilation, no dynamic shapes
        forward = torch.compile(model, dynamic=False) if args.compile == "on" else model
        sec = timed(lambda: step(forward, obs[:, :window + 1], act[:, :window], g0, last_only))
        rows.append((name, sec, predictions, 2 * B * window))
        if args.compile == "on":
            torch.compiler.reset()
    report(args, rows, walks, model.flops_per_step(B, T), gpu.peak_flops(device, args.dtype), B, T,
           f"segments of {model.cfg.segment}, memory {model.cfg.mem_len}" if model.cfg.segment
           else f"context {model.cfg.context}", batches.ahead)
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if args.profile:
        profile(args, lambda: step(model, *batches.next(), last_only=False), cuda, sync)


def report(args, rows, walks, flops, peak, B, T, context, ahead):
    """The table: rows of (layout, seconds a step, predictions, tokens); MFU where the peak is known."""
    one, prefix = rows[0][1], rows[1][1]
    print(f"benchmark: {args.preset} preset, {args.device} {args.dtype}{' compiled' if args.compile == 'on' else ''}, "
          f"batch {B}, walk_len {T}, {args.arch} model, "
          f"{context}; median of {args.steps} steps")
    for name, sec, predictions, tokens in rows:
        mfu = f" | MFU {flops / sec / peak:6.1%}" if peak and name == "one pass" else ""
        print(f"{name:>16}: {sec * 1000:8.2f} ms/step | {predictions / sec:12,.0f} predictions/s | "
              f"{tokens / sec:12,.0f} tokens/s{mfu}")
    print(f"one pass / prefix by prefix: {(rows[0][2] / one) / (rows[1][2] / prefix):.1f}x the predictions per second")
    mfu = f", MFU {flops / (walks + one) / peak:.1%}" if peak else ""
    print(f"walks: {walks * 1000:.2f} ms per batch (drawn {ahead} batches at a time); "
          f"a training iteration (walks + one pass) {(walks + one) * 1000:.2f} ms{mfu}")


def profile(args, iteration, cuda, sync):
    """Where the time of args.profile training iterations goes, and how many ops they launch."""
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.profile):
            iteration()
        sync()
    events = prof.key_averages()
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    print(f"profile of {args.profile} training iterations (eager), by {key}:")
    print(events.table(sort_by=key, row_limit=20))
    ops = sum(e.count for e in events if e.key.startswith("aten::")) / args.profile
    print(f"aten ops called per training iteration (nested calls included): {ops:,.0f}")


if __name__ == "__main__":
    main()
