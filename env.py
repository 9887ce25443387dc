"""
The spatial navigation task of the NMDA paper (after TEM-t, Whittington et al. 2022).

An L x L grid; every node carries one of n_obs sensory tokens, drawn uniformly and independently.
One such assignment is a map. N familiar maps are drawn once from the seed and kept for the whole
run (reference memory can learn them); novel maps are drawn fresh for every walk from the walk's
random stream and never trained on.

A random walk moves at every step along one of the legal moves, drawn with the weights of its rule
(WALKS). The paper's rule, "uniform", draws uniformly from {stay} + grid neighbours, so a corner
stays with probability 1/3, an edge node 1/4, an interior node 1/5. With n_actions = 4 there is no
"stay" and the move is uniform over the neighbours.

Node index = row * size + column; row 0 is the top (north) row.

TaskConfig holds every setting of the task. train.py makes a flag of each field and saves the
config whole in ckpt.pt; analyze.py, memory.py and bench.py build the task from it alone.
"""

from dataclasses import dataclass, field

import torch

# (d_row, d_col) of each action. With 5 actions: 0 stay, 1 east, 2 south, 3 north, 4 west.
MOVES = ((0, 0), (0, 1), (1, 0), (-1, 0), (0, -1))
ACTION_NAMES = ("stay", "east", "south", "north", "west")

# The walk's rules: a rule gives each move at each node its weight, (n_nodes, n_actions), and a
# move is drawn with probability weight / (sum of the node's weights). A weight must be 0 where the
# move leaves the grid (env.next_node < 0). The ideal observer (memory.py) reads the same weights.
WALKS = {
    "uniform": lambda env: (env.next_node >= 0).float(),  # every legal move alike: the paper's walk
}


def setting(default, help, **flag):
    """A field of TaskConfig: its default, and the help (and argparse options) of its flag in train.py."""
    return field(default=default, metadata=dict(help=help, **flag))


@dataclass
class TaskConfig:
    """The task's settings, the paper's by default. A field added here becomes a flag of train.py,
    is saved in every checkpoint and reaches the analysis. Its default must be what runs did before
    it existed: checkpoints made before it are read with the default."""
    size: int = setting(11, "grid side length L")
    n_obs: int = setting(10, "number of sensory tokens")
    num_maps: int = setting(32, "number of familiar maps N")
    n_actions: int = setting(5, "5: stay + 4 moves; 4: moves only", choices=[4, 5])
    walk: str = setting("uniform", "the walk's rule, a name in env.WALKS: " + ", ".join(WALKS))
    seed: int = setting(0, "seed of the familiar maps (train.py: also of the walks and the weights)")

    def __post_init__(self):
        """Every setting in its range; the message starts with the setting's name."""
        for name, ok, allowed in (("size", self.size >= 2, "at least 2: a grid of 1 node has nowhere to go"),
                                  ("n_obs", self.n_obs >= 2, "at least 2"), ("num_maps", self.num_maps >= 1, "at least 1"),
                                  ("n_actions", self.n_actions in (4, 5), "4 or 5"),
                                  ("walk", self.walk in WALKS, f"one of {', '.join(WALKS)}")):
            if not ok:
                raise ValueError(f"{name} must be {allowed} (got {getattr(self, name)!r})")


class GridWorld:
    def __init__(self, cfg=None, device="cpu"):
        cfg = cfg or TaskConfig()
        self.cfg = cfg
        self.size, self.n_obs, self.num_maps, self.n_actions = cfg.size, cfg.n_obs, cfg.num_maps, cfg.n_actions
        self.n_nodes = cfg.size * cfg.size
        self.device = torch.device(device)
        self.action_names = ACTION_NAMES[5 - cfg.n_actions:]
        self.moves = MOVES[5 - cfg.n_actions:]  # (d_row, d_col) of each action index

        # The familiar maps: a pure function of the seed, so a checkpoint's config rebuilds them.
        g = torch.Generator().manual_seed(cfg.seed)
        self.maps = torch.randint(cfg.n_obs, (cfg.num_maps, self.n_nodes), generator=g).to(self.device)

        # next_node[node, action] = the node the action leads to, or -1 where it leaves the grid.
        row, col = torch.arange(self.n_nodes) // cfg.size, torch.arange(self.n_nodes) % cfg.size
        nxt = []
        for dr, dc in self.moves:
            r, c = row + dr, col + dc
            inside = (r >= 0) & (r < cfg.size) & (c >= 0) & (c < cfg.size)
            nxt.append(torch.where(inside, r * cfg.size + c, -1))
        self.next_node = torch.stack(nxt, 1).to(self.device)  # (n_nodes, n_actions)
        # the weight of each move at each node, from the walk's rule: 0 where it leaves the grid
        self.move_weights = WALKS[cfg.walk](self).float().to(self.device)  # (n_nodes, n_actions)
        if ((self.move_weights > 0) & (self.next_node < 0)).any() or not (self.move_weights.sum(1) > 0).all():
            raise ValueError(f"walk {cfg.walk!r}: a rule must weigh no move off the grid, and some move at every node")

        # The default stream of walks (training); pass your own generator for anything else.
        self.generator = torch.Generator(self.device).manual_seed(cfg.seed + 1)

    def walk(self, batch, steps, novel=False, map_id=None, generator=None):
        """Random walks of `steps` moves, all batch elements at once.

        Returns obs (B, steps+1), act (B, steps), pos (B, steps+1), map_id (B,) with obs[:, t]
        the token at pos[:, t] and act[:, t] the move from pos[:, t] to pos[:, t+1].
        For novel walks every walk gets its own fresh map and map_id is -1.
        map_id (an int or a (B,) tensor) fixes the familiar map of every walk."""
        g = self.generator if generator is None else generator
        dev = self.device
        if novel:
            maps = torch.randint(self.n_obs, (batch, self.n_nodes), generator=g, device=dev)
            map_id = torch.full((batch,), -1, device=dev)
        else:
            if map_id is None:
                map_id = torch.randint(self.num_maps, (batch,), generator=g, device=dev)
            map_id = torch.as_tensor(map_id, device=dev).expand(batch).clone()
            maps = self.maps[map_id]  # (B, n_nodes)
        pos = torch.empty(batch, steps + 1, dtype=torch.long, device=dev)
        pos[:, 0] = torch.randint(self.n_nodes, (batch,), generator=g, device=dev)
        # A weighted draw (Efraimidis & Spirakis 2006): the move of largest u ** (1 / weight), u uniform
        # in [0, 1), is move i with probability weight_i / sum(weights). With equal weights it is the
        # arg-max of u; u itself stands where the weight is 1, so that the uniform walk is bit for bit
        # the same on any device, whatever its pow rounds.
        u = torch.rand(batch, steps, self.n_actions, generator=g, device=dev)
        act = torch.empty(batch, steps, dtype=torch.long, device=dev)
        for t in range(steps):  # a loop over time, never over the batch
            w = self.move_weights[pos[:, t]]  # (B, n_actions)
            key = torch.where(w == 1, u[:, t], u[:, t] ** (1 / w))
            act[:, t] = key.masked_fill(w == 0, -1.0).argmax(-1)
            pos[:, t + 1] = self.next_node[pos[:, t]].gather(1, act[:, t, None]).squeeze(1)
        obs = maps.gather(1, pos)  # (B, steps+1)
        return obs, act, pos, map_id


def visited_since(pos, first):
    """(B, steps) bool: True where pos[:, t+1] is among pos[:, first[t] : t+1], first (steps,) a tensor:
    the first observation each step's prediction sees (model.reach).

    These are the working-memory (WM) steps: the answer is among the observations the prediction can
    see. The others are reference-memory (RM) steps: only what the weights learned about the map can
    answer them."""
    target = pos[:, 1:]  # (B, steps)
    T = target.shape[1]
    back = torch.arange(T) - first.cpu()  # how far back step t sees
    seen = torch.zeros_like(target, dtype=torch.bool)
    for lag in range(int(back.max()) + 1 if T else 0):
        # compare pos[:, t+1] with pos[:, t-lag] wherever t-lag >= first[t]
        seen[:, lag:] |= (target[:, lag:] == pos[:, : T - lag]) & (back[lag:] >= lag).to(pos.device)
    return seen


def memory_counts(wrong, pos, first, scored=None):
    """Per walk, (B, 4): [wrong on WM steps, WM steps, wrong on RM steps, RM steps], from
    wrong (B, steps), True where a prediction of pos[:, t+1]'s observation was wrong; first as in
    visited_since; scored (steps,) bool: the steps counted (None: all)."""
    wm = visited_since(pos, first)
    rm = ~wm
    if scored is not None:
        wm, rm = wm & scored.to(pos.device), rm & scored.to(pos.device)
    return torch.stack([(wrong & wm).sum(1), wm.sum(1), (wrong & rm).sum(1), rm.sum(1)], 1)


class Batches:
    """Training batches: (obs, act, g0) of `batch` walks of `steps` moves, drawn `ahead` batches at
    a time, in one pass of env.walk's time loop (on a GPU it costs as much for 64 walks as for
    4,096). g0 comes from draw_g0(n, generator=...) (Model.random_g0). With data-parallel processes
    every process draws the same batches and keeps its slice `part`, so a run sees the same walks
    however many processes share it (without dropout, the same numbers too). state() and load_state()
    let a checkpoint resume the exact stream."""

    def __init__(self, env, batch, steps, draw_g0, ahead=16, part=slice(None)):
        self.env, self.batch, self.steps, self.draw_g0 = env, batch, steps, draw_g0
        self.ahead, self.part = ahead, part
        self.draw()

    def draw(self):
        self.start = self.env.generator.get_state()  # replaying from here redraws the same walks
        n = self.ahead * self.batch
        obs, act, _, _ = self.env.walk(n, self.steps)
        g0 = self.draw_g0(n, generator=self.env.generator, device=self.env.device)
        self.buffer = [z.view(self.ahead, self.batch, *z.shape[1:]) for z in (obs, act, g0)]
        self.used = 0

    def next(self):
        if self.used == self.ahead:
            self.draw()
        batch = tuple(z[self.used, self.part] for z in self.buffer)
        self.used += 1
        return batch

    def state(self):
        return {"start": self.start, "used": self.used}

    def load_state(self, state):
        self.env.generator.set_state(state["start"])
        self.draw()
        self.used = state["used"]
