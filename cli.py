"""
What the scripts' command lines share: the presets, train.py's settings for a GPU and for a CPU
(bench.py times them), and the one-line error for bad input.
"""

import os
import sys

# Preset values fill every preset flag of train.py that the command line leaves unset.
PRESETS = {
    # The paper's task and model (Kim et al. 2023; the official release's sizes), for one GPU.
    # One pass trains every step of a 128-step walk: 256 walks are 32,768 predictions a step, 64
    # times an official step, so the learning rate is 10x the official 1e-4 (RESULTS.md, paper scale).
    "paper": dict(size=11, n_obs=10, num_maps=32, n_layer=2, n_head=8, d_model=512, d_ff=2048,
                  d_rnn=128, context=64, walk_len=128, batch_size=256, lr=1e-3, warmup_iters=200,
                  decay="cosine", dropout=0.1, max_iters=20000, eval_interval=500, eval_walks=512),
    # For a 2-core CPU, minutes: a 7x7 grid, 4 maps, a narrow model and a short context (so that
    # a third of the steps are reference-memory steps). RESULTS.md says how it was tuned.
    "small": dict(size=7, n_obs=10, num_maps=4, n_layer=2, n_head=4, d_model=64, d_ff=256,
                  d_rnn=32, context=16, walk_len=64, batch_size=32, lr=5e-3, warmup_iters=200,
                  decay="cosine", dropout=0.0, max_iters=4500, eval_interval=250, eval_walks=256),
}

# --arch xl: the official release's segments, 32 steps with 32 of memory (its tgt_len and mem_len); on
# the small grid 8 and 8, so that a prediction sees at most 16 observations directly, as context 16.
XL = {"paper": dict(segment=32, mem_len=32), "small": dict(segment=8, mem_len=8)}

# What a run made before --arch existed was: TEM-t, without any of the official release's differences.
BEFORE_ARCH = dict(arch="tem", rel_lags=False, obs_attend=False, segment=0, mem_len=0, official_init=False)


def auto_preset(device):
    """--preset auto: the paper's on a GPU, else the small one."""
    return "paper" if device.startswith("cuda") else "small"


def die(prog, msg):
    """Bad input: `prog: error: msg` on stderr, one line, and exit status 2. Under torchrun (which
    sets RANK) every process reads the same flags and would say the same: process 0 alone says it."""
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"{prog}: error: {msg}", file=sys.stderr)
    sys.exit(2)
