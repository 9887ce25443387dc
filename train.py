"""
Train the transformer of model.py on the grid task of env.py.

    python train.py --act nmda --alpha 10           # the paper's model; CPU: the small preset, GPU: the paper's
    python train.py --arch tem                       # TEM-t as the NMDA paper describes it
    python train.py --preset paper --act gelu --out_dir out/gelu
    python train.py --out_dir out --resume           # go on from out/ckpt.pt
    torchrun --standalone --nproc_per_node=2 train.py ...   # data-parallel over 2 processes

Every eval_interval steps it prints and appends to out_dir/log.csv the training loss and the error
rates on working-memory (WM) and reference-memory (RM) steps, on familiar and on novel maps, and
saves out_dir/ckpt.pt. Ctrl-C finishes the step in progress, saves, and exits; --resume then
continues the same run, bit for bit on a CPU. The file reads top to bottom: the presets, the flags
and how they are settled, then train(): setup, the model and the walks, init or resume, the loop.
What keeps a run safe (checkpoint files, random streams, signals, the stop vote) is checkpoint.py's.
"""

import argparse
import csv
import math
import os
import signal
import sys
import tempfile
import time
from dataclasses import asdict, fields
from functools import partial

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while torch loads: exit 130 at once, no traceback

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import checkpoint  # noqa: E402
import cli  # noqa: E402
import gpu  # noqa: E402
from env import Batches, GridWorld, TaskConfig, memory_counts  # noqa: E402
from model import Model, ModelConfig, splits  # noqa: E402
from nmda import ACTIVATIONS  # noqa: E402

# ---- settings -----------------------------------------------------------------------------------

# The defaults are the paper's: its task (env.TaskConfig), its model (model.ModelConfig, the authors'
# Transformer-XL) and a training for one GPU. The official release makes an optimizer step per
# prediction: 512 walks, one predicted step each, learning rate 1e-4. Here one pass predicts every
# step of a 128-step walk, so a step of 256 walks trains 32,768 predictions, 64 times as many; the
# learning rate is 10 times the official (RESULTS.md, paper scale, says how it was chosen). A preset
# changes some of the defaults; a flag given on the command line wins over both.
PRESETS = {
    "paper": {},
    # For a 2-core CPU, minutes: a 7x7 grid, 4 maps, a narrow model and segments of 8 steps with 8 of
    # memory (a prediction sees 9 to 16 observations: a third of the steps are RM steps). RESULTS.md
    # says how it was tuned.
    "small": dict(size=7, num_maps=4, n_head=4, d_model=64, d_ff=256, d_rnn=32, context=16, segment=8, mem_len=8,
                  dropout=0.0, walk_len=64, batch_size=32, lr=5e-3, max_iters=4500, eval_interval=250,
                  eval_walks=256),
}
# A resumed run keeps its checkpoint's settings but for these, which it takes anew (from the command line
# or the defaults): the machine it runs on and where it lives. It may be given anew how long it runs and
# how often it logs, too.
TAKEN_ANEW = ("device", "dtype", "compile", "out_dir", "resume", "overwrite")
NEW_ON_RESUME = TAKEN_ANEW + ("max_iters", "eval_interval")
SWITCHES = ("rel_lags", "obs_attend", "official_init")  # the official release's differences, bar segments

die = partial(cli.die, "train.py")  # bad input: one line on stderr, exit status 2


def parser(only_given=False):
    """train.py's flags, grouped by what they set. With only_given, parse_args returns the flags on
    the command line alone: an unset flag is left out (argparse.SUPPRESS), not set to its default."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                argument_default=argparse.SUPPRESS if only_given else None)
    p.error = die  # argparse's own complaints: one line, exit 2

    def add(group, flag, default=None, **kw):  # its help ends with its default and the small preset's value
        name = flag[2:]
        said = [f"default: {default:g}" if isinstance(default, float) else f"default: {default}"] * (default is not None)
        if name in PRESETS["small"]:
            said.append(f"small preset: {PRESETS['small'][name]:g}")
        kw["help"] += f" ({'; '.join(said)})" if said else ""
        if default is not None and not only_given:
            kw["default"] = default
        group.add_argument(flag, **kw)

    paper = ModelConfig()
    group = p.add_argument_group("the model (model.ModelConfig)")
    add(group, "--act", paper.act, help=f"feed-forward activation: {', '.join(ACTIVATIONS)}")
    add(group, "--alpha", paper.alpha, type=float, help="NMDA alpha, the Mg2+ block ([Mg2+]/3.57mM); 0 = linear; for "
                                                        "an activation that learns alpha, its starting value")
    add(group, "--beta", paper.beta, type=float, help="NMDA beta, the steepness of the gate")
    add(group, "--arch", "xl", choices=["xl", "tem"],
        help="xl: the paper's own model, the authors' Transformer-XL (every switch of the official release's group "
             "below on); tem: TEM-t as the NMDA paper describes it, a window of --context observations (none)")
    add(group, "--context", paper.context, type=int, help="--arch tem: how many observations a prediction may "
                                                          "attend to, its own step's included")
    for name, text in (("n_layer", "transformer blocks"), ("n_head", "attention heads"),
                       ("d_model", "token width, half position and half sensory"), ("d_ff", "feed-forward neurons"),
                       ("d_rnn", "size of the position vector g")):
        add(group, f"--{name}", getattr(paper, name), type=int, help=text)
    add(group, "--dropout", paper.dropout, type=float, help="dropout after attention and feed-forward")
    add(group, "--qk_from_position", action="store_true",
        help="with --arch tem: Whittington et al.'s attention, queries and keys from the position part alone, "
             "values from the sensory half")
    group = p.add_argument_group("the task (env.TaskConfig)")
    for f in sorted(fields(TaskConfig), key=lambda f: f.name not in ("num_maps", "size", "seed")):  # most used first
        add(group, f"--{f.name}", f.default, type=f.type, **{"help": "a task setting (env.TaskConfig)", **f.metadata})
    group = p.add_argument_group("the run")
    add(group, "--preset", "auto", choices=["auto", *PRESETS],
        help="paper: the defaults, for one GPU; small: for a 2-core CPU; auto: paper on a GPU, else small")
    add(group, "--out_dir", "out", help="where ckpt.pt and log.csv go")
    add(group, "--resume", action="store_true", help="continue out_dir/ckpt.pt; --max_iters, --eval_interval, "
                                                     "--device, --dtype and --compile may be given anew")
    add(group, "--overwrite", action="store_true", help="start afresh even if out_dir/ckpt.pt exists")
    add(group, "--eval_interval", 500, type=int, help="steps between evaluations, log lines and checkpoints")
    add(group, "--eval_walks", 512, type=int, help="walks per evaluation, familiar and novel each")
    add(group, "--device", "auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1, ...")
    add(group, "--dtype", "auto", choices=["auto", "float32", "bfloat16", "float16"],
        help="autocast precision; auto: bfloat16 on a GPU of sm_80 or newer, float16 (loss-scaled) on older "
             "ones, float32 on a CPU")
    add(group, "--compile", "auto", choices=["auto", "on", "off"], help="torch.compile; auto: on for a GPU")
    group = p.add_argument_group("the schedule")
    add(group, "--max_iters", 20000, type=int, help="optimizer steps")
    add(group, "--lr", 1e-3, type=float, help="Adam's peak learning rate")
    add(group, "--warmup_iters", 200, type=int, help="steps of linear warm-up from 0 to --lr, at most --max_iters; in "
                                                     "a run no longer than its preset's warm-up, a tenth of its steps")
    add(group, "--decay", "cosine", choices=["cosine", "linear", "none"],
        help="after the warm-up the rate falls to --min_lr at --max_iters along a cosine or a line, or stays")
    add(group, "--min_lr", 0.0, type=float, help="the rate at --max_iters")
    add(group, "--batch_size", 256, type=int, help="walks per optimizer step (global, over all processes)")
    add(group, "--walk_len", 128, type=int, help="steps per training walk; every step is a prediction")
    add(group, "--grad_clip", 0.25, type=float, help="gradient-norm clip, 0: off")
    group = p.add_argument_group("the official release's differences: --arch xl turns all on; with --arch tem, "
                                 "each may be turned on alone")
    add(group, "--rel_lags", action="store_true", help="learnable relative-lag terms in attention")
    add(group, "--obs_attend", action="store_true", help="observation tokens attend to earlier observations too")
    add(group, "--official_init", action="store_true", help="normal(0, 0.02) init, input dropout and a read-out bias")
    add(group, "--segment", paper.segment, type=int, help="walks in segments of this many steps, g and the memory "
                                                          "carried without gradient; --arch tem: none unless given")
    add(group, "--mem_len", paper.mem_len, type=int, help="with segments: how many steps before its segment a "
                                                          "token attends to; --arch tem: none unless given")
    return p


def settings(argv):
    """The run's settings (a Namespace) and the checkpoint to resume (or None). One rule decides each:
        a flag on the command line  >  the checkpoint's (with --resume)  >  the preset's  >  the default,
    where a resumed run takes none of TAKEN_ANEW from its checkpoint. Then --arch sets the switches, 'auto'
    is decided for this machine, and every value is checked."""
    defaults = vars(parser().parse_args([]))
    given = vars(parser(only_given=True).parse_args(argv))  # the flags on the command line, and only them
    out_dir = given.get("out_dir", defaults["out_dir"])
    ckpt, saved = None, {}
    if given.get("resume"):
        try:
            ckpt = checkpoint.for_resume(os.path.join(out_dir, "ckpt.pt"))
        except ValueError as e:
            die(str(e))
        saved = {k: v for k, v in checkpoint.upgrade(ckpt["args"]).items() if k not in TAKEN_ANEW}
        fixed = sorted(k for k in given.keys() - NEW_ON_RESUME if given[k] != saved.get(k))
        if fixed:
            die(f"--{fixed[0]} cannot change when resuming: {out_dir}/ckpt.pt keeps its own settings "
                f"(--{fixed[0]} {saved.get(fixed[0])}); start a new --out_dir to change it")
    device = given.get("device", defaults["device"])
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    preset = {**defaults, **saved, **given}["preset"]
    preset = ("paper" if device.startswith("cuda") else "small") if preset == "auto" else preset
    args = argparse.Namespace(**{**defaults, **PRESETS[preset], **saved, **given, "device": device, "preset": preset})
    if args.arch == "xl":  # the paper's model: every switch on, the segments of the flags or the preset
        for k in SWITCHES:
            setattr(args, k, True)
    else:  # TEM-t: segments only where given
        args.segment, args.mem_len = given.get("segment", saved.get("segment", 0)), given.get("mem_len", saved.get("mem_len", 0))
    if ckpt is None and "warmup_iters" not in given and args.warmup_iters >= args.max_iters:
        args.warmup_iters = args.max_iters // 10  # a quick run: the preset's warm-up shrinks with it
    check(args, given)
    dtype, compile_ = gpu.auto_settings(gpu.capability(args.device))
    args.dtype = dtype if args.dtype == "auto" else args.dtype
    args.compile = compile_ if args.compile == "auto" else args.compile
    return args, ckpt


# ---- the script ---------------------------------------------------------------------------------

def main(argv=None):
    with checkpoint.stop_requests() as signals:  # Ctrl-C asks to stop: after the step in progress, saved
        train(sys.argv[1:] if argv is None else argv, signals)


def train(argv, signals):
    # ---- settings: the flags, the checkpoint of a resumed run, the preset
    args, ckpt = settings(argv)
    out_dir_ready(args, ckpt)
    ckpt_path, log_path = os.path.join(args.out_dir, "ckpt.pt"), os.path.join(args.out_dir, "log.csv")
    task, cfg = configs(args)

    # ---- setup: data-parallel processes (torchrun sets RANK), device, precision, seeds
    try:
        ddp, rank, world, args.device = gpu.distributed(args.batch_size, args.device)
    except ValueError as e:
        die(str(e))
    master, device = rank == 0, torch.device(args.device)
    say = print if master else lambda *a, **k: None  # process 0 speaks for all
    if device.type == "cuda":
        gpu.allow_tf32()
    torch.manual_seed(args.seed)
    autocast = gpu.autocast(device, args.dtype)

    # ---- the model, the optimizer and the stream of walks
    part = slice(rank * args.batch_size // world, (rank + 1) * args.batch_size // world)  # this process's walks
    try:
        env = GridWorld(task, device)
        model = Model(cfg).to(device)  # the same initial weights in every process
        if rank:  # but each process its own dropout masks (rank 0 keeps the stream of a single process)
            torch.manual_seed(args.seed + rank)
        batches = Batches(env, args.batch_size, args.walk_len, model.random_g0, part=part)
    except (RuntimeError, MemoryError, ValueError) as e:  # sizes too large for this machine, or a rule that fails
        die(f"the task, the model or the walks could not be built ({type(e).__name__}: {' '.join(str(e).split())[:160]}; "
            f"--size {args.size}, --num_maps {args.num_maps}, --walk {args.walk}, --act {args.act}, --d_model "
            f"{args.d_model}, --d_ff {args.d_ff}, --batch_size {args.batch_size}, --walk_len {args.walk_len})")
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, fused=device.type == "cuda")
    scaler = torch.amp.GradScaler(device.type, enabled=args.dtype == "float16")  # float16 only

    # ---- init, or resume where the checkpoint left off
    step, loss_sum, n_loss, elapsed = 0, torch.zeros((), device=device), 0, 0.0
    if ckpt is not None:
        afresh = checkpoint.restore(ckpt, model, optimizer, scaler, batches, rank, world)
        step, n_loss, elapsed = ckpt["step"], ckpt["n_loss"], ckpt["elapsed_s"]
        loss_sum += ckpt["loss_sum"]
        say(said_on_resume(args, ckpt, step, afresh))
    raw_model = model
    if args.compile == "on":
        model = torch.compile(model, dynamic=False)  # training sees one shape; evaluation runs raw_model
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    flops, peak = gpu.flops_per_step(cfg, args.batch_size, args.walk_len), gpu.peak_flops(device, args.dtype)
    peak = peak and peak * world  # the GPUs of the global batch; None on a CPU
    say(said_at_start(args, argv, ckpt, raw_model, world), flush=True)

    # ---- the loop: a step; at a log line (every eval_interval steps, and the last) an evaluation, a
    # checkpoint and a line of log.csv; at a stop, a checkpoint
    if signals and not ddp:  # Ctrl-C while setting up (data-parallel: at the first log line, together)
        print("\ninterrupted before the first step: nothing was saved", file=sys.stderr)
        sys.exit(130)
    start_step, stop, steps_timed = step, False, 0  # steps_timed: since t_log
    t_start = t_log = time.time()  # the process's start; the last log line (or the end of the first step)
    retire_log = ckpt is None  # a fresh run's first checkpoint (a stop's too) retires the log it --overwrites
    while step < args.max_iters and not stop:
        lr = get_lr(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum += train_step(model, optimizer, scaler, autocast, args.grad_clip, *batches.next())
        step, n_loss, steps_timed = step + 1, n_loss + 1, steps_timed + 1
        if step == start_step + 1:  # the first step (and its compilation) stays out of ms/step and the ETA
            t_log, steps_timed = first_step_done(args, device, t_log, say), 0
        at_log = step % args.eval_interval == 0 or step == args.max_iters
        stop = checkpoint.vote_to_stop(signals, at_log, ddp)
        if not (at_log or stop):
            continue
        mean_loss = checkpoint.mean_over_processes(loss_sum.item(), ddp, world) / n_loss  # the interval's one sync
        if not math.isfinite(mean_loss):  # before any checkpoint: such weights are never saved
            stopped_by_the_loss(mean_loss, step, ckpt_path)
        if at_log:
            ms = (time.time() - t_log) * 1000 / max(steps_timed, 1)  # the steps alone
            loss_sum.zero_()
            n_loss = 0
            m = evaluate(raw_model, env, args, autocast) if master else None
        ranks = checkpoint.rng_states(device, ddp, world)  # every process's; process 0 writes them
        if master:
            save(ckpt_path, log_path if retire_log else None, dict(
                model=raw_model.state_dict(), task_config=asdict(task), model_config=asdict(cfg), args=vars(args),
                step=step, optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), loss_sum=loss_sum.item(),
                n_loss=n_loss, elapsed_s=elapsed + time.time() - t_start,
                rng={"device": str(device), "walks": batches.state(), "ranks": ranks}))
        retire_log = False
        if at_log and master:
            eta = (time.time() - t_log) / max(steps_timed, 1) * (args.max_iters - step) / 60  # with the evaluation
            mfu = f" | MFU {flops / (ms / 1000) / peak:.1%}" if peak else ""
            print(f"step {step:6d}/{args.max_iters} | loss {mean_loss:.4f} | familiar WM {m['wm_error']:.3f} "
                  f"RM {m['rm_error']:.3f} | novel WM {m['novel_wm_error']:.3f} RM {m['novel_rm_error']:.3f} | "
                  f"{ms:.1f} ms/step{mfu} | ETA {eta:.1f} min", flush=True)
            append_log(log_path, dict(
                step=step, loss=f"{mean_loss:.5f}", **{k: f"{v:.5f}" for k, v in m.items()}, lr=f"{lr:.4g}",
                ms_per_step=f"{ms:.2f}", elapsed_s=f"{elapsed + time.time() - t_start:.1f}"))
        if at_log:
            t_log, steps_timed = time.time(), 0

    # ---- the end: finished, or stopped by a signal
    if ddp:  # let every process finish together: rank 0 may still be evaluating and saving
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    if stop:
        say(f"\ninterrupted: saved {ckpt_path} at step {step}; --resume goes on from there")
        sys.exit(130)
    say(f"done: {ckpt_path} ({step} steps). Analyse it with: python analyze.py {args.out_dir}")


# ---- the schedule, the step, the evaluation, the log ------------------------------------------

def get_lr(step, args):
    """The learning rate of the optimizer step that follows `step` steps: a linear warm-up to --lr over
    --warmup_iters steps, then a fall to --min_lr at --max_iters, along half a cosine (nanoGPT's
    choice) or a line (the official release's), or none. A function of the step alone, so a resumed
    run follows the schedule exactly."""
    if step < args.warmup_iters:
        return args.lr * (step + 1) / args.warmup_iters
    if args.decay == "none":
        return args.lr
    done = min(1.0, (step - args.warmup_iters) / max(1, args.max_iters - args.warmup_iters))  # 0 -> 1
    left = 0.5 * (1 + math.cos(math.pi * done)) if args.decay == "cosine" else 1 - done  # 1 -> 0
    return args.min_lr + left * (args.lr - args.min_lr)


def train_step(model, optimizer, scaler, autocast, grad_clip, obs, act, g0):
    """One optimizer step on a batch of walks, every step of each predicted; returns the loss, left on
    the device (no sync)."""
    with autocast:
        logits = model(obs[:, :-1], act, g0)  # (B, walk_len, n_obs): every step at once
        loss = F.cross_entropy(logits.float().flatten(0, 1), obs[:, 1:].flatten())
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # float16: the loss scaled up so small gradients survive
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return loss.detach()


@torch.no_grad()
def evaluate(model, env, args, autocast):
    """WM and RM error on familiar and novel maps, on the same walks at every evaluation, under each
    of model.splits (the exact one; with segments the official release's too)."""
    model.eval()
    gen = torch.Generator(env.device).manual_seed(args.seed + 12345)
    out, ways = {}, splits(model.cfg, args.walk_len)
    for novel in (False, True):
        counts = dict.fromkeys(ways, 0)
        for i in range(0, args.eval_walks, args.batch_size):
            n = min(args.batch_size, args.eval_walks - i)
            obs, act, pos, _ = env.walk(n, args.walk_len, novel=novel, generator=gen)
            with autocast:
                logits = model(obs[:, :-1], act, model.random_g0(n, generator=gen, device=env.device))
            wrong = logits.float().argmax(-1) != obs[:, 1:]
            for name, (first, scored) in ways.items():
                counts[name] = counts[name] + memory_counts(wrong, pos, first, scored).sum(0)
        for name in ways:
            c = counts[name].tolist()
            pre = ("novel_" if novel else "") + name
            out[pre + "wm_error"] = c[0] / c[1] if c[1] else float("nan")  # nan: no such steps to judge
            out[pre + "rm_error"] = c[2] / c[3] if c[3] else float("nan")
    model.train()
    return out


def append_log(path, row):
    """One row of log.csv, with its header if the file is new."""
    try:
        new = not os.path.exists(path)
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, list(row))
            if new:
                w.writeheader()
            w.writerow(row)
    except OSError as e:
        die(f"cannot write {path} ({e.strerror}); ckpt.pt is saved")


# ---- what the loop says and writes ------------------------------------------------------------------

def first_step_done(args, device, t_log, say):
    """The time the first step ended; with compilation, how long it took."""
    if args.compile == "on":
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        say(f"compiled in {time.time() - t_log:.0f} s (the first step)", flush=True)
    return time.time()


def stopped_by_the_loss(loss, step, ckpt_path):
    """A loss that is nan or inf ends the run (exit status 1), its weights unsaved."""
    kept = f"the last good checkpoint is kept in {ckpt_path}" if os.path.exists(ckpt_path) else "no checkpoint was saved"
    print(f"train.py: the loss is {loss} near step {step}; stopped, and {kept}. Try a lower --lr", file=sys.stderr)
    sys.exit(1)


def save(path, old_log, ckpt):
    """Write ckpt.pt (checkpoint.save: whole or not at all); a fresh run's first save also removes the
    log.csv of the run it replaces (old_log). A failure ends the run with one line."""
    if old_log and os.path.exists(old_log):
        os.remove(old_log)
    try:
        checkpoint.save(path, ckpt)
    except OSError as e:
        die(f"cannot write {path} ({e.strerror}); the previous checkpoint, if any, is kept")


def said_at_start(args, argv, ckpt, model, world):
    """What is trained, on what, and how the errors read; and which preset this machine chose, if it did."""
    seen = f"segments of {args.segment}, memory {args.mem_len}" if args.segment else f"context {args.context}"
    chosen = ckpt is None and not any(a == "--preset" or a.startswith("--preset=") for a in argv)
    lines = [f"no preset given: using --preset {args.preset} ({'a GPU' if args.preset == 'paper' else 'no GPU'} "
             "here; pass --preset to choose)"] if chosen else []
    lines.append(f"{args.act} alpha={args.alpha:g} beta={args.beta:g} | {args.size}x{args.size} grid, {args.num_maps} "
                 f"maps, {args.arch} model, {seen} | {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters "
                 f"| {args.device} {args.dtype}{' compiled' if args.compile == 'on' else ''}"
                 f"{f' x{world} processes' if world > 1 else ''} | lr {args.lr:g}, {args.decay} after "
                 f"{args.warmup_iters} warm-up step{'' if args.warmup_iters == 1 else 's'}")
    lines.append(f"errors are arg-max error rates; chance is {1 - 1 / args.n_obs:.2f}. WM: the answer is in what the "
                 "prediction sees; RM: it is not")
    compiling = args.compile == "on" and (ckpt or {}).get("step", 0) < args.max_iters
    return "\n".join(lines + ["compiling the model (its first step)..."] * compiling)


def said_on_resume(args, ckpt, step, afresh):
    """Where a resumed run goes on, what could not be put back, and what a new --max_iters does."""
    said = (f"resuming {args.out_dir}/ckpt.pt at step {step} of {args.max_iters}" + (f"; {afresh}" if afresh else "")
            + ("" if step < args.max_iters else "; nothing more to train: give a larger --max_iters"))
    before = argparse.Namespace(**{**vars(args), "max_iters": ckpt["args"]["max_iters"]})
    if args.max_iters != before.max_iters and args.decay != "none" and step < args.max_iters:
        said += (f"\n--max_iters {before.max_iters} -> {args.max_iters}: the learning rate now falls to {args.min_lr:g} "
                 f"at step {args.max_iters}, so at step {step} it is {get_lr(step, args):.3g} "
                 f"(it would have been {get_lr(step, before):.3g})")
    return said


# ---- the settings' checks -------------------------------------------------------------------------

def check(args, given):
    """Every setting within its range; a message names the one flag at fault and its value."""
    if args.act not in ACTIVATIONS:
        die(f"--act {args.act!r} is unknown; choose from {', '.join(ACTIVATIONS)}")
    for k in ("n_layer", "n_head", "d_model", "d_ff", "d_rnn", "context", "walk_len", "batch_size", "max_iters",
              "eval_interval", "eval_walks"):
        if getattr(args, k) < 1:
            die(f"--{k} must be a positive integer (got {getattr(args, k)})")
    for k in ("alpha", "beta", "lr", "min_lr", "dropout", "grad_clip"):
        if not math.isfinite(getattr(args, k)):
            die(f"--{k} must be a finite number (got {getattr(args, k)})")
    ranges = [("alpha", 0 <= args.alpha <= 1e6, "in [0, 1e6]"), ("lr", args.lr > 0, "> 0"),
              ("min_lr", 0 <= args.min_lr <= args.lr, f"in [0, --lr {args.lr:g}]"),
              ("warmup_iters", args.warmup_iters >= 0, "a count >= 0"), ("dropout", 0 <= args.dropout < 1, "in [0, 1)"),
              ("grad_clip", args.grad_clip >= 0, ">= 0"), ("d_model", args.d_model % 2 == 0, "even"),
              ("segment", args.segment >= 0, "a count >= 0"), ("mem_len", args.mem_len >= 0, "a count >= 0")]
    for k, ok, allowed in ranges:
        if not ok:
            die(f"--{k} must be {allowed} (got {getattr(args, k)})")
    if args.warmup_iters > args.max_iters:
        die(f"--warmup_iters {args.warmup_iters} must be at most --max_iters {args.max_iters}: the rate would "
            "never reach --lr")
    try:  # the task's settings, checked by env.TaskConfig: its message starts with the setting's name
        configs(args)
    except ValueError as e:
        die(f"--{e}")
    if args.d_model % args.n_head:
        die(f"--n_head {args.n_head} must divide --d_model {args.d_model}")
    if args.mem_len and not args.segment:
        die(f"--mem_len {args.mem_len} needs --segment: a memory is of the segments before")
    if args.segment and "context" in given:
        die(f"--context {given['context']}: with segments a prediction sees its segment and --mem_len; give those")
    if args.qk_from_position and args.segment:
        die("--qk_from_position has no memory to attend to: use it with --arch tem and no --segment")
    if gpu.unavailable(args.device):
        die(gpu.unavailable(args.device))


def configs(args):
    """The task's and the model's settings (env.TaskConfig, model.ModelConfig) among the flags."""
    task = TaskConfig(**{f.name: getattr(args, f.name) for f in fields(TaskConfig)})
    model = {f.name: getattr(args, f.name) for f in fields(ModelConfig) if f.name not in ("n_obs", "n_actions")}
    return task, ModelConfig(n_obs=task.n_obs, n_actions=task.n_actions, **model)


def out_dir_ready(args, ckpt):
    """Never replace a run silently, and say where it cannot be written, before anything is trained."""
    path = os.path.join(args.out_dir, "ckpt.pt")
    if ckpt is None and os.path.exists(path) and not args.overwrite:
        die(f"{path} exists: pass --resume to continue it, --overwrite to replace it, or another --out_dir")
    try:
        os.makedirs(args.out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out_dir):
            pass
    except OSError as e:
        die(f"--out_dir {args.out_dir}: cannot write there ({e.strerror})")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ntrain.py: interrupted again: the step in progress was not saved", file=sys.stderr)
        sys.exit(130)
