"""
What the machine can do, for train.py and bench.py: the precision and compilation that suit a GPU,
the devices and the data-parallel processes torchrun starts, and MFU: a GPU's peak FLOP/s and the
model's FLOPs a step. One rule each, so that both scripts choose alike.
"""

import math
import os
import re
from contextlib import nullcontext

import torch
import torch.distributed as dist

from model import attention_mask, n_lags


def auto_settings(capability):
    """(dtype, compile) for a GPU of compute capability (major, minor), or for the CPU (None).

    bfloat16 needs sm_80 (Ampere, Hopper and on) to run natively; older cards (V100 sm_70, T4 sm_75)
    only emulate it, and inductor refuses to compile it there, so they get float16 with loss scaling
    (train.py's GradScaler). torch.compile (inductor's Triton kernels) wants sm_70 or newer. On a CPU,
    float32 and no compilation: bf16 is slower there, and compiling costs more than it saves in a
    run of minutes."""
    if capability is None:
        return "float32", "off"
    dtype = "bfloat16" if capability >= (8, 0) else "float16"
    return dtype, "on" if capability >= (7, 0) else "off"


def capability(device):
    """The compute capability (major, minor) of a CUDA device, None for the CPU."""
    device = torch.device(device)
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


def autocast(device, dtype):
    """The context the forward passes run in: autocast to dtype ('bfloat16', 'float16'), or nothing in float32."""
    return nullcontext() if dtype == "float32" else torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


def allow_tf32():
    """float32 matrix multiplies on tensor cores (TF32, sm_80 on): a 10-bit mantissa for the
    products, float32 range and accumulation; several times faster than true float32."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# Dense peak FLOP/s from NVIDIA's data sheets: (16-bit tensor cores, 32-bit: TF32 where the card
# has it, plain float32 where not). The first name found in the device's name as whole words wins
# ("A100" in "A100-SXM4-80GB", not in "RTX A1000"): PCIe and NVL parts before the SXM part of the
# same name.
PEAK_FLOPS = {
    "H100 PCIe": (756e12, 378e12), "H100 NVL": (835e12, 418e12), "H100": (989e12, 495e12),
    "H200 NVL": (835e12, 418e12), "H200": (989e12, 495e12),
    "A100": (312e12, 156e12), "V100": (125e12, 15.7e12), "T4": (65e12, 8.1e12),
}


def peak_flops(device, dtype="bfloat16"):
    """The dense peak FLOP/s of the GPU `device` at `dtype` ('float32' counts TF32 where the card has
    it), or None: a CPU, or a GPU not in PEAK_FLOPS."""
    if torch.device(device).type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peaks = next((v for k, v in PEAK_FLOPS.items() if re.search(rf"\b{re.escape(k)}\b", name)), None)
    return peaks and peaks[1 if dtype == "float32" else 0]


def distributed(batch_size, device):
    """(ddp, rank, world, device): under torchrun (which sets RANK), join the other processes, one GPU
    each (NCCL) or CPU processes (gloo); else a single process. Raises ValueError, naming the flag, on
    a batch the processes cannot share or more processes than GPUs."""
    if int(os.environ.get("RANK", -1)) == -1:
        return False, 0, 1, device
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if batch_size % world:
        raise ValueError(f"--batch_size {batch_size} must be divisible by the {world} processes")
    if device.startswith("cuda"):
        local, here = int(os.environ["LOCAL_RANK"]), int(os.environ["LOCAL_WORLD_SIZE"])  # process 0 sees it too
        if here > torch.cuda.device_count():
            raise ValueError(f"torchrun --nproc_per_node: {here} processes, but {torch.cuda.device_count()} GPU(s) "
                             "here; give at most one process per GPU")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return True, rank, world, device


def unavailable(device):
    """Why `device` (cpu, cuda, cuda:1, ...) cannot be used here, as one line naming --device; None if it can."""
    if device == "cpu":
        return None
    try:
        d = torch.device(device)
    except RuntimeError:
        d = None
    if d is None or d.type != "cuda" or not torch.cuda.is_available():
        return f"--device {device!r} is not available here; use auto or cpu"
    if (d.index or 0) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        return f"--device {device!r}: this machine has {n} GPU(s), cuda:0 to cuda:{n - 1}"
    return None


def flops_per_step(cfg, batch, T):
    """Model FLOPs of one training step on `batch` walks of T predictions: forward + backward, counted
    as 3x the forward's matrix multiplies (2 FLOPs per multiply-add), as in the PaLM/nanoGPT MFU
    estimate. Attention counts only the pairs the mask lets through (q.k and the weighted sum of v);
    the last block computes the query tokens alone. With segments, as computed: the last one filled
    out, the memory's keys and values made anew in every segment (as the official release does), and
    g where each segment starts found once without gradient."""
    d = cfg.d_model
    S = cfg.segment or T
    K, M = math.ceil(T / S), cfg.mem_len if cfg.segment else 0
    mask = attention_mask(cfg, S, K)  # (K, 2S, M+2S)
    keys, macs = K * (M + 2 * S), 0  # the tokens each block makes keys and values of
    for last in [False] * (cfg.n_layer - 1) + [True]:
        seen = mask[:, S:] if last else mask  # the rows attention computes, True where a pair is seen
        macs += keys * (d // 2 if cfg.qk_from_position else d) * 3 * d  # q, k, v (qk_from_position: from halves)
        macs += 2 * int(seen.sum()) * d  # q.k and the weighted sum of v, over the pairs seen
        if cfg.rel_lags:  # q against every lag's r_emb
            macs += seen.shape[0] * seen.shape[1] * n_lags(cfg) * d
        tokens = K * S if last else 2 * K * S
        macs += tokens * d * d + 2 * tokens * d * cfg.d_ff  # the projection and the feed-forward
    # path integration as computed: every step multiplies by all n_actions matrices; and g_proj
    macs += K * S * cfg.n_actions * cfg.d_rnn ** 2 + K * (S + 1) * cfg.d_rnn * d // 2
    starts = 2 * K * S * cfg.n_actions * cfg.d_rnn ** 2 if cfg.segment else 0  # forward only
    return (3 * 2 * (macs + K * S * d * cfg.n_obs) + starts) * batch  # + read-out
