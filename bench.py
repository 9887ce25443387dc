"""
Time train.py's training iteration at one of its presets: the walks, and its step (train.train_step)
in one pass (every step of a walk predicted at once) against one pass per prefix (one prediction a
pass, as the official release trains). Prints medians, predictions/s, MFU and peak GPU memory;
--profile N also prints where the time of N iterations goes. Writes nothing.

    python bench.py                                   # the small preset on a CPU, the paper's on a GPU
    python bench.py --arch tem                        # TEM-t instead of the paper's model
    python bench.py --preset paper --dtype bfloat16 --compile on --profile 5
"""

import argparse
import sys
import time
from functools import partial

import torch

import cli
import gpu
import train
from env import Batches, GridWorld
from model import Model

die = partial(cli.die, "bench.py")  # bad input: one line on stderr, exit status 2


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0], allow_abbrev=False)
    p.error = die  # argparse's own complaints: one line, exit 2
    p.add_argument("--preset", choices=["auto", *train.PRESETS], default="auto",
                   help="train.py's preset to time; auto: paper on a GPU, else small (default: %(default)s)")
    p.add_argument("--arch", choices=["xl", "tem"], default="xl",
                   help="train.py's --arch: xl, the paper's model; tem, TEM-t (default: %(default)s)")
    p.add_argument("--batch_size", type=int, help="walks per step (default: the preset's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps after warm-up (default: %(default)s)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N training iterations")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: %(default)s)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="autocast precision; auto: as train.py chooses it (gpu.auto_settings)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile; auto: as train.py chooses it (gpu.auto_settings)")
    args = p.parse_args(argv)
    for k in ("batch_size", "steps"):
        if getattr(args, k) is not None and getattr(args, k) < 1:
            die(f"--{k} must be a positive integer (got {getattr(args, k)})")
    if args.profile < 0:
        die(f"--profile must be a count >= 0 (got {args.profile})")
    if args.device != "auto" and gpu.unavailable(args.device):
        die(gpu.unavailable(args.device))
    flags = [f"--{k}={getattr(args, k)}" for k in ("preset", "arch", "device", "dtype", "compile", "batch_size")
             if getattr(args, k) is not None]
    run, _ = train.settings(flags)  # the run train.py would make of these flags, with its checks
    return args, run


def main(argv=None):
    args, run = parse_args(sys.argv[1:] if argv is None else argv)
    task, cfg = train.configs(run)
    device, B, T = torch.device(run.device), run.batch_size, run.walk_len
    cuda = device.type == "cuda"

    def sync():  # wait for the GPU, so that a time is the work's, not the launch's
        if cuda:
            torch.cuda.synchronize(device)

    if cuda:
        gpu.allow_tf32()
    autocast = gpu.autocast(device, run.dtype)
    scaler = torch.amp.GradScaler(device.type, enabled=run.dtype == "float16")  # as train.py's
    torch.manual_seed(0)
    env, model = GridWorld(task, device), Model(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=cuda)
    try:
        batches = Batches(env, B, T, model.random_g0)
    except (RuntimeError, MemoryError) as e:
        die(f"--batch_size {B}: the walks do not fit in memory ({type(e).__name__})")

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
    # The official release's step: a pass over a prefix, its last prediction alone supervised. Its cost
    # is a pass over that prefix (train_step supervises every prediction of it, for the same products):
    # with segments, over each prefix of a segment in turn (the first segment's, without the memory the
    # official adds later on: a lower bound of its cost); without, over a prefix as long as the context.
    prefixes = range(1, cfg.segment + 1) if cfg.segment else [min(cfg.context, T)]
    rows = []  # (layout, seconds an optimizer step, predictions an optimizer step)
    for name, prefixes, predictions in (("one pass", [T], B * T), ("prefix by prefix", prefixes, B)):
        # each prefix length compiled afresh for its one shape: no recompilation, no dynamic shapes
        step = torch.compile(model, dynamic=False) if run.compile == "on" else model
        sec = timed(lambda: [train.train_step(step, optimizer, scaler, autocast, run.grad_clip, obs[:, :k + 1],
                                              act[:, :k], g0) for k in prefixes])
        rows.append((name, sec / len(prefixes), predictions))
        if run.compile == "on":
            torch.compiler.reset()
    report(args, run, rows, walks, gpu.flops_per_step(cfg, B, T), gpu.peak_flops(device, run.dtype), batches.ahead)
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    if args.profile:
        profile(args, lambda: train.train_step(model, optimizer, scaler, autocast, run.grad_clip, *batches.next()),
                cuda, sync)


def report(args, run, rows, walks, flops, peak, ahead):
    """The table: rows of (layout, seconds an optimizer step, predictions a step); MFU where the peak is known."""
    seen = f"segments of {run.segment}, memory {run.mem_len}" if run.segment else f"context {run.context}"
    print(f"benchmark: {run.preset} preset, {run.device} {run.dtype}{' compiled' if run.compile == 'on' else ''}, "
          f"batch {run.batch_size}, walk_len {run.walk_len}, {run.arch} model, {seen}; median of {args.steps} steps")
    for name, sec, predictions in rows:
        mfu = f" | MFU {flops / sec / peak:6.1%}" if peak and name == "one pass" else ""
        print(f"{name:>16}: {sec * 1000:8.2f} ms/step | {predictions / sec:12,.0f} predictions/s{mfu}")
    (_, one, p1), (_, prefix, p2) = rows
    print(f"one pass / prefix by prefix: {(p1 / one) / (p2 / prefix):.1f}x the predictions per second")
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
    ops = sum(e.count for e in events if e.key.startswith("aten::"))
    print(f"aten ops called per training iteration (nested calls included): {ops / args.profile:,.0f}")


if __name__ == "__main__":
    main()
