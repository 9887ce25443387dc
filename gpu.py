"""
What the machine can do, for train.py and bench.py: the precision and compilation that suit a GPU,
and its peak FLOP/s for MFU. One rule each, so that both scripts choose alike.
"""

import re

import torch


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
