"""
Train the transformer of model.py on the grid task of env.py.

    python train.py --act nmda --alpha 10            # CPU: the small preset, GPU: the paper's
    python train.py --preset paper --act gelu --out_dir out/gelu
    python train.py --out_dir out --resume            # go on from out/ckpt.pt
    torchrun --standalone --nproc_per_node=2 train.py ...   # data-parallel over 2 processes

Every interval it prints and appends to out_dir/log.csv the training loss and the error rates on
working-memory (WM) and reference-memory (RM) steps, on familiar and on novel maps, and saves
out_dir/ckpt.pt. Ctrl-C finishes the step in progress, saves, and exits; --resume then continues
the same run, bit for bit on a CPU.
"""

import argparse
import csv
import math
import os
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, fields
from functools import partial

if __name__ == "__main__" and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C while torch loads: exit 130 at once, no traceback

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: E402

import checkpoint  # noqa: E402
import cli  # noqa: E402
import gpu  # noqa: E402
from cli import PRESETS, XL  # noqa: E402  the paper's settings, and the small ones for a CPU
from env import Batches, GridWorld, TaskConfig, memory_counts  # noqa: E402
from model import Model, ModelConfig  # noqa: E402
from nmda import ACTIVATIONS  # noqa: E402

# A resumed run keeps its checkpoint's settings but for those of the machine it now runs on and of
# where it now lives (MINE, the command line's or the defaults), and may be given anew how long it
# runs and how often it logs.
MINE = ("device", "dtype", "compile", "out_dir", "resume", "overwrite")
NEW_ON_RESUME = MINE + ("max_iters", "eval_interval")


die = partial(cli.die, "train.py")  # bad input: one line on stderr, exit status 2


# ---- settings -----------------------------------------------------------------------------------

def parser(only_given=False):
    """train.py's flags. With only_given, parse_args returns the flags on the command line alone: an
    unset flag is left out (argparse.SUPPRESS), not set to its default."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                argument_default=argparse.SUPPRESS if only_given else None)
    p.error = die  # argparse's own complaints: one line, exit 2

    def add(flag, default=None, **kw):  # its help ends with its default, or with the presets' values
        name = flag[2:]
        if name in PRESETS["small"]:
            values = [f"{k} {v[name]:g}" if isinstance(v[name], float) else f"{k} {v[name]}"
                      for k, v in PRESETS.items()]
            kw["help"] += f" (presets: {', '.join(values)})"
        elif default is not None:
            kw["help"] += f" (default: {default})"
        if default is not None and not only_given:
            kw["default"] = default
        p.add_argument(flag, **kw)

    add("--preset", choices=["auto", *PRESETS], default="auto",
        help="paper: the paper's settings, for one GPU; small: for a 2-core CPU; auto: paper on a GPU, else small")
    add("--act", default="nmda", help=f"feed-forward activation: {', '.join(ACTIVATIONS)}")
    add("--alpha", type=float, default=10.0, help="NMDA alpha, the Mg2+ block ([Mg2+]/3.57mM); 0 = linear; for an "
                                                   "activation that learns alpha, its starting value")
    add("--beta", type=float, default=1.0, help="NMDA beta, the steepness of the gate")
    add("--tem_t", action="store_true",
        help="TEM-t attention: q, k from the position embedding, v from the sensory half of the normalised stream")
    for f in fields(TaskConfig):  # the task: a flag for each of its settings
        add(f"--{f.name}", type=f.type, default=f.default, **{"help": "a task setting (env.TaskConfig)", **f.metadata})
    add("--arch", choices=["tem", "xl"], default="tem",
        help="tem: TEM-t as model.py describes it; xl: the official release's Transformer-XL, all four of "
             "--rel_lags, --obs_attend, --official_init and --segment with --mem_len, from the preset")
    add("--rel_lags", action="store_true", help="learnable relative-lag terms in attention (the official's)")
    add("--obs_attend", action="store_true", help="observation tokens attend to earlier observations too")
    add("--official_init", action="store_true", help="normal(0, 0.02) init, input dropout and a read-out bias")
    add("--segment", type=int, help="> 0: walks run in segments of this many steps, g and memory carried "
                                    "without gradient (default: 0; with --arch xl, the preset's: paper 32, small 8)")
    add("--mem_len", type=int, help="with --segment: earlier observation tokens every token attends to "
                                    "(default: 0; with --arch xl, the preset's: paper 32, small 8)")
    add("--n_layer", type=int, help="transformer blocks")
    add("--n_head", type=int, help="attention heads")
    add("--d_model", type=int, help="token width, half position and half sensory")
    add("--d_ff", type=int, help="feed-forward hidden units")
    add("--d_rnn", type=int, help="size of the position vector g")
    add("--context", type=int, help="past observations a prediction may attend to")
    add("--dropout", type=float, help="dropout after attention and feed-forward")
    add("--walk_len", type=int, help="steps per training walk; every step is a prediction")
    add("--batch_size", type=int, help="walks per optimizer step (global, over all processes)")
    add("--lr", type=float, help="Adam's peak learning rate")
    add("--warmup_iters", type=int, help="steps of linear warm-up from 0 to --lr, at most --max_iters; in a run "
                                          "no longer than its preset's warm-up, a tenth of its steps")
    add("--decay", choices=["cosine", "linear", "none"],
        help="after the warm-up the rate falls to --min_lr at --max_iters along a cosine or a line, or stays")
    add("--min_lr", type=float, default=0.0, help="the rate at --max_iters")
    add("--grad_clip", type=float, default=0.25, help="gradient-norm clip, 0: off")
    add("--max_iters", type=int, help="optimizer steps")
    add("--eval_interval", type=int, help="steps between evaluations, log lines and checkpoints")
    add("--eval_walks", type=int, help="walks per evaluation, familiar and novel each")
    add("--device", default="auto", help="auto (cuda if present, else cpu), cpu, cuda, cuda:1, ...")
    add("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
        help="autocast precision; auto: bfloat16 on a GPU of sm_80 or newer, float16 (loss-scaled) on older ones, "
             "float32 on a CPU")
    add("--compile", default="auto", choices=["auto", "on", "off"], help="torch.compile; auto: on for a GPU")
    add("--out_dir", default="out", help="where ckpt.pt and log.csv go")
    add("--resume", action="store_true", help="continue out_dir/ckpt.pt; --max_iters, --eval_interval, --device, "
                                             "--dtype and --compile may be given anew")
    add("--overwrite", action="store_true", help="start afresh even if out_dir/ckpt.pt exists")
    return p


def settle(argv):
    """The run's settings and the checkpoint to resume (or None). One rule decides every setting:
        a flag on the command line  >  the checkpoint's (with --resume)  >  the preset's  >  the default,
    where a resumed run takes none of MINE from its checkpoint, and 'auto' is then decided for this
    machine. Every value is checked before anything is said about --out_dir."""
    defaults = vars(parser().parse_args([]))
    given = vars(parser(only_given=True).parse_args(argv))  # the flags on the command line, and only them
    out_dir = given.get("out_dir", defaults["out_dir"])
    ckpt = load_checkpoint(os.path.join(out_dir, "ckpt.pt")) if given.get("resume") else None
    saved = {}  # the checkpoint's settings
    if ckpt is not None:
        saved = {k: v for k, v in checkpoint.upgrade(ckpt["args"]).items() if k not in MINE}
        fixed = sorted(k for k in given.keys() - NEW_ON_RESUME if given[k] != saved.get(k))
        if fixed:
            die(f"--{fixed[0]} cannot change when resuming: {out_dir}/ckpt.pt keeps its own settings "
                f"(--{fixed[0]} {saved.get(fixed[0])}); start a new --out_dir to change it")
    cuda = torch.cuda.is_available()
    device = given.get("device", defaults["device"])
    device = ("cuda" if cuda else "cpu") if device == "auto" else device
    preset = {**defaults, **saved, **given}["preset"]
    chosen = preset == "auto"  # by this machine: said below
    preset = cli.auto_preset(device) if chosen else preset
    args = argparse.Namespace(**{**defaults, **PRESETS[preset], **saved, **given, "device": device,
                                 "preset": preset})
    if args.arch == "xl":  # the official release's model: its four differences, the segments of the preset
        args.rel_lags = args.obs_attend = args.official_init = True
        args.segment = XL[preset]["segment"] if args.segment is None else args.segment
        args.mem_len = (XL[preset]["mem_len"] if args.segment else 0) if args.mem_len is None else args.mem_len
    args.segment, args.mem_len = args.segment or 0, args.mem_len or 0
    if ckpt is None and "warmup_iters" not in given and args.warmup_iters >= args.max_iters:
        args.warmup_iters = args.max_iters // 10  # a quick run: the preset's warm-up shrinks with it
    if args.segment and "context" in given:
        die(f"--context {given['context']}: with segments a prediction sees its segment and --mem_len; give those")
    check(args, cuda)
    dtype, compile_ = gpu.auto_settings(gpu.capability(args.device))
    args.dtype = dtype if args.dtype == "auto" else args.dtype
    args.compile = compile_ if args.compile == "auto" else args.compile

    ckpt_path = os.path.join(args.out_dir, "ckpt.pt")
    if ckpt is None and os.path.exists(ckpt_path) and not args.overwrite:
        die(f"{ckpt_path} exists: pass --resume to continue it, --overwrite to replace it, or another --out_dir")
    try:
        os.makedirs(args.out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=args.out_dir):
            pass
    except OSError as e:
        die(f"--out_dir {args.out_dir}: cannot write there ({e.strerror})")
    if chosen and int(os.environ.get("RANK", 0)) == 0:  # torchrun: process 0 alone says it
        print(f"no preset given: using --preset {args.preset} ({'a GPU' if args.preset == 'paper' else 'no GPU'} "
              "here; pass --preset to choose)")
    return args, ckpt


def check(args, cuda):
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
              ("warmup_iters", args.warmup_iters >= 0, "a count >= 0"),
              ("dropout", 0 <= args.dropout < 1, "in [0, 1)"), ("grad_clip", args.grad_clip >= 0, ">= 0"),
              ("d_model", args.d_model % 2 == 0, "even")]
    for k, ok, allowed in ranges:
        if not ok:
            die(f"--{k} must be {allowed} (got {getattr(args, k)})")
    try:  # the task's settings, checked by env.TaskConfig: its message starts with the setting's name
        task_config(args)
    except ValueError as e:
        die(f"--{e}")
    if args.warmup_iters > args.max_iters:
        die(f"--warmup_iters {args.warmup_iters} must be at most --max_iters {args.max_iters}: the rate would "
            "never reach --lr")
    if args.segment < 0 or args.mem_len < 0:
        die(f"--segment and --mem_len must be counts >= 0 (got {args.segment}, {args.mem_len})")
    if args.mem_len and not args.segment:
        die(f"--mem_len {args.mem_len} needs --segment: a memory is of the segments before")
    if args.tem_t and (args.segment or args.arch == "xl"):
        die("--tem_t has no segment memory: use it without --segment and --arch xl")
    if args.d_model % args.n_head:
        die(f"--n_head {args.n_head} must divide --d_model {args.d_model}")
    if args.device != "cpu":
        try:
            device = torch.device(args.device)
        except RuntimeError:
            device = None
        if device is None or device.type != "cuda" or not cuda:
            die(f"--device {args.device!r} is not available here; use auto or cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            die(f"--device {args.device!r}: this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1}")


def task_config(args):
    """The task's settings (env.TaskConfig) among the flags."""
    return TaskConfig(**{f.name: getattr(args, f.name) for f in fields(TaskConfig)})


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


# ---- checkpoints, evaluation, the step and the log ----------------------------------------------

def load_checkpoint(path):
    """A checkpoint of train.py that --resume can continue, read without running any code it may carry
    (checkpoint.load); anything else ends the run with one line that says what the file is."""
    if not os.path.isfile(path):
        die(f"--resume: no checkpoint at {path}")
    try:
        ckpt = checkpoint.load(path)
    except Exception as e:  # truncated, not a torch file, or carrying code (refused, never run)
        die(f"--resume: {path} is not a readable checkpoint of train.py ({type(e).__name__})")
    missing = sorted(checkpoint.ANALYSIS_KEYS - set(ckpt)) if isinstance(ckpt, dict) else ["model"]
    if missing:
        die(f"--resume: {path} is not a checkpoint of train.py (it lacks {', '.join(missing)})")
    try:
        checkpoint.configs(ckpt)
    except (ValueError, TypeError, KeyError) as e:
        die(f"--resume: {path}: {' '.join(str(e).split())}")
    if "official" in ckpt["args"]:
        die(f"--resume: {path} is the official release's checkpoint: analyze.py reads it, --resume cannot continue it")
    missing = sorted(checkpoint.RESUME_KEYS - set(ckpt))
    if missing:
        die(f"--resume: {path} holds the weights and settings alone (it lacks {', '.join(missing)}): analyze.py "
            "reads it, --resume cannot continue it")
    if not all(isinstance(ckpt[k], dict) for k in ("model", "args", "optimizer", "rng")):
        die(f"--resume: {path} is not a checkpoint of train.py (its parts are not what train.py writes)")
    return ckpt


def save_checkpoint(path, ckpt):
    """Write to a temporary file, flush it to the disk, then rename: a crash or a full disk at any
    moment leaves the previous ckpt.pt whole. A failure ends the run with one line."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(ckpt, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself reaches the disk
        finally:
            os.close(folder)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        die(f"cannot write {path} ({e.strerror}); the previous checkpoint, if any, is kept")


def rng_states(device, ddp, world):
    """Every process's random streams, gathered for rank 0's checkpoint: the CPU's (dropout on a CPU,
    the initial weights) and the GPU's."""
    mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if not ddp:
        return [mine]
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    return ranks


@torch.no_grad()
def evaluate(model, env, args, autocast):
    """WM and RM error on familiar and novel maps, on the same walks at every evaluation."""
    model.eval()
    gen = torch.Generator(env.device).manual_seed(args.seed + 12345)
    out = {}
    # exact: WM when the node is among the observations the prediction can see (Model.reach); with
    # segments also the official rule: each segment's last prediction, WM when in its segment or memory
    T = args.walk_len
    splits = {"": (model.reach(T), None)}
    if model.cfg.segment:
        splits["official_"] = (model.reach(T, direct=True), model.segment_ends(T))
    for novel in (False, True):
        counts = {name: 0 for name in splits}
        for i in range(0, args.eval_walks, args.batch_size):
            n = min(args.batch_size, args.eval_walks - i)
            obs, act, pos, _ = env.walk(n, T, novel=novel, generator=gen)
            with autocast:
                logits = model(obs[:, :-1], act, model.random_g0(n, generator=gen, device=env.device))
            wrong = logits.float().argmax(-1) != obs[:, 1:]
            for name, (first, scored) in splits.items():
                counts[name] = counts[name] + memory_counts(wrong, pos, first, scored).sum(0)
        for name in splits:
            c = counts[name].tolist()
            pre = ("novel_" if novel else "") + name
            out[pre + "wm_error"] = c[0] / c[1] if c[1] else float("nan")  # nan: no such steps to judge
            out[pre + "rm_error"] = c[2] / c[3] if c[3] else float("nan")
    model.train()
    return out


def train_step(model, optimizer, scaler, autocast, grad_clip, obs, act, g0):
    """One optimizer step on a batch of walks; returns the loss, left on the device (no sync)."""
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


def non_finite(loss, step, ckpt_path):
    """A loss that is nan or inf ends the run (exit status 1), its weights unsaved."""
    kept = (f"the last good checkpoint is kept in {ckpt_path}" if os.path.exists(ckpt_path)
            else "no checkpoint was saved")
    print(f"train.py: the loss is {loss} near step {step}; stopped, and {kept}. Try a lower --lr", file=sys.stderr)
    sys.exit(1)


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


def stop_now(signals, loss_sum, at_log, ddp, world):
    """Whether to stop after this step. A single process stops at the step a signal came in.
    Data-parallel processes decide together at a log line, all of them if any was signalled, in the
    all-reduce that also makes loss_sum (the interval's, in place) the mean of every process's: a
    process that stopped alone between log lines would leave the others waiting for it in the
    gradients' all-reduce."""
    if not ddp:
        return bool(signals)
    if not at_log:
        return False
    flags = torch.tensor([loss_sum.item(), len(signals)], dtype=torch.float64, device=loss_sum.device)
    dist.all_reduce(flags)
    loss_sum.fill_(flags[0].item() / world)
    return flags[1].item() > 0


def distributed(args):
    """(ddp, rank, world): under torchrun (which sets RANK) join the other processes, one GPU each
    (NCCL) or CPU processes (gloo); else a single process."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 1
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.batch_size % world:
        die(f"--batch_size {args.batch_size} must be divisible by the {world} processes")
    if args.device.startswith("cuda"):
        local, here = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])  # process 0 sees it too
        if here > torch.cuda.device_count():
            die(f"torchrun --nproc_per_node: {here} processes, but {torch.cuda.device_count()} GPU(s) here; "
                "give at most one process per GPU")
        args.device = f"cuda:{local}"
        torch.cuda.set_device(args.device)
    dist.init_process_group(backend="nccl" if args.device.startswith("cuda") else "gloo")
    return True, rank, world


def restore(ckpt, args, model, optimizer, scaler, batches, rank, world):
    """Put the model, the optimizer, the loss scale, the random streams and the stream of walks
    back where the checkpoint left them; say so. Returns (step, n_loss, elapsed_s)."""
    device = next(model.parameters()).device
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"] and scaler.is_enabled():  # a float16 run going on in float16: its loss scale
        scaler.load_state_dict(ckpt["scaler"])
    step = ckpt["step"]
    ran_on = torch.device(ckpt["rng"]["device"]).type  # random states are per device type
    streams = ckpt["rng"]["ranks"] if "ranks" in ckpt["rng"] else [ckpt["rng"]]  # one per process
    if ran_on == device.type:  # the walks, which every process draws alike, go on however many there are
        batches.load_state(ckpt["rng"]["walks"])
    if ran_on == device.type and len(streams) == world:  # and each process's own stream (dropout)
        torch.set_rng_state(streams[rank]["torch"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(streams[rank]["cuda"], device)
    if rank == 0:
        afresh = ""
        if ran_on != device.type:
            afresh = f"; on {device.type} (it ran on {ran_on}) the random streams start afresh"
        elif len(streams) != world:
            afresh = f"; on {world} process(es), not {len(streams)}, the dropout streams start afresh, the walks go on"
        print(f"resuming {args.out_dir}/ckpt.pt at step {step} of {args.max_iters}{afresh}"
              + ("" if step < args.max_iters else "; nothing more to train: give a larger --max_iters"))
        before = argparse.Namespace(**{**vars(args), "max_iters": ckpt["args"]["max_iters"]})
        if args.max_iters != before.max_iters and args.decay != "none" and step < args.max_iters:
            print(f"--max_iters {before.max_iters} -> {args.max_iters}: the learning rate now falls to {args.min_lr:g} "
                  f"at step {args.max_iters}, so at step {step} it is {get_lr(step, args):.3g} "
                  f"(it would have been {get_lr(step, before):.3g})")
    return step, ckpt["n_loss"], ckpt["elapsed_s"]


# ---- the script ---------------------------------------------------------------------------------

def main(argv=None):
    # Ctrl-C (or SIGTERM) only asks to stop: the step in progress ends, the run is saved as it
    # stands after it, and --resume goes on exactly from there. A second Ctrl-C stops at once.
    signals = []

    def request_stop(signum, frame):
        signals.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    handlers = {s: signal.signal(s, request_stop) for s in watched}  # an ignored signal stays ignored
    try:
        train(sys.argv[1:] if argv is None else argv, signals)
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def train(argv, signals):
    # ---- settings: flags, the checkpoint of a resumed run, presets
    args, ckpt = settle(argv)
    ckpt_path, log_path = os.path.join(args.out_dir, "ckpt.pt"), os.path.join(args.out_dir, "log.csv")

    # ---- setup: data-parallel processes (torchrun sets RANK), device, precision, seeds
    ddp, rank, world = distributed(args)
    master, device, ptdtype = rank == 0, torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda":
        gpu.allow_tf32()
    torch.manual_seed(args.seed)
    autocast = nullcontext() if ptdtype == torch.float32 else torch.autocast(device.type, dtype=ptdtype)

    # ---- model, optimizer and the stream of walks
    task = task_config(args)
    cfg = ModelConfig(**{f.name: getattr(args, f.name, f.default) for f in fields(ModelConfig)})
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
    scaler = torch.amp.GradScaler(device.type, enabled=ptdtype == torch.float16)  # float16 only

    # ---- init, or resume where the checkpoint left off
    step, loss_sum, n_loss, elapsed = 0, torch.zeros((), device=device), 0, 0.0
    if ckpt is not None:
        step, n_loss, elapsed = restore(ckpt, args, model, optimizer, scaler, batches, rank, world)
        loss_sum += ckpt["loss_sum"]
    raw_model = model
    if args.compile == "on":
        model = torch.compile(model, dynamic=False)  # training sees one shape; evaluation runs raw_model
    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    flops_per_step = raw_model.flops_per_step(args.batch_size, args.walk_len)
    peak = gpu.peak_flops(device, args.dtype)
    peak = peak and peak * world  # the GPUs of the global batch; None on a CPU
    if master:
        n_params = sum(p.numel() for p in raw_model.parameters())
        seen = (f"segments of {args.segment}, memory {args.mem_len}" if args.segment else f"context {args.context}")
        print(f"{args.act} alpha={args.alpha:g} beta={args.beta:g} | {args.size}x{args.size} grid, "
              f"{args.num_maps} maps, {args.arch} model, {seen} | {n_params / 1e6:.2f}M parameters | "
              f"{args.device} {args.dtype}{' compiled' if args.compile == 'on' else ''}"
              f"{f' x{world} processes' if ddp else ''} | lr {args.lr:g}, {args.decay} after {args.warmup_iters} "
              f"warm-up step{'' if args.warmup_iters == 1 else 's'}")
        print(f"errors are arg-max error rates; chance is {1 - 1 / args.n_obs:.2f}. WM: the answer is in the "
              "context; RM: it is not")

    # ---- the loop: a step; at a log line (every eval_interval steps, and the last) an evaluation, a
    # checkpoint and a line of log.csv; at a stop, a checkpoint
    if signals and not ddp:  # Ctrl-C while setting up (data-parallel: at the first log line, together)
        print("\ninterrupted before the first step: nothing was saved", file=sys.stderr)
        sys.exit(130)
    if args.compile == "on" and master and step < args.max_iters:
        print("compiling the model (its first step)...", flush=True)
    start_step, stop, steps_timed = step, False, 0  # steps_timed: since t_log
    t_start = t_log = time.time()  # the process's start; the last log line (or the end of compilation)
    retire_log = ckpt is None  # a fresh run's first checkpoint (a stop's too) retires the log it --overwrites
    while step < args.max_iters and not stop:
        lr = get_lr(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum += train_step(model, optimizer, scaler, autocast, args.grad_clip, *batches.next())
        step, n_loss, steps_timed = step + 1, n_loss + 1, steps_timed + 1
        if step == start_step + 1 and args.compile == "on":  # compilation stays out of ms/step and the ETA
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if master:
                print(f"compiled in {time.time() - t_log:.0f} s", flush=True)
            t_log, steps_timed = time.time(), 0
        at_log = step % args.eval_interval == 0 or step == args.max_iters
        stop = stop_now(signals, loss_sum, at_log, ddp, world)
        if at_log or stop:
            mean_loss = loss_sum.item() / n_loss  # the one host-device sync per interval
            if not math.isfinite(mean_loss):  # before any checkpoint: such weights are never saved
                non_finite(mean_loss, step, ckpt_path)
            if at_log:
                ms = (time.time() - t_log) * 1000 / max(steps_timed, 1)  # the steps alone
                loss_sum.zero_()
                n_loss = 0
                m = evaluate(raw_model, env, args, autocast) if master else None
            ranks = rng_states(device, ddp, world)  # every process's; rank 0 writes the checkpoint
            if master:
                if retire_log and os.path.exists(log_path):
                    os.remove(log_path)
                save_checkpoint(ckpt_path, dict(
                    model=raw_model.state_dict(), task_config=asdict(task), model_config=asdict(cfg), args=vars(args),
                    step=step,
                    optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), loss_sum=loss_sum.item(),
                    n_loss=n_loss, elapsed_s=elapsed + time.time() - t_start,
                    rng={"device": str(device), "walks": batches.state(), "ranks": ranks}))
            retire_log = False
            if at_log and master:
                interval_s = time.time() - t_log  # the steps, the evaluation and the checkpoint
                eta = interval_s / max(steps_timed, 1) * (args.max_iters - step) / 60
                mfu = f" | MFU {flops_per_step / (ms / 1000) / peak:.1%}" if peak else ""
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
        dist.barrier()
        dist.destroy_process_group()
    if stop and master:
        print(f"\ninterrupted: saved {ckpt_path} at step {step}; --resume goes on from there")
    if stop:
        sys.exit(130)
    if master:
        print(f"done: {ckpt_path} ({step} steps). Analyse it with: python analyze.py {args.out_dir}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("\ntrain.py: interrupted again: the step in progress was not saved", file=sys.stderr)
        sys.exit(130)
