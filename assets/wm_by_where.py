"""
Working-memory error of a segment model split by where the answer lies: in the prediction's own
segment, or only in the memory of earlier observations (RESULTS.md, the ablation's segments).

    python assets/wm_by_where.py RUN [RUN ...]     # run folders of train.py with --segment

On 2,048 walks of 64 steps on the familiar maps: "segment", the steps whose node was visited
within the segment up to the prediction; "memory only", visited within what the prediction sees
(model.reach) but not in the segment; "RM", the rest.
"""
import os, sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import analyze  # noqa: E402
from env import visited_since  # noqa: E402
from memory import draw_walks  # noqa: E402
from model import reach  # noqa: E402

torch.set_num_threads(1)
for run in sys.argv[1:]:
    model, env, _ = analyze.load_run(run, "cpu")
    S, T = model.cfg.segment, 64
    if not S:
        sys.exit(f"{run}: not a segment model (train.py --segment)")
    gen = torch.Generator().manual_seed(0)
    wrong_seen = torch.zeros(3, 2)  # rows: segment, memory only, RM; columns: wrong, steps
    with torch.no_grad():
        for _ in range(8):
            obs, act, pos, _ = draw_walks(env, 256, T, gen)
            wrong = model(obs[:, :T], act, model.random_g0(256, gen)).argmax(-1) != obs[:, 1:]
            in_segment = visited_since(pos, torch.arange(T) // S * S)
            in_reach = visited_since(pos, reach(model.cfg, T))
            for i, where in enumerate([in_segment, in_reach & ~in_segment, ~in_reach]):
                wrong_seen[i] += torch.tensor([(wrong & where).sum(), where.sum()])
    err = wrong_seen[:, 0] / wrong_seen[:, 1]
    print(f"{run}: WM error, answer in the segment {err[0]:.3f} ({int(wrong_seen[0, 1])} steps), "
          f"in the memory only {err[1]:.3f} ({int(wrong_seen[1, 1])}); RM error {err[2]:.3f} ({int(wrong_seen[2, 1])})")
