"""
A run's checkpoint, and what keeps a run safe around it: ckpt.pt written whole or not at all, read
back without running any code it may carry, its settings rebuilt (an older checkpoint read as what
it was, a setting this code does not know refused), the random streams put back so that a resumed
run goes on bit for bit, and the stop (Ctrl-C, or the vote of data-parallel processes) that saves
one. train.py (--resume) and analyze.py read checkpoints through here alone, so that both accept
and refuse the same files for the same reasons. A reader of train.py's story can skip this file.

ckpt.pt holds "model" (the weights), "task_config" (env.TaskConfig), "model_config"
(model.ModelConfig), "args" (every flag of train.py), "step", and what --resume needs to go on
exactly (RESUME_KEYS). The official release's checkpoint.pt is read as one of ours (official.as_run).
"""

import os
import signal
from contextlib import contextmanager
from dataclasses import asdict, fields

import torch
import torch.distributed as dist

import official
from env import TaskConfig
from model import ModelConfig

# What a checkpoint needs to be analysed, and to be resumed.
ANALYSIS_KEYS = {"model", "model_config", "args", "step"}
RESUME_KEYS = ANALYSIS_KEYS | {"optimizer", "scaler", "loss_sum", "n_loss", "elapsed_s", "rng"}

# What a run made before a setting existed did, for the settings that came later (a setting added
# since, whose default is what runs did before it, needs no entry here), and the settings renamed.
OLDER = dict(warmup_iters=0, decay="none",  # before the learning-rate schedule: a constant rate
             arch="tem", rel_lags=False, obs_attend=False, segment=0, mem_len=0, official_init=False,  # before --arch
             walk="uniform")  # before the walk's rule was a setting
RENAMED = {"tem_t": "qk_from_position"}


# ---- reading a checkpoint ---------------------------------------------------------------------------

def load(path):
    """The file's contents, read with torch.load's weights_only: tensors, plain values and the few
    numpy types an official checkpoint holds (official.ALLOWED), no code run. An official checkpoint
    comes back as one of ours. Raises on a file that is truncated, not a torch file, or carries code."""
    with torch.serialization.safe_globals(official.ALLOWED):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return official.as_run(ckpt) if official.is_official(ckpt) else ckpt


def upgrade(args):
    """A checkpoint's flags as today's: in today's names; a task setting it predates takes its default
    (a new task setting's default is what runs did before it), any other it predates OLDER's value."""
    return {**asdict(TaskConfig()), **OLDER, **{RENAMED.get(k, k): v for k, v in args.items()}}


def configs(ckpt):
    """(TaskConfig, ModelConfig) of a checkpoint. A checkpoint from before task_config existed takes
    its task from its flags (args). Raises ValueError, naming it, on a setting this code does not
    know: such a run was made by other code, and is never read as if the setting were absent."""
    task = ckpt.get("task_config")
    if task is None:  # a checkpoint from before task_config: every task setting but OLDER's was a flag
        args = ckpt["args"]
        missing = [f.name for f in fields(TaskConfig) if f.name not in args and f.name not in OLDER]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}: neither task_config nor the flags give its task")
        task = {f.name: args[f.name] for f in fields(TaskConfig) if f.name in args}
    return rebuild(TaskConfig, task, "task"), rebuild(ModelConfig, ckpt["model_config"], "model")


def rebuild(cls, saved, what):
    """cls from a checkpoint's saved settings: in today's names, OLDER's value for one it predates."""
    known = {f.name for f in fields(cls)}
    saved = {RENAMED.get(k, k): v for k, v in saved.items()}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"its {what} setting {unknown[0]!r} is unknown to this code ({cls.__name__} has no such "
                         "field): the run was made by other code")
    return cls(**{**{k: v for k, v in OLDER.items() if k in known}, **saved})


def for_resume(path):
    """A checkpoint of train.py that --resume can continue. Raises ValueError with one line that says
    what the file is, for anything else."""
    if not os.path.isfile(path):
        raise ValueError(f"--resume: no checkpoint at {path}")
    try:
        ckpt = load(path)
    except Exception as e:  # truncated, not a torch file, or carrying code (refused, never run)
        raise ValueError(f"--resume: {path} is not a readable checkpoint of train.py ({type(e).__name__})")
    missing = sorted(ANALYSIS_KEYS - set(ckpt)) if isinstance(ckpt, dict) else ["model"]
    if missing:
        raise ValueError(f"--resume: {path} is not a checkpoint of train.py (it lacks {', '.join(missing)})")
    try:
        configs(ckpt)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"--resume: {path}: {' '.join(str(e).split())}")
    if "official" in ckpt["args"]:
        raise ValueError(f"--resume: {path} is the official release's checkpoint: analyze.py reads it, --resume "
                         "cannot continue it")
    missing = sorted(RESUME_KEYS - set(ckpt))
    if missing:
        raise ValueError(f"--resume: {path} holds the weights and settings alone (it lacks {', '.join(missing)}): "
                         "analyze.py reads it, --resume cannot continue it")
    if not all(isinstance(ckpt[k], dict) for k in ("model", "args", "optimizer", "rng")):
        raise ValueError(f"--resume: {path} is not a checkpoint of train.py (its parts are not what train.py writes)")
    return ckpt


# ---- writing one, and going on from it exactly --------------------------------------------------------

def save(path, ckpt):
    """Write to a temporary file, flush it to the disk, then rename: a crash or a full disk at any
    moment leaves the previous ckpt.pt whole. Raises OSError, the temporary file removed."""
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
    except OSError:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def rng_states(device, ddp, world):
    """Every process's random streams, gathered for rank 0's checkpoint: the CPU's (dropout on a CPU,
    the initial weights) and the GPU's."""
    mine = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    if not ddp:
        return [mine]
    ranks = [None] * world
    dist.all_gather_object(ranks, mine)
    return ranks


def restore(ckpt, model, optimizer, scaler, batches, rank, world):
    """Put the model, the optimizer, the loss scale, the random streams and the stream of walks back
    where the checkpoint left them. Returns what could not be put back, in words ('' if nothing):
    random states are per kind of device, and dropout's per process."""
    device = next(model.parameters()).device
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["scaler"] and scaler.is_enabled():  # a float16 run going on in float16: its loss scale
        scaler.load_state_dict(ckpt["scaler"])
    ran_on = torch.device(ckpt["rng"]["device"]).type
    streams = ckpt["rng"]["ranks"] if "ranks" in ckpt["rng"] else [ckpt["rng"]]  # one per process
    if ran_on != device.type:
        return f"on {device.type} (it ran on {ran_on}) the random streams start afresh"
    batches.load_state(ckpt["rng"]["walks"])  # the walks, which every process draws alike, go on
    if len(streams) != world:
        return f"on {world} process(es), not {len(streams)}, the dropout streams start afresh, the walks go on"
    torch.set_rng_state(streams[rank]["torch"])  # and each process's own stream (dropout)
    if device.type == "cuda":
        torch.cuda.set_rng_state(streams[rank]["cuda"], device)
    return ""


# ---- stopping: a signal asks, the step in progress ends, a checkpoint is saved -----------------------

@contextmanager
def stop_requests():
    """A list that collects SIGINT (Ctrl-C) and SIGTERM while the block runs: a signal only asks the
    run to stop after the step in progress, so that it saves where it stands and --resume goes on
    exactly from there. A second Ctrl-C stops at once. A signal ignored before stays ignored."""
    signals = []

    def request(signum, frame):
        signals.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
    handlers = {s: signal.signal(s, request) for s in watched}
    try:
        yield signals
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def vote_to_stop(signals, at_log, ddp):
    """Whether to stop after this step. A single process stops at the step a signal came in.
    Data-parallel processes decide together at a log line, all of them if any was signalled: a
    process that stopped alone between log lines would leave the others waiting for it in the
    gradients' all-reduce."""
    if not ddp:
        return bool(signals)
    if not at_log:
        return False
    votes = torch.tensor(float(len(signals)), dtype=torch.float64, device=dist_device())
    dist.all_reduce(votes)
    return votes.item() > 0


def mean_over_processes(x, ddp, world):
    """x, a number each process holds, averaged over the data-parallel processes (x itself alone)."""
    if not ddp:
        return x
    t = torch.tensor(x, dtype=torch.float64, device=dist_device())
    dist.all_reduce(t)
    return t.item() / world


def dist_device():
    """The device the process group's collectives run on: this process's GPU under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
