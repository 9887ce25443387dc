"""
A run's checkpoint, ckpt.pt, read back: the file loaded without running any code it may carry, and
the task's and the model's settings rebuilt from it. train.py (--resume) and analyze.py read
checkpoints through here alone, so that both accept and refuse the same files for the same reasons.

ckpt.pt holds "model" (the weights), "task_config" (env.TaskConfig), "model_config"
(model.ModelConfig), "args" (every flag of train.py), "step", and what --resume needs to go on
exactly (RESUME_KEYS). The official release's checkpoint.pt is read as one of ours (official.as_run).
"""

from dataclasses import asdict, fields

import torch

import official
from env import TaskConfig
from model import ModelConfig

# What a checkpoint needs to be analysed, and to be resumed.
ANALYSIS_KEYS = {"model", "model_config", "args", "step"}
RESUME_KEYS = ANALYSIS_KEYS | {"optimizer", "scaler", "loss_sum", "n_loss", "elapsed_s", "rng"}

# What a run made before a setting existed did, for the settings that came later (a setting added
# since, whose default is what runs did before it, needs no entry here).
OLDER = dict(warmup_iters=0, decay="none",  # before the learning-rate schedule: a constant rate
             arch="tem", rel_lags=False, obs_attend=False, segment=0, mem_len=0, official_init=False,  # before --arch
             walk="uniform")  # before the walk's rule was a setting


def load(path):
    """The file's contents, read with torch.load's weights_only: tensors, plain values and the few
    numpy types an official checkpoint holds (official.ALLOWED), no code run. An official checkpoint
    comes back as one of ours. Raises on a file that is truncated, not a torch file, or carries code."""
    with torch.serialization.safe_globals(official.ALLOWED):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    return official.as_run(ckpt) if official.is_official(ckpt) else ckpt


def upgrade(args):
    """A checkpoint's flags as today's: a task setting it predates takes its default (a new task
    setting's default is what runs did before it), any other it predates takes OLDER's value."""
    return {**asdict(TaskConfig()), **OLDER, **args}


def configs(ckpt):
    """(TaskConfig, ModelConfig) of a checkpoint. A checkpoint from before task_config existed takes
    its task from its flags (args); a setting a checkpoint lacks takes OLDER's value, else the
    default. Raises ValueError, naming it, on a setting this code does not know: such a run was made
    by other code, and is never read as if the setting were absent."""
    task = ckpt.get("task_config")
    if task is None:  # a checkpoint from before task_config: every task setting but OLDER's was a flag
        args = ckpt["args"]
        missing = [f.name for f in fields(TaskConfig) if f.name not in args and f.name not in OLDER]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}: neither task_config nor the flags give its task")
        task = {f.name: args[f.name] for f in fields(TaskConfig) if f.name in args}
    return rebuild(TaskConfig, task, "task"), rebuild(ModelConfig, ckpt["model_config"], "model")


def rebuild(cls, saved, what):
    """cls(**saved), a setting missing from saved taken from OLDER (else cls's default)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(f"its {what} setting {unknown[0]!r} is unknown to this code ({cls.__name__} has no such "
                         "field): the run was made by other code")
    return cls(**{**{k: v for k, v in OLDER.items() if k in known}, **saved})

